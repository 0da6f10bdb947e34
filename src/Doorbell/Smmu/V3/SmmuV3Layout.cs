using Doorbell.Memory;
namespace Doorbell.Smmu.V3;

// SMMUv3 architectural layouts: register offsets and fields, STE, CD, commands, event records.
// Facts: Arm IHI 0070 (SMMUv3) §6 (registers), §5.2 (STE), §5.4 (CD), §4 (commands), §7.3 (events);
// checked against ../shared/reference/arm-layouts.md. Shared by the model (decode) and the host driver (encode),
// as a hardware header is.

/// <summary>Register offsets (page 0; page 1 registers at +0x10000) and the one table that declares them (IHI 0070 §6.2).</summary>
public static class SmmuV3Reg
{
    public const uint Page1 = 0x1_0000;
    public const ulong FrameSize = 0x2_0000;

    public const uint IDR0 = 0x00, IDR1 = 0x04, IDR2 = 0x08, IDR3 = 0x0C, IDR4 = 0x10, IDR5 = 0x14;
    public const uint IIDR = 0x18, AIDR = 0x1C;
    public const uint CR0 = 0x20, CR0ACK = 0x24, CR1 = 0x28, CR2 = 0x2C;
    public const uint STATUSR = 0x40, GBPA = 0x44, AGBPA = 0x48;
    public const uint IRQ_CTRL = 0x50, IRQ_CTRLACK = 0x54;
    public const uint GERROR = 0x60, GERRORN = 0x64;
    public const uint GERROR_IRQ_CFG0 = 0x68, GERROR_IRQ_CFG1 = 0x70, GERROR_IRQ_CFG2 = 0x74;
    public const uint STRTAB_BASE = 0x80, STRTAB_BASE_CFG = 0x88;
    public const uint CMDQ_BASE = 0x90, CMDQ_PROD = 0x98, CMDQ_CONS = 0x9C;
    public const uint EVENTQ_BASE = 0xA0;
    public const uint EVENTQ_PROD = Page1 + 0xA8, EVENTQ_CONS = Page1 + 0xAC;
    public const uint EVENTQ_IRQ_CFG0 = 0xB0, EVENTQ_IRQ_CFG1 = 0xB8, EVENTQ_IRQ_CFG2 = 0xBC;
    public const uint PRIQ_BASE = 0xC0;
    public const uint PRIQ_PROD = Page1 + 0xC8, PRIQ_CONS = Page1 + 0xCC;
    public const uint PRIQ_IRQ_CFG0 = 0xD0, PRIQ_IRQ_CFG1 = 0xD8, PRIQ_IRQ_CFG2 = 0xDC;
    public const uint PIDR4 = 0xFD0, PIDR0 = 0xFE0, PIDR1 = 0xFE4, PIDR2 = 0xFE8, PIDR3 = 0xFEC;
    public const uint CIDR0 = 0xFF0, CIDR1 = 0xFF4, CIDR2 = 0xFF8, CIDR3 = 0xFFC;

    /// <summary>The id each register's handler case switches on (one per register).</summary>
    internal enum RegId { None, Idr0, Idr1, Idr2, Idr3, Idr4, Idr5, Iidr, Aidr, Cr0, Cr0ack, Cr1, Cr2, Statusr, Gbpa, IrqCtrl, IrqCtrlack, Gerror, Gerrorn, GerrorIrqCfg0, GerrorIrqCfg1, GerrorIrqCfg2, StrtabBase, StrtabBaseCfg, CmdqBase, CmdqProd, CmdqCons, EventqBase, EventqIrqCfg0, EventqIrqCfg1, EventqIrqCfg2, EventqProd, EventqCons, Pidr4, Pidr0, Pidr1, Pidr2, Pidr3, Cidr0, Cidr1, Cidr2, Cidr3 }

