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
/// Array (a masked vector's message is held pending and sent on unmask) and plain MSI (capability emulated in the
/// composed config space, turned into VFIO_DEVICE_SET_IRQS on the MSI index with irqfds).
/// </summary>
public class GuestMsiEmulationTests
{
    static (HostKernel K, GuestVm Vmm, VfioPciProxy Proxy) Boot(int vcpus = 1, bool msi = false) => GuestTestBoard.Boot(vcpus, msi);
    static uint Cfg(Vcpu cpu, int slot, int off, int size = 4) => GuestTestBoard.Cfg(cpu, slot, off, size);
    static void CfgW(Vcpu cpu, int slot, int off, uint v, int size = 4) => GuestTestBoard.CfgW(cpu, slot, off, v, size);
    static int FindCap(Vcpu cpu, int slot, uint id) => GuestTestBoard.FindCap(cpu, slot, id);

    [Fact]
    public void A_masked_vector_sets_its_pba_bit_instead_of_interrupting_and_unmasking_delivers_it_and_clears_the_bit()
    {
        var (k, vmm, proxy) = Boot();
        long HostLpis() => k.Cpus.Sum(c => (long)c.History.Count(i => i >= 8192));
        var res = new GuestMqDriver(vmm, proxy, HostLpis).Run();
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
        Assert.True(HostLpis() > hostBefore);            // the device's MSI-X reached the host and VFIO's eventfd
        Assert.Equal(kicks, cpu.Kicks);                  // … but not the guest: the vector is masked
        Assert.False(cpu.IrqPending);
        Assert.Equal(taken, drv.InterruptsTaken(1));
        Assert.Equal(2UL, Pba());                        // PBA bit 1
        Assert.Equal(BusStatus.Ok, cpu.Read(pba, 4, out var lo));
        Assert.Equal(2UL, lo);
        vmm.Vm.Strict.Enabled = true;
        Assert.Equal(BusStatus.Ok, cpu.Write(pba, 8, 0));  // read-only: a write changes nothing (strict mode says so)
        Assert.Equal(2UL, Pba());
        Assert.Contains(vmm.Vm.Strict.Violations, x => x.Rule.Contains("§6.8.2.10", StringComparison.Ordinal));
        Assert.True(proxy.IsPending(1) && !proxy.IsPending(0));
        // Unmask: the pending message is sent now, the bit clears, the guest's handler runs (before the store returns).
        Assert.Equal(BusStatus.Ok, cpu.Write(ctl1, 4, 0));
        Assert.Equal(1L, proxy.PendingDelivered);
        Assert.Equal(0UL, Pba());
        Assert.Equal(taken + 1, drv.InterruptsTaken(1));
        Assert.False(cpu.IrqPending);
        // Unmasked again, the vector interrupts directly (irqfd) and nothing is pending.
        Assert.Equal(0, drv.Submit(1, res.Sources[1], res.Sources[1] + 0x800, 0x100, 0xC0FFEF));
        Assert.Equal(taken + 2, drv.InterruptsTaken(1));
        Assert.Equal(0, gk.ServiceInterrupts());
        Assert.Equal(0UL, Pba());
        Assert.Equal(1L, proxy.PendingDelivered);

        // 2. Function mask: every vector is masked; a message of vector 2 is held in the PBA until the mask clears.
        var cap = FindCap(cpu, 1, 0x11);
        var mc = Cfg(cpu, 1, cap + 2, 2);
        CfgW(cpu, 1, cap + 2, mc | 0x4000, 2);
        Assert.True(proxy.MsixFunctionMasked);
        var taken2 = drv.InterruptsTaken(2);
        Assert.Equal(0, drv.Submit(2, res.Sources[2], res.Sources[2] + 0x800, 0x100, 0xC0FFF0));
        Assert.False(cpu.IrqPending);
        Assert.Equal(taken2, drv.InterruptsTaken(2));
        Assert.Equal(4UL, Pba());
        CfgW(cpu, 1, cap + 2, mc & ~0x4000u, 2);
        Assert.Equal(0UL, Pba());
        Assert.Equal(taken2 + 1, drv.InterruptsTaken(2));
        Assert.Equal(0, gk.ServiceInterrupts());

        // 3. Masked and then MSI-X disabled: nothing stays pending (the table and PBA no longer apply).
        Assert.Equal(BusStatus.Ok, cpu.Write(ctl1, 4, 1));
        Assert.Equal(0, drv.Submit(1, res.Sources[1], res.Sources[1] + 0x800, 0x100, 0xC0FFF1));
        Assert.Equal(2UL, Pba());
        CfgW(cpu, 1, cap + 2, 0, 2);
        Assert.False(proxy.MsixEnabled);
        Assert.False(proxy.IsPending(1));
        vmm.Dispose();
    }

