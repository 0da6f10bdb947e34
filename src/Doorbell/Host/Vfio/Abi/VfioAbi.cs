using System.Runtime.InteropServices;

// Byte-compatible mirrors of include/uapi/linux/vfio.h (Linux 6.x). Field order, widths and natural
// alignment follow the header; sizes are asserted by tests/Doorbell.Tests/Vfio/AbiLayoutTests.cs.
// Known limits: only the structures Doorbell's VFIO layer serves are mirrored (no migration v2 / iommufd cdev).
namespace Doorbell.Host.Vfio.Abi;

/// <summary>Request numbers, extensions and flags of the VFIO uAPI. Every request is _IO(';', 100 + n).</summary>
public static class VfioIoctl
{
    public const uint Type = ';';
    public const uint Base = 100;

    /// <summary>_IO(type, nr): direction none, size 0 (asm-generic/ioctl.h: nr bits 0-7, type bits 8-15).</summary>
    public static uint Io(uint nr) => (Type << 8) | (Base + nr);

    public const int ApiVersion = 0;

    // container (/dev/vfio/vfio)
    public static readonly uint GetApiVersion = Io(0), CheckExtension = Io(1), SetIommu = Io(2);
    // group (/dev/vfio/$GROUP)
    public static readonly uint GroupGetStatus = Io(3), GroupSetContainer = Io(4), GroupUnsetContainer = Io(5), GroupGetDeviceFd = Io(6);
    // device
    public static readonly uint DeviceGetInfo = Io(7), DeviceGetRegionInfo = Io(8), DeviceGetIrqInfo = Io(9), DeviceSetIrqs = Io(10),
        DeviceReset = Io(11), DeviceGetPciHotResetInfo = Io(12), DevicePciHotReset = Io(13), DeviceIoeventfd = Io(16);
    // type1 IOMMU (on the container)
    public static readonly uint IommuGetInfo = Io(12), IommuMapDma = Io(13), IommuUnmapDma = Io(14), IommuEnable = Io(15),
        IommuDisable = Io(16), IommuDirtyPages = Io(17);
}

/// <summary>VFIO_CHECK_EXTENSION / VFIO_SET_IOMMU values.</summary>
public static class VfioExtension
{
    public const uint Type1Iommu = 1, SpaprTceIommu = 2, Type1v2Iommu = 3, DmaCcIommu = 4, Eeh = 5,
        ReservedType1Nesting = 6, SpaprTcev2Iommu = 7, NoIommu = 8, UnmapAll = 9, UpdateVaddr = 10;
}

public static class VfioGroupFlags { public const uint Viable = 1 << 0, ContainerSet = 1 << 1; }

public static class VfioDeviceFlags
{
    public const uint Reset = 1 << 0, Pci = 1 << 1, Platform = 1 << 2, Amba = 1 << 3, Ccw = 1 << 4, Ap = 1 << 5, FslMc = 1 << 6, Caps = 1 << 7, Cdx = 1 << 8;
}

public static class VfioRegionFlags
{
    public const uint Read = 1 << 0, Write = 1 << 1, Mmap = 1 << 2, Caps = 1 << 3;
    public const ushort CapSparseMmap = 1, CapType = 2, CapMsixMappable = 3;
}

public static class VfioIrqInfoFlags { public const uint EventFd = 1 << 0, Maskable = 1 << 1, Automasked = 1 << 2, NoResize = 1 << 3; }

public static class VfioIrqSetFlags
{
    public const uint DataNone = 1 << 0, DataBool = 1 << 1, DataEventFd = 1 << 2, ActionMask = 1 << 3, ActionUnmask = 1 << 4, ActionTrigger = 1 << 5;
    public const uint DataTypeMask = DataNone | DataBool | DataEventFd;
    public const uint ActionTypeMask = ActionMask | ActionUnmask | ActionTrigger;
}

/// <summary>vfio-pci fixed region and IRQ indices, and the region offset encoding (index &lt;&lt; 40).</summary>
public static class VfioPciIndex
{
    public const uint Bar0 = 0, Bar1 = 1, Bar2 = 2, Bar3 = 3, Bar4 = 4, Bar5 = 5, Rom = 6, Config = 7, Vga = 8, NumRegions = 9;
    public const uint IrqIntx = 0, IrqMsi = 1, IrqMsix = 2, IrqErr = 3, IrqReq = 4, NumIrqs = 5;
    public const int OffsetShift = 40; // VFIO_PCI_OFFSET_SHIFT (drivers/vfio/pci/vfio_pci_priv.h); vfio-platform uses the same 40
    public const ulong OffsetMask = (1UL << OffsetShift) - 1;
    public static ulong IndexToOffset(uint index) => (ulong)index << OffsetShift;
    public static uint OffsetToIndex(ulong offset) => (uint)(offset >> OffsetShift);
}

public static class VfioIommuInfoFlags
{
    public const uint PgSizes = 1 << 0, Caps = 1 << 1;
    public const ushort CapIovaRange = 1, CapMigration = 2, CapDmaAvail = 3;
}

public static class VfioDmaFlags
{
    public const uint MapRead = 1 << 0, MapWrite = 1 << 1, MapVaddr = 1 << 2;
    public const uint UnmapGetDirtyBitmap = 1 << 0, UnmapAll = 1 << 1, UnmapVaddr = 1 << 2;
}

