using Doorbell.Devices;
using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Platform;
using static Doorbell.Tests.Pci.PciTestKit;

namespace Doorbell.Tests.Pci;

public class DeviceTests
{
    const ulong Doorbell = 0x0900_0000;
    const ulong Bar = 0x80_0000_0000;
    const ulong Ram = QemuVirtMap.Ram;

    [Fact]
    public void Multi_queue_device_copies_writes_completions_and_raises_each_queues_msix_vector()
    {
        var m = Virt();
        var sink = new RecordingSink();
        m.Bus.MapMmio(new PhysAddr(Doorbell), 0x1000, sink, MmioAccessRules.AnySizeAligned, "doorbell");
        var dev = m.AddPci(new MultiQueueDmaDevice(4), 2);
        var b = m.Bus;
        b.W32(Cfg(0, 2, 0, 0x10), 0); b.W32(Cfg(0, 2, 0, 0x14), 0x80);
        b.W16(Cfg(0, 2, 0, 4), PciCfg.CmdMemory | PciCfg.CmdBusMaster);
        Assert.Equal(MqRegs.IdValue, b.R32(Bar));
        Assert.Equal(4u, b.R32(Bar + 4));
        for (var v = 0u; v < 4; v++)
        {
            b.W64(Bar + MqRegs.MsixTableOffset + 16 * v, Doorbell);
            b.W32(Bar + MqRegs.MsixTableOffset + 16 * v + 8, 0x20 + v);
            b.W32(Bar + MqRegs.MsixTableOffset + 16 * v + 12, 0);
        }
        b.W16(Cfg(0, 2, 0, dev.MsixCapOffset + 2), PciCfg.MsixEnable);
        b.W32(Bar + MqRegs.Ctrl, MqRegs.CtrlEnable);
        // queue 2: 8-entry rings
        var q = Bar + MqRegs.QueueBase + 2 * MqRegs.QueueStride;
        const ulong sq = Ram + 0x10000, cq = Ram + 0x11000, src = Ram + 0x20000, dst = Ram + 0x30000;
        b.W64(q + MqRegs.SqBase, sq);
        b.W64(q + MqRegs.CqBase, cq);
        b.W32(q + MqRegs.Size, 8);
        b.W32(q + MqRegs.QCtrl, MqRegs.QCtrlEnable | MqRegs.QCtrlIrq);
        for (var i = 0u; i < 256; i += 4) b.W32(src + i, 0xFEED_0000 + i);
        // two descriptors: 128 bytes, then 64 bytes from an unmapped address (fault)
        b.W64(sq, src); b.W64(sq + 8, dst); b.W32(sq + 16, 128); b.W64(sq + 24, 0xC001);
        b.W64(sq + 32, 0x7_0000_0000); b.W64(sq + 40, dst); b.W32(sq + 48, 64); b.W64(sq + 56, 0xC002);
        b.W32(q + MqRegs.SqTail, 2);
        Assert.Equal(2u, b.R32(q + MqRegs.SqHead));
        Assert.Equal(2u, b.R32(q + MqRegs.CqTail));
        Assert.Equal(0xFEED_007Cu, b.R32(dst + 0x7C));
        Assert.Equal(0xC001UL, b.R64(cq)); Assert.Equal(0u, b.R32(cq + 8)); Assert.Equal(128u, b.R32(cq + 12));
        Assert.Equal(0xC002UL, b.R64(cq + 16)); Assert.Equal(MqRegs.StatusReadFault, b.R32(cq + 24));
        Assert.Equal(1u, b.R32(q + MqRegs.Error));
        var w = Assert.Single(sink.Writes);                           // one vector per batch: queue 2 → data 0x22
        Assert.Equal(0x22UL, w.Value);
        Assert.Equal(BusAttributes.FromDevice(0x0010), w.Attr);
        // masked vector → PBA; FLR clears everything
        b.W32(Bar + MqRegs.MsixTableOffset + 16 * 2 + 12, 1);
        b.W64(sq + 64, src); b.W64(sq + 72, dst); b.W32(sq + 80, 4); b.W64(sq + 88, 0xC003);
        b.W32(q + MqRegs.SqTail, 3);
        Assert.Single(sink.Writes);
        Assert.Equal(0x4UL, b.R64(Bar + MqRegs.MsixPbaOffset));
        Assert.Equal(3L, dev.DescriptorsProcessed);
        b.W16(Cfg(0, 2, 0, dev.PcieCapOffset + PciCfg.PcieDevCtl), PciCfg.DevCtlInitiateFlr);
        Assert.Equal(0u, b.R32(Cfg(0, 2, 0, 4)) & 0xFFFF);
        Assert.Equal(0UL, dev.BarAddress(0));
    }

