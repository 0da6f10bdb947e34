using Doorbell.Vmsa;

namespace Doorbell.Smmu.V2;

// SMMUv2 register layout (Arm IHI 0062, SMMU architecture versions 1 and 2). Offsets and fields are facts checked
// against Linux drivers/iommu/arm/arm-smmu/arm-smmu.h (LS2H in /work/shared/reference/arm-layouts.md) and the
// register chapters of IHI 0062 (global space 0: SMMU_sCR0..SMMU_S2CRn; global space 1: SMMU_CBARn, SMMU_CBA2Rn;
// translation context bank: SMMU_CBn_*). Declared once here; dispatch, driver and tests use these names.

/// <summary>Global register space 0 (page 0) offsets.</summary>
public static class SmmuV2Gr0
{
    public const uint sCR0 = 0x00, sCR1 = 0x04, sCR2 = 0x08, sACR = 0x10;
    public const uint ID0 = 0x20, ID1 = 0x24, ID2 = 0x28, ID3 = 0x2C, ID4 = 0x30, ID5 = 0x34, ID6 = 0x38, ID7 = 0x3C;
    public const uint sGFAR = 0x40, sGFSR = 0x48, sGFSRRESTORE = 0x4C, sGFSYNR0 = 0x50, sGFSYNR1 = 0x54, sGFSYNR2 = 0x58;
    public const uint TLBIVMID = 0x64, TLBIALLNSNH = 0x68, TLBIALLH = 0x6C, sTLBGSYNC = 0x70, sTLBGSTATUS = 0x74;
    public const uint SMR0 = 0x800, S2CR0 = 0xC00;
    public static uint SMR(int n) => SMR0 + 4 * (uint)n;
    public static uint S2CR(int n) => S2CR0 + 4 * (uint)n;
}

/// <summary>Global register space 1 (page 1) offsets.</summary>
public static class SmmuV2Gr1
{
    public static uint CBAR(int n) => 4 * (uint)n;
    public static uint CBFRSYNRA(int n) => 0x400 + 4 * (uint)n;
    public static uint CBA2R(int n) => 0x800 + 4 * (uint)n;
}

/// <summary>Translation context bank offsets (bank n at page NUMPAGE + n).</summary>
public static class SmmuV2Cb
{
    public const uint SCTLR = 0x000, ACTLR = 0x004, RESUME = 0x008, TCR2 = 0x010, TTBR0 = 0x020, TTBR1 = 0x028, TCR = 0x030,
        CONTEXTIDR = 0x034, MAIR0 = 0x038, MAIR1 = 0x03C, PAR = 0x050, FSR = 0x058, FSRRESTORE = 0x05C, FAR = 0x060,
        FSYNR0 = 0x068, FSYNR1 = 0x06C, IPAFAR = 0x070,
        TLBIVA = 0x600, TLBIVAA = 0x608, TLBIASID = 0x610, TLBIALL = 0x618, TLBIVAL = 0x620, TLBIVAAL = 0x628,
        TLBIIPAS2 = 0x630, TLBIIPAS2L = 0x638, TLBSYNC = 0x7F0, TLBSTATUS = 0x7F4,
        ATS1PR = 0x800, ATS1PW = 0x808, ATS1UR = 0x810, ATS1UW = 0x818, ATSR = 0x8F0;
}

