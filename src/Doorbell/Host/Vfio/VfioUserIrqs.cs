using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio.Abi;

namespace Doorbell.Host.Vfio;

/// <summary>What a userspace driver does to get its interrupts as eventfds (include/uapi/linux/vfio.h, struct vfio_irq_set).</summary>
public static class VfioUserIrqs
{
    /// <summary>
    /// VFIO_DEVICE_SET_IRQS(DATA_EVENTFD | ACTION_TRIGGER) for vectors 0..<paramref name="count"/>−1 of IRQ index
    /// <paramref name="index"/>, one new eventfd each: the eventfds, or null with the ioctl's result in <paramref name="rc"/>
    /// (the eventfds then closed again).
    /// </summary>
    public static EventFd[]? Trigger(VfioProcess process, int device, uint index, int count, out int rc)
    {
        ArgumentNullException.ThrowIfNull(process);
        var set = new byte[20 + 4 * count];
        MemoryMarshal.Write(set, new VfioIrqSet { Argsz = (uint)set.Length, Flags = VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, Index = index, Count = (uint)count });
        var efds = new EventFd[count];
        for (var i = 0; i < count; i++)
        {
            efds[i] = EventFd.Create();
            BinaryPrimitives.WriteInt32LittleEndian(set.AsSpan(20 + 4 * i), efds[i].Fd);
        }
        rc = process.Ioctl(device, VfioIoctl.DeviceSetIrqs, set);
        if (rc == 0) return efds;
        foreach (var e in efds) e.Dispose();
        return null;
    }
}
