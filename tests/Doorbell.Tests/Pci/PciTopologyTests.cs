using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Platform;
using static Doorbell.Tests.Pci.PciTestKit;

namespace Doorbell.Tests.Pci;

public class PciTopologyTests
{
    static PciBridge RootPort(string name = "rp") => new(0x1b36, 0x000c, PciePortType.RootPort, name);

    [Fact]
    public void Device_behind_a_root_port_appears_after_bus_numbering_and_takes_its_requester_id()
    {
        var m = Virt();
        var rp = m.AddPci(RootPort(), 2);
        var ep = new TestEndpoint();
        ep.DefineBar(0, PciBarKind.Mem32, 0x1000);
        ep.SetInterruptPin(1);
        rp.Secondary.Attach(ep, 0);
        var b = m.Bus;
        Assert.Equal(1u, (b.R32(Cfg(0, 2, 0, 0x0C)) >> 16) & 0x7F); // header type 1
        Assert.Equal(0x0604_0000u, b.R32(Cfg(0, 2, 0, 0x08)) & 0xFFFF_FF00);
        Assert.Equal(0xFFFF_FFFFu, b.R32(Cfg(1, 0, 0, 0)));          // not routed yet
        b.W32(Cfg(0, 2, 0, 0x18), 0x0001_0100);                       // primary 0, secondary 1, subordinate 1
        Assert.Equal(0x0001_1de5u, b.R32(Cfg(1, 0, 0, 0)));
        Assert.Equal((ushort)0x0100, ep.RequesterId);
        Assert.Equal(0xFFFF_FFFFu, b.R32(Cfg(1, 1, 0, 0)));          // nothing at 01:01.0
        // renumber: the device follows
        b.W32(Cfg(0, 2, 0, 0x18), 0x0007_0700);
        Assert.Equal((ushort)0x0700, ep.RequesterId);
        Assert.Equal(0x0001_1de5u, b.R32(Cfg(7, 0, 0, 0)));

        // MMIO reaches it only inside the bridge's memory window with the bridge's MEM bit set
        b.W32(Cfg(7, 0, 0, 0x10), 0x1020_0000);
        b.W16(Cfg(7, 0, 0, 4), PciCfg.CmdMemory);
        Assert.Equal(0xFFFF_FFFFu, b.R32(0x1020_0004));
        b.W32(Cfg(0, 2, 0, 0x20), 0x1020_1020);                       // memory base = limit = 0x102 (1 MiB units)
        Assert.Equal(0xFFFF_FFFFu, b.R32(0x1020_0004));
        b.W16(Cfg(0, 2, 0, 4), PciCfg.CmdMemory);
        Assert.Equal(4u, b.R32(0x1020_0004));
        b.W32(Cfg(0, 2, 0, 0x20), 0x1030_1030);                       // window moved away
        Assert.Equal(0xFFFF_FFFFu, b.R32(0x1020_0004));

        // INTx: device 0 pin A on the port's secondary bus → (0+0)%4 = A at the port; slot 2 pin A → SPI 3 + 2
        ep.SetIntx(true);
        Assert.True(m.RecordedSpi(5)!.Level);
        ep.SetIntx(false);
        Assert.False(m.RecordedSpi(5)!.Level);
    }

