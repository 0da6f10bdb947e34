using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using CsCheck;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Server;

namespace Doorbell.Tests.Serve;

/// <summary>`doorbell serve` with real client processes: the C driver under doorbell-exec, the GICv2m isolation
/// policy, two clients with a kill -9, and malformed input on the socket.</summary>
public class ServeTests
{
    static DoorbellServer StartServer(string socket, string? board = null, TextWriter? log = null) =>
        new(new ServeOptions { SocketPath = socket, BoardFile = board, Log = log ?? TextWriter.Synchronized(new StringWriter()) });

    [GccFact]
    public void C_driver_follows_the_kernel_VFIO_flow_under_doorbell_exec()
    {
        var r = ServeRig.Run(Path.Combine(ServeRig.RepoRoot, "scripts", "doorbell-exec"), ["--", ServeRig.Driver], null, 120_000);
        Assert.True(r.Exit == 0, r.Stdout + r.Stderr);
        Assert.Contains("sysfs: 0000:00:01.0 -> /sys/devices/pci0000:00/0000:00:01.0, iommu_group", r.Stdout);
        Assert.Contains("IOVA range(s): [0x0-0x7ffffff] [0x8100000-", r.Stdout); // the ITS doorbell window is reserved
        Assert.Contains("BAR0: ID 0xd0b10001 (mmap) = 0xd0b10001 (pread)", r.Stdout);
        Assert.Contains("DMA: 256 bytes copied by the device inside our buffer", r.Stdout);
        Assert.Contains("write fault reported (status 2)", r.Stdout);
        Assert.Contains("UNMAP_DMA: 65536 bytes", r.Stdout);
        Assert.EndsWith("PASS\n", r.Stdout);
        Assert.Contains("SMMU event: F_TRANSLATION", r.Stderr); // the faulting DMA as Doorbell's SMMU recorded it
        Assert.Contains("released 0 descriptor(s)", r.Stderr); // the driver closed everything itself
    }

    [GccFact]
    public void On_the_GICv2m_board_SET_IOMMU_is_EPERM_unless_unsafe_interrupts_are_allowed()
    {
        var exec = Path.Combine(ServeRig.RepoRoot, "scripts", "doorbell-exec");
        var board = Path.Combine(ServeRig.RepoRoot, "examples", "boards", "qemu-virt-gicv2m.yaml");
        var refused = ServeRig.Run(exec, ["--board", board, "--", ServeRig.Driver, "--expect-eperm"], null, 120_000);
        Assert.True(refused.Exit == 0, refused.Stdout + refused.Stderr);
        Assert.Contains("SET_IOMMU: EPERM", refused.Stdout);
        var allowed = ServeRig.Run(exec, ["--board", board, "--allow-unsafe-interrupts", "--", ServeRig.Driver], null, 120_000);
        Assert.True(allowed.Exit == 0, allowed.Stdout + allowed.Stderr);
        Assert.Contains("DMA: 256 bytes copied", allowed.Stdout);
    }

