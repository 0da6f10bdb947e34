using System.Globalization;
using Doorbell.Devices;
using Doorbell.Platform;

namespace Doorbell.Qtest;

/// <summary>One `-device` the front end instantiates.</summary>
public sealed record QemuDevice(string Driver, int? Slot, int Function, ulong? DmaMask, int Queues = 4);

/// <summary>
/// The subset of QEMU's command line qtest harnesses use. Machine defaults follow QEMU 7.2's `virt`
/// (gic-version=2, no IOMMU, ITS on when GICv3, 128 MiB RAM) so a harness sees the machine it would get from QEMU.
/// CPU and display options are accepted and ignored. Besides QEMU's `edu`, `-device doorbell-mq-dma[,queues=N]`
/// adds Doorbell's multi-queue MSI-X DMA device. Every misuse is an <see cref="ArgumentException"/> whose message
/// is one QEMU-style line naming the option and value (`-m 0: …`); the launcher prefixes `doorbell: `.
/// </summary>
public sealed class QemuCommandLine
{
    /// <summary>Most RAM the board models: QEMU's virt also stops at 255 GiB (the high PCIe/ECAM regions follow).</summary>
    public const ulong MaxRamSize = 255UL << 30;
    /// <summary>CPUs the board models: GICv2 has 8 CPU interfaces; GICv3 here has the first redistributor region
    /// only (0x080A_0000..0x0900_0000, 123 frames), QEMU's limit with highmem-redists=off.</summary>
    public const int MaxCpusGicV2 = 8, MaxCpusGicV3 = 123;

    public QemuVirtOptions Machine { get; private set; } = new() { GicVersion = 2, Iommu = IommuKind.None, RamSize = 128UL << 20 };
    public List<QemuDevice> Devices { get; } = [];
    public string? QtestSocket { get; private set; }
    /// <summary>null: QEMU's default (log to stderr); "none": no log; else a file path.</summary>
    public string? QtestLog { get; private set; }
    /// <summary>A QMP monitor socket (-qmp unix:PATH, or -chardev socket,path=…,id=X with -mon chardev=X).</summary>
    public string? QmpSocket { get; private set; }
    public List<string> Ignored { get; } = [];
    readonly List<string> _specs = [];
    /// <summary>Trace patterns from -trace PATTERN / -trace enable=PATTERN / -d trace:PATTERN (and -d items that are not QEMU log items).</summary>
    public List<string> TracePatterns { get; } = [];
    /// <summary>Text to print instead of running (-M help, -device help, -d help); exit status 0.</summary>
    public string? Help { get; private set; }
    /// <summary>The board description given by `-machine board=FILE.yaml`, `-M FILE.yaml` or a built-in board name
    /// (`-M juno-like`); null for QEMU's virt. -m, -smp, gic-version, iommu and its given explicitly override its values.</summary>
    public BoardDescription? Board { get; private set; }
    /// <summary>Where <see cref="Board"/> came from (the file path or "built-in NAME").</summary>
    public string? BoardSource { get; private set; }
    string? _boardArg, _boardOption;
    bool _ramGiven, _cpusGiven, _gicGiven, _iommuGiven, _itsGiven;

