using System.Text.Json;
using Doorbell.Cli;

namespace Doorbell.Tests.Platform;

/// <summary>Issue 18, audit output: formats, legend, relative names, exit status, stdin, unknown options, DMA masters only.</summary>
public class AuditCommandTests
{
    static (int Rc, string Out, string Err) Run(string[] args, byte[]? stdin = null)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        var rc = AuditCommand.Run(args, o, e, () => new MemoryStream(stdin ?? []));
        return (rc, o.ToString(), e.ToString());
    }

    static string Dtb(string rel) => SharedData.File("data/dtb/" + rel);

    [Theory]
    [InlineData("--json")]
    [InlineData("--summray")]
    [InlineData("-q")]
    public void Unknown_options_are_rejected_with_one_line(string option)
    {
        var (rc, stdout, stderr) = Run([option, Dtb("qemu/virt-gicv3-its-smmuv3.dtb")]);
        Assert.Equal(1, rc);
        Assert.Equal("", stdout);
        var line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains($"unknown option '{option}'", line);
    }

    [Fact]
    public void Bad_format_value_and_missing_paths_are_one_line_errors()
    {
        var (rc, _, err) = Run(["--format", "xml", Dtb("qemu/virt-gicv3-its-smmuv3.dtb")]);
        Assert.Equal(1, rc);
        Assert.Contains("--format xml: expected text or json", err);
        (rc, _, err) = Run([]);
        Assert.Equal(1, rc);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public void A_folder_without_dtbs_is_an_error_not_silence()
    {
        var dir = Directory.CreateTempSubdirectory("doorbell-audit-empty");
        try
        {
            var (rc, stdout, stderr) = Run([dir.FullName]);
            Assert.Equal(1, rc);
            Assert.Equal("", stdout);
            Assert.Contains("no .dtb files", Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public void Dash_reads_the_tree_from_stdin()
    {
        var (rc, stdout, _) = Run(["-"], File.ReadAllBytes(Dtb("qemu/virt-gicv3-its-smmuv3.dtb")));
        Assert.Equal(0, rc);
        Assert.Contains("<stdin>", stdout);
        Assert.Contains("ASSIGNABLE  pci /pcie@10000000", stdout);
        var bad = Run(["-"], [1, 2, 3]);
        Assert.Equal(2, bad.Rc);
        Assert.Contains("<stdin>: not a valid device tree", bad.Err);
    }

    [Fact]
    public void Text_has_header_legend_and_names_relative_to_the_folder()
    {
        var (rc, stdout, stderr) = Run([SharedData.File("data/dtb")]);
        Assert.Equal(0, rc);
        Assert.Equal("", stderr);
        Assert.StartsWith("doorbell audit: DMA and MSI isolation of 24 device trees", stdout);
        Assert.Contains("Legend:", stdout);
        foreach (var l in Doorbell.Platform.DeviceTree.AuditReport.Legend) Assert.Contains(l, stdout);
        Assert.Contains("\nboards/juno-r1.dtb (ARM Juno development board (r1))", stdout);
        Assert.Contains("\nqemu/virt-gicv2m-smmuv3.dtb", stdout);
        Assert.DoesNotContain(SharedData.File("data/dtb"), stdout);
    }

    [Fact]
    public void Only_dma_masters_are_listed()
    {
        var (_, fvp, _) = Run([Dtb("boards/fvp-base-revc.dtb")]);
        Assert.DoesNotContain("/iommu@2b400000:", fvp); // the SMMU's own msi-parent does not make it a DMA master
        var (_, hip, _) = Run([Dtb("boards/hip07-d05.dtb")]);
        Assert.DoesNotContain("intc_", hip);              // mbigen interrupt controllers
        var (_, mcbin, _) = Run([Dtb("boards/armada-8040-mcbin.dtb")]);
        Assert.DoesNotContain("interrupt-controller@1e0000/interrupt-controller@10", mcbin);
        Assert.Contains("usb@500000", mcbin);
    }

    [Fact]
    public void Json_follows_the_documented_schema()
    {
        var (rc, stdout, _) = Run(["--format", "json", Dtb("qemu/virt-gicv3-its-smmuv3.dtb"), Dtb("boards/fsl-lx2160a-honeycomb.dtb")]);
        Assert.Equal(0, rc);
        using var doc = JsonDocument.Parse(stdout);
        var root = doc.RootElement;
        Assert.Equal("doorbell-audit/1", root.GetProperty("schema").GetString());
        Assert.Equal(0, root.GetProperty("errors").GetArrayLength());
        var virt = root.GetProperty("platforms")[0];
        Assert.EndsWith("virt-gicv3-its-smmuv3.dtb", virt.GetProperty("file").GetString());
        Assert.Equal("smmu-v3", virt.GetProperty("iommus")[0].GetProperty("kind").GetString());
        Assert.True(virt.GetProperty("msiControllers")[0].GetProperty("isolating").GetBoolean());
        var host = virt.GetProperty("masters")[0];
        Assert.Equal("pci", host.GetProperty("type").GetString());
        Assert.Equal("assignable", host.GetProperty("verdict").GetString());
        var range = host.GetProperty("ranges")[0];
        Assert.Equal(0, range.GetProperty("first").GetInt32());
        Assert.Equal(0xffff, range.GetProperty("last").GetInt32());
        Assert.Equal(0xffff, range.GetProperty("streamIds")[1].GetInt32());
        var lx = root.GetProperty("platforms")[1];
        var lxHost = lx.GetProperty("masters").EnumerateArray().First(m => m.GetProperty("type").GetString() == "pci");
        Assert.Equal("no-iommu", lxHost.GetProperty("verdict").GetString());
        Assert.Equal(1, lxHost.GetProperty("ranges")[1].GetProperty("first").GetInt32());
    }

    [Fact]
    public void Execute_prints_what_each_attack_showed_beside_the_verdict_and_vfio()
    {
        var (rc, stdout, _) = Run(["--execute", Dtb("qemu/virt-gicv3-its-smmuv3.dtb"), Dtb("qemu/virt-gicv2m-smmuv3.dtb")]);
        Assert.Equal(0, rc);
        Assert.Contains("ASSIGNABLE  pci /pcie@10000000  RID 0000–ffff  DMA: 4/4 faults; MSI: forged 0/32 via ITS EventID spray; VFIO: attaches", stdout);
        Assert.Contains("UNSAFE-IRQ  pci /pcie@10000000  RID 0000–ffff  DMA: 4/4 faults; MSI: forged 32/32 via GICv2m SETSPI; VFIO: SET_IOMMU -EPERM", stdout);
        Assert.Contains("verdicts contradicted by their probes: 0", stdout);
        foreach (var l in Doorbell.Platform.DeviceTree.AuditReport.ExecutionLegend) Assert.Contains(l, stdout);
        var json = Run(["--format", "json", "--execute", Dtb("qemu/virt-gicv3-its-smmuv3.dtb")]);
        using var doc = JsonDocument.Parse(json.Out);
        var probe = doc.RootElement.GetProperty("platforms")[0].GetProperty("execution").GetProperty("probes")[0];
        Assert.Equal(4, probe.GetProperty("dma").GetProperty("faults").GetInt32());
        Assert.Equal(0, probe.GetProperty("msi").GetProperty("forged").GetInt32());
        Assert.True(probe.GetProperty("vfioAttaches").GetBoolean());
    }
}
