using System.Diagnostics;
using System.Text;
using Doorbell.Platform;
using Doorbell.Qtest;

namespace Doorbell.Tests.Qtest;

/// <summary>
/// The qtest front end as a drop-in for QEMU 7.2 (issues 16 items 8–10, 17, 18, 20): the byte parser, its cost
/// shape (allocation-free register commands, linear long lines), QEMU's log stamps, QEMU's choices for the ITS
/// doorbell and the LPI pending table, FAIL reasons and command-line errors.
/// </summary>
public class QtestFrontEndTests
{
    static QtestServer Server(TimeProvider? time = null, TextWriter? log = null, string machine = "virt", params string[] extra) =>
        new(QemuCommandLine.Parse(["-machine", machine, "-m", "512M", "-device", "edu", .. extra, "-qtest", "unix:/unused"]).Build(), log, time);

    /// <summary>A wall clock that moves 1 ms every time it is read.</summary>
    sealed class TickingClock : TimeProvider
    {
        long _t;
        public override long GetTimestamp() => _t += 1000;
        public override long TimestampFrequency => 1_000_000;
    }

    // --- issue 17: parser ---------------------------------------------------------------------------------------

    [Fact]
    public void Pipelined_register_commands_are_answered_in_order_without_allocating()
    {
        var s = Server();
        var burst = new StringBuilder();
        for (var i = 0; i < 256; i++) burst.Append(Line(i)).Append('\n');
        var bytes = Encoding.ASCII.GetBytes(burst.ToString());
        AllocationAssert.None(() =>
        {
            s.Feed(bytes);
            s.ClearOutput();
        });
        s.Feed(bytes);
        var answers = Encoding.ASCII.GetString(s.Output).Split('\n');
        Assert.Equal(257, answers.Length);
        Assert.Equal("OK", answers[0]);
        Assert.Equal("OK 0x0000000000000000", answers[1]);               // value just written (0) read back
        Assert.Equal("OK 0x00000000deadbeef", answers[255]);
        static string Line(int i) => (i % 4) switch
        {
            0 => $"writel 0x{0x4000_0000 + i * 8:x} 0x{i:x}",
            1 => $"readl 0x{0x4000_0000 + (i - 1) * 8:x}",
            2 => "writeq 0x40100000 0xdeadbeef",
            _ => "readq 0x40100000",
        };
    }

    [Fact]
    public void Lines_split_across_sends_at_every_byte_give_the_same_answers()
    {
        const string text = "readl 0x4010008000\nwrite 0x40000000 4 0x01020304\nread 0x40000000 4\nb64read 0x40000000 4\nendianness\n";
        var expected = "OK 0x0000000011e81234\nOK\nOK 0x01020304\nOK AQIDBA==\nOK little\n";
        var bytes = Encoding.ASCII.GetBytes(text);
        for (var cut = 1; cut < bytes.Length; cut++)
        {
            var s = Server();
            s.Feed(bytes.AsSpan(0, cut));
            var seg = s.ReceiveBuffer();
            bytes.AsSpan(cut).CopyTo(seg);
            s.Received(bytes.Length - cut);
            Assert.Equal(expected, Encoding.ASCII.GetString(s.Output));
        }
    }

    /// <summary>Issue 20 item 6: a legal 64 MiB write, sent in 64 KiB pieces as a socket delivers it, costs work in
    /// proportion to its length (the old Feed re-copied the whole pending text on every piece: ~10⁵ × the line).</summary>
    [Fact]
    public void A_64_MiB_write_line_is_taken_in_linear_time_and_memory()
    {
        var s = Server();
        const int len = 64 << 20;
        var head = Encoding.ASCII.GetBytes($"write 0x40000000 0x{len:x} 0x");
        var piece = new byte[64 << 10];
        Array.Fill(piece, (byte)'a');
        var before = GC.GetAllocatedBytesForCurrentThread();
        s.Feed(head);
        for (var sent = 0; sent < 2 * len; sent += piece.Length) s.Feed(piece);
        s.Feed("\n"u8);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal("OK\n", Encoding.ASCII.GetString(s.Output));
        Assert.True(allocated < 5L * 2 * len, $"allocated {allocated} bytes for a {2 * len}-byte line (input buffer, data, RAM pages: a few times the line)");
        s.ClearOutput();
        Assert.Equal("OK 0xaaaaaaaa\n", s.Handle($"read 0x{0x4000_0000 + len - 4:x} 4"));
        Assert.Equal("OK 0x0000000000000000\n", s.Handle($"readl 0x{0x4000_0000 + len:x}"));
    }

