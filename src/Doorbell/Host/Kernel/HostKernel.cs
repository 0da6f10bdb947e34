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

// The host kernel that boots a board with the real models (SMMUv3, GICv3+ITS or GICv2+GICv2m) and the real host
// drivers, enumerates PCI through ECAM MMIO, builds IOMMU groups from the topology, and builds the VFIO backends from
// all of it. Every address comes from the board's PlatformMap and every access goes through one memory view, so the
// same kernel boots on any board description and over any view. Interrupts are pushed: each host CPU is an execution
// context on the machine's event loop, raised by its CPU interface and taking interrupts from the loop. The SMMU's
// event-queue and GERROR lines are requested like any other interrupt; their handlers drain events as they arrive.
// Known limits: bus numbers and BARs are assigned once at boot (no hotplug, no resource reallocation); I/O BARs are
// left unassigned. The IOMMU driver is chosen by the board's IOMMU model (arm-smmu-v3 or arm-smmu).
namespace Doorbell.Host.Kernel;

/// <summary>The hardware models a board was built with (what the kernel's drivers then find by MMIO): a view of <see cref="Machine"/>.</summary>
public sealed class BoardModels
{
    public Doorbell.Smmu.V3.SmmuV3? Smmu { get; init; }
    public GicV3? GicV3 { get; init; }
    public GicV3Its? Its { get; init; }
    public GicV2? GicV2 { get; init; }
    public GicV2m? GicV2m { get; init; }
    /// <summary>An SMMUv2 in the SMMU's place (boards with iommu: smmuv2).</summary>
    public Doorbell.Smmu.V2.SmmuV2? SmmuV2 { get; init; }
    /// <summary>A GICv2m frame next to a GICv3 + ITS (boards with both).</summary>
    public GicV2m? GicV2mOnGicV3 => GicV3 is not null ? GicV2m : null;
    /// <summary>PCI MSIs go to the GICv2m frame rather than the ITS.</summary>
    public bool PciMsiToGicV2m { get; init; }

    public static BoardModels Of(Machine machine)
    {
        ArgumentNullException.ThrowIfNull(machine);
        return new()
        {
            Smmu = machine.SmmuV3, GicV3 = machine.GicV3, Its = machine.Its, GicV2 = machine.GicV2, GicV2m = machine.GicV2m,
            SmmuV2 = machine.SmmuV2, PciMsiToGicV2m = machine.PciMsiToGicV2m,
        };
    }
}

/// <summary>How the host splits its RAM: GIC/ITS tables (1/8), SMMU tables (1/8), then the user page pool.</summary>
public sealed record HostMemoryLayout(ulong GicTables, ulong GicTablesSize, ulong SmmuTables, ulong SmmuTablesSize, ulong UserPages, ulong UserPagesSize)
{
    /// <summary>The least RAM the host kernel boots on: each of its two table areas takes an eighth, at least 1 MiB.</summary>
    public const ulong MinimumRamSize = 8UL << 20;

    /// <summary>The split of RAM [<paramref name="ramBase"/>, +<paramref name="ramSize"/>) (512 MiB: 64 + 64 + 384 MiB).</summary>
    public static HostMemoryLayout For(ulong ramBase, ulong ramSize)
    {
        var eighth = (ramSize / 8) & ~0xF_FFFFUL;
        if (eighth < 0x10_0000) throw new ArgumentException($"host RAM of 0x{ramSize:x} bytes is too small (at least 8 MiB)", nameof(ramSize));
        return new(ramBase, eighth, ramBase + eighth, eighth, ramBase + 2 * eighth, ramSize - 2 * eighth);
    }
}

/// <summary>The MSI domain of a board without one (GICv3 with its=off): allocation fails as pci_alloc_irq_vectors does.</summary>
sealed class NoMsiDomain : IMsiDomain
{
    public string Name => "none";
    public bool IsolatedMsi => false;
    public MsiAllocation AllocateMsis(uint deviceId, int count) => throw new IrqException(Errno.ENOSPC, "no MSI controller (its=off)");
    public void FreeMsis(MsiAllocation allocation) { }
    public void SetAffinity(MsiVector vector, int cpu) { }
}

