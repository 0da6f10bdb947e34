using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Doorbell.Memory;

/// <summary>
/// Byte store for a 52-bit physical space. 4 KiB pages are allocated on the first write; reads of pages never
/// written return zeros and allocate nothing. The page index is a four-level radix of 10 bits a level, so a
/// lookup is four array loads, and a 64-entry direct-mapped cache remembers recent pages. Not thread-safe: models run on one thread.
/// </summary>
public sealed class SparseMemory : IRamBacking
{
    public const int PageShift = 12;
    public const int PageSize = 1 << PageShift;
    public const ulong PageMask = PageSize - 1;
    /// <summary>Largest physical address width the store covers (Arm's 52-bit PA).</summary>
    public const int AddressBits = 52;
    const int LevelBits = 10;
    const int LevelSize = 1 << LevelBits;
    const ulong LevelMask = LevelSize - 1;

    // Radix nodes: root → Dir → Dir → Leaf → page.
    sealed class Leaf { public readonly byte[]?[] Pages = new byte[]?[LevelSize]; }
    sealed class Dir2 { public readonly Leaf?[] Next = new Leaf?[LevelSize]; }
    sealed class Dir1 { public readonly Dir2?[] Next = new Dir2?[LevelSize]; }

    readonly Dir1?[] _root = new Dir1?[LevelSize];
    // Direct-mapped cache of recently used pages (page number → page), so a table walk that touches four
    // different table pages finds each with one compare. Pages are never freed, so entries never go stale.
    const int CacheSize = 64;
    readonly ulong[] _cacheTag = CreateTags();
    readonly byte[]?[] _cachePage = new byte[]?[CacheSize];

    static ulong[] CreateTags()
    {
        var tags = new ulong[CacheSize];
        Array.Fill(tags, ulong.MaxValue);
        return tags;
    }

    /// <summary>Number of pages that have been allocated by writes.</summary>
    public long AllocatedPages { get; private set; }

    public static bool InRange(ulong address) => address >> AddressBits == 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    byte[]? FindPage(ulong address)
    {
        var pn = address >> PageShift;
        var slot = Slot(pn);
        if (_cacheTag[slot] == pn)
            return _cachePage[slot];
        return FindPageSlow(pn);
    }

    byte[]? FindPageSlow(ulong pn)
    {
        if (pn >> (AddressBits - PageShift) != 0)
            return null;
        var l1 = _root[(pn >> (3 * LevelBits)) & LevelMask];
        if (l1 is null) return null;
        var l2 = l1.Next[(pn >> (2 * LevelBits)) & LevelMask];
        if (l2 is null) return null;
        var l3 = l2.Next[(pn >> LevelBits) & LevelMask];
        if (l3 is null) return null;
        var page = l3.Pages[pn & LevelMask];
        if (page is not null)
            Remember(pn, page);
        return page;
    }

    /// <summary>Cache slot of a page: low bits folded with the next ones, so tables 2^n pages apart do not collide.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int Slot(ulong pn) => (int)((pn ^ (pn >> 6) ^ (pn >> 12)) & (CacheSize - 1));

    void Remember(ulong pn, byte[] page)
    {
        var slot = Slot(pn);
        _cacheTag[slot] = pn;
        _cachePage[slot] = page;
    }

    /// <summary>The page holding <paramref name="address"/>, allocated (zeroed) if it was never written. Pages are never freed.</summary>
    internal byte[] GetOrAllocatePage(ulong address)
    {
        var page = FindPage(address);
        if (page is not null)
            return page;
        var pn = address >> PageShift;
        if (pn >> (AddressBits - PageShift) != 0)
            throw new ArgumentOutOfRangeException(nameof(address), "address beyond the 52-bit physical space");
        var l1 = _root[(pn >> (3 * LevelBits)) & LevelMask] ??= new Dir1();
        var l2 = l1.Next[(pn >> (2 * LevelBits)) & LevelMask] ??= new Dir2();
        var l3 = l2.Next[(pn >> LevelBits) & LevelMask] ??= new Leaf();
        page = new byte[PageSize];
        l3.Pages[pn & LevelMask] = page;
        AllocatedPages++;
        Remember(pn, page);
        return page;
    }

    /// <summary>Reads a naturally sized little-endian value that does not cross a page (the caller checked).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong ReadU64(ulong address)
    {
        if ((address & PageMask) <= PageSize - 8)
        {
            var page = FindPage(address);
            return page is null ? 0 : Unsafe.ReadUnaligned<ulong>(ref page[(int)(address & PageMask)]);
        }
        return ReadU64Split(address);
    }

