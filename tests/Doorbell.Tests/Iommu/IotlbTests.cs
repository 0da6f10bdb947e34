using Doorbell.Iommu;
using Doorbell.Vmsa;

namespace Doorbell.Tests.Iommu;

public class IotlbTests
{
    static TlbEntry S1(ushort vmid, ushort asid, ulong va, int sizeLog2, ulong pa, bool global = false, int level = 3, Granule g = Granule.Size4K) => new()
    {
        InputBase = va & ~((1UL << sizeLog2) - 1),
        OutputBase = pa,
        SizeLog2 = (byte)sizeLog2,
        Level = (sbyte)level,
        Granule = g,
        Stage1Permissions = PagePermissions.All,
        Stage2Permissions = PagePermissions.All,
        Asid = asid,
        Vmid = vmid,
        Global = global,
        HasStage1 = true,
    };

    static TlbEntry S2(ushort vmid, ulong ipa, int sizeLog2, ulong pa, int level = 3) => new()
    {
        InputBase = ipa & ~((1UL << sizeLog2) - 1),
        OutputBase = pa,
        SizeLog2 = (byte)sizeLog2,
        Level = (sbyte)level,
        Stage2Level = (sbyte)level,
        Granule = Granule.Size4K,
        Stage1Permissions = PagePermissions.All,
        Stage2Permissions = PagePermissions.All,
        Vmid = vmid,
        Global = true,
        HasStage2 = true,
        IpaBase = ipa & ~((1UL << sizeLog2) - 1),
        Stage2SizeLog2 = (byte)sizeLog2,
    };

    static TlbEntry Nested(ushort vmid, ushort asid, ulong va, ulong ipa, int s2SizeLog2, ulong pa)
    {
        var e = S1(vmid, asid, va, 12, pa);
        e.HasStage2 = true;
        e.IpaBase = ipa;
        e.Stage2SizeLog2 = (byte)s2SizeLog2;
        return e;
    }

    static bool Has(Iotlb t, ushort vmid, ushort asid, ulong input) => t.TryLookup(vmid, asid, input, out _);

    [Fact]
    public void Lookup_matches_vmid_asid_or_global_and_every_block_size_in_use()
    {
        var t = new Iotlb();
        t.Insert(S1(1, 5, 0x1000, 12, 0xA000));
        t.Insert(S1(1, 5, 0x4000_0000, 21, 0x8000_0000));
        t.Insert(S1(1, 0, 0x8000_0000, 30, 0x1_0000_0000, global: true, level: 1));
        t.Insert(S1(1, 5, 0x10_0000, 16, 0x7_0000)); // contiguous 64K run
        Assert.True(t.TryLookup(1, 5, 0x1FF8, out var e));
        Assert.Equal(0xAFF8UL, e.Translate(0x1FF8));
        Assert.True(t.TryLookup(1, 5, 0x401F_FFFF, out e));
        Assert.Equal(0x801F_FFFFUL, e.Translate(0x401F_FFFF));
        Assert.True(t.TryLookup(1, 5, 0x10_F000, out e));
        Assert.Equal(0x7_F000UL, e.Translate(0x10_F000));
        Assert.True(Has(t, 1, 99, 0xBFFF_FFFF));  // global: any ASID
        Assert.False(Has(t, 1, 6, 0x1000));       // other ASID
        Assert.False(Has(t, 2, 5, 0x1000));       // other VMID
        Assert.False(Has(t, 1, 5, 0x2000));
        Assert.Equal(4, t.Hits);
        Assert.Equal(3, t.Misses);
    }