/// <summary>
/// A booted host kernel: drivers probed over MMIO, PCI enumerated, IOMMU groups formed. <see cref="BuildVfio"/>
/// binds every endpoint (and the platform devices) to VFIO through the adapters in this folder.
/// </summary>
public sealed partial class HostKernel
{
    readonly List<KernelIommuGroup> _groups = [];
    readonly List<KernelPciFunction> _functions = [];
    readonly List<KernelPlatformDevice> _platform = [];
    readonly HostCpu[] _cpus;
    readonly List<SmmuV3Event> _unreported = [];
    bool _servicing;

    readonly Doorbell.Host.Iommu.IIommuDriver? _smmu;
    readonly PciEnumeration? _pci;

    HostKernel(Machine machine, IMemoryView memory, HostMemoryLayout layout, IReadOnlyList<KernelIommu> iommus, HostIrqTable irqs, HostCpu[] cpus, IMsiDomain msi,
        GicV3HostDriver? v3, GicV2HostDriver? v2, IReadOnlyList<KernelPciHostBridge> bridges)
    {
        Machine = machine;
        Models = BoardModels.Of(machine);
        Bus = memory;
        Layout = layout;
        Iommus = iommus;
        _smmu = iommus.Count > 0 ? iommus[0].Driver : null;
        SmmuV3Driver = _smmu as SmmuV3Driver;
        SmmuV2Driver = _smmu as SmmuV2Driver;
        Irqs = irqs;
        _cpus = cpus;
        MsiDomain = msi;
        GicV3Driver = v3;
        GicV2Driver = v2;
        HostBridges = bridges;
        _pci = bridges.Count > 0 ? bridges[0].Pci : null;
        UserPages = new PhysPageAllocator(layout.UserPages, layout.UserPagesSize, memory);
    }

    /// <summary>Every IOMMU instance the kernel probed (qemu-virt: its one SMMU).</summary>
    public IReadOnlyList<KernelIommu> Iommus { get; }
    /// <summary>Every host bridge the kernel enumerated (qemu-virt: its one ECAM).</summary>
    public IReadOnlyList<KernelPciHostBridge> HostBridges { get; }

    public Machine Machine { get; }
    public BoardModels Models { get; }
    /// <summary>The memory view the kernel and its drivers use (the machine's bus unless booted over another view).</summary>
    public IMemoryView Bus { get; }
    public HostMemoryLayout Layout { get; }
    /// <summary>The IOMMU driver of the board's (first) SMMU (arm-smmu-v3 or arm-smmu); a board without an IOMMU has none.</summary>
    public Doorbell.Host.Iommu.IIommuDriver Smmu => _smmu ?? throw new InvalidOperationException("the board has no IOMMU");
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
    /// <summary>The (first) host bridge's enumeration; a board without PCIe has none.</summary>
    public PciEnumeration Pci => _pci ?? throw new InvalidOperationException("the board has no PCIe host bridge");
    public PhysPageAllocator UserPages { get; }
    public IReadOnlyList<KernelIommuGroup> Groups => _groups;
    public IReadOnlyList<KernelPciFunction> Functions => _functions;
    public IReadOnlyList<KernelPlatformDevice> PlatformDevices => _platform;
    /// <summary>The SMMU event records the event-queue handler has read, in order: the last 4096 (<c>Total</c> counts them all).</summary>
    public Doorbell.Runtime.BoundedHistory<SmmuV3Event> SmmuEvents { get; } = new(4096);
    /// <summary>Times the SMMU event-queue interrupt was taken.</summary>
    public long SmmuEventInterrupts { get; private set; }
    /// <summary>Times the SMMU GERROR interrupt was taken.</summary>
    public long SmmuGerrorInterrupts { get; private set; }

