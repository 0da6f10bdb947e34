using Doorbell.Scenarios;
using Doorbell.Scenarios.Steps;

namespace Doorbell.Tests.Scenarios;

public class DefaultScenarioTests
{
    [Fact]
    public void Every_step_of_the_default_scenario_reports_success()
    {
        var output = new StringWriter();
        var scenario = DefaultScenario.Create();
        var failures = scenario.Run(new ScenarioContext(output));
        Assert.True(failures == 0, output.ToString());
        foreach (var step in scenario.Steps)
            Assert.Contains(step.Title, output.ToString(), StringComparison.Ordinal);
        Assert.Contains($"all {scenario.Steps.Count} steps ok", output.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Default_scenario_output_is_deterministic()
    {
        static string RunOnce()
        {
            var w = new StringWriter();
            DefaultScenario.Create().Run(new ScenarioContext(w));
            return w.ToString(); // no OS descriptor number is printed any more: the output is compared as is
        }
        Assert.Equal(RunOnce(), RunOnce());
    }

    [Fact]
    public void Vfio_step_runs_on_the_real_stack_and_shows_the_policy_and_the_msix_eventfd()
    {
        var output = new StringWriter();
        Assert.True(new VfioStep().Run(new ScenarioContext(output)), output.ToString());
        var text = output.ToString();
        Assert.Contains("allow_unsafe_interrupts=0: SET_IOMMU -> EPERM", text, StringComparison.Ordinal);
        Assert.Contains("allow_unsafe_interrupts=1: SET_IOMMU -> 0", text, StringComparison.Ordinal);
        Assert.Contains("MAP_DMA into the MSI window 0x800_0000: EINVAL", text, StringComparison.Ordinal);
        Assert.Contains("epoll ready 1 (token 3), read 1", text, StringComparison.Ordinal);
    }
}
