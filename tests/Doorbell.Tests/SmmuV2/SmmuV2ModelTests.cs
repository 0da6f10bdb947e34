using Doorbell.Host.Iommu;
using Doorbell.Host.SmmuV2;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V2;
using Doorbell.Vmsa;

namespace Doorbell.Tests.SmmuV2;

/// <summary>Random mappings through the arm-smmu driver and the SMMUv2 model against a naive interval model, as the
/// walker's reference tests do: every lookup must agree on the output address or on the fault; unmaps (TLBI + sync by
/// the driver) must never leave a stale translation. Fixed seeds.</summary>
public class SmmuV2ModelTests
{
    [Theory]
    [InlineData(SmmuV2Variant.Mmu500, IommuDomainStage.Stage1, 1)]
    [InlineData(SmmuV2Variant.Mmu500, IommuDomainStage.Stage2, 2)]
    // MMU-401 (seed 3) and MMU-400 (seed 4) failed at rounds 275/286 once the IOTLB gained a walk cache: the driver
    // deferred io-pgtable's walk flush into the unmap gather, so a flush from map (empty table replaced by a block) was lost.
    [InlineData(SmmuV2Variant.Mmu401, IommuDomainStage.Stage1, 3)]
    [InlineData(SmmuV2Variant.Mmu400, IommuDomainStage.Stage2, 4)]
    public void RandomMappings_AgreeWithTheNaiveModel(SmmuV2Variant variant, IommuDomainStage stage, int seed)
    {
        var rig = new SmmuV2Rig(SmmuV2Options.For(variant), strict: true);
        var drv = rig.Driver();
        var dev = new IommuDevice("d", [0x10]);
        drv.ProbeDevice(dev);
        var dom = (SmmuV2Domain)drv.AllocateDomain(IommuDomainType.Unmanaged, stage);
        drv.AttachDevice(dom, dev);
        var port = (SmmuV2StreamPort)rig.Port(0x10);
        var rnd = new Random(seed);
        var model = new List<(ulong Iova, ulong Size, ulong Pa, bool Write)>();
        const ulong Window = 1UL << 32;
        for (var round = 0; round < 300; round++)
        {
            if (model.Count > 0 && rnd.Next(4) == 0)
            {
                var victim = model[rnd.Next(model.Count)];
                Assert.Equal(victim.Size, dom.Unmap(victim.Iova, victim.Size));
                model.Remove(victim);
            }
            else
            {
                var size = rnd.Next(8) == 0 ? 0x20_0000UL : 0x1000UL * (ulong)rnd.Next(1, 5);
                var iova = ((ulong)rnd.NextInt64((long)Window) & ~(size >= 0x20_0000 ? 0x1F_FFFFUL : 0xFFFUL)) + 0x1000_0000;
                var pa = SmmuV2Rig.DataArea + (((ulong)rnd.Next(0x0400_0000) & ~(size >= 0x20_0000 ? 0x1F_FFFFUL : 0xFFFUL)));
                if (model.Any(m => iova < m.Iova + m.Size && m.Iova < iova + size)) continue;
                var w = rnd.Next(3) != 0;
                dom.Map(iova, pa, size, IoProt.Read | (w ? IoProt.Write : 0));
                model.Add((iova, size, pa, w));
            }
            for (var probe = 0; probe < 8; probe++)
            {
                ulong a;
                if (model.Count > 0 && rnd.Next(3) != 0)
                {
                    var m = model[rnd.Next(model.Count)];
                    a = m.Iova + (ulong)rnd.NextInt64((long)m.Size);
                }
                else a = (ulong)rnd.NextInt64((long)Window) + 0x1000_0000;
                var write = rnd.Next(2) == 0;
                var hit = model.FirstOrDefault(m => a >= m.Iova && a < m.Iova + m.Size);
                var ok = port.TryTranslate(a, write ? AccessFlags.Write : AccessFlags.Read, out var pa);
                var expectOk = hit.Size != 0 && (!write || hit.Write);
                Assert.True(expectOk == ok, $"round {round}: 0x{a:x} {(write ? "W" : "R")} expected {(expectOk ? "ok" : "fault")}");
                if (ok) Assert.Equal(hit.Pa + (a - hit.Iova), pa);
                else
                {
                    var fsr = rig.CbR(dom.ContextBank, SmmuV2Cb.FSR);
                    Assert.Equal(hit.Size == 0 ? SmmuV2Field.FsrTf : SmmuV2Field.FsrPf, fsr & SmmuV2Field.FsrFaults);
                    rig.CbW(dom.ContextBank, SmmuV2Cb.FSR, fsr);
                }
            }
        }
        Assert.Empty(rig.Strict.Violations);
    }

    [Fact]
    public void IotlbHitPath_AllocatesNothing()
    {
        var rig = new SmmuV2Rig();
        var drv = rig.Driver();
        var dev = new IommuDevice("d", [0x10]);
        drv.ProbeDevice(dev);
        var dom = (SmmuV2Domain)drv.AllocateDomain(IommuDomainType.Unmanaged, IommuDomainStage.Stage1);
        drv.AttachDevice(dom, dev);
        dom.Map(0x10_0000, SmmuV2Rig.DataArea, 0x4000, IoProt.Read | IoProt.Write);
        var port = (SmmuV2StreamPort)rig.Port(0x10);
        var buf = new byte[8];
        var attrs = BusAttributes.FromDevice(0x10);
        AllocationAssert.None(() =>
        {
            for (var p = 0; p < 4; p++)
            {
                port.TryTranslate(0x10_0000 + (ulong)p * 0x1000, AccessFlags.Read, out _);
                port.Read(0x10_0000 + (ulong)p * 0x1000, buf, attrs);
            }
        });
        // The ATS1PR path (arm_smmu_iova_to_phys_hard) agrees with the tables.
        Assert.Equal(SmmuV2Rig.DataArea + 0x2123, drv.IovaToPhysHard(dom, 0x10_2123));
        Assert.Equal(0UL, drv.IovaToPhysHard(dom, 0x20_0000));
    }
}
