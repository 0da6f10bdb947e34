using Doorbell.Host.Iommu;
using Doorbell.Host.Irq;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Memory;

// VFIO's PCI function backend over the real device: config space through ECAM MMIO, BARs through the CPU's MMIO
// window, FLR through the PCIe capability, MSI/MSI-X vectors from the device's MSI irq domain (ITS: LPIs mapped
// with MAPTI; GICv2m: SPIs), their messages composed through the IOMMU's MSI cookie, and INTx as the swizzled GIC
// SPI. Known limits: no AER reporting source (the ERR index never fires); INTx lines are not shared (a second
// device on the same SPI gets -EBUSY, where Linux would share with IRQF_SHARED).
namespace Doorbell.Host.Kernel;

public sealed class KernelPciFunction : IVfioPciFunction
{
    public const int ENOTTY = 25;
    readonly HostKernel _k;
    readonly EnumeratedFunction _f;
    readonly int _msiCap, _msixCap;
    MsiAllocation? _alloc;
    readonly List<int> _handlers = [];
    int _intxIntid = -1;

    readonly PciEnumeration _pci;
    readonly IMsiDomain _msi;
    readonly uint _deviceId;
    readonly KernelPciHostBridge _bridge;

    internal KernelPciFunction(HostKernel kernel, EnumeratedFunction f, KernelIommuGroup group, IommuDevice device, KernelPciHostBridge bridge, IMsiDomain msi, uint deviceId)
    {
        _k = kernel;
        _f = f;
        _bridge = bridge;
        _pci = bridge.Pci;
        _msi = msi;
        _deviceId = deviceId;
        Name = kernel.FunctionName(bridge, f);
        Group = group;
        IommuDevice = device;
        _msiCap = PciMsix.FindCapability(_pci, f.Rid, PciMsi.CapId);
        _msixCap = PciMsix.FindCapability(_pci, f.Rid, PciMsix.CapId);
    }

    public EnumeratedFunction Enumerated => _f;
    public KernelIommuGroup Group { get; }
    public IommuDevice IommuDevice { get; }
    public string Name { get; }
    public ushort Segment => ushort.Parse(Name.AsSpan(0, 4), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture);
    public byte Bus => (byte)(_bridge.Description.BusFirst + _f.Bus);
    /// <summary>The host bridge the function sits below.</summary>
    public KernelPciHostBridge HostBridge => _bridge;
    public byte Devfn => (byte)(_f.Device << 3 | _f.Function);
    public int ConfigSize => _f.PcieCap != 0 ? 4096 : 256;
    /// <summary>The bus DeviceID of this function's MSI writes: its host bridge's msi-map (of_map_id) of its requester ID
    /// (identity on qemu-virt).</summary>
    public uint DeviceId => _deviceId;
    /// <summary>The MSI irq domain of this function (its host bridge's msi-map / msi-parent).</summary>
    public IMsiDomain MsiDomain => _msi;
    /// <summary>The vectors allocated from the MSI domain (null when none).</summary>
    public MsiAllocation? Vectors => _alloc;
    /// <summary>The MSI addresses programmed into the device, per vector (IOVA in the SW_MSI window when a cookie is set).</summary>
    public IReadOnlyList<ulong> ProgrammedMsiAddresses => _programmed;
    readonly List<ulong> _programmed = [];
    public int IntxIntid => _intxIntid;

    uint Cfg(int off, int size) => _pci.Read(_f.Rid, off, size);

    public uint ReadConfig(int offset, int size) => Cfg(offset, size);

    public void WriteConfig(int offset, int size, uint value)
    {
        _pci.Write(_f.Rid, offset, size, value);
    }

    public PciBarInfo GetBar(int index)
    {
        if ((uint)index > 6) return default;
        var b = _f.Bars[index];
        if (b.Size == 0) return default;
        var kind = b.Io ? Doorbell.Pci.PciBarKind.Io : b.Is64 ? Doorbell.Pci.PciBarKind.Mem64 : Doorbell.Pci.PciBarKind.Mem32;
        return new PciBarInfo(b.Size, kind, b.Address, b.Prefetch);
    }

