using System.Buffers.Binary;
using System.Globalization;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Tracing;

// VFIO trace events, seen from the system-call boundary of a process (as strace would show them, named after QEMU's
// hw/vfio trace points where one exists: vfio_region_read/write, vfio_pci_reset, vfio_connect_*_container,
// vfio_get_device, vfio_put_group): every ioctl with its request decoded and its result or errno, MAP/UNMAP_DMA,
// SET_IRQS, region accesses (pread/pwrite/mmap), reset, group/container attach and detach. Deterministic: what is
// printed is VFIO's own descriptor numbers, addresses and sizes — never an OS eventfd number (those depend on what
// the process inherited), so two runs trace the same bytes.
namespace Doorbell.Host.Vfio;

/// <summary>Formats and emits the vfio_* trace categories for <see cref="VfioProcess"/>.</summary>
static class VfioTrace
{
    const ulong VfioMask = (1UL << (int)TraceCategory.VfioIoctl) | (1UL << (int)TraceCategory.VfioGroup) | (1UL << (int)TraceCategory.VfioDma)
        | (1UL << (int)TraceCategory.VfioIrqSet) | (1UL << (int)TraceCategory.VfioRegion) | (1UL << (int)TraceCategory.VfioReset);

    /// <summary>Whether any vfio_* category other than vfio_irq is on (one load and a test).</summary>
    public static bool AnyOn(Trace? t) => t is not null && (t.Mask & VfioMask) != 0;

    /// <summary>The argument as it was passed in (read before the call: the kernel writes some structs back).</summary>
    public readonly struct Before
    {
        public readonly ulong A, B, C, D;
        public readonly uint Flags;
        public Before(ulong a, ulong b, ulong c, ulong d, uint flags) { A = a; B = b; C = c; D = d; Flags = flags; }
    }

    public static Before Capture(VfioFile? f, uint request, ReadOnlySpan<byte> arg)
    {
        if (f is VfioContainer && request == VfioIoctl.IommuMapDma && UserArg.TryRead(arg, 32, out VfioIommuType1DmaMap m))
            return new Before(m.Vaddr, m.Iova, m.Size, 0, m.Flags);
        if (f is VfioContainer && request == VfioIoctl.IommuUnmapDma && UserArg.TryRead(arg, 24, out VfioIommuType1DmaUnmap u))
            return new Before(u.Iova, u.Size, 0, 0, u.Flags);
        if (f is VfioDeviceFile && request == VfioIoctl.DeviceSetIrqs && UserArg.TryRead(arg, 20, out VfioIrqSet s))
            return new Before(s.Index, s.Start, s.Count, 0, s.Flags);
        if (f is VfioDeviceFile && (request == VfioIoctl.DeviceGetRegionInfo || request == VfioIoctl.DeviceGetIrqInfo) && arg.Length >= 12)
            return new Before(BinaryPrimitives.ReadUInt32LittleEndian(arg[8..]), 0, 0, 0, 0);
        if (f is VfioGroupFile && request == VfioIoctl.GroupSetContainer && arg.Length >= 4)
            return new Before((ulong)BinaryPrimitives.ReadInt32LittleEndian(arg), 0, 0, 0, 0);
        return default;
    }

