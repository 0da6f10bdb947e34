using System.Net.Sockets;
using System.Text;
using Doorbell.Platform;
using Doorbell.Qtest;

namespace Doorbell.Tests.Qtest;

public class QtestProtocolTests
{
    static QtestServer Server(out StringWriter log, params string[] args)
    {
        var cmd = QemuCommandLine.Parse(["-machine", "virt", "-accel", "qtest", "-device", "edu", .. args, "-qtest", "unix:/nonexistent"]);
        log = new StringWriter();
        return new QtestServer(cmd.Build(BoardWiring.None), log, new StoppedClock());
    }

    /// <summary>Wall clock for logs that never moves (reproducible log text).</summary>
    internal sealed class StoppedClock : TimeProvider
    {
        public override long GetTimestamp() => 0;
        public override long TimestampFrequency => 1_000_000;
    }

    [Fact]
    public void Answers_are_byte_identical_to_qemu_formats()
    {
        var s = Server(out _);
        Assert.Equal("OK 0x0000000000001b36\n", s.Handle("readw 0x4010000000"));
        Assert.Equal("OK 0x0000000011e81234\n", s.Handle("readl 0x4010008000"));
        Assert.Equal("OK 0x00000000ffffffff\n", s.Handle("readl 0x4010010000"));
        Assert.Equal("OK\n", s.Handle("writel 0x4010008010 0x10000000"));
        Assert.Equal("OK\n", s.Handle("writew 0x4010008004 0x6"));
        Assert.Equal("OK 0x00000000010000ed\n", s.Handle("readl 0x10000000"));
        Assert.Equal("OK\n", s.Handle("writeq 0x40000000 0x1122334455667788"));
        Assert.Equal("OK 0x1122334455667788\n", s.Handle("readq 0x40000000"));
        Assert.Equal("OK 0x0000000000000088\n", s.Handle("readb 0x40000000"));
        Assert.Equal("OK 0x8877665544\n", s.Handle("read 0x40000000 5"));
        Assert.Equal("OK iHdmVUQzIhE=\n", s.Handle("b64read 0x40000000 8"));
        Assert.Equal("OK\n", s.Handle("write 0x40000100 4 0xdeadbe"));            // missing bytes are zero
        Assert.Equal("OK 0xdeadbe00\n", s.Handle("read 0x40000100 4"));
        Assert.Equal("OK\n", s.Handle("b64write 0x40000200 3 AQID"));
        Assert.Equal("OK 0x010203\n", s.Handle("read 0x40000200 3"));
        Assert.Equal("OK\n", s.Handle("memset 0x40000300 4 0x5a"));
        Assert.Equal("OK 0x000000005a5a5a5a\n", s.Handle("readl 0x40000300"));
        Assert.Equal("ERR invalid argument size\n", s.Handle("write 0x40000100 4 0x"));
        Assert.Equal("OK little\n", s.Handle("endianness"));
        Assert.Equal("OK 1000\n", s.Handle("clock_step 1000"));
        Assert.Equal("OK 5000\n", s.Handle("clock_set 5000"));
        Assert.Equal("OK 5000\n", s.Handle("clock_step"));                          // no deadline pending
        Assert.Equal("FAIL Unknown command 'frobnicate'\n", s.Handle("frobnicate 1 2"));
        Assert.Equal("FAIL Unknown command ''\n", s.Handle(""));
        Assert.Equal("FAIL Unknown device\n", s.Handle("irq_intercept_in /machine/unknown"));
        Assert.Equal("OK 0x0000000000000000\n", s.Handle("readl 0x0"));             // nothing there: zero
        Assert.Equal("FAIL readl: missing argument 1 (address)\n", s.Handle("readl"));   // QEMU would abort
        Assert.Equal("FAIL readl: invalid address 'zzz'\n", s.Handle("readl zzz"));
    }

