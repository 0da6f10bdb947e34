using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Server;

namespace Doorbell.Fuzz;

/// <summary>
/// The <c>doorbell serve</c> socket: a real server (in this process, on a unix SOCK_SEQPACKET socket in a temporary
/// directory) gets well-formed, malformed, truncated and random packets from up to three concurrent clients, with
/// descriptors (eventfds, /dev/null, pipe ends) attached to any packet in any number and order, and clients that
/// vanish mid-conversation. Oracles: every request gets, within a bound, either a well-formed reply whose value is 0,
/// a count or a Linux errno, or a clean disconnect — a malformed packet always a disconnect; no handler throws (the
/// server's "internal error" line); after every client is gone the server counts no client, no locked page and no
/// aperture window, and a new client is served.
/// Input: a stream of choices (past its end every choice is zero).
/// </summary>
public sealed partial class ServeTarget : FuzzTarget
{
    public override string Name => "serve";
    public override string Description => "doorbell serve's socket: malformed/truncated/random packets and descriptors from several clients";

    const int MaxPackets = 48;
    static readonly uint MaxOp = (uint)Enum.GetValues<ServeOp>().Max();
    const int ReplyTimeoutMs = 20_000; // wall clock: the machine is shared, and a hang is minutes, not seconds

    sealed class Server : IDisposable
    {
        public readonly DoorbellServer Instance;
        public readonly StringWriter LogText = new();
        public readonly TextWriter Log;
        public readonly string Socket;
        public readonly nint Buffer;
        public const ulong BufferSize = 0x1_0000;
        readonly DirectoryInfo _dir;

        public Server()
        {
            _dir = Directory.CreateTempSubdirectory("doorbell-fuzz-serve.");
            Socket = Path.Combine(_dir.FullName, "vfio.sock");
            Log = TextWriter.Synchronized(LogText);
            Instance = new DoorbellServer(new ServeOptions { SocketPath = Socket, Log = Log });
            unsafe { Buffer = (nint)NativeMemory.AlignedAlloc((nuint)BufferSize, 4096); }
        }

        public void Dispose()
        {
            Instance.Dispose();
            try { _dir.Delete(true); } catch (IOException) { }
            unsafe { NativeMemory.AlignedFree((void*)Buffer); }
        }
    }

    static readonly Lazy<Server> Shared = new(() =>
    {
        var s = new Server();
        AppDomain.CurrentDomain.ProcessExit += (_, _) => s.Dispose();
        return s;
    });

    static readonly uint[] Requests =
    [
        VfioIoctl.GetApiVersion, VfioIoctl.CheckExtension, VfioIoctl.SetIommu, VfioIoctl.GroupGetStatus, VfioIoctl.GroupSetContainer,
        VfioIoctl.GroupUnsetContainer, VfioIoctl.GroupGetDeviceFd, VfioIoctl.DeviceGetInfo, VfioIoctl.DeviceGetRegionInfo,
        VfioIoctl.DeviceGetIrqInfo, VfioIoctl.DeviceSetIrqs, VfioIoctl.DeviceReset, VfioIoctl.DeviceIoeventfd, VfioIoctl.IommuGetInfo,
        VfioIoctl.IommuMapDma, VfioIoctl.IommuUnmapDma, VfioIoctl.DevicePciHotReset, 0xC0DE_0000,
    ];

    sealed class Client(int fd)
    {
        public int Fd = fd;
        public bool Hello;
        public readonly List<int> RemoteFds = [];
    }

    /// <summary>What the inputs reached (so that tests can see success paths are hit, not only rejections).</summary>
    public sealed class Counters
    {
        public long Successes, Errnos, Disconnects, MalformedDisconnects, DeviceFds, Posted;
    }

    public Counters Checks { get; } = new();

    public long LastPackets { get; private set; }
    int _lastLength = -1;

    public override long Units(ReadOnlySpan<byte> input) => input.Length == _lastLength ? LastPackets : Math.Min(MaxPackets, 1 + input.Length / 12);

