using System.Text.Json;

namespace Doorbell.Platform.DeviceTree;

/// <summary>`doorbell audit --format json`: the schema is documented in docs/audit.md ("doorbell-audit/1").</summary>
public static class AuditJson
{
    public const string Schema = "doorbell-audit/1";

    public static string VerdictName(AssignmentVerdict v) => v switch
    {
        AssignmentVerdict.Isolated => "assignable",
        AssignmentVerdict.UnsafeInterruptsOnly => "unsafe-irq",
        _ => "no-iommu",
    };

    public static string KindName(IommuKind k) => k switch { IommuKind.SmmuV3 => "smmu-v3", IommuKind.SmmuV2 => "smmu-v2", _ => "other" };

    public static string KindName(MsiControllerKind k) => k switch
    {
        MsiControllerKind.GicV3Its => "gicv3-its",
        MsiControllerKind.GicV3PreIts => "gicv3-pre-its",
        MsiControllerKind.GicV2m => "gicv2m",
        MsiControllerKind.GicV3Mbi => "gicv3-mbi",
        MsiControllerKind.InController => "in-controller",
        _ => "other",
    };

    /// <summary>Writes the document; <paramref name="extra"/> may add members to each platform object (execution results).</summary>
    public static void Write(IReadOnlyList<PlatformAudit> audits, IReadOnlyList<(string File, string Error)> errors, TextWriter w,
        Action<Utf8JsonWriter, PlatformAudit>? extra = null)
    {
        ArgumentNullException.ThrowIfNull(audits);
        ArgumentNullException.ThrowIfNull(errors);
        ArgumentNullException.ThrowIfNull(w);
        using var ms = new MemoryStream();
        using (var j = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            j.WriteStartObject();
            j.WriteString("schema", Schema);
            j.WriteStartArray("platforms");
            foreach (var a in audits) WritePlatform(j, a, extra);
            j.WriteEndArray();
            j.WriteStartArray("errors");
            foreach (var (file, error) in errors)
            {
                j.WriteStartObject();
                j.WriteString("file", file);
                j.WriteString("error", error);
                j.WriteEndObject();
            }
            j.WriteEndArray();
            j.WriteEndObject();
        }
        w.WriteLine(System.Text.Encoding.UTF8.GetString(ms.ToArray()));
    }

    static void Pair(Utf8JsonWriter j, string name, uint? first, uint? last)
    {
        if (first is null) { j.WriteNull(name); return; }
        j.WriteStartArray(name);
        j.WriteNumberValue(first.Value);
        j.WriteNumberValue(last ?? first.Value);
        j.WriteEndArray();
    }

    static void WritePlatform(Utf8JsonWriter j, PlatformAudit a, Action<Utf8JsonWriter, PlatformAudit>? extra)
    {
        j.WriteStartObject();
        j.WriteString("file", a.Name);
        if (a.Model is null) j.WriteNull("model"); else j.WriteString("model", a.Model);
        j.WriteStartArray("iommus");
        foreach (var i in a.Iommus)
        {
            j.WriteStartObject();
            j.WriteString("path", i.Node.Path);
            j.WriteString("kind", KindName(i.Kind));
            j.WriteString("compatible", i.Node.Compatible.FirstOrDefault() ?? "");
            j.WriteEndObject();
        }
        j.WriteEndArray();
        j.WriteStartArray("msiControllers");
        foreach (var m in a.MsiControllers)
        {
            j.WriteStartObject();
            j.WriteString("path", m.Node.Path);
            j.WriteString("kind", KindName(m.Kind));
            j.WriteString("compatible", m.Node.Compatible.FirstOrDefault() ?? "");
            j.WriteBoolean("isolating", m.Isolates);
            j.WriteEndObject();
        }
        j.WriteEndArray();
        j.WriteStartArray("masters");
        foreach (var m in a.Masters)
        {
            j.WriteStartObject();
            j.WriteString("path", m.Node.Path);
            j.WriteString("type", m.IsPciHost ? "pci" : m.IsIdMappedBus ? "bus" : "device");
            j.WriteString("verdict", VerdictName(m.Verdict));
            j.WriteString("reason", m.Reason);
            if (m.BusRange is { } br) Pair(j, "busRange", br.First, br.Last); else j.WriteNull("busRange");
            j.WriteStartArray("iommus");
            foreach (var i in m.Iommus) j.WriteStringValue(i.Node.Path);
            j.WriteEndArray();
            j.WriteStartArray("msiControllers");
            foreach (var c in m.MsiControllers) j.WriteStringValue(c.Node.Path);
            j.WriteEndArray();
            j.WriteStartArray("streamIds");
            foreach (var s in m.StreamIds) j.WriteNumberValue(s);
            j.WriteEndArray();
            if (m.DeviceId is { } d) j.WriteNumber("deviceId", d); else j.WriteNull("deviceId");
            j.WriteStartArray("ranges");
            foreach (var r in m.Ranges)
            {
                j.WriteStartObject();
                j.WriteNumber("first", r.First);
                j.WriteNumber("last", r.Last);
                j.WriteString("verdict", VerdictName(r.Verdict));
                j.WriteString("reason", r.Reason);
                if (r.Iommu is null) j.WriteNull("iommu"); else j.WriteString("iommu", r.Iommu.Node.Path);
                Pair(j, "streamIds", r.StreamIdFirst, r.StreamIdLast);
                if (r.Msi is null) j.WriteNull("msiController"); else j.WriteString("msiController", r.Msi.Node.Path);
                Pair(j, "deviceIds", r.DeviceIdFirst, r.DeviceIdLast);
                j.WriteBoolean("deviceIdAliased", r.DeviceIdAliased);
                j.WriteEndObject();
            }
            j.WriteEndArray();
            j.WriteEndObject();
        }
        j.WriteEndArray();
        extra?.Invoke(j, a);
        j.WriteEndObject();
    }