    /// <summary>Linux's vfio-pci accesses a BAR with naturally aligned 8/4/2/1-byte ioread/iowrite.</summary>
    const int BarMaxAccess = 8;

    public BusStatus ReadBar(int index, ulong offset, Span<byte> destination)
    {
        var a = BarCpuAddress(index, offset, destination.Length);
        return a == 0 ? BusStatus.DecodeError : _k.Bus.ReadAccesses(a, destination, BarMaxAccess, BusAttributes.Cpu);
    }

    public BusStatus WriteBar(int index, ulong offset, ReadOnlySpan<byte> source)
    {
        var a = BarCpuAddress(index, offset, source.Length);
        return a == 0 ? BusStatus.DecodeError : _k.Bus.WriteAccesses(a, source, BarMaxAccess, BusAttributes.Cpu);
    }

    /// <summary>One naturally aligned access of <paramref name="size"/> bytes (little-endian value).</summary>
    public BusStatus ReadBar(int index, ulong offset, int size, out ulong value)
    {
        Span<byte> b = stackalloc byte[8];
        b.Clear();
        var s = ReadBar(index, offset, b[..size]);
        value = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(b);
        return s;
    }

    /// <summary>One naturally aligned write of <paramref name="size"/> bytes.</summary>
    public BusStatus WriteBar(int index, ulong offset, int size, ulong value)
    {
        Span<byte> b = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        return WriteBar(index, offset, b[..size]);
    }

    /// <summary>The CPU address of BAR bytes: memory BARs as assigned, I/O BARs through the host bridge's I/O window (ioread/iowrite); 0 when unreachable.</summary>
    ulong BarCpuAddress(int index, ulong offset, int size)
    {
        var b = GetBar(index);
        if (b.HostAddress == 0 || offset > b.Size || (ulong)size > b.Size - offset) return 0;
        if (b.IsMemory) return b.HostAddress + offset;
        return b.Kind == Doorbell.Pci.PciBarKind.Io && _pci.IoCpuBase != 0 ? _pci.IoCpuBase + b.HostAddress + offset : 0;
    }

    /// <summary>pci_try_reset_function: FLR when DEVCAP says so, with the header saved and restored around it.</summary>
    public int Reset()
    {
        if (_f.PcieCap == 0 || (Cfg(_f.PcieCap + 4, 4) & (1u << 28)) == 0) return -ENOTTY;
        var saved = new uint[16];
        for (var i = 1; i < 16; i++) saved[i] = Cfg(i * 4, 4);
        var devctl = Cfg(_f.PcieCap + 8, 2);
        _pci.Write(_f.Rid, _f.PcieCap + 8, 2, devctl | 0x8000); // BCR/FLR, PCIe 4.0 §7.5.3.4
        for (var i = 4; i < 16; i++) _pci.Write(_f.Rid, i * 4, 4, saved[i]);
        _pci.Write(_f.Rid, 0x04, 2, saved[1] & 0xFFFF);
        _pci.Write(_f.Rid, _f.PcieCap + 8, 2, devctl & 0x7FFF);
        return 0;
    }

