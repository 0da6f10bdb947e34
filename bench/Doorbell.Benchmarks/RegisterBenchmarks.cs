using BenchmarkDotNet.Attributes;
using Doorbell.Gic.Its;
using Doorbell.Gic.V2;
using Doorbell.Gic.V2m;
using Doorbell.Gic.V3;
using Doorbell.Memory;
using Doorbell.Smmu.V3;

namespace Doorbell.Benchmarks;

/// <summary>
/// Register dispatch of the models' MMIO fronts as software reaches them: CPU accesses through the system bus (region
/// decode, then the model's handler with a run-time offset, as in every MMIO access), four accesses per operation to
/// different registers of one block (a figure is per 4 accesses). Uses only public MMIO interfaces, so the same file
/// builds against older commits for A/B runs.
/// </summary>
[MemoryDiagnoser]
public class RegisterBenchmarks
{
    readonly PhysicalAddressSpace _bus = new();
    GicV3 _gic = null!;
    GicV3Its _its = null!;
    SmmuV3 _smmu = null!;
    GicV2m _v2m = null!;
    GicV2 _v2 = null!;

    [GlobalSetup]
    public void Setup()
    {
        _bus.AddRam(new PhysAddr(0x4000_0000), 1UL << 28);
        _gic = new GicV3(_bus);
        _its = new GicV3Its(_gic);
        _smmu = new SmmuV3(_bus);
        _v2m = new GicV2m(_gic, 64, 64);
        _gic.Map(new PhysAddr(Gicd), new PhysAddr(Gicr));
        _its.Map(_bus, new PhysAddr(Its));
        _smmu.Map(new PhysAddr(Smmu));
        _v2m.Map(_bus, new PhysAddr(V2m));
        _v2 = new GicV2(2);
        _v2.Map(_bus, new PhysAddr(V2d), new PhysAddr(V2c));
        // Real MMIO traffic reaches the bus's handler call from many models: warm the bus's read and write paths
        // with all seven, so the optimised bus code sees a polymorphic call site (no single-model inlining) whatever
        // the case measured.
        for (var round = 0; round < 4; round++)
        {
            for (var k = 0; k < 400; k++)
            {
                foreach (var a in (ReadOnlySpan<ulong>)[Gicd + GicV3.GICD_TYPER, Gicr + GicV3Redistributor.GICR_WAKER, Its + GicV3Its.GITS_CWRITER, Smmu + SmmuV3Reg.GERROR, V2m + GicV2m.MSI_TYPER, V2d + GicV2.GICD_TYPER, V2c + GicV2.GICC_BPR])
                {
                    R(a, 4);
                    W(a, 4, R(a, 4)); // read-only or benign values
                }
            }
            Thread.Sleep(150);
        }
    }

    const ulong Gicd = 0x0800_0000, Its = 0x0808_0000, Gicr = 0x080A_0000, V2m = 0x0802_0000, Smmu = 0x0905_0000,
        V2d = 0x0C00_0000, V2c = 0x0C01_0000;

    ulong R(ulong a, int size)
    {
        _bus.Read(new PhysAddr(a), size, out var v, BusAttributes.Cpu);
        return v;
    }

    int W(ulong a, int size, ulong value) => (int)_bus.Write(new PhysAddr(a), size, value, BusAttributes.Cpu);

    /// <summary>GICD: TYPER, ISENABLER1, IPRIORITYR8, IROUTER32 (32-bit half).</summary>
    [Benchmark]
    public ulong GicdRead4()
    {
        var a = R(Gicd + GicV3.GICD_TYPER, 4);
        var b = R(Gicd + GicV3.GICD_ISENABLER + 4, 4);
        var c = R(Gicd + GicV3.GICD_IPRIORITYR + 32, 4);
        var d = R(Gicd + GicV3.GICD_IROUTER + 8 * 32, 4);
        return a + b + c + d;
    }

    /// <summary>GICD: ISENABLER1, ICENABLER1, IPRIORITYR8 byte, IROUTER32 (64-bit).</summary>
    [Benchmark]
    public int GicdWrite4() =>
        W(Gicd + GicV3.GICD_ISENABLER + 4, 4, 1)
        + W(Gicd + GicV3.GICD_ICENABLER + 4, 4, 1)
        + W(Gicd + GicV3.GICD_IPRIORITYR + 33, 1, 0xA0)
        + W(Gicd + GicV3.GICD_IROUTER + 8 * 32, 8, 0);

