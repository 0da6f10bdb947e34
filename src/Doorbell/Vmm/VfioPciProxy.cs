using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Kvm;
using Doorbell.Memory;

namespace Doorbell.Vmm;

/// <summary>
/// An assigned PCI device as the guest sees it (QEMU's vfio-pci role): BAR0 relocated to a guest physical address,
/// accesses forwarded to the VFIO BAR0 region (pread/pwrite on the device fd), except the MSI-X table and PBA, which the
/// VMM emulates (their location comes from the MSI-X capability read through the VFIO config region). When the guest
/// unmasks a table entry with an address, the VMM gives the vector an eventfd that is an irqfd of the VM on a GSI
/// routed as MSI {guest address, guest data, guest DeviceID}, and hands the same eventfd to VFIO_DEVICE_SET_IRQS — so
/// the physical interrupt ends in the guest without passing through the VMM. Masking an entry takes the irqfd away.
/// Known limits: BAR0 only (64-bit BAR0/1 of the devices here); guest config space is not composed yet (no guest ECAM);
/// MSI-X table in BAR0; PBA reads as zero (no pending bits kept while masked).
/// </summary>
public sealed class VfioPciProxy : IDisposable
{
    readonly GuestVm _vmm;
    readonly int _fd;
    readonly ulong _bar0Off, _cfgOff;
    readonly uint[] _table; // 4 dwords per entry: addr lo, addr hi, data, vector control
    readonly EventFd?[] _vectorFd;
    readonly uint _gsiBase;
    bool _disposed;

    VfioPciProxy(GuestVm vmm, int fd, uint devId, ulong guestBar0, ulong bar0Off, ulong bar0Size, ulong cfgOff, int vectors, ulong tableOff, ulong pbaOff)
    {
        _vmm = vmm; _fd = fd; GuestDeviceId = devId; GuestBar0 = guestBar0; _bar0Off = bar0Off; Bar0Size = bar0Size; _cfgOff = cfgOff;
        Vectors = vectors; MsixTableOffset = tableOff; MsixPbaOffset = pbaOff;
        _table = new uint[vectors * 4];
        for (var i = 0; i < vectors; i++) _table[i * 4 + 3] = 1; // masked at reset
        _vectorFd = new EventFd?[vectors];
        _gsiBase = vmm.AllocateGsis(vectors);
    }

    public uint GuestDeviceId { get; }
    public ulong GuestBar0 { get; }
    public ulong Bar0Size { get; }
    public int Vectors { get; }
    public ulong MsixTableOffset { get; }
    public ulong MsixPbaOffset { get; }
    /// <summary>GSI of MSI-X vector <paramref name="n"/>.</summary>
    public uint GsiOf(int n) => _gsiBase + (uint)n;
    public int ActiveVectors => _vectorFd.Count(f => f is not null);

    internal static int Create(GuestVm vmm, int fd, uint devId, ulong guestBar0, out VfioPciProxy? proxy)
    {
        proxy = null;
        var p = vmm.Process;
        var bar0Off = RegionOffset(p, fd, VfioPciIndex.Bar0, out var bar0Size);
        var cfgOff = RegionOffset(p, fd, VfioPciIndex.Config, out _);
        if (bar0Size == 0) return -Errno.ENODEV;
        // Find the MSI-X capability in the VFIO-virtualized config space.
        int vectors = 0; ulong table = 0, pba = 0;
        var pos = Cfg(p, fd, cfgOff, 0x34, 1) & 0xFC;
        for (var guard = 0; pos != 0 && guard < 48; guard++)
        {
            var hdr = Cfg(p, fd, cfgOff, (int)pos, 4);
            if ((hdr & 0xFF) == 0x11)
            {
                vectors = (int)((hdr >> 16) & 0x7FF) + 1;
                var t = Cfg(p, fd, cfgOff, (int)pos + 4, 4);
                var b = Cfg(p, fd, cfgOff, (int)pos + 8, 4);
                if ((t & 7) != 0 || (b & 7) != 0) return -Errno.ENOTTY; // table or PBA outside BAR0: not handled here
                table = t & ~7u; pba = b & ~7u;
                break;
            }
            pos = (hdr >> 8) & 0xFC;
        }
        // Memory decode and bus mastering, as the guest's COMMAND write would be forwarded.
        var cmd = (ushort)Cfg(p, fd, cfgOff, 4, 2);
        Span<byte> c = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(c, (ushort)(cmd | 0x6));
        p.Pwrite(fd, c, cfgOff + 4);
        proxy = new VfioPciProxy(vmm, fd, devId, guestBar0, bar0Off, bar0Size, cfgOff, vectors, table, pba);
        return 0;
    }

