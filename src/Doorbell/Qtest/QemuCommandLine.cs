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
/// adds Doorbell's multi-queue MSI-X DMA device.
/// </summary>
public sealed class QemuCommandLine
{
    public QemuVirtOptions Machine { get; private set; } = new() { GicVersion = 2, Iommu = IommuKind.None, RamSize = 128UL << 20 };
    public List<QemuDevice> Devices { get; } = [];
    public string? QtestSocket { get; private set; }
    /// <summary>null: QEMU's default (log to stderr); "none": no log; else a file path.</summary>
    public string? QtestLog { get; private set; }
    /// <summary>A QMP monitor socket (-qmp unix:PATH, or -chardev socket,path=…,id=X with -mon chardev=X).</summary>
    public string? QmpSocket { get; private set; }
    public List<string> Ignored { get; } = [];

    static readonly HashSet<string> IgnoredWithArg = ["-cpu", "-accel", "-icount", "-display", "-monitor", "-serial", "-name", "-vga", "-boot", "-rtc", "-global", "-L", "-bios", "-kernel", "-append", "-initrd", "-drive", "-netdev", "-object", "-parallel", "-audiodev"];
    static readonly HashSet<string> IgnoredFlags = ["-nodefaults", "-nographic", "-S", "-no-shutdown", "-no-reboot", "-enable-kvm", "-daemonize"];

