using System.Runtime.InteropServices;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Memory;

// vfio-pci (Linux drivers/vfio/pci/vfio_pci_core.c, vfio_pci_rdwr.c, vfio_pci_intrs.c; rules in
// shared/reference/vfio-semantics.md §2.4): regions at index << 40, region/IRQ info, config virtualization,
// BAR access with MSI-X table protection and the memory-decode check, reset, and SET_IRQS for INTx/MSI/MSI-X/ERR/REQ
// delivering to real eventfds. Known limits: no VGA region, no device-specific regions, no dynamic
// MSI-X allocation, hot reset needs the optional IVfioPciHotResetScope (else -ENODEV).
namespace Doorbell.Host.Vfio;

public sealed class VfioPciDevice : VfioDevice, IVfioIrqSink, IUserMappingGuard
{
    enum IrqType { None = -1, Intx = 0, Msi = 1, Msix = 2 }

    readonly IVfioPciFunction _fn;
    readonly VfioOptions _options;
    readonly VfioPciConfig _config;
    IrqType _irqType = IrqType.None;
    EventFdContext?[] _ctx = [];
    EventFdContext? _intxTrigger, _errTrigger, _reqTrigger;
    readonly object _intxUnmaskOwner = new();
    bool _intxMasked;
    bool _pci23;
    bool _resetWorks;
    int _powerState;
    int _msixBar = -1;
    ulong _msixOffset, _msixSize;
    byte[] _savedConfig = [];

    internal VfioPciDevice(VfioGroup group, IVfioPciFunction fn, VfioOptions options) : base(group)
    {
        _fn = fn;
        _options = options;
        _config = new VfioPciConfig(fn)
        {
            IsMsiEnabled = () => _irqType == IrqType.Msi,
            OnVirqDisabledChanged = d => { if (d) IntxMask(); else IntxUnmask(); },
            OnFunctionReset = () => _fn.Reset(),
            OnPowerState = SetPowerState,
            RestoreBars = RestoreBars,
        };
    }

    public override string Name => _fn.Name;
    public IVfioPciFunction Function => _fn;
    public bool IntxMasked => _intxMasked;
    public bool Pci23 => _pci23;
    bool IsPcie => _config.ExpCap != 0;

    // ------------------------------------------------------------------ open / close
    protected override int Enable()
    {
        SetPowerState(0);
        _fn.WriteConfig(VfioPciConfig.Command, 2, _fn.ReadConfig(VfioPciConfig.Command, 2) & ~(uint)VfioPciConfig.CmdMaster);
        var r = _fn.Reset();
        _resetWorks = r == 0;
        _savedConfig = new byte[Math.Min(_fn.ConfigSize, 256)];
        for (var i = 0; i < _savedConfig.Length; i += 4)
            MemoryMarshal.Write(_savedConfig.AsSpan(i), _fn.ReadConfig(i, 4));
        _pci23 = !_options.NoIntxMask && IntxMaskSupported();
        if (_pci23)
        {
            var cmd = _fn.ReadConfig(VfioPciConfig.Command, 2);
            if ((cmd & VfioPciConfig.CmdIntxDisable) != 0) _fn.WriteConfig(VfioPciConfig.Command, 2, cmd & ~(uint)VfioPciConfig.CmdIntxDisable);
        }
        _config.Init(noIntx: false);
        _msixBar = -1;
        if (_config.MsixCap != 0)
        {
            var table = _fn.ReadConfig(_config.MsixCap + 4, 4);
            var flags = _fn.ReadConfig(_config.MsixCap + 2, 2);
            _msixBar = (int)(table & 7);
            _msixOffset = table & ~7u;
            _msixSize = ((flags & 0x7FF) + 1) * 16UL;
        }
        _irqType = IrqType.None;
        _intxMasked = false;
        _fn.ConnectErrors(this);
        return 0;
    }

    /// <summary>pci_intx_mask_supported: DisINTx toggles in hardware.</summary>
    bool IntxMaskSupported()
    {
        var orig = _fn.ReadConfig(VfioPciConfig.Command, 2);
        var flipped = orig ^ VfioPciConfig.CmdIntxDisable;
        _fn.WriteConfig(VfioPciConfig.Command, 2, flipped);
        var back = _fn.ReadConfig(VfioPciConfig.Command, 2);
        _fn.WriteConfig(VfioPciConfig.Command, 2, orig);
        return back == flipped;
    }

