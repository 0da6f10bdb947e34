using System.Text;
using Doorbell.Scenarios;

namespace Doorbell.Fuzz;

/// <summary>
/// Scenario files (YAML, docs/scenarios.md): a scenario with an inline board and every step kind, its values, keys and
/// structure mutated, parsed and then run on the board it describes. Oracles: the parser either accepts the file or
/// gives a <see cref="ScenarioFormatException"/> with a one-line message; a scenario that parses runs to its end
/// (steps may fail their expectations, the run may not throw).
/// </summary>
public sealed class ScenarioYamlTarget : FuzzTarget
{
    public override string Name => "scenario-yaml";
    public override string Description => "YAML scenario files through the parser, then run on their board";

    internal const string Example = """
        name: fuzz-scenario
        description: every step kind on a two-device ITS board
        strict: true
        board:
          name: two-devices-its
          ram: 512M
          gic: { version: 3, its: true }
          iommu: smmuv3
          pcie:
            - { slot: 1, device: mq-dma, queues: 4 }
            - { slot: 2, device: mq-dma, queues: 4 }
        steps:
          - domain: { name: a, device: 00:01.0 }
          - domain: { name: b, device: 00:02.0 }
          - map: { domain: a, iova: 0x10000, size: 0x2000, prot: rw }
          - dma: { device: 00:01.0, op: write, iova: 0x10000, data: "doorbell", expect: ok }
          - dma: { device: 00:01.0, op: read, iova: 0x11000, size: 64, expect: ok }
          - dma: { device: 00:01.0, op: write, iova: 0xdead0000, size: 8, expect: fault }
          - msi: { device: 00:01.0, vectors: 1, vector: 0, expect: delivered }
          - msi: { device: 00:02.0, vectors: 1, vector: 0, expect: delivered }
          - forge: { device: 00:02.0, victim: 00:01.0, vector: 0, expect: blocked }
          - assert: { isolated-msi: true, device: 00:01.0 }
          - assert: { smmu-events: 1 }
        """;

    public override void Run(ReadOnlySpan<byte> input)
    {
        var text = Text(input);
        ScenarioFile file;
        try
        {
            // No directory to resolve board files against: a board named by path is a (one-line) error, never a read.
            file = ScenarioFile.Parse(text, "fuzz.yaml", "/nonexistent-doorbell-fuzz-dir");
        }
        catch (ScenarioFormatException e)
        {
            if (e.Message.Contains('\n', StringComparison.Ordinal)) throw new FuzzFinding($"multi-line error: {e.Message}");
            return;
        }
        _ = file.ToScenario().Run(new ScenarioContext(TextWriter.Null, file.Strict));
    }

    static readonly string[] Values =
    [
        "0", "-1", "0x", "0xzz", "0xffffffffffffffff", "18446744073709551616", "4294967296", "NaN", "''", "[]", "{}", "null",
        "~", "true", "ok", "fault", "delivered", "blocked", "rw", "r", "w", "none", "00:01.0", "00:02.0", "00:1f.7", "ff:ff.f",
        "a", "b", "zz", "1", "2", "4096", "0x1000", "0x7fffffffffff", "\"\"", "&x", "*x", "!!binary AAAA",
    ];

    static readonly string[] Keys = ["domain", "map", "dma", "msi", "forge", "assert", "unmap", "name", "device", "iova", "size", "prot", "op", "data", "expect", "vectors", "vector", "victim"];

    public override byte[] Generate(Random rng) => EditYamlLines(Example, rng, 7,
        (lines, i, r) =>
        {
            // a value inside a flow mapping
            var l = lines[i];
            var k = Keys[r.Next(Keys.Length)] + ": ";
            var at = l.IndexOf(k, StringComparison.Ordinal);
            if (at < 0) return;
            var end = l.IndexOfAny([',', '}'], at);
            lines[i] = l[..(at + k.Length)] + Values[r.Next(Values.Length)] + (end >= 0 ? l[end..] : "");
        },
        (lines, i, r) => lines[i] = lines[i].Replace(Keys[r.Next(Keys.Length)], Keys[r.Next(Keys.Length)], StringComparison.Ordinal),
        (lines, i, r) => lines.Insert(i, lines[r.Next(lines.Count)]));                                // a step moved
}
