namespace Doorbell.Vmsa;

/// <summary>
/// VMSAv8-64 translation table descriptor fields (Arm ARM DDI 0487 D8.3, "Translation table descriptor formats").
/// One place for the bit positions the walker decodes and the table builders encode.
/// </summary>
public static class Descriptors
{
    // bits [1:0]: 0b?0 invalid, 0b01 block (levels 0-2), 0b11 table (levels 0-2) or page (level 3).
    public const ulong Valid = 1UL << 0;
    public const ulong TypeTableOrPage = 1UL << 1;
    public const int AttrIndxShift = 2;          // stage 1 AttrIndx[2:0], bits [4:2]
    public const int MemAttrShift = 2;           // stage 2 MemAttr[3:0], bits [5:2]
    public const ulong Ns = 1UL << 5;
    public const ulong Ap1 = 1UL << 6;           // stage 1 AP[1]: EL0 (unprivileged) access
    public const ulong Ap2 = 1UL << 7;           // stage 1 AP[2]: read-only
    public const ulong S2ApRead = 1UL << 6;      // stage 2 S2AP[0]
    public const ulong S2ApWrite = 1UL << 7;     // stage 2 S2AP[1]
    public const int ShShift = 8;                // SH[1:0], bits [9:8]
    public const ulong Af = 1UL << 10;
    public const ulong NotGlobal = 1UL << 11;    // stage 1 nG
    public const ulong Dbm = 1UL << 51;
    public const ulong Contiguous = 1UL << 52;
    public const ulong Pxn = 1UL << 53;          // stage 1
    public const ulong Uxn = 1UL << 54;          // stage 1 UXN (XN)
    public const ulong S2Xn0 = 1UL << 53;        // stage 2 XN[0] (FEAT_XNX)
    public const ulong S2Xn1 = 1UL << 54;        // stage 2 XN[1]
    // Table descriptor upper attributes (stage 1 only; RES0/ignored at stage 2).
    public const ulong PxnTable = 1UL << 59;
    public const ulong UxnTable = 1UL << 60;
    public const ulong ApTable0 = 1UL << 61;     // no EL0 access below
    public const ulong ApTable1 = 1UL << 62;     // no write access below
    public const ulong NsTable = 1UL << 63;

    /// <summary>Output/next-table address field OA[47:12] (the granule's low bits are RES0 above bit 11).</summary>
    public const ulong AddressMask48 = 0x0000_FFFF_FFFF_F000UL;
    /// <summary>64K granule with FEAT_LPA: OA[51:48] sit in descriptor bits [15:12].</summary>
    public const int Lpa64KHighShift = 12;

    /// <summary>Output address of a descriptor for a granule (aligned to the granule; 52-bit form for 64K when <paramref name="outputSize"/> is 52).</summary>
    public static ulong OutputAddress(ulong descriptor, Granule granule, int outputSize)
    {
        var oa = descriptor & AddressMask48 & ~(granule.Bytes() - 1);
        if (granule == Granule.Size64K && outputSize > 48)
            oa |= ((descriptor >> Lpa64KHighShift) & 0xF) << 48;
        return oa;
    }

    /// <summary>Encodes an address into the OA field (64K with a 52-bit address puts OA[51:48] in bits [15:12]).</summary>
    public static ulong EncodeAddress(ulong address, Granule granule)
    {
        var d = address & AddressMask48 & ~(granule.Bytes() - 1);
        if (granule == Granule.Size64K)
            d |= ((address >> 48) & 0xF) << Lpa64KHighShift;
        return d;
    }

    public static ulong Table(ulong nextTable, Granule granule) => EncodeAddress(nextTable, granule) | Valid | TypeTableOrPage;

    /// <summary>A leaf: a page at level 3, a block above.</summary>
    public static ulong Leaf(ulong outputAddress, Granule granule, int level, ulong attributes) =>
        EncodeAddress(outputAddress, granule) | Valid | (level == 3 ? TypeTableOrPage : 0) | attributes;

    /// <summary>
    /// Log2 of the number of entries the contiguous hint groups at a level (Arm ARM D8.6.1):
    /// 4K: 16 entries at levels 1-3; 16K: 128 at level 3, 32 at level 2; 64K: 32 at levels 2 and 3. 0 where none.
    /// </summary>
    public static int ContiguousBits(Granule granule, int level) => granule switch
    {
        Granule.Size4K => level is >= 1 and <= 3 ? 4 : 0,
        Granule.Size16K => level == 3 ? 7 : level == 2 ? 5 : 0,
        Granule.Size64K => level is 2 or 3 ? 5 : 0,
        _ => 0,
    };

    /// <summary>
    /// True when a block descriptor is legal at <paramref name="level"/> (levels 0-2; level 3 holds pages).
    /// 4K: levels 1 and 2 (level 0 only with FEAT_LPA2, not modelled); 16K: level 2 (level 1 only with FEAT_LPA2);
    /// 64K: level 2, and level 1 with a 52-bit output size (FEAT_LPA).
    /// </summary>
    public static bool BlockAllowed(Granule granule, int level, int outputSize) => granule switch
    {
        Granule.Size4K => level is 1 or 2,
        Granule.Size16K => level == 2,
        Granule.Size64K => level == 2 || (level == 1 && outputSize > 48),
        _ => false,
    };
}
