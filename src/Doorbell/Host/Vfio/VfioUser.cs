using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Doorbell.Host.Vfio.Abi;

// Userspace-side helpers over the raw ioctl ABI (what a C# VFIO user — an example driver, a VMM — writes once):
// they build the argument structs exactly as a C program would and parse the replies and capability chains.
// Known limits: no iommufd/cdev path.
namespace Doorbell.Host.Vfio;

/// <summary>A region as GET_REGION_INFO describes it, with its parsed capabilities.</summary>
public sealed record VfioRegion(uint Index, uint Flags, ulong Size, ulong Offset, bool MsixMappable, IReadOnlyList<(ulong Offset, ulong Size)>? SparseAreas);

public static class VfioUser
{
    /// <summary>open container + group, SET_CONTAINER, SET_IOMMU(type); returns 0 or -errno (fds are returned even on failure when opened).</summary>
    public static int OpenGroupInNewContainer(VfioProcess proc, int groupId, uint iommuType, out int container, out int group)
    {
        ArgumentNullException.ThrowIfNull(proc);
        container = proc.OpenContainer();
        group = proc.OpenGroup(groupId);
        if (group < 0) return group;
        if (proc.Ioctl(container, VfioIoctl.GetApiVersion, 0UL) != VfioIoctl.ApiVersion) return -Errno.EINVAL;
        if (proc.Ioctl(container, VfioIoctl.CheckExtension, iommuType) <= 0) return -Errno.EINVAL;
        var st = Bytes(new VfioGroupStatus { Argsz = 8 });
        var r = proc.Ioctl(group, VfioIoctl.GroupGetStatus, st);
        if (r != 0) return r;
        if ((MemoryMarshal.Read<VfioGroupStatus>(st).Flags & VfioGroupFlags.Viable) == 0) return -Errno.EBUSY;
        var fd = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(fd, container);
        r = proc.Ioctl(group, VfioIoctl.GroupSetContainer, fd);
        return r != 0 ? r : proc.Ioctl(container, VfioIoctl.SetIommu, iommuType);
    }

    public static int GetDeviceFd(VfioProcess proc, int group, string name)
    {
        ArgumentNullException.ThrowIfNull(proc);
        return proc.Ioctl(group, VfioIoctl.GroupGetDeviceFd, System.Text.Encoding.ASCII.GetBytes(name + "\0"));
    }

    public static int MapDma(VfioProcess proc, int container, ulong vaddr, ulong iova, ulong size, bool read = true, bool write = true)
    {
        ArgumentNullException.ThrowIfNull(proc);
        var flags = (read ? VfioDmaFlags.MapRead : 0) | (write ? VfioDmaFlags.MapWrite : 0);
        return proc.Ioctl(container, VfioIoctl.IommuMapDma, Bytes(new VfioIommuType1DmaMap { Argsz = 32, Flags = flags, Vaddr = vaddr, Iova = iova, Size = size }));
    }

    /// <summary>UNMAP_DMA: the unmapped byte count (≥ 0) or -errno.</summary>
    public static long UnmapDma(VfioProcess proc, int container, ulong iova, ulong size, uint flags = 0)
    {
        ArgumentNullException.ThrowIfNull(proc);
        var b = Bytes(new VfioIommuType1DmaUnmap { Argsz = 24, Flags = flags, Iova = iova, Size = size });
        var r = proc.Ioctl(container, VfioIoctl.IommuUnmapDma, b);
        return r != 0 ? r : (long)MemoryMarshal.Read<VfioIommuType1DmaUnmap>(b).Size;
    }

    /// <summary>IOMMU_GET_INFO with the argsz retry a C user does; returns the usable IOVA ranges and page sizes.</summary>
    public static int GetIommuInfo(VfioProcess proc, int container, out ulong pgsizes, out List<(ulong Start, ulong End)> ranges, out uint dmaAvail)
    {
        ArgumentNullException.ThrowIfNull(proc);
        pgsizes = 0;
        ranges = [];
        dmaAvail = 0;
        var b = Bytes(new VfioIommuType1Info { Argsz = 24 });
        var r = proc.Ioctl(container, VfioIoctl.IommuGetInfo, b);
        if (r != 0) return r;
        var need = MemoryMarshal.Read<VfioIommuType1Info>(b).Argsz;
        b = new byte[need];
        MemoryMarshal.Write(b, new VfioIommuType1Info { Argsz = need });
        r = proc.Ioctl(container, VfioIoctl.IommuGetInfo, b);
        if (r != 0) return r;
        var info = MemoryMarshal.Read<VfioIommuType1Info>(b);
        pgsizes = info.IovaPgsizes;
        if ((info.Flags & VfioIommuInfoFlags.Caps) == 0) return 0;
        var at = (int)info.CapOffset;
        for (var guard = 0; at != 0 && at + 8 <= b.Length && guard < 16; guard++)
        {
            var h = MemoryMarshal.Read<VfioInfoCapHeader>(b.AsSpan(at));
            if (h.Id == VfioIommuInfoFlags.CapIovaRange)
            {
                var n = MemoryMarshal.Read<VfioIommuType1InfoCapIovaRange>(b.AsSpan(at)).NrIovas;
                for (var i = 0; i < n; i++)
                {
                    var rr = MemoryMarshal.Read<VfioIovaRange>(b.AsSpan(at + 16 + 16 * i));
                    ranges.Add((rr.Start, rr.End));
                }
            }
            else if (h.Id == VfioIommuInfoFlags.CapDmaAvail) dmaAvail = MemoryMarshal.Read<VfioIommuType1InfoDmaAvail>(b.AsSpan(at)).Avail;
            at = (int)h.Next;
        }
        return 0;
    }

