using Doorbell.Gic.V2;
using Doorbell.Gic.V3;
using Doorbell.Host.Kernel;
using Doorbell.Memory;
using Doorbell.Platform;
using Doorbell.Smmu.V2;

namespace Doorbell.Tests.SmmuV2;

/// <summary>
/// The Juno-like and ThunderX-like boards on their real platforms' address maps (juno-r1.dtb; thunder-88xx.dtb and
/// Cavium's firmware tree): the models answer at those addresses, the host kernel finds them there through the
/// board's PlatformMap, BARs come from the platform's windows, and the SMMU's fault interrupts are wired onto the
/// SPIs the trees give (shared lines).
/// </summary>
public class RealAddressMapTests
{
    static uint R32(Machine m, ulong a)
    {
        m.Bus.Read(new PhysAddr(a), 4, out var v, BusAttributes.Cpu);
        return (uint)v;
    }

    [Theory]
    // board, RAM, GICD, SMMU, ECAM, BAR window start/end, MSI doorbell
    [InlineData("juno-like", 0x8000_0000UL, 0x2C01_0000UL, 0x2B50_0000UL, 0x4000_0000UL, 0x5000_0000UL, 0x5800_0000UL, 0x2C1C_0040UL)]
    [InlineData("thunderx-like", 0UL, 0x8010_0000_0000UL, 0x8300_0000_0000UL, 0x8480_0000_0000UL, 0x8040_0000_0000UL, 0x8041_0000_0000UL, 0x8010_0003_0040UL)]
    public void The_kernel_boots_on_the_real_map(string board, ulong ram, ulong gicd, ulong smmu, ulong ecam, ulong barLo, ulong barHi, ulong doorbell)
    {
        var (m, models) = HostKernel.CreateBoard(BoardDescription.LoadBuiltIn(board));
        var k = HostKernel.Boot(m, models);
        Assert.Equal(ram, m.RamBase);
        Assert.Equal(ram, k.Layout.GicTables);
        // The SMMUv2's ID registers answer at the tree's address, not at qemu-virt's.
        Assert.Equal(models.SmmuV2!.Options.Id0, R32(m, smmu + SmmuV2Gr0.ID0));
        Assert.NotEqual(models.SmmuV2.Options.Id0, R32(m, QemuVirtMap.Smmu + SmmuV2Gr0.ID0));
        // The distributor is there, enabled by the host driver.
        Assert.NotEqual(0u, R32(m, gicd + (models.GicV3 is null ? GicV2.GICD_CTLR : GicV3.GICD_CTLR)));
        // Enumeration went through the tree's ECAM: mq-dma's IDs at 00:01.0, its 64-bit BAR in the platform's window.
        Assert.Equal(ecam, k.Pci.EcamBase);
        Assert.Equal(0xdb01_1234u, R32(m, ecam + (1UL << 15)));
        var bar = k.Pci.Find("0000:00:01.0")!.Bars[0];
        Assert.InRange(bar.Address, barLo, barHi - bar.Size);
        Assert.Equal(doorbell, m.MsiDoorbell);
    }

    /// <summary>Programs stream 8 to context bank 0 (stage 1, context interrupt 3) over a table with nothing mapped.</summary>
    static void ProgramFaultingBank(Machine m, ulong smmu, SmmuV2Options o)
    {
        void W(ulong a, ulong v, int size = 4) => m.Bus.Write(new PhysAddr(a), size, v, BusAttributes.Cpu);
        var gr1 = smmu + (1UL << o.PageShift);
        var cb0 = smmu + ((ulong)o.GlobalPages << o.PageShift);
        var table = m.RamBase + 0x10_0000; // zeroed RAM: every level-0 descriptor is invalid
        W(gr1 + SmmuV2Gr1.CBA2R(0), SmmuV2Field.Cba2rVa64);
        W(gr1 + SmmuV2Gr1.CBAR(0), SmmuV2Field.CbarTypeS1BypassS2 << SmmuV2Field.CbarTypeShift | 3u << SmmuV2Field.CbarIrptNdxShift);
        W(cb0 + SmmuV2Cb.TCR2, 2 | SmmuV2Field.Tcr2As);
        W(cb0 + SmmuV2Cb.TTBR0, table, 8);
        W(cb0 + SmmuV2Cb.TCR, 24 | SmmuV2Field.TcrEpd1);
        W(cb0 + SmmuV2Cb.SCTLR, SmmuV2Field.SctlrM | SmmuV2Field.SctlrCfre | SmmuV2Field.SctlrCfie);
        W(smmu + SmmuV2Gr0.SMR(0), SmmuV2Field.SmrValid | 8);
        W(smmu + SmmuV2Gr0.S2CR(0), 0);
        W(smmu + SmmuV2Gr0.sCR0, SmmuV2Field.Cr0Gfre | SmmuV2Field.Cr0Gfie | SmmuV2Field.Cr0Usfcfg);
    }

