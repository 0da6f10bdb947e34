using Doorbell.Gic.Its;
using Doorbell.Gic.V2;
using Doorbell.Gic.V2m;
using Doorbell.Gic.V3;
using Doorbell.Host.Iommu;
using Doorbell.Host.Irq;
using Doorbell.Host.Kernel;
using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V3;
using Doorbell.Tracing;
using Doorbell.Vmsa;
using SmmuModel = Doorbell.Smmu.V3.SmmuV3;

namespace Doorbell.Tests.SmmuV3;

/// <summary>
/// The conformance defects of issue 16 items 1–6 (reserved TLBI encodings, walk cache, the driver's range TLBI and
/// walk invalidation, STE/CD update steps, ITS collection table, MSI cookie base, GICv2 SPI count). Each test here
/// failed before its fix.
/// </summary>
public class SmmuV3ConformanceFixTests
{
    const ulong Iova = 0x1_0000_0000;
    const ulong SmmuBase = 0x0905_0000;
    const ulong Data = 0x4800_0000;
    static readonly BusAttributes Dev = BusAttributes.FromDevice(8);

    static BusStatus Touch(SmmuV3Rig rig, uint sid, ulong iova) => rig.Smmu.CreateStreamPort(sid).Read(iova, new byte[4], Dev);

    static uint CmdError(SmmuV3Rig rig) => (rig.Rd(SmmuV3Reg.CMDQ_CONS) >> SmmuV3Field.CmdqConsErrShift) & 0x7F;

    static bool CommandFailed(SmmuV3Rig rig) => ((rig.Rd(SmmuV3Reg.GERROR) ^ rig.Rd(SmmuV3Reg.GERRORN)) & SmmuV3Field.GerrorCmdq) != 0;

