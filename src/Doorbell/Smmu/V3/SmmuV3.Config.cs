using Doorbell.Memory;
using Doorbell.Vmsa;

namespace Doorbell.Smmu.V3;

/// <summary>The 8 qwords of an STE or CD, stored inline.</summary>
[System.Runtime.CompilerServices.InlineArray(8)]
internal struct Qwords8
{
    ulong _q;
}

/// <summary>Bumped by CMD_CFGI_ALL: every cached STE and CD validated before is invalid, in O(1).</summary>
internal sealed class ConfigEpoch
{
    public ulong Value;
}

/// <summary>A cached CD and the translation configuration it decodes to with its STE.</summary>
internal sealed class CdCacheEntry
{
    ulong _validAt;
    bool _valid;
    public required ConfigEpoch Epoch;
    public required ulong Address;          // where it was fetched (PA)
    public Qwords8 Raw;
    public required DecodedCd Cd;
    public required TranslationConfig Config;
    /// <summary>False once invalidated: then kept only so a refetch of identical bytes can skip the decode.</summary>
    public bool Valid
    {
        get => _valid && _validAt == Epoch.Value;
        set { _valid = value; _validAt = Epoch.Value; }
    }
    /// <summary>The SMMU's CD-validation count when this entry was last checked for ASID conflicts.</summary>
    public ulong ConflictCheckedAt;
}

/// <summary>CDs by index: CD 0 in a field (the common case), others in a dictionary made on first use.</summary>
internal sealed class CdSet
{
    CdCacheEntry? _cd0;
    Dictionary<uint, CdCacheEntry>? _more;

    public bool TryGet(uint index, out CdCacheEntry entry)
    {
        if (index == 0) { entry = _cd0!; return _cd0 is not null; }
        if (_more is not null && _more.TryGetValue(index, out entry!)) return true;
        entry = null!;
        return false;
    }

    public void Set(uint index, CdCacheEntry entry)
    {
        if (index == 0) _cd0 = entry;
        else (_more ??= [])[index] = entry;
    }

    public bool Remove(uint index, out CdCacheEntry entry)
    {
        if (index == 0) { entry = _cd0!; var had = _cd0 is not null; _cd0 = null; return had; }
        if (_more is not null && _more.Remove(index, out entry!)) return true;
        entry = null!;
        return false;
    }

    public bool IsEmpty => _cd0 is null && (_more is null || _more.Count == 0);
    public CdCacheEntry? Cd0 => _cd0;
    public Dictionary<uint, CdCacheEntry>? More => _more;

    public IEnumerable<(uint Index, CdCacheEntry Entry)> All()
    {
        if (_cd0 is not null) yield return (0, _cd0);
        if (_more is not null) foreach (var (k, v) in _more) yield return (k, v);
    }

}

/// <summary>A cached STE (never an invalid or ILLEGAL one) with the CDs fetched through it.</summary>
internal sealed class SteCacheEntry
{
    ulong _validAt;
    bool _valid;
    public required ConfigEpoch Epoch;
    public required uint Sid;
    public required ulong Address;
    public Qwords8 Raw;
    public required DecodedSte Ste;
    /// <summary>For stage-1-bypassed traffic of a stream with stage 2 (or S2-only streams).</summary>
    public TranslationConfig? Stage2Only;
    /// <summary>VMID the IOTLB tags this stream's entries with: STE.S2VMID whenever stage 2 is implemented (§5.2).</summary>
    public ushort TlbVmid;
    public readonly CdSet Cds = new();
    /// <summary>False once invalidated (CFGI): then kept only so a refetch of identical bytes can skip the decode.</summary>
    public bool Valid
    {
        get => _valid && _validAt == Epoch.Value;
        set { _valid = value; _validAt = Epoch.Value; }
    }

    public void Invalidate()
    {
        Valid = false;
        if (Cds.Cd0 is { } c0) c0.Valid = false;
        if (Cds.More is { } more) foreach (var c in more.Values) c.Valid = false;
    }
}

/// <summary>How a transaction of a stream resolves.</summary>
internal enum StreamOutcome : byte
{
    Translate,
    Bypass,
    /// <summary>Terminated with an abort (an event may have been recorded).</summary>
    Abort,
}

