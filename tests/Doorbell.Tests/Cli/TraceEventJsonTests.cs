using System.Text.Json;
using Doorbell.Reporting;
using Doorbell.Scenarios;
using Doorbell.Tracing;

namespace Doorbell.Tests.Cli;

public class TraceEventJsonTests
{
    static JsonElement Run(string scenario, out ScenarioContext ctx)
    {
        ctx = new ScenarioContext(TextWriter.Null, false, 0, ~0UL);
        Assert.Equal(0, BuiltinScenarios.Find(scenario)!.Run(ctx));
        var ms = new MemoryStream();
        TraceEventJson.Write(ctx.Traces, ms);
        return JsonDocument.Parse(ms.ToArray()).RootElement.Clone();
    }

    [Fact]
    public void Trace_json_follows_the_trace_event_format_and_links_dma_and_msi_hops_as_flows()
    {
        var root = Run("its-msi", out _);
        var events = root.GetProperty("traceEvents").EnumerateArray().ToList();
        Assert.NotEmpty(events);
        var slices = new HashSet<(int, int, double)>();
        var threads = new Dictionary<(int, int), string>();
        foreach (var e in events)
        {
            var ph = e.GetProperty("ph").GetString();
            Assert.Contains(ph, new[] { "X", "M", "s", "t", "f" });
            Assert.Equal(JsonValueKind.Number, e.GetProperty("pid").ValueKind);
            Assert.Equal(JsonValueKind.Number, e.GetProperty("tid").ValueKind);
            Assert.False(string.IsNullOrEmpty(e.GetProperty("name").GetString()));
            var key = (e.GetProperty("pid").GetInt32(), e.GetProperty("tid").GetInt32());
            if (ph == "M")
            {
                Assert.Equal(JsonValueKind.Object, e.GetProperty("args").ValueKind);
                if (e.GetProperty("name").GetString() == "thread_name") threads[key] = e.GetProperty("args").GetProperty("name").GetString()!;
                continue;
            }
            Assert.True(e.GetProperty("ts").GetDouble() >= 0);
            if (ph == "X")
            {
                Assert.True(e.GetProperty("dur").GetDouble() > 0);
                Assert.False(string.IsNullOrEmpty(e.GetProperty("cat").GetString()));
                slices.Add((key.Item1, key.Item2, e.GetProperty("ts").GetDouble()));
            }
        }
        // one track per model/CPU
        Assert.Contains("its", threads.Values);
        Assert.Contains("gicr1", threads.Values);
        Assert.Contains("cpu1", threads.Values);
        Assert.Contains("gicv2m", threads.Values);
        // flows: each id starts once, ends once, goes forward in time, and every hop sits on a slice
        var flows = events.Where(e => e.GetProperty("ph").GetString() is "s" or "t" or "f").GroupBy(e => e.GetProperty("id").GetInt64()).ToList();
        Assert.True(flows.Count >= 3, $"{flows.Count} flows");
        foreach (var f in flows)
        {
            var hops = f.ToList();
            Assert.Equal("s", hops[0].GetProperty("ph").GetString());
            Assert.Equal("f", hops[^1].GetProperty("ph").GetString());
            Assert.Equal("e", hops[^1].GetProperty("bp").GetString());
            Assert.Single(hops, h => h.GetProperty("ph").GetString() == "s");
            for (var i = 1; i < hops.Count; i++) Assert.True(hops[i].GetProperty("ts").GetDouble() > hops[i - 1].GetProperty("ts").GetDouble());
            foreach (var h in hops)
                Assert.Contains((h.GetProperty("pid").GetInt32(), h.GetProperty("tid").GetInt32(), h.GetProperty("ts").GetDouble()), slices);
        }
        // the expected flows: the MSI device → ITS → redistributor, the forged write dropped by the ITS, the forged
        // write raising an SPI through the GICv2m frame
        string Tracks(IGrouping<long, JsonElement> f) => string.Join(">", f.Select(h => threads[(h.GetProperty("pid").GetInt32(), h.GetProperty("tid").GetInt32())]));
        var paths = flows.Select(Tracks).ToList();
        Assert.Contains("00:01.0>its>gicr1", paths);
        Assert.Contains("00:02.0 (rogue)>its", paths);
        Assert.Contains("00:02.0 (rogue)>gicv2m", paths);
    }

    [Fact]
    public void Trace_json_is_identical_across_runs()
    {
        var a = Run("smmuv3", out var c1).GetRawText();
        var b = Run("smmuv3", out _).GetRawText();
        Assert.Equal(a, b);
        Assert.Contains(c1.Traces.SelectMany(t => t.Events), e => e.Category == TraceCategory.SmmuEvent && e.Flow != 0);
    }
}
