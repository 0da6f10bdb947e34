using System.Globalization;
using System.Text;
using Doorbell.Host.Kernel;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Platform;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Doorbell.Scenarios;

/// <summary>A scenario file that does not match the schema: the message names the file, line and column.</summary>
public sealed class ScenarioFormatException(string message) : Exception(message);

/// <summary>
/// A scenario written as YAML (format in docs/scenarios.md): a board (a board-description file or an inline
/// one), optional strict mode, and steps run on the host kernel booted on that board — program a domain, map,
/// DMA, raise an MSI, forge one, assert — each with the outcome it expects. Parsing checks the schema and
/// reports the first mistake as `FILE:LINE:COL: what is wrong`.
/// </summary>
public sealed class ScenarioFile
{
    public required string Name { get; init; }
    public string Description { get; init; } = "";
    public required BoardDescription Board { get; init; }
    public bool Strict { get; init; }
    public required IReadOnlyList<ScenarioAction> Steps { get; init; }

    static readonly string[] TopKeys = ["name", "description", "board", "strict", "steps"];

    /// <summary>Loads and checks a scenario file (ScenarioFormatException on a mistake, IOException if unreadable).</summary>
    public static ScenarioFile Load(string path, BoardDescription? boardOverride = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        return Parse(File.ReadAllText(path), Path.GetFileName(path), Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".", boardOverride);
    }

