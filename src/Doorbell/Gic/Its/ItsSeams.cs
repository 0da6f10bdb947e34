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
