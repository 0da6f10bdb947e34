namespace Doorbell.Pci;

/// <summary>One entry of a device-tree id map: input IDs [RidBase, RidBase+Length) map to OutputBase + (id − RidBase).</summary>
public readonly record struct IdMapEntry(uint RidBase, uint OutputBase, uint Length);

/// <summary>
/// A device-tree `iommu-map` / `msi-map` (Documentation/devicetree/bindings/pci/pci-iommu.txt and pci-msi.txt):
/// the requester ID is first ANDed with the map mask, then looked up in the entries in order; the first entry
/// whose [rid-base, rid-base+length) holds it gives output-base + (rid − rid-base). An empty map is the identity.
/// </summary>
public sealed class IdMap
{
    readonly IdMapEntry[] _entries;

    public IdMap(IEnumerable<IdMapEntry> entries, uint mask = 0xFFFF)
    {
        _entries = [.. entries];
        Mask = mask;
        foreach (var e in _entries)
            if (e.Length == 0 || (ulong)e.RidBase + e.Length > 0x1_0000_0000UL)
                throw new ArgumentException($"bad id-map entry {e}");
    }

    /// <summary>The identity map (no `*-map` property: output ID = requester ID).</summary>
    public static IdMap Identity { get; } = new([]);

    public uint Mask { get; }
    public IReadOnlyList<IdMapEntry> Entries => _entries;

    /// <summary>Maps a requester ID; false when the map has entries and none covers the (masked) ID.</summary>
    public bool TryMap(uint rid, out uint output)
    {
        var id = rid & Mask;
        if (_entries.Length == 0) { output = id; return true; }
        foreach (var e in _entries)
        {
            if (id >= e.RidBase && id - e.RidBase < e.Length)
            {
                output = e.OutputBase + (id - e.RidBase);
                return true;
            }
        }
        output = 0;
        return false;
    }
}
