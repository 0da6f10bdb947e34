using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V3;
using Doorbell.Vmsa;

namespace Doorbell.Tests.SmmuV3;

/// <summary>Every STE Config and CD path, through a test DMA master on a stream port.</summary>
public class SmmuV3StreamTests
{
    static readonly BusAttributes Dev = BusAttributes.FromDevice(8);
    const ulong Iova = 0x1_0000_0000;

    static byte[] Read(IMemoryPort port, ulong a, int n, out BusStatus s)
    {
        var b = new byte[n];
        s = port.Read(a, b, Dev);
        return b;
    }

    [Fact]
    public void Bypass_ste_passes_dma_untranslated_with_attributes_intact()
    {
        var rig = new SmmuV3Rig();
        rig.SetSte(8, SmmuV3Encode.BypassSte());
        var port = rig.Smmu.CreateStreamPort(8);
        SmmuV3Rig.Ok(port.Write(SmmuV3Rig.DataBase, [1, 2, 3, 4], Dev));
        Assert.Equal(0x04030201u, rig.Bus.Store.ReadU32(SmmuV3Rig.DataBase));
        Assert.Empty(rig.DrainEvents());
    }

    [Fact]
    public void Device_id_sideband_reaches_an_mmio_target_through_a_translation()
    {
        var rig = new SmmuV3Rig();
        var sink = new RecordingMmio();
        rig.Bus.MapMmio(new PhysAddr(0x0809_0000), 0x1000, sink, MmioAccessRules.AnySizeAligned, "doorbell");
        var pt = rig.AttachStage1(8);
        Assert.Equal(0, pt.Map(0x800_0000, 0x0809_0000, 0x1000, IoProt.Write | IoProt.Mmio));
        SmmuV3Rig.Ok(rig.Smmu.CreateStreamPort(8).Write(0x800_0040, BitConverter.GetBytes(0x2Au), Dev));
        Assert.Equal((0x40UL, 0x2AUL, 8u, true), sink.Last);
    }