    static readonly HashSet<string> IgnoredWithArg = ["-cpu", "-accel", "-icount", "-display", "-monitor", "-serial", "-name", "-vga", "-boot", "-rtc", "-global", "-L", "-bios", "-kernel", "-append", "-initrd", "-drive", "-netdev", "-object", "-parallel", "-audiodev", "-D", "-pidfile", "-uuid"];
    static readonly HashSet<string> IgnoredFlags = ["-nodefaults", "-nographic", "-S", "-no-shutdown", "-no-reboot", "-enable-kvm", "-daemonize"];
    // QEMU's -d log items (qemu-log.c); they concern TCG/guest CPUs, which Doorbell does not have
    static readonly HashSet<string> QemuLogItems = ["out_asm", "in_asm", "op", "op_opt", "op_ind", "op_plugin", "int", "exec", "cpu", "fpu", "mmu", "pcall", "cpu_reset", "unimp", "page", "nochain", "plugin", "strace", "tid", "invalid_mem"];
    // -machine virt properties of QEMU 7.2 that carry no device state here: accepted (booleans checked) and ignored
    static readonly HashSet<string> MachineBoolProps = ["highmem", "highmem-ecam", "highmem-mmio", "highmem-redists", "secure", "virtualization", "mte", "ras", "dtb-randomness", "dtb-kaslr-seed", "default-bus-bypass-iommu", "dump-guest-core", "mem-merge", "usb", "graphics", "suppress-vmdesc", "acpi"];
    static readonly HashSet<string> MachineValueProps = ["accel", "kernel-irqchip", "memory-backend", "dtb", "kernel", "initrd", "append", "firmware", "dumpdtb", "phandle-start", "memory-encryption", "confidential-guest-support", "kvm-type", "kvm-shadow-mem"];

    static ArgumentException Bad(string option, string value, string reason) => new($"{option} {value}: {reason}");

    /// <summary>A trace pattern must match a category of the machine trace (`doorbell trace-categories`).</summary>
    static string TracePattern(string option, string value, string pattern) =>
        Doorbell.Tracing.TraceCategories.ParseMask(pattern, out var error) is null ? throw Bad(option, value, error ?? "bad trace pattern") : pattern;

