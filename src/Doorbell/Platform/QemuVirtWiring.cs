using Doorbell.Gic.V2m;
using Doorbell.Gic.V3;
using Doorbell.Memory;
using Doorbell.Smmu.V3;

namespace Doorbell.Platform;

/// <summary>
/// The real models behind the board seams: GICv3 (+ITS) or GICv2 (+GICv2m) and SMMUv3, placed and wired as in
/// QEMU 7.2 hw/arm/virt.c (SMMU interrupts eventq/priq/cmdq-sync/gerror on SPIs 74..77).
/// </summary>
public static class QemuVirtWiring
{
    public static BoardWiring Models { get; } = new()
    {
        Gic = CreateGic,
        Iommu = CreateIommu,
    };

    static Func<int, IInterruptLine> CreateGic(Machine m, GicRequest r)
    {
        if (r.Version == 3)
        {
            if (r.Its)
            {
                var sys = QemuVirtGicV3.Create(m.Bus, r.Cpus, trace: m.Trace, strict: m.Strict);
                m.GicV3 = sys.Gic;
                m.Its = sys.Its;
                if (r.V2mBase != 0)
                {
                    var frame = new GicV2m(sys.Gic, r.V2mFirstSpi + GicV3.FirstSpi, r.V2mSpiCount);
                    frame.Map(m.Bus, new PhysAddr(r.V2mBase));
                    m.GicV2m = frame;
                }
                return spi => sys.Gic.SpiLine(GicV3.FirstSpi + spi);
            }
            var gic = new GicV3(m.Bus, new GicV3Options { CpuCount = r.Cpus, SpiCount = 224 }, m.Trace, m.Strict);
            gic.Map(QemuVirtGicV3.GicdBase, QemuVirtGicV3.GicrBase);
            m.GicV3 = gic;
            return spi => gic.SpiLine(GicV3.FirstSpi + spi);
        }
        var v2 = QemuVirtGicV2.Create(m.Bus, r.Cpus, m.Strict);
        m.GicV2 = v2.Gic;
        m.GicV2m = v2.Msi;
        v2.Gic.Trace = v2.Msi.Trace = m.Trace;
        return spi => v2.Gic.SpiLine(32 + spi);
    }

    static IIommuUpstream? CreateIommu(Machine m, IommuRequest r)
    {
        if (r.Kind == IommuKind.SmmuV2)
        {
            var v2 = new Doorbell.Smmu.V2.SmmuV2(m.Bus, r.SmmuV2 ?? Doorbell.Smmu.V2.SmmuV2Options.Mmu500);
            WireSmmuV2(m, r, v2);
            return v2;
        }
        if (r.Kind != IommuKind.SmmuV3) return null;
        var smmu = new SmmuV3(m.Bus, SmmuV3Options.QemuVirt, m.Trace, m.Strict);
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
        smmu.GlobalFaultIrq = m.Spi(r.FirstSpi);
        for (var i = 0; i < smmu.Options.ContextInterrupts; i++) smmu.SetContextIrq(i, m.Spi(r.FirstSpi + 1 + i));
        m.SmmuV2 = smmu;
    }
}
