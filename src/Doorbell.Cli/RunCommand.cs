using System.Reflection;
using System.Text;
using Doorbell.Platform;
using Doorbell.Reporting;
using Doorbell.Scenarios;
using Doorbell.Tracing;

namespace Doorbell.Cli;

/// <summary>`doorbell --help`.</summary>
static class Usage
{
    public const string Text = """
        Usage: doorbell <command> [options]

        Commands:
          run [NAME|FILE.yaml]      run a built-in scenario (default: 'default') or a scenario file
              --board FILE.yaml       build the board from a board description (scenario files, or alone: boot it and show it)
              --strict[=fail]         report what real hardware silently tolerates; =fail exits 2 on any finding
              --trace [PATTERNS]      print model events as they happen; PATTERNS like 'smmu*,its*' (default: all)
              --trace-out FILE.json   write Chrome/Perfetto trace-event JSON (tracks per model/CPU, DMA/MSI flows)
              --report FILE.html      write a self-contained HTML report (board SVG, DMA/MSI paths hop by hop)
          scenarios                 list the built-in scenarios
          trace-categories          list the trace categories --trace patterns match
          audit PATH...             audit DMA/MSI isolation of platforms described by device trees (.dtb)
          serve --socket PATH       serve VFIO to unmodified programs (scripts/doorbell-exec; docs/serve.md)
              [--board FILE.yaml] [--allow-unsafe-interrupts] [--strict]
          qtest ARGS...             serve QEMU's qtest protocol (QEMU-style arguments; also accepted directly;
                                    -machine virt|board=FILE.yaml|BUILT-IN, -M help lists boards)

        Options:
          -h, --help                this text
          --version                 version and commit

        """;
}

/// <summary>Version and commit, from the assembly's informational version (the SDK appends +commit from git).</summary>
static class VersionInfo
{
    public static string Line
    {
        get
        {
            var info = typeof(VersionInfo).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";
            var plus = info.IndexOf('+', StringComparison.Ordinal);
            var version = plus < 0 ? info : info[..plus];
            var commit = plus < 0 ? "unknown" : info[(plus + 1)..];
            if (commit.Length > 12) commit = commit[..12];
            return $"doorbell {version} (commit {commit})";
        }
    }
}

/// <summary>One-line errors and the guard that keeps .NET exception text away from users.</summary>
static class CliErrors
{
    public static int Fail(string message)
    {
        Console.Error.WriteLine("doorbell: " + OneLine(message));
        return 1;
    }

    public static string OneLine(string s) => s.ReplaceLineEndings(" ").Trim();

    public static int Guard(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (IOException e)
        {
            // Typically stdout is full or closed (`run > /dev/full`): one line, non-zero.
            TryError($"doorbell: cannot write output: {OneLine(e.Message)}");
            return 1;
        }
#pragma warning disable CA1031 // the last line of defence: no .NET stack trace reaches a user
        catch (Exception e)
#pragma warning restore CA1031
        {
            TryError($"doorbell: internal error ({e.GetType().Name}): {OneLine(e.Message)}");
            return 70;
        }
    }

    static void TryError(string line)
    {
        try { Console.Error.WriteLine(line); }
        catch (IOException) { }
    }
}

/// <summary>The `--board FILE.yaml` option, shared by every command that builds a board (run; serve reuses it).</summary>
public static class BoardOption
{
    public const string Name = "--board";
    public const string Help = "--board FILE.yaml   build the board from a board description file (docs/scenarios.md)";

    /// <summary>Loads a board description; false with a one-line error naming the file and the mistake.</summary>
    public static bool TryLoad(string path, out BoardDescription? board, out string error)
    {
        board = null;
        error = "";
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            error = $"{Name} {path}: cannot read: {CliErrors.OneLine(e.Message)}";
            return false;
        }
        try
        {
            board = BoardDescription.Parse(text);
            board.Build(BoardWiring.None); // every value checked now, not halfway through a run
        }
        catch (Exception e) when (e is FormatException or ArgumentException or InvalidOperationException or OverflowException)
        {
            board = null;
            error = $"{Name} {path}: {CliErrors.OneLine(e.Message)}";
            return false;
        }
        return true;
    }
}

