using Doorbell.Gic.V2;
using Doorbell.Gic.V2m;
using Doorbell.Memory;

namespace Doorbell.Host.Irq;

/// <summary>What an MSI frame driver needs of the GIC driver it sits on: SPI enable/disable/route (GICv2 or GICv3).</summary>
public interface ISpiHostController
{
    IMemoryView Bus { get; }
    void EnableSpi(int intid, int cpu, bool edge);
    void DisableSpi(int intid);
    void SetTarget(int intid, int cpu);
}

/// <summary>
/// Host GICv2 driver (the role of Linux irq-gic.c): distributor and CPU interfaces through MMIO. The boot CPU's accesses
/// go through the driver's view; a secondary CPU brought up with <see cref="InitSecondary"/> reaches its own (banked)
/// GICC frame and SGI/PPI registers through its own view, as each core does at the same addresses.
/// </summary>
public sealed class GicV2HostDriver : ISpiHostController
{
    readonly IMemoryView _bus;
    readonly ulong _gicd, _gicc;

    public GicV2HostDriver(IMemoryView bus, PhysAddr gicd, PhysAddr gicc)
    {
        ArgumentNullException.ThrowIfNull(bus);
        _bus = bus; _gicd = gicd.Value; _gicc = gicc.Value;
        Irqs = new HostIrqTable();
    }

    public HostIrqTable Irqs { get; }
    public HostCpu Cpu0 { get; private set; } = null!;
    readonly List<(IMemoryView View, HostCpu Cpu)> _cpus = [];
    /// <summary>The CPUs brought up so far (boot CPU first).</summary>
    public IReadOnlyList<HostCpu> Cpus => [.. _cpus.Select(c => c.Cpu)];
    public int SpiCount { get; private set; }
    public IMemoryView Bus => _bus;

    uint R32(ulong a) { _bus.Read(new PhysAddr(a), 4, out var v, BusAttributes.Cpu); return (uint)v; }
    void W32(ulong a, uint v) => _bus.Write(new PhysAddr(a), 4, v, BusAttributes.Cpu);
    void W8(ulong a, byte v) => _bus.Write(new PhysAddr(a), 1, v, BusAttributes.Cpu);

    public void Init()
    {
        W32(_gicd + GicV2.GICD_CTLR, 0);
        SpiCount = (int)((R32(_gicd + GicV2.GICD_TYPER) & 0x1F) + 1) * 32 - 32;
        for (var i = 32; i < 32 + SpiCount; i += 32) W32(_gicd + GicV2.GICD_ICENABLER + (ulong)i / 8, 0xFFFF_FFFF);
        for (var i = 32; i < 32 + SpiCount; i += 4)
        {
            W32(_gicd + GicV2.GICD_IPRIORITYR + (ulong)i, 0xA0A0_A0A0);
            W32(_gicd + GicV2.GICD_ITARGETSR + (ulong)i, 0x0101_0101);
        }
        W32(_gicd + GicV2.GICD_CTLR, 1);
        Cpu0 = CpuInit(_bus, 0);
    }

    /// <summary>gic_cpu_init on a CPU: its banked SGI/PPI priorities and SGI enables, then its CPU interface (PMR, enable).</summary>
    HostCpu CpuInit(IMemoryView view, int cpu)
    {
        void W(ulong a, uint v) => view.Write(new PhysAddr(a), 4, v, BusAttributes.Cpu);
        for (var i = 0; i < 32; i += 4) W(_gicd + GicV2.GICD_IPRIORITYR + (ulong)i, 0xA0A0_A0A0);
        W(_gicd + GicV2.GICD_ISENABLER, 0xFFFF);
        W(_gicc + GicV2.GICC_PMR, 0xF0);
        W(_gicc + GicV2.GICC_CTLR, 1);
        var c = new HostCpu(cpu, new V2CpuInterface(this, view), Irqs);
        _cpus.Add((view, c));
        return c;
    }

    /// <summary>
    /// Brings up secondary CPU <paramref name="cpu"/> (after <see cref="Init"/>): <paramref name="view"/> is what that CPU
    /// sees of the same physical space.
    /// </summary>
    public HostCpu InitSecondary(IMemoryView view, int cpu)
    {
        ArgumentNullException.ThrowIfNull(view);
        if (cpu is < 1 or > 7 || _cpus.Any(c => c.Cpu.Index == cpu)) throw new IrqException(Errno.EINVAL, $"bad secondary CPU {cpu}");
        return CpuInit(view, cpu);
    }

    /// <summary>
    /// Sends SGI <paramref name="sgi"/> from CPU <paramref name="fromCpu"/> to <paramref name="toCpu"/> (gic_ipi_send_mask:
    /// GICD_SGIR with the target list, written by the sending CPU — the GIC records it as the source).
    /// </summary>
    public void SendSgi(int fromCpu, int sgi, int toCpu)
    {
        if (sgi is < 0 or > 15 || toCpu is < 0 or > 7) throw new IrqException(Errno.EINVAL, $"bad SGI {sgi} to CPU {toCpu}");
        var view = _cpus.Find(c => c.Cpu.Index == fromCpu).View ?? throw new IrqException(Errno.EINVAL, $"CPU {fromCpu} is not up");
        // GICD_SGIR: TargetListFilter 0 (the list), CPUTargetList[23:16], SGIINTID[3:0] (IHI 0048B §4.3.15)
        view.Write(new PhysAddr(_gicd + GicV2.GICD_SGIR), 4, (1u << (16 + toCpu)) | (uint)sgi, BusAttributes.Cpu);
    }