/// <summary>What a port keeps between transactions: valid while the SMMU's generation is unchanged.</summary>
internal sealed class StreamContext : Doorbell.Iommu.TranslationContext
{
    public StreamOutcome Outcome;
    public bool RecordStage1;
    public bool RecordStage2;
    /// <summary>CD.A: stage-1 terminations abort (else RAZ/WI).</summary>
    public bool AbortStage1 = true;
    public SteCacheEntry? Ste;
    public CdCacheEntry? Cd;
    public ulong Generation = ulong.MaxValue;
}

// Stream table and CD fetch, decode and configuration cache (IHI 0070 §3.3, §5, §4.3 CFGI).
public sealed partial class SmmuV3
{
    readonly Dictionary<uint, SteCacheEntry> _steCache = [];
    readonly ConfigEpoch _cfgEpoch = new();
    /// <summary>
    /// Strict mode: per STE/CD address, what the SMMU may hold of it — the contents it last fetched, or those of the
    /// last CFGI that a CMD_SYNC completed. Update steps are checked against it (IHI 0070 §3.21.3, §3.21.3.1).
    /// </summary>
    readonly Dictionary<ulong, ulong[]> _observed = [];
    /// <summary>Strict mode: contents at each CFGI not yet completed by a CMD_SYNC.</summary>
    readonly List<(ulong Address, ulong[] Qwords)> _cfgiPending = [];

    /// <summary>Counts CDs made valid in the cache (fresh or reused), for the conflict-check shortcut.</summary>
    ulong _cdValidations;

    internal int CachedSteCount => _steCache.Values.Count(e => e.Valid);

    /// <summary>Resolves a transaction's stream configuration, recording the architected event on any failure.</summary>
    internal StreamOutcome Resolve(uint sid, bool ssv, uint ssid, ulong input, AccessFlags access, bool translated, StreamContext ctx)
    {
        ctx.Ste = null; ctx.Cd = null;
        ctx.StrictChecks = StrictEnabled; // strict mode resolves every transaction, so this follows the monitor
        ctx.RecordStage1 = ctx.RecordStage2 = false;
        ctx.AbortStage1 = true;
        ctx.SetConfig(TranslationConfig.Bypass, 0);
        if (!SmmuEnabled)
            return ctx.Outcome = (_gbpa & SmmuV3Field.GbpaAbort) != 0 ? StreamOutcome.Abort : StreamOutcome.Bypass;
        var ste = GetSte(sid, ssv, ssid);
        if (ste is null) return ctx.Outcome = StreamOutcome.Abort;
        ctx.Ste = ste;
        var d = ste.Ste;
        if (d.IsAbort) return ctx.Outcome = StreamOutcome.Abort; // Config = abort: no event (§5.2)
        if (translated && !d.IsBypass)
        {
            // ATS-translated traffic: IDR0.ATS = 0, so STE.EATS is IGNORED and translated traffic is never allowed.
            RecordTransaction(Evt.F_TRANSL_FORBIDDEN, sid, ssv, ssid, input, access);
            return ctx.Outcome = StreamOutcome.Abort;
        }
        if (d.IsBypass || !d.Stage1Enabled)
        {
            if (ssv)
            {
                RecordConfig(Evt.C_BAD_SUBSTREAMID, sid, ssv, ssid);
                return ctx.Outcome = StreamOutcome.Abort;
            }
            if (d.IsBypass) return ctx.Outcome = StreamOutcome.Bypass;
            ctx.SetConfig(ste.Stage2Only!, ste.TlbVmid);
            ctx.RecordStage2 = d.S2Record;
            return ctx.Outcome = StreamOutcome.Translate;
        }
        uint cdIndex;
        if (d.S1CdMax == 0)
        {
            if (ssv) { RecordConfig(Evt.C_BAD_SUBSTREAMID, sid, ssv, ssid); return ctx.Outcome = StreamOutcome.Abort; }
            cdIndex = 0;
        }
        else if (!ssv)
        {
            switch (d.S1Dss)
            {
                case Ste.S1DssTerminate:
                    RecordConfig(Evt.F_STREAM_DISABLED, sid, false, 0);
                    return ctx.Outcome = StreamOutcome.Abort;
                case Ste.S1DssBypass:
                    if (d.Stage2 is null) return ctx.Outcome = StreamOutcome.Bypass;
                    ctx.SetConfig(ste.Stage2Only!, ste.TlbVmid);
                    ctx.RecordStage2 = d.S2Record;
                    return ctx.Outcome = StreamOutcome.Translate;
                default:
                    cdIndex = 0; // S1DSS = substream 0
                    break;
            }
        }
        else
        {
            if (ssid >> d.S1CdMax != 0 || (ssid == 0 && d.S1Dss == Ste.S1DssSubstream0))
            {
                RecordConfig(Evt.C_BAD_SUBSTREAMID, sid, ssv, ssid);
                return ctx.Outcome = StreamOutcome.Abort;
            }
            cdIndex = ssid;
        }
        var cd = GetCd(ste, cdIndex, sid, ssv, ssid, input, access);
        if (cd is null) return ctx.Outcome = StreamOutcome.Abort;
        ctx.Cd = cd;
        ctx.SetConfig(cd.Config, ste.TlbVmid);
        ctx.RecordStage1 = cd.Cd.Record;
        ctx.RecordStage2 = d.S2Record;
        ctx.AbortStage1 = cd.Cd.AbortOnTerminate;
        return ctx.Outcome = StreamOutcome.Translate;
    }