    public override void Run(ReadOnlySpan<byte> input)
    {
        var server = Shared.Value;
        var r = new ChoiceReader(input);
        var clients = new List<Client>();
        var rx = new byte[ServeProtocol.ReplyHeader + ServeProtocol.MaxPacket];
        var packets = 0;
        try
        {
            while (!r.Done && packets < MaxPackets)
            {
                var which = r.Byte() % 4;
                if (which >= clients.Count || clients[which].Fd < 0)
                {
                    var fd = ServerNative.Connect(server.Socket);
                    if (fd < 0) throw new FuzzFinding($"a new client could not connect: errno {-fd}");
                    clients.Add(new Client(fd));
                    which = clients.Count - 1;
                }
                var c = clients[which];
                packets++;
                // Mostly, a new client first sets up validly (HELLO, container, group, type1v2, device) so that what
                // follows reaches the VFIO success paths; each step can still be bent or skipped by the input.
                if (!c.Hello && c.RemoteFds.Count == 0 && r.Byte() % 4 != 0)
                {
                    if (!Prologue(c, server, rx, ref r)) { Close(c); continue; }
                    continue;
                }
                var kind = r.Byte() % 16;
                if (kind == 0) { Close(c); continue; }     // the client vanishes (perhaps mid-conversation)
                var (packet, malformed) = kind < 4 ? Malformed(ref r) : WellFormed(c, server, ref r);
                var fds = Descriptors(ref r);
                var sent = ServerNative.SendWithFds(c.Fd, packet, fds);
                foreach (var f in fds) _ = Native.close(f);
                if (sent < 0)
                {
                    // EMSGSIZE for an oversized packet; EPIPE/ECONNRESET after the server dropped us: both fine.
                    if (-sent is not (90 or 32 or 104)) throw new FuzzFinding($"sendmsg failed with errno {-sent}");
                    Close(c);
                    continue;
                }
                // A posted store has no reply: the next request of this client shows whether the server kept up.
                if (!malformed && BinaryPrimitives.ReadUInt32LittleEndian(packet) == (uint)ServeOp.MmioWritePosted) { Checks.Posted++; continue; }
                if (r.Byte() % 12 == 0) { Close(c); continue; }   // gone before the reply
                var n = Receive(c.Fd, rx, out var timedOut);
                if (timedOut) throw new FuzzFinding($"no reply and no disconnect within {ReplyTimeoutMs / 1000} s (op {(packet.Length >= 4 ? BinaryPrimitives.ReadUInt32LittleEndian(packet) : 0)}, {packet.Length} bytes)");
                if (n <= 0) { Close(c); if (malformed) Checks.MalformedDisconnects++; else Checks.Disconnects++; continue; }      // a clean disconnect
                if (malformed) throw new FuzzFinding($"a malformed packet ({packet.Length} bytes) got a reply instead of a disconnect");
                if (CheckReply(rx.AsSpan(0, n), packet, c) >= 0) Checks.Successes++; else Checks.Errnos++;
            }
        }
        finally
        {
            foreach (var c in clients) Close(c);
        }
        AfterAll(server);
        LastPackets = packets;
        _lastLength = input.Length;
    }

