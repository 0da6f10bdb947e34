using System.Runtime.InteropServices;
using Doorbell.Gic.V3;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Kvm;
using Doorbell.Memory;
using Doorbell.Platform;

namespace Doorbell.Vmm;

/// <summary>The guest board's interrupt controller: qemu-virt's GICv3 + ITS, or its gic-version=2 GICv2 + GICv2m frame.</summary>
public enum GuestInterruptController { GicV3Its, GicV2m }

/// <summary>
/// The VMM (QEMU's role, in C#): a userspace process of the host kernel that creates a VM with a qemu-virt-like guest
/// board — guest RAM at 0x4000_0000 taken from its own anonymous memory, vCPUs, the in-kernel vGICv3 at the qemu-virt
/// GICD/GICR addresses with a vITS at 0x0808_0000 (or a vGICv2 with a GICv2m frame), and a guest PCIe host bridge with
/// ECAM at 0x40_1000_0000 emulated by the VMM (00:00.0 is the host bridge, assigned devices sit on the root bus at the
/// slot their guest requester ID names) — opens a VFIO container and maps the whole guest RAM into it with IOVA =
/// guest physical address, so an assigned device's DMA goes through the physical SMMU to the host pages behind the
/// guest. Devices are attached as <see cref="VfioPciProxy"/>s; ECAM and their BARs are MMIO exits of the VM (memory BARs
/// in the PCIe MMIO window, I/O BARs through the host bridge's I/O window at <see cref="PlatformMap.PciePio"/>).
/// The guest board's addresses are a <see cref="PlatformMap"/> (<see cref="Board"/>), which the guest kernel reads.
/// Known limits: one PCI root bus (no guest bridges); one assigned device per group.
/// </summary>
public sealed class GuestVm : IDisposable, IVmmMmioExit
{
    public const ulong RamBase = 0x4000_0000;
    /// <summary>qemu-virt's 32-bit PCIe MMIO window, where the guest places assigned devices' BARs.</summary>
    public const ulong PciMmioBase = 0x1000_0000;
    readonly List<VfioPciProxy> _devices = [];
    int _container = -1;
    readonly Dictionary<int, int> _groups = [];
    ushort _bridgeCommand;

    GuestVm(VfioProcess process, Vm vm, ulong ramHva, ulong ramSize, PlatformMap board, GuestInterruptController gic)
    {
        Process = process;
        Vm = vm;
        RamHva = ramHva;
        RamSize = ramSize;
        Board = board;
        InterruptController = gic;
    }

    public VfioProcess Process { get; }
    public Vm Vm { get; }
    public ulong RamHva { get; }
    public ulong RamSize { get; }
    /// <summary>The guest board's address map and SPI assignment (what a guest kernel is booted with).</summary>
    public PlatformMap Board { get; }
    public GuestInterruptController InterruptController { get; }
    public IReadOnlyList<VfioPciProxy> Devices => _devices;
    public Gic.Its.GicV3Its Its => Vm.Its[0].Its;
    /// <summary>Guest software booted on this VM (set by whoever boots it; the VMM does not look inside).</summary>
    public object? GuestSoftware { get; set; }
    /// <summary>Guest ECAM accesses (MMIO exits the VMM decoded as config space).</summary>
    public long EcamAccesses { get; private set; }

    /// <summary>Creates the VM and its board (GICv3 + ITS), and the VFIO container with guest RAM mapped at IOVA = GPA. Errors are -errno.</summary>
    public static int Create(VfioProcess process, int vcpus, ulong ramSize, out GuestVm? vmm) =>
        Create(process, vcpus, ramSize, GuestInterruptController.GicV3Its, out vmm);