/// <summary>Register fields (bit positions and masks).</summary>
public static class SmmuV2Field
{
    // sCR0
    public const uint Cr0ClientPd = 1u << 0, Cr0Gfre = 1u << 1, Cr0Gfie = 1u << 2, Cr0ExidEnable = 1u << 3, Cr0Gcfgfre = 1u << 4,
        Cr0Gcfgfie = 1u << 5, Cr0Stalld = 1u << 8, Cr0Gse = 1u << 9, Cr0Usfcfg = 1u << 10, Cr0Vmidpne = 1u << 11, Cr0Ptm = 1u << 12,
        Cr0Fb = 1u << 13, Cr0Smcfcfg = 1u << 21, Cr0Vmid16En = 1u << 31;
    /// <summary>sCR0 bits this model stores (NSCFG and the Secure-only fields read as zero).</summary>
    public const uint Cr0Mask = 0x80FF_FF37;
    // sGFSR (W1C)
    public const uint GfsrIcf = 1u << 0, GfsrUsf = 1u << 1, GfsrSmcf = 1u << 2, GfsrUcbf = 1u << 3, GfsrUcif = 1u << 4,
        GfsrCaf = 1u << 5, GfsrEf = 1u << 6, GfsrPf = 1u << 7, GfsrMulti = 1u << 31;
    public const uint GfsrFaults = 0xFF;
    // sGFSYNR0
    public const uint GfsynrNested = 1u << 0, GfsynrWnr = 1u << 1, GfsynrPnu = 1u << 2, GfsynrInd = 1u << 3;
    // ID0
    public const int Id0NumSmrgShift = 0, Id0NumSidbShift = 9, Id0NumIrptShift = 16;
    public const uint Id0Exids = 1u << 8, Id0Cttw = 1u << 14, Id0PtfsNoAarch32S = 1u << 24, Id0PtfsNoAarch32 = 1u << 25,
        Id0Atosns = 1u << 26, Id0Sms = 1u << 27, Id0Nts = 1u << 28, Id0S2ts = 1u << 29, Id0S1ts = 1u << 30;
    // ID1
    public const int Id1NumS2CbShift = 16, Id1NumPageNdxbShift = 28;
    public const uint Id1PageSize64K = 1u << 31;
    // ID2
    public const int Id2OasShift = 4, Id2UbsShift = 8;
    public const uint Id2Ptfs4K = 1u << 12, Id2Ptfs16K = 1u << 13, Id2Ptfs64K = 1u << 14, Id2Vmid16 = 1u << 15;
    // SMR
    public const uint SmrValid = 1u << 31;
    public const int SmrMaskShift = 16;
    // S2CR
    public const int S2crTypeShift = 16, S2crPrivCfgShift = 24, S2crInstCfgShift = 26, S2crShCfgShift = 8;
    public const uint S2crTypeTranslate = 0, S2crTypeBypass = 1, S2crTypeFault = 2;
    public const uint S2crMask = 0x0FFF_FFFF;
    // CBAR
    public const int CbarTypeShift = 16, CbarIrptNdxShift = 24, CbarS2CbNdxShift = 8, CbarBpShCfgShift = 8, CbarMemAttrShift = 12;
    public const uint CbarTypeS2 = 0, CbarTypeS1BypassS2 = 1, CbarTypeS1FaultS2 = 2, CbarTypeNested = 3;
    // CBA2R
    public const uint Cba2rVa64 = 1u << 0;
    public const int Cba2rVmid16Shift = 16;
    // CBn_SCTLR
    public const uint SctlrM = 1u << 0, SctlrTre = 1u << 1, SctlrAfe = 1u << 2, SctlrAffd = 1u << 3, SctlrE = 1u << 4,
        SctlrCfre = 1u << 5, SctlrCfie = 1u << 6, SctlrCfcfg = 1u << 7, SctlrHupcf = 1u << 8, SctlrWxn = 1u << 9,
        SctlrUwxn = 1u << 10, SctlrAsidPne = 1u << 12;
    // CBn_RESUME
    public const uint ResumeTerminate = 1u << 0;
    // CBn_TCR (AArch64 / long-descriptor format) and TCR2
    public const int TcrT0szShift = 0, TcrSl0Shift = 6, TcrTg0Shift = 14, TcrT1szShift = 16, TcrTg1Shift = 30, TcrS2PaSizeShift = 16;
    public const uint TcrEpd0 = 1u << 7, TcrA1 = 1u << 22, TcrEpd1 = 1u << 23;
    public const uint Tcr2As = 1u << 4, Tcr2Tbi0 = 1u << 5, Tcr2Tbi1 = 1u << 6;
    public const int Tcr2PaSizeShift = 0;
    // CBn_FSR (W1C)
    public const uint FsrTf = 1u << 1, FsrAff = 1u << 2, FsrPf = 1u << 3, FsrEf = 1u << 4, FsrTlbmcf = 1u << 5, FsrTlblkf = 1u << 6,
        FsrAsf = 1u << 7, FsrUut = 1u << 8, FsrSs = 1u << 30, FsrMulti = 1u << 31;
    public const uint FsrFaults = FsrTf | FsrAff | FsrPf | FsrEf | FsrTlbmcf | FsrTlblkf | FsrAsf | FsrUut;
    // CBn_FSYNR0
    public const uint FsynrWnr = 1u << 4, FsynrPnu = 1u << 5, FsynrInd = 1u << 6, FsynrNsAttr = 1u << 8, FsynrPtwf = 1u << 10, FsynrAfr = 1u << 11;
    public const int FsynrS1CbNdxShift = 16;
    // CBn_PAR (64-bit format): success PA[47:12]; fault F, FSR-like bits [6:1], PLVL[33:32], STAGE 35
    public const ulong ParF = 1UL << 0, ParStage2 = 1UL << 35, ParPaMask = 0x0000_FFFF_FFFF_F000UL;
    public const int ParPlvlShift = 32;
    // TLB status
    public const uint TlbStatusSActive = 1u << 0, AtsrActive = 1u << 0;
}

