using Doorbell.Gic.Its;
using Doorbell.Gic.V3;
using Doorbell.Host.Irq;
using Doorbell.Memory;

namespace Doorbell.Tests.Gic;

public class HostItsDriverTests
{
    sealed class Machine
    {
        public readonly PhysicalAddressSpace Bus = new();
        public readonly GicV3System Sys;
        public readonly GicV3HostDriver Gic;
        public readonly ItsDriver Its;

        public Machine(int cpus = 2, ItsOptions? its = null, ItsDriverOptions? drv = null)
        {
            Bus.AddRam(new PhysAddr(0x4000_0000), 0x2000_0000);
            Sys = QemuVirtGicV3.Create(Bus, cpus, its);
            Gic = new GicV3HostDriver(Bus, QemuVirtGicV3.GicdBase, QemuVirtGicV3.GicrBase, Sys.Gic.CpuInterfaces,
                new PhysPageAllocator(0x5000_0000, 0x1000_0000, Bus));
            Gic.Init();
            Its = new ItsDriver(Gic, QemuVirtGicV3.ItsBase, drv);
            Its.Init();
        }

        /// <summary>The device programs the message and fires: a 32-bit write carrying its DeviceID.</summary>
        public void Fire(uint deviceId, MsiMessage m) =>
            Assert.Equal(BusStatus.Ok, Bus.Write(new PhysAddr(m.Address), 4, m.Data, BusAttributes.FromDevice(deviceId)));
    }

