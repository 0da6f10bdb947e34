using Doorbell.Gic.Its;
using Doorbell.Gic.V3;
using Doorbell.Memory;

namespace Doorbell.Tests.Gic;

public class ItsTests
{
    static ItsHarness Basic(int cpus = 2, ItsOptions? o = null)
    {
        var h = new ItsHarness(cpus, o);
        for (var c = 0; c < cpus; c++) h.Mapc((ushort)c, c);
        return h;
    }

    [Fact]
    public void Msi_from_device_becomes_pending_lpi_in_memory_and_is_acknowledged_by_its_cpu()
    {
        var h = Basic();
        h.MapBasic(dev: 8, lpiBase: 8192, events: 4, icid: 1);
        Assert.Equal(0UL, h.Creadr & 1);
        Assert.Equal(h.Cwriter, h.Creadr);

        Assert.Equal(BusStatus.Ok, h.Msi(8, 2));
        Assert.True(h.PendingBitInMemory(1, 8194));
        Assert.False(h.PendingBitInMemory(0, 8194));
        Assert.Equal(1023UL, h.Cpu(0).Iar1());
        Assert.Equal(8194UL, h.Cpu(1).Hppir1);
        Assert.Equal(8194UL, h.Cpu(1).Iar1());
        Assert.False(h.PendingBitInMemory(1, 8194));
        Assert.Equal(0xA0UL & (0xFFUL << 1), h.Cpu(1).Rpr);
        h.Cpu(1).Eoir1(8194);
        Assert.Equal(0xFFUL, h.Cpu(1).Rpr);
        Assert.Equal(1023UL, h.Cpu(1).Iar1());
        Assert.Equal(1, h.Its.Translations);
    }