    /// <summary>Every implemented register, declared once: the table drives the model's dispatch, read-only handling,
    /// strict reports and names. Offsets not listed are reserved (RAZ/WI).</summary>
    public static readonly RegisterDescriptor[] Table =
    [
        new(IDR0, 4, "IDR0", RegisterAccess.ReadOnly, Id: (int)RegId.Idr0),
        new(IDR1, 4, "IDR1", RegisterAccess.ReadOnly, Id: (int)RegId.Idr1),
        new(IDR2, 4, "IDR2", RegisterAccess.ReadOnly, Id: (int)RegId.Idr2),
        new(IDR3, 4, "IDR3", RegisterAccess.ReadOnly, Id: (int)RegId.Idr3),
        new(IDR4, 4, "IDR4", RegisterAccess.ReadOnly, Id: (int)RegId.Idr4),
        new(IDR5, 4, "IDR5", RegisterAccess.ReadOnly, Id: (int)RegId.Idr5),
        new(IIDR, 4, "IIDR", RegisterAccess.ReadOnly, Id: (int)RegId.Iidr),
        new(AIDR, 4, "AIDR", RegisterAccess.ReadOnly, Id: (int)RegId.Aidr),
        new(CR0, 4, "CR0", RegisterAccess.ReadWrite, Id: (int)RegId.Cr0),
        new(CR0ACK, 4, "CR0ACK", RegisterAccess.ReadOnly, Id: (int)RegId.Cr0ack),
        new(CR1, 4, "CR1", RegisterAccess.ReadWrite, Id: (int)RegId.Cr1),
        new(CR2, 4, "CR2", RegisterAccess.ReadWrite, Id: (int)RegId.Cr2),
        new(STATUSR, 4, "STATUSR", RegisterAccess.ReadOnly, Id: (int)RegId.Statusr),
        new(GBPA, 4, "GBPA", RegisterAccess.ReadWrite, Id: (int)RegId.Gbpa),
        new(IRQ_CTRL, 4, "IRQ_CTRL", RegisterAccess.ReadWrite, Id: (int)RegId.IrqCtrl),
        new(IRQ_CTRLACK, 4, "IRQ_CTRLACK", RegisterAccess.ReadOnly, Id: (int)RegId.IrqCtrlack),
        new(GERROR, 4, "GERROR", RegisterAccess.ReadOnly, Id: (int)RegId.Gerror),
        new(GERRORN, 4, "GERRORN", RegisterAccess.ReadWrite, Id: (int)RegId.Gerrorn),
        new(GERROR_IRQ_CFG0, 8, "GERROR_IRQ_CFG0", RegisterAccess.ReadWrite, Id: (int)RegId.GerrorIrqCfg0),
        new(GERROR_IRQ_CFG1, 4, "GERROR_IRQ_CFG1", RegisterAccess.ReadWrite, Id: (int)RegId.GerrorIrqCfg1),
        new(GERROR_IRQ_CFG2, 4, "GERROR_IRQ_CFG2", RegisterAccess.ReadWrite, Id: (int)RegId.GerrorIrqCfg2),
        new(STRTAB_BASE, 8, "STRTAB_BASE", RegisterAccess.ReadWrite, Id: (int)RegId.StrtabBase),
        new(STRTAB_BASE_CFG, 4, "STRTAB_BASE_CFG", RegisterAccess.ReadWrite, Id: (int)RegId.StrtabBaseCfg),
        new(CMDQ_BASE, 8, "CMDQ_BASE", RegisterAccess.ReadWrite, Id: (int)RegId.CmdqBase),
        new(CMDQ_PROD, 4, "CMDQ_PROD", RegisterAccess.ReadWrite, Id: (int)RegId.CmdqProd),
        new(CMDQ_CONS, 4, "CMDQ_CONS", RegisterAccess.ReadWrite, Id: (int)RegId.CmdqCons),
        new(EVENTQ_BASE, 8, "EVENTQ_BASE", RegisterAccess.ReadWrite, Id: (int)RegId.EventqBase),
        new(EVENTQ_IRQ_CFG0, 8, "EVENTQ_IRQ_CFG0", RegisterAccess.ReadWrite, Id: (int)RegId.EventqIrqCfg0),
        new(EVENTQ_IRQ_CFG1, 4, "EVENTQ_IRQ_CFG1", RegisterAccess.ReadWrite, Id: (int)RegId.EventqIrqCfg1),
        new(EVENTQ_IRQ_CFG2, 4, "EVENTQ_IRQ_CFG2", RegisterAccess.ReadWrite, Id: (int)RegId.EventqIrqCfg2),
        new(EVENTQ_PROD, 4, "EVENTQ_PROD", RegisterAccess.ReadWrite, Id: (int)RegId.EventqProd),
        new(EVENTQ_CONS, 4, "EVENTQ_CONS", RegisterAccess.ReadWrite, Id: (int)RegId.EventqCons),
        new(PIDR4, 4, "PIDR4", RegisterAccess.ReadOnly, Id: (int)RegId.Pidr4),
        new(PIDR0, 4, "PIDR0", RegisterAccess.ReadOnly, Id: (int)RegId.Pidr0),
        new(PIDR1, 4, "PIDR1", RegisterAccess.ReadOnly, Id: (int)RegId.Pidr1),
        new(PIDR2, 4, "PIDR2", RegisterAccess.ReadOnly, Id: (int)RegId.Pidr2),
        new(PIDR3, 4, "PIDR3", RegisterAccess.ReadOnly, Id: (int)RegId.Pidr3),
        new(CIDR0, 4, "CIDR0", RegisterAccess.ReadOnly, Id: (int)RegId.Cidr0),
        new(CIDR1, 4, "CIDR1", RegisterAccess.ReadOnly, Id: (int)RegId.Cidr1),
        new(CIDR2, 4, "CIDR2", RegisterAccess.ReadOnly, Id: (int)RegId.Cidr2),
        new(CIDR3, 4, "CIDR3", RegisterAccess.ReadOnly, Id: (int)RegId.Cidr3),
    ];