    [Fact]
    public void Switch_with_two_downstream_ports_routes_config_and_dma_needs_bme_on_every_bridge()
    {
        var m = Virt();
        var rp = m.AddPci(RootPort(), 1);
        var up = rp.Secondary.Attach(new PciBridge(0x10b5, 0x8605, PciePortType.SwitchUpstream, "usp"), 0);
        var d0 = up.Secondary.Attach(new PciBridge(0x10b5, 0x8605, PciePortType.SwitchDownstream, "dsp0"), 0);
        var d1 = up.Secondary.Attach(new PciBridge(0x10b5, 0x8605, PciePortType.SwitchDownstream, "dsp1"), 1);
        var e0 = d0.Secondary.Attach(new TestEndpoint(0xA), 0);
        var e1 = d1.Secondary.Attach(new TestEndpoint(0xB), 0);
        var b = m.Bus;
        // firmware-style numbering: rp 1..4, usp 2..4, dsp0 3, dsp1 4
        b.W32(Cfg(0, 1, 0, 0x18), 0x0004_0100);
        b.W32(Cfg(1, 0, 0, 0x18), 0x0004_0201);
        b.W32(Cfg(2, 0, 0, 0x18), 0x0003_0302);
        b.W32(Cfg(2, 1, 0, 0x18), 0x0004_0402);
        Assert.Equal(0x000A_1de5u, b.R32(Cfg(3, 0, 0, 0)));
        Assert.Equal(0x000B_1de5u, b.R32(Cfg(4, 0, 0, 0)));
        Assert.Equal((ushort)0x0300, e0.RequesterId);
        Assert.Equal((ushort)0x0400, e1.RequesterId);
        Assert.Equal(PciePortType.SwitchDownstream, d1.PortType);
        // DMA needs BME on the endpoint and every bridge above it
        b.W16(Cfg(4, 0, 0, 4), PciCfg.CmdBusMaster);
        Span<byte> buf = stackalloc byte[4];
        Assert.Equal(BusStatus.DecodeError, e1.Dma.Write(QemuVirtMap.Ram, buf, BusAttributes.Cpu));
        b.W16(Cfg(0, 1, 0, 4), PciCfg.CmdBusMaster);
        b.W16(Cfg(1, 0, 0, 4), PciCfg.CmdBusMaster);
        b.W16(Cfg(2, 1, 0, 4), PciCfg.CmdBusMaster);
        Assert.Equal(BusStatus.Ok, e1.Dma.Write(QemuVirtMap.Ram, [1, 2, 3, 4], BusAttributes.Cpu));
        Assert.Equal(0x0403_0201u, b.R32(QemuVirtMap.Ram));
        Assert.Equal(BusStatus.DecodeError, e0.Dma.Write(QemuVirtMap.Ram, buf, BusAttributes.Cpu)); // dsp0 and e0 have no BME
        // a route resolved once is re-resolved after any bridge's config changes: BME cleared above, then renumbering
        b.W16(Cfg(1, 0, 0, 4), 0);
        Assert.Equal(BusStatus.DecodeError, e1.Dma.Write(QemuVirtMap.Ram, buf, BusAttributes.Cpu));
        b.W16(Cfg(1, 0, 0, 4), PciCfg.CmdBusMaster);
        Assert.Equal(BusStatus.Ok, e1.Dma.Write(QemuVirtMap.Ram, buf, BusAttributes.Cpu));
        b.W32(Cfg(2, 1, 0, 0x18), 0x0005_0502);                 // dsp1's secondary bus becomes 5
        Assert.Equal((ushort)0x0500, e1.RequesterId);
        var trace = new Doorbell.Tracing.Trace("t") { Mask = ulong.MaxValue };
        m.Pci!.Trace = trace;                                       // given after the functions were attached
        Assert.Equal(BusStatus.Ok, e1.Dma.Write(QemuVirtMap.Ram, buf, BusAttributes.Cpu));
        Assert.Contains(trace.Events, e => e.Message.Contains("RID 0x0500 DMA write", StringComparison.Ordinal));
    }

