using System.CommandLine;
using Doorbell.Qtest;

namespace Doorbell.Cli;

/// <summary>
/// `doorbell qtest [QEMU-style args]`: a drop-in for qemu-system-aarch64 in qtest harnesses. The same
/// arguments given directly (`doorbell -machine virt -qtest unix:…`) run it too, so a harness's QEMU binary
/// variable can point at the CLI (or at scripts/qemu-system-aarch64-doorbell). Errors are one line,
/// `doorbell: OPTION VALUE: reason`, exit status 1, as QEMU reports them.
/// </summary>
public static class QtestCommand
{
    /// <summary>
    /// When the arguments are a qtest invocation (either `qtest …` or QEMU-style single-dash options directly) runs
    /// it and returns its exit code, else null. Called before anything else is built, so a harness pays only
    /// for the qtest front end's start-up.
    /// </summary>
    public static int? RunIfQtest(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        if (args.Length > 0 && args[0] == "qtest" && !(args.Length > 1 && args[1] is "-h" or "--help" or "-?"))
            return Run(args[1..]);
        if (args.Length > 0 && args[0].StartsWith('-') && !args[0].StartsWith("--", StringComparison.Ordinal) && args[0] is not ("-h" or "-?"))
            return Run(args);
        return null;
    }

    /// <summary>The `qtest` subcommand as the help lists it (running it goes through <see cref="RunIfQtest"/>).</summary>
    public static Command Create() =>
        new("qtest", "Serve QEMU's qtest protocol for a qemu-virt machine (accepts QEMU's command-line subset: -machine virt|board=FILE.yaml|FILE.yaml|BUILT-IN[,gic-version=2|3][,iommu=smmuv3|none][,its=on|off] -m -smp -device edu[,addr=S.F][,dma_mask=N] -qtest unix:PATH -qtest-log FILE|none -d/-trace PATTERN; -machine help, -device help).");

    /// <summary>Registers the `qtest` subcommand on <paramref name="root"/> and runs a qtest invocation (kept for callers of the old entry point).</summary>
    public static int? Intercept(RootCommand root, string[] args)
    {
        ArgumentNullException.ThrowIfNull(root);
        root.Subcommands.Add(Create());
        return RunIfQtest(args);
    }

    static int Run(string[] qemuArgs)
    {
        try
        {
            var cmd = QemuCommandLine.Parse(qemuArgs);
            if (cmd.Help != null)
            {
                Console.Out.Write(cmd.Help);
                return 0;
            }
            return QtestRunner.Run(cmd, Console.Error);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"doorbell: {e.Message}");
            return 1;
        }
#pragma warning disable CA1031 // last resort: no .NET stack trace reaches a user; the one line names the failure
        catch (Exception e)
        {
            Console.Error.WriteLine($"doorbell: internal error: {e.GetType().Name}: {e.Message}");
            return 70;
        }
#pragma warning restore CA1031
    }
}
