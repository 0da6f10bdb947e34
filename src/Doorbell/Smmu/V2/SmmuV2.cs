using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Tracing;
using Doorbell.Vmsa;

namespace Doorbell.Smmu.V2;

// SMMUv2 (Arm IHI 0062), Non-secure programming interface: global register spaces 0 and 1 and the translation
// context banks, programmed only through MMIO. Every context bank decodes into the same TranslationConfig the
// SMMUv3 model produces; the walker, IOTLB and Translator are shared code.
//
// Known limits (each also in docs/deviations.md):
// - Non-secure state only: NSCR0 and the Secure aliases are absent, sCR1 reads as "all resources Non-secure".
// - AArch64 (long-descriptor) tables only for VA64 = 1 banks; a VA64 = 0 stage-1 bank is decoded as AArch32
//   long-descriptor with TTBR0 only (32-bit input); short-descriptor tables are not supported (ID0 says so).
// - Everything completes synchronously: TLBSYNC/sTLBGSYNC/ATS1* finish at once (TLBSTATUS/ATSR read 0).
// - Stall model: a stalled write is held in its context bank and replayed by RESUME retry (dropped on
//   terminate); a stalled read is answered with an abort at once, but FSR.SS and RESUME behave as architected.
// - Memory attributes (SHCFG, MEMATTR, RACFG/WACFG, BSU) are stored and read back but have no effect.
// - No hypervisor contexts (CBAR.HYPC RAZ, TLBIALLH has no effect), no performance monitors, no EXIDS.

/// <summary>How a stream resolves (cached per port until something that can change it is written).</summary>
internal enum V2Outcome : byte { Bypass, Terminate, Translate, GlobalFault }

/// <summary>What one upstream port resolved to (its config, IOTLB tags and fault routing).</summary>
internal sealed class V2StreamContext : Doorbell.Iommu.TranslationContext
{
    public V2Outcome Outcome;
    public ulong Generation = ulong.MaxValue;
    /// <summary>The bank a translation belongs to (stage-1 bank for nested), and its linked stage-2 bank or −1.</summary>
    public int Bank = -1, S2Bank = -1;
    /// <summary>CBAR type 2: after stage 1 every access faults at stage 2.</summary>
    public bool Stage2Fault;
    public string? ConfigError;
    /// <summary>For GlobalFault: the sGFSR bit.</summary>
    public uint GlobalFaultBit;
    /// <summary>S2CR PRIVCFG / INSTCFG overrides (0 = as presented).</summary>
    public byte PrivCfg, InstCfg;
    /// <summary>A plain translating context: the hit path may answer from the IOTLB alone.</summary>
    public bool Fast;
}

/// <summary>
/// The upstream port of one StreamID: what a device issues DMA and MSI writes to. A kept plain translating context goes
/// through the <see cref="TranslatedStreamPort"/> fast path (the Translator alone, as SMMUv3's ports); this class is the
/// rest: stream mapping, bypass, terminate, global faults, S2CR overrides and context faults.
/// </summary>
public sealed class SmmuV2StreamPort : TranslatedStreamPort
{
    readonly SmmuV2 _smmu;
    internal readonly V2StreamContext Context;

    internal SmmuV2StreamPort(SmmuV2 smmu, uint streamId) : this(smmu, streamId, new V2StreamContext())
    {
    }

    SmmuV2StreamPort(SmmuV2 smmu, uint streamId, V2StreamContext context)
        : base(smmu.Translator, smmu.Downstream, context, streamId, null, "smmuv2")
    {
        _smmu = smmu;
        Context = context;
    }

    protected override BusStatus TransferResolved(ulong address, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, in BusAttributes attributes) =>
        _smmu.Transfer(this, address, rd, wr, write, attributes);

    protected override BusStatus TransferFaulted(ulong address, int done, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, AccessFlags access,
        in BusAttributes attributes, in TranslationFault fault) =>
        _smmu.RecordLoopFault(Context, fault, address, done, access, this, rd, wr, write, attributes);

    protected override bool TranslateResolved(ulong address, AccessFlags access, out ulong physicalAddress) =>
        _smmu.TranslateOneResolved(this, address, access, out physicalAddress);

    protected override void TranslateFaulted(ulong address, AccessFlags access, in TranslationFault fault) =>
        _smmu.RecordTranslateOneFault(this, Context, fault, address, access);
}

/// <summary>An SMMUv2 (MMU-400/401/500 by its ID registers) on a <see cref="PhysicalAddressSpace"/>.</summary>
[System.Runtime.CompilerServices.SkipLocalsInit]
public sealed partial class SmmuV2 : IMmioHandler, IIommuUpstream
{
    /// <summary>Rules strict mode names.</summary>
    public const string RuleTlbSync =
        "IHI 0062 (TLB maintenance): a TLB invalidation is only guaranteed complete after TLBSYNC or sTLBGSYNC reports it done";
    public const string RuleBankLive =
        "IHI 0062 (translation context banks): a context bank's configuration must not be changed while a stream that can use it is mapped and SCTLR.M = 1";
    public const string RuleSmrValid =
        "IHI 0062 (SMMU_SMRn): ID and MASK of a valid stream match register must not be changed; clear VALID first";
    public const string RuleStreamMapTags =
        "IHI 0062 (SMMU_S2CRn / TLB tagging): retargeting a stream to a context with the same VMID/ASID tag needs a TLB invalidation of that tag first";
    public const string RuleSmConflict =
        "IHI 0062 (stream matching): a StreamID matching more than one SMR is a stream match conflict";

