using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;

namespace Doorbell.Benchmarks;

/// <summary>
/// A measuring aid for a loaded machine: runs one <c>[Benchmark]</c> method in many small batches and reports the
/// thread CPU time per operation (CLOCK_THREAD_CPUTIME_ID), minimum and median over the batches. Preemption by
/// other processes does not count against thread CPU time, so on a busy 2-core machine its minimum tracks what
/// BenchmarkDotNet measures on a quiet one (plus ≈ 1 ns for the delegate call per invocation).
/// Usage: <c>--cpu-time Class.Method [Param=Value ...] [--batches N] [--calls N]</c>.
/// </summary>
static class CpuTimeRunner
{
    [StructLayout(LayoutKind.Sequential)]
    struct Timespec { public long Sec; public long Nsec; }

    [DllImport("libc", EntryPoint = "clock_gettime")]
    static extern int ClockGetTime(int clock, out Timespec ts);

    const int ClockThreadCputimeId = 3;

    internal static long ThreadNs()
    {
        ClockGetTime(ClockThreadCputimeId, out var ts);
        return ts.Sec * 1_000_000_000L + ts.Nsec;
    }

    public static int Run(string[] args)
    {
        if (args.Length < 2 || !args[1].Contains('.', StringComparison.Ordinal))
        {
            Console.Error.WriteLine("usage: --cpu-time Class.Method [Param=Value ...] [--batches N] [--calls N]");
            return 1;
        }
        var batches = 400;
        var calls = 2000;
        var parameters = new List<(string, string)>();
        for (var i = 2; i < args.Length; i++)
        {
            if (args[i] == "--batches" && i + 1 < args.Length) batches = int.Parse(args[++i], CultureInfo.InvariantCulture);
            else if (args[i] == "--calls" && i + 1 < args.Length) calls = int.Parse(args[++i], CultureInfo.InvariantCulture);
            else if (args[i].Split('=') is [var k, var v]) parameters.Add((k, v));
            else { Console.Error.WriteLine($"--cpu-time: unknown argument '{args[i]}'"); return 1; }
        }
        var dot = args[1].LastIndexOf('.');
        var typeName = args[1][..dot];
        var methodName = args[1][(dot + 1)..];
        var type = typeof(CpuTimeRunner).Assembly.GetTypes().FirstOrDefault(t => t.Name == typeName);
        var method = type?.GetMethod(methodName);
        if (type is null || method is null || method.GetCustomAttribute<BenchmarkAttribute>() is not { } bench)
        {
            Console.Error.WriteLine($"--cpu-time: no [Benchmark] method '{args[1]}'");
            return 1;
        }
        var instance = Activator.CreateInstance(type)!;
        foreach (var (k, v) in parameters)
        {
            var prop = type.GetProperty(k) ?? throw new ArgumentException($"no parameter '{k}' on {type.Name}");
            prop.SetValue(instance, Convert.ChangeType(v, prop.PropertyType, CultureInfo.InvariantCulture));
        }
        foreach (var setup in type.GetMethods().Where(m => m.GetCustomAttribute<GlobalSetupAttribute>() is { } g
                     && (g.Targets is null || g.Targets.Length == 0 || g.Targets.Contains(methodName))))
            setup.Invoke(instance, null);
        var ops = bench.OperationsPerInvoke;
        var invoke = MakeInvoker(instance, method);
        // Warm-up past tiered compilation (Tier-0 → instrumented → Tier-1 with PGO).
        var sw = Stopwatch.StartNew();
        while (sw.ElapsedMilliseconds < 1500) invoke(calls);
        var perOp = new double[batches];
        for (var b = 0; b < batches; b++)
        {
            var t0 = ThreadNs();
            invoke(calls);
            perOp[b] = (ThreadNs() - t0) / (double)(calls * (long)ops);
        }
        Array.Sort(perOp);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{args[1]} {string.Join(' ', parameters.Select(p => p.Item1 + "=" + p.Item2))}: min {perOp[0]:F2} ns/op, p10 {perOp[batches / 10]:F2}, median {perOp[batches / 2]:F2} (thread CPU time, {batches}×{calls} calls, {ops} op/call)"));
        return 0;
    }

    static Action<int> MakeInvoker(object instance, MethodInfo m)
    {
        var generic = typeof(CpuTimeRunner).GetMethod(nameof(Loop), BindingFlags.NonPublic | BindingFlags.Static)!.MakeGenericMethod(m.ReturnType);
        return (Action<int>)generic.Invoke(null, [instance, m])!;
    }

    static class Sink<T> { public static T? Value; }

    static Action<int> Loop<T>(object instance, MethodInfo m)
    {
        var f = (Func<T>)Delegate.CreateDelegate(typeof(Func<T>), instance, m);
        return n =>
        {
            var last = default(T);
            for (var i = 0; i < n; i++) last = f();
            Sink<T>.Value = last;
        };
    }
}
