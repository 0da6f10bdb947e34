using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;

namespace Doorbell.Tests.Vfio;

public class PciRegionTests
{
    static (int R, VfioRegionInfo Info, byte[] Buf) Region(PciTestDevice t, uint index, uint argsz = 128)
    {
        var buf = new byte[Math.Max(32, (int)argsz)];
        VfioWorld.Bytes(new VfioRegionInfo { Argsz = argsz, Index = index }).CopyTo(buf, 0);
        var r = t.W.Proc.Ioctl(t.Fd, VfioIoctl.DeviceGetRegionInfo, buf);
        return (r, VfioWorld.Read<VfioRegionInfo>(buf), buf);
    }

    static ulong Bar(uint index) => VfioPciIndex.IndexToOffset(index);

    [Fact]
    public void Device_info_reports_pci_with_reset_and_fixed_counts()
    {
        var t = new PciTestDevice();
        var b = VfioWorld.Bytes(new VfioDeviceInfo { Argsz = 24 });
        Assert.Equal(0, t.W.Proc.Ioctl(t.Fd, VfioIoctl.DeviceGetInfo, b));
        var info = VfioWorld.Read<VfioDeviceInfo>(b);
        Assert.Equal(VfioDeviceFlags.Pci | VfioDeviceFlags.Reset, info.Flags);
        Assert.Equal(9u, info.NumRegions);
        Assert.Equal(5u, info.NumIrqs);
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Ioctl(t.Fd, VfioIoctl.DeviceGetInfo, VfioWorld.Bytes(new VfioDeviceInfo { Argsz = 15 })));
        Assert.Equal(-Errno.ENOTTY, t.W.Proc.Ioctl(t.Fd, VfioIoctl.Io(60), b));
    }

    [Fact]
    public void Region_info_for_bars_config_rom_and_vga()
    {
        var t = new PciTestDevice();
        var (r, bar0, _) = Region(t, 0);
        Assert.Equal(0, r);
        Assert.Equal(0x10_0000UL, bar0.Size);
        Assert.Equal(0UL, bar0.Offset);
        Assert.Equal(VfioRegionFlags.Read | VfioRegionFlags.Write | VfioRegionFlags.Mmap, bar0.Flags);
        var (_, bar1, _) = Region(t, 1);
        Assert.Equal((0UL, 0u), (bar1.Size, bar1.Flags)); // upper half of the 64-bit BAR0
        var (_, bar4, _) = Region(t, 4);
        Assert.Equal(VfioRegionFlags.Read | VfioRegionFlags.Write, bar4.Flags); // IO: no mmap
        Assert.Equal(4UL << 40, bar4.Offset);
        var (_, cfg, _) = Region(t, VfioPciIndex.Config);
        Assert.Equal((4096UL, 7UL << 40, VfioRegionFlags.Read | VfioRegionFlags.Write), (cfg.Size, cfg.Offset, cfg.Flags));
        var (_, rom, _) = Region(t, VfioPciIndex.Rom);
        Assert.Equal((0x1_0000UL, VfioRegionFlags.Read), (rom.Size, rom.Flags));
        Assert.Equal(-Errno.EINVAL, Region(t, VfioPciIndex.Vga).R);
        Assert.Equal(-Errno.EINVAL, Region(t, 9).R);
        Assert.Equal(-Errno.EINVAL, Region(t, 0, 31).R);
    }

    [Fact]
    public void Msix_bar_carries_the_msix_mappable_cap_or_reports_the_needed_argsz()
    {
        var t = new PciTestDevice();
        var (r, info, buf) = Region(t, 2);
        Assert.Equal(0, r);
        Assert.True((info.Flags & VfioRegionFlags.Caps) != 0);
        Assert.Equal(32u, info.CapOffset);
        var cap = VfioWorld.Read<VfioInfoCapHeader>(buf, 32);
        Assert.Equal((VfioRegionFlags.CapMsixMappable, (ushort)1, 0u), (cap.Id, cap.Version, cap.Next));
        var (r2, small, _) = Region(t, 2, 32);
        Assert.Equal(0, r2);
        Assert.Equal(40u, small.Argsz);
        Assert.Equal(0u, small.CapOffset);
        Assert.True((small.Flags & VfioRegionFlags.Caps) != 0);
    }

    [Fact]
    public void Legacy_mode_excludes_the_msix_table_with_a_sparse_mmap_cap()
    {
        var t = new PciTestDevice(new VfioOptions { ExcludeMsixTableFromMmap = true });
        var (r, info, buf) = Region(t, 2);
        Assert.Equal(0, r);
        var cap = VfioWorld.Read<VfioRegionInfoCapSparseMmap>(buf, (int)info.CapOffset);
        Assert.Equal(VfioRegionFlags.CapSparseMmap, cap.Header.Id);
        Assert.Equal(2u, cap.NrAreas);
        var a0 = VfioWorld.Read<VfioRegionSparseMmapArea>(buf, (int)info.CapOffset + 16);
        var a1 = VfioWorld.Read<VfioRegionSparseMmapArea>(buf, (int)info.CapOffset + 32);
        Assert.Equal((0UL, 0x2000UL), (a0.Offset, a0.Size));
        Assert.Equal((0x3000UL, 0x1000UL), (a1.Offset, a1.Size));
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Mmap(t.Fd, 0x4000, Bar(2)));
        Assert.True(t.W.Proc.Mmap(t.Fd, 0x1000, Bar(2) + 0x3000) > 0);
    }

    [Fact]
    public void Bar_access_needs_memory_decode_and_protects_the_msix_table()
    {
        var t = new PciTestDevice();
        var buf = new byte[8];
        Assert.Equal(-Errno.EIO, t.W.Proc.Pread(t.Fd, buf, Bar(0)));
        t.CfgW(0x04, 2, 0x0003);
        BitConverter.TryWriteBytes(buf, 0x1122_3344_5566_7788UL);
        Assert.Equal(8, t.W.Proc.Pwrite(t.Fd, buf, Bar(0) + 0x100));
        Assert.Equal(0x88, t.F.BarMemory[0][0x100]);
        // MSI-X table (BAR2 0x2000..0x203F): reads 0xFF, writes dropped; the PBA is not protected.
        t.F.BarMemory[2][0x2000] = 0x12;
        var tb = new byte[0x48];
        Assert.Equal(0x48, t.W.Proc.Pread(t.Fd, tb, Bar(2) + 0x1FF8));
        Assert.All(tb.AsSpan(8, 0x40).ToArray(), b => Assert.Equal(0xFF, b));
        Assert.Equal(4, t.W.Proc.Pwrite(t.Fd, new byte[] { 1, 2, 3, 4 }, Bar(2) + 0x2000));
        Assert.Equal(0x12, t.F.BarMemory[2][0x2000]);
        Assert.Equal(4, t.W.Proc.Pwrite(t.Fd, new byte[] { 1, 2, 3, 4 }, Bar(2) + 0x3000));
        Assert.Equal(1, t.F.BarMemory[2][0x3000]);
        // Short at the end, EINVAL past it, ROM read-only, IO BAR without decode check.
        Assert.Equal(4, t.W.Proc.Pread(t.Fd, buf, Bar(2) + 0x3FFC));
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Pread(t.Fd, buf, Bar(2) + 0x4000));
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Pread(t.Fd, buf, Bar(3)));
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Pwrite(t.Fd, buf, Bar(VfioPciIndex.Rom)));
        Assert.Equal(8, t.W.Proc.Pread(t.Fd, buf, Bar(VfioPciIndex.Rom)));
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Pread(t.Fd, buf, Bar(VfioPciIndex.Vga)));
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Pread(t.Fd, buf, Bar(12)));
        t.CfgW(0x04, 2, 0x0000);
        Assert.Equal(4, t.W.Proc.Pwrite(t.Fd, new byte[] { 9, 9, 9, 9 }, Bar(4)));
    }

    sealed class MmioBar(byte[] mem) : Doorbell.Memory.IMmioHandler
    {
        public Doorbell.Memory.BusStatus Read(ulong offset, int size, out ulong value, in Doorbell.Memory.BusAttributes attributes)
        {
            value = 0;
            for (var i = 0; i < size; i++) value |= (ulong)mem[(int)offset + i] << (8 * i);
            return Doorbell.Memory.BusStatus.Ok;
        }

        public Doorbell.Memory.BusStatus Write(ulong offset, int size, ulong value, in Doorbell.Memory.BusAttributes attributes)
        {
            for (var i = 0; i < size; i++) mem[(int)offset + i] = (byte)(value >> (8 * i));
            return Doorbell.Memory.BusStatus.Ok;
        }
    }

    [Fact]
    public void Mmap_maps_the_bar_and_faults_with_sigbus_while_decode_is_off()
    {
        var t = new PciTestDevice();
        t.W.Bus.MapMmio(new Doorbell.Memory.PhysAddr(0x10_0000_0000), 0x10_0000, new MmioBar(t.F.BarMemory[0]), Doorbell.Memory.MmioAccessRules.AnySizeAligned, "bar0");
        var va = t.W.Proc.Mmap(t.Fd, 0x2000, Bar(0) + 0x1000);
        Assert.True(va > 0);
        Assert.Equal(UserAccess.Bus, t.W.Proc.Memory.Write((ulong)va, new byte[] { 0x5A }));
        t.CfgW(0x04, 2, 0x0002);
        Assert.Equal(UserAccess.Ok, t.W.Proc.Memory.Write((ulong)va + 4, new byte[] { 0x5A, 0xA5, 0, 0 }));
        Assert.Equal(0x5A, t.F.BarMemory[0][0x1004]);
        // mmap errors: private mapping, ROM/config, unaligned offset, beyond the BAR, IO BAR.
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Mmap(t.Fd, 0x1000, Bar(0), shared: false));
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Mmap(t.Fd, 0x1000, Bar(VfioPciIndex.Rom)));
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Mmap(t.Fd, 0x1000, Bar(VfioPciIndex.Config)));
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Mmap(t.Fd, 0x1000, Bar(0) + 0x800));
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Mmap(t.Fd, 0x2000, Bar(0) + 0xFF000));
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Mmap(t.Fd, 0x1000, Bar(4)));
        Assert.True(t.W.Proc.Mmap(t.Fd, 0x4000, Bar(2)) > 0); // MSI-X BAR is mappable (MSIX_MAPPABLE)
    }

    [Fact]
    public void Reset_ioctl_and_open_close_lifecycle()
    {
        var t = new PciTestDevice();
        var before = t.F.Resets;
        Assert.Equal(0, t.W.Proc.Ioctl(t.Fd, VfioIoctl.DeviceReset, 0UL));
        Assert.Equal(before + 1, t.F.Resets);
        t.F.W16(0x04, 0x0006); // bus master on
        Assert.Equal(0, t.W.Proc.Close(t.Fd));
        Assert.Equal(0u, t.F.R16(0x04) & 0x4); // master cleared at close
        Assert.Equal(before + 2, t.F.Resets);

        var noReset = new PciTestDevice(customize: f => f.ResetResult = -Errno.ENOTTY);
        Assert.Equal(-Errno.EINVAL, noReset.W.Proc.Ioctl(noReset.Fd, VfioIoctl.DeviceReset, 0UL));
        var b = VfioWorld.Bytes(new VfioDeviceInfo { Argsz = 24 });
        Assert.Equal(0, noReset.W.Proc.Ioctl(noReset.Fd, VfioIoctl.DeviceGetInfo, b));
        Assert.Equal(VfioDeviceFlags.Pci, VfioWorld.Read<VfioDeviceInfo>(b).Flags);
        Assert.Equal(-Errno.ENODEV, noReset.W.Proc.Ioctl(noReset.Fd, VfioIoctl.DeviceGetPciHotResetInfo, VfioWorld.Bytes(new VfioPciHotResetInfo { Argsz = 12 })));
        Assert.Equal(-Errno.EBADF, t.W.Proc.Ioctl(t.Fd, VfioIoctl.DeviceGetInfo, b));
    }
}

