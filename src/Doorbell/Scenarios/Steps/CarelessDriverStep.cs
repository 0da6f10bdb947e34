using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V3;
using Doorbell.Vmsa;

namespace Doorbell.Scenarios.Steps;

/// <summary>
/// Strict mode at work: a deliberately careless SMMUv3 driver (registers and queues written by hand, tables in RAM)
/// that forgets a CMD_SYNC, edits a live STE without CFGI_STE, unmaps and frees a page without a TLBI, and unmaps a
/// whole 2 MiB range — freeing its level-3 page *table* — without the non-leaf TLBI the walk cache needs. The
/// hardware (and permissive mode) tolerates each one silently and keeps using what it cached; strict mode reports
/// each with the rule broken. This step turns strict mode on for its own machine whatever the run's mode.
/// </summary>
public sealed class CarelessDriverStep : IScenarioStep
{
    const ulong SmmuBase = 0x0905_0000, Strtab = 0x4010_0000, Cmdq = 0x4020_0000, Eventq = 0x4030_0000, CdBase = 0x4040_0000;
    const ulong Buffer = 0x4800_0000, Iova = 0x1_0000_0000, Other = 0x4900_0000;
    const ulong OtherMarker = 0x0DD0_0DD0;
    const int CmdqLog2 = 8;
    const uint Sid = 8;

    public string Title => "Strict mode: a careless SMMUv3 driver (missing CMD_SYNC, stale STE, page freed without TLBI, table freed without TLBI)";

