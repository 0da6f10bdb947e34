using Doorbell.Devices;
using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Platform;
using static Doorbell.Tests.Pci.PciTestKit;

namespace Doorbell.Tests.Pci;

public class PciConfigTests
{
    [Fact]
    public void Ecam_enumerates_the_gpex_host_bridge_and_edu_and_empty_slots_read_all_ones()
    {
        var m = Virt();
        m.AddPci(new EduDevice(m.Clock));
        var b = m.Bus;
        Assert.Equal(0x0008_1b36u, b.R32(Cfg(0, 0, 0, 0)));
        Assert.Equal(0x0600_0000u, b.R32(Cfg(0, 0, 0, 8)));
        Assert.Equal(0x11e8_1234u, b.R32(Cfg(0, 1, 0, 0)));
        Assert.Equal(0x00FF_0010u, b.R32(Cfg(0, 1, 0, 8)));   // class 0x00ff00 (PCI_CLASS_OTHERS), revision 0x10
        Assert.Equal(0x1100_1af4u, b.R32(Cfg(0, 1, 0, 0x2C)));
        Assert.Equal(0xFFFF_FFFFu, b.R32(Cfg(0, 2, 0, 0)));
        Assert.Equal(0xFFFF_FFFFu, b.R32(Cfg(0, 1, 1, 0)));          // function 1 absent
        Assert.Equal(0xFFFF_FFFFu, b.R32(Cfg(5, 0, 0, 0)));          // no bus 5
        // edu: capability list → MSI at 0x40, 64-bit, 1 vector; pin INTA; config space 256 bytes
        Assert.Equal(PciCfg.StsCapList, (ushort)(b.R32(Cfg(0, 1, 0, 4)) >> 16));
        Assert.Equal(0x40u, b.R32(Cfg(0, 1, 0, 0x34)) & 0xFF);
        Assert.Equal(0x0080_0005u, b.R32(Cfg(0, 1, 0, 0x40)));
        Assert.Equal(1u, (b.R32(Cfg(0, 1, 0, 0x3C)) >> 8) & 0xFF);
        Assert.Equal(0xFFFF_FFFFu, b.R32(Cfg(0, 1, 0, 0x100)));
        // byte and halfword config reads
        Assert.Equal(BusStatus.Ok, b.Read(new PhysAddr(Cfg(0, 1, 0, 2)), 2, out var did, BusAttributes.Cpu));
        Assert.Equal(0x11e8UL, did);
    }

    [Fact]
    public void Bar_sizing_reports_size_and_type_for_each_bar_kind()
    {
        var m = Virt();
        var ep = new TestEndpoint();
        ep.DefineBar(0, PciBarKind.Mem32, 1 << 20);
        ep.DefineBar(1, PciBarKind.Io, 0x100);
        ep.DefineBar(2, PciBarKind.Mem64, 8UL << 30, prefetchable: true);
        ep.DefineBar(4, PciBarKind.Mem32, 0x1_0000, prefetchable: true);
        m.AddPci(ep, 3);
        var b = m.Bus;
        uint Size(int bar) { b.W32(Cfg(0, 3, 0, 0x10 + 4 * bar), 0xFFFF_FFFF); return b.R32(Cfg(0, 3, 0, 0x10 + 4 * bar)); }
        Assert.Equal(0u, b.R32(Cfg(0, 3, 0, 0x10)));
        Assert.Equal(0xFFF0_0000u, Size(0));
        Assert.Equal(0xFFFF_FF01u, Size(1));                          // I/O, 256 bytes
        Assert.Equal(0x0000_000Cu, Size(2));                          // 64-bit prefetchable, 8 GiB: low dword all address bits zero
        Assert.Equal(0xFFFF_FFFEu, Size(3));                          // upper dword: size 2^33
        Assert.Equal(0xFFFF_0008u, Size(4));                          // 32-bit prefetchable 64 KiB
        Assert.Equal(0u, Size(5));                                    // unimplemented
        b.W32(Cfg(0, 3, 0, 0x18), 0); b.W32(Cfg(0, 3, 0, 0x1C), 0x80);
        Assert.Equal(0x80_0000_0000UL, ep.BarAddress(2));
    }