    [Fact]
    public void A_line_longer_than_any_legal_command_is_skipped_with_one_fail()
    {
        var s = Server();
        var piece = new byte[1 << 20];
        Array.Fill(piece, (byte)'7');
        s.Feed("write 0x40000000 4 0x"u8);
        for (var i = 0; i < 140; i++) s.Feed(piece);
        s.Feed("\nendianness\n"u8);
        Assert.Equal("FAIL line too long (longer than any legal command)\nOK little\n", Encoding.ASCII.GetString(s.Output));
    }

    // --- issue 18: FAIL reasons, base64 -------------------------------------------------------------------------

    [Fact]
    public void Bad_arguments_answer_fail_with_a_reason()
    {
        var s = Server();
        Assert.Equal("FAIL writel: missing argument 2 (value)\n", s.Handle("writel 0x40000000"));
        Assert.Equal("FAIL writeq: invalid value '0x1g'\n", s.Handle("writeq 0x40000000 0x1g"));
        Assert.Equal("FAIL readq: invalid address '0x10000000000000000'\n", s.Handle("readq 0x10000000000000000"));
        Assert.Equal("FAIL read: length 0\n", s.Handle("read 0x40000000 0"));
        Assert.Equal("FAIL memset: length beyond 64 MiB (Doorbell's bound on one transfer)\n", s.Handle("memset 0x40000000 0x4000001 0"));
        Assert.Equal("FAIL clock_step: invalid nanoseconds 'soon'\n", s.Handle("clock_step soon"));
        Assert.Equal("FAIL write: missing argument 3 (data)\n", s.Handle("write 0x40000000 4"));
        Assert.Equal("FAIL readl: invalid address '??'\n", s.Handle("readl \u0001\u007f"));    // echoed printable only
        Assert.Equal("OK 0x0000000000000000\n", s.Handle("readl -0"));                  // qemu_strtou64 accepts a sign
        Assert.Equal("OK 7\n", s.Handle("clock_step 07"));                            // octal, as strtoull base 0
    }

    [Fact]
    public void Invalid_base64_in_b64write_is_an_error_and_writes_nothing()
    {
        var s = Server();
        Assert.Equal("OK\n", s.Handle("memset 0x40000000 4 0x55"));
        Assert.Equal("FAIL b64write: invalid base64 data\n", s.Handle("b64write 0x40000000 4 !!!!"));
        Assert.Equal("FAIL b64write: invalid base64 data\n", s.Handle("b64write 0x40000000 3 AQ*D"));
        Assert.Equal("OK 0x55555555\n", s.Handle("read 0x40000000 4"));
        Assert.Equal("OK\n", s.Handle("b64write 0x40000000 2 AQI"));                  // unpadded, as glib accepts
        Assert.Equal("OK 0x01025555\n", s.Handle("read 0x40000000 4"));
        Assert.Equal("OK\n", s.Handle("b64write 0x40000000 4 AQI="));                  // short: the rest is zero
        Assert.Equal("OK 0x01020000\n", s.Handle("read 0x40000000 4"));
    }

    // --- issue 16 item 10: log stamps ---------------------------------------------------------------------------

    [Fact]
    public void Log_stamps_are_wall_clock_seconds_taken_when_a_line_is_taken_and_when_its_answer_is_sent()
    {
        var log = new StringWriter();
        var s = Server(new TickingClock(), log);
        s.Opened();
        s.Feed("readl 0x4010008000\nb64write 0x40000000 4 AQID\n"u8);
        s.Closed();
        // the clock moves 1 ms per reading: construction, R, S, R, S (mismatch line), S, CLOSED
        Assert.Equal("[I 0.000000] OPENED\n" +
                     "[R +0.001000] readl 0x4010008000\n[S +0.002000] OK 0x0000000011e81234\n" +
                     "[R +0.003000] b64write 0x40000000 4 AQID\n[S +0.004000] b64write: data length mismatch (told 4, found 3)\n" +
                     "[S +0.005000] OK\n[I +0.006000] CLOSED\n", log.ToString());
    }

    // --- issue 16 items 8 and 9: QEMU's choices ------------------------------------------------------------------