    readonly IMemoryView _bus;
    readonly SmmuV2Options _o;
    readonly Trace? _trace;
    readonly StrictMonitor? _strict;
    readonly Iotlb _iotlb;
    readonly Translator _translator;
    readonly int _pageShift, _globalPages;

    uint _cr0 = SmmuV2Field.Cr0ClientPd, _acr, _gfsr, _gfsynr0, _gfsynr1, _gfsynr2;
    ulong _gfar;
    readonly uint[] _smr;
    readonly uint[] _s2cr;
    readonly Bank[] _banks;
    int _globalUnsynced;
    readonly IInterruptLine?[] _contextIrqs;
    bool _globalIrqLevel;
    readonly bool[] _contextIrqLevel;

    /// <summary>Bumped by every write that can change how a stream resolves; ports revalidate against it.</summary>
    internal ulong Generation
    {
        get => _translator.ConfigurationGeneration;
        set => _translator.ConfigurationGeneration = value;
    }

    internal sealed class Bank
    {
        public uint Sctlr, Actlr, Tcr2, Tcr, ContextIdr, Mair0, Mair1, Fsr, Fsynr0, Fsynr1, Cbar, Cba2r, Cbfrsynra;
        public ulong Ttbr0, Ttbr1, Par, Far, Ipafar;
        public int Unsynced;
        /// <summary>A held (stalled) write: address, data and port, replayed by RESUME retry.</summary>
        public byte[]? StalledData;
        public ulong StalledAddress;
        public SmmuV2StreamPort? StalledPort;
        public BusAttributes StalledAttributes;
        public bool Enabled => (Sctlr & SmmuV2Field.SctlrM) != 0;
        public uint Type => (Cbar >> SmmuV2Field.CbarTypeShift) & 3;
    }

    public SmmuV2(IMemoryView bus, SmmuV2Options? options = null, Trace? trace = null, StrictMonitor? strict = null, Iotlb? iotlb = null)
    {
        ArgumentNullException.ThrowIfNull(bus);
        _bus = bus;
        _o = options ?? SmmuV2Options.Mmu500;
        _o.Validate();
        _trace = trace;
        _strict = strict;
        _iotlb = iotlb ?? new Iotlb();
        _translator = new Translator(bus, _iotlb, strict);
        _pageShift = _o.PageShift;
        _globalPages = _o.GlobalPages;
        _smr = new uint[_o.StreamMatching ? _o.StreamMatchGroups : 0];
        _s2cr = new uint[_o.S2crCount];
        _banks = new Bank[_o.ContextBanks];
        for (var i = 0; i < _banks.Length; i++) _banks[i] = new Bank();
        _contextIrqs = new IInterruptLine?[_o.ContextInterrupts];
        _contextIrqLevel = new bool[_o.ContextInterrupts];
        // Reset: S2CRs fault-free bypass (TYPE = bypass), as the architecture's reset value suggests for a booting system.
        for (var i = 0; i < _s2cr.Length; i++) _s2cr[i] = SmmuV2Field.S2crTypeBypass << SmmuV2Field.S2crTypeShift;
    }

    public SmmuV2Options Options => _o;
    public Iotlb Iotlb => _iotlb;
    /// <summary>The shared translation front this SMMU's banks go through.</summary>
    internal Translator Translator => _translator;
    /// <summary>Where translated transactions go.</summary>
    internal IMemoryView Downstream => _bus;
    public ulong FrameSize => _o.FrameSize;
    internal bool StrictEnabled => _strict is { Enabled: true };

    /// <summary>The global fault interrupt (sGFSR with GFIE/GCFGFIE).</summary>
    public IInterruptLine? GlobalFaultIrq { get; set; }

    /// <summary>Context interrupt line <paramref name="index"/> (CBAR.IRPTNDX selects one per bank).</summary>
    public void SetContextIrq(int index, IInterruptLine line) => _contextIrqs[index] = line;

    /// <summary>Counters, for reports and tests.</summary>
    public long GlobalFaults { get; private set; }
    public long ContextFaults { get; private set; }
    public long Terminated { get; private set; }

    public IMemoryPort CreateStreamPort(uint streamId) => new SmmuV2StreamPort(this, streamId);

    /// <summary>Maps the whole register frame (global space + context banks) at <paramref name="base"/>.</summary>
    public void Map(PhysAddr @base, string name = "smmuv2") =>
        Map(_bus as IMmioMap ?? throw new InvalidOperationException("the SMMU's memory view places no MMIO: use Map(map, base)"), @base, name);

    /// <summary>Maps the register frame at <paramref name="base"/> of <paramref name="map"/> (the SMMU's memory view may differ).</summary>
    public void Map(IMmioMap map, PhysAddr @base, string name = "smmuv2")
    {
        ArgumentNullException.ThrowIfNull(map);
        map.MapMmio(@base, _o.FrameSize, this, MmioAccessRules.Registers32And64, name);
    }

    void ReportStrict(string what, string rule, string message) => _strict?.Report("smmuv2", rule, $"{what}: {message}");

    void TraceEmit(string message)
    {
        if (_trace is { Enabled: true } t) t.Emit("smmuv2", message);
    }

    // ------------------------------------------------------------------ MMIO dispatch

