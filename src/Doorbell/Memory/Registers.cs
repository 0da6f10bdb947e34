namespace Doorbell.Memory;

/// <summary>
/// How a register (or a field) behaves, one vocabulary for every block (SMMU, GIC, ITS, PCI config space): what
/// dispatch, read-only and W1C handling, strict reports and trace names are driven from.
/// </summary>
public enum RegisterAccess : byte
{
    ReadWrite,
    ReadOnly,
    WriteOnly,
    /// <summary>Write 1 to set (ISENABLER, ISPENDR, ...).</summary>
    WriteOneToSet,
    /// <summary>Write 1 to clear (ICENABLER, ICPENDR, PCI status bits, ...).</summary>
    WriteOneToClear,
    /// <summary>Reserved: reads as zero, writes ignored.</summary>
    RazWi,
}
