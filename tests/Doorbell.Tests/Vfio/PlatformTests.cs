using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;

namespace Doorbell.Tests.Vfio;

public class PlatformTests
{
    const uint None = VfioIrqSetFlags.DataNone, Bool = VfioIrqSetFlags.DataBool, Efd = VfioIrqSetFlags.DataEventFd;
    const uint Mask = VfioIrqSetFlags.ActionMask, Unmask = VfioIrqSetFlags.ActionUnmask, Trigger = VfioIrqSetFlags.ActionTrigger;

    static (VfioWorld W, FakePlatformDevice P, VfioPlatformDevice Dev, int Fd) Open(FakePlatformDevice? p = null)
    {
        var w = new VfioWorld();
        p ??= new FakePlatformDevice();
        var (_, group) = w.AddGroup(9);
        Assert.Equal(0, w.Host.BindPlatform(group, p, out var dev));
        var (_, g, r) = w.Setup(9);
        Assert.Equal(0, r);
        var fd = w.GetDeviceFd(g, p.Name);
        Assert.True(fd > 2);
        return (w, p, dev!, fd);
    }

    static ulong Drain(EventFd e) => e.TryRead(out var v) ? v : 0;

    [Fact]
    public void Info_regions_and_irqs()
    {
        var (w, p, _, fd) = Open();
        Assert.Equal(1, p.Resets); // reset at open
        var b = VfioWorld.Bytes(new VfioDeviceInfo { Argsz = 16 });
        Assert.Equal(0, w.Proc.Ioctl(fd, VfioIoctl.DeviceGetInfo, b));
        var info = VfioWorld.Read<VfioDeviceInfo>(b);
        Assert.Equal((VfioDeviceFlags.Platform | VfioDeviceFlags.Reset, 2u, 2u), (info.Flags, info.NumRegions, info.NumIrqs));
        var rb = VfioWorld.Bytes(new VfioRegionInfo { Argsz = 32, Index = 1 });
        Assert.Equal(0, w.Proc.Ioctl(fd, VfioIoctl.DeviceGetRegionInfo, rb));
        var ri = VfioWorld.Read<VfioRegionInfo>(rb);
        Assert.Equal((0x100UL, 1UL << 40, VfioRegionFlags.Read), (ri.Size, ri.Offset, ri.Flags)); // RO, sub-page: no mmap
        rb = VfioWorld.Bytes(new VfioRegionInfo { Argsz = 32, Index = 0 });
        Assert.Equal(0, w.Proc.Ioctl(fd, VfioIoctl.DeviceGetRegionInfo, rb));
        Assert.Equal(VfioRegionFlags.Read | VfioRegionFlags.Write | VfioRegionFlags.Mmap, VfioWorld.Read<VfioRegionInfo>(rb).Flags);
        Assert.Equal(-Errno.EINVAL, w.Proc.Ioctl(fd, VfioIoctl.DeviceGetRegionInfo, VfioWorld.Bytes(new VfioRegionInfo { Argsz = 32, Index = 2 })));
        var ib = VfioWorld.Bytes(new VfioIrqInfo { Argsz = 16, Index = 0 });
        Assert.Equal(0, w.Proc.Ioctl(fd, VfioIoctl.DeviceGetIrqInfo, ib));
        Assert.Equal(VfioIrqInfoFlags.EventFd | VfioIrqInfoFlags.Maskable | VfioIrqInfoFlags.Automasked, VfioWorld.Read<VfioIrqInfo>(ib).Flags);
        ib = VfioWorld.Bytes(new VfioIrqInfo { Argsz = 16, Index = 1 });
        Assert.Equal(0, w.Proc.Ioctl(fd, VfioIoctl.DeviceGetIrqInfo, ib));
        Assert.Equal(VfioIrqInfoFlags.EventFd | VfioIrqInfoFlags.Maskable, VfioWorld.Read<VfioIrqInfo>(ib).Flags);
        Assert.Equal(-Errno.EINVAL, w.Proc.Ioctl(fd, VfioIoctl.DeviceGetIrqInfo, VfioWorld.Bytes(new VfioIrqInfo { Argsz = 16, Index = 2 })));
        Assert.Equal(0, w.Proc.Ioctl(fd, VfioIoctl.DeviceReset, 0UL));
        Assert.Equal(2, p.Resets);
    }

