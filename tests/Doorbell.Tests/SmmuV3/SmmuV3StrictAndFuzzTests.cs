using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V3;

namespace Doorbell.Tests.SmmuV3;

public class SmmuV3StrictAndFuzzTests
{
    static readonly BusAttributes Dev = BusAttributes.FromDevice(8);
    const ulong Iova = 0x1_0000_0000;

    static BusStatus Touch(SmmuV3Rig rig, uint sid, ulong iova) => rig.Smmu.CreateStreamPort(sid).Read(iova, new byte[4], Dev);

    [Fact]
    public void Strict_mode_catches_a_stale_tlb_use_and_permissive_mode_behaves_the_same()
    {
        foreach (var strict in new[] { false, true })
        {
            var rig = new SmmuV3Rig(strict: strict);
            var pt = rig.AttachStage1(8, asid: 2);
            Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
            Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova));
            pt.Unmap(Iova, 0x1000);                       // no TLBI
            Assert.Equal(BusStatus.Ok, Touch(rig, 8, Iova)); // the cached translation is used, as hardware would
            if (strict)
                Assert.Contains(rig.Strict.Violations, v => v.Rule == Translator.StaleEntryRule);
            else
                Assert.Empty(rig.Strict.Violations);
            rig.Submit(SmmuV3Encode.TlbiNhVa(0, 2, Iova), SmmuV3Encode.Sync());
            Assert.Equal(BusStatus.SlaveError, Touch(rig, 8, Iova));
        }
    }

    [Fact]
    public void Strict_mode_catches_a_stale_ste_and_a_stale_cd()
    {
        var rig = new SmmuV3Rig(strict: true);
        var pt = rig.AttachStage1(8, asid: 2);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
        Touch(rig, 8, Iova);
        var ste = SmmuV3Encode.Stage1Ste(SmmuV3Rig.CdBase + 8 * 0x1000UL);
        ste[1] |= 1UL << Ste.Mev;
        rig.SetSte(8, ste);
        Touch(rig, 8, Iova);
        Assert.Contains(rig.Strict.Violations, v => v.Message.Contains("stale STE", StringComparison.Ordinal));
        rig.Submit(SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        Touch(rig, 8, Iova);
        rig.Strict.Clear();
        rig.Bus.Store.WriteU64(SmmuV3Rig.CdBase + 8 * 0x1000UL + 24, 0x44); // MAIR changed, no CFGI_CD
        Touch(rig, 8, Iova);
        Assert.Contains(rig.Strict.Violations, v => v.Message.Contains("stale CD", StringComparison.Ordinal));
    }

    [Fact]
    public void Strict_mode_reports_a_live_ste_rewritten_in_several_qwords_between_invalidations()
    {
        var rig = new SmmuV3Rig(strict: true);
        var s2a = rig.NewStage2();
        var s2b = rig.NewStage2();
        rig.SetSte(8, SmmuV3Encode.Stage2Ste(s2a.CreateStage2Config(vmid: 1)));
        Touch(rig, 8, 0);
        // VMID (qword 2) and S2TTB (qword 3) both change while V = 1: not hitless.
        rig.SetSte(8, SmmuV3Encode.Stage2Ste(s2b.CreateStage2Config(vmid: 2)));
        rig.Submit(SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        Assert.Contains(rig.Strict.Violations, v => v.Message.Contains("half-written", StringComparison.Ordinal));
    }

    [Fact]
    public void Strict_mode_reports_a_live_cd_rewritten_in_several_qwords()
    {
        var rig = new SmmuV3Rig(strict: true);
        var a = rig.AttachStage1(8, asid: 1);
        Assert.Equal(0, a.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
        Touch(rig, 8, Iova);
        var b = rig.NewStage1();
        // ASID (qword 0) and TTB0 (qword 1) change while CD.V = 1, then a single CFGI_CD.
        rig.WriteEntry(SmmuV3Rig.CdBase + 8 * 0x1000UL, SmmuV3Encode.ContextDescriptor(b.CreateStage1Config(2)));
        rig.Submit(SmmuV3Encode.CfgiCd(8, 0), SmmuV3Encode.Sync());
        Assert.Contains(rig.Strict.Violations, v => v.Message.Contains("CD 0 of SID 0x8", StringComparison.Ordinal));
    }

    [Fact]
    public void Strict_mode_accepts_the_linux_hitless_sequences()
    {
        var rig = new SmmuV3Rig(strict: true);
        var s2a = rig.NewStage2();
        var s2b = rig.NewStage2();
        rig.SetSte(8, SmmuV3Encode.Stage2Ste(s2a.CreateStage2Config(vmid: 1)));
        Touch(rig, 8, 0);
        // Break-before-make: V = 0, sync, write the rest, sync, then V = 1.
        var target = SmmuV3Encode.Stage2Ste(s2b.CreateStage2Config(vmid: 2));
        rig.Bus.Store.WriteU64(rig.SteAddress(8), 0);
        rig.Submit(SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        for (var i = 1; i < 8; i++) rig.Bus.Store.WriteU64(rig.SteAddress(8) + (ulong)i * 8, target[i]);
        rig.Submit(SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        rig.Bus.Store.WriteU64(rig.SteAddress(8), target[0]);
        rig.Submit(SmmuV3Encode.CfgiSte(8), SmmuV3Encode.Sync());
        // A single-qword change (bypass → abort) is hitless too.
        rig.SetSte(9, SmmuV3Encode.BypassSte());
        Touch(rig, 9, 0);
        rig.Bus.Store.WriteU64(rig.SteAddress(9), SmmuV3Encode.AbortSte()[0]);
        rig.Submit(SmmuV3Encode.CfgiSte(9), SmmuV3Encode.Sync());
        Assert.Empty(rig.Strict.Violations);
    }

    [Fact]
    public void Strict_mode_reports_dma_relying_on_an_invalidation_not_yet_synced()
    {
        var rig = new SmmuV3Rig(strict: true);
        var pt = rig.AttachStage1(8);
        Assert.Equal(0, pt.Map(Iova, SmmuV3Rig.DataBase, 0x1000, IoProt.ReadWrite));
        rig.Submit(SmmuV3Encode.TlbiNhAsid(0, 1));
        Touch(rig, 8, Iova);
        Assert.Contains(rig.Strict.Violations, v => v.Rule.Contains("CMD_SYNC", StringComparison.Ordinal));
        rig.Strict.Clear();
        rig.Submit(SmmuV3Encode.Sync());
        Touch(rig, 8, Iova);
        Assert.Empty(rig.Strict.Violations);
    }

    [Fact]
    public void Random_register_writes_and_structure_bytes_never_throw()
    {
        var rnd = new Random(1234);
        for (var round = 0; round < 40; round++)
        {
            var rig = new SmmuV3Rig(strict: round % 2 == 0);
            var ports = Enumerable.Range(0, 4).Select(i => rig.Smmu.CreateStreamPort((uint)rnd.Next(0, 300))).ToList();
            ports.Add(rig.Smmu.CreateStreamPort(5, (uint)rnd.Next(0, 1 << 20)));
            for (var step = 0; step < 200; step++)
            {
                switch (rnd.Next(6))
                {
                    case 0:
                        var off = (uint)rnd.Next(0, 0x20000) & ~3u;
                        if (rnd.Next(2) == 0) rig.Wr(off, (uint)rnd.NextInt64());
                        else rig.Wr64(off & ~7u, (ulong)rnd.NextInt64() ^ (ulong)rnd.NextInt64() << 1);
                        break;
                    case 1:
                        var q = new ulong[8];
                        for (var i = 0; i < 8; i++) q[i] = (ulong)rnd.NextInt64() << rnd.Next(2) | (rnd.Next(2) == 0 ? 0x4000_0000UL : 0);
                        q[0] |= 1;
                        rig.WriteEntry(rnd.Next(2) == 0 ? rig.SteAddress((uint)rnd.Next(0, 256)) : SmmuV3Rig.CdBase + (ulong)rnd.Next(0, 64) * 64, q);
                        break;
                    case 2:
                        rig.Submit(((ulong)rnd.NextInt64() & ~0xFFUL | (byte)rnd.Next(0, 0x50), (ulong)rnd.NextInt64()));
                        break;
                    case 3:
                        rig.Wr(SmmuV3Reg.GERRORN, rig.Rd(SmmuV3Reg.GERROR));
                        rig.Submit(SmmuV3Encode.CfgiAll(), SmmuV3Encode.Sync());
                        break;
                    default:
                        var p = ports[rnd.Next(ports.Count)];
                        var buf = new byte[rnd.Next(1, 9000)];
                        var a = (ulong)rnd.NextInt64() >> rnd.Next(0, 40);
                        var attrs = new BusAttributes(8, true, rnd.Next(2) == 0, rnd.Next(4) == 0);
                        _ = rnd.Next(2) == 0 ? p.Read(a, buf, attrs) : p.Write(a, buf, attrs);
                        break;
                }
            }
        }
    }
}