    /// <summary>HELLO, OPEN container, OPEN group, GROUP_SET_CONTAINER, SET_IOMMU(type1v2), GET_DEVICE_FD — the sequence a
    /// VFIO program starts with (each reply checked like any other). False when the server dropped the client.</summary>
    bool Prologue(Client c, Server server, byte[] rx, ref ChoiceReader r)
    {
        var group = (ulong)(server.Instance.Kernel.FindFunction(r.Bit() ? "0000:00:01.0" : "0000:00:02.0")?.Group.Id ?? 0);
        var steps = 3 + r.Byte() % 4;
        long container = -1, grp = -1;
        for (var step = 0; step < steps; step++)
        {
            byte[] payload = [];
            ulong a0 = 0, a1 = 0, a2 = 0;
            var fd = -1;
            var op = ServeOp.Ioctl;
            switch (step)
            {
                case 0: op = ServeOp.Hello; a0 = r.Bit() ? ulong.MaxValue : 64UL << 12; a2 = ServeProtocol.Version; break;
                case 1: op = ServeOp.Open; break;
                case 2: op = ServeOp.Open; a0 = 1; a1 = group; break;
                case 3: fd = (int)grp; a0 = VfioIoctl.GroupSetContainer; payload = BitConverter.GetBytes((int)container); break;
                case 4: fd = (int)container; a0 = VfioIoctl.SetIommu; a1 = 1; a2 = VfioExtension.Type1v2Iommu; break;
                default: fd = (int)grp; a0 = VfioIoctl.GroupGetDeviceFd; payload = Encoding.ASCII.GetBytes(r.Bit() ? "0000:00:01.0\0" : "0000:00:02.0\0"); break;
            }
            var packet = new byte[ServeProtocol.RequestHeader + payload.Length];
            ServeProtocol.Encode(packet, op, fd, a0, a1, a2, 0, payload);
            if (ServerNative.Send(c.Fd, packet) < 0) return false;
            var n = Receive(c.Fd, rx, out var timedOut);
            if (timedOut) throw new FuzzFinding($"no reply and no disconnect within {ReplyTimeoutMs / 1000} s (set-up step {step})");
            if (n <= 0) return false;
            var ret = CheckReply(rx.AsSpan(0, n), packet, c);
            if (ret >= 0) Checks.Successes++; else Checks.Errnos++;
            if (step == 1) container = ret;
            if (step == 2) grp = ret;
            if (step == 5 && ret >= 0) Checks.DeviceFds++;
        }
        return true;
    }

    static void Close(Client c)
    {
        if (c.Fd >= 0) _ = Native.close(c.Fd);
        c.Fd = -1;
    }

    static int Receive(int fd, byte[] rx, out bool timedOut)
    {
        timedOut = false;
        var p = new Native.PollFd { Fd = fd, Events = Native.POLLIN };
        int ready;
        do ready = Native.poll(ref p, 1, ReplyTimeoutMs);
        while (ready < 0 && Marshal.GetLastPInvokeError() == 4);
        if (ready == 0) { timedOut = true; return -1; }
        Span<int> fds = stackalloc int[16];
        var n = ServerNative.Receive(fd, rx, fds, out var count, out _);
        for (var i = 0; i < count; i++) _ = Native.close(fds[i]);
        return n;
    }

    static long CheckReply(ReadOnlySpan<byte> reply, byte[] request, Client c)
    {
        if (reply.Length < ServeProtocol.ReplyHeader) throw new FuzzFinding($"a {reply.Length}-byte reply is shorter than the reply header");
        var ret = BinaryPrimitives.ReadInt64LittleEndian(reply);
        var len = BinaryPrimitives.ReadUInt32LittleEndian(reply[8..]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(reply[12..]) != 0) throw new FuzzFinding("reply reserved word is not zero");
        if (len != reply.Length - ServeProtocol.ReplyHeader) throw new FuzzFinding($"reply payload length {len} does not match the packet ({reply.Length - ServeProtocol.ReplyHeader})");
        var op = (ServeOp)BinaryPrimitives.ReadUInt32LittleEndian(request);
        if (ret < -133) throw new FuzzFinding($"{op} returned {ret}: not a Linux errno");
        if (op == ServeOp.Hello && ret == 0) c.Hello = true;
        if (op == ServeOp.Open && ret >= 0) c.RemoteFds.Add((int)ret);
        // Descriptors the server hands out (OPEN, GET_DEVICE_FD) are what later requests aim at.
        if (ret is >= 0 and < 1 << 20 && ((op == ServeOp.Ioctl && BinaryPrimitives.ReadUInt64LittleEndian(request.AsSpan(8)) == VfioIoctl.GroupGetDeviceFd)))
            c.RemoteFds.Add((int)ret);
        return ret;
    }

