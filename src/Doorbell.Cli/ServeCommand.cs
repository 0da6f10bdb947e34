using System.CommandLine;
using System.Runtime.InteropServices;
using Doorbell.Host.Vfio;
using Doorbell.Server;

namespace Doorbell.Cli;

/// <summary>`doorbell serve --socket PATH [--board FILE.yaml|NAME] [--allow-unsafe-interrupts] [--isolation-era 1|2|3] [--strict] [--trace PATTERNS]`.</summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var socket = new Option<string>("--socket") { Description = "Unix socket to serve VFIO on (libdoorbell-vfio connects to it).", Required = true };
        var board = new Option<string?>("--board") { Description = "Board description file (YAML) or a built-in board (juno-like, thunderx-like, its-and-gicv2m); default: qemu-virt with mq-dma at 00:01.0, edu at 00:02.0, the platform DMA engine." };
        var unsafeIrq = new Option<bool>("--allow-unsafe-interrupts") { Description = "vfio_iommu_type1.allow_unsafe_interrupts=1: attach groups whose MSIs are not isolated (GICv2m)." };
        var era = new Option<string?>("--isolation-era")
        {
            Description = "Which kernel's interrupt-isolation check VFIO type1 applies at VFIO_SET_IOMMU: 1|2014 (the IOMMU driver's " +
                "IOMMU_CAP_INTR_REMAP, which arm-smmu claimed), 2|4.11 (any isolating MSI domain in the system), 3|today " +
                "(every device of the group under an isolating MSI domain; the default).",
        };
        var strict = new Option<bool>("--strict") { Description = "Report what real hardware silently tolerates, each finding with its rule." };
        var trace = new Option<string?>("--trace") { Description = "Trace categories to print as they happen (e.g. 'pci_msi,smmu_translate,its_translate,gicr,vfio_irq'), stamped pid@seconds.micros like QEMU's -trace log lines." };
        var cmd = new Command("serve", "Boot the host kernel on a board and serve VFIO to real processes (see scripts/doorbell-exec).");
        cmd.Options.Add(socket);
        cmd.Options.Add(board);
        cmd.Options.Add(unsafeIrq);
        cmd.Options.Add(era);
        cmd.Options.Add(strict);
        cmd.Options.Add(trace);
        cmd.SetAction(parse => Run(parse.GetValue(socket)!, parse.GetValue(board), parse.GetValue(unsafeIrq), parse.GetValue(era), parse.GetValue(strict), parse.GetValue(trace)));
        return cmd;
    }

    static int Run(string socket, string? board, bool allowUnsafe, string? eraText, bool strict, string? trace)
    {
        // A bad argument is one line naming the option and exit 1, as for every other command.
        var era = IsolationPolicyEra.Today;
        if (eraText is not null)
        {
            if (IsolationPolicyEras.Parse(eraText) is not { } e)
                return CliErrors.Fail($"serve: --isolation-era '{eraText}' is unknown ({IsolationPolicyEras.Accepted})");
            era = e;
        }
        // A built-in board's name is resolved by the server; a file is checked here, so a mistake is one line.
        if (board is not null && !ServeBoard.BuiltInBoards.Contains(board) && !BoardOption.TryLoad(board, out _, out var berr)) return CliErrors.Fail("serve: " + berr);
        if (socket.Length == 0) return CliErrors.Fail("serve: --socket: empty path");
        var socketDir = Path.GetDirectoryName(Path.GetFullPath(socket));
        if (socketDir is not null && !Directory.Exists(socketDir)) return CliErrors.Fail($"serve: --socket {socket}: directory {socketDir} does not exist");
        DoorbellServer server;
        try
        {
            server = new DoorbellServer(new ServeOptions { SocketPath = socket, BoardFile = board, AllowUnsafeInterrupts = allowUnsafe, IsolationEra = era, Strict = strict, Trace = trace });
        }
        catch (Exception e) when (e is FormatException or ArgumentException)
        {
            return CliErrors.Fail($"serve: {(board is null ? "" : $"--board {board}: ")}{e.Message}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Net.Sockets.SocketException)
        {
            return CliErrors.Fail($"serve: --socket {socket}: {e.Message}");
        }
        using var stop = new CancellationTokenSource();
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
        Console.Error.WriteLine($"doorbell serve: listening on {socket} (sysfs at {server.SysfsRoot}; isolation era {IsolationPolicyEras.Name(era)})");
        server.Wait(stop.Token);
        server.Dispose();
        return 0;
    }
}