/// <summary>The SMMUv2-family parts the model can be: the ID registers say which.</summary>
public enum SmmuV2Variant
{
    /// <summary>Arm CoreLink MMU-400 (SMMUv1 architecture), as issue 15 describes it: stage 2 only.</summary>
    Mmu400,
    /// <summary>Arm CoreLink MMU-401 as on Juno (SMMUv1 architecture, 64K-capable): stage 1 only.</summary>
    Mmu401,
    /// <summary>Arm CoreLink MMU-500 (SMMUv2): stage 1, stage 2 and nested; the class ThunderX's SMMU belongs to.</summary>
    Mmu500,
}

/// <summary>
/// One SMMUv2 instance's configuration; the ID registers are computed from it and say only what the model does:
/// AArch64 (long-descriptor) tables, little-endian, Non-secure state.
/// </summary>
public sealed record SmmuV2Options
{
    public SmmuV2Variant Variant { get; init; } = SmmuV2Variant.Mmu500;
    /// <summary>ID0.NUMSMRG: stream match register groups (or S2CRs in stream-indexing mode: 2^NUMSIDB).</summary>
    public int StreamMatchGroups { get; init; } = 48;
    /// <summary>ID0.NUMSIDB: StreamID bits (up to 15 in SMR.ID/MASK; 16 with EXIDS is not modelled).</summary>
    public int StreamIdBits { get; init; } = 15;
    /// <summary>ID0.SMS: stream matching (true) or stream indexing (false: S2CR n serves StreamID n).</summary>
    public bool StreamMatching { get; init; } = true;
    /// <summary>ID1.NUMCB: context banks; ID1.NUMS2CB: how many of them (the lowest-numbered) are stage-2-only.</summary>
    public int ContextBanks { get; init; } = 16;
    public int Stage2OnlyContextBanks { get; init; }
    /// <summary>ID0.NUMIRPT: context interrupt lines.</summary>
    public int ContextInterrupts { get; init; } = 16;
    public bool Stage1 { get; init; } = true;
    public bool Stage2 { get; init; } = true;
    /// <summary>ID0.NTS: nested (S1 followed by S2) contexts.</summary>
    public bool Nested { get; init; } = true;
    /// <summary>ID2.IAS / OAS / UBS in bits.</summary>
    public int IntermediateAddressBits { get; init; } = 48;
    public int OutputAddressBits { get; init; } = 48;
    public int UpstreamBusBits { get; init; } = 49;
    public bool Granule4K { get; init; } = true;
    public bool Granule16K { get; init; }
    public bool Granule64K { get; init; } = true;
    public bool Vmid16 { get; init; } = true;
    /// <summary>ID0.CTTW: coherent table walks.</summary>
    public bool CoherentWalk { get; init; } = true;
    /// <summary>ID0.ATOSNS: set when address-translation operations are NOT supported.</summary>
    public bool AtosNotSupported { get; init; }
    /// <summary>ID1.PAGESIZE: 64 KiB register pages (else 4 KiB).</summary>
    public bool Pages64K { get; init; }
    /// <summary>ID7 MAJOR/MINOR (implementation revision).</summary>
    public int Major { get; init; } = 2;
    public int Minor { get; init; } = 1;

