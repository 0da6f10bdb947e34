using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Doorbell.Tracing;

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
/// One register of a block, declared once: offset, width in bytes of one instance, name, access kind, how many
/// consecutive instances (IPRIORITYR&lt;n&gt;, IROUTER&lt;n&gt;), the block's id for it (what the block's handlers switch on)
/// and the narrowest access it takes (0: its width, or 4 for a 64-bit register, whose 32-bit halves are accessible).
/// Every block's table is made of these; <see cref="RegisterBlock"/> compiles one for dispatch.
/// </summary>
public readonly record struct RegisterDescriptor(uint Offset, int Width, string Name, RegisterAccess Access, int Count = 1, int Id = 0, int MinSize = 0)
{
    public bool Contains(ulong offset) => offset >= Offset && offset < Offset + (ulong)(Width * Count);

    /// <summary>The narrowest access the register takes.</summary>
    public int NarrowestAccess => MinSize != 0 ? MinSize : Math.Min(Width, 4);

    // Derived once, for dispatch without divisions: log2 of the width, the access sizes taken (bit n = n bytes), and
    // the sizes a read is answered for (none for write-only and RAZ/WI registers, which read as zero).
    internal int WidthShift { get; } = System.Numerics.BitOperations.Log2((uint)Math.Max(Width, 1));
    internal uint Sizes { get; } = SizesOf(Width, MinSize != 0 ? MinSize : Math.Min(Width, 4));
    internal uint ReadSizes { get; } = Access is RegisterAccess.WriteOnly or RegisterAccess.RazWi ? 0 : SizesOf(Width, MinSize != 0 ? MinSize : Math.Min(Width, 4));
    // The access size of the common, whole-register case (0: none): a read of a readable register, a write of a
    // read-write or write-only one.
    internal int WholeReadSize { get; } = Access is RegisterAccess.WriteOnly or RegisterAccess.RazWi ? 0 : Width;
    internal int WholeWriteSize { get; } = Access is RegisterAccess.ReadWrite or RegisterAccess.WriteOnly ? Width : 0;

    static uint SizesOf(int width, int narrowest)
    {
        uint m = 0;
        for (var s = 1; s <= 8; s <<= 1)
            if (s >= narrowest && s <= width) m |= (uint)s;
        return m;
    }

    /// <summary>The name of instance <paramref name="index"/> (NAME, or NAME&lt;n&gt; for a register array).</summary>
    public string InstanceName(uint index) => Count == 1 ? Name : $"{Name}{index}";

    /// <summary>Name of the register containing <paramref name="offset"/> in <paramref name="table"/>, for traces and strict reports.</summary>
    public static string NameOf(ReadOnlySpan<RegisterDescriptor> table, ulong offset)
    {
        foreach (var r in table)
            if (r.Contains(offset))
                return r.InstanceName((uint)((offset - r.Offset) / (ulong)r.Width));
        return $"0x{offset:x}";
    }
}

/// <summary>
/// A block's register file as its <see cref="RegisterBlock"/> drives it: whole registers by descriptor and instance.
/// Implemented by a small struct wrapping the model, so the block's generic dispatch is specialised per model and the
/// calls are direct (no interface dispatch on the MMIO path).
/// </summary>
public interface IRegisterFile
{
    /// <summary>The block (table) this register file is dispatched through.</summary>
    static abstract RegisterBlock Block { get; }

    /// <summary>The value of instance <paramref name="index"/> of <paramref name="r"/> (all its bytes; side-effect free).</summary>
    ulong Read(in RegisterDescriptor r, uint index);

    /// <summary>
    /// A write to instance <paramref name="index"/> of <paramref name="r"/>: for read-write registers the whole new value (a
    /// narrower access already merged with <see cref="Read"/>), for write-only ones the bytes written in place, for
    /// W1S/W1C ones the non-zero mask of bits written as 1 (the handler sets or clears by <see cref="RegisterDescriptor.Access"/>).
    /// Never called for read-only or RAZ/WI registers.
    /// </summary>
    void Write(in RegisterDescriptor r, uint index, ulong value, in BusAttributes attributes);
}

/// <summary>
/// A block's register table compiled for dispatch: a flat byte index per 32-bit word of the block (offset → descriptor,
/// one load, no dictionary; undeclared words are a reserved RAZ/WI descriptor), and the generic access rules applied
/// before a block's handler sees anything: reads of write-only and RAZ/WI registers return zero, writes to read-only
/// registers are dropped (and reported in strict mode with the block's rule), RAZ/WI writes dropped, W1S/W1C writes of
/// zero do nothing, accesses narrower than a register takes or wider than it are RAZ/WI, and sub-register accesses
/// read-merge-write the whole register. Handlers switch on <see cref="RegisterDescriptor.Id"/>, so each offset appears
/// once in the source (in the table).
/// </summary>
public sealed class RegisterBlock
{
    readonly byte[] _index;
    readonly RegisterDescriptor[] _all; // [0] = the reserved descriptor
    readonly RegisterDescriptor[] _table;

