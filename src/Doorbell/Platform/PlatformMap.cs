namespace Doorbell.Platform;

/// <summary>
/// A board's address map and interrupt assignments: where RAM, the GIC frames, the SMMU, the PCIe host bridge and the
/// platform bus are, and which SPIs they use. Boards are built from it and the host kernel's drivers take their
/// addresses from it (as Linux takes them from the device tree), so nothing above the board assumes qemu-virt.
/// Bases of absent blocks are ignored (a GICv3 board has no GICC, a GICv2 board no GICR/ITS).
/// </summary>
public sealed record PlatformMap
{
    public string Name { get; init; } = "qemu-virt";
    public ulong Ram { get; init; } = QemuVirtMap.Ram;
    public ulong GicDistributor { get; init; } = QemuVirtMap.GicDist;
    public ulong GicCpuInterface { get; init; } = QemuVirtMap.GicCpu;
    public ulong GicV2m { get; init; } = QemuVirtMap.GicV2m;
    public ulong GicIts { get; init; } = QemuVirtMap.GicIts;
    public ulong GicRedistributor { get; init; } = QemuVirtMap.GicRedist;
    public ulong Smmu { get; init; } = QemuVirtMap.Smmu;
    public ulong PcieMmio { get; init; } = QemuVirtMap.PcieMmio;
    public ulong PcieMmioSize { get; init; } = QemuVirtMap.PcieMmioSize;
    public ulong PciePio { get; init; } = QemuVirtMap.PciePio;
    public ulong PciePioSize { get; init; } = QemuVirtMap.PciePioSize;
    public ulong PcieEcam { get; init; } = QemuVirtMap.PcieEcam;
    public ulong PcieEcamSize { get; init; } = QemuVirtMap.PcieEcamSize;
    /// <summary>64-bit PCIe window; size 0 = none.</summary>
    public ulong PcieMmioHigh { get; init; } = QemuVirtMap.PcieMmioHigh;
    public ulong PcieMmioHighSize { get; init; } = QemuVirtMap.PcieMmioHighSize;
    /// <summary>Where platform (device-tree) devices are placed, 4 KiB apart, with SPIs from <see cref="PlatformFirstSpi"/>.</summary>
    public ulong PlatformBus { get; init; } = 0x0C00_0000;
    public int PlatformFirstSpi { get; init; } = 112;
    /// <summary>INTA..INTD are SPIs PcieIntxFirstSpi..+3; the SMMU uses eventq/priq/cmdq-sync/gerror = SmmuFirstSpi..+3.</summary>
    public int PcieIntxFirstSpi { get; init; } = QemuVirtMap.PcieIntxFirstSpi;
    public int SmmuFirstSpi { get; init; } = QemuVirtMap.SmmuFirstSpi;
    /// <summary>An SMMUv2 in the SMMU's place: global fault on SmmuV2FirstSpi, context interrupt n on SmmuV2FirstSpi + 1 + n.</summary>
    public int SmmuV2FirstSpi { get; init; } = QemuVirtMap.SmmuV2FirstSpi;
    /// <summary>When ≥ 0, every SMMUv2 context interrupt is this one SPI (real SMMUs wire-OR them: Juno's MMU-401 shares
    /// one SPI with its global fault, ThunderX's SMMU has one global and one context SPI); −1 = one SPI per context
    /// interrupt after the global one.</summary>
    public int SmmuV2ContextSpi { get; init; } = -1;
    public int V2mFirstSpi { get; init; } = QemuVirtMap.V2mFirstSpi;
    public int V2mSpiCount { get; init; } = QemuVirtMap.V2mSpiCount;
    /// <summary>SPIs the distributor implements (a multiple of 32).</summary>
    public int SpiCount { get; init; } = 224;

    /// <summary>QEMU 7.2 virt (hw/arm/virt.c base_memmap and irqmap).</summary>
    public static PlatformMap QemuVirt { get; } = new();

    /// <summary>Where `doorbell serve` places client processes' memory as physical addresses (Doorbell's own window, not
    /// the platform's): clear of the board's map and below its SMMU's output size.</summary>
    public ulong ClientAperture { get; init; } = 0x400_0000_0000;
    public ulong ClientApertureSize { get; init; } = 0x400_0000_0000;

    /// <summary>The SPI of SMMUv2 context interrupt <paramref name="index"/>.</summary>
    public int SmmuV2ContextSpiOf(int index) => SmmuV2ContextSpi >= 0 ? SmmuV2ContextSpi : SmmuV2FirstSpi + 1 + index;

    /// <summary>A map by name: qemu-virt, juno-r1 or thunderx-cn88xx (null when unknown).</summary>
    public static PlatformMap? ByName(string name) => name?.ToLowerInvariant() switch
    {
        "qemu-virt" => QemuVirt,
        "juno-r1" => RealPlatformMaps.JunoR1,
        "thunderx-cn88xx" => RealPlatformMaps.ThunderXCn88xx,
        _ => null,
    };

    public ulong GitsTranslater => GicIts + 0x1_0040;
    public ulong V2mSetSpi => GicV2m + 0x40;
}
