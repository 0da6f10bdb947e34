using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Tests.Vmsa;
using Doorbell.Tracing;
using Doorbell.Vmsa;

namespace Doorbell.Tests.Iommu;

public class TranslatorTests
{
    const AccessFlags R = AccessFlags.Read;
    const AccessFlags W = AccessFlags.Write;

    static (PhysicalAddressSpace Bus, TableWriter W, TranslationConfig Cfg) Setup()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 1UL << 32);
        var w = new TableWriter(bus, Granule.Size4K, 39, 1, 0x4000_0000);
        w.Leaf(0x1000, 3, 0x5000_0000, Descriptors.Af | Descriptors.Ap1 | Descriptors.Ap2); // read-only, EL0
        w.Leaf(0x2000, 3, 0x5000_1000, Descriptors.Af | Descriptors.Ap1);
        var cfg = new TranslationConfig(new Stage1Config { Low = new TranslationRegion(Granule.Size4K, 39, w.Root), Asid = 4 }, null);
        return (bus, w, cfg);
    }

    [Fact]
    public void Miss_then_hit_and_permission_faults_on_hits_too()
    {
        var (bus, _, cfg) = Setup();
        var tlb = new Iotlb();
        var tr = new Translator(bus, tlb);
        Assert.True(tr.Translate(cfg, 0x1010, R, out var e, out _));
        Assert.Equal(0x5000_0010UL, e.Translate(0x1010));
        Assert.Equal((0L, 1L), (tlb.Hits, tlb.Misses));
        Assert.True(tr.Translate(cfg, 0x1020, R, out e, out _));
        Assert.Equal((1L, 1L), (tlb.Hits, tlb.Misses));
        Assert.False(tr.Translate(cfg, 0x1020, W, out _, out var f));
        Assert.Equal((FaultKind.Permission, TranslationStage.Stage1, (sbyte)3, 0x1020UL), (f.Kind, f.Stage, f.Level, f.InputAddress));
        Assert.Equal(2L, tlb.Hits); // the fault came from the cached entry
        Assert.False(tr.Translate(cfg, 0x7000, R, out _, out f));
        Assert.Equal(FaultKind.Translation, f.Kind);
        Assert.Equal(1, tlb.Count); // faults are not cached
    }

    [Fact]
    public void An_explicit_vmid_tags_stage1_only_entries()
    {
        var (bus, _, cfg) = Setup();
        var tlb = new Iotlb();
        var tr = new Translator(bus, tlb);
        Assert.True(tr.Translate(cfg, 12, 0x1000, R, out var e, out _));
        Assert.Equal(12, e.Vmid);
        Assert.True(tlb.TryLookup(12, 4, 0x1000, out _));
        Assert.False(tlb.TryLookup(0, 4, 0x1000, out _));
        tlb.InvalidateByVmid(12);
        Assert.Equal(0, tlb.Count);
    }

    [Fact]
    public void Stale_entry_is_still_used_but_strict_mode_reports_it()
    {
        var (bus, w, cfg) = Setup();
        var strict = new StrictMonitor { Enabled = true };
        var tr = new Translator(bus, new Iotlb(), strict);
        Assert.True(tr.Translate(cfg, 0x2000, W, out _, out _));
        Assert.True(tr.Translate(cfg, 0x2000, W, out _, out _));
        Assert.Empty(strict.Violations);
        w.Leaf(0x2000, 3, 0x6000_0000, Descriptors.Af | Descriptors.Ap1); // remapped without TLBI
        Assert.True(tr.Translate(cfg, 0x2008, W, out var e, out _));
        Assert.Equal(0x5000_1008UL, e.Translate(0x2008)); // hardware keeps using the old entry
        var v = Assert.Single(strict.Violations);
        Assert.Contains("IHI 0070", v.Rule);
        Assert.Contains("0x60000008", v.Message);
        w.SetDescriptor(0x2000, 3, 0);                                      // unmapped without TLBI
        Assert.True(tr.Translate(cfg, 0x2000, R, out _, out _));
        Assert.Equal(2, strict.Violations.Count);
        tr.Tlb.InvalidateByVa(0, 4, 0x2000, leafOnly: true);
        Assert.False(tr.Translate(cfg, 0x2000, R, out _, out var f));
        Assert.Equal(FaultKind.Translation, f.Kind);
        Assert.Equal(2, strict.Violations.Count);
    }

    [Fact]
    public void Permissive_mode_reports_nothing()
    {
        var (bus, w, cfg) = Setup();
        var strict = new StrictMonitor { Enabled = false };
        var tr = new Translator(bus, new Iotlb(), strict);
        tr.Translate(cfg, 0x2000, W, out _, out _);
        w.SetDescriptor(0x2000, 3, 0);
        Assert.True(tr.Translate(cfg, 0x2000, W, out _, out _));
        Assert.Empty(strict.Violations);
    }

    [Fact]
    public void Write_to_a_cached_clean_dbm_page_rewalks_and_sets_dirty()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 1UL << 32);
        var w = new TableWriter(bus, Granule.Size4K, 39, 1, 0x4000_0000);
        w.Leaf(0x3000, 3, 0x5000_0000, Descriptors.Af | Descriptors.Ap1 | Descriptors.Ap2 | Descriptors.Dbm);
        var cfg = new TranslationConfig(new Stage1Config { Low = new TranslationRegion(Granule.Size4K, 39, w.Root), HardwareDirty = true }, null);
        var tr = new Translator(bus, new Iotlb());
        Assert.True(tr.Translate(cfg, 0x3000, R, out _, out _));
        Assert.True(tr.Translate(cfg, 0x3000, W, out var e, out var f), f.ToString());
        Assert.True(e.Stage1Permissions.HasFlag(PagePermissions.UserWrite));
        Assert.Equal(0UL, w.Read(w.EntryAddress(w.TableFor(0x3000, 3), 3, 0x3000)) & Descriptors.Ap2);
    }

    [Fact]
    public void Nested_hit_reports_a_stage2_permission_fault_with_the_ipa()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 1UL << 32);
        var alloc = new PhysPageAllocator(0x4000_0000, 1UL << 26);
        Assert.Equal(0, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage2, Granule.Size4K, 40, 48, out var s2));
        Assert.Equal(0, s2!.Map(0x4000_0000, 0x4000_0000, 0x400_0000, IoProt.ReadWrite)); // stage-1 tables: IPA = PA
        Assert.Equal(0, s2.Map(0x1_0000_0000, 0x2_0000_0000, 0x20_0000, IoProt.Read));     // data: read-only at stage 2
        Assert.Equal(0, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage1, Granule.Size4K, 39, 40, out var s1));
        Assert.Equal(0, s1!.Map(0x8000, 0x1_0000_3000, 0x1000, IoProt.ReadWrite));
        var cfg = new TranslationConfig(s1.CreateStage1Config(asid: 2), s2.CreateStage2Config(vmid: 6));
        var tlb = new Iotlb();
        var tr = new Translator(bus, tlb);
        Assert.True(tr.Translate(cfg, 0x8010, R, out var e, out _));
        Assert.Equal(0x2_0000_3010UL, e.Translate(0x8010));
        Assert.False(tr.Translate(cfg, 0x8010, W, out _, out var f));
        Assert.Equal((FaultKind.Permission, TranslationStage.Stage2, 0x1_0000_3010UL, (sbyte)2), (f.Kind, f.Stage, f.Ipa, f.Level));
        Assert.Equal(1, tlb.Hits);
        tlb.InvalidateByIpa(6, 0x1_0010_0000, leafOnly: true); // same 2M stage-2 block: the combined entry goes
        Assert.Equal(0, tlb.Count);
    }

    [Fact]
    public void Hit_path_allocates_nothing()
    {
        var (bus, _, cfg) = Setup();
        var tr = new Translator(bus, new Iotlb());
        tr.Translate(cfg, 0x1000, R, out _, out _);
        ulong sum = 0;
        AllocationAssert.None(() =>
        {
            for (var i = 0; i < 50_000; i++)
            {
                tr.Translate(cfg, 0x1000 + (ulong)(i & 0xFFF), R, out var e, out _);
                sum += e.OutputBase;
                tr.Translate(cfg, 0x1000, W, out _, out var f);
                sum += (ulong)f.Kind;
            }
        });
        Assert.NotEqual(0UL, sum);
    }
}