    const ulong Gicd = 0x0800_0000, Gicr = 0x080A_0000, Its = 0x0808_0000, Translater = 0x0809_0040;
    const ulong PropBase = 0x4110_0000, PendBase = 0x4120_0000, DevTable = 0x4130_0000, CollTable = 0x4131_0000,
        ItsCmdq = 0x4140_0000, Itt = 0x4150_0000;

    /// <summary>LPIs on, ITS on, DeviceID 0 EventID 0 → LPI 8192 and EventID 1 → LPI 8193 on CPU 0.</summary>
    internal static IEnumerable<QStep> ItsDeviceZero()
    {
        static string Q(ulong a, ulong v) => $"writeq 0x{a:x} 0x{v:x}";
        static string L(ulong a, ulong v) => $"writel 0x{a:x} 0x{v:x}";
        yield return L(Gicd, 0x12);
        yield return L(Gicr + 0x14, 0);
        yield return Q(Gicr + 0x70, PropBase | 15);
        yield return Q(Gicr + 0x78, PendBase);
        yield return "memset 0x41100000 2 0xa1";
        yield return L(Gicr, 1);
        yield return Q(Its + 0x100, (1UL << 63) | DevTable);
        yield return Q(Its + 0x108, (1UL << 63) | CollTable);
        yield return Q(Its + 0x80, (1UL << 63) | ItsCmdq);
        yield return Q(Its + 0x88, 0);
        yield return L(Its, 1);
        ulong[][] cmds =
        [
            [0x08, 4, (1UL << 63) | Itt, 0],            // MAPD DeviceID 0
            [0x09, 0, 1UL << 63, 0],                    // MAPC ICID 0 → PE 0
            [0x0A, 0UL | (8192UL << 32), 0, 0],         // MAPTI 0/0 → 8192
            [0x0A, 1UL | (8193UL << 32), 0, 0],         // MAPTI 0/1 → 8193
            [0x05, 0, 0, 0],                            // SYNC
        ];
        for (var i = 0; i < cmds.Length; i++)
            for (var j = 0; j < 4; j++)
                yield return Q(ItsCmdq + (ulong)(i * 32 + j * 8), cmds[i][j]);
        yield return Q(Its + 0x88, (ulong)cmds.Length * 32);
        yield return new("readq 0x8080090", "OK 0x00000000000000a0");
    }

    /// <summary>Item 9: a qtest writel to GITS_TRANSLATER is an MSI from DeviceID 0, as in QEMU.</summary>
    internal static IEnumerable<QStep> CpuWriteToTranslater() => ItsDeviceZero().Concat(
    [
        new("read 0x41200400 1", "OK 0x00"),
        new($"writel 0x{Translater:x} 0x1", "OK"),
        new("read 0x41200400 1", "OK 0x02"),                      // LPI 8193 pending
    ]);

    /// <summary>Item 8: a pending bit cleared in RAM is a cleared LPI; the next MSI sets it again (QEMU's write-through).</summary>
    internal static IEnumerable<QStep> PendingTableClearedInRam() => ItsDeviceZero().Concat(
    [
        $"writel 0x{Translater:x} 0x0",
        new("read 0x41200400 1", "OK 0x01"),
        "write 0x41200400 1 0x00",                                  // the harness clears LPI 8192 in RAM
        $"writel 0x{Translater:x} 0x0",                              // … and triggers it again
        new("read 0x41200400 1", "OK 0x01"),
    ]);

    [Fact]
    public void Cpu_write_to_gits_translater_is_deviceid_0() =>
        QemuDifferentialTests.RunDoorbell("virt,gic-version=3", [], CpuWriteToTranslater());

    [Fact]
    public void Lpi_pending_bit_cleared_in_ram_is_set_again_by_the_next_msi() =>
        QemuDifferentialTests.RunDoorbell("virt,gic-version=3", [], PendingTableClearedInRam());

    [Fact]
    public void Lpi_cleared_in_ram_is_not_pending_any_more()
    {
        using var peer = new DoorbellPeer("virt,gic-version=3");
        foreach (var step in ItsDeviceZero()) peer.Ask(step.Command);
        var rd = peer.Machine.GicV3!.Redistributors[0];
        peer.Ask($"writel 0x{Translater:x} 0x0");
        Assert.True(rd.IsLpiPending(8192));
        peer.Ask("write 0x41200400 1 0x00");
        Assert.False(rd.IsLpiPending(8192));
    }

