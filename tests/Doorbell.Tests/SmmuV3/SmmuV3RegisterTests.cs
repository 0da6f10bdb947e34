using Doorbell.Host.SmmuV3;
using Doorbell.Memory;
using Doorbell.Smmu.V3;

namespace Doorbell.Tests.SmmuV3;

public class SmmuV3RegisterTests
{
    [Fact]
    public void Id_registers_advertise_only_what_is_implemented()
    {
        var rig = new SmmuV3Rig(enable: false);
        var idr0 = rig.Rd(SmmuV3Reg.IDR0);
        Assert.Equal(3u, idr0 & 3);                       // S1P, S2P
        Assert.Equal(2u, (idr0 >> 2) & 3);                // TTF AArch64
        Assert.Equal(0u, (idr0 >> 10) & 1);               // no ATS
        Assert.Equal(0u, (idr0 >> 16) & 1);               // no PRI
        Assert.Equal(0u, (idr0 >> 6) & 3);                // no HTTU
        Assert.Equal(1u, (idr0 >> 24) & 3);               // STALL_MODEL: stall not supported
        Assert.Equal(1u, (idr0 >> 27) & 3);               // 2-level stream tables
        Assert.Equal(1u, (idr0 >> 13) & 1);               // MSI
        var idr1 = rig.Rd(SmmuV3Reg.IDR1);
        Assert.Equal(16u, idr1 & 0x3F);
        Assert.Equal(20u, (idr1 >> 6) & 0x1F);
        Assert.Equal(0u, (idr1 >> 11) & 0x1F);            // PRIQS = 0
        Assert.Equal(1u << 10, rig.Rd(SmmuV3Reg.IDR3));   // RIL
        Assert.Equal(4u | 0x70, rig.Rd(SmmuV3Reg.IDR5));  // OAS 44, all granules
        Assert.Equal(2u, rig.Rd(SmmuV3Reg.AIDR));
        Assert.Equal(SmmuV3Field.GbpaReset, rig.Rd(SmmuV3Reg.GBPA));
    }

    [Fact]
    public void Board_options_change_the_id_registers()
    {
        var rig = new SmmuV3Rig(new SmmuV3Options { Stage2 = false, StreamIdBits = 8, RangeInvalidation = false, OutputAddressBits = 48, Granule16K = false }, enable: false);
        Assert.Equal(2u, rig.Rd(SmmuV3Reg.IDR0) & 3);
        Assert.Equal(8u, rig.Rd(SmmuV3Reg.IDR1) & 0x3F);
        Assert.Equal(0u, rig.Rd(SmmuV3Reg.IDR3));
        Assert.Equal(5u | 0x50, rig.Rd(SmmuV3Reg.IDR5));
        Assert.Equal(1u, rig.Rd(SmmuV3Reg.AIDR));
    }

    [Fact]
    public void Register_table_declares_each_register_once_at_its_spec_offset()
    {
        Assert.Equal(SmmuV3Reg.Table.Length, SmmuV3Reg.Table.Select(r => r.Offset).Distinct().Count());
        Assert.Equal(0x100A8u, SmmuV3Reg.Find(0x100A8)!.Value.Offset);
        Assert.Equal("EVENTQ_PROD", SmmuV3Reg.NameOf(0x100A8));
        Assert.Equal("GERRORN", SmmuV3Reg.NameOf(0x64));
        Assert.Equal("STRTAB_BASE_CFG", SmmuV3Reg.NameOf(0x88));
    }

    [Fact]
    public void Cr0_is_acknowledged_in_cr0ack_and_irq_ctrl_in_irq_ctrlack()
    {
        var rig = new SmmuV3Rig(enable: false);
        rig.Wr(SmmuV3Reg.CR0, 0xC);
        Assert.Equal(0xCu, rig.Rd(SmmuV3Reg.CR0ACK));
        rig.Wr(SmmuV3Reg.CR0, 0x2); // PRIQEN without PRI: RES0
        Assert.Equal(0u, rig.Rd(SmmuV3Reg.CR0ACK));
        rig.Wr(SmmuV3Reg.IRQ_CTRL, 0x7);
        Assert.Equal(0x5u, rig.Rd(SmmuV3Reg.IRQ_CTRLACK));
    }