    public static void Ioctl(Trace t, VfioProcess p, int fd, VfioFile? f, uint request, bool scalar, ulong scalarArg, ReadOnlySpan<byte> arg, in Before before, int result)
    {
        var name = RequestName(f, request);
        var r = Result(result);
        var source = Source(f);
        switch (f)
        {
            case VfioContainer when request == VfioIoctl.IommuMapDma:
                t.Emit(TraceCategory.VfioDma, source, $"vfio_dma_map {name}(fd {fd}, vaddr 0x{before.A:x}, iova 0x{before.B:x}, size 0x{before.C:x}, {DmaFlags(before.Flags)}) = {r}");
                return;
            case VfioContainer when request == VfioIoctl.IommuUnmapDma:
            {
                var unmapped = UserArg.TryRead(arg, 24, out VfioIommuType1DmaUnmap u) && result == 0 ? $", unmapped 0x{u.Size:x}" : "";
                t.Emit(TraceCategory.VfioDma, source, $"vfio_dma_unmap {name}(fd {fd}, iova 0x{before.A:x}, size 0x{before.B:x}{((before.Flags & VfioDmaFlags.UnmapAll) != 0 ? ", ALL" : "")}) = {r}{unmapped}");
                return;
            }
            case VfioContainer when request == VfioIoctl.SetIommu:
                t.Emit(TraceCategory.VfioGroup, source, $"vfio_set_iommu {name}(fd {fd}, {IommuType(scalar ? scalarArg : Scalar(arg))}) = {r}");
                return;
            case VfioContainer when request == VfioIoctl.CheckExtension:
                t.Emit(TraceCategory.VfioGroup, source, $"{name}(fd {fd}, {IommuType(scalar ? scalarArg : Scalar(arg))}) = {r}");
                return;
            case VfioContainer when request == VfioIoctl.GetApiVersion:
                t.Emit(TraceCategory.VfioGroup, source, $"{name}(fd {fd}) = {r}");
                return;
            case VfioGroupFile g when request == VfioIoctl.GroupSetContainer:
                t.Emit(TraceCategory.VfioGroup, source, $"vfio_connect_container {name}(group {g.Group.Id} fd {fd}, container fd {(long)before.A}) = {r}");
                return;
            case VfioGroupFile g when request == VfioIoctl.GroupUnsetContainer:
                t.Emit(TraceCategory.VfioGroup, source, $"vfio_disconnect_container {name}(group {g.Group.Id} fd {fd}) = {r}");
                return;
            case VfioGroupFile g when request == VfioIoctl.GroupGetDeviceFd:
            {
                var nul = arg.IndexOf((byte)0);
                var dev = nul > 0 ? System.Text.Encoding.ASCII.GetString(arg[..Math.Min(nul, 64)]) : "?";
                t.Emit(TraceCategory.VfioGroup, source, $"vfio_get_device {name}(group {g.Group.Id} fd {fd}, \"{dev}\") = {r}");
                return;
            }
            case VfioGroupFile g when request == VfioIoctl.GroupGetStatus:
            {
                var flags = UserArg.TryRead(arg, 8, out VfioGroupStatus st) && result == 0 ? GroupFlags(st.Flags) : "-";
                t.Emit(TraceCategory.VfioGroup, source, $"{name}(group {g.Group.Id} fd {fd}) = {r}, flags {flags}");
                return;
            }
            case VfioDeviceFile d when request == VfioIoctl.DeviceSetIrqs:
                t.Emit(TraceCategory.VfioIrqSet, source, $"vfio_set_irqs {name}({d.Device.Name}, index {IrqIndex(d, (uint)before.A)}, start {before.B}, count {before.C}, {IrqFlags(before.Flags)}) = {r}");
                return;
            case VfioDeviceFile d when request == VfioIoctl.DeviceReset || request == VfioIoctl.DevicePciHotReset:
                t.Emit(TraceCategory.VfioReset, source, $"{(d.Device is VfioPciDevice ? "vfio_pci_reset" : "vfio_platform_reset")} {name}({d.Device.Name}) = {r}");
                return;
            case VfioDeviceFile d when request == VfioIoctl.DeviceGetRegionInfo:
            {
                var info = result == 0 && UserArg.TryRead(arg, 32, out VfioRegionInfo ri) ? $", size 0x{ri.Size:x}, offset 0x{ri.Offset:x}, flags {RegionFlags(ri.Flags)}" : "";
                t.Emit(TraceCategory.VfioIoctl, source, $"{name}({d.Device.Name}, region {before.A}) = {r}{info}");
                return;
            }
            case VfioDeviceFile d when request == VfioIoctl.DeviceGetIrqInfo:
            {
                var info = result == 0 && UserArg.TryRead(arg, 16, out VfioIrqInfo ii) ? $", count {ii.Count}" : "";
                t.Emit(TraceCategory.VfioIoctl, source, $"{name}({d.Device.Name}, index {IrqIndex(d, (uint)before.A)}) = {r}{info}");
                return;
            }
            case VfioDeviceFile d when request == VfioIoctl.DeviceGetInfo:
            {
                var info = result == 0 && UserArg.TryRead(arg, 16, out VfioDeviceInfo di) ? $", regions {di.NumRegions}, irqs {di.NumIrqs}" : "";
                t.Emit(TraceCategory.VfioIoctl, source, $"{name}({d.Device.Name}) = {r}{info}");
                return;
            }
            default:
                t.Emit(TraceCategory.VfioIoctl, source, $"{name}(fd {fd}) = {r}");
                return;
        }
    }

    public static void Open(Trace t, int group, int result) =>
        t.Emit(TraceCategory.VfioGroup, "vfio", $"vfio_group_open open(\"/dev/vfio/{group}\") = {Result(result)}");

