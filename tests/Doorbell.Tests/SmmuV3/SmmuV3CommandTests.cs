using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V3;

namespace Doorbell.Tests.SmmuV3;

/// <summary>Command queue, GERROR, CMD_SYNC completion, event queue overflow and interrupts.</summary>
public class SmmuV3CommandTests
{
    static readonly BusAttributes Dev = BusAttributes.FromDevice(8);
    const ulong Iova = 0x1_0000_0000;

    static BusStatus Touch(SmmuV3Rig rig, uint sid, ulong iova)
    {
        var b = new byte[4];
        return rig.Smmu.CreateStreamPort(sid).Read(iova, b, Dev);
    }

    sealed class Line : IInterruptLine
    {
        public int Rising;
        bool _level;
        public void SetLevel(bool asserted) { if (asserted && !_level) Rising++; _level = asserted; }
    }

    [Fact]
    public void Config_cache_changes_only_through_cfgi_ste()
    {
        var rig = new SmmuV3Rig();
        rig.SetSte(8, SmmuV3Encode.BypassSte());
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, SmmuV3Rig.DataBase));
        rig.SetSte(8, SmmuV3Encode.AbortSte());
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, SmmuV3Rig.DataBase));     // cached bypass STE still used
        rig.Submit(SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, SmmuV3Rig.DataBase));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Cfgi_ste_range_and_cfgi_all_invalidate_many_streams(bool all)
    {
        var rig = new SmmuV3Rig();
        for (var sid = 0u; sid < 8; sid++) { rig.SetSte(sid, SmmuV3Encode.BypassSte()); Touch(rig, sid, SmmuV3Rig.DataBase); }
        for (var sid = 0u; sid < 8; sid++) rig.SetSte(sid, SmmuV3Encode.AbortSte());
        rig.Submit(all ? SmmuV3Encode.CfgiAll() : SmmuV3Encode.CfgiSteRange(4, 1), SmmuV3Encode.Sync()); // range 1: SIDs 4..7
        for (var sid = 0u; sid < 8; sid++)
            Assert.Equal(all || sid >= 4 ? BusStatus.SlaveError : BusStatus.Ok, Touch(rig, sid, SmmuV3Rig.DataBase));
    }

    [Fact]
    public void Cfgi_cd_and_cfgi_cd_all_refetch_the_cd()
    {
        var rig = new SmmuV3Rig();
        var a = rig.AttachStage1(8, asid: 1);
        Assert.Equal(0, a.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova));
        var cdAddr = SmmuV3Rig.CdBase + 8 * 0x1000UL;
        rig.Bus.Store.WriteU64(cdAddr, 0); // CD.V = 0
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova));
        rig.Submit(SmmuV3Encode.CfgiCd(8, 0), SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, Iova));
        Assert.Equal(Evt.C_BAD_CD, Assert.Single(rig.DrainEvents()).Id);
        rig.WriteEntry(cdAddr, SmmuV3Encode.ContextDescriptor(a.CreateStage1Config(1)));
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova)); // invalid CDs are never cached
        rig.Bus.Store.WriteU64(cdAddr, 0);
        rig.Submit(SmmuV3Encode.CfgiCdAll(8), SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, Iova));
    }

    [Fact]
    public void Tlbi_nh_va_removes_one_page_and_the_rest_stays_cached()
    {
        var rig = new SmmuV3Rig();
        var pt = rig.AttachStage1(8, asid: 3);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x2000, IoProt.ReadWrite));
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova));
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova + 0x1000));
        Assert.Equal(0x2000UL, pt.Unmap(Iova, 0x2000));
        rig.Submit(SmmuV3Encode.TlbiNhVa(0, 3, Iova), SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, Iova));
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova + 0x1000)); // stale, as hardware would
    }

    public static TheoryData<string> WholeAsidInvalidations => ["NH_ASID", "NH_ALL", "NSNH_ALL", "NH_VAA", "NH_VA_RANGE"];

    [Theory]
    [MemberData(nameof(WholeAsidInvalidations))]
    public void Tlbi_variants_remove_stage1_entries(string kind)
    {
        var rig = new SmmuV3Rig();
        var pt = rig.AttachStage1(8, asid: 3);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x2000, IoProt.ReadWrite));
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova));
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova + 0x1000));
        Assert.Equal(0x2000UL, pt.Unmap(Iova, 0x2000));
        var cmd = kind switch
        {
            "NH_ASID" => SmmuV3Encode.TlbiNhAsid(0, 3),
            "NH_ALL" => SmmuV3Encode.TlbiNhAll(0),
            "NSNH_ALL" => SmmuV3Encode.TlbiNsnhAll(),
            "NH_VAA" => SmmuV3Encode.TlbiNhVaa(0, Iova + 0x1000),
            _ => SmmuV3Encode.TlbiNhVaRange(0, 3, Iova, tg: 1, num: 1, scale: 0, ttl: 3), // 2 × 2^1 pages
        };
        rig.Submit(cmd, SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, Iova + 0x1000));
        Assert.Equal(kind == "NH_VAA" ? BusStatus.Ok : BusStatus.SlaveError, Touch(rig, 8, Iova));
    }

    [Theory]
    [InlineData(0, 2, 4)]    // (0 + 1) × 2^2 = 4 pages
    [InlineData(2, 1, 6)]    // (2 + 1) × 2^1 = 6 pages
    [InlineData(6, 0, 7)]    // 7 pages
    public void Range_tlbi_covers_num_plus_1_times_2_to_the_scale_granules(int num, int scale, int pages)
    {
        var rig = new SmmuV3Rig();
        var pt = rig.AttachStage1(8, asid: 3);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x10000, IoProt.ReadWrite));
        for (var i = 0UL; i < 16; i++) Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova + i * 0x1000));
        pt.Unmap(Iova, 0x10000);
        rig.Submit(SmmuV3Encode.TlbiNhVaRange(0, 3, Iova, tg: 1, num: num, scale: scale), SmmuV3Encode.Sync());
        for (var i = 0; i < 16; i++)
            Assert.Equal(i < pages ? BusStatus.SlaveError : BusStatus.Ok, Touch(rig, 8, Iova + (ulong)i * 0x1000));
    }

    [Fact]
    public void Stage1_only_entries_are_tagged_with_ste_s2vmid()
    {
        var rig = new SmmuV3Rig();
        var pt = rig.NewStage1();
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
        rig.WriteEntry(SmmuV3Rig.CdBase, SmmuV3Encode.ContextDescriptor(pt.CreateStage1Config(3)));
        var ste = SmmuV3Encode.Stage1Ste(SmmuV3Rig.CdBase);
        ste[2] = 5; // S2VMID
        rig.SetSte(8, ste);
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova));
        pt.Unmap(Iova, 0x1000);
        rig.Submit(SmmuV3Encode.TlbiNhAsid(0, 3), SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova));          // VMID 0 entries only: still cached
        rig.Submit(SmmuV3Encode.TlbiNhAsid(5, 3), SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, Iova));
    }

    [Fact]
    public void Range_fields_are_ignored_without_ril()
    {
        var rig = new SmmuV3Rig(new SmmuV3Options { RangeInvalidation = false });
        var pt = rig.AttachStage1(8, asid: 3);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x2000, IoProt.ReadWrite));
        Touch(rig, 8, Iova); Touch(rig, 8, Iova + 0x1000);
        pt.Unmap(Iova, 0x2000);
        rig.Submit(SmmuV3Encode.TlbiNhVaRange(0, 3, Iova, tg: 1, num: 1, scale: 0), SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, Iova));
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova + 0x1000)); // a single-address TLBI
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Stage2_invalidation_by_ipa_and_by_vmid(bool byVmid)
    {
        var rig = new SmmuV3Rig();
        var s2 = rig.NewStage2();
        Assert.Equal(0, s2.Map(0x8000_0000, SmmuV3Rig.DataBase, 0x2000, IoProt.ReadWrite));
        rig.SetSte(8, SmmuV3Encode.Stage2Ste(s2.CreateStage2Config(vmid: 7)));
        Touch(rig, 8, 0x8000_0000); Touch(rig, 8, 0x8000_1000);
        s2.Unmap(0x8000_0000, 0x2000);
        rig.Submit(byVmid ? SmmuV3Encode.TlbiS12Vmall(7) : SmmuV3Encode.TlbiS2Ipa(7, 0x8000_0000), SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, 0x8000_0000));
        Assert.Equal(byVmid ? BusStatus.SlaveError : BusStatus.Ok, Touch(rig, 8, 0x8000_1000));
        rig.Submit(SmmuV3Encode.TlbiS2IpaRange(7, 0x8000_0000, tg: 1, num: 1, scale: 0), SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, 0x8000_1000));
    }

    [Fact]
    public void Prefetch_commands_complete_and_do_nothing_visible()
    {
        var rig = new SmmuV3Rig();
        var cons = rig.Submit(SmmuV3Encode.PrefetchConfig(8), (Cmd.PrefetchAddr | 8UL << 32, 0x1000), SmmuV3Encode.Sync());
        Assert.Equal(3u, cons);
        Assert.Equal(0u, rig.Rd(SmmuV3Reg.GERROR));
    }

    public static TheoryData<ulong> IllegalCommands => new()
    {
        Cmd.AtcInv, Cmd.PriResp, Cmd.Resume, Cmd.StallTerm, Cmd.TlbiEl2All, 0x7F, 0,
        Cmd.Sync | 3UL << 12,              // CMD_SYNC CS = 0b11 (QEMU accepts it)
        Cmd.CfgiSte | 1UL << 10,           // SSEC on the Non-secure queue
    };

    [Theory]
    [MemberData(nameof(IllegalCommands))]
    public void Illegal_command_stops_the_queue_until_gerrorn_acknowledges(ulong q0)
    {
        var gerrorIrq = new Line();
        var rig = new SmmuV3Rig();
        rig.Smmu.GerrorIrq = gerrorIrq;
        rig.Wr(SmmuV3Reg.IRQ_CTRL, SmmuV3Field.IrqCtrlGerrorEn);
        rig.SetSte(8, SmmuV3Encode.BypassSte());
        Touch(rig, 8, SmmuV3Rig.DataBase);
        rig.SetSte(8, SmmuV3Encode.AbortSte());
        var cons = rig.Submit(SmmuV3Encode.Sync(), (q0, 0), SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        Assert.Equal(1u | SmmuV3Field.CerrorIll << 24, cons);                   // stopped on the bad command, ERR = ILL
        Assert.Equal(SmmuV3Field.GerrorCmdq, rig.Rd(SmmuV3Reg.GERROR) ^ rig.Rd(SmmuV3Reg.GERRORN));
        Assert.Equal(1, gerrorIrq.Rising);
        Assert.Equal(BusStatus.Ok, Touch(rig, 8, SmmuV3Rig.DataBase));           // CFGI not executed
        rig.Wr(SmmuV3Reg.CMDQ_PROD, rig.CmdProd);                                   // ringing again does not help
        Assert.Equal(1u, rig.Rd(SmmuV3Reg.CMDQ_CONS) & 0xFFFFFF);
        // Software (as Linux does) replaces the bad command by a CMD_SYNC, then acknowledges.
        var (s0, s1) = SmmuV3Encode.Sync();
        rig.Bus.Store.WriteU64(SmmuV3Rig.CmdqBase + 16, s0);
        rig.Bus.Store.WriteU64(SmmuV3Rig.CmdqBase + 24, s1);
        rig.Wr(SmmuV3Reg.GERRORN, rig.Rd(SmmuV3Reg.GERROR));
        Assert.Equal(4u, rig.Rd(SmmuV3Reg.CMDQ_CONS) & 0xFFFFF);
        Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, SmmuV3Rig.DataBase));
    }

    [Fact]
    public void Command_fetch_abort_is_cerror_abt()
    {
        var rig = new SmmuV3Rig(enable: false);
        rig.Enable();
        rig.Wr(SmmuV3Reg.CR0, SmmuV3Field.Cr0EventqEn | SmmuV3Field.Cr0SmmuEn);
        rig.Wr64(SmmuV3Reg.CMDQ_BASE, 0x2000_0000 | 4);
        rig.Wr(SmmuV3Reg.CR0, SmmuV3Field.Cr0CmdqEn | SmmuV3Field.Cr0EventqEn | SmmuV3Field.Cr0SmmuEn);
        rig.Wr(SmmuV3Reg.CMDQ_PROD, 1);
        Assert.Equal(SmmuV3Field.CerrorAbt << 24, rig.Rd(SmmuV3Reg.CMDQ_CONS));
        Assert.Equal(SmmuV3Field.GerrorCmdq, rig.Rd(SmmuV3Reg.GERROR));
    }

    [Fact]
    public void Cmd_sync_sig_irq_writes_msi_data_to_memory_with_the_smmu_attributes()
    {
        var rig = new SmmuV3Rig(new SmmuV3Options { OwnDeviceId = 0x99 });
        var cons = rig.Submit(SmmuV3Encode.Sync(Cmd.SyncCsIrq, SmmuV3Rig.DataBase + 0x100, 0xC0FFEE));
        Assert.Equal(1u, cons);
        Assert.Equal(0xC0FFEEu, rig.Bus.Store.ReadU32(SmmuV3Rig.DataBase + 0x100));
        // Through an MMIO doorbell the SMMU's own DeviceID is on the sideband.
        var sink = new Sink();
        rig.Bus.MapMmio(new PhysAddr(0x0809_0000), 0x1000, sink, MmioAccessRules.AnySizeAligned, "its");
        rig.Submit(SmmuV3Encode.Sync(Cmd.SyncCsIrq, 0x0809_0040, 5));
        Assert.Equal((5UL, 0x99u, true), sink.Last);
        // SIG_SEV and SIG_NONE complete; an MSI to nothing is MSI_CMDQ_ABT_ERR.
        rig.Submit(SmmuV3Encode.Sync(Cmd.SyncCsSev), SmmuV3Encode.Sync(Cmd.SyncCsIrq, 0x2000_0000, 1));
        Assert.Equal(1, rig.Smmu.SevCount);
        Assert.Equal(SmmuV3Field.GerrorMsiCmdqAbt, rig.Rd(SmmuV3Reg.GERROR));
    }

    [Fact]
    public void Cmd_sync_sig_irq_without_msi_address_pulses_the_wired_line()
    {
        var line = new Line();
        var rig = new SmmuV3Rig();
        rig.Smmu.CmdSyncIrq = line;
        rig.Submit(SmmuV3Encode.Sync(Cmd.SyncCsIrq));
        Assert.Equal(1, line.Rising);
    }

    sealed class Sink : IMmioHandler
    {
        public (ulong, uint, bool) Last;
        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes) { value = 0; return BusStatus.Ok; }
        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
        {
            Last = (value, attributes.DeviceId, attributes.HasDeviceId);
            return BusStatus.Ok;
        }
    }

    [Fact]
    public void Event_queue_overflow_drops_records_and_toggles_ovflg_not_eventq_abt()
    {
        var rig = new SmmuV3Rig { EventqLog2 = 2 };
        rig.Enable();
        for (var i = 0; i < 6; i++) Touch(rig, 0xF000 + (uint)i, 0); // C_BAD_STREAMID each
        var prod = rig.Rd(SmmuV3Reg.EVENTQ_PROD);
        Assert.Equal(SmmuV3Field.QOvflg | 4u, prod);                   // full (wrapped index 0 + wrap bit) and overflowed
        Assert.Equal(0u, rig.Rd(SmmuV3Reg.GERROR));                     // no EVENTQ_ABT (QEMU raises it)
        Assert.Equal(2, rig.Smmu.EventsDropped);
        var ev = rig.DrainEvents();
        Assert.Equal(4, ev.Count);
        Assert.Equal(0xF003u, ev[3].StreamId);
        // Acknowledge the overflow: OVACKFLG = OVFLG; a new overflow toggles OVFLG again.
        rig.Wr(SmmuV3Reg.EVENTQ_CONS, rig.Rd(SmmuV3Reg.EVENTQ_CONS) | SmmuV3Field.QOvflg);
        for (var i = 0; i < 5; i++) Touch(rig, 0xF000, 0);
        Assert.Equal(0u, rig.Rd(SmmuV3Reg.EVENTQ_PROD) & SmmuV3Field.QOvflg);
    }

    [Fact]
    public void Event_queue_interrupt_as_msi_or_wired_line()
    {
        var line = new Line();
        var rig = new SmmuV3Rig();
        rig.Smmu.EventQueueIrq = line;
        rig.Wr(SmmuV3Reg.IRQ_CTRL, SmmuV3Field.IrqCtrlEventqEn);
        Touch(rig, 0xF000, 0);
        Assert.Equal(1, line.Rising);
        rig.Wr64(SmmuV3Reg.EVENTQ_IRQ_CFG0, SmmuV3Rig.DataBase + 0x200);
        rig.Wr(SmmuV3Reg.EVENTQ_IRQ_CFG1, 0x1234);
        Touch(rig, 0xF000, 0);
        Assert.Equal(0x1234u, rig.Bus.Store.ReadU32(SmmuV3Rig.DataBase + 0x200));
        Assert.Equal(1, line.Rising);
    }

    [Fact]
    public void Gerror_interrupt_as_msi()
    {
        var rig = new SmmuV3Rig();
        rig.Wr64(SmmuV3Reg.GERROR_IRQ_CFG0, SmmuV3Rig.DataBase + 0x300);
        rig.Wr(SmmuV3Reg.GERROR_IRQ_CFG1, 0x77);
        rig.Wr(SmmuV3Reg.IRQ_CTRL, SmmuV3Field.IrqCtrlGerrorEn);
        rig.Submit((0x7F, 0));
        Assert.Equal(0x77u, rig.Bus.Store.ReadU32(SmmuV3Rig.DataBase + 0x300));
    }

    [Fact]
    public void Disabled_event_queue_drops_events()
    {
        var rig = new SmmuV3Rig();
        rig.Wr(SmmuV3Reg.CR0, SmmuV3Field.Cr0CmdqEn | SmmuV3Field.Cr0SmmuEn);
        Touch(rig, 0xF000, 0);
        Assert.Equal(0u, rig.Rd(SmmuV3Reg.EVENTQ_PROD));
        Assert.Equal(1, rig.Smmu.EventsDropped);
    }

    [Fact]
    public void Commands_are_processed_when_the_queue_is_enabled_and_bounded_by_its_size()
    {
        var rig = new SmmuV3Rig { CmdqLog2 = 3 };
        rig.Enable();
        for (var i = 0; i < 8; i++) rig.Submit(SmmuV3Encode.Sync());
        Assert.Equal(8 | 0u, rig.Rd(SmmuV3Reg.CMDQ_CONS));
        Assert.Equal(8, rig.Smmu.CommandsProcessed);
    }
}