    /// <summary>The table compiled for dispatch (one index byte per word of both pages).</summary>
    public static readonly RegisterBlock Block = new("smmuv3", Table, FrameSize, "IHI 0070 §6.3 (read-only register)");

    /// <summary>The register declared at <paramref name="offset"/> (exact start), or null.</summary>
    public static RegisterDescriptor? Find(uint offset)
    {
        ref readonly var r = ref Block.Find(offset);
        return r.Id != 0 && r.Offset == offset ? r : null;
    }

    public static string NameOf(uint offset) => Find(offset)?.Name ?? $"reserved@0x{offset:x}";
}

/// <summary>Register fields (IHI 0070 §6.3).</summary>
public static class SmmuV3Field
{
    // IDR0
    public const int Idr0S2P = 0, Idr0S1P = 1, Idr0TtfShift = 2, Idr0Cohacc = 4, Idr0Btm = 5, Idr0HttuShift = 6, Idr0Hyp = 9,
        Idr0Ats = 10, Idr0Asid16 = 12, Idr0Msi = 13, Idr0Sev = 14, Idr0Pri = 16, Idr0Vmid16 = 18, Idr0Cd2l = 19,
        Idr0TtEndianShift = 21, Idr0StallModelShift = 24, Idr0TermModel = 26, Idr0StLevelShift = 27;
    // IDR1
    public const int Idr1SidSizeShift = 0, Idr1SsidSizeShift = 6, Idr1PriqsShift = 11, Idr1EvtqsShift = 16, Idr1CmdqsShift = 21;
    // IDR3
    public const int Idr3Had = 2, Idr3Ril = 10;
    // IDR5
    public const int Idr5OasShift = 0, Idr5Gran4K = 4, Idr5Gran16K = 5, Idr5Gran64K = 6, Idr5VaxShift = 10;