/// <summary>`doorbell run`, `doorbell scenarios`, `doorbell trace-categories`.</summary>
static class RunCommand
{
    public static int ListScenarios(string[] args)
    {
        if (args.Length > 0) return CliErrors.Fail($"scenarios: unexpected argument '{args[0]}'");
        foreach (var (name, description) in BuiltinScenarios.List())
            Console.Out.WriteLine($"{name,-18} {description}");
        Console.Out.WriteLine();
        Console.Out.WriteLine("Run one with `doorbell run NAME`, or write your own: `doorbell run FILE.yaml` (format: docs/scenarios.md).");
        return 0;
    }

    public static int ListCategories(string[] args)
    {
        if (args.Length > 0) return CliErrors.Fail($"trace-categories: unexpected argument '{args[0]}'");
        foreach (var c in TraceCategories.All)
            Console.Out.WriteLine($"{TraceCategories.Name(c),-15} {TraceCategories.Description(c)}");
        return 0;
    }

    sealed record Options(string? Scenario, string? Board, bool Strict, bool StrictFail, ulong TraceMask, string? TraceOut, string? Report);

    static bool LooksLikeScenario(string s) =>
        BuiltinScenarios.Find(s) is not null || s.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || s.EndsWith(".yml", StringComparison.OrdinalIgnoreCase) || File.Exists(s);

    static Options? Parse(string[] args, out string error)
    {
        error = "";
        string? scenario = null, board = null, traceOut = null, report = null;
        bool strict = false, strictFail = false;
        ulong mask = 0;
        for (var i = 0; i < args.Length; i++)
        {
            var a = args[i];
            string? inline = null;
            if (a.StartsWith("--", StringComparison.Ordinal) && a.IndexOf('=', StringComparison.Ordinal) is var eq and > 0)
            {
                inline = a[(eq + 1)..];
                a = a[..eq];
            }
            string? Value(string opt, out string err)
            {
                err = "";
                if (inline is not null) return inline.Length > 0 ? inline : Err(out err, $"{opt} needs a value");
                if (i + 1 >= args.Length || args[i + 1].StartsWith('-')) return Err(out err, $"{opt} needs a value");
                return args[++i];
            }
            switch (a)
            {
                case "--strict":
                    strict = true;
                    if (inline is not null)
                    {
                        if (inline == "fail") strictFail = true;
                        else if (inline != "report") { error = $"--strict={inline}: expected --strict, --strict=report or --strict=fail"; return null; }
                    }
                    break;
                case "--trace":
                    var patterns = inline;
                    if (patterns is null && i + 1 < args.Length && !args[i + 1].StartsWith('-') && !LooksLikeScenario(args[i + 1])) patterns = args[++i];
                    if (patterns is null) mask = (1UL << TraceCategories.Count) - 1;
                    else
                    {
                        var m = TraceCategories.ParseMask(patterns, out var perr);
                        if (m is null) { error = $"--trace {patterns}: {perr}"; return null; }
                        mask |= m.Value;
                    }
                    break;
                case "--trace-out":
                    traceOut = Value("--trace-out", out error);
                    if (traceOut is null) return null;
                    break;
                case "--report":
                    report = Value("--report", out error);
                    if (report is null) return null;
                    break;
                case BoardOption.Name:
                    board = Value(BoardOption.Name, out error);
                    if (board is null) return null;
                    break;
                case "-h" or "--help":
                    error = "help";
                    return null;
                default:
                    if (a.StartsWith('-')) { error = $"unknown option '{args[i]}' (run options: --board, --strict[=fail], --trace [PATTERNS], --trace-out FILE, --report FILE)"; return null; }
                    if (scenario is not null) { error = $"unexpected argument '{a}' (one scenario per run; scenario '{scenario}' already given)"; return null; }
                    scenario = a;
                    break;
            }
        }
        return new Options(scenario, board, strict, strictFail, mask, traceOut, report);
    }