    // Register tables (offsets from SmmuV2Layout.cs, IHI 0062 register chapters): one block per kind of page. The
    // register arrays (SMRn, S2CRn, CBARn, CBFRSYNRAn, CBA2Rn) are declared for the whole space the architecture gives
    // them; instances past this SMMU's ID0.NUMSMRG / ID1.NUMCB read as zero and ignore writes.
    enum Gr0 : byte { Scr0 = 1, Scr1, Sacr, Id, Sgfar, Sgfsr, SgfsrRestore, Sgfsynr, Tlbivmid, Tlbiallnsnh, Tlbiallh, Stlbgsync, Stlbgstatus, Smr, S2cr }
    enum Gr1 : byte { Cbar = 1, Cbfrsynra, Cba2r }
    enum Cb : byte { Sctlr = 1, Actlr, Resume, Tcr2, Ttbr0, Ttbr1, Tcr, ContextIdr, Mair0, Mair1, Par, Fsr, FsrRestore, Far, Fsynr0, Fsynr1, Ipafar,
        TlbiVa, TlbiVaa, TlbiAsid, TlbiAll, TlbiVal, TlbiVaal, TlbiIpas2, TlbiIpas2L, TlbSync, TlbStatus, Ats1Pr, Ats1Pw, Ats1Ur, Ats1Uw, Atsr }

    const string ReadOnlyRule = "IHI 0062 (SMMUv2 register is read-only: the write is ignored)";

    public static readonly RegisterDescriptor[] GlobalSpace0Registers =
    [
        new(SmmuV2Gr0.sCR0, 4, "sCR0", RegisterAccess.ReadWrite, Id: (int)Gr0.Scr0),
        new(SmmuV2Gr0.sCR1, 4, "sCR1", RegisterAccess.ReadOnly, Id: (int)Gr0.Scr1),
        new(SmmuV2Gr0.sACR, 4, "sACR", RegisterAccess.ReadWrite, Id: (int)Gr0.Sacr),
        new(SmmuV2Gr0.ID0, 4, "ID", RegisterAccess.ReadOnly, Count: 8, Id: (int)Gr0.Id), // ID0..ID7
        new(SmmuV2Gr0.sGFAR, 8, "sGFAR", RegisterAccess.ReadOnly, Id: (int)Gr0.Sgfar, MinSize: 4),
        new(SmmuV2Gr0.sGFSR, 4, "sGFSR", RegisterAccess.WriteOneToClear, Id: (int)Gr0.Sgfsr),
        new(SmmuV2Gr0.sGFSRRESTORE, 4, "sGFSRRESTORE", RegisterAccess.WriteOnly, Id: (int)Gr0.SgfsrRestore),
        new(SmmuV2Gr0.sGFSYNR0, 4, "sGFSYNR", RegisterAccess.ReadOnly, Count: 3, Id: (int)Gr0.Sgfsynr), // sGFSYNR0..2
        new(SmmuV2Gr0.TLBIVMID, 4, "TLBIVMID", RegisterAccess.WriteOnly, Id: (int)Gr0.Tlbivmid),
        new(SmmuV2Gr0.TLBIALLNSNH, 4, "TLBIALLNSNH", RegisterAccess.WriteOnly, Id: (int)Gr0.Tlbiallnsnh),
        new(SmmuV2Gr0.TLBIALLH, 4, "TLBIALLH", RegisterAccess.WriteOnly, Id: (int)Gr0.Tlbiallh),
        new(SmmuV2Gr0.sTLBGSYNC, 4, "sTLBGSYNC", RegisterAccess.WriteOnly, Id: (int)Gr0.Stlbgsync),
        new(SmmuV2Gr0.sTLBGSTATUS, 4, "sTLBGSTATUS", RegisterAccess.ReadOnly, Id: (int)Gr0.Stlbgstatus),
        new(SmmuV2Gr0.SMR0, 4, "SMR", RegisterAccess.ReadWrite, Count: 256, Id: (int)Gr0.Smr),
        new(SmmuV2Gr0.S2CR0, 4, "S2CR", RegisterAccess.ReadWrite, Count: 256, Id: (int)Gr0.S2cr),
    ];

    public static readonly RegisterDescriptor[] GlobalSpace1Registers =
    [
        new(SmmuV2Gr1.CBAR(0), 4, "CBAR", RegisterAccess.ReadWrite, Count: 256, Id: (int)Gr1.Cbar),
        new(SmmuV2Gr1.CBFRSYNRA(0), 4, "CBFRSYNRA", RegisterAccess.ReadWrite, Count: 256, Id: (int)Gr1.Cbfrsynra),
        new(SmmuV2Gr1.CBA2R(0), 4, "CBA2R", RegisterAccess.ReadWrite, Count: 256, Id: (int)Gr1.Cba2r),
    ];

