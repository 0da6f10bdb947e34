using System.Numerics;

namespace Doorbell.Memory;

/// <summary>
/// The one physical-page allocator interface of the host layer (a kernel's page allocator, seen by io-pgtable, the
/// GIC/ITS and SMMU drivers and the user page pool). Blocks are physical addresses in RAM of the caller's memory view.
/// </summary>
public interface IPhysPageAllocator
{
    /// <summary>Allocates <paramref name="size"/> bytes (a power of two) aligned to their size; false when exhausted.</summary>
    bool TryAllocate(ulong size, out ulong physicalAddress);

    void Free(ulong physicalAddress, ulong size);

    /// <summary>Bytes that could still be allocated (an upper bound when blocks are fragmented).</summary>
    ulong FreeBytes { get; }
}

/// <summary>
/// A bump allocator over one RAM range with a free list per size; blocks are aligned to their size. Given a memory
/// view, every block is zeroed through it when handed out (what kernel tables and fresh user pages expect).
/// </summary>
public sealed class PhysPageAllocator : IPhysPageAllocator
{
    readonly ulong _base, _end;
    readonly IMemoryView? _zero;
    ulong _next;
    readonly Dictionary<ulong, Stack<ulong>> _free = [];
    ulong _freeListBytes;

    public PhysPageAllocator(ulong baseAddress, ulong size, IMemoryView? zeroThrough = null)
    {
        if (baseAddress + size < baseAddress) throw new ArgumentException("range wraps", nameof(size));
        if (zeroThrough is not null && size != 0 && !zeroThrough.IsRam(baseAddress, size))
            throw new ArgumentException($"[0x{baseAddress:x}, +0x{size:x}) is not RAM in the memory view", nameof(baseAddress));
        _base = _next = baseAddress;
        _end = baseAddress + size;
        _zero = zeroThrough;
    }

    public ulong Base => _base;
    public ulong Size => _end - _base;
    public ulong BytesInUse { get; private set; }
    /// <summary>Bytes never handed out plus bytes on the free lists.</summary>
    public ulong FreeBytes => _end - _next + _freeListBytes;
    /// <summary>Free 4 KiB pages (<see cref="FreeBytes"/> / 4096).</summary>
    public long FreePages => (long)(FreeBytes / 4096);

    public bool TryAllocate(ulong size, out ulong physicalAddress)
    {
        if (size == 0 || !BitOperations.IsPow2(size)) { physicalAddress = 0; return false; }
        if (_free.TryGetValue(size, out var stack) && stack.Count > 0)
        {
            physicalAddress = stack.Pop();
            _freeListBytes -= size;
        }
        else
        {
            var a = (_next + size - 1) & ~(size - 1);
            if (a < _next || a + size > _end || a + size < a) { physicalAddress = 0; return false; }
            _next = a + size;
            physicalAddress = a;
        }
        BytesInUse += size;
        _zero?.Fill(physicalAddress, size, 0);
        return true;
    }

    public void Free(ulong physicalAddress, ulong size)
    {
        if (physicalAddress < _base || physicalAddress + size > _end || size == 0 || (physicalAddress & (size - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(physicalAddress), $"0x{physicalAddress:x} +0x{size:x} was not allocated here");
        if (!_free.TryGetValue(size, out var stack)) _free[size] = stack = new Stack<ulong>();
        stack.Push(physicalAddress);
        _freeListBytes += size;
        BytesInUse -= size;
    }
}

public static class PhysPageAllocatorExtensions
{
    /// <summary>
    /// Allocates at least <paramref name="size"/> bytes aligned to <paramref name="alignment"/> (the block is the
    /// next power of two of both); false when exhausted or the alignment is not a power of two.
    /// </summary>
    public static bool TryAllocate(this IPhysPageAllocator allocator, ulong size, ulong alignment, out ulong physicalAddress)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        physicalAddress = 0;
        if (alignment == 0 || !BitOperations.IsPow2(alignment) || size > 1UL << 62) return false;
        return allocator.TryAllocate(BitOperations.RoundUpToPowerOf2(Math.Max(Math.Max(size, alignment), 1)), out physicalAddress);
    }
}