    [QemuFact]
    public void Cpu_write_to_gits_translater_matches_qemu() =>
        QemuDifferentialTests.Compare("virt,gic-version=3", [], CpuWriteToTranslater());

    [QemuFact]
    public void Lpi_pending_table_in_ram_matches_qemu() =>
        QemuDifferentialTests.Compare("virt,gic-version=3", [], PendingTableClearedInRam());

    // --- issues 18 and 20: the command line ---------------------------------------------------------------------

    public static TheoryData<string[], string> Misuse => new()
    {
        { ["-m", ""], "-m : missing size" },
        { ["-m", "0"], "-m 0: RAM size must be greater than 0" },
        { ["-m", "-5"], "-m -5: Parameter 'size' expects" },
        { ["-m", "300G"], "-m 300G: cannot model more than 255GB RAM" },
        { ["-m", "1e30"], "-m 1e30: Parameter 'size' expects" },
        { ["-m", "NaN"], "-m NaN: Parameter 'size' expects" },
        { ["-m", "4096T"], "-m 4096T: cannot model more than 255GB RAM" },
        { ["-m", "99999999T"], "-m 99999999T: size too large" },
        { ["-m", "abc"], "-m abc: Parameter 'size' expects" },
        { ["-smp", "0"], "-smp 0: CPU topology parameters must be greater than zero" },
        { ["-smp", "100000"], "-smp 100000: Invalid SMP CPUs 100000" },
        { ["-machine", "virt,gic-version=3", "-smp", "124"], "-smp 124: Invalid SMP CPUs 124. The max CPUs supported by machine 'virt' with gic-version=3 is 123" },
        { ["-smp", "two"], "-smp two: Parameter 'cpus' expects a number" },
        { ["-device", "edu,addr=0"], "-device edu,addr=0: PCI: slot 0 function 0 not available for edu, in use by gpex-root" },
        { ["-device", "edu,addr=1", "-device", "edu,addr=1"], "-device edu,addr=1: PCI: slot 1 function 0 not available for edu, in use by edu" },
        { ["-device", "edu", "-device", "edu,addr=1"], "-device edu,addr=1: PCI: slot 1 function 0 not available for edu, in use by edu" },
        { ["-device", "edu,addr=0x100000000"], "-device edu,addr=0x100000000: Property 'edu.addr' doesn't take value '0x100000000'" },
        { ["-device", "edu,addr=zz"], "-device edu,addr=zz: Property 'edu.addr' doesn't take value 'zz'" },
        { ["-device", "edu,addr=1.8"], "-device edu,addr=1.8: Property 'edu.addr' doesn't take value '1.8'" },
        { ["-device", "edu,dma_mask=abc"], "-device edu,dma_mask=abc: Property 'edu.dma_mask' doesn't take value 'abc'" },
        { ["-device", "edu,colour=red"], "-device edu,colour=red: Property 'edu.colour' not found" },
        { ["-device", "e1000"], "-device e1000: 'e1000' is not a valid device model name" },
        { ["-qtest", "unix:"], "-qtest unix:: empty socket path" },
        { ["-qtest", "tcp:localhost:1"], "-qtest tcp:localhost:1: only unix:PATH is supported" },
        { ["-machine", "virt,its=maybe"], "-machine virt,its=maybe: Parameter 'its' expects 'on' or 'off'" },
        { ["-machine", "virt,frobnicate=on"], "-machine virt,frobnicate=on: Property 'virt-7.2-machine.frobnicate' not found" },
        { ["-machine", "virt,highmem=sometimes"], "-machine virt,highmem=sometimes: Parameter 'highmem' expects 'on' or 'off'" },
        { ["-machine", "q35"], "-machine q35: unsupported machine type 'q35'" },
        { ["-machine", "virt,gic-version=5"], "-machine virt,gic-version=5: Invalid gic-version value '5'" },
        { ["-m"], "-m: requires an argument" },
        { ["-trace", "nosuch*"], "-trace nosuch*: 'nosuch*' matches no trace category" },
        { ["-d", "trace:bogus"], "-d trace:bogus: 'bogus' matches no trace category" },
        { ["-frobnicate"], "-frobnicate: invalid option" },
    };

