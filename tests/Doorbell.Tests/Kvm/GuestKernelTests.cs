using Doorbell.Devices;
using Doorbell.Examples;
using Doorbell.Host.Kernel;
using Doorbell.Host.Vfio;
using Doorbell.Kvm;
using Doorbell.Memory;
using Doorbell.Platform;
using Doorbell.Vmm;

namespace Doorbell.Tests.Kvm;

/// <summary>
/// The guest runs Doorbell's own kernel layer (GuestKernel: the host's GIC/ITS or GICv2/GICv2m drivers, PCI enumeration
/// over the VMM's guest ECAM, the shared mq-dma driver) over a vCPU's view; the VMM composes the assigned device's
/// config space from VFIO's. Plus the GICv2m board: vGICv2 + GICv2m guests, and what one VM's device can do to another's.
/// </summary>
public class GuestKernelTests
{
    static (HostKernel K, GuestVm Vmm, VfioPciProxy Proxy) Boot(int vcpus = 2) => GuestTestBoard.Boot(vcpus);
    static uint Cfg(Vcpu cpu, int slot, int off, int size = 4) => GuestTestBoard.Cfg(cpu, slot, off, size);
    static void CfgW(Vcpu cpu, int slot, int off, uint v, int size = 4) => GuestTestBoard.CfgW(cpu, slot, off, v, size);

    [Fact]
    public void Guest_ecam_presents_a_host_bridge_and_the_device_with_config_composed_from_vfio()
    {
        var (k, vmm, proxy) = Boot();
        var cpu = vmm.Vm.Vcpus[0];
        var host = k.FindFunction("0000:00:01.0")!;
        Assert.Equal(0x0008_1b36u, Cfg(cpu, 0, 0));                  // 00:00.0: QEMU's gpex root (1b36:0008)
        Assert.Equal(0x06u, Cfg(cpu, 0, 0x0B, 1));                     // class: bridge
        Assert.Equal(0xdb01_1234u, Cfg(cpu, 1, 0));                    // 00:01.0: the assigned device's IDs, through VFIO
        Assert.Equal(0xFFFF_FFFFu, Cfg(cpu, 5, 0));                    // an empty slot reads as all ones
        // BARs are virtual: sizing gives the VFIO region's size with VFIO's type bits (64-bit memory), the host BAR is untouched.
        var hostBar = host.ReadConfig(0x10, 4);
        CfgW(cpu, 1, 0x10, 0xFFFF_FFFF);
        CfgW(cpu, 1, 0x14, 0xFFFF_FFFF);
        Assert.Equal(0xFFFF_C004u, Cfg(cpu, 1, 0x10));                 // 16 KiB, 64-bit, not prefetchable
        Assert.Equal(0xFFFF_FFFFu, Cfg(cpu, 1, 0x14));
        Assert.Equal(hostBar, host.ReadConfig(0x10, 4));
        Assert.Equal(0u, Cfg(cpu, 1, 0x18));                           // upper half consumed; BAR2 absent
        Assert.Equal(0u, Cfg(cpu, 1, 0x30));                           // no expansion ROM for the guest
        CfgW(cpu, 1, 0x10, 0x2000_0000);
        CfgW(cpu, 1, 0x14, 0);
        Assert.Equal(0x2000_0000UL, proxy.GuestBar0);
        // The BAR decodes only with memory space enabled in the guest's command register.
        Assert.Equal(BusStatus.DecodeError, cpu.Read(0x2000_0000, 4, out _));
        CfgW(cpu, 1, 0x04, 0x6, 2);
        Assert.Equal(BusStatus.Ok, cpu.Read(0x2000_0000 + MqRegs.Id, 4, out var id));
        Assert.Equal(MqRegs.IdValue, (uint)id);
        // MSI-X: the capability is where VFIO shows it; Enable and Function Mask are the VMM's, not the device's.
        var cap = 0;
        for (var p = (int)Cfg(cpu, 1, 0x34, 1); p != 0; p = (int)Cfg(cpu, 1, p + 1, 1))
            if (Cfg(cpu, 1, p, 1) == 0x11) { cap = p; break; }
        Assert.NotEqual(0, cap);
        Assert.Equal(3u, Cfg(cpu, 1, cap + 2, 2) & 0x7FF);            // 4 vectors
        CfgW(cpu, 1, cap + 2, 0xC000, 2);
        Assert.Equal(0xC000u, Cfg(cpu, 1, cap + 2, 2) & 0xC000);
        Assert.True(proxy.MsixEnabled && proxy.MsixFunctionMasked);
        Assert.Equal(0u, host.ReadConfig(cap + 2, 2) & 0x8000);        // the physical function's MSI-X is still off
        Assert.Equal(0, proxy.ActiveVectors);                          // nothing live while the function is masked
        Assert.True(vmm.EcamAccesses > 0 && proxy.ConfigReads > 0 && proxy.ConfigWrites > 0);
        vmm.Dispose();
    }

