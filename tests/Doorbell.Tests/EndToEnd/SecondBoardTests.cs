using Doorbell.Devices;
using Doorbell.Host.Os;
using Doorbell.Memory;
using Doorbell.Platform;
using Doorbell.Smmu.V3;

namespace Doorbell.Tests.EndToEnd;

/// <summary>
/// The host kernel layer booted on a board that is not qemu-virt (every block elsewhere, other SPIs, 256 MiB of RAM at
/// 2 GiB, two CPUs) and over a memory view that is not the host bus: the drivers assume nothing about qemu-virt.
/// </summary>
public class SecondBoardTests
{
    /// <summary>A compact Arm board map, nothing where qemu-virt has it.</summary>
    public static readonly PlatformMap Compact = new()
    {
        Name = "compact",
        Ram = 0x8000_0000,
        GicDistributor = 0x2F00_0000, GicRedistributor = 0x2F10_0000, GicIts = 0x2F02_0000,
        GicCpuInterface = 0x2C00_0000, GicV2m = 0x2C01_0000,
        Smmu = 0x2B40_0000,
        PcieEcam = 0x6000_0000, PcieEcamSize = 0x1000_0000,
        PcieMmio = 0x5000_0000, PcieMmioSize = 0x0800_0000,
        PciePio = 0x5FF0_0000, PciePioSize = 0x1_0000,
        PcieMmioHigh = 0, PcieMmioHighSize = 0,
        PlatformBus = 0x1C00_0000, PlatformFirstSpi = 60,
        PcieIntxFirstSpi = 100, SmmuFirstSpi = 130, V2mFirstSpi = 160, V2mSpiCount = 32,
        SpiCount = 256,
    };

    /// <summary>A memory view that is not the bus: it forwards to it and counts what the kernel does through it.</summary>
    sealed class ObservedView(IMemoryView inner) : IMemoryView
    {
        public long Accesses;
        public readonly HashSet<ulong> Pages = [];
        void Note(ulong a) { Accesses++; Pages.Add(a >> 16); }
        public BusStatus Read(PhysAddr address, int size, out ulong value, in BusAttributes attributes) { Note(address.Value); return inner.Read(address, size, out value, attributes); }
        public BusStatus Write(PhysAddr address, int size, ulong value, in BusAttributes attributes) { Note(address.Value); return inner.Write(address, size, value, attributes); }
        public BusStatus ReadU64(ulong address, out ulong value) { Note(address); return inner.ReadU64(address, out value); }
        public BusStatus WriteU64(ulong address, ulong value) { Note(address); return inner.WriteU64(address, value); }
        public BusStatus ReadU32(ulong address, out uint value) { Note(address); return inner.ReadU32(address, out value); }
        public BusStatus WriteU32(ulong address, uint value) { Note(address); return inner.WriteU32(address, value); }
        public BusStatus ReadBestEffort(ulong address, Span<byte> destination, in BusAttributes attributes) { Note(address); return inner.ReadBestEffort(address, destination, attributes); }
        public BusStatus WriteBestEffort(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes) { Note(address); return inner.WriteBestEffort(address, source, attributes); }
        public bool IsRam(ulong address, ulong length) => inner.IsRam(address, length);
        public BusStatus Fill(ulong address, ulong length, byte value) { Note(address); return inner.Fill(address, length, value); }
        public BusStatus Read(ulong address, Span<byte> destination, in BusAttributes attributes) { Note(address); return inner.Read(address, destination, attributes); }
        public BusStatus Write(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes) { Note(address); return inner.Write(address, source, attributes); }
    }

    static ObservedView? _lastView;
    static IMemoryView Observe(Machine m) => _lastView = new ObservedView(m.Bus);

