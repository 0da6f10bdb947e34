using Doorbell.Gic.V3;
using Doorbell.Memory;

namespace Doorbell.Host.Irq;

/// <summary>
/// Host GICv3 driver (the role of Linux drivers/irqchip/irq-gic-v3.c plus the LPI table part of
/// irq-gic-v3-its.c). Reaches the GIC only through its MMIO frames and memory, and through each CPU's system
/// registers (<see cref="IIccSystemRegisters"/>: MRS/MSR on that CPU — the model's CPU interface, or a vCPU's).
/// Addresses come from the board's description, never from a particular board's constants.
/// </summary>
public sealed class GicV3HostDriver : ISpiHostController
{
    readonly IMemoryView _bus;
    readonly ulong _gicd, _gicr;
    readonly IIccSystemRegisters[] _cpuRegs;
    readonly List<(ulong Frame, ulong Typer)> _rds = [];

    public const byte DefaultPriority = 0xA0;

    public GicV3HostDriver(IMemoryView bus, PhysAddr gicd, PhysAddr gicr, IReadOnlyList<IIccSystemRegisters> cpuRegisters, IPhysPageAllocator memory)
    {
        ArgumentNullException.ThrowIfNull(bus); ArgumentNullException.ThrowIfNull(cpuRegisters); ArgumentNullException.ThrowIfNull(memory);
        _bus = bus; _gicd = gicd.Value; _gicr = gicr.Value; _cpuRegs = [.. cpuRegisters];
        Memory = memory;
        Irqs = new HostIrqTable();
    }

    public HostIrqTable Irqs { get; }
    /// <summary>Where the driver's tables come from (zeroed blocks).</summary>
    public IPhysPageAllocator Memory { get; }
    public IReadOnlyList<HostCpu> Cpus { get; private set; } = [];
    public int SpiCount { get; private set; }
    public int LpiIdBits { get; private set; }
    public ulong PropTable { get; private set; }
    bool[]? _lpiSpace;
    /// <summary>Which LPIs (INTID − 8192) are allocated: one map for every ITS of this GIC, as Linux's its_lpi_alloc is global.</summary>
    internal bool[] LpiSpace() => _lpiSpace ??= new bool[(1 << LpiIdBits) - 8192];
    public IMemoryView Bus => _bus;

    /// <summary>Physical address of CPU <paramref name="cpu"/>'s redistributor frame.</summary>
    public ulong RedistributorFrame(int cpu) => _rds[cpu].Frame;
    /// <summary>GICR_TYPER.Processor_Number of CPU <paramref name="cpu"/>.</summary>
    public int ProcessorNumber(int cpu) => (int)(_rds[cpu].Typer >> 8 & 0xFFFF);

    uint R32(ulong a) { _bus.Read(new PhysAddr(a), 4, out var v, BusAttributes.Cpu); return (uint)v; }
    ulong R64(ulong a) { _bus.Read(new PhysAddr(a), 8, out var v, BusAttributes.Cpu); return v; }
    void W32(ulong a, uint v) => _bus.Write(new PhysAddr(a), 4, v, BusAttributes.Cpu);
    void W64(ulong a, ulong v) => _bus.Write(new PhysAddr(a), 8, v, BusAttributes.Cpu);

