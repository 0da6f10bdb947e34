using Doorbell.Gic.V3;
using Doorbell.Host.Irq;
using Doorbell.Memory;
using Doorbell.Platform;

namespace Doorbell.Host.Kernel;

/// <summary>
/// Doorbell's kernel layer booted as a guest kernel: the same interrupt drivers (<see cref="KernelInterrupts"/>: GICv3 +
/// ITS, or GICv2 + GICv2m), the same PCI enumeration (<see cref="PciEnumeration"/> over ECAM) and the same PCI device
/// drivers as on the host, reached through the one-house seams — an <see cref="IMemoryView"/> (a vCPU's loads and stores
/// of guest physical space), a <see cref="PlatformMap"/> (the guest board's), the vCPUs' ICC system registers
/// (<see cref="IIccSystemRegisters"/>) and <see cref="IPhysPageAllocator"/>s over guest RAM. RAM is split as the host
/// kernel splits its own (<see cref="HostMemoryLayout"/>): the first eighth for GIC/ITS tables, the rest for DMA and
/// driver memory. A guest here has no vIOMMU, so a DMA address is the guest physical address.
/// Known limits: no IOMMU groups or VFIO in the guest (nothing is assigned further down); PCI drivers are bound by the
/// caller (<see cref="Bind"/>), not matched by ID.
/// </summary>
public sealed class GuestKernel
{
    readonly Dictionary<ushort, IKernelPciDriver> _bound = [];

    GuestKernel(IMemoryView bus, PlatformMap map, KernelInterrupts irq, PciEnumeration pci, PhysPageAllocator dma)
    {
        Bus = bus; Map = map; Interrupts = irq; Pci = pci; DmaMemory = dma;
    }

    public IMemoryView Bus { get; }
    public PlatformMap Map { get; }
    public KernelInterrupts Interrupts { get; }
    public IMsiDomain MsiDomain => Interrupts.MsiDomain;
    public HostIrqTable Irqs => Interrupts.Irqs;
    public IReadOnlyList<HostCpu> Cpus => Interrupts.Cpus;
    public PciEnumeration Pci { get; }
    /// <summary>The page allocator of driver and DMA memory (guest RAM after the GIC tables).</summary>
    public PhysPageAllocator DmaMemory { get; }
    public IReadOnlyDictionary<ushort, IKernelPciDriver> BoundDrivers => _bound;

    /// <summary>
    /// Boots on a board: <paramref name="bus"/> is what the boot CPU sees, <paramref name="gicV3Cpus"/> the CPUs' ICC
    /// registers on a GICv3 board (null on a GICv2 board), RAM = [<see cref="PlatformMap.Ram"/>, +<paramref name="ramSize"/>).
    /// On a GICv2 board <paramref name="gicV2CpuViews"/> (each vCPU's view, index = CPU) brings up the secondary CPUs.
    /// With <paramref name="loop"/> (the event loop the VM runs on) the CPUs take their interrupts from it when their IRQ
    /// inputs are raised, as the host kernel's do; without it they take them only in <see cref="ServiceInterrupts"/>.
    /// </summary>
    /// <exception cref="IrqException">An interrupt driver failed to probe (errno as Linux's).</exception>
    public static GuestKernel Boot(IMemoryView bus, PlatformMap map, ulong ramSize, IReadOnlyList<IIccSystemRegisters>? gicV3Cpus, bool its, bool gicV2m,
        IReadOnlyList<IMemoryView>? gicV2CpuViews = null, Doorbell.Runtime.EventLoop? loop = null)
    {
        ArgumentNullException.ThrowIfNull(bus); ArgumentNullException.ThrowIfNull(map);
        var layout = HostMemoryLayout.For(map.Ram, ramSize);
        var irq = KernelInterrupts.Probe(bus, map, new IrqBoard(gicV3Cpus, its, gicV2m, GicV2CpuViews: gicV2CpuViews), new PhysPageAllocator(layout.GicTables, layout.GicTablesSize, bus));
        var pci = PciEnumeration.Scan(bus, map.PcieEcam, map.PcieMmio, map.PcieMmioSize, ioCpuBase: map.PciePio, ioSize: map.PciePioSize);
        var dma = new PhysPageAllocator(layout.SmmuTables, map.Ram + ramSize - layout.SmmuTables, bus);
        if (loop is not null) foreach (var c in irq.Cpus) c.Attach(loop);
        return new GuestKernel(bus, map, irq, pci, dma);
    }

    /// <summary>The enumerated function <paramref name="name"/> (0000:bb:dd.f), or null.</summary>
    public EnumeratedFunction? FindFunction(string name) => Pci.Find(name);

    /// <summary>
    /// The interrupt entry of every CPU (IAR → handler → EOI until none is signalled). Returns the number taken. Not
    /// needed for delivery when the CPUs run on a loop and their vCPUs run (interrupts are pushed); it is how a caller
    /// lets a stopped vCPU's guest take what waits.
    /// </summary>
    public int ServiceInterrupts()
    {
        var n = 0;
        var cpus = Interrupts.Cpus;
        for (var i = 0; i < cpus.Length; i++) n += cpus[i].HandleInterrupts();
        return n;
    }

    /// <summary>Binds <paramref name="driver"/> to its function (probe). -EBUSY when one is bound; the probe's -errno otherwise.</summary>
    public int Bind(IKernelPciDriver driver)
    {
        ArgumentNullException.ThrowIfNull(driver);
        if (_bound.ContainsKey(driver.Function.Rid)) return -Errno.EBUSY;
        var r = driver.Probe();
        if (r == 0) _bound[driver.Function.Rid] = driver;
        return r;
    }

    /// <summary>Unbinds the driver of <paramref name="function"/> (remove); 0 when none was bound.</summary>
    public void Unbind(EnumeratedFunction function)
    {
        ArgumentNullException.ThrowIfNull(function);
        if (_bound.Remove(function.Rid, out var d)) d.Remove();
    }
}

/// <summary>A PCI driver of the kernel layer (Linux struct pci_driver: probe and remove).</summary>
public interface IKernelPciDriver
{
    EnumeratedFunction Function { get; }
    /// <summary>0 or -errno.</summary>
    int Probe();
    void Remove();
}
