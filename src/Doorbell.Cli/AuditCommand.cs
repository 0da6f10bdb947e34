using System.CommandLine;
using Doorbell.Platform.DeviceTree;

namespace Doorbell.Cli;

/// <summary>
/// `doorbell audit [--format text|json] [--summary] PATH...`: which devices of real platforms (DTBs) VFIO could
/// isolate, and why. PATH is a .dtb file, a folder searched for *.dtb, or `-` for a DTB on standard input.
/// A file found in a folder is named relative to that folder (e.g. boards/juno-r1.dtb), a file argument as given.
/// Exit status: 0 audited, 1 usage error or nothing audited, 2 some file could not be read or parsed.
/// </summary>
public static class AuditCommand
{
    public const string Usage = "usage: doorbell audit [--format text|json] [--summary] [--execute] [--report DIR] FILE.dtb|DIR|- ...";

    public static Command Create()
    {
        // Options are parsed by Run (one-line errors, unknown options rejected); System.CommandLine only routes here.
        var tokens = new Argument<string[]>("args") { Description = "[--format text|json] [--summary] FILE.dtb|DIR|- ...", Arity = ArgumentArity.ZeroOrMore };
        var command = new Command("audit", "Audit DMA and MSI isolation of platforms described by device trees (.dtb): per DMA master and requester-ID range, with the reason. --format text|json, --summary, --execute (build a board from each tree and attack every verdict), --report DIR (HTML pages, implies --execute); '-' reads a DTB from stdin; a folder is searched for *.dtb.");
        command.Arguments.Add(tokens);
        command.SetAction(parse => Run(parse.GetValue(tokens) ?? [], Console.Out, Console.Error, Console.OpenStandardInput));
        return command;
    }

    sealed record Options(string Format, bool Summary, bool Execute, string? Report, List<string> Paths);

    static Options? ParseArgs(string[] args, TextWriter err)
    {
        var o = new Options("text", false, false, null, []);
        var execute = false;
        string? report = null;
        var format = "text";
        var summary = false;
        var literal = false;
        for (var i = 0; i < args.Length; i++)
        {
            var a = args[i];
            if (literal || a == "-" || !a.StartsWith('-')) { o.Paths.Add(a); continue; }
            if (a == "--") { literal = true; continue; }
            if (a == "--summary") { summary = true; continue; }
            if (a is "--execute" or "-x") { execute = true; continue; }
            if (a == "--report" || a.StartsWith("--report=", StringComparison.Ordinal))
            {
                report = a.StartsWith("--report=", StringComparison.Ordinal) ? a["--report=".Length..] : (i + 1 < args.Length ? args[++i] : null);
                if (string.IsNullOrEmpty(report)) { err.WriteLine("doorbell audit: --report needs a folder"); return null; }
                execute = true;
                continue;
            }
            if (a is "--format" or "-f" || a.StartsWith("--format=", StringComparison.Ordinal))
            {
                string? v = a.StartsWith("--format=", StringComparison.Ordinal) ? a["--format=".Length..] : (i + 1 < args.Length ? args[++i] : null);
                if (v is null) { err.WriteLine("doorbell audit: --format needs a value (text or json)"); return null; }
                if (v is not ("text" or "json")) { err.WriteLine($"doorbell audit: --format {v}: expected text or json"); return null; }
                format = v;
                continue;
            }
            err.WriteLine($"doorbell audit: unknown option '{a}' ({Usage})");
            return null;
        }
        if (o.Paths.Count == 0) { err.WriteLine($"doorbell audit: no device tree given ({Usage})"); return null; }
        return o with { Format = format, Summary = summary, Execute = execute, Report = report };
    }

    /// <summary>Runs the command: writes the report to <paramref name="stdout"/>, one line per problem to <paramref name="stderr"/>; returns the exit status.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, Func<Stream> stdin)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(stdout);
        ArgumentNullException.ThrowIfNull(stderr);
        ArgumentNullException.ThrowIfNull(stdin);
        var o = ParseArgs(args, stderr);
        if (o is null) return 1;

        var inputs = new List<(string Display, string? File)>();
        var rc = 0;
        foreach (var p in o.Paths)
        {
            if (p == "-") { inputs.Add(("<stdin>", null)); continue; }
            if (Directory.Exists(p))
            {
                var found = Directory.EnumerateFiles(p, "*.dtb", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
                if (found.Count == 0) { stderr.WriteLine($"doorbell audit: {p}: no .dtb files in this folder"); rc = Math.Max(rc, 1); }
                inputs.AddRange(found.Select(f => (Path.GetRelativePath(p, f).Replace('\\', '/'), (string?)f)));
            }
            else if (File.Exists(p)) inputs.Add((p, p));
            else { stderr.WriteLine($"doorbell audit: {p}: no such file or folder"); rc = 2; }
        }

        var audits = new List<PlatformAudit>();
        var runs = new List<ExecutedAudit>();
        var errors = new List<(string File, string Error)>();
        foreach (var (display, file) in inputs)
        {
            byte[] blob;
            try
            {
                if (file is null)
                {
                    using var ms = new MemoryStream();
                    using (var s = stdin()) s.CopyTo(ms);
                    blob = ms.ToArray();
                }
                else blob = File.ReadAllBytes(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                errors.Add((display, e.Message));
                stderr.WriteLine($"doorbell audit: {display}: {e.Message}");
                rc = 2;
                continue;
            }
            var fdt = Fdt.TryParse(blob, out var error);
            if (fdt is null)
            {
                errors.Add((display, "not a valid device tree: " + error));
                stderr.WriteLine($"doorbell audit: {display}: not a valid device tree: {error}");
                rc = 2;
                continue;
            }
            if (o.Execute)
            {
                var run = IsolationProbes.Run(fdt, display);
                runs.Add(run);
                audits.Add(run.Audit);
            }
            else audits.Add(IsolationAudit.Audit(fdt, display));
        }
        if (audits.Count == 0)
        {
            if (errors.Count == 0 && rc == 0) stderr.WriteLine("doorbell audit: nothing audited (no device tree found)");
            return Math.Max(rc, 1);
        }

        if (o.Report is not null)
        {
            try { AuditHtml.WriteReport(runs, o.Report); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                stderr.WriteLine($"doorbell audit: --report {o.Report}: {e.Message}");
                return 2;
            }
        }
        if (o.Format == "json")
        {
            var byAudit = runs.ToDictionary(r => r.Audit);
            AuditJson.Write(audits, errors, stdout, o.Execute ? (j, a) => AuditJson.WriteExecution(j, byAudit[a]) : null);
        }
        else if (o.Summary)
        {
            foreach (var a in audits)
            {
                var (iso, unsafeIrq, none) = AuditReport.Count(a);
                stdout.WriteLine($"{a.Name,-48} assignable {iso,2}  unsafe-irq {unsafeIrq,2}  no-iommu {none,2}");
            }
        }
        else
        {
            AuditReport.WriteHeader(audits.Count, stdout, o.Execute);
            if (o.Execute)
                foreach (var r in runs) { AuditReport.WriteExecuted(r, stdout); stdout.WriteLine(); }
            else
                foreach (var a in audits) { AuditReport.Write(a, stdout); stdout.WriteLine(); }
            if (o.Execute)
                stdout.WriteLine($"{runs.Sum(r => r.Results.Count)} probes on {runs.Count} boards; verdicts contradicted by their probes: {runs.Sum(r => r.Contradictions)}; VFIO decisions contradicted: {runs.Sum(r => r.Results.Count(x => x.VfioContradicted))}");
        }
        return rc;
    }
}