    // CR0 / CR0ACK
    public const uint Cr0SmmuEn = 1u << 0, Cr0PriqEn = 1u << 1, Cr0EventqEn = 1u << 2, Cr0CmdqEn = 1u << 3, Cr0AtsChk = 1u << 4;
    public const uint Cr0Mask = Cr0SmmuEn | Cr0EventqEn | Cr0CmdqEn | (7u << 6); // PRIQEN/ATSCHK RES0 without PRI/ATS; VMW[8:6]
    // CR1: queue/table cacheability and shareability fields [11:0]
    public const uint Cr1Mask = 0xFFF;
    // CR2
    public const uint Cr2E2h = 1u << 0, Cr2RecInvSid = 1u << 1, Cr2Ptm = 1u << 2;
    // GBPA
    public const uint GbpaUpdate = 1u << 31, GbpaAbort = 1u << 20;
    public const uint GbpaFieldsMask = 0x3 << 18 | 1u << 20 | 0x3 << 16 | 0x3 << 12 | 0xF << 8 | 1u << 4 | 0xF; // INSTCFG,PRIVCFG,ABORT,NSCFG,SHCFG,ALLOCCFG,MTCFG,MEMATTR
    public const uint GbpaReset = 0x1000; // SHCFG = 0b01 (use incoming)
    // IRQ_CTRL
    public const uint IrqCtrlGerrorEn = 1u << 0, IrqCtrlPriqEn = 1u << 1, IrqCtrlEventqEn = 1u << 2;
    // GERROR / GERRORN
    public const uint GerrorCmdq = 1u << 0, GerrorEventqAbt = 1u << 2, GerrorPriqAbt = 1u << 3, GerrorMsiCmdqAbt = 1u << 4,
        GerrorMsiEventqAbt = 1u << 5, GerrorMsiPriqAbt = 1u << 6, GerrorMsiGerrorAbt = 1u << 7, GerrorSfm = 1u << 8;
    public const uint GerrorMask = 0x1FD;
    // STRTAB_BASE / _CFG
    public const ulong StrtabBaseAddrMask = 0x000F_FFFF_FFFF_FFC0; // ADDR[51:6]
    public const ulong StrtabBaseRa = 1UL << 62;
    public const int StrtabCfgLog2SizeShift = 0, StrtabCfgSplitShift = 6, StrtabCfgFmtShift = 16;
    public const uint StrtabCfgMask = 0x3 << 16 | 0x1F << 6 | 0x3F;
    // Queue bases (CMDQ/EVENTQ/PRIQ_BASE)
    public const ulong QBaseAddrMask = 0x000F_FFFF_FFFF_FFE0; // ADDR[51:5]
    public const ulong QBaseRwa = 1UL << 62;
    public const ulong QBaseLog2SizeMask = 0x1F;
    public const uint QOvflg = 1u << 31; // EVENTQ_PROD.OVFLG / EVENTQ_CONS.OVACKFLG
    public const int CmdqConsErrShift = 24;
    public const uint CmdqConsErrMask = 0x7Fu << 24;
    // MSI config: CFG0 ADDR[51:2]; CFG2 SH[5:4], MEMATTR[3:0]
    public const ulong MsiAddrMask = 0x000F_FFFF_FFFF_FFFC;
    public const uint MsiCfg2Mask = 0x3F;

    public const uint CerrorNone = 0, CerrorIll = 1, CerrorAbt = 2, CerrorAtcInvSync = 3;
}

/// <summary>Stream table entry layout, 64 bytes (IHI 0070 §5.2). Bit positions within the named 64-bit qword.</summary>
public static class Ste
{
    public const int Size = 64;
    // Q0
    public const int V = 0, ConfigShift = 1, S1FmtShift = 4, S1CdMaxShift = 59;
    public const ulong S1ContextPtrMask = 0x000F_FFFF_FFFF_FFC0; // [51:6]
    public const uint ConfigAbort = 0b000, ConfigBypass = 0b100, ConfigS1 = 0b101, ConfigS2 = 0b110, ConfigNested = 0b111;
    // Q1
    public const int S1DssShift = 0, S1CirShift = 2, S1CorShift = 4, S1CshShift = 6, Mev = 19, S2Fwb = 25, S1Stalld = 27,
        EatsShift = 28, StrwShift = 30, ShcfgShift = 44;
    public const uint S1DssTerminate = 0, S1DssBypass = 1, S1DssSubstream0 = 2;
    // Q2
    public const int S2VmidShift = 0, S2T0szShift = 32, S2Sl0Shift = 38, S2Ir0Shift = 40, S2Or0Shift = 42, S2Sh0Shift = 44,
        S2TgShift = 46, S2PsShift = 48, S2Aa64 = 51, S2Endi = 52, S2Affd = 53, S2Ptw = 54, S2Hd = 55, S2Ha = 56, S2S = 57, S2R = 58;
    // Q3
    public const ulong S2TtbMask = 0x000F_FFFF_FFFF_FFF0; // [51:4]
    // Level-1 stream table descriptor (8 bytes): Span[4:0], L2Ptr[51:6]
    public const ulong L1SpanMask = 0x1F;
    public const ulong L1L2PtrMask = 0x000F_FFFF_FFFF_FFC0;
}