    [Fact]
    public void Multi_function_and_acs_inputs_are_visible_for_grouping()
    {
        var m = Virt();
        var f0 = m.AddPci(new TestEndpoint(0x10), 4, 0);
        var f1 = m.AddPci(new TestEndpoint(0x11), 4, 1);
        var rp = m.AddPci(RootPort(), 5);
        var noAcsPort = m.AddPci(new PciBridge(0x1b36, 0x000c, PciePortType.RootPort, "rp-noacs", acs: false), 6);
        Assert.True(f0.IsMultiFunction);
        Assert.True(f1.IsMultiFunction);
        Assert.Equal(0x80u, (m.Bus.R32(Cfg(0, 4, 0, 0x0C)) >> 16) & 0x80);
        Assert.Equal(0u, f0.AcsCapabilities);
        Assert.NotEqual(0, rp.AcsCapOffset);
        Assert.Equal(0, noAcsPort.AcsCapOffset);
        var want = (ushort)(PciCfg.AcsSourceValidation | PciCfg.AcsRequestRedirect | PciCfg.AcsCompletionRedirect | PciCfg.AcsUpstreamForwarding);
        Assert.Equal(want, (ushort)(rp.AcsCapabilities & want));
        Assert.Equal(0, rp.AcsControl);                              // firmware/OS enables ACS, not reset
        m.Bus.W16(Cfg(0, 5, 0, rp.AcsCapOffset + 6), want);
        Assert.Equal(want, rp.AcsControl);
        Assert.Equal(PciePortType.RootPort, rp.PortType);
        Assert.Equal(new[] { (ushort)0x0000, (ushort)0x0020, (ushort)0x0021, (ushort)0x0028, (ushort)0x0030 },
            m.Pci!.AllFunctions().Select(f => f.RequesterId).Order().ToArray());
    }

    [Fact]
    public void Id_maps_apply_mask_base_and_length_like_device_tree()
    {
        var map = new IdMap([new IdMapEntry(0x0000, 0x1_0000, 0x100), new IdMapEntry(0x0100, 0x20, 0x10)], mask: 0xFFF8);
        Assert.True(map.TryMap(0x0008, out var a)); Assert.Equal(0x1_0008u, a);
        Assert.True(map.TryMap(0x000F, out var b)); Assert.Equal(0x1_0008u, b); // masked to function 0
        Assert.True(map.TryMap(0x0108, out var c)); Assert.Equal(0x28u, c);
        Assert.False(map.TryMap(0x0200, out _));
        Assert.True(IdMap.Identity.TryMap(0x1234, out var d)); Assert.Equal(0x1234u, d);
        Assert.Throws<ArgumentException>(() => new IdMap([new IdMapEntry(0xFFFF_FFFF, 0, 2)]));
    }

    [Fact]
    public void Dma_carries_the_msi_map_device_id_and_enters_the_iommu_at_the_iommu_map_stream_id()
    {
        var m = Virt();
        var iommu = new PassThroughIommu(m.Bus);
        m.Pci!.ConnectIommu(iommu, new IdMap([new IdMapEntry(0, 0x400, 0x10000)]));
        m.Pci.SetMsiMap(new IdMap([new IdMapEntry(0, 0x1_0000, 0x10000)]));
        var ep = m.AddPci(new TestEndpoint(), 1);
        m.Bus.W16(Cfg(0, 1, 0, 4), PciCfg.CmdBusMaster);
        Assert.Equal(BusStatus.Ok, ep.Dma.Write(QemuVirtMap.Ram + 0x100, [9, 9], BusAttributes.Cpu));
        Assert.Equal([0x408u], iommu.StreamIds);
        var (sid, addr, len, attr) = Assert.Single(iommu.Log);
        Assert.Equal((0x408u, QemuVirtMap.Ram + 0x100, 2), (sid, addr, len));
        Assert.True(attr.HasDeviceId);
        Assert.Equal(0x1_0008u, attr.DeviceId);
        // an unmapped requester ID is aborted (also for a port that already routed: maps changed)
        m.Pci.SetMsiMap(new IdMap([new IdMapEntry(0x100, 0, 0x100)]));
        Assert.Equal(BusStatus.DecodeError, ep.Dma.Write(QemuVirtMap.Ram, [1], BusAttributes.Cpu));
        var ep2 = m.AddPci(new TestEndpoint(), 2);
        m.Bus.W16(Cfg(0, 2, 0, 4), PciCfg.CmdBusMaster);
        Assert.Equal(BusStatus.DecodeError, ep2.Dma.Write(QemuVirtMap.Ram, [1], BusAttributes.Cpu));
    }
}

