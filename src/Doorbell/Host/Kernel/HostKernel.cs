using Doorbell.Gic.Its;
using Doorbell.Gic.V2;
using Doorbell.Gic.V2m;
using Doorbell.Gic.V3;
using Doorbell.Host.Irq;
using Doorbell.Host.Os;
using Doorbell.Host.SmmuV2;
using Doorbell.Host.SmmuV3;
using Doorbell.Host.Vfio;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Platform;
using Doorbell.Smmu.V3;
using Doorbell.Tracing;

// The host kernel that boots a qemu-virt board with the real models (SMMUv3, GICv3+ITS or GICv2+GICv2m) and the
// real host drivers, enumerates PCI through ECAM MMIO, builds IOMMU groups from the topology, and builds the VFIO
// backends from all of it. Known limits: one host CPU takes interrupts (CPU 0); interrupts are taken when the
// host services them (after each host MMIO store on behalf of userspace, or when asked), since no CPU runs
// concurrently; bus numbers and BARs are assigned once at boot (no hotplug, no resource reallocation); I/O BARs
// are left unassigned. The IOMMU driver is chosen by the board's IOMMU model (arm-smmu-v3 or arm-smmu).
namespace Doorbell.Host.Kernel;

/// <summary>The hardware models a board was built with (what the kernel's drivers then find by MMIO).</summary>
public sealed class BoardModels
{
    public Doorbell.Smmu.V3.SmmuV3? Smmu { get; internal set; }
    public GicV3System? GicV3 { get; internal set; }
    public GicV2System? GicV2 { get; internal set; }
    /// <summary>An SMMUv2 in the SMMU's place (boards with iommu: smmuv2).</summary>
    public Doorbell.Smmu.V2.SmmuV2? SmmuV2 { get; internal set; }
    /// <summary>A GICv2m frame next to a GICv3 + ITS (boards with both).</summary>
    public GicV2m? GicV2mOnGicV3 { get; internal set; }
    /// <summary>PCI MSIs go to the GICv2m frame rather than the ITS.</summary>
    public bool PciMsiToGicV2m { get; internal set; }
}

/// <summary>Host RAM split (qemu-virt, 512 MiB at 0x4000_0000): driver tables, then user pages.</summary>
public static class HostMemoryLayout
{
    public const ulong GicTables = 0x4000_0000, GicTablesSize = 0x0400_0000;
    public const ulong SmmuTables = 0x4400_0000, SmmuTablesSize = 0x0400_0000;
    public const ulong UserPages = 0x4800_0000, UserPagesSize = 0x1800_0000;
    /// <summary>qemu-virt platform bus (VIRT_PLATFORM_BUS) and its first SPI (112).</summary>
    public const ulong PlatformBus = 0x0C00_0000;
    public const int PlatformFirstSpi = 112;
}

/// <summary>
/// A booted host kernel: drivers probed over MMIO, PCI enumerated, IOMMU groups formed. <see cref="BuildVfio"/>
/// binds every endpoint (and the platform devices) to VFIO through the adapters in this folder.
/// </summary>
public sealed class HostKernel
{
    readonly List<KernelIommuGroup> _groups = [];
    readonly List<KernelPciFunction> _functions = [];
    readonly List<KernelPlatformDevice> _platform = [];
    readonly HostCpu[] _cpus;
    bool _servicing;

    HostKernel(Machine machine, BoardModels models, Doorbell.Host.Iommu.IIommuDriver smmu, HostIrqTable irqs, HostCpu[] cpus, IMsiDomain msi,
        GicV3HostDriver? v3, GicV2HostDriver? v2, PciEnumeration pci)
    {
        Machine = machine;
        Models = models;
        Smmu = smmu;
        SmmuV3Driver = smmu as SmmuV3Driver;
        SmmuV2Driver = smmu as SmmuV2Driver;
        Irqs = irqs;
        _cpus = cpus;
        MsiDomain = msi;
        GicV3Driver = v3;
        GicV2Driver = v2;
        Pci = pci;
        UserPages = new PhysPageAllocator(HostMemoryLayout.UserPages, HostMemoryLayout.UserPagesSize, machine.Bus);
    }