/// <summary>Context descriptor layout, 64 bytes (IHI 0070 §5.4).</summary>
public static class Cd
{
    public const int Size = 64;
    // Q0
    public const int T0szShift = 0, Tg0Shift = 6, Ir0Shift = 8, Or0Shift = 10, Sh0Shift = 12, Epd0 = 14, Endi = 15,
        T1szShift = 16, Tg1Shift = 22, Ir1Shift = 24, Or1Shift = 26, Sh1Shift = 28, Epd1 = 30, V = 31, IpsShift = 32,
        Affd = 35, Wxn = 36, Uwxn = 37, Tbi0 = 38, Tbi1 = 39, Pan = 40, Aa64 = 41, Hd = 42, Ha = 43, S = 44, R = 45, A = 46,
        Aset = 47, AsidShift = 48;
    // Q1 / Q2
    public const ulong TtbMask = 0x000F_FFFF_FFFF_FFF0; // [51:4]
    // Level-1 CD descriptor: V 0, L2Ptr[51:12]
    public const ulong L1L2PtrMask = 0x000F_FFFF_FFFF_F000;
    public const uint S1FmtLinear = 0, S1Fmt2Level4K = 1, S1Fmt2Level64K = 2;
}

/// <summary>Command opcodes and fields, 16 bytes (IHI 0070 §4).</summary>
public static class Cmd
{
    public const int Size = 16;
    public const byte PrefetchConfig = 0x01, PrefetchAddr = 0x02, CfgiSte = 0x03, CfgiSteRange = 0x04, CfgiCd = 0x05, CfgiCdAll = 0x06,
        TlbiNhAll = 0x10, TlbiNhAsid = 0x11, TlbiNhVa = 0x12, TlbiNhVaa = 0x13, TlbiEl3All = 0x18, TlbiEl3Va = 0x1A,
        TlbiEl2All = 0x20, TlbiEl2Asid = 0x21, TlbiEl2Va = 0x22, TlbiEl2Vaa = 0x23, TlbiS12Vmall = 0x28, TlbiS2Ipa = 0x2A,
        TlbiNsnhAll = 0x30, AtcInv = 0x40, PriResp = 0x41, Resume = 0x44, StallTerm = 0x45, Sync = 0x46;
    /// <summary>CFGI_ALL is CFGI_STE_RANGE with Range = 31.</summary>
    public const int CfgiAllRange = 31;
    // Q0
    public const int Ssec = 10, Ssv = 11, SsidShift = 12, SidShift = 32;
    public const int NumShift = 12, ScaleShift = 20, VmidShift = 32, AsidShift = 48;
    public const int SyncCsShift = 12, SyncMshShift = 22, SyncMsiAttrShift = 24, SyncMsiDataShift = 32;
    public const uint SyncCsNone = 0, SyncCsIrq = 1, SyncCsSev = 2;
    // Q1
    public const int Leaf = 0, RangeMask = 0x1F, TtlShift = 8, TgShift = 10;
    public const ulong VaMask = 0xFFFF_FFFF_FFFF_F000;
    public const ulong IpaMask = 0x000F_FFFF_FFFF_F000;
    public const ulong SyncMsiAddrMask = 0x000F_FFFF_FFFF_FFFC;

