using System.Buffers.Binary;
using System.Runtime.CompilerServices;

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
/// The system bus: RAM ranges backed by one <see cref="SparseMemory"/>, and MMIO regions. Regions never
/// overlap (registration throws: that is a board-construction bug, not a guest action). Dispatch is a
/// binary search over sorted region starts, with a one-entry cache for the last MMIO region hit.
/// Accesses to nothing return <see cref="BusStatus.DecodeError"/>.
/// </summary>
public sealed class PhysicalAddressSpace : IMemoryPort
{
    readonly SparseMemory _store = new();
    // RAM ranges, few: linear scan of parallel arrays.
    ulong[] _ramStart = [];
    ulong[] _ramEnd = [];
    // MMIO regions sorted by start.
    ulong[] _mmioStart = [];
    ulong[] _mmioEnd = [];
    IMmioHandler[] _mmioHandler = [];
    MmioAccessRules[] _mmioRules = [];
    readonly List<BusRegion> _regions = [];
    int _lastMmio = -1;

    /// <summary>Backing store of all RAM (address = physical address).</summary>
    public SparseMemory Store => _store;

    public IReadOnlyList<BusRegion> Regions => _regions;

    public void AddRam(PhysAddr @base, ulong size, string name = "ram")
    {
        CheckFree(name, @base, size);
        _ramStart = [.. _ramStart, @base.Value];
        _ramEnd = [.. _ramEnd, @base.Value + size];
        _regions.Add(new BusRegion(name, @base, size, true));
    }

    public void MapMmio(PhysAddr @base, ulong size, IMmioHandler handler, MmioAccessRules rules, string name)
    {
        ArgumentNullException.ThrowIfNull(handler);
        CheckFree(name, @base, size);
        var starts = _mmioStart.ToList();
        var idx = ~starts.BinarySearch(@base.Value);
        starts.Insert(idx, @base.Value);
        var ends = _mmioEnd.ToList(); ends.Insert(idx, @base.Value + size);
        var handlers = _mmioHandler.ToList(); handlers.Insert(idx, handler);
        var rs = _mmioRules.ToList(); rs.Insert(idx, rules);
        _mmioStart = [.. starts]; _mmioEnd = [.. ends]; _mmioHandler = [.. handlers]; _mmioRules = [.. rs];
        _lastMmio = -1;
        _regions.Add(new BusRegion(name, @base, size, false));
    }

    void CheckFree(string name, PhysAddr @base, ulong size)
    {
        if (size == 0)
            throw new ArgumentException($"region '{name}' has size 0", nameof(size));
        if (@base.Value + size < @base.Value || !SparseMemory.InRange(@base.Value + size - 1))
            throw new ArgumentException($"region '{name}' at {@base} size 0x{size:x} leaves the 52-bit physical space", nameof(size));
        foreach (var r in _regions)
            if (@base.Value < r.End && r.Base.Value < @base.Value + size)
                throw new ArgumentException($"region '{name}' [{@base}, +0x{size:x}) overlaps '{r.Name}' [{r.Base}, +0x{r.Size:x})");
    }

    /// <summary>True when the whole range [address, address+length) lies in one RAM range.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsRam(ulong address, ulong length)
    {
        var end = address + length;
        if (end < address) return false;
        var starts = _ramStart;
        var ends = _ramEnd;
        for (var i = 0; i < starts.Length; i++)
            if (address >= starts[i] && end <= ends[i])
                return true;
        return false;
    }

