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

/// <summary>The upstream port of one StreamID: what a device issues DMA and MSI writes to.</summary>
public sealed class SmmuV2StreamPort : IMemoryPort
{
    readonly SmmuV2 _smmu;
    /// <summary>The SMMU's translator, held here so the hit path reaches the IOTLB in one hop fewer (as SMMUv3's port).</summary>
    readonly Doorbell.Iommu.Translator _translator;
    internal readonly V2StreamContext Context = new();

    internal SmmuV2StreamPort(SmmuV2 smmu, uint streamId)
    {
        _smmu = smmu;
        _translator = smmu.Translator;
        StreamId = streamId;
    }

    public uint StreamId { get; }

    public BusStatus Read(ulong address, Span<byte> destination, in BusAttributes attributes) =>
        _smmu.Transfer(this, address, destination, default, write: false, attributes);

    public BusStatus Write(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes) =>
        _smmu.Transfer(this, address, default, source, write: true, attributes);

    /// <summary>Translates one address as a transaction of this port would be (same stream mapping, IOTLB, permission
    /// check and fault recording) without moving data. True with the output address.</summary>
    public bool TryTranslate(ulong address, AccessFlags access, out ulong physicalAddress)
    {
        var ctx = Context;
        // A kept plain translating context (no S2CR overrides, no configuration error), not strict: straight to the
        // Translator's hit path, as the SMMUv3 port does; everything else (resolution, bypass, faults) is out of line.
        if (_smmu.FastPathValid(ctx))
        {
            if (_translator.TranslateAddress(ctx, address, access, out physicalAddress, out var fault)) return true;
            _smmu.RecordTranslateOneFault(this, ctx, fault, address, access);
            return false;
        }
        return _smmu.TranslateOneResolved(this, address, access, out physicalAddress);
    }
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
    internal ulong Generation;

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

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        value = 0;
        if (offset >= _o.FrameSize) return BusStatus.Ok;
        var page = (int)(offset >> _pageShift);
        var off = (uint)(offset & ((1UL << _pageShift) - 1));
        if (page == 0) value = off == SmmuV2Gr0.sGFAR && size == 8 ? _gfar : size == 4 ? ReadGr0(off) : 0;
        else if (page == 1) value = size == 4 ? ReadGr1(off) : 0;
        else if (page >= _globalPages && page - _globalPages < _banks.Length)
        {
            var wideBase = off & ~7u;
            if (IsWideCb(wideBase))
            {
                var v = ReadCbWide(page - _globalPages, wideBase);
                value = size == 8 ? v : (off & 4) != 0 ? v >> 32 : v & 0xFFFF_FFFF;
                return BusStatus.Ok;
            }
            value = size == 4 ? ReadCb(page - _globalPages, off) : 0;
            return BusStatus.Ok;
        }
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        if (offset >= _o.FrameSize) return BusStatus.Ok;
        var page = (int)(offset >> _pageShift);
        var off = (uint)(offset & ((1UL << _pageShift) - 1));
        if (page == 0)
        {
            if (off == SmmuV2Gr0.sGFAR || off == SmmuV2Gr0.sGFAR + 4) return BusStatus.Ok; // sGFAR is RO in this model
            if (size == 4) WriteGr0(off, (uint)value);
        }
        else if (page == 1)
        {
            if (size == 4) WriteGr1(off, (uint)value);
        }
        else if (page >= _globalPages && page - _globalPages < _banks.Length)
        {
            var n = page - _globalPages;
            var wideBase = off & ~7u;
            if (IsWideCb(wideBase))
            {
                ulong v;
                if (size == 8) v = value;
                else if (IsCbOperation(wideBase))
                {
                    if ((off & 4) != 0) return BusStatus.Ok; // operations trigger on the low word
                    v = value & 0xFFFF_FFFF;
                }
                else
                {
                    var old = ReadCbWide(n, wideBase);
                    v = (off & 4) != 0 ? (old & 0xFFFF_FFFF) | value << 32 : (old & ~0xFFFF_FFFFUL) | (value & 0xFFFF_FFFF);
                }
                WriteCbWide(n, wideBase, v);
            }
            else if (size == 4) WriteCb(n, off, (uint)value);
        }
        return BusStatus.Ok;
    }

    // ------------------------------------------------------------------ global space 0

    uint ReadGr0(uint off)
    {
        if (off >= SmmuV2Gr0.SMR0 && off < SmmuV2Gr0.SMR0 + 4u * (uint)_smr.Length) return _smr[(off - SmmuV2Gr0.SMR0) / 4];
        if (off >= SmmuV2Gr0.S2CR0 && off < SmmuV2Gr0.S2CR0 + 4u * (uint)Math.Min(_s2cr.Length, 256)) return _s2cr[(off - SmmuV2Gr0.S2CR0) / 4];
        return off switch
        {
            SmmuV2Gr0.sCR0 => _cr0,
            // sCR1 (Secure): NSNUMCBO / NSNUMSMRGO = everything belongs to the Non-secure side.
            SmmuV2Gr0.sCR1 => (uint)_banks.Length | (uint)Math.Min(_smr.Length, 255) << 8,
            SmmuV2Gr0.sACR => _acr,
            SmmuV2Gr0.ID0 => _o.Id0,
            SmmuV2Gr0.ID1 => _o.Id1,
            SmmuV2Gr0.ID2 => _o.Id2,
            SmmuV2Gr0.ID7 => _o.Id7,
            SmmuV2Gr0.sGFAR => (uint)_gfar,
            SmmuV2Gr0.sGFAR + 4 => (uint)(_gfar >> 32),
            SmmuV2Gr0.sGFSR => _gfsr,
            SmmuV2Gr0.sGFSYNR0 => _gfsynr0,
            SmmuV2Gr0.sGFSYNR1 => _gfsynr1,
            SmmuV2Gr0.sGFSYNR2 => _gfsynr2,
            SmmuV2Gr0.sTLBGSTATUS => 0, // GSACTIVE: syncs complete at once
            _ => 0,
        };
    }

    void WriteGr0(uint off, uint v)
    {
        if (off >= SmmuV2Gr0.SMR0 && off < SmmuV2Gr0.SMR0 + 4u * (uint)_smr.Length)
        {
            WriteSmr((int)((off - SmmuV2Gr0.SMR0) / 4), v);
            return;
        }
        if (off >= SmmuV2Gr0.S2CR0 && off < SmmuV2Gr0.S2CR0 + 4u * (uint)Math.Min(_s2cr.Length, 256))
        {
            WriteS2cr((int)((off - SmmuV2Gr0.S2CR0) / 4), v);
            return;
        }
        switch (off)
        {
            case SmmuV2Gr0.sCR0:
                var old = _cr0;
                _cr0 = v & SmmuV2Field.Cr0Mask & (_o.Vmid16 ? ~0u : ~SmmuV2Field.Cr0Vmid16En);
                if (old != _cr0)
                {
                    Generation++;
                    TraceEmit($"sCR0 0x{old:x} -> 0x{_cr0:x}");
                }
                UpdateGlobalIrq();
                break;
            case SmmuV2Gr0.sACR:
                _acr = v;
                break;
            case SmmuV2Gr0.sGFSR:
                _gfsr &= ~v; // W1C
                UpdateGlobalIrq();
                break;
            case SmmuV2Gr0.sGFSRRESTORE:
                _gfsr = v & (SmmuV2Field.GfsrFaults | SmmuV2Field.GfsrMulti);
                UpdateGlobalIrq();
                break;
            case SmmuV2Gr0.TLBIVMID:
                _iotlb.InvalidateByVmid((ushort)(v & (_o.Vmid16 ? 0xFFFFu : 0xFFu)));
                _globalUnsynced++;
                TraceEmit($"TLBIVMID {v & 0xFFFF}");
                break;
            case SmmuV2Gr0.TLBIALLNSNH:
                _iotlb.InvalidateAll();
                _globalUnsynced++;
                TraceEmit("TLBIALLNSNH");
                break;
            case SmmuV2Gr0.TLBIALLH:
                break; // no hypervisor contexts
            case SmmuV2Gr0.sTLBGSYNC:
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

    uint ReadGr1(uint off)
    {
        var n = (int)((off & 0x3FF) / 4);
        if (n >= _banks.Length) return 0;
        return (off >> 10) switch
        {
            0 => _banks[n].Cbar,
            1 => _banks[n].Cbfrsynra,
            2 => _banks[n].Cba2r,
            _ => 0,
        };
    }

    void WriteGr1(uint off, uint v)
    {
        var n = (int)((off & 0x3FF) / 4);
        if (n >= _banks.Length) return;
        var b = _banks[n];
        switch (off >> 10)
        {
            case 0:
                // HYPC (bit 10) is RAZ: no hypervisor contexts. For the nested type bits [15:8] are the stage-2 CBNDX.
                if (((v >> SmmuV2Field.CbarTypeShift) & 3) != SmmuV2Field.CbarTypeNested) v &= ~(1u << 10);
                if (v != b.Cbar) CheckLive(n, "CBAR");
                b.Cbar = v;
                Generation++;
                break;
            case 1:
                b.Cbfrsynra = v; // software may write it; hardware updates it on a fault
                break;
            case 2:
                v &= SmmuV2Field.Cba2rVa64 | (_o.Vmid16 ? 0xFFFFu << SmmuV2Field.Cba2rVmid16Shift : 0);
                if (v != b.Cba2r) CheckLive(n, "CBA2R");
                b.Cba2r = v;
                Generation++;
                break;
        }
    }

    // ------------------------------------------------------------------ context banks

    static bool IsWideCb(uint off) => off switch
    {
        SmmuV2Cb.TTBR0 or SmmuV2Cb.TTBR1 or SmmuV2Cb.PAR or SmmuV2Cb.FAR or SmmuV2Cb.IPAFAR
            or SmmuV2Cb.TLBIVA or SmmuV2Cb.TLBIVAA or SmmuV2Cb.TLBIVAL or SmmuV2Cb.TLBIVAAL or SmmuV2Cb.TLBIIPAS2 or SmmuV2Cb.TLBIIPAS2L
            or SmmuV2Cb.ATS1PR or SmmuV2Cb.ATS1PW or SmmuV2Cb.ATS1UR or SmmuV2Cb.ATS1UW => true,
        _ => false,
    };

    static bool IsCbOperation(uint off) => off >= SmmuV2Cb.TLBIVA;

    ulong ReadCbWide(int n, uint off)
    {
        var b = _banks[n];
        return off switch
        {
            SmmuV2Cb.TTBR0 => b.Ttbr0,
            SmmuV2Cb.TTBR1 => b.Ttbr1,
            SmmuV2Cb.PAR => b.Par,
            SmmuV2Cb.FAR => b.Far,
            SmmuV2Cb.IPAFAR => b.Ipafar,
            _ => 0, // operation registers are write-only
        };
    }

    uint ReadCb(int n, uint off)
    {
        var b = _banks[n];
        return off switch
        {
            SmmuV2Cb.SCTLR => b.Sctlr,
            SmmuV2Cb.ACTLR => b.Actlr,
            SmmuV2Cb.TCR2 => b.Tcr2,
            SmmuV2Cb.TCR => b.Tcr,
            SmmuV2Cb.CONTEXTIDR => b.ContextIdr,
            SmmuV2Cb.MAIR0 => b.Mair0,
            SmmuV2Cb.MAIR1 => b.Mair1,
            SmmuV2Cb.FSR => b.Fsr,
            SmmuV2Cb.FSYNR0 => b.Fsynr0,
            SmmuV2Cb.FSYNR1 => b.Fsynr1,
            SmmuV2Cb.TLBSTATUS => 0,
            SmmuV2Cb.ATSR => 0,
            _ => 0,
        };
    }

    void WriteCbWide(int n, uint off, ulong v)
    {
        var b = _banks[n];
        switch (off)
        {
            case SmmuV2Cb.TTBR0:
                if (v != b.Ttbr0) CheckLive(n, "TTBR0");
                b.Ttbr0 = v;
                Generation++;
                break;
            case SmmuV2Cb.TTBR1:
                if (v != b.Ttbr1) CheckLive(n, "TTBR1");
                b.Ttbr1 = v;
                Generation++;
                break;
            case SmmuV2Cb.PAR:
                b.Par = v;
                break;
            case SmmuV2Cb.FAR:
                b.Far = v;
                break;
            case SmmuV2Cb.IPAFAR:
                b.Ipafar = v;
                break;
            case SmmuV2Cb.TLBIVA or SmmuV2Cb.TLBIVAL or SmmuV2Cb.TLBIVAA or SmmuV2Cb.TLBIVAAL:
                TlbiVa(n, off, v);
                break;
            case SmmuV2Cb.TLBIIPAS2 or SmmuV2Cb.TLBIIPAS2L:
            {
                var vmid = BankVmid(n);
                var ipa = (v & 0xF_FFFF_FFFFUL) << 12;
                _iotlb.InvalidateByIpa(vmid, ipa, leafOnly: off == SmmuV2Cb.TLBIIPAS2L);
                b.Unsynced++;
                ClearTaint((vm, _) => vm == vmid);
                TraceEmit($"CB{n} TLBIIPAS2{(off == SmmuV2Cb.TLBIIPAS2L ? "L" : "")} VMID {vmid} IPA 0x{ipa:x}");
                break;
            }
            case SmmuV2Cb.ATS1PR or SmmuV2Cb.ATS1PW or SmmuV2Cb.ATS1UR or SmmuV2Cb.ATS1UW:
                AddressTranslate(n, off, v);
                break;
        }
    }

    void WriteCb(int n, uint off, uint v)
    {
        var b = _banks[n];
        switch (off)
        {
            case SmmuV2Cb.SCTLR:
                if (v != b.Sctlr && (b.Enabled || (v & SmmuV2Field.SctlrM) == 0)) CheckLive(n, "SCTLR");
                b.Sctlr = v;
                Generation++;
                UpdateContextIrqs();
                break;
            case SmmuV2Cb.ACTLR:
                b.Actlr = v;
                break;
            case SmmuV2Cb.RESUME:
                Resume(n, (v & SmmuV2Field.ResumeTerminate) != 0);
                break;
            case SmmuV2Cb.TCR2:
                if (v != b.Tcr2) CheckLive(n, "TCR2");
                b.Tcr2 = v;
                Generation++;
                break;
            case SmmuV2Cb.TCR:
                if (v != b.Tcr) CheckLive(n, "TCR");
                b.Tcr = v;
                Generation++;
                break;
            case SmmuV2Cb.CONTEXTIDR:
                b.ContextIdr = v;
                break;
            case SmmuV2Cb.MAIR0:
                if (v != b.Mair0) CheckLive(n, "MAIR0");
                b.Mair0 = v;
                Generation++;
                break;
            case SmmuV2Cb.MAIR1:
                if (v != b.Mair1) CheckLive(n, "MAIR1");
                b.Mair1 = v;
                Generation++;
                break;
            case SmmuV2Cb.FSR:
                b.Fsr = (b.Fsr & ~v) | (b.Fsr & SmmuV2Field.FsrSs); // W1C; SS is cleared by RESUME, not here
                UpdateContextIrqs();
                break;
            case SmmuV2Cb.FSRRESTORE:
                b.Fsr = v & (SmmuV2Field.FsrFaults | SmmuV2Field.FsrSs | SmmuV2Field.FsrMulti);
                UpdateContextIrqs();
                break;
            case SmmuV2Cb.FSYNR0:
                b.Fsynr0 = v;
                break;
            case SmmuV2Cb.FSYNR1:
                b.Fsynr1 = v;
                break;
            case SmmuV2Cb.TLBIASID:
            {
                var vmid = BankVmid(n);
                var asid = (ushort)(v & 0xFFFF);
                _iotlb.InvalidateByAsid(vmid, asid);
                b.Unsynced++;
                ClearTaint((vm, a) => vm == vmid && a == asid);
                TraceEmit($"CB{n} TLBIASID VMID {vmid} ASID {asid}");
                break;
            }
            case SmmuV2Cb.TLBIALL:
            {
                var vmid = BankVmid(n);
                _iotlb.InvalidateByVmid(vmid);
                b.Unsynced++;
                ClearTaint((vm, _) => vm == vmid);
                TraceEmit($"CB{n} TLBIALL VMID {vmid}");
                break;
            }
            case SmmuV2Cb.TLBSYNC:
                b.Unsynced = 0;
                break;
        }
    }

    void TlbiVa(int n, uint off, ulong v)
    {
        var vmid = BankVmid(n);
        var leaf = off is SmmuV2Cb.TLBIVAL or SmmuV2Cb.TLBIVAAL;
        var allAsids = off is SmmuV2Cb.TLBIVAA or SmmuV2Cb.TLBIVAAL;
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
