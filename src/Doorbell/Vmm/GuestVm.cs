using System.Runtime.InteropServices;
using Doorbell.Gic.V3;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Kvm;
using Doorbell.Memory;

namespace Doorbell.Vmm;

/// <summary>
/// The VMM (QEMU's role, in C#): a userspace process of the host kernel that creates a VM with a qemu-virt-like guest
/// board — guest RAM at 0x4000_0000 taken from its own anonymous memory, vCPUs, the in-kernel vGICv3 at the qemu-virt
/// GICD/GICR addresses and a vITS at 0x0808_0000 — opens a VFIO container and maps the whole guest RAM into it with
/// IOVA = guest physical address, so an assigned device's DMA goes through the physical SMMU to the host pages behind
/// the guest. Devices are attached as <see cref="VfioPciProxy"/>s; their BARs are MMIO exits of the VM.
/// Known limits: no guest ECAM/host bridge yet (a proxy's BAR is placed by the VMM and the guest driver is told where);
/// one assigned device per group.
/// </summary>
public sealed class GuestVm : IDisposable, IVmmMmioExit
{
    public const ulong RamBase = 0x4000_0000;
    /// <summary>qemu-virt's 32-bit PCIe MMIO window, where the VMM places assigned devices' BARs.</summary>
    public const ulong PciMmioBase = 0x1000_0000;
    readonly List<VfioPciProxy> _devices = [];
    ulong _nextBar = PciMmioBase;
    int _container = -1;
    readonly Dictionary<int, int> _groups = [];

    GuestVm(VfioProcess process, Vm vm, ulong ramHva, ulong ramSize)
    {
        Process = process;
        Vm = vm;
        RamHva = ramHva;
        RamSize = ramSize;
    }

    public VfioProcess Process { get; }
    public Vm Vm { get; }
    public ulong RamHva { get; }
    public ulong RamSize { get; }
    public IReadOnlyList<VfioPciProxy> Devices => _devices;
    public Gic.Its.GicV3Its Its => Vm.Its[0].Its;

    /// <summary>Creates the VM and its board, and the VFIO container with guest RAM mapped at IOVA = GPA. Errors are -errno.</summary>
    public static int Create(VfioProcess process, int vcpus, ulong ramSize, out GuestVm? vmm)
    {
        ArgumentNullException.ThrowIfNull(process);
        vmm = null;
        var hva = process.Memory.MapAnonymous(ramSize);
        var vm = new Vm(process.Memory);
        var r = vm.SetUserMemoryRegion(new KvmUserspaceMemoryRegion(0, 0, RamBase, ramSize, hva));
        for (var i = 0; r >= 0 && i < vcpus; i++) r = vm.CreateVcpu(out _);
        if (r >= 0) r = vm.CreateVgicV3(QemuVirtGicV3.GicdBase, QemuVirtGicV3.GicrBase);
        if (r >= 0) r = vm.CreateVits(QemuVirtGicV3.ItsBase, out _);
        if (r < 0) { vm.Dispose(); return r; }
        var g = new GuestVm(process, vm, hva, ramSize);
        vm.MmioExit = g;
        g._container = process.OpenContainer();
        vmm = g;
        return 0;
    }