    [Fact]
    public void Invalidate_by_asid_keeps_global_and_other_asids_and_stage2_entries()
    {
        var t = new Iotlb();
        t.Insert(S1(1, 5, 0x1000, 12, 0xA000));
        t.Insert(S1(1, 6, 0x1000, 12, 0xB000));
        t.Insert(S1(1, 5, 0x2000, 12, 0xC000, global: true));
        t.Insert(S1(2, 5, 0x1000, 12, 0xD000));
        t.Insert(S2(1, 0x5000, 12, 0xE000));
        t.InvalidateByAsid(1, 5);
        Assert.True(Has(t, 1, 5, 0x5000));
        Assert.False(Has(t, 1, 5, 0x1000));
        Assert.True(t.TryLookup(1, 6, 0x1000, out var e) && e.OutputBase == 0xB000);
        Assert.True(Has(t, 1, 5, 0x2000));
        Assert.True(t.TryLookup(2, 5, 0x1000, out e) && e.OutputBase == 0xD000);
        Assert.Equal(4, t.Count);
        Assert.Equal(1, t.Invalidated);
    }

    [Fact]
    public void Invalidate_by_va_removes_that_asid_and_globals_at_that_address_only()
    {
        var t = new Iotlb();
        t.Insert(S1(1, 5, 0x1000, 12, 0xA000));
        t.Insert(S1(1, 6, 0x1000, 12, 0xB000));
        t.Insert(S1(1, 7, 0x4000_0000, 21, 0x8000_0000, global: true));
        t.Insert(S1(1, 5, 0x3000, 12, 0xC000));
        t.InvalidateByVa(1, 5, 0x1ABC, leafOnly: true);
        t.InvalidateByVa(1, 5, 0x4010_0000, leafOnly: false); // inside the global 2M block
        Assert.False(Has(t, 1, 5, 0x1000));
        Assert.True(Has(t, 1, 6, 0x1000));
        Assert.False(Has(t, 1, 7, 0x4000_0000));
        Assert.True(Has(t, 1, 5, 0x3000));
        t.InvalidateByVaAllAsids(1, 0x1000, leafOnly: true);
        Assert.False(Has(t, 1, 6, 0x1000));
        Assert.True(Has(t, 1, 5, 0x3000));
        Assert.Equal(1, t.Count);
    }

    [Fact]
    public void Invalidate_by_va_ignores_the_top_byte_of_the_command_address()
    {
        var t = new Iotlb();
        t.Insert(S1(1, 5, 0xFFFF_FFFF_FFFF_F000, 12, 0xA000));
        t.InvalidateByVa(1, 5, 0x00FF_FFFF_FFFF_F000, leafOnly: true);
        Assert.Equal(0, t.Count);
    }

    [Fact]
    public void Invalidate_by_ipa_removes_stage2_and_nested_entries_derived_from_it()
    {
        var t = new Iotlb();
        t.Insert(S2(1, 0x20_0000, 21, 0x4020_0000, level: 2));
        t.Insert(S2(1, 0x60_0000, 21, 0x4060_0000, level: 2));
        t.Insert(Nested(1, 5, 0x7000, 0x21_3000, 21, 0x4021_3000));   // built on the first 2M stage-2 block
        t.Insert(Nested(1, 5, 0x8000, 0x61_0000, 21, 0x4061_0000));
        t.Insert(S1(1, 5, 0x20_0000, 12, 0x9000));                      // stage-1-only entry with the same input: untouched
        t.Insert(S2(2, 0x20_0000, 21, 0x5020_0000, level: 2));          // other VMID
        t.InvalidateByIpa(1, 0x3F_F000, leafOnly: true);                // last page of the first block
        Assert.False(Has(t, 1, 0, 0x20_0000) && t.TryLookup(1, 0, 0x20_0000, out var x) && x.HasStage2 && !x.HasStage1);
        Assert.False(Has(t, 1, 5, 0x7000));
        Assert.True(Has(t, 1, 5, 0x8000));
        Assert.True(Has(t, 1, 0, 0x60_0000));
        Assert.True(Has(t, 2, 0, 0x20_0000));
        Assert.True(t.TryLookup(1, 5, 0x20_0000, out var s1) && s1.HasStage1);
        Assert.Equal(4, t.Count);
    }

