using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Doorbell.Platform;
using Doorbell.Qtest;

namespace Doorbell.Tests.Qtest;

/// <summary>A [Fact] that reports itself skipped (visibly) when Debian's qemu-system-aarch64 is not installed.</summary>
public sealed class QemuFactAttribute : FactAttribute
{
    public QemuFactAttribute()
    {
        if (QemuPeer.Binary == null) Skip = "qemu-system-aarch64 not found (scripts/setup-test-deps.sh installs Debian's qemu-system-arm): QEMU differential test skipped";
    }
}

/// <summary>Something that answers qtest commands: QEMU over a unix socket, or Doorbell's server in-process.</summary>
public interface IQtestPeer : IDisposable
{
    string Name { get; }
    string Ask(string command);
}

/// <summary>
/// Debian's QEMU 7.2 as a qtest peer. It has no qtest accelerator, so it runs TCG with icount (shift=0,
/// sleep=off: virtual time warps while the vCPU idles) and a vCPU parked in `wfi; b .-4` loaded by
/// -device loader at the top page of RAM (the DTB sits at the bottom). The test is the qtest harness: it
/// listens on a unix socket QEMU connects to.
/// </summary>
public sealed class QemuPeer : IQtestPeer
{
    /// <summary>Doorbell's launcher script run as if it were QEMU (same arguments), for end-to-end tests of the front end.</summary>
    public static QemuPeer DoorbellLauncher(string machine, params string[] extra) => new(machine, extra, launcher: true);

    public const ulong ParkAddress = 0x5FFF_F000; // last page of 512 MiB RAM: tests keep clear of it

    public static string? Binary { get; } = FindBinary();

    static string? FindBinary()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
        {
            var p = Path.Combine(dir, "qemu-system-aarch64");
            if (dir.Length > 0 && File.Exists(p)) return p;
        }
        return null;
    }

    static string LauncherPath => Path.GetFullPath(Path.Combine(RepoRoot(), "scripts", "qemu-system-aarch64-doorbell"));

    static string RepoRoot([System.Runtime.CompilerServices.CallerFilePath] string here = "") =>
        Path.Combine(Path.GetDirectoryName(here)!, "..", "..", "..");

    readonly Process _process;
    readonly Socket _listener;
    readonly Socket _conn;
    readonly DirectoryInfo _dir;
    readonly StringBuilder _in = new();
    readonly byte[] _buf = new byte[65536];

    public string Name { get; }

    public QemuPeer(string machine, params string[] extra) : this(machine, extra, launcher: false) { }

    /// <summary>QEMU with extra environment (e.g. LD_PRELOAD of libdoorbell-vfio): its stderr is kept in <see cref="Stderr"/>.</summary>
    public QemuPeer(string machine, string[] extra, IReadOnlyDictionary<string, string> environment) : this(machine, extra, launcher: false, environment) { }

    readonly StringBuilder _stderr = new();

    /// <summary>What QEMU wrote to stderr so far (its -d log, trace lines and warnings).</summary>
    public string Stderr { get { lock (_stderr) return _stderr.ToString(); } }

    /// <summary>QEMU's process id.</summary>
    public int Pid => _process.Id;

    /// <summary>From process start until QEMU connected to the qtest socket (during its accelerator set-up: it answers only
    /// once the machine, devices included, is realized).</summary>
    public TimeSpan StartToConnected { get; }

    QemuPeer(string machine, string[] extra, bool launcher, IReadOnlyDictionary<string, string>? environment = null)
    {
        Name = launcher ? "doorbell-launcher" : "qemu";
        _dir = Directory.CreateTempSubdirectory("db-qemu");
        var sock = Path.Combine(_dir.FullName, "qtest.sock");
        var blob = Path.Combine(_dir.FullName, "park.bin");
        // aarch64: wfi (0xd503207f); b .-4 (0x17ffffff)
        File.WriteAllBytes(blob, [0x7f, 0x20, 0x03, 0xd5, 0xff, 0xff, 0xff, 0x17]);
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(sock));
        _listener.Listen(1);
        var psi = new ProcessStartInfo(launcher ? LauncherPath : Binary!) { RedirectStandardError = true, RedirectStandardOutput = true };
        if (launcher) psi.Environment["DOORBELL_CLI"] = Path.Combine(AppContext.BaseDirectory, "Doorbell.Cli.dll");
        if (environment is not null) foreach (var (k, v) in environment) psi.Environment[k] = v;
        foreach (var a in new[] { "-machine", machine, "-accel", "tcg", "-icount", "shift=0,sleep=off", "-cpu", "cortex-a57",
                     "-m", "512M", "-display", "none", "-nodefaults", "-serial", "none", "-monitor", "none",
                     "-device", $"loader,file={blob},addr=0x{ParkAddress:x},cpu-num=0" }.Concat(extra).Concat(["-qtest", "unix:" + sock, "-qtest-log", "none"]))
            psi.ArgumentList.Add(a);
        var started = Stopwatch.StartNew();
        _process = Process.Start(psi)!;
        _process.ErrorDataReceived += (_, e) => { if (e.Data is { } line) lock (_stderr) _stderr.AppendLine(line); };
        _process.OutputDataReceived += (_, _) => { };
        _process.BeginErrorReadLine();
        _process.BeginOutputReadLine();
        var accept = _listener.AcceptAsync();
        while (!accept.Wait(TimeSpan.FromMilliseconds(50)))
        {
            if (_process.HasExited) { _process.WaitForExit(); Dispose(); throw new InvalidOperationException($"{Name} exited before connecting: {Stderr}"); }
            if (started.Elapsed > TimeSpan.FromSeconds(90)) { Dispose(); throw new TimeoutException($"{Name} did not connect: {Stderr}"); }
        }
        StartToConnected = started.Elapsed;
        _conn = accept.Result;
        _conn.ReceiveTimeout = 20_000;
    }

    public string Ask(string command)
    {
        _conn.Send(Encoding.ASCII.GetBytes(command + "\n"));
        while (true)
        {
            var s = _in.ToString();
            var nl = s.IndexOf('\n', StringComparison.Ordinal);
            if (nl >= 0)
            {
                _in.Remove(0, nl + 1);
                return s[..nl];
            }
            var n = _conn.Receive(_buf);
            if (n <= 0) throw new IOException("QEMU closed the qtest socket");
            _in.Append(Encoding.ASCII.GetString(_buf, 0, n));
        }
    }

    public void Dispose()
    {
        try { _conn?.Dispose(); } catch (ObjectDisposedException) { }
        _listener.Dispose();
        try { if (!_process.HasExited) _process.Kill(); _process.WaitForExit(10_000); } catch (InvalidOperationException) { }
        _process.Dispose();
        try { _dir.Delete(true); } catch (IOException) { }
    }
}

/// <summary>Doorbell as a qtest peer, built from the same QEMU-style arguments.</summary>
public sealed class DoorbellPeer(string machine, params string[] extra) : IQtestPeer
{
    readonly QtestServer _server = new(QemuCommandLine.Parse(["-machine", machine, "-m", "512M", .. extra, "-qtest", "unix:/unused"]).Build());

    public string Name => "doorbell";
    public Machine Machine => _server.Machine;

    public string Ask(string command) => _server.Handle(command).TrimEnd('\n');

    public void Dispose() { }
}
