using System.Net.Sockets;
using System.Text;
using Doorbell.Platform;

namespace Doorbell.Qtest;

/// <summary>
/// Runs a qtest session the way QEMU does: connects to the unix socket the harness listens on, serves the line
/// protocol until the harness closes it. With a QMP socket it also answers a minimal QMP monitor (greeting,
/// qmp_capabilities, quit; other commands get CommandNotFound) so libqtest-style harnesses can drive it.
/// </summary>
public static class QtestRunner
{
    public static int Run(QemuCommandLine cmd, TextWriter stderr, BoardWiring? wiring = null)
    {
        ArgumentNullException.ThrowIfNull(cmd);
        ArgumentNullException.ThrowIfNull(stderr);
        if (cmd.QtestSocket == null)
        {
            stderr.WriteLine("doorbell: -qtest unix:PATH is required");
            return 1;
        }
        var machine = cmd.Build(wiring);
        if (cmd.TracePatterns.Count > 0) EnableTrace(machine, cmd.TracePatterns, stderr);
        // unbuffered file: each batch of log lines is one write, so a harness that kills us still has the log
        Stream? log;
        try
        {
            log = cmd.QtestLog switch
            {
                null => Console.OpenStandardError(),
                "none" => null,
                var path => new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0),
            };
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            stderr.WriteLine($"doorbell: -qtest-log {cmd.QtestLog}: {e.Message}");
            return 1;
        }
        try
        {
            using var quit = new CancellationTokenSource();
            Thread? qmpThread = null;
            if (cmd.QmpSocket is { } qmpPath)
            {
                qmpThread = new Thread(() => ServeQmp(qmpPath, quit)) { IsBackground = true };
                qmpThread.Start();
            }
            using var sock = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            sock.Connect(new UnixDomainSocketEndPoint(cmd.QtestSocket));
            // QMP `quit` ends the session like QEMU exits: unblock the qtest reader
            using var onQuit = quit.Token.Register(() =>
            {
                try { sock.Shutdown(SocketShutdown.Both); }
                catch (SocketException) { }
                catch (ObjectDisposedException) { }
            });
            var server = log == null ? new QtestServer(machine) : QtestServer.LoggingTo(machine, log);
            server.Opened();
            while (!quit.IsCancellationRequested)
            {
                var space = server.ReceiveBuffer();
                int n;
                try { n = sock.Receive(space.Array!, space.Offset, space.Count, SocketFlags.None); } catch (SocketException) { break; }
                if (n <= 0) break;
                lock (machine) server.Received(n);
                var answers = server.Output;
                try
                {
                    while (answers.Length > 0) answers = answers[sock.Send(answers)..];
                }
                catch (SocketException) { break; }
                server.ClearOutput();
            }
            server.Closed();
            return 0;
        }
        catch (SocketException e)
        {
            stderr.WriteLine($"doorbell: -qtest unix:{cmd.QtestSocket}: Failed to connect to '{cmd.QtestSocket}': {e.Message}");
            return 1;
        }
        catch (IOException e)
        {
            stderr.WriteLine($"doorbell: -qtest-log {cmd.QtestLog}: {e.Message}");
            return 1;
        }
        finally
        {
            log?.Dispose();
        }
    }

    /// <summary>
    /// -d trace:PATTERN / -trace PATTERN: a thin adapter onto the machine's trace (QEMU-style category globs,
    /// checked when the command line was parsed); events are printed on stderr as they happen, not kept.
    /// </summary>
    static void EnableTrace(Machine machine, IReadOnlyList<string> patterns, TextWriter stderr)
    {
        var mask = Doorbell.Tracing.TraceCategories.ParseMask(string.Join(',', patterns), out var error)
            ?? throw new ArgumentException($"-trace {string.Join(',', patterns)}: {error}");
        machine.Trace.Record = false;
        machine.Trace.Sink = e => stderr.WriteLine(e.ToString());
        machine.Trace.Mask = mask;
    }

    static void ServeQmp(string path, CancellationTokenSource quit)
    {
        try
        {
            using var sock = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            sock.Connect(new UnixDomainSocketEndPoint(path));
            using var stream = new NetworkStream(sock);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            using var writer = new StreamWriter(stream, new UTF8Encoding(false)) { AutoFlush = true, NewLine = "\r\n" };
            writer.WriteLine("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"Doorbell\"}, \"capabilities\": [\"oob\"]}}");
            string? line;
            while ((line = reader.ReadLine()) != null)
            {
                if (line.Contains("\"qmp_capabilities\"", StringComparison.Ordinal)) writer.WriteLine("{\"return\": {}}");
                else if (line.Contains("\"quit\"", StringComparison.Ordinal))
                {
                    writer.WriteLine("{\"return\": {}}");
                    writer.WriteLine("{\"timestamp\": {\"seconds\": 0, \"microseconds\": 0}, \"event\": \"SHUTDOWN\", \"data\": {\"guest\": false, \"reason\": \"host-qmp-quit\"}}");
                    quit.Cancel();
                    break;
                }
                else if (line.Trim().Length > 0) writer.WriteLine("{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command is not supported by Doorbell\"}}");
            }
        }
        catch (IOException) { }
        catch (SocketException) { }
    }
}
