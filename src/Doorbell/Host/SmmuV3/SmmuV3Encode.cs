using Doorbell.Smmu.V3;
using Doorbell.Vmsa;

namespace Doorbell.Host.SmmuV3;

/// <summary>
/// Encoders for SMMUv3 structures and commands, as a driver builds them (Linux arm-smmu-v3 arm_smmu_make_*_ste,
/// arm_smmu_make_s1_cd, arm_smmu_cmdq_build_cmd). Layout facts: Arm IHI 0070 §5.2, §5.4, §4. Tests use them as
/// table builders.
/// </summary>
public static class SmmuV3Encode
{
    static ulong F(ulong value, int shift) => value << shift;

    // ----- STE (IHI 0070 §5.2) -----

    public static ulong[] AbortSte() => [1UL << Ste.V | F(Ste.ConfigAbort, Ste.ConfigShift), 0, 0, 0, 0, 0, 0, 0];

    public static ulong[] BypassSte() =>
        [1UL << Ste.V | F(Ste.ConfigBypass, Ste.ConfigShift), F(1, Ste.ShcfgShift) /* SHCFG: incoming */, 0, 0, 0, 0, 0, 0];

    /// <summary>A stage-1 STE: CD table at <paramref name="cdTable"/>, S1CDMax SSID bits, S1Fmt, S1DSS.</summary>
    public static ulong[] Stage1Ste(ulong cdTable, int s1CdMax = 0, uint s1Fmt = Cd.S1FmtLinear, uint s1Dss = Ste.S1DssSubstream0, Stage2Config? nestedStage2 = null, bool s2Record = true)
    {
        var q = new ulong[8];
        var config = nestedStage2 is null ? Ste.ConfigS1 : Ste.ConfigNested;
        q[0] = 1UL << Ste.V | F(config, Ste.ConfigShift) | F(s1Fmt, Ste.S1FmtShift) | (cdTable & Ste.S1ContextPtrMask) | F((ulong)s1CdMax, Ste.S1CdMaxShift);
        q[1] = F(s1Dss, Ste.S1DssShift) | F(1, Ste.S1CirShift) | F(1, Ste.S1CorShift) | F(3, Ste.S1CshShift) | F(1, Ste.ShcfgShift);
        if (nestedStage2 is not null) Stage2Fields(nestedStage2, s2Record, q);
        return q;
    }

    /// <summary>A stage-2-only STE.</summary>
    public static ulong[] Stage2Ste(Stage2Config s2, bool record = true)
    {
        var q = new ulong[8];
        q[0] = 1UL << Ste.V | F(Ste.ConfigS2, Ste.ConfigShift);
        q[1] = F(1, Ste.ShcfgShift);
        Stage2Fields(s2, record, q);
        return q;
    }

    /// <summary>SL0 encoding of a start level (inverse of <see cref="Stage2Config.StartLevelFromSl0"/>).</summary>
    public static uint Sl0(Granule g, int startLevel) => (uint)((g == Granule.Size4K ? 2 : 3) - startLevel);

    /// <summary>TG0 encoding: 4K 0, 64K 1, 16K 2.</summary>
    public static uint Tg0(Granule g) => g switch { Granule.Size4K => 0u, Granule.Size64K => 1u, _ => 2u };

    /// <summary>TG1 encoding: 16K 1, 4K 2, 64K 3.</summary>
    public static uint Tg1(Granule g) => g switch { Granule.Size16K => 1u, Granule.Size4K => 2u, _ => 3u };