    [Theory]
    [InlineData("juno-like", 40, 40)]     // juno-r1.dtb iommu@2b500000: <0 0x28 4> <0 0x28 4>
    [InlineData("thunderx-like", 68, 69)] // Cavium DT smmu0: <0 68 4> global, <0 69 4> every context bank
    public void Fault_interrupts_are_wired_onto_the_trees_SPIs(string board, int globalSpi, int contextSpi)
    {
        // No GIC model: every SPI records its level, so the wiring itself is observed.
        var m = BoardDescription.LoadBuiltIn(board).Build(new BoardWiring { Iommu = QemuVirtWiring.Models.Iommu });
        var smmu = m.SmmuV2!;
        ProgramFaultingBank(m, m.Map.Smmu, smmu.Options);
        var attrs = BusAttributes.FromDevice(8);
        var buf = new byte[8];
        // A stream no SMR matches: sCR0.USFCFG makes it a global fault on the global SPI.
        Assert.NotEqual(BusStatus.Ok, smmu.CreateStreamPort(0x55).Read(0x1000, buf, BusAttributes.FromDevice(0x55)));
        Assert.True(m.RecordedSpi(globalSpi)!.Level);
        // A translation fault in bank 0 raises context interrupt 3 — onto the context SPI (shared with the global
        // fault on Juno: the line stays up while either source is).
        Assert.NotEqual(BusStatus.Ok, smmu.CreateStreamPort(8).Read(0x1000, buf, attrs));
        Assert.True(smmu.ContextIrqLevel(3));
        Assert.True(m.RecordedSpi(contextSpi)!.Level);
        m.Bus.Write(new PhysAddr(m.Map.Smmu + SmmuV2Gr0.sGFSR), 4, SmmuV2Field.GfsrUsf, BusAttributes.Cpu); // W1C the global fault
        Assert.False(smmu.GlobalIrqLevel);
        Assert.True(m.RecordedSpi(contextSpi)!.Level);
        if (globalSpi != contextSpi) Assert.False(m.RecordedSpi(globalSpi)!.Level);
        // Nothing is wired where qemu-virt-style consecutive context SPIs would be.
        Assert.False(m.RecordedSpi(globalSpi + 1 + 3)?.Level ?? false);
    }

    [Fact]
    public void A_64_bit_BAR_goes_to_the_64_bit_window_when_there_is_no_32_bit_one()
    {
        var (m, models) = HostKernel.CreateBoard(BoardDescription.LoadBuiltIn("thunderx-like"));
        var k = HostKernel.Boot(m, models);
        foreach (var name in (string[])["0000:00:01.0", "0000:00:02.0"])
        {
            var bar = k.Pci.Find(name)!.Bars[0];
            Assert.True(bar.Is64 && bar.Size == 0x4000, name);
            Assert.InRange(bar.Address, RealPlatformMaps.ThunderXCn88xx.PcieMmioHigh, RealPlatformMaps.ThunderXCn88xx.PcieMmioHigh + 0xFFFF_FFFF);
            // The BAR decodes at that address: mq-dma's ID register (offset 0) reads through the host bridge window.
            Assert.Equal(0xd0b1_0001u, R32(m, bar.Address));
        }
    }

    [Fact]
    public void An_unknown_address_map_is_a_one_line_error()
    {
        var e = Assert.Throws<FormatException>(() => BoardDescription.Parse("name: x\naddress-map: juno-r2\n").ToOptions());
        Assert.Equal("address-map 'juno-r2' is unknown (qemu-virt, juno-r1, thunderx-cn88xx)", e.Message);
    }
}