    /// <summary>Builds a qemu-virt board (or the map in <paramref name="options"/>) wired to the real GIC and SMMUv3 models. Add devices, then <see cref="Boot(Machine, IReadOnlyList{PlatformDmaInfo}?, IMemoryView?)"/>.</summary>
    public static (Machine Machine, BoardModels Models) CreateBoard(QemuVirtOptions? options = null, StrictMonitor? strict = null)
    {
        var o = options ?? new QemuVirtOptions();
        var machine = QemuVirtBoard.Create(strict is null ? o : o with { Strict = strict }, QemuVirtWiring.Models);
        return (machine, BoardModels.Of(machine));
    }

    /// <summary>Builds a board from its description (YAML) through the one wiring, its PCIe devices attached. Then boot it.</summary>
    public static (Machine Machine, BoardModels Models) CreateBoard(BoardDescription description, StrictMonitor? strict = null)
    {
        ArgumentNullException.ThrowIfNull(description);
        var machine = description.Build(QemuVirtWiring.Models, strict: strict);
        return (machine, BoardModels.Of(machine));
    }

    /// <summary>Adds the platform DMA engine as a device-tree device on the board's platform bus (its own StreamID, a wired SPI).</summary>
    public static PlatformDmaInfo AddPlatformDma(Machine machine, int index = 0, uint streamId = 0xFF00)
    {
        ArgumentNullException.ThrowIfNull(machine);
        var @base = machine.Map.PlatformBus + (ulong)index * 0x1000;
        var spi = machine.Map.PlatformFirstSpi + index;
        var dev = machine.AddPlatformDma(@base, spi, streamId);
        return new PlatformDmaInfo(dev, @base, spi, streamId);
    }

    /// <summary>Boots (the models argument is the machine's own; kept for callers that hold it).</summary>
    public static HostKernel Boot(Machine machine, BoardModels models, IReadOnlyList<PlatformDmaInfo>? platform = null) =>
        Boot(machine, platform, null);

