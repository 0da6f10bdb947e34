using System.Runtime.InteropServices;
using Doorbell.Host.Vfio.Abi;

namespace Doorbell.Tests.Vfio;

/// <summary>Sizes and offsets checked against include/uapi/linux/vfio.h (torvalds/linux, read via the search tool).</summary>
public class AbiLayoutTests
{
    static int Off<T>(string field) => (int)Marshal.OffsetOf<T>(field);

    [Fact]
    public void Struct_sizes_match_the_uapi_header()
    {
        Assert.Equal(8, Marshal.SizeOf<VfioInfoCapHeader>());
        Assert.Equal(8, Marshal.SizeOf<VfioGroupStatus>());
        Assert.Equal(24, Marshal.SizeOf<VfioDeviceInfo>());
        Assert.Equal(32, Marshal.SizeOf<VfioRegionInfo>());
        Assert.Equal(16, Marshal.SizeOf<VfioRegionSparseMmapArea>());
        Assert.Equal(16, Marshal.SizeOf<VfioRegionInfoCapSparseMmap>());
        Assert.Equal(16, Marshal.SizeOf<VfioRegionInfoCapType>());
        Assert.Equal(16, Marshal.SizeOf<VfioIrqInfo>());
        Assert.Equal(20, Marshal.SizeOf<VfioIrqSet>());
        Assert.Equal(8, Marshal.SizeOf<VfioPciDependentDevice>());
        Assert.Equal(12, Marshal.SizeOf<VfioPciHotResetInfo>());
        Assert.Equal(24, Marshal.SizeOf<VfioIommuType1Info>());
        Assert.Equal(16, Marshal.SizeOf<VfioIovaRange>());
        Assert.Equal(16, Marshal.SizeOf<VfioIommuType1InfoCapIovaRange>());
        Assert.Equal(32, Marshal.SizeOf<VfioIommuType1InfoCapMigration>());
        Assert.Equal(12, Marshal.SizeOf<VfioIommuType1InfoDmaAvail>());
        Assert.Equal(32, Marshal.SizeOf<VfioIommuType1DmaMap>());
        Assert.Equal(24, Marshal.SizeOf<VfioIommuType1DmaUnmap>());
        Assert.Equal(24, Marshal.SizeOf<VfioBitmap>());
        Assert.Equal(Marshal.SizeOf<VfioIommuType1DmaMap>(), UserArg.SizeOf<VfioIommuType1DmaMap>());
    }

    [Fact]
    public void Field_offsets_match_the_uapi_header()
    {
        Assert.Equal(16, Off<VfioDeviceInfo>(nameof(VfioDeviceInfo.CapOffset)));
        Assert.Equal(12, Off<VfioRegionInfo>(nameof(VfioRegionInfo.CapOffset)));
        Assert.Equal(16, Off<VfioRegionInfo>(nameof(VfioRegionInfo.Size)));
        Assert.Equal(24, Off<VfioRegionInfo>(nameof(VfioRegionInfo.Offset)));
        Assert.Equal(8, Off<VfioIommuType1Info>(nameof(VfioIommuType1Info.IovaPgsizes)));
        Assert.Equal(16, Off<VfioIommuType1Info>(nameof(VfioIommuType1Info.CapOffset)));
        Assert.Equal(8, Off<VfioIommuType1InfoCapMigration>(nameof(VfioIommuType1InfoCapMigration.Flags)));
        Assert.Equal(16, Off<VfioIommuType1InfoCapMigration>(nameof(VfioIommuType1InfoCapMigration.PgsizeBitmap)));
        Assert.Equal(24, Off<VfioIommuType1InfoCapMigration>(nameof(VfioIommuType1InfoCapMigration.MaxDirtyBitmapSize)));
        Assert.Equal(8, Off<VfioIommuType1InfoDmaAvail>(nameof(VfioIommuType1InfoDmaAvail.Avail)));
        Assert.Equal(8, Off<VfioIommuType1DmaMap>(nameof(VfioIommuType1DmaMap.Vaddr)));
        Assert.Equal(16, Off<VfioIommuType1DmaMap>(nameof(VfioIommuType1DmaMap.Iova)));
        Assert.Equal(24, Off<VfioIommuType1DmaMap>(nameof(VfioIommuType1DmaMap.Size)));
        Assert.Equal(8, Off<VfioIommuType1DmaUnmap>(nameof(VfioIommuType1DmaUnmap.Iova)));
        Assert.Equal(16, Off<VfioIommuType1DmaUnmap>(nameof(VfioIommuType1DmaUnmap.Size)));
        Assert.Equal(16, Off<VfioIrqSet>(nameof(VfioIrqSet.Count)));
        Assert.Equal(4, Off<VfioPciDependentDevice>(nameof(VfioPciDependentDevice.Segment)));
        Assert.Equal(7, Off<VfioPciDependentDevice>(nameof(VfioPciDependentDevice.Devfn)));
        Assert.Equal(8, Off<VfioRegionInfoCapSparseMmap>(nameof(VfioRegionInfoCapSparseMmap.NrAreas)));
    }

    [Fact]
    public void Ioctl_numbers_are_IO_semicolon_100_plus_n()
    {
        Assert.Equal(0x3B64u, VfioIoctl.GetApiVersion);
        Assert.Equal(0x3B65u, VfioIoctl.CheckExtension);
        Assert.Equal(0x3B66u, VfioIoctl.SetIommu);
        Assert.Equal(0x3B67u, VfioIoctl.GroupGetStatus);
        Assert.Equal(0x3B68u, VfioIoctl.GroupSetContainer);
        Assert.Equal(0x3B6Au, VfioIoctl.GroupGetDeviceFd);
        Assert.Equal(0x3B6Bu, VfioIoctl.DeviceGetInfo);
        Assert.Equal(0x3B6Eu, VfioIoctl.DeviceSetIrqs);
        Assert.Equal(0x3B6Fu, VfioIoctl.DeviceReset);
        Assert.Equal(0x3B70u, VfioIoctl.IommuGetInfo);
        Assert.Equal(0x3B71u, VfioIoctl.IommuMapDma);
        Assert.Equal(0x3B72u, VfioIoctl.IommuUnmapDma);
        Assert.Equal(7UL << 40, VfioPciIndex.IndexToOffset(VfioPciIndex.Config));
    }

    [Fact]
    public void Cap_chain_offsets_are_8_aligned_and_relative_to_the_info_buffer()
    {
        var chain = new VfioCapChain();
        chain.Add(3, 1, 12);
        chain.Add(1, 1, 32);
        Assert.Equal(16 + 32, chain.Size);
        var buf = new byte[24 + chain.Size];
        Assert.True(chain.CopyTo(buf, 24));
        var first = MemoryMarshal.Read<VfioInfoCapHeader>(buf.AsSpan(24));
        Assert.Equal(3, first.Id);
        Assert.Equal(24u + 16, first.Next);
        var second = MemoryMarshal.Read<VfioInfoCapHeader>(buf.AsSpan((int)first.Next));
        Assert.Equal(1, second.Id);
        Assert.Equal(0u, second.Next);
    }
}
