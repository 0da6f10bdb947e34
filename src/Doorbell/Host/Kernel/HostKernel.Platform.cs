using Doorbell.Gic.V2;
using Doorbell.Gic.V3;
using Doorbell.Host.Irq;
using Doorbell.Host.SmmuV2;
using Doorbell.Host.SmmuV3;
using Doorbell.Memory;
using Doorbell.Platform;

// Booting the host kernel on a board given as lists (KernelPlatform: a device tree's IOMMUs, MSI controllers, host
// bridges, platform masters), in Linux's order: the GIC driver; each MSI controller's irqchip driver (ITS, the ITS
// behind a pre-ITS window, GICv2m frames, in-controller MSI blocks); each IOMMU's driver at its reg; each ECAM host
// bridge enumerated, its functions' fwspecs and DeviceIDs from the bridge's of_map_id; IOMMU groups per IOMMU
// instance; platform masters probed with their `iommus`. Known limits: IOMMU interrupts are not requested (the
// board wires none: fault records are read by DrainFaults); one CPU is brought up per GIC description.
namespace Doorbell.Host.Kernel;

public sealed partial class HostKernel
{
    readonly List<(KernelPlatformMaster Master, KernelIommuGroup? Group, Doorbell.Host.Iommu.IommuDevice? Device, string? Error)> _masters = [];
    readonly Dictionary<string, string> _probeErrors = [];

    /// <summary>Platform DMA masters and the IOMMU group each got (null with the reason when it got none).</summary>
    public IReadOnlyList<(KernelPlatformMaster Master, KernelIommuGroup? Group, Doorbell.Host.Iommu.IommuDevice? Device, string? Error)> PlatformMasters => _masters;

    /// <summary>Why a named IOMMU or MSI controller has no driver (its probe failed), by name.</summary>
    public IReadOnlyDictionary<string, string> ProbeErrors => _probeErrors;

    /// <summary>
    /// Boots on a board given as lists (<paramref name="platform"/>), over <paramref name="memory"/> (the machine's
    /// bus when null). A driver whose probe fails leaves its block out (the reason in <see cref="ProbeErrors"/>), as a
    /// failed probe does in Linux; only a failing GIC stops the boot.
    /// </summary>
    /// <exception cref="IrqException">The GIC driver failed.</exception>
    public static HostKernel Boot(Machine machine, KernelPlatform platform, IMemoryView? memory)
    {
        ArgumentNullException.ThrowIfNull(machine);
        ArgumentNullException.ThrowIfNull(platform);
        var bus = memory ?? machine.Bus;
        var layout = HostMemoryLayout.For(machine.RamBase, machine.RamSize);
        var gicTables = new PhysPageAllocator(layout.GicTables, layout.GicTablesSize, bus);
        GicV3HostDriver? v3 = null;
        GicV2HostDriver? v2 = null;
        HostCpu[] cpus;
        HostIrqTable irqs;
        var gic = platform.Gic;
        if (gic.V3)
        {
            v3 = new GicV3HostDriver(bus, new PhysAddr(gic.Distributor), new PhysAddr(gic.RedistributorOrCpuInterface),
                gic.GicV3Cpus ?? throw new ArgumentException("a GICv3 needs its CPUs' ICC registers", nameof(platform)), gicTables);
            v3.Init();
            cpus = [.. v3.Cpus];
            irqs = v3.Irqs;
        }
        else
        {
            v2 = new GicV2HostDriver(bus, new PhysAddr(gic.Distributor), new PhysAddr(gic.RedistributorOrCpuInterface));
            v2.Init();
            cpus = [v2.Cpu0];
            irqs = v2.Irqs;
        }
        var errors = new Dictionary<string, string>();
        var byName = new Dictionary<string, IMsiDomain>();
        var domains = new List<IMsiDomain>();
        var inController = 0;
        foreach (var m in platform.MsiControllers)
        {
            try
            {
                IMsiDomain d;
                switch (m.Kind)
                {
                    case KernelMsiKind.Its or KernelMsiKind.PreIts when v3 is not null:
                        var its = new ItsDriver(v3, new PhysAddr(m.Base), new ItsDriverOptions { ForceIndirect = true });
                        its.Init();
                        d = m.Kind == KernelMsiKind.PreIts ? new PreItsDomain(its, m.Window) : its;
                        break;
                    case KernelMsiKind.GicV2m:
                        var frame = new Gicv2mDriver(v3 is not null ? v3 : v2!, new PhysAddr(m.Base));
                        frame.Init();
                        d = frame;
                        break;
                    case KernelMsiKind.InController when m.Spi >= 0:
                        var ic = new InControllerMsiDriver(m.Name, bus, m.Base, irqs, inController++);
                        irqs.Request(32 + m.Spi, (_, cpu) => ic.HandleSpi(cpu));
                        if (v3 is not null) v3.EnableSpi(32 + m.Spi, 0, edge: false);
                        else v2!.EnableSpi(32 + m.Spi, 0, edge: false);
                        d = ic;
                        break;
                    default:
                        errors[m.Name] = m.Kind is KernelMsiKind.Its or KernelMsiKind.PreIts ? "an ITS needs a GICv3" : "no SPI for the MSI block";
                        continue;
                }
                byName[m.Name] = d;
                domains.Add(d);
            }
            catch (IrqException e) { errors[m.Name] = e.Message; }
        }
        var iommus = new List<KernelIommu>();
        var share = platform.Iommus.Count == 0 ? 0 : (layout.SmmuTablesSize / (ulong)platform.Iommus.Count) & ~0xFFFFUL;
        for (var i = 0; i < platform.Iommus.Count; i++)
        {
            var inst = platform.Iommus[i];
            var tables = new PhysPageAllocator(layout.SmmuTables + (ulong)i * share, share, bus);
            try
            {
                Doorbell.Host.Iommu.IIommuDriver drv = inst.Kind == KernelIommuKind.SmmuV3
                    ? SmmuV3Driver.Probe(new BusSmmuHostAccess(bus, inst.Base), bus, tables)
                    : SmmuV2Driver.Probe(new BusSmmuHostAccess(bus, inst.Base), bus, tables);
                iommus.Add(new KernelIommu(inst, drv));
            }
            catch (Exception e) when (e is Doorbell.Host.Iommu.IommuException or ArgumentException) { errors[inst.Name] = e.Message; }
        }
        var bridges = new List<KernelPciHostBridge>();
        foreach (var hb in platform.HostBridges)
            bridges.Add(new KernelPciHostBridge(hb, PciEnumeration.Scan(bus, hb.Ecam, hb.Mmio, hb.MmioSize, keepFirmwareBuses: hb.KeepFirmwareBuses)));
        var msi = domains.Count > 0 ? domains[0] : new NoMsiDomain();
        var k = new HostKernel(machine, bus, layout, iommus, irqs, cpus, msi, v3, v2, bridges) { MsiDomains = domains };
        foreach (var (n, d) in byName) k._msiByName[n] = d;
        foreach (var (n, e) in errors) k._probeErrors[n] = e;
        k.FormGroups([]);
        k.ProbePlatformMasters(platform.PlatformMasters);
        foreach (var c in cpus) c.Attach(machine.Loop);
        foreach (var c in cpus) c.Raise();
        return k;
    }