    /// <summary>
    /// Boots: GIC + ITS/GICv2m drivers, SMMUv3 driver, PCI enumeration over ECAM, IOMMU groups — at the addresses of
    /// <see cref="Machine.Map"/>, through <paramref name="memory"/> (the machine's bus when null).
    /// </summary>
    public static HostKernel Boot(Machine machine, IReadOnlyList<PlatformDmaInfo>? platform, IMemoryView? memory)
    {
        ArgumentNullException.ThrowIfNull(machine);
        var map = machine.Map;
        var bus = memory ?? machine.Bus;
        var layout = HostMemoryLayout.For(machine.RamBase, machine.RamSize);
        if (machine.GicV3 is null && machine.GicV2 is null) throw new InvalidOperationException("board has no interrupt controller model");
        // On a GICv2 every CPU is brought up through its own view (its banked GICC frame and SGI/PPI registers), as
        // Linux's gic_cpu_init runs on each CPU; on a GICv3 each CPU has its own ICC registers.
        IReadOnlyList<IMemoryView>? v2Views = machine.GicV2 is { } gv2
            ? [bus, .. Enumerable.Range(1, Math.Min(gv2.CpuCount, 8) - 1).Select(c => new CpuMemoryView(bus, c))]
            : null;
        var irqBoard = new IrqBoard(machine.GicV3?.CpuInterfaces, machine.GicV3 is not null && machine.HasIts, machine.GicV2m is not null, machine.PciMsiToGicV2m,
            GicV2CpuViews: v2Views);
        var ki = KernelInterrupts.Probe(bus, map, irqBoard, new PhysPageAllocator(layout.GicTables, layout.GicTablesSize, bus));
        var (v3, v2, msi, irqs, cpus) = (ki.GicV3, ki.GicV2, ki.MsiDomain, ki.Irqs, ki.Cpus);
        var domains = ki.MsiDomains;
        if (machine.GicV3 is { } g3)
            for (var c = 0; c < cpus.Length; c++) g3.CpuInterfaces[c].Target = cpus[c];
        else
            foreach (var c in cpus) machine.GicV2!.SetTarget(c.Index, c);
        Doorbell.Host.Iommu.IIommuDriver smmu;
        if (machine.SmmuV2 is { } smmu2)
        {
            var drv = SmmuV2Driver.Probe(new BusSmmuHostAccess(bus, map.Smmu), bus,
                new PhysPageAllocator(layout.SmmuTables, layout.SmmuTablesSize, bus));
            // request_irq for the global fault line and every context interrupt (level-triggered SPIs). Where the
            // board wires several onto one SPI (Juno: all on one; ThunderX: the contexts on one) the handlers share
            // it, as arm-smmu's IRQF_SHARED requests do: each runs when the line is taken.
            var handlers = new SortedDictionary<int, List<Action>>();
            void Add(int intid, Action h)
            {
                if (!handlers.TryGetValue(intid, out var l)) handlers[intid] = l = [];
                l.Add(h);
            }
            Add(32 + map.SmmuV2FirstSpi, () => drv.HandleGlobalInterrupt());
            for (var i = 0; i < smmu2.Options.ContextInterrupts; i++)
            {
                var index = i;
                Add(32 + map.SmmuV2ContextSpiOf(i), () => drv.HandleContextInterrupt(index));
            }
            foreach (var (intid, list) in handlers)
            {
                var shared = list.ToArray();
                irqs.Request(intid, (_, _) => { foreach (var h in shared) h(); });
                EnableLevelSpi(v3, v2, intid);
            }
            smmu = drv;
        }
        else if (machine.SmmuV3 is not null)
            smmu = SmmuV3Driver.Probe(new BusSmmuHostAccess(bus, map.Smmu), bus,
                new PhysPageAllocator(layout.SmmuTables, layout.SmmuTablesSize, bus));
        else throw new InvalidOperationException("board has no SMMU model");
        var pci = PciEnumeration.Scan(bus, map.PcieEcam, map.PcieMmio, map.PcieMmioSize, map.PcieMmioHigh, map.PcieMmioHighSize, map.PciePio, map.PciePioSize);
        var bridge = new KernelHostBridge("pcie", map.PcieEcam, 0, 255, map.PcieMmio, map.PcieMmioSize,
            rid => new KernelIdTarget("smmu", rid), rid => new KernelIdTarget("msi", rid), KeepFirmwareBuses: false);
        var k = new HostKernel(machine, bus, layout, [new KernelIommu(new KernelIommuInstance("smmu",
            smmu is SmmuV2Driver ? KernelIommuKind.SmmuV2 : KernelIommuKind.SmmuV3, map.Smmu), smmu)], irqs, cpus, msi, v3, v2,
            [new KernelPciHostBridge(bridge, pci)]) { MsiDomains = domains };
        k._msiByName["msi"] = msi;
        k.FormGroups(platform ?? []);
        k.RequestSmmuInterrupts();
        // From here interrupts are pushed: a CPU's interface raises it and it takes them from the machine's loop.
        foreach (var c in cpus) c.Attach(machine.Loop);
        foreach (var c in cpus) c.Raise();
        return k;
    }

    static void EnableLevelSpi(GicV3HostDriver? v3, GicV2HostDriver? v2, int intid)
    {
        if (v3 is not null) v3.EnableSpi(intid, 0, edge: false);
        else v2?.EnableSpi(intid, 0, edge: false);
    }

    /// <summary>arm_smmu_setup_unique_irqs: the event-queue and GERROR wired interrupts (edge) with their handlers (SMMUv3 only).</summary>
    void RequestSmmuInterrupts()
    {
        if (SmmuV3Driver is not { } d) return;
        var evtq = 32 + Machine.Map.SmmuFirstSpi;
        var gerror = 32 + Machine.Map.SmmuFirstSpi + 3;
        Irqs.Request(evtq, (_, _) => { SmmuEventInterrupts++; ReadSmmuEvents(); });
        Irqs.Request(gerror, (_, _) => { SmmuGerrorInterrupts++; d.HandleGlobalErrors(); });
        SetSpiEnabled(evtq, true, edge: true);
        SetSpiEnabled(gerror, true, edge: true);
    }

