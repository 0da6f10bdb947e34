using Doorbell.Host.Irq;
using Doorbell.Platform.DeviceTree;

namespace Doorbell.Tests.Platform;

/// <summary>
/// Issue 19: Doorbell's host kernel boots on the board a device tree describes — every IOMMU by its driver at its reg,
/// every MSI controller by its driver, every ECAM host bridge enumerated with its own bus range and id maps — and the
/// probes run on that kernel through VFIO (dtc-compiled hand-made trees).
/// </summary>
public class DtKernelBootTests
{
    // Two SMMUv3s and an MMU-500, two ITSes, two host bridges: the first splits its requesters between the SMMUv3s
    // (iommu-map) and sends all MSIs to ITS 0; the second (buses 80–8f) goes to the MMU-500 with offset StreamIDs and
    // to ITS 1 with offset DeviceIDs.
    const string Tree = """
        / {
            #address-cells = <2>; #size-cells = <2>;
            model = "several of each";
            memory@40000000 { device_type = "memory"; reg = <0 0x40000000 0 0x40000000>; };
            gic: interrupt-controller@8000000 {
                compatible = "arm,gic-v3"; #interrupt-cells = <3>; interrupt-controller;
                #address-cells = <2>; #size-cells = <2>; ranges;
                reg = <0 0x8000000 0 0x10000>, <0 0x80a0000 0 0xf60000>;
                its0: msi-controller@8080000 { compatible = "arm,gic-v3-its"; msi-controller; #msi-cells = <1>; reg = <0 0x8080000 0 0x20000>; };
                its1: msi-controller@9800000 { compatible = "arm,gic-v3-its"; msi-controller; #msi-cells = <1>; reg = <0 0x9800000 0 0x20000>; };
            };
            smmu_a: iommu@9050000 { compatible = "arm,smmu-v3"; reg = <0 0x9050000 0 0x20000>; #iommu-cells = <1>; };
            smmu_b: iommu@9070000 { compatible = "arm,smmu-v3"; reg = <0 0x9070000 0 0x20000>; #iommu-cells = <1>; };
            smmu_c: iommu@9100000 { compatible = "arm,mmu-500"; reg = <0 0x9100000 0 0x20000>; #iommu-cells = <1>; #global-interrupts = <1>; };
            pcie@10000000 {
                compatible = "pci-host-ecam-generic"; device_type = "pci";
                reg = <0x40 0x10000000 0 0x10000000>; bus-range = <0 0xff>;
                #address-cells = <3>; #size-cells = <2>;
                iommu-map = <0 &smmu_a 0 0x8000>, <0x8000 &smmu_b 0 0x8000>;
                msi-map = <0 &its0 0 0x10000>;
            };
            pcie@20000000 {
                compatible = "pci-host-ecam-generic"; device_type = "pci";
                reg = <0x40 0x20000000 0 0x1000000>; bus-range = <0x80 0x8f>;
                #address-cells = <3>; #size-cells = <2>;
                iommu-map = <0x8000 &smmu_c 0x100 0x1000>;
                msi-map = <0x8000 &its1 0x20000 0x1000>;
            };
        };
        """;