    sealed class RecordingMmio : IMmioHandler
    {
        public (ulong, ulong, uint, bool) Last;
        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes) { value = 0; return BusStatus.Ok; }
        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
        {
            Last = (offset, value, attributes.DeviceId, attributes.HasDeviceId);
            return BusStatus.Ok;
        }
    }

    [Fact]
    public void Abort_ste_aborts_without_an_event()
    {
        var rig = new SmmuV3Rig();
        rig.SetSte(8, SmmuV3Encode.AbortSte());
        Read(rig.Smmu.CreateStreamPort(8), SmmuV3Rig.DataBase, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        Assert.Empty(rig.DrainEvents());
    }

    [Theory]
    [InlineData(0UL)]            // V = 0
    [InlineData(1UL | 1 << 1)]   // Config 0b001 reserved
    [InlineData(1UL | 2 << 1)]   // Config 0b010 reserved
    [InlineData(1UL | 3 << 1)]   // Config 0b011 reserved
    public void Invalid_or_reserved_ste_config_is_c_bad_ste_not_a_silent_abort(ulong q0)
    {
        var rig = new SmmuV3Rig();
        rig.SetSte(8, [q0, 0, 0, 0, 0, 0, 0, 0]);
        Read(rig.Smmu.CreateStreamPort(8), SmmuV3Rig.DataBase, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        var e = Assert.Single(rig.DrainEvents());
        Assert.Equal(Evt.C_BAD_STE, e.Id);
        Assert.Equal(8u, e.StreamId);
    }

    [Fact]
    public void Stage1_translates_each_page_of_a_transfer_separately()
    {
        var rig = new SmmuV3Rig();
        var pt = rig.AttachStage1(8);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase + 0x5000, 0x1000, IoProt.ReadWrite));
        Assert.Equal(0, pt.Map(Iova + 0x1000, SmmuV3Rig.DataBase + 0x2000, 0x1000, IoProt.ReadWrite));
        var data = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        SmmuV3Rig.Ok(rig.Smmu.CreateStreamPort(8).Write(Iova + 0xFF0, data, Dev));
        Assert.Equal(0x0F0E0D0C0B0A0908UL, rig.Bus.Store.ReadU64(SmmuV3Rig.DataBase + 0x5FF8));
        Assert.Equal(0x1716151413121110UL, rig.Bus.Store.ReadU64(SmmuV3Rig.DataBase + 0x2000));
        var back = Read(rig.Smmu.CreateStreamPort(8), Iova + 0xFF0, 32, out var s);
        SmmuV3Rig.Ok(s);
        Assert.Equal(data, back);
    }

    [Fact]
    public void Try_translate_answers_like_a_transaction_without_moving_data()
    {
        var rig = new SmmuV3Rig();
        var pt = rig.AttachStage1(8);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.Read));
        var p8 = (SmmuV3StreamPort)rig.Smmu.CreateStreamPort(8);
        Assert.True(p8.TryTranslate(Iova + 0x123, AccessFlags.Read, out var pa));
        Assert.Equal(SmmuV3Rig.DataBase + 0x123, pa);
        Assert.True(p8.TryTranslate(Iova + 0x456, AccessFlags.Read, out pa)); // IOTLB hit path
        Assert.Equal(SmmuV3Rig.DataBase + 0x456, pa);
        Assert.False(p8.TryTranslate(Iova, AccessFlags.Write, out _));
        Assert.Equal(Evt.F_PERMISSION, Assert.Single(rig.DrainEvents()).Id);
    }

    [Fact]
    public void A_faulting_transfer_produces_exactly_one_f_translation_record()
    {
        var rig = new SmmuV3Rig();
        var pt = rig.AttachStage1(8, asid: 5);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
        // 3 pages: the second is unmapped. QEMU emits one record per 4 bytes.
        var s = rig.Smmu.CreateStreamPort(8).Write(Iova, new byte[0x3000], Dev);
        Assert.Equal(BusStatus.SlaveError, s);
        var e = Assert.Single(rig.DrainEvents());
        Assert.Equal(Evt.F_TRANSLATION, e.Id);
        Assert.Equal(Iova + 0x1000, e.InputAddress);
        Assert.False(e.Read);
        Assert.False(e.Stage2);
        Assert.Equal(Evt.ClassIn, e.Class);
    }

    [Fact]
    public void Write_to_read_only_page_is_f_permission_and_cd_r_0_suppresses_the_record()
    {
        var rig = new SmmuV3Rig();
        var pt = rig.AttachStage1(8);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.Read));
        var port = rig.Smmu.CreateStreamPort(8);
        Assert.Equal(BusStatus.SlaveError, port.Write(Iova, new byte[4], Dev));
        Assert.Equal(Evt.F_PERMISSION, Assert.Single(rig.DrainEvents()).Id);
        // CD.R = 0: still terminated, nothing recorded.
        var cd = SmmuV3Rig.CdBase + 8 * 0x1000UL;
        rig.WriteEntry(cd, SmmuV3Encode.ContextDescriptor(pt.CreateStage1Config(1), record: false));
        rig.Submit(SmmuV3Encode.CfgiCd(8, 0), SmmuV3Encode.Sync());
        Assert.Equal(BusStatus.SlaveError, port.Write(Iova, new byte[4], Dev));
        Assert.Empty(rig.DrainEvents());
    }

    [Fact]
    public void Cd_a_0_terminates_as_read_as_zero_write_ignored()
    {
        var rig = new SmmuV3Rig();
        var pt = rig.NewStage1();
        rig.WriteEntry(SmmuV3Rig.CdBase, SmmuV3Encode.ContextDescriptor(pt.CreateStage1Config(1), abort: false));
        rig.SetSte(8, SmmuV3Encode.Stage1Ste(SmmuV3Rig.CdBase));
        var b = new byte[] { 9, 9, 9, 9 };
        SmmuV3Rig.Ok(rig.Smmu.CreateStreamPort(8).Read(Iova, b, Dev));
        Assert.Equal(new byte[4], b);
        Assert.Equal(Evt.F_TRANSLATION, Assert.Single(rig.DrainEvents()).Id);
    }

    [Fact]
    public void Access_flag_fault_and_affd()
    {
        var rig = new SmmuV3Rig();
        var pt = rig.AttachStage1(8);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
        // Clear AF (bit 10) in the leaf descriptor, found by walking the table in software.
        var leaf = FindLeaf(rig.Bus, pt.TableBase, Iova);
        rig.Bus.Store.WriteU64(leaf, rig.Bus.Store.ReadU64(leaf) & ~(1UL << 10));
        Read(rig.Smmu.CreateStreamPort(8), Iova, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        Assert.Equal(Evt.F_ACCESS, Assert.Single(rig.DrainEvents()).Id);
        var cfg = pt.CreateStage1Config(1) with { AccessFlagFaultsDisabled = true };
        rig.WriteEntry(SmmuV3Rig.CdBase + 8 * 0x1000UL, SmmuV3Encode.ContextDescriptor(cfg));
        rig.Submit(SmmuV3Encode.CfgiCdAll(8), SmmuV3Encode.Sync());
        Read(rig.Smmu.CreateStreamPort(8), Iova, 4, out s);
        SmmuV3Rig.Ok(s);
    }

    internal static ulong FindLeaf(PhysicalAddressSpace bus, ulong table, ulong va)
    {
        for (var level = 0; level < 4; level++)
        {
            var idx = (va >> (39 - 9 * level)) & 0x1FF;
            var a = table + idx * 8;
            var d = bus.Store.ReadU64(a);
            if (level == 3 || (d & 2) == 0) return a;
            table = d & 0x000F_FFFF_FFFF_F000;
        }
        throw new InvalidOperationException();
    }

    [Fact]
    public void Table_in_a_bus_hole_is_f_walk_eabt_with_the_fetch_address()
    {
        var rig = new SmmuV3Rig();
        var cfg = new Stage1Config { Low = new TranslationRegion(Granule.Size4K, 48, 0x1000_0000), OutputSize = 44, Asid = 3 };
        rig.WriteEntry(SmmuV3Rig.CdBase, SmmuV3Encode.ContextDescriptor(cfg));
        rig.SetSte(8, SmmuV3Encode.Stage1Ste(SmmuV3Rig.CdBase));
        Read(rig.Smmu.CreateStreamPort(8), Iova, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        var e = Assert.Single(rig.DrainEvents());
        Assert.Equal(Evt.F_WALK_EABT, e.Id);
        Assert.Equal(0x1000_0000UL, e.FetchAddress & ~0xFFFUL);
    }

    [Fact]
    public void Output_beyond_ips_is_f_addr_size()
    {
        var rig = new SmmuV3Rig();
        var pt = rig.NewStage1(oas: 44);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
        var cfg = pt.CreateStage1Config(1) with { OutputSize = 32 };  // IPS 32 bits, output at 0x4800_0000 fits...
        var leaf = FindLeaf(rig.Bus, pt.TableBase, Iova);
        rig.Bus.Store.WriteU64(leaf, rig.Bus.Store.ReadU64(leaf) | 1UL << 36); // ...but make the output 2^36 + …
        rig.WriteEntry(SmmuV3Rig.CdBase, SmmuV3Encode.ContextDescriptor(cfg));
        rig.SetSte(8, SmmuV3Encode.Stage1Ste(SmmuV3Rig.CdBase));
        Read(rig.Smmu.CreateStreamPort(8), Iova, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        Assert.Equal(Evt.F_ADDR_SIZE, Assert.Single(rig.DrainEvents()).Id);
    }

    [Fact]
    public void Stage2_only_translates_and_reports_stage2_faults_with_the_ipa()
    {
        var rig = new SmmuV3Rig();
        var s2 = rig.NewStage2();
        Assert.Equal(0, s2.Map(0x8000_0000, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
        rig.SetSte(8, SmmuV3Encode.Stage2Ste(s2.CreateStage2Config(vmid: 7)));
        var port = rig.Smmu.CreateStreamPort(8);
        SmmuV3Rig.Ok(port.Write(0x8000_0010, [0xAA], Dev));
        Assert.Equal(0xAAu, rig.Bus.Store.ReadU32(SmmuV3Rig.DataBase + 0x10) & 0xFF);
        Read(port, 0x8000_1000, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        var e = Assert.Single(rig.DrainEvents());
        Assert.Equal(Evt.F_TRANSLATION, e.Id);
        Assert.True(e.Stage2);
        Assert.Equal(0x8000_1000UL, e.Ipa);
    }

    [Fact]
    public void Nested_translation_fetches_the_cd_through_stage2()
    {
        var rig = new SmmuV3Rig();
        var s2 = rig.NewStage2();
        var s1 = rig.NewStage1(oas: 40);
        // Guest "physical" (IPA) layout: CD at IPA 0x1000_0000, stage-1 tables identity-mapped, data at IPA 0x2000_0000.
        var cdPa = SmmuV3Rig.CdBase;
        Assert.Equal(0, s2.Map(0x1000_0000, cdPa, 0x1000, IoProt.ReadWrite));
        Assert.Equal(0, s2.Map(0x4100_0000, 0x4100_0000, 0x100_0000, IoProt.ReadWrite)); // table pages
        Assert.Equal(0, s2.Map(0x2000_0000, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
        Assert.Equal(0, s1.Map(Iova, 0x2000_0000, 0x1000, IoProt.ReadWrite));
        rig.WriteEntry(cdPa, SmmuV3Encode.ContextDescriptor(s1.CreateStage1Config(9)));
        rig.SetSte(8, SmmuV3Encode.Stage1Ste(0x1000_0000, nestedStage2: s2.CreateStage2Config(vmid: 3)));
        var port = rig.Smmu.CreateStreamPort(8);
        SmmuV3Rig.Ok(port.Write(Iova + 8, [0x5A], Dev));
        Assert.Equal(0x5Au, rig.Bus.Store.ReadU32(SmmuV3Rig.DataBase + 8) & 0xFF);
        Assert.Empty(rig.DrainEvents());
        // Moving the CD pointer to an IPA stage 2 does not map: a stage-2 fault of class CD.
        rig.SetSte(9, SmmuV3Encode.Stage1Ste(0x3000_0000, nestedStage2: s2.CreateStage2Config(vmid: 3)));
        Read(rig.Smmu.CreateStreamPort(9), Iova, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        var e = Assert.Single(rig.DrainEvents());
        Assert.Equal(Evt.F_TRANSLATION, e.Id);
        Assert.True(e.Stage2);
        Assert.Equal(Evt.ClassCd, e.Class);
        Assert.Equal(0x3000_0000UL, e.Ipa);
    }

    [Fact]
    public void Stage2_with_s2aa64_0_is_c_bad_ste_and_never_crashes()
    {
        var rig = new SmmuV3Rig();
        var ste = SmmuV3Encode.Stage2Ste(rig.NewStage2().CreateStage2Config(1));
        ste[2] &= ~(1UL << Ste.S2Aa64);
        rig.SetSte(8, ste);
        Read(rig.Smmu.CreateStreamPort(8), 0, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        Assert.Equal(Evt.C_BAD_STE, Assert.Single(rig.DrainEvents()).Id);
    }

    [Theory]
    [InlineData(Ste.S2TgShift, 3UL)]     // reserved granule
    [InlineData(Ste.S2Sl0Shift, 3UL)]    // reserved SL0
    [InlineData(Ste.S2T0szShift, 63UL)]  // 1-bit IPA
    [InlineData(Ste.S2Endi, 1UL)]        // big-endian tables
    [InlineData(Ste.S2S, 1UL)]           // stall without stall support
    public void Illegal_stage2_fields_are_c_bad_ste(int shift, ulong value)
    {
        var rig = new SmmuV3Rig();
        var ste = SmmuV3Encode.Stage2Ste(rig.NewStage2().CreateStage2Config(1));
        var width = shift == Ste.S2T0szShift ? 0x3FUL : 3UL;
        ste[2] = (ste[2] & ~(width << shift)) | value << shift;
        rig.SetSte(8, ste);
        Read(rig.Smmu.CreateStreamPort(8), 0, 4, out _);
        Assert.Equal(Evt.C_BAD_STE, Assert.Single(rig.DrainEvents()).Id);
    }

    [Fact]
    public void Stage1_ste_on_an_smmu_without_stage1_is_c_bad_ste()
    {
        var rig = new SmmuV3Rig(new SmmuV3Options { Stage1 = false });
        rig.SetSte(8, SmmuV3Encode.Stage1Ste(SmmuV3Rig.CdBase));
        Read(rig.Smmu.CreateStreamPort(8), 0, 4, out _);
        Assert.Equal(Evt.C_BAD_STE, Assert.Single(rig.DrainEvents()).Id);
    }

    [Theory]
    [InlineData(6UL)]
    [InlineData(7UL)]
    public void Cd_ips_6_or_7_is_c_bad_cd_without_52_bit_output(ulong ips)
    {
        // QEMU asserts on these values.
        var rig = new SmmuV3Rig();
        var cd = SmmuV3Encode.ContextDescriptor(rig.NewStage1().CreateStage1Config(1));
        cd[0] = (cd[0] & ~(7UL << Cd.IpsShift)) | ips << Cd.IpsShift;
        rig.WriteEntry(SmmuV3Rig.CdBase, cd);
        rig.SetSte(8, SmmuV3Encode.Stage1Ste(SmmuV3Rig.CdBase));
        Read(rig.Smmu.CreateStreamPort(8), Iova, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        Assert.Equal(Evt.C_BAD_CD, Assert.Single(rig.DrainEvents()).Id);
    }

    [Fact]
    public void Cd_ips_6_is_52_bits_when_the_smmu_has_52_bit_output()
    {
        var o = new SmmuV3Options { OutputAddressBits = 52 };
        var cd = SmmuV3Encode.ContextDescriptor(new Stage1Config { Low = new TranslationRegion(Granule.Size4K, 48, 0x4100_0000), OutputSize = 52 });
        Assert.Equal(52, SmmuV3Decoder.DecodeCd(cd, o, out _)!.Stage1.OutputSize);
    }

    [Fact]
    public void Tbi0_and_tbi1_come_from_their_own_bits()
    {
        // QEMU reads TBI1 through the TBI0 bit.
        var o = SmmuV3Options.QemuVirt;
        var s1 = new Stage1Config { Low = new TranslationRegion(Granule.Size4K, 48, 0x4100_0000), OutputSize = 44 };
        var only1 = SmmuV3Decoder.DecodeCd(SmmuV3Encode.ContextDescriptor(s1 with { Tbi1 = true }), o, out _)!.Stage1;
        Assert.True(only1.Tbi1);
        Assert.False(only1.Tbi0);
        var only0 = SmmuV3Decoder.DecodeCd(SmmuV3Encode.ContextDescriptor(s1 with { Tbi0 = true }), o, out _)!.Stage1;
        Assert.True(only0.Tbi0);
        Assert.False(only0.Tbi1);
    }

    [Fact]
    public void Cd_fields_decode_as_laid_out()
    {
        var o = SmmuV3Options.QemuVirt;
        var s1 = new Stage1Config
        {
            Low = new TranslationRegion(Granule.Size16K, 47, 0x4100_4000),
            High = new TranslationRegion(Granule.Size64K, 42, 0x4102_0000),
            OutputSize = 40, Asid = 0xBEEF, AccessFlagFaultsDisabled = true, Mair = 0x1122_3344_5566_7788,
        };
        var d = SmmuV3Decoder.DecodeCd(SmmuV3Encode.ContextDescriptor(s1, record: true, abort: false), o, out var why);
        Assert.Null(why);
        Assert.Equal(s1.Low, d!.Stage1.Low);
        Assert.Equal(s1.High, d.Stage1.High);
        Assert.Equal(40, d.Stage1.OutputSize);
        Assert.Equal((ushort)0xBEEF, d.Stage1.Asid);
        Assert.True(d.Stage1.AccessFlagFaultsDisabled);
        Assert.Equal(s1.Mair, d.Stage1.Mair);
        Assert.True(d.Record);
        Assert.False(d.AbortOnTerminate);
        Assert.True(d.SharedAsidSet);
    }

    [Theory]
    [InlineData(Cd.V, false)]
    [InlineData(Cd.Aa64, false)]
    [InlineData(Cd.Endi, true)]
    [InlineData(Cd.S, true)]
    public void Illegal_cd_bits_are_c_bad_cd(int bit, bool set)
    {
        var cd = SmmuV3Encode.ContextDescriptor(new Stage1Config { Low = new TranslationRegion(Granule.Size4K, 48, 0x4100_0000), OutputSize = 44 });
        cd[0] = set ? cd[0] | 1UL << bit : cd[0] & ~(1UL << bit);
        Assert.Null(SmmuV3Decoder.DecodeCd(cd, SmmuV3Options.QemuVirt, out var why));
        Assert.NotNull(why);
    }

    [Fact]
    public void Cd_tg0_reserved_and_t0sz_out_of_range_are_c_bad_cd()
    {
        var cd = SmmuV3Encode.ContextDescriptor(new Stage1Config { Low = new TranslationRegion(Granule.Size4K, 48, 0x4100_0000), OutputSize = 44 });
        var a = (ulong[])cd.Clone(); a[0] |= 3UL << Cd.Tg0Shift;
        Assert.Null(SmmuV3Decoder.DecodeCd(a, SmmuV3Options.QemuVirt, out _));
        var b = (ulong[])cd.Clone(); b[0] = (b[0] & ~0x3FUL) | 8; // T0SZ 8: 56-bit input
        Assert.Null(SmmuV3Decoder.DecodeCd(b, SmmuV3Options.QemuVirt, out _));
    }

    [Fact]
    public void Unknown_stream_id_is_c_bad_streamid_when_recinvsid_is_set()
    {
        var rig = new SmmuV3Rig(strtabLog2: 4);
        Read(rig.Smmu.CreateStreamPort(16), 0, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        var e = Assert.Single(rig.DrainEvents());
        Assert.Equal(Evt.C_BAD_STREAMID, e.Id);
        Assert.Equal(16u, e.StreamId);
        rig.Wr(SmmuV3Reg.CR2, 0);
        Read(rig.Smmu.CreateStreamPort(16), 0, 4, out _);
        Assert.Empty(rig.DrainEvents());
    }

    [Fact]
    public void Stream_table_in_a_hole_is_f_ste_fetch()
    {
        var rig = new SmmuV3Rig(enable: false);
        rig.Enable();
        rig.Wr(SmmuV3Reg.CR0, SmmuV3Field.Cr0CmdqEn | SmmuV3Field.Cr0EventqEn);
        rig.Wr64(SmmuV3Reg.STRTAB_BASE, 0x2000_0000);
        rig.Wr(SmmuV3Reg.CR0, SmmuV3Field.Cr0CmdqEn | SmmuV3Field.Cr0EventqEn | SmmuV3Field.Cr0SmmuEn);
        Read(rig.Smmu.CreateStreamPort(2), 0, 4, out _);
        var e = Assert.Single(rig.DrainEvents());
        Assert.Equal(Evt.F_STE_FETCH, e.Id);
        Assert.Equal(0x2000_0080UL, e.FetchAddress);
    }

    [Fact]
    public void Cd_in_a_hole_is_f_cd_fetch()
    {
        var rig = new SmmuV3Rig();
        rig.SetSte(8, SmmuV3Encode.Stage1Ste(0x2000_0000));
        Read(rig.Smmu.CreateStreamPort(8), 0, 4, out _);
        var e = Assert.Single(rig.DrainEvents());
        Assert.Equal(Evt.F_CD_FETCH, e.Id);
        Assert.Equal(0x2000_0000UL, e.FetchAddress);
    }

    [Theory]
    [InlineData(6)]
    [InlineData(8)]
    [InlineData(10)]
    public void Two_level_stream_table_for_each_split(int split)
    {
        var rig = new SmmuV3Rig(enable: false);
        rig.Enable(strtabLog2: 16, linear: false, split: split);
        const uint sid = 0x1234;
        var l2 = 0x4500_0000UL;
        rig.Bus.Store.WriteU64(SmmuV3Rig.StrtabBase + (sid >> split) * 8UL, SmmuV3Encode.L1Std(l2, split + 1));
        rig.WriteEntry(l2 + (sid & ((1u << split) - 1)) * 64UL, SmmuV3Encode.BypassSte());
        var b = Read(rig.Smmu.CreateStreamPort(sid), SmmuV3Rig.DataBase, 4, out var s);
        SmmuV3Rig.Ok(s);
        Assert.Empty(rig.DrainEvents());
        // A neighbour in a span-less (invalid) L1 descriptor is C_BAD_STREAMID.
        Read(rig.Smmu.CreateStreamPort(sid + (1u << split)), SmmuV3Rig.DataBase, 4, out s);
        Assert.Equal(BusStatus.SlaveError, s);
        Assert.Equal(Evt.C_BAD_STREAMID, Assert.Single(rig.DrainEvents()).Id);
    }

    [Fact]
    public void Reserved_split_behaves_as_6()
    {
        var rig = new SmmuV3Rig(enable: false);
        rig.Enable(strtabLog2: 16, linear: false, split: 7);
        const uint sid = 0x1234;
        rig.Bus.Store.WriteU64(SmmuV3Rig.StrtabBase + (sid >> 6) * 8UL, SmmuV3Encode.L1Std(0x4500_0000, 7));
        rig.WriteEntry(0x4500_0000 + (sid & 63) * 64UL, SmmuV3Encode.BypassSte());
        Read(rig.Smmu.CreateStreamPort(sid), SmmuV3Rig.DataBase, 4, out var s);
        SmmuV3Rig.Ok(s);
        Assert.Empty(rig.DrainEvents());
    }

    [Fact]
    public void Two_level_stream_table_span_limits_the_l2_table()
    {
        var rig = new SmmuV3Rig(enable: false);
        rig.Enable(strtabLog2: 16, linear: false, split: 8);
        rig.Bus.Store.WriteU64(SmmuV3Rig.StrtabBase, SmmuV3Encode.L1Std(0x4500_0000, 3)); // 4 STEs
        for (var i = 0u; i < 8; i++) rig.WriteEntry(0x4500_0000 + i * 64UL, SmmuV3Encode.BypassSte());
        Read(rig.Smmu.CreateStreamPort(3), SmmuV3Rig.DataBase, 4, out var s);
        SmmuV3Rig.Ok(s);
        Read(rig.Smmu.CreateStreamPort(4), SmmuV3Rig.DataBase, 4, out s);
        Assert.Equal(BusStatus.SlaveError, s);
        Assert.Equal(Evt.C_BAD_STREAMID, Assert.Single(rig.DrainEvents()).Id);
    }

    [Fact]
    public void Substreams_with_a_two_level_cd_table()
    {
        var rig = new SmmuV3Rig();
        var l1 = 0x4600_0000UL; var l2 = 0x4601_0000UL;
        var a = rig.NewStage1(); var b = rig.NewStage1();
        Assert.Equal(0, a.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
        Assert.Equal(0, b.Map(Iova, SmmuV3Rig.DataBase + 0x1000, 0x1000, IoProt.ReadWrite));
        // S1Fmt = 2 (64K leaves, 1024 CDs each), S1CDMax = 12: SSID 0x405 is L1 index 1, CD 5.
        rig.Bus.Store.WriteU64(l1 + 8, SmmuV3Encode.L1Cd(l2));
        rig.WriteEntry(l2 + 5 * 64, SmmuV3Encode.ContextDescriptor(a.CreateStage1Config(10)));
        rig.Bus.Store.WriteU64(l1, SmmuV3Encode.L1Cd(l2 + 0x10000));
        rig.WriteEntry(l2 + 0x10000, SmmuV3Encode.ContextDescriptor(b.CreateStage1Config(11)));
        rig.SetSte(8, SmmuV3Encode.Stage1Ste(l1, s1CdMax: 12, s1Fmt: Cd.S1Fmt2Level64K, s1Dss: Ste.S1DssSubstream0));
        SmmuV3Rig.Ok(rig.Smmu.CreateStreamPort(8, 0x405).Write(Iova, [1], Dev));
        SmmuV3Rig.Ok(rig.Smmu.CreateStreamPort(8).Write(Iova, [2], Dev)); // no SSID: substream 0
        Assert.Equal(1u, rig.Bus.Store.ReadU32(SmmuV3Rig.DataBase) & 0xFF);
        Assert.Equal(2u, rig.Bus.Store.ReadU32(SmmuV3Rig.DataBase + 0x1000) & 0xFF);
        Assert.Empty(rig.DrainEvents());
        // SSID 0 explicitly, with S1DSS = substream 0: C_BAD_SUBSTREAMID. SSID beyond S1CDMax: same. L1CD.V = 0: same.
        Read(rig.Smmu.CreateStreamPort(8, 0), Iova, 1, out _);
        Read(rig.Smmu.CreateStreamPort(8, 0x1000), Iova, 1, out _);
        Read(rig.Smmu.CreateStreamPort(8, 0x805), Iova, 1, out _);
        var ev = rig.DrainEvents();
        Assert.Equal(3, ev.Count);
        Assert.All(ev, e => Assert.Equal(Evt.C_BAD_SUBSTREAMID, e.Id));
        Assert.Equal(0x805u, ev[2].SubstreamId);
        Assert.True(ev[2].SubstreamValid);
        // A zeroed CD in a valid leaf: C_BAD_CD.
        Read(rig.Smmu.CreateStreamPort(8, 0x406), Iova, 1, out _);
        Assert.Equal(Evt.C_BAD_CD, Assert.Single(rig.DrainEvents()).Id);
    }

    [Fact]
    public void Two_level_cd_table_with_4k_leaves()
    {
        var rig = new SmmuV3Rig();
        var l1 = 0x4600_0000UL; var l2 = 0x4601_0000UL;
        var a = rig.NewStage1();
        Assert.Equal(0, a.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
        rig.Bus.Store.WriteU64(l1 + 2 * 8, SmmuV3Encode.L1Cd(l2)); // SSID 130 = L1 2, CD 2 (64 CDs per leaf)
        rig.WriteEntry(l2 + 2 * 64, SmmuV3Encode.ContextDescriptor(a.CreateStage1Config(10)));
        rig.SetSte(8, SmmuV3Encode.Stage1Ste(l1, s1CdMax: 8, s1Fmt: Cd.S1Fmt2Level4K));
        SmmuV3Rig.Ok(rig.Smmu.CreateStreamPort(8, 130).Write(Iova, [7], Dev));
        Assert.Equal(7u, rig.Bus.Store.ReadU32(SmmuV3Rig.DataBase) & 0xFF);
    }

    [Fact]
    public void S1dss_terminate_and_bypass_for_traffic_without_a_substream()
    {
        var rig = new SmmuV3Rig();
        rig.SetSte(8, SmmuV3Encode.Stage1Ste(SmmuV3Rig.CdBase, s1CdMax: 4, s1Dss: Ste.S1DssTerminate));
        rig.SetSte(9, SmmuV3Encode.Stage1Ste(SmmuV3Rig.CdBase, s1CdMax: 4, s1Dss: Ste.S1DssBypass));
        Read(rig.Smmu.CreateStreamPort(8), SmmuV3Rig.DataBase, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        Assert.Equal(Evt.F_STREAM_DISABLED, Assert.Single(rig.DrainEvents()).Id);
        Read(rig.Smmu.CreateStreamPort(9), SmmuV3Rig.DataBase, 4, out s);
        SmmuV3Rig.Ok(s);
        Assert.Empty(rig.DrainEvents());
    }

    [Fact]
    public void Substream_on_a_stream_without_stage1_is_c_bad_substreamid()
    {
        var rig = new SmmuV3Rig();
        rig.SetSte(8, SmmuV3Encode.BypassSte());
        Read(rig.Smmu.CreateStreamPort(8, 1), SmmuV3Rig.DataBase, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        Assert.Equal(Evt.C_BAD_SUBSTREAMID, Assert.Single(rig.DrainEvents()).Id);
    }

    [Fact]
    public void S1cdmax_above_ssidsize_and_reserved_s1fmt_and_s1dss_are_c_bad_ste()
    {
        var rig = new SmmuV3Rig(new SmmuV3Options { SubstreamIdBits = 4 });
        rig.SetSte(1, SmmuV3Encode.Stage1Ste(SmmuV3Rig.CdBase, s1CdMax: 5));
        rig.SetSte(2, SmmuV3Encode.Stage1Ste(SmmuV3Rig.CdBase, s1CdMax: 2, s1Fmt: 3));
        rig.SetSte(3, SmmuV3Encode.Stage1Ste(SmmuV3Rig.CdBase, s1CdMax: 2, s1Dss: 3));
        for (var sid = 1u; sid <= 3; sid++) Read(rig.Smmu.CreateStreamPort(sid), 0, 4, out _);
        Assert.All(rig.DrainEvents(), e => Assert.Equal(Evt.C_BAD_STE, e.Id));
        Assert.Equal(3, rig.Smmu.EventsRecorded);
    }

    [Fact]
    public void Instruction_write_is_f_uut_and_ats_translated_traffic_is_f_transl_forbidden()
    {
        var rig = new SmmuV3Rig();
        rig.AttachStage1(8);
        var port = rig.Smmu.CreateStreamPort(8);
        Assert.Equal(BusStatus.SlaveError, port.Write(Iova, [1], new BusAttributes(8, true, false, true)));
        Assert.Equal(Evt.F_UUT, Assert.Single(rig.DrainEvents()).Id);
        Read(rig.Smmu.CreateTranslatedStreamPort(8), Iova, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        var e = Assert.Single(rig.DrainEvents());
        Assert.Equal(Evt.F_TRANSL_FORBIDDEN, e.Id);
        Assert.Equal(Iova, e.InputAddress);
        Assert.True(e.Read);
    }

    [Fact]
    public void Same_asid_with_different_tables_is_f_cfg_conflict()
    {
        var rig = new SmmuV3Rig();
        var a = rig.AttachStage1(8, asid: 4);
        Assert.Equal(0, a.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
        SmmuV3Rig.Ok(rig.Smmu.CreateStreamPort(8).Write(Iova, [1], Dev));
        rig.AttachStage1(9, asid: 4);
        Read(rig.Smmu.CreateStreamPort(9), Iova, 4, out var s);
        Assert.Equal(BusStatus.SlaveError, s);
        Assert.Equal(Evt.F_CFG_CONFLICT, Assert.Single(rig.DrainEvents()).Id);
    }

    [Fact]
    public void Event_record_layout_matches_the_spec()
    {
        var rig = new SmmuV3Rig();
        var pt = rig.AttachStage1(0x42);
        _ = pt;
        var port = rig.Smmu.CreateStreamPort(0x42);
        Read(port, 0xDEAD_B000, 4, out _);
        var ev = rig.DrainEvents();
        var raw0 = rig.Bus.Store.ReadU64(SmmuV3Rig.EventqBase);
        Assert.Equal(0x10UL, raw0 & 0xFF);                 // ID[7:0]
        Assert.Equal(0x42UL, raw0 >> 32);                  // SID[63:32]
        var raw1 = rig.Bus.Store.ReadU64(SmmuV3Rig.EventqBase + 8);
        Assert.Equal(1UL, (raw1 >> 35) & 1);               // RnW
        Assert.Equal(2UL, (raw1 >> 40) & 3);               // CLASS = IN
        Assert.Equal(0xDEAD_B000UL, rig.Bus.Store.ReadU64(SmmuV3Rig.EventqBase + 16));
        Assert.Single(ev);
    }
}