    [Fact]
    public void Invalidate_by_vmid_and_nh_all_and_all()
    {
        var t = new Iotlb();
        t.Insert(S1(1, 5, 0x1000, 12, 0xA000));
        t.Insert(S2(1, 0x1000, 12, 0xB000));
        t.Insert(S1(2, 5, 0x1000, 12, 0xC000));
        t.InvalidateStage1ByVmid(1);
        Assert.Equal(2, t.Count);
        Assert.True(t.TryLookup(1, 5, 0x1000, out var e) && e.OutputBase == 0xB000);
        t.InvalidateByVmid(1);
        Assert.Equal(1, t.Count);
        Assert.True(Has(t, 2, 5, 0x1000));
        t.InvalidateAll();
        Assert.Equal(0, t.Count);
        Assert.False(Has(t, 2, 5, 0x1000));
    }

    [Theory]
    [InlineData(1, 0, 0, false, 4096UL)]                  // SMMUv3: (NUM+1) * 2^SCALE granules
    [InlineData(1, 31, 0, false, 4096UL * 32)]
    [InlineData(1, 0, 6, false, 4096UL * 64)]
    [InlineData(2, 3, 11, false, 16384UL * 4 * 2048)]
    [InlineData(3, 1, 16, false, 65536UL * 2 * 65536)]
    [InlineData(1, 31, 31, false, 4096UL * 32 << 31)]
    [InlineData(1, 0, 0, true, 4096UL * 2)]               // Arm ARM TLBI RVA: (NUM+1) * 2^(5*SCALE+1)
    [InlineData(1, 0, 1, true, 4096UL * 64)]
    [InlineData(3, 1, 3, true, 65536UL * 2 * 65536)]
    public void Range_length_follows_num_and_scale(int tg, int num, int scale, bool cpu, ulong bytes)
    {
        Assert.Equal(bytes, new TlbiRange(tg, num, scale, 0, cpu).Length);
    }

    [Fact]
    public void Range_encoding_round_trips_for_page_counts()
    {
        var r = TlbiRange.ForPages(Granule.Size4K, 64)!.Value;
        Assert.Equal(64UL * 4096, r.Length);
        Assert.Equal((1, 0, 6), (r.Tg, r.Num, r.Scale));
        r = TlbiRange.ForPages(Granule.Size64K, 24)!.Value; // 3 * 2^3
        Assert.Equal((3, 2, 3), (r.Tg, r.Num, r.Scale));
        Assert.Equal(24UL * 65536, r.Length);
        Assert.Null(TlbiRange.ForPages(Granule.Size4K, 33)); // 33 granules need two commands
        Assert.Equal(2UL * 16384, TlbiRange.ForPages(Granule.Size16K, 2)!.Value.Length);
    }

