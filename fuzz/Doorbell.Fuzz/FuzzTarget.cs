using System.Text;

namespace Doorbell.Fuzz;

/// <summary>An oracle violation (not a crash): the input made Doorbell break one of its promises.</summary>
public sealed class FuzzFinding(string message) : Exception(message)
{
    public FuzzFinding() : this("oracle violation") { }
    public FuzzFinding(string message, Exception inner) : this(message + ": " + inner.Message) { }
}

/// <summary>
/// One outside surface. <see cref="Run"/> executes an input and throws <see cref="FuzzFinding"/> when an oracle is
/// violated; any other exception is a crash. <see cref="Generate"/> makes a structure-aware input for the smoke run;
/// the raw-byte entry (coverage-guided fuzzers) takes the same format, so a finding replays with <c>run</c>.
/// </summary>
public abstract class FuzzTarget
{
    public abstract string Name { get; }
    public abstract string Description { get; }
    public abstract void Run(ReadOnlySpan<byte> input);
    public abstract byte[] Generate(Random rng);

    /// <summary>The elementary operations an input carries (qtest lines, VFIO calls; 1 for a whole file): what campaign
    /// totals count.</summary>
    public virtual long Units(ReadOnlySpan<byte> input) => 1;

    /// <summary>Byte-level mutation of an earlier input (the smoke run alternates it with generation).</summary>
    public virtual byte[] Mutate(byte[] input, Random rng)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(rng);
        var b = new List<byte>(input);
        var n = 1 + rng.Next(8);
        for (var k = 0; k < n; k++)
        {
            switch (rng.Next(5))
            {
                case 0 when b.Count > 0: b[rng.Next(b.Count)] ^= (byte)(1 << rng.Next(8)); break;
                case 1 when b.Count > 0: b[rng.Next(b.Count)] = Interesting[rng.Next(Interesting.Length)]; break;
                case 2 when b.Count > 1:
                    var at = rng.Next(b.Count - 1);
                    b.RemoveRange(at, Math.Min(b.Count - at, 1 + rng.Next(16)));
                    break;
                case 3: b.Insert(rng.Next(b.Count + 1), (byte)rng.Next(256)); break;
                case 4 when b.Count > 8:
                    var from = rng.Next(b.Count - 4); var to = rng.Next(b.Count - 4);
                    for (var i = 0; i < 4; i++) b[to + i] = b[from + i];
                    break;
            }
        }
        return [.. b];
    }

    static readonly byte[] Interesting = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0xFD, (byte)'\n', (byte)' ', (byte)'0', (byte)'x'];

    protected static string Text(ReadOnlySpan<byte> input) => Encoding.UTF8.GetString(input);

    /// <summary>
    /// Line edits of a YAML example (the board and scenario targets): 1..6 times a line is removed, repeated, re-indented
    /// (0..<paramref name="maxIndent"/> spaces), has its flow mapping opened, or gets one of the target's own edits.
    /// </summary>
    protected static byte[] EditYamlLines(string example, Random rng, int maxIndent, params Action<List<string>, int, Random>[] own)
    {
        ArgumentNullException.ThrowIfNull(example);
        ArgumentNullException.ThrowIfNull(rng);
        ArgumentNullException.ThrowIfNull(own);
        var lines = example.Split('\n').ToList();
        var edits = 1 + rng.Next(6);
        for (var e = 0; e < edits; e++)
        {
            var i = rng.Next(lines.Count);
            var l = lines[i];
            var k = rng.Next(4 + own.Length);
            switch (k)
            {
                case 0: lines.RemoveAt(i); break;
                case 1: lines.Insert(i, l); break;                                                  // duplicate key / entry
                case 2: lines[i] = new string(' ', rng.Next(0, maxIndent + 1)) + l.TrimStart(); break; // indentation
                case 3: lines[i] = l.Replace("{", "", StringComparison.Ordinal); break;
                default: own[k - 4](lines, i, rng); break;
            }
        }
        return Encoding.UTF8.GetBytes(string.Join('\n', lines));
    }
}

public static class Targets
{
    public static IReadOnlyList<FuzzTarget> All { get; } =
    [
        new QtestTarget(), new DtbTarget(), new BoardYamlTarget(), new VfioTarget(), new StructuresTarget(), new SmmuV2Target(), new ServeTarget(), new ScenarioYamlTarget(),
    ];

    public static FuzzTarget? Find(string name) => All.FirstOrDefault(t => t.Name == name);
}

/// <summary>Reads an input as a stream of choices (the structure-aware targets); past its end every choice is zero.</summary>
public ref struct ChoiceReader(ReadOnlySpan<byte> data)
{
    readonly ReadOnlySpan<byte> _d = data;
    int _i;
    public readonly bool Done => _i >= _d.Length;
    public byte Byte() => _i < _d.Length ? _d[_i++] : (byte)0;
    public bool Bit() => (Byte() & 1) != 0;
    public ushort U16() => (ushort)(Byte() | (Byte() << 8));
    public uint U32() => U16() | ((uint)U16() << 16);
    public ulong U64() => U32() | ((ulong)U32() << 32);
    /// <summary>A page-aligned offset within <paramref name="pages"/> 4 KiB pages.</summary>
    public ulong Page(int pages) => (ulong)(Byte() % pages) << 12;
}