    /// <summary>Parses QEMU-style arguments; throws ArgumentException with a one-line QEMU-style message on what it cannot honour.</summary>
    public static QemuCommandLine Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var c = new QemuCommandLine();
        var chardevs = new Dictionary<string, string>();
        string? monChardev = null;
        string? smp = null;
        for (var i = 0; i < args.Count; i++)
        {
            var a = args[i].StartsWith("--", StringComparison.Ordinal) ? args[i][1..] : args[i];
            string Next() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{a}: requires an argument");
            switch (a)
            {
                case "-machine": case "-M": c.ParseMachine(a, Next()); break;
                case "-m": { var v = Next(); c.Machine = c.Machine with { RamSize = ParseRam(v) }; c._ramGiven = true; break; }
                case "-smp": { var v = Next(); c.Machine = c.Machine with { Cpus = ParseSmp(v) }; smp = v; c._cpusGiven = true; break; }
                case "-device": c.ParseDevice(Next()); break;
                case "-qtest":
                {
                    var v = Next();
                    if (!v.StartsWith("unix:", StringComparison.Ordinal)) throw Bad(a, v, "only unix:PATH is supported");
                    var path = v[5..].Split(',')[0];
                    if (path.Length == 0) throw Bad(a, v, "empty socket path");
                    c.QtestSocket = path;
                    break;
                }
                case "-qtest-log":
                {
                    var v = Next();
                    if (v.Length == 0) throw Bad(a, v, "empty file name");
                    c.QtestLog = v;
                    break;
                }
                case "-qmp":
                {
                    var v = Next();
                    if (v.StartsWith("unix:", StringComparison.Ordinal)) c.QmpSocket = v[5..].Split(',')[0];
                    break;
                }
                case "-chardev":
                {
                    var parts = Next().Split(',');
                    var kv = parts.Skip(1).Select(p => p.Split('=', 2)).Where(p => p.Length == 2).GroupBy(p => p[0]).ToDictionary(g => g.Key, g => g.Last()[1]);
                    if (parts[0] == "socket" && kv.TryGetValue("id", out var id) && kv.TryGetValue("path", out var path)) chardevs[id] = path;
                    break;
                }
                case "-mon":
                {
                    var kv = Next().Split(',').Select(p => p.Split('=', 2)).Where(p => p.Length == 2).GroupBy(p => p[0]).ToDictionary(g => g.Key, g => g.Last()[1]);
                    if (kv.TryGetValue("chardev", out var id) && (!kv.TryGetValue("mode", out var mode) || mode == "control")) monChardev = id;
                    break;
                }
                case "-d":
                {
                    var v = Next();
                    foreach (var item in v.Split(',', StringSplitOptions.RemoveEmptyEntries))
                    {
                        if (item == "help") { c.Help = LogHelp; continue; }
                        if (item.StartsWith("trace:", StringComparison.Ordinal)) c.TracePatterns.Add(TracePattern(a, v, item[6..]));
                        else if (item == "guest_errors") c.TracePatterns.Add("guest_error"); // the machine trace's category for them
                        else if (!QemuLogItems.Contains(item)) c.TracePatterns.Add(TracePattern(a, v, item));
                    }
                    break;
                }
                case "-trace":
                {
                    var v = Next();
                    foreach (var p in v.Split(','))
                    {
                        var kv = p.Split('=', 2);
                        if (kv.Length == 1) { if (kv[0] == "help") c.Help = LogHelp; else if (kv[0].Length > 0) c.TracePatterns.Add(TracePattern(a, v, kv[0])); }
                        else if (kv[0] == "enable") c.TracePatterns.Add(TracePattern(a, v, kv[1]));
                        else if (kv[0] is "events" or "file") c.Ignored.Add($"-trace {p}");
                        else throw Bad(a, v, $"Invalid parameter '{kv[0]}'");
                    }
                    break;
                }
                default:
                    if (IgnoredWithArg.Contains(a)) { c.Ignored.Add($"{a} {Next()}"); break; }
                    if (IgnoredFlags.Contains(a)) { c.Ignored.Add(a); break; }
                    if (!a.StartsWith('-')) throw new ArgumentException($"{args[i]}: unexpected argument (no disk images: Doorbell boots nothing)");
                    throw new ArgumentException($"{args[i]}: invalid option");
            }
        }
        if (monChardev != null && chardevs.TryGetValue(monChardev, out var qmp)) c.QmpSocket = qmp;
        Machine? boardMachine = c.Help is null ? c.ApplyBoard() : null;
        var max = c.Machine.GicVersion == 2 ? MaxCpusGicV2 : MaxCpusGicV3;
        if (c.Machine.Cpus > max)
            throw Bad("-smp", smp ?? c.Machine.Cpus.ToString(CultureInfo.InvariantCulture),
                $"Invalid SMP CPUs {c.Machine.Cpus}. The max CPUs supported by machine 'virt' with gic-version={c.Machine.GicVersion} is {max}");
        if (c.Help is null) c.AssignSlots(boardMachine);
        return c;
    }

    /// <summary>With a board description: the explicit -m/-smp/-machine properties override its values, it is built
    /// once (every value checked now, with the option named) and <see cref="Machine"/> becomes what it selects.</summary>
    Machine? ApplyBoard()
    {
        if (Board is not { } b) return null;
        if (_ramGiven) b.Ram = Machine.RamSize.ToString(CultureInfo.InvariantCulture);
        if (_cpusGiven) b.Cpus = Machine.Cpus;
        if (_gicGiven) b.Gic = new GicDescription { Version = Machine.GicVersion, Its = _itsGiven ? Machine.Its : b.Gic.Its && Machine.GicVersion == 3, V2m = b.Gic.V2m };
        else if (_itsGiven) b.Gic.Its = Machine.Its;
        if (_iommuGiven)
        {
            b.Iommu = Machine.Iommu == IommuKind.SmmuV3 ? "smmuv3" : "none";
            b.SmmuModel = null;
        }
        try
        {
            var options = b.ToOptions();
            var machine = b.Build(BoardWiring.None);
            Machine = options;
            return machine;
        }
        catch (FormatException e)
        {
            throw Bad(_boardOption!, _boardArg!, BoardError(b, e));
        }
    }

    static string BoardError(BoardDescription b, FormatException e)
    {
        var m = e.Message.ReplaceLineEndings(" ");
        return m.StartsWith("board ", StringComparison.Ordinal) ? m : $"board '{b.Name}': {m}";
    }

    /// <summary>Loads the board description named by <paramref name="source"/> (a file, or a board built into the library).</summary>
    void LoadBoard(string option, string v, string source)
    {
        if (Board is not null) throw Bad(option, v, $"a board is already given ({BoardSource})");
        _boardOption = option;
        _boardArg = v;
        if (source.Length == 0) throw Bad(option, v, "board= needs a board description file (FILE.yaml)");
        if (BuiltInBoards().Any(n => n.Name == source) && !File.Exists(source))
        {
            Board = BoardDescription.LoadBuiltIn(source);
            BoardSource = "built-in " + source;
            return;
        }
        string text;
        try { text = File.ReadAllText(source); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        { throw Bad(option, v, $"Could not open board file '{source}': No such file or directory"); }
        catch (Exception e) when (e is UnauthorizedAccessException)
        { throw Bad(option, v, $"Could not open board file '{source}': Permission denied"); }
        catch (Exception e) when (e is IOException or ArgumentException or NotSupportedException)
        { throw Bad(option, v, $"Could not read board file '{source}': {e.Message.ReplaceLineEndings(" ")}"); }
        try { Board = BoardDescription.Parse(text); }
        catch (FormatException e) { throw Bad(option, v, $"{source}: {e.Message.ReplaceLineEndings(" ")}"); }
        BoardSource = source;
    }

    static bool LooksLikeBoardFile(string s) =>
        s.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || s.EndsWith(".yml", StringComparison.OrdinalIgnoreCase) || s.Contains('/', StringComparison.Ordinal);

    /// <summary>The board descriptions built into the library (name, first line of their leading comment).</summary>
    public static IReadOnlyList<(string Name, string Description)> BuiltInBoards()
    {
        const string prefix = "Doorbell.Boards.", suffix = ".yaml";
        var asm = typeof(BoardDescription).Assembly;
        var list = new List<(string, string)>();
        foreach (var r in asm.GetManifestResourceNames().Where(r => r.StartsWith(prefix, StringComparison.Ordinal) && r.EndsWith(suffix, StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            using var s = asm.GetManifestResourceStream(r)!;
            using var reader = new StreamReader(s);
            var first = reader.ReadLine() ?? "";
            var text = first.StartsWith('#') ? first.TrimStart('#', ' ') : "board description";
            var cut = text.IndexOfAny(['(', ':', '.']);
            if (cut > 0) text = text[..cut].TrimEnd();
            list.Add((r[prefix.Length..^suffix.Length], text));
        }
        return list;
    }

    static string MachineHelpText()
    {
        var sb = new System.Text.StringBuilder(MachineHelp);
        foreach (var (name, description) in BuiltInBoards())
            sb.Append(CultureInfo.InvariantCulture, $"{name,-20} Doorbell board description (built in): {description}\n");
        sb.Append("board=FILE.yaml      a Doorbell board description file (docs/scenarios.md); also -M FILE.yaml.\n");
        sb.Append("                     -m, -smp, gic-version, iommu and its given on the command line override the file.\n");
        return sb.ToString();
    }

    const string MachineHelp = "Supported machines are:\nvirt                 QEMU 7.2 ARM Virtual Machine (alias of virt-7.2)\nvirt-7.2             QEMU 7.2 ARM Virtual Machine\n";
    const string DeviceHelp = "PCI devices:\nname \"edu\", bus PCI, desc \"QEMU's educational PCI device (1234:11e8)\"\nname \"doorbell-mq-dma\", bus PCI, desc \"Doorbell's multi-queue MSI-X DMA device\"\n\nUncategorized devices:\nname \"loader\", desc \"Generic Loader (accepted and ignored: there are no CPUs to run code)\"\n";
    const string LogHelp = "Doorbell accepts QEMU's -d log items (they concern CPUs it does not model and are ignored),\n-d trace:PATTERN and -trace [enable=]PATTERN: model trace events whose category matches PATTERN (globs with *;\n`doorbell trace-categories` lists them), printed on stderr.\n";

    void ParseMachine(string option, string v)
    {
        if (v == "help" || v == "?") { Help = MachineHelpText(); return; }
        var parts = v.Split(',');
        for (var i = 0; i < parts.Length; i++)
        {
            var p = parts[i];
            var kv = p.Split('=', 2);
            if (kv.Length == 1 && i == 0)
            {
                if (kv[0] is "virt" or "virt-7.2" or "qemu-virt") continue;
                if (LooksLikeBoardFile(kv[0]) || BuiltInBoards().Any(b => b.Name == kv[0])) { LoadBoard(option, v, kv[0]); continue; }
                throw Bad(option, v, $"unsupported machine type '{kv[0]}' (virt, a built-in board or a board description FILE.yaml; use -machine help to list)");
            }
            if (kv.Length == 1)
            {
                if (kv[0] == "help") { Help = MachineHelpText(); continue; }
                kv = [kv[0], "on"]; // QEMU: a bare property is a boolean set to on
            }
            switch (kv[0])
            {
                case "type":
                    if (kv[1] is "virt" or "virt-7.2") break;
                    if (LooksLikeBoardFile(kv[1]) || BuiltInBoards().Any(b => b.Name == kv[1])) { LoadBoard(option, v, kv[1]); break; }
                    throw Bad(option, v, $"unsupported machine type '{kv[1]}' (virt, a built-in board or a board description FILE.yaml)");
                case "board": LoadBoard(option, v, kv[1]); break;
                case "gic-version":
                    _gicGiven = true;
                    Machine = Machine with
                    {
                        GicVersion = kv[1] switch
                        {
                            "2" => 2,
                            "3" or "max" or "host" => 3,
                            "4" => throw Bad(option, v, "gic-version=4 is not supported (Doorbell models GICv2 and GICv3)"),
                            _ => throw Bad(option, v, $"Invalid gic-version value '{kv[1]}' (valid values are 3, 2, host, max)"),
                        },
                    };
                    break;
                case "iommu":
                    _iommuGiven = true;
                    Machine = Machine with { Iommu = kv[1] switch { "smmuv3" => IommuKind.SmmuV3, "none" => IommuKind.None, _ => throw Bad(option, v, $"Invalid iommu value '{kv[1]}' (valid values are none, smmuv3)") } };
                    break;
                case "its": Machine = Machine with { Its = Bool(option, v, kv) }; _itsGiven = true; break;
                default:
                    if (MachineBoolProps.Contains(kv[0])) Bool(option, v, kv);
                    else if (!MachineValueProps.Contains(kv[0])) throw Bad(option, v, $"Property 'virt-7.2-machine.{kv[0]}' not found");
                    Ignored.Add($"-machine {p}"); // carries no device state here
                    break;
            }
        }
    }

    static bool Bool(string option, string v, string[] kv) => kv[1] switch
    {
        "on" or "yes" or "true" or "y" => true,
        "off" or "no" or "false" or "n" => false,
        _ => throw Bad(option, v, $"Parameter '{kv[0]}' expects 'on' or 'off'"),
    };

    void ParseDevice(string v)
    {
        if (v is "help" or "?") { Help = DeviceHelp; return; }
        var parts = v.Split(',');
        var driver = parts[0].StartsWith("driver=", StringComparison.Ordinal) ? parts[0][7..] : parts[0];
        if (driver == "loader") { Ignored.Add("-device " + v); return; }
        if (driver is not ("edu" or "doorbell-mq-dma")) throw Bad("-device", v, $"'{driver}' is not a valid device model name (use -device help to list)");
        var queues = 4;
        int? slot = null;
        var fn = 0;
        ulong? mask = null;
        foreach (var p in parts.Skip(1))
        {
            var kv = p.Split('=', 2);
            if (kv[0] == "help") { Help = $"{driver} options:\n  addr=<int32>           - Slot and optional function number, example: 06.0 or 06 (default: -1)\n" + (driver == "edu" ? "  dma_mask=<uint64>      - (default: 268435455)\n" : "  queues=<uint32>        - 1..32 (default: 4)\n"); return; }
            if (kv.Length == 1) kv = [kv[0], "on"];
            ArgumentException NotTaken() => Bad("-device", v, $"Property '{driver}.{kv[0]}' doesn't take value '{kv[1]}'");
            switch (kv[0])
            {
                case "addr":
                {
                    // QEMU's PCI address property: SLOT[.FN], hexadecimal (0x prefix allowed), slot 0..0x1f, function 0..7
                    var sf = kv[1].Split('.');
                    if (sf.Length > 2 || !TryHex(sf[0], out var s) || s > 0x1f) throw NotTaken();
                    ulong f = 0;
                    if (sf.Length == 2 && (!TryHex(sf[1], out f) || f > 7)) throw NotTaken();
                    slot = (int)s;
                    fn = (int)f;
                    break;
                }
                case "dma_mask":
                    if (driver != "edu") goto default;
                    if (!QtestServer.TryParseU64(System.Text.Encoding.Latin1.GetBytes(kv[1]), out var m) || kv[1].StartsWith('-')) throw NotTaken();
                    mask = m;
                    break;
                case "queues":
                    if (driver != "doorbell-mq-dma") goto default;
                    if (!QtestServer.TryParseU64(System.Text.Encoding.Latin1.GetBytes(kv[1]), out var q) || q is < 1 or > 32) throw NotTaken();
                    queues = (int)q;
                    break;
                case "id": case "bus": case "multifunction": case "rombar": case "romfile": case "failover_pair_id":
                    Ignored.Add($"-device {driver},{p}");
                    break;
                default:
                    throw Bad("-device", v, $"Property '{driver}.{kv[0]}' not found");
            }
        }
        Devices.Add(new QemuDevice(driver, slot, fn, mask, queues));
        _specs.Add(v);
    }

    static bool TryHex(string s, out ulong v)
    {
        var t = s.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? s[2..] : s;
        v = 0;
        return t.Length is > 0 and <= 16 && ulong.TryParse(t, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out v);
    }

    /// <summary>Places devices as QEMU does, in command-line order: an explicit address must be free, an implicit one
    /// takes the first free slot; slot 0 is the gpex host bridge.</summary>
    void AssignSlots(Machine? board)
    {
        var used = new Dictionary<(int, int), string> { [(0, 0)] = "gpex-root" };
        if (board?.Pci?.RootBus is { } root)
            for (var devfn = 0; devfn < 256; devfn++)
                if (root[devfn] is { } f) used[(devfn >> 3, devfn & 7)] = f.Name;
        for (var i = 0; i < Devices.Count; i++)
        {
            var d = Devices[i];
            if (d.Slot is { } s)
            {
                if (used.TryGetValue((s, d.Function), out var owner))
                    throw Bad("-device", _specs[i], $"PCI: slot {s} function {d.Function} not available for {d.Driver}, in use by {owner}");
                used[(s, d.Function)] = d.Driver;
                continue;
            }
            var free = Enumerable.Range(1, 31).FirstOrDefault(n => !used.Keys.Any(k => k.Item1 == n), -1);
            if (free < 0) throw Bad("-device", _specs[i], "PCI: no slot/function available for " + d.Driver + ", all in use or reserved");
            used[(free, 0)] = d.Driver;
            Devices[i] = d with { Slot = free };
        }
    }

    /// <summary>-smp [cpus=]N[,sockets=S][,cores=C][,threads=T][,maxcpus=M]…: the CPU count (at least 1).</summary>
    static int ParseSmp(string v)
    {
        int? cpus = null;
        long product = 1;
        var topo = false;
        foreach (var p in v.Split(','))
        {
            var kv = p.Split('=', 2);
            var key = kv.Length == 1 ? "cpus" : kv[0];
            var val = kv.Length == 1 ? kv[0] : kv[1];
            if (key is not ("cpus" or "sockets" or "cores" or "threads" or "dies" or "clusters" or "books" or "drawers" or "maxcpus"))
                throw Bad("-smp", v, $"Invalid parameter '{key}'");
            if (!int.TryParse(val, NumberStyles.None, CultureInfo.InvariantCulture, out var n))
                throw Bad("-smp", v, $"Parameter '{key}' expects a number");
            if (n == 0) throw Bad("-smp", v, $"CPU topology parameters must be greater than zero ({key}=0)");
            if (key == "cpus") cpus = n;
            else if (key != "maxcpus") { topo = true; product = Math.Min(product * n, int.MaxValue); }
        }
        return cpus ?? (topo ? (int)product : 1);
    }

    /// <summary>QEMU's -m: [size=]N[.frac][B|K|M|G|T|P|E] (MiB when no suffix), or 0x… bytes-with-suffix; more than 0, at most 255 GiB, rounded up to 8 KiB as QEMU does.</summary>
    public static ulong ParseRam(string v)
    {
        ArgumentNullException.ThrowIfNull(v);
        var s = v.Split(',')[0];
        if (s.StartsWith("size=", StringComparison.Ordinal)) s = s[5..];
        if (!TryParseSize(s, out var size, out var reason)) throw Bad("-m", v, reason);
        if (size == 0) throw Bad("-m", v, "RAM size must be greater than 0");
        if (size > MaxRamSize) throw Bad("-m", v, "cannot model more than 255GB RAM (mach-virt)");
        return (size + 8191) & ~8191UL;
    }

    /// <summary>Kept for callers of the old name: <see cref="ParseRam"/>.</summary>
    public static ulong ParseMemSize(string v) => ParseRam(v);

    static bool TryParseSize(string s, out ulong size, out string reason)
    {
        size = 0;
        reason = "Parameter 'size' expects a non-negative number below 2^64, optionally followed by a suffix B, K, M, G, T, P or E";
        if (s.Length == 0) { reason = "missing size"; return false; }
        ulong unit = 1UL << 20;
        var last = char.ToUpperInvariant(s[^1]);
        var suffix = "BKMGTPE".IndexOf(last, StringComparison.Ordinal);
        if (suffix >= 0)
        {
            unit = 1UL << (10 * suffix);
            s = s[..^1];
        }
        if (s.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            if (!TryHex(s, out var h)) return false;
            if (h != 0 && unit > ulong.MaxValue / h) { reason = "size too large"; return false; }
            size = h * unit;
            return true;
        }
        var dot = s.IndexOf('.', StringComparison.Ordinal);
        var whole = dot < 0 ? s : s[..dot];
        var frac = dot < 0 ? "" : s[(dot + 1)..];
        if (whole.Length == 0 || !whole.All(char.IsAsciiDigit) || !frac.All(char.IsAsciiDigit) || (dot >= 0 && frac.Length == 0)) return false;
        if (whole.Length > 20 || !ulong.TryParse(whole, NumberStyles.None, CultureInfo.InvariantCulture, out var w)) { reason = "size too large"; return false; }
        var f = frac.Length == 0 ? 0m : decimal.Parse("0." + frac[..Math.Min(frac.Length, 20)], CultureInfo.InvariantCulture);
        if (w != 0 && unit > ulong.MaxValue / w) { reason = "size too large"; return false; }
        size = w * unit + (ulong)(f * unit);
        return true;
    }

    /// <summary>Builds the machine this command line describes.</summary>
    public Machine Build(BoardWiring? wiring = null)
    {
        Machine m;
        if (Board is { } b)
        {
            try { m = b.Build(wiring); }
            catch (FormatException e) { throw Bad(_boardOption!, _boardArg!, BoardError(b, e)); }
        }
        else m = QemuVirtBoard.Create(Machine, wiring);
        foreach (var d in Devices)
        {
            if (d.Driver == "doorbell-mq-dma") m.AddPci(new MultiQueueDmaDevice(d.Queues), d.Slot, d.Function);
            else m.AddPci(d.DmaMask is { } mask ? new EduDevice(m.Clock, mask) : new EduDevice(m.Clock), d.Slot, d.Function);
        }
        return m;
    }
}
