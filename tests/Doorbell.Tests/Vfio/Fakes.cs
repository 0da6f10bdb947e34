using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Memory;
using Doorbell.Pci;

namespace Doorbell.Tests.Vfio;

/// <summary>An IOMMU domain that records its mappings page by page.</summary>
public sealed class FakeDomain : IVfioIommuDomain
{
    public ulong PgsizeBitmap { get; set; } = 0x4000_0000UL | 0x20_0000 | 0x1000; // 4K, 2M, 1G
    public ulong ApertureStart { get; set; }
    public ulong ApertureEnd { get; set; } = (1UL << 48) - 1;
    public bool EnforcesCacheCoherency { get; set; } = true;
    public readonly SortedDictionary<ulong, (ulong Phys, IommuProt Prot)> Pages = [];
    public ulong? MsiCookie;
    public int FailMapsAfter = int.MaxValue;
    public int MapCalls, UnmapCalls;

    public int Map(ulong iova, ulong phys, ulong size, IommuProt prot)
    {
        if (MapCalls++ >= FailMapsAfter) return -Errno.ENOMEM;
        for (ulong o = 0; o < size; o += 4096)
        {
            if (Pages.ContainsKey(iova + o)) return -Errno.EEXIST;
            Pages[iova + o] = (phys + o, prot);
        }
        return 0;
    }

    public int Unmap(ulong iova, ulong size)
    {
        UnmapCalls++;
        for (ulong o = 0; o < size; o += 4096) Pages.Remove(iova + o);
        return 0;
    }

    public int EnableMsiCookie(ulong iovaBase) { MsiCookie = iovaBase; return 0; }
}

public sealed class FakeIommuGroup(int id) : IVfioIommuGroup
{
    public int Id { get; } = id;
    public List<IommuReservedRegion> Resv { get; } = [IommuReservedRegion.ArmSwMsi];
    public IReadOnlyList<IommuReservedRegion> ReservedRegions => Resv;
    public bool HasIsolatedMsi { get; set; } = true;
    public bool ShareDomains { get; set; }
    public Func<FakeDomain> NewDomain { get; set; } = () => new FakeDomain();
    public readonly List<FakeDomain> Allocated = [];
    public IVfioIommuDomain? Attached;

    public IVfioIommuDomain? AllocateDomain()
    {
        var d = NewDomain();
        Allocated.Add(d);
        return d;
    }

    public int Attach(IVfioIommuDomain domain)
    {
        if (Attached is not null) return -Errno.EBUSY;
        if (!ShareDomains && !Allocated.Contains(domain)) return -Errno.EINVAL;
        Attached = domain;
        return 0;
    }

    public void Detach(IVfioIommuDomain domain)
    {
        if (ReferenceEquals(Attached, domain)) Attached = null;
    }
}

/// <summary>
/// The real PCI function model under <see cref="FakePciFunction"/>: config image, write and W1C masks, capability chain
/// and BAR registers are <see cref="PciFunction"/>'s. What a device model sets up through its protected construction API
/// (vendor-specific capabilities, raw values, a register made writable for a test) is public here.
/// </summary>
public sealed class TestPciFunction(ushort vendor, ushort device) : PciFunction(vendor, device, 0xFF_0000, 0x10)
{
    public void Poke8(int o, byte v) => Set8(o, v);
    public void Poke16(int o, ushort v) => Set16(o, v);
    public void Poke32(int o, uint v) => Set32(o, v);
    /// <summary>Makes the bits of <paramref name="mask"/> in <paramref name="n"/> bytes at <paramref name="o"/> writable (replacing their mask).</summary>
    public void Mask(int o, int n, uint mask) { for (var i = 0; i < n; i++) SetMask8(o + i, (byte)(mask >> (8 * i))); }
    /// <summary>A standard capability with <paramref name="body"/> from byte 2; returns its offset.</summary>
    public int Cap(byte id, int length, params byte[] body)
    {
        var at = AddCap(id, length);
        for (var i = 0; i < body.Length; i++) Set8(at + 2 + i, body[i]);
        return at;
    }
    public int ExtCap(ushort id, int length, byte version = 1) => AddExtCap(id, version, length);
    /// <summary>The BAR register of ROM (index 6 is not a <see cref="PciFunction"/> BAR): address and its size mask.</summary>
    public void Rom(ulong size, ulong hostAddress) { Set32(PciCfg.ExpansionRom, (uint)hostAddress); Mask(PciCfg.ExpansionRom, 4, (uint)~(size - 1) | 1); }
}

