namespace Doorbell.Platform.DeviceTree;

// Which devices of a platform could be handed to a userspace driver or a guest, decided the way Linux decides:
// - DMA isolation needs an IOMMU reference (iommus / iommu-map, Devicetree bindings iommu.txt and pci-iommu.txt)
//   to an enabled IOMMU node (one with #iommu-cells).
// - MSI isolation (vfio_iommu_type1 / iommufd: msi_device_has_isolated_msi) needs the device's MSI domain to carry
//   IRQ_DOMAIN_FLAG_ISOLATED_MSI. Among Arm MSI controllers only the GICv3 ITS sets it (its_init_domain), and not
//   in the Socionext SynQuacer pre-ITS configuration ("socionext,synquacer-pre-its"). GICv2m frames and
//   controller-internal MSI blocks do not. A device with no MSI domain at all is not isolated either.
// - VFIO type1 refuses to attach a group without isolated MSIs (EPERM) unless allow_unsafe_interrupts is set.

public enum MsiControllerKind { GicV3Its, GicV3PreIts, GicV2m, Other }

public enum IommuKind { SmmuV3, SmmuV2, Other }

public sealed record MsiControllerInfo(FdtNode Node, MsiControllerKind Kind)
{
    public bool Isolates => Kind == MsiControllerKind.GicV3Its;
    public string Describe() => Kind switch
    {
        MsiControllerKind.GicV3Its => "GICv3 ITS",
        MsiControllerKind.GicV3PreIts => "GICv3 ITS (SynQuacer pre-ITS: no DeviceID)",
        MsiControllerKind.GicV2m => "GICv2m frame",
        _ => "MSI controller " + string.Join(",", Node.Compatible.Take(1)),
    } + " " + Node.Path;
}

public sealed record IommuInfo(FdtNode Node, IommuKind Kind)
{
    public string Describe() => Kind switch
    {
        IommuKind.SmmuV3 => "SMMUv3",
        IommuKind.SmmuV2 => "SMMUv2",
        _ => "IOMMU " + string.Join(",", Node.Compatible.Take(1)),
    } + " " + Node.Path;
}

public enum AssignmentVerdict
{
    /// <summary>DMA behind an IOMMU and MSIs isolated: VFIO attaches by default.</summary>
    Isolated,
    /// <summary>DMA behind an IOMMU, MSIs not isolated: VFIO refuses unless allow_unsafe_interrupts.</summary>
    UnsafeInterruptsOnly,
    /// <summary>No IOMMU translates this master's DMA: cannot be isolated at all.</summary>
    NoIommu,
}

public sealed record MasterAudit(
    FdtNode Node,
    bool IsPciHost,
    IReadOnlyList<IommuInfo> Iommus,
    IReadOnlyList<MsiControllerInfo> MsiControllers,
    AssignmentVerdict Verdict,
    string Reason);

public sealed record PlatformAudit(string Name, string? Model, IReadOnlyList<IommuInfo> Iommus,
    IReadOnlyList<MsiControllerInfo> MsiControllers, IReadOnlyList<MasterAudit> Masters);

public static class IsolationAudit
{
    public static PlatformAudit Audit(Fdt fdt, string name)
    {
        ArgumentNullException.ThrowIfNull(fdt);
        var iommus = new Dictionary<FdtNode, IommuInfo>();
        var msis = new Dictionary<FdtNode, MsiControllerInfo>();
        foreach (var n in fdt.AllNodes)
        {
            if (n.Has("#iommu-cells") && n.IsEnabled)
                iommus[n] = new IommuInfo(n, ClassifyIommu(n));
            if (n.Has("msi-controller") && n.IsEnabled && EnabledPath(n))
                msis[n] = new MsiControllerInfo(n, ClassifyMsi(n));
        }

        var masters = new List<MasterAudit>();
        foreach (var n in fdt.AllNodes)
        {
            if (!n.IsEnabled || !EnabledPath(n)) continue;
            var isPciHost = n.Property("device_type")?.AsString() == "pci";
            var hasIommuRef = n.Has("iommus") || n.Has("iommu-map");
            if (!isPciHost && !hasIommuRef && !n.Has("msi-parent") && !n.Has("msi-map")) continue;
            if (msis.ContainsKey(n) && !isPciHost && !hasIommuRef) continue; // an MSI controller naming its own parent

            var iommuRefs = new List<IommuInfo>();
            var dmaOk = hasIommuRef;
            foreach (var target in ReferencedNodes(fdt, n, "iommus", "#iommu-cells", mapStyle: false)
                         .Concat(ReferencedNodes(fdt, n, "iommu-map", "#iommu-cells", mapStyle: true)))
            {
                if (target is not null && iommus.TryGetValue(target, out var info)) { if (!iommuRefs.Contains(info)) iommuRefs.Add(info); }
                else dmaOk = false; // a reference to a missing or disabled IOMMU isolates nothing
            }

            var msiRefs = new List<MsiControllerInfo>();
            var msiOk = true;
            var msiTargets = n.Has("msi-map")
                ? ReferencedNodes(fdt, n, "msi-map", "#msi-cells", mapStyle: true).ToList()
                : InheritedMsiParents(fdt, n).ToList();
            if (msiTargets.Count == 0) msiOk = false;
            foreach (var target in msiTargets)
            {
                if (target is not null && msis.TryGetValue(target, out var info))
                {
                    if (!msiRefs.Contains(info)) msiRefs.Add(info);
                    msiOk &= info.Isolates;
                }
                else msiOk = false;
            }

            AssignmentVerdict verdict;
            string reason;
            if (!dmaOk || iommuRefs.Count == 0)
            {
                verdict = AssignmentVerdict.NoIommu;
                reason = hasIommuRef ? "its IOMMU reference points to no enabled IOMMU" : "no iommus/iommu-map: DMA is untranslated";
            }
            else if (!msiOk)
            {
                verdict = AssignmentVerdict.UnsafeInterruptsOnly;
                reason = msiRefs.Count == 0
                    ? "no MSI domain (no msi-parent/msi-map): MSIs are not isolated"
                    : "MSIs go to " + string.Join(", ", msiRefs.Where(m => !m.Isolates).Select(m => m.Describe())) + ", which cannot tell writers apart";
            }
            else
            {
                verdict = AssignmentVerdict.Isolated;
                reason = "DMA translated by the IOMMU, MSIs tagged with DeviceID at the ITS";
            }
            masters.Add(new MasterAudit(n, isPciHost, iommuRefs, msiRefs, verdict, reason));
        }
        return new PlatformAudit(name, fdt.Model, [.. iommus.Values], [.. msis.Values], masters);
    }

