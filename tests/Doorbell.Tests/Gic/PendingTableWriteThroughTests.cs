using Doorbell.Gic.V3;
using Doorbell.Memory;

namespace Doorbell.Tests.Gic;

/// <summary>
/// A redistributor writes LPI pending state through to its pending table in RAM (IHI 0069 §5.1.2). The write goes
/// straight to the RAM page when the memory view can give it, and through the view otherwise (RAM owned by another
/// store, e.g. a client process): both must leave the same bits in memory.
/// </summary>
public class PendingTableWriteThroughTests
{
    const ulong Ram = 0x4000_0000, Prop = 0x4010_0000, Pend = 0x4020_0000;

    static (PhysicalAddressSpace Bus, GicV3Redistributor Rd) Board(IRamBacking? backing)
    {
        var bus = new PhysicalAddressSpace();
        if (backing is null) bus.AddRam(new PhysAddr(Ram), 0x100_0000);
        else bus.AddRam(new PhysAddr(Ram), 0x100_0000, backing, 0);
        var sys = QemuVirtGicV3.Create(bus, 1, null, 16);
        var rd = QemuVirtGicV3.GicrBase.Value;
        bus.Write(new PhysAddr(rd + GicV3Redistributor.GICR_WAKER), 4, 0, BusAttributes.Cpu);
        bus.Write(new PhysAddr(rd + GicV3Redistributor.GICR_PROPBASER), 8, Prop | 15, BusAttributes.Cpu);
        bus.Write(new PhysAddr(rd + GicV3Redistributor.GICR_PENDBASER), 8, Pend | (1UL << 62), BusAttributes.Cpu);
        bus.Write(new PhysAddr(rd + GicV3Redistributor.GICR_CTLR), 4, 1, BusAttributes.Cpu);
        return (bus, sys.Gic.Redistributors[0]);
    }

    static byte PendingByte(PhysicalAddressSpace bus, uint intid)
    {
        Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(Pend + intid / 8), 1, out var b, BusAttributes.Cpu));
        return (byte)b;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Set_and_clear_reach_the_pending_table_whatever_backs_the_ram(bool foreignBacking)
    {
        var store = new byte[0x100_0000];
        var backing = foreignBacking
            ? new CallbackRamBacking((o, d) => store.AsSpan((int)o, d.Length).CopyTo(d), (o, s) => s.CopyTo(store.AsSpan((int)o)))
            : null;
        var (bus, rd) = Board(backing);
        // LPIs in both pages of the 8 KiB table (INTIDs 8192.. and ≥ 32768 live in page 1), and a neighbour in the same word.
        uint[] lpis = [8192, 8193, 8250, 32768 + 5, 65535];
        foreach (var i in lpis) Assert.True(rd.SetLpiPending(i));
        foreach (var i in lpis) Assert.Equal(1, (PendingByte(bus, i) >> (int)(i & 7)) & 1);
        Assert.True(rd.ClearLpiPending(8193));
        Assert.Equal(0, (PendingByte(bus, 8193) >> 1) & 1);
        Assert.Equal(1, PendingByte(bus, 8192) & 1); // the neighbour in the same word is untouched
        if (foreignBacking) Assert.Equal(0b01, store[(int)(Pend - Ram) + 8192 / 8] & 0b11); // the bytes live in the foreign store
    }
}