    public static string Name(byte op) => op switch
    {
        PrefetchConfig => "PREFETCH_CONFIG", PrefetchAddr => "PREFETCH_ADDR", CfgiSte => "CFGI_STE", CfgiSteRange => "CFGI_STE_RANGE",
        CfgiCd => "CFGI_CD", CfgiCdAll => "CFGI_CD_ALL", TlbiNhAll => "TLBI_NH_ALL", TlbiNhAsid => "TLBI_NH_ASID",
        TlbiNhVa => "TLBI_NH_VA", TlbiNhVaa => "TLBI_NH_VAA", TlbiEl3All => "TLBI_EL3_ALL", TlbiEl3Va => "TLBI_EL3_VA",
        TlbiEl2All => "TLBI_EL2_ALL", TlbiEl2Asid => "TLBI_EL2_ASID", TlbiEl2Va => "TLBI_EL2_VA", TlbiEl2Vaa => "TLBI_EL2_VAA",
        TlbiS12Vmall => "TLBI_S12_VMALL", TlbiS2Ipa => "TLBI_S2_IPA", TlbiNsnhAll => "TLBI_NSNH_ALL", AtcInv => "ATC_INV",
        PriResp => "PRI_RESP", Resume => "RESUME", StallTerm => "STALL_TERM", Sync => "CMD_SYNC",
        _ => $"op 0x{op:x2}",
    };
}

/// <summary>Event record IDs and layout, 32 bytes (IHI 0070 §7.3).</summary>
public static class Evt
{
    public const int Size = 32;
    public const byte F_UUT = 0x01, C_BAD_STREAMID = 0x02, F_STE_FETCH = 0x03, C_BAD_STE = 0x04, F_BAD_ATS_TREQ = 0x05,
        F_STREAM_DISABLED = 0x06, F_TRANSL_FORBIDDEN = 0x07, C_BAD_SUBSTREAMID = 0x08, F_CD_FETCH = 0x09, C_BAD_CD = 0x0A,
        F_WALK_EABT = 0x0B, F_TRANSLATION = 0x10, F_ADDR_SIZE = 0x11, F_ACCESS = 0x12, F_PERMISSION = 0x13,
        F_TLB_CONFLICT = 0x20, F_CFG_CONFLICT = 0x21;
    // Q0
    public const int Ssv = 11, SsidShift = 12, SidShift = 32;
    // Q1
    public const int Stall = 31, PnU = 33, InD = 34, RnW = 35, S2 = 39, ClassShift = 40;
    public const uint ClassCd = 0, ClassTt = 1, ClassIn = 2;
    // Q3: IPA[51:12] for stage-2 faults, FetchAddr[51:3] for fetch aborts
    public const ulong IpaMask = 0x000F_FFFF_FFFF_F000;
    public const ulong FetchAddrMask = 0x000F_FFFF_FFFF_FFF8;

    public static string Name(byte id) => id switch
    {
        F_UUT => "F_UUT", C_BAD_STREAMID => "C_BAD_STREAMID", F_STE_FETCH => "F_STE_FETCH", C_BAD_STE => "C_BAD_STE",
        F_BAD_ATS_TREQ => "F_BAD_ATS_TREQ", F_STREAM_DISABLED => "F_STREAM_DISABLED", F_TRANSL_FORBIDDEN => "F_TRANSL_FORBIDDEN",
        C_BAD_SUBSTREAMID => "C_BAD_SUBSTREAMID", F_CD_FETCH => "F_CD_FETCH", C_BAD_CD => "C_BAD_CD", F_WALK_EABT => "F_WALK_EABT",
        F_TRANSLATION => "F_TRANSLATION", F_ADDR_SIZE => "F_ADDR_SIZE", F_ACCESS => "F_ACCESS", F_PERMISSION => "F_PERMISSION",
        F_TLB_CONFLICT => "F_TLB_CONFLICT", F_CFG_CONFLICT => "F_CFG_CONFLICT",
        _ => $"event 0x{id:x2}",
    };
}
