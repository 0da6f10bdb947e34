using Doorbell.Gic.V3;
using Doorbell.Memory;

namespace Doorbell.Tests.Gic;

public class GicV3CoreTests
{
    const ulong D = 0x0800_0000;
    const ulong R = 0x080A_0000;

    static (ItsHarness H, GicV3CpuInterface Cpu0) Spis(params (int Intid, byte Prio)[] spis)
    {
        var h = new ItsHarness(2);
        foreach (var (id, p) in spis)
        {
            h.W32(D + GicV3.GICD_IGROUPR + (ulong)(id / 32) * 4, h.R32(D + GicV3.GICD_IGROUPR + (ulong)(id / 32) * 4) | 1u << (id % 32));
            h.Bus.Write(new PhysAddr(D + GicV3.GICD_IPRIORITYR + (ulong)id), 1, p, BusAttributes.Cpu);
            h.W32(D + GicV3.GICD_ISENABLER + (ulong)(id / 32) * 4, 1u << (id % 32));
            h.W64(D + GicV3.GICD_IROUTER + (ulong)id * 8, 0); // CPU 0
        }
        return (h, h.Cpu(0));
    }

    static void Pend(ItsHarness h, int id) => h.W32(D + GicV3.GICD_ISPENDR + (ulong)(id / 32) * 4, 1u << (id % 32));

    [Fact]
    public void Higher_priority_preempts_only_across_group_priority_and_below_pmr()
    {
        var (h, cpu) = Spis((40, 0xA0), (41, 0x80), (42, 0x84), (43, 0x40), (44, 0xF0));
        cpu.Bpr1 = 3; // group priority = priority[7:3]
        Pend(h, 40);
        Assert.Equal(40UL, cpu.Iar1());
        Assert.Equal(0xA0UL, cpu.Rpr);
        Pend(h, 41);
        Assert.True(cpu.IrqPending);
        Assert.Equal(41UL, cpu.Iar1());          // 0x80 < 0xA0: preempts
        Pend(h, 42);
        Assert.Equal(42UL, cpu.Hppir1);          // pending, highest...
        Assert.False(cpu.IrqPending);            // ...but 0x84 & 0xF8 = 0x80 is not below running 0x80
        Assert.Equal(1023UL, cpu.Iar1());
        cpu.Pmr = 0x40;
        Pend(h, 43);
        Assert.Equal(1023UL, cpu.Iar1());        // 0x40 is not below PMR 0x40
        cpu.Pmr = 0xFF;
        Assert.Equal(43UL, cpu.Iar1());
        Assert.Equal(0x40UL, cpu.Rpr);
        cpu.Eoir1(43);
        cpu.Eoir1(41);
        Assert.Equal(0xA0UL, cpu.Rpr);
        Assert.Equal(42UL, cpu.Iar1());          // now 0x80 < 0xA0
        cpu.Eoir1(42);
        cpu.Eoir1(40);
        Assert.Equal(0xFFUL, cpu.Rpr);
        Pend(h, 44);
        cpu.Pmr = 0xF0;
        Assert.Equal(1023UL, cpu.Iar1());
    }

    [Fact]
    public void Binary_point_7_makes_all_priorities_one_group()
    {
        var (h, cpu) = Spis((40, 0x40), (41, 0x20));
        cpu.Bpr1 = 7;
        Pend(h, 40);
        Assert.Equal(40UL, cpu.Iar1());
        Pend(h, 41);
        Assert.Equal(1023UL, cpu.Iar1()); // 0x20 & 0x80 == 0x40 & 0x80: no preemption
        cpu.Bpr1 = 0;
        Assert.Equal(1UL, cpu.Bpr1);       // minimum binary point with 8 priority bits
    }

