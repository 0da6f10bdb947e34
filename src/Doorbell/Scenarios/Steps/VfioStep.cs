using System.Runtime.InteropServices;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Devices;
using Doorbell.Host.Kernel;
using Doorbell.Platform;

namespace Doorbell.Scenarios.Steps;

/// <summary>The VFIO ABI on the real stack (qemu-virt booted by the host kernel): the isolation policy on a GICv2m
/// board, then on the ITS board a container and group, type1 mappings landing in the SMMUv3 domain, config-space
/// virtualization, and an MSI-X vector of the device arriving on a real eventfd via epoll.</summary>
public sealed class VfioStep : IScenarioStep
{
    public string Title => "VFIO: container, group, DMA map, config virtualization, MSI-X to eventfd, isolation policy";

    public bool Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var ok = true;

        // Isolation policy on the GICv2m board: its MSI domain does not isolate, so type1 refuses unless allowed.
        var o2 = context.Options("GICv2m board", new QemuVirtOptions { GicVersion = 2, Its = false });
        var (m2, models2) = HostKernel.CreateBoard(o2, o2.Strict);
        m2.AddPci(new MultiQueueDmaDevice(4));
        var k2 = HostKernel.Boot(m2, models2);
        context.Observe("GICv2m board", m2, k2);
        var f2 = k2.FindFunction("0000:00:01.0")!;
        foreach (var allow in new[] { false, true })
        {
            var p = k2.CreateProcess(k2.BuildVfio(new VfioOptions { AllowUnsafeInterrupts = allow }));
            var c = p.OpenContainer();
            var g = p.OpenGroup(f2.Group.Id);
            p.Ioctl(g, VfioIoctl.GroupSetContainer, BitConverter.GetBytes(c));
            var r = p.Ioctl(c, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu);
            context.Item($"GICv2m board, group {f2.Group.Id} (isolated MSI: {f2.Group.HasIsolatedMsi}), allow_unsafe_interrupts={(allow ? 1 : 0)}: SET_IOMMU -> {Errno.Name(r)}");
            ok &= allow ? r == 0 : r == -Errno.EPERM;
        }

        // The ITS board: SMMUv3 domains through the host driver, MSIs through the ITS.
        var o = context.Options("ITS board");
        var (m, models) = HostKernel.CreateBoard(o, o.Strict);
        var mq = m.AddPci(new MultiQueueDmaDevice(4));
        var k = HostKernel.Boot(m, models);
        context.Observe("ITS board", m, k);
        var fn = k.FindFunction("0000:00:01.0")!;
        var proc = k.CreateProcess(k.BuildVfio());
        var container = proc.OpenContainer();
        var gfd = proc.OpenGroup(fn.Group.Id);
        proc.Ioctl(gfd, VfioIoctl.GroupSetContainer, BitConverter.GetBytes(container));
        ok &= proc.Ioctl(container, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu) == 0;
        var t1 = ((VfioContainer)proc.File(container)!).Iommu!;
        context.Item($"ITS board: type1v2 set; IOVA ranges: {string.Join(", ", t1.IovaRanges.Select(x => $"[0x{x.Start:x}-0x{x.End:x}]"))} (MSI window excluded)");

        var buf = proc.Memory.MapAnonymous(0x4000);
        var map = new VfioIommuType1DmaMap { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = buf, Iova = 0x1_0000_0000, Size = 0x4000 };
        var mb = new byte[32];
        MemoryMarshal.Write(mb, in map);
        var mr = proc.Ioctl(container, VfioIoctl.IommuMapDma, mb);
        var domain = fn.Group.AttachedDomain!.Domain;
        var pa = domain.IovaToPhys(0x1_0000_0000);
        context.Item($"MAP_DMA vaddr 0x{buf:x} -> IOVA 0x1_0000_0000 (16 KiB): {Errno.Name(mr)}; SMMU domain: IOVA 0x1_0000_0000 -> PA 0x{pa:x}");
        map.Iova = 0x800_0000;
        MemoryMarshal.Write(mb, in map);
        var msiMap = proc.Ioctl(container, VfioIoctl.IommuMapDma, mb);
        context.Item($"MAP_DMA into the MSI window 0x800_0000: {Errno.Name(msiMap)}");
        ok &= mr == 0 && msiMap == -Errno.EINVAL && pa != 0;

        var dev = proc.Ioctl(gfd, VfioIoctl.GroupGetDeviceFd, "0000:00:01.0\0"u8.ToArray());
        var cfg = VfioPciIndex.IndexToOffset(VfioPciIndex.Config);
        var hwBar = fn.ReadConfig(0x10, 4);
        var expectedMask = (uint)~(fn.GetBar(0).Size - 1) | (hwBar & 0xF);
        proc.Pwrite(dev, BitConverter.GetBytes(0xFFFF_FFFFu), cfg + 0x10);
        var sz = new byte[4];
        proc.Pread(dev, sz, cfg + 0x10);
        var barMask = BitConverter.ToUInt32(sz);
        context.Item($"device fd {dev}: BAR0 sizing reads 0x{barMask:x8} (virtual), hardware BAR untouched: 0x{fn.ReadConfig(0x10, 4):x8}");
        ok &= barMask == expectedMask && fn.ReadConfig(0x10, 4) == hwBar;
        // Memory decode and bus mastering on, through the virtualized COMMAND register.
        proc.Pwrite(dev, BitConverter.GetBytes((ushort)0x0006), cfg + 0x04);

        using var efd = EventFd.Create();
        using var ep = new Epoll();
        ep.Add(efd.Fd, 3);
        var set = new byte[24];
        MemoryMarshal.Write(set, new VfioIrqSet { Argsz = 24, Flags = VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, Index = VfioPciIndex.IrqMsix, Start = 3, Count = 1 });
        BitConverter.TryWriteBytes(set.AsSpan(20), efd.Fd);
        var sr = proc.Ioctl(dev, VfioIoctl.DeviceSetIrqs, set);
        mq.SignalMsix(3); // the device's MSI-X write: SMMU (doorbell IOVA) -> ITS -> LPI -> host CPU raised, takes it from the loop -> eventfd
        var tokens = new ulong[1];
        var n = ep.Wait(tokens, 100);
        efd.TryRead(out var count);
        context.Item($"SET_IRQS MSI-X[3] -> an eventfd: {Errno.Name(sr)}; vector 3 fired; epoll ready {n} (token {tokens[0]}), read {count}");
        ok &= sr == 0 && n == 1 && tokens[0] == 3 && count == 1;

        var ub = new byte[24];
        MemoryMarshal.Write(ub, new VfioIommuType1DmaUnmap { Argsz = 24, Iova = 0x1_0000_0000, Size = 0x4000 });
        var ur = proc.Ioctl(container, VfioIoctl.IommuUnmapDma, ub);
        var after = domain.IovaToPhys(0x1_0000_0000);
        context.Item($"UNMAP_DMA: {Errno.Name(ur)}, {MemoryMarshal.Read<VfioIommuType1DmaUnmap>(ub).Size} bytes; IOVA 0x1_0000_0000 now translates to 0x{after:x}");
        ok &= ur == 0 && after == 0;
        return ok;
    }
}