    [Fact]
    public void Range_invalidation_removes_exactly_the_overlapping_entries_and_honours_ttl()
    {
        var t = new Iotlb();
        for (ulong p = 0; p < 16; p++)
            t.Insert(S1(1, 5, 0x10_0000 + p * 0x1000, 12, 0x9000_0000 + p * 0x1000));
        t.Insert(S1(1, 5, 0x20_0000, 21, 0xA000_0000, level: 2));
        // TG=4K, NUM=2, SCALE=2: (2+1) * 2^2 = 12 pages from 0x10_2000 → [0x10_2000, 0x10_E000)
        t.InvalidateByVaRange(1, 5, 0x10_2000, new TlbiRange(1, 2, 2, 0), leafOnly: true);
        for (ulong p = 0; p < 16; p++)
            Assert.Equal(p is < 2 or >= 14, Has(t, 1, 5, 0x10_0000 + p * 0x1000));
        // Arm ARM encoding: NUM=0, SCALE=1 → 64 pages from 0x10_0000 covers the rest.
        t.InvalidateByVaRange(1, 5, 0x10_0000, new TlbiRange(1, 0, 1, 0, CpuEncoding: true), leafOnly: true);
        for (ulong p = 0; p < 16; p++)
            Assert.False(Has(t, 1, 5, 0x10_0000 + p * 0x1000));
        Assert.True(Has(t, 1, 5, 0x20_0000));
        // TTL = 3 (level-3 leaves only) over the 2M block: the level-2 block stays.
        t.InvalidateByVaRange(1, 5, 0x20_0000, new TlbiRange(1, 0, 0, 3), leafOnly: true);
        Assert.True(Has(t, 1, 5, 0x20_0000));
        t.InvalidateByVaRange(1, 5, 0x20_0000, new TlbiRange(1, 0, 0, 2), leafOnly: true);
        Assert.False(Has(t, 1, 5, 0x20_0000));
        // By-IPA range.
        t.Insert(S2(3, 0x100_0000, 12, 0x1000));
        t.Insert(S2(3, 0x100_2000, 12, 0x2000));
        t.InvalidateByIpaRange(3, 0x100_0000, new TlbiRange(1, 1, 0, 0), leafOnly: true); // 2 pages
        Assert.False(Has(t, 3, 0, 0x100_0000));
        Assert.True(Has(t, 3, 0, 0x100_2000));
    }

    [Fact]
    public void Capacity_eviction_replaces_one_way_never_flushes_all()
    {
        var t = new Iotlb(sets: 4, ways: 2);
        for (ulong p = 0; p < 64; p++)
            t.Insert(S1(1, 5, p << 12, 12, 0x8000_0000 + (p << 12)));
        Assert.Equal(8, t.Count);                  // full, not emptied
        Assert.Equal(64 - 8, t.Evictions);
        var present = 0;
        for (ulong p = 0; p < 64; p++)
            if (t.TryLookup(1, 5, p << 12, out var e)) { present++; Assert.Equal(0x8000_0000 + (p << 12), e.OutputBase); }
        Assert.Equal(8, present);
        Assert.True(Has(t, 1, 5, 63UL << 12));     // the newest always survives its own insertion
    }

    [Fact]
    public void Recently_used_entries_survive_eviction()
    {
        var t = new Iotlb(sets: 2, ways: 4);
        var hot = S1(1, 5, 0x1000, 12, 0xA000);
        t.Insert(hot);
        for (ulong p = 2; p < 200; p++)
        {
            Assert.True(Has(t, 1, 5, 0x1000), $"hot entry evicted at insert {p}");
            t.Insert(S1(1, 5, p << 12, 12, p << 12));
        }
    }

    [Fact]
    public void Reinserting_the_same_key_replaces_instead_of_duplicating()
    {
        var t = new Iotlb();
        t.Insert(S1(1, 5, 0x1000, 12, 0xA000));
        t.Insert(S1(1, 5, 0x1000, 12, 0xB000));
        Assert.Equal(1, t.Count);
        Assert.True(t.TryLookup(1, 5, 0x1000, out var e) && e.OutputBase == 0xB000);
    }

    [Fact]
    public void Hit_allocates_nothing()
    {
        var t = new Iotlb();
        t.Insert(S1(1, 5, 0x1000, 12, 0xA000));
        t.Insert(S1(1, 5, 0x4000_0000, 21, 0x8000_0000));
        t.TryLookup(1, 5, 0x1000, out _);
        var before = GC.GetAllocatedBytesForCurrentThread();
        ulong sum = 0;
        for (var i = 0; i < 100_000; i++)
        {
            t.TryLookup(1, 5, 0x1000 + (ulong)(i & 0xFFF), out var e);
            sum += e.OutputBase;
            t.TryLookup(1, 5, 0x4000_0000 + (ulong)i, out e);
            sum += e.OutputBase;
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(200_001, t.Hits);
        Assert.NotEqual(0UL, sum);
    }
}
