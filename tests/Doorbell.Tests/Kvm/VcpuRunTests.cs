using Doorbell.Examples;
using Doorbell.Gic.V3;
using Doorbell.Host.Kernel;
using Doorbell.Kvm;
using Doorbell.Memory;

namespace Doorbell.Tests.Kvm;

/// <summary>
/// Interrupts pushed into guests, as into the host: while a vCPU runs the guest kernel (<see cref="Vcpu.Run"/>), a
/// kick raises the guest CPU's IRQ input and the guest takes the interrupt from the machine's event loop after the
/// operation that raised it — nobody polls; while it does not run (<see cref="Vcpu.Stop"/>) the kick is recorded and
/// the interrupt is delivered when the vCPU runs again, as KVM delivers at the next guest entry.
/// </summary>
public class VcpuRunTests
{
    const int Spi = 32 + 20;
    static readonly ulong GuestBoardGicd = Doorbell.Platform.PlatformMap.QemuVirt.GicDistributor;

    /// <summary>A guest kernel on the ITS board with a handler on SPI 52 (targeted at CPU 0) that notes what it saw.</summary>
    static (GuestKernel Gk, Vcpu Cpu, Vm Vm, List<bool> SeenInOperation) Guest()
    {
        var (_, vmm, _) = GuestTestBoard.Boot(vcpus: 2);
        var gk = GuestMqDriver.BootKernel(vmm);
        var vm = vmm.Vm;
        var seen = new List<bool>();
        gk.Irqs.Request(Spi, (_, _) => seen.Add(vm.Loop.InOperation));
        gk.Interrupts.SetSpiEnabled(Spi, true, edge: true);
        return (gk, vm.Vcpus[0], vm, seen);
    }

    /// <summary>vCPU 0's store to GICD_ISPENDR: a guest makes an SPI pending through the vGIC distributor (an in-kernel device).</summary>
    static void SetPendingByStore(Vm vm, Vcpu cpu) =>
        Assert.Equal(BusStatus.Ok, cpu.Write(GuestBoardGicd + 0x200 + Spi / 32 * 4, 4, 1u << (Spi % 32)));

    [Fact]
    public void A_running_vcpu_takes_an_interrupt_raised_by_its_own_store_after_the_store_not_inside_it()
    {
        var (gk, cpu, vm, seen) = Guest();
        Assert.True(cpu.Running && vm.Vcpus[1].Running); // the guest kernel's boot ran its CPUs on the vCPUs
        Assert.Same(gk.Cpus[0], cpu.GuestCpu);
        Assert.Same(vm.Loop, vm.KernelMmio.Loop);
        var kicks = cpu.Kicks;
        SetPendingByStore(vm, cpu);
        Assert.Equal([false], seen);          // taken once, when the distributor's access had returned (no model running)
        Assert.True(cpu.Kicks > kicks);
        Assert.False(cpu.KickPending);
        Assert.False(cpu.IrqPending);         // acknowledged and ended by the guest's entry (IAR / EOI)
        Assert.Equal(Spi, gk.Cpus[0].History[^1]);
        Assert.Equal(0, gk.ServiceInterrupts()); // nothing was left for a poll
        Assert.Equal(0L, gk.Cpus[1].Handled);    // CPU 1 was not the target
    }

    [Fact]
    public void A_stopped_vcpu_records_the_kick_and_takes_the_interrupt_when_it_runs_again()
    {
        var (gk, cpu, vm, seen) = Guest();
        cpu.Stop();
        Assert.False(cpu.Running);
        SetPendingByStore(vm, cpu);
        Assert.Empty(seen);
        Assert.True(cpu.KickPending);
        Assert.True(cpu.IrqPending);
        cpu.Run();                            // guest entry: what waits is delivered now
        Assert.Equal([false], seen);
        Assert.False(cpu.KickPending);
        Assert.False(cpu.IrqPending);
        Assert.Equal(0, gk.ServiceInterrupts());
    }

    [Fact]
    public void A_stopped_vcpus_interrupt_can_still_be_taken_by_playing_the_guests_entry()
    {
        var (gk, cpu, vm, seen) = Guest();
        cpu.Stop();
        SetPendingByStore(vm, cpu);
        Assert.Equal(1, gk.ServiceInterrupts());
        Assert.Equal([false], seen);
        Assert.False(cpu.IrqPending);
    }

    [Fact]
    public void Signal_msi_from_the_vmm_is_taken_by_the_running_guest_before_the_ioctl_returns()
    {
        var (gk, cpu, vm, _) = Guest();
        var v = gk.MsiDomain.AllocateMsis(0x0008, 1).Vectors[0];
        var lpis = new List<bool>();
        gk.Irqs.Request(v.Intid, (_, _) => lpis.Add(vm.Loop.InOperation));
        // KVM_SIGNAL_MSI at the vITS doorbell with the vector's message and DeviceID 8 (the guest mapped it when allocating)
        Assert.Equal(1, vm.SignalMsi(new KvmMsi(v.Message.Address, v.Message.Data, KvmConst.KVM_MSI_VALID_DEVID, 0x0008)));
        Assert.Equal([false], lpis);
        Assert.False(cpu.IrqPending);
        Assert.Equal(v.Intid, gk.Cpus[0].History[^1]);
    }

    [Fact]
    public void Run_without_a_guest_cpu_is_refused_and_a_bare_vms_kicks_reach_the_named_cpu_only_while_running()
    {
        var h = new Doorbell.Tests.Gic.ItsHarness(1, guest: true);
        h.Mapc(0, 0);
        h.MapBasic(8, 8192, 32, 0);
        var vm = h.Vm!;
        var vcpu = vm.Vcpus[0];
        Assert.False(vcpu.Running);
        Assert.Throws<InvalidOperationException>(() => vcpu.Run());
        var raised = 0;
        vcpu.Run(new CountingTarget(() => raised++));
        Assert.True(vcpu.Running);
        Assert.Equal(0, raised);              // nothing was signalled at entry
        Assert.Equal(1, vm.SignalMsi(new KvmMsi(0x0809_0040, 3, KvmConst.KVM_MSI_VALID_DEVID, 8)));
        Assert.True(raised >= 1);             // pushed to the guest CPU's IRQ input
        Assert.False(vcpu.KickPending);
        var atStop = raised;
        vcpu.Stop();
        Assert.Equal(1, vm.SignalMsi(new KvmMsi(0x0809_0040, 4, KvmConst.KVM_MSI_VALID_DEVID, 8)));
        Assert.Equal(atStop, raised);         // recorded, not delivered
        Assert.True(vcpu.KickPending);
        vcpu.Run();                           // the CPU named before; the waiting kick is delivered at entry
        Assert.Equal(atStop + 1, raised);
        Assert.False(vcpu.KickPending);
    }

    sealed class CountingTarget(Action raise) : IInterruptTarget
    {
        public void Raise() => raise();
    }
}
