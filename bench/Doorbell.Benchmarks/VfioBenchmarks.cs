using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Memory;
using Doorbell.Pci;

namespace Doorbell.Benchmarks;

/// <summary>VFIO ioctl and interrupt paths: MAP_DMA+UNMAP_DMA pairs through the container ioctl with a recording
/// IOMMU backend; eventfd write→read bare vs. a device MSI-X vector → VFIO trigger → eventfd read.</summary>
[MemoryDiagnoser]
public class VfioBenchmarks
{
    sealed class Domain : IVfioIommuDomain
    {
        public int Mapped;
        public ulong PgsizeBitmap => 0x4020_1000;
        public ulong ApertureStart => 0;
        public ulong ApertureEnd => (1UL << 48) - 1;
        public bool EnforcesCacheCoherency => true;
        public int Map(ulong iova, ulong phys, ulong size, IommuProt prot) { Mapped++; return 0; }
        public int Unmap(ulong iova, ulong size) { Mapped--; return 0; }
        public int EnableMsiCookie(ulong iovaBase) => 0;
    }

    sealed class Group : IVfioIommuGroup
    {
        public int Id => 1;
        public IReadOnlyList<IommuReservedRegion> ReservedRegions { get; } = [IommuReservedRegion.ArmSwMsi];
        public bool HasIsolatedMsi => true;
        public IVfioIommuDomain? AllocateDomain() => new Domain();
        public int Attach(IVfioIommuDomain domain) => 0;
        public void Detach(IVfioIommuDomain domain) { }
    }

    /// <summary>A function with only an MSI-X capability (64 vectors, table in BAR0).</summary>
    sealed class Function : IVfioPciFunction
    {
        readonly byte[] _cfg = new byte[256];
        /// <summary>What VFIO requested for vector 0 (its trigger's signal).</summary>
        public Action? Vector0;
        public Function()
        {
            _cfg[0] = 0x34; _cfg[1] = 0x12; _cfg[6] = 0x10; _cfg[0x34] = 0x40;
            _cfg[0x40] = 0x11; _cfg[0x42] = 63; _cfg[0x44] = 0; // table at BAR0 + 0
        }
        public string Name => "0000:00:01.0";
        public ushort Segment => 0;
        public byte Bus => 0;
        public byte Devfn => 8;
        public int ConfigSize => 256;
        public uint ReadConfig(int offset, int size) { uint v = 0; for (var i = 0; i < size; i++) v |= (uint)_cfg[offset + i] << (8 * i); return v; }
        public void WriteConfig(int offset, int size, uint value) { if (offset == 4) for (var i = 0; i < size; i++) _cfg[4 + i] = (byte)(value >> (8 * i)); }
        public PciBarInfo GetBar(int index) => index == 0 ? new PciBarInfo(0x4000, PciBarKind.Mem32, 0x1000_0000) : default;
        public BusStatus ReadBar(int index, ulong offset, Span<byte> destination) { destination.Clear(); return BusStatus.Ok; }
        public BusStatus WriteBar(int index, ulong offset, ReadOnlySpan<byte> source) => BusStatus.Ok;
        public int Reset() => 0;
        public int EnableVectors(PciIrqKind kind, int nvec) => nvec;
        public int RequestVector(int vector, string name, Action signal) { if (vector == 0) Vector0 = signal; return 0; }
        public void FreeVector(int vector) { if (vector == 0) Vector0 = null; }
        public void DisableVectors() => Vector0 = null;
        public int ConnectIntx(IVfioIrqSink? sink) => 0;
        public void SetIntxLineMasked(bool masked) { }
        public void ConnectErrors(IVfioIrqSink? sink) { }
    }

    VfioProcess _proc = null!;
    int _container;
    readonly byte[] _map = new byte[32], _unmap = new byte[24], _mapRam = new byte[32], _unmapRam = new byte[24];
    const ulong GuestRam = 512UL << 20;
    EventFd _bare = null!, _vfioFd = null!;
    Function _fn = null!;

