using Doorbell.Devices;
using Doorbell.Examples;
using Doorbell.Gic.V2;
using Doorbell.Host.Kernel;
using Doorbell.Host.Vfio;
using Doorbell.Kvm;
using Doorbell.Memory;
using Doorbell.Platform;
using Doorbell.Vmm;

namespace Doorbell.Tests.Kvm;

/// <summary>
/// A vGICv2 guest with two vCPUs: each vCPU reaches its own GICC interface and its own banked distributor registers
/// at the same guest addresses; SPIs follow ITARGETSR, SGIs reach only the CPUs they name (with the source CPU in
/// GICC_IAR), and an assigned device's MSI through VFIO, the irqfd and the GICv2m frame lands on the vCPU the guest
/// routed its SPI to.
/// </summary>
public class VgicV2SmpTests
{
    const ulong Gicd = 0x0800_0000, Gicc = 0x0801_0000;

    static uint R(Vcpu c, ulong a)
    {
        Assert.Equal(BusStatus.Ok, c.Read(a, 4, out var v));
        return (uint)v;
    }

    static void W(Vcpu c, ulong a, uint v) => Assert.Equal(BusStatus.Ok, c.Write(a, 4, v));

    [Fact]
    public void Two_vcpus_on_a_vgicv2_have_banked_cpu_interfaces_spis_follow_itargetsr_and_sgis_reach_only_their_target()
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions { GicVersion = 2 });
        m.AddPci(new MultiQueueDmaDevice(4));
        var k = HostKernel.Boot(m, models);
        var host = k.FindFunction("0000:00:01.0")!;
        Assert.Equal(0, GuestVm.Create(k.CreateProcess(k.BuildVfio(new VfioOptions { AllowUnsafeInterrupts = true })), 2, 0x0200_0000, GuestInterruptController.GicV2m, out var vmm));
        Assert.Equal(0, vmm!.AddDevice(host.Group.Id, host.Name, 0x0008, out var proxy));
        long HostSpis() => k.Cpus.Sum(c => (long)c.History.Count(i => i is >= 32 + 48 and < 32 + 48 + 64));
        var res = new GuestMqDriver(vmm, proxy!, HostSpis).Run();
        Assert.True(res.Ok, res.Failure + "\n" + string.Join("\n", res.Log));
        var gk = (GuestKernel)vmm.GuestSoftware!;
        var v0 = vmm.Vm.Vcpus[0];
        var v1 = vmm.Vm.Vcpus[1];
        // The guest kernel brought vCPU 1 up through its own view: two CPUs, each with its own GICC state.
        Assert.Equal(2, gk.Cpus.Count);
        Assert.Equal(0x1u, GicdTyperCpus(R(v0, Gicd + GicV2.GICD_TYPER)));
        W(v1, Gicc + GicV2.GICC_PMR, 0x80);
        Assert.Equal(0x80u, R(v1, Gicc + GicV2.GICC_PMR));
        Assert.Equal(0xF0u, R(v0, Gicc + GicV2.GICC_PMR));
        W(v1, Gicc + GicV2.GICC_PMR, 0xF0);
        // Banked distributor registers: ITARGETSR0-7 read as the accessing CPU; SGI enables are per CPU.
        Assert.Equal(0x0101_0101u, R(v0, Gicd + GicV2.GICD_ITARGETSR));
        Assert.Equal(0x0202_0202u, R(v1, Gicd + GicV2.GICD_ITARGETSR));
        W(v1, Gicd + GicV2.GICD_ICENABLER, 1u << 5);
        Assert.Equal(0u, R(v1, Gicd + GicV2.GICD_ISENABLER) & (1u << 5));
        Assert.NotEqual(0u, R(v0, Gicd + GicV2.GICD_ISENABLER) & (1u << 5));

        // From here the test looks at each interrupt before the guest takes it: the vCPUs leave the guest (KVM_RUN
        // returned), so a kick is recorded and the interrupt waits for the entry the test plays (HandleInterrupts).
        v0.Stop();
        v1.Stop();
        // SGI 3 from vCPU 0 to vCPU 1 (GICD_SGIR written by vCPU 0): only vCPU 1 takes it.
        var sgiOn = new List<int>();
        gk.Irqs.Request(3, (_, cpu) => sgiOn.Add(cpu));
        var kicks0 = v0.Kicks;
        gk.Interrupts.GicV2!.SendSgi(0, 3, 1);
        Assert.True(v1.IrqPending);
        Assert.False(v0.IrqPending);
        Assert.Equal(kicks0, v0.Kicks);
        Assert.Equal(0, gk.Cpus[0].HandleInterrupts());
        Assert.Equal(1, gk.Cpus[1].HandleInterrupts());
        Assert.Equal([1], sgiOn);
        Assert.False(v1.IrqPending);
        // … and back from vCPU 1 to vCPU 0: GICC_IAR on vCPU 0 names the source in CPUID[12:10]; EOI takes that value.
        gk.Interrupts.GicV2.SendSgi(1, 3, 0);
        Assert.False(v1.IrqPending);
        var iar = R(v0, Gicc + GicV2.GICC_IAR);
        Assert.Equal(3u | 1u << 10, iar);
        W(v0, Gicc + GicV2.GICC_EOIR, iar);
        Assert.Equal(0xFFu, R(v0, Gicc + GicV2.GICC_RPR)); // nothing active any more on vCPU 0
        // A disabled SGI on vCPU 1 stays pending there and is not signalled.
        gk.Interrupts.GicV2.SendSgi(0, 5, 1);
        Assert.False(v1.IrqPending);

        // A wired SPI (INTID 42, GSI 10 through the default irqchip route) that the guest targets at vCPU 1 in
        // ITARGETSR, raised through an edge irqfd: only vCPU 1 has it pending and takes it.
        var spiOn = new List<int>();
        gk.Irqs.Request(42, (_, cpu) => spiOn.Add(cpu));
        gk.Interrupts.GicV2.EnableSpi(42, 1, edge: true);
        using (var efd = Doorbell.Host.Os.EventFd.Create())
        {
            Assert.Equal(0, vmm.Vm.Irqfd(new KvmIrqfd(efd.Fd, 10, 0)));
            Assert.True(efd.Signal());
            Assert.True(v1.IrqPending);
            Assert.False(v0.IrqPending);
            Assert.Equal(0, gk.Cpus[0].HandleInterrupts());
            Assert.Equal(1, gk.Cpus[1].HandleInterrupts());
            Assert.Equal([1], spiOn);
            Assert.Equal(0, vmm.Vm.Irqfd(new KvmIrqfd(efd.Fd, 10, KvmConst.KVM_IRQFD_FLAG_DEASSIGN)));
        }

        // The device's queue-1 vector (a GICv2m SPI) routed to vCPU 1 by the guest (ITARGETSR): device MSI → SMMU →
        // host GICv2m SPI → VFIO eventfd → irqfd → guest GICv2m frame → vGICv2 SPI → vCPU 1 only.
        var drv = res.Driver!;
        var vec = drv.Vectors!.Vectors[1];
        gk.MsiDomain.SetAffinity(vec, 1);
        Assert.Equal(BusStatus.Ok, v0.Read(Gicd + GicV2.GICD_ITARGETSR + (ulong)vec.Intid, 1, out var target));
        Assert.Equal(2UL, target); // CPU 1's bit
        // Both vCPUs run the guest again: this time nobody plays the entry; the interrupt is pushed to vCPU 1's guest CPU.
        v0.Run();
        v1.Run();
        var kicks1 = v1.Kicks;
        var taken = drv.InterruptsTaken(1);
        var wakes = vmm.Vm.IrqfdWakes;
        var (handled0, handled1) = (gk.Cpus[0].Handled, gk.Cpus[1].Handled);
        Assert.Equal(0, drv.Submit(1, res.Sources[1], res.Sources[1] + 0x800, 0x100, 0x51));
        Assert.Equal(wakes + 1, vmm.Vm.IrqfdWakes);
        Assert.True(v1.Kicks > kicks1);
        Assert.Equal(taken + 1, drv.InterruptsTaken(1)); // taken before the doorbell store returned
        Assert.Equal(handled0, gk.Cpus[0].Handled);     // (an SPI wakes every vCPU's IRQ input; only its target takes it)
        Assert.Equal(handled1 + 1, gk.Cpus[1].Handled);
        Assert.Equal(vec.Intid, gk.Cpus[1].History[^1]);
        Assert.False(v0.IrqPending || v1.IrqPending);
        Assert.Equal(0, gk.ServiceInterrupts());
        vmm.Dispose();
    }

    static uint GicdTyperCpus(uint typer) => typer >> 5 & 7;

    [Fact]
    public void An_access_from_a_cpu_the_gicv2_has_no_interface_for_is_raz_wi()
    {
        var gic = new GicV2(cpuCount: 2, spiCount: 32);
        var bus = new PhysicalAddressSpace();
        gic.Map(bus, new PhysAddr(Gicd), new PhysAddr(Gicc));
        Assert.Equal(BusStatus.Ok, bus.Write(new PhysAddr(Gicc + GicV2.GICC_PMR), 4, 0xF0, BusAttributes.OfCpu(1)));
        Assert.Equal(BusStatus.Ok, bus.Write(new PhysAddr(Gicc + GicV2.GICC_PMR), 4, 0x40, BusAttributes.OfCpu(5)));
        Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(Gicc + GicV2.GICC_PMR), 4, out var pmr5, BusAttributes.OfCpu(5)));
        Assert.Equal(0UL, pmr5);
        Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(Gicc + GicV2.GICC_PMR), 4, out var pmr1, BusAttributes.OfCpu(1)));
        Assert.Equal(0xF0UL, pmr1);
        Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(Gicc + GicV2.GICC_PMR), 4, out var pmr0, BusAttributes.Cpu));
        Assert.Equal(0UL, pmr0);
        Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(Gicd + GicV2.GICD_ITARGETSR), 4, out var t5, BusAttributes.OfCpu(5)));
        Assert.Equal(0UL, t5);
        Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(Gicd + GicV2.GICD_ITARGETSR), 4, out var t1, BusAttributes.OfCpu(1)));
        Assert.Equal(0x0202_0202UL, t1);
        // The CPU index rides in the attributes' spare byte: hot paths still pass 8 bytes; large indexes saturate.
        Assert.Equal(8, System.Runtime.CompilerServices.Unsafe.SizeOf<BusAttributes>());
        Assert.Equal(255, BusAttributes.OfCpu(600).CpuIndex);
        Assert.Equal(0, BusAttributes.Cpu.CpuIndex);
    }
}
