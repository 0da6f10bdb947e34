namespace Doorbell.Platform.DeviceTree;

/// <summary>Text rendering of an audit, for the CLI and reports.</summary>
public static class AuditReport
{
    /// <summary>What each verdict and kind means, printed once before the platforms.</summary>
    public static readonly string[] Legend =
    [
        "ASSIGNABLE  DMA translated by an IOMMU and MSIs isolated (ITS DeviceID): VFIO attaches the group",
        "UNSAFE-IRQ  DMA translated, MSIs not isolated: VFIO refuses (EPERM) unless allow_unsafe_interrupts=1",
        "NO-IOMMU    DMA untranslated: the device cannot be isolated (VFIO has no IOMMU group for it)",
        "pci = PCI host bridge (verdict per requester-ID range: RID = bus<<8 | dev<<3 | fn), bus = other bus with",
        "ID maps, dev = platform device; SID = StreamID at the IOMMU, DevID = DeviceID at the ITS",
    ];

    public static void WriteHeader(int platforms, TextWriter w, bool executed = false)
    {
        ArgumentNullException.ThrowIfNull(w);
        w.WriteLine($"doorbell audit: DMA and MSI isolation of {platforms} device tree{(platforms == 1 ? "" : "s")}, decided by Linux's rules{(executed ? " and tried by attack on a board built from each tree" : "")}");
        w.WriteLine("Legend:");
        foreach (var l in Legend) w.WriteLine("  " + l);
        if (executed) foreach (var l in ExecutionLegend) w.WriteLine("  " + l);
        w.WriteLine();
    }

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
            var kind = m.IsPciHost ? "pci" : m.IsIdMappedBus ? "bus" : "dev";
            w.WriteLine($"  {IsolationAudit.Label(m.Verdict),-10}  {kind} {m.Node.Path}: {m.Reason}");
            if (m.Ranges.Count > 1 || (m.Ranges.Count == 1 && (m.Ranges[0].First != 0 || m.Ranges[0].Last != 0xffff)))
                foreach (var r in m.Ranges)
                    w.WriteLine($"      {IsolationAudit.Label(r.Verdict),-10}  {(m.IsPciHost ? "RID" : "ID")} {RangeText(r.First, r.Last)}{Ids(r)}: {r.Reason}");
        }
    }

    public static string RangeText(uint first, uint last) => first == last ? $"{first:x4}" : $"{first:x4}–{last:x4}";

    static string Ids(RidRange r)
    {
        var s = "";
        if (r.StreamIdFirst is { } s0) s += $" SID {(s0 == r.StreamIdLast ? $"0x{s0:x}" : $"0x{s0:x}–0x{r.StreamIdLast:x}")}";
        if (r.DeviceIdFirst is { } d0) s += $" DevID {(d0 == r.DeviceIdLast ? $"0x{d0:x}" : $"0x{d0:x}–0x{r.DeviceIdLast:x}")}";
        return s;
    }

    public static (int Isolated, int Unsafe, int NoIommu) Count(PlatformAudit audit)
    {
        ArgumentNullException.ThrowIfNull(audit);
        return (audit.Masters.Count(m => m.Verdict == AssignmentVerdict.Isolated),
            audit.Masters.Count(m => m.Verdict == AssignmentVerdict.UnsafeInterruptsOnly),
            audit.Masters.Count(m => m.Verdict == AssignmentVerdict.NoIommu));
    }

    /// <summary>Legend lines added when the verdicts were executed on the board (--execute).</summary>
    public static readonly string[] ExecutionLegend =
    [
        "DMA: F/N faults  N writes to an IOVA the domain never mapped, F ended in an SMMU fault record (isolated)",
        "DMA: L/N landed  L of N writes reached RAM (an escape); MSI: forged V/N  V of the victim's N vectors raised",
        "VFIO: what vfio type1 decides for that group; CONTRADICTED marks a verdict or a VFIO decision the attack disproves",
        "How: Doorbell's host kernel boots on the board (every SMMU, ITS, GICv2m frame and in-controller MSI block by its",
        "  driver; every ECAM host bridge enumerated, fwspecs and DeviceIDs from its iommu-map/msi-map; IOMMU groups). Per",
        "  range, probe functions at its requester IDs are vfio-pci devices: a user process opens the container and the",
        "  kernel's group, VFIO_SET_IOMMU(TYPE1v2) (type1's own answer is printed; on -EPERM the attack goes on as root with",
        "  allow_unsafe_interrupts=1), MAP_DMA one page, then the device writes elsewhere. The first is the MSI victim: its",
        "  MSI-X vectors get eventfds by VFIO_DEVICE_SET_IRQS, another requester forges, and V counts its eventfds that fired.",
        "  [raw] marks a range with no function the topology can hold (or a bus without ECAM): a raw requester at its IDs, a",
        "  group the probe forms on the kernel's IOMMU driver, vectors counted at the host's handlers. Platform devices are",
        "  raw requesters at their StreamIDs in the kernel's group for them (vfio-platform has no MSI: host handlers count).",
    ];

    public static void WriteExecuted(ExecutedAudit run, TextWriter w)
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(w);
        var audit = run.Audit;
        w.WriteLine($"{audit.Name}{(audit.Model is null ? "" : $" ({audit.Model})")}");
        foreach (var b in run.Board.Blocks)
            w.WriteLine($"  board: {b.Kind,-22} {b.Node.Path} @0x{b.Base:x}: {b.Status}");
        w.WriteLine("  kernel: " + KernelText(run));
        if (run.Results.Count == 0) w.WriteLine("  no DMA masters with IOMMU or MSI bindings");
        foreach (var r in run.Results)
        {
            var m = r.Master;
            var kind = m.IsPciHost ? "pci" : m.IsIdMappedBus ? "bus" : "dev";
            var ids = r.Range is { } rr ? $"  {(m.IsPciHost ? "RID" : "ID")} {RangeText(rr.First, rr.Last)}" : "";
            var flag = (r.VerdictContradicted ? "  CONTRADICTED verdict" : "") + (r.VfioContradicted ? "  CONTRADICTED VFIO" : "");
            var raw = m.IsPciHost && !r.ThroughKernel ? " [raw]" : "";
            w.WriteLine($"  {IsolationAudit.Label(r.Verdict),-10}  {kind} {m.Node.Path}{ids}  {r.DmaText}; {r.MsiText}; {r.VfioDecision}{flag}{raw}");
            w.WriteLine($"      why: {r.Range?.Reason ?? m.Reason}");
        }
    }

    /// <summary>What the booted host kernel found: drivers bound, host bridges enumerated, IOMMU groups, and how many
    /// PCI ranges ran through vfio-pci devices.</summary>
    public static string KernelText(ExecutedAudit run)
    {
        ArgumentNullException.ThrowIfNull(run);
        if (run.Kernel is not { } k) return "not booted (" + (run.BootError ?? "?") + ")";
        var pci = run.Results.Count(r => r.Master.IsPciHost);
        var fns = k.Functions.Count + k.UntranslatedFunctions.Count;
        var failed = k.ProbeErrors.Count == 0 ? "" : "; probe failed: " + string.Join(", ", k.ProbeErrors.Select(e => $"{e.Key} ({e.Value})"));
        return $"booted: {k.Iommus.Count} IOMMU driver(s), {k.MsiDomains.Count} MSI domain(s), {k.HostBridges.Count} host bridge(s) with " +
            $"{fns} function(s), {k.Groups.Count} IOMMU group(s); {run.ThroughKernel}/{pci} PCI range(s) probed through vfio-pci{failed}";
    }
}
