namespace Doorbell.Pci;

/// <summary>One bridge on a function's path to the root complex, with the ACS state a grouping algorithm checks.</summary>
public readonly record struct UpstreamHop(ushort RequesterId, PciePortType? PortType, ushort AcsCapabilities, ushort AcsControl);

/// <summary>
/// What an IOMMU-group algorithm (Linux drivers/iommu/iommu.c pci_device_group / pci_acs_path_enabled) needs to
/// know about a function: whether it is multi-function and isolated from its siblings by ACS, and the ACS
/// state of every bridge between it and the root complex.
/// </summary>
public sealed record PciIsolationInputs(ushort RequesterId, bool MultiFunction, PciePortType? PortType,
    ushort AcsCapabilities, ushort AcsControl, IReadOnlyList<UpstreamHop> Path)
{
    /// <summary>The request-redirect set Linux requires for isolation (REQ_ACS_FLAGS: SV | RR | CR | UF).</summary>
    public const ushort LinuxRequiredAcs = PciCfg.AcsSourceValidation | PciCfg.AcsRequestRedirect | PciCfg.AcsCompletionRedirect | PciCfg.AcsUpstreamForwarding;

    /// <summary>True when every downstream port on the path enables the Linux-required ACS controls.</summary>
    public bool PathAcsEnabled => Path.All(h => h.PortType is not (PciePortType.RootPort or PciePortType.SwitchDownstream)
                                               || (h.AcsControl & LinuxRequiredAcs) == LinuxRequiredAcs);

    public static PciIsolationInputs Of(PciFunction function)
    {
        ArgumentNullException.ThrowIfNull(function);
        var path = new List<UpstreamHop>();
        for (var bus = function.Bus; bus?.Parent is { } br && path.Count < 256; bus = br.Bus)
            path.Add(new UpstreamHop(br.RequesterId, br.PortType, br.AcsCapabilities, br.AcsControl));
        return new PciIsolationInputs(function.RequesterId, function.IsMultiFunction, function.PortType,
            function.AcsCapabilities, function.AcsControl, path);
    }
}