public class PciIsolationTests
{
    [Fact]
    public void Isolation_inputs_show_multifunction_and_the_acs_state_of_every_port_above()
    {
        var m = Virt();
        var rp = m.AddPci(new PciBridge(0x1b36, 0x000c, PciePortType.RootPort, "rp"), 1);
        var up = rp.Secondary.Attach(new PciBridge(0x10b5, 0x8605, PciePortType.SwitchUpstream, "usp"), 0);
        var dp = up.Secondary.Attach(new PciBridge(0x10b5, 0x8605, PciePortType.SwitchDownstream, "dsp", acs: false), 0);
        var f0 = dp.Secondary.Attach(new TestEndpoint(), 0, 0);
        dp.Secondary.Attach(new TestEndpoint(), 0, 1);
        m.Bus.W32(Cfg(0, 1, 0, 0x18), 0x0003_0100);
        m.Bus.W32(Cfg(1, 0, 0, 0x18), 0x0003_0201);
        m.Bus.W32(Cfg(2, 0, 0, 0x18), 0x0003_0302);
        var i = PciIsolationInputs.Of(f0);
        Assert.Equal((ushort)0x0300, i.RequesterId);
        Assert.True(i.MultiFunction);
        Assert.Equal([(ushort)0x0200, (ushort)0x0100, (ushort)0x0008], i.Path.Select(h => h.RequesterId).ToArray());
        Assert.Equal(0, i.Path[0].AcsCapabilities);                 // the downstream port has no ACS
        Assert.False(i.PathAcsEnabled);
        var rpInputs = PciIsolationInputs.Of(dp);
        Assert.False(rpInputs.PathAcsEnabled);                      // root port ACS present but not enabled
        m.Bus.W16(Cfg(0, 1, 0, rp.AcsCapOffset + 6), PciIsolationInputs.LinuxRequiredAcs);
        Assert.True(PciIsolationInputs.Of(dp).PathAcsEnabled);
    }
}

public class PciStrictTests
{
    [Fact]
    public void Strict_mode_reports_dma_without_bme_overlapping_bars_and_misaligned_msix_access_and_permissive_mode_stays_silent()
    {
        foreach (var strict in new[] { true, false })
        {
            var m = Virt();
            var mon = new Doorbell.Tracing.StrictMonitor { Enabled = strict };
            m.Pci!.Strict = mon;
            var a = new TestEndpoint(); a.DefineBar(0, PciBarKind.Mem32, 0x4000); a.AddMsix(2, 0, 0x2000, 0, 0x3000);
            var c = new TestEndpoint(); c.DefineBar(0, PciBarKind.Mem32, 0x1000);
            m.AddPci(a, 1); m.AddPci(c, 2);
            m.Bus.W32(Cfg(0, 1, 0, 0x10), 0x1000_0000); m.Bus.W16(Cfg(0, 1, 0, 4), PciCfg.CmdMemory);
            m.Bus.W32(Cfg(0, 2, 0, 0x10), 0x1000_1000); m.Bus.W16(Cfg(0, 2, 0, 4), PciCfg.CmdMemory);
            m.Bus.R32(0x1000_0000);                                     // decode rebuild notices the overlap
            m.Bus.W16(0x1000_2002, 1);                                  // 2-byte MSI-X table write
            Assert.Equal(BusStatus.DecodeError, a.Dma.Write(QemuVirtMap.Ram, [1], BusAttributes.Cpu));
            if (strict)
            {
                Assert.Contains(mon.Violations, v => v.Rule.Contains("6.2.5.1", StringComparison.Ordinal));
                Assert.Contains(mon.Violations, v => v.Rule.Contains("6.8.2", StringComparison.Ordinal));
                Assert.Contains(mon.Violations, v => v.Rule.Contains("Bus Master", StringComparison.Ordinal));
            }
            else Assert.Empty(mon.Violations);
            Assert.Equal(1u, m.Bus.R32(0x1000_200C));                  // the narrow write changed nothing (still masked)
            Assert.Equal(0x1004u, m.Bus.R32(0x1000_1004));             // overlap: the lower BAR (a's) keeps the range
        }
    }
}
