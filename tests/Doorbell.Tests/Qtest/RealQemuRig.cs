using System.Diagnostics;
using System.Globalization;
using System.Text;
using Doorbell.Server;
using Doorbell.Tests.Serve;

namespace Doorbell.Tests.Qtest;

/// <summary>
/// Debian's unmodified QEMU 7.2 as the VMM of Doorbell's devices: `doorbell serve` (in this process, so a test
/// can read its log and counters) on a private socket, and qemu-system-aarch64 with libdoorbell-vfio preloaded
/// (what scripts/doorbell-exec does) assigning host devices with -device vfio-pci. The guest has no kernel:
/// the test is its driver, over QEMU's qtest socket (QemuPeer: TCG, icount, a vCPU parked in wfi).
/// Guest map (QEMU virt): ECAM 0x40_1000_0000, 32-bit PCI MMIO from 0x1000_0000, RAM 0x4000_0000 (512 MiB).
/// </summary>
public sealed class RealQemuRig : IDisposable
{
    public const ulong Ecam = 0x40_1000_0000;
    /// <summary>Host (Doorbell) functions as QEMU is told to assign them, and where they land on the guest bus.</summary>
    public const string HostMq = "0000:00:01.0", HostEdu = "0000:00:02.0";
    public const int GuestMqSlot = 1, GuestEduSlot = 2;

    readonly StringWriter _log = new();
    readonly TextWriter _syncLog;

    public DoorbellServer Server { get; }
    public QemuPeer Qemu { get; }
    public string Socket { get; }
    public TimeSpan ServerStart { get; }
    /// <summary>From QEMU's launch to its first qtest answer (machine and devices realized).</summary>
    public TimeSpan StartToRealized { get; }

    /// <param name="machine">QEMU's -machine (the guest's board).</param>
    /// <param name="noMmap">x-no-mmap=on: QEMU reaches BARs with pread/pwrite instead of its mmap of the region.</param>
    /// <param name="extra">more QEMU arguments (trace events, …).</param>
    /// <param name="serverTrace">`doorbell serve --trace` categories; also turns on libdoorbell-vfio's trace in QEMU.</param>
    public RealQemuRig(string machine = "virt,gic-version=3", bool noMmap = false, string? serverTrace = null, params string[] extra)
    {
        _syncLog = TextWriter.Synchronized(_log);
        Socket = ServeRig.TempSocket();
        var sw = Stopwatch.StartNew();
        Server = new DoorbellServer(new ServeOptions { SocketPath = Socket, Log = _syncLog, Trace = serverTrace });
        ServerStart = sw.Elapsed;
        var opt = noMmap ? ",x-no-mmap=on" : "";
        string[] args =
        [
            "-device", $"vfio-pci,host={HostMq},addr={GuestMqSlot:x2}.0{opt}",
            "-device", $"vfio-pci,host={HostEdu},addr={GuestEduSlot:x2}.0{opt}",
            "-d", "guest_errors,unimp", "-msg", "timestamp=on", .. extra,
        ];
        try
        {
            var env = new Dictionary<string, string> { ["DOORBELL_SOCKET"] = Socket, ["LD_PRELOAD"] = ServeRig.Library };
            if (serverTrace is not null) env["DOORBELL_TRACE"] = "1";
            var launched = Stopwatch.StartNew();
            Qemu = new QemuPeer(machine, args, env);
            // QEMU connects to the qtest socket during accelerator set-up and answers once its machine (the vfio-pci
            // devices included) is realized and the main loop runs: the first answer marks "realized"
            Qemu.Ask($"readl 0x{Ecam:x}");
            StartToRealized = launched.Elapsed;
        }
        catch
        {
            Server.Dispose();
            throw;
        }
    }

    /// <summary>`doorbell serve`'s log so far (connections, MAP_DMA timings, SMMU events, releases).</summary>
    public string ServerLog => _log.ToString();

    public static ulong Cfg(int slot, int reg) => Ecam + ((ulong)slot << 15) + (ulong)reg;

    public string Ask(string command) => QemuDifferentialTests.Ask(Qemu, command);

    public void Run(IEnumerable<QStep> steps)
    {
        foreach (var s in steps)
        {
            var got = Ask(s.Command);
            if (s.Expect is not null) Assert.True(got == s.Expect, $"{s.Command}: expected {s.Expect}, got {got}");
            else Assert.StartsWith("OK", got, StringComparison.Ordinal);
        }
    }