    [Fact]
    public void Guest_multiple_message_msi_is_emulated_by_the_vmm_and_runs_the_shared_driver_end_to_end()
    {
        var (k, vmm, proxy) = Boot(msi: true);
        var host = k.FindFunction("0000:00:01.0")!;
        var cpu = vmm.Vm.Vcpus[0];
        // The device has MSI (4 messages, 64-bit, per-vector masking) and no MSI-X; the guest sees the capability
        // where VFIO shows it, with the layout flags of the device and Enable/MME/address/data as the VMM's.
        Assert.Equal(0, FindCap(cpu, 1, 0x11));
        var cap = FindCap(cpu, 1, 0x05);
        Assert.Equal(cap, proxy.MsiCapability);
        Assert.NotEqual(0, cap);
        Assert.Equal(0x0184u, Cfg(cpu, 1, cap + 2, 2)); // PVM, 64-bit, MMC = 4 messages, MME 0, disabled
        long HostLpis() => k.Cpus.Sum(c => (long)c.History.Count(i => i >= 8192));
        var res = new GuestMqDriver(vmm, proxy, HostLpis).Run();
        Assert.True(res.Ok, res.Failure + "\n" + string.Join("\n", res.Log));
        Assert.Equal(8, res.CopiesVerified);
        Assert.Equal(MqRegs.StatusWriteFault, res.FaultStatus);
        Assert.All(res.Hops, h => Assert.Equal(1, h.Count));
        // The guest driver enabled 4 messages at the vITS doorbell with data 0..3 (the vector in the low bits).
        Assert.True(proxy.MsiEnabled);
        Assert.Equal(4, proxy.MsiVectors);
        Assert.Equal(0x01A5u, Cfg(cpu, 1, cap + 2, 2));   // MME = 4 messages (2), enabled
        Assert.Equal(0x0809_0040u, Cfg(cpu, 1, cap + 4));
        Assert.Equal(0u, Cfg(cpu, 1, cap + 8));
        Assert.Equal(0u, Cfg(cpu, 1, cap + 0x0C, 2));
        Assert.Equal(4, proxy.ActiveVectors);              // one eventfd (irqfd) per message
        Assert.Equal(4, vmm.Vm.IrqfdCount);
        Assert.Equal([0, 1, 2, 3], res.Handled.Select(h => h.Queue).Distinct().Order());
        Assert.All(res.Handled, h => Assert.Equal(res.Driver!.Vectors!.Vectors[h.Queue].Intid, h.Intid));
        // The physical function runs MSI as VFIO set it up (host vectors, host doorbell), not the guest's values.
        var hostCap = (int)host.ReadConfig(0x34, 1);
        while (hostCap != 0 && host.ReadConfig(hostCap, 1) != 0x05) hostCap = (int)host.ReadConfig(hostCap + 1, 1);
        Assert.NotEqual(0, hostCap);
        Assert.Equal(0x21u, host.ReadConfig(hostCap + 2, 2) & 0x71); // host: 4 messages enabled
        Assert.NotEqual(0x0809_0040u, host.ReadConfig(hostCap + 4, 4));

        // Per-vector masking: message 3 masked in the guest's Mask Bits is held in its Pending Bits and sent on unmask.
        var gk = (GuestKernel)vmm.GuestSoftware!;
        var drv = res.Driver!;
        var maskOff = cap + 0x10;
        CfgW(cpu, 1, maskOff, 1u << 3);
        var taken = drv.InterruptsTaken(3);
        Assert.Equal(0, drv.Submit(3, res.Sources[3], res.Sources[3] + 0x800, 0x100, 0xAB));
        Assert.False(cpu.IrqPending);
        Assert.Equal(taken, drv.InterruptsTaken(3));
        Assert.Equal(1u << 3, Cfg(cpu, 1, cap + 0x14));
        CfgW(cpu, 1, maskOff, 0); // the unmask sends the held message: the guest takes it before this store returns
        Assert.Equal(0u, Cfg(cpu, 1, cap + 0x14));
        Assert.Equal(taken + 1, drv.InterruptsTaken(3));
        Assert.Equal(0, gk.ServiceInterrupts());

        // Remove: MSI disabled in the guest, the VMM releases the vectors and VFIO's MSI index.
        gk.Unbind(gk.FindFunction("0000:00:01.0")!);
        Assert.False(proxy.MsiEnabled);
        Assert.Equal(0, proxy.ActiveVectors);
        Assert.Equal(0, vmm.Vm.IrqfdCount);
        Assert.Equal(0u, host.ReadConfig(hostCap + 2, 2) & 1);
        vmm.Dispose();
    }

