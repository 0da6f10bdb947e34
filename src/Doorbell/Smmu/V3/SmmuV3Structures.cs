using Doorbell.Vmsa;

namespace Doorbell.Smmu.V3;

/// <summary>A legal STE, decoded (IHI 0070 §5.2). Immutable; what the configuration cache holds.</summary>
public sealed class DecodedSte
{
    public required uint Config { get; init; }
    public bool Stage1Enabled => (Config & 0b001) != 0 && (Config & 0b100) != 0;
    public bool Stage2Enabled => (Config & 0b010) != 0 && (Config & 0b100) != 0;
    public bool IsAbort => Config == Ste.ConfigAbort;
    public bool IsBypass => Config == Ste.ConfigBypass;
    public ulong S1ContextPtr { get; init; }
    public uint S1Fmt { get; init; }
    /// <summary>S1CDMax: SubstreamID bits (0 = one CD, substreams disabled).</summary>
    public int S1CdMax { get; init; }
    public uint S1Dss { get; init; }
    public bool MergeEvents { get; init; }
    public Stage2Config? Stage2 { get; init; }
    /// <summary>S2R: stage-2 faults are recorded.</summary>
    public bool S2Record { get; init; }
    public ushort S2Vmid { get; init; }
}

/// <summary>A legal CD, decoded (IHI 0070 §5.4).</summary>
public sealed class DecodedCd
{
    public required Stage1Config Stage1 { get; init; }
    /// <summary>CD.R: stage-1 faults are recorded.</summary>
    public bool Record { get; init; }
    /// <summary>CD.A: a terminated transaction aborts (1) or is RAZ/WI (0).</summary>
    public bool AbortOnTerminate { get; init; }
    public bool SharedAsidSet { get; init; }
}

/// <summary>Pure decoders of STE and CD bytes against the SMMU's ID registers. Never throw on any input.</summary>
public static class SmmuV3Decoder
{
    static uint Bits(ulong q, int shift, int width) => (uint)((q >> shift) & ((1UL << width) - 1));
    static bool Bit(ulong q, int bit) => ((q >> bit) & 1) != 0;

    /// <summary>Stage-2 TG encoding (VTCR.TG0): 0 4K, 1 64K, 2 16K, 3 reserved.</summary>
    public static Granule? DecodeTg0(uint tg) => tg switch { 0 => Granule.Size4K, 1 => Granule.Size64K, 2 => Granule.Size16K, _ => null };
    /// <summary>TCR.TG1 encoding: 1 16K, 2 4K, 3 64K, 0 reserved.</summary>
    public static Granule? DecodeTg1(uint tg) => tg switch { 1 => Granule.Size16K, 2 => Granule.Size4K, 3 => Granule.Size64K, _ => null };