    public static readonly RegisterDescriptor[] ContextBankRegisters =
    [
        new(SmmuV2Cb.SCTLR, 4, "SCTLR", RegisterAccess.ReadWrite, Id: (int)Cb.Sctlr),
        new(SmmuV2Cb.ACTLR, 4, "ACTLR", RegisterAccess.ReadWrite, Id: (int)Cb.Actlr),
        new(SmmuV2Cb.RESUME, 4, "RESUME", RegisterAccess.WriteOnly, Id: (int)Cb.Resume),
        new(SmmuV2Cb.TCR2, 4, "TCR2", RegisterAccess.ReadWrite, Id: (int)Cb.Tcr2),
        new(SmmuV2Cb.TTBR0, 8, "TTBR0", RegisterAccess.ReadWrite, Id: (int)Cb.Ttbr0, MinSize: 4),
        new(SmmuV2Cb.TTBR1, 8, "TTBR1", RegisterAccess.ReadWrite, Id: (int)Cb.Ttbr1, MinSize: 4),
        new(SmmuV2Cb.TCR, 4, "TCR", RegisterAccess.ReadWrite, Id: (int)Cb.Tcr),
        new(SmmuV2Cb.CONTEXTIDR, 4, "CONTEXTIDR", RegisterAccess.ReadWrite, Id: (int)Cb.ContextIdr),
        new(SmmuV2Cb.MAIR0, 4, "MAIR0", RegisterAccess.ReadWrite, Id: (int)Cb.Mair0),
        new(SmmuV2Cb.MAIR1, 4, "MAIR1", RegisterAccess.ReadWrite, Id: (int)Cb.Mair1),
        new(SmmuV2Cb.PAR, 8, "PAR", RegisterAccess.ReadWrite, Id: (int)Cb.Par, MinSize: 4),
        new(SmmuV2Cb.FSR, 4, "FSR", RegisterAccess.WriteOneToClear, Id: (int)Cb.Fsr),
        new(SmmuV2Cb.FSRRESTORE, 4, "FSRRESTORE", RegisterAccess.WriteOnly, Id: (int)Cb.FsrRestore),
        new(SmmuV2Cb.FAR, 8, "FAR", RegisterAccess.ReadWrite, Id: (int)Cb.Far, MinSize: 4),
        new(SmmuV2Cb.FSYNR0, 4, "FSYNR0", RegisterAccess.ReadWrite, Id: (int)Cb.Fsynr0),
        new(SmmuV2Cb.FSYNR1, 4, "FSYNR1", RegisterAccess.ReadWrite, Id: (int)Cb.Fsynr1),
        new(SmmuV2Cb.IPAFAR, 8, "IPAFAR", RegisterAccess.ReadWrite, Id: (int)Cb.Ipafar, MinSize: 4),
        // TLB maintenance and address translation operations: 64-bit write-only, triggered by a 64-bit write or a write
        // of the low word (a write of the high word alone does nothing).
        new(SmmuV2Cb.TLBIVA, 8, "TLBIVA", RegisterAccess.WriteOnly, Id: (int)Cb.TlbiVa, MinSize: 4),
        new(SmmuV2Cb.TLBIVAA, 8, "TLBIVAA", RegisterAccess.WriteOnly, Id: (int)Cb.TlbiVaa, MinSize: 4),
        new(SmmuV2Cb.TLBIASID, 4, "TLBIASID", RegisterAccess.WriteOnly, Id: (int)Cb.TlbiAsid),
        new(SmmuV2Cb.TLBIALL, 4, "TLBIALL", RegisterAccess.WriteOnly, Id: (int)Cb.TlbiAll),
        new(SmmuV2Cb.TLBIVAL, 8, "TLBIVAL", RegisterAccess.WriteOnly, Id: (int)Cb.TlbiVal, MinSize: 4),
        new(SmmuV2Cb.TLBIVAAL, 8, "TLBIVAAL", RegisterAccess.WriteOnly, Id: (int)Cb.TlbiVaal, MinSize: 4),
        new(SmmuV2Cb.TLBIIPAS2, 8, "TLBIIPAS2", RegisterAccess.WriteOnly, Id: (int)Cb.TlbiIpas2, MinSize: 4),
        new(SmmuV2Cb.TLBIIPAS2L, 8, "TLBIIPAS2L", RegisterAccess.WriteOnly, Id: (int)Cb.TlbiIpas2L, MinSize: 4),
        new(SmmuV2Cb.TLBSYNC, 4, "TLBSYNC", RegisterAccess.WriteOnly, Id: (int)Cb.TlbSync),
        new(SmmuV2Cb.TLBSTATUS, 4, "TLBSTATUS", RegisterAccess.ReadOnly, Id: (int)Cb.TlbStatus),
        new(SmmuV2Cb.ATS1PR, 8, "ATS1PR", RegisterAccess.WriteOnly, Id: (int)Cb.Ats1Pr, MinSize: 4),
        new(SmmuV2Cb.ATS1PW, 8, "ATS1PW", RegisterAccess.WriteOnly, Id: (int)Cb.Ats1Pw, MinSize: 4),
        new(SmmuV2Cb.ATS1UR, 8, "ATS1UR", RegisterAccess.WriteOnly, Id: (int)Cb.Ats1Ur, MinSize: 4),
        new(SmmuV2Cb.ATS1UW, 8, "ATS1UW", RegisterAccess.WriteOnly, Id: (int)Cb.Ats1Uw, MinSize: 4),
        new(SmmuV2Cb.ATSR, 4, "ATSR", RegisterAccess.ReadOnly, Id: (int)Cb.Atsr),
    ];

    // Blocks sized for the smallest page (4 KiB): every register lies below 0x1000; a 64 KiB page's rest is RAZ/WI.
    static readonly RegisterBlock Gr0Block = new("smmuv2", GlobalSpace0Registers, 0x1000, ReadOnlyRule);
    static readonly RegisterBlock Gr1Block = new("smmuv2", GlobalSpace1Registers, 0x1000, ReadOnlyRule);
    static readonly RegisterBlock CbBlock = new("smmuv2", ContextBankRegisters, 0x1000, ReadOnlyRule);

    enum FramePage : byte { None, GlobalSpace0, GlobalSpace1, ContextBank }

