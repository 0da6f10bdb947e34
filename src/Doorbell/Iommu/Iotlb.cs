using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Doorbell.Vmsa;

namespace Doorbell.Iommu;

// Known limits (details in docs/deviations.md):
// - Leaf translations and a walk cache of table descriptors; no configuration of its size per board.
// - TLBI by IPA (TLBI_S2_IPA) also removes combined stage-1+stage-2 entries derived from that IPA, which the
//   architecture does not require (software must follow with TLBI_NH_ALL); over-invalidation is always allowed.
// - No TLB conflict aborts: when overlapping entries exist (tables changed without invalidation), the first hit wins.

/// <summary>
/// A TLBI range (TG/NUM/SCALE/TTL). TG selects the granule (0 = not a range: one address) and TTL (1..3) says the
/// leaf entries are at that level (0 = no hint). The length follows SMMUv3 (Arm IHI 0070 §4.4, CMD_TLBI_* Range):
/// (NUM + 1) × 2^SCALE granules, SCALE 5 bits. With <see cref="CpuEncoding"/> it follows the Arm ARM TLBI RVA*
/// operations instead: (NUM + 1) × 2^(5 × SCALE + 1) granules, SCALE 2 bits.
/// </summary>
public readonly record struct TlbiRange(int Tg, int Num, int Scale, int Ttl, bool CpuEncoding = false)
{
    /// <summary>A single address (TG = 0): what a non-range TLBI means.</summary>
    public static readonly TlbiRange Single = default;

    public bool IsRange => Tg is >= 1 and <= 3;

    /// <summary>Granule of the range: TG 1 → 4K, 2 → 16K, 3 → 64K.</summary>
    public Granule Granule => Tg switch { 2 => Granule.Size16K, 3 => Granule.Size64K, _ => Granule.Size4K };

    /// <summary>Log2 of the multiplier of (NUM + 1) granules.</summary>
    public int ScaleShift => CpuEncoding ? 5 * (Scale & 3) + 1 : Scale & 31;

    /// <summary>Length in bytes, saturated at 2^64 − 1.</summary>
    public ulong Length
    {
        get
        {
            if (!IsRange) return 1;
            var shift = ScaleShift + (int)Granule;
            var pages = (ulong)(Num & 31) + 1;
            if (shift >= 64 || (pages << shift) >> shift != pages) return ulong.MaxValue;
            return pages << shift;
        }
    }

    /// <summary>
    /// The SMMUv3 range command for <paramref name="pages"/> granules when one command can say it (SCALE = lowest set
    /// bit, NUM + 1 = what remains, at most 32 — the split Linux's arm-smmu-v3 driver makes), else null.
    /// </summary>
    public static TlbiRange? ForPages(Granule granule, ulong pages, int ttl = 0)
    {
        if (pages == 0) return null;
        var tg = granule switch { Granule.Size16K => 2, Granule.Size64K => 3, _ => 1 };
        var scale = BitOperations.TrailingZeroCount(pages);
        var num = pages >> scale;
        if (num > 32 || scale > 31) return null;
        return new TlbiRange(tg, (int)num - 1, scale, ttl);
    }
}

/// <summary>
/// The IOTLB: leaf translations keyed as hardware keys them — VMID, ASID (or global), input block address and
/// block size (granule and level are kept in the entry) — and a walk cache of table descriptors (stage 1 tagged
/// VMID + ASID, stage 2 tagged VMID). Set-associative: one array of sets shared by every block size; a lookup
/// probes one set per block size in use (a bit mask of sizes), so it costs a few compares and no allocation.
/// Replacement inside a set is not-recently-used (a clock over per-way referenced bits), never flush-all.
/// <para>
/// Invalidation of everything, of a VMID, of a VMID's stage 1 and of an ASID costs O(1) of the IOTLB size: each
/// scope (all, VMID, VMID stage 1, VMID + ASID) records the tick at which it was last invalidated, each entry the
/// tick at which it was inserted, and an entry older than any scope covering it is dead (its way is free). Live
/// counts are kept per scope so <see cref="Count"/> and <see cref="Invalidated"/> stay exact.
/// </para>
/// </summary>
[SkipLocalsInit]
public sealed class Iotlb
{
    const ulong TopByte = 0xFF00_0000_0000_0000UL;
    const int MaxScopes = 1 << 16; // beyond: everything is invalidated and the scope tables restart (over-invalidation is allowed)

