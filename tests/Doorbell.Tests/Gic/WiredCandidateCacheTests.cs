using CsCheck;
using Doorbell.Gic.V3;
using Doorbell.Memory;

namespace Doorbell.Tests.Gic;

/// <summary>
/// A GICv3 CPU interface keeps its best wired (SGI, PPI, SPI) candidate until the interrupt banks it reads change. After any
/// sequence of distributor, redistributor and CPU-interface operations, ICC_HPPIR1_EL1 must name what the registers
/// say (an oracle built only from MMIO reads of GICD and GICR and the CPU interfaces' group enables).
/// </summary>
public class WiredCandidateCacheTests
{
    const ulong D = 0x0800_0000;
    const ulong R = 0x080A_0000;
    const int Cpus = 2, Spis = 64;

    static ulong Sgi(int cpu) => R + (ulong)cpu * GicV3Redistributor.FrameSize + GicV3Redistributor.SgiFrame;

    static bool Bit(ItsHarness h, ulong block, int i) => (h.R32(block + (ulong)(i / 32) * 4) >> (i % 32) & 1) != 0;

    static int Priority(ItsHarness h, ulong block, int i)
    {
        h.Bus.Read(new PhysAddr(block + (ulong)i), 1, out var v, BusAttributes.Cpu);
        return (int)v;
    }

    // IHI 0069 §4.1 and §12.9: a candidate is pending, enabled, inactive and Group 1; the lowest priority value wins and
    // ties go to the lowest INTID; an SPI is a candidate of the PE its IROUTER names (1-of-N: the first PE that can take it).
    static ulong Oracle(ItsHarness h, int cpu, bool[] groupEnabled)
    {
        bool Awake(int c) => (h.R32(R + (ulong)c * GicV3Redistributor.FrameSize + GicV3Redistributor.GICR_WAKER) & 4) == 0;
        if ((h.R32(D + GicV3.GICD_CTLR) & GicV3.CtlrEnableGrp1) == 0 || !Awake(cpu)) return GicV3.SpuriousIntid;
        int best = -1, bestPrio = 256;
        var sgi = Sgi(cpu);
        for (var i = 0; i < 32; i++)
        {
            if (!Bit(h, sgi + GicV3Redistributor.GICR_ISPENDR0, i) || !Bit(h, sgi + GicV3Redistributor.GICR_ISENABLER0, i)
                || Bit(h, sgi + 0x300, i) || !Bit(h, sgi + GicV3Redistributor.GICR_IGROUPR0, i)) continue;
            var p = Priority(h, sgi + GicV3Redistributor.GICR_IPRIORITYR, i);
            if (p < bestPrio) { best = i; bestPrio = p; }
        }
        for (var id = 32; id < 32 + Spis; id++)
        {
            if (!Bit(h, D + GicV3.GICD_ISPENDR, id) || !Bit(h, D + GicV3.GICD_ISENABLER, id) || Bit(h, D + 0x300, id)
                || !Bit(h, D + GicV3.GICD_IGROUPR, id)) continue;
            h.Bus.Read(new PhysAddr(D + GicV3.GICD_IROUTER + (ulong)id * 8), 8, out var route, BusAttributes.Cpu);
            var target = (route & (1UL << 31)) != 0
                ? Enumerable.Range(0, Cpus).Cast<int?>().FirstOrDefault(c => groupEnabled[c!.Value] && Awake(c!.Value)) ?? -1
                : (route & 0xFF_00FF_FFFF) < Cpus ? (int)(route & 0xFF) : -1;
            if (target != cpu) continue;
            var p = Priority(h, D + GicV3.GICD_IPRIORITYR, id);
            if (p < bestPrio) { best = id; bestPrio = p; }
        }
        return best < 0 ? GicV3.SpuriousIntid : (ulong)best;
    }

