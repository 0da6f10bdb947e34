using System.Globalization;
using Doorbell.Pci;
using Doorbell.Scenarios;

namespace Doorbell.Reporting;

/// <summary>One DMA or MSI transaction as the report draws it: its hops, and whether it faulted or was a forged MSI.</summary>
public sealed record FlowPath(int Id, FlowKind Kind, IReadOnlyList<TraceEvent> Hops)
{
    /// <summary>A hop recorded a fault: an SMMU event, an ITS drop, a guest error or a failed completion.</summary>
    public bool Faulted => Hops.Any(IsFault);

    /// <summary>A plain DMA write (not the function's MSI machinery) that reached an MSI controller: a forged MSI.</summary>
    public bool Forged => Kind == FlowKind.Dma && Hops.Any(h => h.Category is TraceCategory.ItsTranslate or TraceCategory.ItsDrop or TraceCategory.Gicv2m);

    public static bool IsFault(TraceEvent e) =>
        e.Category is TraceCategory.SmmuEvent or TraceCategory.ItsDrop or TraceCategory.GuestError
        || e.Message.Contains("aborted", StringComparison.Ordinal) || e.Message.Contains(" completed ", StringComparison.Ordinal);

    /// <summary>The flows of a trace, in the order they started.</summary>
    public static IReadOnlyList<FlowPath> Of(Trace trace)
    {
        ArgumentNullException.ThrowIfNull(trace);
        return trace.Events.Where(e => e.Flow != 0).GroupBy(e => e.Flow).OrderBy(g => g.Key)
            .Select(g => new FlowPath(g.Key, g.First().FlowKind, g.OrderBy(e => e.Sequence).ToList())).ToList();
    }
}

/// <summary>
/// `doorbell run --report FILE.html`: the run's output, an SVG of every board a step built (CPUs, GIC with ITS or
/// GICv2m, SMMU, host bridge, devices framed by IOMMU group) and each DMA/MSI transaction drawn hop by hop from
/// the machine's trace, faults in red and forged MSI writes in orange. Self-contained and deterministic.
/// </summary>
public static class RunReport
{
    /// <summary>Trace categories the report needs recorded (the hops of DMA and MSI paths).</summary>
    public static ulong RequiredMask =>
        Bit(TraceCategory.PciDma) | Bit(TraceCategory.PciMsi) | Bit(TraceCategory.SmmuTranslate) | Bit(TraceCategory.SmmuEvent)
        | Bit(TraceCategory.ItsTranslate) | Bit(TraceCategory.ItsDrop) | Bit(TraceCategory.Gicr) | Bit(TraceCategory.Gicv2m)
        | Bit(TraceCategory.GuestError) | Bit(TraceCategory.VfioIrq);

    static ulong Bit(TraceCategory c) => 1UL << (int)c;

    /// <summary>Flows drawn per machine (the rest are counted).</summary>
    public const int MaxFlowsPerMachine = 40;

