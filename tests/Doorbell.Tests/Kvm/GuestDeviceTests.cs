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
/// a VMM process creates a VM and maps guest RAM into its VFIO container at IOVA = GPA, and a guest driver on vCPU 0
/// drives the multi-queue DMA device: DMA through the physical SMMU into guest RAM, MSI-X through SMMU → physical ITS →
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
        var hostIts = r.Kernel.Models.GicV3!.Its;
        var hostTranslations = hostIts.Translations;
        var driver = new GuestMqDriver(r.Vmm, r.Proxy, r.Kernel.ServiceInterrupts, () => HostLpis(r));
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
        Assert.True(new GuestMqDriver(r.Vmm, r.Proxy, r.Kernel.ServiceInterrupts, () => HostLpis(r)).Run().Ok);
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
        var again = new GuestMqDriver(r.Vmm, r.Proxy, r.Kernel.ServiceInterrupts, () => HostLpis(r)) { SetUpInterruptController = false }.Run();
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
}