    protected override void Disable()
    {
        _fn.WriteConfig(VfioPciConfig.Command, 2, _fn.ReadConfig(VfioPciConfig.Command, 2) & ~(uint)VfioPciConfig.CmdMaster);
        DisableIrqs();
        Swap(ref _errTrigger, null);
        Swap(ref _reqTrigger, null);
        _fn.ConnectErrors(null);
        ClearIrqfds();
        _ioeventfds.Clear();
        // Restore the saved header (command last), then reset if that works.
        for (var i = 0x10; i < 0x40; i += 4) _fn.WriteConfig(i, 4, MemoryMarshal.Read<uint>(_savedConfig.AsSpan(i)));
        _fn.WriteConfig(VfioPciConfig.Command, 2, MemoryMarshal.Read<ushort>(_savedConfig.AsSpan(VfioPciConfig.Command)));
        if (_resetWorks) _fn.Reset();
    }

    void RestoreBars()
    {
        for (var i = 0x10; i < 0x28; i += 4) _fn.WriteConfig(i, 4, MemoryMarshal.Read<uint>(_savedConfig.AsSpan(i)));
        _fn.WriteConfig(0x30, 4, MemoryMarshal.Read<uint>(_savedConfig.AsSpan(0x30)));
    }

    void SetPowerState(int state)
    {
        _powerState = state;
        if (_config.PmCap == 0) return;
        var pmcsr = _fn.ReadConfig(_config.PmCap + 4, 2);
        _fn.WriteConfig(_config.PmCap + 4, 2, (pmcsr & ~3u) | (uint)state);
    }

    void DisableIrqs()
    {
        if (_irqType == IrqType.Intx) IntxDisable();
        else if (_irqType is IrqType.Msi or IrqType.Msix) MsiDisable();
    }

    static void Swap(ref EventFdContext? slot, EventFdContext? value)
    {
        if (ReferenceEquals(slot, value)) return;
        slot?.Dispose();
        slot = value;
    }

    /// <summary>__vfio_pci_memory_enabled: hardware MEMORY decode on and the function in D0–D2.</summary>
    public bool MemoryEnabled => _powerState < 3 && (_fn.ReadConfig(VfioPciConfig.Command, 2) & VfioPciConfig.CmdMemory) != 0;

    bool IUserMappingGuard.CanAccess => IsOpen && MemoryEnabled;

    /// <summary>The host wants the device back: signal the REQ eventfd (vfio_pci_core_request).</summary>
    public bool Request()
    {
        if (_reqTrigger is null) return false;
        _reqTrigger.Signal();
        return true;
    }

    // ------------------------------------------------------------------ ioctls
    public override int Ioctl(uint request, Span<byte> arg)
    {
        PollIrqfds();
        if (request == VfioIoctl.DeviceGetInfo) return GetInfo(arg);
        if (request == VfioIoctl.DeviceGetRegionInfo) return GetRegionInfo(arg);
        if (request == VfioIoctl.DeviceGetIrqInfo) return GetIrqInfo(arg);
        if (request == VfioIoctl.DeviceSetIrqs) return SetIrqs(arg);
        if (request == VfioIoctl.DeviceReset) return ResetIoctl();
        if (request == VfioIoctl.DeviceGetPciHotResetInfo) return HotResetInfo(arg);
        if (request == VfioIoctl.DevicePciHotReset) return HotResetIoctl(arg);
        if (request == VfioIoctl.DeviceIoeventfd) return IoeventfdIoctl(arg);
        return -Errno.ENOTTY;
    }

    int GetInfo(Span<byte> arg)
    {
        const int minsz = 16, capsz = 20;
        if (!UserArg.TryRead(arg, minsz, out VfioDeviceInfo info)) return -Errno.EFAULT;
        if (info.Argsz < minsz) return -Errno.EINVAL;
        var outsz = minsz;
        if (info.Argsz >= capsz) { outsz = capsz; info.CapOffset = 0; }
        info.Flags = VfioDeviceFlags.Pci | (_resetWorks ? VfioDeviceFlags.Reset : 0);
        info.NumRegions = VfioPciIndex.NumRegions;
        info.NumIrqs = VfioPciIndex.NumIrqs;
        return UserArg.TryWrite(arg, outsz, info) ? 0 : -Errno.EFAULT;
    }

    bool BarMmapSupported(int index)
    {
        var b = _fn.GetBar(index);
        if (!b.IsMemory || b.Size == 0) return false;
        return b.Size >= 4096 || (b.HostAddress & 4095) == 0;
    }

