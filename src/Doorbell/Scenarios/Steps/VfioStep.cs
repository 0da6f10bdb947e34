using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Memory;

namespace Doorbell.Scenarios.Steps;

/// <summary>A userspace driver through the VFIO ABI: container, group, type1 mappings, config virtualization,
/// an MSI-X vector arriving on a real eventfd via epoll, and the isolation policy. The IOMMU and PCI function here
/// are minimal stand-ins for the backend seams (the SMMU/ITS/PCIe adapters plug in the same way).</summary>
public sealed class VfioStep : IScenarioStep
{
    public string Title => "VFIO: container, group, DMA map, config virtualization, MSI-X to eventfd, isolation policy";

    sealed class Domain : IVfioIommuDomain
    {
        public readonly SortedDictionary<ulong, ulong> Pages = [];
        public ulong PgsizeBitmap => 0x4020_1000;
        public ulong ApertureStart => 0;
        public ulong ApertureEnd => (1UL << 48) - 1;
        public bool EnforcesCacheCoherency => true;
        public int Map(ulong iova, ulong phys, ulong size, IommuProt prot) { for (ulong o = 0; o < size; o += 4096) Pages[iova + o] = phys + o; return 0; }
        public int Unmap(ulong iova, ulong size) { for (ulong o = 0; o < size; o += 4096) Pages.Remove(iova + o); return 0; }
        public int EnableMsiCookie(ulong iovaBase) => 0;
    }

    sealed class Group(int id, bool isolated) : IVfioIommuGroup
    {
        public Domain? Domain;
        public int Id => id;
        public IReadOnlyList<IommuReservedRegion> ReservedRegions { get; } = [IommuReservedRegion.ArmSwMsi];
        public bool HasIsolatedMsi => isolated;
        public IVfioIommuDomain? AllocateDomain() => Domain = new Domain();
        public int Attach(IVfioIommuDomain domain) => 0;
        public void Detach(IVfioIommuDomain domain) { }
    }

    sealed class Function : IVfioPciFunction
    {
        readonly byte[] _cfg = new byte[256];
        public IVfioIrqSink? Sink;
        public Function()
        {
            BinaryPrimitives.WriteUInt32LittleEndian(_cfg, 0x11e8_1234); // edu's IDs
            _cfg[6] = 0x10; _cfg[0x34] = 0x40; _cfg[0x3D] = 1;
            BinaryPrimitives.WriteUInt32LittleEndian(_cfg.AsSpan(0x10), 0x1000_0000);
            _cfg[0x40] = 0x11; _cfg[0x42] = 7; // MSI-X, 8 vectors, table at BAR0 + 0x8_0000
            BinaryPrimitives.WriteUInt32LittleEndian(_cfg.AsSpan(0x44), 0x8_0000);
        }
        public string Name => "0000:00:01.0";
        public ushort Segment => 0;
        public byte Bus => 0;
        public byte Devfn => 8;
        public int ConfigSize => 256;
        public uint ReadConfig(int offset, int size) { uint v = 0; for (var i = 0; i < size; i++) v |= (uint)_cfg[offset + i] << (8 * i); return v; }
        public void WriteConfig(int offset, int size, uint value) { if (offset is 4) for (var i = 0; i < size; i++) _cfg[4 + i] = (byte)(value >> (8 * i)); }
        public PciBarInfo GetBar(int index) => index == 0 ? new PciBarInfo(0x10_0000, PciBarKind.Memory32, 0x1000_0000) : default;
        public BusStatus ReadBar(int index, ulong offset, int size, out ulong value) { value = 0; return BusStatus.Ok; }
        public BusStatus WriteBar(int index, ulong offset, int size, ulong value) => BusStatus.Ok;
        public int Reset() => 0;
        public int EnableVectors(PciIrqKind kind, int nvec, IVfioIrqSink sink) { Sink = sink; return nvec; }
        public void DisableVectors() => Sink = null;
        public int ConnectIntx(IVfioIrqSink? sink) => 0;
        public void SetIntxLineMasked(bool masked) { }
        public void ConnectErrors(IVfioIrqSink? sink) { }
    }