    /// <summary>What CMD_CFGI_STE does to one stream followed by the next transaction's configuration fetch and decode (benchmarks).</summary>
    internal StreamOutcome InvalidateAndResolve(uint sid, StreamContext ctx)
    {
        InvalidateSte(sid, sid);
        _unsyncedInvalidations = 0;
        return Resolve(sid, false, 0, 0, AccessFlags.Read, false, ctx);
    }

    // ----- STE -----

    /// <summary>Finds the STE address for a StreamID (walking a 2-level table). Returns an event ID on failure (0 = ok).</summary>
    byte LocateSte(uint sid, out ulong steAddress, out ulong fetchAddress)
    {
        steAddress = 0; fetchAddress = 0;
        if (_o.StreamIdBits < 32 && sid >> _o.StreamIdBits != 0) return Evt.C_BAD_STREAMID;
        var log2 = (int)Math.Min(_strtabBaseCfg & 0x3F, (uint)_o.StreamIdBits);
        if (log2 < 32 && sid >> log2 != 0) return Evt.C_BAD_STREAMID;
        var tableBase = _strtabBase & SmmuV3Field.StrtabBaseAddrMask;
        var fmt = (_strtabBaseCfg >> SmmuV3Field.StrtabCfgFmtShift) & 3;
        if (fmt != 1 || !_o.TwoLevelStreamTable)
        {
            // Linear (FMT = 0; reserved FMT values and FMT = 1 without ST_LEVEL behave as linear, docs/deviations.md).
            steAddress = tableBase + (ulong)sid * Ste.Size;
            return 0;
        }
        var split = (int)((_strtabBaseCfg >> SmmuV3Field.StrtabCfgSplitShift) & 0x1F);
        if (split is not (6 or 8 or 10)) split = 6; // reserved SPLIT values behave as 6 (docs/deviations.md)
        var l1Index = split >= 32 ? 0 : sid >> split;
        var l1Addr = tableBase + (ulong)l1Index * 8;
        if (_bus.ReadU64(l1Addr, out var l1) != BusStatus.Ok)
        {
            fetchAddress = l1Addr;
            return Evt.F_STE_FETCH;
        }
        ConfigFetches++;
        var span = (int)(l1 & Ste.L1SpanMask);
        if (span == 0 || span > split + 1) return Evt.C_BAD_STREAMID; // invalid L1 descriptor (reserved spans as invalid)
        var low = sid & ((1u << split) - 1);
        if (low >> (span - 1) != 0) return Evt.C_BAD_STREAMID;
        steAddress = (l1 & Ste.L1L2PtrMask) + (ulong)low * Ste.Size;
        return 0;
    }