    [GccFact]
    public void Kill_9_of_one_client_mid_DMA_leaves_the_server_and_the_other_client_alone()
    {
        var socket = ServeRig.TempSocket();
        var board = Path.Combine(Path.GetDirectoryName(socket)!, "two-mq.yaml");
        File.WriteAllText(board, "name: two-mq\ngic: { version: 3, its: true }\niommu: smmuv3\npcie:\n  - { slot: 1, device: mq-dma }\n  - { slot: 3, device: mq-dma }\n");
        using var server = ServeRig.StartServerProcess(socket, board); // the real `doorbell serve`, as users run it
        using var a = ServeRig.Start(socket, "0000:00:01.0", "--hold");
        string? line;
        var sawReady = false;
        while ((line = a.StandardOutput.ReadLine()) is not null) if (line == "READY") { sawReady = true; break; }
        if (!sawReady) Assert.Fail("client A did not reach its DMA loop: " + a.StandardError.ReadToEnd());
        using var b = ServeRig.Start(socket, "0000:00:03.0");
        Thread.Sleep(50);
        a.Kill(); // SIGKILL, in the middle of its DMA loop
        a.WaitForExit();
        var bOut = b.StandardOutput.ReadToEnd();
        Assert.True(b.WaitForExit(60_000));
        Assert.True(b.ExitCode == 0, bOut + b.StandardError.ReadToEnd());
        Assert.EndsWith("PASS\n", bOut);

        using var probe = new RawClient(socket);
        var stats = "";
        // Wait until the server has seen both exits (A killed, B finished): each disconnect is noticed by its own reader.
        for (var i = 0; i < 500; i++)
        {
            stats = probe.Stats();
            if (stats.Contains($"release pid={a.Id} ", StringComparison.Ordinal) && stats.Contains("clients=1\n", StringComparison.Ordinal)) break;
            Thread.Sleep(20);
        }
        Assert.Contains("clients=1\n", stats); // only the probe remains
        Assert.Contains("locked_pages=0\n", stats);
        Assert.Matches($"release pid={a.Id} closed_fds=3 unpinned_pages=16 fds_after=0 locked_after=0 pinned_after=0", stats);

        // the killed client's group opens again for a new client
        var c = ServeRig.Run(ServeRig.Driver, ["0000:00:01.0"], ServeRig.Env(socket));
        Assert.True(c.Exit == 0, c.Stdout + c.Stderr);
        Assert.EndsWith("PASS\n", c.Stdout);
        Assert.False(server.HasExited);
    }

    [QemuGccFact]
    public void Debians_QEMU_realizes_Doorbells_edu_through_VFIO_under_doorbell_exec()
    {
        // QEMU opens the container and group, SET_IOMMU, maps all its guest RAM with MAP_DMA, gets the device fd,
        // reads regions, config and IRQ info, wires INTx/ERR/REQ eventfds and realizes the device: its monitor lists it.
        var exec = Path.Combine(ServeRig.RepoRoot, "scripts", "doorbell-exec");
        var qemu = Doorbell.Tests.Qtest.QemuPeer.Binary!;
        var r = ServeRig.Run("/bin/sh", ["-c", $"printf 'info pci\\nquit\\n' | '{exec}' -- '{qemu}' -M virt,gic-version=3 -cpu cortex-a57 -m 128M -accel tcg -nodefaults -display none -S -monitor stdio -device vfio-pci,host=0000:00:02.0"], null, 180_000);
        Assert.True(r.Exit == 0, r.Stdout + r.Stderr);
        Assert.Contains("PCI device 1234:11e8", r.Stdout); // Doorbell's edu, re-created inside QEMU's guest
        Assert.Contains("BAR0: 32 bit memory", r.Stdout);
        Assert.Contains("32768 pinned page(s)", r.Stderr); // 128 MiB of guest RAM pinned through type1, released at exit
        Assert.DoesNotContain("failed", r.Stderr);
    }

