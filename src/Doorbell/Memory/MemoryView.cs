namespace Doorbell.Memory;

/// <summary>
/// A memory/MMIO view: what models and drivers read and write through. Scalars (1, 2, 4, 8 bytes) and spans, each
/// with the transaction's attributes; every outcome is a <see cref="BusStatus"/> value, never an exception.
/// The system bus (<see cref="PhysicalAddressSpace"/>) is one implementation; a guest's physical space, a view
/// that observes or filters another, or a client process's memory are others. Data is little-endian.
/// </summary>
public interface IMemoryView : IMemoryPort
{
    /// <summary>A single access of 1, 2, 4 or 8 bytes.</summary>
    BusStatus Read(PhysAddr address, int size, out ulong value, in BusAttributes attributes);
    /// <summary>A single access of 1, 2, 4 or 8 bytes.</summary>
    BusStatus Write(PhysAddr address, int size, ulong value, in BusAttributes attributes);
    /// <summary>A 64-bit CPU read (a descriptor or table entry fetch).</summary>
    BusStatus ReadU64(ulong address, out ulong value);
    BusStatus WriteU64(ulong address, ulong value);
    /// <summary>
    /// A 64-bit read-modify-write of CPU-side state kept in memory (e.g. a pending-table bit): clears the bits of
    /// <paramref name="clear"/>, then sets those of <paramref name="set"/>. Same result as ReadU64 then WriteU64.
    /// </summary>
    BusStatus UpdateU64(ulong address, ulong clear, ulong set)
    {
        var s = ReadU64(address, out var v);
        return s != BusStatus.Ok ? s : WriteU64(address, (v & ~clear) | set);
    }
    /// <summary>
    /// The 4 KiB RAM page holding <paramref name="address"/>, as the very bytes the bus reads and writes, for a model that
    /// keeps state in a table it found to be RAM (a redistributor's pending table). The page stays valid while the RAM
    /// region stays mapped. False when the RAM's backing cannot give one (another process's memory) or it is not RAM.
    /// </summary>
    bool TryGetRamPage(ulong address, out byte[]? page)
    {
        page = null;
        return false;
    }
    BusStatus ReadU32(ulong address, out uint value);
    BusStatus WriteU32(ulong address, uint value);
    /// <summary>Bulk read that completes what decodes (failed accesses read as zero); returns the first failure.</summary>
    BusStatus ReadBestEffort(ulong address, Span<byte> destination, in BusAttributes attributes);
    /// <summary>Bulk write that completes what decodes (failed accesses are dropped); returns the first failure.</summary>
    BusStatus WriteBestEffort(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes);
    /// <summary>True when the whole range lies in one RAM region (a caller may then expect plain-memory semantics).</summary>
    bool IsRam(ulong address, ulong length);
    /// <summary>
    /// A CPU's copy loop over device registers (vfio-pci/vfio-platform region read/write): MMIO is split into naturally
    /// aligned accesses of at most <paramref name="maxAccess"/> bytes. The bus does so; a view without MMIO of its own
    /// passes the range on as a bulk access.
    /// </summary>
    BusStatus ReadAccesses(ulong address, Span<byte> destination, int maxAccess, in BusAttributes attributes) => Read(address, destination, attributes);
    /// <summary>The write counterpart of <see cref="ReadAccesses"/>.</summary>
    BusStatus WriteAccesses(ulong address, ReadOnlySpan<byte> source, int maxAccess, in BusAttributes attributes) => Write(address, source, attributes);
    /// <summary>Sets a RAM range to one byte value (zeroing tables). DecodeError, writing nothing, unless the whole range is RAM.</summary>
    BusStatus Fill(ulong address, ulong length, byte value);
}

/// <summary>
/// One CPU's view of a physical address space: the same memory, every access carrying that CPU's index. A GICv2 banks
/// its CPU interface frame and its SGI/PPI distributor registers by the accessing CPU (IHI 0048B §4.1.1 "banking"), so
/// a kernel bringing up a secondary CPU reaches that CPU's copies through this view at the same addresses.
/// </summary>
public sealed class CpuMemoryView(IMemoryView bus, int cpu) : IMemoryView
{
    readonly IMemoryView _bus = bus ?? throw new ArgumentNullException(nameof(bus));
    readonly BusAttributes _cpu = BusAttributes.OfCpu(cpu);

    public int Cpu { get; } = cpu;
    BusAttributes Own(in BusAttributes a) => a with { CpuIndex = Cpu };