    [Fact]
    public void Active_interrupt_is_not_signalled_again_until_deactivated_and_eoimode1_splits_drop_and_deactivate()
    {
        var (h, cpu) = Spis((40, 0xA0));
        cpu.Ctlr = 2; // EOImode = 1
        Pend(h, 40);
        Assert.Equal(40UL, cpu.Iar1());
        Pend(h, 40);
        cpu.Eoir1(40);                    // priority drop only
        Assert.Equal(0xFFUL, cpu.Rpr);
        Assert.Equal(1u << 8, h.R32(D + GicV3.GICD_ISACTIVER + 4) & (1u << 8));
        Assert.Equal(1023UL, cpu.Iar1()); // still active
        cpu.Dir(40);
        Assert.Equal(0u, h.R32(D + GicV3.GICD_ISACTIVER + 4) & (1u << 8));
        Assert.Equal(40UL, cpu.Iar1());
    }

    [Fact]
    public void Level_spi_line_stays_pending_while_asserted_edge_latches()
    {
        var (h, cpu) = Spis((40, 0xA0), (41, 0xA0));
        h.W32(D + GicV3.GICD_ICFGR + 40 / 16 * 4, 2u << (2 * (41 % 16))); // 41 edge, 40 level
        var level = h.Gic.SpiLine(40);
        var edge = h.Gic.SpiLine(41);
        level.SetLevel(true);
        Assert.Equal(40UL, cpu.Iar1());
        cpu.Eoir1(40);
        Assert.Equal(40UL, cpu.Iar1());   // line still high: pending again
        level.SetLevel(false);
        cpu.Eoir1(40);
        edge.SetLevel(true); edge.SetLevel(false);
        Assert.Equal(41UL, cpu.Iar1());
        cpu.Eoir1(41);
        Assert.Equal(1023UL, cpu.Iar1());
    }

    [Fact]
    public void Irouter_routes_spis_to_the_named_pe_and_distributor_bit_registers_read_back()
    {
        var (h, _) = Spis((50, 0x80));
        h.W64(D + GicV3.GICD_IROUTER + 50 * 8, GicV3.AffinityOf(1));
        Assert.Equal(GicV3.AffinityOf(1), h.R64(D + GicV3.GICD_IROUTER + 50 * 8));
        Pend(h, 50);
        Assert.Equal(1u << 18, h.R32(D + GicV3.GICD_ISPENDR + 4) & (1u << 18));
        Assert.Equal(1023UL, h.Cpu(0).Iar1());
        Assert.Equal(50UL, h.Cpu(1).Iar1());
        h.W32(D + GicV3.GICD_ICENABLER + 4, 1u << 18);
        Assert.Equal(0u, h.R32(D + GicV3.GICD_ISENABLER + 4) & (1u << 18));
        // TYPER: ITLinesNumber for 224 SPIs = 7, LPIs supported, IDbits = 15
        var typer = h.R32(D + GicV3.GICD_TYPER);
        Assert.Equal(7u, typer & 0x1F);
        Assert.Equal(1u, typer >> 17 & 1);
        Assert.Equal(15u, typer >> 19 & 0x1F);
        // ARE is RAO with DS = 1; group enable reads back
        Assert.Equal(GicV3.CtlrEnableGrp1 | GicV3.CtlrAre | GicV3.CtlrDs, h.R32(D + GicV3.GICD_CTLR));
    }

    [Fact]
    public void Redistributor_typer_numbers_processors_and_marks_the_last_and_waker_handshakes()
    {
        var h = new ItsHarness(3);
        for (var c = 0; c < 3; c++)
        {
            var t = h.R64(R + (ulong)c * 0x2_0000 + GicV3Redistributor.GICR_TYPER);
            Assert.Equal((ulong)c, t >> 8 & 0xFFFF);
            Assert.Equal(c == 2 ? 1UL : 0, t >> 4 & 1);
            Assert.Equal(1UL, t & 1); // PLPIS
            Assert.Equal(GicV3.AffinityOf(c), t >> 32);
        }
        h.W32(R + GicV3Redistributor.GICR_WAKER, 2);
        Assert.Equal(6u, h.R32(R + GicV3Redistributor.GICR_WAKER));
        h.W32(R + GicV3Redistributor.GICR_WAKER, 0);
        Assert.Equal(0u, h.R32(R + GicV3Redistributor.GICR_WAKER));
        Assert.Equal(1u, h.R32(R + GicV3Redistributor.GICR_CTLR) & 1);
    }

