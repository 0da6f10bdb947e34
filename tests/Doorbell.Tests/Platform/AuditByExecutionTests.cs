using System.Diagnostics;
using Doorbell.Platform.DeviceTree;

namespace Doorbell.Tests.Platform;

/// <summary>Issue 19: a tree becomes a running board and every verdict is tried by attack (hand-made trees via dtc).</summary>
public class AuditByExecutionTests
{
    const string IdentityMaps = "iommu-map = <0 &smmu 0 0x10000>; msi-map = <0 &its 0 0x10000>;";

    static ExecutedAudit Exec(string dts) => IsolationProbes.Run(Dtc.Tree(dts), "hand");

    static ProbeResult Pci(ExecutedAudit run, uint rid) =>
        run.Results.Single(r => r.Master.IsPciHost && r.Range!.First <= rid && rid <= r.Range.Last);

    static void Consistent(ExecutedAudit run) =>
        Assert.All(run.Results, r => Assert.False(r.VerdictContradicted, $"{r.Master.Node.Path} {r.Range}: {r.DmaText}; {r.MsiText}"));

    [DtcFact]
    public void Its_and_smmuv3_with_identity_maps_are_assignable_and_the_attacks_fail()
    {
        var run = Exec(HandTrees.Board(IdentityMaps));
        Assert.Contains(run.Board.Blocks, b => b.Kind == "SMMUv3" && b.Modelled && b.Base == 0x9050000);
        Assert.Contains(run.Board.Blocks, b => b.Kind == "GICv3" && b.Modelled);
        Assert.Contains(run.Board.Blocks, b => b.Kind == "PCIe host bridge" && b.Modelled && b.Base == 0x40_1000_0000);
        var r = Pci(run, 0);
        Assert.Equal(AssignmentVerdict.Isolated, r.Verdict);
        Assert.Equal((4, 4, 0), (r.DmaAttempts, r.DmaFaults, r.DmaLanded));
        Assert.Equal((0, 32), (r.MsiForged, r.MsiVictimVectors));
        Assert.Equal("ITS EventID spray", r.MsiVia);
        Assert.True(r.VfioAttaches);
        Assert.False(r.VfioContradicted);
        Assert.True(r.ThroughKernel);   // vfio-pci functions of the host kernel booted on the board
        Consistent(run);
    }

    [DtcFact]
    public void Partial_iommu_map_uncovered_rids_dma_lands()
    {
        var run = Exec(HandTrees.Board("iommu-map = <0 &smmu 0 1>; msi-map = <0 &its 0 0x10000>;"));
        var covered = Pci(run, 0);
        Assert.Equal((AssignmentVerdict.Isolated, 1, 1), (covered.Verdict, covered.DmaAttempts, covered.DmaFaults));
        var uncovered = Pci(run, 0x100);
        Assert.Equal(AssignmentVerdict.NoIommu, uncovered.Verdict);
        Assert.Equal((4, 4), (uncovered.DmaAttempts, uncovered.DmaLanded));
        Assert.Equal("VFIO: no IOMMU group (vfio cannot bind)", uncovered.VfioDecision);
        Consistent(run);
    }

    [DtcFact]
    public void Zero_length_map_translates_nothing_and_dma_lands_everywhere()
    {
        var run = Exec(HandTrees.Board("iommu-map = <0 &smmu 0 0>; msi-map = <0 &its 0 0x10000>;"));
        var r = Assert.Single(run.Results);
        Assert.Equal((AssignmentVerdict.NoIommu, 4), (r.Verdict, r.DmaLanded));
        Consistent(run);
    }

    [DtcFact]
    public void Iommu_map_mask_folding_every_rid_onto_one_streamid_still_faults()
    {
        var run = Exec(HandTrees.Board("iommu-map = <0 &smmu 0x42 1>; iommu-map-mask = <0>; msi-map = <0 &its 0 0x10000>;"));
        var r = Assert.Single(run.Results);
        Assert.Equal(AssignmentVerdict.Isolated, r.Verdict);
        Assert.Equal(r.DmaAttempts, r.DmaFaults);
        Consistent(run);
    }