    void ProbePlatformMasters(IReadOnlyList<KernelPlatformMaster> masters)
    {
        foreach (var m in masters)
        {
            if (m.Iommu is null || IommuNamed(m.Iommu) is not { } iommu)
            {
                _masters.Add((m, null, null, m.Iommu is null ? "no iommus" : _probeErrors.GetValueOrDefault(m.Iommu, "IOMMU not probed")));
                continue;
            }
            var dev = new Doorbell.Host.Iommu.IommuDevice(m.Name, [.. m.StreamIds]);
            try { iommu.Driver.ProbeDevice(dev); }
            catch (Doorbell.Host.Iommu.IommuException e) { _masters.Add((m, null, null, e.Message)); continue; }
            var g = new KernelIommuGroup(this, _groups.Count, "platform:" + m.Name, iommu.Driver);
            _groups.Add(g);
            g.AddMember(dev, m.Msi is not null && _msiByName.TryGetValue(m.Msi, out var d) ? d : null);
            _masters.Add((m, g, dev, null));
        }
    }

    /// <summary>Fault records the driver of IOMMU <paramref name="iommu"/> has read so far (SMMUv3 event records drained;
    /// SMMUv2 fault handlers run, as their interrupts would — the board wires no IOMMU interrupt).</summary>
    public int DrainFaults(string iommu) => IommuNamed(iommu) is { } i ? FaultRecords.Read(i.Driver, SmmuEvents) : 0;

    /// <summary>
    /// The MSI domain of an ITS behind the Socionext pre-ITS window: the ITS driver's vectors, each message's address the
    /// window + (DeviceID &lt;&lt; 2) (Linux its_enable_quirk_socionext_synquacer). Not isolating: the writer picks the DeviceID.
    /// </summary>
    internal sealed class PreItsDomain(ItsDriver its, ulong window) : IMsiDomain
    {
        /// <summary>The ITS driver behind the window.</summary>
        public ItsDriver Its => its;
        public string Name => its.Name + " (pre-ITS)";
        public bool IsolatedMsi => false;

        public MsiAllocation AllocateMsis(uint deviceId, int count)
        {
            var a = its.AllocateMsis(deviceId, count);
            var v = new MsiVector[a.Vectors.Count];
            for (var i = 0; i < v.Length; i++)
                v[i] = a.Vectors[i] with { Message = new MsiMessage(window + ((ulong)deviceId << 2), a.Vectors[i].Message.Data) };
            _inner[v.Length == 0 ? -1 : v[0].Intid] = a;
            return new MsiAllocation(this, deviceId, v);
        }

        readonly Dictionary<int, MsiAllocation> _inner = [];

        public void FreeMsis(MsiAllocation allocation)
        {
            ArgumentNullException.ThrowIfNull(allocation);
            var key = allocation.Vectors.Count == 0 ? -1 : allocation.Vectors[0].Intid;
            if (_inner.Remove(key, out var a)) its.FreeMsis(a);
        }

        public void SetAffinity(MsiVector vector, int cpu) => its.SetAffinity(vector, cpu);
    }
}

/// <summary>How many fault records an IOMMU driver has read, for code that runs the fault handlers itself (no IOMMU
/// interrupt wired): SMMUv3 event-queue records drained so far, arm-smmu context and global faults handled so far.</summary>
public static class FaultRecords
{
    /// <summary>Runs the driver's fault handling now and returns its running total (the driver's own count of records
    /// read, whoever read them); SMMUv3 records go to <paramref name="events"/> too.</summary>
    public static int Read(Doorbell.Host.Iommu.IIommuDriver driver, Doorbell.Runtime.BoundedHistory<Doorbell.Smmu.V3.SmmuV3Event>? events = null)
    {
        switch (driver)
        {
            case SmmuV3Driver d3:
                var e = d3.DrainEvents();
                events?.AddRange(e);
                return (int)Math.Min(d3.Events.Total, int.MaxValue);
            case SmmuV2Driver d2:
                d2.HandleGlobalInterrupt();
                for (var c = 0; c < d2.Features.ContextIrqs; c++) d2.HandleContextInterrupt(c);
                return (int)Math.Min(d2.Faults.Total, int.MaxValue);
            default:
                return 0;
        }
    }
}