    [Fact]
    public void Bar_decode_follows_command_memory_and_moves_with_the_bar()
    {
        var m = Virt();
        var ep = new TestEndpoint();
        ep.DefineBar(0, PciBarKind.Mem32, 0x1000);
        ep.DefineBar(2, PciBarKind.Mem64, 0x4000);
        m.AddPci(ep, 1);
        var b = m.Bus;
        b.W32(Cfg(0, 1, 0, 0x10), 0x1000_0000);
        b.W32(Cfg(0, 1, 0, 0x18), 0x0000_0000); b.W32(Cfg(0, 1, 0, 0x1C), 0x80);
        Assert.Equal(0xFFFF_FFFFu, b.R32(0x1000_0010));               // memory decode off: unclaimed, all ones
        b.W16(Cfg(0, 1, 0, 4), PciCfg.CmdMemory);
        Assert.Equal(0x10u, b.R32(0x1000_0010));
        Assert.Equal(0x0200_0020UL, b.R64(0x80_0000_0020));           // 64-bit BAR in the high window
        b.W32(Cfg(0, 1, 0, 0x10), 0x1010_0000);                       // move BAR0
        Assert.Equal(0xFFFF_FFFFu, b.R32(0x1000_0010));
        Assert.Equal(0x14u, b.R32(0x1010_0014));
        b.W32(0x1010_0008, 7);
        Assert.Equal((0, 8UL, 4, 7UL), ep.BarWrites[^1]);
    }

    [Fact]
    public void Io_bars_decode_through_the_pio_window_when_command_io_is_set()
    {
        var m = Virt();
        var ep = new TestEndpoint();
        ep.DefineBar(0, PciBarKind.Io, 0x20);
        m.AddPci(ep, 1);
        m.Bus.W32(Cfg(0, 1, 0, 0x10), 0x1000);
        Assert.Equal(0xFFFF_FFFFu, m.Bus.R32(QemuVirtMap.PciePio + 0x1004));
        m.Bus.W16(Cfg(0, 1, 0, 4), PciCfg.CmdIo);
        Assert.Equal(4u, m.Bus.R32(QemuVirtMap.PciePio + 0x1004));
    }

    [Fact]
    public void Read_only_and_w1c_bits_behave_as_the_spec_says()
    {
        var m = Virt();
        var edu = m.AddPci(new EduDevice(m.Clock));
        var b = m.Bus;
        b.W32(Cfg(0, 1, 0, 0), 0xDEAD_BEEF);                          // vendor/device RO
        Assert.Equal(0x11e8_1234u, b.R32(Cfg(0, 1, 0, 0)));
        b.W32(Cfg(0, 1, 0, 4), 0xFFFF_FFFF);                          // command RW bits; status W1C (nothing set)
        Assert.Equal(0x0010_0507u, b.R32(Cfg(0, 1, 0, 4)));
        b.W8(Cfg(0, 1, 0, 0x3C), 0x2A);
        Assert.Equal(0x012Au, b.R32(Cfg(0, 1, 0, 0x3C)) & 0xFFFF);    // line RW, pin RO
        Assert.False(edu.IsMultiFunction);
    }

