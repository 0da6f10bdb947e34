using Doorbell.Gic.V2;
using Doorbell.Gic.V2m;
using Doorbell.Gic.V3;
using Doorbell.Host.Irq;
using Doorbell.Memory;

namespace Doorbell.Tests.Gic;

public class GicV2mTests
{
    sealed class Machine
    {
        public readonly PhysicalAddressSpace Bus = new();
        public readonly GicV2System Sys;
        public readonly GicV2HostDriver Gic;
        public readonly Gicv2mDriver V2m;

        public Machine()
        {
            Bus.AddRam(new PhysAddr(0x4000_0000), 0x1000_0000);
            Sys = QemuVirtGicV2.Create(Bus);
            Gic = new GicV2HostDriver(Bus, QemuVirtGicV2.GicdBase, QemuVirtGicV2.GiccBase);
            Gic.Init();
            V2m = new Gicv2mDriver(Gic, QemuVirtGicV2.V2mBase);
            V2m.Init();
        }
    }

    [Fact]
    public void Msi_typer_reports_the_qemu_virt_range_as_intids_80_to_143()
    {
        var m = new Machine();
        m.Bus.Read(new PhysAddr(0x0802_0008), 4, out var typer, BusAttributes.Cpu);
        Assert.Equal((80UL << 16) | 64, typer);
        Assert.Equal(80, m.V2m.BaseIntid);
        Assert.Equal(64, m.V2m.Count);
        Assert.False(m.V2m.IsolatedMsi);
    }

    [Fact]
    public void Any_writer_can_raise_any_spi_of_the_frame()
    {
        var m = new Machine();
        var a = m.V2m.AllocateMsis(0x0008, 2);
        var b = m.V2m.AllocateMsis(0x0010, 1);
        Assert.Equal(new MsiMessage(0x0802_0040, 80), a.Vectors[0].Message);
        var log = new List<int>();
        foreach (var v in a.Vectors.Concat(b.Vectors)) m.Gic.Irqs.Request(v.Intid, (i, _) => log.Add(i));

        // Device B (DeviceID 0x10) writes device A's data: the frame cannot tell, A's interrupt fires.
        m.Bus.Write(new PhysAddr(a.Vectors[1].Message.Address), 4, a.Vectors[1].Message.Data, BusAttributes.FromDevice(0x0010));
        // A CPU store (no DeviceID at all) does the same.
        m.Bus.Write(new PhysAddr(0x0802_0040), 4, 80, BusAttributes.Cpu);
        Assert.Equal(2, m.Gic.Cpu0.HandleInterrupts());
        Assert.Equal([80, 81], log); // equal priority: lowest INTID first
        Assert.Equal(2, m.Sys.Msi.Raised);
        // Data outside the frame's range is dropped (and counted).
        m.Bus.Write(new PhysAddr(0x0802_0040), 4, 200, BusAttributes.FromDevice(8));
        Assert.Equal(1, m.Sys.Msi.Dropped);
        Assert.Equal(0, m.Gic.Cpu0.HandleInterrupts());
    }

    [Fact]
    public void Allocation_exhaustion_and_free_report_errno()
    {
        var m = new Machine();
        var a = m.V2m.AllocateMsis(1, 64);
        Assert.Equal(Errno.ENOSPC, Assert.Throws<IrqException>(() => m.V2m.AllocateMsis(2, 1)).Errno);
        m.V2m.FreeMsis(a);
        Assert.Equal(80, m.V2m.AllocateMsis(2, 1).Vectors[0].Intid);
    }

    [Fact]
    public void Gicv2_cpu_interface_acknowledges_by_priority_and_level_lines_stay_pending()
    {
        var m = new Machine();
        var gicd = QemuVirtGicV2.GicdBase.Value;
        m.Gic.EnableSpi(40, 0, edge: false);
        m.Gic.EnableSpi(41, 0, edge: true);
        m.Bus.Write(new PhysAddr(gicd + GicV2.GICD_IPRIORITYR + 41), 1, 0x80, BusAttributes.Cpu);
        var seen = new List<int>();
        m.Gic.Irqs.Request(40, (i, _) => seen.Add(i));
        m.Gic.Irqs.Request(41, (i, _) => seen.Add(i));
        var line = m.Sys.Gic.SpiLine(40);
        line.SetLevel(true);
        m.Sys.Gic.SpiLine(41).SetLevel(true);
        Assert.Equal(3, m.Gic.Cpu0.HandleInterrupts(limit: 3)); // 41 (0x80) first, then 40, then 40 again: the level is still high
        Assert.Equal([41, 40, 40], seen);
        line.SetLevel(false);
        Assert.Equal(0, m.Gic.Cpu0.HandleInterrupts());
        // SGIR: SGI 3 to "this CPU"
        m.Bus.Write(new PhysAddr(gicd + GicV2.GICD_SGIR), 4, (2u << 24) | 3, BusAttributes.Cpu);
        m.Bus.Read(new PhysAddr(QemuVirtGicV2.GiccBase.Value + GicV2.GICC_IAR), 4, out var iar, BusAttributes.Cpu);
        Assert.Equal(3UL, iar);
    }

    [Fact]
    public void Gicv2m_frame_in_front_of_a_gicv3_distributor_raises_spis_the_same_way()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 0x1000_0000);
        var sys = QemuVirtGicV3.Create(bus, 1);
        var frame = new GicV2m(sys.Gic, 80, 64);
        frame.Map(bus, QemuVirtGicV2.V2mBase);
        var drv = new GicV3HostDriver(bus, QemuVirtGicV3.GicdBase, QemuVirtGicV3.GicrBase, sys.Gic.CpuInterfaces, new PhysPageAllocator(0x4800_0000, 0x400_0000, bus));
        drv.Init();
        drv.EnableSpi(90, 0, edge: true);
        var hit = 0;
        drv.Irqs.Request(90, (_, _) => hit++);
        bus.Write(new PhysAddr(0x0802_0040), 4, 90, BusAttributes.FromDevice(1234));
        Assert.Equal(1, drv.Cpus[0].HandleInterrupts());
        Assert.Equal(1, hit);
    }
}