/// <summary>A PCI function as the host kernel sees it (<see cref="IVfioPciFunction"/>) over a real <see cref="PciFunction"/>'s
/// config space; BARs are byte arrays on a bus, plus INTx, MSI/MSI-X vectors and reset as the kernel provides them.</summary>
public sealed class FakePciFunction : IVfioPciFunction
{
    /// <summary>The device model: every config read and write goes to it.</summary>
    public readonly TestPciFunction Function;
    readonly PciBarInfo[] _bars = new PciBarInfo[7];
    public readonly byte[][] BarMemory = new byte[7][];
    public IVfioIrqSink? IntxSink, ErrSink;
    /// <summary>What VFIO requested for each vector (request_irq's handler and name); null when freed.</summary>
    public readonly Action?[] VectorHandlers = new Action?[64];
    public readonly string?[] VectorNames = new string?[64];
    public int Resets, ResetResult;
    public int MaxVectors = 32;
    public int EnabledVectors;
    public PciIrqKind? VectorKind;
    public bool LineMasked;
    public int IntxConnectResult;
    public readonly List<(int Offset, int Size, uint Value)> ConfigWrites = [];

    public FakePciFunction(string name = "0000:00:01.0", ushort vendor = 0x1234, ushort device = 0x11e8)
    {
        Name = name;
        Function = new TestPciFunction(vendor, device);
        Config = new RawConfig(Function);
        Function.SetInterruptPin(1); // INTA
        for (var i = 0; i < 7; i++) BarMemory[i] = [];
    }

    public string Name { get; }
    public ushort Segment => 0;
    public byte Bus => 0;
    public byte Devfn => 0x08;
    public int ConfigSize => Function.ConfigSize;

    /// <summary>Raw config bytes, as the device holds them (a write here is the device changing its own state).</summary>
    public RawConfig Config { get; }
    public sealed class RawConfig(TestPciFunction f)
    {
        public byte this[int o] { get => f.Get8(o); set => f.Poke8(o, value); }
    }

    public void W16(int o, ushort v) => Function.Poke16(o, v);
    public void W32(int o, uint v) => Function.Poke32(o, v);
    public uint R16(int o) => Function.Get16(o);
    public uint R32(int o) => Function.Get32(o);

    /// <summary>BAR <paramref name="index"/> (6 = ROM) defined on the function and assigned <paramref name="hostAddress"/>.</summary>
    public void SetBar(int index, ulong size, PciBarKind kind, ulong hostAddress, bool prefetchable = false)
    {
        _bars[index] = new PciBarInfo(size, kind, hostAddress, prefetchable);
        BarMemory[index] = new byte[size];
        var bar = index;
        BarBus.MapMmio(new PhysAddr(hostAddress), size, new RecordingMmio(BarMemory[index], (o, n, w) => BarAccesses.Add((bar, o, n, w))), MmioAccessRules.AnySizeAligned, $"bar{index}");
        if (index == 6) { Function.Rom(size, hostAddress); return; }
        Function.DefineBar(index, kind, size, prefetchable);
        var at = PciCfg.Bar0 + 4 * index;
        W32(at, (uint)hostAddress | R32(at));
        if (kind == PciBarKind.Mem64) W32(at + 4, (uint)(hostAddress >> 32));
    }

    public uint ReadConfig(int offset, int size) => Function.ConfigRead(offset, size);