    [Theory]
    [MemberData(nameof(Misuse))]
    public void Every_misuse_is_one_line_naming_the_option(string[] args, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => QemuCommandLine.Parse(args));
        Assert.StartsWith(message, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Legal_sizes_and_slots_parse_as_qemu_does()
    {
        Assert.Equal(128UL << 20, QemuCommandLine.ParseRam("128"));
        Assert.Equal(1536UL << 20, QemuCommandLine.ParseRam("1.5G"));
        Assert.Equal(255UL << 30, QemuCommandLine.ParseRam("255G"));
        Assert.Equal(8192UL, QemuCommandLine.ParseRam("100B"));                    // rounded up to 8 KiB
        Assert.Equal(2UL << 30, QemuCommandLine.ParseRam("size=2G,slots=2,maxmem=4G"));
        var c = QemuCommandLine.Parse(["-device", "edu", "-device", "edu,addr=3", "-device", "edu", "-smp", "sockets=2,cores=2", "-machine", "virt,gic-version=3"]);
        Assert.Equal([1, 3, 2], c.Devices.Select(d => d.Slot!.Value));
        Assert.Equal(4, c.Machine.Cpus);
        Assert.Contains("virt-7.2", QemuCommandLine.Parse(["-M", "help"]).Help, StringComparison.Ordinal);
        Assert.Contains("name \"edu\", bus PCI", QemuCommandLine.Parse(["-device", "help"]).Help, StringComparison.Ordinal);
        var t = QemuCommandLine.Parse(["-d", "guest_errors,int,trace:its*", "-trace", "enable=smmu*", "-trace", "gicr*"]);
        Assert.Equal(["guest_error", "its*", "smmu*", "gicr*"], t.TracePatterns);
    }

    /// <summary>The launcher end to end: misuse exits 1 with one line on stderr and nothing on stdout, no stack trace.</summary>
    [Fact]
    public void Launcher_misuse_exits_1_with_one_qemu_style_line()
    {
        foreach (var (args, line) in new[]
                 {
                     (new[] { "-m", "0" }, "doorbell: -m 0: RAM size must be greater than 0"),
                     (new[] { "-device", "edu,addr=1", "-device", "edu,addr=1" }, "doorbell: -device edu,addr=1: PCI: slot 1 function 0 not available for edu, in use by edu"),
                     (new[] { "-smp", "100000" }, "doorbell: -smp 100000: Invalid SMP CPUs 100000. The max CPUs supported by machine 'virt' with gic-version=2 is 8"),
                 })
        {
            var (rc, stdout, stderr) = RunCli([.. args, "-qtest", "unix:/nonexistent/q.sock"]);
            Assert.Equal(1, rc);
            Assert.Equal("", stdout);
            Assert.Equal(line + "\n", stderr);
        }
        var (hrc, hout, herr) = RunCli(["-M", "help"]);
        Assert.Equal(0, hrc);
        Assert.StartsWith("Supported machines are:", hout, StringComparison.Ordinal);
        Assert.Equal("", herr);
    }

    // --- issue 18: --board FILE.yaml through -machine ------------------------------------------------------------

    const string BoardYaml = """
        name: qtest-board
        ram: 256M
        gic: { version: 3, its: true }
        iommu: smmuv3
        pcie:
          - { slot: 1, device: edu }
          - { slot: 3, device: mq-dma, queues: 2 }
        """;

    static string WriteTemp(string name, string text)
    {
        var dir = Directory.CreateTempSubdirectory("doorbell-qtest-board");
        var path = Path.Combine(dir.FullName, name);
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void A_board_file_given_to_machine_builds_that_board_and_devices_take_the_free_slots()
    {
        var file = WriteTemp("b.yaml", BoardYaml);
        foreach (var machineArgs in new[] { new[] { "-machine", "board=" + file }, ["-M", file], ["-machine", "virt,board=" + file] })
        {
            var c = QemuCommandLine.Parse([.. machineArgs, "-device", "edu", "-qtest", "unix:/unused"]);
            Assert.Equal(file, c.BoardSource);
            Assert.Equal(3, c.Machine.GicVersion);                                // the board's, not QEMU virt's default 2
            Assert.Equal(IommuKind.SmmuV3, c.Machine.Iommu);
            Assert.Equal(256UL << 20, c.Machine.RamSize);
            Assert.Equal(2, c.Devices[0].Slot);                                   // slot 1 and 3 are the board's
            var s = new QtestServer(c.Build());
            Assert.Equal("OK 0x0000000011e81234\n", s.Handle("readl 0x4010008000"));  // 00:01.0 edu (board)
            Assert.Equal("OK 0x0000000011e81234\n", s.Handle("readl 0x4010010000"));  // 00:02.0 edu (-device)
            Assert.NotEqual("OK 0x00000000ffffffff\n", s.Handle("readl 0x4010018000")); // 00:03.0 mq-dma (board)
            Assert.Equal("OK 0x00000000ffffffff\n", s.Handle("readl 0x4010020000"));  // 00:04.0 empty
        }
        // -m, -smp and -machine properties on the command line override the file
        var o = QemuCommandLine.Parse(["-M", file + ",gic-version=2", "-m", "1G", "-smp", "2", "-qtest", "unix:/unused"]);
        Assert.Equal((2, 1UL << 30, 2), (o.Machine.GicVersion, o.Machine.RamSize, o.Machine.Cpus));
        Assert.Equal(2, o.Build().GicVersion);
        // a taken slot is refused as QEMU refuses it, naming the board's device
        var e = Assert.Throws<ArgumentException>(() => QemuCommandLine.Parse(["-M", file, "-device", "edu,addr=3"]));
        Assert.StartsWith("-device edu,addr=3: PCI: slot 3 function 0 not available for edu, in use by ", e.Message, StringComparison.Ordinal);
        // a built-in board by name
        var juno = QemuCommandLine.Parse(["-M", "juno-like", "-qtest", "unix:/unused"]);
        Assert.Equal(IommuKind.SmmuV2, juno.Machine.Iommu);
        Assert.Equal(2, juno.Machine.GicVersion);
    }

    public static TheoryData<string, string, string> BadBoards => new()
    {
        { "missing.yaml", null!, "Could not open board file '{0}': No such file or directory" },
        { "syntax.yaml", "name: x\nram: [1\n", "{0}: board description: line 2: " },
        { "key.yaml", "name: x\nrum: 1G\n", "{0}: board description: line 2: unknown key 'rum' in board" },
        { "gic.yaml", "name: x\ngic: { version: 7 }\n", "board 'x': gic-version must be 2 or 3" },
        { "device.yaml", "name: x\npcie: [{ slot: 1, device: e1000 }]\n", "board 'x': PCI device 'e1000' is unknown (edu, mq-dma)" },
        { "scalar.yaml", "just text\n", "{0}: board description: line 1: expected a mapping of board properties" },
    };

    [Theory]
    [MemberData(nameof(BadBoards))]
    public void A_bad_board_file_is_one_qemu_style_line_naming_the_file_and_the_problem(string name, string? text, string expected)
    {
        var path = text is null ? Path.Combine(Path.GetTempPath(), "doorbell-no-such-dir", name) : WriteTemp(name, text);
        var e = Assert.Throws<ArgumentException>(() => QemuCommandLine.Parse(["-machine", "board=" + path, "-qtest", "unix:/unused"]));
        Assert.StartsWith($"-machine board={path}: " + string.Format(System.Globalization.CultureInfo.InvariantCulture, expected, path), e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
        Assert.DoesNotContain("System.", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("Doorbell.", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Launcher_takes_a_board_file_and_lists_boards_in_machine_help()
    {
        var bad = WriteTemp("bad.yaml", "name: x\nrum: 1G\n");
        var (rc, stdout, stderr) = RunCli(["-M", bad, "-qtest", "unix:/nonexistent/q.sock"]);
        Assert.Equal(1, rc);
        Assert.Equal("", stdout);
        Assert.Equal($"doorbell: -M {bad}: {bad}: board description: line 2: unknown key 'rum' in board\n", stderr);
        var (hrc, hout, _) = RunCli(["-M", "help"]);
        Assert.Equal(0, hrc);
        Assert.Contains("board=FILE.yaml", hout, StringComparison.Ordinal);
        Assert.Contains("juno-like", hout, StringComparison.Ordinal);
        // a good board file gets as far as connecting to the harness's socket
        var good = WriteTemp("good.yaml", BoardYaml);
        var (grc, _, gerr) = RunCli(["-machine", "board=" + good, "-device", "edu", "-qtest", "unix:/nonexistent/q.sock"]);
        Assert.Equal(1, grc);
        Assert.StartsWith("doorbell: -qtest unix:/nonexistent/q.sock: Failed to connect", gerr, StringComparison.Ordinal);
    }

    internal static (int Rc, string Stdout, string Stderr) RunCli(string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Doorbell.Cli.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(60_000));
        return (p.ExitCode, stdout, err.Result);
    }
}