    [Fact]
    public void Edu_dma_polled_over_qtest_completes_without_clock_commands()
    {
        var s = Server(out _, "-device", "edu,addr=3.0,dma_mask=0xffffffffff");
        string H(string c) => s.Handle(c);
        Assert.Equal("OK 0x0000000011e81234\n", H("readl 0x4010018000"));        // 00:03.0
        H("writel 0x4010018010 0x10000000"); H("writew 0x4010018004 0x6");
        H("write 0x40001000 8 0x0102030405060708");
        H("writeq 0x10000080 0x40001000"); H("writeq 0x10000088 0x40000"); H("writeq 0x10000090 8");
        H("writeq 0x10000098 1");
        Assert.Equal("OK 0x0000000000000000\n", H("readq 0x10000098"));
        H("writeq 0x10000080 0x40000"); H("writeq 0x10000088 0x40002000"); H("writeq 0x10000098 3");
        Assert.Equal("OK 0x0000000000000002\n", H("readq 0x10000098"));
        Assert.Equal("OK 0x0102030405060708\n", H("read 0x40002000 8"));
    }

    [Fact]
    public void Log_uses_qemu_r_and_s_line_format()
    {
        var s = Server(out var log);
        s.Opened();
        s.Handle("readl 0x4010000000");
        s.Handle("write 0x40000000 1 0x");
        Assert.Equal("[I 0.000000] OPENED\n[R +0.000000] readl 0x4010000000\n[S +0.000000] OK 0x0000000000081b36\n" +
                     "[R +0.000000] write 0x40000000 1 0x\nERR invalid argument size\n", log.ToString());
        Assert.Equal("", s.Feed("readl 0x40100"));                                  // partial line: no answer yet
        Assert.Equal("OK 0x0000000000081b36\nOK little\n", s.Feed("00000\nendianness\n"));
    }

    [Fact]
    public void Garbage_lines_never_throw_and_always_get_one_answer_line()
    {
        var s = Server(out _);
        var rng = new Random(7);
        string[] verbs = ["readb", "readq", "writel", "read", "write", "b64read", "b64write", "memset", "clock_step", "clock_set", "inb", "outl", "x"];
        string[] args = ["0x", "-1", "0xffffffffffffffff", "99999999999999999999999", "0x40000000", "8", "0", "AAAA", "0xzz", "", "010", "0x4010000000", "===="];
        for (var i = 0; i < 3000; i++)
        {
            var n = rng.Next(5);
            var line = verbs[rng.Next(verbs.Length)] + string.Concat(Enumerable.Range(0, n).Select(_ => " " + args[rng.Next(args.Length)]));
            var answer = s.Handle(line);
            Assert.EndsWith("\n", answer, StringComparison.Ordinal);
            Assert.Equal(1, answer.Count(c => c == '\n'));
        }
    }

    [Fact]
    public void Command_line_accepts_the_qemu_subset_and_ignores_cpu_options()
    {
        var c = QemuCommandLine.Parse(["-machine", "virt,gic-version=3,iommu=smmuv3,its=off,highmem=on", "-m", "1G", "-smp", "4",
            "-cpu", "max", "-accel", "tcg", "-icount", "shift=0,sleep=off", "-display", "none", "-nodefaults", "-monitor", "none",
            "-serial", "none", "-device", "loader,file=blob.bin,addr=0x40000000,cpu-num=0", "-device", "edu,addr=04.1,dma_mask=0xffff",
            "-qtest", "unix:/tmp/q.sock", "-qtest-log", "none"]);
        Assert.Equal(3, c.Machine.GicVersion);
        Assert.Equal(IommuKind.SmmuV3, c.Machine.Iommu);
        Assert.False(c.Machine.Its);
        Assert.Equal(1UL << 30, c.Machine.RamSize);
        Assert.Equal(4, c.Machine.Cpus);
        Assert.Equal(new QemuDevice("edu", 4, 1, 0xFFFF), Assert.Single(c.Devices));
        Assert.Equal("/tmp/q.sock", c.QtestSocket);
        Assert.Equal("none", c.QtestLog);
        var d = QemuCommandLine.Parse(["-M", "virt", "-qtest", "unix:/x"]);
        Assert.Equal(2, d.Machine.GicVersion);                                      // QEMU's virt default
        Assert.Equal(IommuKind.None, d.Machine.Iommu);
        Assert.Equal(128UL << 20, d.Machine.RamSize);
        Assert.Throws<ArgumentException>(() => QemuCommandLine.Parse(["-device", "e1000"]));
        var mq = QemuCommandLine.Parse(["-device", "doorbell-mq-dma,addr=2,queues=3", "-qtest", "unix:/x"]).Build(BoardWiring.None);
        Assert.Equal(3, Assert.IsType<Doorbell.Devices.MultiQueueDmaDevice>(mq.Pci!.RootBus[2 << 3]).QueueCount);
        Assert.Throws<ArgumentException>(() => QemuCommandLine.Parse(["-machine", "q35"]));
    }