    [Fact]
    public void Pcie_pm_aer_and_acs_capabilities_chain_and_flr_resets_the_function()
    {
        var m = Virt();
        var ep = new TestEndpoint();
        ep.DefineBar(0, PciBarKind.Mem32, 0x1000);
        ep.AddPowerManagement();
        ep.AddPcie(PciePortType.Endpoint, flr: true);
        ep.AddAer();
        ep.AddAcs(PciCfg.AcsSourceValidation | PciCfg.AcsRequestRedirect);
        m.AddPci(ep, 1);
        var b = m.Bus;
        // walk the standard list
        var caps = new List<byte>();
        for (var p = b.R32(Cfg(0, 1, 0, 0x34)) & 0xFF; p != 0 && caps.Count < 48; p = (b.R32(Cfg(0, 1, 0, (int)p)) >> 8) & 0xFF)
            caps.Add((byte)(b.R32(Cfg(0, 1, 0, (int)p)) & 0xFF));
        Assert.Equal([PciCfg.CapPm, PciCfg.CapPcie], caps);
        // extended list: AER v2 at 0x100 → ACS
        var aer = b.R32(Cfg(0, 1, 0, 0x100));
        Assert.Equal(0x0002_0001u, aer & 0xFFFFF);
        var acsOff = (int)(aer >> 20);
        Assert.Equal(0x0001_000Du, b.R32(Cfg(0, 1, 0, acsOff)) & 0xFFFFF);
        Assert.Equal(0u, b.R32(Cfg(0, 1, 0, acsOff)) >> 20);
        // ACS control: only implemented bits are writable
        b.W16(Cfg(0, 1, 0, acsOff + 6), 0xFFFF);
        Assert.Equal(PciCfg.AcsSourceValidation | PciCfg.AcsRequestRedirect, ep.AcsControl);
        // AER uncorrectable status is W1C
        // PM: power state writable
        b.W16(Cfg(0, 1, 0, ep.PmCapOffset + 4), 3);
        Assert.Equal(3u, b.R32(Cfg(0, 1, 0, ep.PmCapOffset + 4)) & 3);
        // FLR: program BAR + COMMAND, then initiate FLR
        b.W32(Cfg(0, 1, 0, 0x10), 0x1000_0000);
        b.W16(Cfg(0, 1, 0, 4), PciCfg.CmdMemory | PciCfg.CmdBusMaster);
        Assert.True(ep.FlrCapable);
        b.W16(Cfg(0, 1, 0, ep.PcieCapOffset + PciCfg.PcieDevCtl), PciCfg.DevCtlInitiateFlr);
        Assert.Equal(0u, b.R32(Cfg(0, 1, 0, 0x10)));
        Assert.Equal(0u, b.R32(Cfg(0, 1, 0, 4)) & 0xFFFF);
        Assert.Equal(0u, b.R32(Cfg(0, 1, 0, ep.PcieCapOffset + PciCfg.PcieDevCtl)) & PciCfg.DevCtlInitiateFlr);
        Assert.Equal(0xFFFF_FFFFu, b.R32(0x1000_0000));
        Assert.Equal(0x0000u, b.R32(Cfg(0, 1, 0, ep.PmCapOffset + 4)) & 3);
    }
}

public class PciRobustnessTests
{
    [Fact]
    public void Random_config_and_bar_traffic_never_throws_and_keeps_ids_read_only()
    {
        var rng = new Random(20261124); // fixed seed: deterministic
        for (var iter = 0; iter < 150; iter++)
        {
            var m = PciTestKit.Virt(IommuKind.SmmuV3);
            m.AddPci(new Doorbell.Devices.EduDevice(m.Clock), 1);
            var rp = m.AddPci(new PciBridge(0x1b36, 0x000c, PciePortType.RootPort, "rp"), 2);
            rp.Secondary.Attach(new Doorbell.Devices.MultiQueueDmaDevice(2), 0);
            m.AddPci(new Doorbell.Devices.MultiQueueDmaDevice(1), 3);
            for (var op = 0; op < 200; op++)
            {
                var size = 1 << rng.Next(3);
                var reg = rng.Next(0x1000) & ~(size - 1);
                var value = (uint)rng.NextInt64(0, 1L << 32);
                m.Bus.Write(new PhysAddr(PciTestKit.Cfg(rng.Next(4), rng.Next(8), rng.Next(2), reg)), size, value, BusAttributes.Cpu);
                m.Bus.Read(new PhysAddr(0x1000_0000 + ((ulong)value % 0x40_0000 & ~3UL)), 4, out _, BusAttributes.Cpu);
                m.Bus.Write(new PhysAddr(0x80_0000_0000 + (((ulong)value << 4) % 0x10_0000 & ~3UL)), 4, value, BusAttributes.Cpu);
            }
            Assert.Equal(0x11e8_1234u, m.Bus.R32(PciTestKit.Cfg(0, 1, 0, 0)));
            Assert.Equal(0x0008_1b36u, m.Bus.R32(PciTestKit.Cfg(0, 0, 0, 0)));
        }
    }
}