    /// <summary>GICR: TYPER (64-bit), WAKER, PROPBASER, SGI-frame ISENABLER0.</summary>
    [Benchmark]
    public ulong GicrRead4()
    {
        var a = R(Gicr + GicV3Redistributor.GICR_TYPER, 8);
        var b = R(Gicr + GicV3Redistributor.GICR_WAKER, 4);
        var c = R(Gicr + GicV3Redistributor.GICR_PROPBASER, 8);
        var d = R(Gicr + GicV3Redistributor.SgiFrame + GicV3Redistributor.GICR_ISENABLER0, 4);
        return a + b + c + d;
    }

    /// <summary>ITS: CTLR, TYPER, CWRITER, CREADR.</summary>
    [Benchmark]
    public ulong ItsRead4()
    {
        var a = R(Its + GicV3Its.GITS_CTLR, 4);
        var b = R(Its + GicV3Its.GITS_TYPER, 8);
        var c = R(Its + GicV3Its.GITS_CWRITER, 8);
        var d = R(Its + GicV3Its.GITS_CREADR, 8);
        return a + b + c + d;
    }

    /// <summary>SMMUv3: CMDQ_CONS, EVENTQ_PROD (page 1), GERROR, CMDQ_BASE (64-bit).</summary>
    [Benchmark]
    public ulong SmmuRead4()
    {
        var a = R(Smmu + SmmuV3Reg.CMDQ_CONS, 4);
        var b = R(Smmu + SmmuV3Reg.EVENTQ_PROD, 4);
        var c = R(Smmu + SmmuV3Reg.GERROR, 4);
        var d = R(Smmu + SmmuV3Reg.CMDQ_BASE, 8);
        return a + b + c + d;
    }

    /// <summary>SMMUv3: IRQ_CTRL, EVENTQ_CONS, CR1, GERROR_IRQ_CFG0 (32-bit high half).</summary>
    [Benchmark]
    public int SmmuWrite4() =>
        W(Smmu + SmmuV3Reg.IRQ_CTRL, 4, 5)
        + W(Smmu + SmmuV3Reg.EVENTQ_CONS, 4, 0)
        + W(Smmu + SmmuV3Reg.CR1, 4, 0x55)
        + W(Smmu + SmmuV3Reg.GERROR_IRQ_CFG0 + 4, 4, 0);

    /// <summary>GICv2m: MSI_TYPER, MSI_IIDR reads and two SETSPI writes (SPI 64 and one outside the frame: dropped).</summary>
    [Benchmark]
    public ulong V2mAccess4()
    {
        var a = R(V2m + GicV2m.MSI_TYPER, 4);
        var b = R(V2m + GicV2m.MSI_IIDR, 4);
        _bus.Write(new PhysAddr(V2m + GicV2m.MSI_SETSPI_NS), 4, 64, BusAttributes.FromDevice(8));
        _bus.Write(new PhysAddr(V2m + GicV2m.MSI_SETSPI_NS), 4, 200, BusAttributes.FromDevice(8));
        return a + b;
    }

    /// <summary>GICv2 GICD: TYPER, ISENABLER0 (banked: CPU 0's), IPRIORITYR8, ITARGETSR8.</summary>
    [Benchmark]
    public ulong V2GicdRead4()
    {
        var a = R(V2d + GicV2.GICD_TYPER, 4);
        var b = R(V2d + GicV2.GICD_ISENABLER, 4);
        var c = R(V2d + GicV2.GICD_IPRIORITYR + 32, 4);
        var d = R(V2d + GicV2.GICD_ITARGETSR + 32, 4);
        return a + b + c + d;
    }

    /// <summary>GICv2 GICD as Linux writes it: ISENABLER1, ICENABLER1, an IPRIORITYR byte and an ITARGETSR byte (SPI 33).</summary>
    [Benchmark]
    public int V2GicdWrite4() =>
        W(V2d + GicV2.GICD_ISENABLER + 4, 4, 2)
        + W(V2d + GicV2.GICD_ICENABLER + 4, 4, 2)
        + W(V2d + GicV2.GICD_IPRIORITYR + 33, 1, 0xA0)
        + W(V2d + GicV2.GICD_ITARGETSR + 33, 1, 1);

    /// <summary>GICv2 GICC (CPU 0's): PMR and RPR reads, a BPR write, a DIR write of a spurious INTID (ignored).</summary>
    [Benchmark]
    public ulong V2GiccAccess4()
    {
        var a = R(V2c + GicV2.GICC_PMR, 4);
        var b = R(V2c + GicV2.GICC_RPR, 4);
        W(V2c + GicV2.GICC_BPR, 4, 2);
        W(V2c + GicV2.GICC_DIR, 4, 1023);
        return a + b;
    }
}
