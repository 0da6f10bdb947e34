using System.Globalization;
using Doorbell.Fuzz;

namespace Doorbell.Fuzz.Coverage;

/// <summary>Runs one fuzz target (structure-aware generation and mutation, as the smoke run does) for a time budget, so
/// that coverlet measures what it reaches. Environment: DOORBELL_FUZZ_COVERAGE_TARGET (default: every target),
/// DOORBELL_FUZZ_COVERAGE_SECONDS (default 10), DOORBELL_FUZZ_COVERAGE_SEED (default 1).</summary>
public class TargetCoverageRun
{
    [Fact]
    public void Runs_the_target_without_a_finding()
    {
        static string? Env(string n) => Environment.GetEnvironmentVariable(n);
        var name = Env("DOORBELL_FUZZ_COVERAGE_TARGET");
        var seconds = double.Parse(Env("DOORBELL_FUZZ_COVERAGE_SECONDS") ?? "10", CultureInfo.InvariantCulture);
        var seed = int.Parse(Env("DOORBELL_FUZZ_COVERAGE_SEED") ?? "1", CultureInfo.InvariantCulture);
        IReadOnlyList<FuzzTarget> targets = name is null ? Targets.All : [Targets.Find(name) ?? throw new ArgumentException($"unknown target '{name}'")];
        var root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "Doorbell.slnx"))) root = Path.GetDirectoryName(root) ?? throw new InvalidOperationException("repository root not found");
        var findings = Directory.CreateTempSubdirectory("doorbell-fuzz-coverage.").FullName;
        var output = new StringWriter();
        var rc = Smoke.Run(targets, TimeSpan.FromSeconds(seconds), seed, findings, Path.Combine(root, "fuzz", "corpus"), output, TimeSpan.FromSeconds(60));
        File.WriteAllText(Path.Combine(Path.GetTempPath(), $"doorbell-fuzz-coverage-{name ?? "all"}.log"), output.ToString());
        Assert.True(rc == 0, output.ToString());
    }
}