    [Fact]
    public void Hppir_names_what_the_registers_say_after_any_operations()
    {
        // (operation, interrupt, value, cpu)
        var op = Gen.Select(Gen.Int[0, 11], Gen.Int[0, 32 + Spis - 1], Gen.UInt, Gen.Int[0, Cpus - 1]);
        op.Array[1, 50].Sample(ops =>
        {
            var h = new ItsHarness(Cpus, enableIts: false);
            var groupEnabled = new bool[Cpus];
            for (var c = 0; c < Cpus; c++) { h.Cpu(c).IgrpEn1 = 1; h.Cpu(c).Pmr = 0xFF; groupEnabled[c] = true; }
            foreach (var (kind, id, v, cpu) in ops)
            {
                var spi = id >= 32;
                var bank = spi ? D : Sgi(cpu);
                var word = (ulong)(id / 32) * 4;
                var bit = 1u << (id % 32);
                switch (kind)
                {
                    case 0: h.W32(bank + (spi ? GicV3.GICD_ISPENDR : GicV3Redistributor.GICR_ISPENDR0) + word, bit); break;
                    case 1: h.W32(bank + (spi ? GicV3.GICD_ICPENDR : GicV3Redistributor.GICR_ICPENDR0) + word, bit); break;
                    case 2: h.W32(bank + (spi ? GicV3.GICD_ISENABLER : GicV3Redistributor.GICR_ISENABLER0) + word, bit); break;
                    case 3: h.W32(bank + (spi ? GicV3.GICD_ICENABLER : GicV3Redistributor.GICR_ICENABLER0) + word, bit); break;
                    case 4: h.Bus.Write(new PhysAddr(bank + (spi ? GicV3.GICD_IPRIORITYR : GicV3Redistributor.GICR_IPRIORITYR) + (ulong)id), 1, v & 0xF0, BusAttributes.Cpu); break;
                    case 5: h.W32(bank + (spi ? GicV3.GICD_IGROUPR : GicV3Redistributor.GICR_IGROUPR0) + word, (v & 1) != 0 ? h.R32(bank + (spi ? GicV3.GICD_IGROUPR : GicV3Redistributor.GICR_IGROUPR0) + word) | bit : h.R32(bank + (spi ? GicV3.GICD_IGROUPR : GicV3Redistributor.GICR_IGROUPR0) + word) & ~bit); break;
                    case 6: if (spi) h.W64(D + GicV3.GICD_IROUTER + (ulong)id * 8, (v & 3) == 3 ? 1UL << 31 : v % (Cpus + 1)); break;
                    case 7: h.W32(D + GicV3.GICD_CTLR, (v & 7) == 0 ? GicV3.CtlrAre : GicV3.CtlrAre | GicV3.CtlrEnableGrp1); break;
                    case 8: h.W32(R + (ulong)cpu * GicV3Redistributor.FrameSize + GicV3Redistributor.GICR_WAKER, (v & 7) == 0 ? 2u : 0u); break;
                    case 9: groupEnabled[cpu] = (v & 7) != 0; h.Cpu(cpu).IgrpEn1 = groupEnabled[cpu] ? 1UL : 0; break;
                    case 10:
                        var got = h.Cpu(cpu).Iar1();
                        if (got < 1020 && (v & 1) != 0) h.Cpu(cpu).Eoir1(got);
                        break;
                    default: h.W32(bank + 0x380 + word, bit); break; // GICD_ICACTIVER / GICR_ICACTIVER0
                }
                for (var c = 0; c < Cpus; c++) Assert.Equal(Oracle(h, c, groupEnabled), h.Cpu(c).Hppir1);
            }
        }, iter: 200, threads: 1);
    }

    [Fact]
    public void An_lpi_acknowledge_keeps_the_wired_candidate_and_a_new_spi_replaces_it()
    {
        var h = new ItsHarness(1, enableIts: false);
        var cpu = h.Cpu(0);
        cpu.IgrpEn1 = 1; cpu.Pmr = 0xFF;
        h.W32(D + GicV3.GICD_IGROUPR + 4, 0xFFFF_FFFF);
        h.Bus.Write(new PhysAddr(D + GicV3.GICD_IPRIORITYR + 40), 1, 0x80, BusAttributes.Cpu);
        h.W32(D + GicV3.GICD_ISENABLER + 4, 1u << 8);
        h.W64(D + GicV3.GICD_IROUTER + 40 * 8, 0);
        Assert.Equal(GicV3.SpuriousIntid, (int)cpu.Hppir1);
        h.W32(D + GicV3.GICD_ISPENDR + 4, 1u << 8);           // SPI 40 pending after the cache was filled
        Assert.Equal(40UL, cpu.Hppir1);
        h.W32(D + GicV3.GICD_ICENABLER + 4, 1u << 8);          // disabled: no longer a candidate
        Assert.Equal(1023UL, cpu.Hppir1);
        h.W32(D + GicV3.GICD_ISENABLER + 4, 1u << 8);
        h.W32(D + GicV3.GICD_CTLR, GicV3.CtlrAre);             // Group 1 off at the distributor
        Assert.Equal(1023UL, cpu.Hppir1);
        h.W32(D + GicV3.GICD_CTLR, GicV3.CtlrAre | GicV3.CtlrEnableGrp1);
        Assert.Equal(40UL, cpu.Iar1());
        Assert.Equal(1023UL, cpu.Hppir1);                      // active: not a candidate
        cpu.Eoir1(40);
        Assert.Equal(1023UL, cpu.Hppir1);
    }

    [Fact]
    public void A_one_of_n_spi_moves_when_the_first_pe_turns_its_group_off()
    {
        var h = new ItsHarness(Cpus, enableIts: false);
        for (var c = 0; c < Cpus; c++) { h.Cpu(c).IgrpEn1 = 1; h.Cpu(c).Pmr = 0xFF; }
        h.W32(D + GicV3.GICD_IGROUPR + 4, 0xFFFF_FFFF);
        h.W32(D + GicV3.GICD_ISENABLER + 4, 1u << 8);
        h.W64(D + GicV3.GICD_IROUTER + 40 * 8, 1UL << 31);     // 1-of-N
        h.W32(D + GicV3.GICD_ISPENDR + 4, 1u << 8);
        Assert.Equal(40UL, h.Cpu(0).Hppir1);
        Assert.Equal(1023UL, h.Cpu(1).Hppir1);
        h.Cpu(0).IgrpEn1 = 0;                                  // PE 0 can no longer take it: PE 1 is the first that can
        Assert.Equal(40UL, h.Cpu(1).Hppir1);
        h.W32(R + GicV3Redistributor.FrameSize + GicV3Redistributor.GICR_WAKER, 2); // PE 1 asleep: nobody can
        Assert.Equal(1023UL, h.Cpu(1).Hppir1);
        h.Cpu(0).IgrpEn1 = 1;
        Assert.Equal(40UL, h.Cpu(0).Hppir1);
    }
}