    /// <summary>The "execution" member of a platform (--execute): board blocks and one probe object per range/device.</summary>
    public static void WriteExecution(Utf8JsonWriter j, ExecutedAudit run)
    {
        ArgumentNullException.ThrowIfNull(j);
        ArgumentNullException.ThrowIfNull(run);
        j.WriteStartObject("execution");
        j.WriteStartArray("board");
        foreach (var b in run.Board.Blocks)
        {
            j.WriteStartObject();
            j.WriteString("path", b.Node.Path);
            j.WriteString("kind", b.Kind);
            j.WriteNumber("base", b.Base);
            j.WriteBoolean("modelled", b.Modelled);
            j.WriteString("status", b.Status);
            j.WriteEndObject();
        }
        j.WriteEndArray();
        j.WriteStartObject("kernel");
        j.WriteBoolean("booted", run.Kernel is not null);
        if (run.BootError is null) j.WriteNull("error"); else j.WriteString("error", run.BootError);
        j.WriteNumber("iommuDrivers", run.Kernel?.Iommus.Count ?? 0);
        j.WriteNumber("msiDomains", run.Kernel?.MsiDomains.Count ?? 0);
        j.WriteNumber("hostBridges", run.Kernel?.HostBridges.Count ?? 0);
        j.WriteNumber("functions", (run.Kernel?.Functions.Count ?? 0) + (run.Kernel?.UntranslatedFunctions.Count ?? 0));
        j.WriteNumber("iommuGroups", run.Kernel?.Groups.Count ?? 0);
        j.WriteEndObject();
        j.WriteStartArray("probes");
        foreach (var r in run.Results)
        {
            j.WriteStartObject();
            j.WriteString("path", r.Master.Node.Path);
            if (r.Range is { } rr) { j.WriteNumber("first", rr.First); j.WriteNumber("last", rr.Last); }
            else { j.WriteNull("first"); j.WriteNull("last"); }
            j.WriteString("verdict", VerdictName(r.Verdict));
            j.WriteStartObject("dma");
            j.WriteNumber("attempts", r.DmaAttempts);
            j.WriteNumber("faults", r.DmaFaults);
            j.WriteNumber("landed", r.DmaLanded);
            if (r.DmaNotRun is null) j.WriteNull("notRun"); else j.WriteString("notRun", r.DmaNotRun);
            j.WriteEndObject();
            j.WriteStartObject("msi");
            j.WriteNumber("sprayed", r.MsiSprayed);
            j.WriteNumber("victimVectors", r.MsiVictimVectors);
            j.WriteNumber("forged", r.MsiForged);
            if (r.MsiVia is null) j.WriteNull("via"); else j.WriteString("via", r.MsiVia);
            if (r.MsiNotRun is null) j.WriteNull("notRun"); else j.WriteString("notRun", r.MsiNotRun);
            j.WriteEndObject();
            j.WriteBoolean("throughKernel", r.ThroughKernel);
            j.WriteBoolean("vfioAttaches", r.VfioAttaches);
            j.WriteString("vfio", r.VfioDecision);
            j.WriteBoolean("verdictContradicted", r.VerdictContradicted);
            j.WriteBoolean("vfioContradicted", r.VfioContradicted);
            j.WriteEndObject();
        }
        j.WriteEndArray();
        j.WriteEndObject();
    }
}