    int GetRegionInfo(Span<byte> arg)
    {
        const int minsz = 32, infoSize = 32;
        if (!UserArg.TryRead(arg, minsz, out VfioRegionInfo info)) return -Errno.EFAULT;
        if (info.Argsz < minsz) return -Errno.EINVAL;
        var caps = new VfioCapChain();
        switch (info.Index)
        {
            case VfioPciIndex.Config:
                info.Offset = VfioPciIndex.IndexToOffset(info.Index);
                info.Size = (ulong)_config.Size;
                info.Flags = VfioRegionFlags.Read | VfioRegionFlags.Write;
                break;
            case <= VfioPciIndex.Bar5:
                {
                    info.Offset = VfioPciIndex.IndexToOffset(info.Index);
                    var bar = _fn.GetBar((int)info.Index);
                    info.Size = bar.Size;
                    if (bar.Size == 0) { info.Flags = 0; break; }
                    info.Flags = VfioRegionFlags.Read | VfioRegionFlags.Write;
                    if (BarMmapSupported((int)info.Index))
                    {
                        info.Flags |= VfioRegionFlags.Mmap;
                        if ((int)info.Index == _msixBar)
                        {
                            if (_options.ExcludeMsixTableFromMmap) AddMsixSparseCap(caps, bar.Size);
                            else caps.Add(VfioRegionFlags.CapMsixMappable, 1, 8);
                        }
                    }
                    break;
                }
            case VfioPciIndex.Rom:
                {
                    info.Offset = VfioPciIndex.IndexToOffset(info.Index);
                    var rom = _fn.GetBar(6);
                    info.Size = rom.Size;
                    info.Flags = rom.Size != 0 ? VfioRegionFlags.Read : 0;
                    break;
                }
            default:
                return -Errno.EINVAL; // VGA absent; no device-specific regions
        }
        if (caps.Size > 0)
        {
            info.Flags |= VfioRegionFlags.Caps;
            if (info.Argsz < infoSize + caps.Size) { info.Argsz = (uint)(infoSize + caps.Size); info.CapOffset = 0; }
            else
            {
                if (!caps.CopyTo(arg, infoSize)) return -Errno.EFAULT;
                info.CapOffset = infoSize;
            }
        }
        return UserArg.TryWrite(arg, minsz, info) ? 0 : -Errno.EFAULT;
    }

    /// <summary>Legacy layout: mmappable areas are the BAR minus the page-aligned MSI-X table.</summary>
    void AddMsixSparseCap(VfioCapChain caps, ulong barSize)
    {
        var start = _msixOffset & ~4095UL;
        var end = (_msixOffset + _msixSize + 4095) & ~4095UL;
        var areas = new List<(ulong, ulong)>();
        if (start > 0) areas.Add((0, start));
        if (end < barSize) areas.Add((end, barSize - end));
        var span = caps.Add(VfioRegionFlags.CapSparseMmap, 1, 16 + 16 * areas.Count);
        MemoryMarshal.Write(span[8..], (uint)areas.Count);
        for (var i = 0; i < areas.Count; i++)
        {
            var a = new VfioRegionSparseMmapArea { Offset = areas[i].Item1, Size = areas[i].Item2 };
            MemoryMarshal.Write(span[(16 + 16 * i)..], in a);
        }
    }

    uint IrqCount(uint index)
    {
        switch (index)
        {
            case VfioPciIndex.IrqIntx:
                return _fn.ReadConfig(VfioPciConfig.IntPin, 1) != 0 ? 1u : 0u;
            case VfioPciIndex.IrqMsi:
                if (_config.MsiCap == 0) return 0;
                return 1u << (int)((_fn.ReadConfig(_config.MsiCap + 2, 2) & VfioPciConfig.MsiFlagsQmask) >> 1);
            case VfioPciIndex.IrqMsix:
                if (_config.MsixCap == 0) return 0;
                return (_fn.ReadConfig(_config.MsixCap + 2, 2) & 0x7FF) + 1;
            case VfioPciIndex.IrqErr: return IsPcie ? 1u : 0u;
            case VfioPciIndex.IrqReq: return 1;
            default: return 0;
        }
    }

    int GetIrqInfo(Span<byte> arg)
    {
        const int minsz = 16;
        if (!UserArg.TryRead(arg, minsz, out VfioIrqInfo info)) return -Errno.EFAULT;
        if (info.Argsz < minsz || info.Index >= VfioPciIndex.NumIrqs) return -Errno.EINVAL;
        if (info.Index == VfioPciIndex.IrqErr && !IsPcie) return -Errno.EINVAL;
        info.Flags = VfioIrqInfoFlags.EventFd;
        info.Count = IrqCount(info.Index);
        if (info.Index == VfioPciIndex.IrqIntx) info.Flags |= VfioIrqInfoFlags.Maskable | VfioIrqInfoFlags.Automasked;
        else info.Flags |= VfioIrqInfoFlags.NoResize;
        return UserArg.TryWrite(arg, minsz, info) ? 0 : -Errno.EFAULT;
    }