    public void WriteConfig(int offset, int size, uint value)
    {
        ConfigWrites.Add((offset, size, value));
        var wasDisabled = (R16(0x04) & 0x400) != 0;
        Function.ConfigWrite(offset, size, value);
        var nowDisabled = (R16(0x04) & 0x400) != 0;
        if (wasDisabled && !nowDisabled && (R16(0x06) & 0x08) != 0) IntxSink?.OnIntx();
    }

    public PciBarInfo GetBar(int index) => _bars[index];

    /// <summary>The host bus the BARs decode on (each BAR an MMIO region over <see cref="BarMemory"/>), as a kernel's function reaches its BARs.</summary>
    public readonly PhysicalAddressSpace BarBus = new();
    /// <summary>Every access that reached a BAR: (BAR, offset, size, write).</summary>
    public readonly List<(int Bar, ulong Offset, int Size, bool Write)> BarAccesses = [];

    public BusStatus ReadBar(int index, ulong offset, Span<byte> destination)
    {
        var b = _bars[index];
        if (offset > (ulong)BarMemory[index].Length || (ulong)destination.Length > (ulong)BarMemory[index].Length - offset) return BusStatus.DecodeError;
        return BarBus.ReadAccesses(b.HostAddress + offset, destination, 8, BusAttributes.Cpu);
    }

    public BusStatus WriteBar(int index, ulong offset, ReadOnlySpan<byte> source)
    {
        var b = _bars[index];
        if (offset > (ulong)BarMemory[index].Length || (ulong)source.Length > (ulong)BarMemory[index].Length - offset) return BusStatus.DecodeError;
        return BarBus.WriteAccesses(b.HostAddress + offset, source, 8, BusAttributes.Cpu);
    }

    public int Reset() { Resets++; return ResetResult; }

    public int EnableVectors(PciIrqKind kind, int nvec)
    {
        var got = Math.Min(nvec, MaxVectors);
        if (got == nvec) { EnabledVectors = nvec; VectorKind = kind; }
        return got;
    }

    public int RequestVector(int vector, string name, Action signal)
    {
        if ((uint)vector >= (uint)EnabledVectors) return -Errno.EINVAL;
        if (VectorHandlers[vector] is not null) return -Errno.EBUSY;
        VectorHandlers[vector] = signal; VectorNames[vector] = name;
        return 0;
    }

    public void FreeVector(int vector)
    {
        if ((uint)vector >= (uint)EnabledVectors) return;
        VectorHandlers[vector] = null; VectorNames[vector] = null;
    }

    public void DisableVectors()
    {
        Array.Clear(VectorHandlers); Array.Clear(VectorNames);
        EnabledVectors = 0; VectorKind = null;
    }

    public int ConnectIntx(IVfioIrqSink? sink)
    {
        if (sink is not null && IntxConnectResult != 0) return IntxConnectResult;
        IntxSink = sink;
        return 0;
    }

    public void SetIntxLineMasked(bool masked) => LineMasked = masked;
    public void ConnectErrors(IVfioIrqSink? sink) => ErrSink = sink;

    /// <summary>The device raises INTx (level): STATUS.INTERRUPT set; delivered unless DisINTx or the line is masked.</summary>
    public void AssertIntx()
    {
        Function.SetIntx(true); // STATUS.INTERRUPT
        if ((R16(0x04) & 0x400) == 0 && !LineMasked) IntxSink?.OnIntx();
    }

    public void DeassertIntx() => Function.SetIntx(false);

    /// <summary>The device fires a vector: the host CPU runs the handler requested for it (none: spurious, nothing runs).</summary>
    public void FireMsi(int vector) => VectorHandlers[vector]?.Invoke();
}

/// <summary>An MMIO region over a byte array that reports each access (offset, size, write).</summary>
public sealed class RecordingMmio(byte[] memory, Action<ulong, int, bool>? onAccess = null) : IMmioHandler
{
    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        onAccess?.Invoke(offset, size, false);
        value = 0;
        for (var i = 0; i < size; i++) value |= (ulong)memory[(int)offset + i] << (8 * i);
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        onAccess?.Invoke(offset, size, true);
        for (var i = 0; i < size; i++) memory[(int)offset + i] = (byte)(value >> (8 * i));
        return BusStatus.Ok;
    }
}