    /// <summary>
    /// Assigns the VFIO device <paramref name="name"/> of group <paramref name="groupId"/> to the guest with guest
    /// requester/DeviceID <paramref name="guestDeviceId"/> (the guest board's msi-map is the identity). The first device
    /// sets up the container's IOMMU (VFIO_SET_IOMMU TYPE1v2, -EPERM without isolated MSIs) and maps guest RAM.
    /// </summary>
    public int AddDevice(int groupId, string name, uint guestDeviceId, out VfioPciProxy? proxy)
    {
        proxy = null;
        if (!_groups.TryGetValue(groupId, out var gfd))
        {
            gfd = Process.OpenGroup(groupId);
            if (gfd < 0) return gfd;
            var r = Process.Ioctl(gfd, VfioIoctl.GroupSetContainer, BitConverter.GetBytes(_container));
            if (r < 0) return r;
            _groups[groupId] = gfd;
            if (_groups.Count == 1)
            {
                r = Process.Ioctl(_container, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu);
                if (r < 0) return r;
                var map = new byte[32];
                MemoryMarshal.Write(map, new VfioIommuType1DmaMap { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = RamHva, Iova = RamBase, Size = RamSize });
                r = Process.Ioctl(_container, VfioIoctl.IommuMapDma, map);
                if (r < 0) return r;
            }
        }
        var dev = Process.Ioctl(gfd, VfioIoctl.GroupGetDeviceFd, System.Text.Encoding.ASCII.GetBytes(name + "\0"));
        if (dev < 0) return dev;
        var rr = VfioPciProxy.Create(this, dev, guestDeviceId, _nextBar, out proxy);
        if (rr < 0) { Process.Close(dev); return rr; }
        _nextBar += Math.Max(proxy!.Bar0Size, 0x1_0000);
        _devices.Add(proxy);
        return 0;
    }

    readonly SortedDictionary<uint, KvmIrqRoutingEntry> _msiRoutes = [];
    uint _nextGsi = 1024; // above the default irqchip routes (GSI n -> SPI pin n)

    /// <summary>GSIs for a device's MSI-X vectors (per VM, so a run's numbers do not depend on earlier VMs).</summary>
    internal uint AllocateGsis(int count)
    {
        var b = _nextGsi;
        _nextGsi += (uint)count;
        return b;
    }

    /// <summary>Adds, replaces or (null) removes the MSI route of <paramref name="gsi"/> and commits the whole table
    /// (KVM_SET_GSI_ROUTING replaces it whole): the default irqchip routes GSI n → SPI pin n plus every MSI route.</summary>
    internal int SetMsiRoute(uint gsi, KvmIrqRoutingEntry? route)
    {
        if (route is { } r) _msiRoutes[gsi] = r; else _msiRoutes.Remove(gsi);
        var spis = Vm.VgicV3?.Options.SpiCount ?? 0;
        var table = new List<KvmIrqRoutingEntry>(spis + _msiRoutes.Count);
        for (var i = 0u; i < spis; i++) table.Add(KvmIrqRoutingEntry.Irqchip(i, i));
        table.AddRange(_msiRoutes.Values);
        return Vm.SetGsiRouting(table.ToArray());
    }

    BusStatus IVmmMmioExit.Read(Vcpu vcpu, ulong gpa, int size, out ulong value)
    {
        foreach (var d in _devices)
            if (d.Decodes(gpa, size)) return d.Read(gpa, size, out value);
        value = 0;
        return BusStatus.DecodeError;
    }

    BusStatus IVmmMmioExit.Write(Vcpu vcpu, ulong gpa, int size, ulong value)
    {
        foreach (var d in _devices)
            if (d.Decodes(gpa, size)) return d.Write(gpa, size, value);
        return BusStatus.DecodeError;
    }

    /// <summary>
    /// VM teardown: devices reset and released (their irqfds, routes and VFIO interrupts), guest RAM unmapped from the
    /// container, the VM closed, VFIO files closed and the guest RAM returned to the process.
    /// </summary>
    public void Dispose()
    {
        foreach (var d in _devices) d.Dispose();
        _devices.Clear();
        if (_container >= 0 && _groups.Count > 0)
        {
            var un = new byte[24];
            MemoryMarshal.Write(un, new VfioIommuType1DmaUnmap { Argsz = 24, Iova = RamBase, Size = RamSize });
            Process.Ioctl(_container, VfioIoctl.IommuUnmapDma, un);
        }
        Vm.Dispose();
        foreach (var g in _groups.Values) Process.Close(g);
        _groups.Clear();
        if (_container >= 0) Process.Close(_container);
        _container = -1;
        Process.Memory.Unmap(RamHva, RamSize);
    }
}
