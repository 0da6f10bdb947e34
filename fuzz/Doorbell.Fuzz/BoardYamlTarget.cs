using System.Text;
using Doorbell.Platform;

namespace Doorbell.Fuzz;

/// <summary>
/// Board descriptions (YAML): the shipped examples with values, keys and structure mutated. Oracle: a board builds, or
/// the error is a <see cref="FormatException"/> with a one-line message — never another exception.
/// </summary>
public sealed class BoardYamlTarget : FuzzTarget
{
    public override string Name => "board-yaml";
    public override string Description => "YAML board descriptions through the parser and the board builder";

    internal const string Example = """
        name: two-port-switch
        ram: 1G
        cpus: 2
        gic: { version: 3, its: true }
        iommu: smmuv3
        iommu-map: [{ rid-base: 0, output-base: 0, length: 0x10000 }]
        msi-map: [{ rid-base: 0, output-base: 0x10000, length: 0x10000 }]
        pcie:
          - { slot: 1, device: edu, dma-mask: 0xffffffffff }
          - slot: 2
            root-port: [{ device: mq-dma, queues: 4 }]
          - slot: 3
            switch: [{ device: edu }, { device: mq-dma, queues: 2 }]
          - slot: 4
            functions: [{ device: edu }, { device: edu }]
        platform:
          - { device: dma-engine, base: 0x0a000000, spi: 40, stream-id: 0x20000 }
        """;

    public override void Run(ReadOnlySpan<byte> input)
    {
        var text = Text(input);
        try
        {
            BoardDescription.Parse(text).Build();
        }
        catch (FormatException e)
        {
            if (e.Message.Contains('\n', StringComparison.Ordinal)) throw new FuzzFinding($"multi-line error: {e.Message}");
        }
    }

    static readonly string[] Values =
    [
        "0", "-1", "1G", "0G", "99999999T", "0x", "0xzz", "4294967296", "18446744073709551616", "NaN", "1e30", "''", "[]", "{}",
        "null", "~", "true", "edu", "mq-dma", "dma-engine", "frobnicator", "smmuv2", "none", "2", "3", "100000", "-5",
        "0xffffffffffffffff", "32", "256", "&a", "*a", "!!binary AAAA", "\"\\x00\"",
    ];

    public override byte[] Generate(Random rng) => EditYamlLines(Example, rng, 5,
        (lines, i, r) =>
        {
            // replace a scalar value after a colon
            var l = lines[i];
            var c = l.IndexOf(':', StringComparison.Ordinal);
            if (c >= 0) lines[i] = l[..(c + 1)] + " " + Values[r.Next(Values.Length)] + (l.EndsWith('}') ? " }" : "");
        },
        (lines, i, r) =>
        {
            var nums = new[] { "slot: 1", "slot: 2", "queues: 4", "cpus: 2", "spi: 40", "version: 3" };
            var n = nums[r.Next(nums.Length)];
            lines[i] = lines[i].Replace(n, n.Split(':')[0] + ": " + Values[r.Next(Values.Length)], StringComparison.Ordinal);
        });
}
