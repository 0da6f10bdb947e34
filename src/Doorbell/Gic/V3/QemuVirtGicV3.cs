using Doorbell.Gic.Its;
using Doorbell.Memory;
using Doorbell.Tracing;

namespace Doorbell.Gic.V3;

/// <summary>A GICv3 with one ITS, mapped where QEMU's virt board puts them.</summary>
public sealed record GicV3System(GicV3 Gic, GicV3Its Its)
{
    public GicV3CpuInterface Cpu(int n) => Gic.CpuInterfaces[n];
}

/// <summary>
/// Board wiring for QEMU virt with gic-version=3 (facts from QEMU hw/arm/virt.c base_memmap):
/// GICD 0x0800_0000 (64 KiB), ITS 0x0808_0000 (128 KiB; GITS_TRANSLATER at 0x0809_0040),
/// GICR 0x080A_0000 with one 128 KiB frame per CPU. virt has 256 interrupt lines (NUM_IRQS), i.e. 224 SPIs.
/// </summary>
public static class QemuVirtGicV3
{
    public static readonly PhysAddr GicdBase = new(0x0800_0000);
    public static readonly PhysAddr ItsBase = new(0x0808_0000);
    public static readonly PhysAddr TranslaterAddress = new(0x0809_0040);
    public static readonly PhysAddr GicrBase = new(0x080A_0000);

    public static GicV3System Create(PhysicalAddressSpace bus, int cpus, ItsOptions? its = null, int idBits = 16, Trace? trace = null, StrictMonitor? strict = null)
    {
        var gic = new GicV3(bus, new GicV3Options { CpuCount = cpus, SpiCount = 224, IdBits = idBits }, trace, strict);
        gic.Map(GicdBase, GicrBase);
        var i = new GicV3Its(gic, its);
        i.Map(bus, ItsBase);
        return new GicV3System(gic, i);
    }
}