    public int EnableVectors(PciIrqKind kind, int nvec)
    {
        if (_alloc is not null) return -Errno.EINVAL;
        if (nvec < 1) return -Errno.EINVAL;
        if ((kind == PciIrqKind.Msix ? _msixCap : _msiCap) == 0) return -Errno.EINVAL;
        var max = kind == PciIrqKind.Msix ? PciMsix.TableSize(_pci, _f.Rid, _msixCap) : PciMsi.MaxVectors(_pci, _f.Rid, _msiCap);
        var got = Math.Min(nvec, max);
        if (kind == PciIrqKind.Msi) got = 1 << System.Numerics.BitOperations.Log2((uint)got); // multi-MSI needs a power of two
        MsiAllocation a;
        try { a = _msi.AllocateMsis(DeviceId, got); }
        catch (IrqException e) { return -e.Errno; }
        if (kind == PciIrqKind.Msi && got > 1 && (a.Vectors[0].Message.Data & (uint)(got - 1)) != 0)
        {
            // the block is not aligned for multi-MSI's low data bits: fall back to one vector
            _msi.FreeMsis(a);
            got = 1;
            try { a = _msi.AllocateMsis(DeviceId, 1); }
            catch (IrqException e) { return -e.Errno; }
        }
        _alloc = a;
        _programmed.Clear();
        var domain = Group.AttachedDomain;
        foreach (var v in a.Vectors)
        {
            ulong addr;
            try { addr = domain?.MsiAddress(v.Message.Address) ?? v.Message.Address; }
            catch (IommuException e) { DisableVectors(); return -e.Errno; }
            _programmed.Add(addr);
            _k.Machine.Trace.Emit(TraceCategory.MsiAlloc, "host", $"{Name}: vector {v.Index} from {_msi.Name}: INTID {v.Intid}, {v.Message}{(addr != v.Message.Address ? $" written as IOVA 0x{addr:x}" : "")}");
        }
        if (kind == PciIrqKind.Msix)
        {
            var (tb, toff) = PciMsix.TableLocation(_pci, _f.Rid, _msixCap);
            PciMsix.Enable(_k.Bus, _pci, _f.Rid, _msixCap, GetBar(tb).HostAddress + toff, _programmed, [.. a.Vectors.Take(got).Select(v => v.Message.Data)]);
        }
        else PciMsi.Enable(_pci, _f.Rid, _msiCap, _programmed[0], a.Vectors[0].Message.Data, got); // the block's data is aligned (above)
        return got;
    }

    public int RequestVector(int vector, string name, Action signal)
    {
        ArgumentNullException.ThrowIfNull(name); ArgumentNullException.ThrowIfNull(signal);
        if (_alloc is null || (uint)vector >= (uint)_alloc.Vectors.Count) return -Errno.EINVAL;
        var intid = _alloc.Vectors[vector].Intid;
        try { _k.Irqs.Request(intid, name, signal, _k.Machine.Trace, TraceCategory.VfioIrq); }
        catch (IrqException e) { return -e.Errno; }
        _handlers.Add(intid);
        return 0;
    }

    public void FreeVector(int vector)
    {
        if (_alloc is null || (uint)vector >= (uint)_alloc.Vectors.Count) return;
        var intid = _alloc.Vectors[vector].Intid;
        if (_handlers.Remove(intid)) _k.Irqs.Free(intid);
    }

    public void DisableVectors()
    {
        if (_msixCap != 0) PciMsix.Disable(_pci, _f.Rid, _msixCap);
        if (_msiCap != 0) PciMsi.Disable(_pci, _f.Rid, _msiCap);
        foreach (var i in _handlers) _k.Irqs.Free(i);
        _handlers.Clear();
        if (_alloc is not null) _msi.FreeMsis(_alloc);
        _alloc = null;
    }

    /// <summary>The INTID of this function's INTx: pin swizzled through each bridge, then qemu-virt's root rule.</summary>
    public int IntxLine()
    {
        var pin = (int)Cfg(0x3D, 1);
        if (pin is < 1 or > 4) return -1;
        var p = pin - 1;
        var f = _f;
        while (f.Parent is not null)
        {
            p = (p + f.Device) & 3;
            f = f.Parent;
        }
        return 32 + _k.Machine.Map.PcieIntxFirstSpi + ((p + f.Device) & 3);
    }

    public int ConnectIntx(IVfioIrqSink? sink)
    {
        if (sink is null)
        {
            if (_intxIntid >= 0)
            {
                _k.SetSpiEnabled(_intxIntid, false, edge: false);
                _k.Irqs.Free(_intxIntid);
                _intxIntid = -1;
            }
            return 0;
        }
        var intid = IntxLine();
        if (intid < 0) return -Errno.ENODEV;
        if (_intxIntid >= 0) return -Errno.EBUSY;
        try { _k.Irqs.Request(intid, (_, _) => sink.OnIntx()); }
        catch (IrqException e) { return -e.Errno; }
        _intxIntid = intid;
        _k.SetSpiEnabled(intid, true, edge: false);
        return 0;
    }

