using System.Diagnostics;

namespace Doorbell.Tests.Cli;

/// <summary>Runs the built `doorbell` (Doorbell.Cli.dll beside the test binaries) as a separate process.</summary>
public static class CliProcess
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    public static string Dll => Path.Combine(AppContext.BaseDirectory, "Doorbell.Cli.dll");

    public static Result Run(string workDir, params string[] args) => RunFile("dotnet", workDir, [Dll, .. args]);

    public static Result RunFile(string file, string workDir, IEnumerable<string> args, string? stdoutFile = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = stdoutFile is null,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workDir,
        };
        if (stdoutFile is not null)
        {
            // stdout to a file the shell opens (e.g. /dev/full): run through sh so the child's fd 1 is that file
            psi = new ProcessStartInfo("/bin/sh") { RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = workDir };
            psi.ArgumentList.Add("-c");
            psi.ArgumentList.Add("exec \"$0\" \"$@\" > " + stdoutFile);
            psi.ArgumentList.Add(file);
        }
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        using var p = Process.Start(psi)!;
        var so = stdoutFile is null ? p.StandardOutput.ReadToEndAsync() : Task.FromResult("");
        var se = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(300_000)) { p.Kill(true); throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish"); }
        return new Result(p.ExitCode, so.Result, se.Result);
    }
}
