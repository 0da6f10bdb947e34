using Doorbell.Devices;
using Doorbell.Pci;
using Doorbell.Platform;
using static Doorbell.Tests.Pci.PciTestKit;

namespace Doorbell.Tests.Pci;

public class BoardDescriptionTests
{
    static string Repo([System.Runtime.CompilerServices.CallerFilePath] string here = "") =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(here)!, "..", "..", ".."));

    [Fact]
    public void Yaml_board_builds_the_described_tree_with_its_id_maps()
    {
        var d = BoardDescription.Load(Path.Combine(Repo(), "src", "Doorbell", "Platform", "Boards", "two-port-switch.yaml"));
        var m = d.Build();
        Assert.Equal("two-port-switch", d.Name);
        Assert.Equal(1UL << 30, m.RamSize);
        Assert.Equal(2, m.GicV3!.CpuInterfaces.Length);
        Assert.NotNull(m.SmmuV3);
        var b = m.Bus;
        // firmware-style bus numbering: rp(00:02) → 1; rp(00:03) → 2..5, usp → 3..5, dsp0 → 4, dsp1 → 5
        b.W32(Cfg(0, 2, 0, 0x18), 0x0001_0100);
        b.W32(Cfg(0, 3, 0, 0x18), 0x0005_0200);
        b.W32(Cfg(2, 0, 0, 0x18), 0x0005_0302);
        b.W32(Cfg(3, 0, 0, 0x18), 0x0004_0403);
        b.W32(Cfg(3, 1, 0, 0x18), 0x0005_0503);
        Assert.Equal(0x11e8_1234u, b.R32(Cfg(0, 1, 0, 0)));
        Assert.Equal(0xdb01_1234u, b.R32(Cfg(1, 0, 0, 0)));
        Assert.Equal(0x11e8_1234u, b.R32(Cfg(4, 0, 0, 0)));
        Assert.Equal(0xdb01_1234u, b.R32(Cfg(5, 0, 0, 0)));
        Assert.Equal(0x11e8_1234u, b.R32(Cfg(0, 4, 1, 0)));
        Assert.Equal(0x80u, (b.R32(Cfg(0, 4, 0, 0x0C)) >> 16) & 0x80);
        Assert.True(m.Pci!.MsiMap.TryMap(0x0500, out var devId));
        Assert.Equal(0x10500u, devId);
        Assert.Equal(2, m.Pci.AllFunctions().Count(f => f is PciBridge { PortType: PciePortType.SwitchDownstream }));
        Assert.Single(m.Devices.OfType<PlatformDmaDevice>());
    }

    [Fact]
    public void Bad_descriptions_are_reported_not_crashed()
    {
        Assert.Throws<FormatException>(() => BoardDescription.Parse("pcie: [{ slot: 1, device: nic9000 }]").Build(BoardWiring.None));
        Assert.Throws<FormatException>(() => BoardDescription.Parse("iommu: smmuv9").Build(BoardWiring.None));
        Assert.Throws<FormatException>(() => BoardDescription.Parse("ram: lots").Build(BoardWiring.None));
        Assert.Equal("ram '5' is too small for the host kernel (at least 8M)",
            Assert.Throws<FormatException>(() => BoardDescription.Parse("ram: 5").Build(BoardWiring.None)).Message);
        Assert.Throws<FormatException>(() => BoardDescription.Parse("pcie: [ {").Build(BoardWiring.None));
        Assert.Equal(0x10_0000UL, BoardDescription.Num("1M"));
        Assert.Equal(0x1234UL, BoardDescription.Num("0x12_34"));
    }
}
