using Doorbell.Host.Vfio.Abi;

namespace Doorbell.Tests.Vfio;

/// <summary>vfio-pci config-space virtualization, rule by rule (shared/reference/vfio-semantics.md §2).</summary>
public class PciConfigTests
{
    [Fact]
    public void Ids_and_header_passthrough_are_read_only()
    {
        var t = new PciTestDevice();
        Assert.Equal(0x11e8_1234u, t.Cfg(0, 4));
        t.CfgW(0, 4, 0xFFFF_FFFF);
        Assert.Equal(0x11e8_1234u, t.Cfg(0, 4));
        Assert.Equal(0x10u, t.Cfg(0x08, 1));
        t.CfgW(0x08, 1, 0x77);
        Assert.Equal(0x10u, t.F.ReadConfig(0x08, 1));
        t.CfgW(0x0C, 1, 0x10); // cache line size: writable passthrough
        Assert.Equal(0x10u, t.F.ReadConfig(0x0C, 1));
    }

    [Fact]
    public void Bar_sizing_reads_size_masks_with_type_flags_and_never_touches_hardware()
    {
        var t = new PciTestDevice();
        var hwBar0 = t.F.R32(0x10);
        for (var i = 0; i < 6; i++) t.CfgW(0x10 + 4 * i, 4, 0xFFFF_FFFF);
        t.CfgW(0x30, 4, 0xFFFF_F800);
        Assert.Equal(0xFFF0_0004u, t.Cfg(0x10, 4)); // 1 MiB, 64-bit
        Assert.Equal(0xFFFF_FFFFu, t.Cfg(0x14, 4)); // upper half
        Assert.Equal(0xFFFF_C000u, t.Cfg(0x18, 4)); // 16 KiB, 32-bit
        Assert.Equal(0u, t.Cfg(0x1C, 4));           // unassigned
        Assert.Equal(0xFFFF_FFE1u, t.Cfg(0x20, 4)); // 32-byte IO
        Assert.Equal(0xFFFF_0000u, t.Cfg(0x30, 4)); // ROM 64 KiB, enable not set
        t.CfgW(0x30, 4, 0xFFFF_FFFF);
        Assert.Equal(0xFFFF_0001u, t.Cfg(0x30, 4));
        Assert.Equal(hwBar0, t.F.R32(0x10));
        t.CfgW(0x10, 4, 0x1234_5678);
        Assert.Equal(0x1230_0004u, t.Cfg(0x10, 4));
    }

    [Fact]
    public void Bars_read_the_assigned_address_initially()
    {
        var t = new PciTestDevice();
        Assert.Equal(0x1000_0000u, t.Cfg(0x18, 4));
        Assert.Equal(0x10u, t.Cfg(0x14, 4));
    }

    [Fact]
    public void Intx_disable_is_virtual_and_command_memory_goes_to_hardware()
    {
        var t = new PciTestDevice();
        t.CfgW(0x04, 2, 0x0402);
        Assert.Equal(0x0402u, t.Cfg(0x04, 2) & 0x0406);
        Assert.Equal(0u, t.F.R16(0x04) & 0x400); // INTx not enabled: hardware DisINTx untouched
        Assert.Equal(2u, t.F.R16(0x04) & 2u);
        t.CfgW(0x04, 2, 0x0000);
        Assert.Equal(0u, t.F.R16(0x04) & 2u);
        Assert.Equal(0u, t.Cfg(0x04, 2) & 0x400);
    }

    [Fact]
    public void Hidden_capabilities_are_relinked_and_raw_in_their_bytes()
    {
        var t = new PciTestDevice();
        // Walk the virtual chain: PM -> MSI -> (SSVID hidden) -> EXP -> MSI-X -> VNDR.
        var ids = new List<uint>();
        var pos = (int)t.Cfg(0x34, 1);
        for (var guard = 0; pos != 0 && guard < 48; guard++)
        {
            ids.Add(t.Cfg(pos, 1));
            pos = (int)t.Cfg(pos + 1, 1);
        }
        Assert.Equal([0x01u, 0x05u, 0x10u, 0x11u, 0x09u], ids);
        Assert.Equal((uint)t.ExpCap, t.Cfg(t.MsiCap + 1, 1));
        Assert.Equal((uint)t.SsvidCap, t.F.ReadConfig(t.MsiCap + 1, 1)); // hardware unchanged
        // The hidden capability's bytes are a gap: raw passthrough.
        Assert.Equal(0x0Du, t.Cfg(t.SsvidCap, 1));
        Assert.Equal(0x10u, t.Cfg(0x06, 2) & 0x10);
    }

    [Fact]
    public void Cap_list_is_cleared_when_every_capability_is_hidden()
    {
        var t = new PciTestDevice(customize: f =>
        {
            f.Config[0x34] = 0xC0;
            f.Config[0xC0] = 0x0D; // SSVID
            f.Config[0xC1] = 0xC8;
            f.Config[0xC8] = 0x04; // SLOTID
            f.Config[0xC9] = 0x00;
        });
        Assert.Equal(0u, t.Cfg(0x06, 2) & 0x10);
        Assert.Equal(0u, t.Cfg(0x34, 1));
    }