    /// <summary>Which page of the frame <paramref name="offset"/> falls in (the page size and bank count are this
    /// instance's), the offset within that page, and for a context-bank page the bank's number.</summary>
    FramePage Locate(ulong offset, out ulong off, out int bank)
    {
        off = offset & ((1UL << _pageShift) - 1);
        bank = 0;
        if (offset >= _o.FrameSize) return FramePage.None;
        var page = (int)(offset >> _pageShift);
        if (page == 0) return FramePage.GlobalSpace0;
        if (page == 1) return FramePage.GlobalSpace1;
        bank = page - _globalPages;
        return bank >= 0 && bank < _banks.Length ? FramePage.ContextBank : FramePage.None;
    }

    /// <summary>The name of the register at <paramref name="offset"/> of the frame (GR0/GR1 name, or CB&lt;n&gt;_NAME), for traces and reports.</summary>
    public string RegisterName(ulong offset) => Locate(offset, out var off, out var bank) switch
    {
        FramePage.GlobalSpace0 => Gr0Block.NameOf(off),
        FramePage.GlobalSpace1 => Gr1Block.NameOf(off),
        FramePage.ContextBank => $"CB{bank}_{CbBlock.NameOf(off)}",
        _ => $"0x{offset:x}",
    };

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        value = Locate(offset, out var off, out var bank) switch
        {
            FramePage.GlobalSpace0 => RegisterDispatch<Gr0File>.Read(new Gr0File(this), off, size, in attributes),
            FramePage.GlobalSpace1 => RegisterDispatch<Gr1File>.Read(new Gr1File(this), off, size, in attributes),
            FramePage.ContextBank => RegisterDispatch<CbFile>.Read(new CbFile(this, bank), off, size, in attributes),
            _ => 0,
        };
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        switch (Locate(offset, out var off, out var bank))
        {
            case FramePage.GlobalSpace0: RegisterDispatch<Gr0File>.Write(new Gr0File(this), off, size, value, in attributes, _strict); break;
            case FramePage.GlobalSpace1: RegisterDispatch<Gr1File>.Write(new Gr1File(this), off, size, value, in attributes, _strict); break;
            case FramePage.ContextBank: RegisterDispatch<CbFile>.Write(new CbFile(this, bank), off, size, value, in attributes, _strict); break;
        }
        return BusStatus.Ok;
    }

    readonly struct Gr0File(SmmuV2 smmu) : IRegisterFile
    {
        public static RegisterBlock Block => Gr0Block;
        public ulong Read(RegisterRef r, in BusAttributes attributes) => smmu.ReadGr0((Gr0)r.Id, (int)r.Index);
        public void Write(RegisterRef r, ulong value, in BusAttributes attributes) => smmu.WriteGr0((Gr0)r.Id, (int)r.Index, (uint)value);
    }

    readonly struct Gr1File(SmmuV2 smmu) : IRegisterFile
    {
        public static RegisterBlock Block => Gr1Block;
        public ulong Read(RegisterRef r, in BusAttributes attributes) => smmu.ReadGr1((Gr1)r.Id, (int)r.Index);
        public void Write(RegisterRef r, ulong value, in BusAttributes attributes) => smmu.WriteGr1((Gr1)r.Id, (int)r.Index, (uint)value);
    }

    readonly struct CbFile(SmmuV2 smmu, int bank) : IRegisterFile
    {
        public static RegisterBlock Block => CbBlock;
        public ulong Read(RegisterRef r, in BusAttributes attributes) => smmu.ReadCb(bank, (Cb)r.Id);
        public void Write(RegisterRef r, ulong value, in BusAttributes attributes)
        {
            // An operation's high word written alone does nothing (it triggers on the low word or a 64-bit write).
            if (r.Shift != 0 && r.Access == RegisterAccess.WriteOnly) return;
            smmu.WriteCb(bank, (Cb)r.Id, value);
        }
    }

    // ------------------------------------------------------------------ global space 0

    ulong ReadGr0(Gr0 id, int n) => id switch
    {
        Gr0.Smr => n < _smr.Length ? _smr[n] : 0,
        Gr0.S2cr => n < Math.Min(_s2cr.Length, 256) ? _s2cr[n] : 0,
        Gr0.Scr0 => _cr0,
        // sCR1 (Secure): NSNUMCBO / NSNUMSMRGO = everything belongs to the Non-secure side.
        Gr0.Scr1 => (uint)_banks.Length | (uint)Math.Min(_smr.Length, 255) << 8,
        Gr0.Sacr => _acr,
        Gr0.Id => n switch { 0 => _o.Id0, 1 => _o.Id1, 2 => _o.Id2, 7 => _o.Id7, _ => 0 },
        Gr0.Sgfar => _gfar,
        Gr0.Sgfsr => _gfsr,
        Gr0.Sgfsynr => n switch { 0 => _gfsynr0, 1 => _gfsynr1, _ => _gfsynr2 },
        _ => 0, // sTLBGSTATUS.GSACTIVE: syncs complete at once
    };

    void WriteGr0(Gr0 id, int n, uint v)
    {
        switch (id)
        {
            case Gr0.Smr:
                if (n < _smr.Length) WriteSmr(n, v);
                break;
            case Gr0.S2cr:
                if (n < Math.Min(_s2cr.Length, 256)) WriteS2cr(n, v);
                break;
            case Gr0.Scr0:
                var old = _cr0;
                _cr0 = v & SmmuV2Field.Cr0Mask & (_o.Vmid16 ? ~0u : ~SmmuV2Field.Cr0Vmid16En);
                if (old != _cr0)
                {
                    Generation++;
                    TraceEmit($"sCR0 0x{old:x} -> 0x{_cr0:x}");
                }
                UpdateGlobalIrq();
                break;
            case Gr0.Sacr:
                _acr = v;
                break;
            case Gr0.Sgfsr:
                _gfsr &= ~v; // W1C
                UpdateGlobalIrq();
                break;
            case Gr0.SgfsrRestore:
                _gfsr = v & (SmmuV2Field.GfsrFaults | SmmuV2Field.GfsrMulti);
                UpdateGlobalIrq();
                break;
            case Gr0.Tlbivmid:
                _iotlb.InvalidateByVmid((ushort)(v & (_o.Vmid16 ? 0xFFFFu : 0xFFu)));
                _globalUnsynced++;
                TraceEmit($"TLBIVMID {v & 0xFFFF}");
                break;
            case Gr0.Tlbiallnsnh:
                _iotlb.InvalidateAll();
                _globalUnsynced++;
                TraceEmit("TLBIALLNSNH");
                break;
            case Gr0.Tlbiallh:
                break; // no hypervisor contexts
            case Gr0.Stlbgsync:
                // A global sync completes every invalidation issued so far, global and per bank.
                _globalUnsynced = 0;
                foreach (var b in _banks) b.Unsynced = 0;
                break;
        }
    }

    bool SmrMatches(uint smr, uint sid)
    {
        if ((smr & SmmuV2Field.SmrValid) == 0) return false;
        var idMask = (1u << _o.StreamIdBits) - 1;
        var id = smr & 0x7FFF;
        var mask = (smr >> SmmuV2Field.SmrMaskShift) & 0x7FFF;
        return ((sid ^ id) & ~mask & idMask) == 0;
    }

    void WriteSmr(int n, uint v)
    {
        v &= SmmuV2Field.SmrValid | 0x7FFFu << SmmuV2Field.SmrMaskShift | 0x7FFFu;
        var old = _smr[n];
        if (old == v) return;
        if ((old & SmmuV2Field.SmrValid) != 0 && (v & SmmuV2Field.SmrValid) != 0)
            ReportStrict($"SMR{n}", RuleSmrValid, $"0x{old:x8} -> 0x{v:x8} while VALID = 1");
        var before = StrictEnabled ? SnapshotTargets() : null;
        _smr[n] = v;
        Generation++;
        if (before is not null) CheckRetarget(before, $"SMR{n}");
    }

    void WriteS2cr(int n, uint v)
    {
        v &= SmmuV2Field.S2crMask;
        if (_s2cr[n] == v) return;
        var before = StrictEnabled ? SnapshotTargets() : null;
        _s2cr[n] = v;
        Generation++;
        if (before is not null) CheckRetarget(before, $"S2CR{n}");
    }

    // Strict: a stream that moves to a different context whose IOTLB tags equal the old context's tags keeps using
    // the old context's cached translations until that tag is invalidated.
    readonly Dictionary<uint, (int Bank, ushort Vmid, ushort Asid)> _taintedStreams = [];
    readonly HashSet<uint> _observedStreams = [];

    Dictionary<uint, (int, ushort, ushort)> SnapshotTargets()
    {
        var d = new Dictionary<uint, (int, ushort, ushort)>();
        foreach (var sid in _observedStreams)
        {
            var ctx = new V2StreamContext();
            ResolveInto(sid, ctx, record: false);
            if (ctx.Outcome == V2Outcome.Translate) d[sid] = (ctx.Bank, ctx.Vmid, ctx.Asid);
        }
        return d;
    }

    void CheckRetarget(Dictionary<uint, (int Bank, ushort Vmid, ushort Asid)> before, string what)
    {
        foreach (var (sid, old) in before)
        {
            var ctx = new V2StreamContext();
            ResolveInto(sid, ctx, record: false);
            if (ctx.Outcome == V2Outcome.Translate && ctx.Bank != old.Bank && ctx.Vmid == old.Vmid && ctx.Asid == old.Asid)
                _taintedStreams[sid] = (old.Bank, old.Vmid, old.Asid);
        }
        _ = what;
    }

    void ClearTaint(Func<ushort, ushort, bool> invalidates)
    {
        if (_taintedStreams.Count == 0) return;
        foreach (var sid in _taintedStreams.Where(kv => invalidates(kv.Value.Vmid, kv.Value.Asid)).Select(kv => kv.Key).ToList())
            _taintedStreams.Remove(sid);
    }

    // ------------------------------------------------------------------ global space 1

    ulong ReadGr1(Gr1 id, int n)
    {
        if (n >= _banks.Length) return 0;
        return id switch
        {
            Gr1.Cbar => _banks[n].Cbar,
            Gr1.Cbfrsynra => _banks[n].Cbfrsynra,
            _ => _banks[n].Cba2r,
        };
    }

    void WriteGr1(Gr1 id, int n, uint v)
    {
        if (n >= _banks.Length) return;
        var b = _banks[n];
        switch (id)
        {
            case Gr1.Cbar:
                // HYPC (bit 10) is RAZ: no hypervisor contexts. For the nested type bits [15:8] are the stage-2 CBNDX.
                if (((v >> SmmuV2Field.CbarTypeShift) & 3) != SmmuV2Field.CbarTypeNested) v &= ~(1u << 10);
                if (v != b.Cbar) CheckLive(n, "CBAR");
                b.Cbar = v;
                Generation++;
                break;
            case Gr1.Cbfrsynra:
                b.Cbfrsynra = v; // software may write it; hardware updates it on a fault
                break;
            case Gr1.Cba2r:
                v &= SmmuV2Field.Cba2rVa64 | (_o.Vmid16 ? 0xFFFFu << SmmuV2Field.Cba2rVmid16Shift : 0);
                if (v != b.Cba2r) CheckLive(n, "CBA2R");
                b.Cba2r = v;
                Generation++;
                break;
        }
    }

    // ------------------------------------------------------------------ context banks

    ulong ReadCb(int n, Cb id)
    {
        var b = _banks[n];
        return id switch
        {
            Cb.Sctlr => b.Sctlr,
            Cb.Actlr => b.Actlr,
            Cb.Tcr2 => b.Tcr2,
            Cb.Ttbr0 => b.Ttbr0,
            Cb.Ttbr1 => b.Ttbr1,
            Cb.Tcr => b.Tcr,
            Cb.ContextIdr => b.ContextIdr,
            Cb.Mair0 => b.Mair0,
            Cb.Mair1 => b.Mair1,
            Cb.Par => b.Par,
            Cb.Fsr => b.Fsr,
            Cb.Far => b.Far,
            Cb.Fsynr0 => b.Fsynr0,
            Cb.Fsynr1 => b.Fsynr1,
            Cb.Ipafar => b.Ipafar,
            _ => 0, // TLBSTATUS.SACTIVE and ATSR.ACTIVE: operations complete at once
        };
    }

    void WriteCb(int n, Cb id, ulong value)
    {
        var b = _banks[n];
        var v = (uint)value;
        switch (id)
        {
            case Cb.Sctlr:
                if (v != b.Sctlr && (b.Enabled || (v & SmmuV2Field.SctlrM) == 0)) CheckLive(n, "SCTLR");
                b.Sctlr = v;
                Generation++;
                UpdateContextIrqs();
                break;
            case Cb.Actlr:
                b.Actlr = v;
                break;
            case Cb.Resume:
                Resume(n, (v & SmmuV2Field.ResumeTerminate) != 0);
                break;
            case Cb.Tcr2:
                if (v != b.Tcr2) CheckLive(n, "TCR2");
                b.Tcr2 = v;
                Generation++;
                break;
            case Cb.Ttbr0:
                if (value != b.Ttbr0) CheckLive(n, "TTBR0");
                b.Ttbr0 = value;
                Generation++;
                break;
            case Cb.Ttbr1:
                if (value != b.Ttbr1) CheckLive(n, "TTBR1");
                b.Ttbr1 = value;
                Generation++;
                break;
            case Cb.Tcr:
                if (v != b.Tcr) CheckLive(n, "TCR");
                b.Tcr = v;
                Generation++;
                break;
            case Cb.ContextIdr:
                b.ContextIdr = v;
                break;
            case Cb.Mair0:
                if (v != b.Mair0) CheckLive(n, "MAIR0");
                b.Mair0 = v;
                Generation++;
                break;
            case Cb.Mair1:
                if (v != b.Mair1) CheckLive(n, "MAIR1");
                b.Mair1 = v;
                Generation++;
                break;
            case Cb.Par:
                b.Par = value;
                break;
            case Cb.Far:
                b.Far = value;
                break;
            case Cb.Ipafar:
                b.Ipafar = value;
                break;
            case Cb.Fsr:
                b.Fsr = (b.Fsr & ~v) | (b.Fsr & SmmuV2Field.FsrSs); // W1C; SS is cleared by RESUME, not here
                UpdateContextIrqs();
                break;
            case Cb.FsrRestore:
                b.Fsr = v & (SmmuV2Field.FsrFaults | SmmuV2Field.FsrSs | SmmuV2Field.FsrMulti);
                UpdateContextIrqs();
                break;
            case Cb.Fsynr0:
                b.Fsynr0 = v;
                break;
            case Cb.Fsynr1:
                b.Fsynr1 = v;
                break;
            case Cb.TlbiVa or Cb.TlbiVal or Cb.TlbiVaa or Cb.TlbiVaal:
                TlbiVa(n, leaf: id is Cb.TlbiVal or Cb.TlbiVaal, allAsids: id is Cb.TlbiVaa or Cb.TlbiVaal, value);
                break;
            case Cb.TlbiIpas2 or Cb.TlbiIpas2L:
            {
                var vmid = BankVmid(n);
                var ipa = (value & 0xF_FFFF_FFFFUL) << 12;
                _iotlb.InvalidateByIpa(vmid, ipa, leafOnly: id == Cb.TlbiIpas2L);
                b.Unsynced++;
                ClearTaint((vm, _) => vm == vmid);
                TraceEmit($"CB{n} TLBIIPAS2{(id == Cb.TlbiIpas2L ? "L" : "")} VMID {vmid} IPA 0x{ipa:x}");
                break;
            }
            case Cb.Ats1Pr or Cb.Ats1Pw or Cb.Ats1Ur or Cb.Ats1Uw:
                AddressTranslate(n, write: id is Cb.Ats1Pw or Cb.Ats1Uw, privileged: id is Cb.Ats1Pr or Cb.Ats1Pw, value);
                break;
            case Cb.TlbiAsid:
            {
                var vmid = BankVmid(n);
                var asid = (ushort)(v & 0xFFFF);
                _iotlb.InvalidateByAsid(vmid, asid);
                b.Unsynced++;
                ClearTaint((vm, a) => vm == vmid && a == asid);
                TraceEmit($"CB{n} TLBIASID VMID {vmid} ASID {asid}");
                break;
            }
            case Cb.TlbiAll:
            {
                var vmid = BankVmid(n);
                _iotlb.InvalidateByVmid(vmid);
                b.Unsynced++;
                ClearTaint((vm, _) => vm == vmid);
                TraceEmit($"CB{n} TLBIALL VMID {vmid}");
                break;
            }
            case Cb.TlbSync:
                b.Unsynced = 0;
                break;
        }
    }

    void TlbiVa(int n, bool leaf, bool allAsids, ulong v)
    {
        var vmid = BankVmid(n);
        // AArch64 format: VA[55:12] in bits [43:0] (sign-extended from bit 55), ASID in [63:48].
        var va = (v & 0xFFF_FFFF_FFFFUL) << 12;
        if ((va & (1UL << 55)) != 0) va |= 0xFF00_0000_0000_0000UL;
        var asid = (ushort)(v >> 48);
        if (allAsids) _iotlb.InvalidateByVaAllAsids(vmid, va, leaf);
        else _iotlb.InvalidateByVa(vmid, asid, va, leaf);
        _banks[n].Unsynced++;
        ClearTaint((vm, a) => vm == vmid && (allAsids || a == asid));
        TraceEmit($"CB{n} TLBIVA{(allAsids ? "A" : "")}{(leaf ? "L" : "")} VMID {vmid} ASID {asid} VA 0x{va:x}");
    }

    /// <summary>The VMID a bank's own TLB operations are scoped by (CBA2R.VMID16 when sCR0.VMID16EN, else CBAR.VMID;
    /// a nested stage-1 bank uses its linked stage-2 bank's).</summary>
    internal ushort BankVmid(int n)
    {
        var b = _banks[n];
        if (b.Type == SmmuV2Field.CbarTypeNested)
        {
            var s2 = (int)((b.Cbar >> SmmuV2Field.CbarS2CbNdxShift) & 0xFF);
            if (s2 < _banks.Length) b = _banks[s2];
        }
        if ((_cr0 & SmmuV2Field.Cr0Vmid16En) != 0) return (ushort)(b.Cba2r >> SmmuV2Field.Cba2rVmid16Shift);
        return (ushort)(b.Cbar & 0xFF);
    }

    /// <summary>Strict: is bank n reachable from a mapped stream while enabled (including as a nested stage 2)?</summary>
    void CheckLive(int n, string register)
    {
        if (!StrictEnabled || (_cr0 & SmmuV2Field.Cr0ClientPd) != 0 || !_banks[n].Enabled) return;
        for (var i = 0; i < _s2cr.Length; i++)
        {
            var s2cr = _s2cr[i];
            if (((s2cr >> SmmuV2Field.S2crTypeShift) & 3) != SmmuV2Field.S2crTypeTranslate) continue;
            if (_o.StreamMatching && (_smr[i] & SmmuV2Field.SmrValid) == 0) continue;
            var cb = (int)(s2cr & 0xFF);
            var live = cb == n;
            if (!live && cb < _banks.Length && _banks[cb].Type == SmmuV2Field.CbarTypeNested)
                live = (int)((_banks[cb].Cbar >> SmmuV2Field.CbarS2CbNdxShift) & 0xFF) == n;
            if (live)
            {
                ReportStrict($"CB{n} {register}", RuleBankLive, $"written while S2CR{i} maps a stream to it and SCTLR.M = 1");
                return;
            }
        }
    }

    // ------------------------------------------------------------------ interrupts

    void UpdateGlobalIrq()
    {
        var cfg = SmmuV2Field.GfsrIcf | SmmuV2Field.GfsrSmcf | SmmuV2Field.GfsrUcbf | SmmuV2Field.GfsrUcif;
        var level = ((_cr0 & SmmuV2Field.Cr0Gfie) != 0 && (_gfsr & SmmuV2Field.GfsrFaults & ~cfg) != 0)
            || ((_cr0 & SmmuV2Field.Cr0Gcfgfie) != 0 && (_gfsr & cfg) != 0);
        if (level == _globalIrqLevel) return;
        _globalIrqLevel = level;
        GlobalFaultIrq?.SetLevel(level);
    }

    void UpdateContextIrqs()
    {
        Span<bool> lv = stackalloc bool[_contextIrqs.Length];
        lv.Clear(); // SkipLocalsInit: stackalloc is not zeroed
        foreach (var b in _banks)
        {
            if ((b.Sctlr & SmmuV2Field.SctlrCfie) == 0 || (b.Fsr & (SmmuV2Field.FsrFaults | SmmuV2Field.FsrMulti)) == 0) continue;
            var idx = (int)(b.Cbar >> SmmuV2Field.CbarIrptNdxShift);
            if (idx < lv.Length) lv[idx] = true;
        }
        for (var i = 0; i < lv.Length; i++)
        {
            if (lv[i] == _contextIrqLevel[i]) continue;
            _contextIrqLevel[i] = lv[i];
            _contextIrqs[i]?.SetLevel(lv[i]);
        }
    }

    /// <summary>The current level of context interrupt <paramref name="index"/> (for tests and reports).</summary>
    public bool ContextIrqLevel(int index) => _contextIrqLevel[index];
    public bool GlobalIrqLevel => _globalIrqLevel;
}
