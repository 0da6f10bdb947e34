using Doorbell.Host.SmmuV2;
using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Platform;
using Doorbell.Smmu.V2;
using Doorbell.Tracing;
using Doorbell.Vmsa;

namespace Doorbell.Tests.SmmuV2;

/// <summary>A bus with RAM and one SMMUv2 model, register helpers written the way the spec names them, and table
/// builders. Tests program the SMMU only through MMIO.</summary>
internal sealed class SmmuV2Rig
{
    public const ulong Base = 0x0905_0000, RamBase = 0x4000_0000, RamSize = 0x1000_0000;
    public const ulong TableArea = 0x4800_0000, DataArea = 0x4000_0000;
    public readonly PhysicalAddressSpace Bus = new();
    public readonly Doorbell.Smmu.V2.SmmuV2 Smmu;
    public readonly StrictMonitor Strict = new();
    public readonly RecordingInterruptLine GlobalIrq = new(0);
    public readonly RecordingInterruptLine[] ContextIrqs;
    readonly PhysPageAllocator _alloc = new(TableArea, 0x0400_0000);

    public SmmuV2Rig(SmmuV2Options? options = null, bool strict = false)
    {
        Bus.AddRam(new PhysAddr(RamBase), RamSize);
        Strict.Enabled = strict;
        Smmu = new Doorbell.Smmu.V2.SmmuV2(Bus, options ?? SmmuV2Options.Mmu500, null, Strict);
        Smmu.Map(new PhysAddr(Base));
        Smmu.GlobalFaultIrq = GlobalIrq;
        ContextIrqs = new RecordingInterruptLine[Smmu.Options.ContextInterrupts];
        for (var i = 0; i < ContextIrqs.Length; i++) Smmu.SetContextIrq(i, ContextIrqs[i] = new RecordingInterruptLine(i + 1));
    }

    public SmmuV2Options O => Smmu.Options;
    public ulong Gr1 => Base + (1UL << O.PageShift);
    public ulong CbBase(int n) => Base + ((ulong)(O.GlobalPages + n) << O.PageShift);

    public uint R32(ulong a) { Bus.Read(new PhysAddr(a), 4, out var v, BusAttributes.Cpu); return (uint)v; }
    public ulong R64(ulong a) { Bus.Read(new PhysAddr(a), 8, out var v, BusAttributes.Cpu); return v; }
    public void W32(ulong a, uint v) => Bus.Write(new PhysAddr(a), 4, v, BusAttributes.Cpu);
    public void W64(ulong a, ulong v) => Bus.Write(new PhysAddr(a), 8, v, BusAttributes.Cpu);

    public uint Gr0R(uint off) => R32(Base + off);
    public void Gr0W(uint off, uint v) => W32(Base + off, v);
    public uint CbR(int n, uint off) => R32(CbBase(n) + off);
    public ulong CbR64(int n, uint off) => R64(CbBase(n) + off);
    public void CbW(int n, uint off, uint v) => W32(CbBase(n) + off, v);
    public void CbW64(int n, uint off, ulong v) => W64(CbBase(n) + off, v);

    /// <summary>sCR0 with client traffic enabled, faults reported and interrupting, unmatched streams faulting.</summary>
    public void Enable(bool usfFault = true, uint extra = 0) =>
        Gr0W(SmmuV2Gr0.sCR0, SmmuV2Field.Cr0Gfre | SmmuV2Field.Cr0Gfie | SmmuV2Field.Cr0Gcfgfre | SmmuV2Field.Cr0Gcfgfie
            | (usfFault ? SmmuV2Field.Cr0Usfcfg : 0) | extra);

    public void Smr(int n, uint id, uint mask, bool valid = true) =>
        Gr0W(SmmuV2Gr0.SMR(n), (valid ? SmmuV2Field.SmrValid : 0) | mask << 16 | id);

    public void S2cr(int n, uint type, int cb = 0, uint extra = 0) =>
        Gr0W(SmmuV2Gr0.S2CR(n), type << SmmuV2Field.S2crTypeShift | (uint)cb | extra);

