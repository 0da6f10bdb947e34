using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Vmsa;

namespace Doorbell.Tests.Iommu;

/// <summary>The matrix of Linux's io-pgtable-arm boot selftest, run against IoPageTable and checked through the hardware walker.</summary>
public class IoPageTableTests
{
    const ulong Sz1G = 1UL << 30;
    const ulong TableRam = 0xC000_0000; // below 2^32: tables must sit inside every OAS

    static readonly int[] AddressSizes = [32, 36, 40, 42, 44, 48];

    public static TheoryData<IoPageTableFormat, Granule, int, int> Matrix()
    {
        var d = new TheoryData<IoPageTableFormat, Granule, int, int>();
        foreach (var fmt in new[] { IoPageTableFormat.Stage1, IoPageTableFormat.Stage2 })
            foreach (var g in new[] { Granule.Size4K, Granule.Size16K, Granule.Size64K })
                for (var j = 0; j < AddressSizes.Length; j++)
                    for (var k = 0; k <= j; k++) // ias <= oas, as the selftest does (ias > oas is not valid for stage 2)
                        d.Add(fmt, g, AddressSizes[k], AddressSizes[j]);
        return d;
    }

    static (PhysicalAddressSpace Bus, PhysPageAllocator Alloc) NewMachine()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(TableRam), 1UL << 28, "tables");
        return (bus, new PhysPageAllocator(TableRam, 1UL << 28));
    }

    static TranslationConfig HardwareView(IoPageTable t) => t.Format == IoPageTableFormat.Stage1
        ? new TranslationConfig(t.CreateStage1Config(asid: 1), null)
        : new TranslationConfig(null, t.CreateStage2Config(vmid: 1));

    [Theory]
    [MemberData(nameof(Matrix))]
    public void Linux_selftest_matrix(IoPageTableFormat fmt, Granule g, int ias, int oas)
    {
        var (bus, alloc) = NewMachine();
        Assert.Equal(0, IoPageTable.Create(bus, alloc, fmt, g, ias, oas, out var t));
        var pt = t!;
        var walker = new PageTableWalker(bus);
        var cfg = HardwareView(pt);
        if (fmt == IoPageTableFormat.Stage2) Assert.Null(cfg.Stage2!.Validate());
        else Assert.Null(cfg.Stage1!.Low.Validate());
        var sizes = new List<ulong>();
        for (var b = pt.PageSizeBitmap; b != 0; b &= b - 1) sizes.Add(b & ~(b - 1));
        Assert.Equal(g == Granule.Size4K ? 3 : 2, sizes.Count);

        // Empty page tables translate nothing.
        foreach (var iova in new[] { 42UL, Sz1G + 42, 2 * Sz1G + 42 })
        {
            Assert.Equal(0UL, pt.IovaToPhys(iova));
            if (iova >> ias == 0) Assert.Equal(FaultKind.Translation, walker.Walk(cfg, iova, AccessFlags.Read).Fault.Kind);
        }

        // Each page size maps at IOVAs 1G apart; an overlapping map fails; the walker agrees with iova_to_phys.
        ulong at = 0;
        foreach (var size in sizes)
        {
            Assert.Equal(0, pt.Map(at, at, size, IoProt.Read | IoProt.Write | IoProt.NoExec | IoProt.Cache));
            Assert.Equal(-Errno.EEXIST, pt.Map(at, at + size, size, IoProt.Read | IoProt.NoExec));
            Assert.Equal(at + 42, pt.IovaToPhys(at + 42));
            var r = walker.Walk(cfg, at + size - 8, AccessFlags.Write);
            Assert.False(r.IsFault, r.Fault.ToString());
            Assert.Equal(at + size - 8, r.Entry.Translate(at + size - 8));
            Assert.Equal(size, r.Entry.SizeBytes); // the largest block the alignment allows was chosen
            Assert.Equal(FaultKind.Permission, walker.Walk(cfg, at, AccessFlags.Execute).Fault.Kind);
            at += Sz1G;
        }

        // Full unmap returns the size, the translation is gone, and a remap works.
        at = 0;
        foreach (var size in sizes)
        {
            Assert.Equal(size, pt.Unmap(at, size));
            Assert.Equal(0UL, pt.IovaToPhys(at + 42));
            Assert.Equal(FaultKind.Translation, walker.Walk(cfg, at + 42, AccessFlags.Read).Fault.Kind);
            Assert.Equal(0, pt.Map(at, at, size, IoProt.Write));
            Assert.Equal(at + 42, pt.IovaToPhys(at + 42));
            at += Sz1G;
        }

        // The largest page at the top of the input range.
        var largest = sizes[^1];
        var top = (1UL << ias) - largest;
        var pa = (1UL << oas) - largest;
        Assert.Equal(0, pt.Map(top, pa, largest, IoProt.Read));
        var last = (1UL << ias) - 1;
        Assert.Equal((1UL << oas) - 1, pt.IovaToPhys(last));
        var rt = walker.Walk(cfg, last, AccessFlags.Read);
        Assert.False(rt.IsFault, rt.Fault.ToString());
        Assert.Equal((1UL << oas) - 1, rt.Entry.Translate(last));
        Assert.Equal(FaultKind.Permission, walker.Walk(cfg, last, AccessFlags.Write).Fault.Kind);
        Assert.Equal(-Errno.ERANGE, pt.Map(1UL << ias, 0, largest, IoProt.Read));
    }

    [Fact]
    public void Stage2_concatenates_initial_tables_like_linux_and_where_sl0_rules_require()
    {
        var (bus, alloc) = NewMachine();
        Assert.Equal(0, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage2, Granule.Size4K, 40, 40, out var t));
        Assert.Equal((1, 2), (t!.StartLevel, t.ConcatenatedTables)); // level 0 with 2 entries → 2 level-1 tables
        Assert.Equal(0, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage2, Granule.Size4K, 48, 48, out t));
        Assert.Equal((0, 1), (t!.StartLevel, t.ConcatenatedTables));
        Assert.Equal(0, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage2, Granule.Size16K, 40, 40, out t));
        Assert.Equal((2, 16), (t!.StartLevel, t.ConcatenatedTables)); // 16K level-1 start needs > 40-bit PA
        Assert.Equal(0, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage1, Granule.Size4K, 40, 40, out t));
        Assert.Equal((0, 1), (t!.StartLevel, t.ConcatenatedTables));
    }

    [Fact]
    public void Errors_are_linux_errno_values()
    {
        var (bus, alloc) = NewMachine();
        Assert.Equal(-Errno.EINVAL, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage1, Granule.Size4K, 48, 50, out _));
        Assert.Equal(-Errno.EINVAL, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage2, Granule.Size4K, 44, 40, out _));
        Assert.Equal(0, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage1, Granule.Size4K, 39, 40, out var t));
        var pt = t!;
        Assert.Equal(-Errno.EINVAL, pt.Map(0x1000, 0x2000, 0, IoProt.Read));
        Assert.Equal(-Errno.EINVAL, pt.Map(0x1800, 0x2000, 0x1000, IoProt.Read));
        Assert.Equal(-Errno.EINVAL, pt.Map(0x1000, 0x2000, 0x800, IoProt.Read));
        Assert.Equal(-Errno.ERANGE, pt.Map(1UL << 39, 0x2000, 0x1000, IoProt.Read));
        Assert.Equal(-Errno.ERANGE, pt.Map(0x1000, 1UL << 40, 0x1000, IoProt.Read));
        Assert.Equal(0, pt.Map(0x1000, 0x2000, 0x1000, IoProt.None)); // nothing mapped, like Linux
        Assert.Equal(0UL, pt.IovaToPhys(0x1000));

        // An overlapping map fails with -EEXIST and undoes what it mapped first.
        Assert.Equal(0, pt.Map(0x5000, 0x9000, 0x1000, IoProt.Read));
        Assert.Equal(-Errno.EEXIST, pt.Map(0x3000, 0x3000, 0x4000, IoProt.Read));
        Assert.Equal(0UL, pt.IovaToPhys(0x3000));
        Assert.Equal(0UL, pt.IovaToPhys(0x4000));
        Assert.Equal(0x9000UL, pt.IovaToPhys(0x5000));
    }

    [Fact]
    public void Map_splits_into_the_largest_blocks_and_unmap_stops_at_holes_and_refuses_partial_blocks()
    {
        var (bus, alloc) = NewMachine();
        Assert.Equal(0, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage1, Granule.Size4K, 39, 40, out var t));
        var pt = t!;
        // 4K + 2M + 4K pieces: [0x1F_F000, 0x40_1000) → 4K at 0x1F_F000, 2M at 0x20_0000, 4K at 0x40_0000.
        Assert.Equal(0, pt.Map(0x1F_F000, 0x8001F_F000, 0x20_2000, IoProt.ReadWrite));
        var walker = new PageTableWalker(bus);
        var cfg = new TranslationConfig(pt.CreateStage1Config(), null);
        Assert.Equal(12, walker.Walk(cfg, 0x1F_F000, AccessFlags.Read).Entry.SizeLog2);
        Assert.Equal(21, walker.Walk(cfg, 0x30_0000, AccessFlags.Read).Entry.SizeLog2);
        Assert.Equal(12, walker.Walk(cfg, 0x40_0000, AccessFlags.Read).Entry.SizeLog2);
        Assert.Equal(0UL, pt.Unmap(0x20_0000, 0x1000)); // part of the 2M block: refused
        Assert.Equal(0x80030_0000UL, pt.IovaToPhys(0x30_0000));
        Assert.Equal(0x20_1000UL, pt.Unmap(0x20_0000, 0x30_0000)); // 2M + 4K, then a hole stops it
        Assert.Equal(0x8001F_F000UL, pt.IovaToPhys(0x1F_F000));
        Assert.Equal(0UL, pt.IovaToPhys(0x40_0000));
    }

    sealed class FlushLog : IIoTlbFlushOps
    {
        public readonly List<string> Calls = [];
        public void FlushWalk(ulong iova, ulong size, ulong granule) => Calls.Add($"walk {iova:x} {size:x}");
        public void AddPage(ulong iova, ulong granule) => Calls.Add($"page {iova:x} {granule:x}");
    }

    [Fact]
    public void Unmapping_a_whole_table_range_frees_the_table_and_asks_for_a_walk_flush()
    {
        var (bus, alloc) = NewMachine();
        var log = new FlushLog();
        Assert.Equal(0, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage1, Granule.Size4K, 39, 40, out var t, log));
        var pt = t!;
        var before = alloc.BytesInUse;
        Assert.Equal(0, pt.Map(0x20_0000, 0x1000_0000, 0x1000, IoProt.Read));
        Assert.Equal(0, pt.Map(0x20_3000, 0x1000_3000, 0x1000, IoProt.Read));
        Assert.Equal(before + 2 * 4096, alloc.BytesInUse); // level-2 and level-3 tables
        Assert.Equal(0x1000UL, pt.Unmap(0x20_3000, 0x1000));
        Assert.Equal("page 203000 1000", Assert.Single(log.Calls));
        Assert.Equal(0x20_0000UL, pt.Unmap(0x20_0000, 0x20_0000));
        Assert.Equal("walk 200000 200000", log.Calls[1]);
        Assert.Equal(before + 4096, alloc.BytesInUse);
        Assert.Equal(0UL, pt.IovaToPhys(0x20_0000));
    }

    [Fact]
    public void A_block_replaces_an_empty_table_but_not_one_with_mappings()
    {
        var (bus, alloc) = NewMachine();
        var log = new FlushLog();
        Assert.Equal(0, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage1, Granule.Size4K, 39, 40, out var t, log));
        var pt = t!;
        Assert.Equal(0, pt.Map(0x20_0000, 0x1000_0000, 0x1000, IoProt.Read));
        Assert.Equal(0, pt.Map(0x20_1000, 0x1000_1000, 0x1000, IoProt.Read));
        Assert.Equal(0x1000UL, pt.Unmap(0x20_0000, 0x1000));
        Assert.Equal(-Errno.EEXIST, pt.Map(0x20_0000, 0x4000_0000, 0x20_0000, IoProt.Read)); // a page still lives below
        Assert.Equal(0x1000_1000UL, pt.IovaToPhys(0x20_1000));
        Assert.Equal(0x1000UL, pt.Unmap(0x20_1000, 0x1000));
        var inUse = alloc.BytesInUse;
        Assert.Equal(0, pt.Map(0x20_0000, 0x4000_0000, 0x20_0000, IoProt.Read));           // empty table → 2M block
        Assert.Equal(inUse - 4096, alloc.BytesInUse);
        Assert.Equal("walk 200000 200000", log.Calls[^1]);
        var r = new PageTableWalker(bus).Walk(new TranslationConfig(pt.CreateStage1Config(), null), 0x20_1234, AccessFlags.Read);
        Assert.Equal((21, 0x4000_1234UL), ((int)r.Entry.SizeLog2, r.Entry.Translate(0x20_1234)));
    }

    [Fact]
    public void Allocator_exhaustion_is_enomem()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(TableRam), 1UL << 20);
        var alloc = new PhysPageAllocator(TableRam, 2 * 4096);
        Assert.Equal(0, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage1, Granule.Size4K, 48, 48, out var t));
        Assert.Equal(-Errno.ENOMEM, t!.Map(0x1000, 0x1000, 0x1000, IoProt.Read));
    }
}
