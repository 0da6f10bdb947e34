using System.Buffers.Binary;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Doorbell.Devices;
using Doorbell.Host.Kernel;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Platform;

namespace Doorbell.Benchmarks;

/// <summary>
/// The real stack on qemu-virt (SMMUv3 model + Linux-style driver, GICv3 + ITS + host ITS driver, ECAM-enumerated
/// mq-dma device, VFIO over the kernel adapters): MAP_DMA+UNMAP_DMA pairs through the SMMUv3-backed container
/// (page-table write, then TLBI + CMD_SYNC through the command queue), and a device MSI-X vector through the SMMU
/// (SW_MSI doorbell IOVA) → ITS → LPI → host CPU ack → VFIO handler → eventfd, read back, against a bare eventfd
/// write→read in the same run.
/// </summary>
[MemoryDiagnoser]
public class EndToEndBenchmarks
{
    HostKernel _k = null!;
    VfioProcess _p = null!;
    MultiQueueDmaDevice _mq = null!;
    int _container, _group, _device;
    ulong _va;
    byte[] _map = null!, _unmap = null!;
    readonly byte[] _dmaBytes = new byte[8];
    const ulong DmaIova = 0x20_0000;
    EventFd _efd = null!, _bare = null!;

    static byte[] Bytes<T>(T v) where T : unmanaged
    {
        var b = new byte[UserArg.SizeOf<T>()];
        MemoryMarshal.Write(b, in v);
        return b;
    }

    [GlobalSetup]
    public void Setup()
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions());
        _mq = m.AddPci(new MultiQueueDmaDevice(4));
        _k = HostKernel.Boot(m, models);
        var vfio = _k.BuildVfio();
        _p = _k.CreateProcess(vfio);
        var fn = _k.FindFunction("0000:00:01.0")!;
        _container = _p.OpenContainer();
        _group = _p.OpenGroup(fn.Group.Id);
        var fd = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(fd, _container);
        Check(_p.Ioctl(_group, VfioIoctl.GroupSetContainer, fd), "SET_CONTAINER");
        Check(_p.Ioctl(_container, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu), "SET_IOMMU");
        _device = _p.Ioctl(_group, VfioIoctl.GroupGetDeviceFd, "0000:00:01.0\0"u8.ToArray());
        Check(_device, "GET_DEVICE_FD");
        _va = _p.Memory.MapAnonymous(0x1000);
        _map = Bytes(new VfioIommuType1DmaMap { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = _va, Iova = 0x10_0000, Size = 0x1000 });
        _unmap = Bytes(new VfioIommuType1DmaUnmap { Argsz = 24, Iova = 0x10_0000, Size = 0x1000 });
        // a page kept mapped for the device's DMA write
        var dmaVa = _p.Memory.MapAnonymous(0x1000);
        Check(_p.Ioctl(_container, VfioIoctl.IommuMapDma, Bytes(new VfioIommuType1DmaMap { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = dmaVa, Iova = DmaIova, Size = 0x1000 })), "MAP_DMA");
        // bus master on, MSI-X vector 0 -> eventfd
        var cfg = new byte[2];
        var cfgOff = VfioPciIndex.IndexToOffset(VfioPciIndex.Config) + 4;
        _p.Pread(_device, cfg, cfgOff);
        cfg[0] |= 0x6;
        _p.Pwrite(_device, cfg, cfgOff);
        _efd = EventFd.Create();
        _bare = EventFd.Create();
        var set = new byte[24];
        MemoryMarshal.Write(set, new VfioIrqSet { Argsz = 24, Flags = VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, Index = VfioPciIndex.IrqMsix, Count = 1 });
        BinaryPrimitives.WriteInt32LittleEndian(set.AsSpan(20), _efd.Fd);
        Check(_p.Ioctl(_device, VfioIoctl.DeviceSetIrqs, set), "SET_IRQS");
        if (MsixToEventFdRead() != 1) throw new InvalidOperationException("MSI-X did not reach the eventfd");
        if (DeviceDmaWrite8() != Doorbell.Memory.BusStatus.Ok) throw new InvalidOperationException("the device's DMA write did not complete");
    }

    static void Check(int r, string what)
    {
        if (r < 0) throw new InvalidOperationException($"{what}: errno {-r}");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _efd.Dispose();
        _bare.Dispose();
    }

    /// <summary>One VFIO_IOMMU_MAP_DMA + VFIO_IOMMU_UNMAP_DMA of 4 KiB through the SMMUv3 driver (pin, PTE, TLBI+SYNC, unpin).</summary>
    [Benchmark]
    public int MapUnmapDmaPairSmmuV3()
    {
        var r = _p.Ioctl(_container, VfioIoctl.IommuMapDma, _map);
        return r | _p.Ioctl(_container, VfioIoctl.IommuUnmapDma, _unmap);
    }

    /// <summary>
    /// Device MSI-X vector 0 → SMMU (IOVA 0x8000040) → ITS → LPI → CPU 0 IAR/handler/EOIR → eventfd → read(2). The
    /// interrupt is pushed: the redistributor raises CPU 0's IRQ input and the CPU takes it from the machine's loop, so
    /// nothing here polls for it (Setup checks the eventfd counted it).
    /// </summary>
    [Benchmark]
    public ulong MsixToEventFdRead()
    {
        _mq.SignalMsix(0);
        return _efd.TryRead(out var v) ? v : 0;
    }

    /// <summary>A device DMA write of 8 bytes through its function's port: root complex → SMMU (IOTLB hit) → the user's RAM page.</summary>
    [Benchmark]
    public Doorbell.Memory.BusStatus DeviceDmaWrite8() => _mq.Dma.Write(DmaIova, _dmaBytes, Doorbell.Memory.BusAttributes.Cpu);

    /// <summary>The baseline: write(2) then read(2) on a bare eventfd.</summary>
    [Benchmark(Baseline = true)]
    public ulong EventFdWriteReadBare()
    {
        _bare.Signal();
        return _bare.TryRead(out var v) ? v : 0;
    }
}
