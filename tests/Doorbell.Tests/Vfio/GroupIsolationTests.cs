using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;

namespace Doorbell.Tests.Vfio;

public class GroupIsolationTests
{
    static uint Status(VfioWorld w, int g)
    {
        var b = VfioWorld.Bytes(new VfioGroupStatus { Argsz = 8 });
        Assert.Equal(0, w.Proc.Ioctl(g, VfioIoctl.GroupGetStatus, b));
        return VfioWorld.Read<VfioGroupStatus>(b).Flags;
    }

    [Fact]
    public void Group_open_rules()
    {
        var w = new VfioWorld();
        w.AddGroup(3);
        Assert.Equal(-Errno.ENOENT, w.Proc.OpenGroup(4));
        var g = w.Proc.OpenGroup(3);
        Assert.True(g > 2);
        Assert.Equal(-Errno.EBUSY, w.Proc.OpenGroup(3));
        Assert.Equal(0, w.Proc.Close(g));
        Assert.True(w.Proc.OpenGroup(3) > 2);
        Assert.Equal(-Errno.EBADF, w.Proc.Close(99));
    }

    [Fact]
    public void Status_reports_viability_and_container()
    {
        var w = new VfioWorld();
        var (_, group) = w.AddGroup(3);
        var g = w.Proc.OpenGroup(3);
        Assert.Equal(VfioGroupFlags.Viable, Status(w, g));
        Assert.Equal(-Errno.EINVAL, w.Proc.Ioctl(g, VfioIoctl.GroupGetStatus, VfioWorld.Bytes(new VfioGroupStatus { Argsz = 7 })));
        Assert.Equal(-Errno.EFAULT, w.Proc.Ioctl(g, VfioIoctl.GroupGetStatus, new byte[4]));
        group.SetOtherDevice("0000:00:02.0", HostDriver.HostKernel);
        Assert.Equal(0u, Status(w, g));
        var c = w.Proc.OpenContainer();
        Assert.Equal(-Errno.EBUSY, w.SetContainer(g, c)); // a host driver owns DMA of a group member
        group.SetOtherDevice("0000:00:02.0", HostDriver.PciStub);
        Assert.Equal(0, w.SetContainer(g, c));
        Assert.Equal(VfioGroupFlags.Viable | VfioGroupFlags.ContainerSet, Status(w, g)); // container set, no IOMMU yet
        Assert.Equal(0, w.Proc.Ioctl(c, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu));
        Assert.Equal(VfioGroupFlags.Viable | VfioGroupFlags.ContainerSet, Status(w, g));
        Assert.Equal(0, w.Proc.Ioctl(g, VfioIoctl.GroupUnsetContainer, 0UL));
        Assert.Equal(VfioGroupFlags.Viable, Status(w, g));
    }

    [Fact]
    public void Set_and_unset_container_errors()
    {
        var w = new VfioWorld();
        var (_, group) = w.AddGroup(3);
        w.Host.BindPci(group, new FakePciFunction(), out _);
        var g = w.Proc.OpenGroup(3);
        var c = w.Proc.OpenContainer();
        Assert.Equal(-Errno.EINVAL, w.Proc.Ioctl(g, VfioIoctl.GroupUnsetContainer, 0UL));
        Assert.Equal(-Errno.EBADF, w.SetContainer(g, 77));
        Assert.Equal(-Errno.EFAULT, w.Proc.Ioctl(g, VfioIoctl.GroupSetContainer, new byte[2]));
        Assert.Equal(-77, w.SetContainer(g, g)); // EBADFD: not a container
        Assert.Equal(-Errno.EINVAL, w.GetDeviceFd(g, "0000:00:01.0")); // no IOMMU yet... and no container
        Assert.Equal(0, w.SetContainer(g, c));
        Assert.Equal(-Errno.EINVAL, w.SetContainer(g, c));
        Assert.Equal(-Errno.EINVAL, w.GetDeviceFd(g, "0000:00:01.0")); // container without IOMMU driver
        Assert.Equal(0, w.Proc.Ioctl(c, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu));
        Assert.Equal(-Errno.ENODEV, w.GetDeviceFd(g, "0000:00:09.0"));
        Assert.Equal(-Errno.EFAULT, w.Proc.Ioctl(g, VfioIoctl.GroupGetDeviceFd, "0000"u8.ToArray())); // unterminated
        var d = w.GetDeviceFd(g, "0000:00:01.0");
        Assert.True(d > 2);
        Assert.Equal(-Errno.EBUSY, w.Proc.Ioctl(g, VfioIoctl.GroupUnsetContainer, 0UL));
        Assert.Equal(0, w.Proc.Close(d));
        Assert.Equal(0, w.Proc.Ioctl(g, VfioIoctl.GroupUnsetContainer, 0UL));
        Assert.Equal(-Errno.ENOTTY, w.Proc.Ioctl(g, VfioIoctl.Io(40), new byte[4]));
    }

