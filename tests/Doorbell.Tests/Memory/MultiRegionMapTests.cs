using Doorbell.Gic.Its;
using Doorbell.Gic.V2;
using Doorbell.Gic.V3;
using Doorbell.Memory;

namespace Doorbell.Tests.Memory;

/// <summary>A model with several MMIO regions is placed whole or not at all: a conflict leaves no orphan frame on the bus.</summary>
public class MultiRegionMapTests
{
    sealed class Sink : IMmioHandler
    {
        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes) { value = 0; return BusStatus.Ok; }
        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes) => BusStatus.Ok;
    }

    static PhysicalAddressSpace BusWith(ulong occupied)
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 1UL << 24);
        bus.MapMmio(new PhysAddr(occupied), 0x1000, new Sink(), MmioAccessRules.AnySizeAligned, "occupant");
        return bus;
    }

    [Fact]
    public void An_its_whose_translation_frame_is_taken_maps_neither_frame()
    {
        var bus = BusWith(0x0809_0000); // the translation frame of an ITS at 0x0808_0000
        var its = new GicV3Its(new GicV3(bus, new GicV3Options { CpuCount = 1 }));
        var e = Assert.Throws<ArgumentException>(() => its.Map(bus, new PhysAddr(0x0808_0000)));
        Assert.Contains("'gicv3-its-translation'", e.Message, StringComparison.Ordinal);
        Assert.Contains("'occupant'", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(bus.Regions, r => r.Name.StartsWith("gicv3-its", StringComparison.Ordinal));
        its.Map(bus, new PhysAddr(0x0810_0000)); // elsewhere it places both
        Assert.Equal(2, bus.Regions.Count(r => r.Name.StartsWith("gicv3-its", StringComparison.Ordinal)));
    }

    [Fact]
    public void Gic_frames_that_overlap_each_other_or_the_bus_map_nothing()
    {
        var bus = BusWith(0x0900_0000);
        var v2 = new GicV2(1, 64);
        var e = Assert.Throws<ArgumentException>(() => v2.Map(bus, new PhysAddr(0x0800_0000), new PhysAddr(0x0800_8000)));
        Assert.Contains("'gicv2-gicc'", e.Message, StringComparison.Ordinal);
        Assert.Contains("'gicv2-gicd'", e.Message, StringComparison.Ordinal);
        var v3 = new GicV3(bus, new GicV3Options { CpuCount = 2 });
        Assert.Throws<ArgumentException>(() => v3.Map(bus, new PhysAddr(0x0800_0000), new PhysAddr(0x08FE_0000))); // GICR (2 × 128 KiB) reaches the occupant
        Assert.Equal(["ram", "occupant"], bus.Regions.Select(r => r.Name));
    }
}
