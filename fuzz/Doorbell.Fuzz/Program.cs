using System.Globalization;
using Doorbell.Fuzz;

// doorbell-fuzz: the fuzz targets of every outside surface (docs/robustness.md).
//   list                          the targets
//   smoke [--seconds N] [--seed S] [--target T] [--weights T=W,...] [--corpus DIR] [--findings DIR]
//   run TARGET FILE...            replay inputs (a finding's file), exit 1 if any fails
//   afl TARGET                    SharpFuzz entry for AFL++ (run under afl-fuzz on an instrumented Doorbell.dll)
//   libfuzzer TARGET              SharpFuzz entry for libFuzzer (libfuzzer-dotnet)
//   coverage-report LABEL FILE NS...  line/branch coverage of Doorbell.dll and of namespace prefixes from a Cobertura file
return Cli.Run(args);

static class Cli
{
    const string Usage = "usage: doorbell-fuzz list | smoke [--seconds N] [--seed S] [--target T] [--weights T=W,...] [--corpus DIR] [--findings DIR] | run TARGET FILE... | afl TARGET | libfuzzer TARGET";

    public static int Run(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help") { Console.WriteLine(Usage); return args.Length == 0 ? 1 : 0; }
        try
        {
            return args[0] switch
            {
                "list" => List(),
                "smoke" => SmokeCommand(args[1..]),
                "run" => Replay(args[1..]),
                "afl" => Afl(args[1..]),
                "seed-corpus" => SeedCorpus(args[1..]),
                "libfuzzer" => LibFuzzer(args[1..]),
                "coverage-report" => args.Length >= 3 && File.Exists(args[2]) ? CoverageReport.Run(args[2], args[3..], args[1], Console.Out) : Fail("coverage-report needs LABEL, a Cobertura file and namespace prefixes"),
                var c => Fail($"unknown command '{c}'"),
            };
        }
        catch (ArgumentException e)
        {
            return Fail(e.Message);
        }
    }

    static int Fail(string message)
    {
        Console.Error.WriteLine($"doorbell-fuzz: {message}");
        Console.Error.WriteLine(Usage);
        return 1;
    }

    static int List()
    {
        foreach (var t in Targets.All) Console.WriteLine($"{t.Name,-11} {t.Description}");
        return 0;
    }

    static FuzzTarget Target(string name) => Targets.Find(name) ?? throw new ArgumentException($"unknown target '{name}' (see list)");

    static int SmokeCommand(string[] a)
    {
        var seconds = 120.0;
        var seed = Random.Shared.Next();
        IReadOnlyList<FuzzTarget> targets = Targets.All;
        var root = FindRoot();
        string? corpus = Path.Combine(root, "fuzz", "corpus");
        var findings = Path.Combine(root, "fuzz", "findings");
        Dictionary<string, double>? weights = null;
        for (var i = 0; i < a.Length; i++)
        {
            string Next() => i + 1 < a.Length ? a[++i] : throw new ArgumentException($"option '{a[i]}' needs a value");
            switch (a[i])
            {
                case "--seconds": seconds = double.TryParse(Next(), NumberStyles.Float, CultureInfo.InvariantCulture, out var s) && s > 0 && s < 1e6 ? s : throw new ArgumentException("--seconds: a positive number of seconds"); break;
                case "--seed": seed = int.TryParse(Next(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : throw new ArgumentException("--seed: an integer"); break;
                case "--target": targets = [.. Next().Split(',').Select(Target)]; break;
                case "--corpus": corpus = Next(); break;
                case "--findings": findings = Next(); break;
                case "--weights":
                    weights = [];
                    foreach (var kv in Next().Split(','))
                    {
                        var parts = kv.Split('=');
                        if (parts.Length != 2 || Targets.Find(parts[0]) is null || !double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out var w) || w <= 0)
                            throw new ArgumentException($"--weights: '{kv}' is not TARGET=positive weight");
                        weights[parts[0]] = w;
                    }
                    break;
                default: throw new ArgumentException($"unknown option '{a[i]}'");
            }
        }
        return Smoke.Run(targets, TimeSpan.FromSeconds(seconds), seed, findings, corpus, Console.Out, TimeSpan.FromSeconds(20), weights);
    }

    static int Replay(string[] a)
    {
        if (a.Length < 2) throw new ArgumentException("run needs a target and at least one file");
        var t = Target(a[0]);
        var failed = 0;
        foreach (var f in a[1..])
        {
            if (!File.Exists(f)) throw new ArgumentException($"{f}: no such file");
            try { t.Run(File.ReadAllBytes(f)); Console.WriteLine($"{f}: ok"); }
            catch (Exception e) when (e is not OutOfMemoryException) { failed++; Console.WriteLine($"{f}: {e.GetType().Name}: {e.Message.Split('\n')[0]}"); }
        }
        return failed == 0 ? 0 : 1;
    }

    // Writes N generated inputs per target (fixed seed) into DIR/TARGET/: the starting corpus kept in the repository.
    static int SeedCorpus(string[] a)
    {
        if (a.Length != 2 || !int.TryParse(a[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) || n < 1) throw new ArgumentException("seed-corpus needs DIR and a count");
        foreach (var t in Targets.All)
        {
            var rng = new Random(2026_12_06);
            var d = Path.Combine(a[0], t.Name);
            Directory.CreateDirectory(d);
            for (var i = 0; i < n; i++) File.WriteAllBytes(Path.Combine(d, $"seed-{i:d2}.bin"), t.Generate(rng));
        }
        return 0;
    }

    static int Afl(string[] a)
    {
        if (a.Length != 1) throw new ArgumentException("afl needs exactly one target");
        var t = Target(a[0]);
        SharpFuzz.Fuzzer.OutOfProcess.Run(stream =>
        {
            using var ms = new MemoryStream();
            stream.CopyTo(ms);
            t.Run(ms.ToArray());
        });
        return 0;
    }

    static int LibFuzzer(string[] a)
    {
        if (a.Length != 1) throw new ArgumentException("libfuzzer needs exactly one target");
        var t = Target(a[0]);
        SharpFuzz.Fuzzer.LibFuzzer.Run(span => t.Run(span));
        return 0;
    }

    static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Doorbell.slnx"))) return d.FullName;
        return Directory.GetCurrentDirectory();
    }
}