    /// <summary>Parses QEMU-style arguments; throws ArgumentException with QEMU-like messages on what it cannot honour.</summary>
    public static QemuCommandLine Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var c = new QemuCommandLine();
        var chardevs = new Dictionary<string, string>();
        string? monChardev = null;
        for (var i = 0; i < args.Count; i++)
        {
            var a = args[i].StartsWith("--", StringComparison.Ordinal) ? args[i][1..] : args[i];
            string Next() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"option '{a}' needs an argument");
            switch (a)
            {
                case "-machine": case "-M": c.ParseMachine(Next()); break;
                case "-m": c.Machine = c.Machine with { RamSize = ParseMemSize(Next()) }; break;
                case "-smp":
                {
                    var v = Next();
                    var cpus = v.Split(',').Select(p => p.StartsWith("cpus=", StringComparison.Ordinal) ? p[5..] : p).FirstOrDefault(p => !p.Contains('=', StringComparison.Ordinal)) ?? "1";
                    c.Machine = c.Machine with { Cpus = int.Parse(cpus, CultureInfo.InvariantCulture) };
                    break;
                }
                case "-device": c.ParseDevice(Next()); break;
                case "-qtest":
                {
                    var v = Next();
                    if (!v.StartsWith("unix:", StringComparison.Ordinal)) throw new ArgumentException($"-qtest {v}: only unix:PATH is supported");
                    c.QtestSocket = v[5..].Split(',')[0];
                    break;
                }
                case "-qtest-log": c.QtestLog = Next(); break;
                case "-qmp":
                {
                    var v = Next();
                    if (v.StartsWith("unix:", StringComparison.Ordinal)) c.QmpSocket = v[5..].Split(',')[0];
                    break;
                }
                case "-chardev":
                {
                    var parts = Next().Split(',');
                    var kv = parts.Skip(1).Select(p => p.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1]);
                    if (parts[0] == "socket" && kv.TryGetValue("id", out var id) && kv.TryGetValue("path", out var path)) chardevs[id] = path;
                    break;
                }
                case "-mon":
                {
                    var kv = Next().Split(',').Select(p => p.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1]);
                    if (kv.TryGetValue("chardev", out var id) && (!kv.TryGetValue("mode", out var mode) || mode == "control")) monChardev = id;
                    break;
                }
                default:
                    if (IgnoredWithArg.Contains(a)) { c.Ignored.Add($"{a} {Next()}"); break; }
                    if (IgnoredFlags.Contains(a)) { c.Ignored.Add(a); break; }
                    throw new ArgumentException($"unsupported option '{args[i]}'");
            }
        }
        if (monChardev != null && chardevs.TryGetValue(monChardev, out var qmp)) c.QmpSocket = qmp;
        return c;
    }

    void ParseMachine(string v)
    {
        var parts = v.Split(',');
        foreach (var p in parts)
        {
            var kv = p.Split('=', 2);
            if (kv.Length == 1)
            {
                if (kv[0] is not ("virt" or "virt-7.2" or "qemu-virt")) throw new ArgumentException($"unsupported machine type '{kv[0]}' (only virt)");
                continue;
            }
            switch (kv[0])
            {
                case "type": if (kv[1] is not ("virt" or "virt-7.2")) throw new ArgumentException($"unsupported machine type '{kv[1]}'"); break;
                case "gic-version":
                    Machine = Machine with { GicVersion = kv[1] switch { "2" => 2, "3" or "max" or "host" => 3, _ => throw new ArgumentException($"gic-version={kv[1]} not supported") } };
                    break;
                case "iommu":
                    Machine = Machine with { Iommu = kv[1] switch { "smmuv3" => IommuKind.SmmuV3, "none" => IommuKind.None, _ => throw new ArgumentException($"iommu={kv[1]} not supported") } };
                    break;
                case "its": Machine = Machine with { Its = kv[1] is "on" or "yes" or "true" }; break;
                default: Ignored.Add($"-machine {p}"); break; // accel=, highmem=, virtualization=… carry no device state here
            }
        }
    }

    void ParseDevice(string v)
    {
        var parts = v.Split(',');
        var driver = parts[0].StartsWith("driver=", StringComparison.Ordinal) ? parts[0][7..] : parts[0];
        if (driver == "loader") { Ignored.Add("-device " + v); return; }
        if (driver is not ("edu" or "doorbell-mq-dma")) throw new ArgumentException($"'{driver}' is not a valid device model name");
        var queues = 4;
        int? slot = null;
        var fn = 0;
        ulong? mask = null;
        foreach (var p in parts.Skip(1))
        {
            var kv = p.Split('=', 2);
            if (kv.Length != 2) continue;
            switch (kv[0])
            {
                case "addr":
                {
                    // QEMU PCI address: SLOT[.FN], hexadecimal
                    var sf = kv[1].Split('.');
                    slot = (int)QtestServer.U64(sf[0].StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? sf[0] : "0x" + sf[0]);
                    if (sf.Length > 1) fn = (int)QtestServer.U64("0x" + sf[1]);
                    if (slot is < 0 or > 31 || fn is < 0 or > 7) throw new ArgumentException($"bad PCI address '{kv[1]}'");
                    break;
                }
                case "dma_mask": mask = QtestServer.U64(kv[1]); break;
                case "queues": queues = (int)Math.Clamp(QtestServer.U64(kv[1]), 1UL, 32UL); break;
            }
        }
        Devices.Add(new QemuDevice(driver, slot, fn, mask, queues));
    }

    /// <summary>QEMU size syntax: a number with optional suffix K/M/G/T (default MiB), or size=….</summary>
    public static ulong ParseMemSize(string v)
    {
        ArgumentNullException.ThrowIfNull(v);
        var s = v.Split(',')[0];
        if (s.StartsWith("size=", StringComparison.Ordinal)) s = s[5..];
        var unit = 1UL << 20;
        var last = char.ToUpperInvariant(s[^1]);
        if (last is 'B') { unit = 1; s = s[..^1]; last = char.ToUpperInvariant(s[^1]); }
        if (last is 'K' or 'M' or 'G' or 'T')
        {
            unit = last switch { 'K' => 1UL << 10, 'M' => 1UL << 20, 'G' => 1UL << 30, _ => 1UL << 40 };
            s = s[..^1];
        }
        return (ulong)(double.Parse(s, CultureInfo.InvariantCulture) * unit);
    }

    /// <summary>Builds the machine this command line describes.</summary>
    public Machine Build(BoardWiring? wiring = null)
    {
        var m = QemuVirtBoard.Create(Machine, wiring);
        foreach (var d in Devices)
        {
            if (d.Driver == "doorbell-mq-dma") m.AddPci(new MultiQueueDmaDevice(d.Queues), d.Slot, d.Function);
            else m.AddPci(d.DmaMask is { } mask ? new EduDevice(m.Clock, mask) : new EduDevice(m.Clock), d.Slot, d.Function);
        }
        return m;
    }
}
