using Doorbell.Devices;
using Doorbell.Examples;
using Doorbell.Host.Kernel;
using Doorbell.Host.Vfio;
using Doorbell.Platform;
using Doorbell.Vmm;

namespace Doorbell.Scenarios.Steps;

/// <summary>A guest with an assigned device on the ITS board: a VMM maps guest RAM into VFIO at IOVA = GPA and
/// composes the device's config space behind a guest ECAM; the guest kernel — Doorbell's own GIC/ITS drivers, PCI
/// enumeration and mq-dma driver over vCPU 0 — drives the device; the path of its first MSI-X is printed hop by hop,
/// then the device is reset. Then the GICv2m board: VFIO refuses without allow_unsafe_interrupts, and with it a device
/// of VM A raises VM B's interrupts.</summary>
public sealed class GuestStep : IScenarioStep
{
    public string Title => "Guest: VM (vGICv3 + vITS, irqfd), guest kernel = Doorbell's drivers, assigned device DMA and MSI-X into the guest";

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
        bool ok;
        using (vmm)
        {
            r = vmm!.AddDevice(fn.Group.Id, fn.Name, 0x0008, out var proxy);
            context.Item($"VMM: VM with 2 vCPUs, 32 MiB guest RAM at GPA 0x{GuestVm.RamBase:x} mapped into VFIO at IOVA = GPA; {fn.Name} assigned as guest 00:01.0 (DeviceID 0x0008): {Errno.Name(r)}");
            if (r < 0) return false;
            long HostLpis() => k.Cpus.Sum(c => (long)c.History.Count(i => i >= 8192));
            var res = new GuestMqDriver(vmm, proxy!, HostLpis).Run();
            foreach (var l in res.Log) context.Item(l);
            context.Item("first MSI-X into the guest, hop by hop:");
            foreach (var (hop, count) in res.Hops) context.Item($"  {hop}: {count}");
            var irqfds = vmm.Vm.IrqfdCount;
            proxy!.Reset();
            context.Item($"guest-initiated device reset: irqfds {irqfds} -> {vmm.Vm.IrqfdCount}, VFIO MSI-X vectors -> {proxy.ActiveVectors}");
            ok = res.Ok && res.Hops.All(h => h.Count == 1) && vmm.Vm.IrqfdCount == 0;
        }
        return GicV2mTwoVms(context) && ok;
    }

    /// <summary>Two vGICv2 + GICv2m guests on the GICv2m board; VM A's device sprays the frame's SPIs at the doorbell.</summary>
    static bool GicV2mTwoVms(ScenarioContext context)
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions { GicVersion = 2 });
        m.AddPci(new MultiQueueDmaDevice(4));
        m.AddPci(new MultiQueueDmaDevice(4));
        var k = HostKernel.Boot(m, models);
        string[] names = ["0000:00:01.0", "0000:00:02.0"];
        var r = GuestVm.Create(k.CreateProcess(k.BuildVfio()), 1, 0x0200_0000, GuestInterruptController.GicV2m, out var refused);
        if (r < 0) return false;
        using (refused) r = refused!.AddDevice(k.FindFunction(names[0])!.Group.Id, names[0], 0x0008, out _);
        context.Item($"GICv2m board, VFIO default policy: assigning {names[0]} -> {Errno.Name(r)} (MSIs not isolated)");
        var vfio = k.BuildVfio(new VfioOptions { AllowUnsafeInterrupts = true });
        var vms = new List<(GuestVm Vmm, GuestMqDriverResult Res)>();
        long HostSpis() => k.Cpus.Sum(c => (long)c.History.Count(i => i >= 32));
        try
        {
            foreach (var name in names)
            {
                if (GuestVm.Create(k.CreateProcess(vfio), 1, 0x0200_0000, GuestInterruptController.GicV2m, out var vmm) < 0) return false;
                vms.Add((vmm!, null!));
                if (vmm!.AddDevice(k.FindFunction(name)!.Group.Id, name, 0x0008, out var proxy) < 0) return false;
                var res = new GuestMqDriver(vmm, proxy!, HostSpis).Run();
                vms[^1] = (vmm, res);
                if (!res.Ok) { context.Item($"guest on {name}: {res.Failure}"); return false; }
            }
            var (a, b) = (vms[0], vms[1]);
            var doorbell = k.FindFunction(names[0])!.ProgrammedMsiAddresses[0];
            if (!((GuestKernel)a.Vmm.GuestSoftware!).DmaMemory.TryAllocate(0x1000, out var spray)) return false;
            var first = 32 + k.Machine.Map.V2mFirstSpi;
            var count = k.Machine.Map.V2mSpiCount;
            for (var i = 0; i < count; i++) a.Vmm.Vm.Memory.WriteU32(spray + (ulong)i * 4, (uint)(first + i));
            var bQueues = new HashSet<int>();
            b.Res.Driver!.Interrupt = (q, _) => bQueues.Add(q);
            var wakes = b.Vmm.Vm.IrqfdWakes;
            for (var i = 0; i < count; i++)
            {
                a.Res.Driver!.Submit(1, spray + (ulong)i * 4, doorbell, 4, (ulong)i); // B's guest takes each forgery as it lands
            }
            context.Item($"with allow_unsafe_interrupts: two vGICv2 + GICv2m guests; VM A's device DMA-writes SPI numbers {first}..{first + count - 1} to the frame's doorbell (IOVA 0x{doorbell:x}): " +
                $"VM B's irqfds woke {b.Vmm.Vm.IrqfdWakes - wakes} times, VM B's guest handled queues {string.Join(",", bQueues.Order())} — forged");
            return bQueues.Count == 4;
        }
        finally
        {
            foreach (var (vmm, _) in vms) vmm.Dispose();
        }
    }
}