    public Machine Machine { get; }
    public BoardModels Models { get; }
    public PhysicalAddressSpace Bus => Machine.Bus;
    /// <summary>The IOMMU driver the board's SMMU model selected (arm-smmu-v3 or arm-smmu).</summary>
    public Doorbell.Host.Iommu.IIommuDriver Smmu { get; }
    public SmmuV3Driver? SmmuV3Driver { get; }
    public SmmuV2Driver? SmmuV2Driver { get; }
    /// <summary>Every MSI irq domain the kernel registered (what irq_domain_check_msi_remap scanned).</summary>
    public IReadOnlyList<IMsiDomain> MsiDomains { get; private set; } = [];
    public HostIrqTable Irqs { get; }
    public IReadOnlyList<HostCpu> Cpus => _cpus;
    /// <summary>The MSI irq domain of PCI devices (msi-parent): the ITS, or the GICv2m frame.</summary>
    public IMsiDomain MsiDomain { get; }
    public GicV3HostDriver? GicV3Driver { get; }
    public GicV2HostDriver? GicV2Driver { get; }
    public PciEnumeration Pci { get; }
    public PhysPageAllocator UserPages { get; }
    public IReadOnlyList<KernelIommuGroup> Groups => _groups;
    public IReadOnlyList<KernelPciFunction> Functions => _functions;
    public IReadOnlyList<KernelPlatformDevice> PlatformDevices => _platform;
    /// <summary>SMMU event records read so far by <see cref="DrainSmmuEvents"/>.</summary>
    public List<SmmuV3Event> SmmuEvents { get; } = [];

    /// <summary>Builds a qemu-virt board wired to the real GIC and SMMU models. Add devices, then <see cref="Boot"/>.</summary>
    public static (Machine Machine, BoardModels Models) CreateBoard(QemuVirtOptions? options = null, StrictMonitor? strict = null)
    {
        var models = new BoardModels();
        var machine = QemuVirtBoard.Create(options ?? new QemuVirtOptions(), KernelWiring(models, strict));
        models.PciMsiToGicV2m = machine.PciMsiToGicV2m;
        return (machine, models);
    }

    /// <summary>Builds a board from its description (YAML) with the real models, its PCIe devices attached. Then <see cref="Boot"/>.</summary>
    public static (Machine Machine, BoardModels Models) CreateBoard(BoardDescription description, StrictMonitor? strict = null)
    {
        ArgumentNullException.ThrowIfNull(description);
        var models = new BoardModels();
        var machine = description.Build(KernelWiring(models, strict));
        models.PciMsiToGicV2m = machine.PciMsiToGicV2m;
        return (machine, models);
    }

    static BoardWiring KernelWiring(BoardModels models, StrictMonitor? strict) => new()
    {
        Gic = (m, req) =>
        {
            if (req.Version == 3)
            {
                var sys = QemuVirtGicV3.Create(m.Bus, req.Cpus, trace: m.Trace, strict: strict);
                models.GicV3 = sys;
                if (req.V2mBase != 0)
                {
                    // A GICv2m frame on a GICv3: its SPIs are raised on the GICv3 distributor.
                    var frame = new GicV2m(sys.Gic, QemuVirtGicV2.V2mBaseIntid, QemuVirtGicV2.V2mSpiCount, strict);
                    frame.Map(m.Bus, new PhysAddr(req.V2mBase));
                    models.GicV2mOnGicV3 = frame;
                }
                return n => sys.Gic.SpiLine(32 + n);
            }
            var v2 = QemuVirtGicV2.Create(m.Bus, req.Cpus, strict);
            v2.Gic.Trace = v2.Msi.Trace = m.Trace;
            models.GicV2 = v2;
            return n => v2.Gic.SpiLine(32 + n);
        },
        Iommu = (m, req) =>
        {
            if (req.Kind == IommuKind.SmmuV2)
            {
                var v2 = new Doorbell.Smmu.V2.SmmuV2(m.Bus, req.SmmuV2 ?? Doorbell.Smmu.V2.SmmuV2Options.Mmu500, m.Trace, strict);
                QemuVirtWiring.WireSmmuV2(m, req, v2);
                models.SmmuV2 = v2;
                return v2;
            }
            if (req.Kind != IommuKind.SmmuV3) return null;
            var s = new Doorbell.Smmu.V3.SmmuV3(m.Bus, SmmuV3Options.QemuVirt, m.Trace, strict);
            s.Map(new PhysAddr(req.Base));
            models.Smmu = s;
            return s;
        },
    };

    /// <summary>Adds the platform DMA engine as a device-tree device on the platform bus (its own StreamID, a wired SPI).</summary>
    public static PlatformDmaInfo AddPlatformDma(Machine machine, int index = 0, uint streamId = 0xFF00)
    {
        ArgumentNullException.ThrowIfNull(machine);
        var @base = HostMemoryLayout.PlatformBus + (ulong)index * 0x1000;
        var spi = HostMemoryLayout.PlatformFirstSpi + index;
        var dev = machine.AddPlatformDma(@base, spi, streamId);
        return new PlatformDmaInfo(dev, @base, spi, streamId);
    }

