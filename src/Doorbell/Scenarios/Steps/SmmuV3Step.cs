using Doorbell.Host.Iommu;
using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V3;
using Doorbell.Tracing;

namespace Doorbell.Scenarios.Steps;

/// <summary>
/// A device's DMA translated by the SMMUv3 through a stage-1 domain the host driver set up (MMIO and memory only),
/// then a DMA to an unmapped IOVA: aborted, with one F_TRANSLATION event record read back by the driver.
/// </summary>
public sealed class SmmuV3Step : IScenarioStep
{
    public string Title => "SMMUv3: DMA through a stage-1 domain, and a translation fault as an event record";

    public bool Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 0x2000_0000, "ram");
        var strict = context.NewStrict();
        var trace = context.NewTrace("SMMUv3 on a bare bus");
        var smmu = new SmmuV3(bus, SmmuV3Options.QemuVirt, trace, strict);
        smmu.Map(new PhysAddr(0x0905_0000));
        var driver = SmmuV3Driver.Probe(new BusSmmuHostAccess(bus, 0x0905_0000), bus, new PhysPageAllocator(0x5000_0000, 0x100_0000));
        var f = driver.Features;
        context.Item($"probe: S1 {f.Stage1} S2 {f.Stage2}, {f.StreamIdBits}-bit StreamIDs ({(driver.TwoLevelStreamTable ? "2-level" : "linear")} stream table), OAS {f.OutputAddressBits}, RIL {f.RangeInvalidation}");

        var edu = new IommuDevice("0000:00:01.0 (edu)", [0x0008]);
        var group = driver.ProbeDevice(edu);
        var domain = driver.AllocateDomain(IommuDomainType.Unmanaged, IommuDomainStage.Stage1);
        group.Attach(domain);
        const ulong iova = 0x4_0000, buffer = 0x4800_0000;
        domain.Map(iova, buffer, 0x1000, IoProt.ReadWrite);
        context.Item($"stage-1 domain ASID {((SmmuV3Domain)domain).Tag}: IOVA 0x{iova:x} -> PA 0x{buffer:x} (iova_to_phys 0x{domain.IovaToPhys(iova):x})");

        var port = smmu.CreateStreamPort(0x0008);
        var payload = "doorbell"u8.ToArray();
        var flow = trace.BeginFlow(TraceCategory.PciDma, FlowKind.Dma, "00:01.0 edu", $"StreamID 0x8 DMA write 0x{iova + 0x10:x} ({payload.Length} bytes)");
        var ok = port.Write(iova + 0x10, payload, BusAttributes.FromDevice(0x0008));
        trace.EndFlow(flow);
        var landed = new byte[payload.Length];
        bus.Read(buffer + 0x10, landed, BusAttributes.Cpu);
        var dmaOk = ok == BusStatus.Ok && landed.AsSpan().SequenceEqual(payload);
        context.Item($"device DMA write of \"doorbell\" to IOVA 0x{iova + 0x10:x}: {ok}, PA 0x{buffer + 0x10:x} holds \"{System.Text.Encoding.ASCII.GetString(landed)}\"");

        flow = trace.BeginFlow(TraceCategory.PciDma, FlowKind.Dma, "00:01.0 edu", $"StreamID 0x8 DMA write 0xdead0000 (8192 bytes)");
        var bad = port.Write(0xDEAD_0000, new byte[0x2000], BusAttributes.FromDevice(0x0008));
        trace.EndFlow(flow);
        var events = driver.DrainEvents();
        context.Item($"device DMA write of 8 KiB to unmapped IOVA 0xdead0000: {bad}, {events.Count} event record(s)");
        foreach (var e in events)
            context.Item($"  event: {e}  [{e.Q0:x16} {e.Q1:x16} {e.Q2:x16} {e.Q3:x16}]");
        if (context.Strict) context.Item($"strict mode: {strict.Violations.Total} violation(s)");
        return dmaOk && bad == BusStatus.SlaveError && events.Count == 1 && events[0].Id == Evt.F_TRANSLATION
               && events[0].InputAddress == 0xDEAD_0000 && strict.Violations.Total == 0;
    }
}