    bool FetchQwords(ulong address, Span<ulong> q)
    {
        ConfigFetches++;
        // An STE or CD is 64-byte aligned, so it lies in one RAM page: copied straight from it when the view has one.
        if ((address & 63) == 0 && _bus.TryGetRamPage(address, out var page) && page is not null)
        {
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(page.AsSpan((int)(address & SparseMemory.PageMask), 64)).CopyTo(q);
            if (!BitConverter.IsLittleEndian)
                for (var i = 0; i < 8; i++) q[i] = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(q[i]);
            return true;
        }
        if (_bus.IsRam(address, 64))
        {
            _bus.Read(address, System.Runtime.InteropServices.MemoryMarshal.AsBytes(q), BusAttributes.Cpu);
            if (!BitConverter.IsLittleEndian)
                for (var i = 0; i < 8; i++) q[i] = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(q[i]);
            return true;
        }
        for (var i = 0; i < 8; i++)
            if (_bus.ReadU64(address + (ulong)i * 8, out q[i]) != BusStatus.Ok)
                return false;
        return true;
    }


    SteCacheEntry? GetSte(uint sid, bool ssv, uint ssid)
    {
        _steCache.TryGetValue(sid, out var cached);
        if (cached is { Valid: true })
        {
            if (StrictEnabled) CheckStale(cached.Address, cached.Raw, $"STE of SID 0x{sid:x}", "IHI 0070 §4.3.2: an STE changed in memory must be invalidated (CMD_CFGI_STE) before the SMMU relies on it");
            return cached;
        }
        var ev = LocateSte(sid, out var addr, out var fetchAddr);
        if (ev == Evt.C_BAD_STREAMID)
        {
            if ((_cr2 & SmmuV3Field.Cr2RecInvSid) != 0) RecordConfig(Evt.C_BAD_STREAMID, sid, ssv, ssid);
            return null;
        }
        if (ev == Evt.F_STE_FETCH)
        {
            RecordFetch(Evt.F_STE_FETCH, sid, ssv, ssid, fetchAddr);
            return null;
        }
        Span<ulong> q = stackalloc ulong[8];
        if (!FetchQwords(addr, q))
        {
            RecordFetch(Evt.F_STE_FETCH, sid, ssv, ssid, addr);
            return null;
        }
        if (StrictEnabled) Observe(addr, q);
        if (cached is not null && cached.Address == addr && q.SequenceEqual(cached.Raw))
        {
            cached.Valid = true; // same bytes, same decode: reuse it (its CDs stay invalid until refetched)
            return cached;
        }
        var d = SmmuV3Decoder.DecodeSte(q, _o, out var why);
        if (d is null)
        {
            TraceEmit($"C_BAD_STE SID 0x{sid:x}: {why}");
            RecordConfig(Evt.C_BAD_STE, sid, ssv, ssid);
            return null;
        }
        var entry = new SteCacheEntry { Sid = sid, Address = addr, Ste = d, Epoch = _cfgEpoch, Valid = true };
        q.CopyTo(entry.Raw);
        if (_steCache.Count >= 4096 && cached is null)
            foreach (var key in _steCache.Where(kv => !kv.Value.Valid).Select(kv => kv.Key).ToList()) _steCache.Remove(key);
        if (d.Stage2 is not null) entry.Stage2Only = new TranslationConfig(null, d.Stage2);
        entry.TlbVmid = d.Stage2?.Vmid ?? (_o.Stage2 ? d.S2Vmid : (ushort)0);
        _steCache[sid] = entry;
        return entry;
    }

    // ----- CD -----

    /// <summary>Reads a qword of a CD table, translating its IPA through stage 2 when the stream has one.</summary>
    bool FetchCdQword(SteCacheEntry ste, ulong address, out ulong value, out ulong pa, uint sid, bool ssv, uint ssid, ulong input, AccessFlags access)
    {
        pa = address;
        value = 0;
        if (ste.Stage2Only is { } s2)
        {
            if (!_translator.Translate(s2, address, AccessFlags.Read, out var e, out var fault))
            {
                if (ste.Ste.S2Record || fault.Kind == FaultKind.WalkExternalAbort)
                    RecordTranslationFault(fault, sid, ssv, ssid, input, access, Evt.ClassCd, cdIpa: address);
                return false;
            }
            pa = e.Translate(address);
        }
        if (_bus.ReadU64(pa, out value) != BusStatus.Ok)
        {
            RecordFetch(Evt.F_CD_FETCH, sid, ssv, ssid, pa);
            return false;
        }
        return true;
    }