    readonly int _ways;
    /// <summary>Eight ways compared as two 256-bit vectors.</summary>
    readonly bool _vector8;
    readonly int _setShift;
    readonly ulong[] _tags;      // ((InputBase >> size) << 6) | size; 0 = empty way
    readonly TlbEntry[] _entries;
    readonly int[] _vScope;      // VMID scope of the way
    readonly int[] _aScope;      // ASID scope of the way, -1 when none (global or stage-2-only entries)
    readonly byte[] _referenced;
    readonly byte[] _hand;       // per-set clock hand
    readonly int[] _sizeCount = new int[64]; // ways occupied (live or dead) per block size
    ulong _sizesInUse;
    int _stage2Derived;          // occupied ways with a stage 2 whose key is not their IPA (nested)
    int _mru = -1;               // way of the last hit: DMA streams reuse the same page, checked before any set probe

    // Scopes. Tick 0 is "never"; every scope invalidation takes a new tick.
    ulong _tick = 1;
    ulong _allAt;
    readonly Dictionary<ushort, int> _vmidScopes = [];
    readonly Dictionary<uint, int> _asidScopes = [];
    VmidScope[] _vmids = new VmidScope[4];
    AsidScope[] _asids = new AsidScope[4];
    int _vmidCount, _asidCount;
    // The last context inserted: skips the scope dictionaries while one stream keeps missing.
    ushort _lastVmid = ushort.MaxValue, _lastAsid = ushort.MaxValue;
    int _lastV = -1, _lastA = -1;

    struct VmidScope
    {
        public ushort Vmid;
        public ulong At, S1At, CountsAt;
        public int Live, LiveS1;
    }

    struct AsidScope
    {
        public int Vmid;         // its VMID scope
        public ulong At, CountsAt;
        public int Live;
    }

    // Walk cache: 64 sets of 4 ways.
    const int WalkWays = 4;
    const int WalkSetShift = 64 - 6;
    readonly WalkCacheEntry[] _walk = new WalkCacheEntry[64 * WalkWays];
    readonly bool[] _walkUsed = new bool[64 * WalkWays];
    readonly ulong[] _walkStamp = new ulong[64 * WalkWays];
    readonly int[] _walkV = new int[64 * WalkWays];
    readonly int[] _walkA = new int[64 * WalkWays];
    readonly byte[] _walkHand = new byte[64];

    /// <param name="sets">Number of sets (power of two, ≥ 2).</param>
    /// <param name="ways">Ways per set (1..16).</param>
    public Iotlb(int sets = 512, int ways = 8)
    {
        if (sets < 2 || !BitOperations.IsPow2(sets)) throw new ArgumentOutOfRangeException(nameof(sets), "sets must be a power of two >= 2");
        if (ways is < 1 or > 16) throw new ArgumentOutOfRangeException(nameof(ways), "ways must be 1..16");
        _ways = ways;
        _vector8 = ways == 8 && Vector256.IsHardwareAccelerated;
        _setShift = 64 - BitOperations.Log2((uint)sets);
        _tags = new ulong[sets * ways];
        _entries = new TlbEntry[sets * ways];
        _vScope = new int[sets * ways];
        _aScope = new int[sets * ways];
        _referenced = new byte[sets * ways];
        _hand = new byte[sets];
    }

    public int Capacity => _tags.Length;
    /// <summary>Live leaf entries.</summary>
    public int Count { get; private set; }
    public long Hits { get; private set; }
    public long Misses { get; private set; }
    /// <summary>Valid entries replaced because their set was full.</summary>
    public long Evictions { get; private set; }
    /// <summary>Leaf entries removed by invalidation commands.</summary>
    public long Invalidated { get; private set; }
    /// <summary>Walk-cache lookups that found a table descriptor.</summary>
    public long WalkHits { get; private set; }

