using System.Buffers.Binary;
using System.Text;

namespace Doorbell.Platform.DeviceTree;

// Flattened device tree (DTB) reader. Layout facts: Devicetree Specification v0.4, chapter 5
// (header of 10 big-endian u32s, structure block tokens BEGIN_NODE=1, END_NODE=2, PROP=3, NOP=4, END=9,
// strings block of NUL-terminated names). Untrusted input: every offset is bounds-checked and a malformed
// blob yields an error value, never an exception or a hang.

/// <summary>A property: name and raw big-endian value bytes.</summary>
public sealed class FdtProperty(string name, byte[] value)
{
    public string Name { get; } = name;
    public byte[] Value { get; } = value;

    public int CellCount => Value.Length / 4;

    public uint Cell(int index) => BinaryPrimitives.ReadUInt32BigEndian(Value.AsSpan(index * 4, 4));

    public uint[] Cells()
    {
        var cells = new uint[CellCount];
        for (var i = 0; i < cells.Length; i++) cells[i] = Cell(i);
        return cells;
    }

    /// <summary>The value as a list of NUL-separated strings (compatible, status, …).</summary>
    public IReadOnlyList<string> Strings()
    {
        var parts = Encoding.ASCII.GetString(Value).Split('\0');
        return parts.Length > 0 && parts[^1].Length == 0 ? parts[..^1] : parts;
    }

    public string AsString() => Strings() is { Count: > 0 } s ? s[0] : "";
}

public sealed class FdtNode(string name, FdtNode? parent)
{
    readonly List<FdtNode> _children = [];
    readonly List<FdtProperty> _properties = [];

    /// <summary>Node name with unit address (e.g. "pcie@10000000"); "" for the root.</summary>
    public string Name { get; } = name;
    public FdtNode? Parent { get; } = parent;
    public IReadOnlyList<FdtNode> Children => _children;
    public IReadOnlyList<FdtProperty> Properties => _properties;

    public string Path => Parent is null ? "/" : (Parent.Parent is null ? "/" + Name : Parent.Path + "/" + Name);

    internal void Add(FdtNode child) => _children.Add(child);
    internal void Add(FdtProperty property) => _properties.Add(property);

    public FdtProperty? Property(string name)
    {
        foreach (var p in _properties)
            if (p.Name == name) return p;
        return null;
    }

    public bool Has(string name) => Property(name) is not null;

    public IReadOnlyList<string> Compatible => Property("compatible")?.Strings() ?? [];

    public bool IsCompatible(string value) => Compatible.Contains(value);

    /// <summary>"okay" unless a status property says otherwise ("ok" is an accepted legacy spelling).</summary>
    public bool IsEnabled => Property("status")?.AsString() is null or "okay" or "ok";

    public uint? Phandle => (Property("phandle") ?? Property("linux,phandle")) is { CellCount: 1 } p ? p.Cell(0) : null;

    public uint? CellsValue(string name) => Property(name) is { CellCount: 1 } p ? p.Cell(0) : null;

    public IEnumerable<FdtNode> DescendantsAndSelf()
    {
        var stack = new Stack<FdtNode>();
        stack.Push(this);
        while (stack.Count > 0)
        {
            var n = stack.Pop();
            yield return n;
            for (var i = n._children.Count - 1; i >= 0; i--)
                stack.Push(n._children[i]);
        }
    }

    public override string ToString() => Path;
}

/// <summary>A parsed device tree.</summary>
public sealed class Fdt
{
    const uint Magic = 0xD00D_FEED;
    const int MaxDepth = 64;

    Fdt(FdtNode root, Dictionary<uint, FdtNode> phandles)
    {
        Root = root;
        _phandles = phandles;
    }

    readonly Dictionary<uint, FdtNode> _phandles;

    public FdtNode Root { get; }

    public FdtNode? ByPhandle(uint phandle) => _phandles.GetValueOrDefault(phandle);

    public IEnumerable<FdtNode> AllNodes => Root.DescendantsAndSelf();

    public string? Model => Root.Property("model")?.AsString();

