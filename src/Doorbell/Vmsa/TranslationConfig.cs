namespace Doorbell.Vmsa;

// VMSAv8-64 translation contract shared by every IOMMU front end (SMMUv3 STE/CD, SMMUv2 context banks).
// Front ends decode their structures into these immutable records; only these reach the walker.
// Facts: Arm ARM DDI 0487 D8 (VMSAv8-64 translation), Arm IHI 0070 §5.2 (STE) and §5.4 (CD).

/// <summary>Translation granule; the value is log2 of the granule size in bytes.</summary>
public enum Granule : byte
{
    Size4K = 12,
    Size16K = 14,
    Size64K = 16,
}

public static class GranuleInfo
{
    public static int Shift(this Granule g) => (int)g;
    public static ulong Bytes(this Granule g) => 1UL << (int)g;
    /// <summary>Bits of input address resolved by one table level (9, 11 or 13).</summary>
    public static int Stride(this Granule g) => (int)g - 3;
    /// <summary>Log2 of the size mapped by one entry at <paramref name="level"/> (0..3).</summary>
    public static int LevelShift(this Granule g, int level) => (int)g + (3 - level) * g.Stride();
}

/// <summary>One half of a stage-1 input range (TTB0 for the low half, TTB1 for the high half).</summary>
/// <param name="Granule">TG0/TG1.</param>
/// <param name="InputSize">Input address bits, 64 − TnSZ.</param>
/// <param name="TableBase">Physical (or, nested, intermediate physical) address of the first-level table.</param>
/// <param name="WalksDisabled">EPDn: a TLB miss in this half faults (translation fault) without a walk.</param>
public sealed record TranslationRegion(Granule Granule, int InputSize, ulong TableBase, bool WalksDisabled = false)
{
    /// <summary>The level the walk starts at for this input size (VMSAv8-64: enough levels to resolve InputSize).</summary>
    public int StartLevel => 4 - (InputSize - Granule.Shift() + Granule.Stride() - 1) / Granule.Stride();

    /// <summary>Null when legal, else why not (a front end turns this into C_BAD_CD or a context fault).</summary>
    public string? Validate(int maxInputSize = 48)
    {
        if (InputSize < 16 || InputSize > maxInputSize)
            return $"input size {InputSize} outside [16, {maxInputSize}]";
        if (StartLevel < 0)
            return $"input size {InputSize} needs a walk starting before level 0";
        if (StartLevel > 3)
            return $"input size {InputSize} leaves no table level with a {Granule.Bytes() >> 10}K granule";
        return null;
    }
}

/// <summary>Stage 1 (CD or SMMUv2 stage-1 context bank): VA → IPA (nested) or PA.</summary>
public sealed record Stage1Config
{
    public required TranslationRegion Low { get; init; }
    /// <summary>TTB1 half (addresses with bit 55 set when TBI applies, else the top of the 64-bit space); null when the regime has one range.</summary>
    public TranslationRegion? High { get; init; }
    /// <summary>IPS/PS: output address bits (32, 36, 40, 42, 44, 48, 52).</summary>
    public int OutputSize { get; init; } = 48;
    public ushort Asid { get; init; }
    public bool Tbi0 { get; init; }
    public bool Tbi1 { get; init; }
    /// <summary>AFFD (SMMUv3 CD): AF = 0 does not fault (the access proceeds as if AF were 1).</summary>
    public bool AccessFlagFaultsDisabled { get; init; }
    /// <summary>HA: hardware sets AF instead of faulting.</summary>
    public bool HardwareAccessFlag { get; init; }
    /// <summary>HD: hardware clears AP[2] on write to a DBM page instead of faulting.</summary>
    public bool HardwareDirty { get; init; }
    public bool Wxn { get; init; }
    public bool Uwxn { get; init; }
    public ulong Mair { get; init; }
}