    [Fact]
    public void Closing_the_group_while_a_device_is_open_keeps_the_container_until_the_device_closes()
    {
        var w = new VfioWorld();
        var (iommu, group) = w.AddGroup(3);
        w.Host.BindPci(group, new FakePciFunction(), out _);
        var (c, g, _) = w.Setup(3);
        var d = w.GetDeviceFd(g, "0000:00:01.0");
        Assert.Equal(0, w.Proc.Close(g));
        Assert.NotNull(iommu.Attached);
        Assert.Equal(0, w.Proc.Close(d));
        Assert.Null(iommu.Attached);
        Assert.Null(((VfioContainer)w.Proc.File(c)!).Iommu);
    }

    // ------------------------------------------------------------------ isolation policy
    [Fact]
    public void Attaching_a_group_without_isolated_msi_is_EPERM()
    {
        var w = new VfioWorld();
        var (iommu, _) = w.AddGroup(5, isolated: false); // e.g. a GICv2m MSI domain
        var c = w.Proc.OpenContainer();
        var g = w.Proc.OpenGroup(5);
        Assert.Equal(0, w.SetContainer(g, c));
        Assert.Equal(-Errno.EPERM, w.Proc.Ioctl(c, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu));
        Assert.Null(iommu.Attached);
        Assert.Null(((VfioContainer)w.Proc.File(c)!).Iommu);
    }

    [Fact]
    public void Allow_unsafe_interrupts_lets_the_same_group_attach()
    {
        var w = new VfioWorld(new VfioOptions { AllowUnsafeInterrupts = true });
        var (iommu, _) = w.AddGroup(5, isolated: false);
        var (_, _, r) = w.Setup(5);
        Assert.Equal(0, r);
        Assert.NotNull(iommu.Attached);
    }

    [Fact]
    public void Isolation_is_checked_per_group_when_joining_a_container_with_an_iommu()
    {
        var w = new VfioWorld();
        w.AddGroup(1);
        var (bad, _) = w.AddGroup(2, isolated: false);
        var (c, _, r) = w.Setup(1);
        Assert.Equal(0, r);
        var g2 = w.Proc.OpenGroup(2);
        Assert.Equal(-Errno.EPERM, w.SetContainer(g2, c));
        Assert.Null(bad.Attached);
        Assert.Single(((VfioContainer)w.Proc.File(c)!).Groups);
    }

    [Fact]
    public void Set_iommu_failing_on_the_second_group_detaches_the_first()
    {
        var w = new VfioWorld();
        var (good, _) = w.AddGroup(1);
        w.AddGroup(2, isolated: false);
        var c = w.Proc.OpenContainer();
        Assert.Equal(0, w.SetContainer(w.Proc.OpenGroup(1), c));
        Assert.Equal(0, w.SetContainer(w.Proc.OpenGroup(2), c));
        Assert.Equal(-Errno.EPERM, w.Proc.Ioctl(c, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu));
        Assert.Null(good.Attached);
    }

    [Fact]
    public void Pci_functions_with_a_bridge_header_are_refused()
    {
        var w = new VfioWorld();
        var (_, group) = w.AddGroup(1);
        var f = new FakePciFunction();
        f.Config[0x0E] = 0x01;
        Assert.Equal(-Errno.EINVAL, w.Host.BindPci(group, f, out _));
        f.Config[0x0E] = 0x80; // multi-function type 0 is fine
        Assert.Equal(0, w.Host.BindPci(group, f, out _));
    }
}