    [Fact]
    public void Sgis_and_ppis_from_the_sgi_frame_reach_the_targeted_pe()
    {
        var h = new ItsHarness(2);
        var sgi1 = R + 0x2_0000 + GicV3Redistributor.SgiFrame;
        h.W32(sgi1 + GicV3Redistributor.GICR_IGROUPR0, 0xFFFF_FFFF);
        h.W32(sgi1 + GicV3Redistributor.GICR_ISENABLER0, 0xFFFF_FFFF);
        h.W32(sgi1 + GicV3Redistributor.GICR_IPRIORITYR, 0x8080_8080);
        h.Cpu(0).Sgi1r((5UL << 24) | 0b10);            // SGI 5 to Aff0 = 1 (CPU 1)
        Assert.Equal(1023UL, h.Cpu(0).Iar1());
        Assert.Equal(5UL, h.Cpu(1).Iar1());
        h.Cpu(1).Eoir1(5);
        Assert.Equal(0xAAAA_AAAAu, h.R32(sgi1 + GicV3Redistributor.GICR_ICFGR0)); // SGIs are edge
        h.Gic.Redistributors[1].PpiLine(27).SetLevel(true);
        h.Bus.Write(new PhysAddr(sgi1 + GicV3Redistributor.GICR_IPRIORITYR + 27), 1, 0x60, BusAttributes.Cpu);
        Assert.Equal(27UL, h.Cpu(1).Iar1());
    }

    [Fact]
    public void Lpis_are_dropped_while_enable_lpis_is_clear_and_propbaser_is_frozen_once_enabled()
    {
        var h = new ItsHarness(1);
        Assert.True(h.Gic.Redistributors[0].SetLpiPending(9000));
        h.W64(R + GicV3Redistributor.GICR_PROPBASER, 0x4800_0000 | 15);
        Assert.Equal(ItsHarness.PropTable | 15, h.R64(R + GicV3Redistributor.GICR_PROPBASER));
        Assert.Contains(h.Strict.Violations, v => v.Rule.Contains("EnableLPIs", StringComparison.Ordinal));
        Assert.False(h.Gic.Redistributors[0].SetLpiPending(1u << 16)); // beyond IDbits
        h.W32(R + GicV3Redistributor.GICR_CTLR, 0);
        Assert.False(h.Gic.Redistributors[0].SetLpiPending(9000));
        Assert.Equal(2, h.Gic.Redistributors[0].DroppedLpis);
    }

    [Fact]
    public void Setlpir_and_clrlpir_set_and_clear_lpi_pending_directly()
    {
        var h = new ItsHarness(1);
        h.SetLpiConfig(8200, 0x90, true);
        h.W64(R + GicV3Redistributor.GICR_SETLPIR, 8200);
        Assert.True(h.PendingBitInMemory(0, 8200));
        h.W64(R + GicV3Redistributor.GICR_CLRLPIR, 8200);
        Assert.False(h.PendingBitInMemory(0, 8200));
        h.W64(R + GicV3Redistributor.GICR_SETLPIR, 8200);
        Assert.Equal(8200UL, h.Cpu(0).Iar1());
    }

    [Fact]
    public void Lpi_and_spi_compete_by_priority()
    {
        var (h, cpu) = Spis((40, 0x90));
        h.SetLpiConfig(8192, 0x80, true);
        h.W64(R + GicV3Redistributor.GICR_SETLPIR, 8192);
        Pend(h, 40);
        Assert.Equal(8192UL, cpu.Iar1());
        Assert.Equal(1023UL, cpu.Iar1()); // 0x90 does not preempt running 0x80
        cpu.Eoir1(8192);
        Assert.Equal(40UL, cpu.Iar1());
    }
}