    int ResetIoctl()
    {
        if (!_resetWorks) return -Errno.EINVAL;
        return _fn.Reset();
    }

    // ------------------------------------------------------------------ SET_IRQS
    int SetIrqs(Span<byte> arg)
    {
        var r = ValidateSetIrqs(arg, IrqCount, VfioPciIndex.NumIrqs, out var hdr, out var data);
        if (r != 0) return r;
        var action = hdr.Flags & VfioIrqSetFlags.ActionTypeMask;
        var flags = hdr.Flags;
        switch (hdr.Index)
        {
            case VfioPciIndex.IrqIntx:
                return action switch
                {
                    VfioIrqSetFlags.ActionMask => IntxMaskIoctl(hdr.Start, hdr.Count, flags, data),
                    VfioIrqSetFlags.ActionUnmask => IntxUnmaskIoctl(hdr.Start, hdr.Count, flags, data),
                    VfioIrqSetFlags.ActionTrigger => IntxTriggerIoctl(hdr.Start, hdr.Count, flags, data),
                    _ => -Errno.ENOTTY,
                };
            case VfioPciIndex.IrqMsi:
            case VfioPciIndex.IrqMsix:
                return action == VfioIrqSetFlags.ActionTrigger
                    ? MsiTriggerIoctl(hdr.Index == VfioPciIndex.IrqMsix ? IrqType.Msix : IrqType.Msi, hdr.Start, hdr.Count, flags, data)
                    : -Errno.ENOTTY; // masking of MSI/MSI-X vectors is not exported
            case VfioPciIndex.IrqErr:
                if (action != VfioIrqSetFlags.ActionTrigger || !IsPcie) return -Errno.ENOTTY;
                return CtxTriggerSingle(ref _errTrigger, hdr.Start, hdr.Count, flags, data);
            case VfioPciIndex.IrqReq:
                if (action != VfioIrqSetFlags.ActionTrigger) return -Errno.ENOTTY;
                return CtxTriggerSingle(ref _reqTrigger, hdr.Start, hdr.Count, flags, data);
            default:
                return -Errno.ENOTTY;
        }
    }

    int IntxMaskIoctl(uint start, uint count, uint flags, ReadOnlySpan<byte> data)
    {
        if (_irqType != IrqType.Intx || start != 0 || count != 1) return -Errno.EINVAL;
        if ((flags & VfioIrqSetFlags.DataNone) != 0) IntxMask();
        else if ((flags & VfioIrqSetFlags.DataBool) != 0) { if (data[0] != 0) IntxMask(); }
        else return -Errno.ENOTTY; // mask irqfd: not implemented in Linux either
        return 0;
    }

    int IntxUnmaskIoctl(uint start, uint count, uint flags, ReadOnlySpan<byte> data)
    {
        if (_irqType != IrqType.Intx || start != 0 || count != 1) return -Errno.EINVAL;
        if ((flags & VfioIrqSetFlags.DataEventFd) != 0)
        {
            var fd = Fd(data, 0);
            if (fd >= 0)
            {
                var g = EventFdContext.TryGet(fd, out var ctx);
                if (g != 0) return g;
                SetIrqfd(_intxUnmaskOwner, ctx, IntxUnmask);
            }
            else SetIrqfd(_intxUnmaskOwner, null, IntxUnmask);
        }
        else if ((flags & VfioIrqSetFlags.DataNone) != 0) IntxUnmask();
        else if (data[0] != 0) IntxUnmask();
        return 0;
    }

    int IntxTriggerIoctl(uint start, uint count, uint flags, ReadOnlySpan<byte> data)
    {
        if (_irqType == IrqType.Intx && count == 0 && (flags & VfioIrqSetFlags.DataNone) != 0)
        {
            IntxDisable();
            return 0;
        }
        if (!(_irqType == IrqType.Intx || _irqType == IrqType.None) || start != 0 || count != 1) return -Errno.EINVAL;
        if ((flags & VfioIrqSetFlags.DataEventFd) != 0)
        {
            var fd = Fd(data, 0);
            EventFdContext? trigger = null;
            if (fd >= 0)
            {
                var g = EventFdContext.TryGet(fd, out trigger);
                if (g != 0) return g;
            }
            if (_irqType == IrqType.Intx)
            {
                Swap(ref _intxTrigger, trigger);
                return 0;
            }
            var r = IntxEnable(trigger);
            if (r != 0) trigger?.Dispose();
            return r;
        }
        if (_irqType != IrqType.Intx) return -Errno.EINVAL;
        if ((flags & VfioIrqSetFlags.DataNone) != 0 || data[0] != 0) SendIntx();
        return 0;
    }

