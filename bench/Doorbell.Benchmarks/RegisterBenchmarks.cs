using BenchmarkDotNet.Attributes;
using Doorbell.Gic.Its;
using Doorbell.Gic.V2m;
using Doorbell.Gic.V3;
using Doorbell.Memory;
using Doorbell.Smmu.V3;

namespace Doorbell.Benchmarks;

/// <summary>
/// Register dispatch of the models' MMIO fronts, called as the bus calls them (the handler, no bus decode): four
/// accesses per operation to different registers of one block (so a figure is per 4 accesses). Uses only the
/// handlers' public MMIO interface, so the same file builds against older commits for A/B runs.
/// </summary>
[MemoryDiagnoser]
public class RegisterBenchmarks
{
    readonly PhysicalAddressSpace _bus = new();
    GicV3 _gic = null!;
    GicV3Its _its = null!;
    SmmuV3 _smmu = null!;
    GicV2m _v2m = null!;

    [GlobalSetup]
    public void Setup()
    {
        _bus.AddRam(new PhysAddr(0x4000_0000), 1UL << 28);
        _gic = new GicV3(_bus);
        _its = new GicV3Its(_gic);
        _smmu = new SmmuV3(_bus);
        _v2m = new GicV2m(_gic, 64, 64);
    }

    /// <summary>GICD: TYPER, ISENABLER1, IPRIORITYR8, IROUTER32 (32-bit half).</summary>
    [Benchmark]
    public ulong GicdRead4()
    {
        _gic.Read(GicV3.GICD_TYPER, 4, out var a, BusAttributes.Cpu);
        _gic.Read(GicV3.GICD_ISENABLER + 4, 4, out var b, BusAttributes.Cpu);
        _gic.Read(GicV3.GICD_IPRIORITYR + 32, 4, out var c, BusAttributes.Cpu);
        _gic.Read(GicV3.GICD_IROUTER + 8 * 32, 4, out var d, BusAttributes.Cpu);
        return a + b + c + d;
    }

    /// <summary>GICD: ISENABLER1, ICENABLER1, IPRIORITYR8 byte, IROUTER32 (64-bit).</summary>
    [Benchmark]
    public void GicdWrite4()
    {
        _gic.Write(GicV3.GICD_ISENABLER + 4, 4, 1, BusAttributes.Cpu);
        _gic.Write(GicV3.GICD_ICENABLER + 4, 4, 1, BusAttributes.Cpu);
        _gic.Write(GicV3.GICD_IPRIORITYR + 33, 1, 0xA0, BusAttributes.Cpu);
        _gic.Write(GicV3.GICD_IROUTER + 8 * 32, 8, 0, BusAttributes.Cpu);
    }

    /// <summary>GICR: TYPER (64-bit), WAKER, PROPBASER, SGI-frame ISENABLER0.</summary>
    [Benchmark]
    public ulong GicrRead4()
    {
        var f = _gic.RedistributorFrames;
        f.Read(GicV3Redistributor.GICR_TYPER, 8, out var a, BusAttributes.Cpu);
        f.Read(GicV3Redistributor.GICR_WAKER, 4, out var b, BusAttributes.Cpu);
        f.Read(GicV3Redistributor.GICR_PROPBASER, 8, out var c, BusAttributes.Cpu);
        f.Read(GicV3Redistributor.SgiFrame + GicV3Redistributor.GICR_ISENABLER0, 4, out var d, BusAttributes.Cpu);
        return a + b + c + d;
    }

    /// <summary>ITS: CTLR, TYPER, CWRITER, CREADR.</summary>
    [Benchmark]
    public ulong ItsRead4()
    {
        _its.Read(GicV3Its.GITS_CTLR, 4, out var a, BusAttributes.Cpu);
        _its.Read(GicV3Its.GITS_TYPER, 8, out var b, BusAttributes.Cpu);
        _its.Read(GicV3Its.GITS_CWRITER, 8, out var c, BusAttributes.Cpu);
        _its.Read(GicV3Its.GITS_CREADR, 8, out var d, BusAttributes.Cpu);
        return a + b + c + d;
    }

    /// <summary>SMMUv3: CMDQ_CONS, EVENTQ_PROD (page 1), GERROR, CMDQ_BASE (64-bit).</summary>
    [Benchmark]
    public ulong SmmuRead4()
    {
        _smmu.Read(SmmuV3Reg.CMDQ_CONS, 4, out var a, BusAttributes.Cpu);
        _smmu.Read(SmmuV3Reg.EVENTQ_PROD, 4, out var b, BusAttributes.Cpu);
        _smmu.Read(SmmuV3Reg.GERROR, 4, out var c, BusAttributes.Cpu);
        _smmu.Read(SmmuV3Reg.CMDQ_BASE, 8, out var d, BusAttributes.Cpu);
        return a + b + c + d;
    }

    /// <summary>SMMUv3: IRQ_CTRL, EVENTQ_CONS, CR1, GERROR_IRQ_CFG0 (32-bit high half).</summary>
    [Benchmark]
    public void SmmuWrite4()
    {
        _smmu.Write(SmmuV3Reg.IRQ_CTRL, 4, 5, BusAttributes.Cpu);
        _smmu.Write(SmmuV3Reg.EVENTQ_CONS, 4, 0, BusAttributes.Cpu);
        _smmu.Write(SmmuV3Reg.CR1, 4, 0x55, BusAttributes.Cpu);
        _smmu.Write(SmmuV3Reg.GERROR_IRQ_CFG0 + 4, 4, 0, BusAttributes.Cpu);
    }

    /// <summary>GICv2m: MSI_TYPER, MSI_IIDR reads and two SETSPI writes (SPI 64 and one outside the frame: dropped).</summary>
    [Benchmark]
    public ulong V2mAccess4()
    {
        _v2m.Read(GicV2m.MSI_TYPER, 4, out var a, BusAttributes.Cpu);
        _v2m.Read(GicV2m.MSI_IIDR, 4, out var b, BusAttributes.Cpu);
        _v2m.Write(GicV2m.MSI_SETSPI_NS, 4, 64, BusAttributes.FromDevice(8));
        _v2m.Write(GicV2m.MSI_SETSPI_NS, 4, 200, BusAttributes.FromDevice(8));
        return a + b;
    }
}