    /// <summary>MMU-400 as issue 15 states (stage 2 only), 4 KiB granule, 40-bit IPA/PA, 4 banks.</summary>
    public static SmmuV2Options Mmu400 { get; } = new()
    {
        Variant = SmmuV2Variant.Mmu400, StreamMatchGroups = 16, StreamIdBits = 15, ContextBanks = 4, Stage2OnlyContextBanks = 4,
        ContextInterrupts = 4, Stage1 = false, Stage2 = true, Nested = false, IntermediateAddressBits = 40, OutputAddressBits = 40,
        UpstreamBusBits = 40, Granule4K = true, Granule16K = false, Granule64K = false, Vmid16 = false, CoherentWalk = false,
        Major = 0, Minor = 1,
    };

    /// <summary>MMU-401 as on Juno: stage 1 only, 4K and 64K granules, 40-bit output, 8 banks, 16 SMRs.</summary>
    public static SmmuV2Options Mmu401 { get; } = new()
    {
        Variant = SmmuV2Variant.Mmu401, StreamMatchGroups = 16, StreamIdBits = 15, ContextBanks = 8, Stage2OnlyContextBanks = 0,
        ContextInterrupts = 8, Stage1 = true, Stage2 = false, Nested = false, IntermediateAddressBits = 40, OutputAddressBits = 40,
        UpstreamBusBits = 40, Granule4K = true, Granule16K = false, Granule64K = true, Vmid16 = false, CoherentWalk = false,
        Major = 0, Minor = 1,
    };

    /// <summary>MMU-500 class (ThunderX-like): stage 1, 2 and nested, 48-bit, 4K/64K granules, VMID16, 16 banks.</summary>
    public static SmmuV2Options Mmu500 { get; } = new();

    public static SmmuV2Options For(SmmuV2Variant v) => v switch
    {
        SmmuV2Variant.Mmu400 => Mmu400,
        SmmuV2Variant.Mmu401 => Mmu401,
        _ => Mmu500,
    };

    /// <summary>log2 of the register page size.</summary>
    public int PageShift => Pages64K ? 16 : 12;
    /// <summary>ID1.NUMPAGENDXB: global space spans 2^(NUMPAGENDXB+1) pages, at least as many as the banks.</summary>
    public int NumPageNdxb
    {
        get
        {
            var n = 0;
            while ((1 << (n + 1)) < Math.Max(2, ContextBanks)) n++;
            return n;
        }
    }
    public int GlobalPages => 1 << (NumPageNdxb + 1);
    /// <summary>Whole register frame: global space plus translation context bank space of the same size.</summary>
    public ulong FrameSize => (ulong)GlobalPages * 2 << PageShift;
    /// <summary>S2CRs implemented (2^NUMSIDB in stream-indexing mode).</summary>
    public int S2crCount => StreamMatching ? StreamMatchGroups : 1 << StreamIdBits;

    public static int EncodeSize(int bits) => bits switch { 32 => 0, 36 => 1, 40 => 2, 42 => 3, 44 => 4, 48 => 5, 52 => 6, _ => -1 };
    public static int DecodeSize(uint enc) => enc switch { 0 => 32, 1 => 36, 2 => 40, 3 => 42, 4 => 44, 5 => 48, 6 => 52, _ => -1 };

