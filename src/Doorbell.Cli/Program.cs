using System.CommandLine;
using Doorbell.Cli;

// `doorbell`: run scenarios, list them, audit device trees, serve qtest. Every user mistake is one line on stderr
// and exit 1; no .NET exception text reaches the user (CliErrors.Guard turns anything unexpected into one line).
return CliErrors.Guard(() =>
{
    if (args.Length == 0 || args[0] is "-h" or "--help" or "-?" or "help")
    {
        Console.Out.Write(Usage.Text);
        return 0;
    }
    if (args[0] is "--version" or "-V")
    {
        Console.Out.WriteLine(VersionInfo.Line);
        return 0;
    }
    switch (args[0])
    {
        case "run": return RunCommand.Run(args[1..]);
        case "scenarios": return RunCommand.ListScenarios(args[1..]);
        case "trace-categories": return RunCommand.ListCategories(args[1..]);
    }
    // the qtest launcher before anything else is built: a harness starting Doorbell as QEMU pays only for the qtest front end
    if (QtestCommand.RunIfQtest(args) is int qtestFirst) return qtestFirst;

    var root = new RootCommand("Doorbell: an emulator of the ARM device-assignment path (SMMU, GIC/ITS, PCIe, VFIO).");
    root.Subcommands.Add(AuditCommand.Create());
    root.Subcommands.Add(ServeCommand.Create());
    if (QtestCommand.Intercept(root, args) is int qtestExit) return qtestExit;
    if (args[0].StartsWith('-') && !args[0].StartsWith("--", StringComparison.Ordinal) || args[0].StartsWith("--", StringComparison.Ordinal))
        return CliErrors.Fail($"unknown option '{args[0]}' (see `doorbell --help`)");
    if (args[0] is not ("audit" or "qtest" or "serve"))
        return CliErrors.Fail($"unknown command '{args[0]}' (commands: run, scenarios, trace-categories, audit, qtest, serve; see `doorbell --help`)");
    var parse = root.Parse(args);
    if (parse.Errors.Count > 0)
        return CliErrors.Fail($"{args[0]}: {parse.Errors[0].Message}");
    return parse.Invoke();
});
