using Doorbell.Fuzz;

namespace Doorbell.Tests.Robustness;

/// <summary>
/// The structure-in-memory (SMMUv3 + ITS, SMMUv2) and serve-socket fuzz targets (issue 20): their generated inputs pass every oracle, the
/// oracles are really reached (mapped DMAs, faults with event records, MSIs translated and dropped, command batches,
/// successful serve requests, errnos, disconnects), and the oracles fail when the SMMU misplaces a device write.
/// </summary>
public class StructureAndServeFuzzTests
{
    static byte[][] Inputs(FuzzTarget t, int seed, int n, byte? mode = null)
    {
        var rng = new Random(seed);
        var list = new byte[n][];
        for (var i = 0; i < n; i++)
        {
            list[i] = t.Generate(rng);
            if (mode is { } m) list[i][0] = m;
        }
        return list;
    }

    [Fact]
    public void Clean_structure_inputs_pass_and_reach_every_lands_iff_mapped_oracle()
    {
        var t = new StructuresTarget();
        foreach (var input in Inputs(t, 20261206, 150, mode: 0)) t.Run(input);
        var c = t.Checks;
        Assert.True(c.MappedDmas > 100, $"mapped DMAs checked: {c.MappedDmas}");
        Assert.True(c.FaultedDmas > 100, $"faulting DMAs checked: {c.FaultedDmas}");
        Assert.True(c.AbortDmas > 0 && c.BypassDmas > 0, $"abort {c.AbortDmas}, bypass {c.BypassDmas}");
        Assert.True(c.MsisTranslated > 10 && c.MsisDropped > 10, $"MSIs translated {c.MsisTranslated}, dropped {c.MsisDropped}");
        Assert.True(c.CommandBatches > 100 && c.ItsBatches > 100, $"SMMU batches {c.CommandBatches}, ITS batches {c.ItsBatches}");
    }

    [Fact]
    public void Dirty_structure_inputs_corrupting_tables_and_queues_pass()
    {
        var t = new StructuresTarget();
        foreach (var input in Inputs(t, 7, 150, mode: 1)) t.Run(input);
        Assert.True(t.Checks.CommandBatches > 100);
    }

    [Fact]
    public void The_oracles_catch_an_smmu_that_misplaces_device_writes()
    {
        // Every device write shifted by 64 bytes: a clean input must notice (written where the tables do not map).
        var shifted = new StructuresTarget(a => a + 0x40);
        var e = Assert.Throws<FuzzFinding>(() => { foreach (var input in Inputs(shifted, 11, 50, mode: 0)) shifted.Run(input); });
        Assert.Contains("do not map", e.Message, StringComparison.Ordinal);
        // Every device write sent to the sentinel: even a dirty input (no lands-iff-mapped expectation) must notice.
        var astray = new StructuresTarget(_ => StructuresTarget.Sentinel + 0x100);
        var f = Assert.Throws<FuzzFinding>(() => { foreach (var input in Inputs(astray, 12, 50, mode: 1)) astray.Run(input); });
        Assert.Contains("sentinel", f.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Smmuv2_inputs_pass_reach_the_lands_iff_mapped_oracle_and_catch_a_misplacing_smmu()
    {
        var t = new SmmuV2Target();
        foreach (var input in Inputs(t, 3, 120, mode: 0)) t.Run(input);           // clean, MMU-500
        foreach (var input in Inputs(t, 4, 60, mode: 2)) t.Run(input);            // clean, MMU-401
        foreach (var input in Inputs(t, 5, 120, mode: 1)) t.Run(input);           // dirty
        Assert.True(t.MappedDmas > 100, $"mapped DMAs checked: {t.MappedDmas}");
        Assert.True(t.FaultedDmas > 100, $"faulting DMAs checked: {t.FaultedDmas}");
        var shifted = new SmmuV2Target(a => a ^ 0x1000);
        var e = Assert.Throws<FuzzFinding>(() => { foreach (var input in Inputs(shifted, 6, 50, mode: 0)) shifted.Run(input); });
        Assert.Contains("do not map", e.Message, StringComparison.Ordinal);
        var astray = new SmmuV2Target(_ => StructuresTarget.Sentinel);
        var f = Assert.Throws<FuzzFinding>(() => { foreach (var input in Inputs(astray, 7, 50, mode: 1)) astray.Run(input); });
        Assert.Contains("sentinel", f.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Serve_socket_inputs_pass_and_reach_successes_errnos_and_disconnects()
    {
        var t = new ServeTarget();
        foreach (var input in Inputs(t, 5, 40)) t.Run(input);
        var c = t.Checks;
        Assert.True(c.Successes > 20, $"successful replies: {c.Successes}");
        Assert.True(c.Errnos > 20, $"errno replies: {c.Errnos}");
        Assert.True(c.MalformedDisconnects > 5, $"malformed packets answered by a disconnect: {c.MalformedDisconnects}");
    }
}
