using Doorbell.Host.Os;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Memory;

// vfio-platform (Linux drivers/vfio/platform/vfio_platform_common.c, vfio_platform_irq.c): MMIO regions at
// index << 40, wired IRQs (level-triggered ones automasked, unmask to re-arm), reset through a reset handler.
// Known limits: MMIO regions only (no IO-port resources); AMBA devices differ only in the info flag.
namespace Doorbell.Host.Vfio;

public sealed class VfioPlatformDevice : VfioDevice
{
    sealed class Irq
    {
        public bool Level;
        public bool Masked;
        public EventFdContext? Trigger;
        public readonly object MaskOwner = new(), UnmaskOwner = new();
    }

    readonly IVfioPlatformDevice _dev;
    readonly Irq[] _irqs;

    internal VfioPlatformDevice(VfioGroup group, IVfioPlatformDevice dev) : base(group)
    {
        _dev = dev;
        _irqs = new Irq[dev.IrqIsLevel.Count];
        for (var i = 0; i < _irqs.Length; i++) _irqs[i] = new Irq { Level = dev.IrqIsLevel[i] };
    }

    public override string Name => _dev.Name;
    public bool IrqMasked(int index) => _irqs[index].Masked;

    protected override int Enable()
    {
        foreach (var irq in _irqs) irq.Masked = false;
        if (_dev.HasReset) _dev.Reset();
        return 0;
    }

    protected override void Disable()
    {
        for (var i = 0; i < _irqs.Length; i++) SetTrigger(i, null);
        ClearIrqfds();
        if (_dev.HasReset) _dev.Reset();
    }

    uint RegionFlags(int i)
    {
        var r = _dev.Regions[i];
        var f = VfioRegionFlags.Read | (r.ReadOnly ? 0 : VfioRegionFlags.Write);
        if ((r.HostAddress & 4095) == 0 && (r.Size & 4095) == 0) f |= VfioRegionFlags.Mmap;
        return f;
    }

    uint IrqFlags(int i) => VfioIrqInfoFlags.EventFd | VfioIrqInfoFlags.Maskable | (_irqs[i].Level ? VfioIrqInfoFlags.Automasked : 0);

    public override int Ioctl(uint request, Span<byte> arg)
    {
        PollIrqfds();
        if (request == VfioIoctl.DeviceGetInfo)
        {
            const int minsz = 16;
            if (!UserArg.TryRead(arg, minsz, out VfioDeviceInfo info)) return -Errno.EFAULT;
            if (info.Argsz < minsz) return -Errno.EINVAL;
            info.Flags = (_dev.IsAmba ? VfioDeviceFlags.Amba : VfioDeviceFlags.Platform) | (_dev.HasReset ? VfioDeviceFlags.Reset : 0);
            info.NumRegions = (uint)_dev.Regions.Count;
            info.NumIrqs = (uint)_irqs.Length;
            return UserArg.TryWrite(arg, minsz, info) ? 0 : -Errno.EFAULT;
        }
        if (request == VfioIoctl.DeviceGetRegionInfo)
        {
            const int minsz = 32;
            if (!UserArg.TryRead(arg, minsz, out VfioRegionInfo info)) return -Errno.EFAULT;
            if (info.Argsz < minsz || info.Index >= _dev.Regions.Count) return -Errno.EINVAL;
            info.Offset = VfioPciIndex.IndexToOffset(info.Index);
            info.Size = _dev.Regions[(int)info.Index].Size;
            info.Flags = RegionFlags((int)info.Index);
            return UserArg.TryWrite(arg, minsz, info) ? 0 : -Errno.EFAULT;
        }
        if (request == VfioIoctl.DeviceGetIrqInfo)
        {
            const int minsz = 16;
            if (!UserArg.TryRead(arg, minsz, out VfioIrqInfo info)) return -Errno.EFAULT;
            if (info.Argsz < minsz || info.Index >= _irqs.Length) return -Errno.EINVAL;
            info.Flags = IrqFlags((int)info.Index);
            info.Count = 1;
            return UserArg.TryWrite(arg, minsz, info) ? 0 : -Errno.EFAULT;
        }
        if (request == VfioIoctl.DeviceSetIrqs) return SetIrqs(arg);
        if (request == VfioIoctl.DeviceReset) return _dev.HasReset ? _dev.Reset() : -Errno.EINVAL;
        return -Errno.ENOTTY;
    }

