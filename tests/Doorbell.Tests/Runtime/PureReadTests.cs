using Doorbell.Memory;
using Doorbell.Pci;

namespace Doorbell.Tests.Runtime;

/// <summary>
/// Reads a handler declares deferral-free (<see cref="IMmioHandler.ReadsDeferNothing"/>: PCI configuration reads) run
/// without the event loop's model-operation bookkeeping; every other MMIO read keeps it, so work it defers still waits
/// for the access to finish.
/// </summary>
public class PureReadTests
{
    sealed class Probe(PhysicalAddressSpace bus, bool pure) : IMmioHandler
    {
        public bool? SawInOperation;
        public bool ReadsDeferNothing => pure;
        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
        {
            SawInOperation = bus.Loop.InOperation;
            value = 0x5A;
            return BusStatus.Ok;
        }
        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes) => BusStatus.Ok;
    }

    [Fact]
    public void A_deferral_free_read_skips_the_bookkeeping_and_others_keep_it()
    {
        var bus = new PhysicalAddressSpace();
        var plain = new Probe(bus, pure: false);
        var pure = new Probe(bus, pure: true);
        bus.MapMmio(new PhysAddr(0x1000_0000), 0x1000, plain, MmioAccessRules.Registers32And64, "plain");
        bus.MapMmio(new PhysAddr(0x2000_0000), 0x1000, pure, MmioAccessRules.Registers32And64, "pure");
        Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(0x1000_0000), 4, out var a, BusAttributes.Cpu));
        Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(0x2000_0000), 4, out var b, BusAttributes.Cpu));
        Assert.Equal((0x5AUL, 0x5AUL), (a, b));
        Assert.True(plain.SawInOperation);   // inside a model operation: a write it issued would be posted
        Assert.False(pure.SawInOperation);   // no bookkeeping around a deferral-free read
        Assert.Equal(1, bus.Loop.MaxDepth);
    }

    [Fact]
    public void Ecam_configuration_reads_are_declared_deferral_free_and_bar_windows_are_not()
    {
        var host = new PciHost(new PhysicalAddressSpace());
        Assert.True(host.Ecam.ReadsDeferNothing);             // config space: bytes, nothing else
        Assert.False(host.MemoryWindow(0).ReadsDeferNothing); // a BAR read reaches a device model, which may act on it
        Assert.False(host.IoWindow().ReadsDeferNothing);
    }
}
