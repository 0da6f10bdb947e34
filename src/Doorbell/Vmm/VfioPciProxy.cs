using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Kvm;
using Doorbell.Memory;

namespace Doorbell.Vmm;

/// <summary>
/// An assigned PCI device as the guest sees it (QEMU's vfio-pci role). Its guest config space, reached through the
/// VMM's guest ECAM, is composed from the VFIO config region: the BARs are virtual (the guest sizes and places them in
/// guest physical space; types and sizes come from VFIO's BAR registers and region info), the expansion ROM is hidden,
/// the MSI-X capability's Message Control enable and function-mask bits are emulated (table size and table/PBA location
/// come from VFIO), everything else is read and written through the VFIO config region (which virtualizes it further,
/// as vfio_pci_config.c does). BAR accesses are forwarded to the VFIO BAR regions, except the MSI-X table and PBA, which
/// the VMM emulates. A vector that is live (MSI-X enabled, function and entry unmasked, an address) gets an eventfd that
/// is an irqfd of the VM on a GSI routed as MSI {guest address, guest data, guest DeviceID} and the same eventfd through
/// VFIO_DEVICE_SET_IRQS — the physical interrupt then ends in the guest without passing through the VMM. While MSI-X is
/// off, INTx is connected as QEMU does with KVM: VFIO's INTx trigger eventfd is a level irqfd on the guest's swizzled
/// INTx SPI with a resamplefd that is VFIO's INTx unmask eventfd (VFIO masks on fire; guest EOI → resample → unmask).
/// The PBA is emulated: a vector that is masked (entry or function mask) loses its irqfd but keeps its eventfd with
/// VFIO; a signal on it becomes the vector's PBA bit, and unmasking sends the message (KVM_SIGNAL_MSI) and clears the
/// bit (PCI LB 3.0 §6.8.2.9/10; QEMU msix.c's pending handling). The VMM reads masked vectors' eventfds when the guest
/// reads the PBA or unmasks, and in <see cref="PollMasked"/> (its poll step).
/// Plain MSI is emulated the same way: the capability's layout flags come from VFIO (the message count from
/// VFIO_DEVICE_GET_IRQ_INFO), Enable, Multiple Message Enable, address, data and mask bits are the VMM's, and an enable
/// becomes VFIO_DEVICE_SET_IRQS on the MSI index with one eventfd per granted message, each an irqfd routed as MSI
/// {address, data with the vector in its low bits, guest DeviceID}; a masked message sets its Pending Bit.
/// Known limits: a vector that never had an eventfd (never live) has no VFIO trigger, so its
/// messages are not seen (as QEMU without dynamic MSI-X allocation); function 0 on the guest root bus.
/// I/O BARs are shown as VFIO reports them (QEMU's vfio-pci does the same): the guest places them in PCI I/O space, reaches
/// them through its host bridge's I/O window, and the VMM forwards each access to the VFIO BAR region (pread/pwrite).
/// </summary>
public sealed class VfioPciProxy : IDisposable
{
    readonly GuestVm _vmm;
    readonly int _fd;
    readonly ulong _cfgOff;
    readonly ulong[] _regionOff = new ulong[6], _barSize = new ulong[6];
    readonly uint[] _barFlags = new uint[6]; // low bits of VFIO's BAR register (type, prefetch)
    readonly uint[] _bar = new uint[6];      // the guest's BAR registers (virtual)
    readonly int _msixCap;
    readonly int _msixBar;
    readonly uint[] _table; // 4 dwords per entry: addr lo, addr hi, data, vector control
    readonly EventFd?[] _vectorFd;
    readonly ulong[] _pba;  // the emulated Pending Bit Array (bit n = vector n)
    readonly uint _gsiBase;
    readonly int _slots;    // vector slots: the larger of the MSI-X table size and MSI's Multiple Message Capable
    bool _msixEnable, _msixFunctionMask;
    // Plain MSI (PCI LB 3.0 §6.8.1), emulated: layout flags from VFIO, the registers the guest writes are the VMM's.
    int _msiCap, _msiMax;
    bool _msi64, _msiPvm, _msiEnable;
    int _msiMme;          // Multiple Message Enable (log2 of the vectors granted)
    ulong _msiAddr;
    ushort _msiData;
    uint _msiMask;
    int _msiLive;         // vectors set up in VFIO's MSI index (1 << MME while MSI is on)
    uint _vfioIndex = uint.MaxValue; // the VFIO IRQ index the vectors' eventfds are set on (MSI-X or MSI)
    enum IrqMode { None, Msi, Msix }
    IrqMode _mode;        // which of MSI-X / MSI owns the vectors (the first the guest enabled); None: INTx
    ushort _command;
    EventFd? _intxTrigger, _intxResample;
    uint _intxGsi;
    bool _disposed;