    /// <summary>Boots: GIC + ITS/GICv2m drivers, SMMUv3 driver, PCI enumeration over ECAM, IOMMU groups.</summary>
    public static HostKernel Boot(Machine machine, BoardModels models, IReadOnlyList<PlatformDmaInfo>? platform = null)
    {
        ArgumentNullException.ThrowIfNull(machine);
        ArgumentNullException.ThrowIfNull(models);
        var bus = machine.Bus;
        GicV3HostDriver? v3 = null;
        GicV2HostDriver? v2 = null;
        IMsiDomain msi;
        HostIrqTable irqs;
        HostCpu[] cpus;
        var domains = new List<IMsiDomain>();
        if (models.GicV3 is { } g3)
        {
            v3 = new GicV3HostDriver(bus, QemuVirtGicV3.GicdBase, QemuVirtGicV3.GicrBase, g3.Gic.CpuInterfaces,
                new PhysPageAllocator(HostMemoryLayout.GicTables, HostMemoryLayout.GicTablesSize, bus));
            v3.Init();
            var its = new ItsDriver(v3, QemuVirtGicV3.ItsBase);
            its.Init();
            msi = its;
            domains.Add(its);
            if (models.GicV2mOnGicV3 is not null)
            {
                var frame = new Gicv2mDriver(v3, QemuVirtGicV2.V2mBase);
                frame.Init();
                domains.Add(frame);
                if (models.PciMsiToGicV2m) msi = frame;
            }
            irqs = v3.Irqs;
            cpus = [.. v3.Cpus];
        }
        else if (models.GicV2 is not null)
        {
            v2 = new GicV2HostDriver(bus, QemuVirtGicV2.GicdBase, QemuVirtGicV2.GiccBase);
            v2.Init();
            var m2 = new Gicv2mDriver(v2, QemuVirtGicV2.V2mBase);
            m2.Init();
            msi = m2;
            domains.Add(m2);
            irqs = v2.Irqs;
            cpus = [v2.Cpu0];
        }
        else throw new InvalidOperationException("board has no interrupt controller model");
        Doorbell.Host.Iommu.IIommuDriver smmu;
        if (models.SmmuV2 is { } smmu2)
        {
            var drv = SmmuV2Driver.Probe(new BusSmmuHostAccess(bus, QemuVirtMap.Smmu), bus,
                new PhysPageAllocator(HostMemoryLayout.SmmuTables, HostMemoryLayout.SmmuTablesSize));
            // request_irq for the global fault line and every context interrupt (level-triggered SPIs).
            var first = 32 + QemuVirtMap.SmmuV2FirstSpi;
            irqs.Request(first, (_, _) => drv.HandleGlobalInterrupt());
            EnableLevelSpi(v3, v2, first);
            for (var i = 0; i < smmu2.Options.ContextInterrupts; i++)
            {
                var index = i;
                irqs.Request(first + 1 + i, (_, _) => drv.HandleContextInterrupt(index));
                EnableLevelSpi(v3, v2, first + 1 + i);
            }
            smmu = drv;
        }
        else if (models.Smmu is not null)
            smmu = SmmuV3Driver.Probe(new BusSmmuHostAccess(bus, QemuVirtMap.Smmu), bus,
                new PhysPageAllocator(HostMemoryLayout.SmmuTables, HostMemoryLayout.SmmuTablesSize));
        else throw new InvalidOperationException("board has no SMMU model");
        var pci = PciEnumeration.Scan(bus, QemuVirtMap.PcieEcam, QemuVirtMap.PcieMmio, QemuVirtMap.PcieMmioSize);
        var k = new HostKernel(machine, models, smmu, irqs, cpus, msi, v3, v2, pci) { MsiDomains = domains };
        k.FormGroups(platform ?? []);
        return k;
    }

    static void EnableLevelSpi(GicV3HostDriver? v3, GicV2HostDriver? v2, int intid)
    {
        if (v3 is not null) v3.EnableSpi(intid, 0, edge: false);
        else v2?.EnableSpi(intid, 0, edge: false);
    }

