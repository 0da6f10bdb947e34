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
/// <c>Stride</c> (0: the width) spaces the instances of a register that repeats in groups (a device's per-queue registers).
/// <c>ByteWrites</c> (32-bit read-write registers only): a narrower write reaches the handler as it is — the bytes and
/// where they go (<see cref="RegisterRef.PartOffset"/>, <see cref="RegisterRef.PartSize"/>) — instead of as a
/// read-merge-write of the whole register, as byte-accessible registers (IPRIORITYR, ITARGETSR) take a byte store.
/// Every block's table is made of these; <see cref="RegisterBlock"/> compiles one for dispatch.
/// </summary>
public readonly record struct RegisterDescriptor(uint Offset, int Width, string Name, RegisterAccess Access, int Count = 1, int Id = 0, int MinSize = 0, bool ByteWrites = false, int Stride = 0)
{
    /// <summary>Bytes from one instance to the next (<c>Stride</c>, or the width: instances back to back).</summary>
    public int Step => Stride != 0 ? Stride : Width;

    /// <summary>The offset of instance <paramref name="index"/>.</summary>
    public ulong InstanceOffset(uint index) => Offset + index * (ulong)Step;

    public bool Contains(ulong offset)
    {
        if (offset < Offset) return false;
        var rel = offset - Offset;
        return rel / (ulong)Step < (ulong)Count && rel % (ulong)Step < (ulong)Width;
    }

    /// <summary>The narrowest access the register takes.</summary>
    public int NarrowestAccess => MinSize != 0 ? MinSize : Math.Min(Width, 4);

    // Derived once, for dispatch without divisions: log2 of the width, the access sizes taken (bit n = n bytes), and
    // the sizes a read is answered for (none for write-only and RAZ/WI registers, which read as zero).
    internal int WidthShift { get; } = System.Numerics.BitOperations.Log2((uint)Math.Max(Width, 1));
    internal uint Sizes { get; } = SizesOf(Width, MinSize != 0 ? MinSize : Math.Min(Width, 4));
    internal uint ReadSizes { get; } = Access is RegisterAccess.WriteOnly or RegisterAccess.RazWi ? 0 : SizesOf(Width, MinSize != 0 ? MinSize : Math.Min(Width, 4));

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
                return r.InstanceName((uint)((offset - r.Offset) / (ulong)r.Step));
        return $"0x{offset:x}";
    }
}

/// <summary>
/// One 32-bit word of a compiled block as dispatch sees it (8 bytes, passed in a register): the id of the register
/// holding the word (what a block's handlers switch on), its instance index, its access kind, and which whole accesses
/// take the fast path at this word. Built once per block from its descriptors (<see cref="RegisterBlock"/>); a handler
/// gets one per access and never an offset.
/// </summary>
public readonly struct RegisterRef
{
    // One ulong, so the JIT keeps it in a register: bits 0-7 the fast-path bits, 8-15 the id, 16-23 the access kind,
    // 24-31 the descriptor (index in the block's table + 1; 0: reserved), 32-47 the instance, 48-55 the bit position of
    // this word in its register (0, or 32 for the high word of a 64-bit register), 56-59 and 60-63 a sub-register write's
    // first byte and size (ByteWrites registers; 0: a whole-register access).
    // Fast-path bits: a 32-bit read (whole 32-bit register, or a half of a 64-bit one taking 32-bit accesses), a 64-bit
    // read (the low word of a 64-bit register), a whole 32-bit / 64-bit write to a RW, WO, W1S or W1C register, and
    // "a write of zero does nothing" (W1S/W1C). The size bits are indexed by size >> 2 (4 → 1, 8 → 2; 1 and 2 → none).
    // ByteLanes: the register takes narrower writes as they are (ByteWrites).
    // Half4: a 32-bit read of either half of a 64-bit register (Read4 is a whole 32-bit register only, so the whole-register
    // path returns the handler's value as it is).
    // Merge4: a 32-bit write to either half of a 64-bit read-write register (merged with the other half).
    internal const uint Read4 = 1, Read8 = 2, Write4 = 4, Write8 = 8, ZeroIsNoop = 16, ByteLanes = 32, Half4 = 64, Merge4 = 128;

    readonly ulong _bits;

    internal RegisterRef(int id, uint fast, RegisterAccess access, int desc, uint index, int shift) =>
        _bits = fast | (ulong)(byte)id << 8 | (ulong)(byte)access << 16 | (ulong)(byte)desc << 24 | (ulong)(ushort)index << 32 | (ulong)(byte)shift << 48;

    RegisterRef(ulong bits) => _bits = bits;

    /// <summary>This register with a sub-register write of <paramref name="size"/> bytes at byte <paramref name="offset"/> of it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal RegisterRef Part(uint offset, int size) => new(_bits | (ulong)offset << 56 | (ulong)(uint)size << 60);

    internal uint Fast => (uint)_bits;
    internal int Desc => (byte)(_bits >> 24);
    internal int Shift => (byte)(_bits >> 48);

    /// <summary>The block's id for the register (<see cref="RegisterDescriptor.Id"/>).</summary>
    public int Id => (byte)(_bits >> 8);
    /// <summary>The instance of a register array (IPRIORITYR&lt;n&gt;: n), 0 for a single register.</summary>
    public uint Index => (ushort)(_bits >> 32);
    /// <summary>The register's access kind (W1S and W1C registers may share an id: the handler sets or clears by it).</summary>
    public RegisterAccess Access => (RegisterAccess)(byte)(_bits >> 16);
    /// <summary>
    /// 0 for a whole-register access; for a narrower write to a <c>ByteWrites</c> register, how many bytes are written
    /// (the value holds just them, from bit 0) at byte <see cref="PartOffset"/> of the register.
    /// </summary>
    public int PartSize => (int)(_bits >> 60);
    /// <summary>The first byte of the register a narrower write stores to (see <see cref="PartSize"/>).</summary>
    public int PartOffset => (int)(_bits >> 56) & 0xF;
}

