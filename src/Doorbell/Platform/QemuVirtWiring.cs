using Doorbell.Gic.Its;
using Doorbell.Gic.V2;
using Doorbell.Gic.V3;
using Doorbell.Memory;
using Doorbell.Smmu.V3;
using Doorbell.Tracing;

namespace Doorbell.Platform;

/// <summary>
/// The real models behind the board seams — the one wiring every board uses (qemu-virt, YAML boards, the host
/// kernel's boards): GICv3 (+ITS unless its=off) or GICv2 (+GICv2m) at the bases the board asks for, and SMMUv3 with
/// its wired interrupts eventq/priq/cmdq-sync/gerror on the board's four SPIs (QEMU 7.2 hw/arm/virt.c: 74..77).
/// Boards may also ask for an SMMUv2 in the SMMU's place (global fault + context interrupts from the map's
/// SmmuV2FirstSpi) and for a GICv2m frame next to the GICv3.
/// Every model built is recorded on the <see cref="Machine"/>.
/// </summary>
public static class QemuVirtWiring
{
    /// <summary>The wiring whose models report to the machine's trace and strict monitor.</summary>
    public static BoardWiring Models { get; } = Create();

    /// <summary>A wiring whose models report to <paramref name="strict"/> and <paramref name="trace"/> (null: the machine's).</summary>
    public static BoardWiring Create(StrictMonitor? strict = null, Trace? trace = null) => new()
    {
        Gic = (m, r) => CreateGic(m, r, strict, trace),
        Iommu = (m, r) => CreateIommu(m, r, strict, trace),
    };

    static Func<int, IInterruptLine> CreateGic(Machine m, GicRequest r, StrictMonitor? strict, Trace? trace)
    {
        strict ??= m.Strict;
        trace ??= m.Trace;
        if (r.Version == 3)
        {
            var gic = new GicV3(m.Bus, new GicV3Options { CpuCount = r.Cpus, SpiCount = r.SpiCount }, trace, strict);
            gic.Map(new PhysAddr(r.DistributorBase), new PhysAddr(r.RedistributorBase));
            m.GicV3 = gic;
            if (r.Its)
            {
                var its = new GicV3Its(gic);
                its.Map(m.Bus, new PhysAddr(r.ItsBase));
                m.Its = its;
            }
            if (r.V2mBase != 0)
            {
                // a GICv2m frame next to the GICv3 (SMMUv2 boards with both an ITS and a GICv2m frame)
                var frame = new Doorbell.Gic.V2m.GicV2m(gic, r.V2mFirstSpi + GicV3.FirstSpi, r.V2mSpiCount, strict);
                frame.Map(m.Bus, new PhysAddr(r.V2mBase));
                frame.Trace = trace;
                m.GicV2m = frame;
            }
            return spi => gic.SpiLine(GicV3.FirstSpi + spi);
        }
        var v2 = new GicV2(r.Cpus, r.SpiCount, strict);
        v2.Map(m.Bus, new PhysAddr(r.DistributorBase), new PhysAddr(r.CpuInterfaceBase));
        // QEMU's frame reports base_spi + 32 in MSI_TYPER (arm_gicv2m.c): the frame raises INTIDs V2mFirstSpi+32..
        var v2m = new Doorbell.Gic.V2m.GicV2m(v2, r.V2mFirstSpi + 32, r.V2mSpiCount, strict);
        v2m.Map(m.Bus, new PhysAddr(r.V2mBase));
        m.GicV2 = v2;
        m.GicV2m = v2m;
        v2.Trace = v2m.Trace = trace;
        return spi => v2.SpiLine(32 + spi);
    }

    static IIommuUpstream? CreateIommu(Machine m, IommuRequest r, StrictMonitor? strict, Trace? trace)
    {
        strict ??= m.Strict;
        trace ??= m.Trace;
        if (r.Kind == IommuKind.SmmuV2)
        {
            var v2 = new Doorbell.Smmu.V2.SmmuV2(m.Bus, r.SmmuV2 ?? Doorbell.Smmu.V2.SmmuV2Options.Mmu500, trace, strict);
            WireSmmuV2(m, r, v2);
            return v2;
        }
        if (r.Kind != IommuKind.SmmuV3) return null;
        var smmu = new SmmuV3(m.Bus, SmmuV3Options.QemuVirt, trace, strict);
        smmu.Map(new PhysAddr(r.Base));
        smmu.EventQueueIrq = m.Spi(r.FirstSpi);
        smmu.CmdSyncIrq = m.Spi(r.FirstSpi + 2);
        smmu.GerrorIrq = m.Spi(r.FirstSpi + 3);
        m.SmmuV3 = smmu;
        return smmu;
    }

    /// <summary>Maps an SMMUv2 at the request's base and wires its global and context interrupts to SPIs.</summary>
    public static void WireSmmuV2(Machine m, IommuRequest r, Doorbell.Smmu.V2.SmmuV2 smmu)
    {
        ArgumentNullException.ThrowIfNull(m);
        ArgumentNullException.ThrowIfNull(r);
        ArgumentNullException.ThrowIfNull(smmu);
        smmu.Map(new PhysAddr(r.Base));
        // Sources sharing an SPI (Juno: global + contexts on one; ThunderX: all contexts on one) are wire-ORed.
        var lines = new Dictionary<int, WiredOrLine>();
        IInterruptLine Line(int spi) => (lines.TryGetValue(spi, out var l) ? l : lines[spi] = new WiredOrLine(m.Spi(spi))).Input();
        smmu.GlobalFaultIrq = Line(r.FirstSpi);
        for (var i = 0; i < smmu.Options.ContextInterrupts; i++) smmu.SetContextIrq(i, Line(r.ContextSpiOf(i)));
        m.SmmuV2 = smmu;
    }
}
