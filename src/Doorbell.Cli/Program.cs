using System.CommandLine;
using Doorbell.Scenarios;

var root = new RootCommand("Doorbell: an emulator of the ARM device-assignment path (SMMU, GIC/ITS, PCIe, VFIO).");

var strict = new Option<bool>("--strict") { Description = "Report what real hardware silently tolerates (stale caches, missing syncs...)." };
var trace = new Option<bool>("--trace") { Description = "Print the models' trace events as they happen." };
var run = new Command("run", "Run a scenario (the embedded default one when none is named).");
run.Options.Add(strict);
run.Options.Add(trace);
run.SetAction(parse =>
{
    var scenario = DefaultScenario.Create();
    var context = new ScenarioContext(Console.Out, parse.GetValue(strict), parse.GetValue(trace));
    return scenario.Run(context) == 0 ? 0 : 1;
});
root.Subcommands.Add(run);
root.Subcommands.Add(Doorbell.Cli.AuditCommand.Create());
root.Subcommands.Add(Doorbell.Cli.ServeCommand.Create());
if (Doorbell.Cli.QtestCommand.Intercept(root, args) is int qtestExit) return qtestExit;

return root.Parse(args).Invoke();