    VfioPciProxy(GuestVm vmm, int fd, uint devId, ulong cfgOff, int msixCap, int msixBar, int vectors, ulong tableOff, ulong pbaOff, int msiCap, uint msiCtl)
    {
        _vmm = vmm; _fd = fd; GuestDeviceId = devId; _cfgOff = cfgOff;
        _msixCap = msixCap; _msixBar = msixBar;
        Vectors = vectors; MsixTableOffset = tableOff; MsixPbaOffset = pbaOff;
        _table = new uint[vectors * 4];
        for (var i = 0; i < vectors; i++) _table[i * 4 + 3] = 1; // masked at reset
        _msiCap = msiCap;
        if (msiCap != 0)
        {
            _msiMax = 1 << (int)Math.Min(5, msiCtl >> 1 & 7); // Multiple Message Capable (values above 32 are reserved)
            _msi64 = (msiCtl & 0x80) != 0;
            _msiPvm = (msiCtl & 0x100) != 0;
        }
        _slots = Math.Max(vectors, _msiMax);
        _vectorFd = new EventFd?[_slots];
        _pba = new ulong[(_slots + 63) / 64];
        _gsiBase = vmm.AllocateGsis(Math.Max(_slots, 1));
    }

    public uint GuestDeviceId { get; }
    /// <summary>The device's slot on the guest root bus (guest requester ID = slot &lt;&lt; 3 = DeviceID, identity msi-map).</summary>
    public int GuestSlot => (int)(GuestDeviceId >> 3) & 0x1F;
    /// <summary>Where the guest placed BAR 0 (0 until it has; the BAR decodes when the guest also enabled memory space).</summary>
    public ulong GuestBar0 => BarAddress(0);
    public ulong Bar0Size => _barSize[0];
    public int Vectors { get; }
    public ulong MsixTableOffset { get; }
    public ulong MsixPbaOffset { get; }
    /// <summary>The guest's MSI-X Enable and Function Mask bits (emulated).</summary>
    public bool MsixEnabled => _msixEnable;
    public bool MsixFunctionMasked => _msixFunctionMask;
    /// <summary>Offset of the MSI capability in guest config space (0: the device has none).</summary>
    public int MsiCapability => _msiCap;
    /// <summary>The guest's MSI Enable (emulated) and the messages it granted (1 &lt;&lt; Multiple Message Enable).</summary>
    public bool MsiEnabled => _msiEnable;
    public int MsiVectors => _msiEnable ? 1 << _msiMme : 0;
    /// <summary>GSI of MSI-X (or MSI) vector <paramref name="n"/>.</summary>
    public uint GsiOf(int n) => _gsiBase + (uint)n;
    public int ActiveVectors => _vectorFd.Count(f => f is not null);
    /// <summary>True when vector <paramref name="n"/>'s bit is set in the emulated PBA (as the guest would read it, after a poll).</summary>
    public bool IsPending(int n)
    {
        PollMasked();
        return (uint)n < (uint)_slots && (_pba[n >> 6] >> (n & 63) & 1) != 0;
    }
    /// <summary>Messages the VMM held pending for a masked vector and sent on unmask (KVM_SIGNAL_MSI).</summary>
    public long PendingDelivered { get; private set; }
    /// <summary>True while INTx is connected to the guest (trigger irqfd with resamplefd, VFIO INTx unmask on that eventfd).</summary>
    public bool IntxConnected => _intxTrigger is not null;
    /// <summary>The guest SPI index (kvm irqchip pin) of the device's INTx, -1 without a pin.</summary>
    public int IntxGuestSpi { get; private set; } = -1;
    /// <summary>Config accesses the guest made through ECAM (reads, writes).</summary>
    public long ConfigReads { get; private set; }
    public long ConfigWrites { get; private set; }

