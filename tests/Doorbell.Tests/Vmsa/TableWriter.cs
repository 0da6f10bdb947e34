using Doorbell.Memory;
using Doorbell.Vmsa;

namespace Doorbell.Tests.Vmsa;

/// <summary>
/// Low-level descriptor writer for tests: places arbitrary descriptors (AF = 0, odd permissions, contiguous runs,
/// tables pointing anywhere) at any level. Tables are allocated from a bump pointer in the writer's address space
/// (PA, or IPA for nested stage-1 tables, translated to PA by <see cref="ToPhysical"/> for the writes).
/// </summary>
internal sealed class TableWriter
{
    readonly PhysicalAddressSpace _bus;
    ulong _next;

    public TableWriter(PhysicalAddressSpace bus, Granule granule, int inputSize, int startLevel, ulong tableArea, Func<ulong, ulong>? toPhysical = null)
    {
        _bus = bus;
        Granule = granule;
        InputSize = inputSize;
        StartLevel = startLevel;
        ToPhysical = toPhysical ?? (a => a);
        _next = tableArea;
        StartBits = inputSize - granule.LevelShift(startLevel);
        Root = AllocTable(Math.Max(64UL, 8UL << StartBits));
    }

    public Granule Granule { get; }
    public int InputSize { get; }
    public int StartLevel { get; }
    public int StartBits { get; }
    public ulong Root { get; }
    public Func<ulong, ulong> ToPhysical { get; }
    /// <summary>Table attributes (bits 63:59) for tables this writer creates next.</summary>
    public ulong NextTableAttributes { get; set; }
    /// <summary>Every table created: (level, input prefix) → table address.</summary>
    public Dictionary<(int Level, ulong Prefix), ulong> Tables { get; } = [];
    /// <summary>The table attributes (bits 63:59) of the descriptor pointing at each table in <see cref="Tables"/>.</summary>
    public Dictionary<(int Level, ulong Prefix), ulong> TableAttributes { get; } = [];

    public ulong AllocTable(ulong size = 0)
    {
        if (size == 0) size = Granule.Bytes();
        var a = (_next + size - 1) & ~(size - 1);
        _next = a + size;
        return a;
    }

    int Bits(int level) => level == StartLevel ? StartBits : Granule.Stride();

    public ulong EntryAddress(ulong table, int level, ulong input) =>
        table + (((input >> Granule.LevelShift(level)) & ((1UL << Bits(level)) - 1)) << 3);

    public ulong Read(ulong address)
    {
        _bus.ReadU64(ToPhysical(address), out var v);
        return v;
    }

    public void Write(ulong address, ulong value) => _bus.WriteU64(ToPhysical(address), value);

    /// <summary>The table that holds level <paramref name="level"/>'s entry for <paramref name="input"/>, creating tables above as needed.</summary>
    public ulong TableFor(ulong input, int level)
    {
        var table = Root;
        for (var l = StartLevel; l < level; l++)
        {
            var ea = EntryAddress(table, l, input);
            var d = Read(ea);
            if ((d & 3) != 3)
            {
                var t = AllocTable();
                d = Descriptors.Table(t, Granule) | NextTableAttributes;
                Write(ea, d);
                Tables[(l + 1, input >> Granule.LevelShift(l))] = t;
                TableAttributes[(l + 1, input >> Granule.LevelShift(l))] = NextTableAttributes;
            }
            table = Descriptors.OutputAddress(d, Granule, 52);
        }
        return table;
    }

    /// <summary>Writes a raw descriptor at <paramref name="level"/> for <paramref name="input"/>.</summary>
    public void SetDescriptor(ulong input, int level, ulong descriptor) => Write(EntryAddress(TableFor(input, level), level, input), descriptor);

    public void Leaf(ulong input, int level, ulong output, ulong attributes) =>
        SetDescriptor(input, level, Descriptors.Leaf(output, Granule, level, attributes));

    /// <summary>A contiguous run of 2^ContiguousBits leaves (input and output aligned to the run) with the hint set.</summary>
    public void ContiguousRun(ulong input, int level, ulong output, ulong attributes)
    {
        var n = 1 << Descriptors.ContiguousBits(Granule, level);
        var size = 1UL << Granule.LevelShift(level);
        for (var i = 0; i < n; i++)
            Leaf(input + (ulong)i * size, level, output + (ulong)i * size, attributes | Descriptors.Contiguous);
    }

    /// <summary>Stage-1 leaf attributes: AF set, RW at EL1 only, unless told otherwise.</summary>
    public const ulong S1Rw = Descriptors.Af;
    public const ulong S1RwUser = Descriptors.Af | Descriptors.Ap1;
    public const ulong S2Rw = Descriptors.Af | Descriptors.S2ApRead | Descriptors.S2ApWrite | (0xFUL << 2);
}