    static void AfterAll(Server server)
    {
        // Every client is gone: once the server has seen the disconnects it holds nothing for them.
        var fd = ServerNative.Connect(server.Socket);
        if (fd < 0) throw new FuzzFinding($"no new client can connect after the input: errno {-fd}");
        try
        {
            var rx = new byte[ServeProtocol.ReplyHeader + 65536];
            var req = new byte[ServeProtocol.RequestHeader];
            ServeProtocol.Encode(req, ServeOp.Stats, -1);
            string stats = "";
            for (var attempt = 0; attempt < 400; attempt++)
            {
                if (ServerNative.Send(fd, req) < 0) throw new FuzzFinding("the STATS request could not be sent");
                var n = Receive(fd, rx, out var timedOut);
                if (timedOut || n < ServeProtocol.ReplyHeader) throw new FuzzFinding("a new client's STATS got no reply");
                stats = Encoding.ASCII.GetString(rx, ServeProtocol.ReplyHeader, n - ServeProtocol.ReplyHeader);
                if (stats.Contains("clients=1\n", StringComparison.Ordinal) && stats.Contains("\nlocked_pages=0\n", StringComparison.Ordinal)
                    && stats.Contains("\nwindows=0\n", StringComparison.Ordinal)) break;
                Thread.Sleep(5);
            }
            if (!stats.Contains("clients=1\n", StringComparison.Ordinal)) throw new FuzzFinding($"clients still counted after every client left: {stats.Split('\n')[0]}");
            if (!stats.Contains("\nlocked_pages=0\n", StringComparison.Ordinal)) throw new FuzzFinding("pages still locked after every client left");
            if (!stats.Contains("\nwindows=0\n", StringComparison.Ordinal)) throw new FuzzFinding("aperture windows still open after every client left");
            foreach (var line in stats.Split('\n'))
                if (line.StartsWith("release ", StringComparison.Ordinal) && !(line.Contains(" fds_after=0 ", StringComparison.Ordinal) && line.Contains(" locked_after=0 ", StringComparison.Ordinal) && line.EndsWith(" pinned_after=0", StringComparison.Ordinal)))
                    throw new FuzzFinding($"a released client still held something: {line}");
        }
        finally
        {
            _ = Native.close(fd);
        }
        var log = server.LogText.ToString();
        var i = log.IndexOf("internal error", StringComparison.Ordinal);
        if (i >= 0) throw new FuzzFinding("a request handler threw: " + log[Math.Max(0, log.LastIndexOf('\n', i) + 1)..].Split('\n')[0]);
        lock (server.Log) server.LogText.GetStringBuilder().Clear();
    }

    // ----- packets -----------------------------------------------------------------------------------------------