    int FindMmio(ulong address)
    {
        var last = _lastMmio;
        if (last >= 0 && address >= _mmioStart[last] && address < _mmioEnd[last])
            return last;
        int lo = 0, hi = _mmioStart.Length - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            if (_mmioStart[mid] <= address) lo = mid + 1; else hi = mid - 1;
        }
        // hi = last region whose start <= address
        if (hi >= 0 && address < _mmioEnd[hi])
        {
            _lastMmio = hi;
            return hi;
        }
        return -1;
    }

    /// <summary>A single access of 1, 2, 4 or 8 bytes.</summary>
    public BusStatus Read(PhysAddr address, int size, out ulong value, in BusAttributes attributes)
    {
        var a = address.Value;
        if (size is not (1 or 2 or 4 or 8)) { value = 0; return BusStatus.SlaveError; }
        if (IsRam(a, (ulong)size))
        {
            value = size == 8 ? _store.ReadU64(a) : _store.ReadSized(a, size);
            return BusStatus.Ok;
        }
        var i = FindMmio(a);
        if (i < 0 || a + (ulong)size > _mmioEnd[i]) { value = 0; return BusStatus.DecodeError; }
        if (!_mmioRules[i].Allows(a, size))
        {
            value = 0;
            return _mmioRules[i].OnViolation == MmioViolation.RazWi ? BusStatus.Ok : BusStatus.SlaveError;
        }
        return _mmioHandler[i].Read(a - _mmioStart[i], size, out value, attributes);
    }

    /// <summary>A single access of 1, 2, 4 or 8 bytes.</summary>
    public BusStatus Write(PhysAddr address, int size, ulong value, in BusAttributes attributes)
    {
        var a = address.Value;
        if (size is not (1 or 2 or 4 or 8)) return BusStatus.SlaveError;
        if (IsRam(a, (ulong)size))
        {
            if (size == 8) _store.WriteU64(a, value); else _store.WriteSized(a, size, value);
            return BusStatus.Ok;
        }
        var i = FindMmio(a);
        if (i < 0 || a + (ulong)size > _mmioEnd[i]) return BusStatus.DecodeError;
        if (!_mmioRules[i].Allows(a, size))
            return _mmioRules[i].OnViolation == MmioViolation.RazWi ? BusStatus.Ok : BusStatus.SlaveError;
        return _mmioHandler[i].Write(a - _mmioStart[i], size, value, attributes);
    }

    /// <summary>Reads a 64-bit little-endian value (a descriptor or table entry fetch).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public BusStatus ReadU64(ulong address, out ulong value)
    {
        if (IsRam(address, 8))
        {
            value = _store.ReadU64(address);
            return BusStatus.Ok;
        }
        return Read(new PhysAddr(address), 8, out value, BusAttributes.Cpu);
    }

    public BusStatus WriteU64(ulong address, ulong value) => Write(new PhysAddr(address), 8, value, BusAttributes.Cpu);

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
        if (IsRam(address, (ulong)destination.Length))
        {
            _store.Read(address, destination);
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
        if (IsRam(address, (ulong)source.Length))
        {
            _store.Write(address, source);
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
        if (IsRam(address, (ulong)destination.Length))
        {
            _store.Read(address, destination);
            return BusStatus.Ok;
        }
        return ReadSplit(address, destination, attributes, bestEffort: true);
    }

    /// <summary>Bulk write that completes what decodes: accesses that fail are dropped. Returns the first failure, or Ok.</summary>
    public BusStatus WriteBestEffort(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes)
    {
        if (source.IsEmpty) return BusStatus.Ok;
        if (IsRam(address, (ulong)source.Length))
        {
            _store.Write(address, source);
            return BusStatus.Ok;
        }
        return WriteSplit(address, source, attributes, bestEffort: true);
    }

    /// <summary>The whole range lies in one MMIO region whose handler takes bulk transfers.</summary>
    bool TryBulk(ulong address, ulong length, out IBulkMmioHandler handler, out ulong offset)
    {
        handler = null!;
        offset = 0;
        var i = FindMmio(address);
        if (i < 0 || _mmioHandler[i] is not IBulkMmioHandler b || address + length < address || address + length > _mmioEnd[i]) return false;
        handler = b;
        offset = address - _mmioStart[i];
        return true;
    }

    /// <summary>Splits a bulk read into naturally aligned accesses of the largest size that fits; stops at the first failure unless <paramref name="bestEffort"/>.</summary>
    BusStatus ReadSplit(ulong address, Span<byte> destination, in BusAttributes attributes, bool bestEffort)
    {
        var first = BusStatus.Ok;
        var pos = 0;
        Span<byte> tmp = stackalloc byte[8];
        while (pos < destination.Length)
        {
            var a = address + (ulong)pos;
            var size = ChunkSize(a, destination.Length - pos);
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
    BusStatus WriteSplit(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes, bool bestEffort)
    {
        var first = BusStatus.Ok;
        var pos = 0;
        Span<byte> tmp = stackalloc byte[8];
        while (pos < source.Length)
        {
            var a = address + (ulong)pos;
            var size = ChunkSize(a, source.Length - pos);
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
            var ram = -1;
            for (var r = 0; r < _ramStart.Length; r++)
                if (a >= _ramStart[r] && a < _ramEnd[r]) { ram = r; break; }
            if (ram >= 0)
                regionEnd = _ramEnd[ram];
            else
            {
                var m = FindMmio(a);
                if (m < 0) return BusStatus.DecodeError;
                regionEnd = _mmioEnd[m];
            }
            a = regionEnd;
        }
        return BusStatus.Ok;
    }
}