    /// <summary>Parses scenario text; <paramref name="file"/> names it in errors, <paramref name="dir"/> resolves board paths.</summary>
    public static ScenarioFile Parse(string yaml, string file, string dir, BoardDescription? boardOverride = null)
    {
        var stream = new YamlStream();
        try { stream.Load(new StringReader(yaml)); }
        catch (YamlException e) { throw new ScenarioFormatException($"{file}:{e.Start.Line}:{e.Start.Column}: not valid YAML: {Inner(e)}"); }
        // YamlDotNet reports some malformed streams (a stray key indicator, a broken flow mapping) with these instead.
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            throw new ScenarioFormatException($"{file}: not valid YAML: {e.Message.Replace(" (Parameter 'parser')", "", StringComparison.Ordinal)}");
        }
        if (stream.Documents.Count == 0) throw new ScenarioFormatException($"{file}: empty scenario file");
        var p = new Reader(file);
        var root = p.Map(stream.Documents[0].RootNode, "scenario");
        p.Keys(root, "scenario", TopKeys);
        var name = p.OptString(root, "name") ?? Path.GetFileNameWithoutExtension(file);
        var description = p.OptString(root, "description") ?? "";
        var strict = p.OptBool(root, "strict") ?? false;
        BoardDescription board;
        if (boardOverride is not null) board = boardOverride;
        else if (!root.Children.TryGetValue(new YamlScalarNode("board"), out var b)) board = new BoardDescription();
        else if (b is YamlScalarNode s)
        {
            var path = Path.IsPathRooted(s.Value!) ? s.Value! : Path.Combine(dir, s.Value!);
            string text;
            try { text = File.ReadAllText(path); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new ScenarioFormatException($"{p.At(b)}: board file '{s.Value}' cannot be read: {e.Message}");
            }
            try { board = BoardDescription.Parse(text); }
            catch (FormatException e) { throw new ScenarioFormatException($"{s.Value}: {e.Message}"); }
        }
        else if (b is YamlMappingNode)
        {
            var sb = new StringBuilder();
            new YamlStream(new YamlDocument(b)).Save(new StringWriter(sb), assignAnchors: false);
            try { board = BoardDescription.Parse(sb.ToString()); }
            catch (FormatException e) { throw new ScenarioFormatException($"{p.At(b)}: inline board: {e.Message}"); }
        }
        else throw new ScenarioFormatException($"{p.At(b)}: 'board' must be a board file name or a board mapping");
        try { board.Build(BoardWiring.None); }
        catch (Exception e) when (e is FormatException or ArgumentException or InvalidOperationException or OverflowException)
        {
            throw new ScenarioFormatException($"{file}: board '{board.Name}': {e.Message}");
        }
        if (board.Gic.Version == 3 && !board.Gic.Its)
            throw new ScenarioFormatException($"{file}: scenario boards need an MSI controller: gic {{ version: 3, its: true }} or {{ version: 2 }}");
        if (!string.Equals(board.Iommu, "smmuv3", StringComparison.OrdinalIgnoreCase))
            throw new ScenarioFormatException($"{file}: scenario boards need 'iommu: smmuv3' (the host kernel drives an SMMUv3)");
        if (!root.Children.TryGetValue(new YamlScalarNode("steps"), out var stepsNode))
            throw new ScenarioFormatException($"{p.At(root)}: missing 'steps'");
        if (stepsNode is not YamlSequenceNode seq) throw new ScenarioFormatException($"{p.At(stepsNode)}: 'steps' must be a list");
        var steps = new List<ScenarioAction>();
        foreach (var n in seq) steps.Add(ScenarioAction.Parse(p, n));
        if (steps.Count == 0) throw new ScenarioFormatException($"{p.At(seq)}: 'steps' is empty");
        return new ScenarioFile { Name = name, Description = description, Board = board, Strict = strict, Steps = steps };
    }

    static string Inner(YamlException e)
    {
        var m = e.InnerException is YamlException i ? i.Message : e.Message;
        var cut = m.IndexOf("(Line:", StringComparison.Ordinal);
        return (cut > 0 ? m[..cut] : m).Trim().TrimEnd(':', '.').Trim();
    }

    /// <summary>The scenario as one step of a run.</summary>
    public Scenario ToScenario() => new(Name, [new ScenarioFileStep(this)], Description);

    /// <summary>Schema helpers: every error says where.</summary>
    internal sealed class Reader(string file)
    {
        public string At(YamlNode n) => $"{file}:{n.Start.Line}:{n.Start.Column}";

        public YamlMappingNode Map(YamlNode n, string what) =>
            n as YamlMappingNode ?? throw new ScenarioFormatException($"{At(n)}: {what} must be a mapping (key: value)");

        public void Keys(YamlMappingNode m, string what, string[] allowed)
        {
            foreach (var k in m.Children.Keys)
            {
                var key = (k as YamlScalarNode)?.Value ?? "";
                if (!allowed.Contains(key))
                    throw new ScenarioFormatException($"{At(k)}: unknown key '{key}' in {what} (expected {string.Join(", ", allowed)})");
            }
        }

        YamlNode? Get(YamlMappingNode m, string key) => m.Children.TryGetValue(new YamlScalarNode(key), out var v) ? v : null;

        public string? OptString(YamlMappingNode m, string key) => Get(m, key) switch
        {
            null => null,
            YamlScalarNode s => s.Value ?? "",
            var n => throw new ScenarioFormatException($"{At(n)}: '{key}' must be a single value"),
        };

        public string String(YamlMappingNode m, string key, string what) =>
            OptString(m, key) ?? throw new ScenarioFormatException($"{At(m)}: {what} needs '{key}'");

        public bool? OptBool(YamlMappingNode m, string key) => OptString(m, key) switch
        {
            null => null,
            "true" or "yes" or "on" => true,
            "false" or "no" or "off" => false,
            var v => throw new ScenarioFormatException($"{At(Get(m, key)!)}: '{key}' must be true or false, not '{v}'"),
        };

        public ulong? OptNum(YamlMappingNode m, string key)
        {
            var v = OptString(m, key);
            if (v is null) return null;
            try { return BoardDescription.Num(v); }
            catch (FormatException) { throw new ScenarioFormatException($"{At(Get(m, key)!)}: '{key}' must be a number (decimal, 0x-hex, K/M/G suffix), not '{v}'"); }
            catch (OverflowException) { throw new ScenarioFormatException($"{At(Get(m, key)!)}: '{key}' is too large: '{v}'"); }
        }

        /// <summary>An optional count or index in [<paramref name="min"/>, <paramref name="max"/>].</summary>
        public ulong? OptCount(YamlMappingNode m, string key, ulong min, ulong max)
        {
            var v = OptNum(m, key);
            if (v is { } n && (n < min || n > max))
                throw new ScenarioFormatException($"{At(Get(m, key)!)}: '{key}' must be {min}..{max}, not {n}");
            return v;
        }

        public ulong Num(YamlMappingNode m, string key, string what) =>
            OptNum(m, key) ?? throw new ScenarioFormatException($"{At(m)}: {what} needs '{key}'");

        public string OneOf(YamlMappingNode m, string key, string what, string[] values, string? dflt = null)
        {
            var v = OptString(m, key) ?? dflt ?? throw new ScenarioFormatException($"{At(m)}: {what} needs '{key}' ({string.Join("|", values)})");
            return values.Contains(v) ? v : throw new ScenarioFormatException($"{At(Get(m, key)!)}: '{key}' must be one of {string.Join(", ", values)}, not '{v}'");
        }

        public string Device(YamlMappingNode m, string key, string what)
        {
            var v = String(m, key, what);
            var full = v.Length == 7 ? "0000:" + v : v; // "00:01.0" → "0000:00:01.0"
            if (full.Length != 12 || full[4] != ':' || full[7] != ':' || full[10] != '.')
                throw new ScenarioFormatException($"{At(Get(m, key)!)}: '{key}' must be a PCI address like 00:01.0, not '{v}'");
            return full;
        }
    }
}

