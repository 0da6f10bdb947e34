using Doorbell.Memory;
using Doorbell.Vmsa;

namespace Doorbell.Tests.Vmsa;

/// <summary>Hand-made vectors for edge cases of the VMSAv8-64 walk (Arm ARM DDI 0487 D8).</summary>
public class WalkerVectorTests
{
    const ulong RamBase = 0x4000_0000;
    const ulong TableArea = 0x4000_0000;
    const AccessFlags R = AccessFlags.Read;
    const AccessFlags W = AccessFlags.Write;
    const AccessFlags PR = AccessFlags.Read | AccessFlags.Privileged;
    const AccessFlags PW = AccessFlags.Write | AccessFlags.Privileged;
    const AccessFlags PX = AccessFlags.Execute | AccessFlags.Privileged;
    const AccessFlags UX = AccessFlags.Execute;

    static PhysicalAddressSpace NewBus()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(RamBase), 1UL << 36);
        return bus;
    }

    static TranslationConfig S1(Granule g, int ias, ulong ttb, int oas = 48, Action<Stage1Config>? _ = null) =>
        new(new Stage1Config { Low = new TranslationRegion(g, ias, ttb), OutputSize = oas }, null);

    static (PhysicalAddressSpace Bus, PageTableWalker Walker, TableWriter W) S1Setup(Granule g, int ias)
    {
        var bus = NewBus();
        var w = new TableWriter(bus, g, ias, new TranslationRegion(g, ias, 0).StartLevel, TableArea);
        return (bus, new PageTableWalker(bus), w);
    }

    [Fact]
    public void Four_level_4K_page_block_and_1G_block_translate()
    {
        var (_, walker, w) = S1Setup(Granule.Size4K, 48);
        Assert.Equal(0, w.StartLevel);
        w.Leaf(0x0000_8000_1234_5000, 3, 0x5_6789_A000, TableWriter.S1Rw);
        w.Leaf(0x0000_8000_4000_0000, 2, 0x6_0020_0000, TableWriter.S1Rw);
        w.Leaf(0x0000_4000_4000_0000, 1, 0x7_4000_0000, TableWriter.S1Rw);
        var cfg = S1(Granule.Size4K, 48, w.Root);

        var r = walker.Walk(cfg, 0x0000_8000_1234_5ABC, PR);
        Assert.False(r.IsFault, r.Fault.ToString());
        Assert.Equal(0x5_6789_AABCUL, r.Entry.Translate(0x0000_8000_1234_5ABC));
        Assert.Equal(12, r.Entry.SizeLog2);
        Assert.Equal(3, r.Entry.Level);

        r = walker.Walk(cfg, 0x0000_8000_401F_FFF8, PR);
        Assert.Equal(0x6_003F_FFF8UL, r.Entry.Translate(0x0000_8000_401F_FFF8));
        Assert.Equal(21, r.Entry.SizeLog2);

        r = walker.Walk(cfg, 0x0000_4000_7FFF_0000, PR);
        Assert.Equal(0x7_7FFF_0000UL, r.Entry.Translate(0x0000_4000_7FFF_0000));
        Assert.Equal((30, 1), (r.Entry.SizeLog2, (int)r.Entry.Level));
    }

    [Fact]
    public void Block_descriptors_where_the_granule_has_none_are_translation_faults()
    {
        // 4K level 0 block, 16K level 1 block (48-bit OA), 64K level 1 block (48-bit OA), block encoding at level 3.
        var (_, walker, w) = S1Setup(Granule.Size4K, 48);
        w.SetDescriptor(0x0000_0080_0000_0000, 0, Descriptors.Leaf(0x80_0000_0000, Granule.Size4K, 0, TableWriter.S1Rw));
        w.SetDescriptor(0x1000, 3, 0x5000_0000UL | Descriptors.Valid | TableWriter.S1Rw); // bit 1 clear at level 3: reserved
        var cfg = S1(Granule.Size4K, 48, w.Root);
        AssertFault(walker.Walk(cfg, 0x0000_0080_0000_0000, PR), FaultKind.Translation, TranslationStage.Stage1, 0);
        AssertFault(walker.Walk(cfg, 0x1000, PR), FaultKind.Translation, TranslationStage.Stage1, 3);

        var (_, walker16, w16) = S1Setup(Granule.Size16K, 47);
        Assert.Equal(1, w16.StartLevel);
        w16.SetDescriptor(0x10_0000_0000, 1, Descriptors.Leaf(0x10_0000_0000, Granule.Size16K, 1, TableWriter.S1Rw));
        w16.Leaf(0x2000_0000, 2, 0x4200_0000, TableWriter.S1Rw); // 32M block at level 2 is fine
        var cfg16 = S1(Granule.Size16K, 47, w16.Root);
        AssertFault(walker16.Walk(cfg16, 0x10_0000_0000, PR), FaultKind.Translation, TranslationStage.Stage1, 1);
        Assert.Equal(0x4300_0000UL, walker16.Walk(cfg16, 0x2100_0000, PR).Entry.Translate(0x2100_0000));

        var (_, walker64, w64) = S1Setup(Granule.Size64K, 48);
        Assert.Equal(1, w64.StartLevel);
        w64.SetDescriptor(0x400_0000_0000, 1, Descriptors.Leaf(0x400_0000_0000, Granule.Size64K, 1, TableWriter.S1Rw));
        w64.Leaf(0x2000_0000, 2, 0x6000_0000, TableWriter.S1Rw); // 512M block at level 2
        var cfg64 = S1(Granule.Size64K, 48, w64.Root);
        AssertFault(walker64.Walk(cfg64, 0x400_0000_0000, PR), FaultKind.Translation, TranslationStage.Stage1, 1);
        Assert.Equal(0x6000_1000UL, walker64.Walk(cfg64, 0x2000_1000, PR).Entry.Translate(0x2000_1000));
    }

    [Theory]
    [InlineData(Granule.Size4K, 48)]
    [InlineData(Granule.Size4K, 16)]
    [InlineData(Granule.Size4K, 39)]
    [InlineData(Granule.Size4K, 25)]
    [InlineData(Granule.Size16K, 48)]
    [InlineData(Granule.Size16K, 16)]
    [InlineData(Granule.Size16K, 36)]
    [InlineData(Granule.Size64K, 48)]
    [InlineData(Granule.Size64K, 17)]
    [InlineData(Granule.Size64K, 42)]
    public void Input_size_limits_last_address_translates_and_one_past_faults_at_level_0(Granule g, int ias)
    {
        var (_, walker, w) = S1Setup(g, ias);
        var last = (1UL << ias) - 1;
        var page = last & ~(g.Bytes() - 1);
        w.Leaf(page, 3, 0x9_0000_0000, TableWriter.S1Rw);
        w.Leaf(0, 3, 0x9_1000_0000, TableWriter.S1Rw);
        var cfg = S1(g, ias, w.Root);
        Assert.Null(cfg.Stage1!.Low.Validate());
        var r = walker.Walk(cfg, last, PR);
        Assert.False(r.IsFault, r.Fault.ToString());
        Assert.Equal(0x9_0000_0000UL + (last - page), r.Entry.Translate(last));
        Assert.Equal(0x9_1000_0000UL, walker.Walk(cfg, 0, PR).Entry.OutputBase);
        AssertFault(walker.Walk(cfg, last + 1, PR), FaultKind.Translation, TranslationStage.Stage1, 0);
    }

    [Fact]
    public void Walk_levels_per_granule_and_input_size()
    {
        Assert.Equal(3, new TranslationRegion(Granule.Size4K, 16, 0).StartLevel);
        Assert.Equal(1, new TranslationRegion(Granule.Size4K, 39, 0).StartLevel);
        Assert.Equal(0, new TranslationRegion(Granule.Size4K, 40, 0).StartLevel);
        Assert.Equal(0, new TranslationRegion(Granule.Size16K, 48, 0).StartLevel);
        Assert.Equal(1, new TranslationRegion(Granule.Size16K, 47, 0).StartLevel);
        Assert.Equal(1, new TranslationRegion(Granule.Size64K, 48, 0).StartLevel);
        Assert.Equal(2, new TranslationRegion(Granule.Size64K, 42, 0).StartLevel);
        Assert.Equal(3, new TranslationRegion(Granule.Size64K, 17, 0).StartLevel);
        Assert.NotNull(new TranslationRegion(Granule.Size64K, 16, 0).Validate());
        Assert.NotNull(new TranslationRegion(Granule.Size4K, 49, 0).Validate());
    }

    [Theory]
    [InlineData(Granule.Size4K, 3, 16)]
    [InlineData(Granule.Size4K, 2, 25)]
    [InlineData(Granule.Size4K, 1, 34)]
    [InlineData(Granule.Size16K, 3, 21)]
    [InlineData(Granule.Size16K, 2, 30)]
    [InlineData(Granule.Size64K, 3, 21)]
    [InlineData(Granule.Size64K, 2, 34)]
    public void Contiguous_run_is_cached_as_one_entry(Granule g, int level, int runLog2)
    {
        var (_, walker, w) = S1Setup(g, 48);
        var run = 1UL << runLog2;
        var inBase = run * 3;
        var outBase = 0x10_0000_0000UL - run * 2;
        w.ContiguousRun(inBase, level, outBase, TableWriter.S1Rw);
        var cfg = S1(g, 48, w.Root);
        var probe = inBase + run - 8;
        var r = walker.Walk(cfg, probe, PR);
        Assert.False(r.IsFault, r.Fault.ToString());
        Assert.Equal(runLog2, r.Entry.SizeLog2);
        Assert.Equal(inBase, r.Entry.InputBase);
        Assert.Equal(outBase, r.Entry.OutputBase);
        Assert.Equal(outBase + run - 8, r.Entry.Translate(probe));
        AssertFault(walker.Walk(cfg, inBase + run, PR), FaultKind.Translation, TranslationStage.Stage1, -1);
    }

    [Fact]
    public void Stage2_concatenated_initial_tables_4K_sl0_0_34_bit_ipa_uses_16_tables()
    {
        var bus = NewBus();
        var sl = Stage2Config.StartLevelFromSl0(Granule.Size4K, 0);
        Assert.Equal(2, sl);
        var w = new TableWriter(bus, Granule.Size4K, 34, sl, TableArea);
        Assert.Equal(13, w.StartBits);
        var s2 = new Stage2Config { Granule = Granule.Size4K, InputSize = 34, StartLevel = sl, TableBase = w.Root, OutputSize = 40 };
        Assert.Null(s2.Validate());
        Assert.Equal(16, s2.ConcatenatedTables);
        const ulong top = 0x3_FFFF_F000;
        w.Leaf(top, 3, 0x8_0000_0000, TableWriter.S2Rw);
        w.Leaf(0x1_2340_0000, 2, 0x9_0000_0000, TableWriter.S2Rw);
        // The top IPA's level-2 entry lives in the 16th table.
        Assert.Equal(w.Root + 15 * 4096 + 511 * 8, w.EntryAddress(w.Root, 2, top));
        var walker = new PageTableWalker(bus);
        var cfg = new TranslationConfig(null, s2);
        var r = walker.Walk(cfg, top + 0xFFF, R);
        Assert.False(r.IsFault, r.Fault.ToString());
        Assert.Equal(0x8_0000_0FFFUL, r.Entry.Translate(top + 0xFFF));
        Assert.Equal(0x9_0010_0000UL, walker.Walk(cfg, 0x1_2350_0000, W).Entry.Translate(0x1_2350_0000));
        var f = walker.Walk(cfg, 1UL << 34, R).Fault;
        Assert.Equal((FaultKind.Translation, TranslationStage.Stage2, (sbyte)0, 1UL << 34), (f.Kind, f.Stage, f.Level, f.Ipa));
    }

    [Fact]
    public void Stage2_start_level_decode_and_validation()
    {
        Assert.Equal(0, Stage2Config.StartLevelFromSl0(Granule.Size4K, 2));
        Assert.Equal(1, Stage2Config.StartLevelFromSl0(Granule.Size64K, 2));
        Assert.Equal(-1, Stage2Config.StartLevelFromSl0(Granule.Size16K, 3));
        // 64K, 48-bit IPA at level 1; 4K 40-bit IPA as 2 concatenated level-1 tables; 17 tables is too many.
        Assert.Null(new Stage2Config { Granule = Granule.Size64K, InputSize = 48, StartLevel = 1, TableBase = 0 }.Validate());
        Assert.Equal(2, new Stage2Config { Granule = Granule.Size4K, InputSize = 40, StartLevel = 1, TableBase = 0 }.ConcatenatedTables);
        Assert.NotNull(new Stage2Config { Granule = Granule.Size4K, InputSize = 35, StartLevel = 2, TableBase = 0 }.Validate());
        Assert.NotNull(new Stage2Config { Granule = Granule.Size4K, InputSize = 40, StartLevel = 0, TableBase = 0, OutputSize = 40 }.Validate());
    }

    [Fact]
    public void Ttb1_upper_range_tbi_and_epd()
    {
        var bus = NewBus();
        var lo = new TableWriter(bus, Granule.Size4K, 39, 1, TableArea);
        var hi = new TableWriter(bus, Granule.Size16K, 36, 2, TableArea + 0x100_0000);
        lo.Leaf(0x1000, 3, 0x5000_0000, TableWriter.S1Rw);
        const ulong hiVa = 0xFFFF_FFF0_0000_4000; // 36-bit TTB1 range: top 28 bits ones
        hi.Leaf(hiVa, 3, 0x6000_0000, TableWriter.S1Rw);
        var s1 = new Stage1Config
        {
            Low = new TranslationRegion(Granule.Size4K, 39, lo.Root),
            High = new TranslationRegion(Granule.Size16K, 36, hi.Root),
            Tbi0 = true,
        };
        var walker = new PageTableWalker(bus);
        var cfg = new TranslationConfig(s1, null);
        Assert.Equal(0x6000_0123UL, walker.Walk(cfg, hiVa + 0x123, PR).Entry.Translate(hiVa + 0x123));
        Assert.Equal(Granule.Size16K, walker.Walk(cfg, hiVa, PR).Entry.Granule);
        // Below the TTB1 range (bit 55 set but not all of [63:36]): level-0 translation fault.
        AssertFault(walker.Walk(cfg, 0xFFFF_FFE0_0000_4000, PR), FaultKind.Translation, TranslationStage.Stage1, 0);
        // TBI0: a tagged pointer translates and keys the TLB without its tag; TBI1 off: a tag faults.
        var tagged = 0x5A00_0000_0000_1008UL;
        var r = walker.Walk(cfg, tagged, PR);
        Assert.False(r.IsFault, r.Fault.ToString());
        Assert.Equal(0x5000_0008UL, r.Entry.Translate(tagged));
        Assert.Equal(0x1008UL, PageTableWalker.TlbInput(cfg, tagged));
        AssertFault(walker.Walk(cfg, (hiVa + 0x123) & ~0x0100_0000_0000_0000UL, PR), FaultKind.Translation, TranslationStage.Stage1, 0);
        // EPD1: walks of the upper half fault.
        var epd = new TranslationConfig(s1 with { High = s1.High! with { WalksDisabled = true } }, null);
        AssertFault(walker.Walk(epd, hiVa, PR), FaultKind.Translation, TranslationStage.Stage1, 0);
        Assert.False(walker.Walk(epd, 0x1000, PR).IsFault);
    }

    [Fact]
    public void Access_flag_faults_unless_disabled_or_hardware_managed()
    {
        var (bus, walker, w) = S1Setup(Granule.Size4K, 39);
        w.Leaf(0x2000, 3, 0x5000_0000, 0); // AF = 0
        var cfg = S1(Granule.Size4K, 39, w.Root);
        AssertFault(walker.Walk(cfg, 0x2000, PR), FaultKind.AccessFlag, TranslationStage.Stage1, 3);
        var affd = new TranslationConfig(cfg.Stage1! with { AccessFlagFaultsDisabled = true }, null);
        Assert.False(walker.Walk(affd, 0x2000, PR).IsFault);
        var descAddr = w.EntryAddress(w.TableFor(0x2000, 3), 3, 0x2000);
        Assert.Equal(0UL, w.Read(descAddr) & Descriptors.Af); // AFFD does not write memory
        var ha = new TranslationConfig(cfg.Stage1! with { HardwareAccessFlag = true }, null);
        Assert.False(walker.Walk(ha, 0x2000, PR).IsFault);
        Assert.Equal(Descriptors.Af, w.Read(descAddr) & Descriptors.Af);
        Assert.False(walker.Walk(cfg, 0x2000, PR).IsFault);
        _ = bus;
    }

    [Fact]
    public void Hardware_dirty_update_makes_a_clean_dbm_page_writable_on_write()
    {
        var (_, walker, w) = S1Setup(Granule.Size4K, 39);
        w.Leaf(0x3000, 3, 0x5000_0000, Descriptors.Af | Descriptors.Ap2 | Descriptors.Dbm);
        var cfg = S1(Granule.Size4K, 39, w.Root);
        AssertFault(walker.Walk(cfg, 0x3000, PW), FaultKind.Permission, TranslationStage.Stage1, 3);
        var hd = new TranslationConfig(cfg.Stage1! with { HardwareDirty = true }, null);
        var read = walker.Walk(hd, 0x3000, PR);
        Assert.True(read.Entry.DirtyUpdatable);
        Assert.False(read.Entry.Stage1Permissions.HasFlag(PagePermissions.PrivWrite));
        var write = walker.Walk(hd, 0x3000, PW);
        Assert.False(write.IsFault, write.Fault.ToString());
        var descAddr = w.EntryAddress(w.TableFor(0x3000, 3), 3, 0x3000);
        Assert.Equal(0UL, w.Read(descAddr) & Descriptors.Ap2);
        Assert.False(walker.Walk(cfg, 0x3000, PW).IsFault); // now dirty: writable without HD too
    }

    [Fact]
    public void Stage1_permissions_ap_xn_and_hierarchical_controls()
    {
        var (_, walker, w) = S1Setup(Granule.Size4K, 39);
        w.Leaf(0x1000, 3, 0x5000_0000, Descriptors.Af);                                 // AP=00: EL1 RW, EL0 none
        w.Leaf(0x2000, 3, 0x5000_1000, Descriptors.Af | Descriptors.Ap1);               // AP=01: RW both; EL1 cannot execute EL0-writable
        w.Leaf(0x3000, 3, 0x5000_2000, Descriptors.Af | Descriptors.Ap2);               // AP=10: EL1 RO
        w.Leaf(0x4000, 3, 0x5000_3000, Descriptors.Af | Descriptors.Ap2 | Descriptors.Ap1 | Descriptors.Uxn); // RO both, UXN
        w.Leaf(0x5000, 3, 0x5000_4000, Descriptors.Af | Descriptors.Ap1 | Descriptors.Ap2 | Descriptors.Pxn);
        var cfg = S1(Granule.Size4K, 39, w.Root);
        Expect(0x1000, PW, true); Expect(0x1000, R, false); Expect(0x1000, PX, true); Expect(0x1000, UX, true);
        Expect(0x2000, W, true); Expect(0x2000, PW, true); Expect(0x2000, PX, false); Expect(0x2000, UX, true);
        Expect(0x3000, PR, true); Expect(0x3000, PW, false); Expect(0x3000, R, false);
        Expect(0x4000, R, true); Expect(0x4000, W, false); Expect(0x4000, UX, false); Expect(0x4000, PX, true);
        Expect(0x5000, PX, false); Expect(0x5000, UX, true);

        // WXN: writable means not executable.
        var wxn = new TranslationConfig(cfg.Stage1! with { Wxn = true }, null);
        Assert.Equal(FaultKind.Permission, walker.Walk(wxn, 0x1000, PX).Fault.Kind);
        Assert.False(walker.Walk(wxn, 0x3000, PX).IsFault);

        // APTable[1] (no write below), APTable[0] (no EL0 below), UXNTable, PXNTable on a level-2 table.
        w.NextTableAttributes = Descriptors.ApTable1 | Descriptors.ApTable0 | Descriptors.UxnTable;
        w.Leaf(0x40_0000_0000 - 0x20_0000, 3, 0x5100_0000, Descriptors.Af | Descriptors.Ap1); // new level-2 and level-3 tables
        w.NextTableAttributes = Descriptors.PxnTable;
        w.Leaf(0x20_0000_0000, 3, 0x5200_0000, Descriptors.Af);
        w.NextTableAttributes = 0;
        const ulong h = 0x40_0000_0000 - 0x20_0000;
        Expect(h, PR, true); Expect(h, PW, false); Expect(h, R, false); Expect(h, UX, false); Expect(h, PX, true);
        Expect(0x20_0000_0000, PX, false); Expect(0x20_0000_0000, PW, true);

        void Expect(ulong va, AccessFlags a, bool allowed)
        {
            var r = walker.Walk(cfg, va, a);
            if (allowed) Assert.False(r.IsFault, $"{a} at 0x{va:x}: {r.Fault}");
            else
            {
                Assert.Equal(FaultKind.Permission, r.Fault.Kind);
                Assert.Equal(TranslationStage.Stage1, r.Fault.Stage);
                Assert.Equal(3, r.Fault.Level);
            }
        }
    }

    [Fact]
    public void Address_size_faults_for_output_table_and_base_beyond_the_output_size()
    {
        var (_, walker, w) = S1Setup(Granule.Size4K, 39);
        w.Leaf(0x1000, 3, 1UL << 40, TableWriter.S1Rw);             // OA at 2^40 with a 40-bit OAS
        w.Leaf(0x4000_0000, 1, 0x80_0000_0000, TableWriter.S1Rw);  // 1G block at 2^39: fine with 40 bits
        w.SetDescriptor(0x8000_0000, 1, Descriptors.Table(1UL << 41, Granule.Size4K)); // next table beyond OAS
        var cfg = S1(Granule.Size4K, 39, w.Root, oas: 40);
        AssertFault(walker.Walk(cfg, 0x1000, PR), FaultKind.AddressSize, TranslationStage.Stage1, 3);
        Assert.False(walker.Walk(cfg, 0x4000_1000, PR).IsFault);
        AssertFault(walker.Walk(cfg, 0x8000_1000, PR), FaultKind.AddressSize, TranslationStage.Stage1, 1);
        var badBase = new TranslationConfig(cfg.Stage1! with { Low = cfg.Stage1!.Low with { TableBase = 1UL << 40 } }, null);
        AssertFault(walker.Walk(badBase, 0x1000, PR), FaultKind.AddressSize, TranslationStage.Stage1, 0);
    }

    [Fact]
    public void Descriptor_fetch_from_nothing_is_a_walk_external_abort_with_the_fetch_address()
    {
        var (_, walker, w) = S1Setup(Granule.Size4K, 39);
        w.SetDescriptor(0x4000_0000, 1, Descriptors.Table(0x1000_0000, Granule.Size4K)); // 0x1000_0000: no RAM there
        var cfg = S1(Granule.Size4K, 39, w.Root);
        var r = walker.Walk(cfg, 0x4000_3000, PR);
        AssertFault(r, FaultKind.WalkExternalAbort, TranslationStage.Stage1, 2);
        Assert.Equal(0x1000_0000UL + 0 * 8, r.Fault.FetchAddress);
        var r2 = walker.Walk(cfg, 0x4060_0000, PR);
        Assert.Equal(0x1000_0000UL + 3 * 8, r2.Fault.FetchAddress);
    }

    [Fact]
    public void Nested_walk_translates_stage1_tables_through_stage2_and_names_the_denying_stage()
    {
        var bus = NewBus();
        // Stage 2: IPA [0, 1G) → PA [0x8000_0000, +1G) with 2M blocks; one 2M IPA region read-only; IPA 0x3000_0000.. unmapped.
        const ulong s2Area = 0x4000_0000;
        var s2w = new TableWriter(bus, Granule.Size4K, 40, 1, s2Area);
        for (ulong ipa = 0; ipa < 0x3000_0000; ipa += 0x20_0000)
        {
            var attrs = ipa == 0x0200_0000 ? Descriptors.Af | Descriptors.S2ApRead | (0xFUL << 2) : TableWriter.S2Rw;
            s2w.Leaf(ipa, 2, 0x8000_0000 + ipa, attrs);
        }
        var s2 = new Stage2Config { Granule = Granule.Size4K, InputSize = 40, StartLevel = 1, TableBase = s2w.Root, Vmid = 7 };
        Assert.Null(s2.Validate());
        // Stage 1 tables in IPA space at 0x0100_0000 (written through stage 2).
        var s1w = new TableWriter(bus, Granule.Size4K, 39, 1, 0x0100_0000, ipa => 0x8000_0000 + ipa);
        s1w.Leaf(0x7000, 3, 0x0040_0000, TableWriter.S1Rw);   // output IPA in a RW region
        s1w.Leaf(0x8000, 3, 0x0200_1000, TableWriter.S1Rw);   // output IPA in the read-only region
        s1w.Leaf(0x9000, 3, 0x3000_0000, TableWriter.S1Rw);   // output IPA unmapped at stage 2
        s1w.Leaf(0xA000, 3, 0x0040_0000, Descriptors.Af | Descriptors.Ap2); // stage-1 read-only
        var s1 = new Stage1Config { Low = new TranslationRegion(Granule.Size4K, 39, s1w.Root), Asid = 3, OutputSize = 40 };
        var cfg = new TranslationConfig(s1, s2);
        var walker = new PageTableWalker(bus);

        var r = walker.Walk(cfg, 0x7123, PW);
        Assert.False(r.IsFault, r.Fault.ToString());
        Assert.Equal(0x8040_0123UL, r.Entry.Translate(0x7123));
        Assert.Equal((12, true, true, (ushort)7, (ushort)3), (r.Entry.SizeLog2, r.Entry.HasStage1, r.Entry.HasStage2, r.Entry.Vmid, r.Entry.Asid));
        Assert.Equal(0x0040_0000UL, r.Entry.IpaBase);
        Assert.Equal(21, r.Entry.Stage2SizeLog2);

        Assert.False(walker.Walk(cfg, 0x8000, PR).IsFault);
        var f = walker.Walk(cfg, 0x8000, PW).Fault;
        Assert.Equal((FaultKind.Permission, TranslationStage.Stage2, 0x0200_1000UL, false), (f.Kind, f.Stage, f.Ipa, f.OnStage1Walk));
        f = walker.Walk(cfg, 0xA000, PW).Fault; // both stages would deny... stage 1 is reported
        Assert.Equal((FaultKind.Permission, TranslationStage.Stage1), (f.Kind, f.Stage));
        f = walker.Walk(cfg, 0x9000, PR).Fault;
        Assert.Equal((FaultKind.Translation, TranslationStage.Stage2, 0x3000_0000UL, false), (f.Kind, f.Stage, f.Ipa, f.OnStage1Walk));

        // Move the stage-1 root to an IPA stage 2 does not map: a stage-2 fault on the stage-1 walk.
        var cfgBad = new TranslationConfig(s1 with { Low = s1.Low with { TableBase = 0x3100_0000 } }, s2);
        f = walker.Walk(cfgBad, 0x7000, PR).Fault;
        Assert.Equal((FaultKind.Translation, TranslationStage.Stage2, true), (f.Kind, f.Stage, f.OnStage1Walk));
        Assert.Equal(0x3100_0000UL, f.Ipa);
    }

    [Fact]
    public void Lpa_64K_52_bit_output_in_descriptor_bits_15_12_and_level_1_blocks()
    {
        var (_, walker, w) = S1Setup(Granule.Size64K, 52);
        Assert.Equal(1, w.StartLevel);
        Assert.Equal(10, w.StartBits);
        const ulong highPa = 0xF_1234_5678_0000; // above 2^48
        w.Leaf(0xF_0000_0001_0000, 3, highPa, TableWriter.S1Rw);
        w.Leaf(0x400_0000_0000, 1, 0x8_0000_0000_0000, TableWriter.S1Rw); // 4TB block at level 1 (FEAT_LPA)
        var cfg = S1(Granule.Size64K, 52, w.Root, oas: 52);
        Assert.Null(cfg.Stage1!.Low.Validate(52));
        var r = walker.Walk(cfg, 0xF_0000_0001_0ABC, PR);
        Assert.False(r.IsFault, r.Fault.ToString());
        Assert.Equal(highPa + 0xABC, r.Entry.Translate(0xF_0000_0001_0ABC));
        r = walker.Walk(cfg, 0x400_0000_1000, PR);
        Assert.Equal((42, 1), (r.Entry.SizeLog2, (int)r.Entry.Level));
        Assert.Equal(0x8_0000_0000_1000UL, r.Entry.Translate(0x400_0000_1000));
        // The same tables with a 48-bit output size: the level-1 block is not allowed.
        AssertFault(walker.Walk(S1(Granule.Size64K, 52, w.Root, oas: 48), 0x400_0000_1000, PR), FaultKind.Translation, TranslationStage.Stage1, 1);
    }

    [Fact]
    public void Garbage_tables_and_odd_configurations_give_values_never_exceptions()
    {
        var bus = NewBus();
        var rng = new Random(1234);
        // Random 64-bit words over the whole table area, with a bias towards valid table/page encodings into RAM.
        for (ulong a = TableArea; a < TableArea + 0x40_0000; a += 8)
        {
            var v = (ulong)rng.NextInt64() ^ ((ulong)rng.Next() << 32);
            if (rng.Next(3) == 0) v = (TableArea + ((ulong)rng.Next(0x400) << 12)) | (v & 0xFFF0_0000_0000_0FFFUL) | 3;
            bus.Store.WriteU64(a, v);
        }
        var walker = new PageTableWalker(bus);
        Granule[] gs = [Granule.Size4K, Granule.Size16K, Granule.Size64K];
        var faults = 0;
        for (var i = 0; i < 20_000; i++)
        {
            var g = gs[rng.Next(3)];
            var s1 = new Stage1Config
            {
                Low = new TranslationRegion(g, rng.Next(8, 60), TableArea + ((ulong)rng.Next(0x400) << 12)),
                High = rng.Next(2) == 0 ? null : new TranslationRegion(gs[rng.Next(3)], rng.Next(16, 49), TableArea + ((ulong)rng.Next(0x400) << 12)),
                OutputSize = rng.Next(20, 60),
                Tbi1 = rng.Next(2) == 0,
                HardwareAccessFlag = rng.Next(2) == 0,
                HardwareDirty = rng.Next(2) == 0,
            };
            var s2 = rng.Next(2) == 0 ? null : new Stage2Config
            {
                Granule = gs[rng.Next(3)], InputSize = rng.Next(8, 60), StartLevel = rng.Next(-1, 5),
                TableBase = TableArea + ((ulong)rng.Next(0x400) << 12), OutputSize = rng.Next(20, 60),
            };
            var cfg = new TranslationConfig(rng.Next(4) == 0 ? null : s1, s2);
            var r = walker.Walk(cfg, (ulong)rng.NextInt64() * 3, (AccessFlags)rng.Next(16));
            if (r.IsFault) faults++;
        }
        Assert.InRange(faults, 1, 19_999); // both outcomes happen, nothing threw
    }

    [Fact]
    public void Stage2_dirty_update_access_flag_update_and_protected_table_walk()
    {
        var bus = NewBus();
        var s2w = new TableWriter(bus, Granule.Size4K, 40, 1, TableArea);
        // IPA 0..2M: normal memory RW for the stage-1 tables; 2M..4M: Device memory (MemAttr 0b0001); a clean DBM page.
        s2w.Leaf(0, 2, 0x4800_0000, TableWriter.S2Rw);
        s2w.Leaf(0x20_0000, 2, 0x4820_0000, Descriptors.Af | Descriptors.S2ApRead | Descriptors.S2ApWrite | (0x1UL << 2));
        s2w.Leaf(0x100_0000, 3, 0x4900_0000, Descriptors.S2ApRead | Descriptors.Dbm | (0xFUL << 2)); // AF = 0, read-only, DBM
        var s2 = new Stage2Config { Granule = Granule.Size4K, InputSize = 40, StartLevel = 1, TableBase = s2w.Root };
        var walker = new PageTableWalker(bus);
        var only2 = new TranslationConfig(null, s2);
        var f = walker.Walk(only2, 0x100_0000, R).Fault;
        Assert.Equal((FaultKind.AccessFlag, TranslationStage.Stage2, 0x100_0000UL), (f.Kind, f.Stage, f.Ipa));
        var hw = new TranslationConfig(null, s2 with { HardwareAccessFlag = true, HardwareDirty = true });
        Assert.False(walker.Walk(hw, 0x100_0000, W).IsFault);
        var d = s2w.Read(s2w.EntryAddress(s2w.TableFor(0x100_0000, 3), 3, 0x100_0000));
        Assert.Equal(Descriptors.Af | Descriptors.S2ApWrite, d & (Descriptors.Af | Descriptors.S2ApWrite));

        // Stage-1 tables at IPA 0x1000 (normal) and at IPA 0x20_1000 (Device at stage 2).
        var s1ok = new TableWriter(bus, Granule.Size4K, 39, 1, 0x1000, ipa => ipa + 0x4800_0000);
        s1ok.Leaf(0x5000, 3, 0x0, TableWriter.S1Rw);
        var s1dev = new TableWriter(bus, Granule.Size4K, 39, 1, 0x20_1000, ipa => ipa - 0x20_0000 + 0x4820_0000);
        s1dev.Leaf(0x5000, 3, 0x0, TableWriter.S1Rw);
        var ptw = s2 with { ProtectedTableWalk = true };
        Assert.False(walker.Walk(new TranslationConfig(new Stage1Config { Low = new TranslationRegion(Granule.Size4K, 39, s1ok.Root) }, ptw), 0x5000, PR).IsFault);
        Assert.False(walker.Walk(new TranslationConfig(new Stage1Config { Low = new TranslationRegion(Granule.Size4K, 39, s1dev.Root) }, s2), 0x5000, PR).IsFault);
        f = walker.Walk(new TranslationConfig(new Stage1Config { Low = new TranslationRegion(Granule.Size4K, 39, s1dev.Root) }, ptw), 0x5000, PR).Fault;
        Assert.Equal((FaultKind.Permission, TranslationStage.Stage2, true), (f.Kind, f.Stage, f.OnStage1Walk));
    }

    [Fact]
    public void Walk_allocates_nothing()
    {
        var (_, walker, w) = S1Setup(Granule.Size4K, 48);
        w.Leaf(0x1234_5000, 3, 0x5000_0000, TableWriter.S1Rw);
        var cfg = S1(Granule.Size4K, 48, w.Root);
        walker.Walk(cfg, 0x1234_5000, PR);
        walker.Walk(cfg, 0x9999_0000, PR);
        var before = GC.GetAllocatedBytesForCurrentThread();
        ulong sum = 0;
        for (var i = 0; i < 10_000; i++)
        {
            sum += walker.Walk(cfg, 0x1234_5000 + (ulong)(i & 0xFF8), PR).Entry.OutputBase;
            sum += (ulong)walker.Walk(cfg, 0x9999_0000, PR).Fault.Kind;
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.NotEqual(0UL, sum);
    }

    static void AssertFault(WalkResult r, FaultKind kind, TranslationStage stage, int level)
    {
        Assert.True(r.IsFault, "expected a fault, got a translation to 0x" + r.Entry.OutputBase.ToString("x"));
        Assert.Equal(kind, r.Fault.Kind);
        Assert.Equal(stage, r.Fault.Stage);
        if (level >= 0) Assert.Equal(level, r.Fault.Level);
    }
}