    int IntxEnable(EventFdContext? trigger)
    {
        if (_irqType != IrqType.None) return -Errno.EINVAL;
        if (_fn.ReadConfig(VfioPciConfig.IntPin, 1) == 0) return -Errno.ENODEV;
        _intxTrigger = trigger;
        _irqType = IrqType.Intx;
        _intxMasked = _config.VirqDisabled;
        if (_pci23) SetDisIntx(_intxMasked);
        var r = _fn.ConnectIntx(this);
        if (r != 0)
        {
            _irqType = IrqType.None;
            _intxTrigger = null;
            return r;
        }
        if (!_pci23 && _intxMasked) _fn.SetIntxLineMasked(true);
        return 0;
    }

    void IntxDisable()
    {
        _fn.ConnectIntx(null);
        if (!_pci23) _fn.SetIntxLineMasked(false);
        SetIrqfd(_intxUnmaskOwner, null, IntxUnmask);
        Swap(ref _intxTrigger, null);
        _intxMasked = false;
        _irqType = IrqType.None;
    }

    void SetDisIntx(bool disable)
    {
        var cmd = _fn.ReadConfig(VfioPciConfig.Command, 2);
        var want = disable ? cmd | VfioPciConfig.CmdIntxDisable : cmd & ~(uint)VfioPciConfig.CmdIntxDisable;
        if (want != cmd) _fn.WriteConfig(VfioPciConfig.Command, 2, want);
    }

    void SendIntx()
    {
        if (_irqType == IrqType.Intx && !_config.VirqDisabled) _intxTrigger?.Signal();
    }

    /// <summary>vfio_pci_intx_mask.</summary>
    void IntxMask()
    {
        if (_irqType != IrqType.Intx || _intxMasked) return;
        if (_pci23) SetDisIntx(true); else _fn.SetIntxLineMasked(true);
        _intxMasked = true;
    }

    /// <summary>vfio_pci_intx_unmask: a still-pending interrupt is re-sent instead of unmasking.</summary>
    void IntxUnmask()
    {
        if (_irqType != IrqType.Intx || !_intxMasked || _config.VirqDisabled) return;
        var resend = false;
        if (_pci23)
        {
            // pci_check_and_unmask_intx: leave DisINTx set if the function still has INTx pending.
            if ((_fn.ReadConfig(VfioPciConfig.Status, 2) & VfioPciConfig.StatusInterrupt) != 0) resend = true;
            else SetDisIntx(false);
        }
        else _fn.SetIntxLineMasked(false);
        _intxMasked = resend;
        if (resend) SendIntx();
    }

    void IVfioIrqSink.OnIntx()
    {
        PollIrqfds();
        if (_irqType != IrqType.Intx) return;
        if (!_pci23)
        {
            _fn.SetIntxLineMasked(true);
            _intxMasked = true;
        }
        else
        {
            if (_intxMasked) return;
            // pci_check_and_mask_intx: only our function's pending INTx is claimed.
            if ((_fn.ReadConfig(VfioPciConfig.Status, 2) & VfioPciConfig.StatusInterrupt) == 0) return;
            SetDisIntx(true);
            _intxMasked = true;
        }
        SendIntx();
    }

    /// <summary>
    /// vfio_msi_set_vector_signal: the vector's old trigger is released with its handler (free_irq), then the new one
    /// is requested with the trigger's signal as the handler (request_irq of vfio_msihandler, whose only work is
    /// eventfd_signal), named as vfio-pci names it. A vector without a trigger has no handler.
    /// </summary>
    int SetVectorTrigger(int vector, EventFdContext? trigger)
    {
        if (_ctx[vector] is not null)
        {
            _fn.FreeVector(vector);
            Swap(ref _ctx[vector], null);
        }
        if (trigger is null) return 0;
        var r = _fn.RequestVector(vector, $"vfio-{(_irqType == IrqType.Msix ? "msix" : "msi")}[{vector}]({Name})", trigger.Signal);
        if (r != 0) { trigger.Dispose(); return r; }
        _ctx[vector] = trigger;
        return 0;
    }