/// <summary>
/// A block's register file as its <see cref="RegisterBlock"/> drives it: whole registers by id and instance.
/// Implemented by a small struct wrapping the model, so the block's generic dispatch is specialised per model and the
/// calls are direct (no interface dispatch on the MMIO path).
/// </summary>
public interface IRegisterFile
{
    /// <summary>The block (table) this register file is dispatched through.</summary>
    static abstract RegisterBlock Block { get; }

    /// <summary>
    /// The value of register <paramref name="r"/> (all its bytes, and nothing above them: a 32-bit register's value fits in
    /// 32 bits), as the accessor named by <paramref name="attributes"/> sees it (a banked register: the accessing CPU's
    /// copy). Side-effect free, except for a read-sensitive register (GICC_IAR), which dispatch reads once per access and
    /// never to merge a write.
    /// </summary>
    ulong Read(RegisterRef r, in BusAttributes attributes);

    /// <summary>
    /// A write to register <paramref name="r"/>: for read-write registers the whole new value (a narrower access already
    /// merged with <see cref="Read"/>), for write-only ones the bytes written in place, for W1S/W1C ones the non-zero mask
    /// of bits written as 1 (the handler sets or clears by <see cref="RegisterRef.Access"/>).
    /// Never called for read-only or RAZ/WI registers.
    /// </summary>
    void Write(RegisterRef r, ulong value, in BusAttributes attributes);
}

/// <summary>
/// A block's register table compiled for dispatch: one <see cref="RegisterRef"/> per 32-bit word of the block up to its
/// last declared register (offset → register, instance and access in one load, no dictionary; undeclared words and
/// words past the last register are the reserved RAZ/WI register), and the generic access rules applied before a
/// block's handler sees anything: reads of write-only and RAZ/WI registers return zero, writes to read-only registers
/// are dropped (and reported in strict mode with the block's rule), RAZ/WI writes dropped, W1S/W1C writes of zero do
/// nothing, accesses narrower than a register takes or wider than it are RAZ/WI, and sub-register accesses
/// read-merge-write the whole register. Handlers switch on <see cref="RegisterRef.Id"/>, so each offset appears once in
/// the source (in the table).
/// </summary>
public sealed class RegisterBlock
{
    readonly RegisterRef[] _words;
    readonly int _shift; // log2 of the index granule: 2 (words) or 0 (bytes)
    readonly RegisterDescriptor[] _all; // [0] = the reserved descriptor
    readonly RegisterDescriptor[] _table;