public class PciIoeventfdTests
{
    static int Ioeventfd(PciTestDevice t, uint flags, ulong offset, ulong data, int fd, uint argsz = 32)
    {
        var b = VfioWorld.Bytes(new VfioDeviceIoeventfd { Argsz = argsz, Flags = flags, Offset = offset, Data = data, Fd = fd });
        return t.W.Proc.Ioctl(t.Fd, VfioIoctl.DeviceIoeventfd, b);
    }

    [Fact]
    public void Ioeventfd_writes_the_bar_when_signalled_and_follows_linux_errors()
    {
        var t = new PciTestDevice();
        using var e = EventFd.Create();
        Assert.Equal(32, System.Runtime.InteropServices.Marshal.SizeOf<VfioDeviceIoeventfd>());
        Assert.Equal(-Errno.EINVAL, Ioeventfd(t, 4, 0x40, 0xAB, e.Fd, argsz: 27));
        Assert.Equal(-Errno.EINVAL, Ioeventfd(t, 0x10 | 4, 0x40, 0xAB, e.Fd));
        Assert.Equal(-Errno.EINVAL, Ioeventfd(t, 3, 0x40, 0xAB, e.Fd));           // two sizes
        Assert.Equal(-Errno.EINVAL, Ioeventfd(t, 4, VfioPciIndex.IndexToOffset(VfioPciIndex.Config), 0, e.Fd));
        Assert.Equal(-Errno.EINVAL, Ioeventfd(t, 4, 0x10_0000 - 2, 0, e.Fd));     // past the BAR
        Assert.Equal(-Errno.EINVAL, Ioeventfd(t, 4, (2UL << 40) + 0x2010, 0, e.Fd)); // MSI-X table
        Assert.Equal(-Errno.ENODEV, Ioeventfd(t, 4, 0x40, 0xAB, -1));             // nothing to remove
        Assert.Equal(0, Ioeventfd(t, 4, 0x40, 0xCAFE_F00D, e.Fd));
        Assert.Equal(-Errno.EEXIST, Ioeventfd(t, 4, 0x40, 0xCAFE_F00D, e.Fd));
        t.CfgW(0x04, 2, 0x0002);
        e.Signal();
        t.Dev.PollIrqfds();
        Assert.Equal(0xCAFE_F00Du, BitConverter.ToUInt32(t.F.BarMemory[0], 0x40));
        Assert.Equal(0, Ioeventfd(t, 4, 0x40, 0xCAFE_F00D, -1));
        t.F.BarMemory[0][0x40] = 0;
        e.Signal();
        t.Dev.PollIrqfds();
        Assert.Equal(0, t.F.BarMemory[0][0x40]);
    }
}

