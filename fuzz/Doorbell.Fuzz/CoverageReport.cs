using System.Globalization;
using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace Doorbell.Fuzz;

/// <summary>
/// Reads a Cobertura report (coverlet's output) and prints line and branch coverage for the whole Doorbell assembly
/// and for namespace prefixes. Lines are counted once per (file, line) — partial classes and compiler-generated
/// classes share files — and a branch point's outcomes come from its condition-coverage "(covered/total)".
/// </summary>
public static partial class CoverageReport
{
    sealed class Tally
    {
        public readonly Dictionary<(string File, int Line), (bool Hit, int Covered, int Total)> Lines = [];
    }

    [GeneratedRegex(@"\((\d+)/(\d+)\)")]
    private static partial Regex Condition();

    public static int Run(string file, IReadOnlyList<string> prefixes, string label, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(prefixes);
        ArgumentNullException.ThrowIfNull(output);
        var doc = XDocument.Load(file);
        var all = new Tally();
        var per = prefixes.ToDictionary(p => p, _ => new Tally(), StringComparer.Ordinal);
        foreach (var pkg in doc.Descendants("package").Where(p => (string?)p.Attribute("name") == "Doorbell"))
            foreach (var cls in pkg.Descendants("class"))
            {
                var name = ((string?)cls.Attribute("name") ?? "").Split('/')[0];
                var fileName = (string?)cls.Attribute("filename") ?? "";
                var tallies = new List<Tally> { all };
                tallies.AddRange(prefixes.Where(p => name.StartsWith(p + ".", StringComparison.Ordinal)).Select(p => per[p]));
                foreach (var line in cls.Element("lines")?.Elements("line") ?? [])
                {
                    var key = (fileName, (int?)line.Attribute("number") ?? 0);
                    var hit = ((long?)line.Attribute("hits") ?? 0) > 0;
                    int covered = 0, total = 0;
                    if ((string?)line.Attribute("branch") == "True" && Condition().Match((string?)line.Attribute("condition-coverage") ?? "") is { Success: true } m)
                    {
                        covered = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
                        total = int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
                    }
                    foreach (var t in tallies)
                    {
                        t.Lines.TryGetValue(key, out var old);
                        t.Lines[key] = (old.Hit || hit, Math.Max(old.Covered, covered), Math.Max(old.Total, total));
                    }
                }
            }
        if (all.Lines.Count == 0) { output.WriteLine($"coverage: {file} has no Doorbell lines"); return 1; }
        output.WriteLine(Format(label, "Doorbell.dll", all));
        foreach (var p in prefixes) output.WriteLine(Format(label, p, per[p]));
        return 0;
    }

    static string Format(string label, string scope, Tally t)
    {
        var lines = t.Lines.Count;
        var hit = t.Lines.Values.Count(v => v.Hit);
        var branches = t.Lines.Values.Sum(v => v.Total);
        var taken = t.Lines.Values.Sum(v => v.Covered);
        return string.Create(CultureInfo.InvariantCulture,
            $"coverage {label,-11} {scope,-28} lines {100.0 * hit / Math.Max(1, lines),5:F1} % ({hit}/{lines})  branches {100.0 * taken / Math.Max(1, branches),5:F1} % ({taken}/{branches})");
    }
}