    static bool EnabledPath(FdtNode n)
    {
        for (var p = n.Parent; p is not null; p = p.Parent)
            if (!p.IsEnabled) return false;
        return true;
    }

    static IommuKind ClassifyIommu(FdtNode n)
    {
        if (n.IsCompatible("arm,smmu-v3")) return IommuKind.SmmuV3;
        foreach (var c in n.Compatible)
            if (c is "arm,mmu-500" or "arm,smmu-v2" or "arm,smmu-v1" or "arm,mmu-400" or "arm,mmu-401" or "qcom,smmu-v2" or "qcom,smmu-500" or "nvidia,smmu-500"
                || c.EndsWith("-smmu-500", StringComparison.Ordinal))
                return IommuKind.SmmuV2;
        return IommuKind.Other;
    }

    static MsiControllerKind ClassifyMsi(FdtNode n)
    {
        if (n.IsCompatible("arm,gic-v3-its"))
            return n.Has("socionext,synquacer-pre-its") ? MsiControllerKind.GicV3PreIts : MsiControllerKind.GicV3Its;
        if (n.IsCompatible("arm,gic-v2m-frame")) return MsiControllerKind.GicV2m;
        return MsiControllerKind.Other;
    }

    /// <summary>
    /// Targets of a phandle list ("iommus", "msi-parent": phandle + #cells specifier per entry) or of a map
    /// ("iommu-map", "msi-map": rid-base, phandle, output-base (#cells), length per entry). Null for a phandle that
    /// resolves to nothing. Malformed lists stop at the first entry that does not fit.
    /// </summary>
    static IEnumerable<FdtNode?> ReferencedNodes(Fdt fdt, FdtNode node, string property, string cellsName, bool mapStyle)
    {
        var p = node.Property(property);
        if (p is null) yield break;
        var cells = p.Cells();
        var i = 0;
        while (i < cells.Length)
        {
            var phIndex = mapStyle ? i + 1 : i;
            if (phIndex >= cells.Length) yield break;
            var target = fdt.ByPhandle(cells[phIndex]);
            yield return target;
            var specifier = (int)(target?.CellsValue(cellsName) ?? (mapStyle ? 1u : 0u));
            if (specifier > 8) yield break;
            i = phIndex + 1 + specifier + (mapStyle ? 1 : 0);
        }
    }

    /// <summary>msi-parent, looked up on the node and then its ancestors (an msi-parent with no specifier cells uses the controller's #msi-cells).</summary>
    static IEnumerable<FdtNode?> InheritedMsiParents(Fdt fdt, FdtNode node)
    {
        for (var n = node; n is not null; n = n.Parent)
            if (n.Has("msi-parent"))
                return ReferencedNodes(fdt, n, "msi-parent", "#msi-cells", mapStyle: false);
        return [];
    }
}

/// <summary>Text rendering of an audit, for the CLI and reports.</summary>
public static class AuditReport
{
    public static void Write(PlatformAudit audit, TextWriter w)
    {
        ArgumentNullException.ThrowIfNull(audit);
        ArgumentNullException.ThrowIfNull(w);
        w.WriteLine($"{audit.Name}{(audit.Model is null ? "" : $" ({audit.Model})")}");
        w.WriteLine($"  IOMMUs: {(audit.Iommus.Count == 0 ? "none" : string.Join("; ", audit.Iommus.Select(i => i.Describe())))}");
        w.WriteLine($"  MSI controllers: {(audit.MsiControllers.Count == 0 ? "none" : string.Join("; ", audit.MsiControllers.Select(m => m.Describe() + (m.Isolates ? " [isolating]" : " [not isolating]"))))}");
        if (audit.Masters.Count == 0) w.WriteLine("  no DMA masters with IOMMU or MSI bindings");
        foreach (var m in audit.Masters)
        {
            var verdict = m.Verdict switch
            {
                AssignmentVerdict.Isolated => "ASSIGNABLE",
                AssignmentVerdict.UnsafeInterruptsOnly => "UNSAFE-IRQ",
                _ => "NO-IOMMU  ",
            };
            w.WriteLine($"  {verdict} {(m.IsPciHost ? "pci " : "dev ")}{m.Node.Path}: {m.Reason}");
        }
    }

    public static (int Isolated, int Unsafe, int NoIommu) Count(PlatformAudit audit) =>
        (audit.Masters.Count(m => m.Verdict == AssignmentVerdict.Isolated),
         audit.Masters.Count(m => m.Verdict == AssignmentVerdict.UnsafeInterruptsOnly),
         audit.Masters.Count(m => m.Verdict == AssignmentVerdict.NoIommu));
}
