using Doorbell.Host.Os;
using Doorbell.Memory;

namespace Doorbell.Tests.Vfio;

public class UserAddressSpaceTests
{
    static (PhysicalAddressSpace Bus, PhysPageAllocator Alloc, UserAddressSpace Mm) Make(ulong pages = 16)
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), pages * 4096);
        var alloc = new PhysPageAllocator(0x4000_0000, pages * 4096, bus);
        return (bus, alloc, new UserAddressSpace(bus, alloc));
    }

    [Fact]
    public void Anonymous_memory_faults_in_on_touch_and_reads_back()
    {
        var (bus, _, mm) = Make();
        var va = mm.MapAnonymous(0x3000);
        Assert.Equal(0, mm.ResidentPages);
        Assert.Equal(UserAccess.Ok, mm.Write(va + 0xFFE, new byte[] { 1, 2, 3, 4 })); // crosses a page
        Assert.Equal(2, mm.ResidentPages);
        var back = new byte[4];
        Assert.Equal(UserAccess.Ok, mm.Read(va + 0xFFE, back));
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, back);
        Assert.Equal(UserAccess.Ok, mm.Translate(va + 0x1000, false, out var phys));
        Assert.Equal(3UL, bus.Store.ReadSized(phys, 1));
        Assert.Equal(UserAccess.Segv, mm.Read(va + 0x3000, back)); // guard page
        var ro = mm.MapAnonymous(0x1000, UserProt.Read);
        Assert.Equal(UserAccess.Segv, mm.Write(ro, back));
    }

    [Fact]
    public void Unmapping_the_middle_of_a_foreign_mapping_keeps_both_remnants_foreign_at_their_window_offsets()
    {
        var (_, _, mm) = Make();
        const ulong va = 0x7000_0000, window = 0x80_0000_0000;
        Assert.Equal(3UL, mm.MapForeign(va, 0x3000, window));
        Assert.Equal(0, mm.Unmap(va + 0x1000, 0x1000));
        Assert.True(mm.IsForeign(va, 0x1000));
        Assert.True(mm.IsForeign(va + 0x2000, 0x1000)); // the tail split off keeps what it is
        Assert.False(mm.IsForeign(va + 0x1000, 0x1000));
        Assert.Equal(UserAccess.Ok, mm.Translate(va + 0x2000, false, out var phys));
        Assert.Equal(window + 0x2000, phys);
    }

    [Fact]
    public void Pinned_pages_survive_munmap_until_unpinned()
    {
        var (_, alloc, mm) = Make(4);
        var va = mm.MapAnonymous(0x2000);
        var pages = new ulong[2];
        Assert.Equal(2, mm.Pin(va, pages, true));
        Assert.Equal(2L, mm.PinnedPages);
        Assert.Equal(0, mm.Unmap(va, 0x2000));
        Assert.Equal(2L, alloc.FreePages);
        mm.Unpin(pages);
        Assert.Equal(4L, alloc.FreePages);
        Assert.Equal(-14, mm.Pin(va, pages, true)); // gone: EFAULT
    }

    [Fact]
    public void Pin_of_a_partially_unmapped_range_fails_whole()
    {
        var (_, _, mm) = Make();
        var va = mm.MapAnonymous(0x1000);
        var pages = new ulong[2];
        Assert.Equal(-14, mm.Pin(va, pages, false));
        Assert.Equal(0L, mm.PinnedPages);
    }
}
