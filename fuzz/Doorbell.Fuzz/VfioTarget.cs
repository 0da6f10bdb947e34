using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Doorbell.Devices;
using Doorbell.Host.Kernel;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Platform;

namespace Doorbell.Fuzz;

/// <summary>
/// VFIO ioctls, reads, writes, closes and device DMA on a booted host kernel (qemu-virt, SMMUv3 + ITS, two multi-queue
/// DMA devices), starting from a valid container/group/device so that mutations reach success paths. Oracles: every
/// call returns a value (a Linux errno on error), and after every fd is closed nothing stays pinned or locked and a
/// DMA by the device to an IOVA that is not mapped faults.
/// </summary>
public sealed class VfioTarget : FuzzTarget
{
    public override string Name => "vfio";
    public override string Description => "VFIO container/group/device ioctls, region access and device DMA after a valid set-up";

    const ulong Buffer = 64UL << 12; // pages in the client buffer

    sealed class Session : IDisposable
    {
        public readonly HostKernel Kernel;
        public readonly VfioProcess Proc;
        public readonly List<EventFd> EventFds = [];
        public readonly List<int> Fds = [];
        public readonly ulong Va;
        public readonly int GroupId;
        public int Container = -1, Group = -1, Device = -1;

        public Session()
        {
            var (machine, models) = HostKernel.CreateBoard(new QemuVirtOptions { GicVersion = 3, Its = true });
            machine.AddPci(new MultiQueueDmaDevice(2));
            machine.AddPci(new MultiQueueDmaDevice(2));
            Kernel = HostKernel.Boot(machine, models);
            Proc = Kernel.CreateProcess(Kernel.BuildVfio(), memlockBytes: 32UL << 12);
            Va = Proc.Memory.MapAnonymous(Buffer);
            GroupId = Kernel.FindFunction("0000:00:01.0")!.Group.Id;
        }

        public void Dispose()
        {
            foreach (var e in EventFds) e.Dispose();
        }
    }

    public override void Run(ReadOnlySpan<byte> input)
    {
        using var s = new Session();
        var r = new ChoiceReader(input);
        // A valid set-up first (each step may be skipped by the input so that its failure paths are reached too).
        if (!r.Bit())
        {
            s.Container = Track(s, s.Proc.OpenContainer());
            s.Group = Track(s, s.Proc.OpenGroup(s.GroupId));
            Check(s.Proc.Ioctl(s.Group, VfioIoctl.GroupSetContainer, Fd(s.Container)), "SET_CONTAINER");
            Check(s.Proc.Ioctl(s.Container, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu), "SET_IOMMU");
            s.Device = Track(s, s.Proc.Ioctl(s.Group, VfioIoctl.GroupGetDeviceFd, Encoding.ASCII.GetBytes("0000:00:01.0\0")));
        }
        var ops = 0;
        while (!r.Done && ops++ < 512) Step(s, ref r);
        Close(s);
    }

    public override long Units(ReadOnlySpan<byte> input) => Math.Min(512, 1 + input.Length / 4); // about 4 bytes a call