    public static void OpenContainer(Trace t, int result) =>
        t.Emit(TraceCategory.VfioGroup, "vfio", $"open(\"/dev/vfio/vfio\") = {Result(result)}");

    public static void Close(Trace t, int fd, VfioFile? f, int result)
    {
        var what = f switch
        {
            VfioContainer => "container",
            VfioGroupFile g => $"vfio_put_group group {g.Group.Id}",
            VfioDeviceFile d => $"vfio_put_device {d.Device.Name}",
            _ => "?",
        };
        t.Emit(TraceCategory.VfioGroup, Source(f), $"close(fd {fd}) {what} = {Result(result)}");
    }

    /// <summary>pread/pwrite: QEMU's vfio_region_read/write (name:regionN+offset, data, size) for accesses up to 8 bytes.</summary>
    public static void Region(Trace t, VfioFile? f, ulong offset, ReadOnlySpan<byte> data, long result, bool write)
    {
        var dev = (f as VfioDeviceFile)?.Device.Name ?? "?";
        var index = VfioPciIndex.OffsetToIndex(offset);
        var off = offset & VfioPciIndex.OffsetMask;
        var op = write ? "vfio_region_write" : "vfio_region_read";
        if (result < 0)
            t.Emit(TraceCategory.VfioRegion, Source(f), $"{op} ({dev}:region{index}+0x{off:x}, {data.Length}) = {Result((int)result)}");
        else if (data.Length is > 0 and <= 8)
        {
            Span<byte> b = stackalloc byte[8];
            b.Clear();
            data.CopyTo(b);
            t.Emit(TraceCategory.VfioRegion, Source(f), $"{op} ({dev}:region{index}+0x{off:x}, 0x{BinaryPrimitives.ReadUInt64LittleEndian(b):x}, {data.Length})");
        }
        else t.Emit(TraceCategory.VfioRegion, Source(f), $"{op} ({dev}:region{index}+0x{off:x}, {data.Length} bytes) = {result}");
    }

    public static void Mmap(Trace t, VfioFile? f, ulong length, ulong offset, long result)
    {
        var dev = (f as VfioDeviceFile)?.Device.Name ?? "?";
        var r = result < 0 ? Result((int)result) : "ok";
        t.Emit(TraceCategory.VfioRegion, Source(f), $"vfio_region_mmap ({dev}:region{VfioPciIndex.OffsetToIndex(offset)}+0x{offset & VfioPciIndex.OffsetMask:x}, 0x{length:x}) = {r}");
    }

    static string Source(VfioFile? f) => f is VfioDeviceFile d ? "vfio:" + d.Device.Name : "vfio";

    static ulong Scalar(ReadOnlySpan<byte> arg)
    {
        Span<byte> b = stackalloc byte[8];
        b.Clear();
        arg[..Math.Min(8, arg.Length)].CopyTo(b);
        return BinaryPrimitives.ReadUInt64LittleEndian(b);
    }

    /// <summary>"0", a positive count or descriptor, or the negated errno by name (-EPERM).</summary>
    public static string Result(int r) => r >= 0 ? r.ToString(CultureInfo.InvariantCulture) : "-" + Errno.Name(r);

    /// <summary>The request's name in include/uapi/linux/vfio.h; the same number means different requests on different files.</summary>
    public static string RequestName(VfioFile? f, uint request)
    {
        var nr = request - VfioIoctl.Io(0);
        if ((request & ~0xFFu) != (VfioIoctl.Type << 8) || nr > 20) return $"ioctl 0x{request:x}";
        return nr switch
        {
            0 => "VFIO_GET_API_VERSION", 1 => "VFIO_CHECK_EXTENSION", 2 => "VFIO_SET_IOMMU",
            3 => "VFIO_GROUP_GET_STATUS", 4 => "VFIO_GROUP_SET_CONTAINER", 5 => "VFIO_GROUP_UNSET_CONTAINER", 6 => "VFIO_GROUP_GET_DEVICE_FD",
            7 => "VFIO_DEVICE_GET_INFO", 8 => "VFIO_DEVICE_GET_REGION_INFO", 9 => "VFIO_DEVICE_GET_IRQ_INFO", 10 => "VFIO_DEVICE_SET_IRQS",
            11 => "VFIO_DEVICE_RESET",
            12 => f is VfioContainer ? "VFIO_IOMMU_GET_INFO" : "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO",
            13 => f is VfioContainer ? "VFIO_IOMMU_MAP_DMA" : "VFIO_DEVICE_PCI_HOT_RESET",
            14 => f is VfioContainer ? "VFIO_IOMMU_UNMAP_DMA" : "VFIO_DEVICE_QUERY_GFX_PLANE",
            15 => f is VfioContainer ? "VFIO_IOMMU_ENABLE" : "VFIO_DEVICE_GET_GFX_DMABUF",
            16 => f is VfioContainer ? "VFIO_IOMMU_DISABLE" : "VFIO_DEVICE_IOEVENTFD",
            17 => f is VfioContainer ? "VFIO_IOMMU_DIRTY_PAGES" : "VFIO_DEVICE_FEATURE",
            _ => $"VFIO ioctl {100 + nr}",
        };
    }

