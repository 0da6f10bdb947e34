using Doorbell.Gic.V3;
using Doorbell.Host.Irq;
using Doorbell.Memory;
using Doorbell.Platform;

namespace Doorbell.Host.Kernel;

/// <summary>What the interrupt-controller part of a board has: which GIC, and which MSI frames next to it.</summary>
/// <param name="GicV3Cpus">Each CPU's ICC_* system registers on a GICv3 board (the model's CPU interfaces, or vCPUs'); null on a GICv2 board.</param>
/// <param name="Its">An ITS at <see cref="PlatformMap.GicIts"/>.</param>
/// <param name="GicV2m">A GICv2m frame at <see cref="PlatformMap.GicV2m"/>.</param>
/// <param name="PciMsiToGicV2m">PCI MSIs go to the GICv2m frame even with an ITS present.</param>
/// <param name="GicV2CpuViews">On a GICv2 board, what each CPU sees of physical space (index = CPU; entry 0 may be the
/// probe's own view): CPUs beyond the boot CPU are brought up through their own views (banked GICC). Null: CPU 0 only.</param>
public sealed record IrqBoard(IReadOnlyList<IIccSystemRegisters>? GicV3Cpus, bool Its, bool GicV2m, bool PciMsiToGicV2m = false,
    IReadOnlyList<IMemoryView>? GicV2CpuViews = null);

/// <summary>
/// The interrupt part of a kernel, probed in Linux's order from a board's map through one memory view: the GICv3
/// driver (distributor, redistributors, CPU interfaces, LPI tables) with the ITS driver and/or a GICv2m frame driver,
/// or the GICv2 driver with a GICv2m frame. The host kernel boots it over the system bus; a guest kernel boots the very
/// same code over a vCPU's view of guest physical space (<see cref="GuestKernel"/>).
/// </summary>
public sealed class KernelInterrupts
{
    KernelInterrupts(GicV3HostDriver? v3, GicV2HostDriver? v2, IMsiDomain msi, IReadOnlyList<IMsiDomain> domains, HostIrqTable irqs, HostCpu[] cpus)
    {
        GicV3 = v3; GicV2 = v2; MsiDomain = msi; MsiDomains = domains; Irqs = irqs; Cpus = cpus;
    }

    public GicV3HostDriver? GicV3 { get; }
    public GicV2HostDriver? GicV2 { get; }
    /// <summary>The MSI irq domain of PCI devices (their msi-parent).</summary>
    public IMsiDomain MsiDomain { get; }
    /// <summary>Every MSI irq domain registered (what irq_domain_check_msi_remap scans).</summary>
    public IReadOnlyList<IMsiDomain> MsiDomains { get; }
    public HostIrqTable Irqs { get; }
    public HostCpu[] Cpus { get; }

    /// <summary>Probes and initialises the interrupt controller and MSI frames of <paramref name="board"/> at <paramref name="map"/>'s addresses.</summary>
    /// <exception cref="IrqException">A driver failed its probe (errno as Linux's).</exception>
    public static KernelInterrupts Probe(IMemoryView bus, PlatformMap map, IrqBoard board, IPhysPageAllocator tables)
    {
        ArgumentNullException.ThrowIfNull(bus); ArgumentNullException.ThrowIfNull(map); ArgumentNullException.ThrowIfNull(board);
        var domains = new List<IMsiDomain>();
        IMsiDomain msi = new NoMsiDomain();
        if (board.GicV3Cpus is { } icc)
        {
            var v3 = new GicV3HostDriver(bus, new PhysAddr(map.GicDistributor), new PhysAddr(map.GicRedistributor), icc, tables);
            v3.Init();
            if (board.Its)
            {
                var its = new ItsDriver(v3, new PhysAddr(map.GicIts));
                its.Init();
                msi = its;
                domains.Add(its);
            }
            if (board.GicV2m)
            {
                var frame = new Gicv2mDriver(v3, new PhysAddr(map.GicV2m));
                frame.Init();
                domains.Add(frame);
                if (board.PciMsiToGicV2m || !board.Its) msi = frame;
            }
            return new KernelInterrupts(v3, null, msi, domains, v3.Irqs, [.. v3.Cpus]);
        }
        var v2 = new GicV2HostDriver(bus, new PhysAddr(map.GicDistributor), new PhysAddr(map.GicCpuInterface));
        v2.Init();
        if (board.GicV2m)
        {
            var m2 = new Gicv2mDriver(v2, new PhysAddr(map.GicV2m));
            m2.Init();
            msi = m2;
            domains.Add(m2);
        }
        for (var c = 1; board.GicV2CpuViews is { } views && c < views.Count; c++) v2.InitSecondary(views[c], c);
        return new KernelInterrupts(null, v2, msi, domains, v2.Irqs, [.. v2.Cpus]);
    }

    /// <summary>Configures and enables (or disables) SPI <paramref name="intid"/> on CPU 0.</summary>
    public void SetSpiEnabled(int intid, bool enabled, bool edge)
    {
        if (GicV3 is { } v3)
        {
            if (enabled) v3.EnableSpi(intid, 0, edge);
            else v3.DisableSpi(intid);
        }
        else if (GicV2 is { } v2)
        {
            if (enabled) v2.EnableSpi(intid, 0, edge);
            else v2.DisableSpi(intid);
        }
    }
}
