using Doorbell.Devices;
using Doorbell.Examples;
using Doorbell.Host.Kernel;
using Doorbell.Platform;
using Doorbell.Vmm;

namespace Doorbell.Scenarios.Steps;

/// <summary>A guest with an assigned device on the ITS board: a VMM maps guest RAM into VFIO at IOVA = GPA, a guest
/// driver on vCPU 0 brings up the vGICv3/vITS and drives the multi-queue DMA device; the path of its first MSI-X is
/// printed hop by hop, then the device is reset and the VM torn down.</summary>
public sealed class GuestStep : IScenarioStep
{
    public string Title => "Guest: VM (vGICv3 + vITS, irqfd), assigned device DMA and MSI-X into the guest";

    public bool Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions());
        m.AddPci(new MultiQueueDmaDevice(4));
        var k = HostKernel.Boot(m, models);
        var fn = k.FindFunction("0000:00:01.0")!;
        var proc = k.CreateProcess(k.BuildVfio());
        var r = GuestVm.Create(proc, 2, 0x0200_0000, out var vmm);
        if (r < 0) { context.Item($"VM creation: {Errno.Name(r)}"); return false; }
        using (vmm)
        {
            r = vmm!.AddDevice(fn.Group.Id, fn.Name, 0x0008, out var proxy);
            context.Item($"VMM: VM with 2 vCPUs, 32 MiB guest RAM at GPA 0x{GuestVm.RamBase:x} mapped into VFIO at IOVA = GPA; {fn.Name} assigned as guest DeviceID 0x0008, BAR0 at GPA 0x{proxy?.GuestBar0 ?? 0:x}: {Errno.Name(r)}");
            if (r < 0) return false;
            long HostLpis() => k.Cpus.Sum(c => (long)c.History.Count(i => i >= 8192));
            var res = new GuestMqDriver(vmm, proxy!, k.ServiceInterrupts, HostLpis).Run();
            foreach (var l in res.Log) context.Item(l);
            context.Item("first MSI-X into the guest, hop by hop:");
            foreach (var (hop, count) in res.Hops) context.Item($"  {hop}: {count}");
            var irqfds = vmm.Vm.IrqfdCount;
            proxy!.Reset();
            context.Item($"guest-initiated device reset: irqfds {irqfds} -> {vmm.Vm.IrqfdCount}, VFIO MSI-X vectors -> {proxy.ActiveVectors}");
            return res.Ok && res.Hops.All(h => h.Count == 1) && vmm.Vm.IrqfdCount == 0;
        }
    }
}
