using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Doorbell.Runtime;

namespace Doorbell.Memory;

/// <summary>One decoded region of the physical map, for listings and reports.</summary>
public sealed record BusRegion(string Name, PhysAddr Base, ulong Size, bool IsRam)
{
    public ulong End => Base.Value + Size; // exclusive; Size > 0 and no wrap, checked at registration
}

/// <summary>An MMIO handler that can also take a bulk transfer inside its region in one call (memory that lives
/// elsewhere, such as another process's pages): the bus hands it whole ranges instead of 8-byte pieces.</summary>
public interface IBulkMmioHandler : IMmioHandler
{
    BusStatus ReadBulk(ulong offset, Span<byte> destination, in BusAttributes attributes);
    BusStatus WriteBulk(ulong offset, ReadOnlySpan<byte> source, in BusAttributes attributes);
}

/// <summary>
/// The system bus: RAM regions, each backed by an <see cref="IRamBacking"/> at an offset (by default this bus's own
/// <see cref="SparseMemory"/> with offset = physical address), and MMIO regions. Regions never overlap
/// (registration throws: that is a board-construction bug, not a guest action). Dispatch is a binary search over
/// sorted region starts, with a one-entry cache for the last MMIO region hit. Accesses to nothing return
/// <see cref="BusStatus.DecodeError"/>. It is one <see cref="IMemoryView"/>; models and drivers take the interface.
/// </summary>
public sealed class PhysicalAddressSpace : IMemoryView, IMmioMap
{
    readonly SparseMemory _store = new();
    // RAM ranges, few: linear scan of parallel arrays. A region's byte at address a is its backing's byte at
    // a + _ramDelta (wrapping arithmetic); _ramSparse is the backing when it is a SparseMemory (direct calls).
    ulong[] _ramStart = [];
    ulong[] _ramEnd = [];
    ulong[] _ramDelta = [];
    IRamBacking[] _ramBacking = [];
    SparseMemory?[] _ramSparse = [];
    // Fast path: the first RAM region when a SparseMemory backs it (every board's main RAM): one subtract and two
    // compares, then a direct call. _fastSize = 0 disables it.
    ulong _fastStart, _fastSize, _fastDelta;
    SparseMemory _fastStore = new();
    // MMIO regions sorted by start: one slot each (one bounds check per access), the starts apart for the search.
    struct MmioSlot
    {
        public ulong Start, End;
        public IMmioHandler Handler;
        public MmioAccessRules Rules;
        public bool PureRead;
    }
    ulong[] _mmioStart = [];
    MmioSlot[] _mmio = [];
    readonly List<BusRegion> _regions = [];
    // A direct-mapped cache of recently hit MMIO regions by 64 KiB granule (index + 1; 0 = empty): drivers alternate
    // between a few register blocks (GICD, GICR, ITS, SMMU, ECAM), which a single last-hit entry would thrash.
    const int MmioCacheShift = 16, MmioCacheSize = 64;
    readonly ushort[] _mmioCache = new ushort[MmioCacheSize];

    /// <summary>
    /// The default backing store of RAM added without one (address = physical address). For test benches and
    /// reports that look at the DRAM itself; models and drivers go through the bus.
    /// </summary>
    public SparseMemory Store => _store;

    public IReadOnlyList<BusRegion> Regions => _regions;

    /// <summary>
    /// The event loop MMIO accesses run under: a write that lands on MMIO while another MMIO access is running (an
    /// MSI or DMA a model issues from inside its register handler) is posted — queued and run after the outermost
    /// access returns, iteratively — so devices aimed at each other's registers never recurse. Shared by every
    /// address space of one machine (a guest's bus uses its host's loop).
    /// </summary>
    public EventLoop Loop { get; set; } = new();

    /// <summary>RAM backed by this bus's own store (offset = physical address).</summary>
    public void AddRam(PhysAddr @base, ulong size, string name = "ram") => AddRam(@base, size, _store, @base.Value, name);