    CdCacheEntry? GetCd(SteCacheEntry ste, uint cdIndex, uint sid, bool ssv, uint ssid, ulong input, AccessFlags access)
    {
        ste.Cds.TryGet(cdIndex, out var cached);
        if (cached is { Valid: true })
        {
            if (StrictEnabled) CheckStale(cached.Address, cached.Raw, $"CD {cdIndex} of SID 0x{sid:x}", "IHI 0070 §4.3.4: a CD changed in memory must be invalidated (CMD_CFGI_CD) before the SMMU relies on it");
            return cached;
        }
        var d = ste.Ste;
        ulong cdAddr; // IPA when stage 2 is enabled
        if (d.S1CdMax == 0 || d.S1Fmt == Cd.S1FmtLinear)
            cdAddr = d.S1ContextPtr + (ulong)cdIndex * Cd.Size;
        else
        {
            var split = d.S1Fmt == Cd.S1Fmt2Level4K ? 6 : 10;
            var l1Addr = d.S1ContextPtr + (ulong)(cdIndex >> split) * 8;
            if (!FetchCdQword(ste, l1Addr, out var l1, out _, sid, ssv, ssid, input, access)) return null;
            if ((l1 & 1) == 0)
            {
                RecordConfig(Evt.C_BAD_SUBSTREAMID, sid, ssv, ssid); // L1CD.V = 0
                return null;
            }
            cdAddr = (l1 & Cd.L1L2PtrMask) + (ulong)(cdIndex & ((1u << split) - 1)) * Cd.Size;
        }
        Span<ulong> q = stackalloc ulong[8];
        var pa = cdAddr;
        if (ste.Stage2Only is null && (cdAddr & 63) == 0 && FetchQwords(cdAddr, q))
        {
            // one 64-byte fetch from RAM (or MMIO) at a PA
        }
        else if (ste.Stage2Only is null && (cdAddr & 63) == 0)
        {
            RecordFetch(Evt.F_CD_FETCH, sid, ssv, ssid, cdAddr);
            return null;
        }
        else
        {
            for (var i = 0; i < 8; i++)
            {
                if (!FetchCdQword(ste, cdAddr + (ulong)i * 8, out q[i], out var qpa, sid, ssv, ssid, input, access)) return null;
                if (i == 0) pa = qpa;
            }
            ConfigFetches++;
        }
        if (StrictEnabled) Observe(pa, q);
        if (cached is not null && cached.Address == pa && q.SequenceEqual(cached.Raw))
        {
            // No CD became valid since this one was last checked: no new conflict is possible.
            if (cached.ConflictCheckedAt != _cdValidations && FindAsidConflict(ste, cdIndex, cached.Config))
            {
                RecordConfig(Evt.F_CFG_CONFLICT, sid, ssv, ssid);
                return null;
            }
            cached.Valid = true;
            cached.ConflictCheckedAt = ++_cdValidations;
            return cached;
        }
        var cd = SmmuV3Decoder.DecodeCd(q, _o, out var why);
        if (cd is null)
        {
            TraceEmit($"C_BAD_CD SID 0x{sid:x} CD {cdIndex}: {why}");
            RecordConfig(Evt.C_BAD_CD, sid, ssv, ssid);
            return null;
        }
        var config = new TranslationConfig(cd.Stage1, d.Stage2);
        if (FindAsidConflict(ste, cdIndex, config))
        {
            RecordConfig(Evt.F_CFG_CONFLICT, sid, ssv, ssid);
            return null;
        }
        var entry = new CdCacheEntry { Address = pa, Cd = cd, Config = config, ConflictCheckedAt = ++_cdValidations, Epoch = _cfgEpoch, Valid = true };
        q.CopyTo(entry.Raw);
        ste.Cds.Set(cdIndex, entry);
        return entry;
    }

