using System.Buffers.Binary;
using System.Text;

namespace Doorbell.Platform.DeviceTree;

/// <summary>Writes a flattened device tree (devicetree specification v0.4 §5: header, memory reservation block,
/// structure block tokens, strings block; version 17), the counterpart of <see cref="Fdt"/>: nodes are opened with
/// <see cref="Begin"/>, given properties, and closed with <see cref="End"/>. The fuzz driver's tree generator and the
/// tests (trees without dtc) both use it.</summary>
public sealed class FdtWriter
{
    readonly List<byte> _struct = [];
    readonly List<byte> _strings = [];
    readonly Dictionary<string, int> _stringOffsets = [];

    public void Begin(string name)
    {
        Token(1);
        _struct.AddRange(Encoding.ASCII.GetBytes(name));
        _struct.Add(0);
        Pad();
    }

    public void End() => Token(2);

    public void Prop(string name, params uint[] cells)
    {
        ArgumentNullException.ThrowIfNull(cells);
        var v = new byte[cells.Length * 4];
        for (var i = 0; i < cells.Length; i++) BinaryPrimitives.WriteUInt32BigEndian(v.AsSpan(i * 4), cells[i]);
        PropBytes(name, v);
    }

    public void Prop(string name, string value) => PropBytes(name, [.. Encoding.ASCII.GetBytes(value), (byte)0]);

    public void PropBytes(string name, byte[] value)
    {
        ArgumentNullException.ThrowIfNull(value);
        Token(3);
        Word((uint)value.Length);
        if (!_stringOffsets.TryGetValue(name, out var off))
        {
            off = _strings.Count;
            _stringOffsets[name] = off;
            _strings.AddRange(Encoding.ASCII.GetBytes(name));
            _strings.Add(0);
        }
        Word((uint)off);
        _struct.AddRange(value);
        Pad();
    }

    public byte[] Finish()
    {
        Token(9);
        const int header = 40, rsv = 16;
        var structOff = header + rsv;
        var stringsOff = structOff + _struct.Count;
        var total = stringsOff + _strings.Count;
        var b = new byte[total];
        uint[] h = [0xD00D_FEED, (uint)total, (uint)structOff, (uint)stringsOff, header, 17, 16, 0, (uint)_strings.Count, (uint)_struct.Count];
        for (var i = 0; i < h.Length; i++) BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(i * 4), h[i]);
        _struct.CopyTo(b, structOff);
        _strings.CopyTo(b, stringsOff);
        return b;
    }

    void Token(uint t) => Word(t);

    void Word(uint w)
    {
        Span<byte> s = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(s, w);
        _struct.AddRange(s.ToArray());
    }

    void Pad()
    {
        while (_struct.Count % 4 != 0) _struct.Add(0);
    }
}