    static byte[] Fd(int fd)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(b, fd);
        return b;
    }

    static int Track(Session s, int fd)
    {
        if (fd >= 0) s.Fds.Add(fd);
        return fd;
    }

    static void Check(int rc, string what)
    {
        if (rc > 0 || rc < -133) throw new FuzzFinding($"{what} returned {rc}: not 0 or a Linux errno");
    }

    static void Errno(long rc, string what)
    {
        if (rc < -133) throw new FuzzFinding($"{what} returned {rc}: not a Linux errno");
    }

    static int AnyFd(Session s, ref ChoiceReader r) => r.Byte() switch
    {
        < 64 => s.Container,
        < 128 => s.Group,
        < 224 => s.Device,
        var b => b - 230,
    };

    static void Step(Session s, ref ChoiceReader r)
    {
        var p = s.Proc;
        switch (r.Byte() % 12)
        {
            case 0: // MAP_DMA of (part of) the buffer
            {
                var vaddr = s.Va + r.Page(80) + (r.Byte() < 16 ? r.Byte() : 0UL);
                var map = new VfioIommuType1DmaMap
                {
                    Argsz = r.Byte() < 240 ? 32u : r.Byte(), Flags = r.Byte() < 200 ? VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite : r.Byte(),
                    Vaddr = vaddr, Iova = r.Byte() < 230 ? r.Page(256) : r.U64(), Size = r.Byte() < 230 ? r.Page(16) + 0x1000 : r.U64(),
                };
                Errno(p.Ioctl(AnyFd(s, ref r), VfioIoctl.IommuMapDma, Bytes(map)), "MAP_DMA");
                break;
            }
            case 1: // UNMAP_DMA
            {
                var unmap = new VfioIommuType1DmaUnmap
                {
                    Argsz = 24, Flags = r.Byte() < 220 ? 0 : (r.Bit() ? VfioDmaFlags.UnmapAll : r.Byte()),
                    Iova = r.Byte() < 230 ? r.Page(256) : r.U64(), Size = r.Byte() < 230 ? r.Page(32) + 0x1000 : r.U64(),
                };
                if (unmap.Flags == VfioDmaFlags.UnmapAll) { unmap.Iova = 0; unmap.Size = 0; }
                Errno(p.Ioctl(AnyFd(s, ref r), VfioIoctl.IommuUnmapDma, Bytes(unmap)), "UNMAP_DMA");
                break;
            }
            case 2: // region read
            {
                var buf = new byte[1 << (r.Byte() % 4)];
                Errno(p.Pread(AnyFd(s, ref r), buf, ((ulong)(r.Byte() % 10) << VfioPciIndex.OffsetShift) + r.U16()), "pread");
                break;
            }
            case 3: // region write: config space, BAR registers (queue set-up, doorbells), MSI-X table
            {
                var buf = new byte[1 << (r.Byte() % 4)];
                for (var i = 0; i < buf.Length; i++) buf[i] = r.Byte();
                var index = r.Byte() % 4 == 0 ? VfioPciIndex.Config : (ulong)(r.Byte() % 10);
                Errno(p.Pwrite(AnyFd(s, ref r), buf, (index << VfioPciIndex.OffsetShift) + (r.Bit() ? r.U16() : r.Byte())), "pwrite");
                break;
            }
            case 4: // SET_IRQS with eventfds, bools or none
            {
                var count = (uint)(r.Byte() % 5);
                var flags = (r.Byte() % 3) switch { 0 => VfioIrqSetFlags.DataEventFd, 1 => VfioIrqSetFlags.DataNone, _ => VfioIrqSetFlags.DataBool };
                flags |= (r.Byte() % 3) switch { 0 => VfioIrqSetFlags.ActionTrigger, 1 => VfioIrqSetFlags.ActionMask, _ => VfioIrqSetFlags.ActionUnmask };
                if (r.Byte() > 250) flags = r.U32();
                var payload = (flags & VfioIrqSetFlags.DataEventFd) != 0;
                var set = new byte[20 + (payload ? 4 * count : count)];
                MemoryMarshal.Write(set, new VfioIrqSet { Argsz = (uint)set.Length, Flags = flags, Index = (uint)(r.Byte() % 6), Start = (uint)(r.Byte() % 4), Count = count });
                for (var i = 0; i < count && payload; i++)
                {
                    var fd = -1;
                    if (r.Byte() < 200) { var e = EventFd.Create(); s.EventFds.Add(e); fd = e.Fd; }
                    BinaryPrimitives.WriteInt32LittleEndian(set.AsSpan(20 + 4 * i), fd);
                }
                Errno(p.Ioctl(AnyFd(s, ref r), VfioIoctl.DeviceSetIrqs, set), "SET_IRQS");
                break;
            }
            case 5: Errno(p.Ioctl(AnyFd(s, ref r), VfioIoctl.DeviceReset, 0UL), "RESET"); break;
            case 6: // info queries with odd argsz
            {
                var req = (r.Byte() % 4) switch { 0 => VfioIoctl.DeviceGetRegionInfo, 1 => VfioIoctl.DeviceGetIrqInfo, 2 => VfioIoctl.DeviceGetInfo, _ => VfioIoctl.IommuGetInfo };
                var buf = new byte[r.Byte() % 96];
                if (buf.Length >= 12) { BinaryPrimitives.WriteUInt32LittleEndian(buf, r.Bit() ? (uint)buf.Length : r.U32()); buf[8] = (byte)(r.Byte() % 12); }
                Errno(p.Ioctl(AnyFd(s, ref r), req, buf), "GET_INFO");
                break;
            }
            case 7: // close something, in any order
            {
                if (s.Fds.Count == 0) break;
                var fd = s.Fds[r.Byte() % s.Fds.Count];
                Check(p.Close(fd), "close");
                s.Fds.Remove(fd);
                break;
            }
            case 8: // open again
                switch (r.Byte() % 3)
                {
                    case 0: s.Container = Track(s, p.OpenContainer()); break;
                    case 1: s.Group = Track(s, p.OpenGroup(r.Bit() ? s.GroupId : r.Byte() % 8)); break;
                    default: s.Device = Track(s, p.Ioctl(s.Group, VfioIoctl.GroupGetDeviceFd, Encoding.ASCII.GetBytes(r.Bit() ? "0000:00:01.0\0" : "0000:00:02.0\0"))); break;
                }
                break;
            case 9: // group <-> container
                Errno(p.Ioctl(s.Group, r.Bit() ? VfioIoctl.GroupSetContainer : VfioIoctl.GroupUnsetContainer, Fd(s.Container)), "group/container");
                if (r.Bit()) Errno(p.Ioctl(s.Container, VfioIoctl.SetIommu, (ulong)(r.Byte() % 5)), "SET_IOMMU");
                break;
            case 10: // the device DMAs: queue 0 at IOVA 0 (rings) with a descriptor from the input
                DeviceDma(s, ref r);
                break;
            default: // the client unmaps part of its buffer while pages are pinned
                Errno(p.Memory.Unmap(s.Va + r.Page(64), r.Page(4) + 0x1000), "munmap");
                break;
        }
    }

    static void Bar(Session s, ulong reg, uint value)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        s.Proc.Pwrite(s.Device, b, ((ulong)VfioPciIndex.Bar0 << VfioPciIndex.OffsetShift) + reg);
    }

    static void DeviceDma(Session s, ref ChoiceReader r)
    {
        if (s.Device < 0) return;
        var cfg = (ulong)VfioPciIndex.Config << VfioPciIndex.OffsetShift;
        s.Proc.Pwrite(s.Device, new byte[] { 0x06, 0x00 }, cfg + 4);
        Bar(s, MqRegs.Ctrl, MqRegs.CtrlEnable);
        var q = MqRegs.QueueBase;
        Bar(s, q + MqRegs.SqBase, 0); Bar(s, q + MqRegs.CqBase, 0x1000); Bar(s, q + MqRegs.Size, 8);
        Bar(s, q + MqRegs.QCtrl, MqRegs.QCtrlEnable | (r.Bit() ? MqRegs.QCtrlIrq : 0));
        var d = new byte[32];
        BinaryPrimitives.WriteUInt64LittleEndian(d, r.Page(256));
        BinaryPrimitives.WriteUInt64LittleEndian(d.AsSpan(8), r.Page(256));
        BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(16), (uint)(r.Byte() * 64));
        s.Proc.Memory.Write(s.Va, d);
        Bar(s, q + MqRegs.SqTail, (uint)(1 + r.Byte() % 7));
    }

    /// <summary>Closes every fd the way process exit does, then checks nothing stayed pinned and the IOMMU still isolates.</summary>
    static void Close(Session s)
    {
        foreach (var fd in s.Fds.ToArray()) s.Proc.Close(fd);
        s.Kernel.ServiceInterrupts();
        if (s.Proc.LockedPages != 0) throw new FuzzFinding($"{s.Proc.LockedPages} pages still locked after every fd closed");
        if (s.Proc.Memory.PinnedPages != 0) throw new FuzzFinding($"{s.Proc.Memory.PinnedPages} pages still pinned after every fd closed");

        // A fresh container maps only the rings: the device's read of an IOVA nobody mapped must fault.
        var c = s.Proc.OpenContainer();
        var g = s.Proc.OpenGroup(s.GroupId);
        if (c < 0 || g < 0) throw new FuzzFinding($"after close: container {c}, group {g} do not open again");
        Check(s.Proc.Ioctl(g, VfioIoctl.GroupSetContainer, Fd(c)), "SET_CONTAINER (after close)");
        Check(s.Proc.Ioctl(c, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu), "SET_IOMMU (after close)");
        var va = s.Proc.Memory.MapAnonymous(0x2000);
        var map = new VfioIommuType1DmaMap { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = va, Iova = 0, Size = 0x2000 };
        Check(s.Proc.Ioctl(c, VfioIoctl.IommuMapDma, Bytes(map)), "MAP_DMA (after close)");
        s.Device = s.Proc.Ioctl(g, VfioIoctl.GroupGetDeviceFd, Encoding.ASCII.GetBytes("0000:00:01.0\0"));
        if (s.Device < 0) throw new FuzzFinding($"after close: GET_DEVICE_FD {s.Device}");
        Check(s.Proc.Ioctl(s.Device, VfioIoctl.DeviceReset, 0UL), "RESET (after close)");
        var cfg = (ulong)VfioPciIndex.Config << VfioPciIndex.OffsetShift;
        s.Proc.Pwrite(s.Device, new byte[] { 0x06, 0x00 }, cfg + 4);
        Bar(s, MqRegs.Ctrl, MqRegs.CtrlEnable);
        var q = MqRegs.QueueBase;
        Bar(s, q + MqRegs.SqBase, 0); Bar(s, q + MqRegs.CqBase, 0x1000); Bar(s, q + MqRegs.Size, 8);
        Bar(s, q + MqRegs.QCtrl, MqRegs.QCtrlEnable);
        var d = new byte[32];
        BinaryPrimitives.WriteUInt64LittleEndian(d, 0x40_0000);          // source: never mapped
        BinaryPrimitives.WriteUInt64LittleEndian(d.AsSpan(8), 0x1800);   // destination: mapped
        BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(16), 64);
        s.Proc.Memory.Write(va, d);
        Bar(s, q + MqRegs.SqTail, 1);
        s.Kernel.ServiceInterrupts();
        var cqe = new byte[16];
        s.Proc.Memory.Read(va + 0x1000, cqe);
        var status = BinaryPrimitives.ReadUInt32LittleEndian(cqe.AsSpan(8));
        if (status != MqRegs.StatusReadFault) throw new FuzzFinding($"a DMA from an unmapped IOVA completed with status {status}, not a read fault");
        s.Proc.Close(s.Device); s.Proc.Close(g); s.Proc.Close(c);
        if (s.Proc.Memory.PinnedPages != 0) throw new FuzzFinding("pages pinned after the final close");
    }

    static byte[] Bytes<T>(T v) where T : unmanaged
    {
        var b = new byte[Marshal.SizeOf<T>()];
        MemoryMarshal.Write(b, in v);
        return b;
    }

    public override byte[] Generate(Random rng)
    {
        ArgumentNullException.ThrowIfNull(rng);
        var b = new byte[16 + rng.Next(600)];
        rng.NextBytes(b);
        b[0] = (byte)(rng.Next(8) == 0 ? 1 : 0); // mostly: start from the valid set-up
        return b;
    }

}