    /// <summary>
    /// Decodes an STE (8 qwords). Returns null with <paramref name="error"/> set when V = 0 or the entry is ILLEGAL
    /// (every reason is a C_BAD_STE).
    /// </summary>
    public static DecodedSte? DecodeSte(ReadOnlySpan<ulong> q, SmmuV3Options o, out string? error)
    {
        error = null;
        var q0 = q[0]; var q1 = q[1]; var q2 = q[2]; var q3 = q[3];
        if (!Bit(q0, Ste.V)) { error = "STE.V = 0"; return null; }
        var config = Bits(q0, Ste.ConfigShift, 3);
        if (config is 0b001 or 0b010 or 0b011) { error = $"STE.Config = 0b{Convert.ToString(config, 2).PadLeft(3, '0')} is reserved"; return null; }
        if (config == Ste.ConfigAbort) return new DecodedSte { Config = config };
        if (config == Ste.ConfigBypass) return new DecodedSte { Config = config };
        var s1 = (config & 1) != 0;
        var s2 = (config & 2) != 0;
        if (s1 && !o.Stage1) { error = "STE enables stage 1 but IDR0.S1P = 0"; return null; }
        if (s2 && !o.Stage2) { error = "STE enables stage 2 but IDR0.S2P = 0"; return null; }

        ulong ctxPtr = 0; uint fmt = 0, dss = 0; var cdMax = 0;
        if (s1)
        {
            ctxPtr = q0 & Ste.S1ContextPtrMask;
            cdMax = (int)Bits(q0, Ste.S1CdMaxShift, 5);
            fmt = Bits(q0, Ste.S1FmtShift, 2);
            if (cdMax > o.SubstreamIdBits) { error = $"STE.S1CDMax = {cdMax} exceeds IDR1.SSIDSIZE = {o.SubstreamIdBits}"; return null; }
            if (cdMax != 0)
            {
                if (fmt == 3) { error = "STE.S1Fmt = 0b11 is reserved"; return null; }
                if (fmt != Cd.S1FmtLinear && !o.TwoLevelCdTable) { error = "STE.S1Fmt selects a 2-level CD table but IDR0.CD2L = 0"; return null; }
                dss = Bits(q1, Ste.S1DssShift, 2);
                if (dss == 3) { error = "STE.S1DSS = 0b11 is reserved"; return null; }
            }
            else fmt = Cd.S1FmtLinear;
        }

        Stage2Config? stage2 = null;
        ushort vmid = (ushort)Bits(q2, Ste.S2VmidShift, 16);
        var s2r = false;
        if (s2)
        {
            if (!Bit(q2, Ste.S2Aa64)) { error = "STE.S2AA64 = 0 with stage 2 (IDR0.TTF: AArch64 tables only)"; return null; }
            if (Bit(q2, Ste.S2Endi)) { error = "STE.S2ENDI = 1 (IDR0.TTENDIAN: little-endian only)"; return null; }
            if (Bit(q2, Ste.S2S)) { error = "STE.S2S = 1 but stalling is not supported (IDR0.STALL_MODEL = 0b01)"; return null; }
            var g = DecodeTg0(Bits(q2, Ste.S2TgShift, 2));
            if (g is null) { error = "STE.S2TG = 0b11 is reserved"; return null; }
            if (!o.SupportsGranule(g.Value)) { error = $"STE.S2TG selects an unsupported {g.Value.Bytes() >> 10}K granule"; return null; }
            var psEnc = Bits(q2, Ste.S2PsShift, 3);
            var ps = SmmuV3Options.DecodeAddressSize(psEnc);
            if (ps < 0) ps = 52; // reserved encodings above OAS behave as OAS (capped below)
            ps = Math.Min(ps, o.OutputAddressBits);
            var t0sz = (int)Bits(q2, Ste.S2T0szShift, 6);
            var sl0 = (int)Bits(q2, Ste.S2Sl0Shift, 2);
            var level = Stage2Config.StartLevelFromSl0(g.Value, sl0);
            var cfg = new Stage2Config
            {
                Granule = g.Value,
                InputSize = 64 - t0sz,
                StartLevel = level,
                TableBase = q3 & Ste.S2TtbMask,
                OutputSize = ps,
                Vmid = vmid,
                AccessFlagFaultsDisabled = Bit(q2, Ste.S2Affd),
                ProtectedTableWalk = Bit(q2, Ste.S2Ptw),
            };
            if (cfg.InputSize > 48 && o.OutputAddressBits < 52) { error = $"STE.S2T0SZ = {t0sz}: input size {cfg.InputSize} exceeds 48 bits"; return null; }
            var why = cfg.Validate();
            if (why is not null) { error = $"STE stage-2 fields inconsistent (S2T0SZ {t0sz}, S2SL0 {sl0}, S2TG): {why}"; return null; }
            stage2 = cfg;
            s2r = Bit(q2, Ste.S2R);
        }
        return new DecodedSte
        {
            Config = config,
            S1ContextPtr = ctxPtr,
            S1Fmt = fmt,
            S1CdMax = cdMax,
            S1Dss = dss,
            MergeEvents = Bit(q1, Ste.Mev),
            Stage2 = stage2,
            S2Record = s2r,
            S2Vmid = vmid,
        };
    }

