namespace Doorbell.Memory;

/// <summary>Outcome of one bus access. Never an exception: a guest or device access to nothing is data.</summary>
public enum BusStatus : byte
{
    Ok = 0,
    /// <summary>No slave decodes the address (AXI DECERR): an external abort for the requester.</summary>
    DecodeError = 1,
    /// <summary>A slave decoded the address but rejected the access (AXI SLVERR): bad size or alignment.</summary>
    SlaveError = 2,
}

/// <summary>Access sizes in bytes that an MMIO region accepts.</summary>
[Flags]
public enum AccessSizes : byte
{
    None = 0,
    Byte = 1,
    Half = 2,
    Word = 4,
    Double = 8,
    WordOrDouble = Word | Double,
    All = Byte | Half | Word | Double,
}

/// <summary>What an MMIO region does with an access that breaks its size or alignment rules.</summary>
public enum MmioViolation : byte
{
    /// <summary>The access is answered with a slave error (external abort for the requester).</summary>
    SlaveError,
    /// <summary>The access reads as zero and its write is ignored (RAZ/WI).</summary>
    RazWi,
}

/// <summary>The size and alignment rules one MMIO region declares.</summary>
public readonly record struct MmioAccessRules(AccessSizes Sizes, bool NaturalAlignment, MmioViolation OnViolation)
{
    /// <summary>32- and 64-bit naturally aligned accesses; others are RAZ/WI (what most Arm system IP does).</summary>
    public static readonly MmioAccessRules Registers32And64 = new(AccessSizes.WordOrDouble, true, MmioViolation.RazWi);
    /// <summary>Any size, naturally aligned; others are slave errors.</summary>
    public static readonly MmioAccessRules AnySizeAligned = new(AccessSizes.All, true, MmioViolation.SlaveError);

    public bool Allows(ulong address, int size) =>
        size is 1 or 2 or 4 or 8
        && ((int)Sizes & size) != 0
        && (!NaturalAlignment || (address & (ulong)(size - 1)) == 0);
}

/// <summary>
/// Sideband attributes a transaction carries on the interconnect. A CPU access has no DeviceID; a device's
/// access carries the ID its bus assigns (for PCI, the requester ID translated by the platform's msi-map),
/// which is what lets an ITS tell who wrote GITS_TRANSLATER. GICv2m ignores it.
/// </summary>
public readonly record struct BusAttributes(uint DeviceId, bool HasDeviceId, bool Privileged, bool Instruction)
{
    /// <summary>A CPU (or host software) access.</summary>
    public static readonly BusAttributes Cpu = new(0, false, true, false);

    public static BusAttributes FromDevice(uint deviceId) => new(deviceId, true, false, false);

    /// <summary>
    /// The CPU that issued a CPU access (the interconnect's master ID for a core; 0 for host software and devices). A GICv2
    /// banks its CPU interface frame and its per-CPU distributor registers by it (IHI 0048B §3.1: "banked" by the ID of
    /// the accessing processor).
    /// </summary>
    public int CpuIndex { get => _cpu; init => _cpu = (byte)Math.Clamp(value, 0, 255); } // a byte: the struct stays 8 bytes on hot paths
    readonly byte _cpu;

    /// <summary>An access by CPU <paramref name="cpu"/>.</summary>
    public static BusAttributes OfCpu(int cpu) => Cpu with { CpuIndex = cpu };
}

/// <summary>A memory-mapped device. Offsets are relative to the region base; size is 1, 2, 4 or 8 and already checked against the region's rules.</summary>
public interface IMmioHandler
{
    BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes);
    BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes);

    /// <summary>
    /// True when <see cref="Read"/> never defers work: it raises no interrupt, issues no transaction and changes no
    /// state another model sees (PCI configuration reads). The bus then calls it without the event loop's
    /// model-operation bookkeeping. Read once, when the handler is mapped.
    /// </summary>
    bool ReadsDeferNothing => false;
}

/// <summary>
/// Anything a bus master can issue memory transactions to: the system bus itself, or an IOMMU port that
/// translates first. Data is little-endian.
/// </summary>
public interface IMemoryPort
{
    BusStatus Read(ulong address, Span<byte> destination, in BusAttributes attributes);
    BusStatus Write(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes);
}

/// <summary>
/// An IOMMU seen from the bus masters below it: one upstream port per StreamID. A device's DMA and MSI writes go
/// through its port, are translated (or faulted) there, and reach the system bus with their attributes intact.
/// </summary>
public interface IIommuUpstream
{
    IMemoryPort CreateStreamPort(uint streamId);
}

/// <summary>A wired interrupt input (an SPI of a GIC, a PPI, …). Level semantics: edge-triggered inputs latch on a rising level.</summary>
public interface IInterruptLine
{
    void SetLevel(bool asserted);
}

/// <summary>
/// A PE's interrupt input (an execution context: a host CPU now, a vCPU next). Its interrupt controller calls
/// <see cref="Raise"/> when it may have a new interrupt for it; the PE takes it from its own loop (IAR → handler → EOI).
/// </summary>
public interface IInterruptTarget
{
    void Raise();
}