    [Fact]
    public void Multi_queue_device_bounds_a_tail_that_runs_around_the_ring()
    {
        var m = Virt();
        var dev = m.AddPci(new MultiQueueDmaDevice(1), 2);
        var b = m.Bus;
        b.W32(Cfg(0, 2, 0, 0x10), 0); b.W32(Cfg(0, 2, 0, 0x14), 0x80);
        b.W16(Cfg(0, 2, 0, 4), PciCfg.CmdMemory | PciCfg.CmdBusMaster);
        b.W32(Bar + MqRegs.Ctrl, MqRegs.CtrlEnable);
        var q = Bar + MqRegs.QueueBase;
        b.W64(q + MqRegs.SqBase, Ram); b.W64(q + MqRegs.CqBase, Ram + 0x1000);
        b.W32(q + MqRegs.Size, 3);                                   // not a power of two: rejected
        Assert.Equal(0u, b.R32(q + MqRegs.Size));
        b.W32(q + MqRegs.Size, 4);
        b.W32(q + MqRegs.QCtrl, MqRegs.QCtrlEnable);
        b.W32(q + MqRegs.SqTail, 0xFFFF_FFFF);                       // wraps to 3: three zero-length copies from 0
        Assert.Equal(3u, b.R32(q + MqRegs.SqHead));
        Assert.Equal(3L, dev.DescriptorsProcessed);
    }

    [Fact]
    public void Platform_dma_engine_copies_through_its_iommu_port_and_drives_a_level_spi()
    {
        var m = Virt();
        var iommu = new PassThroughIommu(m.Bus);
        m.Iommu = iommu;
        var d = m.AddPlatformDma(0x0A00_0000, 40, 0x77);
        var b = m.Bus;
        Assert.Equal(PlatformDmaRegs.IdValue, b.R32(0x0A00_0000));
        b.W64(Ram, 0x0123_4567_89AB_CDEF);
        b.W32(0x0A00_0004, PlatformDmaRegs.CtrlIrqEnable);
        b.W64(0x0A00_0010, Ram);
        b.W64(0x0A00_0018, Ram + 0x100);
        b.W32(0x0A00_0020, 8);
        b.W32(0x0A00_0024, 1);
        Assert.Equal(0x0123_4567_89AB_CDEFUL, b.R64(Ram + 0x100));
        Assert.Equal(PlatformDmaRegs.StatusDone, b.R32(0x0A00_0008));
        Assert.True(m.RecordedSpi(40)!.Level);
        Assert.Equal([0x77u], iommu.StreamIds);
        Assert.All(iommu.Log, e => Assert.Equal(0x77u, e.Sid));
        b.W32(0x0A00_0008, PlatformDmaRegs.StatusDone);              // W1C → line drops
        Assert.False(m.RecordedSpi(40)!.Level);
        b.W64(0x0A00_0010, 0x7_0000_0000);                           // nothing there → ERROR
        b.W32(0x0A00_0024, 1);
        Assert.Equal(PlatformDmaRegs.StatusError, b.R32(0x0A00_0008));
        Assert.Equal(2, d.Transfers);
    }
}
