using System.Text;
using BenchmarkDotNet.Attributes;
using Doorbell.Qtest;

namespace Doorbell.Benchmarks;

/// <summary>
/// The qtest front end's parser and dispatcher (issue 17): pipelined bursts of register commands fed as one
/// chunk, per line. Lines go to edu's BAR (an MMIO register) and to RAM; the answers are formatted into the
/// output buffer. The cost per line must not grow with the burst (the old Feed re-copied the rest of its
/// buffer for every line) and nothing may be allocated.
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
public class QtestBenchmarks
{
    QtestServer _server = null!;
    byte[] _burst = null!;

    [Params(1, 16, 4096)]
    public int Lines { get; set; }

    [Params("writel-mmio", "readq-ram")]
    public string Command { get; set; } = "writel-mmio";

    [GlobalSetup]
    public void Setup()
    {
        var cmd = QemuCommandLine.Parse(["-machine", "virt,gic-version=3,iommu=smmuv3", "-m", "512M", "-device", "edu", "-qtest", "unix:/unused"]);
        _server = new QtestServer(cmd.Build());
        _server.Handle("writel 0x4010008010 0x10000000");
        _server.Handle("writew 0x4010008004 0x6");
        var sb = new StringBuilder();
        for (var i = 0; i < Lines; i++)
            sb.Append(Command == "writel-mmio" ? $"writel 0x10000004 0x{i:x}\n" : $"readq 0x{0x4000_0000 + (i & 255) * 8:x}\n");
        _burst = Encoding.ASCII.GetBytes(sb.ToString());
    }

    /// <summary>One chunk of <see cref="Lines"/> lines: parse, dispatch to the bus, format the answers.</summary>
    [Benchmark]
    public int FeedBurst()
    {
        _server.Feed(_burst);
        var n = _server.Output.Length;
        _server.ClearOutput();
        return n;
    }
}