public sealed class FakePlatformDevice : IVfioPlatformDevice
{
    public string Name { get; init; } = "9000000.ethernet";
    public bool IsAmba { get; init; }
    public List<PlatformRegionInfo> RegionList { get; } = [new(0x0900_0000, 0x1000, false), new(0x0900_1000, 0x100, true)];
    public IReadOnlyList<PlatformRegionInfo> Regions => RegionList;
    /// <summary>The value of every register access that reached a region, by (region, offset).</summary>
    public readonly Dictionary<(int, ulong), ulong> Regs = [];
    /// <summary>Every access that reached a region: (region, offset, size, write).</summary>
    public readonly List<(int Region, ulong Offset, int Size, bool Write)> Accesses = [];
    readonly PhysicalAddressSpace _bus = new();
    bool _mapped;

    void MapRegions()
    {
        if (_mapped) return;
        _mapped = true;
        for (var i = 0; i < RegionList.Count; i++)
        {
            var region = i;
            _bus.MapMmio(new PhysAddr(RegionList[i].HostAddress), RegionList[i].Size, new RegisterMmio(this, region), MmioAccessRules.AnySizeAligned, $"region{i}");
        }
    }

    sealed class RegisterMmio(FakePlatformDevice dev, int region) : IMmioHandler
    {
        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
        {
            dev.Accesses.Add((region, offset, size, false));
            value = dev.Regs.GetValueOrDefault((region, offset));
            return BusStatus.Ok;
        }

        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
        {
            dev.Accesses.Add((region, offset, size, true));
            dev.Regs[(region, offset)] = value;
            return BusStatus.Ok;
        }
    }
    public List<bool> Levels { get; } = [true, false];
    public IReadOnlyList<bool> IrqIsLevel => Levels;
    public readonly bool[] Asserted = new bool[2];
    public readonly bool[] Enabled = [true, true];
    public readonly Action<int>?[] Handlers = new Action<int>?[2];
    public bool HasReset { get; init; } = true;
    public int Resets;

    // Linux's vfio-platform issues naturally aligned accesses of up to 4 bytes; the host's memory view splits them.
    public BusStatus ReadRegion(int index, ulong offset, Span<byte> destination)
    {
        MapRegions();
        return _bus.ReadAccesses(RegionList[index].HostAddress + offset, destination, 4, BusAttributes.Cpu);
    }

    public BusStatus WriteRegion(int index, ulong offset, ReadOnlySpan<byte> source)
    {
        MapRegions();
        return _bus.WriteAccesses(RegionList[index].HostAddress + offset, source, 4, BusAttributes.Cpu);
    }
    public bool IrqLineAsserted(int index) => Asserted[index];
    public void ConnectIrq(int index, Action<int>? handler) => Handlers[index] = handler;
    public void SetIrqEnabled(int index, bool enabled) => Enabled[index] = enabled;
    public int Reset() { Resets++; return 0; }

    /// <summary>Raises a line: level lines stay asserted until <see cref="Lower"/>.</summary>
    public void Raise(int index)
    {
        Asserted[index] = Levels[index];
        if (Enabled[index]) Handlers[index]?.Invoke(index);
    }

    public void Lower(int index) => Asserted[index] = false;
}

/// <summary>A small world: bus + RAM, page allocator, VFIO host, one process, and ioctl helpers for tests.</summary>
public sealed class VfioWorld
{
    public readonly PhysicalAddressSpace Bus = new();
    public readonly PhysPageAllocator Pages;
    public readonly VfioHost Host;
    public readonly VfioProcess Proc;

    public VfioWorld(VfioOptions? options = null)
    {
        Bus.AddRam(new PhysAddr(0x4000_0000), 0x1000_0000);
        Pages = new PhysPageAllocator(0x4000_0000, 0x1000_0000, Bus);
        Host = new VfioHost(options);
        Proc = new VfioProcess(Host, new UserAddressSpace(Bus, Pages), 64UL << 20);
    }