    public void SetIntxLineMasked(bool masked)
    {
        if (_intxIntid < 0) return;
        _k.SetSpiEnabled(_intxIntid, !masked, edge: false);
    }

    /// <summary>No AER source is modelled: the sink is kept for completeness.</summary>
    public void ConnectErrors(IVfioIrqSink? sink) => ErrorSink = sink;

    public IVfioIrqSink? ErrorSink { get; private set; }

    public override string ToString() => Name;
}

/// <summary>vfio-platform's backend over the platform DMA engine: one MMIO region, one level-triggered SPI, and a
/// reset handler (what a vfio-platform reset module does: CTRL := 0 through MMIO).</summary>
public sealed class KernelPlatformDevice : IVfioPlatformDevice
{
    readonly HostKernel _k;
    readonly PlatformDmaInfo _p;
    Action<int>? _handler;
    bool _requested;

    internal KernelPlatformDevice(HostKernel kernel, PlatformDmaInfo info)
    {
        _k = kernel;
        _p = info;
        Regions = [new PlatformRegionInfo(info.Base, Doorbell.Devices.PlatformDmaRegs.RegionSize, false)];
    }

    public string Name => _p.Name;
    public bool IsAmba => false;
    public IReadOnlyList<PlatformRegionInfo> Regions { get; }
    public IReadOnlyList<bool> IrqIsLevel { get; } = [true];
    public int Intid => 32 + _p.Spi;

    /// <summary>Linux's vfio-platform accesses a region with naturally aligned 4/2/1-byte ioread/iowrite.</summary>
    const int RegionMaxAccess = 4;

    public BusStatus ReadRegion(int index, ulong offset, Span<byte> destination)
    {
        if (index != 0 || offset > Regions[0].Size || (ulong)destination.Length > Regions[0].Size - offset) return BusStatus.DecodeError;
        return _k.Bus.ReadAccesses(_p.Base + offset, destination, RegionMaxAccess, BusAttributes.Cpu);
    }

    public BusStatus WriteRegion(int index, ulong offset, ReadOnlySpan<byte> source)
    {
        if (index != 0 || offset > Regions[0].Size || (ulong)source.Length > Regions[0].Size - offset) return BusStatus.DecodeError;
        return _k.Bus.WriteAccesses(_p.Base + offset, source, RegionMaxAccess, BusAttributes.Cpu);
    }

    /// <summary>The line level, from the device's registers (STATUS nonzero with CTRL.IRQ_ENABLE).</summary>
    public bool IrqLineAsserted(int index)
    {
        if (index != 0) return false;
        _k.Bus.Read(new PhysAddr(_p.Base + Doorbell.Devices.PlatformDmaRegs.Ctrl), 4, out var ctrl, BusAttributes.Cpu);
        _k.Bus.Read(new PhysAddr(_p.Base + Doorbell.Devices.PlatformDmaRegs.Status), 4, out var st, BusAttributes.Cpu);
        return (ctrl & Doorbell.Devices.PlatformDmaRegs.CtrlIrqEnable) != 0 && st != 0;
    }

    public void ConnectIrq(int index, Action<int>? handler)
    {
        if (index != 0) return;
        _handler = handler;
        if (handler is not null && !_requested)
        {
            _k.Irqs.Request(Intid, (_, _) => _handler?.Invoke(0));
            _requested = true;
            _k.SetSpiEnabled(Intid, true, edge: false);
        }
        else if (handler is null && _requested)
        {
            _k.SetSpiEnabled(Intid, false, edge: false);
            _k.Irqs.Free(Intid);
            _requested = false;
        }
    }

    public void SetIrqEnabled(int index, bool enabled)
    {
        if (index != 0 || !_requested) return;
        _k.SetSpiEnabled(Intid, enabled, edge: false);
    }

    public bool HasReset => true;

    public int Reset()
    {
        _k.Bus.Write(new PhysAddr(_p.Base + Doorbell.Devices.PlatformDmaRegs.Ctrl), 4, 0, BusAttributes.Cpu);
        return 0;
    }
}
