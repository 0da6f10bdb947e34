using Doorbell.Devices;
using Doorbell.Pci;
using Doorbell.Platform;
using Doorbell.Timing;
using static Doorbell.Tests.Pci.PciTestKit;

namespace Doorbell.Tests.Pci;

public class EduTests
{
    const ulong Bar = 0x1000_0000;

    static (Machine M, EduDevice Edu) Up(ulong? dmaMask = null)
    {
        var m = Virt();
        var edu = m.AddPci(dmaMask is { } mask ? new EduDevice(m.Clock, mask) : new EduDevice(m.Clock));
        m.Bus.W32(Cfg(0, 1, 0, 0x10), (uint)Bar);
        m.Bus.W16(Cfg(0, 1, 0, 4), PciCfg.CmdMemory | PciCfg.CmdBusMaster);
        return (m, edu);
    }

    [Fact]
    public void Identification_liveness_and_factorial()
    {
        var (m, _) = Up();
        var b = m.Bus;
        Assert.Equal(0x010000edu, b.R32(Bar));
        b.W32(Bar + 4, 0x1234_5678);
        Assert.Equal(~0x1234_5678u, b.R32(Bar + 4));
        b.W32(Bar + 8, 10);
        Assert.Equal(0u, b.R32(Bar + 0x20) & 1);
        Assert.Equal(3628800u, b.R32(Bar + 8));
        b.W32(Bar + 8, 13);
        Assert.Equal(unchecked((uint)6227020800), b.R32(Bar + 8));    // wraps at 32 bits like QEMU
        b.W32(Bar + 8, 0xFFFF_FFFF);
        Assert.Equal(0u, b.R32(Bar + 8));
        // below 4 bytes QEMU's memory core rejects the access (reads 0); 8 bytes below 0x80 reads all ones
        Assert.Equal(0UL, ReadSized(b, Bar, 2));
        Assert.Equal(ulong.MaxValue, ReadSized(b, Bar + 8, 8));
        Assert.Equal(0xFFFF_FFFFu, b.R32(Bar + 0x10));               // unassigned offset: ~0 truncated
    }

    static ulong ReadSized(Doorbell.Memory.PhysicalAddressSpace b, ulong a, int size)
    {
        b.Read(new Doorbell.Memory.PhysAddr(a), size, out var v, Doorbell.Memory.BusAttributes.Cpu);
        return v;
    }

    [Fact]
    public void Interrupt_status_raise_and_ack_drive_intx_on_spi_3_plus_swizzle()
    {
        var (m, edu) = Up();
        var b = m.Bus;
        b.W32(Bar + 0x60, 0x5);
        Assert.Equal(5u, b.R32(Bar + 0x24));
        var line = m.RecordedSpi(QemuVirtMap.PcieIntxFirstSpi + 1)!;   // slot 1, INTA → SPI 4
        Assert.True(line.Level);
        Assert.True(edu.IntxAsserted);
        Assert.Equal(PciCfg.StsInterrupt, (ushort)((b.R32(Cfg(0, 1, 0, 4)) >> 16) & PciCfg.StsInterrupt));
        b.W32(Bar + 0x64, 0x1);
        Assert.True(line.Level);
        b.W32(Bar + 0x64, 0x4);
        Assert.False(line.Level);
        // INTX_DISABLE gates the wire but not the status bit
        b.W32(Bar + 0x60, 0x1);
        b.W16(Cfg(0, 1, 0, 4), PciCfg.CmdMemory | PciCfg.CmdIntxDisable);
        Assert.False(line.Level);
        Assert.Equal(PciCfg.StsInterrupt, (ushort)((b.R32(Cfg(0, 1, 0, 4)) >> 16) & PciCfg.StsInterrupt));
        // factorial with IRQFACT raises bit 0
        b.W32(Bar + 0x64, 0x1);
        b.W32(Bar + 0x20, 0x80);
        b.W32(Bar + 8, 3);
        Assert.Equal(1u, b.R32(Bar + 0x24));
        Assert.Equal(0x80u, b.R32(Bar + 0x20));
    }

    [Fact]
    public void Dma_round_trip_completes_at_the_next_poll_after_100ms_of_virtual_time()
    {
        var (m, edu) = Up(ulong.MaxValue);
        var b = m.Bus;
        const ulong src = QemuVirtMap.Ram + 0x1000, dst = QemuVirtMap.Ram + 0x8000;
        for (var i = 0u; i < 64; i += 4) b.W32(src + i, 0xC0DE_0000 + i);
        b.W64(Bar + 0x80, src);
        b.W64(Bar + 0x88, 0x40000);
        b.W64(Bar + 0x90, 64);
        Assert.Equal(0L, m.Clock.Now);
        b.W64(Bar + 0x98, 1 | 4);                                    // RAM → edu, raise IRQ
        Assert.Equal(100_000_000L, m.Clock.NextDeadline);
        Assert.Equal(0x4UL, b.R64(Bar + 0x98));                      // polled: completed, RUN clear
        Assert.Equal(100_000_000L, m.Clock.Now);
        Assert.Equal(0x100u, b.R32(Bar + 0x24));
        Assert.Equal(0xC0DE_0008u, BitConverter.ToUInt32(edu.Buffer[8..]));
        b.W64(Bar + 0x80, 0x40000);
        b.W64(Bar + 0x88, dst);
        b.W64(Bar + 0x98, 1 | 2);                                    // edu → RAM
        Assert.Equal(0x2UL, b.R64(Bar + 0x98));
        Assert.Equal(0xC0DE_003Cu, b.R32(dst + 0x3C));
        Assert.Equal(200_000_000L, m.Clock.Now);
    }