public class PciHotResetTests
{
    sealed class ScopedFunction : Doorbell.Host.Vfio.Backends.IVfioPciHotResetScope
    {
        public List<Doorbell.Host.Vfio.Backends.PciResetPeer> Peers { get; } = [];
        public IReadOnlyList<Doorbell.Host.Vfio.Backends.PciResetPeer> HotResetPeers => Peers;
        public int Resets;
        public int HotReset() { Resets++; return 0; }
    }

    [Fact]
    public void Hot_reset_info_without_a_reset_scope_is_ENODEV()
    {
        var t = new PciTestDevice();
        Assert.Equal(-Errno.ENODEV, t.W.Proc.Ioctl(t.Fd, VfioIoctl.DeviceGetPciHotResetInfo, VfioWorld.Bytes(new VfioPciHotResetInfo { Argsz = 12 })));
        Assert.Equal(-Errno.EINVAL, t.W.Proc.Ioctl(t.Fd, VfioIoctl.DeviceGetPciHotResetInfo, VfioWorld.Bytes(new VfioPciHotResetInfo { Argsz = 11 })));
    }

    [Fact]
    public void Hot_reset_reports_peers_and_needs_every_group_fd()
    {
        var scope = new ScopedFunction();
        var w = new VfioWorld();
        var f = new ScopedPci(scope);
        var (_, g1) = w.AddGroup(1);
        w.AddGroup(2);
        Assert.Equal(0, w.Host.BindPci(g1, f, out _));
        scope.Peers.Add(new(0, 0, 0x08, 1));
        scope.Peers.Add(new(0, 0, 0x09, 2));
        var (_, gfd, _) = w.Setup(1);
        var dev = w.GetDeviceFd(gfd, f.Name);
        var small = VfioWorld.Bytes(new VfioPciHotResetInfo { Argsz = 12 });
        Assert.Equal(-Errno.ENOSPC, w.Proc.Ioctl(dev, VfioIoctl.DeviceGetPciHotResetInfo, small));
        Assert.Equal(2u, VfioWorld.Read<VfioPciHotResetInfo>(small).Count);
        var full = VfioWorld.Bytes(new VfioPciHotResetInfo { Argsz = 28 }, 16);
        Assert.Equal(0, w.Proc.Ioctl(dev, VfioIoctl.DeviceGetPciHotResetInfo, full));
        var d1 = VfioWorld.Read<VfioPciDependentDevice>(full, 20);
        Assert.Equal((2u, (byte)0x09), (d1.GroupId, d1.Devfn));

        byte[] Reset(params int[] fds)
        {
            var b = VfioWorld.Bytes(new VfioPciHotResetInfo { Argsz = (uint)(12 + 4 * fds.Length), Count = (uint)fds.Length }, 4 * fds.Length);
            VfioWorld.Fds(fds).CopyTo(b, 12);
            return b;
        }
        Assert.Equal(-Errno.EINVAL, w.Proc.Ioctl(dev, VfioIoctl.DevicePciHotReset, Reset()));
        Assert.Equal(-Errno.EPERM, w.Proc.Ioctl(dev, VfioIoctl.DevicePciHotReset, Reset(gfd)));
        Assert.Equal(-Errno.EBADF, w.Proc.Ioctl(dev, VfioIoctl.DevicePciHotReset, Reset(gfd, 99)));
        Assert.Equal(-Errno.EINVAL, w.Proc.Ioctl(dev, VfioIoctl.DevicePciHotReset, Reset(gfd, dev)));
        var g2 = w.Proc.OpenGroup(2);
        Assert.Equal(0, w.Proc.Ioctl(dev, VfioIoctl.DevicePciHotReset, Reset(gfd, g2)));
        Assert.Equal(1, scope.Resets);
    }

