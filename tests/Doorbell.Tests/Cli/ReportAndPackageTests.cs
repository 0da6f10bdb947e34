using System.Text.RegularExpressions;

namespace Doorbell.Tests.Cli;

/// <summary>A [Fact] that reports itself skipped (visibly) when Debian's chromium is not installed.</summary>
public sealed class ChromiumFactAttribute : FactAttribute
{
    public const string Binary = "/usr/bin/chromium";

    public ChromiumFactAttribute()
    {
        if (!File.Exists(Binary)) Skip = "chromium not found at /usr/bin/chromium (scripts/setup-test-deps.sh installs it): HTML report rendering test skipped";
    }
}

public class ReportAndPackageTests
{
    [ChromiumFact]
    public void The_html_report_renders_in_headless_chromium_with_the_board_and_highlighted_paths()
    {
        var d = Path.Combine(Path.GetTempPath(), "doorbell-report-" + Environment.ProcessId);
        Directory.CreateDirectory(d);
        try
        {
            var html = Path.Combine(d, "out.html");
            var r = CliProcess.Run(d, "run", "--report", html);
            Assert.True(r.ExitCode == 0, r.Stdout + r.Stderr);
            var text = File.ReadAllText(html);
            Assert.DoesNotContain("src=\"http", text, StringComparison.Ordinal); // self-contained
            Assert.DoesNotContain("href=\"http", text, StringComparison.Ordinal);

            // The page's script counts what the browser actually laid out; --dump-dom shows the DOM after scripts ran.
            var dom = CliProcess.RunFile(ChromiumFactAttribute.Binary, d,
                ["--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + Path.Combine(d, "profile"), "--dump-dom", "file://" + html]);
            Assert.True(dom.ExitCode == 0, dom.Stderr);
            var m = Regex.Match(dom.Stdout, @"rendered boards=(\d+) board-width=(\d+) devices=(\d+) paths=(\d+) hops=(\d+) faults=(\d+) forged=(\d+)");
            Assert.True(m.Success, "the report's script did not run: " + dom.Stdout[..Math.Min(400, dom.Stdout.Length)]);
            int G(int i) => int.Parse(m.Groups[i].Value, System.Globalization.CultureInfo.InvariantCulture);
            Assert.Equal(5, G(1));                                   // pci-edu's board, VFIO's two, the userspace driver's two
            Assert.True(G(2) >= 5 * 700, "every board SVG was laid out at its width");
            Assert.True(G(3) >= 11, "devices drawn");
            Assert.True(G(4) >= 10, "paths");
            Assert.True(G(5) > G(4), "paths have several hops");
            Assert.True(G(6) >= 2, "the SMMU fault and the ITS drop are drawn as faults");
            Assert.True(G(7) >= 4, "the forged writes (ITS and GICv2m) are highlighted");
            Assert.Contains("IOMMU group 2", dom.Stdout, StringComparison.Ordinal);
            Assert.Contains("GICv2 + GICv2m", dom.Stdout, StringComparison.Ordinal);
            Assert.Contains("GICv3 + ITS", dom.Stdout, StringComparison.Ordinal);
            Assert.Contains("FORGED MSI", dom.Stdout, StringComparison.Ordinal);
        }
        finally { Directory.Delete(d, true); }
    }

    [Fact]
    public void The_tool_package_installs_into_a_tool_path_and_doorbell_version_runs()
    {
        var d = Path.Combine(Path.GetTempPath(), "doorbell-pack-" + Environment.ProcessId);
        Directory.CreateDirectory(d);
        try
        {
            var project = Path.Combine(ScenarioFileTests.RepoRoot(), "src", "Doorbell.Cli", "Doorbell.Cli.csproj");
            var config = AppContext.BaseDirectory.Contains("/Debug/", StringComparison.Ordinal) ? "Debug" : "Release";
            var pack = CliProcess.RunFile("dotnet", d, ["pack", project, "-c", config, "--no-build", "-o", Path.Combine(d, "pkg")]);
            Assert.True(pack.ExitCode == 0, pack.Stdout + pack.Stderr);
            var nupkg = Assert.Single(Directory.GetFiles(Path.Combine(d, "pkg"), "Doorbell.Cli.*.nupkg"));
            var install = CliProcess.RunFile("dotnet", d, ["tool", "install", "--tool-path", Path.Combine(d, "tools"), "--add-source", Path.Combine(d, "pkg"), "Doorbell.Cli"]);
            Assert.True(install.ExitCode == 0, install.Stdout + install.Stderr);
            var doorbell = Path.Combine(d, "tools", "doorbell");
            Assert.True(File.Exists(doorbell), "the tool's command is `doorbell`");
            var v = CliProcess.RunFile(doorbell, d, ["--version"]);
            Assert.Equal(0, v.ExitCode);
            Assert.StartsWith("doorbell ", v.Stdout, StringComparison.Ordinal);
            Assert.Contains(Path.GetFileNameWithoutExtension(nupkg)["Doorbell.Cli.".Length..], v.Stdout, StringComparison.Ordinal);
        }
        finally { Directory.Delete(d, true); }
    }
}
