using System.Buffers.Binary;
using System.Text;
using Doorbell.Platform.DeviceTree;

namespace Doorbell.Tests.Platform;

/// <summary>Writes a DTB (Devicetree Specification v0.4 ch. 5 layout, version 17) from a small tree description, for tests without dtc.</summary>
public sealed class FdtBuilder
{
    readonly List<(string Name, byte[] Value)> _props = [];
    readonly List<(string Name, FdtBuilder Node)> _children = [];

    public FdtBuilder Node(string name, Action<FdtBuilder> body)
    {
        var b = new FdtBuilder();
        body(b);
        _children.Add((name, b));
        return this;
    }

    public FdtBuilder Cells(string name, params uint[] cells)
    {
        var v = new byte[cells.Length * 4];
        for (var i = 0; i < cells.Length; i++) BinaryPrimitives.WriteUInt32BigEndian(v.AsSpan(i * 4), cells[i]);
        _props.Add((name, v));
        return this;
    }

    public FdtBuilder String(string name, string value)
    {
        _props.Add((name, Encoding.ASCII.GetBytes(value + "\0")));
        return this;
    }

    public FdtBuilder Empty(string name)
    {
        _props.Add((name, []));
        return this;
    }

    public static byte[] Blob(Action<FdtBuilder> root)
    {
        var r = new FdtBuilder();
        root(r);
        var structure = new List<byte>();
        var strings = new List<byte>();
        var offsets = new Dictionary<string, int>();
        void U32(uint v) { var b = new byte[4]; BinaryPrimitives.WriteUInt32BigEndian(b, v); structure.AddRange(b); }
        void Pad() { while (structure.Count % 4 != 0) structure.Add(0); }
        void Emit(string name, FdtBuilder n)
        {
            U32(1);
            structure.AddRange(Encoding.ASCII.GetBytes(name));
            structure.Add(0);
            Pad();
            foreach (var (pn, pv) in n._props)
            {
                if (!offsets.TryGetValue(pn, out var off)) { off = strings.Count; offsets[pn] = off; strings.AddRange(Encoding.ASCII.GetBytes(pn)); strings.Add(0); }
                U32(3); U32((uint)pv.Length); U32((uint)off);
                structure.AddRange(pv);
                Pad();
            }
            foreach (var (cn, c) in n._children) Emit(cn, c);
            U32(2);
        }
        Emit("", r);
        U32(9);
        const int header = 40, rsvmap = 16;
        var offStruct = header + rsvmap;
        var offStrings = offStruct + structure.Count;
        var total = offStrings + strings.Count;
        var blob = new byte[total];
        void H(int at, uint v) => BinaryPrimitives.WriteUInt32BigEndian(blob.AsSpan(at), v);
        H(0, 0xD00DFEED); H(4, (uint)total); H(8, (uint)offStruct); H(12, (uint)offStrings); H(16, header);
        H(20, 17); H(24, 16); H(28, 0); H(32, (uint)strings.Count); H(36, (uint)structure.Count);
        structure.CopyTo(blob, offStruct);
        strings.CopyTo(blob, offStrings);
        return blob;
    }

    public static Fdt Build(Action<FdtBuilder> root) => Fdt.Parse(Blob(root));
}
