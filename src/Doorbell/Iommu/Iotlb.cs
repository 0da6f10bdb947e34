using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Doorbell.Vmsa;

namespace Doorbell.Iommu;

// Known limits (details in docs/deviations.md):
// - Leaf translations only (no walk caches): leaf-only and all-levels invalidations remove the same entries.
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
/// block size (granule and level are kept in the entry). Set-associative: one array of sets shared by every block
/// size; a lookup probes one set per block size in use (a bit mask of sizes), so it costs a few compares and no
/// allocation. Replacement inside a set is not-recently-used (a clock over per-way referenced bits), never flush-all.
/// </summary>
[SkipLocalsInit]
public sealed class Iotlb
{
    const ulong TopByte = 0xFF00_0000_0000_0000UL;

    readonly int _ways;
    readonly int _setShift;
    readonly ulong[] _tags;      // ((InputBase >> size) << 6) | size; 0 = empty way
    readonly TlbEntry[] _entries;
    readonly byte[] _referenced;
    readonly byte[] _hand;       // per-set clock hand
    readonly int[] _sizeCount = new int[64];
    ulong _sizesInUse;
    int _stage2Derived;          // entries with a stage 2 whose key is not their IPA (nested)
    int _mru = -1;               // way of the last hit: DMA streams reuse the same page, checked before any set probe

    /// <param name="sets">Number of sets (power of two, ≥ 2).</param>
    /// <param name="ways">Ways per set (1..16).</param>
    public Iotlb(int sets = 512, int ways = 8)
    {
        if (sets < 2 || !BitOperations.IsPow2(sets)) throw new ArgumentOutOfRangeException(nameof(sets), "sets must be a power of two >= 2");
        if (ways is < 1 or > 16) throw new ArgumentOutOfRangeException(nameof(ways), "ways must be 1..16");
        _ways = ways;
        _setShift = 64 - BitOperations.Log2((uint)sets);
        _tags = new ulong[sets * ways];
        _entries = new TlbEntry[sets * ways];
        _referenced = new byte[sets * ways];
        _hand = new byte[sets];
    }

    public int Capacity => _tags.Length;
    public int Count { get; private set; }
    public long Hits { get; private set; }
    public long Misses { get; private set; }
    /// <summary>Valid entries replaced because their set was full.</summary>
    public long Evictions { get; private set; }
    /// <summary>Entries removed by invalidation commands.</summary>
    public long Invalidated { get; private set; }