    public static HtmlPage Build(Scenario scenario, ScenarioContext context, string output, int exitCode)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        ArgumentNullException.ThrowIfNull(context);
        var page = new HtmlPage($"Doorbell run: scenario '{scenario.Name}'");
        page.Css("""
            svg.board rect{fill:#eef2fb;stroke:#3b4a6b}svg.board .group rect{fill:none;stroke:#7a5cc2;stroke-dasharray:6 4}
            svg.board .group text{fill:#7a5cc2;font-size:12px}svg.board .bridge rect{fill:#e8f5ec}svg.board .iommu rect{fill:#fff4df}
            svg.board .irq rect{fill:#fde9ef}svg.board text{font-size:12px}svg line{stroke:#556;stroke-width:1.5}
            svg.path rect{fill:#f3f5fa;stroke:#778}svg.path text{font-size:11px}
            svg.path .forged rect{fill:#ffe7c2;stroke:#c46a00;stroke-width:2}svg.path .fault rect{fill:#ffd9dc;stroke:#b00020;stroke-width:2}
            p.caption{margin:10px 0 0 0;font-size:13px}
            .legend span{display:inline-block;padding:2px 8px;margin-right:8px;border:1px solid #778}
            """);
        page.Paragraph(scenario.Description);
        page.Raw("<p class=\"legend\"><span style=\"background:#f3f5fa\">hop</span><span style=\"background:#ffd9dc\">fault (SMMU event, ITS drop, abort)</span><span style=\"background:#ffe7c2\">forged MSI (a DMA write reaching an MSI controller)</span></p>");
        page.Paragraph(exitCode == 0 ? "Result: every step did what it should." : "Result: something did not happen as it should (see the output).", exitCode == 0 ? "ok" : "bad");
        if (context.Findings.Count > 0)
        {
            page.Heading("Strict-mode findings");
            page.Table(["model", "finding", "rule broken"], context.Findings.Select(f => (IReadOnlyList<string>)[f.Source, f.Message, f.Rule]));
        }
        foreach (var om in context.Machines)
        {
            page.Heading($"Board: {om.Title}");
            page.Raw(Board(om));
            if (om.Kernel is { } k)
                page.Table(["IOMMU group", "devices", "MSIs isolated"], k.Groups.Select(g => (IReadOnlyList<string>)[g.Id.ToString(CultureInfo.InvariantCulture), string.Join(", ", g.DeviceNames), g.HasIsolatedMsi ? "yes" : "no"]),
                    (r, c) => c == 2 ? (k.Groups[r].HasIsolatedMsi ? "ok" : "warn") : null);
        }
        page.Heading("DMA and MSI paths, hop by hop");
        var anyFlow = false;
        foreach (var t in context.Traces)
        {
            var flows = FlowPath.Of(t);
            if (flows.Count == 0) continue;
            anyFlow = true;
            page.Heading($"{t.Name}: {flows.Count} transaction(s), {flows.Count(f => f.Faulted)} faulted, {flows.Count(f => f.Forged)} forged", 3);
            foreach (var f in flows.Take(MaxFlowsPerMachine))
            {
                var tag = f.Forged ? " — FORGED MSI" : "";
                tag += f.Faulted ? " — FAULT" : "";
                page.Raw($"<p class=\"caption{(f.Faulted ? " bad" : f.Forged ? " warn" : "")}\">{(f.Kind == FlowKind.Msi ? "MSI" : "DMA")} #{f.Id}: {HtmlPage.E(f.Hops[0].Message)}{tag}</p>");
                page.Raw(Path(f));
            }
            if (flows.Count > MaxFlowsPerMachine) page.Paragraph($"... and {flows.Count - MaxFlowsPerMachine} more transaction(s) (see --trace-out for all).");
        }
        if (!anyFlow) page.Paragraph("No DMA or MSI transaction was traced in this scenario.");
        page.Heading("Output");
        page.Pre(output);
        page.Raw("<div id=\"render-check\"></div>");
        page.Script("""
            (function(){
              var boards=document.querySelectorAll('svg.board'), w=0;
              boards.forEach(function(b){ var r=b.getBoundingClientRect(); w+=Math.round(r.width); });
              var c=document.getElementById('render-check');
              c.textContent='rendered boards='+boards.length+' board-width='+w+' devices='+document.querySelectorAll('svg.board .device').length
                +' paths='+document.querySelectorAll('svg.path').length+' hops='+document.querySelectorAll('svg.path .hop').length
                +' faults='+document.querySelectorAll('svg.path .fault').length+' forged='+document.querySelectorAll('svg.path .forged').length;
            })();
            """);
        return page;
    }

    static string Board(ObservedMachine om)
    {
        var m = om.Machine;
        var devices = new List<(string Label, int Group)>();
        if (om.Kernel is { } k)
        {
            foreach (var f in k.Functions.OrderBy(f => f.Group.Id).ThenBy(f => f.Name, StringComparer.Ordinal))
            {
                var model = m.Pci?.AllFunctions().FirstOrDefault(d => d.RequesterId == f.DeviceId && d is not PciBridge);
                devices.Add(($"{f.Name[5..]}\n{model?.Name ?? "device"}", f.Group.Id));
            }
        }
        else if (m.Pci is { } host)
        {
            foreach (var f in host.AllFunctions().Where(f => f is not PciBridge && f.Name != "gpex-root"))
                devices.Add(($"{PciCfg.Bdf(f.RequesterId)}\n{f.Name}", -1));
        }
        var width = Math.Max(760, 40 + devices.Count * 150);
        var svg = new Svg(width, 330, "board");
        svg.Box(20, 20, 130, 44, m.Cpus == 1 ? "CPU 0" : $"CPUs 0-{m.Cpus - 1}", "cpu");
        // A kernel-built board names its models in the kernel's BoardModels; a wiring-built one on the machine.
        var models = om.Kernel?.Models;
        var hasIts = m.Its is not null || models?.Its is not null;
        var hasV2m = m.GicV2m is not null || models?.GicV2m is not null;
        var gic = hasIts ? $"GICv3 + ITS\nGITS_TRANSLATER 0x{m.MsiDoorbell:x}" : hasV2m ? $"GICv2 + GICv2m\nSETSPI 0x{m.MsiDoorbell:x}" : m.GicV3 is not null ? "GICv3 (no ITS)" : "no GIC model";
        svg.Box(180, 20, 190, 44, gic, "irq");
        svg.Box(400, 20, 140, 44, $"RAM\n0x{m.RamBase:x} +{m.RamSize >> 20} MiB", "ram");
        var iommu = m.SmmuV3 is not null || models?.Smmu is not null ? $"SMMUv3\n0x{m.Map.Smmu:x}" : "no IOMMU";
        svg.Box(280, 110, 160, 44, iommu, "iommu");
        svg.Arrow(360, 110, 300, 66, "hop-line");
        svg.Arrow(380, 110, 460, 66, "hop-line");
        svg.Box(280, 190, 160, 40, "PCIe host bridge (gpex)", "bridge");
        svg.Arrow(360, 190, 360, 156, "hop-line");
        var x = 20.0;
        var i = 0;
        while (i < devices.Count)
        {
            var g = devices[i].Group;
            var j = i;
            while (j < devices.Count && devices[j].Group == g && g >= 0) j++;
            if (j == i) j = i + 1;
            if (g >= 0) svg.Frame(x - 8, 250, (j - i) * 150 - 4, 76, $"IOMMU group {g}", "group");
            for (var d = i; d < j; d++)
            {
                svg.Box(x, 258, 130, 44, devices[d].Label, "device");
                svg.Arrow(x + 65, 258, 360, 232, "hop-line");
                x += 150;
            }
            i = j;
        }
        return svg.ToString();
    }

    static string Path(FlowPath f)
    {
        // One box per hop; consecutive events of the same model are merged into one box.
        var hops = new List<(string Source, List<TraceEvent> Events)>();
        foreach (var e in f.Hops)
        {
            if (hops.Count > 0 && hops[^1].Source == e.Source) hops[^1].Events.Add(e);
            else hops.Add((e.Source, [e]));
        }
        const int w = 240, gap = 36;
        var svg = new Svg(Math.Max(200, hops.Count * (w + gap)), 70, "path");
        for (var i = 0; i < hops.Count; i++)
        {
            var (src, evs) = hops[i];
            var fault = evs.Any(FlowPath.IsFault);
            var forged = f.Forged && evs.Any(e => e.Category is TraceCategory.ItsTranslate or TraceCategory.ItsDrop or TraceCategory.Gicv2m);
            var cls = "hop" + (forged ? " forged" : "") + (fault ? " fault" : "");
            var msg = evs[^1].Message;
            var label = Short(src, 36) + "\n" + Short(msg, 40);
            svg.Box(i * (w + gap) + 2, 8, w, 52, label, cls, string.Join("\n", evs.Select(e => $"[{e.CategoryName}] {e.Message}")));
            if (i > 0) svg.Arrow(i * (w + gap) - gap + 2, 34, i * (w + gap) + 2, 34, "hop-line");
        }
        return svg.ToString();
    }

    static string Short(string s, int n) => s.Length <= n ? s : s[..(n - 1)] + "…";
}
