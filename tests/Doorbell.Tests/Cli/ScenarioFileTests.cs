using Doorbell.Scenarios;

namespace Doorbell.Tests.Cli;

public class ScenarioFileTests
{
    /// <summary>The repository root (examples/ and docs/ live there).</summary>
    public static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Doorbell.slnx"))) return dir.FullName;
        throw new InvalidOperationException("repository root not found above the test binaries");
    }

    public static IEnumerable<object[]> Examples() =>
        Directory.EnumerateFiles(Path.Combine(RepoRoot(), "examples", "scenarios"), "*.yaml").Order(StringComparer.Ordinal).Select(f => new object[] { Path.GetFileName(f) });

    [Theory]
    [MemberData(nameof(Examples))]
    public void Every_shipped_example_scenario_runs_and_meets_its_expectations(string file)
    {
        var s = ScenarioFile.Load(Path.Combine(RepoRoot(), "examples", "scenarios", file));
        var w = new StringWriter();
        var failures = s.ToScenario().Run(new ScenarioContext(w));
        Assert.True(failures == 0, w.ToString());
        Assert.DoesNotContain("FAIL", w.ToString(), StringComparison.Ordinal);
        Assert.True(s.Steps.Count >= 3);
    }

    [Fact]
    public void A_forged_msi_expectation_that_is_wrong_fails_the_scenario()
    {
        var yaml = File.ReadAllText(Path.Combine(RepoRoot(), "examples", "scenarios", "msi-forgery-its.yaml")).Replace("expect: blocked", "expect: delivered", StringComparison.Ordinal);
        var s = ScenarioFile.Parse(yaml, "x.yaml", Path.Combine(RepoRoot(), "examples", "scenarios"));
        var w = new StringWriter();
        Assert.Equal(1, s.ToScenario().Run(new ScenarioContext(w)));
        Assert.Contains("FAIL forge", w.ToString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("steps:\n  - dma: { device: 00:01.0, op: write, iovaa: 0x10 }\n", "x.yaml:2:40: unknown key 'iovaa' in 'dma'")]
    [InlineData("steps:\n  - dmaa: { device: 00:01.0 }\n", "x.yaml:2:5: unknown step 'dmaa'")]
    [InlineData("name: a\nstep: []\n", "x.yaml:2:1: unknown key 'step' in scenario")]
    [InlineData("steps:\n  - dma: { device: 00:01.0, op: write, iova: zz }\n", "x.yaml:2:46: 'iova' must be a number")]
    [InlineData("steps:\n  - dma: { device: 1.0, op: write, iova: 0 }\n", "x.yaml:2:20: 'device' must be a PCI address")]
    [InlineData("steps:\n  - dma: { device: 00:01.0, op: poke, iova: 0 }\n", "x.yaml:2:33: 'op' must be one of read, write")]
    [InlineData("steps:\n  - msi: { device: 00:01.0, expect: maybe }\n", "x.yaml:2:37: 'expect' must be one of delivered, not-delivered")]
    [InlineData("steps:\n  - map: { domain: a }\n", "x.yaml:2:10: step 'map' at line 2 needs 'iova'")]
    [InlineData("strict: sometimes\nsteps: []\n", "x.yaml:1:9: 'strict' must be true or false")]
    [InlineData("board: { ram: lots }\nsteps:\n  - assert: { smmu-events: 0 }\n", "x.yaml: board 'custom'")]
    [InlineData("board: { gic: { version: 3, its: false } }\nsteps:\n  - assert: { smmu-events: 0 }\n", "need an MSI controller")]
    [InlineData("board: { ram: 5 }\nsteps:\n  - assert: { smmu-events: 0 }\n", "x.yaml: board 'custom': ram '5' is too small for the host kernel (at least 8M)")]
    [InlineData("board: { colour: red }\nsteps: []\n", "x.yaml:1:8: inline board")]
    [InlineData("steps: {\n", "x.yaml:2:1: not valid YAML")]
    [InlineData("name: a\n", "x.yaml:1:1: missing 'steps'")]
    public void Schema_mistakes_are_one_line_errors_naming_the_line(string yaml, string expected)
    {
        var e = Assert.Throws<ScenarioFormatException>(() => ScenarioFile.Parse(yaml, "x.yaml", "."));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Every_builtin_scenario_is_listed_and_runs()
    {
        var names = BuiltinScenarios.List().Select(x => x.Name).ToList();
        Assert.Equal("default", names[0]);
        foreach (var required in new[] { "memory", "smmuv3", "its-msi", "vfio", "isolation-its", "isolation-gicv2m", "strict-careless" })
            Assert.Contains(required, names);
        foreach (var n in names.Where(n => n is not "default" and not "userspace-driver" and not "vfio"))
        {
            var w = new StringWriter();
            Assert.True(BuiltinScenarios.Find(n)!.Run(new ScenarioContext(w)) == 0, w.ToString());
        }
    }

    [Fact]
    public void The_careless_driver_is_caught_with_each_rule_printed()
    {
        var w = new StringWriter();
        var ctx = new ScenarioContext(w);
        Assert.Equal(0, BuiltinScenarios.Find("strict-careless")!.Run(ctx));
        var text = w.ToString();
        Assert.Equal(4, ctx.Findings.Count);   // was 3 before the careless driver also freed a table (issue 18)
        Assert.Contains("rule: IHI 0070 §4.7.3", text, StringComparison.Ordinal);
        Assert.Contains("rule: IHI 0070 §4.3.2", text, StringComparison.Ordinal);
        Assert.Contains("rule: Arm IHI 0070 §3.21", text, StringComparison.Ordinal);
        // the table freed without a non-leaf TLBI: the walk went through the stale level-2 descriptor into the reused page
        Assert.Contains("rule: " + Doorbell.Iommu.Translator.StaleWalkRule, text, StringComparison.Ordinal);
        Assert.Contains("used a stale table descriptor at level 2", text, StringComparison.Ordinal);
        Assert.Contains("read 0xdd00dd0 from the other buffer", text, StringComparison.Ordinal);
        Assert.Single(ctx.Findings, f => f.Rule == Doorbell.Iommu.Translator.StaleWalkRule);
    }
}