    public void ResetCounters() { Hits = 0; Misses = 0; Evictions = 0; Invalidated = 0; WalkHits = 0; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong Tag(ulong address, int sizeLog2) => ((address >> sizeLog2) << 6) | (uint)sizeLog2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    int SetBase(ulong tag, ushort vmid) => (int)(((tag ^ ((ulong)vmid << 58) ^ vmid) * 0x9E37_79B9_7F4A_7C15UL) >> _setShift) * _ways;

    // ----- scopes -----

    /// <summary>An occupied way whose entry no invalidation has reached since it was inserted.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    bool Live(int i) => Live(i, ref _entries[i]);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    bool Live(int i, ref TlbEntry e) => e.InsertTick == _tick || LiveSlow(i, e.InsertTick, e.HasStage1); // inserted since the last invalidation of any scope

    bool LiveSlow(int i, ulong s, bool stage1)
    {
        if (s < _allAt) return false;
        ref var v = ref _vmids[_vScope[i]];
        if (s < v.At) return false;
        if (stage1 && s < v.S1At) return false;
        var a = _aScope[i];
        return a < 0 || s >= _asids[a].At;
    }

    ref VmidScope VmidCounts(int v)
    {
        ref var s = ref _vmids[v];
        if (s.CountsAt < _allAt) { s.Live = 0; s.LiveS1 = 0; s.CountsAt = _tick; }
        return ref s;
    }

    ref AsidScope AsidCounts(int a)
    {
        ref var s = ref _asids[a];
        ref var v = ref _vmids[s.Vmid];
        if (s.CountsAt < _allAt || s.CountsAt < v.At || s.CountsAt < v.S1At) { s.Live = 0; s.CountsAt = _tick; }
        return ref s;
    }

    int VmidScopeOf(ushort vmid, bool create)
    {
        if (_vmidScopes.TryGetValue(vmid, out var v)) return v;
        if (!create) return -1;
        if (_vmidCount == _vmids.Length) Array.Resize(ref _vmids, _vmids.Length * 2);
        v = _vmidCount++;
        _vmids[v] = new VmidScope { Vmid = vmid, CountsAt = _tick };
        _vmidScopes[vmid] = v;
        return v;
    }

    int AsidScopeOf(ushort vmid, ushort asid, bool create)
    {
        var key = (uint)vmid << 16 | asid;
        if (_asidScopes.TryGetValue(key, out var a)) return a;
        if (!create) return -1;
        if (_asidCount == _asids.Length) Array.Resize(ref _asids, _asids.Length * 2);
        a = _asidCount++;
        _asids[a] = new AsidScope { Vmid = VmidScopeOf(vmid, true), CountsAt = _tick };
        _asidScopes[key] = a;
        return a;
    }

    /// <summary>The scopes of a new entry (after making room in the scope tables if they are full).</summary>
    void ScopesFor(ushort vmid, ushort asid, bool asidTagged, out int v, out int a)
    {
        if (_vmidCount >= MaxScopes || _asidCount >= MaxScopes) RestartScopes();
        if (vmid == _lastVmid && _lastV >= 0 && (!asidTagged || (asid == _lastAsid && _lastA >= 0)))
        {
            v = _lastV;
            a = asidTagged ? _lastA : -1;
            return;
        }
        v = VmidScopeOf(vmid, true);
        a = asidTagged ? AsidScopeOf(vmid, asid, true) : -1;
        if (vmid != _lastVmid) _lastA = -1; // the cached ASID scope belonged to another VMID
        _lastVmid = vmid; _lastV = v;
        if (asidTagged) { _lastAsid = asid; _lastA = a; }
    }

    /// <summary>Too many distinct contexts: everything goes (over-invalidation) and the scope tables start again.</summary>
    void RestartScopes()
    {
        InvalidateAll();
        Array.Clear(_tags);
        Array.Clear(_walkUsed);
        Array.Clear(_sizeCount);
        _sizesInUse = 0;
        _stage2Derived = 0;
        _vmidScopes.Clear();
        _asidScopes.Clear();
        _vmidCount = 0;
        _asidCount = 0;
        _lastV = _lastA = -1;
    }

    // ----- leaf entries -----

    /// <summary>Finds the entry translating <paramref name="input"/> (the walker's <see cref="PageTableWalker.TlbInput"/> form) for the VMID and ASID. Allocates nothing.</summary>
    public bool TryLookup(ushort vmid, ushort asid, ulong input, out TlbEntry entry)
    {
        ref var e = ref Find(vmid, asid, input);
        if (Unsafe.IsNullRef(ref e))
        {
            entry = default;
            return false;
        }
        entry = e;
        return true;
    }

    /// <summary>
    /// The lookup without a copy: the live entry translating <paramref name="input"/>, or a null reference on a miss
    /// (test with <see cref="Unsafe.IsNullRef{T}(ref readonly T)"/>). Counts the hit or miss as <see cref="TryLookup"/> does.
    /// The reference is valid until the next insert or invalidation.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref TlbEntry Find(ushort vmid, ushort asid, ulong input)
    {
        // The MRU way, then the set of each block size in use.
        ref var m = ref FindLastHit(vmid, asid, input);
        return ref Unsafe.IsNullRef(ref m) ? ref FindInSets(vmid, asid, input) : ref m;
    }

    /// <summary>The last-hit way when it translates <paramref name="input"/> for these tags (counted as a hit), else a null reference.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    ref TlbEntry FindLastHit(ushort vmid, ushort asid, ulong input)
    {
        var mru = _mru;
        var entries = _entries;
        // Every invalidation forgets the MRU way, so it is live whenever set.
        if ((uint)mru < (uint)entries.Length)
        {
            ref var m = ref entries[mru];
            if (input - m.InputBase <= m.OffsetMask && m.Vmid == vmid && (m.Global || m.Asid == asid))
            {
                Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_referenced), mru) = 1;
                Hits++;
                return ref m;
            }
        }
        return ref Unsafe.NullRef<TlbEntry>();
    }

    /// <summary>
    /// As <see cref="Find(ushort, ushort, ulong)"/>, first trying the way <paramref name="hint"/> names (a caller's
    /// per-context lookup hint, e.g. <see cref="TranslationContext"/>'s): a hint is only an index, every hit through it
    /// is checked as a set probe would check it (occupied, covering the input, same tags, live), so a stale hint costs
    /// a probe and never a wrong answer. The hint is updated to the way found.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref TlbEntry Find(ref int hint, ushort vmid, ushort asid, ulong input)
    {
        var h = hint;
        var entries = _entries;
        if ((uint)h < (uint)entries.Length)
        {
            ref var e = ref entries[h];
            if (input - e.InputBase <= e.OffsetMask && e.Vmid == vmid && (e.Global || e.Asid == asid)
                && Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_tags), h) != 0 && e.InsertTick == _tick)
            {
                Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_referenced), h) = 1;
                Hits++;
                return ref e;
            }
        }
        return ref FindAndHint(ref hint, vmid, asid, input);
    }

    /// <summary>As <see cref="Find(ushort, ushort, ulong)"/>, with only the last-hit way inline (the set probes out of line): for a caller
    /// whose frame should stay small.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref TlbEntry FindLastHitFirst(ushort vmid, ushort asid, ulong input)
    {
        ref var m = ref FindLastHit(vmid, asid, input);
        return ref Unsafe.IsNullRef(ref m) ? ref FindInSetsOutOfLine(vmid, asid, input) : ref m;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    ref TlbEntry FindInSetsOutOfLine(ushort vmid, ushort asid, ulong input) => ref FindInSets(vmid, asid, input);

    [MethodImpl(MethodImplOptions.NoInlining)]
    ref TlbEntry FindAndHint(ref int hint, ushort vmid, ushort asid, ulong input)
    {
        ref var e = ref Find(vmid, asid, input);
        if (!Unsafe.IsNullRef(ref e))
            hint = (int)(Unsafe.ByteOffset(ref MemoryMarshal.GetArrayDataReference(_entries), ref e) / Unsafe.SizeOf<TlbEntry>());
        return ref e;
    }

    /// <summary>
    /// Every block size in use, every matching way (several sizes, tag aliases across contexts, entries older than an
    /// invalidation). The common case — eight ways compared as vectors, and a matching entry inserted since the last
    /// invalidation — runs here without calls; anything else (another way count, an entry an invalidation may have
    /// reached) restarts in <see cref="FindInSetsChecked"/>, so this loop keeps its registers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // the callers (TryLookup, a hint miss) are not the hinted hot path
    ref TlbEntry FindInSets(ushort vmid, ushort asid, ulong input)
    {
        if (!_vector8) return ref FindInSetsChecked(vmid, asid, input);
        ref var entries = ref MemoryMarshal.GetArrayDataReference(_entries);
        ref var tags = ref MemoryMarshal.GetArrayDataReference(_tags);
        var sizes = _sizesInUse;
        var tick = _tick;
        while (sizes != 0)
        {
            var s = BitOperations.TrailingZeroCount(sizes);
            sizes &= sizes - 1;
            var tag = Tag(input, s);
            var b = SetBase(tag, vmid);
            // All eight tags of the set in two compares; then only the matching ways are checked.
            var t = Vector256.Create(tag);
            var match = Vector256.Equals(Vector256.LoadUnsafe(ref tags, (nuint)b), t).ExtractMostSignificantBits()
                        | (Vector256.Equals(Vector256.LoadUnsafe(ref tags, (nuint)(b + 4)), t).ExtractMostSignificantBits() << 4);
            while (match != 0)
            {
                var i = b + BitOperations.TrailingZeroCount(match);
                match &= match - 1;
                ref var e = ref Unsafe.Add(ref entries, i);
                if (e.Vmid != vmid || !(e.Global || e.Asid == asid)) continue;
                if (e.InsertTick != tick) return ref FindInSetsChecked(vmid, asid, input);
                return ref Hit(i, ref e);
            }
        }
        Misses++;
        return ref Unsafe.NullRef<TlbEntry>();
    }

    /// <summary>The general probe: any way count, each candidate checked against the invalidation scopes.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    ref TlbEntry FindInSetsChecked(ushort vmid, ushort asid, ulong input)
    {
        ref var entries = ref MemoryMarshal.GetArrayDataReference(_entries);
        var sizes = _sizesInUse;
        ref var tags = ref MemoryMarshal.GetArrayDataReference(_tags);
        while (sizes != 0)
        {
            var s = BitOperations.TrailingZeroCount(sizes);
            sizes &= sizes - 1;
            var tag = Tag(input, s);
            var b = SetBase(tag, vmid);
            for (var w = 0; w < _ways; w++)
            {
                var i = b + w;
                if (Unsafe.Add(ref tags, i) != tag) continue;
                ref var e = ref Unsafe.Add(ref entries, i);
                if (e.Vmid == vmid && (e.Global || e.Asid == asid) && Live(i, ref e))
                    return ref Hit(i, ref e);
            }
        }
        Misses++;
        return ref Unsafe.NullRef<TlbEntry>();
    }

    ref TlbEntry Hit(int i, ref TlbEntry e)
    {
        Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_referenced), i) = 1;
        _mru = i;
        Hits++;
        return ref e;
    }

    /// <summary>Caches a translation. An entry with the same key is replaced; a full set loses its not-recently-used way.</summary>
    public void Insert(in TlbEntry e)
    {
        int s = e.SizeLog2;
        if (s is < 12 or > 63) return;
        ScopesFor(e.Vmid, e.Asid, e.HasStage1 && !e.Global, out var v, out var a);
        var tag = Tag(e.InputBase, s);
        var b = SetBase(tag, e.Vmid);
        var free = -1;
        for (var w = 0; w < _ways; w++)
        {
            var i = b + w;
            if (_tags[i] == 0) { if (free < 0) free = i; continue; }
            if (!Live(i))
            {
                Reclaim(i);
                if (free < 0) free = i;
                continue;
            }
            if (_tags[i] == tag && _entries[i].Vmid == e.Vmid && _entries[i].Global == e.Global && (e.Global || _entries[i].Asid == e.Asid))
            {
                Remove(i);
                free = i;
                break;
            }
        }
        if (free < 0)
        {
            // Clock: skip (and clear) referenced ways; bounded by two turns.
            var set = b / _ways;
            var hand = _hand[set];
            for (var n = 0; n < 2 * _ways; n++)
            {
                var i = b + hand;
                hand = (byte)((hand + 1) % _ways);
                if (_referenced[i] == 0) { free = i; break; }
                _referenced[i] = 0;
            }
            if (free < 0) free = b + hand;
            _hand[set] = hand;
            Remove(free);
            Evictions++;
        }
        _tags[free] = tag;
        _entries[free] = e;
        _entries[free].InsertTick = _tick;
        _vScope[free] = v;
        _aScope[free] = a;
        _referenced[free] = 0;
        if (_sizeCount[s]++ == 0) _sizesInUse |= 1UL << s;
        if (e.HasStage2 && e.HasStage1) _stage2Derived++;
        Count++;
        ref var vs = ref VmidCounts(v);
        vs.Live++;
        if (e.HasStage1) vs.LiveS1++;
        if (a >= 0) AsidCounts(a).Live++;
    }

    /// <summary>Frees an occupied way whose entry is already dead (its counts were dropped with its scope).</summary>
    void Reclaim(int i)
    {
        if (i == _mru) _mru = -1;
        int s = _entries[i].SizeLog2;
        if (--_sizeCount[s] == 0) _sizesInUse &= ~(1UL << s);
        if (_entries[i].HasStage2 && _entries[i].HasStage1) _stage2Derived--;
        _tags[i] = 0;
    }

    /// <summary>Removes an occupied way: a live entry leaves the counts, a dead one only frees its way.</summary>
    void Remove(int i)
    {
        if (_tags[i] == 0) return;
        if (Live(i))
        {
            Count--;
            ref var vs = ref VmidCounts(_vScope[i]);
            vs.Live--;
            if (_entries[i].HasStage1) vs.LiveS1--;
            if (_aScope[i] >= 0) AsidCounts(_aScope[i]).Live--;
        }
        Reclaim(i);
    }

    void Invalidate(int i)
    {
        Remove(i);
        Invalidated++;
    }

    /// <summary>Everything, leaf and walk entries (CMD_TLBI_NSNH_ALL / TLBIALLNSNH). O(1).</summary>
    public void InvalidateAll()
    {
        Invalidated += Count;
        Count = 0;
        _allAt = ++_tick;
        _mru = -1;
    }

    /// <summary>Every entry of a VMID, stage 1 and stage 2, leaf and walk (CMD_TLBI_S12_VMALL). O(1).</summary>
    public void InvalidateByVmid(ushort vmid)
    {
        _mru = -1;
        var v = VmidScopeOf(vmid, false);
        if (v < 0) return;
        ref var s = ref VmidCounts(v);
        Count -= s.Live;
        Invalidated += s.Live;
        s.Live = 0;
        s.LiveS1 = 0;
        s.At = ++_tick;
        s.CountsAt = _tick;
    }

    /// <summary>Every stage-1 (and combined) entry of a VMID, with its stage-1 walk entries, keeping stage-2-only ones (CMD_TLBI_NH_ALL). O(1).</summary>
    public void InvalidateStage1ByVmid(ushort vmid)
    {
        _mru = -1;
        var v = VmidScopeOf(vmid, false);
        if (v < 0) return;
        ref var s = ref VmidCounts(v);
        Count -= s.LiveS1;
        Invalidated += s.LiveS1;
        s.Live -= s.LiveS1;
        s.LiveS1 = 0;
        s.S1At = ++_tick;
        s.CountsAt = _tick;
    }

    /// <summary>Non-global stage-1 entries of one ASID in a VMID, and its stage-1 walk entries; global entries stay (CMD_TLBI_NH_ASID). O(1).</summary>
    public void InvalidateByAsid(ushort vmid, ushort asid)
    {
        _mru = -1;
        var a = AsidScopeOf(vmid, asid, false);
        if (a < 0) return;
        ref var s = ref AsidCounts(a);
        ref var vs = ref VmidCounts(s.Vmid);
        Count -= s.Live;
        Invalidated += s.Live;
        vs.Live -= s.Live;
        vs.LiveS1 -= s.Live;
        s.Live = 0;
        s.At = ++_tick;
        s.CountsAt = _tick;
        vs.CountsAt = _tick;
    }

    /// <summary>Stage-1 entries translating <paramref name="va"/> for the ASID, and global ones (CMD_TLBI_NH_VA). Leaf = 0 also removes the ASID's walk entries for it.</summary>
    public void InvalidateByVa(ushort vmid, ushort asid, ulong va, bool leafOnly) =>
        InvalidateVa(vmid, asid, false, va, TlbiRange.Single, leafOnly);

    /// <summary>Stage-1 entries translating <paramref name="va"/> whatever their ASID (CMD_TLBI_NH_VAA).</summary>
    public void InvalidateByVaAllAsids(ushort vmid, ulong va, bool leafOnly) =>
        InvalidateVa(vmid, 0, true, va, TlbiRange.Single, leafOnly);

    /// <summary>CMD_TLBI_NH_VA with a range (TG/NUM/SCALE/TTL).</summary>
    public void InvalidateByVaRange(ushort vmid, ushort asid, ulong va, TlbiRange range, bool leafOnly) =>
        InvalidateVa(vmid, asid, false, va, range, leafOnly);

    /// <summary>CMD_TLBI_NH_VAA with a range.</summary>
    public void InvalidateByVaRangeAllAsids(ushort vmid, ulong va, TlbiRange range, bool leafOnly) =>
        InvalidateVa(vmid, 0, true, va, range, leafOnly);

    /// <summary>Stage-2 entries translating <paramref name="ipa"/>, and combined entries derived from it (CMD_TLBI_S2_IPA).</summary>
    public void InvalidateByIpa(ushort vmid, ulong ipa, bool leafOnly) => InvalidateByIpaRange(vmid, ipa, TlbiRange.Single, leafOnly);

    /// <summary>CMD_TLBI_S2_IPA with a range: every stage-2 leaf overlapping the range goes, with the combined entries built on it (and, with Leaf = 0, the stage-2 walk entries).</summary>
    public void InvalidateByIpaRange(ushort vmid, ulong ipa, TlbiRange range, bool leafOnly)
    {
        _mru = -1;
        var start = range.IsRange ? ipa & ~(range.Granule.Bytes() - 1) : ipa;
        var length = range.Length;
        var last = length - 1 > ulong.MaxValue - start ? ulong.MaxValue : start + (length - 1);
        if (!leafOnly) InvalidateWalks(TranslationStage.Stage2, vmid, 0, true, start, last, range);
        if (_stage2Derived == 0 && !range.IsRange)
        {
            // Only stage-2-only entries can match: they are keyed by their IPA, probe their sets.
            ProbeSets(vmid, start, stage2Key: true, asid: 0, allAsids: true);
            return;
        }
        for (var i = 0; i < _tags.Length; i++)
        {
            if (_tags[i] == 0) continue;
            ref var e = ref _entries[i];
            if (e.Vmid != vmid || !e.HasStage2 || !Live(i)) continue;
            var blockMask = (1UL << e.Stage2SizeLog2) - 1;
            var blockStart = e.IpaBase & ~blockMask;
            var blockLast = blockStart + blockMask;
            if (blockLast < start || blockStart > last) continue;
            if (range.IsRange && range.Ttl != 0 && e.Granule == range.Granule && e.Stage2Level != range.Ttl) continue;
            Invalidate(i);
        }
    }

    /// <summary>Removes the entries keyed by <paramref name="address"/> in the one set per block size that could hold them.</summary>
    void ProbeSets(ushort vmid, ulong address, bool stage2Key, ushort asid, bool allAsids)
    {
        var sizes = _sizesInUse;
        while (sizes != 0)
        {
            var s = BitOperations.TrailingZeroCount(sizes);
            sizes &= sizes - 1;
            var tag = Tag(address, s);
            var b = SetBase(tag, vmid);
            for (var w = 0; w < _ways; w++)
            {
                var i = b + w;
                if (_tags[i] != tag) continue;
                ref var e = ref _entries[i];
                if (e.Vmid != vmid) continue;
                if (stage2Key ? (e.HasStage1 || !e.HasStage2) : !e.HasStage1) continue;
                if (!stage2Key && !allAsids && !e.Global && e.Asid != asid) continue;
                if (Live(i)) Invalidate(i);
            }
        }
    }

    void InvalidateVa(ushort vmid, ushort asid, bool allAsids, ulong va, TlbiRange range, bool leafOnly)
    {
        _mru = -1;
        // Entries hold canonical addresses: the top byte is a copy of bit 55 (TBI or not), so the command's top byte is ignored.
        va = (va & (1UL << 55)) != 0 ? va | TopByte : va & ~TopByte;
        var start = range.IsRange ? va & ~(range.Granule.Bytes() - 1) : va;
        var length = range.Length;
        var last = length - 1 > ulong.MaxValue - start ? ulong.MaxValue : start + (length - 1);
        if (!leafOnly) InvalidateWalks(TranslationStage.Stage1, vmid, asid, allAsids, start, last, range);
        if (!range.IsRange)
        {
            ProbeSets(vmid, va, stage2Key: false, asid, allAsids);
            return;
        }
        for (var i = 0; i < _tags.Length; i++)
        {
            if (_tags[i] == 0) continue;
            ref var e = ref _entries[i];
            if (e.Vmid != vmid || !e.HasStage1) continue;
            if (!allAsids && !e.Global && e.Asid != asid) continue;
            var entryLast = e.InputBase + e.OffsetMask;
            if (entryLast < start || e.InputBase > last) continue;
            if (range.Ttl != 0 && e.Granule == range.Granule && e.Level != range.Ttl) continue;
            if (Live(i)) Invalidate(i);
        }
    }

    // ----- walk cache -----

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int WalkSet(in WalkCacheEntry k) =>
        (int)(((k.Prefix ^ ((ulong)k.Vmid << 40) ^ ((ulong)k.Asid << 24) ^ ((ulong)(byte)k.Level << 56) ^ ((ulong)k.Stage << 60) ^ (ulong)k.Granule)
               * 0x9E37_79B9_7F4A_7C15UL) >> WalkSetShift) * WalkWays;

    bool WalkLive(int i)
    {
        var s = _walkStamp[i];
        if (s < _allAt) return false;
        ref var v = ref _vmids[_walkV[i]];
        if (s < v.At) return false;
        if (_walk[i].Stage == TranslationStage.Stage1 && (s < v.S1At || s < _asids[_walkA[i]].At)) return false;
        return true;
    }

    static bool SameKey(in WalkCacheEntry a, in WalkCacheEntry b) =>
        a.Prefix == b.Prefix && a.Level == b.Level && a.Stage == b.Stage && a.Vmid == b.Vmid && a.Granule == b.Granule
        && a.Root == b.Root && (a.Stage == TranslationStage.Stage2 || a.Asid == b.Asid);

    /// <summary>Looks up a cached table descriptor (key fields of <paramref name="entry"/>); fills the entry on a hit.</summary>
    public bool TryGetTable(ref WalkCacheEntry entry)
    {
        var b = WalkSet(entry);
        for (var w = 0; w < WalkWays; w++)
        {
            var i = b + w;
            if (!_walkUsed[i] || !SameKey(_walk[i], entry)) continue;
            if (!WalkLive(i)) { _walkUsed[i] = false; continue; }
            entry = _walk[i];
            WalkHits++;
            return true;
        }
        return false;
    }

    /// <summary>Caches a table descriptor read by a walk.</summary>
    public void PutTable(in WalkCacheEntry entry)
    {
        var stage1 = entry.Stage == TranslationStage.Stage1;
        ScopesFor(entry.Vmid, entry.Asid, stage1, out var v, out var a);
        var b = WalkSet(entry);
        var slot = -1;
        for (var w = 0; w < WalkWays; w++)
        {
            var i = b + w;
            if (_walkUsed[i] && SameKey(_walk[i], entry)) { slot = i; break; }
            if (slot < 0 && (!_walkUsed[i] || !WalkLive(i))) slot = i;
        }
        if (slot < 0)
        {
            var set = b / WalkWays;
            slot = b + _walkHand[set];
            _walkHand[set] = (byte)((_walkHand[set] + 1) % WalkWays);
        }
        _walk[slot] = entry;
        _walkUsed[slot] = true;
        _walkStamp[slot] = _tick;
        _walkV[slot] = v;
        _walkA[slot] = stage1 ? a : -1;
    }

    /// <summary>Live walk entries (for reports and tests).</summary>
    public int WalkCount
    {
        get
        {
            var n = 0;
            for (var i = 0; i < _walk.Length; i++) if (_walkUsed[i] && WalkLive(i)) n++;
            return n;
        }
    }

    /// <summary>
    /// Leaf = 0 invalidation of table descriptors overlapping [start, last]. With a TTL hint (range form) table
    /// descriptors at levels from the hint down need not go, and stay (IHI 0070 §4.4.1.1).
    /// </summary>
    void InvalidateWalks(TranslationStage stage, ushort vmid, ushort asid, bool allAsids, ulong start, ulong last, TlbiRange range)
    {
        for (var i = 0; i < _walk.Length; i++)
        {
            if (!_walkUsed[i]) continue;
            ref var e = ref _walk[i];
            if (e.Stage != stage || e.Vmid != vmid || (!allAsids && e.Asid != asid)) continue;
            var shift = WalkCacheEntry.BlockShift(e.Granule, e.Level);
            var first = shift >= 64 ? 0 : e.Prefix << shift;
            var end = shift >= 64 ? ulong.MaxValue : first + ((1UL << shift) - 1);
            if (end < start || first > last) continue;
            if (range.IsRange && range.Ttl != 0 && e.Granule == range.Granule && e.Level >= range.Ttl) continue;
            _walkUsed[i] = false;
        }
    }
}