    [Fact]
    public void The_guest_kernel_is_the_host_kernel_layer_over_a_vcpu_view()
    {
        var (k, vmm, proxy) = Boot();
        var exits = vmm.Vm.MmioExits;
        var gk = GuestMqDriver.BootKernel(vmm);
        // The host's GICv3 driver found one redistributor per vCPU; its ITS driver is the guest's MSI domain.
        Assert.NotNull(gk.Interrupts.GicV3);
        Assert.Equal(2, gk.Cpus.Count);
        Assert.IsType<Doorbell.Host.Irq.ItsDriver>(gk.MsiDomain);
        // Its tables are in guest RAM (the vITS reads them through the memslots) and its commands ran without error.
        var baser = vmm.Its.Engine.Baser(0);
        Assert.True(vmm.Vm.Memory.IsMemory(baser & 0x0000_FFFF_FFFF_F000UL, 0x1000));
        Assert.Equal(0, vmm.Its.CommandErrorCount);
        Assert.True(vmm.Its.Engine.CommandsProcessed >= 2 * 3); // MAPC + INVALL + SYNC per vCPU
        // PCI enumeration went through the VMM's ECAM (MMIO exits) and placed BAR0 in the guest's PCIe window.
        Assert.True(vmm.Vm.MmioExits > exits && vmm.EcamAccesses > 0);
        Assert.Equal(["0000:00:00.0", "0000:00:01.0"], gk.Pci.Functions.Select(f => f.Name));
        var fn = gk.FindFunction("0000:00:01.0")!;
        Assert.Equal(GuestVm.PciMmioBase, fn.Bars[0].Address);
        Assert.Equal(fn.Bars[0].Address, proxy.GuestBar0);
        // The shared mq-dma driver probes: MSI-X vectors are LPIs of the vITS with the guest's GITS_TRANSLATER.
        var drv = new MqDmaDriver(gk, fn);
        Assert.Equal(0, gk.Bind(drv));
        Assert.Equal(-Errno.EBUSY, gk.Bind(new MqDmaDriver(gk, fn)));
        Assert.All(drv.Vectors!.Vectors, v => Assert.Equal(0x0809_0040UL, v.Message.Address));
        Assert.Equal([8192, 8193, 8194, 8195], drv.Vectors.Vectors.Select(v => v.Intid));
        Assert.True(proxy.MsixEnabled && !proxy.MsixFunctionMasked);
        Assert.Equal(4, proxy.ActiveVectors);
        // Remove gives everything back: vectors, irqfds, VFIO's MSI-X.
        gk.Unbind(fn);
        Assert.Equal(0, proxy.ActiveVectors);
        Assert.False(proxy.MsixEnabled);
        Assert.Equal(0, vmm.Vm.IrqfdCount);
        vmm.Dispose();
    }

