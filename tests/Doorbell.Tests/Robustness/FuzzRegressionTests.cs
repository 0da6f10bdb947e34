using System.Diagnostics;

namespace Doorbell.Tests.Robustness;

/// <summary>
/// Every crash, hang or oracle violation the fuzzers ever found (fuzz/regressions/TARGET/*.bin) replays cleanly. Each
/// input runs in a child process (the fuzz driver's <c>run</c> command) so that a stack overflow or a hang fails this test
/// instead of taking the test host down with it.
/// </summary>
public class FuzzRegressionTests
{
    internal static string Root
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Doorbell.slnx"))) return d.FullName;
            throw new InvalidOperationException("repository root not found");
        }
    }

    /// <summary>The fuzz driver built beside this test assembly's configuration (the solution builds it).</summary>
    internal static string FuzzDll
    {
        get
        {
            var config = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}", StringComparison.Ordinal) ? "Debug" : "Release";
            return Path.Combine(Root, "fuzz", "Doorbell.Fuzz", "bin", config, "net10.0", "Doorbell.Fuzz.dll");
        }
    }

    public static TheoryData<string, string> Inputs()
    {
        var data = new TheoryData<string, string>();
        foreach (var dir in Directory.EnumerateDirectories(Path.Combine(Root, "fuzz", "regressions")).Order(StringComparer.Ordinal))
            foreach (var f in Directory.EnumerateFiles(dir).Order(StringComparer.Ordinal))
                data.Add(Path.GetFileName(dir), Path.GetFileName(f));
        return data;
    }

    [Theory]
    [MemberData(nameof(Inputs))]
    public async Task Replays_without_crash_hang_or_oracle_violation(string target, string file)
    {
        Assert.True(File.Exists(FuzzDll), $"fuzz driver not built: {FuzzDll}");
        var path = Path.Combine(Root, "fuzz", "regressions", target, file);
        var psi = new ProcessStartInfo("dotnet", [FuzzDll, "run", target, path]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"{target}/{file}: no end within 60 s (hang)");
        }
        var err = await stderr;
        Assert.True(p.ExitCode == 0, $"{target}/{file}: exit {p.ExitCode}: {await stdout}{err.Split('\n')[0]}");
    }

    [Fact]
    public void Every_target_has_a_seed_corpus_and_the_driver_lists_them()
    {
        var psi = new ProcessStartInfo("dotnet", [FuzzDll, "list"]) { RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        var list = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
        foreach (var t in new[] { "qtest", "dtb", "board-yaml", "vfio", "structures", "smmuv2", "serve", "scenario-yaml" })
        {
            Assert.Contains(t, list, StringComparison.Ordinal);
            Assert.NotEmpty(Directory.EnumerateFiles(Path.Combine(Root, "fuzz", "corpus", t)));
        }
    }
}
