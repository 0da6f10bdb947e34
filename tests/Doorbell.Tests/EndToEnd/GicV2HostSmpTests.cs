using Doorbell.Devices;
using Doorbell.Gic.V2;
using Doorbell.Host.Kernel;
using Doorbell.Memory;
using Doorbell.Platform;

namespace Doorbell.Tests.EndToEnd;

/// <summary>
/// The host kernel on a GICv2 board with more than one CPU brings every CPU up, as Linux's irq-gic runs gic_cpu_init on
/// each: each CPU reaches its own banked GICC frame and SGI/PPI registers through its own view
/// (<see cref="CpuMemoryView"/>), is its GIC's IRQ target, and takes what is routed to it, pushed.
/// </summary>
public class GicV2HostSmpTests
{
    static (Machine M, HostKernel K) Boot(int cpus)
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions { GicVersion = 2, Cpus = cpus });
        m.AddPci(new MultiQueueDmaDevice(4));
        return (m, HostKernel.Boot(m, models));
    }

    static uint Gicc(HostKernel k, Machine m, int cpu, ulong offset)
    {
        Assert.Equal(BusStatus.Ok, new CpuMemoryView(k.Bus, cpu).Read(new PhysAddr(m.Map.GicCpuInterface + offset), 4, out var v, BusAttributes.Cpu));
        return (uint)v;
    }

    [Fact]
    public void Every_cpu_is_brought_up_through_its_own_banked_cpu_interface()
    {
        var (m, k) = Boot(cpus: 3);
        Assert.Equal([0, 1, 2], k.Cpus.Select(c => c.Index));
        for (var c = 0; c < 3; c++)
        {
            Assert.Equal(1u, Gicc(k, m, c, GicV2.GICC_CTLR) & 1); // each CPU enabled its own interface
            Assert.Equal(0xF0u, Gicc(k, m, c, GicV2.GICC_PMR));
        }
        // A one-CPU board is unchanged: the boot CPU only.
        Assert.Single(Boot(cpus: 1).K.Cpus);
    }

    [Fact]
    public void An_sgi_and_an_spi_routed_to_cpu_1_are_taken_by_cpu_1_without_a_poll()
    {
        var (_, k) = Boot(cpus: 2);
        var drv = k.GicV2Driver!;
        var on = new List<(int Intid, int Cpu)>();
        k.Irqs.Request(5, (i, cpu) => on.Add((i, cpu)));
        drv.SendSgi(0, 5, 1);
        Assert.Equal([(5, 1)], on);
        Assert.Equal(0L, k.Cpus[0].History.Count(i => i == 5));

        // An SPI of the board's GICv2m frame, targeted at CPU 1 (ITARGETSR), raised by a device's MSI write.
        var vec = k.MsiDomain.AllocateMsis(0x0008, 1).Vectors[0];
        k.Irqs.Request(vec.Intid, (i, cpu) => on.Add((i, cpu)));
        drv.EnableSpi(vec.Intid, 0, edge: true);
        k.MsiDomain.SetAffinity(vec, 1);
        var before = k.Cpus[1].Handled;
        Assert.Equal(BusStatus.Ok, k.Machine.Bus.Write(new PhysAddr(vec.Message.Address), 4, vec.Message.Data, BusAttributes.FromDevice(8)));
        Assert.Equal((vec.Intid, 1), on[^1]);
        Assert.Equal(before + 1, k.Cpus[1].Handled);
        Assert.Equal(0, k.ServiceInterrupts()); // nothing left for a poll
    }
}