    void ReadSmmuEvents()
    {
        if (SmmuV3Driver is not { } d) return;
        var e = d.DrainEvents();
        SmmuEvents.AddRange(e);
        _unreported.AddRange(e);
    }

    readonly Dictionary<string, IMsiDomain> _msiByName = [];
    readonly List<UntranslatedFunction> _untranslated = [];

    /// <summary>MSI irq domains by controller name (what a function's msi-map / msi-parent names).</summary>
    public IReadOnlyDictionary<string, IMsiDomain> MsiControllers => _msiByName;

    /// <summary>PCI functions without an IOMMU group (so no VFIO): iommu-map gives no IOMMU (Linux: of_map_id found no
    /// entry; DMA is untranslated), or names one without a driver (the probe defers), or the driver refused the fwspec.</summary>
    public IReadOnlyList<UntranslatedFunction> UntranslatedFunctions => _untranslated;

    KernelIommu? IommuNamed(string name) => Iommus.FirstOrDefault(i => i.Instance.Name == name);

    void FormGroups(IReadOnlyList<PlatformDmaInfo> platform)
    {
        // iommu_probe_device for every endpoint, in enumeration order: the fwspec from the bridge's iommu-map (of_map_id),
        // then pci_device_group decides the group (per IOMMU instance: a group never spans two IOMMUs).
        var byKey = new Dictionary<string, KernelIommuGroup>();
        foreach (var hb in HostBridges)
            foreach (var f in hb.Pci.Functions)
            {
                if (f.IsBridge) continue;
                var rid = hb.Description.Rid(f.Bus, f.Device, f.Function);
                if (hb.Description.IommuOf(rid) is not { } it)
                {
                    _untranslated.Add(new(hb, f, rid, null, "no iommu-map entry: DMA untranslated"));
                    continue;
                }
                if (IommuNamed(it.Controller) is not { } iommu)
                {
                    _untranslated.Add(new(hb, f, rid, it.Controller, "no driver for " + it.Controller + ": " + _probeErrors.GetValueOrDefault(it.Controller, "not probed")));
                    continue;
                }
                var key = $"{iommu.Instance.Name}/{hb.Description.Name}/" + IommuGrouping.GroupKey(hb.Pci, f);
                if (!byKey.TryGetValue(key, out var g))
                {
                    g = new KernelIommuGroup(this, _groups.Count, key, iommu.Driver);
                    byKey[key] = g;
                    _groups.Add(g);
                }
                var dev = new Doorbell.Host.Iommu.IommuDevice(FunctionName(hb, f), [it.Id]);
                try { iommu.Driver.ProbeDevice(dev); }
                catch (Doorbell.Host.Iommu.IommuException e)
                {
                    // arm_smmu_probe_device refuses a StreamID the SMMU cannot hold: the device has no IOMMU group
                    if (g.Devices.Count == 0) { _groups.Remove(g); byKey.Remove(key); }
                    _untranslated.Add(new(hb, f, rid, it.Controller, e.Message));
                    continue;
                }
                IMsiDomain msi = new NoMsiDomain();
                var deviceId = rid;
                if (hb.Description.MsiOf(rid) is { } mt && _msiByName.TryGetValue(mt.Controller, out var d)) { msi = d; deviceId = mt.Id; }
                var fn = new KernelPciFunction(this, f, g, dev, hb, msi, deviceId);
                g.AddMember(dev, msi is NoMsiDomain ? null : msi);
                g.PciFunctions.Add(fn);
                _functions.Add(fn);
            }
        foreach (var p in platform)
        {
            var g = new KernelIommuGroup(this, _groups.Count, "platform:" + p.Name, Smmu);
            _groups.Add(g);
            var dev = new Doorbell.Host.Iommu.IommuDevice(p.Name, [p.StreamId]);
            Smmu.ProbeDevice(dev);
            g.AddMember(dev, null); // no msi-parent: msi_device_has_isolated_msi is false
            var pd = new KernelPlatformDevice(this, p);
            g.PlatformDevices.Add(pd);
            _platform.Add(pd);
        }
    }