    public void Cbar(int n, uint type, uint vmid = 0, int irpt = -1, int s2cb = 0) =>
        W32(Gr1 + SmmuV2Gr1.CBAR(n), type << 16 | (uint)(irpt < 0 ? n : irpt) << 24 | (type == 3 ? (uint)s2cb << 8 : 0) | vmid);

    public void Cba2r(int n, bool va64 = true, uint vmid16 = 0) => W32(Gr1 + SmmuV2Gr1.CBA2R(n), (va64 ? 1u : 0) | vmid16 << 16);

    public IoPageTable Table(IoPageTableFormat f, int ias = 48, int oas = 48, Granule g = Granule.Size4K)
    {
        Assert.Equal(0, IoPageTable.Create(Bus, _alloc, f, g, ias, oas, out var t));
        return t!;
    }

    /// <summary>Programs bank n as a stage-1 context over <paramref name="t"/> (TTBR0 only) with ASID and SCTLR.</summary>
    public void Stage1Bank(int n, IoPageTable t, ushort asid, uint sctlr = SmmuV2Field.SctlrM | SmmuV2Field.SctlrCfre | SmmuV2Field.SctlrCfie, uint type = 1, uint vmid = 0, int s2cb = 0)
    {
        Cba2r(n);
        Cbar(n, type, vmid, s2cb: s2cb);
        CbW(n, SmmuV2Cb.TCR2, (uint)SmmuV2Options.EncodeSize(t.OutputSize) | SmmuV2Field.Tcr2As);
        CbW64(n, SmmuV2Cb.TTBR0, t.TableBase | (ulong)asid << 48);
        CbW64(n, SmmuV2Cb.TTBR1, (ulong)asid << 48);
        var tg = t.Granule switch { Granule.Size4K => 0u, Granule.Size64K => 1u, _ => 2u };
        CbW(n, SmmuV2Cb.TCR, tg << 14 | (uint)(64 - t.InputSize) | SmmuV2Field.TcrEpd1);
        CbW(n, SmmuV2Cb.MAIR0, (uint)IoPageTable.Mair);
        CbW(n, SmmuV2Cb.MAIR1, (uint)(IoPageTable.Mair >> 32));
        CbW(n, SmmuV2Cb.SCTLR, sctlr);
    }

    /// <summary>Programs bank n as a stage-2 context over <paramref name="t"/>.</summary>
    public void Stage2Bank(int n, IoPageTable t, uint vmid, uint sctlr = SmmuV2Field.SctlrM | SmmuV2Field.SctlrCfre | SmmuV2Field.SctlrCfie)
    {
        Cba2r(n);
        Cbar(n, 0, vmid);
        CbW64(n, SmmuV2Cb.TTBR0, t.TableBase);
        var tg = t.Granule switch { Granule.Size4K => 0u, Granule.Size64K => 1u, _ => 2u };
        var sl0 = t.Granule == Granule.Size4K ? 2 - t.StartLevel : 3 - t.StartLevel;
        CbW(n, SmmuV2Cb.TCR, (uint)SmmuV2Options.EncodeSize(t.OutputSize) << 16 | tg << 14 | (uint)sl0 << 6 | (uint)(64 - t.InputSize));
        CbW(n, SmmuV2Cb.SCTLR, sctlr);
    }

    public IMemoryPort Port(uint sid) => Smmu.CreateStreamPort(sid);

    public BusStatus DmaWrite(IMemoryPort p, ulong a, uint v, bool priv = false)
    {
        var b = BitConverter.GetBytes(v);
        return p.Write(a, b, new BusAttributes(0, false, priv, false));
    }

    public (BusStatus, uint) DmaRead(IMemoryPort p, ulong a, bool priv = false)
    {
        var b = new byte[4];
        var s = p.Read(a, b, new BusAttributes(0, false, priv, false));
        return (s, BitConverter.ToUInt32(b));
    }

    public uint Ram32(ulong pa) { Bus.ReadU32(pa, out var v); return v; }

    public SmmuV2Driver Driver(SmmuV2DriverOptions? o = null) =>
        SmmuV2Driver.Probe(new BusSmmuHostAccess(Bus, Base), Bus, new PhysPageAllocator(0x4C00_0000, 0x0400_0000), o);
}
