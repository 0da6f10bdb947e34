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
        if (r.Kind != IommuKind.SmmuV3) return null;
        var smmu = new SmmuV3(m.Bus, SmmuV3Options.QemuVirt, m.Trace, m.Strict);
        smmu.Map(new PhysAddr(r.Base));
        smmu.EventQueueIrq = m.Spi(r.FirstSpi);
        smmu.CmdSyncIrq = m.Spi(r.FirstSpi + 2);
        smmu.GerrorIrq = m.Spi(r.FirstSpi + 3);
        m.SmmuV3 = smmu;
        return smmu;
    }
}