    [Fact]
    public void Boots_on_the_compact_board_over_another_view_and_an_msix_reaches_its_eventfd()
    {
        using var rig = new E2ERig(map: Compact, ramSize: 256UL << 20, cpus: 2, memory: Observe);
        var view = _lastView!;
        Assert.Same(view, rig.Kernel.Bus);
        Assert.Equal("compact", rig.Machine.Name);
        // the drivers found every block at the compact map's addresses, through the view
        foreach (var block in new[] { Compact.GicDistributor, Compact.GicRedistributor, Compact.GicIts, Compact.Smmu, Compact.PcieEcam })
            Assert.Contains(block >> 16, view.Pages);
        Assert.Equal(2, rig.Kernel.Cpus.Count);
        Assert.Equal(0x8000_0000UL, rig.Kernel.Layout.GicTables);
        var bar = rig.Fn(0).GetBar(0);
        Assert.InRange(bar.HostAddress, Compact.PcieMmio, Compact.PcieMmio + Compact.PcieMmioSize - 1);

        var efd = rig.CopyOnceWithMsix().EventFds;
        Assert.True(efd[0].TryRead(out var n) && n == 1, "MSI-X through the ITS at the compact address must signal the eventfd");
        Assert.Equal(rig.Machine.Map.GitsTranslater, rig.Kernel.MsiDomain is Doorbell.Host.Irq.ItsDriver its ? its.TranslaterAddress : 0);
    }

    [Fact]
    public void Smmu_event_interrupt_on_the_compact_board_drains_the_fault_without_polling()
    {
        using var rig = new E2ERig(devices: 0, platform: true, allowUnsafe: true, map: Compact, ramSize: 256UL << 20, memory: Observe);
        var pd = rig.Kernel.PlatformDevices[0];
        Assert.Equal(0x1C00_0000UL, rig.Machine.Devices.OfType<PlatformDmaDevice>().Count() == 1 ? Compact.PlatformBus : 0);
        var (c, g, r) = rig.OpenGroup(rig.Kernel.Groups.Single(x => x.DeviceNames.Contains(pd.Name)).Id);
        Assert.Equal(0, r);
        var dev = rig.Device(g, pd.Name);
        var va = rig.Proc.Memory.MapAnonymous(0x2000);
        Assert.Equal(0, rig.Map(c, va, 0x30_0000, 0x2000));
        using var efd = EventFd.Create();
        rig.TriggerOnEventFd(dev, 0, efd.Fd);
        void W(ulong reg, uint v) => rig.RegionWrite(dev, 0, reg, v);
        W(PlatformDmaRegs.Src, 0x30_0000); W(PlatformDmaRegs.Src + 4, 0);
        W(PlatformDmaRegs.Dst, 0x50_0000); W(PlatformDmaRegs.Dst + 4, 0); // outside the mapping
        W(PlatformDmaRegs.Len, 8);
        W(PlatformDmaRegs.Ctrl, PlatformDmaRegs.CtrlIrqEnable);
        Assert.Empty(rig.Kernel.SmmuEvents);
        W(PlatformDmaRegs.Cmd, PlatformDmaRegs.CmdStart);
        // nobody polled: the SMMU's event-queue SPI (130 here) reached the host CPU, whose handler drained the queue
        Assert.Equal(1, rig.Kernel.SmmuEventInterrupts);
        var ev = Assert.Single(rig.Kernel.SmmuEvents);
        Assert.Equal(Evt.F_TRANSLATION, ev.Id);
        Assert.Equal(0xFF00u, ev.StreamId);
        Assert.Contains(32 + Compact.SmmuFirstSpi, rig.Kernel.Cpus[0].History);
    }

    [Fact]
    public void Gicv2m_variant_of_the_compact_board_delivers_msix()
    {
        using var rig = new E2ERig(gicVersion: 2, allowUnsafe: true, map: Compact, ramSize: 256UL << 20, memory: Observe);
        Assert.Contains(Compact.GicCpuInterface >> 16, _lastView!.Pages);
        var efd = rig.CopyOnceWithMsix().EventFds;
        Assert.True(efd[0].TryRead(out var n) && n == 1, "MSI-X through the GICv2m frame at the compact address must signal the eventfd");
        Assert.InRange(rig.Fn(0).Vectors!.Vectors[0].Intid, 32 + Compact.V2mFirstSpi, 32 + Compact.V2mFirstSpi + Compact.V2mSpiCount - 1);
    }
}
