using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Timing;

namespace Doorbell.Platform;

/// <summary>QEMU 7.2 `virt` address map and interrupt assignments (hw/arm/virt.c), DESIGN.md §4.</summary>
public static class QemuVirtMap
{
    public const ulong GicDist = 0x0800_0000, GicCpu = 0x0801_0000, GicV2m = 0x0802_0000, GicIts = 0x0808_0000,
        GitsTranslater = 0x0809_0040, GicRedist = 0x080A_0000, Smmu = 0x0905_0000,
        PcieMmio = 0x1000_0000, PcieMmioSize = 0x2EFF_0000, PciePio = 0x3EFF_0000, PciePioSize = 0x1_0000,
        PcieEcam = 0x40_1000_0000, PcieEcamSize = 0x1000_0000,
        PcieMmioHigh = 0x80_0000_0000, PcieMmioHighSize = 0x80_0000_0000,
        Ram = 0x4000_0000, DefaultRamSize = 512UL << 20,
        V2mSetSpi = GicV2m + 0x40;
    /// <summary>INTA..INTD are SPIs 3..6; the SMMU uses SPIs 74..77; GICv2m owns SPIs 48..111.</summary>
    public const int PcieIntxFirstSpi = 3, SmmuFirstSpi = 74, V2mFirstSpi = 48, V2mSpiCount = 64;
    /// <summary>An SMMUv2 in the SMMU's place (Doorbell's choice, outside GICv2m's and the platform bus's SPIs):
    /// global fault on SPI 160, context interrupt n on SPI 161 + n.</summary>
    public const int SmmuV2FirstSpi = 160;
    public const ushort GpexVendor = 0x1b36, GpexDevice = 0x0008;
}

/// <summary>Options of the `qemu-virt` board (QEMU's -machine virt properties and -m / -smp).</summary>
public sealed record QemuVirtOptions
{
    public int GicVersion { get; init; } = 3;
    public bool Its { get; init; } = true;
    public IommuKind Iommu { get; init; } = IommuKind.SmmuV3;
    public ulong RamSize { get; init; } = QemuVirtMap.DefaultRamSize;
    public int Cpus { get; init; } = 1;
    /// <summary>The address map (qemu-virt's unless a board description gives another).</summary>
    public PlatformMap Map { get; init; } = PlatformMap.QemuVirt;
    /// <summary>With <see cref="IommuKind.SmmuV2"/>: which SMMUv2 part (ID registers, banks, stages).</summary>
    public Doorbell.Smmu.V2.SmmuV2Options? SmmuV2 { get; init; }
    /// <summary>A GICv2m MSI frame next to a GICv3 (at the frame's place in the map): a board with both an ITS and a GICv2m frame.</summary>
    public bool GicV2mWithGicV3 { get; init; }
    /// <summary>The MSI controller PCI devices use (their msi-parent): the ITS when present, unless set to the GICv2m frame.</summary>
    public MsiParent PciMsiParent { get; init; } = MsiParent.Default;
    /// <summary>The machine's name in reports (the map's name when null).</summary>
    public string? Name { get; init; }
    /// <summary>The trace the machine's models emit to (a fresh, disabled one when null).</summary>
    public Trace? Trace { get; init; }
    /// <summary>The strict-mode monitor the machine's models report to (a fresh, disabled one when null).</summary>
    public StrictMonitor? Strict { get; init; }
}

/// <summary>Which MSI controller a board routes PCI MSIs to.</summary>
public enum MsiParent { Default, Its, GicV2m }