    static ulong Value(string answer, string command)
    {
        Assert.True(answer.StartsWith("OK 0x", StringComparison.Ordinal), $"{command}: {answer}");
        return ulong.Parse(answer.AsSpan(5), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
    }

    public uint ReadB(ulong a) => (uint)Value(Ask($"readb 0x{a:x}"), "readb");
    public uint ReadW(ulong a) => (uint)Value(Ask($"readw 0x{a:x}"), "readw");
    public uint ReadL(ulong a) => (uint)Value(Ask($"readl 0x{a:x}"), "readl");
    public ulong ReadQ(ulong a) => Value(Ask($"readq 0x{a:x}"), "readq");
    public void WriteB(ulong a, uint v) => Assert.Equal("OK", Ask($"writeb 0x{a:x} 0x{v:x}"));
    public void WriteW(ulong a, uint v) => Assert.Equal("OK", Ask($"writew 0x{a:x} 0x{v:x}"));
    public void WriteL(ulong a, uint v) => Assert.Equal("OK", Ask($"writel 0x{a:x} 0x{v:x}"));
    public void WriteQ(ulong a, ulong v) => Assert.Equal("OK", Ask($"writeq 0x{a:x} 0x{v:x}"));

    /// <summary>Guest RAM bytes through qtest (`write ADDR LEN 0xHEX`).</summary>
    public void WriteMem(ulong a, ReadOnlySpan<byte> bytes) => Assert.Equal("OK", Ask($"write 0x{a:x} {bytes.Length} 0x{Convert.ToHexString(bytes)}"));

    public byte[] ReadMem(ulong a, int length)
    {
        var r = Ask($"read 0x{a:x} {length}");
        Assert.StartsWith("OK 0x", r, StringComparison.Ordinal);
        return Convert.FromHexString(r[5..]);
    }

    /// <summary>Re-reads until <paramref name="done"/> holds (the eventfd hop into QEMU's main loop is asynchronous
    /// to the qtest socket); returns the last value read.</summary>
    public ulong PollUntil(Func<ulong> read, Func<ulong, bool> done, int tries = 2000)
    {
        var v = read();
        for (var i = 0; i < tries && !done(v); i++)
        {
            if (i > 50) Thread.Sleep(1);
            v = read();
        }
        return v;
    }

    /// <summary>QEMU's stderr once <paramref name="pattern"/> occurs at least <paramref name="count"/> times (its trace
    /// lines reach the pipe after the qtest reply), or as it is after 10 s.</summary>
    public string QemuLogWith(string pattern, int count = 1)
    {
        var sw = Stopwatch.StartNew();
        string log;
        while (System.Text.RegularExpressions.Regex.Matches(log = Qemu.Stderr, pattern).Count < count && sw.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(10);
        return log;
    }

    /// <summary>The capability chain of a guest function as QEMU presents it: (offset, ID) from CAP_PTR, then the
    /// extended chain from 0x100 (PCIe §7.6 for the extended header layout).</summary>
    public (List<(int Offset, int Id)> Caps, List<(int Offset, int Id)> ExtCaps) CapabilityLists(int slot)
    {
        var caps = new List<(int, int)>();
        var ptr = (int)ReadB(Cfg(slot, 0x34)) & 0xFC;
        for (var guard = 0; ptr != 0 && guard < 48; guard++)
        {
            var hdr = ReadW(Cfg(slot, ptr));
            caps.Add((ptr, (int)(hdr & 0xFF)));
            ptr = (int)(hdr >> 8) & 0xFC;
        }
        var ext = new List<(int, int)>();
        var off = 0x100;
        for (var guard = 0; off != 0 && guard < 64; guard++)
        {
            var h = ReadL(Cfg(slot, off));
            if (h is 0 or 0xFFFF_FFFF) break;
            ext.Add((off, (int)(h & 0xFFFF)));
            off = (int)(h >> 20) & 0xFFC;
        }
        return (caps, ext);
    }

    /// <summary>BAR sizing as firmware does it: write all-ones, read back, restore (PCI 3.0 §6.2.5.1).</summary>
    public ulong BarSize(int slot, int bar)
    {
        var reg = 0x10 + 4 * bar;
        var orig = ReadL(Cfg(slot, reg));
        WriteL(Cfg(slot, reg), 0xFFFF_FFFF);
        var lo = ReadL(Cfg(slot, reg));
        WriteL(Cfg(slot, reg), orig);
        ulong mask = lo & 0xFFFF_FFF0;
        if ((lo & 0x6) == 0x4)
        {
            var origHi = ReadL(Cfg(slot, reg + 4));
            WriteL(Cfg(slot, reg + 4), 0xFFFF_FFFF);
            mask |= (ulong)ReadL(Cfg(slot, reg + 4)) << 32;
            WriteL(Cfg(slot, reg + 4), origHi);
        }
        else mask |= 0xFFFF_FFFF_0000_0000;
        return ~mask + 1;
    }

    public void Dispose()
    {
        Qemu.Dispose();
        Server.Dispose();
        try { Directory.Delete(Path.GetDirectoryName(Socket)!, true); } catch (IOException) { }
    }
}