    [Fact]
    public void Event_queue_pointers_live_in_page_1_and_page_0_copies_are_reserved()
    {
        var rig = new SmmuV3Rig(enable: false);
        rig.Wr64(SmmuV3Reg.EVENTQ_BASE, SmmuV3Rig.EventqBase | 4);
        rig.Wr(SmmuV3Reg.EVENTQ_CONS, 5);
        Assert.Equal(5u, rig.Rd(SmmuV3Reg.EVENTQ_CONS));
        Assert.Equal(0u, rig.Rd(0xAC));
        rig.Wr(0xA8, 7);
        Assert.Equal(0u, rig.Rd(SmmuV3Reg.EVENTQ_PROD));
    }

    [Fact]
    public void Sixty_four_bit_registers_accept_32_bit_halves()
    {
        var rig = new SmmuV3Rig(enable: false);
        rig.Wr(SmmuV3Reg.CMDQ_BASE, 0x4020_0008);
        rig.Wr(SmmuV3Reg.CMDQ_BASE + 4, 0x4000_0000); // RA bit 62
        Assert.Equal(0x4000_0000_4020_0008UL, rig.Rd64(SmmuV3Reg.CMDQ_BASE));
    }

    [Fact]
    public void Gbpa_changes_only_with_update_and_governs_traffic_while_disabled()
    {
        var rig = new SmmuV3Rig(enable: false);
        var port = rig.Smmu.CreateStreamPort(3);
        rig.Bus.Store.WriteU64(SmmuV3Rig.DataBase, 0xABCD);
        var buf = new byte[8];
        SmmuV3Rig.Ok(port.Read(SmmuV3Rig.DataBase, buf, BusAttributes.FromDevice(3)));     // reset: bypass
        Assert.Equal(0xABCDUL, BitConverter.ToUInt64(buf));
        rig.Wr(SmmuV3Reg.GBPA, SmmuV3Field.GbpaAbort);                                     // no UPDATE: ignored
        Assert.Equal(SmmuV3Field.GbpaReset, rig.Rd(SmmuV3Reg.GBPA));
        rig.Wr(SmmuV3Reg.GBPA, SmmuV3Field.GbpaAbort | SmmuV3Field.GbpaUpdate);
        Assert.Equal(SmmuV3Field.GbpaAbort, rig.Rd(SmmuV3Reg.GBPA));                         // UPDATE completes at once
        Assert.Equal(BusStatus.SlaveError, port.Read(SmmuV3Rig.DataBase, buf, BusAttributes.FromDevice(3)));
    }

    [Fact]
    public void Queue_bases_and_stream_table_cannot_change_while_enabled_and_strict_mode_says_so()
    {
        var rig = new SmmuV3Rig(strict: true);
        rig.Wr64(SmmuV3Reg.CMDQ_BASE, 0x5000_0000 | 4);
        Assert.Equal(SmmuV3Rig.CmdqBase | 8, rig.Rd64(SmmuV3Reg.CMDQ_BASE));
        rig.Wr64(SmmuV3Reg.EVENTQ_BASE, 0x5000_0000);
        rig.Wr64(SmmuV3Reg.STRTAB_BASE, 0x5000_0000);
        Assert.Equal(SmmuV3Rig.StrtabBase, rig.Rd64(SmmuV3Reg.STRTAB_BASE));
        Assert.Contains(rig.Strict.Violations, v => v.Message.StartsWith("CMDQ_BASE", StringComparison.Ordinal));
        Assert.Contains(rig.Strict.Violations, v => v.Message.StartsWith("EVENTQ_BASE", StringComparison.Ordinal));
        Assert.Contains(rig.Strict.Violations, v => v.Message.StartsWith("STRTAB_BASE", StringComparison.Ordinal));
    }

    [Fact]
    public void Cmdq_cons_is_read_only_while_the_queue_is_enabled()
    {
        // QEMU lets software move CMDQ_CONS under an enabled queue.
        var rig = new SmmuV3Rig(strict: true);
        rig.Submit(SmmuV3Encode.Sync());
        Assert.Equal(1u, rig.Rd(SmmuV3Reg.CMDQ_CONS));
        rig.Wr(SmmuV3Reg.CMDQ_CONS, 0);
        Assert.Equal(1u, rig.Rd(SmmuV3Reg.CMDQ_CONS));
        Assert.Contains(rig.Strict.Violations, v => v.Message.StartsWith("CMDQ_CONS", StringComparison.Ordinal));
        rig.Wr(SmmuV3Reg.CR0, SmmuV3Field.Cr0EventqEn | SmmuV3Field.Cr0SmmuEn);
        rig.Wr(SmmuV3Reg.CMDQ_CONS, 0);
        Assert.Equal(0u, rig.Rd(SmmuV3Reg.CMDQ_CONS));
    }
}