    public uint Id0 =>
        (uint)(StreamMatching ? StreamMatchGroups : 0) << SmmuV2Field.Id0NumSmrgShift
        | (uint)StreamIdBits << SmmuV2Field.Id0NumSidbShift
        | (uint)ContextInterrupts << SmmuV2Field.Id0NumIrptShift
        | (CoherentWalk ? SmmuV2Field.Id0Cttw : 0)
        | SmmuV2Field.Id0PtfsNoAarch32S // AArch32 short-descriptor tables are not supported
        | (AtosNotSupported ? SmmuV2Field.Id0Atosns : 0)
        | (StreamMatching ? SmmuV2Field.Id0Sms : 0)
        | (Nested ? SmmuV2Field.Id0Nts : 0)
        | (Stage2 ? SmmuV2Field.Id0S2ts : 0)
        | (Stage1 ? SmmuV2Field.Id0S1ts : 0);

    public uint Id1 =>
        (uint)ContextBanks
        | (uint)Stage2OnlyContextBanks << SmmuV2Field.Id1NumS2CbShift
        | (uint)NumPageNdxb << SmmuV2Field.Id1NumPageNdxbShift
        | (Pages64K ? SmmuV2Field.Id1PageSize64K : 0);

    public uint Id2 =>
        (uint)EncodeSize(IntermediateAddressBits)
        | (uint)EncodeSize(OutputAddressBits) << SmmuV2Field.Id2OasShift
        | (uint)UbsEncoding << SmmuV2Field.Id2UbsShift
        | (Granule4K ? SmmuV2Field.Id2Ptfs4K : 0)
        | (Granule16K ? SmmuV2Field.Id2Ptfs16K : 0)
        | (Granule64K ? SmmuV2Field.Id2Ptfs64K : 0)
        | (Vmid16 ? SmmuV2Field.Id2Vmid16 : 0);

    /// <summary>ID2.UBS: 0..4 = 32..48 bits in the PS steps, 5 = 49 bits (AArch64 VA with TTBR1 selector).</summary>
    int UbsEncoding => UpstreamBusBits switch { 32 => 0, 36 => 1, 40 => 2, 42 => 3, 44 => 4, 49 => 5, _ => 5 };

    public uint Id7 => (uint)(Major & 0xF) << 4 | (uint)(Minor & 0xF);

    internal bool SupportsGranule(Granule g) => g switch
    {
        Granule.Size4K => Granule4K,
        Granule.Size16K => Granule16K,
        _ => Granule64K,
    };

    /// <summary>Throws for a board-construction mistake (never for anything software does).</summary>
    public void Validate()
    {
        if (StreamMatchGroups is < 1 or > 127) throw new ArgumentException("NUMSMRG must be 1..127");
        if (StreamIdBits is < 1 or > 15) throw new ArgumentException("NUMSIDB must be 1..15");
        if (!StreamMatching && StreamIdBits > 10) throw new ArgumentException("stream indexing needs at most 10 StreamID bits");
        if (ContextBanks is < 1 or > 128) throw new ArgumentException("NUMCB must be 1..128");
        if (Stage2OnlyContextBanks < 0 || Stage2OnlyContextBanks > ContextBanks) throw new ArgumentException("NUMS2CB must be 0..NUMCB");
        if (!Stage1 && Stage2OnlyContextBanks != ContextBanks) throw new ArgumentException("without stage 1 every bank is stage-2-only");
        if (!Stage2 && Stage2OnlyContextBanks != 0) throw new ArgumentException("without stage 2 no bank is stage-2-only");
        if (Nested && !(Stage1 && Stage2)) throw new ArgumentException("nesting needs both stages");
        if (!Stage1 && !Stage2) throw new ArgumentException("an SMMU translates at some stage");
        if (ContextInterrupts < 1) throw new ArgumentException("at least one context interrupt");
        if (EncodeSize(IntermediateAddressBits) < 0 || EncodeSize(OutputAddressBits) < 0) throw new ArgumentException("IAS/OAS must be a PS size");
        if (!(Granule4K || Granule16K || Granule64K)) throw new ArgumentException("at least one granule");
    }
}
