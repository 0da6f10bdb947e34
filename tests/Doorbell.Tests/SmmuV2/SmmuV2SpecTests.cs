using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V2;
using Doorbell.Tests.Vmsa;
using Doorbell.Vmsa;
using F = Doorbell.Smmu.V2.SmmuV2Field;

namespace Doorbell.Tests.SmmuV2;

/// <summary>Spec vectors for the SMMUv2 model (Arm IHI 0062), programmed through MMIO only.</summary>
public class SmmuV2SpecTests
{
    const ulong Pa = SmmuV2Rig.DataArea;

    /// <summary>A rig with one stage-1 bank (bank 0, ASID 5) mapping IOVA 0x10_0000 → PA DataArea (4 KiB RW) and SMR0/S2CR0 for SID 0x10.</summary>
    static (SmmuV2Rig Rig, IoPageTable Table) Stage1(SmmuV2Options? o = null, bool strict = false)
    {
        var rig = new SmmuV2Rig(o, strict);
        var t = rig.Table(IoPageTableFormat.Stage1, 48, 48);
        Assert.Equal(0, t.Map(0x10_0000, Pa, 0x1000, IoProt.Read | IoProt.Write));
        rig.Stage1Bank(0, t, asid: 5);
        rig.Smr(0, 0x10, 0);
        rig.S2cr(0, F.S2crTypeTranslate, 0);
        rig.Enable();
        return (rig, t);
    }

    // ----- ID registers -----

    [Fact]
    public void IdRegisters_AreHonestPerVariant()
    {
        var v401 = new SmmuV2Rig(SmmuV2Options.Mmu401);
        var id0 = v401.Gr0R(SmmuV2Gr0.ID0);
        Assert.True((id0 & F.Id0S1ts) != 0);
        Assert.True((id0 & (F.Id0S2ts | F.Id0Nts)) == 0);
        Assert.True((id0 & F.Id0Sms) != 0);
        Assert.Equal(16u, id0 & 0xFF);
        Assert.Equal(8u, v401.Gr0R(SmmuV2Gr0.ID1) & 0xFF);
        Assert.Equal(2u, v401.Gr0R(SmmuV2Gr0.ID2) & 0xF); // IAS 40
        Assert.True((v401.Gr0R(SmmuV2Gr0.ID2) & F.Id2Ptfs64K) != 0);
        var v400 = new SmmuV2Rig(SmmuV2Options.Mmu400);
        Assert.Equal(F.Id0S2ts, v400.Gr0R(SmmuV2Gr0.ID0) & (F.Id0S1ts | F.Id0S2ts | F.Id0Nts));
        var id1 = v400.Gr0R(SmmuV2Gr0.ID1);
        Assert.Equal(id1 & 0xFF, (id1 >> 16) & 0xFF); // every bank stage-2-only
        var v500 = new SmmuV2Rig(SmmuV2Options.Mmu500);
        Assert.Equal(F.Id0S1ts | F.Id0S2ts | F.Id0Nts, v500.Gr0R(SmmuV2Gr0.ID0) & (F.Id0S1ts | F.Id0S2ts | F.Id0Nts));
        Assert.True((v500.Gr0R(SmmuV2Gr0.ID2) & F.Id2Vmid16) != 0);
        Assert.Equal(0x21u, v500.Gr0R(SmmuV2Gr0.ID7));
        Assert.Equal(v500.O.FrameSize, (ulong)v500.O.GlobalPages * 2 << 12);
    }

    // ----- stream matching -----