    int SetIrqs(Span<byte> arg)
    {
        var r = ValidateSetIrqs(arg, i => i < _irqs.Length ? 1u : 0u, (uint)_irqs.Length, out var hdr, out var data);
        if (r != 0) return r;
        var index = (int)hdr.Index;
        var irq = _irqs[index];
        var flags = hdr.Flags;
        switch (flags & VfioIrqSetFlags.ActionTypeMask)
        {
            case VfioIrqSetFlags.ActionMask:
            case VfioIrqSetFlags.ActionUnmask:
                {
                    var mask = (flags & VfioIrqSetFlags.ActionMask) != 0;
                    if (hdr.Start != 0 || hdr.Count != 1) return -Errno.EINVAL;
                    Action act = mask ? () => Mask(index) : () => Unmask(index);
                    var owner = mask ? irq.MaskOwner : irq.UnmaskOwner;
                    if ((flags & VfioIrqSetFlags.DataEventFd) != 0)
                    {
                        var fd = Fd(data, 0);
                        if (fd >= 0)
                        {
                            var g = EventFdContext.TryGet(fd, out var ctx);
                            if (g != 0) return g;
                            SetIrqfd(owner, ctx, act);
                        }
                        else SetIrqfd(owner, null, act);
                        return 0;
                    }
                    if ((flags & VfioIrqSetFlags.DataNone) != 0 || data[0] != 0) act();
                    return 0;
                }
            case VfioIrqSetFlags.ActionTrigger:
                {
                    if (hdr.Count == 0 && (flags & VfioIrqSetFlags.DataNone) != 0) return SetTrigger(index, -1);
                    if (hdr.Start != 0 || hdr.Count != 1) return -Errno.EINVAL;
                    if ((flags & VfioIrqSetFlags.DataEventFd) != 0) return SetTrigger(index, Fd(data, 0));
                    if ((flags & VfioIrqSetFlags.DataNone) != 0 || data[0] != 0) Handler(index);
                    return 0;
                }
            default:
                return -Errno.ENOTTY;
        }
    }

    int SetTrigger(int index, int? fd)
    {
        var irq = _irqs[index];
        if (irq.Trigger is not null)
        {
            _dev.SetIrqEnabled(index, false);
            _dev.ConnectIrq(index, null);
            irq.Trigger.Dispose();
            irq.Trigger = null;
        }
        if (fd is null or < 0) return 0;
        var g = EventFdContext.TryGet(fd.Value, out var ctx);
        if (g != 0) return g;
        irq.Trigger = ctx;
        _dev.ConnectIrq(index, Handler);
        if (!irq.Masked) EnableLine(index);
        return 0;
    }

    void EnableLine(int index)
    {
        _dev.SetIrqEnabled(index, true);
        // A level-triggered line still asserted fires again as soon as it is enabled.
        if (_irqs[index].Level && _dev.IrqLineAsserted(index)) Handler(index);
    }

    /// <summary>The host IRQ handler VFIO registers (vfio_automasked_irq_handler for level IRQs, vfio_irq_handler for edge).</summary>
    void Handler(int index)
    {
        PollIrqfds();
        var irq = _irqs[index];
        if (irq.Level)
        {
            if (irq.Masked) return;
            _dev.SetIrqEnabled(index, false);
            irq.Masked = true;
        }
        irq.Trigger?.Signal();
    }

    void Mask(int index)
    {
        var irq = _irqs[index];
        if (irq.Masked) return;
        _dev.SetIrqEnabled(index, false);
        irq.Masked = true;
    }

    void Unmask(int index)
    {
        var irq = _irqs[index];
        if (!irq.Masked) return;
        irq.Masked = false;
        if (irq.Trigger is not null) EnableLine(index);
    }

    public override long Rw(Span<byte> buffer, ulong offset, bool write)
    {
        PollIrqfds();
        var index = VfioPciIndex.OffsetToIndex(offset);
        var pos = offset & VfioPciIndex.OffsetMask;
        if (index >= _dev.Regions.Count) return -Errno.EINVAL;
        var flags = RegionFlags((int)index);
        if ((flags & (write ? VfioRegionFlags.Write : VfioRegionFlags.Read)) == 0) return -Errno.EINVAL;
        var size = _dev.Regions[(int)index].Size;
        if (pos >= size) return -Errno.EINVAL;
        var count = (int)Math.Min((ulong)buffer.Length, size - pos);
        // The memory view splits the range into naturally aligned accesses, as vfio-platform's loop does.
        var status = write ? _dev.WriteRegion((int)index, pos, buffer[..count]) : _dev.ReadRegion((int)index, pos, buffer[..count]);
        return status == BusStatus.Ok ? count : -Errno.EIO;
    }

    public override long Mmap(UserAddressSpace mm, ulong length, ulong offset, UserProt prot, bool shared, ulong fixedVaddr = 0)
    {
        ArgumentNullException.ThrowIfNull(mm);
        var index = VfioPciIndex.OffsetToIndex(offset);
        if (index >= _dev.Regions.Count) return -Errno.EINVAL;
        var pos = offset & VfioPciIndex.OffsetMask;
        if (pos % 4096 != 0 || length % 4096 != 0 || length == 0) return -Errno.EINVAL;
        var flags = RegionFlags((int)index);
        if ((flags & VfioRegionFlags.Mmap) == 0) return -Errno.EINVAL;
        if ((prot & UserProt.Write) != 0 && (flags & VfioRegionFlags.Write) == 0) return -Errno.EINVAL;
        var r = _dev.Regions[(int)index];
        if (pos + length > r.Size) return -Errno.EINVAL;
        return (long)mm.MapPfn(length, r.HostAddress + pos, prot, null, fixedVaddr);
    }
}