    /// <summary>
    /// RAM whose byte at <paramref name="base"/> + x is <paramref name="backing"/>'s byte at <paramref name="backingOffset"/> + x:
    /// guest RAM aliasing host memory, or host pages backed by memory that lives elsewhere.
    /// </summary>
    public void AddRam(PhysAddr @base, ulong size, IRamBacking backing, ulong backingOffset, string name = "ram")
    {
        ArgumentNullException.ThrowIfNull(backing);
        CheckFree(name, @base, size);
        if (backingOffset + size < backingOffset || (backing is SparseMemory && !SparseMemory.InRange(backingOffset + size - 1)))
            throw new ArgumentException($"region '{name}' backing range [0x{backingOffset:x}, +0x{size:x}) does not fit its store", nameof(backingOffset));
        _ramStart = [.. _ramStart, @base.Value];
        _ramEnd = [.. _ramEnd, @base.Value + size];
        _ramDelta = [.. _ramDelta, unchecked(backingOffset - @base.Value)];
        _ramBacking = [.. _ramBacking, backing];
        _ramSparse = [.. _ramSparse, backing as SparseMemory];
        if (_ramStart.Length == 1 && backing is SparseMemory fast)
        {
            _fastStart = @base.Value; _fastSize = size; _fastDelta = unchecked(backingOffset - @base.Value); _fastStore = fast;
        }
        _regions.Add(new BusRegion(name, @base, size, true));
    }

    public void MapMmio(PhysAddr @base, ulong size, IMmioHandler handler, MmioAccessRules rules, string name)
    {
        ArgumentNullException.ThrowIfNull(handler);
        CheckFree(name, @base, size);
        var starts = _mmioStart.ToList();
        var idx = ~starts.BinarySearch(@base.Value);
        starts.Insert(idx, @base.Value);
        var slots = _mmio.ToList();
        slots.Insert(idx, new MmioSlot { Start = @base.Value, End = @base.Value + size, Handler = handler, Rules = rules, PureRead = handler.ReadsDeferNothing });
        _mmioStart = [.. starts]; _mmio = [.. slots];
        Array.Clear(_mmioCache);
        _regions.Add(new BusRegion(name, @base, size, false));
    }

    public void MapMmio(params ReadOnlySpan<MmioRegion> regions)
    {
        for (var i = 0; i < regions.Length; i++)
        {
            var r = regions[i];
            ArgumentNullException.ThrowIfNull(r.Handler);
            CheckFree(r.Name, r.Base, r.Size);
            for (var j = 0; j < i; j++) CheckApart(r.Name, r.Base, r.Size, regions[j].Name, regions[j].Base, regions[j].Size);
        }
        foreach (var r in regions) MapMmio(r.Base, r.Size, r.Handler, r.Rules, r.Name);
    }

    void CheckFree(string name, PhysAddr @base, ulong size)
    {
        if (size == 0)
            throw new ArgumentException($"region '{name}' has size 0", nameof(size));
        if (@base.Value + size < @base.Value || !SparseMemory.InRange(@base.Value + size - 1))
            throw new ArgumentException($"region '{name}' at {@base} size 0x{size:x} leaves the 52-bit physical space", nameof(size));
        foreach (var r in _regions) CheckApart(name, @base, size, r.Name, r.Base, r.Size);
    }

    // Both ranges are non-empty and do not wrap (checked before they are placed).
    static void CheckApart(string name, PhysAddr @base, ulong size, string other, PhysAddr otherBase, ulong otherSize)
    {
        if (@base.Value < otherBase.Value + otherSize && otherBase.Value < @base.Value + size)
            throw new ArgumentException($"region '{name}' [{@base}, +0x{size:x}) overlaps '{other}' [{otherBase}, +0x{otherSize:x})");
    }

    /// <summary>True when the whole range [address, address+length) lies in one RAM range.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsRam(ulong address, ulong length) => FindRam(address, length) >= 0;

    /// <summary>True when [address, address+length) lies in the fast-path RAM region.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    bool InFast(ulong address, ulong length)
    {
        var off = address - _fastStart;
        return off < _fastSize && _fastSize - off >= length;
    }