    [Fact]
    public void Acknowledging_an_lpi_rescans_no_wired_interrupt_and_a_wired_change_does()
    {
        var h = Basic();
        h.MapBasic(dev: 8, lpiBase: 8192, events: 4, icid: 1);
        var cpu = h.Cpu(1);
        Assert.Equal(1023UL, cpu.Iar1()); // fills the kept wired candidate
        var before = cpu.WiredRescans;
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(BusStatus.Ok, h.Msi(8, 2));
            Assert.Equal(8194UL, cpu.Iar1());
            cpu.Eoir1(8194);
            Assert.Equal(1023UL, cpu.Iar1()); // the IAR read that finds nothing after it
        }
        Assert.Equal(before, cpu.WiredRescans);
        h.W32(QemuVirtGicV3.GicdBase.Value + GicV3.GICD_ISPENDR + 4, 1); // an SPI's pending bit changes
        Assert.Equal(1023UL, cpu.Iar1());
        Assert.Equal(before + 1, cpu.WiredRescans);
    }

    [Fact]
    public void The_translation_frame_is_the_engines_own_region_and_the_front_hands_its_offsets_over()
    {
        var h = Basic();
        h.MapBasic(dev: 8, lpiBase: 8192, events: 4, icid: 1);
        var b = QemuVirtGicV3.ItsBase.Value;
        Assert.Contains(new BusRegion("gicv3-its", new PhysAddr(b), GicV3Its.ControlFrameSize, false), h.Bus.Regions);
        Assert.Contains(new BusRegion("gicv3-its-translation", new PhysAddr(b + 0x1_0000), ItsTranslationFrame.Size, false), h.Bus.Regions);
        Assert.Equal(b + GicV3Its.GITS_TRANSLATER, QemuVirtGicV3.TranslaterAddress.Value);
        // A device's doorbell write on the bus, and the same write through the front's frame offset, both translate.
        Assert.Equal(BusStatus.Ok, h.Msi(8, 1));
        Assert.Equal(BusStatus.Ok, h.Its.Write(GicV3Its.GITS_TRANSLATER, 2, 3, BusAttributes.FromDevice(8))); // a 16-bit EventID
        Assert.Equal(2, h.Its.Translations);
        Assert.Equal(8193UL, h.Cpu(1).Iar1());
        h.Cpu(1).Eoir1(8193);
        Assert.Equal(8195UL, h.Cpu(1).Iar1());
        h.Its.Read(GicV3Its.GITS_TRANSLATER, 4, out var v, BusAttributes.Cpu);
        Assert.Equal(0UL, v); // write-only
    }

    [Fact]
    public void Dte_cte_and_ite_are_bytes_in_guest_memory_in_the_documented_layout()
    {
        var h = Basic();
        h.Mapd(7, bits: 4);
        h.Mapti(7, 3, 8200, 1);
        var dte = h.R64(ItsHarness.DeviceTable + 7 * 8);
        Assert.Equal((1UL << 63) | (ItsHarness.IttBase + 7 * 0x1000) | 3, dte);
        var cte = h.R64(ItsHarness.CollectionTable + 1 * 8);
        Assert.Equal((1UL << 63) | 1, cte);
        var ite = h.R64(ItsHarness.IttBase + 7 * 0x1000 + 3 * 8);
        Assert.Equal((1UL << 63) | (1UL << 62) | (1UL << 32) | 8200, ite);
    }

    [Fact]
    public void A_write_from_device_A_cannot_raise_device_B_lpi_and_unattributed_writes_are_dropped_as_data()
    {
        var h = Basic();
        h.MapBasic(dev: 1, lpiBase: 8192, events: 2, icid: 0);
        h.MapBasic(dev: 2, lpiBase: 8300, events: 2, icid: 0);
        // Device 1 writes EventID 0 and 1: only its own LPIs can result, whatever the data.
        h.Msi(1, 0); h.Msi(1, 1);
        Assert.True(h.Gic.Redistributors[0].IsLpiPending(8192));
        Assert.False(h.Gic.Redistributors[0].IsLpiPending(8300));
        Assert.False(h.Gic.Redistributors[0].IsLpiPending(8301));
        // Device 1 tries an EventID outside its ITT; device 3 is not mapped; a CPU write carries no DeviceID.
        Assert.Equal(ItsDropReason.EventIdOutOfRange, h.Its.Translate(BusAttributes.FromDevice(1), 40));
        h.Msi(3, 0);
        Assert.Equal(ItsDropReason.UnmappedDevice, h.Its.LastDrop.Reason);
        h.Bus.Write(QemuVirtGicV3.TranslaterAddress, 4, 0, BusAttributes.Cpu);
        Assert.Equal(ItsDropReason.NoDeviceId, h.Its.LastDrop.Reason);
        Assert.Equal(3, h.Its.DropCount);
        Assert.False(h.Gic.Redistributors[0].IsLpiPending(8300));
        Assert.Contains(h.Strict.Violations, v => v.Message.Contains("UnmappedDevice", StringComparison.Ordinal));
    }

    [Fact]
    public void An_ite_written_by_software_with_an_icid_beyond_cidbits_is_an_unmapped_collection()
    {
        var h = new ItsHarness(1, new ItsOptions { CollectionIdBits = 4 });
        h.Mapc(0, 0);
        h.Mapd(1);
        h.W64(ItsHarness.IttBase + 0x1000 + 2 * 8, (1UL << 63) | (1UL << 62) | (0x1234UL << 32) | 8192); // hand-made ITE
        Assert.Equal(ItsDropReason.UnmappedCollection, h.Its.Translate(BusAttributes.FromDevice(1), 2));
        Assert.Equal(ItsDropReason.UnmappedCollection, h.Its.Translate(BusAttributes.FromDevice(1), 2)); // cached path too
    }

    [Fact]
    public void Msi_while_its_disabled_or_to_unmapped_event_is_dropped()
    {
        var h = Basic();
        h.MapBasic(1, 8192, 1, 0);
        h.Msi(1, 5);
        Assert.Equal(ItsDropReason.UnmappedInterrupt, h.Its.LastDrop.Reason);
        h.W32(QemuVirtGicV3.ItsBase.Value + GicV3Its.GITS_CTLR, 0);
        Assert.Equal(GicV3Its.CtlrQuiescent, h.ItsReg(GicV3Its.GITS_CTLR) & 0xFFFF_FFFF);
        h.Msi(1, 0);
        Assert.Equal(ItsDropReason.ItsDisabled, h.Its.LastDrop.Reason);
        Assert.False(h.Gic.Redistributors[0].IsLpiPending(8192));
    }

    [Fact]
    public void Typer_reports_configured_geometry()
    {
        var h = new ItsHarness(2, new ItsOptions { DeviceIdBits = 20, EventIdBits = 12, CollectionIdBits = 8, PhysicalTargetAddresses = true, HardwareCollections = 4, CumulativeCollectionTables = true });
        var t = h.ItsReg(GicV3Its.GITS_TYPER);
        Assert.Equal(1UL, t & 1);                 // Physical
        Assert.Equal(7UL, t >> 4 & 0xF);          // ITT entry size 8
        Assert.Equal(11UL, t >> 8 & 0x1F);        // IDbits
        Assert.Equal(19UL, t >> 13 & 0x1F);       // Devbits
        Assert.Equal(1UL, t >> 19 & 1);           // PTA
        Assert.Equal(1UL, t >> 20 & 1);           // CCT
        Assert.Equal(4UL, t >> 24 & 0xFF);        // HCC
        Assert.Equal(7UL, t >> 32 & 0xF);         // CIDbits
        Assert.Equal(1UL, t >> 36 & 1);           // CIL
        Assert.Equal(1UL, h.ItsReg(GicV3Its.GITS_BASER) >> 56 & 7);
        Assert.Equal(4UL, h.ItsReg(GicV3Its.GITS_BASER + 8) >> 56 & 7);
        Assert.Equal(0UL, h.ItsReg(GicV3Its.GITS_BASER + 16));
    }

    [Fact]
    public void Pta1_targets_redistributors_by_physical_address_and_hardware_collections_need_no_table()
    {
        var h = new ItsHarness(2, new ItsOptions { PhysicalTargetAddresses = true, HardwareCollections = 2 });
        h.Mapc(0, 0);
        h.Mapc(1, 1);
        Assert.Equal(0UL, h.R64(ItsHarness.CollectionTable + 8)); // held in the ITS, not in memory
        h.Mapc(2, 1);
        Assert.Equal((1UL << 63) | 1, h.R64(ItsHarness.CollectionTable + 16));
        h.MapBasic(4, 8192, 1, 2);
        h.Msi(4, 0);
        Assert.Equal(8192UL, h.Cpu(1).Iar1());
        // A PE number is not a valid RDbase with PTA = 1.
        h.Cmd(c => ItsCommand.Mapc(c, 3, 1, true));
        Assert.Equal(ItsError.MapcProcnumOor, h.Its.CommandErrors[^1].Code);
    }

    public static TheoryData<int, bool> TableShapes => new()
    {
        { 0, false }, { 1, false }, { 2, false }, { 0, true }, { 1, true }, { 2, true },
    };

    [Theory]
    [MemberData(nameof(TableShapes))]
    public void Flat_and_indirect_device_tables_with_4k_16k_64k_pages(int pageCode, bool indirect)
    {
        var h = new ItsHarness(1, new ItsOptions { StallOnCommandError = false }, indirectDevices: indirect, pageSizeCode: pageCode);
        h.Mapc(0, 0);
        var perPage = h.PageSize / 8;
        var dev = (uint)(perPage + 3); // second page of the device table
        if (indirect)
        {
            // Level 1 entry 1 → a level-2 page; entry 0 left invalid.
            var l2 = ItsHarness.L2Pages;
            h.W64(ItsHarness.DeviceTable + 8, (1UL << 63) | l2);
            h.Mapd(dev);
            Assert.Equal(0, h.Its.CommandErrorCount);
            Assert.Equal(1UL, h.R64(l2 + 3 * 8) >> 63);
            h.Mapd(2); // level-1 entry 0 invalid: DeviceID out of range
            Assert.Equal(ItsError.MapdDeviceOor, h.Its.CommandErrors[^1].Code);
        }
        else
        {
            h.Mapd(dev); // one page only: beyond the flat table
            Assert.Equal(ItsError.MapdDeviceOor, h.Its.CommandErrors[^1].Code);
            return;
        }
        h.SetLpiConfig(8192, 0x80, true);
        h.Mapti(dev, 0, 8192, 0);
        h.Msi(dev, 0);
        Assert.Equal(8192UL, h.Cpu(0).Iar1());
    }

    [Fact]
    public void Baser_with_64k_pages_carries_pa_51_48_in_bits_15_12()
    {
        var h = new ItsHarness(1, enableIts: false);
        const ulong high = 0x000A_0000_0001_0000UL; // above 2^48
        h.Bus.AddRam(new PhysAddr(high), 0x2_0000, "high");
        var its = QemuVirtGicV3.ItsBase.Value;
        h.W64(its + GicV3Its.GITS_BASER, (1UL << 63) | (high & 0x0000_FFFF_FFFF_0000UL) | ((high >> 48 & 0xF) << 12) | (2UL << 8));
        h.W32(its + GicV3Its.GITS_CTLR, 1);
        h.Mapd(5);
        Assert.Equal(0, h.Its.CommandErrorCount);
        Assert.Equal(1UL, h.R64(high + 5 * 8) >> 63);
    }

    [Fact]
    public void Flat_table_of_two_pages_holds_device_ids_of_the_second_page()
    {
        var h = new ItsHarness(1, pageSizeCode: 0, tablePages: 2);
        h.Mapc(0, 0);
        h.Mapd(512 + 1);
        Assert.Equal(0, h.Its.CommandErrorCount);
        Assert.Equal(1UL, h.R64(ItsHarness.DeviceTable + (512 + 1) * 8) >> 63);
    }

    // ---- every command's error paths ----------------------------------------------------------------------

    public static TheoryData<string, uint> ErrorCases => new()
    {
        { "MAPD devid beyond Devbits", ItsError.MapdDeviceOor },
        { "MAPD devid beyond table", ItsError.MapdDeviceOor },
        { "MAPD size", ItsError.MapdIttSizeOor },
        { "MAPC icid", ItsError.MapcCollectionOor },
        { "MAPC procnum", ItsError.MapcProcnumOor },
        { "MAPTI unmapped device", ItsError.MaptiUnmappedDevice },
        { "MAPTI event", ItsError.MaptiIdOor },
        { "MAPTI pintid low", ItsError.MaptiPhysicalIdOor },
        { "MAPTI pintid high", ItsError.MaptiPhysicalIdOor },
        { "MAPTI icid", 0x010A03 },
        { "MAPI unmapped device", 0x010B04 },
        { "MAPI event", 0x010B05 },
        { "MOVI unmapped interrupt", ItsError.MoviUnmappedInterrupt },
        { "MOVI unmapped collection", ItsError.MoviUnmappedCollection },
        { "MOVI devid", 0x010101 },
        { "INT unmapped interrupt", ItsError.IntUnmappedInterrupt },
        { "INT unmapped device", 0x010304 },
        { "INT unmapped collection", 0x010309 },
        { "CLEAR unmapped interrupt", ItsError.ClearUnmappedInterrupt },
        { "CLEAR event", 0x010405 },
        { "INV unmapped interrupt", ItsError.InvUnmappedInterrupt },
        { "DISCARD unmapped interrupt", ItsError.DiscardUnmappedInterrupt },
        { "DISCARD unmapped device", 0x010F04 },
        { "INVALL unmapped collection", ItsError.InvallUnmappedCollection },
        { "MOVALL procnum", ItsError.MovallProcnumOor },
        { "SYNC procnum", 0x010502 },
        { "unknown opcode 0x20 (VINVALL)", 0x01FF2D },
        { "unknown opcode 0xFF", 0x01FFFF },
    };

    [Theory]
    [MemberData(nameof(ErrorCases))]
    public void Every_command_reports_its_architected_error_and_the_emulator_continues(string name, uint code)
    {
        var h = new ItsHarness(2, new ItsOptions { DeviceIdBits = 16, EventIdBits = 8, CollectionIdBits = 4, StallOnCommandError = false });
        h.Mapc(0, 0);
        h.Mapd(1, bits: 4);         // device 1: 16 events
        h.Mapti(1, 0, 8192, 0);     // mapped interrupt; collection 0 mapped
        h.Mapti(1, 1, 8193, 5);     // collection 5 never mapped
        Assert.Equal(0, h.Its.CommandErrorCount);
        ItsHarness.CommandBuilder b = name switch
        {
            "MAPD devid beyond Devbits" => c => ItsCommand.Mapd(c, 1u << 16, ItsHarness.IttBase, 2, true),
            "MAPD devid beyond table" => c => ItsCommand.Mapd(c, 4096, ItsHarness.IttBase, 2, true),
            "MAPD size" => c => ItsCommand.Mapd(c, 2, ItsHarness.IttBase, 9, true),
            "MAPC icid" => c => ItsCommand.Mapc(c, 16, 0, true),
            "MAPC procnum" => c => ItsCommand.Mapc(c, 2, 7, true),
            "MAPTI unmapped device" => c => ItsCommand.Mapti(c, 9, 0, 8300, 0),
            "MAPTI event" => c => ItsCommand.Mapti(c, 1, 16, 8300, 0),
            "MAPTI pintid low" => c => ItsCommand.Mapti(c, 1, 2, 8191, 0),
            "MAPTI pintid high" => c => ItsCommand.Mapti(c, 1, 2, 1u << 16, 0),
            "MAPTI icid" => c => ItsCommand.Mapti(c, 1, 2, 8300, 16),
            "MAPI unmapped device" => c => ItsCommand.Mapi(c, 9, 8300, 0),
            "MAPI event" => c => ItsCommand.Mapi(c, 1, 8300, 0),
            "MOVI unmapped interrupt" => c => ItsCommand.Movi(c, 1, 7, 0),
            "MOVI unmapped collection" => c => ItsCommand.Movi(c, 1, 0, 3),
            "MOVI devid" => c => ItsCommand.Movi(c, 1u << 20, 0, 0),
            "INT unmapped interrupt" => c => ItsCommand.DeviceEvent(c, ItsOpcode.Int, 1, 7),
            "INT unmapped device" => c => ItsCommand.DeviceEvent(c, ItsOpcode.Int, 9, 0),
            "INT unmapped collection" => c => ItsCommand.DeviceEvent(c, ItsOpcode.Int, 1, 1),
            "CLEAR unmapped interrupt" => c => ItsCommand.DeviceEvent(c, ItsOpcode.Clear, 1, 7),
            "CLEAR event" => c => ItsCommand.DeviceEvent(c, ItsOpcode.Clear, 1, 200),
            "INV unmapped interrupt" => c => ItsCommand.DeviceEvent(c, ItsOpcode.Inv, 1, 7),
            "DISCARD unmapped interrupt" => c => ItsCommand.DeviceEvent(c, ItsOpcode.Discard, 1, 7),
            "DISCARD unmapped device" => c => ItsCommand.DeviceEvent(c, ItsOpcode.Discard, 9, 0),
            "INVALL unmapped collection" => c => ItsCommand.Invall(c, 5),
            "MOVALL procnum" => c => ItsCommand.Movall(c, 0, 9),
            "SYNC procnum" => c => ItsCommand.Sync(c, 9),
            "unknown opcode 0x20 (VINVALL)" => c => { c.Clear(); c[0] = 0x2D; },
            _ => c => { c.Clear(); c[0] = 0xFF; },
        };
        h.Cmd(b);
        Assert.Equal(1, h.Its.CommandErrorCount);
        Assert.Equal(code, h.Its.CommandErrors[0].Code);
        Assert.False(h.Its.Stalled);
        // The queue moves on (non-stalling configuration) and the ITS still works.
        h.SetLpiConfig(8192, 0xA0, true);
        h.Ev(ItsOpcode.Int, 1, 0);
        Assert.Equal(h.Cwriter, h.Creadr);
        Assert.Equal(8192UL, h.Cpu(0).Iar1());
    }

    [Fact]
    public void Erroring_command_stalls_the_queue_until_retry_and_retry_reexecutes_it()
    {
        var h = new ItsHarness(1, indirectDevices: true);
        h.Mapc(0, 0);
        var stallAt = h.Cwriter;
        h.Mapd(600, valid: true, bits: 3);       // level-2 page for DeviceIDs 512.. not provided yet: error
        h.SetLpiConfig(8192, 0xA0, true);
        h.Mapti(600, 0, 8192, 0);                // queued behind the stalled command
        Assert.True(h.Its.Stalled);
        Assert.Equal(stallAt | 1, h.Creadr);      // CREADR.Stalled = 1, offset = the erroring command
        Assert.Equal(ItsError.MapdDeviceOor, h.Its.CommandErrors[0].Code);
        Assert.Equal((uint)stallAt, h.Its.CommandErrors[0].QueueOffset);

        h.Kick();                                 // CWRITER write without Retry: still stalled, nothing runs
        Assert.True(h.Its.Stalled);
        Assert.Equal(1, h.Its.CommandErrorCount);
        h.Kick(retry: true);                      // retry without fixing: fails again
        Assert.True(h.Its.Stalled);
        Assert.Equal(2, h.Its.CommandErrorCount);

        h.W64(ItsHarness.DeviceTable + 8 * (600 / 512), (1UL << 63) | ItsHarness.L2Pages); // provide the level-2 page
        h.Kick(retry: true);
        Assert.False(h.Its.Stalled);
        Assert.Equal(h.Cwriter, h.Creadr);
        h.Msi(600, 0);
        Assert.Equal(8192UL, h.Cpu(0).Iar1());
    }

    [Fact]
    public void Rewriting_cbaser_while_disabled_resets_creadr_and_clears_a_stall()
    {
        var h = new ItsHarness(1);
        h.Cmd(c => { c.Clear(); c[0] = 0x42; });
        Assert.True(h.Its.Stalled);
        h.W32(QemuVirtGicV3.ItsBase.Value + GicV3Its.GITS_CTLR, 0);
        h.W64(QemuVirtGicV3.ItsBase.Value + GicV3Its.GITS_CBASER, (1UL << 63) | ItsHarness.CmdQueue | 15);
        Assert.Equal(0UL, h.Creadr);
        Assert.False(h.Its.Stalled);
    }

    [Fact]
    public void Lpi_property_changes_are_visible_only_after_inv()
    {
        var h = Basic(1);
        h.MapBasic(1, 8192, 1, 0, priority: 0xA0);
        h.Ev(ItsOpcode.Int, 1, 0);                 // first reference caches the configuration
        Assert.Equal(8192UL, h.Cpu(0).Hppir1);
        h.Cpu(0).Pmr = 0x00;                       // keep it pending while we play with the table
        h.SetLpiConfig(8192, 0xA0, enabled: false);
        Assert.Equal(8192UL, h.Cpu(0).Hppir1);    // stale cached config: still enabled
        var reads = h.Gic.Redistributors[0].PropertyReads;
        h.Ev(ItsOpcode.Inv, 1, 0);
        Assert.Equal(reads + 1, h.Gic.Redistributors[0].PropertyReads); // O(1): exactly one property byte read
        Assert.Equal(1023UL, h.Cpu(0).Hppir1);    // now disabled: pending but not signalled
        Assert.True(h.PendingBitInMemory(0, 8192));
        h.SetLpiConfig(8192, 0x40, enabled: true);
        Assert.Equal(1023UL, h.Cpu(0).Hppir1);    // not seen until invalidated
        // Redistributor INVLPIR also refreshes one entry.
        h.W64(QemuVirtGicV3.GicrBase.Value + GicV3Redistributor.GICR_INVLPIR, 8192);
        Assert.Equal(8192UL, h.Cpu(0).Hppir1);
        h.Cpu(0).Pmr = 0x41;                       // priority 0x40 now passes a 0x41 mask
        Assert.Equal(8192UL, h.Cpu(0).Iar1());
        h.Cpu(0).Eoir1(8192);
    }

    [Theory]
    [InlineData(16)]
    [InlineData(24)]
    public void Inv_reads_one_property_byte_whatever_the_lpi_id_space(int idBits)
    {
        var h = new ItsHarness(1, idBits: idBits);
        h.Mapc(0, 0);
        var lpi = (uint)(1 << idBits) - 5;
        h.MapBasic(1, lpi, 1, 0);
        h.Ev(ItsOpcode.Int, 1, 0);
        var rd = h.Gic.Redistributors[0];
        var before = rd.PropertyReads;
        for (var i = 0; i < 10; i++) h.Ev(ItsOpcode.Inv, 1, 0);
        Assert.Equal(before + 10, rd.PropertyReads);
        Assert.Equal((ulong)lpi, h.Cpu(0).Iar1());
    }

    [Fact]
    public void Invall_and_invallr_refresh_every_cached_configuration_of_the_collection()
    {
        var h = Basic(1);
        h.MapBasic(1, 8192, 4, 0, priority: 0xA0);
        for (var e = 0u; e < 4; e++) h.Ev(ItsOpcode.Int, 1, e);
        h.Cpu(0).Pmr = 0;
        for (var i = 0u; i < 4; i++) h.SetLpiConfig(8192 + i, (byte)(0x80 - 0x10 * i), true); // 8195 becomes highest
        Assert.Equal(8192UL, h.Cpu(0).Hppir1);
        h.Cmd(c => ItsCommand.Invall(c, 0));
        Assert.Equal(8195UL, h.Cpu(0).Hppir1);
        h.SetLpiConfig(8195, 0x80, false);
        h.W64(QemuVirtGicV3.GicrBase.Value + GicV3Redistributor.GICR_INVALLR, 0);
        Assert.Equal(8194UL, h.Cpu(0).Hppir1);
    }

    [Fact]
    public void Int_clear_and_discard_drive_pending_state_and_discard_unmaps()
    {
        var h = Basic(1);
        h.MapBasic(1, 8192, 2, 0);
        h.Ev(ItsOpcode.Int, 1, 0);
        Assert.True(h.PendingBitInMemory(0, 8192));
        h.Ev(ItsOpcode.Clear, 1, 0);
        Assert.False(h.PendingBitInMemory(0, 8192));
        h.Ev(ItsOpcode.Int, 1, 1);
        h.Ev(ItsOpcode.Discard, 1, 1);
        Assert.False(h.PendingBitInMemory(0, 8193));
        Assert.Equal(0UL, h.R64(ItsHarness.IttBase + 0x1000 + 8));
        h.Msi(1, 1);
        Assert.Equal(ItsDropReason.UnmappedInterrupt, h.Its.LastDrop.Reason);
        h.Cmd(c => ItsCommand.Mapi(c, 1, 1, 0)); // MAPI: pINTID = EventID... 1 is not an LPI
        Assert.Equal(ItsError.MaptiPhysicalIdOor & 0xFF, h.Its.CommandErrors[^1].Code & 0xFF);
    }

    [Fact]
    public void Mapi_uses_the_event_id_as_the_lpi_and_redistributor_tables_ignore_32_bit_halves_while_enabled()
    {
        var h = Basic(1);
        h.Mapd(3, bits: 16);
        h.SetLpiConfig(8200, 0x90, true);
        h.Cmd(c => ItsCommand.Mapi(c, 3, 8200, 0));
        Assert.Equal(0, h.Its.CommandErrorCount);
        h.Msi(3, 8200);
        Assert.Equal(8200UL, h.Cpu(0).Iar1());
        h.Bus.Write(new PhysAddr(QemuVirtGicV3.GicrBase.Value + GicV3Redistributor.GICR_PENDBASER + 4), 4, 0x1234, BusAttributes.Cpu);
        Assert.Equal(ItsHarness.PendTables, h.R64(QemuVirtGicV3.GicrBase.Value + GicV3Redistributor.GICR_PENDBASER));
    }

    [Fact]
    public void Mapd_remap_invalidates_cached_translations_of_that_device()
    {
        var h = Basic(1);
        h.MapBasic(1, 8192, 1, 0);
        h.Msi(1, 0);
        Assert.Equal(8192UL, h.Cpu(0).Iar1());
        h.Cpu(0).Eoir1(8192);
        h.Mapd(1, valid: false);
        h.Msi(1, 0);
        Assert.Equal(ItsDropReason.UnmappedDevice, h.Its.LastDrop.Reason);
        Assert.Equal(0UL, h.R64(ItsHarness.DeviceTable + 8));
    }

    [Fact]
    public void Movi_moves_a_pending_lpi_to_the_new_collections_redistributor()
    {
        var h = Basic(2);
        h.MapBasic(1, 8192, 1, 0);
        h.Cpu(0).Pmr = 0; // CPU 0 masked: the LPI stays pending
        h.Msi(1, 0);
        Assert.True(h.PendingBitInMemory(0, 8192));
        h.Cmd(c => ItsCommand.Movi(c, 1, 0, 1));
        Assert.False(h.PendingBitInMemory(0, 8192));
        Assert.True(h.PendingBitInMemory(1, 8192));
        Assert.Equal(8192UL, h.Cpu(1).Iar1());
        // Later MSIs follow the new collection too.
        h.Cpu(1).Eoir1(8192);
        h.Msi(1, 0);
        Assert.True(h.Gic.Redistributors[1].IsLpiPending(8192));
        Assert.Equal((1UL << 63) | (1UL << 62) | (1UL << 32) | 8192, h.R64(ItsHarness.IttBase + 0x1000));
    }

    [Fact]
    public void Movall_moves_every_pending_lpi_and_remapped_collection_takes_new_ones()
    {
        var h = Basic(2);
        h.MapBasic(1, 8192, 8, 0);
        h.Cpu(0).Pmr = 0;
        for (var e = 0u; e < 8; e++) h.Msi(1, e);
        h.Mapc(0, 1);                                      // retarget the collection (CPU hot-unplug sequence)
        h.Cmd(c => ItsCommand.Movall(c, h.Its.RdBaseOf(0), h.Its.RdBaseOf(1)));
        for (var e = 0u; e < 8; e++)
        {
            Assert.False(h.PendingBitInMemory(0, 8192 + e));
            Assert.True(h.PendingBitInMemory(1, 8192 + e));
        }
        var seen = new List<ulong>();
        for (var i = 0; i < 8; i++) { var id = h.Cpu(1).Iar1(); seen.Add(id); h.Cpu(1).Eoir1(id); }
        Assert.Equal(Enumerable.Range(8192, 8).Select(x => (ulong)x), seen.Order());
        h.Msi(1, 3);
        Assert.True(h.Gic.Redistributors[1].IsLpiPending(8195));
    }

    [Fact]
    public void Pending_table_contents_are_loaded_when_lpis_are_enabled()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(ItsHarness.Ram), 0x1000_0000);
        var sys = QemuVirtGicV3.Create(bus, 1);
        bus.Write(new PhysAddr(ItsHarness.PropTable + 9000 - 8192), 1, 0x81, BusAttributes.Cpu);
        bus.Write(new PhysAddr(ItsHarness.PendTables + 9000 / 8), 1, 1UL << (9000 % 8), BusAttributes.Cpu);
        var rd = QemuVirtGicV3.GicrBase.Value;
        bus.Write(new PhysAddr(QemuVirtGicV3.GicdBase.Value), 4, GicV3.CtlrEnableGrp1, BusAttributes.Cpu);
        bus.Write(new PhysAddr(rd + GicV3Redistributor.GICR_WAKER), 4, 0, BusAttributes.Cpu);
        bus.Write(new PhysAddr(rd + GicV3Redistributor.GICR_PROPBASER), 8, ItsHarness.PropTable | 15, BusAttributes.Cpu);
        bus.Write(new PhysAddr(rd + GicV3Redistributor.GICR_PENDBASER), 8, ItsHarness.PendTables, BusAttributes.Cpu);
        bus.Write(new PhysAddr(rd + GicV3Redistributor.GICR_CTLR), 4, 1, BusAttributes.Cpu);
        sys.Cpu(0).Pmr = 0xFF; sys.Cpu(0).IgrpEn1 = 1;
        Assert.Equal(9000UL, sys.Cpu(0).Iar1());
    }

    [Fact]
    public void Bad_guest_programming_never_throws()
    {
        var rng = new Random(1234);
        var h = new ItsHarness(2, new ItsOptions { StallOnCommandError = false });
        for (var i = 0; i < 3000; i++)
        {
            var c = new ulong[4];
            for (var k = 0; k < 4; k++) c[k] = (ulong)rng.NextInt64();
            c[0] = (c[0] & ~0xFFUL) | (byte)rng.Next(0, 0x10);
            if (rng.Next(2) == 0) c[0] &= 0xFF_FFFF_FFFF; // small DeviceIDs
            if (rng.Next(2) == 0) c[2] = (c[2] & 0x8000_0000_0000_FFFFUL) | 0x4000_0000UL;
            h.Cmd(s => c.CopyTo(s));
            h.Msi((uint)rng.Next(0, 64), (uint)rng.Next(0, 64));
        }
        Assert.Equal(h.Cwriter, h.Creadr);
        Assert.True(h.Its.CommandErrorCount > 0);
    }
}
