using Doorbell.Host.Os;
using Doorbell.Host.Vfio.Abi;

namespace Doorbell.Tests.EndToEnd;

/// <summary>
/// VFIO_DEVICE_SET_IRQS on MSI-X does what vfio-pci's vfio_msi_set_vector_signal does: a vector given an eventfd is
/// requested with a handler whose only work is signalling that eventfd, named "vfio-msix[N](BDF)"; a vector whose
/// eventfd is taken away (-1) is freed, so an interrupt on it is spurious at the CPU and signals nothing.
/// </summary>
public class VfioMsiActionTests
{
    [Fact]
    public void A_vector_is_requested_with_its_trigger_and_freed_when_the_trigger_is_taken_away()
    {
        using var rig = new E2ERig();
        var (_, g, r) = rig.OpenGroup(rig.Fn(0).Group.Id);
        Assert.Equal(0, r);
        var dev = rig.Device(g, "0000:00:01.0");
        rig.EnableMaster(dev);
        var efd = rig.EnableMsix(dev, 4);
        var intid = rig.Fn(0).Vectors!.Vectors[1].Intid;
        var device = rig.Mq[0];
        long Spurious() => rig.Kernel.Cpus.Sum(c => c.Unhandled);

        Assert.Equal("vfio-msix[1](0000:00:01.0)", rig.Kernel.Irqs.NameOf(intid));
        device.SignalMsix(1); // pushed: taken before this returns
        Assert.True(efd[1].TryRead(out var n));
        Assert.Equal(1UL, n);

        rig.TriggerOnEventFd(dev, VfioPciIndex.IrqMsix, -1, start: 1); // free_irq
        Assert.Null(rig.Kernel.Irqs.NameOf(intid));
        var spurious = Spurious();
        device.SignalMsix(1);
        Assert.Equal(spurious + 1, Spurious());
        Assert.False(efd[1].TryRead(out _));

        using var again = EventFd.Create();
        rig.TriggerOnEventFd(dev, VfioPciIndex.IrqMsix, again.Fd, start: 1); // request_irq with the new trigger
        Assert.Equal("vfio-msix[1](0000:00:01.0)", rig.Kernel.Irqs.NameOf(intid));
        device.SignalMsix(1);
        Assert.True(again.TryRead(out n));
        Assert.Equal(1UL, n);
        Assert.Equal(spurious + 1, Spurious());
        Assert.False(efd[1].TryRead(out _));
    }
}
