using System.Security.Cryptography;
using System.Text;
using Doorbell.Fuzz;
using Doorbell.Qtest;

namespace Doorbell.Tests.Robustness;

/// <summary>Same inputs, same output: a long random qtest run (every board variant, DMA, MSIs, SMMU and ITS commands,
/// clock steps) gives the same answers and leaves the same RAM behind, twice.</summary>
public class DeterminismTests
{
    static string Digest(byte[] input)
    {
        var variant = QtestTarget.Variants[input[0] % QtestTarget.Variants.Length];
        var server = new QtestServer(QemuCommandLine.Parse([.. variant, "-accel", "qtest", "-qtest", "unix:/nonexistent"]).Build(), null);
        var all = new StringBuilder();
        foreach (var line in Encoding.UTF8.GetString(input.AsSpan(1)).Split('\n')) all.Append(server.Handle(line));
        all.Append(server.Handle("b64read 0x40000000 0x100000"));
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(all.ToString())));
    }

    [Fact]
    public void A_long_random_scenario_run_twice_gives_identical_answers_and_memory()
    {
        var gen = new QtestTarget();
        var rng = new Random(20261206);
        var digests = new List<string>();
        for (var v = 0; v < QtestTarget.Variants.Length; v++)
        {
            var parts = new List<byte>();
            for (var i = 0; i < 20; i++) parts.AddRange(gen.Generate(rng).AsSpan(1).ToArray());
            var input = new byte[parts.Count + 1];
            input[0] = (byte)v;
            parts.CopyTo(input, 1);
            var a = Digest(input);
            Assert.Equal(a, Digest(input));
            digests.Add(a);
        }
        Assert.Equal(digests.Count, digests.Distinct().Count()); // the variants really differ
    }
}