    /// <summary>
    /// Two cached CDs with the same (VMID, ASID) but different stage-1 tables make the IOTLB ambiguous (IHI 0070
    /// §5.4 requires ASIDs to identify one translation regime per VMID). Doorbell reports F_CFG_CONFLICT for the
    /// newcomer (a CONSTRAINED UNPREDICTABLE choice, docs/deviations.md).
    /// </summary>
    bool FindAsidConflict(SteCacheEntry self, uint selfIndex, TranslationConfig config)
    {
        var s1 = config.Stage1!;
        var vmid = self.TlbVmid;
        foreach (var ste in _steCache.Values)
        {
            if (!ste.Valid) continue;
            var cds = ste.Cds;
            if (ste.TlbVmid != vmid) continue;
            if (cds.Cd0 is { } c0 && !(ReferenceEquals(ste, self) && selfIndex == 0) && Conflicts(c0, s1)) return true;
            if (cds.More is { } more)
                foreach (var (idx, other) in more)
                    if (!(ReferenceEquals(ste, self) && idx == selfIndex) && Conflicts(other, s1)) return true;
        }
        return false;
    }

    static bool Conflicts(CdCacheEntry other, Stage1Config s1)
    {
        if (!other.Valid) return false;
        var o1 = other.Config.Stage1!;
        if (o1.Asid != s1.Asid) return false;
        return o1.Low.TableBase != s1.Low.TableBase || o1.Low.Granule != s1.Low.Granule || o1.Low.InputSize != s1.Low.InputSize;
    }

    // ----- invalidation (commands) -----

    void InvalidateSte(uint first, uint last)
    {
        _unsyncedInvalidations++;
        Generation++;
        if (StrictEnabled)
            for (var sid = (ulong)first; sid <= last && sid - first < 4096; sid++)
                CheckHitless((uint)sid);
        if (_steCache.Count == 0) return;
        if (last - first < (uint)_steCache.Count)
        {
            for (var sid = (ulong)first; sid <= last; sid++)
                DropSte((uint)sid);
        }
        else
        {
            foreach (var (key, e) in _steCache)
                if (key >= first && key <= last) e.Invalidate();
        }
    }

    void DropSte(uint sid)
    {
        if (_steCache.TryGetValue(sid, out var e)) e.Invalidate();
    }

    void InvalidateAllConfig()
    {
        _unsyncedInvalidations++;
        Generation++;
        if (StrictEnabled)
            foreach (var (sid, e) in _steCache)
                if (e.Valid) CheckHitless(sid);
        _cfgEpoch.Value++; // every cached STE and CD (O(1))
    }

    void InvalidateCd(uint sid, uint ssid, bool all)
    {
        _unsyncedInvalidations++;
        Generation++;
        if (!_steCache.TryGetValue(sid, out var ste)) return;
        if (all)
        {
            foreach (var (_, cd) in ste.Cds.All())
            {
                if (cd.Valid && ste.Valid && StrictEnabled) CheckHitlessAt(cd.Address, isSte: false, $"CD of SID 0x{sid:x}");
                cd.Valid = false;
            }
        }
        else
        {
            if (ste.Cds.TryGet(ssid, out var cd) && cd.Valid)
            {
                if (StrictEnabled && ste.Valid) CheckHitlessAt(cd.Address, isSte: false, $"CD {ssid} of SID 0x{sid:x}");
                cd.Valid = false;
            }
            else if (StrictEnabled && ste.Valid && ste.Ste.Stage1Enabled && ste.Ste.Stage2 is null)
            {
                // Not cached, but possibly observed earlier: check the CD the SMMU would fetch now.
                var d = ste.Ste;
                if (d.S1CdMax == 0 || d.S1Fmt == Cd.S1FmtLinear)
                    CheckHitlessAt(d.S1ContextPtr + (ulong)ssid * Cd.Size, isSte: false, $"CD {ssid} of SID 0x{sid:x}");
            }
        }
    }

    // ----- strict mode -----

    void Observe(ulong address, ReadOnlySpan<ulong> q)
    {
        if (!_observed.TryGetValue(address, out var arr)) _observed[address] = arr = new ulong[8];
        q.CopyTo(arr);
    }