    /// <param name="source">Strict-report source (<c>gicd</c>, <c>smmuv3</c>, ...).</param>
    /// <param name="readOnlyRule">The spec rule a write to a read-only register breaks (strict mode).</param>
    /// <param name="pairedWords">A 64-bit access at an 8-byte aligned pair of 32-bit registers reads/writes both (the GIC's
    /// redistributor and ITS frames, as QEMU's 64-bit register views); otherwise it is RAZ/WI like any access wider than a register.</param>
    /// <param name="byteGranular">Index every byte, not every 32-bit word, so registers narrower than a word may share
    /// one (a 16550's byte registers). Such a block is looked up with <see cref="At"/>/<see cref="TryFind"/> by its model;
    /// <see cref="RegisterDispatch{TFile}"/> takes word-granular blocks only.</param>
    public RegisterBlock(string source, RegisterDescriptor[] table, ulong blockSize, string readOnlyRule, bool pairedWords = false, bool byteGranular = false)
    {
        _shift = byteGranular ? 0 : 2;
        PairedWords = pairedWords;
        ArgumentNullException.ThrowIfNull(table);
        if (table.Length > 254) throw new ArgumentException("at most 254 registers per block", nameof(table));
        Source = source;
        ReadOnlyRule = readOnlyRule;
        BlockSize = blockSize;
        _table = table;
        _all = new RegisterDescriptor[table.Length + 1];
        _all[0] = new RegisterDescriptor(0, 4, "reserved", RegisterAccess.RazWi);
        table.CopyTo(_all, 1);
        ulong end = 0;
        foreach (var r in table) end = Math.Max(end, r.Offset + (ulong)Math.Max(r.Step, 0) * (ulong)Math.Max(r.Count - 1, 0) + (ulong)Math.Max(r.Width, 0));
        var granule = 1UL << _shift;
        _words = new RegisterRef[Math.Min((end + granule - 1) >> _shift, (blockSize + granule - 1) >> _shift)];
        for (var i = 0; i < table.Length; i++)
        {
            var r = table[i];
            if (r.Width is not (1 or 2 or 4 or 8) || r.Offset % (uint)Math.Min(r.Width, 4) != 0 || r.Count is < 1 or > 0x1_0000
                || (r.Stride != 0 && (r.Stride < r.Width || r.Stride % r.Width != 0)))
                throw new ArgumentException($"register {r.Name}: bad width, alignment or count", nameof(table));
            if (r.Id is < 0 or > 255) throw new ArgumentException($"register {r.Name}: id must be 0..255", nameof(table));
            var readable = r.Access is not (RegisterAccess.WriteOnly or RegisterAccess.RazWi);
            var writable = r.Access is not (RegisterAccess.ReadOnly or RegisterAccess.RazWi);
            var w1x = r.Access is RegisterAccess.WriteOneToSet or RegisterAccess.WriteOneToClear;
            var halves = (r.Sizes & 4) != 0;
            if (r.ByteWrites && (r.Width != 4 || r.Access != RegisterAccess.ReadWrite || r.NarrowestAccess != 1))
                throw new ArgumentException($"register {r.Name}: ByteWrites needs a byte-accessible 32-bit read-write register", nameof(table));
            for (var n = 0u; n < (uint)r.Count; n++)
            for (var o = r.InstanceOffset(n); o < r.InstanceOffset(n) + (ulong)r.Width; o += granule)
            {
                if (o + Math.Min((ulong)r.Width, granule) > blockSize) throw new ArgumentException($"register {r.Name} lies outside the block", nameof(table));
                ref var slot = ref _words[o >> _shift];
                if (slot.Desc != 0) throw new ArgumentException($"register {r.Name} overlaps {_all[slot.Desc].Name}", nameof(table));
                var rel = (uint)(o - r.InstanceOffset(n));
                var high = r.Width == 8 && (rel & 4) != 0;
                uint fast = 0;
                if (r.Width == 4)
                {
                    if (readable) fast |= RegisterRef.Read4;
                    if (writable) fast |= RegisterRef.Write4;
                }
                else if (r.Width == 8)
                {
                    if (readable && halves) fast |= RegisterRef.Half4;
                    if (readable && !high) fast |= RegisterRef.Read8;
                    if (writable && !high) fast |= RegisterRef.Write8;
                    if (halves && r.Access == RegisterAccess.ReadWrite) fast |= RegisterRef.Merge4;
                }
                if (w1x) fast |= RegisterRef.ZeroIsNoop;
                if (r.ByteWrites) fast |= RegisterRef.ByteLanes;
                if (byteGranular) fast = 0; // looked up by the model, never dispatched
                slot = new RegisterRef(r.Id, fast, r.Access, i + 1, n, high ? 32 : 0);
            }
        }
    }