    internal static int Create(GuestVm vmm, int fd, uint devId, out VfioPciProxy? proxy)
    {
        proxy = null;
        var p = vmm.Process;
        var cfgOff = RegionOffset(p, fd, VfioPciIndex.Config, out var cfgSize);
        if (cfgSize < 256) return -Errno.ENODEV;
        // MSI-X capability (offset, vectors, table/PBA BIR and offsets) as VFIO presents it.
        int msixCap = 0, msixBar = -1, vectors = 0, msiCap = 0; ulong table = 0, pba = 0;
        uint msiCtl = 0;
        var pos = Cfg(p, fd, cfgOff, 0x34, 1) & 0xFC;
        for (var guard = 0; pos >= 0x40 && guard < 48; guard++)
        {
            var hdr = Cfg(p, fd, cfgOff, (int)pos, 4);
            if ((hdr & 0xFF) == 0x05 && msiCap == 0) { msiCap = (int)pos; msiCtl = hdr >> 16; }
            if ((hdr & 0xFF) == 0x11)
            {
                var t = Cfg(p, fd, cfgOff, (int)pos + 4, 4);
                var b = Cfg(p, fd, cfgOff, (int)pos + 8, 4);
                if ((t & 7) != (b & 7)) return -Errno.ENOTTY; // table and PBA in different BARs: not handled here
                msixCap = (int)pos; msixBar = (int)(t & 7);
                vectors = (int)((hdr >> 16) & 0x7FF) + 1;
                table = t & ~7u; pba = b & ~7u;
            }
            pos = (hdr >> 8) & 0xFC;
        }
        if (msiCap != 0)
        {
            // VFIO virtualizes the MSI flags (Multiple Message Capable reads as what it has enabled so far); the message
            // count of the device is VFIO_DEVICE_GET_IRQ_INFO's for the MSI index.
            var ii = new byte[16];
            MemoryMarshal.Write(ii, new VfioIrqInfo { Argsz = 16, Index = VfioPciIndex.IrqMsi });
            var count = p.Ioctl(fd, VfioIoctl.DeviceGetIrqInfo, ii) < 0 ? 1u : MemoryMarshal.Read<VfioIrqInfo>(ii).Count;
            if (count == 0) msiCap = 0;
            else msiCtl = (msiCtl & ~0x0Eu) | (uint)Math.Min(5, System.Numerics.BitOperations.Log2(count)) << 1;
        }
        var px = new VfioPciProxy(vmm, fd, devId, cfgOff, msixCap, msixBar, vectors, table, pba, msiCap, msiCtl);
        for (var i = 0; i < 6; i++)
        {
            px._regionOff[i] = RegionOffset(p, fd, VfioPciIndex.Bar0 + (uint)i, out var size);
            var flags = Cfg(p, fd, cfgOff, 0x10 + i * 4, 4);
            if (size == 0) continue;
            px._barSize[i] = size;
            px._barFlags[i] = (flags & 1) != 0 ? 1u : flags & 0xF; // I/O BARs too: placed in the guest's I/O window
            if ((flags & 7) == 4) i++; // 64-bit memory: the next register is its upper half
        }
        if (px._barSize[0] == 0) { return -Errno.ENODEV; }
        // The guest starts with I/O, memory and bus mastering off, and so does the device (QEMU's vfio_pci_pre_reset).
        px._command = (ushort)(Cfg(p, fd, cfgOff, 4, 2) & ~0x7u);
        px.VfioCfgWrite(4, 2, px._command);
        var pin = Cfg(p, fd, cfgOff, 0x3D, 1);
        if (pin is >= 1 and <= 4) px.IntxGuestSpi = vmm.Board.PcieIntxFirstSpi + (int)((pin - 1 + (uint)px.GuestSlot) & 3);
        proxy = px;
        px.ConnectIntx();
        return 0;
    }

    static ulong RegionOffset(VfioProcess p, int fd, uint index, out ulong size)
    {
        var ri = new byte[32];
        MemoryMarshal.Write(ri, new VfioRegionInfo { Argsz = 32, Index = index });
        var r = p.Ioctl(fd, VfioIoctl.DeviceGetRegionInfo, ri);
        var v = MemoryMarshal.Read<VfioRegionInfo>(ri);
        size = r < 0 ? 0 : v.Size;
        return v.Offset;
    }

