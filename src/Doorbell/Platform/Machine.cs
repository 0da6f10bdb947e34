using Doorbell.Devices;
using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Timing;

namespace Doorbell.Platform;

// Known limits: no CPUs are modelled (software drives the bus directly, as qtest does); the interrupt
// controller and IOMMU are plugged in through BoardWiring factories so boards build without them.

/// <summary>Interrupt-controller and IOMMU factories a board calls while it builds (the seams to the GIC and SMMU models).</summary>
public sealed class BoardWiring
{
    /// <summary>Builds the IOMMU for the machine (it maps its own registers on machine.Bus), or null for none.</summary>
    public Func<Machine, IommuRequest, IIommuUpstream?>? Iommu { get; init; }
    /// <summary>Builds the interrupt controller (mapping its frames on machine.Bus) and returns SPI n → wired line.</summary>
    public Func<Machine, GicRequest, Func<int, IInterruptLine>>? Gic { get; init; }

    public static BoardWiring None { get; } = new();

    /// <summary>What boards use when given no wiring: the real GIC and SMMU models once they exist.</summary>
    public static BoardWiring Default => QemuVirtWiring.Models;
}

public enum IommuKind { None, SmmuV3, SmmuV2 }

/// <summary>What a board asks its IOMMU factory for.</summary>
public sealed record IommuRequest(IommuKind Kind, ulong Base, int FirstSpi, Doorbell.Smmu.V2.SmmuV2Options? SmmuV2 = null)
{
    /// <summary>SMMUv2: when ≥ 0, the one SPI every context interrupt is wired to (else FirstSpi + 1 + n).</summary>
    public int ContextSpi { get; init; } = -1;
    /// <summary>The SPI of SMMUv2 context interrupt <paramref name="index"/>.</summary>
    public int ContextSpiOf(int index) => ContextSpi >= 0 ? ContextSpi : FirstSpi + 1 + index;
}

/// <summary>What a board asks its GIC factory for (bases from the board's map; 0 = absent).</summary>
public sealed record GicRequest(int Version, bool Its, int Cpus, ulong DistributorBase, ulong RedistributorBase,
    ulong CpuInterfaceBase, ulong ItsBase, ulong V2mBase, int V2mFirstSpi, int V2mSpiCount)
{
    /// <summary>SPIs the distributor implements.</summary>
    public int SpiCount { get; init; } = 224;
}

/// <summary>
/// Several interrupt sources wired onto one level-sensitive SPI (a wired OR, as SMMUs combine their global and context
/// interrupts onto shared lines): the SPI is asserted while any source is. Each source drives its own <see cref="Input"/>.
/// </summary>
public sealed class WiredOrLine(IInterruptLine output)
{
    int _asserted;

    /// <summary>A new source input onto the shared line.</summary>
    public IInterruptLine Input() => new Source(this);

    void Change(bool asserted)
    {
        var before = _asserted > 0;
        _asserted += asserted ? 1 : -1;
        if (_asserted > 0 != before) output.SetLevel(_asserted > 0);
    }

    sealed class Source(WiredOrLine owner) : IInterruptLine
    {
        bool _level;

        public void SetLevel(bool asserted)
        {
            if (asserted == _level) return;
            _level = asserted;
            owner.Change(asserted);
        }
    }
}

/// <summary>An SPI input that only records its level (what a board uses when no GIC model is wired).</summary>
public sealed class RecordingInterruptLine(int spi) : IInterruptLine
{
    public int Spi { get; } = spi;
    public bool Level { get; private set; }
    public int RisingEdges { get; private set; }

    public void SetLevel(bool asserted)
    {
        if (asserted && !Level) RisingEdges++;
        Level = asserted;
    }
}

/// <summary>A built machine: its bus, clock, PCIe root complex, IOMMU and interrupt lines.</summary>
public sealed class Machine
{
    Func<int, IInterruptLine> _spi;
    readonly Dictionary<int, RecordingInterruptLine> _recorded = [];

