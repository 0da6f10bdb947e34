namespace Doorbell.Platform;

// The address maps of the two real SMMUv2 platforms issue 15's boards stand for. Each value names its source:
//  - "juno-r1.dtb": the Juno r1 device tree in /work/shared/data/dtb/boards (Linux's arm/juno-r1.dts, unmodified);
//  - "Juno boot log": the GICv2m frames' SPI ranges a Juno r1 kernel prints (the frames report them in MSI_TYPER,
//    the tree does not carry them);
//  - "thunder-88xx.dtb": the ThunderX CN88xx tree in /work/shared/data/dtb/boards (Linux's cavium/thunder-88xx.dts),
//    which describes RAM, the GICv3 and its ITS but neither the SMMUs nor PCIe;
//  - "Cavium vendor DT": the SMMU and ECAM nodes of Cavium's firmware device trees (thunder-88xx.dtsi of the
//    ThunderX UEFI tree, cn81xx-linux.dtsi of the same family), and the PEM INTx SPI base of Cavium's BDK headers.
// What neither source gives is Doorbell's choice and says so (docs/deviations.md, "Real address maps").

/// <summary>The Juno r1 and ThunderX CN88xx address maps and interrupt assignments (see the source of each value).</summary>
public static class RealPlatformMaps
{
    /// <summary>Arm Juno r1: GIC-400 (GICv2) with GICv2m frames, the PCIe root complex behind an MMU-401.</summary>
    public static PlatformMap JunoR1 { get; } = new()
    {
        Name = "juno-r1",
        Ram = 0x8000_0000,                 // juno-r1.dtb memory@80000000, first bank (0x7f00_0000 bytes)
        GicDistributor = 0x2C01_0000,      // juno-r1.dtb interrupt-controller@2c010000 (arm,gic-400) reg[0]: GICD
        GicCpuInterface = 0x2C02_F000,     // ... reg[1]: GICC
        GicV2m = 0x2C1C_0000,              // ... v2m@0 (arm,gic-v2m-frame) through ranges <0 0x2c1c0000 0x40000>
        V2mFirstSpi = 192,                 // Juno boot log: "GICv2m: range[mem 0x2c1c0000-0x2c1cffff], SPI[224:255]" (INTIDs)
        V2mSpiCount = 32,
        SpiCount = 320,                    // Juno boot log: the four frames reach INTID 351 (SPI[320:351])
        Smmu = 0x2B50_0000,                // juno-r1.dtb iommu@2b500000 (arm,mmu-401), pcie@40000000's iommu-map target
        SmmuV2FirstSpi = 40,               // ... interrupts <0 0x28 4> <0 0x28 4>: global fault and context share SPI 40
        SmmuV2ContextSpi = 40,
        PcieEcam = 0x4000_0000,            // juno-r1.dtb pcie@40000000 reg (pci-host-ecam-generic, bus-range 0-255)
        PcieEcamSize = 0x1000_0000,
        PciePio = 0x5F80_0000,             // ... ranges: I/O 0x0 at 0x5f800000, 8 MiB
        PciePioSize = 0x80_0000,
        PcieMmio = 0x5000_0000,            // ... ranges: 32-bit memory 0x50000000, 128 MiB
        PcieMmioSize = 0x800_0000,
        PcieMmioHigh = 0x40_0000_0000,     // ... ranges: 64-bit prefetchable memory 0x40_0000_0000, 4 GiB
        PcieMmioHighSize = 0x1_0000_0000,
        PcieIntxFirstSpi = 136,            // ... interrupt-map: INTA..INTD -> SPIs 0x88..0x8b
        PlatformBus = 0x6000_0000,         // juno-r1.dtb tlx-bus@60000000 (the Thin Links bus to daughterboard logic)
        PlatformFirstSpi = 168,            // ... its interrupt-map: SPI 0xa8
        ClientAperture = 0x80_0000_0000,   // Doorbell's choice: clear of the map, below MMU-401's 40-bit output size
        ClientApertureSize = 0x80_0000_0000,
    };

    /// <summary>Cavium ThunderX CN88xx (node 0): GICv3 with an ITS, PCIe ECAM0 behind SMMU0 (an SMMUv2 of MMU-500 class).</summary>
    public static PlatformMap ThunderXCn88xx { get; } = new()
    {
        Name = "thunderx-cn88xx",
        Ram = 0,                           // thunder-88xx.dtb memory@0 (2 GiB)
        GicDistributor = 0x8010_0000_0000, // thunder-88xx.dtb interrupt-controller@801000000000 (arm,gic-v3) reg[0]: GICD
        GicRedistributor = 0x8010_8000_0000, // ... reg[1]: GICR, 6 MiB
        GicIts = 0x8010_0002_0000,         // ... msi-controller@801000020000 (arm,gic-v3-its)
        SpiCount = 224,                    // Doorbell's choice (the tree does not say; all SPIs below are < 224)
        Smmu = 0x8300_0000_0000,           // Cavium vendor DT smmu0@830000000000 (reg size 32 MiB)
        SmmuV2FirstSpi = 68,               // ... interrupts <0 68 4> (#global-interrupts = 1), then <0 69 4> for every context bank
        SmmuV2ContextSpi = 69,
        PcieEcam = 0x8480_0000_0000,       // Cavium vendor DT pcie0@848000000000 (ECAM0) reg, 256 MiB
        PcieEcamSize = 0x1000_0000,
        PcieMmio = 0,                      // ECAM0 has no 32-bit window (its ranges are 64-bit only)
        PcieMmioSize = 0,
        PciePio = 0,
        PciePioSize = 0,
        PcieMmioHigh = 0x8040_0000_0000,   // Doorbell's choice of 4 GiB inside ECAM0's ranges window 0x8010_0000_0000 + 0x70_0000_0000
        PcieMmioHighSize = 0x1_0000_0000,  //   (clear of the GIC at its base)
        PcieIntxFirstSpi = 16,             // Cavium BDK headers: PEM INTA..INTD from INTID 0x30 (SPI 16)
        PlatformBus = 0x8600_0000_0000,    // Doorbell's choice, inside ECAM0's second ranges window where no node is
        PlatformFirstSpi = 128,            // Doorbell's choice (no node of either tree uses SPIs 128+)
        ClientAperture = 0x400_0000_0000,  // Doorbell's choice: clear of the map, below MMU-500's 48-bit output size
        ClientApertureSize = 0x400_0000_0000,
    };
}