    void FormGroups(IReadOnlyList<PlatformDmaInfo> platform)
    {
        // iommu_probe_device for every endpoint, in enumeration order; pci_device_group decides the group.
        var byKey = new Dictionary<string, KernelIommuGroup>();
        foreach (var f in Pci.Functions)
        {
            if (f.IsBridge) continue;
            var key = IommuGrouping.GroupKey(Pci, f);
            if (!byKey.TryGetValue(key, out var g))
            {
                g = new KernelIommuGroup(this, _groups.Count, key);
                byKey[key] = g;
                _groups.Add(g);
            }
            var dev = new Doorbell.Host.Iommu.IommuDevice(f.Name, [f.Rid]);
            Smmu.ProbeDevice(dev);
            var fn = new KernelPciFunction(this, f, g, dev);
            g.AddMember(dev, MsiDomain);
            g.PciFunctions.Add(fn);
            _functions.Add(fn);
        }
        foreach (var p in platform)
        {
            var g = new KernelIommuGroup(this, _groups.Count, "platform:" + p.Name);
            _groups.Add(g);
            var dev = new Doorbell.Host.Iommu.IommuDevice(p.Name, [p.StreamId]);
            Smmu.ProbeDevice(dev);
            g.AddMember(dev, null); // no msi-parent: msi_device_has_isolated_msi is false
            var pd = new KernelPlatformDevice(this, p);
            g.PlatformDevices.Add(pd);
            _platform.Add(pd);
        }
    }

    /// <summary>Registers every group with a new VFIO core and binds its devices (vfio-pci / vfio-platform).</summary>
    public VfioHost BuildVfio(VfioOptions? options = null)
    {
        var host = new VfioHost(options);
        // Replaying the 2013–14 policy era means running that era's IOMMU drivers: arm-smmu (and arm-smmu-v3 until
        // 4.11) claimed IOMMU_CAP_INTR_REMAP.
        var claim = host.Options.IsolationEra == IsolationPolicyEra.Era2013;
        if (SmmuV2Driver is { } d2) d2.ClaimsInterruptRemap = claim;
        if (SmmuV3Driver is { } d3) d3.ClaimsInterruptRemap = claim;
        foreach (var g in _groups)
        {
            var vg = host.AddGroup(g);
            foreach (var f in g.PciFunctions)
            {
                var r = host.BindPci(vg, f, out _);
                if (r < 0) vg.SetOtherDevice(f.Name, HostDriver.HostKernel);
            }
            foreach (var p in g.PlatformDevices)
            {
                var r = host.BindPlatform(vg, p, out _);
                if (r < 0) vg.SetOtherDevice(p.Name, HostDriver.HostKernel);
            }
        }
        return host;
    }

    /// <summary>A userspace process of this kernel with a fresh address space over the user page pool.</summary>
    public VfioProcess CreateProcess(VfioHost host, ulong memlockBytes = 64UL << 20) =>
        new(host, new UserAddressSpace(Bus, UserPages), memlockBytes);

    public KernelPciFunction? FindFunction(string name) => _functions.FirstOrDefault(f => f.Name == name);

    /// <summary>The interrupt entry of every host CPU: acknowledge, dispatch to the handler, end (gic_handle_irq).
    /// Re-entrant calls (a handler that touches the device) are folded into the outer loop.</summary>
    public int ServiceInterrupts()
    {
        if (_servicing) return 0;
        _servicing = true;
        try
        {
            var n = 0;
            foreach (var c in _cpus) n += c.HandleInterrupts();
            return n;
        }
        finally { _servicing = false; }
    }

    /// <summary>Reads new SMMU event records (the driver's event-queue handler) and appends them to <see cref="SmmuEvents"/>.</summary>
    public IReadOnlyList<SmmuV3Event> DrainSmmuEvents()
    {
        if (SmmuV3Driver is not { } d) return [];
        var e = d.DrainEvents();
        SmmuEvents.AddRange(e);
        return e;
    }

    internal void SetSpiEnabled(int intid, bool enabled, bool edge)
    {
        if (GicV3Driver is { } v3)
        {
            if (enabled) v3.EnableSpi(intid, 0, edge);
            else Bus.Write(new PhysAddr(QemuVirtGicV3.GicdBase.Value + GicV3.GICD_ICENABLER + (ulong)(intid / 32) * 4), 4, 1UL << (intid % 32), BusAttributes.Cpu);
        }
        else if (GicV2Driver is { } v2)
        {
            if (enabled) v2.EnableSpi(intid, 0, edge);
            else v2.DisableSpi(intid);
        }
    }
}

/// <summary>A platform DMA engine placed on the board: device, register base, SPI index, StreamID.</summary>
public sealed record PlatformDmaInfo(Doorbell.Devices.PlatformDmaDevice Device, ulong Base, int Spi, uint StreamId)
{
    public string Name => $"{Base:x}.dma";
}
