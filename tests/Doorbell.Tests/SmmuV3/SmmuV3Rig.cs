using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V3;
using Doorbell.Tracing;
using Doorbell.Vmsa;
using SmmuModel = Doorbell.Smmu.V3.SmmuV3;

namespace Doorbell.Tests.SmmuV3;

/// <summary>A qemu-virt-like machine with an SMMUv3, programmed by the test as a driver would: MMIO and memory only.</summary>
internal sealed class SmmuV3Rig
{
    public const ulong SmmuBase = 0x0905_0000;
    public const ulong RamBase = 0x4000_0000;
    public const ulong StrtabBase = 0x4010_0000;  // linear table, 256 STEs max here
    public const ulong CmdqBase = 0x4020_0000;
    public const ulong EventqBase = 0x4030_0000;
    public const ulong CdBase = 0x4040_0000;
    public const ulong DataBase = 0x4800_0000;

    public readonly PhysicalAddressSpace Bus = new();
    public readonly StrictMonitor Strict = new();
    public readonly SmmuModel Smmu;
    public readonly PhysPageAllocator Tables = new(0x4100_0000, 0x100_0000);
    uint _cmdProd;
    public int CmdqLog2 = 8;
    public int EventqLog2 = 6;

    public SmmuV3Rig(SmmuV3Options? options = null, bool strict = false, bool enable = true, int strtabLog2 = 8)
    {
        Bus.AddRam(new PhysAddr(RamBase), 0x2000_0000);
        Strict.Enabled = strict;
        Smmu = new SmmuModel(Bus, options, null, Strict);
        Smmu.Map(new PhysAddr(SmmuBase));
        if (enable) Enable(strtabLog2);
    }

    public uint Rd(uint off) { Bus.Read(new PhysAddr(SmmuBase + off), 4, out var v, BusAttributes.Cpu); return (uint)v; }
    public void Wr(uint off, uint v) => Bus.Write(new PhysAddr(SmmuBase + off), 4, v, BusAttributes.Cpu);
    public ulong Rd64(uint off) { Bus.Read(new PhysAddr(SmmuBase + off), 8, out var v, BusAttributes.Cpu); return v; }
    public void Wr64(uint off, ulong v) => Bus.Write(new PhysAddr(SmmuBase + off), 8, v, BusAttributes.Cpu);

    public void Enable(int strtabLog2 = 8, bool linear = true, int split = 8)
    {
        Wr(SmmuV3Reg.CR0, 0);
        Wr64(SmmuV3Reg.STRTAB_BASE, StrtabBase);
        Wr(SmmuV3Reg.STRTAB_BASE_CFG, (uint)strtabLog2 | (linear ? 0u : 1u << 16 | (uint)split << 6));
        Wr64(SmmuV3Reg.CMDQ_BASE, CmdqBase | (uint)CmdqLog2);
        Wr(SmmuV3Reg.CMDQ_PROD, 0); Wr(SmmuV3Reg.CMDQ_CONS, 0);
        Wr64(SmmuV3Reg.EVENTQ_BASE, EventqBase | (uint)EventqLog2);
        Wr(SmmuV3Reg.EVENTQ_PROD, 0); Wr(SmmuV3Reg.EVENTQ_CONS, 0);
        Wr(SmmuV3Reg.CR2, SmmuV3Field.Cr2RecInvSid);
        Wr(SmmuV3Reg.CR0, SmmuV3Field.Cr0CmdqEn | SmmuV3Field.Cr0EventqEn);
        Wr(SmmuV3Reg.CR0, SmmuV3Field.Cr0CmdqEn | SmmuV3Field.Cr0EventqEn | SmmuV3Field.Cr0SmmuEn);
        _cmdProd = 0;
    }

    public void WriteEntry(ulong address, ulong[] q)
    {
        for (var i = 0; i < q.Length; i++) Bus.Store.WriteU64(address + (ulong)i * 8, q[i]);
    }

    public ulong SteAddress(uint sid) => StrtabBase + sid * 64UL;
    public void SetSte(uint sid, ulong[] ste) => WriteEntry(SteAddress(sid), ste);

    /// <summary>Queues commands at PROD and rings the doorbell once; returns CMDQ_CONS.</summary>
    public uint Submit(params (ulong, ulong)[] cmds)
    {
        var mask = (2u << CmdqLog2) - 1;
        foreach (var (q0, q1) in cmds)
        {
            var addr = CmdqBase + (_cmdProd & ((1u << CmdqLog2) - 1)) * 16UL;
            Bus.Store.WriteU64(addr, q0);
            Bus.Store.WriteU64(addr + 8, q1);
            _cmdProd = (_cmdProd + 1) & mask;
        }
        Wr(SmmuV3Reg.CMDQ_PROD, _cmdProd);
        return Rd(SmmuV3Reg.CMDQ_CONS);
    }

    public uint CmdProd => _cmdProd;

    public List<SmmuV3Event> DrainEvents()
    {
        var list = new List<SmmuV3Event>();
        var mask = (2u << EventqLog2) - 1;
        var cons = Rd(SmmuV3Reg.EVENTQ_CONS);
        var prod = Rd(SmmuV3Reg.EVENTQ_PROD);
        for (var n = 0; (cons & mask) != (prod & mask) && n < 1 << EventqLog2; n++)
        {
            var a = EventqBase + (cons & ((1u << EventqLog2) - 1)) * 32UL;
            list.Add(new SmmuV3Event(Bus.Store.ReadU64(a), Bus.Store.ReadU64(a + 8), Bus.Store.ReadU64(a + 16), Bus.Store.ReadU64(a + 24)));
            cons = ((cons & mask) + 1) & mask | (cons & SmmuV3Field.QOvflg);
        }
        Wr(SmmuV3Reg.EVENTQ_CONS, cons);
        return list;
    }

    public IoPageTable NewStage1(Granule g = Granule.Size4K, int ias = 48, int oas = 44)
    {
        Assert.Equal(0, IoPageTable.Create(Bus, Tables, IoPageTableFormat.Stage1, g, ias, oas, out var t));
        return t!;
    }

    public IoPageTable NewStage2(Granule g = Granule.Size4K, int ias = 40, int oas = 44)
    {
        Assert.Equal(0, IoPageTable.Create(Bus, Tables, IoPageTableFormat.Stage2, g, ias, oas, out var t));
        return t!;
    }

    /// <summary>STE for stage 1 with one linear CD at <see cref="CdBase"/> + 64·sid.</summary>
    public IoPageTable AttachStage1(uint sid, ushort asid = 1, Granule g = Granule.Size4K)
    {
        var pt = NewStage1(g);
        var cd = CdBase + sid * 0x1000UL;
        WriteEntry(cd, SmmuV3Encode.ContextDescriptor(pt.CreateStage1Config(asid)));
        SetSte(sid, SmmuV3Encode.Stage1Ste(cd));
        Submit(SmmuV3Encode.CfgiSte(sid), SmmuV3Encode.Sync());
        return pt;
    }

    public static void Ok(BusStatus s) => Assert.Equal(BusStatus.Ok, s);
}