    [Fact]
    public void Runner_connects_to_the_harness_socket_and_serves_until_closed()
    {
        var dir = Directory.CreateTempSubdirectory("db-qtest");
        var path = Path.Combine(dir.FullName, "qtest.sock");
        var logPath = Path.Combine(dir.FullName, "qtest.log");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        var cmd = QemuCommandLine.Parse(["-machine", "virt", "-device", "edu", "-qtest", "unix:" + path, "-qtest-log", logPath]);
        var rc = -1;
        var t = new Thread(() => rc = QtestRunner.Run(cmd, TextWriter.Null, BoardWiring.None));
        t.Start();
        using (var conn = listener.Accept())
        {
            conn.Send(Encoding.ASCII.GetBytes("readl 0x4010008000\nendianness\n"));
            var got = new StringBuilder();
            var buf = new byte[256];
            while (got.ToString().Split('\n').Length < 3)
            {
                var n = conn.Receive(buf);
                if (n <= 0) break;
                got.Append(Encoding.ASCII.GetString(buf, 0, n));
            }
            Assert.Equal("OK 0x0000000011e81234\nOK little\n", got.ToString());
        }
        Assert.True(t.Join(10_000));
        Assert.Equal(0, rc);
        Assert.Matches(@"\[S \+\d+\.\d{6}\] OK little", File.ReadAllText(logPath));
        dir.Delete(true);
    }
}

public class QmpTests
{
    [Fact]
    public void Minimal_qmp_greets_accepts_capabilities_and_quit_ends_the_session()
    {
        var dir = Directory.CreateTempSubdirectory("db-qmp");
        var qtestPath = Path.Combine(dir.FullName, "q.sock");
        var qmpPath = Path.Combine(dir.FullName, "m.sock");
        using var qtestL = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        qtestL.Bind(new UnixDomainSocketEndPoint(qtestPath)); qtestL.Listen(1);
        using var qmpL = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        qmpL.Bind(new UnixDomainSocketEndPoint(qmpPath)); qmpL.Listen(1);
        var cmd = QemuCommandLine.Parse(["-machine", "virt", "-chardev", $"socket,path={qmpPath},id=char0", "-mon", "chardev=char0,mode=control",
            "-qtest", "unix:" + qtestPath, "-qtest-log", "none"]);
        Assert.Equal(qmpPath, cmd.QmpSocket);
        var rc = -1;
        var t = new Thread(() => rc = QtestRunner.Run(cmd, TextWriter.Null, BoardWiring.None));
        t.Start();
        using var qmp = qmpL.Accept();
        using var qt = qtestL.Accept();
        using var stream = new NetworkStream(qmp);
        using var reader = new StreamReader(stream);
        using var writer = new StreamWriter(stream) { AutoFlush = true };
        Assert.StartsWith("{\"QMP\":", reader.ReadLine(), StringComparison.Ordinal);
        writer.Write("{\"execute\": \"qmp_capabilities\"}\n");
        Assert.Equal("{\"return\": {}}", reader.ReadLine());
        writer.Write("{\"execute\": \"query-status\"}\n");
        Assert.Contains("CommandNotFound", reader.ReadLine(), StringComparison.Ordinal);
        writer.Write("{\"execute\": \"quit\"}\n");
        Assert.Equal("{\"return\": {}}", reader.ReadLine());
        Assert.True(t.Join(10_000));
        Assert.Equal(0, rc);
        dir.Delete(true);
    }
}
