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
    /// <summary>With <see cref="IommuKind.SmmuV2"/>: which SMMUv2 part (ID registers, banks, stages).</summary>
    public Doorbell.Smmu.V2.SmmuV2Options? SmmuV2 { get; init; }
    /// <summary>A GICv2m MSI frame next to a GICv3 (at the frame's qemu-virt place): a board with both an ITS and a GICv2m frame.</summary>
    public bool GicV2mWithGicV3 { get; init; }
    /// <summary>The MSI controller PCI devices use (their msi-parent): the ITS when present, unless set to the GICv2m frame.</summary>
    public MsiParent PciMsiParent { get; init; } = MsiParent.Default;
    /// <summary>The machine's name in reports.</summary>
    public string Name { get; init; } = "qemu-virt";
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
        var bus = new PhysicalAddressSpace();
        var clock = new VirtualClock();
        bus.AddRam(new PhysAddr(QemuVirtMap.Ram), o.RamSize, "ram");
        var its = o.GicVersion == 3 && o.Its;
        var v2m = o.GicVersion == 2 || o.GicV2mWithGicV3;
        var gicReq = new GicRequest(o.GicVersion, its, o.Cpus, QemuVirtMap.GicDist,
            o.GicVersion == 3 ? QemuVirtMap.GicRedist : 0, o.GicVersion == 2 ? QemuVirtMap.GicCpu : 0,
            its ? QemuVirtMap.GicIts : 0, v2m ? QemuVirtMap.GicV2m : 0, QemuVirtMap.V2mFirstSpi, QemuVirtMap.V2mSpiCount);
        var m = new Machine(o.Name, bus, clock, null, o.Trace, o.Strict);
        if (w.Gic?.Invoke(m, gicReq) is { } spi) m.SetSpiProvider(spi);
        m.GicVersion = o.GicVersion;
        m.HasIts = its;
        m.Cpus = o.Cpus;
        m.RamBase = QemuVirtMap.Ram;
        m.RamSize = o.RamSize;
        var msiToV2m = v2m && (!its || o.PciMsiParent == MsiParent.GicV2m);
        if (o.PciMsiParent == MsiParent.GicV2m && !v2m) throw new ArgumentException("msi-parent gicv2m needs a GICv2m frame");
        if (o.PciMsiParent == MsiParent.Its && !its) throw new ArgumentException("msi-parent its needs an ITS");
        m.PciMsiToGicV2m = msiToV2m;
        m.MsiDoorbell = msiToV2m ? QemuVirtMap.V2mSetSpi : its ? QemuVirtMap.GitsTranslater : 0;
        if (o.Iommu != IommuKind.None)
        {
            m.Iommu = w.Iommu?.Invoke(m, new IommuRequest(o.Iommu, QemuVirtMap.Smmu,
                o.Iommu == IommuKind.SmmuV2 ? QemuVirtMap.SmmuV2FirstSpi : QemuVirtMap.SmmuFirstSpi, o.SmmuV2));
            m.IommuKind = m.Iommu == null ? IommuKind.None : o.Iommu;
        }
        // identity iommu-map and msi-map over all 2^16 requester IDs (hw/arm/virt.c create_pcie)
        var host = new PciHost(bus, m.Iommu, IdMap.Identity, IdMap.Identity) { Trace = m.Trace, Strict = m.Strict };
        for (var i = 0; i < 4; i++) host.IntxLines[i] = m.Spi(QemuVirtMap.PcieIntxFirstSpi + i);
        bus.MapMmio(new PhysAddr(QemuVirtMap.PcieEcam), QemuVirtMap.PcieEcamSize, host.Ecam, new MmioAccessRules(AccessSizes.All, true, MmioViolation.RazWi), "pcie-ecam");
        bus.MapMmio(new PhysAddr(QemuVirtMap.PcieMmio), QemuVirtMap.PcieMmioSize, host.MemoryWindow(QemuVirtMap.PcieMmio), new MmioAccessRules(AccessSizes.All, false, MmioViolation.RazWi), "pcie-mmio");
        bus.MapMmio(new PhysAddr(QemuVirtMap.PciePio), QemuVirtMap.PciePioSize, host.IoWindow(0), new MmioAccessRules(AccessSizes.All, false, MmioViolation.RazWi), "pcie-pio");
        bus.MapMmio(new PhysAddr(QemuVirtMap.PcieMmioHigh), QemuVirtMap.PcieMmioHighSize, host.MemoryWindow(QemuVirtMap.PcieMmioHigh), new MmioAccessRules(AccessSizes.All, false, MmioViolation.RazWi), "pcie-mmio-high");
        m.Pci = host;
        // QEMU's gpex host bridge at 00:00.0 (class 0x0600 host bridge)
        host.RootBus.Attach(new PciFunction(QemuVirtMap.GpexVendor, QemuVirtMap.GpexDevice, 0x060000, 0, name: "gpex-root"), 0);
        return m;
    }
}
