using System.Globalization;
using Doorbell.Examples;
using Doorbell.Host.Kernel;
using Doorbell.Host.Vfio;
using Doorbell.Platform;

namespace Doorbell.Scenarios.Steps;

/// <summary>One cell of the board × era table: what VFIO_SET_IOMMU returned and whether the forgery reached the victim.</summary>
public sealed record IsolationEraResult(string Board, IsolationPolicyEra Era, string MsiController, int SetIommu, int VictimVectorsRaised, int ForgerVectorsRaised)
{
    public bool Accepted => SetIommu == 0;
    public bool Forged => VictimVectorsRaised > 0;
}

/// <summary>
/// The 2014 thread's argument replayed on SMMUv2 boards: for each board (Juno-like: MMU-401 + GICv2m; ThunderX-like:
/// MMU-500 + ITS; a board with both an ITS and a GICv2m frame whose PCIe uses the frame) and each policy era, a host
/// kernel of that era boots the board, a malicious userspace driver (<see cref="MsiForgeryProbe"/>, VFIO ABI only)
/// asks for device A, and if type1 lets it in, sprays MSI data values at its doorbell IOVA. Whether device B's
/// eventfds fire is decided by the models: the ITS tags writes with A's DeviceID, GICv2m only sees the data.
/// </summary>
public sealed class IsolationErasStep : IScenarioStep
{
    public static readonly string[] Boards = ["juno-like", "thunderx-like", "its-and-gicv2m"];
    public static readonly IsolationPolicyEra[] Eras = [IsolationPolicyEra.Era2013, IsolationPolicyEra.Era411, IsolationPolicyEra.Today];

    public string Title => "SMMUv2 boards through the isolation-policy eras: board x era -> accepted? forged interrupt raised?";

    /// <summary>Runs one cell: a fresh board and kernel of that era, the probe with devices 00:01.0 (A) and 00:02.0 (B).</summary>
    public static IsolationEraResult RunCell(string board, IsolationPolicyEra era)
    {
        var (m, models) = HostKernel.CreateBoard(BoardDescription.LoadBuiltIn(board));
        var k = HostKernel.Boot(m, models);
        var vfio = k.BuildVfio(new VfioOptions { IsolationEra = era });
        var a = k.FindFunction("0000:00:01.0")!;
        var b = k.FindFunction("0000:00:02.0")!;
        var v2m = models.PciMsiToGicV2m || models.GicV2 is not null;
        var r = new MsiForgeryProbe(k.CreateProcess(vfio), (a.Group.Id, a.Name), (b.Group.Id, b.Name))
            .Run(v2m ? (uint)(m.Map.V2mFirstSpi + 32) : 0, v2m ? m.Map.V2mSpiCount : 32); // the frame's SPIs on this board's map
        return new IsolationEraResult(board, era, k.MsiDomain.Name, r.SetIommuA, r.VictimVectorsRaised, r.ForgerVectorsRaised);
    }

    /// <summary>What the history says each cell must show (the step fails when the models disagree).</summary>
    public static (bool Accepted, bool Forged) Expected(string board, IsolationPolicyEra era) => (board, era) switch
    {
        ("juno-like", IsolationPolicyEra.Today) => (false, false),
        ("juno-like", IsolationPolicyEra.Era411) => (false, false), // no ITS anywhere: the global check fails too
        ("juno-like", _) => (true, true),                          // arm-smmu claims INTR_REMAP; GICv2m forwards anything
        ("thunderx-like", _) => (true, false),                      // the ITS isolates in every era
        ("its-and-gicv2m", IsolationPolicyEra.Today) => (false, false),
        ("its-and-gicv2m", _) => (true, true),                      // era 2 sees the ITS and accepts a device under GICv2m
        _ => (false, false),
    };

    static string Errno(int r) => r == 0 ? "0" : r == -1 ? "-EPERM" : r.ToString(CultureInfo.InvariantCulture);

    public bool Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var ok = true;
        context.Item("eras: 1 = 2013-14 (IOMMU_CAP_INTR_REMAP, claimed by arm-smmu), 2 = 4.11 (irq_domain_check_msi_remap: any isolating domain), 3 = today (per device)");
        context.Item($"{"board",-16} {"PCI MSIs via",-13} {"era",-4} {"SET_IOMMU",-10} {"accepted",-9} {"forged interrupt raised",-24} expected");
        foreach (var board in Boards)
            foreach (var era in Eras)
            {
                var r = RunCell(board, era);
                var (acc, forged) = Expected(board, era);
                var match = r.Accepted == acc && r.Forged == forged;
                ok &= match;
                var forgedText = r.Accepted ? (r.Forged ? $"yes ({r.VictimVectorsRaised}/4 of B)" : "no (0/4 of B)") : "- (refused)";
                context.Item($"{board,-16} {r.MsiController,-13} {(int)era,-4} {Errno(r.SetIommu),-10} {(r.Accepted ? "yes" : "no"),-9} {forgedText,-24} {(match ? "as history says" : "MISMATCH")}");
            }
        return ok;
    }
}