    static string? Err(out string err, string message) { err = message; return null; }

    public static int Run(string[] args)
    {
        var o = Parse(args, out var error);
        if (o is null)
        {
            if (error == "help") { Console.Out.Write(Usage.Text); return 0; }
            return CliErrors.Fail("run: " + error);
        }

        BoardDescription? board = null;
        if (o.Board is not null && !BoardOption.TryLoad(o.Board, out board, out var berr)) return CliErrors.Fail("run: " + berr);

        Scenario scenario;
        var name = o.Scenario ?? (board is not null ? null : "default");
        if (name is null)
            scenario = new Scenario(board!.Name, [new ScenarioFileStep(new ScenarioFile { Name = board.Name, Board = board, Steps = [], Description = $"board '{board.Name}' booted by the host kernel" })], $"boot the host kernel on board '{board.Name}' and show what it found");
        else if (BuiltinScenarios.Find(name) is { } builtin)
        {
            if (board is not null) return CliErrors.Fail($"run: --board applies to scenario files and to `run --board FILE` alone; built-in scenario '{name}' builds its own boards");
            scenario = builtin;
        }
        else if (File.Exists(name))
        {
            try { scenario = ScenarioFile.Load(name, board).ToScenario(); }
            catch (ScenarioFormatException e) { return CliErrors.Fail(e.Message); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return CliErrors.Fail($"run: {name}: cannot read: {CliErrors.OneLine(e.Message)}"); }
        }
        else if (name.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".yml", StringComparison.OrdinalIgnoreCase) || name.Contains('/', StringComparison.Ordinal))
            return CliErrors.Fail($"run: scenario file '{name}' not found");
        else
            return CliErrors.Fail($"run: no built-in scenario '{name}' (see `doorbell scenarios`)");

        // Check the output files can be created before running anything.
        foreach (var (opt, path) in new[] { ("--trace-out", o.TraceOut), ("--report", o.Report) })
        {
            if (path is null) continue;
            var dir = Path.GetDirectoryName(Path.GetFullPath(path));
            if (dir is not null && !Directory.Exists(dir)) return CliErrors.Fail($"run: {opt} {path}: directory does not exist");
        }

        var record = (o.TraceOut is not null ? (1UL << TraceCategories.Count) - 1 : 0) | (o.Report is not null ? RunReport.RequiredMask : 0);
        var captured = new StringBuilder();
        var output = o.Report is null ? Console.Out : new TeeWriter(Console.Out, new StringWriter(captured));
        var context = new ScenarioContext(output, o.Strict, o.TraceMask, record);
        var failures = scenario.Run(context);
        output.Flush();
        var rc = failures == 0 ? 0 : 1;
        if (o.StrictFail && context.Findings.Count > 0)
        {
            Console.Out.WriteLine($"--strict=fail: {context.Findings.Count} strict-mode finding(s)");
            if (rc == 0) rc = 2;
        }

        if (o.TraceOut is not null)
        {
            try
            {
                using var f = File.Create(o.TraceOut);
                TraceEventJson.Write(context.Traces, f);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return CliErrors.Fail($"run: --trace-out {o.TraceOut}: {CliErrors.OneLine(e.Message)}");
            }
        }
        if (o.Report is not null)
        {
            try
            {
                using var w = new StreamWriter(o.Report, false, new UTF8Encoding(false));
                RunReport.Build(scenario, context, captured.ToString(), rc).Write(w);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return CliErrors.Fail($"run: --report {o.Report}: {CliErrors.OneLine(e.Message)}");
            }
        }
        return rc;
    }

    /// <summary>Writes to two writers (the console and the report's copy of the output).</summary>
    sealed class TeeWriter(TextWriter a, TextWriter b) : TextWriter
    {
        public override Encoding Encoding => a.Encoding;
        public override void Write(char value) { a.Write(value); b.Write(value); }
        public override void Write(string? value) { a.Write(value); b.Write(value); }
        public override void WriteLine(string? value) { a.WriteLine(value); b.WriteLine(value); }
        public override void Flush() { a.Flush(); b.Flush(); }
    }
}