    public BusStatus Read(PhysAddr address, int size, out ulong value, in BusAttributes attributes) => _bus.Read(address, size, out value, Own(attributes));
    public BusStatus Write(PhysAddr address, int size, ulong value, in BusAttributes attributes) => _bus.Write(address, size, value, Own(attributes));
    public BusStatus ReadU64(ulong address, out ulong value) => _bus.Read(new PhysAddr(address), 8, out value, _cpu);
    public BusStatus WriteU64(ulong address, ulong value) => _bus.Write(new PhysAddr(address), 8, value, _cpu);

    public BusStatus ReadU32(ulong address, out uint value)
    {
        var s = _bus.Read(new PhysAddr(address), 4, out var v, _cpu);
        value = (uint)v;
        return s;
    }

    public BusStatus WriteU32(ulong address, uint value) => _bus.Write(new PhysAddr(address), 4, value, _cpu);
    public BusStatus Read(ulong address, Span<byte> destination, in BusAttributes attributes) => _bus.Read(address, destination, Own(attributes));
    public BusStatus Write(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes) => _bus.Write(address, source, Own(attributes));
    public BusStatus ReadBestEffort(ulong address, Span<byte> destination, in BusAttributes attributes) => _bus.ReadBestEffort(address, destination, Own(attributes));
    public BusStatus WriteBestEffort(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes) => _bus.WriteBestEffort(address, source, Own(attributes));
    public BusStatus ReadAccesses(ulong address, Span<byte> destination, int maxAccess, in BusAttributes attributes) => _bus.ReadAccesses(address, destination, maxAccess, Own(attributes));
    public BusStatus WriteAccesses(ulong address, ReadOnlySpan<byte> source, int maxAccess, in BusAttributes attributes) => _bus.WriteAccesses(address, source, maxAccess, Own(attributes));
    public bool IsRam(ulong address, ulong length) => _bus.IsRam(address, length);
    public BusStatus Fill(ulong address, ulong length, byte value) => _bus.Fill(address, length, value);
    public bool TryGetRamPage(ulong address, out byte[]? page) => _bus.TryGetRamPage(address, out page);
}

/// <summary>One MMIO region of a model, as <see cref="IMmioMap.MapMmio(ReadOnlySpan{MmioRegion})"/> places it.</summary>
public readonly record struct MmioRegion(PhysAddr Base, ulong Size, IMmioHandler Handler, MmioAccessRules Rules, string Name);

/// <summary>Where a board places MMIO regions and RAM (the system bus, or a guest's physical space).</summary>
public interface IMmioMap
{
    void MapMmio(PhysAddr @base, ulong size, IMmioHandler handler, MmioAccessRules rules, string name);

    /// <summary>
    /// Places the regions of one model (a GIC's distributor and CPU or redistributor frames, an ITS's two frames): all of
    /// them, or none — an <see cref="ArgumentException"/> names the first that overlaps a placed region or another of them.
    /// </summary>
    void MapMmio(params ReadOnlySpan<MmioRegion> regions);
}

/// <summary>
/// The store behind a RAM region, addressed by its own offsets: the bus's sparse store (offset = physical address),
/// another address space's store at an offset (guest RAM aliasing host pages), or memory that lives elsewhere (a
/// client process, reached through a callback). <see cref="TryGetSpan"/> is an optional direct fast path.
/// </summary>
public interface IRamBacking
{
    void Read(ulong offset, Span<byte> destination);
    void Write(ulong offset, ReadOnlySpan<byte> source);
    void Fill(ulong offset, ulong length, byte value);
    /// <summary>
    /// A direct span over [offset, offset+length) when the backing can give one (the bytes are then read and written
    /// in place); false when it cannot (callers fall back to <see cref="Read"/>/<see cref="Write"/>).
    /// </summary>
    bool TryGetSpan(ulong offset, int length, bool forWrite, out Span<byte> span);
}

/// <summary>A RAM backing whose reads and writes are callbacks (memory owned by someone else: another process, a file, a test).</summary>
public sealed class CallbackRamBacking(CallbackRamBacking.ReadFn read, CallbackRamBacking.WriteFn write) : IRamBacking
{
    public delegate void ReadFn(ulong offset, Span<byte> destination);
    public delegate void WriteFn(ulong offset, ReadOnlySpan<byte> source);

    public void Read(ulong offset, Span<byte> destination) => read(offset, destination);
    public void Write(ulong offset, ReadOnlySpan<byte> source) => write(offset, source);

    public void Fill(ulong offset, ulong length, byte value)
    {
        Span<byte> chunk = stackalloc byte[256];
        chunk.Fill(value);
        while (length > 0)
        {
            var n = (int)Math.Min(length, (ulong)chunk.Length);
            write(offset, chunk[..n]);
            offset += (ulong)n;
            length -= (ulong)n;
        }
    }

    public bool TryGetSpan(ulong offset, int length, bool forWrite, out Span<byte> span)
    {
        span = default;
        return false;
    }
}