    static (byte[] Packet, bool Malformed) Malformed(ref ChoiceReader r)
    {
        var header = new byte[ServeProtocol.RequestHeader + 64];
        ServeProtocol.Encode(header, (ServeOp)(1 + r.Byte() % MaxOp), r.Byte() % 8, r.U64(), r.U64(), r.U64(), r.U64());
        switch (r.Byte() % 5)
        {
            case 0: return (header[..(r.Byte() % ServeProtocol.RequestHeader)], true);                    // truncated header
            case 1: BinaryPrimitives.WriteUInt32LittleEndian(header, r.Bit() ? 0u : MaxOp + 1 + r.U16()); return (header[..ServeProtocol.RequestHeader], true); // unknown op
            case 2: BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(44), 1u + r.U16()); return (header[..ServeProtocol.RequestHeader], true);  // reserved bits
            case 3:                                                                                               // length mismatch
                var actual = r.Byte() % 64;
                var claimed = (uint)actual + 1 + r.U16();
                if (r.Bit() && actual > 0) claimed = (uint)(actual - 1 - r.Byte() % actual);
                BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(40), claimed);
                return (header[..(ServeProtocol.RequestHeader + actual)], true);
            default:                                                                                              // larger than any packet the server takes
                var big = new byte[ServeProtocol.MaxPacket + 1 + r.Byte()];
                ServeProtocol.Encode(big, ServeOp.Pwrite, 3, 0, 0, 0, 0, new byte[big.Length - ServeProtocol.RequestHeader]);
                return (big, true);
        }
    }

    static (byte[] Packet, bool Malformed) WellFormed(Client c, Server server, ref ChoiceReader r)
    {
        ServeOp op;
        if (!c.Hello && r.Byte() % 4 != 0) op = ServeOp.Hello;
        else op = (ServeOp)(1 + r.Byte() % MaxOp);
        var fd = c.RemoteFds.Count > 0 && r.Byte() % 5 != 0 ? c.RemoteFds[r.Byte() % c.RemoteFds.Count] : (int)(sbyte)r.Byte();
        ulong a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        byte[] payload = [];
        var buf = (ulong)server.Buffer;
        switch (op)
        {
            case ServeOp.Hello:
                a0 = r.Bit() ? ulong.MaxValue : (ulong)r.Byte() << 12; a1 = (ulong)r.Byte() & 1; a2 = r.Byte() % 8 == 0 ? r.Byte() : ServeProtocol.Version;
                break;
            case ServeOp.Open:
                a0 = (ulong)r.Byte() % 3; a1 = r.Byte() % 4 == 0 ? r.U64() : (ulong)r.Byte() % 8;
                break;
            case ServeOp.Ioctl:
                a0 = r.Byte() % 8 == 0 ? r.U32() : Requests[r.Byte() % Requests.Length];
                a1 = r.Byte() % 3 == 0 ? 1UL : 0;
                a2 = r.Byte() % 2 == 0 ? (ulong)r.Byte() % 12 : r.U64();
                payload = a1 != 0 ? [] : IoctlArgument((uint)a0, buf, ref r);
                break;
            case ServeOp.Pread:
            case ServeOp.Pwrite:
                a0 = ((ulong)r.Byte() % 10 << 40) + (r.Bit() ? r.U16() : (ulong)r.Byte());
                a1 = r.Byte() % 8 == 0 ? r.U64() : (ulong)(1 << (r.Byte() % 4));
                if (op == ServeOp.Pwrite) payload = Bytes(ref r, r.Byte() % 8 == 0 ? r.U16() % 4096 : 1 << (r.Byte() % 4));
                break;
            case ServeOp.Mmap:
                a0 = (ulong)r.Byte() % 10 << 40; a1 = r.Bit() ? 0x1000UL << (r.Byte() % 6) : r.U64(); a2 = r.Bit() ? 0x7f00_0000_0000UL + ((ulong)r.U16() << 12) : r.U64(); a3 = (ulong)r.Byte();
                break;
            case ServeOp.Munmap:
                a0 = r.Bit() ? 0x7f00_0000_0000UL + ((ulong)r.U16() << 12) : r.U64(); a1 = r.Bit() ? 0x1000 : r.U64();
                break;
            case ServeOp.Stamps:
                a0 = r.Byte() % 4 == 0 ? r.U64() : (ulong)r.Byte() % 3; a1 = r.Bit() ? 0 : r.U64(); // start / stop / read, sometimes nonsense
                break;
            case ServeOp.MmioRead:
            case ServeOp.MmioWrite:
            case ServeOp.MmioWritePosted:
                a0 = r.Bit() ? 0x7f00_0000_0000UL + ((ulong)r.U16() << 4) : r.U64(); a1 = (ulong)r.Byte() % 10; a2 = r.U64();
                break;
            default:
                a0 = r.U64();
                if (r.Bit()) payload = Bytes(ref r, r.Byte());
                break;
        }
        var packet = new byte[ServeProtocol.RequestHeader + payload.Length];
        ServeProtocol.Encode(packet, op, fd, a0, a1, a2, a3, payload);
        return (packet, false);
    }

    static byte[] IoctlArgument(uint request, ulong buffer, ref ChoiceReader r)
    {
        if (request == VfioIoctl.IommuMapDma || request == VfioIoctl.IommuUnmapDma)
        {
            var b = new byte[request == VfioIoctl.IommuMapDma ? 32 : 24];
            BinaryPrimitives.WriteUInt32LittleEndian(b, r.Byte() % 8 == 0 ? r.U32() : (uint)b.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), r.Byte() % 8 == 0 ? r.U32() : request == VfioIoctl.IommuMapDma ? 3u : 0);
            var size = r.Byte() % 8 == 0 ? r.U64() : 0x1000UL << (r.Byte() % 4);
            if (request == VfioIoctl.IommuMapDma)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), r.Byte() % 6 == 0 ? r.U64() : buffer + ((ulong)r.Byte() % 16 << 12));
                BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), (ulong)r.Byte() << 12);
                BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), size);
            }
            else
            {
                BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), (ulong)r.Byte() << 12);
                BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), size);
            }
            return b;
        }
        if (request == VfioIoctl.DeviceSetIrqs)
        {
            var count = (uint)(r.Byte() % 5);
            var b = new byte[20 + 4 * count + (uint)(r.Byte() % 8 == 0 ? r.Byte() % 8 : 0)];
            BinaryPrimitives.WriteUInt32LittleEndian(b, r.Byte() % 8 == 0 ? r.U32() : (uint)b.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), r.Byte() % 8 == 0 ? r.U32() : (r.Bit() ? VfioIrqSetFlags.DataEventFd : VfioIrqSetFlags.DataNone) | VfioIrqSetFlags.ActionTrigger);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), (uint)(r.Byte() % 6));
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(12), (uint)(r.Byte() % 4));
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16), r.Byte() % 8 == 0 ? r.U32() : count);
            for (var i = 0; i < count; i++) BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(20 + 4 * i), r.Bit() ? i : -1);
            return b;
        }
        if (request == VfioIoctl.GroupGetDeviceFd)
            return r.Bit() ? Encoding.ASCII.GetBytes((r.Bit() ? "0000:00:01.0" : "0000:00:02.0") + (r.Byte() % 4 == 0 ? "" : "\0")) : Bytes(ref r, r.Byte() % 40);
        var arg = Bytes(ref r, r.Byte() % 96);
        if (arg.Length >= 4 && r.Bit()) BinaryPrimitives.WriteUInt32LittleEndian(arg, (uint)arg.Length);
        return arg;
    }

    static byte[] Bytes(ref ChoiceReader r, int n)
    {
        var b = new byte[n];
        for (var i = 0; i < n; i++) b[i] = r.Byte();
        return b;
    }

    /// <summary>0–4 descriptors of several kinds for any packet (SCM_RIGHTS), in the input's order.</summary>
    static int[] Descriptors(ref ChoiceReader r)
    {
        var n = r.Byte() % 8;
        if (n > 4) return [];
        var fds = new List<int>();
        Span<int> p = stackalloc int[2];
        for (var i = 0; i < n; i++)
        {
            int fd;
            switch (r.Byte() % 3)
            {
                case 0: fd = Native.eventfd(0, Native.EFD_CLOEXEC); break;
                case 1: fd = Native.open("/dev/null", Native.O_RDWR | Native.O_CLOEXEC); break;
                default:
                    if (Native.pipe2(ref p[0], Native.O_CLOEXEC) != 0) { fd = -1; break; }
                    _ = Native.close(p[1]);
                    fd = p[0];
                    break;
            }
            if (fd >= 0) fds.Add(fd);
        }
        return [.. fds];
    }

    public override byte[] Generate(Random rng)
    {
        ArgumentNullException.ThrowIfNull(rng);
        var b = new byte[32 + rng.Next(600)];
        rng.NextBytes(b);
        return b;
    }


    static partial class Native
    {
        public const short POLLIN = 1;
        public const int EFD_CLOEXEC = 0x80000, O_RDWR = 2, O_CLOEXEC = 0x80000;

        [StructLayout(LayoutKind.Sequential)]
        public struct PollFd { public int Fd; public short Events; public short Revents; }

        [LibraryImport("libc", SetLastError = true)] public static partial int poll(ref PollFd fds, nuint n, int timeout);
        [LibraryImport("libc", SetLastError = true)] public static partial int close(int fd);
        [LibraryImport("libc", SetLastError = true)] public static partial int eventfd(uint initval, int flags);
        [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)] public static partial int open(string path, int flags);
        [LibraryImport("libc", SetLastError = true)] public static partial int pipe2(ref int fds, int flags);
    }
}