    static void Stage2Fields(Stage2Config s2, bool record, ulong[] q)
    {
        var ps = (ulong)SmmuV3Options.EncodeAddressSize(s2.OutputSize);
        q[2] = F(s2.Vmid, Ste.S2VmidShift)
               | F((ulong)(64 - s2.InputSize), Ste.S2T0szShift)
               | F(Sl0(s2.Granule, s2.StartLevel), Ste.S2Sl0Shift)
               | F(1, Ste.S2Ir0Shift) | F(1, Ste.S2Or0Shift) | F(3, Ste.S2Sh0Shift)
               | F(Tg0(s2.Granule), Ste.S2TgShift)
               | F(ps, Ste.S2PsShift)
               | 1UL << Ste.S2Aa64
               | (s2.AccessFlagFaultsDisabled ? 1UL << Ste.S2Affd : 0)
               | (s2.ProtectedTableWalk ? 1UL << Ste.S2Ptw : 0)
               | (record ? 1UL << Ste.S2R : 0);
        q[3] = s2.TableBase & Ste.S2TtbMask;
    }

    /// <summary>Level-1 stream table descriptor: L2 table with 2^(span−1) STEs.</summary>
    public static ulong L1Std(ulong l2Table, int span) => (l2Table & Ste.L1L2PtrMask) | (uint)span;

    // ----- CD (IHI 0070 §5.4) -----

    /// <summary>A valid AArch64 CD for a stage-1 configuration (TTB1 walks disabled when it has no high half).</summary>
    public static ulong[] ContextDescriptor(Stage1Config s1, bool record = true, bool abort = true)
    {
        var q = new ulong[8];
        var low = s1.Low;
        var ips = (ulong)SmmuV3Options.EncodeAddressSize(s1.OutputSize);
        q[0] = F((ulong)(64 - low.InputSize), Cd.T0szShift)
               | F(Tg0(low.Granule), Cd.Tg0Shift)
               | F(1, Cd.Ir0Shift) | F(1, Cd.Or0Shift) | F(3, Cd.Sh0Shift)
               | (low.WalksDisabled ? 1UL << Cd.Epd0 : 0)
               | 1UL << Cd.V
               | F(ips, Cd.IpsShift)
               | (s1.AccessFlagFaultsDisabled ? 1UL << Cd.Affd : 0)
               | (s1.Tbi0 ? 1UL << Cd.Tbi0 : 0)
               | (s1.Tbi1 ? 1UL << Cd.Tbi1 : 0)
               | 1UL << Cd.Aa64
               | (record ? 1UL << Cd.R : 0)
               | (abort ? 1UL << Cd.A : 0)
               | 1UL << Cd.Aset
               | F(s1.Asid, Cd.AsidShift);
        if (s1.High is { } high && !high.WalksDisabled)
        {
            q[0] |= F((ulong)(64 - high.InputSize), Cd.T1szShift) | F(Tg1(high.Granule), Cd.Tg1Shift);
            q[2] = high.TableBase & Cd.TtbMask;
        }
        else
            q[0] |= 1UL << Cd.Epd1 | F(Tg1(low.Granule), Cd.Tg1Shift) | F((ulong)(64 - low.InputSize), Cd.T1szShift);
        q[1] = low.TableBase & Cd.TtbMask;
        q[3] = s1.Mair;
        return q;
    }

    /// <summary>Level-1 CD descriptor.</summary>
    public static ulong L1Cd(ulong l2Table) => (l2Table & Cd.L1L2PtrMask) | 1;

    // ----- commands (IHI 0070 §4) -----

