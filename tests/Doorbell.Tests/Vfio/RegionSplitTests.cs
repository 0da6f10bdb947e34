using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;

namespace Doorbell.Tests.Vfio;

/// <summary>
/// pread/pwrite on BAR and platform regions reach the device as Linux's vfio-pci (8/4/2/1 bytes) and vfio-platform
/// (4/2/1 bytes) issue them: naturally aligned accesses in address order. VFIO hands the whole range to the function,
/// and the host's memory view does the one split.
/// </summary>
public class RegionSplitTests
{
    static ulong Bar(uint index) => VfioPciIndex.IndexToOffset(index);

    [Fact]
    public void Odd_bar_writes_and_reads_split_into_naturally_aligned_accesses_of_up_to_8_bytes()
    {
        var t = new PciTestDevice();
        t.CfgW(0x04, 2, 0x0002); // memory decode on
        t.F.BarAccesses.Clear();
        Assert.Equal(15, t.W.Proc.Pwrite(t.Fd, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], Bar(0) + 0x101));
        Assert.Equal([(0, 0x101UL, 1, true), (0, 0x102UL, 2, true), (0, 0x104UL, 4, true), (0, 0x108UL, 8, true)], t.F.BarAccesses);
        Assert.Equal(7, t.F.BarMemory[0][0x107]);
        t.F.BarAccesses.Clear();
        var buf = new byte[3];
        Assert.Equal(3, t.W.Proc.Pread(t.Fd, buf, Bar(0) + 0x10D));
        Assert.Equal(new byte[] { 13, 14, 15 }, buf);
        Assert.Equal([(0, 0x10DUL, 1, false), (0, 0x10EUL, 2, false)], t.F.BarAccesses);
    }

    [Fact]
    public void A_bar_read_across_the_msix_table_reads_ff_there_without_touching_the_device()
    {
        var t = new PciTestDevice(); // MSI-X table at BAR2 + 0x2000, 4 entries (64 bytes)
        t.CfgW(0x04, 2, 0x0002);
        t.F.BarAccesses.Clear();
        var buf = new byte[8 + 64 + 4];
        Assert.Equal(buf.Length, t.W.Proc.Pread(t.Fd, buf, Bar(2) + 0x2000 - 8));
        Assert.All(buf[8..72], b => Assert.Equal(0xFF, b));
        Assert.Equal([(2, 0x1FF8UL, 8, false), (2, 0x2040UL, 4, false)], t.F.BarAccesses);
        t.CfgW(0x04, 2, 0); // decode off: -EIO, nothing reaches the device
        t.F.BarAccesses.Clear();
        Assert.Equal(-Doorbell.Errno.EIO, t.W.Proc.Pread(t.Fd, buf, Bar(2) + 0x2000 - 8));
        Assert.Empty(t.F.BarAccesses);
    }

    [Fact]
    public void Platform_region_accesses_split_into_naturally_aligned_accesses_of_up_to_4_bytes()
    {
        var w = new VfioWorld();
        var p = new FakePlatformDevice();
        var (_, group) = w.AddGroup(9);
        Assert.Equal(0, w.Host.BindPlatform(group, p, out _));
        var (_, g, r) = w.Setup(9);
        Assert.Equal(0, r);
        var fd = w.GetDeviceFd(g, p.Name);
        Assert.Equal(11, w.Proc.Pwrite(fd, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 0x21));
        Assert.Equal([(0, 0x21UL, 1, true), (0, 0x22UL, 2, true), (0, 0x24UL, 4, true), (0, 0x28UL, 4, true)], p.Accesses);
        Assert.Equal(0x0B0A_0908UL, p.Regs[(0, 0x28)]);
        p.Accesses.Clear();
        Assert.Equal(8, w.Proc.Pread(fd, new byte[8], 0x28));
        Assert.Equal([(0, 0x28UL, 4, false), (0, 0x2CUL, 4, false)], p.Accesses);
    }
}
