namespace Doorbell.Tests.Cli;

/// <summary>The `doorbell` command as a user meets it: run as a process, every mistake a one-line error.</summary>
public class CliTests
{
    static readonly string Dir = Path.GetTempPath();

    static string Temp(string name, string text)
    {
        var d = Path.Combine(Path.GetTempPath(), "doorbell-cli-tests");
        Directory.CreateDirectory(d);
        var p = Path.Combine(d, name);
        File.WriteAllText(p, text);
        return p;
    }

    public static IEnumerable<object[]> BadArguments()
    {
        var badScenario = Temp("bad-scenario.yaml", "name: x\nsteps:\n  - dma: { device: 00:01.0, op: write, iovaa: 0x10 }\n");
        var badYaml = Temp("bad-yaml.yaml", "steps: {\n");
        var badBoard = Temp("bad-board.yaml", "name: x\nram: lots\n");
        var unknownKeyBoard = Temp("unknown-key-board.yaml", "name: x\ncolour: red\n");
        return new[]
        {
            new object[] { new[] { "run", "--nope" }, "run: unknown option '--nope'" },
            [new[] { "run", "nosuch" }, "no built-in scenario 'nosuch'"],
            [new[] { "run", "missing.yaml" }, "scenario file 'missing.yaml' not found"],
            [new[] { "run", "--trace", "zzz*" }, "--trace zzz*: 'zzz*' matches no trace category"],
            [new[] { "run", "--strict=maybe" }, "--strict=maybe: expected"],
            [new[] { "run", "--trace-out" }, "--trace-out needs a value"],
            [new[] { "run", "--report" }, "--report needs a value"],
            [new[] { "run", "--report", "/nonexistent-dir/x.html" }, "--report /nonexistent-dir/x.html: directory does not exist"],
            [new[] { "run", "--board", "/nonexistent-dir/b.yaml" }, "--board /nonexistent-dir/b.yaml: cannot read"],
            [new[] { "run", "--board", badBoard }, "--board " + badBoard + ":"],
            [new[] { "run", "--board", unknownKeyBoard }, "colour"],
            [new[] { "run", "default", "--board", Path.Combine(ScenarioFileTests.RepoRoot(), "examples", "boards", "two-devices-its.yaml") }, "built-in scenario 'default' builds its own boards"],
            [new[] { "run", "a", "b" }, "unexpected argument 'b'"],
            [new[] { "run", badScenario }, "bad-scenario.yaml:3:40: unknown key 'iovaa'"],
            [new[] { "run", badYaml }, "bad-yaml.yaml:2:1: not valid YAML"],
            [new[] { "scenarios", "extra" }, "scenarios: unexpected argument 'extra'"],
            [new[] { "trace-categories", "x" }, "unexpected argument 'x'"],
            [new[] { "frobnicate" }, "unknown command 'frobnicate'"],
            [new[] { "--frob" }, "unknown option '--frob'"],
            [new[] { "serve", "--socket", "/tmp/doorbell-cli-s.sock", "--board", unknownKeyBoard }, "serve: --board " + unknownKeyBoard + ": board description: line 2: unknown key 'colour' in board"],
            [new[] { "serve", "--socket", "/tmp/doorbell-cli-s.sock", "--board", "/nonexistent-dir/b.yaml" }, "serve: --board /nonexistent-dir/b.yaml: cannot read"],
            [new[] { "serve", "--socket", "/nonexistent-dir/s.sock" }, "serve: --socket /nonexistent-dir/s.sock: directory /nonexistent-dir does not exist"],
            [new[] { "serve" }, "serve: Option '--socket' is required"],
            [new[] { "-M", badBoard, "-qtest", "unix:/nonexistent-dir/q" }, "-M " + badBoard + ": board 'x': bad size 'lots'"],
        };
    }

