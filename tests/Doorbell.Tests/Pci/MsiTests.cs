using Doorbell.Devices;
using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Platform;
using static Doorbell.Tests.Pci.PciTestKit;

namespace Doorbell.Tests.Pci;

public class MsiTests
{
    const ulong Doorbell = 0x0900_0000; // a free spot on qemu-virt for a recording doorbell

    static (Machine M, RecordingSink Sink) Board()
    {
        var m = Virt();
        var sink = new RecordingSink();
        m.Bus.MapMmio(new PhysAddr(Doorbell), 0x1000, sink, MmioAccessRules.AnySizeAligned, "doorbell");
        return (m, sink);
    }

    [Fact]
    public void Edu_msi_is_a_4_byte_write_of_the_data_to_the_address_with_the_device_id()
    {
        var (m, sink) = Board();
        var edu = m.AddPci(new EduDevice(m.Clock));
        var b = m.Bus;
        b.W32(Cfg(0, 1, 0, 0x44), (uint)Doorbell + 0x40);
        b.W32(Cfg(0, 1, 0, 0x48), 0);
        b.W16(Cfg(0, 1, 0, 0x4C), 0x2A);
        b.W16(Cfg(0, 1, 0, 0x42), PciCfg.MsiEnable);
        b.W32(Cfg(0, 1, 0, 0x10), 0x1000_0000);
        b.W16(Cfg(0, 1, 0, 4), PciCfg.CmdMemory | PciCfg.CmdBusMaster);
        b.W32(0x1000_0060, 0x4);                                      // raise
        var w = Assert.Single(sink.Writes);
        Assert.Equal((0x40UL, 4, 0x2AUL), (w.Offset, w.Size, w.Value));
        Assert.Equal(BusAttributes.FromDevice(0x0008), w.Attr);
        Assert.Equal(4u, b.R32(0x1000_0024));
        // no bus mastering: the MSI is not sent
        b.W16(Cfg(0, 1, 0, 4), PciCfg.CmdMemory);
        b.W32(0x1000_0060, 0x8);
        Assert.Single(sink.Writes);
        Assert.True(edu.MsiEnabled);
    }

    [Fact]
    public void Multiple_message_msi_with_per_vector_masking_pends_and_delivers_on_unmask()
    {
        var (m, sink) = Board();
        var ep = new TestEndpoint();
        var cap = ep.AddMsi(8, is64Bit: false, perVectorMask: true);
        m.AddPci(ep, 1);
        var b = m.Bus;
        Assert.Equal(0x0106u, (b.R32(Cfg(0, 1, 0, cap)) >> 16) & 0x1FF); // MMC = 3 (8 vectors), PVM, 32-bit
        b.W32(Cfg(0, 1, 0, cap + 4), (uint)Doorbell);
        b.W16(Cfg(0, 1, 0, cap + 8), 0x40);
        b.W16(Cfg(0, 1, 0, cap + 2), 0x0021);                        // enable, MME = 2 (4 vectors)
        b.W16(Cfg(0, 1, 0, 4), PciCfg.CmdBusMaster);
        Assert.Equal(4, ep.MsiAllocatedVectors);
        ep.SignalMsi(3);
        ep.SignalMsi(5);                                             // beyond the allocated vectors: dropped
        Assert.Equal(0x43UL, Assert.Single(sink.Writes).Value);
        b.W32(Cfg(0, 1, 0, cap + 0x0C), 0x2);                        // mask vector 1
        ep.SignalMsi(1);
        Assert.Single(sink.Writes);
        Assert.Equal(0x2u, b.R32(Cfg(0, 1, 0, cap + 0x10)));         // pending bit
        b.W32(Cfg(0, 1, 0, cap + 0x0C), 0x0);                        // unmask → delivered
        Assert.Equal(0x41UL, sink.Writes[^1].Value);
        Assert.Equal(0u, b.R32(Cfg(0, 1, 0, cap + 0x10)));
    }

    [Fact]
    public void Msix_table_in_a_bar_with_function_and_vector_masks_and_pba()
    {
        var (m, sink) = Board();
        var ep = new TestEndpoint();
        ep.DefineBar(0, PciBarKind.Mem32, 0x4000);
        var cap = ep.AddMsix(4, 0, 0x2000, 0, 0x3000);
        m.AddPci(ep, 1);
        var b = m.Bus;
        Assert.Equal(0x0003u, (b.R32(Cfg(0, 1, 0, cap)) >> 16) & 0x7FF);
        Assert.Equal(0x2000u, b.R32(Cfg(0, 1, 0, cap + 4)));
        Assert.Equal(0x3000u, b.R32(Cfg(0, 1, 0, cap + 8)));
        b.W32(Cfg(0, 1, 0, 0x10), 0x1000_0000);
        b.W16(Cfg(0, 1, 0, 4), PciCfg.CmdMemory | PciCfg.CmdBusMaster);
        const ulong table = 0x1000_2000, pba = 0x1000_3000;
        Assert.Equal(1u, b.R32(table + 16 * 2 + 12));                // vectors reset masked
        for (var v = 0u; v < 4; v++)
        {
            b.W64(table + 16 * v, Doorbell + 0x40);
            b.W32(table + 16 * v + 8, 0x100 + v);
        }
        b.W16(Cfg(0, 1, 0, cap + 2), PciCfg.MsixEnable);
        ep.SignalMsix(2);                                            // masked → pending
        Assert.Empty(sink.Writes);
        Assert.Equal(0x4UL, b.R64(pba));
        b.W32(table + 16 * 2 + 12, 0);                               // unmask → delivered, PBA clears
        Assert.Equal(0x102UL, Assert.Single(sink.Writes).Value);
        Assert.Equal(0UL, b.R64(pba));
        b.W16(Cfg(0, 1, 0, cap + 2), PciCfg.MsixEnable | PciCfg.MsixFunctionMask);
        ep.SignalMsix(2);
        Assert.Single(sink.Writes);
        Assert.Equal(0x4u, b.R32(pba));
        b.W16(Cfg(0, 1, 0, cap + 2), PciCfg.MsixEnable);             // function unmask → delivered
        Assert.Equal(2, sink.Writes.Count);
        b.W32(pba, 0xFF);                                            // PBA is read-only
        Assert.Equal(0u, b.R32(pba));
        Assert.Equal(BusAttributes.FromDevice(0x0008), sink.Writes[0].Attr);
        Assert.Equal(0x8u, b.R32(0x1000_0008));                      // non-table offsets go to the device
    }
}