    static (HostKernel K, Machine M) BootGicV2mHost()
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions { GicVersion = 2 });
        m.AddPci(new MultiQueueDmaDevice(4));
        m.AddPci(new MultiQueueDmaDevice(4));
        return (HostKernel.Boot(m, models), m);
    }

    [Fact]
    public void Vgicv2_guest_with_gicv2m_drives_its_device_through_the_shared_drivers()
    {
        var (k, _) = BootGicV2mHost();
        var fn = k.FindFunction("0000:00:01.0")!;
        Assert.Equal(0, GuestVm.Create(k.CreateProcess(k.BuildVfio(new VfioOptions { AllowUnsafeInterrupts = true })), 1, 0x0200_0000, GuestInterruptController.GicV2m, out var vmm));
        Assert.Equal(0, vmm!.AddDevice(fn.Group.Id, fn.Name, 0x0008, out var proxy));
        long HostSpis() => k.Cpus.Sum(c => (long)c.History.Count(i => i is >= 32 + 48 and < 32 + 48 + 64));
        var res = new GuestMqDriver(vmm, proxy!, HostSpis).Run();
        Assert.True(res.Ok, res.Failure + "\n" + string.Join("\n", res.Log));
        Assert.Equal(8, res.CopiesVerified);
        Assert.Equal(MqRegs.StatusWriteFault, res.FaultStatus);
        var gk = (GuestKernel)vmm.GuestSoftware!;
        Assert.NotNull(gk.Interrupts.GicV2);
        Assert.IsType<Doorbell.Host.Irq.Gicv2mDriver>(gk.MsiDomain);
        // The guest's vectors are SPIs of its GICv2m frame (data = SPI, address = the guest frame's MSI_SETSPI_NS).
        Assert.All(res.Driver!.Vectors!.Vectors, v => Assert.Equal(0x0802_0040UL, v.Message.Address));
        Assert.Equal([0, 1, 2, 3], res.Handled.Select(h => h.Queue).Distinct().Order());
        Assert.All(res.Handled, h => Assert.Equal(res.Driver.Vectors.Vectors[h.Queue].Intid, h.Intid));
        Assert.All(res.Hops, h => Assert.Equal(1, h.Count));
        vmm.Dispose();
    }

    [Fact]
    public void Gicv2m_board_vfio_refuses_without_unsafe_interrupts_and_with_it_vm_a_forges_vm_b_interrupts()
    {
        var (k, _) = BootGicV2mHost();
        // The isolation policy: the GICv2m frame cannot tell devices apart, so VFIO refuses the container.
        var strict = k.BuildVfio();
        Assert.Equal(0, GuestVm.Create(k.CreateProcess(strict), 1, 0x0200_0000, GuestInterruptController.GicV2m, out var refused));
        Assert.Equal(-Errno.EPERM, refused!.AddDevice(k.FindFunction("0000:00:01.0")!.Group.Id, "0000:00:01.0", 0x0008, out _));
        refused.Dispose();

        var vfio = k.BuildVfio(new VfioOptions { AllowUnsafeInterrupts = true });
        long HostSpis() => k.Cpus.Sum(c => (long)c.History.Count(i => i >= 32));
        var vms = new List<(GuestVm Vmm, GuestMqDriverResult Res)>();
        foreach (var name in new[] { "0000:00:01.0", "0000:00:02.0" })
        {
            Assert.Equal(0, GuestVm.Create(k.CreateProcess(vfio), 1, 0x0200_0000, GuestInterruptController.GicV2m, out var vmm));
            Assert.Equal(0, vmm!.AddDevice(k.FindFunction(name)!.Group.Id, name, 0x0008, out var proxy));
            var res = new GuestMqDriver(vmm, proxy!, HostSpis).Run();
            Assert.True(res.Ok, res.Failure);
            vms.Add((vmm, res));
        }
        var (a, b) = (vms[0], vms[1]);
        var hostA = k.FindFunction("0000:00:01.0")!;
        var hostB = k.FindFunction("0000:00:02.0")!;
        var bHostSpis = hostB.Vectors!.Vectors.Select(v => v.Intid).ToHashSet();
        var doorbell = hostA.ProgrammedMsiAddresses[0]; // what the host wrote into A's MSI-X table: the frame's IOVA
        // VM A's guest sprays the host frame's whole SPI range (MSI_TYPER) at the doorbell with its own device's DMA.
        var gkA = (GuestKernel)a.Vmm.GuestSoftware!;
        var drvA = a.Res.Driver!;
        Assert.True(gkA.DmaMemory.TryAllocate(0x1000, out var spray));
        var firstSpi = 32 + k.Machine.Map.V2mFirstSpi;
        var count = k.Machine.Map.V2mSpiCount;
        for (var i = 0; i < count; i++) a.Vmm.Vm.Memory.WriteU32(spray + (ulong)i * 4, (uint)(firstSpi + i));
        var bWakes = b.Vmm.Vm.IrqfdWakes;
        var bHandled = new List<int>();
        b.Res.Driver!.Interrupt = (q, _) => bHandled.Add(q);
        var gkB = (GuestKernel)b.Vmm.GuestSoftware!;
        for (var i = 0; i < count; i++)
        {
            Assert.Equal(0, drvA.Submit(1, spray + (ulong)i * 4, doorbell, 4, 0x5000u + (uint)i));
            Assert.Equal(0, gkB.ServiceInterrupts()); // B's guest took the forgery before A's doorbell store returned
        }
        // Every one of VM B's vectors fired in VM B's guest though B's device did nothing.
        Assert.Equal(bHostSpis.Count, (int)(b.Vmm.Vm.IrqfdWakes - bWakes));
        Assert.Equal([0, 1, 2, 3], bHandled.Order());
        a.Vmm.Dispose();
        b.Vmm.Dispose();
    }

    [Fact]
    public void A_running_guest_whose_handler_never_quiets_its_device_storms_but_the_machine_goes_on()
    {
        var (k, edu, host, vmm, proxy) = GuestTestBoard.BootEdu();
        var gk = GuestMqDriver.BootKernel(vmm);
        var fn = gk.FindFunction("0000:00:01.0")!;
        gk.Pci.Write(fn.Rid, 0x04, 2, 0x6);
        var bar = fn.Bars[0].Address;
        var cpu = vmm.Vm.Vcpus[0];
        var loop = vmm.Vm.Loop;
        var ack = false;
        var handled = 0;
        gk.Irqs.Request(32 + 4, (_, _) => { handled++; if (ack) cpu.Write(bar + EduRegs.IrqAck, 4, 0xFFFF_FFFF); });
        gk.Interrupts.SetSpiEnabled(32 + 4, true, edge: false);
        Assert.True(cpu.Running);
        // The device asserts INTx and the handler never acknowledges it: every EOI resamples, VFIO unmasks, the line is
        // still high, the guest takes it again — a livelock on hardware too. The loop's drain budget ends the raising
        // store with the storm still queued, and each CPU's entry yields after a batch, so the machine goes on.
        var overruns = loop.DrainOverruns;
        Assert.Equal(BusStatus.Ok, cpu.Write(bar + EduRegs.IrqRaise, 4, 1));
        Assert.True(handled > 1000, $"handled {handled}");
        Assert.True(loop.DrainOverruns > overruns);
        Assert.True(loop.Pending > 0);
        // The driver is fixed: the next operation drains on, the handler acknowledges the device, and all is quiet.
        ack = true;
        Assert.Equal(BusStatus.Ok, cpu.Read(bar + EduRegs.IrqStatus, 4, out _));
        Assert.Equal(0, loop.Pending);
        Assert.Equal(0u, edu.IrqStatus);
        Assert.False(cpu.IrqPending);
        var quiet = handled;
        Assert.Equal(BusStatus.Ok, cpu.Read(bar + EduRegs.IrqStatus, 4, out _));
        Assert.Equal(quiet, handled);
        vmm.Dispose();
    }

    [Fact]
    public void Intx_through_resamplefd_with_a_vfio_device_is_level_triggered_end_to_end()
    {
        var (k, edu, host, vmm, proxy) = GuestTestBoard.BootEdu();
        // The VMM wired INTx as QEMU does with KVM: VFIO trigger eventfd = level irqfd with a resamplefd = VFIO unmask eventfd.
        Assert.True(proxy!.IntxConnected);
        Assert.Equal(4, proxy.IntxGuestSpi); // slot 1, INTA: SPI 3 + (0 + 1) % 4
        Assert.Equal(1, vmm.Vm.IrqfdCount);
        // The guest kernel enumerates the device and requests its INTx (a level SPI of the vGIC) like any wired interrupt.
        var gk = GuestMqDriver.BootKernel(vmm);
        var fn = gk.FindFunction("0000:00:01.0")!;
        Assert.Equal(0x11e8_1234u, (uint)fn.VendorId | (uint)fn.DeviceId << 16);
        Assert.Equal(1u, gk.Pci.Read(fn.Rid, 0x3D, 1)); // INTA
        gk.Pci.Write(fn.Rid, 0x04, 2, 0x6);
        var bar = fn.Bars[0].Address;
        var cpu = vmm.Vm.Vcpus[0];
        const int guestIntid = 32 + 4;
        var ackInHandler = false;
        var handled = 0;
        gk.Irqs.Request(guestIntid, (_, _) =>
        {
            handled++;
            if (ackInHandler) cpu.Write(bar + EduRegs.IrqAck, 4, 0xFFFF_FFFF);
        });
        gk.Interrupts.SetSpiEnabled(guestIntid, true, edge: false);
        // Steps 1–3 look at the level line between the guest's entries, and step 2's handler does not quiet the device
        // (run, that guest would take the interrupt again and again, as on hardware): the vCPU is out of the guest
        // (KVM_RUN returned), so a kick is recorded and the test plays the guest's interrupt entry itself.
        cpu.Stop();
        bool HostMasked() => (host.ReadConfig(0x04, 2) & 0x400) != 0; // VFIO masks with COMMAND.INTx_Disable

        // 1. The device asserts INTx: host SPI → VFIO masks and signals → irqfd raises the guest's level SPI.
        Assert.Equal(BusStatus.Ok, cpu.Write(bar + EduRegs.IrqRaise, 4, 1));
        k.ServiceInterrupts();
        Assert.True(HostMasked());
        Assert.True(cpu.IrqPending);
        var hostTaken = k.Cpus[0].History.Count(i => i == guestIntid);
        // 2. The guest's handler does not quiet the device; its EOI resamples: the guest line drops and the resamplefd
        //    asks VFIO to unmask, but the device still asserts INTx, so VFIO keeps it masked and signals the trigger again
        //    (vfio_pci_intx_unmask) — the guest's SPI is pending again: level semantics end to end.
        var resamples = vmm.Vm.IrqfdWakes;
        Assert.Equal(1, gk.Cpus[0].HandleInterrupts(limit: 1));
        Assert.Equal(1, handled);
        Assert.True(vmm.Vm.IrqfdWakes > resamples);
        Assert.True(HostMasked());
        Assert.True(cpu.IrqPending);
        k.ServiceInterrupts();
        Assert.Equal(hostTaken, k.Cpus[0].History.Count(i => i == guestIntid)); // no new host interrupt while masked
        // 3. This time the handler acknowledges the device: after the EOI the line stays low, VFIO is unmasked, and
        //    nothing more arrives anywhere.
        ackInHandler = true;
        Assert.Equal(1, gk.ServiceInterrupts());
        Assert.Equal(2, handled);
        Assert.False(HostMasked());
        Assert.Equal(0u, edu.IrqStatus);
        k.ServiceInterrupts();
        Assert.False(cpu.IrqPending);
        Assert.Equal(0, gk.ServiceInterrupts());
        // 4. Once more from the start, the vCPU running the guest.
        RaiseIsTakenByTheRunningGuest(gk, cpu, bar, () => handled, HostMasked);
        // Teardown removes the INTx irqfd and VFIO's trigger.
        vmm.Dispose();
        Assert.Equal(0, vmm.Vm.IrqfdCount);
    }

    [Fact]
    public void The_guest_its_driver_moves_a_vector_to_vcpu_1_with_movi_and_the_device_interrupt_follows()
    {
        var (k, vmm, proxy) = Boot(vcpus: 2);
        long HostLpis() => k.Cpus.Sum(c => (long)c.History.Count(i => i >= 8192));
        var res = new GuestMqDriver(vmm, proxy, HostLpis).Run();
        Assert.True(res.Ok, res.Failure);
        var gk = (GuestKernel)vmm.GuestSoftware!;
        var drv = res.Driver!;
        var v1 = drv.Vectors!.Vectors[1];
        // irq_set_affinity in the guest: the host's ITS driver issues MOVI + SYNC to the vITS through guest memory.
        var commands = vmm.Its.Engine.CommandsProcessed;
        gk.MsiDomain.SetAffinity(v1, 1);
        Assert.True(vmm.Its.Engine.CommandsProcessed >= commands + 2);
        Assert.Equal(0, vmm.Its.CommandErrorCount);
        var kicks1 = vmm.Vm.Vcpus[1].Kicks;
        var on1 = gk.Cpus[1].History.Count(i => i == v1.Intid);
        var on0 = gk.Cpus[0].Handled;
        Assert.Equal(0, drv.Submit(1, res.Sources[1], res.Sources[1] + 0x800, 0x100, 0xBEEF));
        Assert.False(vmm.Vm.Vcpus[0].IrqPending);
        Assert.Equal(kicks1 + 1, vmm.Vm.Vcpus[1].Kicks);
        // pushed to vCPU 1's guest CPU, taken before the doorbell store returned; vCPU 0's took nothing
        Assert.Equal(on1 + 1, gk.Cpus[1].History.Count(i => i == v1.Intid));
        Assert.Equal(on0, gk.Cpus[0].Handled);
        Assert.Equal(0, gk.ServiceInterrupts());
        vmm.Dispose();
    }

    [Fact]
    public void Intx_through_resamplefd_on_a_vgicv2_guest()
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions { GicVersion = 2 });
        var edu = m.AddPci(new EduDevice(m.Clock));
        var k = HostKernel.Boot(m, models);
        var host = k.FindFunction("0000:00:01.0")!;
        Assert.Equal(0, GuestVm.Create(k.CreateProcess(k.BuildVfio(new VfioOptions { AllowUnsafeInterrupts = true })), 1, 0x0200_0000, GuestInterruptController.GicV2m, out var vmm));
        Assert.Equal(0, vmm!.AddDevice(host.Group.Id, host.Name, 0x0008, out var proxy));
        Assert.True(proxy!.IntxConnected);
        var gk = GuestMqDriver.BootKernel(vmm);
        Assert.NotNull(gk.Interrupts.GicV2);
        var fn = gk.FindFunction("0000:00:01.0")!;
        gk.Pci.Write(fn.Rid, 0x04, 2, 0x6);
        var bar = fn.Bars[0].Address;
        var cpu = vmm.Vm.Vcpus[0];
        var ack = false;
        var handled = 0;
        gk.Irqs.Request(32 + 4, (_, _) => { handled++; if (ack) cpu.Write(bar + EduRegs.IrqAck, 4, 0xFFFF_FFFF); });
        gk.Interrupts.SetSpiEnabled(32 + 4, true, edge: false);
        bool HostMasked() => (host.ReadConfig(0x04, 2) & 0x400) != 0;
        cpu.Stop(); // the test plays the guest's entries (a handler that does not quiet the device is retaken forever)
        Assert.Equal(BusStatus.Ok, cpu.Write(bar + EduRegs.IrqRaise, 4, 1));
        Assert.True(HostMasked());
        Assert.True(cpu.IrqPending); // the vGICv2 signalled vCPU 0 (GICC_HPPIR names the SPI)
        // EOI without quieting the device: GICv2 deactivation → resamplefd → VFIO re-signals → pending again.
        Assert.Equal(1, gk.Cpus[0].HandleInterrupts(limit: 1));
        Assert.True(cpu.IrqPending);
        ack = true;
        Assert.Equal(1, gk.ServiceInterrupts());
        Assert.Equal(2, handled);
        Assert.False(HostMasked());
        Assert.False(cpu.IrqPending);
        Assert.Equal(0u, edu.IrqStatus);
        RaiseIsTakenByTheRunningGuest(gk, cpu, bar, () => handled, HostMasked);
        vmm.Dispose();
    }

    /// <summary>
    /// The edu INTx tests' last step: the vCPU runs the guest again (<see cref="Vcpu.Run"/>); one raise is one guest
    /// interrupt, taken and acknowledged at the device before the raising store returns — nothing waits for a poll.
    /// </summary>
    static void RaiseIsTakenByTheRunningGuest(GuestKernel gk, Vcpu cpu, ulong bar, Func<int> handled, Func<bool> hostMasked)
    {
        var before = handled();
        cpu.Run();
        Assert.Equal(BusStatus.Ok, cpu.Write(bar + EduRegs.IrqRaise, 4, 2));
        Assert.Equal(before + 1, handled());
        Assert.False(hostMasked());
        Assert.False(cpu.IrqPending);
        Assert.Equal(0, gk.ServiceInterrupts());
    }

    [Fact]
    public void One_driver_two_machines_the_guests_mq_dma_driver_also_drives_the_device_on_the_host()
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions());
        m.AddPci(new MultiQueueDmaDevice(4));
        var k = HostKernel.Boot(m, models);
        var f = k.FindFunction("0000:00:01.0")!;
        // iommu.passthrough for this device: an identity domain (bypass STE), so a DMA address is a host physical address.
        var identity = k.Smmu.AllocateDomain(Doorbell.Host.Iommu.IommuDomainType.Identity);
        k.Smmu.AttachDevice(identity, f.IommuDevice);
        var drv = new MqDmaDriver(k.Bus, k.Pci, k.MsiDomain, k.Irqs, k.UserPages, f.Enumerated, f.DeviceId);
        Assert.Equal(0, drv.Probe());
        Assert.All(drv.Vectors!.Vectors, v => Assert.Equal(k.Machine.Map.GitsTranslater, v.Message.Address)); // the host's own ITS
        var done = new List<(int Queue, ulong Cookie, uint Status)>();
        drv.Completed = (q, c, st, _) => done.Add((q, c, st));
        Assert.True(k.UserPages.TryAllocate(0x1000, out var src));
        Assert.True(k.UserPages.TryAllocate(0x1000, out var dst));
        var data = new byte[0x400];
        new Random(3).NextBytes(data);
        Assert.Equal(BusStatus.Ok, k.Bus.Write(src, data, BusAttributes.Cpu));
        for (var q = 0; q < 4; q++) Assert.Equal(0, drv.Submit(q, src + (ulong)q * 0x100, dst + (ulong)q * 0x100, 0x100, (ulong)q));
        k.ServiceInterrupts();
        Assert.Equal([(0, 0UL, 0u), (1, 1UL, 0u), (2, 2UL, 0u), (3, 3UL, 0u)], done.OrderBy(d => d.Queue));
        var got = new byte[0x400];
        Assert.Equal(BusStatus.Ok, k.Bus.Read(dst, got, BusAttributes.Cpu));
        Assert.Equal(data, got);
        Assert.All(Enumerable.Range(0, 4), q => Assert.Equal(1, drv.InterruptsTaken(q)));
        drv.Remove();
        Assert.Null(drv.Vectors);
    }
}
