using Doorbell.Platform.DeviceTree;

namespace Doorbell.Tests.Platform;

/// <summary>Hand-made trees: GICv3 + ITS, one SMMUv3 and one ECAM host bridge whose maps each test writes.</summary>
public static class HandTrees
{
    public const string Its = """
        its: msi-controller@8080000 { compatible = "arm,gic-v3-its"; msi-controller; #msi-cells = <1>; reg = <0 0x8080000 0 0x20000>; };
        """;

    /// <summary>A board with <paramref name="hostProps"/> in the host bridge and <paramref name="extra"/> nodes at the root.</summary>
    public static string Board(string hostProps, string extra = "", string gicChildren = Its, string smmuProps = "") => $$"""
        / {
            #address-cells = <2>; #size-cells = <2>;
            model = "hand-made";
            memory@40000000 { device_type = "memory"; reg = <0 0x40000000 0 0x20000000>; };
            gic: interrupt-controller@8000000 {
                compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
                #address-cells = <2>; #size-cells = <2>; ranges;
                reg = <0 0x8000000 0 0x10000>, <0 0x80a0000 0 0xf60000>;
                {{gicChildren}}
            };
            smmu: iommu@9050000 { compatible = "arm,smmu-v3"; reg = <0 0x9050000 0 0x20000>; #iommu-cells = <1>; {{smmuProps}} };
            pcie@10000000 {
                compatible = "pci-host-ecam-generic"; device_type = "pci";
                reg = <0x40 0x10000000 0 0x10000000>;
                #address-cells = <3>; #size-cells = <2>;
                {{hostProps}}
            };
            {{extra}}
        };
        """;

    public static MasterAudit Host(string hostProps, string extra = "", string gicChildren = Its, string smmuProps = "")
    {
        var audit = IsolationAudit.Audit(Dtc.Tree(Board(hostProps, extra, gicChildren, smmuProps)), "hand");
        return audit.Masters.Single(m => m.IsPciHost);
    }
}

/// <summary>Issue 16 item 7: verdicts per requester-ID range from iommu-map / msi-map coverage, masks and bus-range.</summary>
public class IdMapCoverageTests
{
    const string IdentityMsi = "msi-map = <0 &its 0 0x10000>;";

    static void NeverAssignableOutside(MasterAudit m, uint first, uint last) =>
        Assert.All(m.Ranges.Where(r => r.Verdict == AssignmentVerdict.Isolated),
            r => Assert.True(r.First >= first && r.Last <= last, $"ASSIGNABLE range {r.First:x4}-{r.Last:x4} outside {first:x4}-{last:x4}"));

    [DtcFact]
    public void Identity_maps_over_all_rids_are_one_assignable_range()
    {
        var m = HandTrees.Host("iommu-map = <0 &smmu 0 0x10000>; " + IdentityMsi);
        var r = Assert.Single(m.Ranges);
        Assert.Equal((0u, 0xffffu, AssignmentVerdict.Isolated), (r.First, r.Last, r.Verdict));
        Assert.Equal((0u, 0xffffu), (r.StreamIdFirst!.Value, r.StreamIdLast!.Value));
        Assert.Equal(AssignmentVerdict.Isolated, m.Verdict);
    }

    [DtcFact]
    public void Partial_iommu_map_covers_rid_0_only_and_the_rest_is_reported_uncovered()
    {
        var m = HandTrees.Host("iommu-map = <0 &smmu 0 1>; " + IdentityMsi);
        Assert.NotEqual(AssignmentVerdict.Isolated, m.Verdict);
        Assert.Equal(AssignmentVerdict.NoIommu, m.Verdict);
        Assert.Equal(2, m.Ranges.Count);
        Assert.Equal((0u, 0u, AssignmentVerdict.Isolated), (m.Ranges[0].First, m.Ranges[0].Last, m.Ranges[0].Verdict));
        Assert.Equal((1u, 0xffffu, AssignmentVerdict.NoIommu), (m.Ranges[1].First, m.Ranges[1].Last, m.Ranges[1].Verdict));
        Assert.Contains("no iommu-map entry covers", m.Ranges[1].Reason);
        NeverAssignableOutside(m, 0, 0);
    }

