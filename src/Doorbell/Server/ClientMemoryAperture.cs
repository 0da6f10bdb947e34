using Doorbell.Memory;

// Client processes' memory on the emulated bus. Each MAP_DMA range of a client gets a window of host physical
// addresses in one MMIO aperture placed where the board's map puts it (clear of the map, below the SMMU's output size); the
// client's VFIO mm describes the range as a foreign mapping onto the window, so pinning and the SMMU page tables
// see ordinary physical addresses, and a device access that lands in a window is carried out on the client's own
// memory with process_vm_readv/writev, or, when the client handed the range over as a sealed memfd (the library does
// for small private anonymous buffers), with a plain copy through this process's mapping of it. Known limits: windows are handed out once and reclaimed only when their
// client disconnects; a client that dies turns its windows into aborts (BusStatus.DecodeError) until they go.
namespace Doorbell.Server;

public sealed class ClientMemoryAperture : IBulkMmioHandler
{
    /// <summary>Where the aperture is on the bus and how large (the board map's <c>ClientAperture</c>: qemu-virt and
    /// ThunderX 4 TiB at 4 TiB, Juno 512 GiB at 512 GiB, inside the MMU-401's 40-bit output range).</summary>
    public ulong Base { get; }
    public ulong Size { get; }

    public ClientMemoryAperture(ulong @base = 0x400_0000_0000, ulong size = 0x400_0000_0000)
    {
        Base = @base;
        Size = size;
    }

    /// <summary>A window; <paramref name="Memory"/> is this process's mapping of the client's memfd, or 0.</summary>
    sealed record Window(ulong Start, ulong Length, int Pid, ulong Vaddr, object Owner, nint Memory);

    readonly List<Window> _windows = []; // sorted by Start
    ulong _next;

    /// <summary>Number of windows currently live.</summary>
    public int WindowCount => _windows.Count;

    /// <summary>Bytes moved to and from client memory (device DMA) since start.</summary>
    public long BytesRead { get; private set; }
    public long BytesWritten { get; private set; }
    /// <summary>Of those, bytes copied through a shared mapping (no system call).</summary>
    public long BytesShared { get; private set; }
    /// <summary>Windows currently reached through a shared mapping.</summary>
    public int SharedWindowCount => _windows.Count(w => w.Memory != 0);

    /// <summary>A new window onto [vaddr, vaddr+length) of process <paramref name="pid"/>; returns its host physical
    /// base, or 0 when the aperture is exhausted.</summary>
    public ulong Allocate(int pid, ulong vaddr, ulong length, object owner, int memfd = -1)
    {
        if (length == 0 || length > Size - _next) return 0;
        nint memory;
        unsafe { memory = memfd >= 0 ? (nint)ServerNative.MapClientMemory(memfd, length) : 0; }
        var w = new Window(_next, length, pid, vaddr, owner, memory);
        _next += (length + 0xFFFF) & ~0xFFFFUL; // keep windows 64 KiB apart
        _windows.Add(w);
        return Base + w.Start;
    }

    /// <summary>Drops every window of <paramref name="owner"/> (its client disconnected).</summary>
    public void Release(object owner)
    {
        foreach (var w in _windows)
            if (ReferenceEquals(w.Owner, owner) && w.Memory != 0)
                unsafe { _ = ServerNative.munmap((void*)w.Memory, (nuint)w.Length); }
        _windows.RemoveAll(w => ReferenceEquals(w.Owner, owner));
    }

    Window? Find(ulong offset)
    {
        int lo = 0, hi = _windows.Count - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            if (_windows[mid].Start <= offset) lo = mid + 1; else hi = mid - 1;
        }
        return hi >= 0 && offset - _windows[hi].Start < _windows[hi].Length ? _windows[hi] : null;
    }

    public BusStatus ReadBulk(ulong offset, Span<byte> destination, in BusAttributes attributes)
    {
        var w = Find(offset);
        if (w is null || offset + (ulong)destination.Length > w.Start + w.Length) return BusStatus.DecodeError;
        if (w.Memory != 0)
        {
            unsafe { new ReadOnlySpan<byte>((byte*)w.Memory + (offset - w.Start), destination.Length).CopyTo(destination); }
            BytesRead += destination.Length;
            BytesShared += destination.Length;
            return BusStatus.Ok;
        }
        if (!ServerNative.ReadProcess(w.Pid, w.Vaddr + (offset - w.Start), destination)) return BusStatus.DecodeError;
        BytesRead += destination.Length;
        return BusStatus.Ok;
    }

    public BusStatus WriteBulk(ulong offset, ReadOnlySpan<byte> source, in BusAttributes attributes)
    {
        var w = Find(offset);
        if (w is null || offset + (ulong)source.Length > w.Start + w.Length) return BusStatus.DecodeError;
        if (w.Memory != 0)
        {
            unsafe { source.CopyTo(new Span<byte>((byte*)w.Memory + (offset - w.Start), source.Length)); }
            BytesWritten += source.Length;
            BytesShared += source.Length;
            return BusStatus.Ok;
        }
        if (!ServerNative.WriteProcess(w.Pid, w.Vaddr + (offset - w.Start), source)) return BusStatus.DecodeError;
        BytesWritten += source.Length;
        return BusStatus.Ok;
    }

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        Span<byte> b = stackalloc byte[8];
        b.Clear();
        var s = ReadBulk(offset, b[..size], attributes);
        value = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(b);
        return s;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        Span<byte> b = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        return WriteBulk(offset, b[..size], attributes);
    }
}
