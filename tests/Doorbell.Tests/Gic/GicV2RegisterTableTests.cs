using Doorbell.Gic.V2;
using Doorbell.Memory;
using Doorbell.Tracing;

namespace Doorbell.Tests.Gic;

/// <summary>
/// GICv2's distributor and CPU interface dispatch from their descriptor tables: read-only registers drop writes (and
/// strict mode names them with the table's rule), W1S/W1C arrays set and clear only the ones written, byte-accessible
/// IPRIORITYR/ITARGETSR take a byte store as one byte, banked registers are the accessing CPU's, and trace and report
/// names come from the tables.
/// </summary>
public class GicV2RegisterTableTests
{
    static (GicV2 Gic, StrictMonitor Strict) Make(int cpus = 2)
    {
        var strict = new StrictMonitor { Enabled = true };
        return (new GicV2(cpus, 64, strict), strict);
    }

    static uint Rd(IMmioHandler h, ulong offset, int size = 4, int cpu = 0)
    {
        Assert.Equal(BusStatus.Ok, h.Read(offset, size, out var v, BusAttributes.OfCpu(cpu)));
        return (uint)v;
    }

    static void Wr(IMmioHandler h, ulong offset, uint value, int size = 4, int cpu = 0) =>
        Assert.Equal(BusStatus.Ok, h.Write(offset, size, value, BusAttributes.OfCpu(cpu)));

    [Fact]
    public void A_write_to_a_read_only_distributor_register_is_dropped_and_reported_with_its_rule()
    {
        var (gic, strict) = Make();
        var typer = Rd(gic, GicV2.GICD_TYPER);
        Assert.Equal((64 + 32) / 32 - 1 | 1u << 5, typer); // ITLinesNumber 2, CPUNumber 1
        Wr(gic, GicV2.GICD_TYPER, ~typer);
        Assert.Equal(typer, Rd(gic, GicV2.GICD_TYPER));
        var v = Assert.Single(strict.Violations);
        Assert.Equal("gicv2", v.Source);
        Assert.Equal("IHI 0048B §4.3 (read-only register)", v.Rule);
        Assert.Equal("write to read-only GICD_TYPER", v.Message);
        // Permissive mode drops it silently.
        var quiet = new GicV2(1, 32);
        Wr(quiet, GicV2.GICD_PIDR2, 0);
        Assert.Equal(0x2Bu, Rd(quiet, GicV2.GICD_PIDR2));
        Assert.Empty(quiet.Strict.Violations);
    }

    [Fact]
    public void A_write_to_a_read_only_cpu_interface_register_is_dropped_and_reported_and_write_only_ones_read_zero()
    {
        var (gic, strict) = Make();
        var gicc = gic.CpuInterface(0);
        Wr(gicc, GicV2.GICC_PMR, 0xF0);
        Wr(gicc, GicV2.GICC_RPR, 0x12);
        Wr(gicc, GicV2.GICC_IIDR, 0);
        Assert.Equal(0xFFu, Rd(gicc, GicV2.GICC_RPR)); // idle
        Assert.Equal(0x0002_043Bu, Rd(gicc, GicV2.GICC_IIDR));
        Assert.Equal(["write to read-only GICC_RPR", "write to read-only GICC_IIDR"], strict.Violations.Select(x => x.Message));
        Assert.All(strict.Violations, x => Assert.Equal("IHI 0048B §4.4 (read-only register)", x.Rule));
        Assert.Equal(0u, Rd(gicc, GicV2.GICC_EOIR));
        Assert.Equal(0u, Rd(gicc, GicV2.GICC_DIR));
        Assert.Equal(0u, Rd(gic, GicV2.GICD_SGIR));
        Assert.Equal(0xF0u, Rd(gicc, GicV2.GICC_PMR));
        Assert.Equal(0u, Rd(gicc, GicV2.GICC_PMR, 2)); // narrower than the register takes: RAZ
        Assert.Equal(0u, Rd(gicc, 0x20)); // undeclared (GICC_ABPR is not modelled): RAZ/WI
    }

