using Doorbell.Devices;
using Doorbell.Examples;
using Doorbell.Host.Kernel;
using Doorbell.Host.Os;
using Doorbell.Kvm;
using Doorbell.Platform;
using Doorbell.Vmm;

namespace Doorbell.Tests.Kvm;

/// <summary>
/// An assigned device in a guest, end to end on the real stack: the host kernel boots qemu-virt (SMMUv3, GICv3 + ITS),
/// a VMM process creates a VM and maps guest RAM into its VFIO container at IOVA = GPA, and the guest kernel on vCPU 0
/// (Doorbell's own GIC/ITS drivers, PCI enumeration over the VMM's ECAM, the shared mq-dma driver) drives the device: DMA through the physical SMMU into guest RAM, MSI-X through SMMU → physical ITS →
/// host LPI → VFIO eventfd → irqfd → vITS → vCPU → guest handler.
/// </summary>
public class GuestDeviceTests
{
    sealed record Rig(HostKernel Kernel, Machine Machine, MultiQueueDmaDevice Device, GuestVm Vmm, VfioPciProxy Proxy);

    static long HostLpis(Rig r) => r.Kernel.Cpus.Sum(c => (long)c.History.Count(i => i >= 8192));

    static Rig Boot()
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions());
        var mq = m.AddPci(new MultiQueueDmaDevice(4));
        var k = HostKernel.Boot(m, models);
        var fn = k.FindFunction("0000:00:01.0")!;
        var proc = k.CreateProcess(k.BuildVfio());
        Assert.Equal(0, GuestVm.Create(proc, 2, 0x0200_0000, out var vmm));
        Assert.Equal(0, vmm!.AddDevice(fn.Group.Id, "0000:00:01.0", 0x0008, out var proxy));
        return new Rig(k, m, mq, vmm, proxy!);
    }

    [Fact]
    public void Guest_dma_and_msix_end_to_end_through_the_physical_smmu_and_its()
    {
        var r = Boot();
        var hostIts = r.Kernel.Models.Its!;
        var hostTranslations = hostIts.Translations;
        var driver = new GuestMqDriver(r.Vmm, r.Proxy, () => HostLpis(r));
        var res = driver.Run();
        Assert.True(res.Ok, res.Failure + "\n" + string.Join("\n", res.Log));
        Assert.Equal(8, res.CopiesVerified);
        Assert.Equal(2u, res.FaultStatus); // DMA to a GPA the VMM never mapped: stopped by the physical SMMU
        Assert.Contains(r.Kernel.DrainSmmuEvents().Concat(r.Kernel.SmmuEvents), e => e.InputAddress == GuestMqDriver.UnmappedGpa);
        // Every queue's MSI-X reached the guest handler as its own LPI on vCPU 0.
        Assert.Equal([0, 1, 2, 3], res.Handled.Select(h => h.Queue).Distinct().Order());
        // The hop list of the first interrupt: one at each hop.
        Assert.Equal(5, res.Hops.Count);
        Assert.All(res.Hops, h => Assert.Equal(1, h.Count));
        Assert.True(hostIts.Translations - hostTranslations >= 4); // the physical ITS translated the device's MSIs
        Assert.Equal(4, r.Proxy.ActiveVectors);
        Assert.True(r.Vmm.Vm.MmioExits > 0); // the BAR and MSI-X table accesses were MMIO exits to the VMM
    }

    [Fact]
    public void Guest_reset_and_vm_teardown_release_irqfds_routes_and_vfio_interrupts()
    {
        var r = Boot();
        Assert.True(new GuestMqDriver(r.Vmm, r.Proxy, () => HostLpis(r)).Run().Ok);
        var vm = r.Vmm.Vm;
        Assert.Equal(4, vm.IrqfdCount);
        // Guest-initiated device reset: the VMM releases the vectors (irqfds, routes, eventfds) and resets the device.
        Assert.Equal(0, r.Proxy.Reset());
        Assert.Equal(0, vm.IrqfdCount);
        Assert.Equal(0, r.Proxy.ActiveVectors);
        // The device's MSI-X is disabled in VFIO: a raised vector reaches no eventfd and no guest.
        var wakes = vm.IrqfdWakes;
        r.Device.SignalMsix(0);
        r.Kernel.ServiceInterrupts();
        Assert.Equal(wakes, vm.IrqfdWakes);
        // The guest can program it again after the reset.
        var again = new GuestMqDriver(r.Vmm, r.Proxy, () => HostLpis(r)) { SetUpInterruptController = false }.Run();
        Assert.True(again.Ok, again.Failure);
        Assert.Equal(4, vm.IrqfdCount);
        var pinnedBefore = r.Vmm.Process.Memory.PinnedPages;
        Assert.True(pinnedBefore > 0); // guest RAM pinned by MAP_DMA
        r.Vmm.Dispose();
        Assert.True(vm.IsDisposed);
        Assert.Equal(0, vm.IrqfdCount);
        Assert.Equal(0L, r.Vmm.Process.Memory.PinnedPages);
        Assert.Equal(0UL, r.Vmm.Process.LockedPages);
    }

    [Fact]
    public void Two_vms_on_the_its_board_a_spraying_device_cannot_raise_the_other_vms_interrupts()
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions());
        m.AddPci(new MultiQueueDmaDevice(4));
        m.AddPci(new MultiQueueDmaDevice(4));
        var k = HostKernel.Boot(m, models);
        var vfio = k.BuildVfio();
        long HostLpis() => k.Cpus.Sum(c => (long)c.History.Count(i => i >= 8192));
        var vms = new List<(GuestVm Vmm, VfioPciProxy Proxy)>();
        GuestMqDriverResult? resA = null;
        foreach (var name in new[] { "0000:00:01.0", "0000:00:02.0" })
        {
            var fn = k.FindFunction(name)!;
            Assert.Equal(0, GuestVm.Create(k.CreateProcess(vfio), 1, 0x0200_0000, out var vmm));
            Assert.Equal(0, vmm!.AddDevice(fn.Group.Id, name, 0x0008, out var proxy)); // both guests use DeviceID 8
            var res = new GuestMqDriver(vmm, proxy!, HostLpis).Run();
            Assert.True(res.Ok, res.Failure);
            resA ??= res;
            vms.Add((vmm, proxy!));
        }
        var (a, b) = (vms[0], vms[1]);
        var bWakes = b.Vmm.Vm.IrqfdWakes;
        var aWakes = a.Vmm.Vm.IrqfdWakes;
        // VM A's guest turns its device's DMA engine on the MSI doorbell: queue 1, slots 2..7, each a 4-byte copy of an
        // EventID to the doorbell IOVA (GITS_TRANSLATER in the host's SW_MSI window).
        var mem = a.Vmm.Vm.Memory;
        uint[] events = [0, 1, 2, 3, 16, 31];
        // queue 1's submission ring and the second half of its source buffer, as the guest kernel's driver allocated them
        ulong sq = resA!.Driver!.SubmissionRing(1), src = resA.Sources[1] + 0x800;
        for (var i = 0; i < events.Length; i++)
        {
            mem.Write(src + (ulong)i * 4, BitConverter.GetBytes(events[i]));
            var d = new byte[32];
            BitConverter.TryWriteBytes(d.AsSpan(0), src + (ulong)i * 4);
            BitConverter.TryWriteBytes(d.AsSpan(8), 0x0800_0040UL);
            BitConverter.TryWriteBytes(d.AsSpan(16), 4u);
            mem.Write(sq + (ulong)(2 + i) * 32, d);
        }
        var (gkA, gkB) = ((GuestKernel)a.Vmm.GuestSoftware!, (GuestKernel)b.Vmm.GuestSoftware!);
        var (beforeA, beforeB) = (gkA.Cpus[0].Handled + gkA.Cpus[0].Unhandled, gkB.Cpus[0].Handled + gkB.Cpus[0].Unhandled);
        Assert.Equal(Doorbell.Memory.BusStatus.Ok, a.Vmm.Vm.Vcpus[0].Write(a.Proxy.GuestBar0 + MqRegs.QueueBase + MqRegs.QueueStride + MqRegs.SqTail, 4, 8));
        // the guests' CPUs took whatever reached them before the doorbell store returned
        var handledA = gkA.Cpus[0].Handled + gkA.Cpus[0].Unhandled - beforeA;
        var handledB = gkB.Cpus[0].Handled + gkB.Cpus[0].Unhandled - beforeB;
        Assert.Equal(bWakes, b.Vmm.Vm.IrqfdWakes); // nothing reached VM B
        Assert.Equal(0, handledB);
        Assert.True(a.Vmm.Vm.IrqfdWakes - aWakes >= 4); // A's own EventIDs 0..3 are A's own vectors
        Assert.True(handledA >= 1);
        a.Vmm.Dispose();
        b.Vmm.Dispose();
    }
}