    public static TheoryData<ulong, bool, bool> Shapes => new()
    {
        { 0x1_0000, false, false }, { 0x1000, true, false }, { 0x4000, true, true }, { 0x1000, false, true },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Device_msi_with_device_id_reaches_the_registered_handler_on_a_host_cpu(ulong pageSize, bool forceIndirect, bool pta)
    {
        var m = new Machine(2, new ItsOptions { PhysicalTargetAddresses = pta, DeviceIdBits = 16 }, new ItsDriverOptions { PageSize = pageSize, ForceIndirect = forceIndirect });
        Assert.Equal(0, m.Sys.Its.CommandErrorCount);
        Assert.True(m.Its.IsolatedMsi);
        var msis = m.Its.AllocateMsis(0x0008, 4);
        Assert.Equal(4, msis.Vectors.Count);
        Assert.All(msis.Vectors, v => Assert.Equal(0x0809_0040UL, v.Message.Address));
        Assert.Equal([0u, 1, 2, 3], msis.Vectors.Select(v => v.Message.Data));
        var ran = new List<(int Intid, int Cpu)>();
        foreach (var v in msis.Vectors) m.Gic.Irqs.Request(v.Intid, (i, c) => ran.Add((i, c)));

        m.Fire(0x0008, msis.Vectors[2].Message);
        Assert.Equal(1, m.Gic.Cpus[0].HandleInterrupts());
        Assert.Equal([(msis.Vectors[2].Intid, 0)], ran);

        m.Its.SetAffinity(msis.Vectors[2], 1);
        m.Fire(0x0008, msis.Vectors[2].Message);
        Assert.Equal(0, m.Gic.Cpus[0].HandleInterrupts());
        Assert.Equal(1, m.Gic.Cpus[1].HandleInterrupts());
        Assert.Equal((msis.Vectors[2].Intid, 1), ran[^1]);
        Assert.Equal(0, m.Sys.Its.CommandErrorCount);
        // 16 DeviceID bits × 8-byte DTEs = 512 KiB flat: more than two pages of any size, so Linux-style sizing goes two-level.
        Assert.True(m.Its.DeviceTableIndirect);
        Assert.Equal(pageSize, m.Its.DeviceTablePageSize);
    }

    [Fact]
    public void Small_device_id_space_gets_a_flat_table()
    {
        var m = new Machine(1, new ItsOptions { DeviceIdBits = 10 }, new ItsDriverOptions { PageSize = 0x1000 });
        Assert.False(m.Its.DeviceTableIndirect); // 1024 × 8 B = two 4K pages
        var v = m.Its.AllocateMsis(1000, 1).Vectors[0];
        m.Fire(1000, v.Message);
        Assert.Equal(1, m.Gic.Cpus[0].HandleInterrupts());
    }

    [Fact]
    public void Wired_level_spi_from_a_device_line_is_handled_on_its_routed_cpu_until_the_device_deasserts()
    {
        var m = new Machine(2);
        var inta = m.Sys.Gic.SpiLine(35); // qemu-virt PCIe INTA = SPI 3 = INTID 35
        m.Gic.EnableSpi(35, 1, edge: false);
        var calls = 0;
        m.Gic.Irqs.Request(35, (_, cpu) => { calls++; Assert.Equal(1, cpu); if (calls == 2) inta.SetLevel(false); });
        inta.SetLevel(true);
        Assert.Equal(0, m.Gic.Cpus[0].HandleInterrupts());
        Assert.Equal(2, m.Gic.Cpus[1].HandleInterrupts()); // re-taken while the level stays high, then quiet
        Assert.Equal(2, calls);
    }

    [Fact]
    public void Another_device_replaying_the_message_raises_nothing()
    {
        var m = new Machine();
        var a = m.Its.AllocateMsis(0x0008, 1);
        var b = m.Its.AllocateMsis(0x0010, 1);
        var hits = 0;
        m.Gic.Irqs.Request(a.Vectors[0].Intid, (_, _) => hits++);
        m.Gic.Irqs.Request(b.Vectors[0].Intid, (_, _) => hits += 100);
        m.Fire(0x0010, a.Vectors[0].Message); // device B forges A's (address, data): it raises B's own event 0
        m.Fire(0x0099, a.Vectors[0].Message); // an unknown device: dropped
        m.Gic.Cpus[0].HandleInterrupts();
        Assert.Equal(100, hits);
        Assert.Equal(ItsDropReason.UnmappedDevice, m.Sys.Its.LastDrop.Reason);
    }

    [Fact]
    public void Masking_through_the_property_table_holds_the_interrupt_pending_until_unmasked()
    {
        var m = new Machine(1);
        var v = m.Its.AllocateMsis(3, 2).Vectors[1];
        var hits = 0;
        m.Gic.Irqs.Request(v.Intid, (_, _) => hits++);
        m.Its.SetMasked(v, true);
        m.Fire(3, v.Message);
        Assert.Equal(0, m.Gic.Cpus[0].HandleInterrupts());
        m.Its.SetMasked(v, false);
        Assert.Equal(1, m.Gic.Cpus[0].HandleInterrupts());
        Assert.Equal(1, hits);
    }

    [Fact]
    public void Freeing_discards_events_and_unmaps_the_device_and_misuse_reports_errno()
    {
        var m = new Machine(1);
        var a = m.Its.AllocateMsis(5, 2);
        Assert.Equal(Errno.EEXIST, Assert.Throws<IrqException>(() => m.Its.AllocateMsis(5, 1)).Errno);
        Assert.Equal(Errno.EINVAL, Assert.Throws<IrqException>(() => m.Its.AllocateMsis(1u << 20, 1)).Errno);
        Assert.Equal(Errno.EINVAL, Assert.Throws<IrqException>(() => m.Its.SetAffinity(a.Vectors[0], 7)).Errno);
        m.Gic.Irqs.Request(a.Vectors[0].Intid, (_, _) => { });
        Assert.Equal(Errno.EBUSY, Assert.Throws<IrqException>(() => m.Gic.Irqs.Request(a.Vectors[0].Intid, (_, _) => { })).Errno);
        m.Its.FreeMsis(a);
        m.Fire(5, a.Vectors[0].Message);
        Assert.Equal(ItsDropReason.UnmappedDevice, m.Sys.Its.LastDrop.Reason);
        var again = m.Its.AllocateMsis(5, 2);
        Assert.Equal(a.Vectors[0].Intid, again.Vectors[0].Intid); // LPIs were returned to the pool
    }
}