    [Fact]
    public void Msi_flags_are_clamped_and_address_data_virtual()
    {
        var t = new PciTestDevice();
        var m = t.MsiCap;
        Assert.Equal(0u, t.Cfg(m + 2, 2) & 0xE); // QMASK reads msi_qmax (0 before SET_IRQS)
        t.CfgW(m + 2, 2, 0x0071); // enable, QSIZE 7
        Assert.Equal(0u, t.Cfg(m + 2, 2) & 0x71);
        Assert.Equal(0u, t.F.R16(m + 2) & 0x71);
        t.CfgW(m + 4, 4, 0xFEE0_0000);
        t.CfgW(m + 12, 2, 0x4321);
        Assert.Equal(0xFEE0_0000u, t.Cfg(m + 4, 4));
        Assert.Equal(0x4321u, t.Cfg(m + 12, 2));
        Assert.Equal(0u, t.F.R32(m + 4));
        t.CfgW(m + 16, 4, 0x5); // mask bits: writable passthrough
        Assert.Equal(5u, t.F.R32(m + 16));

        using var e = Doorbell.Host.Os.EventFd.Create();
        var fds = VfioWorld.Fds(e.Fd, e.Fd, e.Fd, e.Fd);
        Assert.Equal(0, t.W.SetIrqs(t.Fd, VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, VfioPciIndex.IrqMsi, 0, 4, fds));
        Assert.Equal(4u, t.Cfg(m + 2, 2) & 0xE);   // log2(4) << 1
        t.CfgW(m + 2, 2, 0x0071);
        Assert.Equal(0x21u, t.Cfg(m + 2, 2) & 0x71); // enable kept, QSIZE clamped to 2
        Assert.Equal(0x21u, t.F.R16(m + 2) & 0x71);
    }

    [Fact]
    public void Msix_capability_is_read_only()
    {
        var t = new PciTestDevice();
        var before = t.F.R32(t.MsixCap);
        t.CfgW(t.MsixCap, 4, 0xC000_0000 | before);
        Assert.Equal(before, t.F.R32(t.MsixCap));
        Assert.Equal(3u, t.Cfg(t.MsixCap + 2, 2) & 0x7FF);
        Assert.Equal(0x2002u, t.Cfg(t.MsixCap + 4, 4));
    }

    [Fact]
    public void Pcie_flr_is_intercepted_and_reads_zero_and_mps_is_virtual()
    {
        var t = new PciTestDevice();
        var resets = t.F.Resets;
        t.CfgW(t.ExpCap + 8, 2, 0x8000 | 0x0020);
        Assert.Equal(resets + 1, t.F.Resets);
        Assert.Equal(0u, t.Cfg(t.ExpCap + 8, 2) & 0x8000);
        Assert.Equal(0x20u, t.Cfg(t.ExpCap + 8, 2) & 0xE0); // MPS 256 virtually
        Assert.Equal(0u, t.F.R16(t.ExpCap + 8) & 0xE0);     // not in hardware
        t.CfgW(t.ExpCap + 8, 2, 0x2000);                    // READRQ 512 goes to hardware
        Assert.Equal(0x2000u, t.F.R16(t.ExpCap + 8) & 0x7000);
        t.CfgW(t.ExpCap + 8, 2, 0x0200);                    // PHANTOM is not writable
        Assert.Equal(0u, t.F.R16(t.ExpCap + 8) & 0x200);
    }

    [Fact]
    public void Pm_pme_bits_are_hidden_and_power_state_is_applied()
    {
        var t = new PciTestDevice();
        Assert.Equal(0u, t.Cfg(t.PmCap + 2, 2) & 0xF800);
        Assert.Equal(0xC800u, t.F.R16(t.PmCap + 2) & 0xF800);
        t.CfgW(t.PmCap + 4, 2, 0x0103); // D3hot + PME_En
        Assert.Equal(3u, t.F.R16(t.PmCap + 4) & 3);
        Assert.Equal(0u, t.F.R16(t.PmCap + 4) & 0x100);
        Assert.False(t.Dev.MemoryEnabled);
        t.CfgW(t.PmCap + 4, 2, 0x0000);
        Assert.Equal(0u, t.F.R16(t.PmCap + 4) & 3);
    }

    [Fact]
    public void Vendor_capability_takes_raw_writes()
    {
        var t = new PciTestDevice();
        t.CfgW(t.VndrCap + 4, 4, 0x1122_3344);
        Assert.Equal(0x1122_3344u, t.F.R32(t.VndrCap + 4));
        Assert.Equal(0x1122_3344u, t.Cfg(t.VndrCap + 4, 4));
    }