/// <summary>Builds the `qemu-virt` board: RAM, the gpex PCIe host (ECAM, MMIO/PIO windows, INTx → SPIs 3..6), and through the wiring the GIC and SMMU.</summary>
public static class QemuVirtBoard
{
    public static Machine Create(QemuVirtOptions? options = null, BoardWiring? wiring = null)
    {
        var o = options ?? new QemuVirtOptions();
        var w = wiring ?? BoardWiring.Default;
        if (o.GicVersion is not (2 or 3)) throw new ArgumentException("gic-version must be 2 or 3");
        if (o.Cpus is < 1 or > 512) throw new ArgumentException("cpus must be 1..512");
        var map = o.Map ?? PlatformMap.QemuVirt;
        var bus = new PhysicalAddressSpace();
        var clock = new VirtualClock();
        bus.AddRam(new PhysAddr(map.Ram), o.RamSize, "ram");
        var its = o.GicVersion == 3 && o.Its;
        var v2m = o.GicVersion == 2 || o.GicV2mWithGicV3;
        var gicReq = new GicRequest(o.GicVersion, its, o.Cpus, map.GicDistributor,
            o.GicVersion == 3 ? map.GicRedistributor : 0, o.GicVersion == 2 ? map.GicCpuInterface : 0,
            its ? map.GicIts : 0, v2m ? map.GicV2m : 0, map.V2mFirstSpi, map.V2mSpiCount) { SpiCount = map.SpiCount };
        var m = new Machine(o.Name ?? map.Name, bus, clock, null, o.Trace, o.Strict) { Map = map };
        if (w.Gic?.Invoke(m, gicReq) is { } spi) m.SetSpiProvider(spi);
        m.GicVersion = o.GicVersion;
        m.HasIts = its;
        m.Cpus = o.Cpus;
        m.RamBase = map.Ram;
        m.RamSize = o.RamSize;
        var msiToV2m = v2m && (!its || o.PciMsiParent == MsiParent.GicV2m);
        if (o.PciMsiParent == MsiParent.GicV2m && !v2m) throw new ArgumentException("msi-parent gicv2m needs a GICv2m frame");
        if (o.PciMsiParent == MsiParent.Its && !its) throw new ArgumentException("msi-parent its needs an ITS");
        m.PciMsiToGicV2m = msiToV2m;
        m.MsiDoorbell = msiToV2m ? map.V2mSetSpi : its ? map.GitsTranslater : 0;
        if (o.Iommu != IommuKind.None)
        {
            m.Iommu = w.Iommu?.Invoke(m, new IommuRequest(o.Iommu, map.Smmu,
                o.Iommu == IommuKind.SmmuV2 ? map.SmmuV2FirstSpi : map.SmmuFirstSpi, o.SmmuV2) { ContextSpi = map.SmmuV2ContextSpi });
            m.IommuKind = m.Iommu == null ? IommuKind.None : o.Iommu;
        }
        // identity iommu-map and msi-map over all 2^16 requester IDs (hw/arm/virt.c create_pcie)
        var host = new PciHost(bus, m.Iommu, IdMap.Identity, IdMap.Identity) { Trace = m.Trace, Strict = m.Strict };
        for (var i = 0; i < 4; i++) host.IntxLines[i] = m.Spi(map.PcieIntxFirstSpi + i);
        bus.MapMmio(new PhysAddr(map.PcieEcam), map.PcieEcamSize, host.Ecam, new MmioAccessRules(AccessSizes.All, true, MmioViolation.RazWi), "pcie-ecam");
        if (map.PcieMmioSize != 0)
            bus.MapMmio(new PhysAddr(map.PcieMmio), map.PcieMmioSize, host.MemoryWindow(map.PcieMmio), new MmioAccessRules(AccessSizes.All, false, MmioViolation.RazWi), "pcie-mmio");
        if (map.PciePioSize != 0)
            bus.MapMmio(new PhysAddr(map.PciePio), map.PciePioSize, host.IoWindow(0), new MmioAccessRules(AccessSizes.All, false, MmioViolation.RazWi), "pcie-pio");
        if (map.PcieMmioHighSize != 0)
            bus.MapMmio(new PhysAddr(map.PcieMmioHigh), map.PcieMmioHighSize, host.MemoryWindow(map.PcieMmioHigh), new MmioAccessRules(AccessSizes.All, false, MmioViolation.RazWi), "pcie-mmio-high");
        m.Pci = host;
        // QEMU's gpex host bridge at 00:00.0 (class 0x0600 host bridge)
        host.RootBus.Attach(new PciFunction(QemuVirtMap.GpexVendor, QemuVirtMap.GpexDevice, 0x060000, 0, name: "gpex-root"), 0);
        return m;
    }
}