    public bool Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 0x2000_0000, "ram");
        var strict = context.NewStrict();
        strict.Enabled = true;
        var trace = context.NewTrace("careless SMMUv3 driver");
        var smmu = new SmmuV3(bus, SmmuV3Options.QemuVirt, trace, strict);
        smmu.Map(new PhysAddr(SmmuBase));
        var drv = new Careless(bus);
        drv.Enable();
        if (IoPageTable.Create(bus, new PhysPageAllocator(0x4100_0000, 0x100_0000), IoPageTableFormat.Stage1, Granule.Size4K, 48, 44, out var pt) != 0 || pt is null)
            return false;
        pt.Map(Iova, Buffer, 0x2000, IoProt.ReadWrite);
        var cd = CdBase + Sid * 0x1000UL;
        drv.WriteEntry(cd, SmmuV3Encode.ContextDescriptor(pt.CreateStage1Config(1)));
        drv.WriteEntry(Strtab + Sid * 64UL, SmmuV3Encode.Stage1Ste(cd));
        drv.Submit(SmmuV3Encode.CfgiSte(Sid), SmmuV3Encode.Sync());
        var port = smmu.CreateStreamPort(Sid);
        var attrs = BusAttributes.FromDevice(Sid);
        var data = new byte[4];
        BusStatus Dma(ulong iova)
        {
            var f = trace.BeginFlow(TraceCategory.PciDma, FlowKind.Dma, "device 0x8", $"StreamID 0x8 DMA read 0x{iova:x} (4 bytes)");
            var s = port.Read(iova, data, attrs);
            trace.EndFlow(f);
            return s;
        }
        context.Item($"careful setup: STE {Sid} -> CD (ASID 1) -> stage-1 tables; IOVA 0x{Iova:x} -> PA 0x{Buffer:x} (8 KiB); first DMA {Dma(Iova)}, strict findings {strict.Violations.Total}");
        var before = strict.Violations.Total;

        // 1. TLBI without CMD_SYNC, then DMA: the invalidation is not yet known to be complete.
        drv.Submit(SmmuV3Encode.TlbiNhAsid(0, 1));
        var s1 = Dma(Iova);
        var c1 = strict.Violations.Total - before;
        context.Item($"1. TLBI_NH_ASID queued without CMD_SYNC, then DMA: {s1}; strict findings +{c1}");
        drv.Submit(SmmuV3Encode.Sync());

        // 2. A live STE edited in memory (MEV set) with no CFGI_STE: the SMMU keeps the cached one.
        before = strict.Violations.Total;
        var ste = SmmuV3Encode.Stage1Ste(cd);
        ste[1] |= 1UL << Ste.Mev;
        drv.WriteEntry(Strtab + Sid * 64UL, ste);
        var s2 = Dma(Iova);
        var c2 = strict.Violations.Total - before;
        context.Item($"2. live STE {Sid} rewritten without CFGI_STE, then DMA: {s2}; strict findings +{c2}");
        drv.Submit(SmmuV3Encode.CfgiSte(Sid), SmmuV3Encode.Sync());

        // 3. The page is unmapped (its descriptor cleared) and handed back to the allocator with no TLBI: the cached
        //    translation still reaches memory that now belongs to someone else.
        Dma(Iova + 0x1000);
        before = strict.Violations.Total;
        pt.Unmap(Iova + 0x1000, 0x1000);
        var s3 = Dma(Iova + 0x1000);
        var c3 = strict.Violations.Total - before;
        context.Item($"3. IOVA 0x{Iova + 0x1000:x} unmapped and its page freed without TLBI, then DMA: {s3} (the stale IOTLB entry was used); strict findings +{c3}");
        drv.Submit(SmmuV3Encode.TlbiNhVa(0, 1, Iova + 0x1000), SmmuV3Encode.Sync());
        var s4 = Dma(Iova + 0x1000);
        context.Item($"after TLBI_NH_VA + CMD_SYNC the DMA is {s4}, as it should have been");

        // 4. The whole 2 MiB range at IOVA 0x1_0000_0000 is unmapped in one piece: its level-2 descriptor is cleared and
        //    the level-3 table it pointed to is freed with no TLBI at all (a TLBI with Leaf = 0 + CMD_SYNC was needed:
        //    the walk cache still holds the level-2 table descriptor). The allocator hands the freed table page to the
        //    next mapping — another buffer in the next 2 MiB — and a DMA to an IOVA the IOTLB never held walks through
        //    the stale descriptor into the reused page, reaching the other buffer.
        before = strict.Violations.Total;
        var table = pt.IovaToPhys(Iova) != 0 ? TablePa(bus, pt, Iova) : 0;
        var unmapped = pt.Unmap(Iova, 0x20_0000);
        bus.Store.WriteU64(Other + 0x3000, OtherMarker);
        pt.Map(Iova + 0x20_0000, Other, 0x4000, IoProt.ReadWrite);
        var reused = TablePa(bus, pt, Iova + 0x20_0000);
        data.AsSpan().Clear();
        var s5 = Dma(Iova + 0x3000);
        var got5 = BitConverter.ToUInt32(data);
        var c5 = strict.Violations.Total - before;
        context.Item($"4. IOVA 0x{Iova:x}+2 MiB unmapped (0x{unmapped:x} bytes): level-3 table at PA 0x{table:x} freed without TLBI and reused " +
                     $"at PA 0x{reused:x} for IOVA 0x{Iova + 0x20_0000:x}; DMA read of 0x{Iova + 0x3000:x} (never in the IOTLB): {s5}, " +
                     $"read 0x{got5:x} from the other buffer (the walk went through the stale table); strict findings +{c5}");
        // What was owed: invalidate the walk over the whole range (Linux's tlb_flush_walk, a non-leaf range TLBI); for
        // the one ASID of this driver TLBI_NH_ASID covers it, and the translation the stale walk cached with it.
        drv.Submit(SmmuV3Encode.TlbiNhAsid(0, 1), SmmuV3Encode.Sync());
        var s6 = Dma(Iova + 0x3000);
        context.Item($"after TLBI_NH_ASID + CMD_SYNC the DMA is {s6}, as it should have been");
        context.Item($"strict mode caught {strict.Violations.Total} finding(s); hardware would have reported none");
        return s1 == BusStatus.Ok && c1 >= 1 && s2 == BusStatus.Ok && c2 >= 1 && s3 == BusStatus.Ok && c3 >= 1 && s4 == BusStatus.SlaveError
               && unmapped == 0x20_0000 && table != 0 && reused == table && s5 == BusStatus.Ok && got5 == OtherMarker && c5 >= 1 && s6 == BusStatus.SlaveError
               && strict.Violations.Any(v => v.Rule.Contains("CMD_SYNC", StringComparison.Ordinal))
               && strict.Violations.Any(v => v.Message.Contains("stale STE", StringComparison.Ordinal))
               && strict.Violations.Any(v => v.Rule == Translator.StaleEntryRule)
               && strict.Violations.Any(v => v.Rule == Translator.StaleWalkRule);
    }

    /// <summary>The level-3 table of <paramref name="iova"/> (what its level-2 descriptor points to), by a software walk of 4 KiB, 48-bit tables.</summary>
    static ulong TablePa(PhysicalAddressSpace bus, IoPageTable pt, ulong iova)
    {
        var table = pt.TableBase;
        for (var level = 0; level < 3; level++)
        {
            var pte = bus.Store.ReadU64(table + ((iova >> (39 - 9 * level)) & 0x1FF) * 8);
            if ((pte & 3) != 3) return 0;
            table = pte & 0x0000_FFFF_FFFF_F000;
        }
        return table;
    }

    /// <summary>The careless driver: programs the SMMU by hand (linear stream table, command and event queues).</summary>
    sealed class Careless(PhysicalAddressSpace bus)
    {
        uint _prod;

        void Wr(uint off, uint v) => bus.Write(new PhysAddr(SmmuBase + off), 4, v, BusAttributes.Cpu);
        void Wr64(uint off, ulong v) => bus.Write(new PhysAddr(SmmuBase + off), 8, v, BusAttributes.Cpu);

        public void Enable()
        {
            Wr(SmmuV3Reg.CR0, 0);
            Wr64(SmmuV3Reg.STRTAB_BASE, Strtab);
            Wr(SmmuV3Reg.STRTAB_BASE_CFG, 8); // linear, 256 STEs
            Wr64(SmmuV3Reg.CMDQ_BASE, Cmdq | CmdqLog2);
            Wr(SmmuV3Reg.CMDQ_PROD, 0); Wr(SmmuV3Reg.CMDQ_CONS, 0);
            Wr64(SmmuV3Reg.EVENTQ_BASE, Eventq | 6);
            Wr(SmmuV3Reg.EVENTQ_PROD, 0); Wr(SmmuV3Reg.EVENTQ_CONS, 0);
            Wr(SmmuV3Reg.CR0, SmmuV3Field.Cr0CmdqEn | SmmuV3Field.Cr0EventqEn);
            Wr(SmmuV3Reg.CR0, SmmuV3Field.Cr0CmdqEn | SmmuV3Field.Cr0EventqEn | SmmuV3Field.Cr0SmmuEn);
        }

        public void WriteEntry(ulong address, ulong[] q)
        {
            for (var i = 0; i < q.Length; i++) bus.Store.WriteU64(address + (ulong)i * 8, q[i]);
        }

        public void Submit(params (ulong Q0, ulong Q1)[] cmds)
        {
            foreach (var (q0, q1) in cmds)
            {
                var a = Cmdq + (_prod & ((1u << CmdqLog2) - 1)) * 16UL;
                bus.Store.WriteU64(a, q0);
                bus.Store.WriteU64(a + 8, q1);
                _prod = (_prod + 1) & ((2u << CmdqLog2) - 1);
            }
            Wr(SmmuV3Reg.CMDQ_PROD, _prod);
        }
    }
}