    // ----- issue 11 item 8: one translation fast path -----

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_dma_miss_probes_the_iotlb_once_and_counts_one_miss(bool strict)
    {
        var rig = new SmmuV3Rig(strict: strict);
        var pt = rig.AttachStage1(8, asid: 1);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x2000, IoProt.ReadWrite));
        var port = rig.Smmu.CreateStreamPort(8);
        Assert.Equal(BusStatus.Ok, port.Read(Iova, new byte[4], Dev));  // resolves the stream (config fetch), then one walk
        rig.Smmu.Iotlb.ResetCounters();
        Assert.Equal(BusStatus.Ok, port.Read(Iova + 0x1000, new byte[4], Dev));
        Assert.Equal((0L, 1L), (rig.Smmu.Iotlb.Hits, rig.Smmu.Iotlb.Misses));
        Assert.Equal(BusStatus.Ok, port.Read(Iova + 0x1004, new byte[4], Dev));
        Assert.Equal((1L, 1L), (rig.Smmu.Iotlb.Hits, rig.Smmu.Iotlb.Misses));
        Assert.True(((SmmuV3StreamPort)rig.Smmu.CreateStreamPort(8)).TryTranslate(Iova + 0x8, AccessFlags.Read, out var pa));
        Assert.Equal(SmmuV3Rig.DataBase + 8, pa);
        Assert.Equal((2L, 1L), (rig.Smmu.Iotlb.Hits, rig.Smmu.Iotlb.Misses));
    }

    // ----- item 1: reserved range-TLBI encodings (IHI 0070 §4.4.1.1) -----

    public static TheoryData<byte, int, int, int, int, bool> RangeEncodings => new()
    {
        { Cmd.TlbiNhVa, 1, 0, 0, 0, true },   // NUM = SCALE = 0, TTL = 0: Reserved
        { Cmd.TlbiNhVaa, 3, 0, 0, 0, true },
        { Cmd.TlbiS2Ipa, 2, 0, 0, 0, true },
        { Cmd.TlbiNhVa, 2, 0, 0, 1, true },   // 16K, TTL = 0b01 without DS is treated as 0: Reserved again
        { Cmd.TlbiS2Ipa, 2, 0, 0, 1, true },
        { Cmd.TlbiNhVa, 1, 0, 0, 3, false },  // a single granule with a level hint
        { Cmd.TlbiNhVa, 3, 0, 0, 1, false },  // 64K level-1 leaf entries exist
        { Cmd.TlbiNhVa, 1, 1, 0, 0, false },  // two granules
        { Cmd.TlbiNhVa, 1, 0, 1, 0, false },
        { Cmd.TlbiNhVa, 2, 1, 0, 1, false },  // 16K TTL = 0b01 in a real range: hint dropped, command valid
        { Cmd.TlbiNhVa, 0, 0, 0, 0, false },  // TG = 0: not a range
    };

    [Theory]
    [MemberData(nameof(RangeEncodings))]
    public void Reserved_range_tlbi_encodings_raise_cerror_ill(byte op, int tg, int num, int scale, int ttl, bool illegal)
    {
        var rig = new SmmuV3Rig();
        var cmd = op switch
        {
            Cmd.TlbiS2Ipa => SmmuV3Encode.TlbiS2IpaRange(1, 0x20_0000, tg, num, scale, ttl, leaf: true),
            _ => SmmuV3Encode.TlbiNhVaRange(0, 1, 0x20_0000, tg, num, scale, ttl, leaf: true),
        };
        if (op == Cmd.TlbiNhVaa) cmd.Item1 = (cmd.Item1 & ~0xFFUL) | Cmd.TlbiNhVaa;
        rig.Submit(cmd, SmmuV3Encode.Sync());
        Assert.Equal(illegal, CommandFailed(rig));
        Assert.Equal(illegal ? SmmuV3Field.CerrorIll : SmmuV3Field.CerrorNone, CmdError(rig));
    }

    [Fact]
    public void Range_fields_of_an_smmu_without_ril_are_res0_and_never_illegal()
    {
        var rig = new SmmuV3Rig(new SmmuV3Options { RangeInvalidation = false });
        rig.Submit(SmmuV3Encode.TlbiNhVaRange(0, 1, 0x20_0000, 1, 0, 0, 0), SmmuV3Encode.Sync());
        Assert.False(CommandFailed(rig));
    }

    [Fact]
    public void A_16k_range_with_ttl_1_is_treated_as_ttl_0_and_removes_level_3_leaves()
    {
        var rig = new SmmuV3Rig();
        var pt = rig.AttachStage1(8, asid: 1, Granule.Size16K);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x8000, IoProt.ReadWrite));
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova));
        Assert.Equal(0x8000UL, pt.Unmap(Iova, 0x8000));
        // Two 16K granules, TTL = 0b01 (reserved for 16K without DS: any level). The level-3 entry must go.
        rig.Submit(SmmuV3Encode.TlbiNhVaRange(0, 1, Iova, 2, 1, 0, 1), SmmuV3Encode.Sync());
        Assert.False(CommandFailed(rig));
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, Iova));
    }

    // ----- item 2: walk cache -----

    /// <summary>Maps a page, uses it, then replaces its (now empty) level-3 table by a 2 MiB block and invalidates the leaf only.</summary>
    static (SmmuV3Rig Rig, IoPageTable Pt) ReplaceTableByBlock(bool strict)
    {
        var rig = new SmmuV3Rig(strict: strict);
        var pt = rig.AttachStage1(8, asid: 1);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase + 0x1000, 0x1000, IoProt.ReadWrite));
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova));            // walk: level-0..2 table descriptors cached
        Assert.Equal(0x1000UL, pt.Unmap(Iova, 0x1000));
        rig.Submit(SmmuV3Encode.TlbiNhVa(0, 1, Iova, leaf: true), SmmuV3Encode.Sync());
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x20_0000, IoProt.ReadWrite)); // empty table → block
        rig.Submit(SmmuV3Encode.TlbiNhVa(0, 1, Iova, leaf: true), SmmuV3Encode.Sync()); // leaf only: the walk stays
        return (rig, pt);
    }

    [Fact]
    public void A_leaf_tlbi_keeps_cached_table_descriptors_and_a_non_leaf_tlbi_removes_them()
    {
        var (rig, _) = ReplaceTableByBlock(strict: false);
        // The SMMU may (and this one does) walk through the cached level-2 table descriptor to the freed table.
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, Iova + 0x1000));
        Assert.Contains(rig.DrainEvents(), e => e.Id == Evt.F_TRANSLATION);
        rig.Submit(SmmuV3Encode.TlbiNhVa(0, 1, Iova, leaf: false), SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova + 0x1000));
    }

    public static TheoryData<string> WalkInvalidations => ["NH_ASID", "NH_ALL", "NSNH_ALL", "S12_VMALL", "NH_VAA_NONLEAF", "RANGE_NONLEAF"];

    [Theory]
    [MemberData(nameof(WalkInvalidations))]
    public void Every_command_that_covers_the_walk_removes_cached_table_descriptors(string kind)
    {
        var (rig, _) = ReplaceTableByBlock(strict: false);
        var cmd = kind switch
        {
            "NH_ASID" => SmmuV3Encode.TlbiNhAsid(0, 1),
            "NH_ALL" => SmmuV3Encode.TlbiNhAll(0),
            "NSNH_ALL" => SmmuV3Encode.TlbiNsnhAll(),
            "S12_VMALL" => SmmuV3Encode.TlbiS12Vmall(0),
            "NH_VAA_NONLEAF" => SmmuV3Encode.TlbiNhVaa(0, Iova + 0x5000, leaf: false),
            _ => SmmuV3Encode.TlbiNhVaRange(0, 1, Iova, 1, 31, 4, 0, leaf: false),
        };
        rig.Submit(cmd, SmmuV3Encode.Sync());
        Assert.False(CommandFailed(rig));
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova + 0x1000));
    }

    public static TheoryData<string> NonWalkInvalidations => ["OTHER_ASID", "LEAF_RANGE", "CFGI_ALL", "S2_IPA_NONLEAF"];

    [Theory]
    [MemberData(nameof(NonWalkInvalidations))]
    public void Commands_that_do_not_cover_the_walk_keep_cached_table_descriptors(string kind)
    {
        var (rig, _) = ReplaceTableByBlock(strict: false);
        var cmd = kind switch
        {
            "OTHER_ASID" => SmmuV3Encode.TlbiNhAsid(0, 2),
            "LEAF_RANGE" => SmmuV3Encode.TlbiNhVaRange(0, 1, Iova, 1, 31, 4, 0, leaf: true),
            "CFGI_ALL" => SmmuV3Encode.CfgiAll(),
            _ => SmmuV3Encode.TlbiS2Ipa(0, Iova, leaf: false),
        };
        rig.Submit(cmd, SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, Iova + 0x1000));
    }

    [Fact]
    public void Strict_mode_reports_a_walk_through_a_stale_cached_table_descriptor_with_its_rule()
    {
        var (rig, _) = ReplaceTableByBlock(strict: true);
        Touch(rig, 8, Iova + 0x1000);
        var v = Assert.Single(rig.Strict.Violations, x => x.Message.Contains("stale table descriptor", StringComparison.Ordinal));
        Assert.Contains("Leaf = 0", v.Rule, StringComparison.Ordinal);
        Assert.Contains("4.4", v.Rule, StringComparison.Ordinal);
    }

    [Fact]
    public void Stage2_walks_are_cached_per_vmid_and_removed_by_a_non_leaf_ipa_invalidation()
    {
        var rig = new SmmuV3Rig();
        var s2 = rig.NewStage2();
        rig.SetSte(8, SmmuV3Encode.Stage2Ste(s2.CreateStage2Config(vmid: 3)));
        rig.Submit(SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        const ulong ipa = 0x20_0000;
        Assert.Equal(0, s2.Map(ipa, SmmuV3Rig.DataBase + 0x1000, 0x1000, IoProt.ReadWrite));
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, ipa));
        Assert.Equal(0x1000UL, s2.Unmap(ipa, 0x1000));
        Assert.Equal(0, s2.Map(ipa, SmmuV3Rig.DataBase, 0x20_0000, IoProt.ReadWrite));
        rig.Submit(SmmuV3Encode.TlbiS2Ipa(3, ipa, leaf: true), SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, ipa + 0x1000));
        rig.Submit(SmmuV3Encode.TlbiS2Ipa(3, ipa, leaf: false), SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, ipa + 0x1000));
    }

    // ----- items 3–5: the host driver, watched command by command -----

    /// <summary>What the driver does, in order: memory writes ('W', address, value) and submitted commands ('C', q0, q1).</summary>
    sealed class SpyAccess(ISmmuHostAccess inner) : ISmmuHostAccess
    {
        public readonly List<(char Kind, ulong A, ulong B)> Log = [];
        uint _prod;

        public uint ReadRegister32(uint offset) => inner.ReadRegister32(offset);
        public ulong ReadRegister64(uint offset) => inner.ReadRegister64(offset);
        public void WriteRegister64(uint offset, ulong value) => inner.WriteRegister64(offset, value);
        public ulong ReadMemory64(ulong address) => inner.ReadMemory64(address);
        public uint ReadMemory32(ulong address) => inner.ReadMemory32(address);
        public void ZeroMemory(ulong address, ulong length) => inner.ZeroMemory(address, length);

        public void WriteMemory64(ulong address, ulong value)
        {
            Log.Add(('W', address, value));
            inner.WriteMemory64(address, value);
        }

        public void WriteRegister32(uint offset, uint value)
        {
            if (offset == SmmuV3Reg.CMDQ_PROD)
            {
                var b = inner.ReadRegister64(SmmuV3Reg.CMDQ_BASE);
                var log2 = (int)(b & 0x1F);
                var mask = (2u << log2) - 1;
                for (var p = _prod & mask; p != (value & mask); p = (p + 1) & mask)
                {
                    var slot = (b & SmmuV3Field.QBaseAddrMask) + (p & ((1u << log2) - 1)) * 16UL;
                    Log.Add(('C', inner.ReadMemory64(slot), inner.ReadMemory64(slot + 8)));
                }
                _prod = value & mask;
            }
            inner.WriteRegister32(offset, value);
        }

        public IEnumerable<(ulong Q0, ulong Q1)> Commands => Log.Where(x => x.Kind == 'C').Select(x => (x.A, x.B));
    }

    sealed class DriverMachine
    {
        public readonly PhysicalAddressSpace Bus = new();
        public readonly StrictMonitor Strict = new() { Enabled = true };
        public readonly SmmuModel Smmu;
        public readonly SpyAccess Spy;
        public readonly SmmuV3Driver Driver;

        public DriverMachine(SmmuV3Options? o = null)
        {
            Bus.AddRam(new PhysAddr(0x4000_0000), 0x2000_0000);
            Smmu = new SmmuModel(Bus, o, null, Strict);
            Smmu.Map(new PhysAddr(SmmuBase));
            Spy = new SpyAccess(new BusSmmuHostAccess(Bus, SmmuBase));
            Driver = SmmuV3Driver.Probe(Spy, Bus, new PhysPageAllocator(0x4100_0000, 0x400_0000));
            Spy.Log.Clear();
        }

        public BusStatus Dma(uint sid, ulong iova) => Smmu.CreateStreamPort(sid).Write(iova, new byte[] { 1 }, BusAttributes.FromDevice(sid));
    }

    static bool IsTlbi(ulong q0) => (byte)q0 is Cmd.TlbiNhVa or Cmd.TlbiNhVaa or Cmd.TlbiS2Ipa;
    static int Tg(ulong q1) => (int)((q1 >> Cmd.TgShift) & 3);
    static int Ttl(ulong q1) => (int)((q1 >> Cmd.TtlShift) & 3);
    static int Num(ulong q0) => (int)((q0 >> Cmd.NumShift) & 0x1F);
    static int Scale(ulong q0) => (int)((q0 >> Cmd.ScaleShift) & 0x1F);

    [Fact]
    public void Driver_unmapping_a_block_and_a_page_invalidates_each_size_as_a_leaf_with_its_ttl()
    {
        var m = new DriverMachine();
        var dev = new IommuDevice("dev", [8]);
        var g = m.Driver.ProbeDevice(dev);
        var dom = m.Driver.AllocateDomain(IommuDomainType.Unmanaged);
        g.Attach(dom);
        dom.Map(0x20_0000, Data, 0x20_0000, IoProt.ReadWrite);          // a 2 MiB block
        dom.Map(0x40_0000, Data + 0x20_0000, 0x1000, IoProt.ReadWrite); // a 4 KiB page right after it
        Assert.Equal(BusStatus.Ok, m.Dma(8, 0x20_0000));
        Assert.Equal(BusStatus.Ok, m.Dma(8, 0x40_0000));
        m.Spy.Log.Clear();
        Assert.Equal(0x20_1000UL, dom.Unmap(0x20_0000, 0x20_1000));
        var tlbis = m.Spy.Commands.Where(c => IsTlbi(c.Q0)).ToList();
        Assert.NotEmpty(tlbis);
        Assert.DoesNotContain(tlbis, c => Tg(c.Q1) != 0 && Num(c.Q0) == 0 && Scale(c.Q0) == 0 && Ttl(c.Q1) == 0);
        Assert.All(tlbis, c => Assert.Equal(1UL, c.Q1 & 1));                       // leaf invalidations only
        Assert.Contains(tlbis, c => (c.Q1 & Cmd.VaMask) == 0x20_0000 && Ttl(c.Q1) == 2); // the block: level 2
        Assert.Contains(tlbis, c => (c.Q1 & Cmd.VaMask) == 0x40_0000 && Ttl(c.Q1) == 3); // the page: level 3
        Assert.Empty(m.Driver.Log);
        Assert.Equal(BusStatus.SlaveError, m.Dma(8, 0x20_0000));
        Assert.Equal(BusStatus.SlaveError, m.Dma(8, 0x40_0000));
        Assert.Empty(m.Strict.Violations);
    }

    [Theory]
    [InlineData(1UL)]
    [InlineData(33UL)]
    [InlineData(65UL)]
    public void Driver_never_builds_a_reserved_non_leaf_range(ulong pages)
    {
        var m = new DriverMachine();
        var dev = new IommuDevice("dev", [8]);
        var g = m.Driver.ProbeDevice(dev);
        var dom = (SmmuV3Domain)m.Driver.AllocateDomain(IommuDomainType.Unmanaged);
        g.Attach(dom);
        m.Spy.Log.Clear();
        ((IIoTlbFlushOps)dom).FlushWalk(0x20_0000, pages * 0x1000, 0x1000);
        var tlbis = m.Spy.Commands.Where(c => IsTlbi(c.Q0)).ToList();
        Assert.NotEmpty(tlbis);
        Assert.All(tlbis, c => Assert.False(Num(c.Q0) == 0 && Scale(c.Q0) == 0 && Ttl(c.Q1) == 0, $"reserved encoding 0x{c.Q0:x}/0x{c.Q1:x}"));
        Assert.All(tlbis, c => Assert.Equal(0UL, c.Q1 & 1));
        Assert.Empty(m.Driver.Log);
    }

    [Fact]
    public void Map_replacing_an_empty_table_by_a_block_invalidates_the_walk_at_once()
    {
        var m = new DriverMachine();
        var dev = new IommuDevice("dev", [8]);
        var g = m.Driver.ProbeDevice(dev);
        var dom = m.Driver.AllocateDomain(IommuDomainType.Unmanaged);
        g.Attach(dom);
        dom.Map(0x20_0000, Data + 0x1000, 0x1000, IoProt.ReadWrite);
        Assert.Equal(BusStatus.Ok, m.Dma(8, 0x20_0000));      // caches the walk down to the level-3 table
        Assert.Equal(0x1000UL, dom.Unmap(0x20_0000, 0x1000));   // the level-3 table stays, empty
        m.Spy.Log.Clear();
        dom.Map(0x20_0000, Data, 0x20_0000, IoProt.ReadWrite); // empty table → 2 MiB block
        Assert.Contains(m.Spy.Commands, c => IsTlbi(c.Q0) && (c.Q1 & 1) == 0);   // a non-leaf TLBI ...
        Assert.Equal(Cmd.Sync, (byte)m.Spy.Commands.Last().Q0);               // ... completed by a CMD_SYNC
        Assert.Equal(BusStatus.Ok, m.Dma(8, 0x20_1000));                      // the new block, not the stale walk
        Assert.Empty(m.Strict.Violations);
    }

    /// <summary>Every write to the 64-byte entry at <paramref name="entry"/> is followed by its CFGI and a CMD_SYNC before the next one.</summary>
    static void AssertEveryStepSynced(SpyAccess spy, ulong entry, byte cfgi)
    {
        var dirty = false;
        var invalidated = false;
        foreach (var (kind, a, _) in spy.Log)
        {
            if (kind == 'W' && a >= entry && a < entry + 64)
            {
                Assert.False(dirty && invalidated, "a write to the entry after its CFGI but before the CMD_SYNC");
                dirty = true;
            }
            else if (kind == 'C' && (byte)a == cfgi && dirty) invalidated = true;
            else if (kind == 'C' && (byte)a == Cmd.Sync && invalidated) { dirty = false; invalidated = false; }
        }
        Assert.False(dirty, "the last write to the entry was not followed by CFGI + CMD_SYNC");
    }

    /// <summary>The write that makes the entry valid again comes after the other qwords' writes were invalidated and synced (IHI 0070 §3.21.3.1 steps 2–5).</summary>
    static void AssertVSetAlone(SpyAccess spy, ulong entry, byte cfgi)
    {
        var lastOther = -1;
        var vSet = -1;
        var invalid = false;
        for (var i = 0; i < spy.Log.Count; i++)
        {
            var (kind, a, v) = spy.Log[i];
            if (kind != 'W' || a < entry || a >= entry + 64) continue;
            if (a == entry)
            {
                if ((v & 1) == 0) invalid = true;
                else if (invalid) { vSet = i; break; }
            }
            else if (invalid) lastOther = i;
        }
        Assert.True(vSet > 0, "the entry was not made invalid and valid again (break-before-make expected)");
        var between = spy.Log.Skip(lastOther + 1).Take(vSet - lastOther - 1).Where(x => x.Kind == 'C').Select(x => (byte)x.A).ToList();
        Assert.Contains(cfgi, between);
        Assert.Contains(Cmd.Sync, between);
    }

    /// <summary>The qword-0 values written at <paramref name="entry"/> in order.</summary>
    static List<ulong> Qword0Writes(SpyAccess spy, ulong entry) => spy.Log.Where(x => x.Kind == 'W' && x.A == entry).Select(x => x.B).ToList();

    [Fact]
    public void Driver_attaches_an_abort_ste_to_a_stage1_domain_hitlessly_with_cfgi_and_sync_after_each_step()
    {
        var m = new DriverMachine(new SmmuV3Options { StreamIdBits = 6 }); // linear stream table: STE at base + 64·SID
        var dev = new IommuDevice("dev", [8]);
        var g = m.Driver.ProbeDevice(dev);
        var dom = m.Driver.AllocateDomain(IommuDomainType.Unmanaged);
        dom.Map(0x1000, Data, 0x1000, IoProt.ReadWrite);
        Assert.Equal(BusStatus.SlaveError, m.Dma(8, 0x1000)); // the abort STE is cached
        m.Spy.Log.Clear();
        g.Attach(dom);
        var ste = m.Driver.StreamTableBase + 8 * 64UL;
        Assert.All(Qword0Writes(m.Spy, ste), q0 => Assert.NotEqual(0UL, q0 & 1UL << Ste.V)); // never made invalid
        AssertEveryStepSynced(m.Spy, ste, Cmd.CfgiSte);
        Assert.Equal(BusStatus.Ok, m.Dma(8, 0x1000));
        Assert.Empty(m.Strict.Violations);
    }

    [Fact]
    public void Driver_break_before_make_syncs_between_filling_the_entry_and_setting_v()
    {
        var m = new DriverMachine(new SmmuV3Options { StreamIdBits = 6 });
        var dev = new IommuDevice("dev", [8]);
        var g = m.Driver.ProbeDevice(dev);
        var s2a = m.Driver.AllocateDomain(IommuDomainType.Unmanaged, IommuDomainStage.Stage2);
        var s2b = m.Driver.AllocateDomain(IommuDomainType.Unmanaged, IommuDomainStage.Stage2);
        s2a.Map(0x1000, Data, 0x1000, IoProt.ReadWrite);
        s2b.Map(0x1000, Data + 0x1000, 0x1000, IoProt.ReadWrite);
        g.Attach(s2a);
        Assert.Equal(BusStatus.Ok, m.Dma(8, 0x1000));
        m.Spy.Log.Clear();
        g.Attach(s2b); // VMID (qword 2) and S2TTB (qword 3) change: break-before-make
        var ste = m.Driver.StreamTableBase + 8 * 64UL;
        AssertEveryStepSynced(m.Spy, ste, Cmd.CfgiSte);
        AssertVSetAlone(m.Spy, ste, Cmd.CfgiSte);
        Assert.Equal(BusStatus.Ok, m.Dma(8, 0x1000));
        Assert.Equal(1u, m.Bus.Store.ReadU32(Data + 0x1000) & 0xFF);
        Assert.Empty(m.Strict.Violations);
    }

    [Fact]
    public void Strict_mode_reports_v_set_in_the_same_step_as_the_other_fields()
    {
        var rig = new SmmuV3Rig(strict: true);
        var s2a = rig.NewStage2();
        var s2b = rig.NewStage2();
        rig.SetSte(8, SmmuV3Encode.Stage2Ste(s2a.CreateStage2Config(vmid: 1)));
        rig.Submit(SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        Touch(rig, 8, 0);
        // V = 0 + CFGI + SYNC, then the rest and V = 1 with one CFGI + SYNC: the SMMU may hold the invalid STE
        // partially cached and combine its old qwords with the new V (IHI 0070 §3.21.3.1 steps 2–4 skipped).
        var target = SmmuV3Encode.Stage2Ste(s2b.CreateStage2Config(vmid: 2));
        rig.Bus.Store.WriteU64(rig.SteAddress(8), 0);
        rig.Submit(SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        Assert.Empty(rig.Strict.Violations);
        for (var i = 1; i < 8; i++) rig.Bus.Store.WriteU64(rig.SteAddress(8) + (ulong)i * 8, target[i]);
        rig.Bus.Store.WriteU64(rig.SteAddress(8), target[0]);
        rig.Submit(SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        var v = Assert.Single(rig.Strict.Violations);
        Assert.Contains("3.21.3.1", v.Rule, StringComparison.Ordinal);
    }

    [Fact]
    public void Strict_mode_reports_a_step_whose_cfgi_was_not_completed_by_a_sync()
    {
        var rig = new SmmuV3Rig(strict: true);
        var s2a = rig.NewStage2();
        var s2b = rig.NewStage2();
        rig.SetSte(8, SmmuV3Encode.Stage2Ste(s2a.CreateStage2Config(vmid: 1)));
        rig.Submit(SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        Touch(rig, 8, 0);
        var target = SmmuV3Encode.Stage2Ste(s2b.CreateStage2Config(vmid: 2));
        rig.Bus.Store.WriteU64(rig.SteAddress(8), 0);
        rig.Submit(SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        for (var i = 1; i < 8; i++) rig.Bus.Store.WriteU64(rig.SteAddress(8) + (ulong)i * 8, target[i]);
        rig.Submit(SmmuV3Encode.CfgiSte(8));                      // no CMD_SYNC: step 4 skipped
        rig.Bus.Store.WriteU64(rig.SteAddress(8), target[0]);
        rig.Submit(SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        Assert.Contains(rig.Strict.Violations, v => v.Rule.Contains("3.21.3.1", StringComparison.Ordinal));
    }

    // ----- item 6 -----

    [Fact]
    public void Its_driver_allocates_one_page_for_the_collection_table()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 0x2000_0000);
        var sys = QemuVirtGicV3.Create(bus, 2);
        var gic = new GicV3HostDriver(bus, QemuVirtGicV3.GicdBase, QemuVirtGicV3.GicrBase, sys.Gic.CpuInterfaces,
            new PhysPageAllocator(0x5000_0000, 0x1000_0000, bus));
        gic.Init();
        new ItsDriver(gic, QemuVirtGicV3.ItsBase).Init();
        var found = false;
        for (var n = 0; n < 8; n++)
        {
            bus.Read(new PhysAddr(QemuVirtGicV3.ItsBase.Value + GicV3Its.GITS_BASER + (ulong)n * 8), 8, out var b, BusAttributes.Cpu);
            if ((b >> 56 & 7) != 4) continue;
            found = true;
            Assert.NotEqual(0UL, b >> 63);    // Valid
            Assert.Equal(0UL, b & 0xFF);      // Size = pages - 1: one page
        }
        Assert.True(found);
    }

    [Fact]
    public void Vfio_msi_cookie_base_is_where_doorbells_are_mapped()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 0x2000_0000);
        var smmu = new SmmuModel(bus);
        smmu.Map(new PhysAddr(SmmuBase));
        var drv = SmmuV3Driver.Probe(new BusSmmuHostAccess(bus, SmmuBase), bus, new PhysPageAllocator(0x4100_0000, 0x400_0000));
        var dev = new IommuDevice("dev", [8]);
        var g = drv.ProbeDevice(dev);
        var dom = new SmmuVfioDomain(drv.AllocateDomain(IommuDomainType.Unmanaged));
        g.Attach(dom.Domain);
        Assert.Equal(0, dom.EnableMsiCookie(0x1000_0000));
        Assert.Equal(0x1000_0040UL, dom.MsiAddress(0x0809_0040));
        Assert.Equal(0x0809_0040UL, dom.Domain.IovaToPhys(0x1000_0040));
    }

    [Fact]
    public void Qemu_virt_gicv2_has_256_spis()
    {
        var bus = new PhysicalAddressSpace();
        var sys = QemuVirtGicV2.Create(bus);
        Assert.Equal(256, sys.Gic.SpiCount);
        bus.Read(new PhysAddr(QemuVirtGicV2.GicdBase.Value + GicV2.GICD_TYPER), 4, out var typer, BusAttributes.Cpu);
        Assert.Equal(8UL, typer & 0x1F);
    }
}