    [DtcFact]
    public void Msi_map_collapsing_requesters_lets_one_forge_the_others_and_vfio_is_shown_wrong()
    {
        var run = Exec(HandTrees.Board("iommu-map = <0 &smmu 0 0x10000>; msi-map = <0 &its 7 1>; msi-map-mask = <0>;"));
        var r = Assert.Single(run.Results);
        Assert.Equal(AssignmentVerdict.UnsafeInterruptsOnly, r.Verdict);
        Assert.Equal(32, r.MsiForged);
        Assert.Contains("aliased DeviceID", r.MsiVia);
        Assert.True(r.VfioAttaches);       // the ITS domain is flagged isolated, so type1 attaches …
        Assert.True(r.VfioContradicted);   // … and the attack shows that wrong
        Consistent(run);
    }

    [DtcFact]
    public void Disabled_iommu_leaves_dma_untranslated()
    {
        var run = Exec(HandTrees.Board(IdentityMaps, smmuProps: "status = \"disabled\";"));
        var r = Assert.Single(run.Results);
        Assert.Equal((AssignmentVerdict.NoIommu, 4), (r.Verdict, r.DmaLanded));
        Consistent(run);
    }

    [DtcFact]
    public void Platform_devices_with_and_without_iommus_and_an_msi_parent_inherited_from_an_ancestor()
    {
        var extra = """
            soc { #address-cells = <2>; #size-cells = <2>; ranges; msi-parent = <&its 0x10100>;
                dma@9100000 { reg = <0 0x9100000 0 0x1000>; iommus = <&smmu 0x200>; };
                nodma@9200000 { reg = <0 0x9200000 0 0x1000>; msi-parent = <&its 0x10101>; };
            };
            """;
        var run = Exec(HandTrees.Board(IdentityMaps, extra));
        var dma = run.Results.Single(r => r.Master.Node.Name == "dma@9100000");
        Assert.Equal(AssignmentVerdict.Isolated, dma.Verdict);
        Assert.Equal(0x10100u, dma.Master.DeviceId);   // inherited from the soc node
        Assert.Equal((1, 1, 0), (dma.DmaAttempts, dma.DmaFaults, dma.MsiForged));
        var nodma = run.Results.Single(r => r.Master.Node.Name == "nodma@9200000");
        Assert.Equal((AssignmentVerdict.NoIommu, 1), (nodma.Verdict, nodma.DmaLanded));
        Consistent(run);
    }

    [DtcFact]
    public void Pre_its_window_lets_a_device_choose_any_deviceid()
    {
        var preIts = """
            its: msi-controller@8080000 { compatible = "arm,gic-v3-its"; msi-controller; #msi-cells = <1>;
                reg = <0 0x8080000 0 0x20000>; socionext,synquacer-pre-its = <0x0a000000 0x200000>; };
            """;
        var run = Exec(HandTrees.Board(IdentityMaps, gicChildren: preIts));
        Assert.Contains(run.Board.Blocks, b => b.Status.Contains("pre-ITS", StringComparison.Ordinal) && b.Modelled);
        var r = Assert.Single(run.Results);
        Assert.Equal(AssignmentVerdict.UnsafeInterruptsOnly, r.Verdict);
        Assert.Equal(32, r.MsiForged);
        Assert.Equal("pre-ITS window DeviceID choice", r.MsiVia);
        Assert.False(r.VfioAttaches);
        Assert.True(r.ThroughKernel);
        Consistent(run);
    }