    /// <summary>GET_REGION_INFO with the capability-chain retry.</summary>
    public static int GetRegion(VfioProcess proc, int device, uint index, out VfioRegion? region)
    {
        ArgumentNullException.ThrowIfNull(proc);
        region = null;
        var b = Bytes(new VfioRegionInfo { Argsz = 32, Index = index });
        var r = proc.Ioctl(device, VfioIoctl.DeviceGetRegionInfo, b);
        if (r != 0) return r;
        var info = MemoryMarshal.Read<VfioRegionInfo>(b);
        if (info.Argsz > 32)
        {
            var need = info.Argsz;
            b = new byte[need];
            MemoryMarshal.Write(b, new VfioRegionInfo { Argsz = need, Index = index });
            r = proc.Ioctl(device, VfioIoctl.DeviceGetRegionInfo, b);
            if (r != 0) return r;
            info = MemoryMarshal.Read<VfioRegionInfo>(b);
        }
        var msix = false;
        List<(ulong, ulong)>? sparse = null;
        var at = (info.Flags & VfioRegionFlags.Caps) != 0 ? (int)info.CapOffset : 0;
        for (var guard = 0; at != 0 && at + 8 <= b.Length && guard < 16; guard++)
        {
            var h = MemoryMarshal.Read<VfioInfoCapHeader>(b.AsSpan(at));
            if (h.Id == VfioRegionFlags.CapMsixMappable) msix = true;
            else if (h.Id == VfioRegionFlags.CapSparseMmap)
            {
                sparse = [];
                var n = MemoryMarshal.Read<VfioRegionInfoCapSparseMmap>(b.AsSpan(at)).NrAreas;
                for (var i = 0; i < n; i++)
                {
                    var a = MemoryMarshal.Read<VfioRegionSparseMmapArea>(b.AsSpan(at + 16 + 16 * i));
                    sparse.Add((a.Offset, a.Size));
                }
            }
            at = (int)h.Next;
        }
        region = new VfioRegion(index, info.Flags, info.Size, info.Offset, msix, sparse);
        return 0;
    }

    /// <summary>SET_IRQS DATA_EVENTFD|ACTION_TRIGGER for [start, start+fds.Length): 0, a positive vector count, or -errno.</summary>
    public static int SetIrqEventFds(VfioProcess proc, int device, uint index, uint start, ReadOnlySpan<int> fds)
    {
        ArgumentNullException.ThrowIfNull(proc);
        var b = new byte[20 + 4 * fds.Length];
        MemoryMarshal.Write(b, new VfioIrqSet { Argsz = (uint)b.Length, Flags = VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, Index = index, Start = start, Count = (uint)fds.Length });
        for (var i = 0; i < fds.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(20 + 4 * i), fds[i]);
        return proc.Ioctl(device, VfioIoctl.DeviceSetIrqs, b);
    }

    /// <summary>SET_IRQS with DATA_NONE: ACTION_TRIGGER count 0 disables an index; ACTION_UNMASK count 1 unmasks INTx.</summary>
    public static int SetIrqsNone(VfioProcess proc, int device, uint index, uint action, uint start, uint count)
    {
        ArgumentNullException.ThrowIfNull(proc);
        return proc.Ioctl(device, VfioIoctl.DeviceSetIrqs, Bytes(new VfioIrqSet { Argsz = 20, Flags = VfioIrqSetFlags.DataNone | action, Index = index, Start = start, Count = count }));
    }

    public static uint ReadConfig(VfioProcess proc, int device, int offset, int size)
    {
        ArgumentNullException.ThrowIfNull(proc);
        Span<byte> b = stackalloc byte[4];
        var r = proc.Pread(device, b[..size], VfioPciIndex.IndexToOffset(VfioPciIndex.Config) + (ulong)offset);
        return r == size ? BinaryPrimitives.ReadUInt32LittleEndian(b) : uint.MaxValue;
    }

    public static long WriteConfig(VfioProcess proc, int device, int offset, int size, uint value)
    {
        ArgumentNullException.ThrowIfNull(proc);
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        return proc.Pwrite(device, b[..size], VfioPciIndex.IndexToOffset(VfioPciIndex.Config) + (ulong)offset);
    }

    static byte[] Bytes<T>(T value) where T : unmanaged
    {
        var b = new byte[UserArg.SizeOf<T>()];
        MemoryMarshal.Write(b, in value);
        return b;
    }
}
