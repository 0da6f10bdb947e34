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
        new IsolationErasStep(),
    ], "every capability in order: memory, translation, SMMUv3, ITS, PCIe, VFIO, a userspace driver end to end, a guest with an assigned device, the isolation-policy eras on SMMUv2 boards");
}

/// <summary>The scenarios built into `doorbell`: the default one, each capability alone, the isolation demonstrations and strict mode.</summary>
public static class BuiltinScenarios
{
    static readonly (string Name, string Description, Func<IScenarioStep[]> Steps)[] Table =
    [
        ("memory", "physical address space: sparse RAM and bus decode", () => [new PhysicalMemoryStep()]),
        ("translation", "VMSAv8-64 walks, IOTLB hit and miss, faults as values", () => [new TranslationStep()]),
        ("smmuv3", "SMMUv3 programmed by the host driver: DMA through a domain, a fault as an event record", () => [new SmmuV3Step()]),
        ("its-msi", "an MSI through the GICv3 ITS to a host CPU; the same write forged against ITS and GICv2m", () => [new ItsMsiStep()]),
        ("pci-edu", "ECAM enumeration of qemu-virt, QEMU's edu device: DMA and MSI", () => [new PciEduStep()]),
        ("vfio", "VFIO ABI on the real stack: container, group, DMA map, config virtualization, MSI-X to an eventfd", () => [new VfioStep()]),
        ("userspace-driver", "a userspace driver over VFIO end to end, and the isolation verdict", () => [new UserspaceDriverStep()]),
        ("guest", "a VM (vGICv3 + vITS, irqfd) whose kernel is Doorbell's drivers, an assigned device: DMA into guest RAM, MSI-X hop by hop; GICv2m two-VM forgery", () => [new GuestStep()]),
        ("isolation-its", "isolation demonstration: forged MSIs on an ITS board stay in the forger's ITT", () => [new MsiIsolationStep(its: true)]),
        ("isolation-gicv2m", "isolation demonstration: forged MSIs on a GICv2m board raise the victim's vectors", () => [new MsiIsolationStep(its: false)]),
        (IsolationErasScenario.Name, "SMMUv2 boards (Juno-like, ThunderX-like, ITS + GICv2m) through the isolation-policy eras: board x era -> accepted? forged?", () => [new IsolationErasStep()]),
        ("strict-careless", "strict mode: a careless SMMUv3 driver caught (missing CMD_SYNC, stale STE, page freed without TLBI, table freed without TLBI)", () => [new CarelessDriverStep()]),
    ];

    /// <summary>Names and descriptions, default first.</summary>
    public static IEnumerable<(string Name, string Description)> List()
    {
        yield return ("default", DefaultScenario.Create().Description);
        foreach (var (n, d, _) in Table) yield return (n, d);
    }

    /// <summary>The built-in scenario called <paramref name="name"/>, or null.</summary>
    public static Scenario? Find(string name)
    {
        if (name == "default") return DefaultScenario.Create();
        foreach (var (n, d, steps) in Table)
            if (n == name) return new Scenario(n, steps(), d);
        return null;
    }
}

/// <summary>The interrupt-isolation policy through its eras on the SMMUv2 boards (issue 15), as a named scenario.</summary>
public static class IsolationErasScenario
{
    public const string Name = "isolation-eras";

    public static Scenario Create() => new(Name, [new IsolationErasStep()]);
}