    // Out of line: a stackalloc on the hot path would give every caller a stack cookie and a zeroed frame.
    [MethodImpl(MethodImplOptions.NoInlining)]
    ulong ReadU64Split(ulong address)
    {
        Span<byte> tmp = stackalloc byte[8];
        Read(address, tmp);
        return BinaryPrimitives.ReadUInt64LittleEndian(tmp);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint ReadU32(ulong address)
    {
        if ((address & PageMask) <= PageSize - 4)
        {
            var page = FindPage(address);
            return page is null ? 0 : Unsafe.ReadUnaligned<uint>(ref page[(int)(address & PageMask)]);
        }
        Span<byte> tmp = stackalloc byte[4];
        Read(address, tmp);
        return BinaryPrimitives.ReadUInt32LittleEndian(tmp);
    }

    public void WriteU64(ulong address, ulong value)
    {
        if ((address & PageMask) <= PageSize - 8)
        {
            Unsafe.WriteUnaligned(ref GetOrAllocatePage(address)[(int)(address & PageMask)], value);
            return;
        }
        WriteU64Split(address, value);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    void WriteU64Split(ulong address, ulong value)
    {
        Span<byte> tmp = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(tmp, value);
        Write(address, tmp);
    }

    /// <summary>64-bit read-modify-write: clears <paramref name="clear"/>, sets <paramref name="set"/>.</summary>
    public void UpdateU64(ulong address, ulong clear, ulong set)
    {
        if ((address & PageMask) <= PageSize - 8)
        {
            ref var b = ref GetOrAllocatePage(address)[(int)(address & PageMask)];
            Unsafe.WriteUnaligned(ref b, (Unsafe.ReadUnaligned<ulong>(ref b) & ~clear) | set);
            return;
        }
        WriteU64Split(address, (ReadU64Split(address) & ~clear) | set);
    }

    public void WriteU32(ulong address, uint value)
    {
        if ((address & PageMask) <= PageSize - 4)
        {
            Unsafe.WriteUnaligned(ref GetOrAllocatePage(address)[(int)(address & PageMask)], value);
            return;
        }
        Span<byte> tmp = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(tmp, value);
        Write(address, tmp);
    }

    /// <summary>
    /// Reads consecutive little-endian 64-bit words (a command packet, a descriptor pair) that lie in one page,
    /// with a single page lookup. Returns false, reading nothing, when the range crosses a page.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryReadWordsInPage(ulong address, Span<ulong> destination)
    {
        var offset = (int)(address & PageMask);
        var bytes = destination.Length * 8;
        if (offset + bytes > PageSize) return false;
        var page = FindPage(address);
        if (page is null) destination.Clear();
        else System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(page.AsSpan(offset, bytes)).CopyTo(destination);
        return true;
    }

    /// <summary>Reads a little-endian value of 1, 2, 4 or 8 bytes at any alignment.</summary>
    public ulong ReadSized(ulong address, int size)
    {
        Span<byte> tmp = stackalloc byte[8];
        tmp.Clear();
        Read(address, tmp[..size]);
        return BinaryPrimitives.ReadUInt64LittleEndian(tmp);
    }

    /// <summary>Writes the low <paramref name="size"/> bytes of a value, little-endian, at any alignment.</summary>
    public void WriteSized(ulong address, int size, ulong value)
    {
        Span<byte> tmp = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(tmp, value);
        Write(address, tmp[..size]);
    }

    /// <summary>Copies bytes out, crossing pages as needed; untouched pages read as zero.</summary>
    public void Read(ulong address, Span<byte> destination)
    {
        while (!destination.IsEmpty)
        {
            var offset = (int)(address & PageMask);
            var chunk = Math.Min(destination.Length, PageSize - offset);
            var page = FindPage(address);
            if (page is null)
                destination[..chunk].Clear();
            else
                page.AsSpan(offset, chunk).CopyTo(destination);
            destination = destination[chunk..];
            address += (ulong)chunk;
        }
    }

    /// <summary>Copies bytes in, crossing pages as needed and allocating pages on first touch.</summary>
    public void Write(ulong address, ReadOnlySpan<byte> source)
    {
        while (!source.IsEmpty)
        {
            var offset = (int)(address & PageMask);
            var chunk = Math.Min(source.Length, PageSize - offset);
            source[..chunk].CopyTo(GetOrAllocatePage(address).AsSpan(offset, chunk));
            source = source[chunk..];
            address += (ulong)chunk;
        }
    }

    /// <summary>Sets a range to one byte value; filling untouched pages with zero allocates nothing.</summary>
    public void Fill(ulong address, ulong length, byte value)
    {
        while (length > 0)
        {
            var offset = (int)(address & PageMask);
            var chunk = (int)Math.Min(length, (ulong)(PageSize - offset));
            var page = value == 0 ? FindPage(address) : GetOrAllocatePage(address);
            page?.AsSpan(offset, chunk).Fill(value);
            length -= (ulong)chunk;
            address += (ulong)chunk;
        }
    }

    /// <summary>A span over bytes that lie in one page (allocating it for a write); false when the range crosses a page or, for a read, the page was never written.</summary>
    public bool TryGetSpan(ulong offset, int length, bool forWrite, out Span<byte> span)
    {
        var o = (int)(offset & PageMask);
        if (length < 0 || o + length > PageSize || !InRange(offset)) { span = default; return false; }
        var page = forWrite ? GetOrAllocatePage(offset) : FindPage(offset);
        if (page is null) { span = default; return false; }
        span = page.AsSpan(o, length);
        return true;
    }
}