    /// <summary>Parses a DTB. Returns null and a reason for anything malformed.</summary>
    public static Fdt? TryParse(ReadOnlySpan<byte> blob, out string? error)
    {
        error = null;
        if (blob.Length < 40) { error = "blob shorter than the FDT header"; return null; }
        uint U32(ReadOnlySpan<byte> b, int off) => BinaryPrimitives.ReadUInt32BigEndian(b.Slice(off, 4));
        if (U32(blob, 0) != Magic) { error = "bad magic"; return null; }
        var total = U32(blob, 4);
        var offStruct = U32(blob, 8);
        var offStrings = U32(blob, 12);
        var version = U32(blob, 20);
        var sizeStrings = U32(blob, 32);
        var sizeStruct = version >= 17 ? U32(blob, 36) : total - offStruct;
        if (total > blob.Length) { error = $"totalsize {total} exceeds the blob ({blob.Length} bytes)"; return null; }
        if ((ulong)offStruct + sizeStruct > total || (ulong)offStrings + sizeStrings > total)
        { error = "structure or strings block outside the blob"; return null; }
        var structBlock = blob.Slice((int)offStruct, (int)sizeStruct);
        var strings = blob.Slice((int)offStrings, (int)sizeStrings);

        FdtNode? root = null;
        FdtNode? current = null;
        var depth = 0;
        var pos = 0;
        var phandles = new Dictionary<uint, FdtNode>();
        while (true)
        {
            if (pos + 4 > structBlock.Length) { error = "structure block ends without FDT_END"; return null; }
            var token = U32(structBlock, pos);
            pos += 4;
            switch (token)
            {
                case 1: // FDT_BEGIN_NODE
                {
                    var nul = structBlock[pos..].IndexOf((byte)0);
                    if (nul < 0) { error = "unterminated node name"; return null; }
                    var name = Encoding.ASCII.GetString(structBlock.Slice(pos, nul));
                    pos = Align4(pos + nul + 1);
                    if (root is not null && current is null) { error = "second root node"; return null; }
                    if (++depth > MaxDepth) { error = "nesting too deep"; return null; }
                    var node = new FdtNode(name, current);
                    if (current is null) root = node; else current.Add(node);
                    current = node;
                    break;
                }
                case 2: // FDT_END_NODE
                    if (current is null) { error = "END_NODE without BEGIN_NODE"; return null; }
                    current = current.Parent;
                    depth--;
                    break;
                case 3: // FDT_PROP: len, nameoff, value
                {
                    if (current is null || pos + 8 > structBlock.Length) { error = "property outside a node"; return null; }
                    var len = U32(structBlock, pos);
                    var nameOff = U32(structBlock, pos + 4);
                    pos += 8;
                    if (len > (uint)(structBlock.Length - pos)) { error = "property value runs past the block"; return null; }
                    if (nameOff >= strings.Length) { error = "property name offset outside strings block"; return null; }
                    var nameEnd = strings[(int)nameOff..].IndexOf((byte)0);
                    if (nameEnd < 0) { error = "unterminated property name"; return null; }
                    var prop = new FdtProperty(Encoding.ASCII.GetString(strings.Slice((int)nameOff, nameEnd)), structBlock.Slice(pos, (int)len).ToArray());
                    current.Add(prop);
                    if (prop.Name is "phandle" or "linux,phandle" && prop.CellCount == 1)
                        phandles.TryAdd(prop.Cell(0), current);
                    pos = Align4(pos + (int)len);
                    break;
                }
                case 4: // FDT_NOP
                    break;
                case 9: // FDT_END
                    if (root is null || current is not null) { error = "unbalanced nodes at FDT_END"; return null; }
                    return new Fdt(root, phandles);
                default:
                    error = $"unknown token 0x{token:x} at structure offset {pos - 4}";
                    return null;
            }
        }
    }

    public static Fdt Parse(ReadOnlySpan<byte> blob) =>
        TryParse(blob, out var error) ?? throw new FormatException("invalid device tree: " + error);

    static int Align4(int v) => (v + 3) & ~3;
}