    [GlobalSetup]
    public void Setup()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 0x100_0000);
        var host = new VfioHost();
        var group = host.AddGroup(new Group());
        _fn = new Function();
        if (host.BindPci(group, _fn, out _) != 0) throw new InvalidOperationException("bind");
        _proc = new VfioProcess(host, new UserAddressSpace(bus, new PhysPageAllocator(0x4000_0000, 0x100_0000, bus)));
        _container = _proc.OpenContainer();
        var g = _proc.OpenGroup(1);
        var fdArg = BitConverter.GetBytes(_container);
        if (_proc.Ioctl(g, VfioIoctl.GroupSetContainer, fdArg) != 0 || _proc.Ioctl(_container, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu) != 0)
            throw new InvalidOperationException("setup");
        var va = _proc.Memory.MapAnonymous(0x1000);
        var m = new VfioIommuType1DmaMap { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = va, Iova = 0x1_0000_0000, Size = 0x1000 };
        MemoryMarshal.Write(_map, in m);

        // a VMM's guest RAM as `doorbell serve` describes it: one foreign mapping of a client's memory (window in
        // the client-memory aperture), pinned and mapped whole at IOVA = GPA by one MAP_DMA
        const ulong ramVa = 0x7f00_0000_0000;
        _proc.CapIpcLock = true; // QEMU run as root, as in the suite
        if (_proc.Memory.MapForeign(ramVa, GuestRam, 0x400_0000_0000) == 0) throw new InvalidOperationException("foreign");
        MemoryMarshal.Write(_mapRam, new VfioIommuType1DmaMap { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = ramVa, Iova = 0x4000_0000, Size = GuestRam });
        MemoryMarshal.Write(_unmapRam, new VfioIommuType1DmaUnmap { Argsz = 24, Iova = 0x4000_0000, Size = GuestRam });

        var dev = _proc.Ioctl(g, VfioIoctl.GroupGetDeviceFd, "0000:00:01.0\0"u8.ToArray());
        _bare = EventFd.Create();
        _vfioFd = EventFd.Create();
        var set = new byte[24];
        MemoryMarshal.Write(set, new VfioIrqSet { Argsz = 24, Flags = VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, Index = VfioPciIndex.IrqMsix, Start = 0, Count = 1 });
        BitConverter.TryWriteBytes(set.AsSpan(20), _vfioFd.Fd);
        if (_proc.Ioctl(dev, VfioIoctl.DeviceSetIrqs, set) != 0) throw new InvalidOperationException("set irqs");
        // The measured paths must succeed: a pair maps and unmaps one page; a vector reaches the eventfd.
        var before = ((VfioContainer)_proc.File(_container)!).Iommu!.DmaAvail;
        if (MapUnmapDmaPair() != 0 || ((VfioContainer)_proc.File(_container)!).Iommu!.DmaAvail != before) throw new InvalidOperationException("map/unmap");
        if (MsixVectorToEventFdRead() != 1 || EventFdWriteReadBare() != 1) throw new InvalidOperationException("eventfd");
        var mr = _proc.Ioctl(_container, VfioIoctl.IommuMapDma, _mapRam);
        var pinnedRam = _proc.Memory.PinnedPages;
        var ur = _proc.Ioctl(_container, VfioIoctl.IommuUnmapDma, _unmapRam);
        if (mr != 0 || ur != 0 || pinnedRam != (long)(GuestRam / 4096) || _proc.Memory.PinnedPages != 0)
            throw new InvalidOperationException($"guest RAM map/unmap: {mr}, {ur}, {pinnedRam} pages pinned");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _bare.Dispose();
        _vfioFd.Dispose();
    }

    [Benchmark]
    public int MapUnmapDmaPair()
    {
        var r = _proc.Ioctl(_container, VfioIoctl.IommuMapDma, _map);
        var u = new VfioIommuType1DmaUnmap { Argsz = 24, Iova = 0x1_0000_0000, Size = 0x1000 };
        MemoryMarshal.Write(_unmap, in u);
        return r | _proc.Ioctl(_container, VfioIoctl.IommuUnmapDma, _unmap);
    }

    /// <summary>MAP_DMA + UNMAP_DMA of 512 MiB of a client's memory (131072 pages pinned, accounted, unpinned): what
    /// QEMU's realize costs in type1 (the recording domain leaves out the SMMU page-table writes).</summary>
    [Benchmark]
    public int MapUnmapGuestRam512MiB() =>
        _proc.Ioctl(_container, VfioIoctl.IommuMapDma, _mapRam) | _proc.Ioctl(_container, VfioIoctl.IommuUnmapDma, _unmapRam);

    [Benchmark(Baseline = true)]
    public ulong EventFdWriteReadBare()
    {
        _bare.Signal();
        _bare.TryRead(out var v);
        return v;
    }

    [Benchmark]
    public ulong MsixVectorToEventFdRead()
    {
        _fn.Vector0!(); // the handler VFIO requested: the CPU's dispatch calls it
        _vfioFd.TryRead(out var v);
        return v;
    }
}