    void IVfioIrqSink.OnError() => _errTrigger?.Signal();

    int MsiTriggerIoctl(IrqType type, uint start, uint count, uint flags, ReadOnlySpan<byte> data)
    {
        if (_irqType == type && count == 0 && (flags & VfioIrqSetFlags.DataNone) != 0)
        {
            MsiDisable();
            return 0;
        }
        if (!(_irqType == type || _irqType == IrqType.None)) return -Errno.EINVAL;
        if ((flags & VfioIrqSetFlags.DataEventFd) != 0)
        {
            if (_irqType == type) return MsiSetBlock(start, count, data);
            var r = MsiEnable(type, (int)(start + count));
            if (r != 0) return r;
            r = MsiSetBlock(start, count, data);
            if (r != 0) MsiDisable();
            return r;
        }
        if (_irqType != type) return -Errno.EINVAL;
        for (var i = start; i < start + count; i++)
        {
            if (i >= _ctx.Length || _ctx[i] is not { } c) continue;
            if ((flags & VfioIrqSetFlags.DataNone) != 0 || data[(int)(i - start)] != 0) c.Signal();
        }
        return 0;
    }

    /// <summary>vfio_msi_enable: returns 0, the positive number of vectors available when fewer, or -errno.</summary>
    int MsiEnable(IrqType type, int nvec)
    {
        if (_irqType != IrqType.None) return -Errno.EINVAL;
        var got = _fn.EnableVectors(type == IrqType.Msix ? PciIrqKind.Msix : PciIrqKind.Msi, nvec);
        if (got == 0) return -Errno.ENOSPC;
        if (got < nvec)
        {
            if (got > 0) _fn.DisableVectors();
            return got;
        }
        _ctx = new EventFdContext?[nvec];
        _irqType = type;
        if (type == IrqType.Msi) _config.MsiQmax = 31 - System.Numerics.BitOperations.LeadingZeroCount((uint)(nvec * 2 - 1));
        return 0;
    }

    int MsiSetBlock(uint start, uint count, ReadOnlySpan<byte> data)
    {
        if (start >= _ctx.Length || start + count > _ctx.Length) return -Errno.EINVAL;
        for (var i = 0; i < count; i++)
        {
            var fd = data.IsEmpty ? -1 : Fd(data, i);
            var slot = (int)start + i;
            if (fd < 0) { SetVectorTrigger(slot, null); continue; }
            var g = EventFdContext.TryGet(fd, out var ctx);
            if (g == 0) g = SetVectorTrigger(slot, ctx);
            if (g != 0)
            {
                for (var j = (int)start; j < slot; j++) SetVectorTrigger(j, null);
                return g;
            }
        }
        return 0;
    }

    void MsiDisable()
    {
        for (var i = 0; i < _ctx.Length; i++) SetVectorTrigger(i, null);
        _fn.DisableVectors();
        _ctx = [];
        if (_irqType == IrqType.Msi) _config.MsiQmax = 0;
        _irqType = IrqType.None;
    }

    /// <summary>vfio_pci_set_ctx_trigger_single (ERR, REQ).</summary>
    static int CtxTriggerSingle(ref EventFdContext? slot, uint start, uint count, uint flags, ReadOnlySpan<byte> data)
    {
        if (start != 0 || count > 1) return -Errno.EINVAL;
        if ((flags & VfioIrqSetFlags.DataNone) != 0)
        {
            if (slot is not null)
            {
                if (count != 0) slot.Signal();
                else Swap(ref slot, null);
                return 0;
            }
        }
        else if ((flags & VfioIrqSetFlags.DataBool) != 0)
        {
            if (count == 0) return -Errno.EINVAL;
            if (data[0] != 0) slot?.Signal();
            return 0;
        }
        else if ((flags & VfioIrqSetFlags.DataEventFd) != 0)
        {
            if (count == 0) return -Errno.EINVAL;
            var fd = Fd(data, 0);
            if (fd == -1) Swap(ref slot, null);
            else if (fd >= 0)
            {
                var g = EventFdContext.TryGet(fd, out var ctx);
                if (g != 0) return g;
                Swap(ref slot, ctx);
            }
            return 0;
        }
        return -Errno.EINVAL;
    }