    [Fact]
    public void Set_and_clear_enable_registers_change_only_the_bits_written_as_one()
    {
        var (gic, _) = Make();
        Wr(gic, GicV2.GICD_ISENABLER + 4, 0b1011);     // SPIs 32, 33, 35
        Wr(gic, GicV2.GICD_ISENABLER + 4, 0);          // a write of zero does nothing
        Assert.Equal(0b1011u, Rd(gic, GicV2.GICD_ISENABLER + 4));
        Wr(gic, GicV2.GICD_ICENABLER + 4, 0b0010);     // clears only SPI 33
        Assert.Equal(0b1001u, Rd(gic, GicV2.GICD_ICENABLER + 4));
        Assert.Equal(0b1001u, Rd(gic, GicV2.GICD_ISENABLER + 4));
        Wr(gic, GicV2.GICD_ISPENDR + 4, 1u << 3);
        Assert.Equal(1u << 3, Rd(gic, GicV2.GICD_ISPENDR + 4));
        Wr(gic, GicV2.GICD_ICPENDR + 4, 1u << 3);
        Assert.Equal(0u, Rd(gic, GicV2.GICD_ISPENDR + 4));
        Wr(gic, GicV2.GICD_IGROUPR + 4, 0xFFFF_FFFF);  // read-write: all 32 bits (SPIs 32..63 exist)
        Assert.Equal(0xFFFF_FFFFu, Rd(gic, GicV2.GICD_IGROUPR + 4));
        Wr(gic, GicV2.GICD_IGROUPR + 4, 0);
        Assert.Equal(0u, Rd(gic, GicV2.GICD_IGROUPR + 4));
    }

    [Fact]
    public void Banked_registers_are_the_accessing_cpus()
    {
        var (gic, _) = Make();
        Wr(gic, GicV2.GICD_ISENABLER, 1u << 27, cpu: 1);    // CPU 1's PPI 27
        Assert.Equal(0u, Rd(gic, GicV2.GICD_ISENABLER, cpu: 0));
        Assert.Equal(1u << 27, Rd(gic, GicV2.GICD_ISENABLER, cpu: 1));
        Wr(gic, GicV2.GICD_IPRIORITYR + 27, 0x40, size: 1, cpu: 1);
        Assert.Equal(0x40u << 24, Rd(gic, GicV2.GICD_IPRIORITYR + 24, cpu: 1));
        Assert.Equal(0u, Rd(gic, GicV2.GICD_IPRIORITYR + 24, cpu: 0));
        // ITARGETSR0-7 read as the accessing CPU's own bit in every byte and ignore writes.
        Assert.Equal(0x0101_0101u, Rd(gic, GicV2.GICD_ITARGETSR, cpu: 0));
        Assert.Equal(0x0202_0202u, Rd(gic, GicV2.GICD_ITARGETSR + 28, cpu: 1));
        Wr(gic, GicV2.GICD_ITARGETSR + 4, 0x0303_0303, cpu: 1);
        Assert.Equal(0x0202_0202u, Rd(gic, GicV2.GICD_ITARGETSR + 4, cpu: 1));
        // Each CPU's GICC frame is its own.
        Wr(gic.CpuInterface(1), GicV2.GICC_PMR, 0x80);
        Assert.Equal(0x80u, Rd(gic.CpuInterface(1), GicV2.GICC_PMR));
        Assert.Equal(0u, Rd(gic.CpuInterface(0), GicV2.GICC_PMR));
        // An accessor the GIC has no interface for: RAZ/WI.
        Assert.Equal(0u, Rd(gic, GicV2.GICD_TYPER, cpu: 5));
    }