    [Fact]
    public void Extended_caps_hide_unlisted_ones_and_aer_masks_writes()
    {
        var t = new PciTestDevice();
        var h0 = t.Cfg(0x100, 4);
        Assert.Equal(0x01u, h0 & 0xFFFF);
        Assert.Equal((uint)t.DsnCap, h0 >> 20); // L1SS relinked out
        Assert.Equal(0x03u, t.Cfg(t.DsnCap, 4) & 0xFFFF);
        Assert.Equal(0xDEAD_BEEFu, t.Cfg(t.DsnCap + 4, 4));
        t.CfgW(t.AerCap + 8, 4, 0xFFFF_FFFF); // UNCOR_MASK: only the listed bits
        Assert.Equal(0x03FF_F031u, t.F.R32(t.AerCap + 8));
        t.CfgW(t.AerCap, 4, 0);
        Assert.Equal(h0, t.Cfg(0x100, 4));
    }

    [Fact]
    public void A_hidden_first_extended_capability_becomes_a_placeholder()
    {
        var t = new PciTestDevice(customize: f =>
        {
            f.W32(0x100, 0x1E | (1u << 16) | (0x140u << 20)); // L1SS first, next 0x140
            f.W32(0x140, 0x03 | (1u << 16));                  // DSN
        });
        Assert.Equal(0x140u << 20, t.Cfg(0x100, 4));
        Assert.Equal(0x10003u, t.Cfg(0x140, 4));
    }

    [Fact]
    public void Gaps_are_raw_passthrough_and_out_of_range_is_EFAULT()
    {
        var t = new PciTestDevice();
        t.F.Function.Mask(0xF0, 4, 0xFFFF_FFFF); // a device register in the gap
        t.CfgW(0xF0, 4, 0xCAFE_F00D);
        Assert.Equal(0xCAFE_F00Du, t.F.R32(0xF0));
        Assert.Equal(0xCAFE_F00Du, t.Cfg(0xF0, 4));
        var b = new byte[8];
        Assert.Equal(-Errno.EFAULT, t.W.Proc.Pread(t.Fd, b, VfioPciIndex.IndexToOffset(VfioPciIndex.Config) + 4092));
        Assert.Equal(-Errno.EFAULT, t.W.Proc.Pwrite(t.Fd, b, VfioPciIndex.IndexToOffset(VfioPciIndex.Config) + 4096));
        // Unaligned multi-byte access is split into naturally aligned chunks.
        var u = new byte[3];
        Assert.Equal(3, t.W.Proc.Pread(t.Fd, u, VfioPciIndex.IndexToOffset(VfioPciIndex.Config) + 1));
        Assert.Equal(new byte[] { 0x12, 0xE8, 0x11 }, u);
    }

    [Fact]
    public void Interrupt_pin_and_line()
    {
        var t = new PciTestDevice();
        Assert.Equal(1u, t.Cfg(0x3D, 1));
        t.CfgW(0x3C, 1, 0x2A);
        Assert.Equal(0x2Au, t.Cfg(0x3C, 1));
        t.CfgW(0x3D, 1, 0x3);
        Assert.Equal(1u, t.Cfg(0x3D, 1));
    }
}

public class PciConfigMoreTests
{
    [Fact]
    public void Af_flr_resets_only_with_tp_and_flr_and_reads_zero()
    {
        var af = 0;
        var t = new PciTestDevice(pcie: false, customize: f =>
        {
            af = f.Function.Cap(0x13, 6, 0x06, 0x03); // length 6, AF_CAP: TP | FLR
            f.Function.Mask(af + 4, 1, 0x01);
        });
        var before = t.F.Resets;
        t.CfgW(af + 4, 1, 0x01);
        Assert.Equal(before + 1, t.F.Resets);
        Assert.Equal(0u, t.Cfg(af + 4, 1) & 1);
        Assert.Equal(0u, t.F.ReadConfig(af + 4, 1) & 1); // never written to hardware
    }

    [Fact]
    public void Af_flr_without_the_capability_bits_does_nothing()
    {
        var af = 0;
        var t = new PciTestDevice(pcie: false, customize: f => af = f.Function.Cap(0x13, 6, 0x06, 0x01)); // TP only
        var before = t.F.Resets;
        t.CfgW(af + 4, 1, 0x01);
        Assert.Equal(before, t.F.Resets);
    }

    [Fact]
    public void Pcie_flr_without_devcap_flr_does_not_reset()
    {
        var t = new PciTestDevice(customize: f => { });
        t.F.W32(t.ExpCap + 4, 0); // DEVCAP without FLR
        var before = t.F.Resets;
        t.CfgW(t.ExpCap + 8, 2, 0x8000);
        Assert.Equal(before, t.F.Resets);
        Assert.Equal(0u, t.Cfg(t.ExpCap + 8, 2) & 0x8000);
    }

    [Fact]
    public void Vpd_address_and_data_are_virtual()
    {
        var vpd = 0;
        var t = new PciTestDevice(customize: f => { vpd = f.Function.Cap(0x03, 8); f.Function.Mask(vpd + 2, 2, 0xFFFF); });
        t.CfgW(vpd + 2, 2, 0x8010);
        Assert.Equal(0x8010u, t.Cfg(vpd + 2, 2));
        Assert.Equal(0u, t.F.ReadConfig(vpd + 2, 2));
    }
}