    // ------------------------------------------------------------------ hot reset
    int HotResetInfo(Span<byte> arg)
    {
        const int minsz = 12, devSize = 8;
        if (!UserArg.TryRead(arg, minsz, out VfioPciHotResetInfo hdr)) return -Errno.EFAULT;
        if (hdr.Argsz < minsz) return -Errno.EINVAL;
        hdr.Flags = 0;
        if (_fn is not IVfioPciHotResetScope scope) return -Errno.ENODEV;
        var peers = scope.HotResetPeers;
        var ret = 0;
        if (hdr.Argsz < minsz + peers.Count * devSize) ret = -Errno.ENOSPC;
        hdr.Count = (uint)peers.Count;
        if (!UserArg.TryWrite(arg, minsz, hdr)) return -Errno.EFAULT;
        if (ret != 0) return ret;
        if (arg.Length < minsz + peers.Count * devSize) return -Errno.EFAULT;
        for (var i = 0; i < peers.Count; i++)
        {
            var d = new VfioPciDependentDevice { GroupId = (uint)peers[i].GroupId, Segment = peers[i].Segment, Bus = peers[i].Bus, Devfn = peers[i].Devfn };
            MemoryMarshal.Write(arg[(minsz + i * devSize)..], in d);
        }
        return 0;
    }

    /// <summary>VFIO_DEVICE_PCI_HOT_RESET (group path): the caller proves ownership of every affected group with
    /// group fds; -EPERM when one is missing.</summary>
    int HotResetIoctl(Span<byte> arg)
    {
        const int minsz = 12;
        if (!UserArg.TryRead(arg, minsz, out VfioPciHotResetInfo hdr)) return -Errno.EFAULT;
        if (hdr.Argsz < minsz || hdr.Flags != 0) return -Errno.EINVAL;
        if (hdr.Count == 0) return -Errno.EINVAL; // the group path needs the proof
        if (_fn is not IVfioPciHotResetScope scope) return -Errno.ENODEV;
        var peers = scope.HotResetPeers;
        if (hdr.Count > peers.Count) return -Errno.EINVAL;
        if ((ulong)arg.Length < minsz + 4UL * hdr.Count) return -Errno.EFAULT;
        var owned = new HashSet<int>();
        var process = Group.Container?.Process;
        for (var i = 0; i < hdr.Count; i++)
        {
            var fd = MemoryMarshal.Read<int>(arg[(minsz + 4 * i)..]);
            var f = process?.File(fd);
            if (f is null) return -Errno.EBADF;
            if (f is not VfioGroupFile gf) return -Errno.EINVAL;
            owned.Add(gf.Group.Id);
        }
        foreach (var p in peers)
            if (!owned.Contains(p.GroupId)) return -Errno.EPERM;
        return scope.HotReset();
    }

    // ------------------------------------------------------------------ IOEVENTFD
    sealed record Ioeventfd(int Bar, ulong Pos, ulong Data, int Count);
    readonly List<Ioeventfd> _ioeventfds = [];
    const int IoeventfdMax = 1000; // VFIO_PCI_IOEVENTFD_MAX

    /// <summary>VFIO_DEVICE_IOEVENTFD: a user eventfd signal performs a fixed BAR write (vfio_pci_ioeventfd).</summary>
    int IoeventfdIoctl(Span<byte> arg)
    {
        const int minsz = 28;
        if (!UserArg.TryRead(arg, minsz, out VfioDeviceIoeventfd io)) return -Errno.EFAULT;
        if (io.Argsz < minsz || (io.Flags & ~VfioIoeventfdFlags.SizeMask) != 0) return -Errno.EINVAL;
        var count = (int)(io.Flags & VfioIoeventfdFlags.SizeMask);
        if (System.Numerics.BitOperations.PopCount((uint)count) != 1) return -Errno.EINVAL;
        var bar = (int)VfioPciIndex.OffsetToIndex(io.Offset);
        var pos = io.Offset & VfioPciIndex.OffsetMask;
        if (bar > (int)VfioPciIndex.Bar5) return -Errno.EINVAL;
        if (pos + (ulong)count > _fn.GetBar(bar).Size) return -Errno.EINVAL;
        if (bar == _msixBar && !(pos + (ulong)count <= _msixOffset || pos >= _msixOffset + _msixSize)) return -Errno.EINVAL;
        foreach (var e in _ioeventfds)
        {
            if (e.Bar != bar || e.Pos != pos || e.Data != io.Data || e.Count != count) continue;
            if (io.Fd != -1) return -Errno.EEXIST;
            SetIrqfd(e, null, () => { });
            _ioeventfds.Remove(e);
            return 0;
        }
        if (io.Fd < 0) return -Errno.ENODEV;
        if (_ioeventfds.Count >= IoeventfdMax) return -Errno.ENOSPC;
        var g = EventFdContext.TryGet(io.Fd, out var ctx);
        if (g != 0) return g;
        var entry = new Ioeventfd(bar, pos, io.Data, count);
        _ioeventfds.Add(entry);
        SetIrqfd(entry, ctx, () =>
        {
            if (!MemoryEnabled && _fn.GetBar(entry.Bar).IsMemory) return;
            Span<byte> data = stackalloc byte[8];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(data, entry.Data);
            _fn.WriteBar(entry.Bar, entry.Pos, data[..entry.Count]);
        });
        return 0;
    }

