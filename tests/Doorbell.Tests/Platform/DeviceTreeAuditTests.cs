using System.Buffers.Binary;
using Doorbell.Platform.DeviceTree;

namespace Doorbell.Tests.Platform;

public class DeviceTreeAuditTests
{
    static Fdt Load(string rel) => Fdt.Parse(File.ReadAllBytes(SharedData.File("data/dtb/" + rel)));

    [Fact]
    public void Parses_qemu_virt_tree_with_phandles_and_maps()
    {
        var fdt = Load("qemu/virt-gicv3-its-smmuv3.dtb");
        var pcie = fdt.AllNodes.Single(n => n.Name == "pcie@10000000");
        Assert.Equal("pci", pcie.Property("device_type")!.AsString());
        var imap = pcie.Property("iommu-map")!.Cells();
        Assert.Equal(4, imap.Length);
        Assert.Equal(0u, imap[0]);
        Assert.Equal(0x10000u, imap[3]);
        var smmu = fdt.ByPhandle(imap[1]);
        Assert.NotNull(smmu);
        Assert.True(smmu!.IsCompatible("arm,smmu-v3"));
        Assert.Equal("/smmuv3@9050000", smmu.Path);
        var its = fdt.ByPhandle(pcie.Property("msi-map")!.Cell(1))!;
        Assert.Equal("/intc@8000000/its@8080000", its.Path);
    }

    [Theory]
    [InlineData("qemu/virt-gicv3-its-smmuv3.dtb", AssignmentVerdict.Isolated)]
    [InlineData("qemu/virt-gicv2m-smmuv3.dtb", AssignmentVerdict.UnsafeInterruptsOnly)]
    [InlineData("qemu/virt-gicv3-noits-smmuv3.dtb", AssignmentVerdict.UnsafeInterruptsOnly)]
    [InlineData("qemu/virt-gicv3-its-noiommu.dtb", AssignmentVerdict.NoIommu)]
    public void Qemu_virt_pcie_host_verdicts_follow_linux_rules(string file, AssignmentVerdict expected)
    {
        var audit = IsolationAudit.Audit(Load(file), file);
        var host = Assert.Single(audit.Masters);
        Assert.True(host.IsPciHost);
        Assert.Equal(expected, host.Verdict);
    }

    [Fact]
    public void Gicv2m_and_synquacer_pre_its_are_classified_as_not_isolating()
    {
        var v2m = IsolationAudit.Audit(Load("qemu/virt-gicv2m-smmuv3.dtb"), "v2m");
        Assert.Equal(MsiControllerKind.GicV2m, Assert.Single(v2m.MsiControllers).Kind);
        Assert.Contains("cannot tell writers apart", Assert.Single(v2m.Masters).Reason);
        var sq = IsolationAudit.Audit(Load("boards/synquacer-developerbox-fw-pcie-enabled.dtb"), "sq");
        var its = Assert.Single(sq.MsiControllers);
        Assert.Equal(MsiControllerKind.GicV3PreIts, its.Kind);
        Assert.False(its.Isolates);
    }

    [Fact]
    public void Every_shared_board_parses_and_audits()
    {
        foreach (var f in Directory.EnumerateFiles(SharedData.File("data/dtb"), "*.dtb", SearchOption.AllDirectories))
        {
            var fdt = Fdt.TryParse(File.ReadAllBytes(f), out var error);
            Assert.True(fdt is not null, $"{f}: {error}");
            var audit = IsolationAudit.Audit(fdt!, Path.GetFileName(f));
            Assert.All(audit.Masters, m => Assert.False(string.IsNullOrEmpty(m.Reason)));
        }
        // PCIe behind an SMMU with msi-map to the ITS over every RID is assignable (Morello, FVP).
        var morello = IsolationAudit.Audit(Load("boards/morello-sdp.dtb"), "morello");
        Assert.Contains(morello.Masters, m => m.IsPciHost && m.Verdict == AssignmentVerdict.Isolated);
        // LX2160A as shipped (its firmware rewrites the maps at boot): iommu-map <0 &smmu 0 1> covers RID 0 only
        // (issue 16 item 7: this used to be reported ASSIGNABLE), and msi-parent <&its 0> gives every requester
        // DeviceID 0, so even RID 0 can have its MSIs forged by the untranslated requesters.
        var lx = IsolationAudit.Audit(Load("boards/fsl-lx2160a-honeycomb.dtb"), "lx2160a");
        Assert.All(lx.Masters.Where(m => m.IsPciHost), m =>
        {
            Assert.Equal(AssignmentVerdict.NoIommu, m.Verdict);
            Assert.Equal((0u, 0u, AssignmentVerdict.UnsafeInterruptsOnly), (m.Ranges[0].First, m.Ranges[0].Last, m.Ranges[0].Verdict));
            Assert.Equal((1u, 0xffffu, AssignmentVerdict.NoIommu), (m.Ranges[1].First, m.Ranges[1].Last, m.Ranges[1].Verdict));
        });
        Assert.DoesNotContain(lx.Masters, m => m.Ranges.Any(r => r.Verdict == AssignmentVerdict.Isolated));
    }

    [Fact]
    public void Malformed_blobs_are_rejected_as_values_never_exceptions()
    {
        var good = File.ReadAllBytes(SharedData.File("data/dtb/qemu/virt-gicv3-its-smmuv3.dtb"));
        var totalSize = (int)BinaryPrimitives.ReadUInt32BigEndian(good.AsSpan(4));
        var rng = new Random(1234);
        var rejected = 0;
        for (var i = 0; i < 300; i++)
        {
            var blob = good.AsSpan(0, totalSize).ToArray();
            var flips = 1 + rng.Next(8);
            for (var k = 0; k < flips; k++)
            {
                var pos = rng.Next(k == 0 ? 40 : blob.Length);
                blob[pos] = (byte)rng.Next(256);
            }
            var fdt = Fdt.TryParse(blob, out var error);
            if (fdt is null) { rejected++; Assert.NotNull(error); }
            else IsolationAudit.Audit(fdt, "fuzz"); // must not throw either
        }
        Assert.True(rejected > 0);
        Assert.Null(Fdt.TryParse(good.AsSpan(0, 20), out var e1));
        Assert.Equal("blob shorter than the FDT header", e1);
        var badMagic = good.ToArray(); badMagic[0] = 0;
        Assert.Null(Fdt.TryParse(badMagic, out _));
    }
}