    [Fact]
    public void Any_register_access_completes_a_pending_dma_first_and_the_clock_alone_also_completes_it()
    {
        var (m, edu) = Up(ulong.MaxValue);
        var b = m.Bus;
        b.W64(QemuVirtMap.Ram, 0x1122_3344_5566_7788);
        b.W64(Bar + 0x80, QemuVirtMap.Ram);
        b.W64(Bar + 0x88, 0x40000);
        b.W64(Bar + 0x90, 8);
        b.W64(Bar + 0x98, 1);
        Assert.Equal(50_000_000L, m.Clock.Step(50_000_000));
        Assert.Equal(100_000_000L, m.Clock.NextDeadline);
        Assert.Equal(0UL, BitConverter.ToUInt64(edu.Buffer));
        b.W64(Bar + 0x90, 99);                                       // the access lets the DMA finish, then lands
        Assert.Equal(100_000_000L, m.Clock.Now);
        Assert.Equal(0x1122_3344_5566_7788UL, BitConverter.ToUInt64(edu.Buffer));
        Assert.Equal(99UL, b.R64(Bar + 0x90));
        var (m2, edu2) = Up(ulong.MaxValue);
        m2.Bus.W64(QemuVirtMap.Ram, 0xABCD);
        m2.Bus.W64(Bar + 0x80, QemuVirtMap.Ram);
        m2.Bus.W64(Bar + 0x88, 0x40000);
        m2.Bus.W64(Bar + 0x90, 8);
        m2.Bus.W64(Bar + 0x98, 1);
        Assert.Equal(99_999_999L, m2.Clock.Step(99_999_999));
        Assert.Equal(0UL, BitConverter.ToUInt64(edu2.Buffer));
        Assert.Equal(100_000_000L, m2.Clock.Step());                // clock_step to the deadline: the DMA fires
        Assert.Null(m2.Clock.NextDeadline);
        Assert.Equal(0xABCDUL, BitConverter.ToUInt64(edu2.Buffer));
    }

    [Fact]
    public void Full_4k_dma_works_out_of_range_dma_is_dropped_and_dma_mask_clamps()
    {
        var (m, edu) = Up(ulong.MaxValue);
        var b = m.Bus;
        b.W32(QemuVirtMap.Ram + 0xFFC, 0xAABB_CCDD);
        b.W64(Bar + 0x80, QemuVirtMap.Ram);
        b.W64(Bar + 0x88, 0x40000);
        b.W64(Bar + 0x90, 4096);                                     // QEMU 7.2 aborts here
        b.W64(Bar + 0x98, 1);
        Assert.Equal(0UL, b.R64(Bar + 0x98));
        Assert.Equal(0xAABB_CCDDu, BitConverter.ToUInt32(edu.Buffer[0xFFC..]));
        b.W64(Bar + 0x88, 0x40800);
        b.W64(Bar + 0x98, 1 | 4);                                    // 4 KiB from the middle: out of range
        Assert.Equal(4UL, b.R64(Bar + 0x98));
        Assert.Equal(1, edu.RejectedDmaCount);
        Assert.Equal(0x100u, b.R32(Bar + 0x24));                     // still completes and interrupts
        var (m2, edu2) = Up();                                       // QEMU's default mask: 28 bits
        m2.Bus.W32(QemuVirtMap.Ram + 0x10, 0x5555_6666);
        m2.Bus.W64(Bar + 0x80, QemuVirtMap.Ram + 0x10);              // RAM on virt is above 2^28: clamped to 0x10 (nothing there)
        m2.Bus.W64(Bar + 0x88, 0x40000);
        m2.Bus.W64(Bar + 0x90, 4);
        m2.Bus.W64(Bar + 0x98, 1);
        Assert.Equal(0UL, m2.Bus.R64(Bar + 0x98));
        Assert.Equal(1, edu2.FailedDmaCount);
        var (m3, edu3) = Up(dmaMask: 0x7FFF_FFFF);
        m3.Bus.W32(QemuVirtMap.Ram + 0x10, 0x5555_6666);
        m3.Bus.W64(Bar + 0x80, 0x1_4000_0010);                       // above the mask → clamped to RAM + 0x10
        m2 = m3; edu2 = edu3;
        m2.Bus.W64(Bar + 0x88, 0x40000);
        m2.Bus.W64(Bar + 0x90, 4);
        m2.Bus.W64(Bar + 0x98, 1);
        Assert.Equal(0UL, m2.Bus.R64(Bar + 0x98));
        Assert.Equal(0x5555_6666u, BitConverter.ToUInt32(edu2.Buffer));
    }

    [Fact]
    public void Virtual_clock_runs_events_in_time_then_schedule_order()
    {
        var c = new VirtualClock();
        var log = new List<string>();
        c.Schedule(20, () => log.Add("b"));
        c.Schedule(10, () => log.Add("a"));
        var h = c.Schedule(15, () => log.Add("x"));
        c.Schedule(20, () => { log.Add("c"); c.Schedule(c.Now + 5, () => log.Add("d")); });
        Assert.True(c.Cancel(h));
        Assert.Equal(12, c.Step(12));
        Assert.Equal(["a"], log);
        Assert.Equal(20, c.Step());
        Assert.Equal(["a", "b", "c"], log);
        Assert.Equal(100, c.Set(100));
        Assert.Equal(["a", "b", "c", "d"], log);
        Assert.Equal(100, c.Set(50));                               // never goes back
        Assert.Equal(100, c.Step());                                // no deadline: stays
    }
}