    [DtcTheory]
    [InlineData("iommu-map = <0 &smmu 0 0>;")]            // zero-length entry
    [InlineData("iommu-map;")]                            // empty property
    [InlineData("iommu-map = <0 &smmu 0>;")]              // not a whole entry
    [InlineData("iommu-map = <1 &smmu 0 0x10000>; iommu-map-mask = <0xff00>;")] // id-base outside the mask: of_map_id fails
    public void Empty_zero_length_or_malformed_iommu_map_translates_nothing(string map)
    {
        var m = HandTrees.Host(map + " " + IdentityMsi);
        Assert.All(m.Ranges, r => Assert.Equal(AssignmentVerdict.NoIommu, r.Verdict));
        Assert.Equal(AssignmentVerdict.NoIommu, m.Verdict);
    }

    [DtcFact]
    public void Iommu_map_mask_zero_folds_every_rid_onto_one_streamid()
    {
        var m = HandTrees.Host("iommu-map = <0 &smmu 0x42 1>; iommu-map-mask = <0>; msi-map = <0 &its 0 0x10000>;");
        // every RID is translated (as StreamID 0x42): one IOMMU group, DMA isolated from the rest of the system;
        // DeviceIDs are distinct but all requesters share one StreamID, so no DeviceID aliasing across groups.
        var r = Assert.Single(m.Ranges);
        Assert.Equal(AssignmentVerdict.Isolated, r.Verdict);
        Assert.Equal((0x42u, 0x42u), (r.StreamIdFirst!.Value, r.StreamIdLast!.Value));
    }

    [DtcFact]
    public void Iommu_map_mask_applies_before_lookup()
    {
        // mask 0xff00 keeps the bus number only; the map covers buses 0..0x7f.
        var m = HandTrees.Host("iommu-map = <0 &smmu 0 0x8000>; iommu-map-mask = <0xff00>; " + IdentityMsi);
        Assert.Equal(2, m.Ranges.Count);
        Assert.Equal((0u, 0x7fffu), (m.Ranges[0].First, m.Ranges[0].Last));
        Assert.Equal(0x7f00u, m.Ranges[0].StreamIdLast);
        Assert.Equal((0x8000u, 0xffffu, AssignmentVerdict.NoIommu), (m.Ranges[1].First, m.Ranges[1].Last, m.Ranges[1].Verdict));
    }

    [DtcFact]
    public void Bus_range_bounds_the_requesters_and_the_map_length_bounds_coverage()
    {
        var m = HandTrees.Host("bus-range = <0x10 0x1f>; iommu-map = <0x1000 &smmu 0 0x800>; " + IdentityMsi);
        Assert.Equal(0x10u, m.BusRange!.Value.First);
        Assert.Equal(0x1000u, m.Ranges[0].First);
        Assert.Equal((0x1000u, 0x17ffu, AssignmentVerdict.Isolated), (m.Ranges[0].First, m.Ranges[0].Last, m.Ranges[0].Verdict));
        Assert.Equal((0x1800u, 0x1fffu, AssignmentVerdict.NoIommu), (m.Ranges[1].First, m.Ranges[1].Last, m.Ranges[1].Verdict));
        Assert.Equal(0x1fffu, m.Ranges[^1].Last);
    }

    [DtcFact]
    public void Msi_map_collapsing_every_requester_onto_one_deviceid_isolates_nothing()
    {
        var m = HandTrees.Host("iommu-map = <0 &smmu 0 0x10000>; msi-map = <0 &its 7 1>; msi-map-mask = <0>;");
        var r = Assert.Single(m.Ranges);
        Assert.Equal(AssignmentVerdict.UnsafeInterruptsOnly, r.Verdict);
        Assert.True(r.DeviceIdAliased);
        Assert.Equal((7u, 7u), (r.DeviceIdFirst!.Value, r.DeviceIdLast!.Value));
    }

    [DtcFact]
    public void Msi_parent_with_a_deviceid_specifier_on_a_host_bridge_aliases_every_requester()
    {
        var m = HandTrees.Host("iommu-map = <0 &smmu 0 0x10000>; msi-parent = <&its 0>;");
        Assert.Equal(AssignmentVerdict.UnsafeInterruptsOnly, Assert.Single(m.Ranges).Verdict);
        Assert.Contains("shared with requesters of other StreamIDs", m.Reason);
    }

    [DtcFact]
    public void Partial_msi_map_without_msi_parent_leaves_the_rest_without_an_msi_domain()
    {
        var m = HandTrees.Host("iommu-map = <0 &smmu 0 0x10000>; msi-map = <0 &its 0 0x100>;");
        Assert.Equal(2, m.Ranges.Count);
        Assert.Equal((0u, 0xffu, AssignmentVerdict.Isolated), (m.Ranges[0].First, m.Ranges[0].Last, m.Ranges[0].Verdict));
        Assert.Equal(AssignmentVerdict.UnsafeInterruptsOnly, m.Ranges[1].Verdict);
        Assert.Contains("no msi-map entry and no msi-parent", m.Ranges[1].Reason);
    }