    static uint Cfg(VfioProcess p, int fd, ulong cfgOff, int off, int size)
    {
        Span<byte> b = stackalloc byte[4];
        b.Clear();
        p.Pread(fd, b[..size], cfgOff + (ulong)off);
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    uint VfioCfg(int off, int size) => Cfg(_vmm.Process, _fd, _cfgOff, off, size);

    void VfioCfgWrite(int off, int size, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        _vmm.Process.Pwrite(_fd, b[..size], _cfgOff + (ulong)off);
    }

    // --- guest config space (composed) --------------------------------------------------------------------

    bool IsUpperHalf(int i) => i > 0 && _barSize[i] == 0 && _barSize[i - 1] != 0 && (_barFlags[i - 1] & 7) == 4;
    bool IsIo(int i) => (_barFlags[i] & 1) != 0;

    /// <summary>True when BAR <paramref name="i"/> is an I/O BAR (its address is a PCI I/O address in the guest's I/O window).</summary>
    public bool IsIoBar(int i) => (uint)i < 6 && _barSize[i] != 0 && IsIo(i);
    public ulong BarSize(int i) => (uint)i < 6 ? _barSize[i] : 0;

    /// <summary>The guest's BAR <paramref name="i"/> address (a 64-bit BAR spans two registers; an I/O BAR holds a PCI I/O address).</summary>
    public ulong BarAddress(int i)
    {
        if ((uint)i >= 6 || _barSize[i] == 0) return 0;
        if (IsIo(i)) return _bar[i] & ~3u & ~(uint)(_barSize[i] - 1);
        var a = (ulong)(_bar[i] & ~0xFu);
        if ((_barFlags[i] & 6) == 4 && i < 5) a |= (ulong)_bar[i + 1] << 32;
        return a;
    }

    uint ComposeDword(int d)
    {
        if (d is >= 0x10 and <= 0x24)
        {
            var i = (d - 0x10) / 4;
            if (_barSize[i] != 0 && IsIo(i)) return (uint)((_bar[i] & ~3u & ~(_barSize[i] - 1)) | 1u); // PCI LB 3.0 §6.2.5.1: bit 0 = I/O
            if (_barSize[i] != 0) return (uint)((_bar[i] & ~0xFu & ~(_barSize[i] - 1)) | _barFlags[i]);
            if (IsUpperHalf(i)) return (uint)(_bar[i] & (uint)(~(_barSize[i - 1] - 1) >> 32));
            return 0;
        }
        if (d == 0x30) return 0; // no expansion ROM for the guest
        if (d == 0x04) return (VfioCfg(4, 4) & 0xFFFF_0000) | _command;
        if (InMsiCap(d)) return MsiDword(d - _msiCap);
        var v = VfioCfg(d, 4);
        if (_msixCap != 0 && d == _msixCap)
            v = (v & 0x3FFF_FFFF) | (_msixEnable ? 1u << 31 : 0) | (_msixFunctionMask ? 1u << 30 : 0);
        return v;
    }

    /// <summary>A guest config read through ECAM (1, 2 or 4 bytes at <paramref name="offset"/>).</summary>
    public uint ReadConfig(int offset, int size)
    {
        ConfigReads++;
        if (offset >= 0x100) return VfioCfg(offset, size);
        var v = ComposeDword(offset & ~3) >> (8 * (offset & 3));
        return size == 4 ? v : v & ((1u << (8 * size)) - 1);
    }

    /// <summary>A guest config write through ECAM.</summary>
    public void WriteConfig(int offset, int size, uint value)
    {
        ConfigWrites++;
        if (offset >= 0x100) { VfioCfgWrite(offset, size, value); return; }
        var d = offset & ~3;
        var shift = 8 * (offset & 3);
        var mask = (size == 4 ? 0xFFFF_FFFFu : (1u << (8 * size)) - 1) << shift;
        uint Merge(uint old) => (old & ~mask) | ((value << shift) & mask);
        if (d is >= 0x10 and <= 0x24)
        {
            var i = (d - 0x10) / 4;
            if (_barSize[i] != 0 || IsUpperHalf(i)) _bar[i] = Merge(_bar[i]);
            return;
        }
        if (d == 0x30) return;
        if (d == 0x04)
        {
            if ((mask & 0xFFFF) != 0)
            {
                _command = (ushort)Merge(_command);
                VfioCfgWrite(4, 2, _command); // VFIO virtualizes what it must (INTx disable, memory/bus master to the device)
            }
            if ((mask & 0xFFFF_0000) != 0) VfioCfgWrite(6, 2, (value << shift) >> 16); // status: W1C bits
            return;
        }
        if (InMsiCap(d))
        {
            WriteMsiDword(d - _msiCap, Merge(ComposeDword(d)), mask);
            return;
        }
        if (_msixCap != 0 && d == _msixCap)
        {
            if ((mask & 0xFFFF_0000) != 0)
            {
                var ctl = Merge(ComposeDword(d)) >> 16;
                SetMsixControl((ctl & 0x8000) != 0, (ctl & 0x4000) != 0);
            }
            return;
        }
        VfioCfgWrite(offset, size, value);
    }

    // --- BARs -----------------------------------------------------------------------------------------------

    /// <summary>
    /// The BAR that decodes [gpa, gpa+size), or -1: a memory BAR placed in guest physical space with memory space
    /// enabled, or an I/O BAR whose I/O addresses the guest reaches through its host bridge's I/O window
    /// (<see cref="Doorbell.Platform.PlatformMap.PciePio"/> + address) with I/O space enabled.
    /// </summary>
    internal int BarAt(ulong gpa, int size)
    {
        if (_disposed || (_command & 3) == 0) return -1;
        for (var i = 0; i < 6; i++)
        {
            if (_barSize[i] == 0 || (_command & (IsIo(i) ? 1 : 2)) == 0) continue;
            var a = BarAddress(i);
            if (a == 0) continue;
            var b = BarBase(i);
            if (gpa >= b && gpa + (ulong)size <= b + _barSize[i]) return i;
        }
        return -1;
    }

    /// <summary>Where BAR <paramref name="i"/> starts in guest physical space.</summary>
    ulong BarBase(int i) => IsIo(i) ? _vmm.Board.PciePio + BarAddress(i) : BarAddress(i);

    internal bool Decodes(ulong gpa, int size) => BarAt(gpa, size) >= 0;

    bool InTable(int bar, ulong off) => bar == _msixBar && Vectors > 0 && off >= MsixTableOffset && off < MsixTableOffset + (ulong)Vectors * 16;
    bool InPba(int bar, ulong off) => bar == _msixBar && Vectors > 0 && off >= MsixPbaOffset && off < MsixPbaOffset + (ulong)((Vectors + 63) / 64 * 8);

    internal BusStatus Read(ulong gpa, int size, out ulong value)
    {
        value = 0;
        var bar = BarAt(gpa, size);
        if (bar < 0) return BusStatus.DecodeError;
        var off = gpa - BarBase(bar);
        if (InTable(bar, off))
        {
            var i = (int)((off - MsixTableOffset) / 4);
            value = size == 8 && i + 1 < _table.Length ? _table[i] | ((ulong)_table[i + 1] << 32) : _table[i] >> (int)((off & 3) * 8);
            if (size < 8) value &= (1UL << (8 * size)) - 1;
            return BusStatus.Ok;
        }
        if (InPba(bar, off))
        {
            // PCI LB 3.0 §6.8.2.10: the PBA is read-only; qword or dword reads (smaller ones are answered the same way).
            PollMasked();
            var q = (int)((off - MsixPbaOffset) / 8);
            value = _pba[q] >> (int)((off & 7) * 8);
            if (size < 8) value &= (1UL << (8 * size)) - 1;
            return BusStatus.Ok;
        }
        Span<byte> b = stackalloc byte[8];
        b.Clear();
        if (_vmm.Process.Pread(_fd, b[..size], _regionOff[bar] + off) != size) return BusStatus.SlaveError;
        value = BinaryPrimitives.ReadUInt64LittleEndian(b);
        return BusStatus.Ok;
    }

    internal BusStatus Write(ulong gpa, int size, ulong value)
    {
        var bar = BarAt(gpa, size);
        if (bar < 0) return BusStatus.DecodeError;
        var off = gpa - BarBase(bar);
        if (InTable(bar, off))
        {
            if (size is not (4 or 8) || (off & 3) != 0) return BusStatus.Ok; // the table takes dword/qword accesses
            var i = (int)((off - MsixTableOffset) / 4);
            _table[i] = (uint)value;
            if (size == 8 && i + 1 < _table.Length) _table[i + 1] = (uint)(value >> 32);
            UpdateVector(i / 4);
            return BusStatus.Ok;
        }
        if (InPba(bar, off))
        {
            _vmm.Vm.Strict.Report("vmm", "PCI LB 3.0 §6.8.2.10 (the Pending Bit Array is read-only)", $"guest write to the PBA at +0x{off - MsixPbaOffset:x}: ignored");
            return BusStatus.Ok;
        }
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        return _vmm.Process.Pwrite(_fd, b[..size], _regionOff[bar] + off) == size ? BusStatus.Ok : BusStatus.SlaveError;
    }

    // --- MSI-X --------------------------------------------------------------------------------------------

    void SetMsixControl(bool enable, bool functionMask)
    {
        if (enable && !_msixEnable && _msiEnable) ReportBoth();
        _msixEnable = enable;
        _msixFunctionMask = functionMask;
        if (_mode == IrqMode.Msi) return; // MSI was enabled first and owns the vectors (enabling both is not allowed)
        if (!enable)
        {
            if (_mode == IrqMode.Msix) { ReleaseVectors(); Reconnect(); }
            return;
        }
        if (_mode == IrqMode.None) { DisconnectIntx(); _mode = IrqMode.Msix; } // MSI-X replaces INTx (PCI LB 3.0 §6.8.2.3)
        for (var n = 0; n < Vectors; n++) UpdateVector(n);
    }

    /// <summary>After MSI-X or MSI let go of the vectors: the other one if the guest enabled it meanwhile, else INTx.</summary>
    void Reconnect()
    {
        _mode = IrqMode.None;
        if (_msixEnable) SetMsixControl(true, _msixFunctionMask);
        else if (_msiEnable) ApplyMsi();
        else ConnectIntx();
    }

    /// <summary>A vector delivers directly (irqfd) when enabled, unmasked and addressed: MSI-X entry n, or MSI message n.</summary>
    bool Live(int n)
    {
        if (_mode == IrqMode.Msix) return n < Vectors && !_msixFunctionMask && (_table[n * 4 + 3] & 1) == 0 && (_table[n * 4] | _table[n * 4 + 1]) != 0;
        return _mode == IrqMode.Msi && _msiEnable && n < _msiLive && (!_msiPvm || (_msiMask >> n & 1) == 0) && _msiAddr != 0;
    }

    /// <summary>The message of vector <paramref name="n"/>: its MSI-X entry, or MSI's address with n in the data's low bits.</summary>
    (ulong Address, uint Data) Message(int n) => _mode == IrqMode.Msix
        ? (_table[n * 4] | ((ulong)_table[n * 4 + 1] << 32), _table[n * 4 + 2])
        : (_msiAddr, (uint)(_msiData & ~(_msiLive - 1)) | (uint)n);

    /// <summary>Applies a table entry: live → route + irqfd + VFIO trigger; not live → irqfd removed (the eventfd stays with VFIO).</summary>
    void UpdateVector(int n)
    {
        var gsi = GsiOf(n);
        if (!Live(n))
        {
            if (_vectorFd[n] is { } old)
            {
                // The irqfd goes; VFIO keeps signalling the same eventfd, which the VMM now reads itself: a signal
                // while masked becomes the vector's PBA bit (QEMU: the userspace handler → msix_notify → pending).
                _vmm.Vm.Irqfd(new KvmIrqfd(old.Fd, gsi, KvmConst.KVM_IRQFD_FLAG_DEASSIGN));
                _vmm.SetMsiRoute(gsi, null);
            }
            return;
        }
        PollVector(n); // a signal that arrived while the vector was masked is pending, not lost
        var (addr, data) = Message(n);
        _vmm.SetMsiRoute(gsi, KvmIrqRoutingEntry.Msi(gsi, addr, data, GuestDeviceId));
        if (_vectorFd[n] is null)
        {
            _vectorFd[n] = EventFd.Create();
            EnableVectors();
        }
        _vmm.Vm.Irqfd(new KvmIrqfd(_vectorFd[n]!.Fd, gsi, 0)); // -EBUSY when already assigned: the new route is picked up
        if ((_pba[n >> 6] >> (n & 63) & 1) != 0)
        {
            // Unmasked with its bit pending: the message is sent now and the bit cleared (PCI LB 3.0 §6.8.2.9).
            _pba[n >> 6] &= ~(1UL << (n & 63));
            PendingDelivered++;
            _vmm.Vm.SignalMsi(new KvmMsi(addr, data, KvmConst.KVM_MSI_VALID_DEVID, GuestDeviceId));
        }
    }

    /// <summary>Reads vector <paramref name="n"/>'s eventfd while the vector is masked: a signal sets its PBA bit.</summary>
    void PollVector(int n)
    {
        if (_vectorFd[n] is { } e && e.TryRead(out _)) _pba[n >> 6] |= 1UL << (n & 63);
    }

    /// <summary>
    /// The VMM's poll step for masked vectors (QEMU's fd handler on a masked vector's eventfd): every masked vector whose
    /// eventfd was signalled gets its PBA bit. The guest's PBA reads and unmasks run it first, so what the guest sees
    /// does not depend on when the VMM's loop last ran. Returns the number of vectors pending.
    /// </summary>
    public int PollMasked()
    {
        var pending = 0;
        for (var n = 0; n < _slots; n++)
        {
            if (!Live(n)) PollVector(n);
            if ((_pba[n >> 6] >> (n & 63) & 1) != 0) pending++;
        }
        return pending;
    }

    /// <summary>
    /// (Re-)enables MSI-X in VFIO with every vector up to the highest one in use, each with its eventfd (-1 for unused
    /// ones): VFIO fixes the vector count when MSI-X is enabled, so a vector beyond it needs a disable and re-enable
    /// (as QEMU's vfio-pci does without dynamic MSI-X allocation).
    /// </summary>
    int EnableVectors()
    {
        var index = _mode == IrqMode.Msix ? VfioPciIndex.IrqMsix : VfioPciIndex.IrqMsi;
        var count = Array.FindLastIndex(_vectorFd, f => f is not null) + 1;
        SetIrqsNone(index);
        _vfioIndex = uint.MaxValue;
        if (count == 0) return 0;
        var set = new byte[20 + 4 * count];
        MemoryMarshal.Write(set, new VfioIrqSet { Argsz = (uint)set.Length, Flags = VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, Index = index, Start = 0, Count = (uint)count });
        _vfioIndex = index;
        for (var i = 0; i < count; i++) BinaryPrimitives.WriteInt32LittleEndian(set.AsSpan(20 + 4 * i), _vectorFd[i]?.Fd ?? -1);
        return _vmm.Process.Ioctl(_fd, VfioIoctl.DeviceSetIrqs, set);
    }

    int SetIrqsNone(uint index)
    {
        var off = new byte[20];
        MemoryMarshal.Write(off, new VfioIrqSet { Argsz = 20, Flags = VfioIrqSetFlags.DataNone | VfioIrqSetFlags.ActionTrigger, Index = index });
        return _vmm.Process.Ioctl(_fd, VfioIoctl.DeviceSetIrqs, off);
    }

    int SetIrqsEventFd(uint index, uint action, int fd)
    {
        var set = new byte[24];
        MemoryMarshal.Write(set, new VfioIrqSet { Argsz = 24, Flags = VfioIrqSetFlags.DataEventFd | action, Index = index, Start = 0, Count = 1 });
        BinaryPrimitives.WriteInt32LittleEndian(set.AsSpan(20), fd);
        return _vmm.Process.Ioctl(_fd, VfioIoctl.DeviceSetIrqs, set);
    }

    /// <summary>MSI-X or MSI off in VFIO, every vector's irqfd and route removed, its eventfd closed.</summary>
    void ReleaseVectors()
    {
        if (_vfioIndex != uint.MaxValue) SetIrqsNone(_vfioIndex);
        _vfioIndex = uint.MaxValue;
        _msiLive = 0;
        Array.Clear(_pba); // MSI-X / MSI off: nothing stays pending for the guest
        for (var n = 0; n < _slots; n++)
        {
            if (_vectorFd[n] is not { } e) continue;
            _vmm.Vm.Irqfd(new KvmIrqfd(e.Fd, GsiOf(n), KvmConst.KVM_IRQFD_FLAG_DEASSIGN));
            _vmm.SetMsiRoute(GsiOf(n), null);
            e.Dispose();
            _vectorFd[n] = null;
        }
    }

    // --- MSI (PCI LB 3.0 §6.8.1; QEMU keeps the capability in its emulated config, hw/pci/msi.c, and vfio-pci turns
    //     an enable into VFIO_DEVICE_SET_IRQS on the MSI index) ---------------------------------------------------

    int MsiDataRel => _msi64 ? 0x0C : 0x08;
    int MsiSize => MsiDataRel + (_msiPvm ? 12 : 4);

    bool InMsiCap(int d) => _msiCap != 0 && d >= _msiCap && d < _msiCap + MsiSize;

    uint MsiControl => (VfioCfg(_msiCap + 2, 2) & ~0x7Fu) | (uint)System.Numerics.BitOperations.Log2((uint)_msiMax) << 1 | (uint)_msiMme << 4 | (_msiEnable ? 1u : 0);

    /// <summary>Dword <paramref name="rel"/> of the emulated MSI capability.</summary>
    uint MsiDword(int rel)
    {
        if (rel == 0) return (VfioCfg(_msiCap, 2) & 0xFFFF) | MsiControl << 16;
        if (rel == 4) return (uint)_msiAddr;
        if (rel == 8 && _msi64) return (uint)(_msiAddr >> 32);
        if (rel == MsiDataRel) return _msiData;
        if (rel == MsiDataRel + 4) return _msiMask;
        PollMasked(); // Pending Bits (read-only): a masked message that fired
        return (uint)_pba[0] & (_msiMax == 32 ? uint.MaxValue : (1u << _msiMax) - 1);
    }

    void WriteMsiDword(int rel, uint v, uint mask)
    {
        if (rel == 0)
        {
            if ((mask & 0xFFFF_0000) == 0) return;
            var ctl = v >> 16;
            if ((ctl & 1) != 0 && !_msiEnable && _msixEnable) ReportBoth();
            _msiEnable = (ctl & 1) != 0;
            // Multiple Message Enable above Multiple Message Capable is clamped to it (as QEMU's msi_write_config).
            var mmc = System.Numerics.BitOperations.Log2((uint)_msiMax);
            if ((int)(ctl >> 4 & 7) > mmc)
                _vmm.Vm.Strict.Report("vmm", "PCI LB 3.0 §6.8.1.3 (Multiple Message Enable must not exceed Multiple Message Capable)", $"MME {ctl >> 4 & 7} with MMC {mmc}: {1 << mmc} message(s) granted");
            _msiMme = Math.Min((int)(ctl >> 4 & 7), mmc);
        }
        else if (rel == 4) _msiAddr = (_msiAddr & 0xFFFF_FFFF_0000_0000) | (v & ~3u);
        else if (rel == 8 && _msi64) _msiAddr = (_msiAddr & 0xFFFF_FFFF) | (ulong)v << 32;
        else if (rel == MsiDataRel) _msiData = (ushort)v;
        else if (rel == MsiDataRel + 4) _msiMask = v & (_msiMax == 32 ? uint.MaxValue : (1u << _msiMax) - 1);
        else return; // Pending Bits are read-only
        ApplyMsi();
    }

    void ReportBoth() => _vmm.Vm.Strict.Report("vmm", "PCI LB 3.0 §6.8.1.3 / §6.8.2.3 (MSI and MSI-X must not both be enabled)",
        "guest enabled MSI and MSI-X together: the one enabled first keeps the vectors");

    /// <summary>Brings the vectors in line with the emulated MSI registers (QEMU: vfio_msi_enable / vfio_update_msi).</summary>
    void ApplyMsi()
    {
        if (_mode == IrqMode.Msix) return; // MSI-X was enabled first and owns the vectors
        if (!_msiEnable)
        {
            if (_mode == IrqMode.Msi) { ReleaseVectors(); Reconnect(); }
            return;
        }
        if (_mode == IrqMode.None) { DisconnectIntx(); _mode = IrqMode.Msi; } // MSI replaces INTx (PCI LB 3.0 §6.8.1.3)
        var count = 1 << _msiMme;
        if (count != _msiLive)
        {
            // VFIO fixes the vector count at enable: (re-)enable its MSI index with one eventfd per granted message.
            if (_msiLive != 0) ReleaseVectors();
            _msiLive = count;
            for (var n = 0; n < count; n++) _vectorFd[n] = EventFd.Create();
            EnableVectors();
        }
        for (var n = 0; n < _msiLive; n++) UpdateVector(n);
    }

    // --- INTx ---------------------------------------------------------------------------------------------

    /// <summary>
    /// vfio_intx_enable with KVM acceleration: VFIO_IRQ_SET_ACTION_TRIGGER on a new eventfd, which is a KVM irqfd with
    /// KVM_IRQFD_FLAG_RESAMPLE on the guest INTx SPI; the resamplefd is VFIO's INTx ACTION_UNMASK eventfd. Returns 0 or
    /// -errno (0 and nothing done for a device without a pin or while MSI-X is on).
    /// </summary>
    int ConnectIntx()
    {
        if (IntxGuestSpi < 0 || _intxTrigger is not null || _mode != IrqMode.None || _disposed) return 0;
        var trigger = EventFd.Create();
        var resample = EventFd.Create();
        var r = SetIrqsEventFd(VfioPciIndex.IrqIntx, VfioIrqSetFlags.ActionTrigger, trigger.Fd);
        if (r >= 0) r = SetIrqsEventFd(VfioPciIndex.IrqIntx, VfioIrqSetFlags.ActionUnmask, resample.Fd);
        _intxGsi = (uint)IntxGuestSpi; // default routing: GSI n -> irqchip pin n (SPI n)
        if (r >= 0) r = _vmm.Vm.Irqfd(new KvmIrqfd(trigger.Fd, _intxGsi, KvmConst.KVM_IRQFD_FLAG_RESAMPLE, resample.Fd));
        if (r < 0)
        {
            SetIrqsNone(VfioPciIndex.IrqIntx);
            trigger.Dispose(); resample.Dispose();
            return r;
        }
        _intxTrigger = trigger;
        _intxResample = resample;
        return 0;
    }

    void DisconnectIntx()
    {
        if (_intxTrigger is null) return;
        _vmm.Vm.Irqfd(new KvmIrqfd(_intxTrigger.Fd, _intxGsi, KvmConst.KVM_IRQFD_FLAG_DEASSIGN));
        SetIrqsNone(VfioPciIndex.IrqIntx);
        _intxTrigger.Dispose();
        _intxResample?.Dispose();
        _intxTrigger = _intxResample = null;
    }

    /// <summary>
    /// Device release (VM teardown or guest-initiated reset): MSI-X and INTx disabled in VFIO, every irqfd and route of
    /// the device removed, its eventfds closed, VFIO_DEVICE_RESET, the table back to reset state (all masked) and MSI-X
    /// control cleared; INTx is reconnected after a reset (the device is back in its INTx state).
    /// </summary>
    public int Reset()
    {
        ReleaseVectors();
        DisconnectIntx();
        for (var n = 0; n < Vectors; n++)
        {
            _table[n * 4] = _table[n * 4 + 1] = _table[n * 4 + 2] = 0;
            _table[n * 4 + 3] = 1;
        }
        _msixEnable = _msixFunctionMask = false;
        _msiEnable = false; _msiMme = 0; _msiAddr = 0; _msiData = 0; _msiMask = 0;
        _mode = IrqMode.None;
        var r = _vmm.Process.Ioctl(_fd, VfioIoctl.DeviceReset, Span<byte>.Empty);
        VfioCfgWrite(4, 2, _command); // the guest's command register survives a VMM reset (QEMU restores config after it)
        ConnectIntx();
        return r;
    }

    public void Dispose()
    {
        if (_disposed) return;
        ReleaseVectors();
        DisconnectIntx();
        _disposed = true;
        _vmm.Process.Ioctl(_fd, VfioIoctl.DeviceReset, Span<byte>.Empty);
        _vmm.Process.Close(_fd);
    }
}