    void CheckStale(ulong address, in Qwords8 raw, string what, string rule)
    {
        Span<ulong> now = stackalloc ulong[8];
        for (var i = 0; i < 8; i++)
            if (_bus.ReadU64(address + (ulong)i * 8, out now[i]) != BusStatus.Ok) return;
        for (var i = 0; i < 8; i++)
            if (now[i] != raw[i])
            {
                _strict!.Report("smmuv3", rule, $"stale {what} used: qword {i} is 0x{now[i]:x} in memory, cached 0x{raw[i]:x}");
                return;
            }
    }

    void CheckHitless(uint sid)
    {
        if (LocateSte(sid, out var addr, out _) != 0) return;
        CheckHitlessAt(addr, isSte: true, $"STE of SID 0x{sid:x}");
    }

    /// <summary>
    /// At a CFGI of the entry at <paramref name="address"/>: compares what the SMMU may hold of it (last fetched, or
    /// as of the last CFGI completed by a CMD_SYNC) with memory now. The SMMU reads an entry's qwords in any order,
    /// each single-copy atomic, so any mix of the two versions may be observed; the step is safe when every mix reads
    /// as one of them: the two differ in one qword, or only in bits the old (or only in bits the new) configuration
    /// ignores. An invalid entry uses only V, so filling an invalid entry and setting V needs a CFGI + CMD_SYNC in
    /// between (IHI 0070 §3.21.3.1), and a valid entry is changed hitlessly or made invalid first (Linux's entry writer).
    /// </summary>
    void CheckHitlessAt(ulong address, bool isSte, string what)
    {
        Span<ulong> now = stackalloc ulong[8];
        for (var i = 0; i < 8; i++)
            if (_bus.ReadU64(address + (ulong)i * 8, out now[i]) != BusStatus.Ok) return;
        _cfgiPending.Add((address, now.ToArray()));
        if (!_observed.TryGetValue(address, out var old)) return;
        Span<ulong> usedOld = stackalloc ulong[8];
        Span<ulong> usedNew = stackalloc ulong[8];
        if (isSte) { SmmuV3Decoder.SteUsedBits(old, usedOld); SmmuV3Decoder.SteUsedBits(now, usedNew); }
        else { SmmuV3Decoder.CdUsedBits(old, usedOld); SmmuV3Decoder.CdUsedBits(now, usedNew); }
        var critical = 0;
        bool oldIgnores = true, newIgnores = true;
        for (var i = 0; i < 8; i++)
        {
            var d = old[i] ^ now[i];
            if (d == 0) continue;
            if ((d & (usedOld[i] | usedNew[i])) != 0) critical++;
            if ((d & usedOld[i]) != 0) oldIgnores = false;
            if ((d & usedNew[i]) != 0) newIgnores = false;
        }
        if (critical <= 1 || oldIgnores || newIgnores) return;
        var vBit = isSte ? 1UL << Ste.V : 1UL << Cd.V;
        var wasValid = (old[0] & vBit) != 0;
        var isValid = (now[0] & vBit) != 0;
        if (wasValid && isValid)
            _strict!.Report("smmuv3", "IHI 0070 §3.21.3 (single-copy atomicity is 64 bits): a live entry must change at most one used qword between invalidations, or be made invalid first (Linux arm-smmu-v3 hitless update)",
                $"{what} at 0x{address:x} changed {critical} used qwords while valid: the SMMU could observe it half-written");
        else if (!wasValid)
            _strict!.Report("smmuv3", "IHI 0070 §3.21.3.1 (fill the fields with V = 0, CMD_CFGI + CMD_SYNC, then set V = 1 and CMD_CFGI again): the SMMU may hold the invalid entry partially cached",
                $"{what} at 0x{address:x} was made valid in the same step as {critical - 1} other changed qword(s): an old qword could be combined with the new V");
        else
            _strict!.Report("smmuv3", "IHI 0070 §3.21.3.1 (to make an entry invalid, clear V, then CMD_CFGI + CMD_SYNC): other qwords changed in the same step",
                $"{what} at 0x{address:x} was made invalid in the same step as {critical - 1} other changed qword(s): a mix with the old V = 1 reads as a configuration never written");
    }

    /// <summary>CMD_SYNC: the CFGIs before it are complete; what they saw is what the SMMU may now hold.</summary>
    void CompletePendingCfgi()
    {
        foreach (var (address, q) in _cfgiPending) _observed[address] = q;
        _cfgiPending.Clear();
    }
}