    /// <param name="source">Strict-report source (<c>gicd</c>, <c>smmuv3</c>, ...).</param>
    /// <param name="readOnlyRule">The spec rule a write to a read-only register breaks (strict mode).</param>
    /// <param name="pairedWords">A 64-bit access at an 8-byte aligned pair of 32-bit registers reads/writes both (the GIC's
    /// redistributor and ITS frames, as QEMU's 64-bit register views); otherwise it is RAZ/WI like any access wider than a register.</param>
    public RegisterBlock(string source, RegisterDescriptor[] table, ulong blockSize, string readOnlyRule, bool pairedWords = false)
    {
        PairedWords = pairedWords;
        ArgumentNullException.ThrowIfNull(table);
        if (table.Length > 254) throw new ArgumentException("at most 254 registers per block", nameof(table));
        Source = source;
        ReadOnlyRule = readOnlyRule;
        _table = table;
        _all = new RegisterDescriptor[table.Length + 1];
        _all[0] = new RegisterDescriptor(0, 4, "reserved", RegisterAccess.RazWi);
        table.CopyTo(_all, 1);
        _index = new byte[(blockSize + 3) / 4];
        for (var i = 0; i < table.Length; i++)
        {
            var r = table[i];
            if (r.Width is not (1 or 2 or 4 or 8) || r.Offset % (uint)Math.Min(r.Width, 4) != 0 || r.Count < 1)
                throw new ArgumentException($"register {r.Name}: bad width or alignment", nameof(table));
            for (var o = (ulong)r.Offset; o < r.Offset + (ulong)(r.Width * r.Count); o += 4)
            {
                if (o / 4 >= (ulong)_index.Length) throw new ArgumentException($"register {r.Name} lies outside the block", nameof(table));
                if (_index[o / 4] != 0) throw new ArgumentException($"register {r.Name} overlaps {_all[_index[o / 4]].Name}", nameof(table));
                _index[o / 4] = (byte)(i + 1);
            }
        }
    }

    public string Source { get; }
    public bool PairedWords { get; }
    public string ReadOnlyRule { get; }
    public ReadOnlySpan<RegisterDescriptor> Table => _table;

    /// <summary>The register holding <paramref name="offset"/> (the reserved RAZ/WI descriptor when none). O(1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref readonly RegisterDescriptor Find(ulong offset)
    {
        var w = offset >> 2;
        var index = _index;
        // Every index byte is below _all.Length by construction, so neither load needs a bounds check.
        var i = w < (ulong)index.Length ? Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(index), (nint)w) : 0;
        return ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_all), i);
    }

    /// <summary>The access kind of the register holding <paramref name="offset"/> (RAZ/WI outside the block or undeclared).</summary>
    public RegisterAccess Access(ulong offset) => Find(offset).Access;

    /// <summary>The name of the register (instance) holding <paramref name="offset"/>, or its hex offset.</summary>
    public string NameOf(ulong offset)
    {
        ref readonly var r = ref Find(offset);
        return r.Id == 0 && r.Access == RegisterAccess.RazWi && ReferenceEquals(r.Name, _all[0].Name)
            ? $"0x{offset:x}"
            : r.InstanceName((uint)((offset - r.Offset) / (uint)r.Width));
    }

    internal byte[] IndexArray => _index;
    internal RegisterDescriptor[] Descriptors => _all;

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void ReportReadOnly(StrictMonitor strict, in RegisterDescriptor r, uint index) =>
        strict.Report(Source, ReadOnlyRule, $"write to read-only {r.InstanceName(index)}");
}

