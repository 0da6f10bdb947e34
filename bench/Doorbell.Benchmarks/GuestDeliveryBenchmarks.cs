using System.Buffers.Binary;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Doorbell.Devices;
using Doorbell.Examples;
using Doorbell.Host.Kernel;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Platform;
using Doorbell.Vmm;

namespace Doorbell.Benchmarks;

/// <summary>
/// Device interrupt delivery on one qemu-virt host (SMMUv3, GICv3 + ITS), two mq-dma devices, measured in one run:
/// device 00:01.0 belongs to a host userspace driver (VFIO MSI-X vector 0 → its eventfd, read back with read(2));
/// device 00:02.0 is assigned to a guest whose kernel is Doorbell's kernel layer (GuestKernel over vCPU 0) with a
/// handler requested on the vector's LPI. Each case raises vector 0 at the device and runs until the interrupt is
/// consumed: the host path ends at the eventfd read, the guest path at the guest kernel's handler (SMMU → physical ITS →
/// host LPI → VFIO handler → eventfd → irqfd → vITS → vLPI → vCPU IAR → handler → EOI). Both are pushed: nothing polls
/// (until the seventh session both rows called the kernels' ServiceInterrupts after the raise).
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
public class GuestDeliveryBenchmarks
{
    HostKernel _k = null!;
    MultiQueueDmaDevice _hostDev = null!, _guestDev = null!;
    EventFd _efd = null!;
    GuestVm _vmm = null!;
    GuestKernel _gk = null!;
    long _guestHandled;

    [GlobalSetup]
    public void Setup()
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions());
        _hostDev = m.AddPci(new MultiQueueDmaDevice(4));
        _guestDev = m.AddPci(new MultiQueueDmaDevice(4));
        _k = HostKernel.Boot(m, models);
        var vfio = _k.BuildVfio();

        // Host userspace: container, group, device, bus master, MSI-X vector 0 -> eventfd.
        var p = _k.CreateProcess(vfio);
        var fn = _k.FindFunction("0000:00:01.0")!;
        var container = p.OpenContainer();
        var group = p.OpenGroup(fn.Group.Id);
        var fd = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(fd, container);
        Check(p.Ioctl(group, VfioIoctl.GroupSetContainer, fd), "SET_CONTAINER");
        Check(p.Ioctl(container, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu), "SET_IOMMU");
        var device = p.Ioctl(group, VfioIoctl.GroupGetDeviceFd, "0000:00:01.0\0"u8.ToArray());
        Check(device, "GET_DEVICE_FD");
        var cfg = new byte[2];
        var cfgOff = VfioPciIndex.IndexToOffset(VfioPciIndex.Config) + 4;
        p.Pread(device, cfg, cfgOff);
        cfg[0] |= 0x6;
        p.Pwrite(device, cfg, cfgOff);
        _efd = EventFd.Create();
        var set = new byte[24];
        MemoryMarshal.Write(set, new VfioIrqSet { Argsz = 24, Flags = VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, Index = VfioPciIndex.IrqMsix, Count = 1 });
        BinaryPrimitives.WriteInt32LittleEndian(set.AsSpan(20), _efd.Fd);
        Check(p.Ioctl(device, VfioIoctl.DeviceSetIrqs, set), "SET_IRQS");

        // Guest: VM with the second device; the guest kernel enumerates it and requests vector 0's LPI.
        var gfn = _k.FindFunction("0000:00:02.0")!;
        Check(GuestVm.Create(_k.CreateProcess(vfio), 1, 0x0200_0000, out var vmm), "VM");
        _vmm = vmm!;
        Check(_vmm.AddDevice(gfn.Group.Id, gfn.Name, 0x0008, out _), "assign");
        _gk = GuestMqDriver.BootKernel(_vmm);
        var g = _gk.FindFunction("0000:00:01.0") ?? throw new InvalidOperationException("guest enumeration");
        _gk.Pci.Write(g.Rid, 0x04, 2, 0x6);
        var vectors = _gk.MsiDomain.AllocateMsis(g.Rid, 1);
        _gk.Irqs.Request(vectors.Vectors[0].Intid, (_, _) => _guestHandled++);
        var cap = PciMsix.FindCapability(_gk.Pci, g.Rid, PciMsix.CapId);
        var (bar, off) = PciMsix.TableLocation(_gk.Pci, g.Rid, cap);
        PciMsix.Enable(_gk.Bus, _gk.Pci, g.Rid, cap, g.Bars[bar].Address + off, [vectors.Vectors[0].Message.Address], [vectors.Vectors[0].Message.Data]);

        if (MsixToHostEventFd() != 1) throw new InvalidOperationException("MSI-X did not reach the host eventfd");
        if (MsixToGuestHandler() != 1) throw new InvalidOperationException("MSI-X did not reach the guest handler");
    }

    static void Check(int r, string what)
    {
        if (r < 0) throw new InvalidOperationException($"{what}: errno {-r}");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _vmm.Dispose();
        _efd.Dispose();
    }

    /// <summary>Device MSI-X → SMMU → ITS → host LPI → VFIO handler → eventfd → read(2) by the host userspace driver.</summary>
    [Benchmark(Baseline = true)]
    public ulong MsixToHostEventFd()
    {
        _hostDev.SignalMsix(0); // pushed: the host CPU has taken the LPI when this returns
        return _efd.TryRead(out var v) ? v : 0;
    }

    /// <summary>Device MSI-X → SMMU → ITS → host LPI → VFIO handler → eventfd → irqfd → vITS → vLPI → guest IAR → handler → EOI.</summary>
    [Benchmark]
    public long MsixToGuestHandler()
    {
        var before = _guestHandled;
        _guestDev.SignalMsix(0); // pushed: host CPU, irqfd, vITS, then the running vCPU's guest CPU, before this returns
        return _guestHandled - before;
    }
}
