using System.Diagnostics;
using Doorbell.Platform.DeviceTree;

namespace Doorbell.Tests.Platform;

/// <summary>Compiles hand-written .dts sources with Debian's dtc (device-tree-compiler, installed by scripts/setup-test-deps.sh).</summary>
public static class Dtc
{
    public static string? Binary { get; } = Find();

    static string? Find()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin").Split(':'))
        {
            var p = Path.Combine(dir, "dtc");
            if (File.Exists(p)) return p;
        }
        return null;
    }

    /// <summary>The DTB of <paramref name="dts"/> (a body without the /dts-v1/; header is given one).</summary>
    public static byte[] Compile(string dts)
    {
        var bin = Binary ?? throw new InvalidOperationException("dtc not found");
        var src = dts.Contains("/dts-v1/", StringComparison.Ordinal) ? dts : "/dts-v1/;\n" + dts;
        var psi = new ProcessStartInfo(bin, "-q -W no-iommus_property -W no-msi_parent_property -I dts -O dtb -o - -")
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        using var p = Process.Start(psi)!;
        p.StandardInput.Write(src);
        p.StandardInput.Close();
        using var ms = new MemoryStream();
        var copy = p.StandardOutput.BaseStream.CopyToAsync(ms);
        var err = p.StandardError.ReadToEndAsync();
        // dtc's own iommus / msi-parent checks loop on negative #cells (Debian dtc 1.6/1.7): they are switched off above.
        if (!copy.Wait(TimeSpan.FromSeconds(30)) || !p.WaitForExit(30_000))
        {
            p.Kill();
            throw new TimeoutException("dtc did not finish within 30 s");
        }
        if (p.ExitCode != 0) throw new InvalidOperationException("dtc failed: " + err.Result);
        return ms.ToArray();
    }

    public static Fdt Tree(string dts) => Fdt.Parse(Compile(dts));
}

/// <summary>A [Fact] that reports itself skipped (visibly) when dtc is not installed.</summary>
public sealed class DtcFactAttribute : FactAttribute
{
    public DtcFactAttribute()
    {
        if (Dtc.Binary == null) Skip = "dtc not found (scripts/setup-test-deps.sh installs Debian's device-tree-compiler): hand-made device-tree test skipped";
    }
}

/// <summary>A [Theory] that reports itself skipped (visibly) when dtc is not installed.</summary>
public sealed class DtcTheoryAttribute : TheoryAttribute
{
    public DtcTheoryAttribute()
    {
        if (Dtc.Binary == null) Skip = "dtc not found (scripts/setup-test-deps.sh installs Debian's device-tree-compiler): hand-made device-tree test skipped";
    }
}