    [DtcFact]
    public void The_kernel_probes_every_iommu_and_its_and_enumerates_every_host_bridge_with_its_maps()
    {
        var run = IsolationProbes.Run(Dtc.Tree(Tree), "several");
        var k = run.Kernel ?? throw new InvalidOperationException(run.BootError);
        Assert.Equal(["/iommu@9050000", "/iommu@9070000", "/iommu@9100000"], k.Iommus.Select(i => i.Instance.Name).Order(StringComparer.Ordinal));
        Assert.Empty(k.ProbeErrors);
        Assert.Equal(2, k.MsiDomains.Count);
        Assert.All(k.MsiDomains, d => Assert.IsType<ItsDriver>(d));
        Assert.Equal(["/pcie@10000000", "/pcie@20000000"], k.HostBridges.Select(b => b.Description.Name));
        var a = k.Iommus.Single(i => i.Instance.Name == "/iommu@9050000").Driver;
        var b = k.Iommus.Single(i => i.Instance.Name == "/iommu@9070000").Driver;
        var c = k.Iommus.Single(i => i.Instance.Name == "/iommu@9100000").Driver;
        var its0 = k.MsiControllers["/interrupt-controller@8000000/msi-controller@8080000"];
        var its1 = k.MsiControllers["/interrupt-controller@8000000/msi-controller@9800000"];
        // bridge 0: fwspec and DeviceID from its maps (of_map_id), the SMMU by the RID's half
        var first = k.Functions.Where(f => f.HostBridge.Description.Name == "/pcie@10000000").ToList();
        Assert.NotEmpty(first);
        Assert.Contains(first, f => f.Group.Driver == a);
        Assert.Contains(first, f => f.Group.Driver == b);
        foreach (var f in first)
        {
            var rid = (uint)(f.Bus << 8 | f.Devfn);
            Assert.Same(rid < 0x8000 ? a : b, f.Group.Driver);
            Assert.Equal([rid & 0x7fff], f.IommuDevice.StreamIds);
            Assert.Equal(rid, f.DeviceId);
            Assert.Same(its0, f.MsiDomain);
            Assert.StartsWith("0000:", f.Name, StringComparison.Ordinal);
        }
        // bridge 1: PCI domain 1, buses numbered from its bus-range start, offset StreamIDs at the MMU-500 and DeviceIDs at ITS 1
        var second = k.Functions.Where(f => f.HostBridge.Description.Name == "/pcie@20000000").ToList();
        Assert.Equal(["0001:80:00.0", "0001:85:00.0", "0001:8a:00.0", "0001:8f:00.0"], second.Select(f => f.Name));
        foreach (var f in second)
        {
            var rid = (uint)(f.Bus << 8 | f.Devfn);
            Assert.Same(c, f.Group.Driver);
            Assert.Equal([0x100 + rid - 0x8000], f.IommuDevice.StreamIds);
            Assert.Equal(0x20000 + rid - 0x8000, f.DeviceId);
            Assert.Same(its1, f.MsiDomain);
        }
        // groups never span two IOMMUs
        Assert.All(k.Groups, g => Assert.Single(g.Devices.Select(_ => g.Driver).Distinct()));
    }

    [DtcFact]
    public void Every_range_of_every_bridge_is_probed_through_vfio_pci_and_the_attacks_fail()
    {
        var run = IsolationProbes.Run(Dtc.Tree(Tree), "several");
        Assert.Equal(0, run.Contradictions);
        var pci = run.Results.Where(r => r.Master.IsPciHost).ToList();
        Assert.Equal(3, pci.Count); // 0000–7fff, 8000–ffff on bridge 0; 8000–8fff on bridge 1
        Assert.All(pci, r =>
        {
            Assert.True(r.ThroughKernel, r.Master.Node.Path);
            Assert.Equal(AssignmentVerdict.Isolated, r.Verdict);
            Assert.True(r.DmaAttempts > 0 && r.DmaFaults == r.DmaAttempts, r.DmaText);
            Assert.Equal((0, 32, "ITS EventID spray"), (r.MsiForged, r.MsiVictimVectors, r.MsiVia));
            Assert.Equal("VFIO: attaches (MSI domain flagged isolated)", r.VfioDecision);
        });
        Assert.Equal(3, run.ThroughKernel);
        Assert.Contains("3 IOMMU driver(s), 2 MSI domain(s), 2 host bridge(s)", AuditReport.KernelText(run), StringComparison.Ordinal);
    }