    public static (ulong, ulong) CfgiSte(uint sid, bool leaf = true) => (Cmd.CfgiSte | F(sid, Cmd.SidShift), leaf ? 1UL : 0);
    public static (ulong, ulong) CfgiSteRange(uint sid, int range) => (Cmd.CfgiSteRange | F(sid, Cmd.SidShift), (ulong)(range & 0x1F));
    public static (ulong, ulong) CfgiAll() => CfgiSteRange(0, Cmd.CfgiAllRange);
    public static (ulong, ulong) CfgiCd(uint sid, uint ssid, bool leaf = true) =>
        (Cmd.CfgiCd | F(ssid & 0xFFFFF, Cmd.SsidShift) | F(sid, Cmd.SidShift), leaf ? 1UL : 0);
    public static (ulong, ulong) CfgiCdAll(uint sid) => (Cmd.CfgiCdAll | F(sid, Cmd.SidShift), 0);
    public static (ulong, ulong) PrefetchConfig(uint sid) => (Cmd.PrefetchConfig | F(sid, Cmd.SidShift), 0);
    public static (ulong, ulong) TlbiNhAll(ushort vmid) => (Cmd.TlbiNhAll | F(vmid, Cmd.VmidShift), 0);
    public static (ulong, ulong) TlbiNhAsid(ushort vmid, ushort asid) => (Cmd.TlbiNhAsid | F(vmid, Cmd.VmidShift) | F(asid, Cmd.AsidShift), 0);
    public static (ulong, ulong) TlbiNhVa(ushort vmid, ushort asid, ulong va, bool leaf = true) =>
        (Cmd.TlbiNhVa | F(vmid, Cmd.VmidShift) | F(asid, Cmd.AsidShift), (va & Cmd.VaMask) | (leaf ? 1UL : 0));
    public static (ulong, ulong) TlbiNhVaa(ushort vmid, ulong va, bool leaf = true) =>
        (Cmd.TlbiNhVaa | F(vmid, Cmd.VmidShift), (va & Cmd.VaMask) | (leaf ? 1UL : 0));
    /// <summary>TLBI_NH_VA as a range: (NUM+1) × 2^(5·SCALE+1) granules of TG (1 4K, 2 16K, 3 64K), TTL level hint.</summary>
    public static (ulong, ulong) TlbiNhVaRange(ushort vmid, ushort asid, ulong va, int tg, int num, int scale, int ttl = 0, bool leaf = true) =>
        (Cmd.TlbiNhVa | F((ulong)(num & 0x1F), Cmd.NumShift) | F((ulong)(scale & 0x1F), Cmd.ScaleShift) | F(vmid, Cmd.VmidShift) | F(asid, Cmd.AsidShift),
         (va & Cmd.VaMask) | F((ulong)(tg & 3), Cmd.TgShift) | F((ulong)(ttl & 3), Cmd.TtlShift) | (leaf ? 1UL : 0));
    public static (ulong, ulong) TlbiS12Vmall(ushort vmid) => (Cmd.TlbiS12Vmall | F(vmid, Cmd.VmidShift), 0);
    public static (ulong, ulong) TlbiS2Ipa(ushort vmid, ulong ipa, bool leaf = true) =>
        (Cmd.TlbiS2Ipa | F(vmid, Cmd.VmidShift), (ipa & Cmd.IpaMask) | (leaf ? 1UL : 0));
    public static (ulong, ulong) TlbiS2IpaRange(ushort vmid, ulong ipa, int tg, int num, int scale, int ttl = 0, bool leaf = true) =>
        (Cmd.TlbiS2Ipa | F((ulong)(num & 0x1F), Cmd.NumShift) | F((ulong)(scale & 0x1F), Cmd.ScaleShift) | F(vmid, Cmd.VmidShift),
         (ipa & Cmd.IpaMask) | F((ulong)(tg & 3), Cmd.TgShift) | F((ulong)(ttl & 3), Cmd.TtlShift) | (leaf ? 1UL : 0));
    public static (ulong, ulong) TlbiNsnhAll() => (Cmd.TlbiNsnhAll, 0);
    /// <summary>CMD_SYNC: CS 0 none, 1 IRQ (MSI of <paramref name="msiData"/> to <paramref name="msiAddress"/>), 2 SEV.</summary>
    public static (ulong, ulong) Sync(uint cs = Cmd.SyncCsNone, ulong msiAddress = 0, uint msiData = 0) =>
        (Cmd.Sync | F(cs & 3, Cmd.SyncCsShift) | F(3, Cmd.SyncMshShift) | F(0xF, Cmd.SyncMsiAttrShift) | F(msiData, Cmd.SyncMsiDataShift),
         msiAddress & Cmd.SyncMsiAddrMask);
}