    /// <summary>A function's name as Linux prints it: the bridge's PCI domain (its index), the bus-range start added to the ECAM-relative bus.</summary>
    internal string FunctionName(KernelPciHostBridge hb, EnumeratedFunction f)
    {
        var domain = 0;
        for (var i = 0; i < HostBridges.Count; i++) if (ReferenceEquals(HostBridges[i], hb)) domain = i;
        return $"{domain:x4}:{hb.Description.BusFirst + f.Bus:x2}:{f.Device:x2}.{f.Function}";
    }

    /// <summary>
    /// Whether every SMMU driver of the kernel claims IOMMU_CAP_INTR_REMAP, as arm-smmu (and arm-smmu-v3 until 4.11) did
    /// in the 2013–14 era. Type1 reads it at attach time.
    /// </summary>
    public void ClaimInterruptRemap(bool claim)
    {
        foreach (var i in Iommus)
        {
            if (i.Driver is SmmuV2Driver d2) d2.ClaimsInterruptRemap = claim;
            else if (i.Driver is SmmuV3Driver d3) d3.ClaimsInterruptRemap = claim;
        }
    }

    /// <summary>Registers every group with a new VFIO core and binds its devices (vfio-pci / vfio-platform).</summary>
    public VfioHost BuildVfio(VfioOptions? options = null)
    {
        var host = new VfioHost(options) { Trace = Machine.Trace };
        // Replaying the 2013–14 policy era means running that era's IOMMU drivers: arm-smmu (and arm-smmu-v3 until
        // 4.11) claimed IOMMU_CAP_INTR_REMAP.
        ClaimInterruptRemap(host.Options.IsolationEra == IsolationPolicyEra.Era2013);
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
        new(host, new UserAddressSpace(Bus, UserPages) { Loop = Machine.Loop }, memlockBytes);

    public KernelPciFunction? FindFunction(string name) => _functions.FirstOrDefault(f => f.Name == name);

    /// <summary>
    /// Takes whatever interrupts are pending on every host CPU now (IAR → handler → EOIR). Not needed for delivery —
    /// interrupts are pushed through the event loop — but harmless; re-entrant calls are folded into the outer one.
    /// </summary>
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

    /// <summary>SMMU event records read since the last call (by the event-queue interrupt handler, or now).</summary>
    public IReadOnlyList<SmmuV3Event> DrainSmmuEvents()
    {
        ReadSmmuEvents();
        var e = _unreported.ToList();
        _unreported.Clear();
        return e;
    }

    internal void SetSpiEnabled(int intid, bool enabled, bool edge)
    {
        if (GicV3Driver is { } v3)
        {
            if (enabled) v3.EnableSpi(intid, 0, edge);
            else v3.DisableSpi(intid);
        }
        else if (GicV2Driver is { } v2)
        {
            if (enabled) v2.EnableSpi(intid, 0, edge);
            else v2.DisableSpi(intid);
        }
    }
}

/// <summary>A PCI function without an IOMMU group: its requester ID, the IOMMU its iommu-map names (null: none), and why.</summary>
public sealed record UntranslatedFunction(KernelPciHostBridge Bridge, EnumeratedFunction Function, uint Rid, string? Iommu, string Reason);

/// <summary>A platform DMA engine placed on the board: device, register base, SPI index, StreamID.</summary>
public sealed record PlatformDmaInfo(Doorbell.Devices.PlatformDmaDevice Device, ulong Base, int Spi, uint StreamId)
{
    public string Name => $"{Base:x}.dma";
}