    static string IommuType(ulong v) => v switch
    {
        VfioExtension.Type1Iommu => "VFIO_TYPE1_IOMMU", VfioExtension.SpaprTceIommu => "VFIO_SPAPR_TCE_IOMMU",
        VfioExtension.Type1v2Iommu => "VFIO_TYPE1v2_IOMMU", VfioExtension.DmaCcIommu => "VFIO_DMA_CC_IOMMU", VfioExtension.Eeh => "VFIO_EEH",
        VfioExtension.ReservedType1Nesting => "VFIO_TYPE1_NESTING_IOMMU", VfioExtension.SpaprTcev2Iommu => "VFIO_SPAPR_TCE_v2_IOMMU",
        VfioExtension.NoIommu => "VFIO_NOIOMMU_IOMMU", VfioExtension.UnmapAll => "VFIO_UNMAP_ALL", VfioExtension.UpdateVaddr => "VFIO_UPDATE_VADDR",
        _ => v.ToString(CultureInfo.InvariantCulture),
    };

    static string DmaFlags(uint f) => f == 0 ? "0" : string.Join('|', new[]
    {
        (f & VfioDmaFlags.MapRead) != 0 ? "READ" : null, (f & VfioDmaFlags.MapWrite) != 0 ? "WRITE" : null,
        (f & VfioDmaFlags.MapVaddr) != 0 ? "VADDR" : null, (f & ~7u) != 0 ? $"0x{f & ~7u:x}" : null,
    }.Where(x => x is not null));

    static string GroupFlags(uint f) => f == 0 ? "0" : string.Join('|', new[]
    {
        (f & VfioGroupFlags.Viable) != 0 ? "VIABLE" : null, (f & VfioGroupFlags.ContainerSet) != 0 ? "CONTAINER_SET" : null,
    }.Where(x => x is not null));

    static string RegionFlags(uint f) => f == 0 ? "0" : string.Join('|', new[]
    {
        (f & VfioRegionFlags.Read) != 0 ? "READ" : null, (f & VfioRegionFlags.Write) != 0 ? "WRITE" : null,
        (f & VfioRegionFlags.Mmap) != 0 ? "MMAP" : null, (f & VfioRegionFlags.Caps) != 0 ? "CAPS" : null,
    }.Where(x => x is not null));

    static string IrqFlags(uint f)
    {
        var data = (f & VfioIrqSetFlags.DataTypeMask) switch
        {
            VfioIrqSetFlags.DataNone => "DATA_NONE", VfioIrqSetFlags.DataBool => "DATA_BOOL", VfioIrqSetFlags.DataEventFd => "DATA_EVENTFD",
            var x => $"data 0x{x:x}",
        };
        var action = (f & VfioIrqSetFlags.ActionTypeMask) switch
        {
            VfioIrqSetFlags.ActionMask => "ACTION_MASK", VfioIrqSetFlags.ActionUnmask => "ACTION_UNMASK", VfioIrqSetFlags.ActionTrigger => "ACTION_TRIGGER",
            var x => $"action 0x{x:x}",
        };
        return data + "|" + action;
    }

    static string IrqIndex(VfioDeviceFile d, uint index) => d.Device is VfioPciDevice
        ? index switch { VfioPciIndex.IrqIntx => "INTX", VfioPciIndex.IrqMsi => "MSI", VfioPciIndex.IrqMsix => "MSIX", VfioPciIndex.IrqErr => "ERR", VfioPciIndex.IrqReq => "REQ", _ => index.ToString(CultureInfo.InvariantCulture) }
        : index.ToString(CultureInfo.InvariantCulture);
}