    public string Source { get; }
    public bool PairedWords { get; }
    public string ReadOnlyRule { get; }
    public ulong BlockSize { get; }
    public ReadOnlySpan<RegisterDescriptor> Table => _table;

    /// <summary>The word holding <paramref name="offset"/> (the reserved RAZ/WI register when none). O(1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public RegisterRef At(ulong offset)
    {
        var w = offset >> _shift;
        return w < (ulong)_words.Length ? _words[w] : default;
    }

    /// <summary>
    /// The register instance that starts at <paramref name="offset"/>, for models whose registers take accesses only at
    /// their own offset (QEMU's edu, a 16550): false for undeclared offsets and offsets inside a register.
    /// </summary>
    public bool TryFind(ulong offset, out RegisterRef r)
    {
        r = At(offset);
        return r.Desc != 0 && _all[r.Desc].InstanceOffset(r.Index) == offset;
    }

    /// <summary>Whether the index is per byte (see the constructor).</summary>
    public bool ByteGranular => _shift == 0;

    /// <summary>The register holding <paramref name="offset"/> (the reserved RAZ/WI descriptor when none). O(1).</summary>
    public ref readonly RegisterDescriptor Find(ulong offset) => ref _all[At(offset).Desc];

    /// <summary>The descriptor of <paramref name="r"/>.</summary>
    public ref readonly RegisterDescriptor Descriptor(RegisterRef r) => ref _all[r.Desc];

    /// <summary>The access kind of the register holding <paramref name="offset"/> (RAZ/WI outside the block or undeclared).</summary>
    public RegisterAccess Access(ulong offset) => Find(offset).Access;

    /// <summary>The name of the register (instance) holding <paramref name="offset"/>, or its hex offset.</summary>
    public string NameOf(ulong offset)
    {
        var r = At(offset);
        return r.Desc == 0 ? $"0x{offset:x}" : _all[r.Desc].InstanceName(r.Index);
    }

    /// <summary>The name of <paramref name="r"/> (NAME, or NAME&lt;n&gt; for an instance of a register array), for traces and reports.</summary>
    public string NameOf(RegisterRef r) => _all[r.Desc].InstanceName(r.Index);

    internal RegisterRef[] Words => _words;
    internal RegisterDescriptor[] Descriptors => _all;

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void ReportReadOnly(StrictMonitor strict, RegisterRef r) =>
        strict.Report(Source, ReadOnlyRule, $"write to read-only {NameOf(r)}");
}

