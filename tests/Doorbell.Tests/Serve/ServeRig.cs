using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using Doorbell.Server;

namespace Doorbell.Tests.Serve;

/// <summary>A [Fact] that reports itself skipped (visibly) when gcc or &lt;linux/vfio.h&gt; is missing.</summary>
public sealed class GccFactAttribute : FactAttribute
{
    public GccFactAttribute()
    {
        if (ServeRig.NativeBuildError is { } why) Skip = why;
    }
}

/// <summary>Builds the native library and C examples once, runs programs under it, and talks raw protocol to a server.</summary>
public static class ServeRig
{
    static readonly Lazy<(string? Out, string? Error)> Native = new(Build);

    public static string RepoRoot { get; } = FindRoot();

    static string FindRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "Doorbell.slnx"))) d = d.Parent;
        return d?.FullName ?? throw new InvalidOperationException("repository root not found");
    }

    public static string? NativeBuildError => Native.Value.Error;
    public static string NativeOut => Native.Value.Out ?? throw new InvalidOperationException(Native.Value.Error);
    public static string Library => Path.Combine(NativeOut, "libdoorbell-vfio.so");
    public static string Driver => Path.Combine(NativeOut, "vfio-driver");

    static (string?, string?) Build()
    {
        var r = Run(Path.Combine(RepoRoot, "scripts", "build-native.sh"), [], null, 120_000);
        if (r.Exit == 3) return (null, "gcc/linux-libc-dev not found (scripts/setup-test-deps.sh installs them): C client tests skipped: " + r.Stderr.Trim());
        if (r.Exit != 0) return (null, "scripts/build-native.sh failed: " + r.Stderr);
        return (r.Stdout.Trim(), null);
    }

    public sealed record Result(int Exit, string Stdout, string Stderr);

    public static Result Run(string file, IEnumerable<string> args, IDictionary<string, string>? env, int timeoutMs = 60_000)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var so = p.StandardOutput.ReadToEndAsync();
        var se = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutMs)) { p.Kill(true); throw new TimeoutException($"{file} did not finish in {timeoutMs} ms"); }
        p.WaitForExit();
        return new Result(p.ExitCode, so.Result, se.Result);
    }

    /// <summary>Starts a program under the library against <paramref name="socket"/> (not waiting for it).</summary>
    public static Process Start(string socket, params string[] args)
    {
        var psi = new ProcessStartInfo(Driver) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOORBELL_SOCKET"] = socket;
        psi.Environment["LD_PRELOAD"] = Library;
        return Process.Start(psi)!;
    }

    /// <summary>Starts `doorbell serve` (the CLI) on <paramref name="socket"/> and waits until it listens; Dispose stops it.</summary>
    public static ServerProcess StartServerProcess(string socket, string? board = null, params string[] options)
    {
        var dll = Path.Combine(RepoRoot, "src", "Doorbell.Cli", "bin", "Release", "net10.0", "Doorbell.Cli.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in (string[])["exec", dll, "serve", "--socket", socket, .. board is null ? [] : new[] { "--board", board }, .. options]) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        var log = new System.Text.StringBuilder();
        p.ErrorDataReceived += (_, e) => { lock (log) log.AppendLine(e.Data); };
        p.BeginErrorReadLine();
        var sw = Stopwatch.StartNew();
        while (!File.Exists(socket) && !p.HasExited && sw.Elapsed < TimeSpan.FromSeconds(60)) Thread.Sleep(20);
        if (!File.Exists(socket)) { if (!p.HasExited) p.Kill(); throw new InvalidOperationException("doorbell serve did not start: " + log); }
        return new ServerProcess(p, log);
    }

    public sealed class ServerProcess(Process process, System.Text.StringBuilder log) : IDisposable
    {
        public bool HasExited => process.HasExited;
        public string Log { get { lock (log) return log.ToString(); } }

        public void Dispose()
        {
            if (!process.HasExited) { process.Kill(); process.WaitForExit(10_000); }
            process.Dispose();
        }
    }

    public static Dictionary<string, string> Env(string socket) => new() { ["DOORBELL_SOCKET"] = socket, ["LD_PRELOAD"] = Library };

    public static string TempSocket()
    {
        var dir = Directory.CreateTempSubdirectory("doorbell-test.");
        return Path.Combine(dir.FullName, "vfio.sock");
    }
}

/// <summary>A raw protocol client (what the C library does, spelled out), for malformed-input tests.</summary>
public sealed class RawClient : IDisposable
{
    readonly int _fd;
    readonly byte[] _rx = new byte[ServeProtocol.ReplyHeader + ServeProtocol.MaxPacket];

    public RawClient(string socket)
    {
        _fd = ServerNative.Connect(socket);
        if (_fd < 0) throw new IOException($"connect failed: errno {-_fd}");
    }

    public int SendRaw(ReadOnlySpan<byte> packet, ReadOnlySpan<int> fds = default) => ServerNative.SendWithFds(_fd, packet, fds);

    /// <summary>Receives one reply: (ret, payload), or null when the server closed the connection.</summary>
    public (long Ret, byte[] Payload)? Receive()
    {
        Span<int> fds = stackalloc int[4];
        var n = ServerNative.Receive(_fd, _rx, fds, out _, out _);
        if (n <= 0) return null;
        var len = BinaryPrimitives.ReadUInt32LittleEndian(_rx.AsSpan(8));
        return (BinaryPrimitives.ReadInt64LittleEndian(_rx), _rx.AsSpan(ServeProtocol.ReplyHeader, (int)Math.Min(len, (uint)(n - 16))).ToArray());
    }

    public (long Ret, byte[] Payload)? Call(ServeOp op, int fd = -1, ulong a0 = 0, ulong a1 = 0, ulong a2 = 0, ulong a3 = 0, byte[]? payload = null, int[]? fds = null)
    {
        var buf = new byte[ServeProtocol.RequestHeader + (payload?.Length ?? 0)];
        var n = ServeProtocol.Encode(buf, op, fd, a0, a1, a2, a3, payload);
        if (SendRaw(buf.AsSpan(0, n), fds) < 0) return null;
        return Receive();
    }

    public long Hello() => Call(ServeOp.Hello, a0: ulong.MaxValue, a1: 0, a2: ServeProtocol.Version)!.Value.Ret;

    public string Stats() => Encoding.ASCII.GetString(Call(ServeOp.Stats)!.Value.Payload);

    public void Dispose() => ServerNative.close(_fd);
}

/// <summary>A [Fact] that needs both gcc (the preload library) and Debian's qemu-system-aarch64; skipped visibly otherwise.</summary>
public sealed class QemuGccFactAttribute : FactAttribute
{
    public QemuGccFactAttribute()
    {
        if (ServeRig.NativeBuildError is { } why) Skip = why;
        else if (Doorbell.Tests.Qtest.QemuPeer.Binary == null) Skip = "qemu-system-aarch64 not found (scripts/setup-test-deps.sh installs Debian's qemu-system-arm): real-QEMU VFIO test skipped";
    }
}