    /// <summary>A fake function that also exposes a reset scope.</summary>
    sealed class ScopedPci(ScopedFunction scope) : Doorbell.Host.Vfio.Backends.IVfioPciFunction, Doorbell.Host.Vfio.Backends.IVfioPciHotResetScope
    {
        readonly FakePciFunction _f = new();
        public string Name => _f.Name;
        public ushort Segment => 0;
        public byte Bus => 0;
        public byte Devfn => 8;
        public int ConfigSize => _f.ConfigSize;
        public uint ReadConfig(int offset, int size) => _f.ReadConfig(offset, size);
        public void WriteConfig(int offset, int size, uint value) => _f.WriteConfig(offset, size, value);
        public Doorbell.Host.Vfio.Backends.PciBarInfo GetBar(int index) => _f.GetBar(index);
        public Doorbell.Memory.BusStatus ReadBar(int index, ulong offset, Span<byte> destination) => _f.ReadBar(index, offset, destination);
        public Doorbell.Memory.BusStatus WriteBar(int index, ulong offset, ReadOnlySpan<byte> source) => _f.WriteBar(index, offset, source);
        public int Reset() => _f.Reset();
        public int EnableVectors(Doorbell.Host.Vfio.Backends.PciIrqKind kind, int nvec) => _f.EnableVectors(kind, nvec);
        public int RequestVector(int vector, string name, Action signal) => _f.RequestVector(vector, name, signal);
        public void FreeVector(int vector) => _f.FreeVector(vector);
        public void DisableVectors() => _f.DisableVectors();
        public int ConnectIntx(Doorbell.Host.Vfio.Backends.IVfioIrqSink? sink) => _f.ConnectIntx(sink);
        public void SetIntxLineMasked(bool masked) => _f.SetIntxLineMasked(masked);
        public void ConnectErrors(Doorbell.Host.Vfio.Backends.IVfioIrqSink? sink) => _f.ConnectErrors(sink);
        public IReadOnlyList<Doorbell.Host.Vfio.Backends.PciResetPeer> HotResetPeers => scope.HotResetPeers;
        public int HotReset() => scope.HotReset();
    }
}