    [Fact]
    public void Guest_msi_of_an_edu_device_reaches_the_guest_handler_through_the_vits()
    {
        var (k, _, host, vmm, proxy) = GuestTestBoard.BootEdu();
        var gk = GuestMqDriver.BootKernel(vmm);
        var fn = gk.FindFunction("0000:00:01.0")!;
        var cpu = vmm.Vm.Vcpus[0];
        gk.Pci.Write(fn.Rid, 0x04, 2, 0x6);
        var cap = Doorbell.Host.Kernel.PciMsix.FindCapability(gk.Pci, fn.Rid, Doorbell.Host.Kernel.PciMsi.CapId);
        Assert.Equal(proxy!.MsiCapability, cap);
        Assert.Equal(1, Doorbell.Host.Kernel.PciMsi.MaxVectors(gk.Pci, fn.Rid, cap)); // edu: one 64-bit message, no masking
        var v = gk.MsiDomain.AllocateMsis(fn.Rid, 1).Vectors[0];
        var handled = 0;
        gk.Irqs.Request(v.Intid, (_, _) => { handled++; cpu.Write(fn.Bars[0].Address + EduRegs.IrqAck, 4, 0xFFFF_FFFF); });
        Assert.True(proxy.IntxConnected);
        Doorbell.Host.Kernel.PciMsi.Enable(gk.Pci, fn.Rid, cap, v.Message.Address, v.Message.Data, 1);
        Assert.True(proxy.MsiEnabled);
        Assert.False(proxy.IntxConnected);                 // MSI replaces INTx
        Assert.Equal(1, vmm.Vm.IrqfdCount);
        // edu raises its interrupt: MSI → SMMU → host ITS → VFIO's MSI eventfd → irqfd → vITS → the guest handler.
        //    Pushed: the guest's handler has run before the raising store returns; nothing is left to poll for.
        Assert.Equal(BusStatus.Ok, cpu.Write(fn.Bars[0].Address + EduRegs.IrqRaise, 4, 1));
        Assert.Equal(1, handled);
        Assert.False(cpu.IrqPending);
        Assert.Equal(0, gk.ServiceInterrupts());
        // Disable: the VMM gives VFIO's MSI back and INTx is connected again.
        Doorbell.Host.Kernel.PciMsi.Disable(gk.Pci, fn.Rid, cap);
        Assert.False(proxy.MsiEnabled);
        Assert.True(proxy.IntxConnected);
        Assert.Equal(1, vmm.Vm.IrqfdCount);                // the INTx irqfd
        // Multiple Message Enable above what the device can: clamped to its one message; strict mode names the rule.
        vmm.Vm.Strict.Enabled = true;
        CfgW(cpu, 1, cap + 2, 0x71, 2);
        Assert.True(proxy.MsiEnabled);
        Assert.Equal(1, proxy.MsiVectors);
        Assert.Equal(0x01u, Cfg(cpu, 1, cap + 2, 2) & 0x71);
        Assert.Contains(vmm.Vm.Strict.Violations, x => x.Rule.Contains("§6.8.1.3", StringComparison.Ordinal));
        Doorbell.Host.Kernel.PciMsi.Disable(gk.Pci, fn.Rid, cap);
        // A guest-initiated device reset with MSI on gives everything back: MSI state, VFIO's MSI index, irqfds.
        Doorbell.Host.Kernel.PciMsi.Enable(gk.Pci, fn.Rid, cap, v.Message.Address, v.Message.Data, 1);
        Assert.True(proxy.MsiEnabled && !proxy.IntxConnected);
        Assert.Equal(-Errno.EINVAL, proxy.Reset());          // edu has no reset method VFIO could use (as Linux: -EINVAL); the VMM releases all anyway
        Assert.False(proxy.MsiEnabled);
        Assert.Equal(0, proxy.ActiveVectors);
        Assert.Equal(0u, Cfg(cpu, 1, cap + 2, 2) & 0x71);  // Enable and MME read back as reset
        Assert.True(proxy.IntxConnected);
        Assert.Equal(1, vmm.Vm.IrqfdCount);
        vmm.Dispose();
        Assert.Equal(0, vmm.Vm.IrqfdCount);
    }
}