    /// <summary>Decodes a CD (8 qwords). Null with <paramref name="error"/> when V = 0 or ILLEGAL (C_BAD_CD).</summary>
    public static DecodedCd? DecodeCd(ReadOnlySpan<ulong> q, SmmuV3Options o, out string? error)
    {
        error = null;
        var q0 = q[0];
        if (!Bit(q0, Cd.V)) { error = "CD.V = 0"; return null; }
        if (!Bit(q0, Cd.Aa64)) { error = "CD.AA64 = 0 (IDR0.TTF: AArch64 tables only)"; return null; }
        if (Bit(q0, Cd.Endi)) { error = "CD.ENDI = 1 (IDR0.TTENDIAN: little-endian only)"; return null; }
        if (Bit(q0, Cd.S)) { error = "CD.S = 1 but stalling is not supported (IDR0.STALL_MODEL = 0b01)"; return null; }
        var ipsEnc = Bits(q0, Cd.IpsShift, 3);
        int ips;
        if (ipsEnc == 7) { error = "CD.IPS = 0b111 is reserved"; return null; }
        if (ipsEnc == 6)
        {
            if (o.OutputAddressBits < 52) { error = "CD.IPS = 0b110 (52 bits) but IDR5.OAS < 52"; return null; }
            ips = 52;
        }
        else ips = Math.Min(SmmuV3Options.DecodeAddressSize(ipsEnc), o.OutputAddressBits);

        var epd0 = Bit(q0, Cd.Epd0);
        var epd1 = Bit(q0, Cd.Epd1);
        var g0 = DecodeTg0(Bits(q0, Cd.Tg0Shift, 2));
        var t0 = 64 - (int)Bits(q0, Cd.T0szShift, 6);
        TranslationRegion low;
        if (!epd0)
        {
            if (g0 is null) { error = "CD.TG0 = 0b11 is reserved"; return null; }
            if (!o.SupportsGranule(g0.Value)) { error = $"CD.TG0 selects an unsupported {g0.Value.Bytes() >> 10}K granule"; return null; }
            if (t0 < 25 || t0 > 48) { error = $"CD.T0SZ = {64 - t0} outside [16, 39]"; return null; }
            low = new TranslationRegion(g0.Value, t0, q[1] & Cd.TtbMask);
        }
        else
        {
            // Walks disabled: the granule and size still bound the range; keep legal placeholders when reserved.
            low = new TranslationRegion(g0 is { } gg && o.SupportsGranule(gg) ? gg : Granule.Size4K, Math.Clamp(t0, 25, 48), q[1] & Cd.TtbMask, WalksDisabled: true);
        }
        TranslationRegion? high = null;
        var g1 = DecodeTg1(Bits(q0, Cd.Tg1Shift, 2));
        var t1 = 64 - (int)Bits(q0, Cd.T1szShift, 6);
        if (!epd1)
        {
            if (g1 is null) { error = "CD.TG1 = 0b00 is reserved"; return null; }
            if (!o.SupportsGranule(g1.Value)) { error = $"CD.TG1 selects an unsupported {g1.Value.Bytes() >> 10}K granule"; return null; }
            if (t1 < 25 || t1 > 48) { error = $"CD.T1SZ = {64 - t1} outside [16, 39]"; return null; }
            high = new TranslationRegion(g1.Value, t1, q[2] & Cd.TtbMask);
        }
        // EPD1 = 1: no TTB1 half (the walker faults any address of it without a walk, as EPD1 requires).

        var s1 = new Stage1Config
        {
            Low = low,
            High = high,
            OutputSize = ips,
            Asid = (ushort)Bits(q0, Cd.AsidShift, 16),
            Tbi0 = Bit(q0, Cd.Tbi0),
            Tbi1 = Bit(q0, Cd.Tbi1),
            AccessFlagFaultsDisabled = Bit(q0, Cd.Affd),
            Wxn = Bit(q0, Cd.Wxn),
            Uwxn = Bit(q0, Cd.Uwxn),
            Mair = q[3],
        };
        return new DecodedCd
        {
            Stage1 = s1,
            Record = Bit(q0, Cd.R),
            AbortOnTerminate = Bit(q0, Cd.A),
            SharedAsidSet = Bit(q0, Cd.Aset),
        };
    }

    /// <summary>
    /// Bits of each STE qword the SMMU reads under the entry's own configuration (the "used" bits in Linux's
    /// hitless-update terms). A change confined to unused bits is invisible to the SMMU.
    /// </summary>
    public static void SteUsedBits(ReadOnlySpan<ulong> q, Span<ulong> used)
    {
        used.Clear();
        used[0] = 1UL << Ste.V;
        if (!Bit(q[0], Ste.V)) return;
        used[0] |= 7UL << Ste.ConfigShift;
        var config = Bits(q[0], Ste.ConfigShift, 3);
        if (config is 0 or 1 or 2 or 3) return;
        used[1] |= 1UL << Ste.ShcfgShift | 3UL << Ste.ShcfgShift | 1UL << Ste.Mev;
        if ((config & 1) != 0)
        {
            used[0] |= Ste.S1ContextPtrMask | 3UL << Ste.S1FmtShift | 0x1FUL << Ste.S1CdMaxShift;
            used[1] |= 3UL << Ste.S1DssShift | 0x3FUL << Ste.S1CirShift | 1UL << Ste.S1Stalld | 3UL << Ste.EatsShift | 3UL << Ste.StrwShift;
        }
        if ((config & 2) != 0)
        {
            used[2] = ~0UL >> 5; // VMID, VTCR, S2AA64..S2R
            used[3] = Ste.S2TtbMask;
        }
        else if ((config & 1) != 0)
            used[2] |= 0xFFFF; // S2VMID tags stage-1 entries when stage 2 is implemented
    }

    /// <summary>Used bits of a CD: everything once V = 1, only V otherwise.</summary>
    public static void CdUsedBits(ReadOnlySpan<ulong> q, Span<ulong> used)
    {
        used.Clear();
        used[0] = 1UL << Cd.V;
        if (!Bit(q[0], Cd.V)) return;
        used[0] = ~0UL;
        used[1] = Cd.TtbMask;
        used[2] = Cd.TtbMask;
        used[3] = ~0UL;
    }
}
