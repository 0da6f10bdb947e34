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
            stderr.WriteLine("doorbell qtest: -qtest unix:PATH is required");
            return 1;
        }
        var machine = cmd.Build(wiring);
        TextWriter? log = cmd.QtestLog switch
        {
            null => stderr,
            "none" => null,
            var path => new StreamWriter(path, append: false) { AutoFlush = true },
        };
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
            var server = new QtestServer(machine, log);
            server.Opened();
            var buf = new byte[65536];
            var decoder = Encoding.Latin1;
            while (!quit.IsCancellationRequested)
            {
                int n;
                try { n = sock.Receive(buf); } catch (SocketException) { break; }
                if (n <= 0) break;
                string answer;
                lock (machine) answer = server.Feed(decoder.GetString(buf, 0, n));
                if (answer.Length > 0) sock.Send(decoder.GetBytes(answer));
            }
            log?.Write("[I +0.000000] CLOSED\n");
            return 0;
        }
        catch (SocketException e)
        {
            stderr.WriteLine($"doorbell qtest: Failed to connect to '{cmd.QtestSocket}': {e.Message}");
            return 1;
        }
        finally
        {
            if (log != null && !ReferenceEquals(log, stderr)) log.Dispose();
        }
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