/// <summary>
/// MMIO dispatch through a block's compiled table, specialised per register file: the file's block, index and
/// descriptors are static readonly here, so optimised code holds them as constants and a register is found with one
/// index load and one descriptor load.
/// </summary>
public static class RegisterDispatch<TFile> where TFile : struct, IRegisterFile
{
    static readonly RegisterBlock Block = TFile.Block;
    static readonly byte[] Index = TFile.Block.IndexArray;
    static readonly RegisterDescriptor[] All = TFile.Block.Descriptors;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ref readonly RegisterDescriptor Find(ulong offset)
    {
        var w = offset >> 2;
        // Every index byte is below All.Length by construction, so neither load needs a bounds check.
        var i = w < (ulong)Index.Length ? Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(Index), (nint)w) : 0;
        return ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(All), i);
    }

    /// <summary>An MMIO read of <paramref name="size"/> bytes at <paramref name="offset"/> through <paramref name="file"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Read(TFile file, ulong offset, int size)
    {
        ref readonly var r = ref Find(offset);
        var rel = (uint)offset - r.Offset;
        var whole = r.WholeReadSize;
        // The common accesses: a whole readable register, or a 32-bit half of a 64-bit one.
        if ((rel & (uint)(size - 1)) == 0 && (size == whole || (size == 4 && whole == 8 && (r.ReadSizes & 4) != 0)))
        {
            var v = file.Read(in r, rel >> r.WidthShift);
            return size == whole ? v : (uint)(v >> (int)((rel & 4) * 8));
        }
        return ReadOther(file, in r, rel, offset, size);
    }

    /// <summary>Sub-register reads, sizes the register does not take (RAZ), write-only and RAZ/WI registers, pairs.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static ulong ReadOther(TFile file, in RegisterDescriptor r, uint rel, ulong offset, int size)
    {
        var within = rel & (uint)(r.Width - 1);
        if ((r.ReadSizes & (uint)size) == 0 || (within & (uint)(size - 1)) != 0)
            return size == 8 && Block.PairedWords && (offset & 7) == 0 && r.Width == 4 ? ReadPair(file, offset) : 0;
        var v = file.Read(in r, rel >> r.WidthShift);
        return (v >> (int)(within * 8)) & ((1UL << (8 * size)) - 1);
    }

    /// <summary>An MMIO write through <paramref name="file"/>, with the access rules of the register's descriptor applied.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write(TFile file, ulong offset, int size, ulong value, in BusAttributes attributes, StrictMonitor? strict)
    {
        ref readonly var r = ref Find(offset);
        var rel = (uint)offset - r.Offset;
        // The common access: a whole read-write, write-only, W1S or W1C register.
        if (size == r.WholeWriteSize && (rel & (uint)(size - 1)) == 0)
        {
            file.Write(in r, rel >> r.WidthShift, value, in attributes);
            return;
        }
        if (size == r.Width && r.Access is RegisterAccess.WriteOneToSet or RegisterAccess.WriteOneToClear && (rel & (uint)(size - 1)) == 0)
        {
            if (value != 0) file.Write(in r, rel >> r.WidthShift, value, in attributes);
            return;
        }
        WriteOther(file, in r, rel, offset, size, value, in attributes, strict);
    }

    /// <summary>Sub-register writes (merged, or placed), read-only and RAZ/WI registers.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static void WriteOther(TFile file, in RegisterDescriptor r, uint rel, ulong offset, int size, ulong value, in BusAttributes attributes, StrictMonitor? strict)
    {
        var within = rel & (uint)(r.Width - 1);
        if ((r.Sizes & (uint)size) == 0 || (within & (uint)(size - 1)) != 0)
        {
            if (size == 8 && Block.PairedWords && (offset & 7) == 0 && r.Width == 4) WritePair(file, offset, value, in attributes, strict);
            return;
        }
        var index = rel >> r.WidthShift;
        var shift = (int)(within * 8);
        var bytes = size == 8 ? value : (value & ((1UL << (8 * size)) - 1)) << shift;
        switch (r.Access)
        {
            case RegisterAccess.ReadWrite:
                var mask = size == 8 ? ulong.MaxValue : ((1UL << (8 * size)) - 1) << shift;
                file.Write(in r, index, (file.Read(in r, index) & ~mask) | bytes, in attributes);
                return;
            case RegisterAccess.WriteOnly:
                file.Write(in r, index, bytes, in attributes);
                return;
            case RegisterAccess.WriteOneToSet or RegisterAccess.WriteOneToClear:
                if (bytes != 0) file.Write(in r, index, bytes, in attributes);
                return;
            case RegisterAccess.ReadOnly:
                if (strict is { Enabled: true }) Block.ReportReadOnly(strict, in r, index);
                return;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static ulong ReadPair(TFile file, ulong offset) => Read(file, offset, 4) | Read(file, offset + 4, 4) << 32;

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void WritePair(TFile file, ulong offset, ulong value, in BusAttributes attributes, StrictMonitor? strict)
    {
        Write(file, offset, 4, value & 0xFFFF_FFFF, in attributes, strict);
        if (Find(offset + 4).Width == 4) Write(file, offset + 4, 4, value >> 32, in attributes, strict);
    }
}