/// <summary>Stage 2 (STE S2 fields or SMMUv2 stage-2 context bank): IPA → PA.</summary>
public sealed record Stage2Config
{
    public required Granule Granule { get; init; }
    /// <summary>Input (IPA) bits, 64 − S2T0SZ.</summary>
    public required int InputSize { get; init; }
    /// <summary>The level the walk starts at (decoded from SL0 with the granule).</summary>
    public required int StartLevel { get; init; }
    public required ulong TableBase { get; init; }
    /// <summary>S2PS: output address bits.</summary>
    public int OutputSize { get; init; } = 48;
    public ushort Vmid { get; init; }
    public bool AccessFlagFaultsDisabled { get; init; }
    public bool HardwareAccessFlag { get; init; }
    public bool HardwareDirty { get; init; }
    /// <summary>S2PTW: a stage-1 table walk that lands on Device memory at stage 2 faults.</summary>
    public bool ProtectedTableWalk { get; init; }

    /// <summary>Number of concatenated tables at the start level (1..16).</summary>
    public int ConcatenatedTables
    {
        get
        {
            var bits = InputSize - Granule.LevelShift(StartLevel) - Granule.Stride();
            return bits <= 0 ? 1 : 1 << bits;
        }
    }

    /// <summary>
    /// Decodes VTCR.SL0 (as SMMUv3 STE.S2SL0 and SMMUv2 TCR.SL0 encode it) to a start level:
    /// 4K: 0 → level 2, 1 → 1, 2 → 0; 16K/64K: 0 → level 3, 1 → 2, 2 → 1. 3 is reserved (−1).
    /// </summary>
    public static int StartLevelFromSl0(Granule granule, int sl0) => sl0 switch
    {
        0 or 1 or 2 => (granule == Granule.Size4K ? 2 : 3) - sl0,
        _ => -1,
    };

    /// <summary>
    /// Null when the (granule, input size, start level, output size) combination is legal, else why not.
    /// Rule (Arm ARM, stage-2 start level checks): the start level must resolve between 1 bit and
    /// stride + 4 bits (one partial table up to 16 concatenated tables); level 0 needs a 4K granule and
    /// more than 42 output bits; level 1 with 16K/64K needs more than 40/42 output bits.
    /// </summary>
    public string? Validate()
    {
        if (StartLevel is < 0 or > 3)
            return $"start level {StartLevel} is reserved";
        if (InputSize is < 16 or > 52)
            return $"input size {InputSize} outside [16, 52]";
        var stride = Granule.Stride();
        var startBits = InputSize - ((3 - StartLevel) * stride + Granule.Shift());
        if (startBits < 1 || startBits > stride + 4)
            return $"start level {StartLevel} cannot resolve a {InputSize}-bit input with a {Granule.Bytes() >> 10}K granule";
        switch (Granule)
        {
            case Granule.Size64K when StartLevel == 0 || (StartLevel == 1 && OutputSize <= 42):
            case Granule.Size16K when StartLevel == 0 || (StartLevel == 1 && OutputSize <= 40):
            case Granule.Size4K when StartLevel == 0 && OutputSize <= 42:
                return $"start level {StartLevel} not allowed with {Granule.Bytes() >> 10}K granule and {OutputSize}-bit output";
        }
        if (InputSize > OutputSize)
            return $"input size {InputSize} exceeds output size {OutputSize}"; // CONSTRAINED UNPREDICTABLE: we fault (docs/deviations.md)
        return null;
    }
}

/// <summary>What a stream (STE+CD) or a context bank decodes to. Both stages null means bypass.</summary>
public sealed record TranslationConfig(Stage1Config? Stage1, Stage2Config? Stage2)
{
    public static readonly TranslationConfig Bypass = new(null, null);

    public bool IsBypass => Stage1 is null && Stage2 is null;
    public bool IsNested => Stage1 is not null && Stage2 is not null;
    public ushort Asid => Stage1?.Asid ?? 0;
    public ushort Vmid => Stage2?.Vmid ?? 0;
}
