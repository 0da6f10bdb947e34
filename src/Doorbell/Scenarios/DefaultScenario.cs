using Doorbell.Scenarios.Steps;

namespace Doorbell.Scenarios;

/// <summary>The scenario `doorbell run` plays when given none. It grows with every capability.</summary>
public static class DefaultScenario
{
    public static Scenario Create() => new("default",
    [
        new PhysicalMemoryStep(),
        new TranslationStep(),
        new SmmuV3Step(),
        new ItsMsiStep(),
        new PciEduStep(),
        new VfioStep(),
        new UserspaceDriverStep(),
        new GuestStep(),
    ]);
}