    [DtcFact]
    public void The_victims_vectors_are_vfio_eventfds_set_by_device_set_irqs()
    {
        // msi-map collapsing every requester onto DeviceID 7: the victim's MSI-X vectors, given eventfds through VFIO,
        // all fire when another requester sprays EventIDs with the shared DeviceID
        var mask = Doorbell.Tracing.TraceCategories.ParseMask("vfio*", out _)!.Value;
        var run = IsolationProbes.Run(Dtc.Tree(HandTrees.Board("iommu-map = <0 &smmu 0 0x10000>; msi-map = <0 &its 7 1>; msi-map-mask = <0>;")), "hand", mask);
        var r = Assert.Single(run.Results);
        Assert.True(r.ThroughKernel);
        Assert.Equal((32, 32, "ITS EventID spray, aliased DeviceID"), (r.MsiForged, r.MsiVictimVectors, r.MsiVia));
        var lines = run.Board.Machine.Trace.Events.Select(e => e.Message).ToList();
        Assert.Contains(lines, l => l.Contains("VFIO_DEVICE_SET_IRQS", StringComparison.Ordinal) && l.Contains("MSIX", StringComparison.OrdinalIgnoreCase));
        Assert.Equal(32, lines.Count(l => l.Contains("handled by vfio-msix[", StringComparison.Ordinal)));
    }

    [DtcFact]
    public void A_range_whose_iommu_has_no_model_is_reported_and_not_attacked()
    {
        var run = IsolationProbes.Run(Dtc.Tree(Tree.Replace("compatible = \"arm,mmu-500\"", "compatible = \"acme,frobnicator-iommu\"", StringComparison.Ordinal)), "several");
        var k = run.Kernel!;
        Assert.Equal(2, k.Iommus.Count);
        var second = run.Results.Single(r => r.Master.Node.Path == "/pcie@20000000");
        Assert.Contains("does not model", second.DmaNotRun, StringComparison.Ordinal);
        Assert.Contains(k.UntranslatedFunctions, u => u.Iommu == "/iommu@9100000");
        Assert.Equal(0, run.Contradictions);
    }

    [DtcFact]
    public void More_buses_than_root_ports_are_reached_through_switches_and_every_range_runs_through_vfio_pci()
    {
        // 48 one-bus ranges: the even buses covered by iommu-map (StreamIDs far apart), the odd ones not, so verdicts
        // alternate. More buses than root-bus slots: firmware puts switches below root ports, the kernel keeps the bus
        // numbers, and every range gets its function
        var entries = string.Join(", ", Enumerable.Range(0, 24).Select(i => $"<0x{i << 9:x} &smmu 0x{i << 10:x} 0x100>"));
        var run = IsolationProbes.Run(Dtc.Tree(HandTrees.Board($"iommu-map = {entries}; msi-map = <0 &its 0 0x10000>; bus-range = <0 0x2f>;")), "hand");
        var pci = run.Results.Where(r => r.Master.IsPciHost).ToList();
        Assert.Equal(48, pci.Count);
        Assert.All(pci, r => Assert.True(r.DmaAttempts > 0, $"{r.Range}: {r.DmaText}"));
        // every bus is some range's first probe, so the switch's two internal buses cost two ranges their function
        // (those run as raw requesters); the other 46 run through vfio-pci
        Assert.Equal(46, pci.Count(r => r.ThroughKernel));
        var covered = pci.Where(r => (r.Range!.First >> 8) % 2 == 0).ToList();
        Assert.All(covered, r => Assert.Equal((AssignmentVerdict.Isolated, r.DmaAttempts, 0, 32), (r.Verdict, r.DmaFaults, r.MsiForged, r.MsiVictimVectors)));
        Assert.All(pci.Except(covered), r => Assert.Equal((AssignmentVerdict.NoIommu, r.DmaAttempts), (r.Verdict, r.DmaLanded)));
        var k = run.Kernel!;
        Assert.Contains(k.HostBridges[0].Pci.Functions, f => f.PortType == 5);   // a switch upstream port
        Assert.Contains(k.HostBridges[0].Pci.Functions, f => f.PortType == 6);   // its downstream ports
        // every translated probe function is its own IOMMU group (ACS on every port), StreamID = (bus / 2) << 10
        Assert.NotEmpty(k.Functions);
        foreach (var f in k.Functions)
            Assert.Equal([(uint)(f.Bus / 2) << 10 | f.Devfn], f.IommuDevice.StreamIds);
        Assert.Equal(k.Functions.Count, k.Groups.Count);
        Assert.Equal(0, run.Contradictions);
    }
}