[StructLayout(LayoutKind.Sequential)]
public struct VfioInfoCapHeader { public ushort Id; public ushort Version; public uint Next; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioGroupStatus { public uint Argsz; public uint Flags; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioDeviceInfo { public uint Argsz; public uint Flags; public uint NumRegions; public uint NumIrqs; public uint CapOffset; public uint Pad; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioRegionInfo { public uint Argsz; public uint Flags; public uint Index; public uint CapOffset; public ulong Size; public ulong Offset; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioRegionSparseMmapArea { public ulong Offset; public ulong Size; }

/// <summary>vfio_region_info_cap_sparse_mmap without its flexible areas[] array.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VfioRegionInfoCapSparseMmap { public VfioInfoCapHeader Header; public uint NrAreas; public uint Reserved; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioRegionInfoCapType { public VfioInfoCapHeader Header; public uint Type; public uint Subtype; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioIrqInfo { public uint Argsz; public uint Flags; public uint Index; public uint Count; }

/// <summary>vfio_irq_set without its data[] payload (u8 bools or s32 eventfds follow at offset 20).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VfioIrqSet { public uint Argsz; public uint Flags; public uint Index; public uint Start; public uint Count; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioPciDependentDevice { public uint GroupId; public ushort Segment; public byte Bus; public byte Devfn; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioPciHotResetInfo { public uint Argsz; public uint Flags; public uint Count; }

public static class VfioIoeventfdFlags { public const uint Size8 = 1 << 0, Size16 = 1 << 1, Size32 = 1 << 2, Size64 = 1 << 3, SizeMask = 0xF; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioDeviceIoeventfd { public uint Argsz; public uint Flags; public ulong Offset; public ulong Data; public int Fd; public uint Reserved; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioIommuType1Info { public uint Argsz; public uint Flags; public ulong IovaPgsizes; public uint CapOffset; public uint Pad; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioIovaRange { public ulong Start; public ulong End; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioIommuType1InfoCapIovaRange { public VfioInfoCapHeader Header; public uint NrIovas; public uint Reserved; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioIommuType1InfoCapMigration { public VfioInfoCapHeader Header; public uint Flags; public ulong PgsizeBitmap; public ulong MaxDirtyBitmapSize; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioIommuType1InfoDmaAvail { public VfioInfoCapHeader Header; public uint Avail; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioIommuType1DmaMap { public uint Argsz; public uint Flags; public ulong Vaddr; public ulong Iova; public ulong Size; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioIommuType1DmaUnmap { public uint Argsz; public uint Flags; public ulong Iova; public ulong Size; }

[StructLayout(LayoutKind.Sequential)]
public struct VfioBitmap { public ulong Pgsize; public ulong Size; public ulong Data; }

/// <summary>Reading and writing ABI structs in a user argument buffer (the copy_from_user / copy_to_user of an ioctl).</summary>
public static class UserArg
{
    public static unsafe int SizeOf<T>() where T : unmanaged => sizeof(T);

    /// <summary>Reads the first <paramref name="minsz"/> bytes of a T (the rest zero); false (EFAULT) when the buffer is shorter.</summary>
    public static bool TryRead<T>(ReadOnlySpan<byte> arg, int minsz, out T value) where T : unmanaged
    {
        value = default;
        if (arg.Length < minsz) return false;
        var dst = MemoryMarshal.AsBytes(new Span<T>(ref value));
        arg[..Math.Min(minsz, dst.Length)].CopyTo(dst);
        return true;
    }

    /// <summary>Writes the first <paramref name="count"/> bytes of a T; false (EFAULT) when the buffer is shorter.</summary>
    public static bool TryWrite<T>(Span<byte> arg, int count, in T value) where T : unmanaged
    {
        var src = MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value));
        if (arg.Length < count || count > src.Length) return false;
        src[..count].CopyTo(arg);
        return true;
    }
}

/// <summary>Builds an INFO capability chain the way Linux's vfio_info_cap_add does: each capability is placed at an
/// 8-byte aligned offset; <c>next</c> holds the offset of the following one from the start of the INFO buffer.</summary>
public sealed class VfioCapChain
{
    byte[] _buf = new byte[64];
    int _size;
    int _lastHeader = -1;

    public int Size => _size;
    public ReadOnlySpan<byte> Bytes => _buf.AsSpan(0, _size);

    /// <summary>Appends a capability (its header's next is fixed up later) and returns its byte span to fill.</summary>
    public Span<byte> Add(ushort id, ushort version, int length)
    {
        var at = (_size + 7) & ~7;
        var end = at + length;
        if (end > _buf.Length) Array.Resize(ref _buf, Math.Max(end, _buf.Length * 2));
        _buf.AsSpan(_size, end - _size).Clear();
        if (_lastHeader >= 0) MemoryMarshal.Write(_buf.AsSpan(_lastHeader + 4), (uint)at);
        var hdr = new VfioInfoCapHeader { Id = id, Version = version, Next = 0 };
        MemoryMarshal.Write(_buf.AsSpan(at), in hdr);
        _lastHeader = at;
        _size = end;
        return _buf.AsSpan(at, length);
    }

    /// <summary>Copies the chain into <paramref name="arg"/> at <paramref name="offset"/>, shifting every next pointer by it.</summary>
    public bool CopyTo(Span<byte> arg, int offset)
    {
        if (arg.Length < offset + _size) return false;
        var dst = arg.Slice(offset, _size);
        Bytes.CopyTo(dst);
        var at = 0;
        for (var guard = 0; guard < 64; guard++)
        {
            var next = MemoryMarshal.Read<uint>(dst[(at + 4)..]);
            if (next == 0) break;
            MemoryMarshal.Write(dst[(at + 4)..], next + (uint)offset);
            at = (int)next;
        }
        return true;
    }
}