    public bool Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 0x2000_0000);
        var ok = true;

        // Isolation policy: a group whose MSIs are not isolated (GICv2m-like) is refused unless allowed.
        foreach (var allow in new[] { false, true })
        {
            var h = new VfioHost(new VfioOptions { AllowUnsafeInterrupts = allow });
            h.AddGroup(new Group(5, isolated: false));
            var p = new VfioProcess(h, new UserAddressSpace(new HostPageAllocator(bus, 0x5000_0000, 0x10_0000)));
            var c = p.OpenContainer();
            var g = p.OpenGroup(5);
            p.Ioctl(g, VfioIoctl.GroupSetContainer, BitConverter.GetBytes(c));
            var r = p.Ioctl(c, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu);
            context.Item($"group without isolated MSIs, allow_unsafe_interrupts={(allow ? 1 : 0)}: SET_IOMMU -> {Errno.Name(r)}");
            ok &= allow ? r == 0 : r == -Errno.EPERM;
        }

        var host = new VfioHost();
        var group = new Group(1, isolated: true);
        var vg = host.AddGroup(group);
        var fn = new Function();
        host.BindPci(vg, fn, out _);
        var proc = new VfioProcess(host, new UserAddressSpace(new HostPageAllocator(bus, 0x4000_0000, 0x1000_0000)));
        var container = proc.OpenContainer();
        var gfd = proc.OpenGroup(1);
        proc.Ioctl(gfd, VfioIoctl.GroupSetContainer, BitConverter.GetBytes(container));
        ok &= proc.Ioctl(container, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu) == 0;
        var t1 = ((VfioContainer)proc.File(container)!).Iommu!;
        context.Item($"type1v2 set; IOVA ranges: {string.Join(", ", t1.IovaRanges.Select(x => $"[0x{x.Start:x}-0x{x.End:x}]"))} (MSI window excluded)");

        var buf = proc.Memory.MapAnonymous(0x4000);
        var map = new VfioIommuType1DmaMap { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = buf, Iova = 0x1_0000_0000, Size = 0x4000 };
        var mb = new byte[32];
        MemoryMarshal.Write(mb, in map);
        var mr = proc.Ioctl(container, VfioIoctl.IommuMapDma, mb);
        var first = group.Domain!.Pages.First();
        context.Item($"MAP_DMA vaddr 0x{buf:x} -> IOVA 0x1_0000_0000 (16 KiB): {Errno.Name(mr)}; IOVA 0x{first.Key:x} -> PA 0x{first.Value:x}");
        map.Iova = 0x800_0000;
        MemoryMarshal.Write(mb, in map);
        var msiMap = proc.Ioctl(container, VfioIoctl.IommuMapDma, mb);
        context.Item($"MAP_DMA into the MSI window 0x800_0000: {Errno.Name(msiMap)}");
        ok &= mr == 0 && msiMap == -Errno.EINVAL && group.Domain.Pages.Count == 4;

        var dev = proc.Ioctl(gfd, VfioIoctl.GroupGetDeviceFd, "0000:00:01.0\0"u8.ToArray());
        var cfg = VfioPciIndex.IndexToOffset(VfioPciIndex.Config);
        proc.Pwrite(dev, BitConverter.GetBytes(0xFFFF_FFFFu), cfg + 0x10);
        var sz = new byte[4];
        proc.Pread(dev, sz, cfg + 0x10);
        var barMask = BitConverter.ToUInt32(sz);
        context.Item($"device fd {dev}: BAR0 sizing reads 0x{barMask:x8} (1 MiB), hardware BAR untouched: 0x{fn.ReadConfig(0x10, 4):x8}");
        ok &= barMask == 0xFFF0_0000 && fn.ReadConfig(0x10, 4) == 0x1000_0000;

        using var efd = EventFd.Create();
        using var ep = new Epoll();
        ep.Add(efd.Fd, 3);
        var set = new byte[24];
        MemoryMarshal.Write(set, new VfioIrqSet { Argsz = 24, Flags = VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, Index = VfioPciIndex.IrqMsix, Start = 3, Count = 1 });
        BitConverter.TryWriteBytes(set.AsSpan(20), efd.Fd);
        var sr = proc.Ioctl(dev, VfioIoctl.DeviceSetIrqs, set);
        fn.Sink?.OnMsi(3);
        var tokens = new ulong[1];
        var n = ep.Wait(tokens, 100);
        efd.TryRead(out var count);
        context.Item($"SET_IRQS MSI-X[3] -> eventfd {efd.Fd}: {Errno.Name(sr)}; vector 3 fired; epoll ready {n} (token {tokens[0]}), read {count}");
        ok &= sr == 0 && n == 1 && tokens[0] == 3 && count == 1;

        var ub = new byte[24];
        MemoryMarshal.Write(ub, new VfioIommuType1DmaUnmap { Argsz = 24, Iova = 0x1_0000_0000, Size = 0x4000 });
        var ur = proc.Ioctl(container, VfioIoctl.IommuUnmapDma, ub);
        context.Item($"UNMAP_DMA: {Errno.Name(ur)}, {MemoryMarshal.Read<VfioIommuType1DmaUnmap>(ub).Size} bytes; domain pages left {group.Domain.Pages.Count}");
        ok &= ur == 0 && group.Domain.Pages.Count == 0;
        return ok;
    }
}