    /// <summary>Creates the VM and its board with the chosen interrupt controller. Errors are -errno.</summary>
    public static int Create(VfioProcess process, int vcpus, ulong ramSize, GuestInterruptController gic, out GuestVm? vmm)
    {
        ArgumentNullException.ThrowIfNull(process);
        vmm = null;
        var board = PlatformMap.QemuVirt with { Name = gic == GuestInterruptController.GicV3Its ? "guest-virt" : "guest-virt-gicv2", Ram = RamBase };
        var hva = process.Memory.MapAnonymous(ramSize);
        var vm = new Vm(process.Memory);
        var r = vm.SetUserMemoryRegion(new KvmUserspaceMemoryRegion(0, 0, RamBase, ramSize, hva));
        for (var i = 0; r >= 0 && i < vcpus; i++) r = vm.CreateVcpu(out _);
        if (gic == GuestInterruptController.GicV3Its)
        {
            if (r >= 0) r = vm.CreateVgicV3(new PhysAddr(board.GicDistributor), new PhysAddr(board.GicRedistributor), board.SpiCount);
            if (r >= 0) r = vm.CreateVits(new PhysAddr(board.GicIts), out _);
        }
        else
        {
            if (r >= 0) r = vm.CreateVgicV2(new PhysAddr(board.GicDistributor), new PhysAddr(board.GicCpuInterface), board.SpiCount);
            if (r >= 0) r = vm.CreateVgicV2m(new PhysAddr(board.GicV2m), 32 + board.V2mFirstSpi, board.V2mSpiCount);
        }
        if (r < 0) { vm.Dispose(); process.Memory.Unmap(hva, ramSize); return r; }
        var g = new GuestVm(process, vm, hva, ramSize, board, gic);
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
        var slot = (int)(guestDeviceId >> 3);
        if (guestDeviceId > 0xFF || (guestDeviceId & 7) != 0 || slot == 0) return -Errno.EINVAL; // function 0 of a slot on bus 0; 00:00.0 is the bridge
        if (_devices.Any(d => d.GuestSlot == slot)) return -Errno.EBUSY;
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
        var rr = VfioPciProxy.Create(this, dev, guestDeviceId, out proxy);
        if (rr < 0) { Process.Close(dev); return rr; }
        _devices.Add(proxy!);
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
        var spis = Vm.SpiCount;
        var table = new List<KvmIrqRoutingEntry>(spis + _msiRoutes.Count);
        for (var i = 0u; i < spis; i++) table.Add(KvmIrqRoutingEntry.Irqchip(i, i));
        table.AddRange(_msiRoutes.Values);
        return Vm.SetGsiRouting(table.ToArray());
    }

    bool IsEcam(ulong gpa, int size) => gpa >= Board.PcieEcam && gpa + (ulong)size <= Board.PcieEcam + Board.PcieEcamSize;

    /// <summary>The proxy at guest (bus 0) <paramref name="slot"/>, function 0.</summary>
    VfioPciProxy? AtSlot(int slot)
    {
        foreach (var d in _devices)
            if (d.GuestSlot == slot) return d;
        return null;
    }

    // The guest host bridge at 00:00.0 (QEMU's gpex-root: Red Hat 1b36:0008, class 06 00 00, type 0 header, no BARs).
    uint BridgeConfig(int dword) => dword switch
    {
        0x00 => QemuVirtMap.GpexVendor | (uint)QemuVirtMap.GpexDevice << 16,
        0x04 => _bridgeCommand,
        0x08 => 0x0600_0000,
        _ => 0,
    };

    /// <summary>A guest ECAM read (PCIe 4.0 §7.2.2: bus[27:20] device[19:15] function[14:12] register[11:0]).</summary>
    BusStatus EcamRead(ulong gpa, int size, out ulong value)
    {
        EcamAccesses++;
        var off = gpa - Board.PcieEcam;
        var bus = (int)(off >> 20);
        var slot = (int)(off >> 15) & 0x1F;
        var fn = (int)(off >> 12) & 7;
        var reg = (int)(off & 0xFFF);
        var ones = size == 8 ? ulong.MaxValue : (1UL << (8 * size)) - 1;
        value = ones; // no function: all ones (an Unsupported Request completes as 1s)
        if (size == 8 || (reg & (size - 1)) != 0) return BusStatus.Ok;
        if (bus != 0 || fn != 0) return BusStatus.Ok;
        if (slot == 0) { value = reg < 0x100 ? (BridgeConfig(reg & ~3) >> (8 * (reg & 3))) & ones : 0; return BusStatus.Ok; }
        if (AtSlot(slot) is { } d) value = d.ReadConfig(reg, size);
        return BusStatus.Ok;
    }

    BusStatus EcamWrite(ulong gpa, int size, ulong value)
    {
        EcamAccesses++;
        var off = gpa - Board.PcieEcam;
        var bus = (int)(off >> 20);
        var slot = (int)(off >> 15) & 0x1F;
        var fn = (int)(off >> 12) & 7;
        var reg = (int)(off & 0xFFF);
        if (size == 8 || (reg & (size - 1)) != 0 || bus != 0 || fn != 0) return BusStatus.Ok;
        if (slot == 0) { if (reg == 4) _bridgeCommand = (ushort)(value & 0x0006); return BusStatus.Ok; }
        AtSlot(slot)?.WriteConfig(reg, size, (uint)value);
        return BusStatus.Ok;
    }

    BusStatus IVmmMmioExit.Read(Vcpu vcpu, ulong gpa, int size, out ulong value)
    {
        if (IsEcam(gpa, size)) return EcamRead(gpa, size, out value);
        foreach (var d in _devices)
            if (d.Decodes(gpa, size)) return d.Read(gpa, size, out value);
        value = 0;
        return BusStatus.DecodeError;
    }

    BusStatus IVmmMmioExit.Write(Vcpu vcpu, ulong gpa, int size, ulong value)
    {
        if (IsEcam(gpa, size)) return EcamWrite(gpa, size, value);
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