    // ------------------------------------------------------------------ read / write / mmap
    public override long Rw(Span<byte> buffer, ulong offset, bool write)
    {
        PollIrqfds();
        var index = VfioPciIndex.OffsetToIndex(offset);
        var pos = offset & VfioPciIndex.OffsetMask;
        if (index >= VfioPciIndex.NumRegions) return -Errno.EINVAL;
        switch (index)
        {
            case VfioPciIndex.Config:
                if (pos > int.MaxValue) return -Errno.EFAULT;
                return write ? _config.Write((int)pos, buffer) : _config.Read((int)pos, buffer);
            case VfioPciIndex.Rom:
                if (write) return -Errno.EINVAL;
                return BarRw(6, buffer, pos, false);
            case <= VfioPciIndex.Bar5:
                return BarRw((int)index, buffer, pos, write);
            default:
                return -Errno.EINVAL; // VGA
        }
    }

    long BarRw(int bar, Span<byte> buf, ulong pos, bool write)
    {
        var info = _fn.GetBar(bar);
        var end = info.Size;
        if (end == 0 || pos >= end) return -Errno.EINVAL;
        var count = (int)Math.Min((ulong)buf.Length, end - pos);
        // Up to three pieces: before the MSI-X table, the table (reads return 0xFF, writes are dropped), after it. The
        // memory view splits each piece into naturally aligned accesses, as vfio-pci's loop does.
        ulong xStart = (ulong)count, xEnd = (ulong)count; // table bounds relative to pos, clipped to [0, count]
        if (bar == _msixBar)
        {
            xStart = Math.Clamp(_msixOffset, pos, pos + (ulong)count) - pos;
            xEnd = Math.Clamp(_msixOffset + _msixSize, pos, pos + (ulong)count) - pos;
        }
        // Memory decode off: -EIO for any access outside the table (the table itself is filled without an access).
        if ((info.IsMemory || bar == 6) && !MemoryEnabled && (xStart > 0 || (ulong)count > xEnd)) return -Errno.EIO;
        if (xStart > 0 && Piece(bar, buf[..(int)xStart], pos, write) != BusStatus.Ok) return -Errno.EIO;
        if (xEnd > xStart && !write) buf[(int)xStart..(int)xEnd].Fill(0xFF);
        if ((ulong)count > xEnd && Piece(bar, buf[(int)xEnd..count], pos + xEnd, write) != BusStatus.Ok) return -Errno.EIO;
        return count;
    }

    BusStatus Piece(int bar, Span<byte> piece, ulong pos, bool write) =>
        write ? _fn.WriteBar(bar, pos, piece) : _fn.ReadBar(bar, pos, piece);

    public override long Mmap(UserAddressSpace mm, ulong length, ulong offset, UserProt prot, bool shared, ulong fixedVaddr = 0)
    {
        ArgumentNullException.ThrowIfNull(mm);
        var index = VfioPciIndex.OffsetToIndex(offset);
        if (index >= VfioPciIndex.NumRegions) return -Errno.EINVAL;
        if (!shared) return -Errno.EINVAL;
        if (index >= VfioPciIndex.Rom) return -Errno.EINVAL;
        if (!BarMmapSupported((int)index)) return -Errno.EINVAL;
        var pos = offset & VfioPciIndex.OffsetMask;
        if (pos % 4096 != 0 || length == 0) return -Errno.EINVAL;
        var bar = _fn.GetBar((int)index);
        var physLen = (bar.Size + 4095) & ~4095UL;
        var reqLen = (length + 4095) & ~4095UL;
        if (pos + reqLen > physLen) return -Errno.EINVAL;
        if (_options.ExcludeMsixTableFromMmap && (int)index == _msixBar)
        {
            var ts = _msixOffset & ~4095UL;
            var te = (_msixOffset + _msixSize + 4095) & ~4095UL;
            if (pos < te && ts < pos + reqLen) return -Errno.EINVAL;
        }
        return (long)mm.MapPfn(reqLen, bar.HostAddress + pos, prot, this, fixedVaddr);
    }
}