    const string Gicv2Board = """
        / {
            #address-cells = <2>; #size-cells = <2>;
            memory@80000000 { device_type = "memory"; reg = <0 0x80000000 0 0x20000000>; };
            gic: interrupt-controller@2c010000 {
                compatible = "arm,gic-400"; #interrupt-cells = <3>; interrupt-controller;
                #address-cells = <2>; #size-cells = <2>; ranges;
                reg = <0 0x2c010000 0 0x1000>, <0 0x2c02f000 0 0x2000>;
                v2m: v2m@2c1c0000 { compatible = "arm,gic-v2m-frame"; msi-controller; reg = <0 0x2c1c0000 0 0x1000>;
                    arm,msi-base-spi = <224>; arm,msi-num-spis = <32>; };
            };
            smmu: iommu@2b500000 { compatible = "arm,smmu-v3"; reg = <0 0x2b500000 0 0x20000>; #iommu-cells = <1>; };
            pcie@40000000 { device_type = "pci"; reg = <0 0x40000000 0 0x10000000>; bus-range = <0 0xff>;
                #address-cells = <3>; #size-cells = <2>; msi-parent = <&v2m>; iommu-map = <0 &smmu 0 0x10000>;
                %EXTRA% };
        };
        """;

    [DtcFact]
    public void Gicv2m_setspi_spray_raises_the_victims_vectors()
    {
        var run = Exec(Gicv2Board.Replace("%EXTRA%", "", StringComparison.Ordinal));
        var r = Assert.Single(run.Results);
        Assert.Equal(AssignmentVerdict.UnsafeInterruptsOnly, r.Verdict);
        Assert.Equal(r.DmaAttempts, r.DmaFaults);
        Assert.Equal("GICv2m SETSPI", r.MsiVia);
        // the victim is a vfio-pci function: VFIO_DEVICE_SET_IRQS gives its 32 MSI-X vectors the frame's 32 SPIs, and
        // every one of its eventfds fires
        Assert.Equal(32, r.MsiVictimVectors);
        Assert.Equal(32, r.MsiForged);
        Assert.True(r.ThroughKernel);
        Assert.Equal("VFIO: SET_IOMMU -EPERM unless allow_unsafe_interrupts=1", r.VfioDecision);
        Consistent(run);
    }

    [DtcFact]
    public void In_controller_msi_raises_by_data_alone()
    {
        var dts = Gicv2Board.Replace("msi-parent = <&v2m>;", "msi-controller; reg-names = \"config\", \"msi\";", StringComparison.Ordinal)
            .Replace("reg = <0 0x40000000 0 0x10000000>;", "reg = <0 0x40000000 0 0x10000000>, <0 0x50000000 0 0x1000>;", StringComparison.Ordinal)
            .Replace("%EXTRA%", "", StringComparison.Ordinal);
        var run = Exec(dts);
        Assert.Contains(run.Audit.MsiControllers, m => m.Kind == MsiControllerKind.InController);
        var r = Assert.Single(run.Results);
        Assert.Equal(AssignmentVerdict.UnsafeInterruptsOnly, r.Verdict);
        Assert.Equal((32, "in-controller MSI data spray"), (r.MsiForged, r.MsiVia));
        // the victim's 32 MSI-X vectors are the block's data values, delivered by its chained SPI handler to VFIO eventfds
        Assert.True(r.ThroughKernel);
        Assert.Equal(32, r.MsiVictimVectors);
        Assert.Contains(run.Kernel!.MsiDomains, d => d is Doorbell.Host.Kernel.InControllerMsiDriver);
        Consistent(run);
    }

    // --- SMMUv2-class IOMMUs: the SMMUv2 model of their part, the probes through the arm-smmu driver ---------------

    static string SmmuV2Board(string compatible, string maps, string reg = "0 0x9050000 0 0x20000") =>
        HandTrees.Board(maps).Replace("compatible = \"arm,smmu-v3\"; reg = <0 0x9050000 0 0x20000>;",
            $"compatible = {compatible}; reg = <{reg}>;", StringComparison.Ordinal);