    static ulong RegionOffset(VfioProcess p, int fd, uint index, out ulong size)
    {
        var ri = new byte[32];
        MemoryMarshal.Write(ri, new VfioRegionInfo { Argsz = 32, Index = index });
        p.Ioctl(fd, VfioIoctl.DeviceGetRegionInfo, ri);
        var v = MemoryMarshal.Read<VfioRegionInfo>(ri);
        size = v.Size;
        return v.Offset;
    }

    static uint Cfg(VfioProcess p, int fd, ulong cfgOff, int off, int size)
    {
        Span<byte> b = stackalloc byte[4];
        b.Clear();
        p.Pread(fd, b[..size], cfgOff + (ulong)off);
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    internal bool Decodes(ulong gpa, int size) => !_disposed && gpa >= GuestBar0 && gpa + (ulong)size <= GuestBar0 + Bar0Size;

    bool InTable(ulong off) => Vectors > 0 && off >= MsixTableOffset && off < MsixTableOffset + (ulong)Vectors * 16;
    bool InPba(ulong off) => Vectors > 0 && off >= MsixPbaOffset && off < MsixPbaOffset + (ulong)((Vectors + 63) / 64 * 8);

    internal BusStatus Read(ulong gpa, int size, out ulong value)
    {
        var off = gpa - GuestBar0;
        value = 0;
        if (InTable(off))
        {
            var i = (int)((off - MsixTableOffset) / 4);
            value = size == 8 && i + 1 < _table.Length ? _table[i] | ((ulong)_table[i + 1] << 32) : _table[i] >> (int)((off & 3) * 8);
            if (size < 8) value &= (1UL << (8 * size)) - 1;
            return BusStatus.Ok;
        }
        if (InPba(off)) return BusStatus.Ok;
        Span<byte> b = stackalloc byte[8];
        b.Clear();
        if (_vmm.Process.Pread(_fd, b[..size], _bar0Off + off) != size) return BusStatus.SlaveError;
        value = BinaryPrimitives.ReadUInt64LittleEndian(b);
        return BusStatus.Ok;
    }

    internal BusStatus Write(ulong gpa, int size, ulong value)
    {
        var off = gpa - GuestBar0;
        if (InTable(off))
        {
            if (size is not (4 or 8) || (off & 3) != 0) return BusStatus.Ok; // the table takes dword/qword accesses
            var i = (int)((off - MsixTableOffset) / 4);
            _table[i] = (uint)value;
            if (size == 8 && i + 1 < _table.Length) _table[i + 1] = (uint)(value >> 32);
            UpdateVector(i / 4);
            return BusStatus.Ok;
        }
        if (InPba(off)) return BusStatus.Ok;
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        return _vmm.Process.Pwrite(_fd, b[..size], _bar0Off + off) == size ? BusStatus.Ok : BusStatus.SlaveError;
    }

    /// <summary>Applies a table entry: unmasked with an address → route + irqfd + VFIO trigger; masked → irqfd removed.</summary>
    void UpdateVector(int n)
    {
        var addr = _table[n * 4] | ((ulong)_table[n * 4 + 1] << 32);
        var data = _table[n * 4 + 2];
        var masked = (_table[n * 4 + 3] & 1) != 0;
        var gsi = GsiOf(n);
        if (masked || addr == 0)
        {
            if (_vectorFd[n] is { } old)
            {
                _vmm.Vm.Irqfd(new KvmIrqfd(old.Fd, gsi, KvmConst.KVM_IRQFD_FLAG_DEASSIGN));
                _vmm.SetMsiRoute(gsi, null);
            }
            return;
        }
        _vmm.SetMsiRoute(gsi, KvmIrqRoutingEntry.Msi(gsi, addr, data, GuestDeviceId));
        if (_vectorFd[n] is null)
        {
            _vectorFd[n] = EventFd.Create();
            EnableVectors();
        }
        _vmm.Vm.Irqfd(new KvmIrqfd(_vectorFd[n]!.Fd, gsi, 0)); // -EBUSY when already assigned: the new route is picked up
    }

    /// <summary>
    /// (Re-)enables MSI-X in VFIO with every vector up to the highest one in use, each with its eventfd (-1 for unused
    /// ones): VFIO fixes the vector count when MSI-X is enabled, so a vector beyond it needs a disable and re-enable
    /// (as QEMU's vfio-pci does without dynamic MSI-X allocation).
    /// </summary>
    int EnableVectors()
    {
        var count = Array.FindLastIndex(_vectorFd, f => f is not null) + 1;
        var off = new byte[20];
        MemoryMarshal.Write(off, new VfioIrqSet { Argsz = 20, Flags = VfioIrqSetFlags.DataNone | VfioIrqSetFlags.ActionTrigger, Index = VfioPciIndex.IrqMsix });
        _vmm.Process.Ioctl(_fd, VfioIoctl.DeviceSetIrqs, off);
        if (count == 0) return 0;
        var set = new byte[20 + 4 * count];
        MemoryMarshal.Write(set, new VfioIrqSet { Argsz = (uint)set.Length, Flags = VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, Index = VfioPciIndex.IrqMsix, Start = 0, Count = (uint)count });
        for (var i = 0; i < count; i++) BinaryPrimitives.WriteInt32LittleEndian(set.AsSpan(20 + 4 * i), _vectorFd[i]?.Fd ?? -1);
        return _vmm.Process.Ioctl(_fd, VfioIoctl.DeviceSetIrqs, set);
    }

    /// <summary>
    /// Device release (VM teardown or guest-initiated reset): MSI-X disabled in VFIO, every irqfd and route of the device
    /// removed, its eventfds closed, VFIO_DEVICE_RESET, the table back to reset state (all masked).
    /// </summary>
    public int Reset()
    {
        var off = new byte[20];
        MemoryMarshal.Write(off, new VfioIrqSet { Argsz = 20, Flags = VfioIrqSetFlags.DataNone | VfioIrqSetFlags.ActionTrigger, Index = VfioPciIndex.IrqMsix });
        _vmm.Process.Ioctl(_fd, VfioIoctl.DeviceSetIrqs, off);
        for (var n = 0; n < Vectors; n++)
        {
            if (_vectorFd[n] is { } e)
            {
                _vmm.Vm.Irqfd(new KvmIrqfd(e.Fd, GsiOf(n), KvmConst.KVM_IRQFD_FLAG_DEASSIGN));
                _vmm.SetMsiRoute(GsiOf(n), null);
                e.Dispose();
                _vectorFd[n] = null;
            }
            _table[n * 4] = _table[n * 4 + 1] = _table[n * 4 + 2] = 0;
            _table[n * 4 + 3] = 1;
        }
        return _vmm.Process.Ioctl(_fd, VfioIoctl.DeviceReset, Span<byte>.Empty);
    }

    public void Dispose()
    {
        if (_disposed) return;
        Reset();
        _vmm.Process.Close(_fd);
        _disposed = true;
    }
}