    [GccFact]
    public void The_C_bench_splits_one_MSI_into_hops_with_the_servers_stamps()
    {
        // --bench 1100: every case runs (after its warm-up), and the loop with the server's stamps pairs each store with
        // its MSI-X and eventfd signal, so the hops and the MSI-X -> eventfd readable figure are printed.
        var socket = ServeRig.TempSocket();
        using var server = StartServer(socket);
        var r = ServeRig.Run(ServeRig.Driver, ["--bench", "1100"], ServeRig.Env(socket), 120_000); // 4400 stamps: two replies
        Assert.True(r.Exit == 0, r.Stdout + r.Stderr);
        Assert.Contains("BENCH 1100 iterations per case", r.Stdout);
        Assert.DoesNotContain("do not pair up", r.Stdout);
        foreach (var row in new[] { "doorbell store -> device DMA -> MSI-X -> eventfd readable", "bare eventfd round trip", "bare eventfd one way",
            "hop: store (trap, send) -> server has it off the socket", "hop: -> device DMA done, MSI-X issued",
            "hop: MSI-X -> SMMU -> ITS -> LPI -> handler signals eventfd", "hop: eventfd write(2) -> readable in this process",
            "MSI-X -> eventfd readable in this process" })
        {
            var line = r.Stdout.Split('\n').SingleOrDefault(l => l.Contains(row, StringComparison.Ordinal));
            Assert.True(line is not null, $"no row '{row}' in:\n{r.Stdout}");
            var min = double.Parse(line!.Split(" min ")[1].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
            Assert.True(min >= 0, line); // stamps of one clock, in order: no hop is negative
        }
        Assert.Contains("BENCH ratio MSI-X -> eventfd readable / bare one way (median)", r.Stdout);
        Assert.EndsWith("PASS\n", r.Stdout);
    }

    [GccFact]
    public void Small_DMA_buffers_are_shared_with_the_server_and_DOORBELL_DMA_SHARE_0_keeps_process_vm()
    {
        // The driver's 64 KiB buffer is moved onto a sealed memfd at MAP_DMA: the device's DMA is then a copy through
        // the server's mapping (dma_bytes_shared), the bytes still land in the driver's memory (it checks them, also
        // after a fork and after a munmap + new buffer at the same address), and the mapping goes with the client.
        foreach (var share in new[] { true, false })
        {
            var socket = ServeRig.TempSocket();
            using var server = StartServer(socket);
            var env = ServeRig.Env(socket);
            if (!share) env["DOORBELL_DMA_SHARE"] = "0";
            var r = ServeRig.Run(ServeRig.Driver, [], env, 120_000);
            Assert.True(r.Exit == 0, r.Stdout + r.Stderr);
            Assert.Contains("fork: the child's writes stay in the child; a new buffer at the same address gets the device's DMA", r.Stdout);
            using var probe = new RawClient(socket);
            var stats = probe.Stats();
            for (var i = 0; i < 200 && !stats.Contains("clients=1\n", StringComparison.Ordinal); i++) { Thread.Sleep(10); stats = probe.Stats(); } // the driver's release
            long Stat(string key) => long.Parse(stats.Split('\n').First(l => l.StartsWith(key + "=", StringComparison.Ordinal))[(key.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            Assert.True(Stat("dma_bytes_written") > 0, stats);
            if (share) Assert.True(Stat("dma_bytes_shared") == Stat("dma_bytes_read") + Stat("dma_bytes_written"), stats);
            else Assert.Equal(0, Stat("dma_bytes_shared"));
            Assert.Equal(0, Stat("shared_windows")); // the client is gone: its windows and mappings with it
        }
    }

    [Fact]
    public void Latency_stamps_belong_to_one_client_at_a_time_and_end_with_it()
    {
        var socket = ServeRig.TempSocket();
        using var server = StartServer(socket);
        using var a = new RawClient(socket);
        var b = new RawClient(socket);
        Assert.Equal(0, a.Hello());
        Assert.Equal(0, b.Hello());
        Assert.Equal(0, a.Call(ServeOp.Stamps, a0: 1)!.Value.Ret);
        Assert.Equal(-Doorbell.Errno.EBUSY, b.Call(ServeOp.Stamps, a0: 1)!.Value.Ret);
        Assert.Equal(-Doorbell.Errno.EINVAL, b.Call(ServeOp.Stamps, a0: 0)!.Value.Ret); // not b's to stop
        Assert.Equal(-Doorbell.Errno.EINVAL, a.Call(ServeOp.Stamps, a0: 3)!.Value.Ret);
        var trace = server.Kernel.Machine.Trace;
        Assert.True(trace.IsOn(Doorbell.Tracing.TraceCategory.PciMsi));
        Assert.Equal(-Doorbell.Errno.EINVAL, a.Call(ServeOp.Stamps, a0: 2)!.Value.Ret); // still stamping: nothing to read yet
        Assert.Equal(0, a.Call(ServeOp.Stamps, a0: 0)!.Value.Ret); // nothing happened in between
        var read = a.Call(ServeOp.Stamps, a0: 2, a1: 0)!.Value;
        Assert.Equal(0, read.Ret);
        Assert.Empty(read.Payload);
        Assert.Equal(-Doorbell.Errno.EINVAL, b.Call(ServeOp.Stamps, a0: 2)!.Value.Ret); // a's stamps are not b's to read
        Assert.False(trace.IsOn(Doorbell.Tracing.TraceCategory.PciMsi)); // the trace is as it was
        Assert.Equal(0, b.Call(ServeOp.Stamps, a0: 1)!.Value.Ret);
        b.Dispose(); // a client that goes away while stamping ends it
        for (var i = 0; i < 200 && trace.IsOn(Doorbell.Tracing.TraceCategory.PciMsi); i++) Thread.Sleep(10);
        Assert.False(trace.IsOn(Doorbell.Tracing.TraceCategory.PciMsi));
        Assert.Equal(0, a.Call(ServeOp.Stamps, a0: 1)!.Value.Ret);
    }

    [Fact]
    public void Map_dma_checks_the_clients_range_like_pinning_does_without_touching_its_pages()
    {
        // this process's own mappings: a read-only one, a writable one, and a hole below the lowest mapping
        var maps = File.ReadAllLines("/proc/self/maps").Select(l => l.Split(' ', 3)).Select(p =>
        {
            var r = p[0].Split('-');
            return (Start: Convert.ToUInt64(r[0], 16), End: Convert.ToUInt64(r[1], 16), Perms: p[1]);
        }).ToList();
        var ro = maps.First(m => m.Perms.StartsWith("r-", StringComparison.Ordinal));
        var rw = maps.First(m => m.Perms.StartsWith("rw", StringComparison.Ordinal));
        var pid = Environment.ProcessId;
        Assert.True(ServerNative.RangeMapped(pid, ro.Start, 4096, write: false));
        Assert.False(ServerNative.RangeMapped(pid, ro.Start, 4096, write: true));   // FOLL_WRITE on a read-only VMA
        Assert.True(ServerNative.RangeMapped(pid, rw.Start, rw.End - rw.Start, write: true));
        Assert.False(ServerNative.RangeMapped(pid, maps[0].Start - 0x1000, 0x2000, write: false)); // starts in a hole
        Assert.False(ServerNative.RangeMapped(pid, 0x1000, 0x1000, write: false));
    }

    [Fact]
    public void Malformed_packets_disconnect_only_that_client()
    {
        var socket = ServeRig.TempSocket();
        using var server = StartServer(socket);
        foreach (var bad in new[]
        {
            new byte[3], // truncated header
            Packet(ServeOp.Hello, 0, 0, 0, ServeProtocol.Version, [], lengthFix: 5), // length mismatch
            Packet((ServeOp)99, 0, 0, 0, 0, []), // unknown op
            Packet(ServeOp.Open, 0, 0, 0, 0, []), // not HELLO first
            Packet(ServeOp.Hello, 0, 0, 0, ServeProtocol.Version, [], reserved: 1),
        })
        {
            using var c = new RawClient(socket);
            Assert.True(c.SendRaw(bad) >= 0);
            Assert.Null(c.Receive()); // clean disconnect
        }
        using var ok = new RawClient(socket);
        Assert.Equal(0, ok.Hello());
        Assert.Contains("clients=1\n", ok.Stats());
    }

    static byte[] Packet(ServeOp op, int fd, ulong a0, ulong a1, ulong a2, byte[] payload, int lengthFix = 0, uint reserved = 0)
    {
        var b = new byte[ServeProtocol.RequestHeader + payload.Length];
        ServeProtocol.Encode(b, op, fd, a0, a1, a2, 0, payload);
        if (lengthFix != 0) BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(40), (uint)(payload.Length + lengthFix));
        if (reserved != 0) BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(44), reserved);
        return b;
    }

    [Fact]
    public void Bad_requests_get_Linux_errnos_and_odd_close_orders_release_everything()
    {
        var socket = ServeRig.TempSocket();
        using var server = StartServer(socket);
        var group = server.Kernel.FindFunction("0000:00:01.0")!.Group.Id;
        using var c = new RawClient(socket);
        Assert.Equal(0, c.Hello());
        Assert.Equal(-Errno.EINVAL, c.Call(ServeOp.Hello, a2: ServeProtocol.Version)!.Value.Ret); // HELLO twice
        Assert.Equal(-Errno.EBADF, c.Call(ServeOp.Close, fd: 77)!.Value.Ret);
        Assert.Equal(-Errno.ENOENT, c.Call(ServeOp.Open, a0: 1, a1: 999)!.Value.Ret);
        var container = (int)c.Call(ServeOp.Open, a0: 0)!.Value.Ret;
        var g = (int)c.Call(ServeOp.Open, a0: 1, a1: (ulong)group)!.Value.Ret;
        Assert.Equal(-Errno.EBUSY, c.Call(ServeOp.Open, a0: 1, a1: (ulong)group)!.Value.Ret); // one open file per group
        Assert.Equal(-Errno.EINVAL, c.Call(ServeOp.Ioctl, container, a0: 0xdead, a1: 1, a2: 0)!.Value.Ret); // unknown ioctl, no IOMMU driver yet
        Assert.Equal(0, c.Call(ServeOp.Ioctl, g, a0: VfioIoctl.GroupSetContainer, payload: BitConverter.GetBytes(container))!.Value.Ret);
        Assert.Equal(0, c.Call(ServeOp.Ioctl, container, a0: VfioIoctl.SetIommu, a1: 1, a2: VfioExtension.Type1v2Iommu)!.Value.Ret);
        Assert.Equal(-Errno.ENOTTY, c.Call(ServeOp.Ioctl, container, a0: 0xdead, a1: 1, a2: 0)!.Value.Ret); // unknown to type1
        // MAP_DMA of memory this (raw) client does not have: EFAULT, as pinning an unmapped vaddr
        var map = new byte[32];
        MemoryMarshal.Write(map, new VfioIommuType1DmaMap { Argsz = 32, Flags = 3, Vaddr = 0x1000, Iova = 0x1_0000_0000, Size = 0x1000 });
        Assert.Equal(-Errno.EFAULT, c.Call(ServeOp.Ioctl, container, a0: VfioIoctl.IommuMapDma, payload: map)!.Value.Ret);
        var dev = (int)c.Call(ServeOp.Ioctl, g, a0: VfioIoctl.GroupGetDeviceFd, payload: "0000:00:01.0\0"u8.ToArray())!.Value.Ret;
        Assert.True(dev >= 0);
        Assert.Equal(-Errno.EINVAL, c.Call(ServeOp.Pread, dev, a0: 0, a1: 1UL << 40)!.Value.Ret); // absurd count
        // SET_IRQS naming an eventfd without passing it: EBADF
        var set = new byte[24];
        MemoryMarshal.Write(set, new VfioIrqSet { Argsz = 24, Flags = VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, Index = VfioPciIndex.IrqMsix, Start = 0, Count = 1 });
        BinaryPrimitives.WriteInt32LittleEndian(set.AsSpan(20), 5);
        Assert.Equal(-Errno.EBADF, c.Call(ServeOp.Ioctl, dev, a0: VfioIoctl.DeviceSetIrqs, payload: set)!.Value.Ret);
        // a live BAR mapping, used, then munmapped: the next access is a SIGSEGV (EFAULT)
        const ulong va = 0x7e00_0000_0000;
        Assert.Equal((long)va, c.Call(ServeOp.Mmap, dev, a0: 0, a1: 0x4000, a2: va, a3: 3 | 0x100)!.Value.Ret);
        var rd = c.Call(ServeOp.MmioRead, a0: va, a1: 4)!.Value;
        Assert.Equal(0, rd.Ret);
        Assert.Equal(0xD0B1_0001u, BinaryPrimitives.ReadUInt32LittleEndian(rd.Payload));
        Assert.Equal(0, c.Call(ServeOp.Munmap, a0: va, a1: 0x4000)!.Value.Ret);
        Assert.Equal(-Errno.EFAULT, c.Call(ServeOp.MmioRead, a0: va, a1: 4)!.Value.Ret);
        Assert.Equal(-Errno.EINVAL, c.Call(ServeOp.MmioRead, a0: va, a1: 3)!.Value.Ret);
        // an eventfd the client never reads: the server keeps signalling it and never blocks
        using var efd = EventFd.Create();
        BinaryPrimitives.WriteInt32LittleEndian(set.AsSpan(20), efd.Fd);
        Assert.Equal(0, c.Call(ServeOp.Ioctl, dev, a0: VfioIoctl.DeviceSetIrqs, payload: set, fds: [efd.Fd])!.Value.Ret);
        var trigger = new byte[20];
        MemoryMarshal.Write(trigger, new VfioIrqSet { Argsz = 20, Flags = VfioIrqSetFlags.DataNone | VfioIrqSetFlags.ActionTrigger, Index = VfioPciIndex.IrqMsix, Start = 0, Count = 1 });
        for (var i = 0; i < 500; i++) Assert.Equal(0, c.Call(ServeOp.Ioctl, dev, a0: VfioIoctl.DeviceSetIrqs, payload: trigger)!.Value.Ret);
        Assert.True(efd.TryRead(out var count) && count == 500, $"eventfd count {count}");
        // odd close order: container, then group (device still open), then device
        Assert.Equal(0, c.Call(ServeOp.Close, container)!.Value.Ret);
        Assert.Equal(0, c.Call(ServeOp.Close, g)!.Value.Ret);
        Assert.Contains("fds=1 ", c.Stats());
        Assert.Equal(0, c.Call(ServeOp.Close, dev)!.Value.Ret);
        Assert.Contains("fds=0 locked_pages=0", c.Stats());
        // and the group opens again
        Assert.True(c.Call(ServeOp.Open, a0: 1, a1: (ulong)group)!.Value.Ret >= 0);
    }

    [Fact]
    public void The_message_decoder_never_throws_and_round_trips_what_it_accepts()
    {
        Gen.Byte.Array[0, 120].Sample(bytes =>
        {
            if (ServeProtocol.TryDecode(bytes, out var req, out var error))
            {
                Assert.Null(error);
                Assert.Equal(bytes.Length - ServeProtocol.RequestHeader, req.Payload.Length);
            }
            else Assert.False(string.IsNullOrEmpty(error));
        }, iter: 20_000);
        Gen.Select(Gen.UInt[1, 11], Gen.Int, Gen.ULong, Gen.ULong, Gen.Byte.Array[0, 64]).Sample(t =>
        {
            var (op, fd, a0, a1, payload) = t;
            var buf = new byte[ServeProtocol.RequestHeader + payload.Length];
            var n = ServeProtocol.Encode(buf, (ServeOp)op, fd, a0, a1, 7, 9, payload);
            Assert.True(ServeProtocol.TryDecode(buf.AsSpan(0, n), out var r, out _));
            Assert.Equal((ServeOp)op, r.Op);
            Assert.Equal(fd, r.Fd);
            Assert.Equal(a0, r.A0);
            Assert.Equal(a1, r.A1);
            Assert.True(r.Payload.SequenceEqual(payload));
        });
    }

    [Fact]
    public void Random_requests_on_a_live_server_never_take_it_down()
    {
        var socket = ServeRig.TempSocket();
        using var server = StartServer(socket);
        var sw = Stopwatch.StartNew();
        Gen.Select(Gen.UInt[0, 12], Gen.Int[-2, 8], Gen.ULong[0, 0x2_0000], Gen.ULong[0, 16], Gen.Byte.Array[0, 40]).Array[1, 30].Sample(reqs =>
        {
            using var c = new RawClient(socket);
            c.Hello();
            foreach (var (op, fd, a0, a1, payload) in reqs)
            {
                var buf = new byte[ServeProtocol.RequestHeader + payload.Length];
                var n = ServeProtocol.Encode(buf, (ServeOp)op, fd, a0 % 3 == 0 ? a0 : VfioIoctl.Io((uint)(a0 % 20)), a1, a1 * 4096, 0x7e00_0000_0000, payload);
                // A posted store has no reply (as on PCIe); every other request gets one or a disconnect.
                if (c.SendRaw(buf.AsSpan(0, n)) < 0 || ((ServeOp)op != ServeOp.MmioWritePosted && c.Receive() is null)) break;
            }
        }, iter: 150);
        using var after = new RawClient(socket);
        Assert.Equal(0, after.Hello());
        Assert.Contains("locked_pages=0\n", after.Stats());
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60));
    }
}