    [DtcTheory]
    [InlineData("\"arm,mmu-500\"", "MMU-500")]
    [InlineData("\"qcom,sdm845-smmu-500\", \"arm,mmu-500\"", "MMU-500")]
    [InlineData("\"arm,smmu-v2\"", "arm,smmu-v2: MMU-500 ID registers")]
    [InlineData("\"marvell,ap806-smmu-500\"", "marvell,ap806-smmu-500: MMU-500 ID registers")]
    public void Smmuv2_class_iommus_are_the_smmuv2_model_and_dma_to_an_unmapped_iova_faults(string compatible, string part)
    {
        // 15-bit StreamIDs (the model's NUMSIDB): the map covers what the SMMU can match
        var run = Exec(SmmuV2Board(compatible, "iommu-map = <0 &smmu 0 0x8000>; msi-map = <0 &its 0 0x10000>;"));
        Assert.Contains(run.Board.Blocks, b => b.Kind == "SMMUv2" && b.Modelled && b.Base == 0x9050000 && b.Status == $"SMMUv2 model ({part})");
        Assert.Single(run.Board.SmmuV2s);
        var r = Pci(run, 0);
        Assert.Equal(AssignmentVerdict.Isolated, r.Verdict);
        Assert.Null(r.DmaNotRun);
        Assert.Equal((4, 4, 0), (r.DmaAttempts, r.DmaFaults, r.DmaLanded));   // context faults read by the arm-smmu handlers
        Assert.Equal((0, 32), (r.MsiForged, r.MsiVictimVectors));
        Consistent(run);
    }

