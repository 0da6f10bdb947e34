using Doorbell.Devices;
using Doorbell.Examples;
using Doorbell.Host.Kernel;
using Doorbell.Host.SmmuV2;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Platform;
using Doorbell.Scenarios.Steps;
using Doorbell.Smmu.V2;

namespace Doorbell.Tests.SmmuV2;

/// <summary>The host kernel, VFIO and the userspace driver on the SMMUv2 boards, and the policy eras replayed.</summary>
public class SmmuV2EndToEndTests
{
    static (HostKernel Kernel, Machine Machine, BoardModels Models) Boot(string board)
    {
        var (m, models) = HostKernel.CreateBoard(BoardDescription.LoadBuiltIn(board));
        return (HostKernel.Boot(m, models), m, models);
    }

    [Theory]
    [InlineData("juno-like", SmmuV2Variant.Mmu401, "GICv2m-MSI")]
    [InlineData("thunderx-like", SmmuV2Variant.Mmu500, "ITS")]
    public void KernelBootsWithTheArmSmmuDriver(string board, SmmuV2Variant variant, string msi)
    {
        var (k, _, models) = Boot(board);
        Assert.Equal("arm-smmu", k.Smmu.Name);
        Assert.NotNull(k.SmmuV2Driver);
        Assert.Equal(variant, models.SmmuV2!.Options.Variant);
        Assert.Contains(msi, k.MsiDomain.Name, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(2, k.Functions.Count(f => f.Name.EndsWith(".0", StringComparison.Ordinal) && f.Name != "0000:00:00.0"));
        // Each endpoint got a valid SMR for its requester ID.
        var f = k.FindFunction("0000:00:01.0")!;
        var idx = k.SmmuV2Driver!.StreamMapEntries(f.IommuDevice);
        Assert.Single(idx);
    }

    [Theory]
    [InlineData("juno-like", true)]
    [InlineData("thunderx-like", false)]
    public void UserspaceDriverRuns_AndAnUnmappedDmaIsAContextFault(string board, bool allowUnsafe)
    {
        var (k, m, _) = Boot(board);
        var fn = k.FindFunction("0000:00:01.0")!;
        var res = new UserspaceDriver(k.CreateProcess(k.BuildVfio(new VfioOptions { AllowUnsafeInterrupts = allowUnsafe })), fn.Group.Id, fn.Name).Run();
        Assert.True(res.Ok, res.Failure + "\n" + string.Join("\n", res.Log));
        Assert.Equal(0, res.SetIommuResult);
        Assert.Equal(4, res.Vectors);
        Assert.Equal(res.CopiesExpected, res.CopiesVerified);
        Assert.All(res.InterruptsPerQueue, n => Assert.True(n >= 1));
        Assert.Equal(MqRegs.StatusWriteFault, res.FaultStatus);
        Assert.True(res.CanaryIntact);
        k.ServiceInterrupts();
        var fault = Assert.Single(k.SmmuV2Driver!.Faults, f => !f.Global);
        Assert.Equal(UserspaceDriver.UnmappedIova, fault.Address & ~0xFFFUL);
        Assert.Equal(SmmuV2Field.FsrTf, fault.Status & SmmuV2Field.FsrFaults);
        Assert.Equal(0x8u, fault.StreamId);
        Assert.NotNull(m.SmmuV2);
    }

    [Fact]
    public void JunoLike_TodayThePolicyRefusesWithEperm()
    {
        var (k, _, _) = Boot("juno-like");
        var fn = k.FindFunction("0000:00:01.0")!;
        var res = new UserspaceDriver(k.CreateProcess(k.BuildVfio()), fn.Group.Id, fn.Name).Run();
        Assert.False(res.Ok);
        Assert.Equal(-Errno.EPERM, res.SetIommuResult);
    }

    [Theory]
    [InlineData("juno-like", IsolationPolicyEra.Era2013)]
    [InlineData("juno-like", IsolationPolicyEra.Era411)]
    [InlineData("juno-like", IsolationPolicyEra.Today)]
    [InlineData("thunderx-like", IsolationPolicyEra.Era2013)]
    [InlineData("thunderx-like", IsolationPolicyEra.Era411)]
    [InlineData("thunderx-like", IsolationPolicyEra.Today)]
    [InlineData("its-and-gicv2m", IsolationPolicyEra.Era2013)]
    [InlineData("its-and-gicv2m", IsolationPolicyEra.Era411)]
    [InlineData("its-and-gicv2m", IsolationPolicyEra.Today)]
    public void EraTableCell_MatchesTheHistory(string board, IsolationPolicyEra era)
    {
        var r = IsolationErasStep.RunCell(board, era);
        var (accepted, forged) = IsolationErasStep.Expected(board, era);
        Assert.Equal(accepted, r.Accepted);
        Assert.Equal(accepted ? 0 : -Errno.EPERM, r.SetIommu);
        Assert.Equal(forged, r.Forged);
        if (forged) Assert.Equal(4, r.VictimVectorsRaised);
        if (accepted) Assert.Equal(4, r.ForgerVectorsRaised);
    }

    [Fact]
    public void StepPrintsTheTable_AllCellsAsHistorySays()
    {
        var sw = new StringWriter();
        var ok = new IsolationErasStep().Run(new Doorbell.Scenarios.ScenarioContext(sw));
        var text = sw.ToString();
        Assert.True(ok, text);
        Assert.Equal(9, text.Split('\n').Count(l => l.Contains("as history says", StringComparison.Ordinal)));
        Assert.Contains("its-and-gicv2m   GICv2m-MSI    2    0          yes       yes (4/4 of B)", text);
        Assert.Contains("juno-like        GICv2m-MSI    3    -EPERM     no        - (refused)", text);
    }
}