    [Fact]
    public void Mmio_read_write_and_mmap()
    {
        var (w, p, _, fd) = Open();
        var buf = BitConverter.GetBytes(0xA5A5_0001u);
        Assert.Equal(4, w.Proc.Pwrite(fd, buf, 0x10));
        Assert.Equal(0xA5A5_0001UL, p.Regs[(0, 0x10)]);
        Assert.Equal(4, w.Proc.Pread(fd, buf, 0x10));
        Assert.Equal(-Errno.EINVAL, w.Proc.Pwrite(fd, buf, (1UL << 40) + 0)); // read-only region
        Assert.Equal(4, w.Proc.Pread(fd, buf, 1UL << 40));
        Assert.Equal(-Errno.EINVAL, w.Proc.Pread(fd, buf, 0x1000));
        Assert.Equal(-Errno.EINVAL, w.Proc.Pread(fd, buf, 2UL << 40));
        Assert.True(w.Proc.Mmap(fd, 0x1000, 0) > 0);
        Assert.Equal(-Errno.EINVAL, w.Proc.Mmap(fd, 0x1000, 1UL << 40, UserProt.Read));
        Assert.Equal(-Errno.EINVAL, w.Proc.Mmap(fd, 0x2000, 0));
    }

    [Fact]
    public void Level_irq_is_automasked_until_unmasked_and_refires_while_asserted()
    {
        var (w, p, dev, fd) = Open();
        using var e = EventFd.Create();
        Assert.Equal(0, w.SetIrqs(fd, Efd | Trigger, 0, 0, 1, VfioWorld.Fds(e.Fd)));
        p.Raise(0);
        Assert.Equal(1UL, Drain(e));
        Assert.True(dev.IrqMasked(0));
        Assert.False(p.Enabled[0]);
        p.Raise(0); // disabled at the irqchip: nothing
        Assert.Equal(0UL, Drain(e));
        Assert.Equal(0, w.SetIrqs(fd, None | Unmask, 0, 0, 1)); // still asserted: fires again, masked again
        Assert.Equal(1UL, Drain(e));
        Assert.True(dev.IrqMasked(0));
        p.Lower(0);
        Assert.Equal(0, w.SetIrqs(fd, Bool | Unmask, 0, 0, 1, [1]));
        Assert.False(dev.IrqMasked(0));
        Assert.True(p.Enabled[0]);
        Assert.Equal(0UL, Drain(e));
        // Mask and the unmask irqfd.
        using var um = EventFd.Create();
        Assert.Equal(0, w.SetIrqs(fd, Efd | Unmask, 0, 0, 1, VfioWorld.Fds(um.Fd)));
        Assert.Equal(0, w.SetIrqs(fd, None | Mask, 0, 0, 1));
        Assert.True(dev.IrqMasked(0));
        um.Signal();
        dev.PollIrqfds();
        Assert.False(dev.IrqMasked(0));
        // Loopback triggers the handler (and automasks); count 0 disables.
        Assert.Equal(0, w.SetIrqs(fd, None | Trigger, 0, 0, 1));
        Assert.Equal(1UL, Drain(e));
        Assert.True(dev.IrqMasked(0));
        Assert.Equal(0, w.SetIrqs(fd, None | Trigger, 0, 0, 0));
        Assert.Null(p.Handlers[0]);
        Assert.Equal(-Errno.EINVAL, w.SetIrqs(fd, None | Trigger, 2, 0, 1));
        Assert.Equal(-Errno.ENOTTY, w.SetIrqs(fd, None, 0, 0, 1));
        Assert.Equal(-Errno.EBADF, w.SetIrqs(fd, Efd | Trigger, 0, 0, 1, VfioWorld.Fds(777_777)));
    }

    [Fact]
    public void Edge_irq_is_not_automasked()
    {
        var (w, p, dev, fd) = Open();
        using var e = EventFd.Create();
        Assert.Equal(0, w.SetIrqs(fd, Efd | Trigger, 1, 0, 1, VfioWorld.Fds(e.Fd)));
        p.Raise(1);
        p.Raise(1);
        Assert.Equal(2UL, Drain(e));
        Assert.False(dev.IrqMasked(1));
    }

    [Fact]
    public void Devices_without_reset_are_refused_unless_reset_is_optional()
    {
        var w = new VfioWorld();
        var (_, group) = w.AddGroup(9);
        Assert.Equal(-Errno.EINVAL, w.Host.BindPlatform(group, new FakePlatformDevice { HasReset = false }, out _));
        var w2 = new VfioWorld(new VfioOptions { PlatformResetRequired = false });
        var (_, g2) = w2.AddGroup(9);
        Assert.Equal(0, w2.Host.BindPlatform(g2, new FakePlatformDevice { HasReset = false, IsAmba = true }, out _));
        var (_, gfd, _) = w2.Setup(9);
        var fd = w2.GetDeviceFd(gfd, "9000000.ethernet");
        Assert.Equal(-Errno.EINVAL, w2.Proc.Ioctl(fd, VfioIoctl.DeviceReset, 0UL));
        var b = VfioWorld.Bytes(new VfioDeviceInfo { Argsz = 16 });
        Assert.Equal(0, w2.Proc.Ioctl(fd, VfioIoctl.DeviceGetInfo, b));
        Assert.Equal(VfioDeviceFlags.Amba, VfioWorld.Read<VfioDeviceInfo>(b).Flags);
    }
}