    sealed class V2CpuInterface(GicV2HostDriver d, IMemoryView view) : IHostCpuInterface
    {
        uint _iar;

        public int Acknowledge()
        {
            view.Read(new PhysAddr(d._gicc + GicV2.GICC_IAR), 4, out var v, BusAttributes.Cpu);
            _iar = (uint)v;
            return (int)(_iar & 0x3FF);
        }

        // GICC_EOIR takes the value GICC_IAR returned (for an SGI, with its source CPUID[12:10]).
        public void EndOfInterrupt(int intid) =>
            view.Write(new PhysAddr(d._gicc + GicV2.GICC_EOIR), 4, (_iar & 0x3FF) == (uint)intid ? _iar : (uint)intid, BusAttributes.Cpu);
    }

    public void EnableSpi(int intid, int cpu, bool edge)
    {
        if (intid < 32 || intid >= 32 + SpiCount) throw new IrqException(Errno.EINVAL, $"INTID {intid} is not an SPI");
        var cfg = _gicd + GicV2.GICD_ICFGR + (ulong)(intid / 16) * 4;
        var bit = 2u << (2 * (intid % 16));
        W32(cfg, edge ? R32(cfg) | bit : R32(cfg) & ~bit);
        SetTarget(intid, cpu);
        W32(_gicd + GicV2.GICD_ISENABLER + (ulong)(intid / 32) * 4, 1u << (intid % 32));
    }

    public void DisableSpi(int intid) => W32(_gicd + GicV2.GICD_ICENABLER + (ulong)(intid / 32) * 4, 1u << (intid % 32));

    public void SetTarget(int intid, int cpu)
    {
        if (cpu is < 0 or > 7) throw new IrqException(Errno.EINVAL, $"no CPU {cpu}");
        W8(_gicd + GicV2.GICD_ITARGETSR + (ulong)intid, (byte)(1 << cpu));
    }
}

/// <summary>
/// Host GICv2m driver (the role of Linux irq-gic-v2m.c): reads MSI_TYPER for the frame's SPI range, hands out
/// SPIs, configures them edge-triggered, and gives each vector (MSI_SETSPI_NS address, SPI INTID). Its MSI
/// domain does NOT isolate MSIs: the frame cannot tell who wrote.
/// </summary>
public sealed class Gicv2mDriver : IMsiDomain
{
    readonly ISpiHostController _gic;
    readonly ulong _frame;
    bool[] _used = [];
    readonly Dictionary<uint, MsiAllocation> _byDevice = [];

    public Gicv2mDriver(ISpiHostController gic, PhysAddr frame)
    {
        ArgumentNullException.ThrowIfNull(gic);
        _gic = gic; _frame = frame.Value;
    }

    public string Name => "GICv2m-MSI";
    public bool IsolatedMsi => false;
    public int BaseIntid { get; private set; }
    public int Count { get; private set; }

    public void Init()
    {
        _gic.Bus.Read(new PhysAddr(_frame + GicV2m.MSI_TYPER), 4, out var t, BusAttributes.Cpu);
        BaseIntid = (int)(t >> 16 & 0x3FF);
        Count = (int)(t & 0x3FF);
        if (Count == 0 || BaseIntid < 32) throw new IrqException(Errno.ENODEV, $"invalid MSI_TYPER 0x{t:x}");
        _used = new bool[Count];
    }

    public MsiAllocation AllocateMsis(uint deviceId, int count)
    {
        if (count < 1) throw new IrqException(Errno.EINVAL, $"bad vector count {count}");
        if (_byDevice.ContainsKey(deviceId)) throw new IrqException(Errno.EEXIST, $"device {deviceId} already has MSIs");
        var vectors = new MsiVector[count];
        var n = 0;
        for (var i = 0; i < Count && n < count; i++)
        {
            if (_used[i]) continue;
            vectors[n] = new MsiVector(n, new MsiMessage(_frame + GicV2m.MSI_SETSPI_NS, (uint)(BaseIntid + i)), BaseIntid + i);
            n++;
        }
        if (n < count) throw new IrqException(Errno.ENOSPC, $"no {count} free GICv2m SPIs");
        foreach (var v in vectors)
        {
            _used[v.Intid - BaseIntid] = true;
            _gic.EnableSpi(v.Intid, 0, edge: true);
        }
        var a = new MsiAllocation(this, deviceId, vectors);
        _byDevice[deviceId] = a;
        return a;
    }

    public void FreeMsis(MsiAllocation allocation)
    {
        ArgumentNullException.ThrowIfNull(allocation);
        if (!_byDevice.Remove(allocation.DeviceId)) throw new IrqException(Errno.EINVAL, $"device {allocation.DeviceId} has no MSIs");
        foreach (var v in allocation.Vectors)
        {
            _gic.DisableSpi(v.Intid);
            _used[v.Intid - BaseIntid] = false;
        }
    }

    public void SetAffinity(MsiVector vector, int cpu) => _gic.SetTarget(vector.Intid, cpu);
}