    [DtcFact]
    public void The_dma_probe_goes_through_vfio_and_set_iommu_is_vfios_own_decision()
    {
        var vfio = Doorbell.Tracing.TraceCategories.ParseMask("vfio*", out _)!.Value;
        // ITS: type1 attaches, the user maps a page, the device's write to an unmapped IOVA faults
        var its = IsolationProbes.Run(Dtc.Tree(HandTrees.Board(IdentityMaps)), "hand", vfio);
        var lines = its.Board.Machine.Trace.Events.Select(e => e.Message).ToList();
        Assert.Contains(lines, l => l.StartsWith("vfio_set_iommu VFIO_SET_IOMMU(fd 3, VFIO_TYPE1v2_IOMMU) = 0", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("vfio_dma_map VFIO_IOMMU_MAP_DMA(fd 3, vaddr 0x7f0000000000, iova 0x10000000, size 0x1000, READ|WRITE) = 0", StringComparison.Ordinal));
        Assert.Equal("VFIO: attaches (MSI domain flagged isolated)", Pci(its, 0).VfioDecision);
        // GICv2m behind an SMMUv2: type1 refuses (-EPERM), the attack proceeds with allow_unsafe_interrupts=1
        var v2m = IsolationProbes.Run(Dtc.Tree(SmmuV2Board("\"arm,mmu-500\"", "iommu-map = <0 &smmu 0 0x8000>;", "0 0x9050000 0 0x20000")
            .Replace(HandTrees.Its, "v2m: msi-controller@8020000 { compatible = \"arm,gic-v2m-frame\"; msi-controller; reg = <0 0x8020000 0 0x1000>; };", StringComparison.Ordinal)
            .Replace("pcie@10000000 {", "pcie@10000000 { msi-parent = <&v2m>;", StringComparison.Ordinal)), "hand", vfio);
        var setIommu = v2m.Board.Machine.Trace.Events.Where(e => e.Message.StartsWith("vfio_set_iommu", StringComparison.Ordinal)).Select(e => e.Message).ToList();
        Assert.Contains(setIommu, l => l.EndsWith("= -EPERM", StringComparison.Ordinal));
        Assert.Contains(setIommu, l => l.EndsWith("= 0", StringComparison.Ordinal));        // the allow_unsafe_interrupts=1 host
        var r = Pci(v2m, 0);
        Assert.Equal("VFIO: SET_IOMMU -EPERM unless allow_unsafe_interrupts=1", r.VfioDecision);
        Assert.False(r.VfioAttaches);
        Assert.Equal((4, 4), (r.DmaAttempts, r.DmaFaults));
    }

    [DtcFact]
    public void Mmu401_has_15_bit_stream_ids_and_its_uncovered_rids_land()
    {
        // MMU-401: 15-bit StreamIDs, 8 context banks, 16 SMRs: 4 probes per range must not exhaust them
        var run = Exec(SmmuV2Board("\"arm,mmu-401\"", "iommu-map = <0 &smmu 0 0x8000>; msi-map = <0 &its 0 0x10000>;", "0 0x9050000 0 0x10000"));
        Assert.Contains(run.Board.Blocks, b => b.Kind == "SMMUv2" && b.Modelled && b.Status == "SMMUv2 model (MMU-401)");
        var covered = Pci(run, 0x1234);
        Assert.Equal((AssignmentVerdict.Isolated, 4, 4), (covered.Verdict, covered.DmaAttempts, covered.DmaFaults));
        var uncovered = Pci(run, 0x9000);
        Assert.Equal((AssignmentVerdict.NoIommu, 4), (uncovered.Verdict, uncovered.DmaLanded));
        Consistent(run);
    }

    [DtcFact]
    public void Stream_ids_wider_than_the_smmuv2_implements_are_not_probed_and_say_why()
    {
        // identity over 16-bit RIDs: arm-smmu refuses StreamIDs above 0x7fff (probe_device), the rest are attacked
        var run = Exec(SmmuV2Board("\"arm,mmu-500\"", IdentityMaps));
        var r = Pci(run, 0);
        Assert.Null(r.DmaNotRun);
        Assert.Equal((2, 2, 0), (r.DmaAttempts, r.DmaFaults, r.DmaLanded));   // functions 0x0000 and 0x5500 of 0x0000, 0x5500, 0xaa00, 0xff00
        var high = IsolationProbes.Run(Dtc.Tree(SmmuV2Board("\"arm,mmu-500\"", "iommu-map = <0 &smmu 0x8000 0x8000>; msi-map = <0 &its 0 0x10000>;")), "hand");
        Assert.Contains("StreamID 0x8000", Pci(high, 0).DmaNotRun, StringComparison.Ordinal);
    }

    [DtcFact]
    public void An_iommu_kind_doorbell_does_not_model_stays_reported_as_such()
    {
        var run = Exec(SmmuV2Board("\"acme,frobnicator-iommu\"", IdentityMaps));
        var block = Assert.Single(run.Board.Blocks, b => b.Base == 0x9050000);
        Assert.False(block.Modelled);
        Assert.Contains("IOMMU kind Doorbell does not model (acme,frobnicator-iommu)", block.Status, StringComparison.Ordinal);
        Assert.Empty(run.Board.SmmuV2s);
        Assert.Empty(run.Board.SmmuV3s);
        Assert.All(run.Results.Where(r => r.Master.IsPciHost && r.Verdict != AssignmentVerdict.NoIommu),
            r => Assert.Contains("does not model", r.DmaNotRun ?? "(ran)", StringComparison.Ordinal));
    }

    [Fact]
    public void Every_shared_dtb_audits_with_execution_and_no_verdict_is_contradicted()
    {
        var files = Directory.EnumerateFiles(SharedData.File("data/dtb"), "*.dtb", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(24, files.Count);
        var probes = 0;
        var throughKernel = 0;
        foreach (var f in files)
        {
            var run = IsolationProbes.Run(Fdt.Parse(File.ReadAllBytes(f)), Path.GetFileName(f));
            Assert.NotEmpty(run.Board.Blocks);
            // the host kernel boots on every board (hikey960's packed GICv2 frames at the sizes its tree gives)
            Assert.True(run.Kernel is not null, $"{f}: {run.BootError}");
            throughKernel += run.ThroughKernel;
            Assert.All(run.Results, r => Assert.False(r.VerdictContradicted, $"{f} {r.Master.Node.Path} {r.Range}: {r.DmaText}; {r.MsiText}"));
            probes += run.Results.Count(r => r.DmaNotRun is null || r.MsiNotRun is null);
        }
        Assert.True(probes > 100, $"only {probes} probes ran");
        Assert.True(throughKernel >= 220, $"only {throughKernel} PCI ranges ran through vfio-pci on the booted kernel");
        // the SMMUv3 + ITS boards are proven, not only judged
        var fvp = IsolationProbes.Run(Fdt.Parse(File.ReadAllBytes(SharedData.File("data/dtb/boards/fvp-base-revc.dtb"))), "fvp");
        var host = fvp.Results.Single(r => r.Master.IsPciHost);
        Assert.Equal((AssignmentVerdict.Isolated, 4, 4, 0), (host.Verdict, host.DmaAttempts, host.DmaFaults, host.MsiForged));
        // SMMUv2-class IOMMUs were reported "model pending" until the SMMUv2 model landed; now Juno's MMU-401 is that
        // model and the PCIe host's DMA probes run through it (and fault), while GICv2m still lets MSIs be forged
        var juno = IsolationProbes.Run(Fdt.Parse(File.ReadAllBytes(SharedData.File("data/dtb/boards/juno-r1.dtb"))), "juno");
        Assert.DoesNotContain(juno.Board.Blocks, b => b.Status.Contains("model pending", StringComparison.Ordinal));
        Assert.Contains(juno.Board.Blocks, b => b.Kind == "SMMUv2" && b.Modelled && b.Status == "SMMUv2 model (MMU-401)");
        var junoHost = juno.Results.Single(r => r.Master.IsPciHost);
        Assert.Equal(32, junoHost.MsiForged);
        Assert.Null(junoHost.DmaNotRun);
        Assert.True(junoHost.DmaAttempts > 0 && junoHost.DmaFaults == junoHost.DmaAttempts, junoHost.DmaText);
    }

    [Fact]
    public void Mutated_trees_never_crash_or_hang_the_board_builder_or_the_probes()
    {
        var seeds = new[] { "qemu/virt-gicv3-its-smmuv3.dtb", "qemu/virt-gicv2m-smmuv3.dtb", "boards/synquacer-developerbox-fw-pcie-enabled.dtb", "boards/fvp-base-revc.dtb" }
            .Select(f => File.ReadAllBytes(SharedData.File("data/dtb/" + f))).ToList();
        var rng = new Random(19);
        var built = 0;
        var sw = Stopwatch.StartNew();
        for (var i = 0; i < 160; i++)
        {
            var seed = seeds[i % seeds.Count];
            var fdt = Fdt.TryParse(seed, out _)!;
            var blob = Mutate(seed, fdt, rng);
            var parsed = Fdt.TryParse(blob, out _);
            if (parsed is null) continue;
            Assert.True(Bounded(() => IsolationProbes.Run(parsed, "fuzz"), TimeSpan.FromSeconds(30)), $"mutation {i} did not finish (hang)");
            built++;
        }
        Assert.True(built > 40, $"only {built} mutated trees parsed");
        Assert.True(sw.Elapsed < TimeSpan.FromMinutes(3));
    }

    /// <summary>Structure-aware: overwrite a cell of a property the audit reads (cells, phandles, maps, reg) with an edge value, or flip bytes.</summary>
    static byte[] Mutate(byte[] seed, Fdt fdt, Random rng)
    {
        var blob = (byte[])seed.Clone();
        var names = new[] { "#iommu-cells", "#msi-cells", "iommu-map", "msi-map", "iommu-map-mask", "msi-map-mask", "msi-parent", "iommus", "reg", "bus-range", "phandle", "#address-cells", "#size-cells", "ranges", "socionext,synquacer-pre-its", "arm,msi-base-spi" };
        var edges = new uint[] { 0, 1, 0xffffffff, 0xfffffffe, 0xfffffffd, 0x10000, 0x7fffffff, 0x80000000, 2, 3 };
        var props = fdt.AllNodes.SelectMany(n => n.Properties).Where(p => names.Contains(p.Name) && p.Value.Length >= 4).ToList();
        var edits = 1 + rng.Next(4);
        for (var k = 0; k < edits; k++)
        {
            if (props.Count == 0 || rng.Next(5) == 0)
            {
                blob[40 + rng.Next(blob.Length - 40)] = (byte)rng.Next(256);
                continue;
            }
            var p = props[rng.Next(props.Count)];
            var at = IndexOf(blob, p.Value);
            if (at < 0) continue;
            var cell = rng.Next(p.CellCount);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(blob.AsSpan(at + cell * 4), edges[rng.Next(edges.Length)]);
        }
        return blob;
    }

    static bool Bounded(Action a, TimeSpan limit)
    {
        var t = Task.Run(a);
        if (!t.Wait(limit)) return false;
        t.GetAwaiter().GetResult(); // rethrows what the run threw
        return true;
    }

    static int IndexOf(byte[] hay, byte[] needle) => hay.AsSpan().IndexOf(needle);
}

/// <summary>The HTML report opens in headless Chromium and its SVG topology renders.</summary>
public class AuditReportChromiumTests
{
    static string? Chromium { get; } = new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome" }.FirstOrDefault(File.Exists);

    public sealed class ChromiumFactAttribute : FactAttribute
    {
        public ChromiumFactAttribute()
        {
            if (Chromium is null) Skip = "chromium not found (scripts/setup-test-deps.sh installs Debian's chromium): HTML report rendering test skipped";
        }
    }

    [ChromiumFact]
    public void Report_pages_render_their_topology_in_headless_chromium()
    {
        var dir = Directory.CreateTempSubdirectory("doorbell-audit-report");
        try
        {
            var runs = new[] { "boards/fvp-base-revc.dtb", "boards/juno-r1.dtb" }
                .Select(f => IsolationProbes.Run(Fdt.Parse(File.ReadAllBytes(SharedData.File("data/dtb/" + f))), f)).ToList();
            AuditHtml.WriteReport(runs, dir.FullName);
            Assert.True(File.Exists(Path.Combine(dir.FullName, "index.html")));
            var page = Path.Combine(dir.FullName, AuditHtml.PageName("boards/fvp-base-revc.dtb"));
            var dom = DumpDom(page);
            var m = System.Text.RegularExpressions.Regex.Match(dom, @"rendered (\d+) of (\d+) topology boxes");
            Assert.True(m.Success, "the page's script did not run: " + dom[..Math.Min(400, dom.Length)]);
            Assert.Equal(m.Groups[2].Value, m.Groups[1].Value);
            Assert.True(int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) >= 3);
            Assert.Contains("ASSIGNABLE", dom);
            Assert.Contains("4/4 faults", dom);
            var index = DumpDom(Path.Combine(dir.FullName, "index.html"));
            Assert.Contains("juno-r1", index);
        }
        finally { dir.Delete(true); }
    }

    static string DumpDom(string file)
    {
        var profile = Directory.CreateTempSubdirectory("doorbell-chromium");
        try
        {
            var psi = new ProcessStartInfo(Chromium!)
            {
                RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            };
            foreach (var a in new[] { "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + profile.FullName, "--dump-dom", "file://" + file })
                psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            var err = p.StandardError.ReadToEndAsync();
            var output = p.StandardOutput.ReadToEndAsync();
            if (!p.WaitForExit(180_000)) { p.Kill(true); throw new TimeoutException("chromium did not finish in 180 s"); }
            return output.Result;
        }
        finally { try { profile.Delete(true); } catch (IOException) { } }
    }
}
