using System.CommandLine;
using Doorbell.Qtest;

namespace Doorbell.Cli;

/// <summary>
/// `doorbell qtest [QEMU-style args]`: a drop-in for qemu-system-aarch64 in qtest harnesses. The same
/// arguments given directly (`doorbell -machine virt -qtest unix:…`) run it too, so a harness's QEMU binary
/// variable can point at the CLI (or at scripts/qemu-system-aarch64-doorbell).
/// </summary>
public static class QtestCommand
{
    static readonly string[] QemuFirstOptions = ["-machine", "-M", "-qtest", "-m", "-device", "-accel", "-cpu", "-smp", "-display", "-nodefaults", "-qtest-log", "-icount", "-serial", "-monitor", "-chardev", "-mon", "-qmp"];

    /// <summary>
    /// Registers the `qtest` subcommand on <paramref name="root"/>; when the arguments are a qtest invocation
    /// (either `qtest …` or QEMU-style options directly) runs it and returns its exit code, else null.
    /// </summary>
    public static int? Intercept(RootCommand root, string[] args)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(args);
        var cmd = new Command("qtest", "Serve QEMU's qtest protocol for a qemu-virt machine (accepts QEMU's command-line subset: -machine virt[,gic-version=2|3][,iommu=smmuv3|none][,its=on|off] -m -smp -device edu[,addr=S.F][,dma_mask=N] -qtest unix:PATH -qtest-log FILE|none).");
        root.Subcommands.Add(cmd);
        if (args.Length > 0 && args[0] == "qtest" && !(args.Length > 1 && args[1] is "-h" or "--help" or "-?"))
            return Run(args[1..]);
        if (args.Length > 0 && QemuFirstOptions.Contains(args[0]))
            return Run(args);
        return null;
    }

    static int Run(string[] qemuArgs)
    {
        QemuCommandLine cmd;
        try
        {
            cmd = QemuCommandLine.Parse(qemuArgs);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or OverflowException)
        {
            Console.Error.WriteLine($"doorbell: {e.Message}");
            return 1;
        }
        return QtestRunner.Run(cmd, Console.Error);
    }
}
