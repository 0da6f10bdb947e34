using Doorbell.Gic.V3;
using Doorbell.Memory;

namespace Doorbell.Gic.Its;

/// <summary>
/// Where an ITS engine's translated LPIs go, and how its commands reach the pending state there: the physical
/// GICv3's redistributors, or a VM's vCPUs. A target is a PE number (GITS_TYPER.PTA = 0 RDbase).
/// </summary>
public interface ILpiTargets
{
    /// <summary>Number of targets (PEs or vCPUs).</summary>
    int Count { get; }
    /// <summary>INTID bits of the interrupt controller (GICD_TYPER.IDbits + 1): a MAPTI pINTID must fit.</summary>
    int IntidBits { get; }
    /// <summary>Makes LPI <paramref name="intid"/> pending at <paramref name="target"/>; false when the target rejects it.</summary>
    bool SetPending(int target, uint intid);
    /// <summary>Clears LPI pending state at <paramref name="target"/>; true when it was pending.</summary>
    bool ClearPending(int target, uint intid);
    /// <summary>Re-reads one LPI's configuration (INV).</summary>
    void Invalidate(int target, uint intid);
    /// <summary>Re-reads every LPI configuration of a target (INVALL).</summary>
    void InvalidateAll(int target);
    /// <summary>Moves every pending LPI of <paramref name="from"/> to <paramref name="to"/> (MOVALL).</summary>
    void MoveAll(int from, int to);
    /// <summary>The target whose redistributor frame starts at physical address <paramref name="address"/> (RDbase with PTA = 1), or -1.</summary>
    int TargetAt(ulong address);
    /// <summary>Physical address of a target's redistributor frame (RDbase with PTA = 1), or ulong.MaxValue when not mapped.</summary>
    ulong AddressOf(int target);
}

/// <summary>The physical ITS's LPI targets: the redistributors of a <see cref="GicV3"/>.</summary>
public sealed class RedistributorTargets(GicV3 gic) : ILpiTargets
{
    readonly GicV3Redistributor[] _rds = gic.Redistributors;

    public int Count => _rds.Length;
    public int IntidBits => gic.Options.IdBits;
    public bool SetPending(int target, uint intid) => _rds[target].SetLpiPending(intid);
    public bool ClearPending(int target, uint intid) => _rds[target].ClearLpiPending(intid);
    public void Invalidate(int target, uint intid) => _rds[target].InvalidateLpi(intid);
    public void InvalidateAll(int target) => _rds[target].InvalidateAllLpis();
    public void MoveAll(int from, int to) => _rds[from].MoveAllPendingTo(_rds[to]);

    public int TargetAt(ulong address)
    {
        var b = gic.RedistributorBase;
        if (b == ulong.MaxValue || address < b || (address - b) % GicV3Redistributor.FrameSize != 0) return -1;
        var k = (address - b) / GicV3Redistributor.FrameSize;
        return k < (ulong)_rds.Length ? (int)k : -1;
    }

    public ulong AddressOf(int target) =>
        gic.RedistributorBase == ulong.MaxValue ? ulong.MaxValue : gic.RedistributorBase + (ulong)target * GicV3Redistributor.FrameSize;
}