    [DtcFact]
    public void Iommus_on_a_host_bridge_does_not_translate_its_requesters()
    {
        var m = HandTrees.Host("iommus = <&smmu 0>; " + IdentityMsi);
        Assert.Equal(AssignmentVerdict.NoIommu, m.Verdict);
        Assert.Contains("iommus on a host bridge", m.Reason);
    }

    [DtcFact]
    public void A_disabled_iommu_isolates_nothing()
    {
        var m = HandTrees.Host("iommu-map = <0 &smmu 0 0x10000>; " + IdentityMsi, smmuProps: "status = \"disabled\";");
        Assert.Equal(AssignmentVerdict.NoIommu, m.Verdict);
    }

    [DtcFact]
    public void Two_host_bridges_sharing_deviceids_at_one_its_alias_each_other()
    {
        var extra = """
            pcie@20000000 { device_type = "pci"; reg = <0x41 0 0 0x10000000>; #address-cells = <3>; #size-cells = <2>;
                iommu-map = <0 &smmu 0x10000 0x10000>; msi-map = <0 &its 0 0x10000>; };
            """;
        var audit = IsolationAudit.Audit(Dtc.Tree(HandTrees.Board("iommu-map = <0 &smmu 0 0x10000>; " + IdentityMsi, extra)), "two");
        Assert.All(audit.Masters.Where(m => m.IsPciHost), m => Assert.Equal(AssignmentVerdict.UnsafeInterruptsOnly, m.Verdict));
    }
}

/// <summary>Issue 20 item 3: negative #iommu-cells / #msi-cells neither hang nor throw.</summary>
public class NegativeCellsTests
{
    static void Bounded(Action a)
    {
        var t = Task.Run(a);
        Assert.True(t.Wait(TimeSpan.FromSeconds(10)), "audit did not finish within 10 s (hang)");
    }

    [DtcTheory]
    [InlineData(0xffffffffu)]
    [InlineData(0xfffffffeu)]
    [InlineData(0xfffffffdu)]
    public void Negative_cells_in_iommus_msi_parent_and_maps_end_in_a_verdict(uint cells)
    {
        var dts = $$"""
            / {
                ctl: ctl { #iommu-cells = <{{cells}}>; #msi-cells = <{{cells}}>; msi-controller; };
                dev { iommus = <&ctl 1 2 3>; msi-parent = <&ctl 1 2>; };
                dev2 { iommus = <&ctl>; msi-parent = <&ctl>; };
                pcie { device_type = "pci"; iommu-map = <0 &ctl 0 0x10000 0 &ctl 0 1>; msi-map = <0 &ctl 0 0x10000>; };
                bus2 { iommu-map = <0 &ctl 0xfffffffd 1>; msi-parent = <&ctl 0xfffffffd>; };
            };
            """;
        var fdt = Dtc.Tree(dts);
        PlatformAudit? audit = null;
        Bounded(() => audit = IsolationAudit.Audit(fdt, "neg"));
        var dev = audit!.Masters.Single(m => m.Node.Name == "dev");
        Assert.Equal(AssignmentVerdict.NoIommu, dev.Verdict);
        Assert.Contains("malformed", dev.Reason);
        // the controller is no IOMMU Doorbell can use either way; the issue is only that nothing hangs or throws
        Assert.All(audit.Masters, m => Assert.False(string.IsNullOrEmpty(m.Reason)));
    }

    [Fact]
    public void The_issue_example_tree_audits_within_bounds()
    {
        // / { ctl { phandle = <1>; #iommu-cells = <0xffffffff>; }; dev { iommus = <1>; }; };  built by hand (no dtc needed)
        var w = new FdtWriter();
        w.Begin("");
        w.Begin("ctl"); w.Prop("phandle", 1u); w.Prop("#iommu-cells", 0xffffffffu); w.End();
        w.Begin("dev"); w.Prop("iommus", 1u); w.End();
        w.End();
        var fdt = Fdt.Parse(w.Finish());
        PlatformAudit? audit = null;
        Bounded(() => audit = IsolationAudit.Audit(fdt, "issue"));
        Assert.Equal(AssignmentVerdict.NoIommu, audit!.Masters.Single().Verdict);
    }
}