/// <summary>One step of a scenario file: its kind, its arguments and where it was written.</summary>
public sealed record ScenarioAction(string Kind, string Where, IReadOnlyDictionary<string, string> Args, string? Expect)
{
    static readonly Dictionary<string, (string[] Keys, string[]? Expect)> Schema = new()
    {
        ["domain"] = (["name", "device"], null),
        ["map"] = (["domain", "iova", "size", "prot"], null),
        ["unmap"] = (["domain", "iova", "size"], null),
        ["dma"] = (["device", "op", "iova", "size", "data", "expect"], ["ok", "fault"]),
        ["msi"] = (["device", "vectors", "vector", "expect"], ["delivered", "not-delivered"]),
        ["forge"] = (["device", "victim", "vector", "expect"], ["blocked", "delivered"]),
        ["assert"] = (["smmu-events", "isolated-msi", "device", "strict-findings"], null),
    };

    internal static ScenarioAction Parse(ScenarioFile.Reader p, YamlNode n)
    {
        var m = p.Map(n, "a step");
        if (m.Children.Count != 1)
            throw new ScenarioFormatException($"{p.At(m)}: a step is one of {string.Join(", ", Schema.Keys)} followed by its arguments, e.g. `- dma: {{ device: 00:01.0, op: write, iova: 0x10000, expect: ok }}`");
        var (k, v) = m.Children.First();
        var kind = (k as YamlScalarNode)?.Value ?? "";
        if (!Schema.TryGetValue(kind, out var schema))
            throw new ScenarioFormatException($"{p.At(k)}: unknown step '{kind}' (expected {string.Join(", ", Schema.Keys)})");
        var args = p.Map(v, $"the arguments of '{kind}'");
        p.Keys(args, $"'{kind}'", schema.Keys);
        var d = new Dictionary<string, string>();
        var what = $"step '{kind}' at line {k.Start.Line}";
        // Type-check every argument now, so a mistake is reported before anything runs.
        switch (kind)
        {
            case "domain":
                d["name"] = p.String(args, "name", what);
                d["device"] = p.Device(args, "device", what);
                break;
            case "map":
                d["domain"] = p.String(args, "domain", what);
                d["iova"] = Hex(p.Num(args, "iova", what));
                d["size"] = Hex(p.OptNum(args, "size") ?? 0x1000);
                d["prot"] = p.OneOf(args, "prot", what, ["r", "w", "rw"], "rw");
                break;
            case "unmap":
                d["domain"] = p.String(args, "domain", what);
                d["iova"] = Hex(p.Num(args, "iova", what));
                d["size"] = Hex(p.OptNum(args, "size") ?? 0x1000);
                break;
            case "dma":
                d["device"] = p.Device(args, "device", what);
                d["op"] = p.OneOf(args, "op", what, ["read", "write"]);
                d["iova"] = Hex(p.Num(args, "iova", what));
                if (p.OptString(args, "data") is { } data) d["data"] = data;
                var size = p.OptNum(args, "size") ?? (ulong)(d.TryGetValue("data", out var dd) ? Encoding.UTF8.GetByteCount(dd) : 8);
                if (size is 0 or > 0x10000) throw new ScenarioFormatException($"{p.At(args)}: 'size' must be 1..65536 bytes");
                d["size"] = Hex(size);
                break;
            case "msi":
                d["device"] = p.Device(args, "device", what);
                // MSI-X tables hold at most 2048 vectors (PCI Local Bus 3.0 §6.8.2.3).
                d["vectors"] = (p.OptCount(args, "vectors", 1, 2048) ?? 1).ToString(CultureInfo.InvariantCulture);
                d["vector"] = (p.OptCount(args, "vector", 0, 2047) ?? 0).ToString(CultureInfo.InvariantCulture);
                break;
            case "forge":
                d["device"] = p.Device(args, "device", what);
                d["victim"] = p.Device(args, "victim", what);
                d["vector"] = (p.OptCount(args, "vector", 0, 2047) ?? 0).ToString(CultureInfo.InvariantCulture);
                break;
            case "assert":
                if (args.Children.Count == 0) throw new ScenarioFormatException($"{p.At(args)}: 'assert' needs smmu-events, isolated-msi or strict-findings");
                if (p.OptCount(args, "smmu-events", 0, int.MaxValue) is { } ev) d["smmu-events"] = ev.ToString(CultureInfo.InvariantCulture);
                if (p.OptCount(args, "strict-findings", 0, int.MaxValue) is { } sf) d["strict-findings"] = sf.ToString(CultureInfo.InvariantCulture);
                if (p.OptBool(args, "isolated-msi") is { } iso)
                {
                    d["isolated-msi"] = iso ? "true" : "false";
                    d["device"] = p.Device(args, "device", "assert isolated-msi");
                }
                else if (p.OptString(args, "device") is not null)
                    throw new ScenarioFormatException($"{p.At(args)}: 'device' in assert goes with 'isolated-msi'");
                break;
        }
        string? expect = null;
        if (schema.Expect is { } allowed) expect = p.OneOf(args, "expect", what, allowed, allowed[0]);
        return new ScenarioAction(kind, p.At(k), d, expect);
    }