    /// <summary>The RAM region holding all of [address, address+length), or -1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    int FindRam(ulong address, ulong length)
    {
        var end = address + length;
        if (end < address) return -1;
        var starts = _ramStart;
        var ends = _ramEnd;
        for (var i = 0; i < starts.Length; i++)
            if (address >= starts[i] && end <= ends[i])
                return i;
        return -1;
    }

    ulong RamRead(int i, ulong a, int size)
    {
        var o = unchecked(a + _ramDelta[i]);
        if (_ramSparse[i] is { } s) return size == 8 ? s.ReadU64(o) : s.ReadSized(o, size);
        Span<byte> tmp = stackalloc byte[8];
        tmp.Clear();
        _ramBacking[i].Read(o, tmp[..size]);
        return BinaryPrimitives.ReadUInt64LittleEndian(tmp);
    }

    void RamWrite(int i, ulong a, int size, ulong value)
    {
        var o = unchecked(a + _ramDelta[i]);
        if (_ramSparse[i] is { } s)
        {
            if (size == 8) s.WriteU64(o, value); else s.WriteSized(o, size, value);
            return;
        }
        Span<byte> tmp = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(tmp, value);
        _ramBacking[i].Write(o, tmp[..size]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    int FindMmio(ulong address)
    {
        var slots = _mmio;
        var last = _mmioCache[CacheSlot(address)] - 1;
        if ((uint)last < (uint)slots.Length && address - slots[last].Start < slots[last].End - slots[last].Start)
            return last;
        return FindMmioSlow(address);
    }

    static int CacheSlot(ulong address) => (int)(address >> MmioCacheShift) & (MmioCacheSize - 1);

    int FindMmioSlow(ulong address)
    {
        var slots = _mmio;
        int lo = 0, hi = _mmioStart.Length - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            if (_mmioStart[mid] <= address) lo = mid + 1; else hi = mid - 1;
        }
        // hi = last region whose start <= address
        if (hi >= 0 && address < slots[hi].End)
        {
            if (hi < ushort.MaxValue) _mmioCache[CacheSlot(address)] = (ushort)(hi + 1);
            return hi;
        }
        return -1;
    }

    /// <summary>A single access of 1, 2, 4 or 8 bytes.</summary>
    public BusStatus Read(PhysAddr address, int size, out ulong value, in BusAttributes attributes)
    {
        var a = address.Value;
        if (size is not (1 or 2 or 4 or 8)) { value = 0; return BusStatus.SlaveError; }
        if (size == 8 && InFast(a, 8))
        {
            value = _fastStore.ReadU64(unchecked(a + _fastDelta));
            return BusStatus.Ok;
        }
        var r = FindRam(a, (ulong)size);
        if (r >= 0)
        {
            value = RamRead(r, a, size);
            return BusStatus.Ok;
        }
        var i = FindMmio(a);
        if (i < 0) { value = 0; return BusStatus.DecodeError; }
        ref readonly var m = ref _mmio[i];
        if (a + (ulong)size > m.End) { value = 0; return BusStatus.DecodeError; }
        if (!m.Rules.Allows(a, size))
        {
            value = 0;
            return m.Rules.OnViolation == MmioViolation.RazWi ? BusStatus.Ok : BusStatus.SlaveError;
        }
        // No try/finally: a register read never throws (rule 3), and the handler frame stays lean (1-2 ns per access).
        if (m.PureRead) return m.Handler.Read(a - m.Start, size, out value, attributes);
        var loop = Loop;
        loop.Enter();
        var st = m.Handler.Read(a - m.Start, size, out value, attributes);
        loop.Exit();
        return st;
    }

    /// <summary>A single access of 1, 2, 4 or 8 bytes.</summary>
    public BusStatus Write(PhysAddr address, int size, ulong value, in BusAttributes attributes)
    {
        var a = address.Value;
        if (size is not (1 or 2 or 4 or 8)) return BusStatus.SlaveError;
        if (size == 8 && InFast(a, 8))
        {
            _fastStore.WriteU64(unchecked(a + _fastDelta), value);
            return BusStatus.Ok;
        }
        var r = FindRam(a, (ulong)size);
        if (r >= 0)
        {
            RamWrite(r, a, size, value);
            return BusStatus.Ok;
        }
        var i = FindMmio(a);
        if (i < 0) return BusStatus.DecodeError;
        ref readonly var m = ref _mmio[i];
        if (a + (ulong)size > m.End) return BusStatus.DecodeError;
        if (!m.Rules.Allows(a, size))
            return m.Rules.OnViolation == MmioViolation.RazWi ? BusStatus.Ok : BusStatus.SlaveError;
        var loop = Loop;
        if (loop.InOperation)
        {
            loop.PostWrite(m.Handler, a - m.Start, size, value, attributes);
            return BusStatus.Ok;
        }
        loop.Enter();
        try { return m.Handler.Write(a - m.Start, size, value, attributes); }
        finally { loop.Exit(); }
    }

    /// <summary>Reads a 64-bit little-endian value (a descriptor or table entry fetch).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public BusStatus ReadU64(ulong address, out ulong value)
    {
        if (InFast(address, 8))
        {
            value = _fastStore.ReadU64(unchecked(address + _fastDelta));
            return BusStatus.Ok;
        }
        var r = FindRam(address, 8);
        if (r >= 0)
        {
            var s = _ramSparse[r];
            value = s is not null ? s.ReadU64(unchecked(address + _ramDelta[r])) : RamRead(r, address, 8);
            return BusStatus.Ok;
        }
        return Read(new PhysAddr(address), 8, out value, BusAttributes.Cpu);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public BusStatus WriteU64(ulong address, ulong value)
    {
        if (InFast(address, 8))
        {
            _fastStore.WriteU64(unchecked(address + _fastDelta), value);
            return BusStatus.Ok;
        }
        var r = FindRam(address, 8);
        if (r >= 0)
        {
            var s = _ramSparse[r];
            if (s is not null) s.WriteU64(unchecked(address + _ramDelta[r]), value); else RamWrite(r, address, 8, value);
            return BusStatus.Ok;
        }
        return Write(new PhysAddr(address), 8, value, BusAttributes.Cpu);
    }

    /// <inheritdoc/>
    public bool TryGetRamPage(ulong address, out byte[]? page)
    {
        page = null;
        var pageBase = address & ~(ulong)(SparseMemory.PageSize - 1);
        SparseMemory? store;
        ulong at;
        if (InFast(pageBase, SparseMemory.PageSize)) { store = _fastStore; at = unchecked(pageBase + _fastDelta); }
        else
        {
            var r = FindRam(pageBase, SparseMemory.PageSize);
            if (r < 0) return false;
            store = _ramSparse[r];
            at = unchecked(pageBase + _ramDelta[r]);
        }
        if (store is null || (at & (ulong)(SparseMemory.PageSize - 1)) != 0) return false; // not a sparse store, or not page-aligned in it
        page = store.GetOrAllocatePage(at);
        return true;
    }

    /// <inheritdoc/>
    public BusStatus UpdateU64(ulong address, ulong clear, ulong set)
    {
        if (InFast(address, 8))
        {
            _fastStore.UpdateU64(unchecked(address + _fastDelta), clear, set);
            return BusStatus.Ok;
        }
        var s = ReadU64(address, out var v);
        return s != BusStatus.Ok ? s : WriteU64(address, (v & ~clear) | set);
    }

    public BusStatus ReadU32(ulong address, out uint value)
    {
        var s = Read(new PhysAddr(address), 4, out var v, BusAttributes.Cpu);
        value = (uint)v;
        return s;
    }

    public BusStatus WriteU32(ulong address, uint value) => Write(new PhysAddr(address), 4, value, BusAttributes.Cpu);

    /// <summary>
    /// Bulk read. RAM is copied directly (crossing pages); any part in MMIO is split into naturally aligned
    /// accesses of the largest size that fits. A range that touches nothing fails with DecodeError before
    /// any byte is transferred.
    /// </summary>
    public BusStatus Read(ulong address, Span<byte> destination, in BusAttributes attributes)
    {
        if (destination.IsEmpty) return BusStatus.Ok;
        if (InFast(address, (ulong)destination.Length))
        {
            _fastStore.Read(unchecked(address + _fastDelta), destination);
            return BusStatus.Ok;
        }
        var r = FindRam(address, (ulong)destination.Length);
        if (r >= 0)
        {
            _ramBacking[r].Read(unchecked(address + _ramDelta[r]), destination);
            return BusStatus.Ok;
        }
        if (TryBulk(address, (ulong)destination.Length, out var bulk, out var offset))
            return bulk.ReadBulk(offset, destination, attributes);
        var check = CheckDecodes(address, (ulong)destination.Length);
        return check != BusStatus.Ok ? check : ReadSplit(address, destination, attributes, bestEffort: false);
    }

    /// <summary>Bulk write, with the same splitting rules as <see cref="Read(ulong, Span{byte}, in BusAttributes)"/>.</summary>
    public BusStatus Write(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes)
    {
        if (source.IsEmpty) return BusStatus.Ok;
        if (InFast(address, (ulong)source.Length))
        {
            _fastStore.Write(unchecked(address + _fastDelta), source);
            return BusStatus.Ok;
        }
        var r = FindRam(address, (ulong)source.Length);
        if (r >= 0)
        {
            _ramBacking[r].Write(unchecked(address + _ramDelta[r]), source);
            return BusStatus.Ok;
        }
        if (TryBulk(address, (ulong)source.Length, out var bulk, out var offset))
            return bulk.WriteBulk(offset, source, attributes);
        var check = CheckDecodes(address, (ulong)source.Length);
        return check != BusStatus.Ok ? check : WriteSplit(address, source, attributes, bestEffort: false);
    }

    /// <summary>
    /// Bulk read that completes what decodes: the range is split into naturally aligned accesses and any access
    /// that fails reads as zero (a debugger's or qtest's view of unassigned memory). Returns the first failure, or Ok.
    /// </summary>
    public BusStatus ReadBestEffort(ulong address, Span<byte> destination, in BusAttributes attributes)
    {
        if (destination.IsEmpty) return BusStatus.Ok;
        var r = FindRam(address, (ulong)destination.Length);
        if (r >= 0)
        {
            _ramBacking[r].Read(unchecked(address + _ramDelta[r]), destination);
            return BusStatus.Ok;
        }
        return ReadSplit(address, destination, attributes, bestEffort: true);
    }

    /// <summary>Bulk write that completes what decodes: accesses that fail are dropped. Returns the first failure, or Ok.</summary>
    public BusStatus WriteBestEffort(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes)
    {
        if (source.IsEmpty) return BusStatus.Ok;
        var r = FindRam(address, (ulong)source.Length);
        if (r >= 0)
        {
            _ramBacking[r].Write(unchecked(address + _ramDelta[r]), source);
            return BusStatus.Ok;
        }
        return WriteSplit(address, source, attributes, bestEffort: true);
    }

    /// <summary>
    /// A CPU's copy loop over device registers (what vfio-pci's and vfio-platform's region read/write do): RAM is copied;
    /// MMIO is split into naturally aligned accesses of the largest size up to <paramref name="maxAccess"/> that fits, in
    /// address order, stopping at the first failure. A range that touches nothing fails before any byte moves.
    /// </summary>
    public BusStatus ReadAccesses(ulong address, Span<byte> destination, int maxAccess, in BusAttributes attributes)
    {
        if (destination.IsEmpty) return BusStatus.Ok;
        var r = FindRam(address, (ulong)destination.Length);
        if (r >= 0)
        {
            _ramBacking[r].Read(unchecked(address + _ramDelta[r]), destination);
            return BusStatus.Ok;
        }
        var check = CheckDecodes(address, (ulong)destination.Length);
        return check != BusStatus.Ok ? check : ReadSplit(address, destination, attributes, bestEffort: false, maxAccess);
    }

    /// <summary>The write counterpart of <see cref="ReadAccesses"/>.</summary>
    public BusStatus WriteAccesses(ulong address, ReadOnlySpan<byte> source, int maxAccess, in BusAttributes attributes)
    {
        if (source.IsEmpty) return BusStatus.Ok;
        var r = FindRam(address, (ulong)source.Length);
        if (r >= 0)
        {
            _ramBacking[r].Write(unchecked(address + _ramDelta[r]), source);
            return BusStatus.Ok;
        }
        var check = CheckDecodes(address, (ulong)source.Length);
        return check != BusStatus.Ok ? check : WriteSplit(address, source, attributes, bestEffort: false, maxAccess);
    }

    /// <summary>The whole range lies in one MMIO region whose handler takes bulk transfers.</summary>
    bool TryBulk(ulong address, ulong length, out IBulkMmioHandler handler, out ulong offset)
    {
        handler = null!;
        offset = 0;
        var i = FindMmio(address);
        if (i < 0 || _mmio[i].Handler is not IBulkMmioHandler b || address + length < address || address + length > _mmio[i].End) return false;
        handler = b;
        offset = address - _mmio[i].Start;
        return true;
    }

    /// <summary>Sets a RAM range to one byte value; DecodeError, writing nothing, unless the whole range is in one RAM region.</summary>
    public BusStatus Fill(ulong address, ulong length, byte value)
    {
        if (length == 0) return BusStatus.Ok;
        var r = FindRam(address, length);
        if (r < 0) return BusStatus.DecodeError;
        _ramBacking[r].Fill(unchecked(address + _ramDelta[r]), length, value);
        return BusStatus.Ok;
    }

    /// <summary>Splits a bulk read into naturally aligned accesses of the largest size that fits; stops at the first failure unless <paramref name="bestEffort"/>.</summary>
    BusStatus ReadSplit(ulong address, Span<byte> destination, in BusAttributes attributes, bool bestEffort, int maxAccess = 8)
    {
        var first = BusStatus.Ok;
        var pos = 0;
        Span<byte> tmp = stackalloc byte[8];
        while (pos < destination.Length)
        {
            var a = address + (ulong)pos;
            var size = ChunkSize(a, Math.Min(destination.Length - pos, maxAccess));
            var s = Read(new PhysAddr(a), size, out var v, attributes);
            if (s != BusStatus.Ok)
            {
                if (!bestEffort) return s;
                if (first == BusStatus.Ok) first = s;
                v = 0;
            }
            BinaryPrimitives.WriteUInt64LittleEndian(tmp, v);
            tmp[..size].CopyTo(destination[pos..]);
            pos += size;
        }
        return first;
    }

    /// <summary>Splits a bulk write like <see cref="ReadSplit"/>.</summary>
    BusStatus WriteSplit(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes, bool bestEffort, int maxAccess = 8)
    {
        var first = BusStatus.Ok;
        var pos = 0;
        Span<byte> tmp = stackalloc byte[8];
        while (pos < source.Length)
        {
            var a = address + (ulong)pos;
            var size = ChunkSize(a, Math.Min(source.Length - pos, maxAccess));
            tmp.Clear();
            source.Slice(pos, size).CopyTo(tmp);
            var s = Write(new PhysAddr(a), size, BinaryPrimitives.ReadUInt64LittleEndian(tmp), attributes);
            if (s != BusStatus.Ok)
            {
                if (!bestEffort) return s;
                if (first == BusStatus.Ok) first = s;
            }
            pos += size;
        }
        return first;
    }

    static int ChunkSize(ulong address, int remaining)
    {
        foreach (var size in (ReadOnlySpan<int>)[8, 4, 2, 1])
            if (remaining >= size && (address & (ulong)(size - 1)) == 0)
                return size;
        return 1;
    }

    /// <summary>Checks every byte of a range is decoded by RAM or MMIO (walking region by region).</summary>
    BusStatus CheckDecodes(ulong address, ulong length)
    {
        var end = address + length;
        if (end < address) return BusStatus.DecodeError;
        var a = address;
        while (a < end)
        {
            ulong regionEnd;
            var ram = FindRam(a, 1);
            if (ram >= 0)
                regionEnd = _ramEnd[ram];
            else
            {
                var m = FindMmio(a);
                if (m < 0) return BusStatus.DecodeError;
                regionEnd = _mmio[m].End;
            }
            a = regionEnd;
        }
        return BusStatus.Ok;
    }
}