    public Machine(string name, PhysicalAddressSpace bus, VirtualClock clock, Func<int, IInterruptLine>? spi, Trace? trace = null, StrictMonitor? strict = null)
    {
        Name = name;
        Bus = bus;
        Clock = clock;
        Trace = trace ?? new Trace(name);
        Trace.Clock ??= clock;
        Strict = strict ?? new StrictMonitor();
        bus.Loop.Context = Trace; // a posted write stays in the trace flow that issued it
        _spi = spi ?? (n => _recorded.TryGetValue(n, out var l) ? l : _recorded[n] = new RecordingInterruptLine(n));
    }

    public string Name { get; }
    /// <summary>The address map the board was built from (what the host kernel's drivers take their addresses from).</summary>
    public PlatformMap Map { get; init; } = PlatformMap.QemuVirt;
    /// <summary>The machine's one trace: every model it built emits here, by category (QEMU's trace events).</summary>
    public Trace Trace { get; }
    /// <summary>The machine's strict-mode monitor (disabled unless the board was asked for strict mode).</summary>
    public StrictMonitor Strict { get; }
    public PhysicalAddressSpace Bus { get; }
    /// <summary>The machine's event loop (docs/design.md, "One event loop"): the owner thread runs models and kernel; other threads post to it.</summary>
    public Doorbell.Runtime.EventLoop Loop => Bus.Loop;
    public VirtualClock Clock { get; }
    public PciHost? Pci { get; internal set; }
    public IIommuUpstream? Iommu { get; set; }
    public IommuKind IommuKind { get; internal set; }
    public int GicVersion { get; internal set; }
    public bool HasIts { get; internal set; }
    public int Cpus { get; internal set; } = 1;
    public ulong RamBase { get; internal set; }
    public ulong RamSize { get; internal set; }
    /// <summary>Where a PCI MSI doorbell is (GITS_TRANSLATER or the GICv2m SETSPI register), 0 when none.</summary>
    public ulong MsiDoorbell { get; internal set; }
    /// <summary>PCI MSIs go to the GICv2m frame (on a board that also has an ITS, or on a GICv2 board).</summary>
    public bool PciMsiToGicV2m { get; internal set; }
    public Doorbell.Smmu.V2.SmmuV2? SmmuV2 { get; internal set; }
    public List<object> Devices { get; } = [];
    /// <summary>The models the wiring built (null when absent).</summary>
    public Doorbell.Gic.V3.GicV3? GicV3 { get; internal set; }
    public Doorbell.Gic.Its.GicV3Its? Its { get; internal set; }
    public Doorbell.Gic.V2.GicV2? GicV2 { get; internal set; }
    public Doorbell.Gic.V2m.GicV2m? GicV2m { get; internal set; }
    public Doorbell.Smmu.V3.SmmuV3? SmmuV3 { get; internal set; }

    internal void SetSpiProvider(Func<int, IInterruptLine> spi) => _spi = spi;

    /// <summary>The wired line of SPI <paramref name="n"/> (INTID 32 + n).</summary>
    public IInterruptLine Spi(int n) => _spi(n);

    /// <summary>The recorded level of SPI n when no GIC model is wired (null when a GIC is).</summary>
    public RecordingInterruptLine? RecordedSpi(int n) => _recorded.TryGetValue(n, out var l) ? l : null;

    /// <summary>Adds the platform DMA engine: registers at <paramref name="base"/>, SPI <paramref name="spi"/>, DMA through the IOMMU at <paramref name="streamId"/>.</summary>
    public Doorbell.Devices.PlatformDmaDevice AddPlatformDma(ulong @base, int spi, uint streamId)
    {
        var d = new Doorbell.Devices.PlatformDmaDevice(Bus, Iommu, streamId, Spi(spi));
        Bus.MapMmio(new PhysAddr(@base), Doorbell.Devices.PlatformDmaRegs.RegionSize, d, MmioAccessRules.Registers32And64, "platform-dma");
        Devices.Add(d);
        return d;
    }

    /// <summary>Adds a PCI function on the root bus (first free slot when <paramref name="slot"/> is null).</summary>
    public T AddPci<T>(T function, int? slot = null, int fn = 0) where T : PciFunction
    {
        var host = Pci ?? throw new InvalidOperationException("machine has no PCIe root complex");
        var s = slot ?? host.RootBus.FirstFreeDevice();
        if (s < 0) throw new InvalidOperationException("root bus full");
        host.RootBus.Attach(function, s, fn);
        Devices.Add(function);
        return function;
    }
}