    static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);
    internal ulong Num(string key) => BoardDescription.Num(Args[key]);
    internal int Int(string key) => int.Parse(Args[key], CultureInfo.InvariantCulture);

    public override string ToString() => $"{Kind} {string.Join(" ", Args.Select(a => $"{a.Key}={a.Value}"))}{(Expect is null ? "" : $" expect={Expect}")}";
}

/// <summary>Runs a scenario file: boots the host kernel on its board, then plays each action and checks its outcome.</summary>
public sealed class ScenarioFileStep(ScenarioFile file) : IScenarioStep
{
    public string Title => file.Description.Length > 0 ? file.Description : $"scenario file '{file.Name}'";

    /// <summary>How often each vector's handler ran (each allocated vector is requested with a counting handler).</summary>
    sealed class Sink
    {
        public readonly int[] Fired = new int[2048];

        public int Request(IVfioPciFunction fn, int count)
        {
            for (var i = 0; i < Math.Min(count, Fired.Length); i++)
            {
                var v = i;
                var r = fn.RequestVector(v, $"scenario-msi[{v}]({fn.Name})", () => Fired[v]++);
                if (r != 0) return r;
            }
            return 0;
        }
    }

    public bool Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var trace = context.NewTrace(file.Board.Name);
        var strict = context.NewStrict();
        if (file.Strict) strict.Enabled = true;
        Machine m;
        try { m = file.Board.Build(BoardWiring.Default, trace, strict); }
        catch (Exception e) when (e is FormatException or ArgumentException or InvalidOperationException)
        {
            context.Item($"board '{file.Board.Name}': {e.Message}");
            return false;
        }
        var models = BoardModels.Of(m);
        if (models.Smmu is null || (models.Its is null && models.GicV2m is null))
        {
            context.Item($"board '{file.Board.Name}': the host kernel needs an SMMUv3 and a GICv3 with ITS or a GICv2 with GICv2m");
            return false;
        }
        var k = HostKernel.Boot(m, models);
        context.Observe(file.Board.Name, m, k);
        context.Item($"board '{file.Board.Name}': {k.Smmu.Name} + {k.MsiDomain.Name}, {k.Functions.Count} PCI functions, {k.Groups.Count} IOMMU groups");
        foreach (var f in k.Functions) context.Item($"  {f.Name} group {f.Group.Id}, isolated MSI {f.Group.HasIsolatedMsi}");
        var domains = new Dictionary<string, SmmuVfioDomain>(StringComparer.Ordinal);
        var mappings = new Dictionary<(string, ulong), ulong>();
        var sinks = new Dictionary<string, Sink>(StringComparer.Ordinal);
        var smmuEvents = 0;
        var ok = true;
        foreach (var a in file.Steps)
        {
            trace.Emit(TraceCategory.Scenario, "scenario", $"{a.Where}: {a}");
            var (passed, text) = Play(context, k, m, a, domains, mappings, sinks, ref smmuEvents);
            context.Item($"{(passed ? "ok  " : "FAIL")} {a}: {text}");
            ok &= passed;
        }
        return ok;
    }

    (bool, string) Play(ScenarioContext context, HostKernel k, Machine m, ScenarioAction a, Dictionary<string, SmmuVfioDomain> domains,
        Dictionary<(string, ulong), ulong> mappings, Dictionary<string, Sink> sinks, ref int smmuEvents)
    {
        KernelPciFunction? Fn(string key) => k.FindFunction(a.Args[key]);
        switch (a.Kind)
        {
            case "domain":
            {
                var fn = Fn("device");
                if (fn is null) return (false, $"no PCI function {a.Args["device"]} on this board");
                var d = (SmmuVfioDomain?)fn.Group.AllocateDomain();
                if (d is null) return (false, "domain allocation failed");
                var rc = fn.Group.Attach(d);
                if (rc != 0) return (false, $"attach failed: {Errno.Name(rc)}");
                d.EnableMsiCookie(0x800_0000);
                domains[a.Args["name"]] = d;
                return (true, $"stage-1 domain attached to group {fn.Group.Id} [{string.Join(", ", fn.Group.DeviceNames)}], MSI window at 0x8000000");
            }
            case "map":
            case "unmap":
            {
                if (!domains.TryGetValue(a.Args["domain"], out var d)) return (false, $"no domain named '{a.Args["domain"]}' (create it with a domain step first)");
                var iova = a.Num("iova");
                var size = (a.Num("size") + 0xFFF) & ~0xFFFUL;
                if (a.Kind == "unmap")
                {
                    var urc = d.Unmap(iova, size);
                    return (urc >= 0, urc >= 0 ? $"unmapped 0x{size:x} bytes at IOVA 0x{iova:x}" : $"unmap failed: {Errno.Name(urc)}");
                }
                var prot = a.Args["prot"] switch { "r" => IommuProt.Read, "w" => IommuProt.Write, _ => IommuProt.Read | IommuProt.Write };
                ulong first = 0;
                for (ulong off = 0; off < size; off += 0x1000)
                {
                    if (!k.UserPages.TryAllocate(0x1000, out var pa)) return (false, "out of host pages");
                    if (off == 0) first = pa;
                    var rc = d.Map(iova + off, pa, 0x1000, prot);
                    if (rc != 0) return (false, $"map of IOVA 0x{iova + off:x} failed: {Errno.Name(rc)}");
                    mappings[(a.Args["domain"], iova + off)] = pa;
                }
                return (true, $"IOVA 0x{iova:x} -> PA 0x{first:x} (0x{size:x} bytes, {a.Args["prot"]})");
            }
            case "dma":
            {
                var fn = Fn("device");
                if (fn is null) return (false, $"no PCI function {a.Args["device"]} on this board");
                var model = Model(m, fn);
                if (model is null) return (false, "device model not found");
                fn.WriteConfig(4, 2, fn.ReadConfig(4, 2) | PciCfg.CmdBusMaster | PciCfg.CmdMemory);
                var iova = a.Num("iova");
                var buf = new byte[(int)a.Num("size")];
                if (a.Args.TryGetValue("data", out var data)) Encoding.UTF8.GetBytes(data).CopyTo(buf, 0);
                var write = a.Args["op"] == "write";
                var s = write ? model.Dma.Write(iova, buf, BusAttributes.Cpu) : model.Dma.Read(iova, buf, BusAttributes.Cpu);
                var events = k.DrainSmmuEvents();
                smmuEvents += events.Count;
                var outcome = s == BusStatus.Ok ? "ok" : "fault";
                var detail = s == BusStatus.Ok ? $"{(write ? "wrote" : "read")} {buf.Length} bytes at IOVA 0x{iova:x}"
                    : $"{s}" + (events.Count > 0 ? $"; SMMU event {events[0]}" : "");
                return (outcome == a.Expect, $"{detail} (expected {a.Expect})");
            }
            case "msi":
            {
                var fn = Fn("device");
                if (fn is null) return (false, $"no PCI function {a.Args["device"]} on this board");
                var model = Model(m, fn);
                if (model is null) return (false, "device model not found");
                if (!sinks.TryGetValue(fn.Name, out var sink))
                {
                    sink = new Sink();
                    fn.WriteConfig(4, 2, fn.ReadConfig(4, 2) | PciCfg.CmdBusMaster | PciCfg.CmdMemory);
                    var rc = fn.EnableVectors(model.Msix is not null ? PciIrqKind.Msix : PciIrqKind.Msi, a.Int("vectors"));
                    if (rc < 0) return (false, $"vector allocation failed: {Errno.Name(rc)}");
                    rc = sink.Request(fn, rc);
                    if (rc < 0) return (false, $"request_irq failed: {Errno.Name(rc)}");
                    sinks[fn.Name] = sink;
                }
                var v = a.Int("vector");
                var before = sink.Fired[Math.Min(v, sink.Fired.Length - 1)];
                model.SignalInterrupt(v); // pushed: the host CPU took it before this returns
                var fired = sink.Fired[Math.Min(v, sink.Fired.Length - 1)] - before;
                var outcome = fired > 0 ? "delivered" : "not-delivered";
                return (outcome == a.Expect, $"vector {v} -> {(fn.Vectors is { } al && v < al.Vectors.Count ? $"message {al.Vectors[v].Message}, " : "")}handler ran {fired}x (expected {a.Expect})");
            }
            case "forge":
            {
                var fn = Fn("device");
                var victim = Fn("victim");
                if (fn is null || victim is null) return (false, $"no PCI function {(fn is null ? a.Args["device"] : a.Args["victim"])} on this board");
                if (!sinks.TryGetValue(victim.Name, out var vs) || victim.Vectors is not { } va) return (false, "the victim has no vectors: raise one with an msi step first");
                var v = a.Int("vector");
                if (v >= va.Vectors.Count) return (false, $"the victim has {va.Vectors.Count} vector(s)");
                var model = Model(m, fn);
                if (model is null) return (false, "device model not found");
                fn.WriteConfig(4, 2, fn.ReadConfig(4, 2) | PciCfg.CmdBusMaster | PciCfg.CmdMemory);
                var address = victim.ProgrammedMsiAddresses[v];
                var data = va.Vectors[v].Message.Data;
                var before = vs.Fired[v];
                var s = model.Dma.Write(address, BitConverter.GetBytes(data), BusAttributes.Cpu);
                smmuEvents += k.DrainSmmuEvents().Count;
                var raised = vs.Fired[v] - before;
                var outcome = raised > 0 ? "delivered" : "blocked";
                return (outcome == a.Expect, $"{fn.Name} DMA-writes the victim's message (data {data}) to 0x{address:x}: bus {s}, victim vector {v} raised {raised}x (expected {a.Expect})");
            }
            case "assert":
            {
                var parts = new List<string>();
                var pass = true;
                if (a.Args.TryGetValue("smmu-events", out _))
                {
                    smmuEvents += k.DrainSmmuEvents().Count;
                    var want = a.Int("smmu-events");
                    pass &= smmuEvents == want;
                    parts.Add($"SMMU events {smmuEvents} (want {want})");
                }
                if (a.Args.TryGetValue("strict-findings", out _))
                {
                    var want = a.Int("strict-findings");
                    var have = m.Strict.Violations.Total;
                    pass &= have == want;
                    parts.Add($"strict findings {have} (want {want})");
                }
                if (a.Args.TryGetValue("isolated-msi", out var iso))
                {
                    var fn = Fn("device");
                    if (fn is null) return (false, $"no PCI function {a.Args["device"]} on this board");
                    var want = iso == "true";
                    pass &= fn.Group.HasIsolatedMsi == want;
                    parts.Add($"{fn.Name} isolated MSI {fn.Group.HasIsolatedMsi} (want {want})");
                }
                return (pass, string.Join("; ", parts));
            }
        }
        return (false, "unknown step");
    }

    static PciFunction? Model(Machine m, KernelPciFunction fn) =>
        m.Pci?.AllFunctions().FirstOrDefault(d => d.RequesterId == fn.DeviceId && d is not PciBridge);
}
