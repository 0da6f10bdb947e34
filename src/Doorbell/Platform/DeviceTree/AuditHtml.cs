using System.Globalization;
using System.Text;
using Doorbell.Reporting;

namespace Doorbell.Platform.DeviceTree;

/// <summary>
/// `doorbell audit --report DIR`: index.html (one row per board) and one page per board with an SVG of the
/// topology (DMA masters → IOMMUs, → MSI controllers, with each requester-ID range and its probe results) and the
/// probe table. Built on the shared Doorbell.Reporting.HtmlPage / Svg renderer; self-contained, deterministic.
/// </summary>
public static class AuditHtml
{
    const string Css = """
        svg.topo .master rect{fill:#eef3ff;stroke:#4a6}svg.topo .iommu rect{fill:#fff6e0;stroke:#a80}
        svg.topo .msi rect{fill:#f3eaff;stroke:#748}svg.topo .unmodelled rect{fill:#eee;stroke:#999;stroke-dasharray:4 3}
        svg.topo .bad rect{stroke:#b00020;stroke-width:2}svg.topo line{stroke:#556;stroke-width:1.2}
        svg.topo line.escape{stroke:#b00020;stroke-width:2}svg.topo text{font-size:11px}
        """;

    /// <summary>The page name of a board (file name safe, stable).</summary>
    public static string PageName(string boardName)
    {
        var sb = new StringBuilder();
        foreach (var c in boardName) sb.Append(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' ? c : '_');
        return sb + ".html";
    }

    public static void WriteReport(IReadOnlyList<ExecutedAudit> runs, string folder)
    {
        ArgumentNullException.ThrowIfNull(runs);
        ArgumentNullException.ThrowIfNull(folder);
        Directory.CreateDirectory(folder);
        var index = new HtmlPage("Doorbell audit by execution");
        index.Css(Css);
        index.Paragraph("Each board below was built from its device tree and every isolation verdict was tried by attack (DMA to an unmapped IOVA, MSI forgery) with Doorbell's own host drivers.");
        index.Raw("<ul class=\"legend\">" + string.Concat(AuditReport.Legend.Concat(AuditReport.ExecutionLegend).Select(l => "<li>" + HtmlPage.E(l) + "</li>")) + "</ul>");
        var rows = runs.Select(r => (IReadOnlyList<string>)
        [
            r.Audit.Name, r.Audit.Model ?? "",
            r.Results.Count(x => x.Verdict == AssignmentVerdict.Isolated).ToString(CultureInfo.InvariantCulture),
            r.Results.Count(x => x.Verdict == AssignmentVerdict.UnsafeInterruptsOnly).ToString(CultureInfo.InvariantCulture),
            r.Results.Count(x => x.Verdict == AssignmentVerdict.NoIommu).ToString(CultureInfo.InvariantCulture),
            r.Contradictions.ToString(CultureInfo.InvariantCulture),
            r.Results.Count(x => x.VfioContradicted).ToString(CultureInfo.InvariantCulture),
        ]).ToList();
        index.Raw(LinkTable(runs, rows));
        File.WriteAllText(Path.Combine(folder, "index.html"), index.ToString());
        foreach (var r in runs) File.WriteAllText(Path.Combine(folder, PageName(r.Audit.Name)), BoardPage(r).ToString());
    }

    static string LinkTable(IReadOnlyList<ExecutedAudit> runs, List<IReadOnlyList<string>> rows)
    {
        var sb = new StringBuilder("<table id=\"boards\"><tr><th>board</th><th>model</th><th>ASSIGNABLE</th><th>UNSAFE-IRQ</th><th>NO-IOMMU</th><th>verdicts contradicted</th><th>VFIO decisions contradicted</th></tr>\n");
        for (var i = 0; i < runs.Count; i++)
        {
            sb.Append("<tr><td><a href=\"").Append(HtmlPage.E(PageName(runs[i].Audit.Name))).Append("\">").Append(HtmlPage.E(rows[i][0])).Append("</a></td>");
            for (var c = 1; c < rows[i].Count; c++)
            {
                var bad = c >= 5 && rows[i][c] != "0";
                sb.Append(bad ? "<td class=\"bad\">" : "<td>").Append(HtmlPage.E(rows[i][c])).Append("</td>");
            }
            sb.Append("</tr>\n");
        }
        return sb.Append("</table>").ToString();
    }

    public static HtmlPage BoardPage(ExecutedAudit run)
    {
        ArgumentNullException.ThrowIfNull(run);
        var page = new HtmlPage($"{run.Audit.Name}{(run.Audit.Model is null ? "" : " — " + run.Audit.Model)}");
        page.Css(Css);
        page.Raw("<p><a href=\"index.html\">all boards</a></p>");
        page.Heading("Topology and probe results");
        page.Raw(Topology(run));
        page.Heading("Board built from the tree");
        page.Table(["block", "node", "base", "status"], run.Board.Blocks.Select(b => (IReadOnlyList<string>)
            [b.Kind, b.Node.Path, "0x" + b.Base.ToString("x", CultureInfo.InvariantCulture), b.Status]), (r, c) => c == 3 && !run.Board.Blocks[r].Modelled ? "warn" : null);
        page.Raw("<p id=\"kernel\">Host kernel: " + HtmlPage.E(AuditReport.KernelText(run)) + "</p>");
        page.Heading("Verdicts and probes");
        page.Table(["verdict", "master", "IDs", "DMA", "MSI", "VFIO", "why"], run.Results.Select(r => (IReadOnlyList<string>)
            [
                IsolationAudit.Label(r.Verdict) + (r.VerdictContradicted ? " (CONTRADICTED)" : ""),
                r.Master.Node.Path,
                (r.Range is { } rr ? AuditReport.RangeText(rr.First, rr.Last) : "") + (r.Master.IsPciHost && !r.ThroughKernel ? " [raw]" : ""),
                r.DmaText, r.MsiText, r.VfioDecision + (r.VfioContradicted ? " (CONTRADICTED)" : ""),
                r.Range?.Reason ?? r.Master.Reason,
            ]),
            (row, c) =>
            {
                var x = run.Results[row];
                return c switch
                {
                    0 => x.VerdictContradicted ? "bad" : x.Verdict == AssignmentVerdict.Isolated ? "ok" : "warn",
                    3 => x.DmaLanded > 0 ? "bad" : x.DmaNotRun is null ? "ok" : null,
                    4 => x.MsiForged > 0 ? "bad" : x.MsiNotRun is null ? "ok" : null,
                    5 => x.VfioContradicted ? "bad" : null,
                    _ => null,
                };
            });
        page.Raw("<p id=\"rendered\"></p>");
        page.Script("""
            var boxes = document.querySelectorAll('svg.topo g rect'); var drawn = 0;
            boxes.forEach(function (r) { var b = r.getBBox(); if (b.width > 0 && b.height > 0) drawn++; });
            document.getElementById('rendered').textContent = 'rendered ' + drawn + ' of ' + boxes.length + ' topology boxes, ' + document.querySelectorAll('table tr').length + ' table rows';
            """);
        return page;
    }

    /// <summary>Masters in the left column, IOMMUs in the middle, MSI controllers on the right; an arrow per range.</summary>
    static string Topology(ExecutedAudit run)
    {
        const int boxW = 300, rowH = 44, colIommu = 380, colMsi = 720, top = 10;
        var masters = run.Results.Select(r => r.Master).Distinct().ToList();
        var iommus = run.Audit.Iommus;
        var msis = run.Audit.MsiControllers;
        var rows = Math.Max(Math.Max(masters.Count, iommus.Count), msis.Count);
        var svg = new Svg(colMsi + boxW + 10, top + rows * rowH + 10, "topo");
        double Y(int i) => top + i * rowH;
        for (var i = 0; i < iommus.Count; i++)
        {
            var modelled = run.Board.SmmuV3s.ContainsKey(iommus[i].Node);
            var status = run.Board.Blocks.FirstOrDefault(b => b.Node == iommus[i].Node)?.Status ?? "";
            svg.Box(colIommu, Y(i), boxW - 40, rowH - 8, Short(iommus[i].KindName + " " + iommus[i].Node.Name) + "\n" + Short(status), modelled ? "iommu" : "iommu unmodelled", iommus[i].Node.Path);
        }
        for (var i = 0; i < msis.Count; i++)
        {
            var modelled = run.Board.MsiTargets.ContainsKey(msis[i].Node);
            svg.Box(colMsi, Y(i), boxW, rowH - 8, Short(msis[i].KindName) + "\n" + Short(msis[i].Node.Name + (msis[i].Isolates ? " (isolating)" : " (not isolating)")), modelled ? "msi" : "msi unmodelled", msis[i].Node.Path);
        }
        for (var i = 0; i < masters.Count; i++)
        {
            var m = masters[i];
            var results = run.Results.Where(r => r.Master == m).ToList();
            var bad = results.Any(r => r.DmaLanded > 0 || r.MsiForged > 0);
            var label = Short((m.IsPciHost ? "pci " : m.IsIdMappedBus ? "bus " : "dev ") + m.Node.Name) + "\n" +
                        Short(results.Count == 1 ? IsolationAudit.Label(results[0].Verdict) + " " + results[0].DmaText : $"{results.Count} ID ranges, {results.Count(r => r.Verdict == AssignmentVerdict.Isolated)} assignable");
            svg.Box(0, Y(i), boxW, rowH - 8, label, bad ? "master bad" : "master", string.Join("\n", results.Select(r =>
                $"{(r.Range is { } rr ? AuditReport.RangeText(rr.First, rr.Last) + " " : "")}{IsolationAudit.Label(r.Verdict)} {r.DmaText}; {r.MsiText}; {r.VfioDecision}")));
            foreach (var io in m.Iommus)
            {
                var j = IndexOf(iommus, io);
                if (j >= 0) svg.Arrow(boxW, Y(i) + rowH / 2.0 - 4, colIommu, Y(j) + rowH / 2.0 - 4, results.Any(r => r.DmaLanded > 0) ? "escape" : "dma");
            }
            foreach (var mc in m.MsiControllers)
            {
                var j = IndexOf(msis, mc);
                if (j >= 0) svg.Arrow(boxW, Y(i) + rowH / 2.0, colMsi, Y(j) + rowH / 2.0 - 4, results.Any(r => r.MsiForged > 0) ? "escape" : "msi");
            }
        }
        return svg.ToString();
    }

    static int IndexOf<T>(IReadOnlyList<T> list, T item)
    {
        for (var i = 0; i < list.Count; i++) if (Equals(list[i], item)) return i;
        return -1;
    }

    static string Short(string s) => s.Length <= 46 ? s : s[..45] + "…";
}
