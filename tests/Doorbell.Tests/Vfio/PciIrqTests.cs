using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;

namespace Doorbell.Tests.Vfio;

public class PciIrqTests
{
    const uint None = VfioIrqSetFlags.DataNone, Bool = VfioIrqSetFlags.DataBool, Efd = VfioIrqSetFlags.DataEventFd;
    const uint Mask = VfioIrqSetFlags.ActionMask, Unmask = VfioIrqSetFlags.ActionUnmask, Trigger = VfioIrqSetFlags.ActionTrigger;
    const uint Intx = VfioPciIndex.IrqIntx, Msi = VfioPciIndex.IrqMsi, Msix = VfioPciIndex.IrqMsix, Err = VfioPciIndex.IrqErr, Req = VfioPciIndex.IrqReq;

    static VfioIrqInfo Info(PciTestDevice t, uint index, out int r)
    {
        var b = VfioWorld.Bytes(new VfioIrqInfo { Argsz = 16, Index = index });
        r = t.W.Proc.Ioctl(t.Fd, VfioIoctl.DeviceGetIrqInfo, b);
        return VfioWorld.Read<VfioIrqInfo>(b);
    }

    static ulong Drain(EventFd e) => e.TryRead(out var v) ? v : 0;

    [Fact]
    public void Irq_info_per_index()
    {
        var t = new PciTestDevice();
        var intx = Info(t, Intx, out var r);
        Assert.Equal((0, 1u), (r, intx.Count));
        Assert.Equal(VfioIrqInfoFlags.EventFd | VfioIrqInfoFlags.Maskable | VfioIrqInfoFlags.Automasked, intx.Flags);
        var msi = Info(t, Msi, out _);
        Assert.Equal((8u, VfioIrqInfoFlags.EventFd | VfioIrqInfoFlags.NoResize), (msi.Count, msi.Flags));
        Assert.Equal(4u, Info(t, Msix, out _).Count);
        Assert.Equal(1u, Info(t, Err, out _).Count);
        Assert.Equal(1u, Info(t, Req, out _).Count);
        Info(t, 5, out r);
        Assert.Equal(-Errno.EINVAL, r);
        var b = VfioWorld.Bytes(new VfioIrqInfo { Argsz = 15, Index = 0 });
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Ioctl(t.Fd, VfioIoctl.DeviceGetIrqInfo, b));

