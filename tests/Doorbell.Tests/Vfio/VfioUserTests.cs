using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Pci;

namespace Doorbell.Tests.Vfio;

/// <summary>The userspace helpers drive a device end to end the way a C VFIO program does.</summary>
public class VfioUserTests
{
    [Fact]
    public void A_userspace_driver_flow_through_the_helpers()
    {
        var w = new VfioWorld();
        var f = new FakePciFunction();
        f.SetBar(0, 0x4000, PciBarKind.Mem32, 0x1000_0000);
        f.Function.AddMsix(tableSize: 8, tableBar: 0, tableOffset: 0x2000, pbaBar: 0, pbaOffset: 0x3000);
        var (iommu, group) = w.AddGroup(4);
        Assert.Equal(0, w.Host.BindPci(group, f, out _));

        Assert.Equal(0, VfioUser.OpenGroupInNewContainer(w.Proc, 4, VfioExtension.Type1v2Iommu, out var c, out var g));
        Assert.Equal(0, VfioUser.GetIommuInfo(w.Proc, c, out var pgsizes, out var ranges, out var avail));
        Assert.Equal(0x1000UL, pgsizes & 0xFFF_FFFF & ~(pgsizes - 1));
        Assert.Equal(2, ranges.Count);
        Assert.Equal(65535u, avail);

        var buf = w.Proc.Memory.MapAnonymous(0x2000);
        Assert.Equal(0, VfioUser.MapDma(w.Proc, c, buf, 0x2_0000_0000, 0x2000));
        Assert.Equal(2, ((FakeDomain)iommu.Attached!).Pages.Count);

        var dev = VfioUser.GetDeviceFd(w.Proc, g, "0000:00:01.0");
        Assert.True(dev > 2);
        Assert.Equal(0, VfioUser.GetRegion(w.Proc, dev, 0, out var bar0));
        Assert.True(bar0!.MsixMappable);
        Assert.Equal(0x4000UL, bar0.Size);
        Assert.Equal(0x11e8_1234u, VfioUser.ReadConfig(w.Proc, dev, 0, 4));
        Assert.Equal(2, VfioUser.WriteConfig(w.Proc, dev, 4, 2, 0x0006));

        using var e0 = EventFd.Create();
        using var e1 = EventFd.Create();
        Assert.Equal(0, VfioUser.SetIrqEventFds(w.Proc, dev, VfioPciIndex.IrqMsix, 0, [e0.Fd, e1.Fd]));
        f.FireMsi(1);
        Assert.True(e1.WaitReadable(100));
        Assert.False(e0.WaitReadable(0));
        Assert.Equal(0, VfioUser.SetIrqsNone(w.Proc, dev, VfioPciIndex.IrqMsix, VfioIrqSetFlags.ActionTrigger, 0, 0));
        Assert.Equal(0x2000L, VfioUser.UnmapDma(w.Proc, c, 0x2_0000_0000, 0x2000));
        Assert.Equal(-Errno.EINVAL, VfioUser.UnmapDma(w.Proc, c, 0x2_0000_0800, 0x1000));
    }
}
