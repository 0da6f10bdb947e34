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
        new IsolationErasStep(),
    ]);
}

/// <summary>The interrupt-isolation policy through its eras on the SMMUv2 boards (issue 15), as a named scenario.</summary>
public static class IsolationErasScenario
{
    public const string Name = "isolation-eras";

    public static Scenario Create() => new(Name, [new IsolationErasStep()]);
}
