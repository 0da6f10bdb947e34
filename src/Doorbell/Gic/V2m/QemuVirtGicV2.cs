using Doorbell.Gic.V2;
using Doorbell.Memory;
using Doorbell.Tracing;

namespace Doorbell.Gic.V2m;

/// <summary>A GICv2 with its GICv2m MSI frame.</summary>
public sealed record GicV2System(GicV2 Gic, GicV2m Msi);

/// <summary>
/// Board wiring for QEMU virt with gic-version=2 (QEMU hw/arm/virt.c): GICD 0x0800_0000, GICC 0x0801_0000,
/// GICv2m frame 0x0802_0000. virt gives the frame SPI indices 48..111 (irqmap[VIRT_GIC_V2M] = 48, 64 SPIs);
/// QEMU's frame reports base_spi + 32 in MSI_TYPER (arm_gicv2m.c), so MSI_TYPER reads base INTID 80,
/// count 64, and the frame raises INTIDs 80..143.
/// </summary>
public static class QemuVirtGicV2
{
    public static readonly PhysAddr GicdBase = new(0x0800_0000);
    public static readonly PhysAddr GiccBase = new(0x0801_0000);
    public static readonly PhysAddr V2mBase = new(0x0802_0000);
    public const int V2mFirstSpiIndex = 48, V2mSpiCount = 64;
    public const int V2mBaseIntid = V2mFirstSpiIndex + 32;
    /// <summary>QEMU virt: NUM_IRQS = 256 SPIs (GICD_TYPER.ITLinesNumber = 8).</summary>
    public const int SpiCount = 256;

    public static GicV2System Create(PhysicalAddressSpace bus, int cpus = 1, StrictMonitor? strict = null)
    {
        var gic = new GicV2(cpus, SpiCount, strict);
        gic.Map(bus, GicdBase, GiccBase);
        var msi = new GicV2m(gic, V2mBaseIntid, V2mSpiCount, strict);
        msi.Map(bus, V2mBase);
        return new GicV2System(gic, msi);
    }
}
