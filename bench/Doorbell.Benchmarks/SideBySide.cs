using System.Globalization;

namespace Doorbell.Benchmarks;

/// <summary>
/// `-- side-by-side smmuv2 [ROUNDS]`: the SMMUv2 and SMMUv3 IOTLB-hit benchmark bodies (the BenchmarkDotNet cases of
/// <see cref="SmmuV2Benchmarks"/> and <see cref="SmmuV3Benchmarks"/>) interleaved in short rounds, each round timed in
/// the thread's own CPU time (<see cref="CpuTimeRunner"/>'s clock; interleaving is what `--cpu-time`, one method at a
/// time, does not do), so time the scheduler gives other processes on a loaded machine is not counted. Prints per-side minimum and median ns per page and their ratios.
/// </summary>
internal static class SideBySide
{
    const int PagesPerCall = 16;

    static long ThreadCpuNs() => CpuTimeRunner.ThreadNs();

    public static int Run(string[] args)
    {
        if (args.Length < 2 || args[1] != "smmuv2")
        {
            Console.Error.WriteLine("side-by-side: the only comparison is 'smmuv2' (SMMUv2 vs SMMUv3 IOTLB hit)");
            return 2;
        }
        var rounds = args.Length > 2 && int.TryParse(args[2], NumberStyles.None, CultureInfo.InvariantCulture, out var r) && r > 10 ? r : 2000;
        var v2 = new SmmuV2Benchmarks();
        v2.Setup();
        var v3 = new SmmuV3Benchmarks();
        v3.Setup();
        (string Name, Func<long> Body)[] cases =
        [
            ("SMMUv2 DmaTranslateIotlbHitPerPage", () => (long)v2.DmaTranslateIotlbHitPerPage()),
            ("SMMUv3 DmaTranslateIotlbHitPerPage", () => (long)v3.DmaTranslateIotlbHitPerPage()),
            ("SMMUv2 DmaRead8IotlbHit", () => v2.DmaRead8IotlbHit()),
            ("SMMUv3 DmaReadIotlbHitPerPage", () => v3.DmaReadIotlbHitPerPage()),
        ];
        const int Calls = 200;
        var times = new double[cases.Length][];
        for (var c = 0; c < cases.Length; c++) times[c] = new double[rounds];
        long sink = 0;
        for (var round = 0; round < rounds; round++)
            for (var c = 0; c < cases.Length; c++)
            {
                var body = cases[c].Body;
                var t0 = ThreadCpuNs();
                for (var i = 0; i < Calls; i++) sink += body();
                times[c][round] = (ThreadCpuNs() - t0) / (double)(Calls * PagesPerCall);
            }
        var warm = rounds / 5; // the first fifth is warm-up (tiered JIT)
        var stats = times.Select(t => (Min: t[warm..].Min(), Median: Median(t[warm..]))).ToArray();
        for (var c = 0; c < cases.Length; c++)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{cases[c].Name,-36} min {stats[c].Min,7:F2} ns  median {stats[c].Median,7:F2} ns"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"ratio SMMUv2/SMMUv3 translate hit: min {stats[0].Min / stats[1].Min:F3}, median {stats[0].Median / stats[1].Median:F3}; 8-byte read hit: min {stats[2].Min / stats[3].Min:F3}, median {stats[2].Median / stats[3].Median:F3} ({rounds - warm} rounds of {Calls * PagesPerCall} pages, thread CPU time; sink {sink & 1})"));
        return 0;
    }

    static double Median(double[] x)
    {
        var c = (double[])x.Clone();
        Array.Sort(c);
        return c[c.Length / 2];
    }
}