    [Fact]
    public void StreamMatching_MasksSelectGroups_UnmatchedFollowUsfcfg()
    {
        var (rig, _) = Stage1();
        rig.Smr(0, 0x20, 0x0F); // 0x20..0x2F
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(rig.Port(0x2A), 0x10_0000, 7));
        Assert.Equal(7u, rig.Ram32(Pa));
        // 0x30 is outside the mask: unidentified stream fault (USFCFG = 1).
        Assert.Equal(BusStatus.SlaveError, rig.DmaWrite(rig.Port(0x30), 0x10_0000, 8));
        Assert.Equal(F.GfsrUsf, rig.Gr0R(SmmuV2Gr0.sGFSR));
        Assert.Equal(0x30u, rig.Gr0R(SmmuV2Gr0.sGFSYNR1));
        Assert.Equal(F.GfsynrWnr, rig.Gr0R(SmmuV2Gr0.sGFSYNR0));
        Assert.Equal(0x10_0000UL, rig.R64(SmmuV2Rig.Base + SmmuV2Gr0.sGFAR));
        Assert.True(rig.GlobalIrq.Level);
        // A second fault before software clears sGFSR only sets MULTI.
        rig.DmaWrite(rig.Port(0x31), 0x10_0000, 8);
        Assert.Equal(F.GfsrUsf | F.GfsrMulti, rig.Gr0R(SmmuV2Gr0.sGFSR));
        Assert.Equal(0x30u, rig.Gr0R(SmmuV2Gr0.sGFSYNR1));
        rig.Gr0W(SmmuV2Gr0.sGFSR, F.GfsrUsf | F.GfsrMulti); // W1C
        Assert.Equal(0u, rig.Gr0R(SmmuV2Gr0.sGFSR));
        Assert.False(rig.GlobalIrq.Level);
        // USFCFG = 0: unmatched streams bypass.
        rig.Enable(usfFault: false);
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(rig.Port(0x30), Pa + 0x100, 9));
        Assert.Equal(9u, rig.Ram32(Pa + 0x100));
        Assert.Equal(0u, rig.Gr0R(SmmuV2Gr0.sGFSR));
    }

    [Fact]
    public void StreamMatchConflict_IsSmcfWithSmcfcfg_ElseLowestGroupAndStrictReport()
    {
        var (rig, _) = Stage1(strict: true);
        rig.Smr(1, 0x10, 0x3); // overlaps SMR0 (0x10)
        rig.S2cr(1, F.S2crTypeBypass);
        rig.Enable(extra: F.Cr0Smcfcfg);
        Assert.Equal(BusStatus.SlaveError, rig.DmaWrite(rig.Port(0x10), 0x10_0000, 1));
        Assert.Equal(F.GfsrSmcf, rig.Gr0R(SmmuV2Gr0.sGFSR));
        rig.Gr0W(SmmuV2Gr0.sGFSR, 0xFFFF_FFFF);
        rig.Enable(); // SMCFCFG = 0
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(rig.Port(0x10), 0x10_0000, 2)); // SMR0 (translate) wins
        Assert.Equal(2u, rig.Ram32(Pa));
        Assert.Contains(rig.Strict.Violations, v => v.Rule == Doorbell.Smmu.V2.SmmuV2.RuleSmConflict);
        // 0x11 matches only SMR1: bypass.
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(rig.Port(0x11), Pa + 0x40, 3));
        Assert.Equal(3u, rig.Ram32(Pa + 0x40));
    }

    [Fact]
    public void S2crTypes_FaultBypass_UnimplementedBank_AndPrivcfg()
    {
        var (rig, _) = Stage1();
        rig.S2cr(0, F.S2crTypeFault);
        Assert.Equal(BusStatus.SlaveError, rig.DmaWrite(rig.Port(0x10), 0x10_0000, 1));
        Assert.Equal(0u, rig.Gr0R(SmmuV2Gr0.sGFSR)); // fault type: terminated, nothing recorded
        rig.S2cr(0, F.S2crTypeBypass);
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(rig.Port(0x10), Pa + 0x80, 4));
        Assert.Equal(4u, rig.Ram32(Pa + 0x80));
        rig.S2cr(0, F.S2crTypeTranslate, 100); // CBNDX beyond NUMCB
        Assert.Equal(BusStatus.SlaveError, rig.DmaWrite(rig.Port(0x10), 0x10_0000, 1));
        Assert.Equal(F.GfsrUcbf, rig.Gr0R(SmmuV2Gr0.sGFSR));
        rig.Gr0W(SmmuV2Gr0.sGFSR, 0xFFFF_FFFF);
        // CLIENTPD: everything bypasses.
        rig.Gr0W(SmmuV2Gr0.sCR0, F.Cr0ClientPd);
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(rig.Port(0x77), Pa + 0x84, 5));
        Assert.Equal(5u, rig.Ram32(Pa + 0x84));
    }

    [Fact]
    public void StreamIndexing_S2crNServesStreamN()
    {
        var o = SmmuV2Options.Mmu500 with { StreamMatching = false, StreamIdBits = 6 };
        var rig = new SmmuV2Rig(o);
        Assert.Equal(0u, rig.Gr0R(SmmuV2Gr0.ID0) & F.Id0Sms);
        var t = rig.Table(IoPageTableFormat.Stage1);
        t.Map(0x10_0000, Pa, 0x1000, IoProt.Read | IoProt.Write);
        rig.Stage1Bank(2, t, 9);
        rig.S2cr(5, F.S2crTypeTranslate, 2);
        rig.Enable(usfFault: false);
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(rig.Port(5), 0x10_0000, 0x55));
        Assert.Equal(0x55u, rig.Ram32(Pa));
        // S2CR6 keeps its reset type (bypass).
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(rig.Port(6), Pa + 8, 0x66));
        Assert.Equal(0x66u, rig.Ram32(Pa + 8));
    }

    // ----- CBAR types -----

    [Fact]
    public void CbarType_S2Only_TranslatesIpaToPa()
    {
        var rig = new SmmuV2Rig();
        var t = rig.Table(IoPageTableFormat.Stage2, 40, 40);
        t.Map(0x8000_0000, Pa + 0x2000, 0x1000, IoProt.Read | IoProt.Write);
        rig.Stage2Bank(3, t, vmid: 7);
        rig.Smr(0, 0x10, 0); rig.S2cr(0, F.S2crTypeTranslate, 3);
        rig.Enable();
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(rig.Port(0x10), 0x8000_0010, 0x77));
        Assert.Equal(0x77u, rig.Ram32(Pa + 0x2010));
        Assert.Equal(BusStatus.SlaveError, rig.DmaWrite(rig.Port(0x10), 0x8000_1000, 1));
        Assert.Equal(F.FsrTf, rig.CbR(3, SmmuV2Cb.FSR));
        Assert.Equal(0x8000_1000UL, rig.CbR64(3, SmmuV2Cb.FAR));
        Assert.Equal(0x8000_1000UL, rig.CbR64(3, SmmuV2Cb.IPAFAR));
    }

    [Fact]
    public void CbarType_S1WithS2Fault_FaultsEveryTranslatedAccessAtStage2()
    {
        var rig = new SmmuV2Rig();
        var t = rig.Table(IoPageTableFormat.Stage1);
        t.Map(0x10_0000, Pa, 0x1000, IoProt.Read | IoProt.Write);
        rig.Stage1Bank(1, t, asid: 3, type: F.CbarTypeS1FaultS2);
        rig.Smr(0, 0x10, 0); rig.S2cr(0, F.S2crTypeTranslate, 1);
        rig.Enable();
        Assert.Equal(BusStatus.SlaveError, rig.DmaWrite(rig.Port(0x10), 0x10_0004, 1));
        Assert.Equal(0u, rig.Ram32(Pa + 4));
        Assert.Equal(F.FsrTf, rig.CbR(1, SmmuV2Cb.FSR));
        Assert.Equal(Pa + 4, rig.CbR64(1, SmmuV2Cb.IPAFAR)); // the stage-1 output
    }

    [Fact]
    public void CbarType_Nested_S1ThenLinkedS2_AndStage2FaultsGoToTheS2BankWithS1Cbndx()
    {
        var rig = new SmmuV2Rig();
        var s2 = rig.Table(IoPageTableFormat.Stage2, 40, 40);
        // Stage 2: identity for the table area, IPA 0x2000_0000 → PA Pa+0x5000 for data.
        s2.Map(SmmuV2Rig.TableArea, SmmuV2Rig.TableArea, 0x0400_0000, IoProt.Read | IoProt.Write);
        s2.Map(0x2000_0000, Pa + 0x5000, 0x1000, IoProt.Read | IoProt.Write);
        var s1 = rig.Table(IoPageTableFormat.Stage1, 48, 40);
        s1.Map(0x10_0000, 0x2000_0000, 0x1000, IoProt.Read | IoProt.Write);
        s1.Map(0x20_0000, 0x3000_0000, 0x1000, IoProt.Read | IoProt.Write); // IPA not mapped at stage 2
        rig.Stage2Bank(0, s2, vmid: 4);
        rig.Stage1Bank(6, s1, asid: 2, type: F.CbarTypeNested, s2cb: 0);
        rig.Smr(0, 0x10, 0); rig.S2cr(0, F.S2crTypeTranslate, 6);
        rig.Enable();
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(rig.Port(0x10), 0x10_0008, 0x88));
        Assert.Equal(0x88u, rig.Ram32(Pa + 0x5008));
        Assert.Equal(BusStatus.SlaveError, rig.DmaWrite(rig.Port(0x10), 0x20_0000, 1));
        Assert.Equal(0u, rig.CbR(6, SmmuV2Cb.FSR));
        Assert.Equal(F.FsrTf, rig.CbR(0, SmmuV2Cb.FSR));
        Assert.Equal(6u, (rig.CbR(0, SmmuV2Cb.FSYNR0) >> 16) & 0xFF);
        Assert.Equal(0x3000_0000UL, rig.CbR64(0, SmmuV2Cb.IPAFAR));
        Assert.Equal(0x10u, rig.R32(rig.Gr1 + SmmuV2Gr1.CBFRSYNRA(0)));
        // A nested bank that links a non-stage-2 bank is an invalid context.
        rig.Cbar(6, F.CbarTypeNested, s2cb: 6);
        Assert.Equal(BusStatus.SlaveError, rig.DmaWrite(rig.Port(0x10), 0x10_0008, 1));
        Assert.Equal(F.GfsrIcf, rig.Gr0R(SmmuV2Gr0.sGFSR));
    }

    [Fact]
    public void StageOneOnAStage2OnlyBank_IsAnInvalidContextFault()
    {
        var rig = new SmmuV2Rig(SmmuV2Options.Mmu500 with { Stage2OnlyContextBanks = 4 });
        var t = rig.Table(IoPageTableFormat.Stage1);
        rig.Stage1Bank(1, t, asid: 1);
        rig.Smr(0, 0x10, 0); rig.S2cr(0, F.S2crTypeTranslate, 1);
        rig.Enable();
        Assert.Equal(BusStatus.SlaveError, rig.DmaWrite(rig.Port(0x10), 0x10_0000, 1));
        Assert.Equal(F.GfsrIcf, rig.Gr0R(SmmuV2Gr0.sGFSR));
    }

    // ----- fault registers -----

    [Fact]
    public void FaultRegisters_Translation_Permission_AccessFlag_AddressSize()
    {
        var rig = new SmmuV2Rig();
        var w = new TableWriter(rig.Bus, Granule.Size4K, 48, 0, SmmuV2Rig.TableArea);
        w.Leaf(0x1000, 3, Pa, TableWriter.S1RwUser);                           // RW user
        w.Leaf(0x2000, 3, Pa, TableWriter.S1RwUser | Descriptors.Ap2);         // read-only
        w.Leaf(0x3000, 3, Pa, Descriptors.Ap1);                                // AF = 0
        w.Leaf(0x4000, 3, 1UL << 44, TableWriter.S1RwUser);                     // beyond a 40-bit PASIZE
        rig.Cba2r(2); rig.Cbar(2, F.CbarTypeS1BypassS2);
        rig.CbW(2, SmmuV2Cb.TCR2, 2 /* 40 bits */ | F.Tcr2As);
        rig.CbW64(2, SmmuV2Cb.TTBR0, w.Root | 9UL << 48);
        rig.CbW(2, SmmuV2Cb.TCR, 16 | F.TcrEpd1);
        rig.CbW(2, SmmuV2Cb.SCTLR, F.SctlrM | F.SctlrCfre | F.SctlrCfie);
        rig.Smr(0, 0x10, 0); rig.S2cr(0, F.S2crTypeTranslate, 2);
        rig.Enable();
        var p = rig.Port(0x10);
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(p, 0x1010, 1));

        void Check(ulong va, bool write, uint fsr, uint plvl)
        {
            var s = write ? rig.DmaWrite(p, va, 1) : rig.DmaRead(p, va).Item1;
            Assert.Equal(BusStatus.SlaveError, s);
            Assert.Equal(fsr, rig.CbR(2, SmmuV2Cb.FSR));
            Assert.Equal(va, rig.CbR64(2, SmmuV2Cb.FAR));
            var syn = rig.CbR(2, SmmuV2Cb.FSYNR0);
            Assert.Equal(plvl, syn & 3);
            Assert.Equal(write, (syn & F.FsynrWnr) != 0);
            Assert.Equal(0x10u, rig.R32(rig.Gr1 + SmmuV2Gr1.CBFRSYNRA(2)));
            Assert.True(rig.ContextIrqs[2].Level);
            rig.CbW(2, SmmuV2Cb.FSR, rig.CbR(2, SmmuV2Cb.FSR)); // W1C
            Assert.False(rig.ContextIrqs[2].Level);
        }
        Check(0x9000, write: false, F.FsrTf, 3);
        Check(0x1_0000_0000, write: true, F.FsrTf, 1);
        Check(0x2004, write: true, F.FsrPf, 3);
        Check(0x3008, write: false, F.FsrAff, 3);
        Check(0x4000, write: false, F.FsrAsf, 3);
        // CFRE = 0: the fault is recorded, but the client gets RAZ/WI.
        rig.CbW(2, SmmuV2Cb.SCTLR, F.SctlrM);
        var (st, v) = rig.DmaRead(p, 0x9000);
        Assert.Equal(BusStatus.Ok, st);
        Assert.Equal(0u, v);
        Assert.Equal(F.FsrTf, rig.CbR(2, SmmuV2Cb.FSR));
        Assert.False(rig.ContextIrqs[2].Level); // CFIE = 0
        // A second fault with FSR still set: MULTI, syndrome unchanged.
        rig.DmaRead(p, 0x2004 + 0x100000);
        Assert.Equal(F.FsrTf | F.FsrMulti, rig.CbR(2, SmmuV2Cb.FSR));
        Assert.Equal(0x9000UL, rig.CbR64(2, SmmuV2Cb.FAR));
    }

    [Fact]
    public void Stall_HoldsTheWrite_ResumeRetryCompletesIt_TerminateDropsIt()
    {
        var (rig, t) = Stage1();
        rig.CbW(0, SmmuV2Cb.SCTLR, F.SctlrM | F.SctlrCfre | F.SctlrCfie | F.SctlrCfcfg);
        var p = rig.Port(0x10);
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(p, 0x30_0010, 0xAA)); // held
        Assert.Equal(F.FsrTf | F.FsrSs, rig.CbR(0, SmmuV2Cb.FSR));
        // Software maps the page, clears the fault, and retries.
        t.Map(0x30_0000, Pa + 0x6000, 0x1000, IoProt.Read | IoProt.Write);
        rig.CbW(0, SmmuV2Cb.FSR, F.FsrTf);
        Assert.Equal(F.FsrSs, rig.CbR(0, SmmuV2Cb.FSR));
        rig.CbW(0, SmmuV2Cb.RESUME, 0);
        Assert.Equal(0u, rig.CbR(0, SmmuV2Cb.FSR));
        Assert.Equal(0xAAu, rig.Ram32(Pa + 0x6010));
        // Terminate drops the held write.
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(p, 0x40_0010, 0xBB));
        rig.CbW(0, SmmuV2Cb.FSR, F.FsrTf);
        t.Map(0x40_0000, Pa + 0x7000, 0x1000, IoProt.Read | IoProt.Write);
        rig.CbW(0, SmmuV2Cb.RESUME, F.ResumeTerminate);
        Assert.Equal(0u, rig.Ram32(Pa + 0x7010));
        Assert.Equal(0u, rig.CbR(0, SmmuV2Cb.FSR));
        // sCR0.STALLD turns stalls into terminations.
        rig.Enable(extra: F.Cr0Stalld);
        Assert.Equal(BusStatus.SlaveError, rig.DmaWrite(p, 0x50_0010, 0xCC));
        Assert.Equal(F.FsrTf, rig.CbR(0, SmmuV2Cb.FSR));
    }

    // ----- TLB operations by scope -----

    [Fact]
    public void TlbOperations_ByVa_ByAsid_All_ByVmid_AndGlobal()
    {
        var (rig, t) = Stage1();
        var p = rig.Port(0x10);
        t.Map(0x11_0000, Pa + 0x1000, 0x1000, IoProt.Read | IoProt.Write);
        void Warm()
        {
            Assert.Equal(BusStatus.Ok, rig.DmaWrite(p, 0x10_0000, 1));
            Assert.Equal(BusStatus.Ok, rig.DmaWrite(p, 0x11_0000, 1));
        }
        // Retarget both pages in memory only; the IOTLB keeps the old translations until invalidated.
        void Remap(ulong a, ulong b)
        {
            Assert.Equal(0x1000UL, t.Unmap(0x10_0000, 0x1000));
            Assert.Equal(0x1000UL, t.Unmap(0x11_0000, 0x1000));
            Assert.Equal(0, t.Map(0x10_0000, a, 0x1000, IoProt.Read | IoProt.Write));
            Assert.Equal(0, t.Map(0x11_0000, b, 0x1000, IoProt.Read | IoProt.Write));
        }
        void Retarget() => Remap(Pa + 0x8000, Pa + 0x9000);
        bool Stale(ulong iova, ulong oldPa)
        {
            rig.Bus.WriteU32(oldPa, 0);
            rig.DmaWrite(p, iova, 0xEE);
            return rig.Ram32(oldPa) == 0xEE;
        }
        Warm(); Retarget();
        rig.CbW64(0, SmmuV2Cb.TLBIVA, (0x10_0000UL >> 12) | 5UL << 48);
        rig.CbW(0, SmmuV2Cb.TLBSYNC, 0);
        Assert.False(Stale(0x10_0000, Pa));
        Assert.True(Stale(0x11_0000, Pa + 0x1000)); // only that VA went
        rig.CbW64(0, SmmuV2Cb.TLBIVA, (0x11_0000UL >> 12) | 6UL << 48); // other ASID: no effect
        Assert.True(Stale(0x11_0000, Pa + 0x1000));
        rig.CbW(0, SmmuV2Cb.TLBIASID, 5);
        Assert.False(Stale(0x11_0000, Pa + 0x1000));
        // TLBIALL, TLBIVMID (VMID 0 here) and TLBIALLNSNH each drop everything of this context.
        foreach (var op in new Action[]
        {
            () => rig.CbW(0, SmmuV2Cb.TLBIALL, 0),
            () => rig.Gr0W(SmmuV2Gr0.TLBIVMID, 0),
            () => rig.Gr0W(SmmuV2Gr0.TLBIALLNSNH, 0),
        })
        {
            Remap(Pa, Pa + 0x1000);
            rig.Gr0W(SmmuV2Gr0.TLBIALLNSNH, 0);
            Warm(); Retarget();
            Assert.True(Stale(0x10_0000, Pa));
            op();
            Assert.False(Stale(0x10_0000, Pa));
            Assert.False(Stale(0x11_0000, Pa + 0x1000));
        }
        Assert.Equal(0u, rig.CbR(0, SmmuV2Cb.TLBSTATUS));
        Assert.Equal(0u, rig.Gr0R(SmmuV2Gr0.sTLBGSTATUS));
    }

    [Fact]
    public void TlbiIpas2_InvalidatesAStage2Translation()
    {
        var rig = new SmmuV2Rig();
        var t = rig.Table(IoPageTableFormat.Stage2, 40, 40);
        t.Map(0x8000_0000, Pa, 0x1000, IoProt.Read | IoProt.Write);
        rig.Stage2Bank(3, t, vmid: 7);
        rig.Smr(0, 0x10, 0); rig.S2cr(0, F.S2crTypeTranslate, 3);
        rig.Enable();
        var p = rig.Port(0x10);
        rig.DmaWrite(p, 0x8000_0000, 1);
        t.Unmap(0x8000_0000, 0x1000);
        t.Map(0x8000_0000, Pa + 0x4000, 0x1000, IoProt.Read | IoProt.Write);
        rig.DmaWrite(p, 0x8000_0000, 2);
        Assert.Equal(2u, rig.Ram32(Pa)); // stale until invalidated
        rig.CbW64(3, SmmuV2Cb.TLBIIPAS2L, 0x8000_0000UL >> 12);
        rig.CbW(3, SmmuV2Cb.TLBSYNC, 0);
        rig.DmaWrite(p, 0x8000_0000, 3);
        Assert.Equal(3u, rig.Ram32(Pa + 0x4000));
    }

    // ----- ATS1* into PAR -----

    [Fact]
    public void Ats1_ResultsInPar_SuccessAndFaults_WithoutTouchingFsr()
    {
        var rig = new SmmuV2Rig();
        var w = new TableWriter(rig.Bus, Granule.Size4K, 48, 0, SmmuV2Rig.TableArea);
        w.Leaf(0x1000, 3, Pa + 0x3000, TableWriter.S1Rw | (1UL << 2));   // privileged RW, AttrIndx 1 (WB)
        w.Leaf(0x2000, 3, Pa + 0x4000, TableWriter.S1Rw | Descriptors.Ap2); // privileged RO
        rig.Cba2r(0); rig.Cbar(0, F.CbarTypeS1BypassS2);
        rig.CbW(0, SmmuV2Cb.TCR2, 5 | F.Tcr2As);
        rig.CbW64(0, SmmuV2Cb.TTBR0, w.Root | 1UL << 48);
        rig.CbW(0, SmmuV2Cb.TCR, 16 | F.TcrEpd1);
        rig.CbW(0, SmmuV2Cb.MAIR0, (uint)IoPageTable.Mair);
        rig.CbW(0, SmmuV2Cb.SCTLR, F.SctlrM | F.SctlrCfre);
        rig.CbW64(0, SmmuV2Cb.ATS1PR, 0x1234);
        Assert.Equal(0u, rig.CbR(0, SmmuV2Cb.ATSR));
        var par = rig.CbR64(0, SmmuV2Cb.PAR);
        Assert.Equal(0UL, par & F.ParF);
        Assert.Equal(Pa + 0x3000, par & F.ParPaMask);
        Assert.Equal(0xFFUL, par >> 56); // MAIR attribute 1
        rig.CbW64(0, SmmuV2Cb.ATS1PW, 0x2000);
        par = rig.CbR64(0, SmmuV2Cb.PAR);
        Assert.Equal(F.ParF | F.FsrPf | 3UL << 32, par);
        rig.CbW64(0, SmmuV2Cb.ATS1UR, 0x1000); // unprivileged read of an EL1-only page
        Assert.Equal(F.ParF | F.FsrPf | 3UL << 32, rig.CbR64(0, SmmuV2Cb.PAR));
        rig.CbW64(0, SmmuV2Cb.ATS1UW, 0x7000);
        Assert.Equal(F.ParF | F.FsrTf | 3UL << 32, rig.CbR64(0, SmmuV2Cb.PAR));
        Assert.Equal(0u, rig.CbR(0, SmmuV2Cb.FSR));
    }

    // ----- strict mode -----

    [Fact]
    public void Strict_UnsyncedTlbi_LiveBankReprogram_SmrChangeWhileValid_RetargetWithSameTags()
    {
        var (rig, t) = Stage1(strict: true);
        var p = rig.Port(0x10);
        rig.DmaWrite(p, 0x10_0000, 1);
        Assert.Empty(rig.Strict.Violations);
        rig.CbW(0, SmmuV2Cb.TLBIASID, 5);
        rig.DmaWrite(p, 0x10_0000, 1);
        Assert.Contains(rig.Strict.Violations, v => v.Rule == Doorbell.Smmu.V2.SmmuV2.RuleTlbSync);
        rig.CbW(0, SmmuV2Cb.TLBSYNC, 0);
        rig.Strict.Clear();
        rig.CbW(0, SmmuV2Cb.TCR, rig.CbR(0, SmmuV2Cb.TCR) ^ 1);
        Assert.Contains(rig.Strict.Violations, v => v.Rule == Doorbell.Smmu.V2.SmmuV2.RuleBankLive);
        rig.CbW(0, SmmuV2Cb.TCR, rig.CbR(0, SmmuV2Cb.TCR) ^ 1);
        rig.Strict.Clear();
        rig.Smr(0, 0x11, 0);
        Assert.Contains(rig.Strict.Violations, v => v.Rule == Doorbell.Smmu.V2.SmmuV2.RuleSmrValid);
        rig.Smr(0, 0x10, 0);
        rig.Strict.Clear();
        // Bank 1 with the same VMID (0) and ASID (5) but other tables: moving the stream there leaves bank 0's entries in use.
        var t2 = rig.Table(IoPageTableFormat.Stage1);
        t2.Map(0x10_0000, Pa + 0x9000, 0x1000, IoProt.Read | IoProt.Write);
        rig.Stage1Bank(1, t2, asid: 5);
        rig.DmaWrite(p, 0x10_0000, 1);
        rig.S2cr(0, F.S2crTypeTranslate, 1);
        rig.DmaWrite(p, 0x10_0000, 0x42);
        Assert.Contains(rig.Strict.Violations, v => v.Rule == Doorbell.Smmu.V2.SmmuV2.RuleStreamMapTags);
        Assert.Equal(0x42u, rig.Ram32(Pa)); // what hardware does: the cached bank-0 translation
        rig.Strict.Clear();
        rig.CbW(1, SmmuV2Cb.TLBIASID, 5);
        rig.CbW(1, SmmuV2Cb.TLBSYNC, 0);
        rig.DmaWrite(p, 0x10_0000, 0x43);
        Assert.Equal(0x43u, rig.Ram32(Pa + 0x9000));
        Assert.DoesNotContain(rig.Strict.Violations, v => v.Rule == Doorbell.Smmu.V2.SmmuV2.RuleStreamMapTags);
        _ = t;
    }

    [Fact]
    public void GuestDrivenGarbage_NeverThrows()
    {
        var rig = new SmmuV2Rig(strict: true);
        var rnd = new Random(15);
        var p = rig.Port(0x10);
        for (var i = 0; i < 20000; i++)
        {
            var off = (ulong)rnd.Next((int)rig.O.FrameSize) & ~3UL;
            if (rnd.Next(4) == 0) rig.W64(SmmuV2Rig.Base + (off & ~7UL), (ulong)rnd.NextInt64());
            else rig.W32(SmmuV2Rig.Base + off, (uint)rnd.Next());
            if (i % 16 == 0) rig.DmaWrite(p, (ulong)rnd.NextInt64(), 1);
            if (i % 17 == 0) rig.DmaRead(rig.Port((uint)rnd.Next(0x8000)), (ulong)rnd.Next());
        }
    }
}