    public void ResetCounters() { Hits = 0; Misses = 0; Evictions = 0; Invalidated = 0; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ulong Tag(ulong address, int sizeLog2) => ((address >> sizeLog2) << 6) | (uint)sizeLog2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    int SetBase(ulong tag, ushort vmid) => (int)(((tag ^ ((ulong)vmid << 58) ^ vmid) * 0x9E37_79B9_7F4A_7C15UL) >> _setShift) * _ways;

    /// <summary>Finds the entry translating <paramref name="input"/> (the walker's <see cref="PageTableWalker.TlbInput"/> form) for the VMID and ASID. Allocates nothing.</summary>
    public bool TryLookup(ushort vmid, ushort asid, ulong input, out TlbEntry entry)
    {
        var mru = _mru;
        if (mru >= 0)
        {
            ref var m = ref _entries[mru];
            if (input - m.InputBase <= m.OffsetMask && m.Vmid == vmid && (m.Global || m.Asid == asid))
            {
                _referenced[mru] = 1;
                Hits++;
                entry = m;
                return true;
            }
        }
        var sizes = _sizesInUse;
        ref var tags = ref MemoryMarshal.GetArrayDataReference(_tags);
        ref var entries = ref MemoryMarshal.GetArrayDataReference(_entries);
        var vector = _ways == 8 && Vector256.IsHardwareAccelerated;
        while (sizes != 0)
        {
            var s = BitOperations.TrailingZeroCount(sizes);
            sizes &= sizes - 1;
            var tag = Tag(input, s);
            var b = SetBase(tag, vmid);
            if (vector)
            {
                // All eight tags of the set in two compares; then only the matching ways are checked.
                var t = Vector256.Create(tag);
                var match = Vector256.Equals(Vector256.LoadUnsafe(ref tags, (nuint)b), t).ExtractMostSignificantBits()
                            | (Vector256.Equals(Vector256.LoadUnsafe(ref tags, (nuint)(b + 4)), t).ExtractMostSignificantBits() << 4);
                while (match != 0)
                {
                    var i = b + BitOperations.TrailingZeroCount(match);
                    match &= match - 1;
                    ref var e = ref Unsafe.Add(ref entries, i);
                    if (e.Vmid == vmid && (e.Global || e.Asid == asid))
                        return Hit(i, ref e, out entry);
                }
                continue;
            }
            for (var w = 0; w < _ways; w++)
            {
                var i = b + w;
                if (Unsafe.Add(ref tags, i) != tag) continue;
                ref var e = ref Unsafe.Add(ref entries, i);
                if (e.Vmid == vmid && (e.Global || e.Asid == asid))
                    return Hit(i, ref e, out entry);
            }
        }
        Misses++;
        entry = default;
        return false;
    }

    bool Hit(int i, ref TlbEntry e, out TlbEntry entry)
    {
        _referenced[i] = 1;
        _mru = i;
        Hits++;
        entry = e;
        return true;
    }

    /// <summary>Caches a translation. An entry with the same key is replaced; a full set loses its not-recently-used way.</summary>
    public void Insert(in TlbEntry e)
    {
        int s = e.SizeLog2;
        if (s is < 12 or > 63) return;
        var tag = Tag(e.InputBase, s);
        var b = SetBase(tag, e.Vmid);
        var free = -1;
        for (var w = 0; w < _ways; w++)
        {
            var i = b + w;
            if (_tags[i] == 0) { if (free < 0) free = i; continue; }
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
        _referenced[free] = 0;
        if (_sizeCount[s]++ == 0) _sizesInUse |= 1UL << s;
        if (e.HasStage2 && e.HasStage1) _stage2Derived++;
        Count++;
    }

    void Remove(int i)
    {
        if (_tags[i] == 0) return;
        if (i == _mru) _mru = -1;
        int s = _entries[i].SizeLog2;
        if (--_sizeCount[s] == 0) _sizesInUse &= ~(1UL << s);
        if (_entries[i].HasStage2 && _entries[i].HasStage1) _stage2Derived--;
        _tags[i] = 0;
        Count--;
    }

    void Invalidate(int i)
    {
        Remove(i);
        Invalidated++;
    }

    /// <summary>Everything (CMD_TLBI_NSNH_ALL / TLBIALLNSNH).</summary>
    public void InvalidateAll()
    {
        for (var i = 0; i < _tags.Length; i++)
            if (_tags[i] != 0) Invalidate(i);
    }

    /// <summary>Every entry of a VMID, stage 1 and stage 2 (CMD_TLBI_S12_VMALL).</summary>
    public void InvalidateByVmid(ushort vmid)
    {
        for (var i = 0; i < _tags.Length; i++)
            if (_tags[i] != 0 && _entries[i].Vmid == vmid) Invalidate(i);
    }

    /// <summary>Every stage-1 (and combined) entry of a VMID, keeping stage-2-only entries (CMD_TLBI_NH_ALL).</summary>
    public void InvalidateStage1ByVmid(ushort vmid)
    {
        for (var i = 0; i < _tags.Length; i++)
            if (_tags[i] != 0 && _entries[i].Vmid == vmid && _entries[i].HasStage1) Invalidate(i);
    }

    /// <summary>Non-global stage-1 entries of one ASID in a VMID; global entries stay (CMD_TLBI_NH_ASID).</summary>
    public void InvalidateByAsid(ushort vmid, ushort asid)
    {
        for (var i = 0; i < _tags.Length; i++)
        {
            if (_tags[i] == 0) continue;
            ref var e = ref _entries[i];
            if (e.Vmid == vmid && e.HasStage1 && !e.Global && e.Asid == asid) Invalidate(i);
        }
    }

    /// <summary>Stage-1 entries translating <paramref name="va"/> for the ASID, and global ones (CMD_TLBI_NH_VA).</summary>
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

    /// <summary>CMD_TLBI_S2_IPA with a range: every stage-2 leaf overlapping the range goes, with the combined entries built on it.</summary>
    public void InvalidateByIpaRange(ushort vmid, ulong ipa, TlbiRange range, bool leafOnly)
    {
        _ = leafOnly; // leaf-only cache: both forms remove the same entries
        var start = range.IsRange ? ipa & ~(range.Granule.Bytes() - 1) : ipa;
        var length = range.Length;
        var last = length - 1 > ulong.MaxValue - start ? ulong.MaxValue : start + (length - 1);
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
            if (e.Vmid != vmid || !e.HasStage2) continue;
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
                Invalidate(i);
            }
        }
    }

    void InvalidateVa(ushort vmid, ushort asid, bool allAsids, ulong va, TlbiRange range, bool leafOnly)
    {
        _ = leafOnly; // leaf-only cache
        // Entries hold canonical addresses: the top byte is a copy of bit 55 (TBI or not), so the command's top byte is ignored.
        va = (va & (1UL << 55)) != 0 ? va | TopByte : va & ~TopByte;
        if (!range.IsRange)
        {
            ProbeSets(vmid, va, stage2Key: false, asid, allAsids);
            return;
        }
        var start = va & ~(range.Granule.Bytes() - 1);
        var length = range.Length;
        var last = length - 1 > ulong.MaxValue - start ? ulong.MaxValue : start + (length - 1);
        for (var i = 0; i < _tags.Length; i++)
        {
            if (_tags[i] == 0) continue;
            ref var e = ref _entries[i];
            if (e.Vmid != vmid || !e.HasStage1) continue;
            if (!allAsids && !e.Global && e.Asid != asid) continue;
            var entryLast = e.InputBase + e.OffsetMask;
            if (entryLast < start || e.InputBase > last) continue;
            if (range.Ttl != 0 && e.Granule == range.Granule && e.Level != range.Ttl) continue;
            Invalidate(i);
        }
    }
}
