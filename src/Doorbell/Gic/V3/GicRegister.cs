using Doorbell.Memory;
namespace Doorbell.Gic.V3;

/// <summary>One register of a GIC block: offset, width in bytes (of one instance), name and access kind. Each block declares its registers once in a table of these.</summary>
public readonly record struct GicRegister(uint Offset, int Width, string Name, RegisterAccess Access, int Count = 1)
{
    public bool Contains(ulong offset) => offset >= Offset && offset < Offset + (ulong)(Width * Count);

    /// <summary>Name of the register containing <paramref name="offset"/> in <paramref name="table"/>, for traces and strict reports.</summary>
    public static string NameOf(ReadOnlySpan<GicRegister> table, ulong offset)
    {
        foreach (var r in table)
            if (r.Contains(offset))
                return r.Count == 1 ? r.Name : $"{r.Name}{(offset - r.Offset) / (ulong)r.Width}";
        return $"0x{offset:x}";
    }
}
