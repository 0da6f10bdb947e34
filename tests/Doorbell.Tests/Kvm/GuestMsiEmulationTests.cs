using Doorbell.Devices;
using Doorbell.Examples;
using Doorbell.Host.Kernel;
using Doorbell.Kvm;
using Doorbell.Memory;
using Doorbell.Platform;
using Doorbell.Vmm;

namespace Doorbell.Tests.Kvm;

/// <summary>
/// What the VMM emulates of an assigned device's interrupt capabilities beyond the MSI-X table: the MSI-X Pending Bit
/// Array (a masked vector's message is held pending and sent on unmask).
/// </summary>
public class GuestMsiEmulationTests
{
    const ulong Ecam = 0x40_1000_0000;

    static (HostKernel K, GuestVm Vmm, VfioPciProxy Proxy) Boot(int vcpus = 1)
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions());
        m.AddPci(new MultiQueueDmaDevice(4));
        var k = HostKernel.Boot(m, models);
        var fn = k.FindFunction("0000:00:01.0")!;
        Assert.Equal(0, GuestVm.Create(k.CreateProcess(k.BuildVfio()), vcpus, 0x0200_0000, out var vmm));
        Assert.Equal(0, vmm!.AddDevice(fn.Group.Id, fn.Name, 0x0008, out var proxy));
        return (k, vmm, proxy!);
    }

    static uint Cfg(Vcpu cpu, int slot, int off, int size = 4)
    {
        Assert.Equal(BusStatus.Ok, cpu.Read(Ecam + ((ulong)slot << 15) + (ulong)off, size, out var v));
        return (uint)v;
    }

    static void CfgW(Vcpu cpu, int slot, int off, uint v, int size = 4) =>
        Assert.Equal(BusStatus.Ok, cpu.Write(Ecam + ((ulong)slot << 15) + (ulong)off, size, v));

    static int FindCap(Vcpu cpu, int slot, uint id)
    {
        for (var p = (int)Cfg(cpu, slot, 0x34, 1); p != 0; p = (int)Cfg(cpu, slot, p + 1, 1))
            if (Cfg(cpu, slot, p, 1) == id) return p;
        return 0;
    }

    [Fact]
    public void A_masked_vector_sets_its_pba_bit_instead_of_interrupting_and_unmasking_delivers_it_and_clears_the_bit()
    {
        var (k, vmm, proxy) = Boot();
        long HostLpis() => k.Cpus.Sum(c => (long)c.History.Count(i => i >= 8192));
        var res = new GuestMqDriver(vmm, proxy, k.ServiceInterrupts, HostLpis).Run();
        Assert.True(res.Ok, res.Failure);
        var gk = (GuestKernel)vmm.GuestSoftware!;
        var drv = res.Driver!;
        var cpu = vmm.Vm.Vcpus[0];
        var bar = proxy.GuestBar0;
        var pba = bar + proxy.MsixPbaOffset;
        ulong Pba()
        {
            Assert.Equal(BusStatus.Ok, cpu.Read(pba, 8, out var v));
            return v;
        }
        Assert.Equal(0UL, Pba());

        // 1. Per-vector mask: the guest sets Vector Control.Mask of vector 1 in the emulated table.
        var ctl1 = bar + proxy.MsixTableOffset + 1 * 16 + 12;
        Assert.Equal(BusStatus.Ok, cpu.Write(ctl1, 4, 1));
        var taken = drv.InterruptsTaken(1);
        var kicks = cpu.Kicks;
        var hostBefore = HostLpis();
        Assert.Equal(0, drv.Submit(1, res.Sources[1], res.Sources[1] + 0x800, 0x100, 0xC0FFEE));
        k.ServiceInterrupts();
        Assert.True(HostLpis() > hostBefore);            // the device's MSI-X reached the host and VFIO's eventfd
        Assert.Equal(kicks, cpu.Kicks);                  // … but not the guest: the vector is masked
        Assert.False(cpu.IrqPending);
        Assert.Equal(0, gk.ServiceInterrupts());
        Assert.Equal(2UL, Pba());                        // PBA bit 1
        Assert.Equal(BusStatus.Ok, cpu.Read(pba, 4, out var lo));
        Assert.Equal(2UL, lo);
        Assert.Equal(BusStatus.Ok, cpu.Write(pba, 8, 0));  // read-only: a write changes nothing
        Assert.Equal(2UL, Pba());
        Assert.True(proxy.IsPending(1) && !proxy.IsPending(0));
        // Unmask: the pending message is sent now, the bit clears, the guest's handler runs.
        Assert.Equal(BusStatus.Ok, cpu.Write(ctl1, 4, 0));
        Assert.True(cpu.IrqPending);
        Assert.Equal(1L, proxy.PendingDelivered);
        Assert.Equal(0UL, Pba());
        Assert.Equal(1, gk.ServiceInterrupts());
        Assert.Equal(taken + 1, drv.InterruptsTaken(1));
        // Unmasked again, the vector interrupts directly (irqfd) and nothing is pending.
        Assert.Equal(0, drv.Submit(1, res.Sources[1], res.Sources[1] + 0x800, 0x100, 0xC0FFEF));
        k.ServiceInterrupts();
        Assert.Equal(1, gk.ServiceInterrupts());
        Assert.Equal(taken + 2, drv.InterruptsTaken(1));
        Assert.Equal(0UL, Pba());
        Assert.Equal(1L, proxy.PendingDelivered);

        // 2. Function mask: every vector is masked; a message of vector 2 is held in the PBA until the mask clears.
        var cap = FindCap(cpu, 1, 0x11);
        var mc = Cfg(cpu, 1, cap + 2, 2);
        CfgW(cpu, 1, cap + 2, mc | 0x4000, 2);
        Assert.True(proxy.MsixFunctionMasked);
        var taken2 = drv.InterruptsTaken(2);
        Assert.Equal(0, drv.Submit(2, res.Sources[2], res.Sources[2] + 0x800, 0x100, 0xC0FFF0));
        k.ServiceInterrupts();
        Assert.False(cpu.IrqPending);
        Assert.Equal(4UL, Pba());
        CfgW(cpu, 1, cap + 2, mc & ~0x4000u, 2);
        Assert.Equal(0UL, Pba());
        Assert.Equal(1, gk.ServiceInterrupts());
        Assert.Equal(taken2 + 1, drv.InterruptsTaken(2));

        // 3. Masked and then MSI-X disabled: nothing stays pending (the table and PBA no longer apply).
        Assert.Equal(BusStatus.Ok, cpu.Write(ctl1, 4, 1));
        Assert.Equal(0, drv.Submit(1, res.Sources[1], res.Sources[1] + 0x800, 0x100, 0xC0FFF1));
        k.ServiceInterrupts();
        Assert.Equal(2UL, Pba());
        CfgW(cpu, 1, cap + 2, 0, 2);
        Assert.False(proxy.MsixEnabled);
        Assert.False(proxy.IsPending(1));
        vmm.Dispose();
    }
}