    [Fact]
    public void A_byte_store_to_ipriorityr_or_itargetsr_writes_that_byte_only()
    {
        var (gic, strict) = Make();
        Wr(gic, GicV2.GICD_IPRIORITYR + 32, 0x4433_2211);     // SPIs 32..35
        Wr(gic, GicV2.GICD_IPRIORITYR + 34, 0xEE, size: 1);   // SPI 34 only
        Assert.Equal(0x44EE_2211u, Rd(gic, GicV2.GICD_IPRIORITYR + 32));
        Assert.Equal(0xEEu, Rd(gic, GicV2.GICD_IPRIORITYR + 34, size: 1));
        Wr(gic, GicV2.GICD_IPRIORITYR + 32, 0xBBAA, size: 2); // halfword: SPIs 32, 33
        Assert.Equal(0x44EE_BBAAu, Rd(gic, GicV2.GICD_IPRIORITYR + 32));
        Wr(gic, GicV2.GICD_ITARGETSR + 33, 0xFF, size: 1);    // SPI 33: masked to the two CPUs
        Assert.Equal(0x0000_0300u, Rd(gic, GicV2.GICD_ITARGETSR + 32));
        Wr(gic, GicV2.GICD_ITARGETSR + 32, 0x0102_0201);
        Wr(gic, GicV2.GICD_ITARGETSR + 35, 0x02, size: 1);
        Assert.Equal(0x0202_0201u, Rd(gic, GicV2.GICD_ITARGETSR + 32));
        // A misaligned halfword and a 64-bit access are RAZ/WI (GICv2 registers are 32-bit).
        Wr(gic, GicV2.GICD_IPRIORITYR + 33, 0xFFFF, size: 2);
        Wr(gic, GicV2.GICD_IPRIORITYR + 32, 0xFFFF_FFFF, size: 8);
        Assert.Equal(0x44EE_BBAAu, Rd(gic, GicV2.GICD_IPRIORITYR + 32));
        Assert.Equal(0u, Rd(gic, GicV2.GICD_IPRIORITYR + 32, size: 8));
        Assert.Empty(strict.Violations);
    }

    [Fact]
    public void Icfgr0_is_read_only_for_sgis_and_the_ppi_and_spi_configs_are_writable()
    {
        var (gic, _) = Make();
        Assert.Equal(0xAAAA_AAAAu, Rd(gic, GicV2.GICD_ICFGR)); // SGIs: edge
        Wr(gic, GicV2.GICD_ICFGR, 0);
        Assert.Equal(0xAAAA_AAAAu, Rd(gic, GicV2.GICD_ICFGR));
        Wr(gic, GicV2.GICD_ICFGR + 8, 0x0000_0002);            // SPI 32 edge
        Assert.Equal(2u, Rd(gic, GicV2.GICD_ICFGR + 8));
    }

    [Fact]
    public void Names_in_reports_and_traces_come_from_the_tables()
    {
        Assert.Equal("GICD_ITARGETSR8", GicV2.Distributor.NameOf(GicV2.GICD_ITARGETSR + 8 * 4 + 1));
        Assert.Equal("GICD_ICENABLER1", GicV2.Distributor.NameOf(GicV2.GICD_ICENABLER + 4));
        Assert.Equal("GICC_DIR", GicV2.CpuInterfaceBlock.NameOf(GicV2.GICC_DIR));
        Assert.Equal("0x20", GicV2.CpuInterfaceBlock.NameOf(0x20));
        var (gic, _) = Make(1);
        var trace = new Trace { Enabled = true };
        gic.Trace = trace;
        Wr(gic, GicV2.GICD_CTLR, 3);
        Wr(gic, GicV2.GICD_ISENABLER + 4, 1);
        Wr(gic, GicV2.GICD_ITARGETSR + 32, 1, size: 1);
        Wr(gic, GicV2.GICD_ISPENDR + 4, 1);
        Wr(gic.CpuInterface(0), GicV2.GICC_CTLR, 3);
        Wr(gic.CpuInterface(0), GicV2.GICC_PMR, 0xFF);
        Assert.Equal(32u, Rd(gic.CpuInterface(0), GicV2.GICC_IAR));
        var lines = trace.Events.Where(e => e.Category == TraceCategory.Gicv2).Select(e => e.Message).ToArray();
        Assert.Equal(["GICD_CTLR <- 0x3", "GICC_IAR -> 32"], lines);
    }

    [Fact]
    public void Every_read_only_register_of_both_frames_ignores_writes_and_is_reported_by_its_instance_name()
    {
        foreach (var (block, frame) in new[] { (GicV2.Distributor, 0), (GicV2.CpuInterfaceBlock, 1) })
        {
            var checkedAny = 0;
            foreach (var r in block.Table.ToArray())
            {
                if (r.Access != RegisterAccess.ReadOnly) continue;
                var (gic, strict) = Make();
                IMmioHandler h = frame == 0 ? gic : gic.CpuInterface(0);
                var before = Rd(h, r.Offset);
                Wr(h, r.Offset, ~before);
                Assert.Equal(before, Rd(h, r.Offset));
                Assert.Equal($"write to read-only {r.InstanceName(0)}", Assert.Single(strict.Violations).Message);
                checkedAny++;
            }
            Assert.True(checkedAny >= 3);
        }
    }
}
