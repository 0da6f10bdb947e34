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

/// <summary>
/// One register of a block, declared once: offset, width in bytes of one instance, name, access kind and how many
/// consecutive instances (IPRIORITYR&lt;n&gt;, IROUTER&lt;n&gt;). Every block's table is made of these; dispatch,
/// read-only/W1C behaviour, strict reports and trace names are driven from it.
/// </summary>
public readonly record struct RegisterDescriptor(uint Offset, int Width, string Name, RegisterAccess Access, int Count = 1)
{
    public bool Contains(ulong offset) => offset >= Offset && offset < Offset + (ulong)(Width * Count);

    /// <summary>Name of the register containing <paramref name="offset"/> in <paramref name="table"/>, for traces and strict reports.</summary>
    public static string NameOf(ReadOnlySpan<RegisterDescriptor> table, ulong offset)
    {
        foreach (var r in table)
            if (r.Contains(offset))
                return r.Count == 1 ? r.Name : $"{r.Name}{(offset - r.Offset) / (ulong)r.Width}";
        return $"0x{offset:x}";
    }
}

/// <summary>
/// A block's register table compiled for dispatch: the access kind of every 32-bit word of the block in a flat array
/// (one load per access, no dictionary), offsets not declared being RAZ/WI.
/// </summary>
public sealed class RegisterMap
{
    readonly RegisterAccess[] _access;
    readonly RegisterDescriptor[] _table;

    public RegisterMap(RegisterDescriptor[] table, ulong blockSize)
    {
        ArgumentNullException.ThrowIfNull(table);
        _table = table;
        _access = new RegisterAccess[(blockSize + 3) / 4];
        Array.Fill(_access, RegisterAccess.RazWi);
        foreach (var r in table)
            for (var o = (ulong)r.Offset; o < r.Offset + (ulong)(r.Width * r.Count) && o / 4 < (ulong)_access.Length; o += 4)
                _access[o / 4] = r.Access;
    }

    public ReadOnlySpan<RegisterDescriptor> Table => _table;

    /// <summary>The access kind of the word holding <paramref name="offset"/> (RAZ/WI outside the block or undeclared).</summary>
    public RegisterAccess Access(ulong offset) => offset / 4 < (ulong)_access.Length ? _access[offset / 4] : RegisterAccess.RazWi;

    public string NameOf(ulong offset) => RegisterDescriptor.NameOf(_table, offset);
}