    public (FakeIommuGroup Iommu, VfioGroup Group) AddGroup(int id, bool isolated = true)
    {
        var iommu = new FakeIommuGroup(id) { HasIsolatedMsi = isolated };
        return (iommu, Host.AddGroup(iommu));
    }

    public static byte[] Bytes<T>(T value, int extra = 0) where T : unmanaged
    {
        var b = new byte[UserArg.SizeOf<T>() + extra];
        MemoryMarshal.Write(b, in value);
        return b;
    }

    public static T Read<T>(byte[] b, int at = 0) where T : unmanaged => MemoryMarshal.Read<T>(b.AsSpan(at));

    public int SetContainer(int groupFd, int containerFd)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(b, containerFd);
        return Proc.Ioctl(groupFd, VfioIoctl.GroupSetContainer, b);
    }

    public int GetDeviceFd(int groupFd, string name) =>
        Proc.Ioctl(groupFd, VfioIoctl.GroupGetDeviceFd, System.Text.Encoding.ASCII.GetBytes(name + "\0"));

    /// <summary>Container with group <paramref name="groupId"/> attached and type1 set.</summary>
    public (int Container, int Group, int Result) Setup(int groupId, uint type = VfioExtension.Type1v2Iommu)
    {
        var c = Proc.OpenContainer();
        var g = Proc.OpenGroup(groupId);
        var r = SetContainer(g, c);
        if (r == 0) r = Proc.Ioctl(c, VfioIoctl.SetIommu, type);
        return (c, g, r);
    }

    public int Map(int container, ulong vaddr, ulong iova, ulong size, uint flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, uint? argsz = null)
    {
        var m = new VfioIommuType1DmaMap { Argsz = argsz ?? 32, Flags = flags, Vaddr = vaddr, Iova = iova, Size = size };
        return Proc.Ioctl(container, VfioIoctl.IommuMapDma, Bytes(m));
    }

    public int Unmap(int container, ulong iova, ulong size, out ulong unmapped, uint flags = 0)
    {
        var u = new VfioIommuType1DmaUnmap { Argsz = 24, Flags = flags, Iova = iova, Size = size };
        var b = Bytes(u);
        var r = Proc.Ioctl(container, VfioIoctl.IommuUnmapDma, b);
        unmapped = Read<VfioIommuType1DmaUnmap>(b).Size;
        return r;
    }

    public int SetIrqs(int device, uint flags, uint index, uint start, uint count, ReadOnlySpan<byte> data = default, uint? argsz = null)
    {
        var b = new byte[20 + data.Length];
        var h = new VfioIrqSet { Argsz = argsz ?? (uint)b.Length, Flags = flags, Index = index, Start = start, Count = count };
        MemoryMarshal.Write(b, in h);
        data.CopyTo(b.AsSpan(20));
        return Proc.Ioctl(device, VfioIoctl.DeviceSetIrqs, b);
    }

    public static byte[] Fds(params int[] fds)
    {
        var b = new byte[fds.Length * 4];
        for (var i = 0; i < fds.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(i * 4), fds[i]);
        return b;
    }

    public uint CfgRead(int dev, int offset, int size)
    {
        var b = new byte[size];
        var r = Proc.Pread(dev, b, VfioPciIndex.IndexToOffset(VfioPciIndex.Config) + (ulong)offset);
        Assert.Equal(size, r);
        uint v = 0;
        for (var i = 0; i < size; i++) v |= (uint)b[i] << (8 * i);
        return v;
    }

    public void CfgWrite(int dev, int offset, int size, uint value)
    {
        var b = new byte[size];
        for (var i = 0; i < size; i++) b[i] = (byte)(value >> (8 * i));
        Assert.Equal(size, Proc.Pwrite(dev, b, VfioPciIndex.IndexToOffset(VfioPciIndex.Config) + (ulong)offset));
    }
}
