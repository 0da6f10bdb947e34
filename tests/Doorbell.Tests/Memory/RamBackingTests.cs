using Doorbell.Memory;

namespace Doorbell.Tests.Memory;

/// <summary>RAM regions backed by another store at an offset (guest RAM over host pages) or by callbacks (memory owned elsewhere).</summary>
public class RamBackingTests
{
    [Fact]
    public void Guest_ram_aliases_host_pages_at_an_offset_both_ways()
    {
        var host = new PhysicalAddressSpace();
        host.AddRam(new PhysAddr(0x4000_0000), 0x100_0000);
        var guest = new PhysicalAddressSpace();
        // guest PA 0x8000_0000.. is host PA 0x4080_0000..
        guest.AddRam(new PhysAddr(0x8000_0000), 0x10_0000, host.Store, 0x4080_0000, "guest-ram");

        Assert.Equal(BusStatus.Ok, guest.WriteU64(0x8000_1008, 0x1122_3344_5566_7788));
        Assert.Equal(BusStatus.Ok, host.ReadU64(0x4080_1008, out var seen));
        Assert.Equal(0x1122_3344_5566_7788UL, seen);

        Assert.Equal(BusStatus.Ok, host.Write(new PhysAddr(0x4080_2002), 2, 0xBEEF, BusAttributes.Cpu));
        Assert.Equal(BusStatus.Ok, guest.Read(new PhysAddr(0x8000_2002), 2, out var half, BusAttributes.Cpu));
        Assert.Equal(0xBEEFUL, half);

        // bulk across a page boundary, and fill
        var data = Enumerable.Range(1, 64).Select(i => (byte)i).ToArray();
        Assert.Equal(BusStatus.Ok, guest.Write(0x8000_3FE0, data, BusAttributes.Cpu));
        var back = new byte[64];
        Assert.Equal(BusStatus.Ok, host.Read(0x4080_3FE0, back, BusAttributes.Cpu));
        Assert.Equal(data, back);
        Assert.Equal(BusStatus.Ok, guest.Fill(0x8000_3FF0, 32, 0xAA));
        host.Read(0x4080_3FE0, back, BusAttributes.Cpu);
        Assert.Equal(data[..16], back[..16]);
        Assert.All(back[16..48], b => Assert.Equal(0xAA, b));
        Assert.Equal(data[48..], back[48..]);

        // outside the alias: nothing there for the guest
        Assert.Equal(BusStatus.DecodeError, guest.ReadU64(0x8010_0000, out _));
        Assert.Equal(BusStatus.DecodeError, guest.Fill(0x800F_FFF0, 32, 0));
    }

    [Fact]
    public void Callback_backing_sees_every_access_at_its_own_offsets()
    {
        var store = new byte[0x2000];
        var log = new List<(bool Write, ulong Offset, int Length)>();
        var backing = new CallbackRamBacking(
            (o, d) => { log.Add((false, o, d.Length)); store.AsSpan((int)o, d.Length).CopyTo(d); },
            (o, s) => { log.Add((true, o, s.Length)); s.CopyTo(store.AsSpan((int)o)); });
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x1000_0000), 0x1000, backing, 0x1000, "client");

        Assert.Equal(BusStatus.Ok, bus.WriteU64(0x1000_0010, 0xCAFE_F00D));
        Assert.Equal(0xCAFE_F00DUL, BitConverter.ToUInt64(store, 0x1010));
        Assert.Equal(BusStatus.Ok, bus.ReadU32(0x1000_0010, out var w));
        Assert.Equal(0xCAFE_F00Du, w);
        Assert.Equal([(true, 0x1010UL, 8), (false, 0x1010UL, 4)], log);
        Assert.Equal(BusStatus.Ok, bus.Fill(0x1000_0100, 0x300, 0x5A));
        Assert.All(store.AsSpan(0x1100, 0x300).ToArray(), b => Assert.Equal(0x5A, b));
        Assert.Equal(0, store[0x1400]);
        Assert.Equal(0, bus.Store.AllocatedPages); // the bus's own store was never used
    }

    [Fact]
    public void Backing_range_must_fit_its_store()
    {
        var bus = new PhysicalAddressSpace();
        Assert.Throws<ArgumentException>(() => bus.AddRam(new PhysAddr(0), 0x1000, new SparseMemory(), ulong.MaxValue - 0x10));
    }
}
