using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Tracing;
using Doorbell.Vmsa;

namespace Doorbell.Scenarios.Steps;

/// <summary>
/// Shows the VMSAv8-64 engine: stage-1 tables built in memory by IoPageTable, an IOVA translated (IOTLB miss, then
/// hit), a translation fault and a permission fault as values, and the IOTLB counters.
/// </summary>
public sealed class TranslationStep : IScenarioStep
{
    public string Title => "VMSAv8-64 translation: stage-1 tables, IOTLB, faults as values";

    public bool Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 0x2000_0000, "ram");
        var alloc = new PhysPageAllocator(0x5000_0000, 0x10_0000);
        if (IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage1, Granule.Size4K, 48, 44, out var pt) != 0 || pt is null)
            return false;
        const ulong iova = 0x1_2340_0000;
        const ulong pa = 0x4800_0000;
        var rc1 = pt.Map(iova, pa, 0x20_0000, IoProt.Read);               // one 2M block, read-only
        var rc2 = pt.Map(0x1000, 0x4000_1000, 0x1000, IoProt.ReadWrite);  // one 4K page
        context.Item($"IoPageTable S1 4K, IAS 48 / OAS 44: map 2M RO at 0x{iova:x} -> {rc1}, 4K RW at 0x1000 -> {rc2}; TTB0 at 0x{pt.TableBase:x}");
        var cfg = new TranslationConfig(pt.CreateStage1Config(asid: 1), null);
        var strict = context.NewStrict();
        var tlb = new Iotlb();
        var tr = new Translator(bus, tlb, strict);

        var ok1 = tr.Translate(cfg, iova + 0x1_2345, AccessFlags.Read, out var e1, out _);
        context.Item($"read 0x{iova + 0x1_2345:x} -> PA 0x{e1.Translate(iova + 0x1_2345):x} (level {e1.Level}, {e1.SizeBytes >> 20} MiB block; IOTLB miss, walked)");
        var ok2 = tr.Translate(cfg, iova + 0x10_0000, AccessFlags.Read, out var e2, out _);
        context.Item($"read 0x{iova + 0x10_0000:x} -> PA 0x{e2.Translate(iova + 0x10_0000):x} (IOTLB hit)");
        var tf = !tr.Translate(cfg, 0x7_0000_0000, AccessFlags.Read, out _, out var f1);
        context.Item($"read 0x7_0000_0000 -> {f1}");
        var pf = !tr.Translate(cfg, iova, AccessFlags.Write, out _, out var f2);
        context.Item($"write 0x{iova:x} -> {f2}");
        context.Item($"IOTLB: {tlb.Hits} hits, {tlb.Misses} misses, {tlb.Count} entries");
        return rc1 == 0 && rc2 == 0 && ok1 && ok2 && e1.Translate(iova + 0x1_2345) == pa + 0x1_2345
               && tf && f1.Kind == FaultKind.Translation && pf && f2.Kind == FaultKind.Permission && f2.Stage == TranslationStage.Stage1
               && tlb.Hits == 2 && tlb.Misses == 2;
    }
}