    /// <summary>Distributor, redistributors, CPU interfaces and LPI tables, in Linux's order.</summary>
    public void Init()
    {
        // Distributor: disable, configure every SPI (Group 1, default priority, level, disabled, routed to CPU 0), enable with ARE.
        W32(_gicd + GicV3.GICD_CTLR, 0);
        var typer = R32(_gicd + GicV3.GICD_TYPER);
        SpiCount = (int)((typer & 0x1F) + 1) * 32 - 32;
        for (var i = 32; i < 32 + SpiCount; i += 32)
        {
            W32(_gicd + GicV3.GICD_IGROUPR + (ulong)i / 8, 0xFFFF_FFFF);
            W32(_gicd + GicV3.GICD_ICENABLER + (ulong)i / 8, 0xFFFF_FFFF);
            W32(_gicd + GicV3.GICD_ICPENDR + (ulong)i / 8, 0xFFFF_FFFF);
        }
        for (var i = 32; i < 32 + SpiCount; i += 4) W32(_gicd + GicV3.GICD_IPRIORITYR + (ulong)i, 0x0101_0101u * DefaultPriority);
        for (var i = 32; i < 32 + SpiCount; i += 16) W32(_gicd + GicV3.GICD_ICFGR + (ulong)i / 4, 0);
        // Redistributors: walk frames until GICR_TYPER.Last (bounded).
        for (var k = 0; k < 256; k++)
        {
            var frame = _gicr + (ulong)k * GicV3Redistributor.FrameSize;
            var t = R64(frame + GicV3Redistributor.GICR_TYPER);
            _rds.Add((frame, t));
            if ((t & (1UL << 4)) != 0) break;
        }
        if (_rds.Count != _cpuRegs.Length) throw new IrqException(Errno.ENODEV, $"{_rds.Count} redistributors for {_cpuRegs.Length} CPUs");
        var route0 = _rds[0].Typer >> 32;
        for (var i = 32; i < 32 + SpiCount; i++) W64(_gicd + GicV3.GICD_IROUTER + (ulong)i * 8, route0);
        W32(_gicd + GicV3.GICD_CTLR, GicV3.CtlrAre | GicV3.CtlrEnableGrp1);

        // LPI tables (its_alloc_lpi_tables): one property table shared by all, one pending table per CPU.
        var idBits = (int)(typer >> 19 & 0x1F) + 1;
        LpiIdBits = Math.Min(idBits, 16);
        var lpis = 1UL << LpiIdBits;
        PropTable = IrqTableMemory.Allocate(Memory, Math.Max(lpis, 0x1_0000), 0x1_0000);
        _bus.Fill(PropTable, lpis, (byte)(DefaultPriority | 2)); // priority, RES1 bit 1 (Linux's "group 1"), disabled

        var cpus = new HostCpu[_cpuRegs.Length];
        for (var c = 0; c < _cpuRegs.Length; c++)
        {
            var rd = _rds[c].Frame;
            W32(rd + GicV3Redistributor.GICR_WAKER, 0);
            for (var n = 0; n < 1000 && (R32(rd + GicV3Redistributor.GICR_WAKER) & 4) != 0; n++) { }
            if ((R32(rd + GicV3Redistributor.GICR_WAKER) & 4) != 0) throw new IrqException(Errno.ETIMEDOUT, $"CPU{c} redistributor did not wake");
            var sgi = rd + GicV3Redistributor.SgiFrame;
            W32(sgi + GicV3Redistributor.GICR_IGROUPR0, 0xFFFF_FFFF);
            W32(sgi + GicV3Redistributor.GICR_ICENABLER0, 0xFFFF_0000);
            W32(sgi + GicV3Redistributor.GICR_ISENABLER0, 0x0000_FFFF); // SGIs on
            for (var i = 0; i < 32; i += 4) W32(sgi + GicV3Redistributor.GICR_IPRIORITYR + (ulong)i, 0x0101_0101u * DefaultPriority);
            if ((_rds[c].Typer & 1) != 0)
            {
                var pend = IrqTableMemory.Allocate(Memory, Math.Max(lpis / 8, 0x1_0000), 0x1_0000);
                W64(rd + GicV3Redistributor.GICR_PROPBASER, PropTable | (uint)(LpiIdBits - 1));
                W64(rd + GicV3Redistributor.GICR_PENDBASER, pend | (1UL << 62)); // PTZ: freshly zeroed
                W32(rd + GicV3Redistributor.GICR_CTLR, 1);
            }
            var regs = _cpuRegs[c];
            regs.Pmr = 0xF0;
            regs.Bpr1 = 0;
            regs.Ctlr = 0; // EOImode 0: EOIR drops priority and deactivates
            regs.IgrpEn1 = 1;
            cpus[c] = new HostCpu(c, regs, Irqs);
        }
        Cpus = cpus;
    }

    /// <summary>Configures and enables SPI <paramref name="intid"/> on CPU <paramref name="cpu"/> (edge or level).</summary>
    public void EnableSpi(int intid, int cpu, bool edge)
    {
        if (intid < 32 || intid >= 32 + SpiCount) throw new IrqException(Errno.EINVAL, $"INTID {intid} is not an SPI");
        var cfg = _gicd + GicV3.GICD_ICFGR + (ulong)(intid / 16) * 4;
        var bit = 2u << (2 * (intid % 16));
        W32(cfg, edge ? R32(cfg) | bit : R32(cfg) & ~bit);
        W64(_gicd + GicV3.GICD_IROUTER + (ulong)intid * 8, _rds[cpu].Typer >> 32);
        W32(_gicd + GicV3.GICD_ISENABLER + (ulong)(intid / 32) * 4, 1u << (intid % 32));
    }

    /// <summary>Disables SPI <paramref name="intid"/> (GICD_ICENABLER).</summary>
    public void DisableSpi(int intid)
    {
        if (intid < 32 || intid >= 32 + SpiCount) throw new IrqException(Errno.EINVAL, $"INTID {intid} is not an SPI");
        W32(_gicd + GicV3.GICD_ICENABLER + (ulong)(intid / 32) * 4, 1u << (intid % 32));
    }

    /// <summary>Routes SPI <paramref name="intid"/> to CPU <paramref name="cpu"/> (GICD_IROUTER affinity).</summary>
    public void SetTarget(int intid, int cpu) => W64(_gicd + GicV3.GICD_IROUTER + (ulong)intid * 8, _rds[cpu].Typer >> 32);

    /// <summary>Writes LPI <paramref name="intid"/>'s configuration byte (the caller then issues INV).</summary>
    public void SetLpiConfig(int intid, byte priority, bool enabled) =>
        _bus.Write(new PhysAddr(PropTable + (ulong)(intid - 8192)), 1, (ulong)(priority & 0xFC) | 2 | (enabled ? 1UL : 0), BusAttributes.Cpu);
}
