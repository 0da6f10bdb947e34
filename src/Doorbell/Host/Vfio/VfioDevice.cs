using Doorbell.Host.Os;
using Doorbell.Host.Vfio.Abi;

// Common part of VFIO bus drivers (vfio-pci, vfio-platform): open counting, the SET_IRQS header validation of
// vfio_main.c (vfio_set_irqs_validate_and_prepare), and user irqfds (virqfd).
// User irqfds (ACTION_UNMASK with DATA_EVENTFD, ioeventfds) wait on their eventfd's in-kernel wait queue, so a signal
// from Doorbell's kernel side (a KVM resamplefd, an EventFd Doorbell owns) runs the action synchronously, as virqfd's
// wakeup does (Linux defers it to a workqueue; the result is the same). A write(2) by code outside Doorbell lands in the
// counter and is serviced when VFIO runs — at every device file operation, at interrupt delivery and on PollIrqfds.
namespace Doorbell.Host.Vfio;

public abstract class VfioDevice
{
    int _openCount;
    readonly List<(EventFdContext Fd, Action Action, object Owner, Virqfd Waiter)> _irqfds = [];

    /// <summary>virqfd_wakeup: the action of a user irqfd, run by its eventfd's signaller.</summary>
    sealed class Virqfd(Action action) : IEventFdWaiter
    {
        public void Wake() => action();
    }

    protected VfioDevice(VfioGroup group) => Group = group;

    public VfioGroup Group { get; }
    public abstract string Name { get; }
    public bool IsOpen => _openCount > 0;

    internal int Open()
    {
        if (_openCount == 0)
        {
            var r = Enable();
            if (r < 0) return r;
        }
        _openCount++;
        return 0;
    }

    internal void Close()
    {
        if (_openCount == 0) return;
        if (--_openCount == 0) Disable();
    }

    protected abstract int Enable();
    protected abstract void Disable();

    /// <summary>The device file's ioctl: 0 (or a positive count where Linux returns one) or -errno.</summary>
    public abstract int Ioctl(uint request, Span<byte> arg);

    /// <summary>pread/pwrite at a region offset (index &lt;&lt; 40 | offset): bytes transferred or -errno.</summary>
    public abstract long Rw(Span<byte> buffer, ulong offset, bool write);

    /// <summary>mmap of a region into <paramref name="mm"/>: the vaddr or -errno.</summary>
    public abstract long Mmap(UserAddressSpace mm, ulong length, ulong offset, UserProt prot, bool shared, ulong fixedVaddr = 0);

    /// <summary>Runs the action of every user irqfd whose eventfd was signalled.</summary>
    public void PollIrqfds()
    {
        for (var i = 0; i < _irqfds.Count; i++)
            if (_irqfds[i].Fd.TryConsume()) _irqfds[i].Action();
    }

    protected void SetIrqfd(object owner, EventFdContext? fd, Action action)
    {
        for (var i = _irqfds.Count - 1; i >= 0; i--)
            if (ReferenceEquals(_irqfds[i].Owner, owner))
            {
                _irqfds[i].Fd.File?.RemoveWaiter(_irqfds[i].Waiter);
                _irqfds[i].Fd.Dispose();
                _irqfds.RemoveAt(i);
            }
        if (fd is null) return;
        var w = new Virqfd(action);
        _irqfds.Add((fd, action, owner, w));
        fd.File?.AddWaiter(w);
    }

    protected void ClearIrqfds()
    {
        foreach (var f in _irqfds)
        {
            f.Fd.File?.RemoveWaiter(f.Waiter);
            f.Fd.Dispose();
        }
        _irqfds.Clear();
    }

    /// <summary>vfio_set_irqs_validate_and_prepare: reads the header and checks it against the index's IRQ count.
    /// Returns 0 and the payload (count bytes for BOOL, count*4 for EVENTFD), or -errno.</summary>
    protected static int ValidateSetIrqs(ReadOnlySpan<byte> arg, Func<uint, uint> irqCount, uint numIrqs, out VfioIrqSet hdr, out ReadOnlySpan<byte> data)
    {
        const int minsz = 20;
        data = default;
        if (!UserArg.TryRead(arg, minsz, out hdr)) return -Errno.EFAULT;
        if (hdr.Argsz < minsz || hdr.Index >= numIrqs || hdr.Count >= uint.MaxValue - hdr.Start ||
            (hdr.Flags & ~(VfioIrqSetFlags.DataTypeMask | VfioIrqSetFlags.ActionTypeMask)) != 0)
            return -Errno.EINVAL;
        var max = irqCount(hdr.Index);
        if (hdr.Start >= max || hdr.Start + hdr.Count > max) return -Errno.EINVAL;
        int size;
        switch (hdr.Flags & VfioIrqSetFlags.DataTypeMask)
        {
            case VfioIrqSetFlags.DataNone: size = 0; break;
            case VfioIrqSetFlags.DataBool: size = 1; break;
            case VfioIrqSetFlags.DataEventFd: size = 4; break;
            default: return -Errno.EINVAL;
        }
        if (size > 0)
        {
            var need = (ulong)hdr.Count * (ulong)size;
            if (hdr.Argsz - minsz < need) return -Errno.EINVAL;
            if ((ulong)arg.Length < minsz + need) return -Errno.EFAULT;
            data = arg.Slice(minsz, (int)need);
        }
        return 0;
    }

    protected static int Fd(ReadOnlySpan<byte> data, int i) => System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(data[(i * 4)..]);
}