    [Theory]
    [MemberData(nameof(BadArguments))]
    public void Every_bad_argument_exits_1_with_one_line_naming_it_and_no_stack_trace(string[] args, string expected)
    {
        var r = CliProcess.Run(Dir, args);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("", r.Stdout);
        var lines = r.Stderr.TrimEnd('\n').Split('\n');
        Assert.Single(lines);
        Assert.StartsWith("doorbell: ", lines[0], StringComparison.Ordinal);
        Assert.Contains(expected, lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void A_write_error_on_stdout_is_one_line_and_a_non_zero_exit()
    {
        if (!File.Exists("/dev/full")) Assert.Fail("/dev/full is missing on this machine");
        var r = CliProcess.RunFile("dotnet", Dir, [CliProcess.Dll, "run", "memory"], stdoutFile: "/dev/full");
        Assert.NotEqual(0, r.ExitCode);
        var lines = r.Stderr.TrimEnd('\n').Split('\n');
        Assert.Single(lines);
        Assert.StartsWith("doorbell: cannot write output:", lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Version_and_usage_name_the_doorbell_command()
    {
        var v = CliProcess.Run(Dir, "--version");
        Assert.Equal(0, v.ExitCode);
        Assert.Matches(@"^doorbell \d+\.\d+\.\d+\S* \(commit ([0-9a-f]{7,12}|unknown)\)\n$", v.Stdout);
        var h = CliProcess.Run(Dir, "--help");
        Assert.StartsWith("Usage: doorbell ", h.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("Doorbell.Cli", h.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Two_runs_give_byte_identical_output_and_trace_files()
    {
        var d = Path.Combine(Path.GetTempPath(), "doorbell-cli-repro-" + Environment.ProcessId);
        Directory.CreateDirectory(d);
        try
        {
            // fds inherited differently must not change anything either: the second run gets extra open files.
            var a = CliProcess.Run(d, "run", "--strict", "--trace", "its*,smmu_event", "--trace-out", "a.json", "--report", "a.html");
            using var extra1 = File.OpenRead(CliProcess.Dll);
            using var extra2 = File.OpenRead(CliProcess.Dll);
            var b = CliProcess.Run(d, "run", "--strict", "--trace", "its*,smmu_event", "--trace-out", "b.json", "--report", "b.html");
            Assert.True(a.ExitCode == 0, a.Stdout + a.Stderr);
            Assert.Equal(a.Stdout, b.Stdout);
            Assert.Equal(File.ReadAllBytes(Path.Combine(d, "a.json")), File.ReadAllBytes(Path.Combine(d, "b.json")));
            Assert.Equal(File.ReadAllBytes(Path.Combine(d, "a.html")), File.ReadAllBytes(Path.Combine(d, "b.html")));
            Assert.Contains("| [", a.Stdout, StringComparison.Ordinal);
            Assert.Contains("its_translate", a.Stdout, StringComparison.Ordinal);
            Assert.DoesNotContain("smmu_translate", a.Stdout, StringComparison.Ordinal);
            Assert.DoesNotContain(d, a.Stdout, StringComparison.Ordinal);
        }
        finally { Directory.Delete(d, true); }
    }

    [Fact]
    public void Strict_fail_turns_findings_into_a_non_zero_exit_and_shows_each_rule()
    {
        var plain = CliProcess.Run(Dir, "run", "strict-careless");
        Assert.Equal(0, plain.ExitCode);
        var fail = CliProcess.Run(Dir, "run", "strict-careless", "--strict=fail");
        Assert.Equal(2, fail.ExitCode);
        Assert.Contains("--strict=fail: 4 strict-mode finding(s)", fail.Stdout, StringComparison.Ordinal);   // 3 before the freed table (issue 18)
        Assert.Equal(4, fail.Stdout.Split('\n').Count(l => l.TrimStart().StartsWith("rule: ", StringComparison.Ordinal)));
        var clean = CliProcess.Run(Dir, "run", "smmuv3", "--strict=fail");
        Assert.Equal(0, clean.ExitCode);
    }

    [Fact]
    public void Scenarios_lists_the_builtins_and_a_scenario_file_runs_by_path()
    {
        var l = CliProcess.Run(Dir, "scenarios");
        Assert.Equal(0, l.ExitCode);
        Assert.StartsWith("default ", l.Stdout, StringComparison.Ordinal);
        Assert.Contains("strict-careless", l.Stdout, StringComparison.Ordinal);
        var r = CliProcess.Run(Dir, "run", Path.Combine(ScenarioFileTests.RepoRoot(), "examples", "scenarios", "dma-isolation.yaml"));
        Assert.True(r.ExitCode == 0, r.Stdout + r.Stderr);
        Assert.Contains("scenario 'dma-isolation': its one step ok", r.Stdout, StringComparison.Ordinal);
        var board = CliProcess.Run(Dir, "run", "--board", Path.Combine(ScenarioFileTests.RepoRoot(), "src", "Doorbell", "Platform", "Boards", "two-port-switch.yaml"));
        Assert.True(board.ExitCode == 0, board.Stdout + board.Stderr);
        Assert.Contains("IOMMU groups", board.Stdout, StringComparison.Ordinal);
    }
}
