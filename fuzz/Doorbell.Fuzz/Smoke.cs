using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;

namespace Doorbell.Fuzz;

/// <summary>
/// The bounded fuzz run CI does: every target in turn, structure-aware generation alternating with mutation of earlier
/// inputs and of the corpus, for a time budget. A watchdog thread turns a hang into a finding. Findings (crash, hang,
/// oracle violation) are written to <c>fuzz/findings/TARGET/</c> and replay with <c>run TARGET FILE</c>.
/// </summary>
public static class Smoke
{
    sealed class Progress
    {
        public long Count;
        public volatile byte[]? Current;
        public volatile string? Target;
    }

    public static int Run(IReadOnlyList<FuzzTarget> targets, TimeSpan budget, int seed, string findingsDir, string? corpusDir, TextWriter output, TimeSpan hangBound) =>
        Run(targets, budget, seed, findingsDir, corpusDir, output, hangBound, null);

    /// <summary>As above, with the budget shared by <paramref name="weights"/> (target name → weight, 1 when absent)
    /// instead of equally: a campaign gives the fast targets more of the time.</summary>
    public static int Run(IReadOnlyList<FuzzTarget> targets, TimeSpan budget, int seed, string findingsDir, string? corpusDir, TextWriter output, TimeSpan hangBound, IReadOnlyDictionary<string, double>? weights)
    {
        ArgumentNullException.ThrowIfNull(targets);
        ArgumentNullException.ThrowIfNull(output);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"fuzz smoke: seed {seed}, {budget.TotalSeconds:F0} s over {targets.Count} targets (replay: --seed {seed})"));
        var progress = new Progress();
        using var done = new CancellationTokenSource();
        var watchdog = new Thread(() => Watch(progress, hangBound, findingsDir, output, done.Token)) { IsBackground = true, Name = "fuzz watchdog" };
        watchdog.Start();

        var rng = new Random(seed);
        Directory.CreateDirectory(findingsDir);
        var lastInput = Path.Combine(findingsDir, "last-input.bin");
        var findings = 0;
        long totalUnits = 0;
        double Weight(FuzzTarget t) => weights is not null && weights.TryGetValue(t.Name, out var w) ? w : 1.0;
        var total = targets.Sum(Weight);
        foreach (var t in targets)
        {
            var per = budget * (Weight(t) / total);
            progress.Target = t.Name;
            var pool = LoadCorpus(corpusDir, t.Name);
            var sw = Stopwatch.StartNew();
            long n = 0, units = 0, newFindings = 0;
            while (sw.Elapsed < per && newFindings < 5)
            {
                var input = pool.Count > 0 && rng.Next(3) == 0 ? t.Mutate(pool[rng.Next(pool.Count)], rng) : t.Generate(rng);
                progress.Current = input;
                // What a process-killing input (a stack overflow, which .NET cannot catch) leaves behind for the caller.
                File.WriteAllBytes(lastInput, input);
                try
                {
                    t.Run(input);
                    if (pool.Count < 256 && rng.Next(16) == 0) pool.Add(input);
                }
                catch (Exception e)
                {
                    newFindings++;
                    var kind = e is FuzzFinding ? "oracle" : "crash";
                    var file = Save(findingsDir, t.Name, input);
                    output.WriteLine($"  {t.Name}: {kind}: {e.GetType().Name}: {FirstLine(e.Message)} -> {file}");
                }
                n++;
                units += t.Units(input);
                Interlocked.Increment(ref progress.Count);
            }
            findings += (int)newFindings;
            totalUnits += units;
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {t.Name,-11} {n,9} inputs {units,11} operations in {sw.Elapsed.TotalSeconds,6:F1} s  {(newFindings == 0 ? "ok" : $"{newFindings} finding(s)")}"));
        }
        done.Cancel();
        output.WriteLine(findings == 0 ? $"fuzz smoke: {progress.Count} inputs, {totalUnits} operations, no finding" : $"fuzz smoke: {findings} finding(s) (seed {seed})");
        return findings == 0 ? 0 : 1;
    }

    static void Watch(Progress p, TimeSpan bound, string findingsDir, TextWriter output, CancellationToken stop)
    {
        // No progress while the process burned `bound` of CPU time: a hang (CPU time, so a starved process is not one).
        long last = -1;
        var since = CpuTime.Process;
        while (!stop.IsCancellationRequested)
        {
            Thread.Sleep(250);
            var now = Interlocked.Read(ref p.Count);
            if (now != last) { last = now; since = CpuTime.Process; continue; }
            if (CpuTime.Process - since < bound || p.Current is not { } input) continue;
            var file = Save(findingsDir, p.Target ?? "unknown", input);
            output.WriteLine($"  {p.Target}: hang: one input used more than {bound.TotalSeconds:F0} s of CPU -> {file}");
            output.Flush();
            Environment.Exit(3);
        }
    }

    internal static List<byte[]> LoadCorpus(string? dir, string target)
    {
        var d = dir is null ? null : Path.Combine(dir, target);
        return d is not null && Directory.Exists(d) ? [.. Directory.EnumerateFiles(d).Order(StringComparer.Ordinal).Select(File.ReadAllBytes)] : [];
    }

    static string Save(string dir, string target, byte[] input)
    {
        var d = Path.Combine(dir, target);
        Directory.CreateDirectory(d);
        var name = Path.Combine(d, Convert.ToHexStringLower(SHA256.HashData(input))[..16] + ".bin");
        File.WriteAllBytes(name, input);
        return name;
    }

    static string FirstLine(string s) => s.Split('\n')[0];
}