        var conventional = new PciTestDevice(pcie: false);
        Info(conventional, Err, out r);
        Assert.Equal(-Errno.EINVAL, r);
        Assert.Equal(-Errno.EINVAL, conventional.W.SetIrqs(conventional.Fd, None | Trigger, Err, 0, 1));
    }

    [Fact]
    public void Set_irqs_header_validation()
    {
        var t = new PciTestDevice();
        using var e = EventFd.Create();
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, None | Trigger, Msi, 0, 1, argsz: 19));
        Assert.Equal(-Errno.EFAULT, t.W.Proc.Ioctl(t.Fd, VfioIoctl.DeviceSetIrqs, new byte[12]));
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, None | Trigger, 5, 0, 1));
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, None | Trigger | 0x40, Msi, 0, 1));
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, None | Trigger, Msi, 8, 0));      // start beyond count
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, None | Trigger, Msi, 4, 5));      // start + count beyond
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, None | Trigger, Msi, 1, uint.MaxValue - 1));
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, None | Bool | Trigger, Msi, 0, 1, [1]));
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, Trigger, Msi, 0, 1));
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, Efd | Trigger, Msi, 0, 2, VfioWorld.Fds(e.Fd))); // payload short
        Assert.Equal(-Errno.ENOTTY, t.W.SetIrqs(t.Fd, None, Msi, 0, 1));                 // no action
        Assert.Equal(-Errno.ENOTTY, t.W.SetIrqs(t.Fd, None | Mask | Unmask, Intx, 0, 1)); // two actions
        var noMsi = new PciTestDevice(customize: f => f.Config[0x41] = 0x60); // PM -> SSVID: MSI not in the chain
        Assert.Equal(0u, Info(noMsi, Msi, out _).Count);
        Assert.Equal(-Errno.EINVAL, noMsi.W.SetIrqs(noMsi.Fd, Efd | Trigger, Msi, 0, 1, VfioWorld.Fds(e.Fd))); // 0 IRQs: start >= count
    }

    [Fact]
    public void Intx_is_automasked_signalled_and_unmasked()
    {
        var t = new PciTestDevice();
        using var e = EventFd.Create();
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, None | Unmask, Intx, 0, 1)); // INTx not enabled
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Intx, 0, 1, VfioWorld.Fds(e.Fd)));
        Assert.True(t.Dev.Pci23);
        t.F.AssertIntx();
        Assert.True(e.WaitReadable(0));
        Assert.Equal(1UL, Drain(e));
        Assert.True(t.Dev.IntxMasked);
        Assert.Equal(0x400u, t.F.R16(0x04) & 0x400); // DisINTx set by the handler
        t.F.AssertIntx();                            // masked: nothing
        Assert.Equal(0UL, Drain(e));
        // Unmask while the device still asserts: re-sent, stays masked.
        Assert.Equal(0, t.W.SetIrqs(t.Fd, None | Unmask, Intx, 0, 1));
        Assert.Equal(1UL, Drain(e));
        Assert.True(t.Dev.IntxMasked);
        // Device deasserted: unmask clears DisINTx.
        t.F.DeassertIntx();
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Bool | Unmask, Intx, 0, 1, [1]));
        Assert.False(t.Dev.IntxMasked);
        Assert.Equal(0u, t.F.R16(0x04) & 0x400);
        t.F.AssertIntx();
        Assert.Equal(1UL, Drain(e));
        // MASK with NONE/BOOL; MASK with EVENTFD is not implemented (ENOTTY).
        t.F.DeassertIntx();
        Assert.Equal(0, t.W.SetIrqs(t.Fd, None | Unmask, Intx, 0, 1));
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Bool | Mask, Intx, 0, 1, [1]));
        Assert.True(t.Dev.IntxMasked);
        Assert.Equal(-Errno.ENOTTY, t.W.SetIrqs(t.Fd, Efd | Mask, Intx, 0, 1, VfioWorld.Fds(e.Fd)));
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, None | Mask, Intx, 0, 0));
    }

    [Fact]
    public void Intx_loopback_unmask_irqfd_swap_and_disable()
    {
        var t = new PciTestDevice();
        using var e = EventFd.Create();
        using var e2 = EventFd.Create();
        using var unmask = EventFd.Create();
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, None | Trigger, Intx, 0, 1)); // loopback before enable
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Intx, 0, 1, VfioWorld.Fds(e.Fd)));
        Assert.Equal(0, t.W.SetIrqs(t.Fd, None | Trigger, Intx, 0, 1));
        Assert.Equal(1UL, Drain(e));
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Bool | Trigger, Intx, 0, 1, [0]));
        Assert.Equal(0UL, Drain(e));
        // Swap the trigger eventfd.
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Intx, 0, 1, VfioWorld.Fds(e2.Fd)));
        // Unmask irqfd: the user signals an eventfd instead of calling the ioctl.
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Unmask, Intx, 0, 1, VfioWorld.Fds(unmask.Fd)));
        t.F.AssertIntx();
        Assert.Equal(1UL, Drain(e2));
        Assert.Equal(0UL, Drain(e));
        t.F.DeassertIntx();
        unmask.Signal();
        t.Dev.PollIrqfds();
        Assert.False(t.Dev.IntxMasked);
        // A type switch needs INTx disabled first.
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, Efd | Trigger, Msi, 0, 1, VfioWorld.Fds(e.Fd)));
        Assert.Equal(0, t.W.SetIrqs(t.Fd, None | Trigger, Intx, 0, 0));
        t.F.AssertIntx();
        Assert.Equal(0UL, Drain(e2));
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Msi, 0, 1, VfioWorld.Fds(e.Fd)));
        // Bad descriptors.
        Assert.Equal(0, t.W.SetIrqs(t.Fd, None | Trigger, Msi, 0, 0));
        Assert.Equal(-Errno.EBADF, t.W.SetIrqs(t.Fd, Efd | Trigger, Intx, 0, 1, VfioWorld.Fds(999_999)));
    }

    [Fact]
    public void Virtual_intx_disable_masks_and_unmasks_the_line()
    {
        var t = new PciTestDevice();
        using var e = EventFd.Create();
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Intx, 0, 1, VfioWorld.Fds(e.Fd)));
        t.CfgW(0x04, 2, 0x400);
        Assert.True(t.Dev.IntxMasked);
        t.F.AssertIntx();
        Assert.Equal(0UL, Drain(e));
        t.F.DeassertIntx();
        t.CfgW(0x04, 2, 0x000);
        Assert.False(t.Dev.IntxMasked);
    }

    [Fact]
    public void Intx_without_pci23_masks_at_the_interrupt_controller()
    {
        var t = new PciTestDevice(new VfioOptions { NoIntxMask = true });
        using var e = EventFd.Create();
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Intx, 0, 1, VfioWorld.Fds(e.Fd)));
        Assert.False(t.Dev.Pci23);
        t.F.AssertIntx();
        Assert.Equal(1UL, Drain(e));
        Assert.True(t.F.LineMasked);
        Assert.Equal(0, t.W.SetIrqs(t.Fd, None | Unmask, Intx, 0, 1));
        Assert.False(t.F.LineMasked);
    }

    [Fact]
    public void Msix_vectors_signal_their_own_eventfds()
    {
        var t = new PciTestDevice();
        using var a = EventFd.Create();
        using var b = EventFd.Create();
        using var ep = new Epoll();
        ep.Add(a.Fd, 0);
        ep.Add(b.Fd, 2);
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Msix, 0, 3, VfioWorld.Fds(a.Fd, -1, b.Fd)));
        Assert.Equal(3, t.F.EnabledVectors);
        Assert.Equal($"vfio-msix[2]({t.Dev.Name})", t.F.VectorNames[2]); // vfio_msi_set_vector_signal's request_irq
        Assert.Null(t.F.VectorHandlers[1]);                                // no eventfd: nothing requested
        t.F.FireMsi(2);
        var tokens = new ulong[4];
        Assert.Equal(1, ep.Wait(tokens, 100));
        Assert.Equal(2UL, tokens[0]);
        Assert.Equal(1UL, Drain(b));
        t.F.FireMsi(1); // no eventfd on vector 1
        t.F.FireMsi(0);
        Assert.Equal(1UL, Drain(a));
        // Active index: set/clear individual vectors; loopback NONE/BOOL.
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Msix, 1, 1, VfioWorld.Fds(a.Fd)));
        t.F.FireMsi(1);
        Assert.Equal(1UL, Drain(a));
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, Efd | Trigger, Msix, 3, 1, VfioWorld.Fds(a.Fd))); // beyond enabled vectors
        Assert.Equal(0, t.W.SetIrqs(t.Fd, None | Trigger, Msix, 0, 3));
        Assert.Equal(2UL, Drain(a));
        Assert.Equal(1UL, Drain(b));
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Bool | Trigger, Msix, 0, 3, [0, 0, 1]));
        Assert.Equal(0UL, Drain(a));
        Assert.Equal(1UL, Drain(b));
        Assert.Equal(-Errno.ENOTTY, t.W.SetIrqs(t.Fd, None | Mask, Msix, 0, 1));
        Assert.Equal(-Errno.ENOTTY, t.W.SetIrqs(t.Fd, None | Unmask, Msi, 0, 1));
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, None | Trigger, Msi, 0, 1)); // MSI not active
        Assert.Equal(0, t.W.SetIrqs(t.Fd, None | Trigger, Msix, 0, 0));
        Assert.Equal(0, t.F.EnabledVectors);
        t.F.FireMsi(0);
        Assert.Equal(0UL, Drain(a));
    }

    [Fact]
    public void Msi_enable_returns_the_available_vector_count_when_short()
    {
        var t = new PciTestDevice(customize: f => f.MaxVectors = 2);
        using var e = EventFd.Create();
        Assert.Equal(2, t.W.SetIrqs(t.Fd, Efd | Trigger, Msi, 0, 4, VfioWorld.Fds(e.Fd, e.Fd, e.Fd, e.Fd)));
        Assert.Equal(0, t.F.EnabledVectors);
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Msi, 0, 2, VfioWorld.Fds(e.Fd, e.Fd)));
        t.F.FireMsi(1);
        Assert.Equal(1UL, Drain(e));
        // A bad descriptor in a block unwinds the whole enable.
        Assert.Equal(0, t.W.SetIrqs(t.Fd, None | Trigger, Msi, 0, 0));
        Assert.Equal(-Errno.EBADF, t.W.SetIrqs(t.Fd, Efd | Trigger, Msi, 0, 2, VfioWorld.Fds(e.Fd, 888_888)));
        Assert.Equal(0, t.F.EnabledVectors);
    }

    [Fact]
    public void Err_and_req_triggers()
    {
        var t = new PciTestDevice();
        using var e = EventFd.Create();
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, None | Trigger, Err, 0, 1)); // no trigger yet
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, Efd | Trigger, Err, 0, 0));
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, Bool | Trigger, Req, 0, 0));
        Assert.Equal(-Errno.ENOTTY, t.W.SetIrqs(t.Fd, None | Mask, Err, 0, 1));
        Assert.Equal(-Errno.ENOTTY, t.W.SetIrqs(t.Fd, None | Unmask, Req, 0, 1));
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Err, 0, 1, VfioWorld.Fds(e.Fd)));
        t.F.ErrSink!.OnError();
        Assert.Equal(1UL, Drain(e));
        Assert.Equal(0, t.W.SetIrqs(t.Fd, None | Trigger, Err, 0, 1));
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Bool | Trigger, Err, 0, 1, [1]));
        Assert.Equal(2UL, Drain(e));
        Assert.Equal(0, t.W.SetIrqs(t.Fd, None | Trigger, Err, 0, 0)); // clears
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, None | Trigger, Err, 0, 1));
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Req, 0, 1, VfioWorld.Fds(e.Fd)));
        Assert.True(t.Dev.Request());
        Assert.Equal(1UL, Drain(e));
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Req, 0, 1, VfioWorld.Fds(-1)));
        Assert.False(t.Dev.Request());
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Req, 0, 1, VfioWorld.Fds(-5))); // < -1: no-op
        using var f = File.OpenRead("/proc/self/stat");
        Assert.Equal(-Errno.EINVAL, t.W.SetIrqs(t.Fd, Efd | Trigger, Req, 0, 1, VfioWorld.Fds((int)f.SafeFileHandle.DangerousGetHandle())));
    }

    [Fact]
    public void Closing_the_device_disables_interrupts()
    {
        var t = new PciTestDevice();
        using var e = EventFd.Create();
        Assert.Equal(0, t.W.SetIrqs(t.Fd, Efd | Trigger, Msix, 0, 1, VfioWorld.Fds(e.Fd)));
        Assert.Equal(0, t.W.Proc.Close(t.Fd));
        Assert.Equal(0, t.F.EnabledVectors);
        Assert.Null(t.F.ErrSink);
    }
}