/// <summary>
/// MMIO dispatch through a block's compiled table, specialised per register file: the file's words and descriptors are
/// static readonly here, so optimised code holds their lengths as constants and a register is found with one 8-byte
/// load. The whole-register accesses (and 32-bit halves of 64-bit registers) are tested inline; everything else goes out
/// of line through the descriptor.
/// </summary>
public static class RegisterDispatch<TFile> where TFile : struct, IRegisterFile
{
    static readonly RegisterBlock Block = TFile.Block.ByteGranular
        ? throw new NotSupportedException($"{TFile.Block.Source}: a byte-granular block is looked up by its model, not dispatched")
        : TFile.Block;
    static readonly RegisterRef[] Words = TFile.Block.Words;
    static readonly RegisterDescriptor[] All = TFile.Block.Descriptors;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static RegisterRef At(ulong offset)
    {
        var w = offset >> 2;
        return w < (ulong)Words.Length ? Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(Words), (nint)w) : default;
    }

    /// <summary>An MMIO read of <paramref name="size"/> bytes at <paramref name="offset"/> through <paramref name="file"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Read(TFile file, ulong offset, int size, in BusAttributes attributes)
    {
        var r = At(offset);
        if (((uint)offset & 3) == 0)
        {
            // The common access, a whole readable register: the handler's value as it is (nothing left to do after the
            // call, so nothing stays live across it).
            if ((r.Fast & ((uint)size >> 2)) != 0) return file.Read(r, in attributes);
            // A 32-bit half of a 64-bit register.
            if ((r.Fast & RegisterRef.Half4) != 0 && size == 4) return ReadHalf(file, r, in attributes);
        }
        return ReadOther(file, offset, size, in attributes);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static ulong ReadHalf(TFile file, RegisterRef r, in BusAttributes attributes) => (uint)(file.Read(r, in attributes) >> r.Shift);

    /// <inheritdoc cref="Read(TFile, ulong, int, in BusAttributes)"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Read(TFile file, ulong offset, int size) => Read(file, offset, size, BusAttributes.Cpu);

    /// <summary>Sub-register reads, sizes the register does not take (RAZ), write-only and RAZ/WI registers, pairs.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static ulong ReadOther(TFile file, ulong offset, int size, in BusAttributes attributes)
    {
        var w = At(offset);
        ref readonly var r = ref All[w.Desc];
        var within = ((uint)offset - r.Offset) & (uint)(r.Width - 1);
        if ((r.ReadSizes & (uint)size) == 0 || (within & (uint)(size - 1)) != 0)
            return size == 8 && Block.PairedWords && (offset & 7) == 0 && r.Width == 4 ? ReadPair(file, offset, in attributes) : 0;
        var v = file.Read(w, in attributes);
        return size == 8 ? v : (v >> (int)(within * 8)) & ((1UL << (8 * size)) - 1);
    }

    /// <summary>An MMIO write through <paramref name="file"/>, with the access rules of the register's descriptor applied.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write(TFile file, ulong offset, int size, ulong value, in BusAttributes attributes, StrictMonitor? strict)
    {
        var r = At(offset);
        // The common access: a whole read-write, write-only, W1S or W1C register.
        if (((uint)offset & 3) == 0 && (r.Fast & (uint)size & (RegisterRef.Write4 | RegisterRef.Write8)) != 0)
        {
            if (value != 0 || (r.Fast & RegisterRef.ZeroIsNoop) == 0) file.Write(r, value, in attributes);
            return;
        }
        // A byte or halfword store to a byte-accessible register: the bytes as they are, no read.
        if ((r.Fast & RegisterRef.ByteLanes) != 0 && size < 4 && ((uint)offset & (uint)(size - 1)) == 0)
        {
            file.Write(r.Part((uint)offset & 3, size), value & ((1UL << (8 * size)) - 1), in attributes);
            return;
        }
        WriteOther(file, offset, size, value, in attributes, strict);
    }

    /// <summary>Sub-register writes (merged, or placed), read-only and RAZ/WI registers.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static void WriteOther(TFile file, ulong offset, int size, ulong value, in BusAttributes attributes, StrictMonitor? strict)
    {
        var w = At(offset);
        if ((w.Fast & RegisterRef.Merge4) != 0 && size == 4 && ((uint)offset & 3) == 0)
        {
            // A 32-bit half of a 64-bit read-write register (a 32-bit CPU's or lo_hi_writeq's store), merged.
            var half = 0xFFFF_FFFFUL << w.Shift;
            file.Write(w, (file.Read(w, in attributes) & ~half) | ((value << w.Shift) & half), in attributes);
            return;
        }
        ref readonly var r = ref All[w.Desc];
        var within = ((uint)offset - r.Offset) & (uint)(r.Width - 1);
        if ((r.Sizes & (uint)size) == 0 || (within & (uint)(size - 1)) != 0)
        {
            if (size == 8 && Block.PairedWords && (offset & 7) == 0 && r.Width == 4) WritePair(file, offset, value, in attributes, strict);
            return;
        }
        var shift = (int)(within * 8);
        var bytes = size == 8 ? value : (value & ((1UL << (8 * size)) - 1)) << shift;
        switch (r.Access)
        {
            case RegisterAccess.ReadWrite:
                var mask = size == 8 ? ulong.MaxValue : ((1UL << (8 * size)) - 1) << shift;
                file.Write(w, (file.Read(w, in attributes) & ~mask) | bytes, in attributes);
                return;
            case RegisterAccess.WriteOnly:
                file.Write(w, bytes, in attributes);
                return;
            case RegisterAccess.WriteOneToSet or RegisterAccess.WriteOneToClear:
                if (bytes != 0) file.Write(w, bytes, in attributes);
                return;
            case RegisterAccess.ReadOnly:
                if (strict is { Enabled: true }) Block.ReportReadOnly(strict, w);
                return;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static ulong ReadPair(TFile file, ulong offset, in BusAttributes attributes) =>
        Read(file, offset, 4, in attributes) | Read(file, offset + 4, 4, in attributes) << 32;

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void WritePair(TFile file, ulong offset, ulong value, in BusAttributes attributes, StrictMonitor? strict)
    {
        Write(file, offset, 4, value & 0xFFFF_FFFF, in attributes, strict);
        if (All[At(offset + 4).Desc].Width == 4) Write(file, offset + 4, 4, value >> 32, in attributes, strict);
    }
}
