using System.Globalization;
using System.Text.Json;

namespace Doorbell.Reporting;

/// <summary>
/// Writes traces as Chrome/Perfetto trace-event JSON (the "JSON Object Format" of the Trace Event Format document):
/// one process per machine, one thread (track) per model instance or CPU, each event a complete ("X") slice of
/// 1 ns at its virtual timestamp, and each DMA/MSI flow as flow events ("s" → "t" → "f", binding to the enclosing
/// slices) so a viewer draws the transaction's hops as arrows across tracks. Timestamps are virtual time in
/// microseconds (the format's unit), so the file is the same on every run.
/// </summary>
public static class TraceEventJson
{
    public static void Write(IReadOnlyList<Trace> traces, Stream output)
    {
        ArgumentNullException.ThrowIfNull(traces);
        using var w = new Utf8JsonWriter(output, new JsonWriterOptions { Indented = false });
        w.WriteStartObject();
        w.WriteString("displayTimeUnit", "ns");
        w.WriteStartArray("traceEvents");
        for (var p = 0; p < traces.Count; p++)
        {
            var pid = p + 1;
            var t = traces[p];
            Meta(w, "process_name", pid, 0, t.Name);
            Meta(w, "process_sort_index", pid, 0, null, pid);
            var tids = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var e in t.Events)
            {
                if (!tids.TryGetValue(e.Source, out var tid))
                {
                    tid = tids.Count + 1;
                    tids[e.Source] = tid;
                    Meta(w, "thread_name", pid, tid, e.Source);
                    Meta(w, "thread_sort_index", pid, tid, null, tid);
                }
                var ts = Us(e.Time);
                w.WriteStartObject();
                w.WriteString("name", e.Message.Length <= 80 ? e.Message : e.Message[..80]);
                w.WriteString("cat", e.CategoryName);
                w.WriteString("ph", "X");
                w.WriteNumber("ts", ts);
                w.WriteNumber("dur", 0.001);
                w.WriteNumber("pid", pid);
                w.WriteNumber("tid", tid);
                w.WriteStartObject("args");
                w.WriteString("message", e.Message);
                w.WriteNumber("seq", e.Sequence);
                if (e.Flow != 0) w.WriteNumber("flow", e.Flow);
                w.WriteEndObject();
                w.WriteEndObject();
            }
            // Flows: consecutive events of one flow, linked in order.
            foreach (var flow in t.Events.Where(e => e.Flow != 0).GroupBy(e => e.Flow).OrderBy(g => g.Key))
            {
                var hops = flow.OrderBy(e => e.Sequence).ToList();
                if (hops.Count < 2) continue;
                var id = (long)pid * 1_000_000 + flow.Key;
                var name = hops[0].FlowKind == FlowKind.Msi ? "msi" : "dma";
                for (var i = 0; i < hops.Count; i++)
                {
                    var e = hops[i];
                    w.WriteStartObject();
                    w.WriteString("name", name);
                    w.WriteString("cat", "flow");
                    w.WriteString("ph", i == 0 ? "s" : i == hops.Count - 1 ? "f" : "t");
                    if (i == hops.Count - 1) w.WriteString("bp", "e");
                    w.WriteNumber("id", id);
                    w.WriteNumber("ts", Us(e.Time));
                    w.WriteNumber("pid", pid);
                    w.WriteNumber("tid", tids[e.Source]);
                    w.WriteEndObject();
                }
            }
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    static double Us(long ns) => Math.Round(ns / 1000.0, 3);

    static void Meta(Utf8JsonWriter w, string name, int pid, int tid, string? value, int? sort = null)
    {
        w.WriteStartObject();
        w.WriteString("name", name);
        w.WriteString("ph", "M");
        w.WriteNumber("pid", pid);
        w.WriteNumber("tid", tid);
        w.WriteStartObject("args");
        if (value is not null) w.WriteString("name", value);
        if (sort is { } s) w.WriteNumber("sort_index", s);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    /// <summary>Formats a trace event timestamp the way <see cref="Write"/> does (microseconds).</summary>
    public static string FormatTimestamp(long ns) => Us(ns).ToString(CultureInfo.InvariantCulture);
}
