using Doorbell.Devices;
using Doorbell.Host.Kernel;
using Doorbell.Kvm;
using Doorbell.Memory;
using Doorbell.Platform;
using Doorbell.Vmm;

namespace Doorbell.Tests.Kvm;

/// <summary>The guest tests' common set-up: a qemu-virt host with an mq-dma device assigned to a guest, and guest ECAM accessors.</summary>
static class GuestTestBoard
{
    public const ulong Ecam = 0x40_1000_0000;

    /// <summary>Host (GICv3 + ITS) with mq-dma at 00:01.0 (MSI-X, or MSI only with <paramref name="msi"/>), assigned to a guest at slot 1.</summary>
    public static (HostKernel K, GuestVm Vmm, VfioPciProxy Proxy) Boot(int vcpus = 2, bool msi = false)
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions());
        m.AddPci(new MultiQueueDmaDevice(4, msi));
        var k = HostKernel.Boot(m, models);
        var fn = k.FindFunction("0000:00:01.0")!;
        Assert.Equal(0, GuestVm.Create(k.CreateProcess(k.BuildVfio()), vcpus, 0x0200_0000, out var vmm));
        Assert.Equal(0, vmm!.AddDevice(fn.Group.Id, fn.Name, 0x0008, out var proxy));
        return (k, vmm, proxy!);
    }

    /// <summary>Host (GICv3 + ITS) with QEMU's edu at 00:01.0, assigned to a one-vCPU guest at slot 1 (guest DeviceID 8).</summary>
    public static (HostKernel K, EduDevice Edu, KernelPciFunction Host, GuestVm Vmm, VfioPciProxy Proxy) BootEdu()
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions());
        var edu = m.AddPci(new EduDevice(m.Clock));
        var k = HostKernel.Boot(m, models);
        var host = k.FindFunction("0000:00:01.0")!;
        Assert.Equal(0, GuestVm.Create(k.CreateProcess(k.BuildVfio()), 1, 0x0200_0000, out var vmm));
        Assert.Equal(0, vmm!.AddDevice(host.Group.Id, host.Name, 0x0008, out var proxy));
        return (k, edu, host, vmm, proxy!);
    }

    /// <summary>A guest config read of the function at <paramref name="slot"/> through the guest ECAM.</summary>
    public static uint Cfg(Vcpu cpu, int slot, int off, int size = 4)
    {
        Assert.Equal(BusStatus.Ok, cpu.Read(Ecam + ((ulong)slot << 15) + (ulong)off, size, out var v));
        return (uint)v;
    }

    public static void CfgW(Vcpu cpu, int slot, int off, uint v, int size = 4) =>
        Assert.Equal(BusStatus.Ok, cpu.Write(Ecam + ((ulong)slot << 15) + (ulong)off, size, v));

    /// <summary>The offset of capability <paramref name="id"/> in the guest's view of the function, or 0.</summary>
    public static int FindCap(Vcpu cpu, int slot, uint id)
    {
        for (var p = (int)Cfg(cpu, slot, 0x34, 1); p != 0; p = (int)Cfg(cpu, slot, p + 1, 1))
            if (Cfg(cpu, slot, p, 1) == id) return p;
        return 0;
    }
}
