using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Doorbell.Host.Kernel;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Tracing;

// `doorbell serve`: the host kernel on a board, serving VFIO to real processes over a unix socket. Each client
// (one connection = one process, identified by SO_PEERCRED) gets its own VfioProcess: descriptor table, mm,
// RLIMIT_MEMLOCK accounting. A client that disconnects (exit, kill -9, a malformed packet) has every descriptor
// closed as at process exit. The server never trusts a client: every packet is decoded defensively and any
// failure becomes an errno reply or a disconnect of that client only.
namespace Doorbell.Server;

public sealed class ServeOptions
{
    public required string SocketPath { get; init; }
    public string? BoardFile { get; init; }
    public bool AllowUnsafeInterrupts { get; init; }
    /// <summary>Which kernel's interrupt-isolation check VFIO type1 applies (`--isolation-era`; today's by default).</summary>
    public IsolationPolicyEra IsolationEra { get; init; } = IsolationPolicyEra.Today;
    public bool Strict { get; init; }
    /// <summary>Where connection and fault lines go (stderr by default).</summary>
    public TextWriter Log { get; init; } = Console.Error;
    /// <summary>Trace categories (`pci_msi,its_*`, as `doorbell trace-categories` lists) printed to the log as they
    /// happen, each line stamped with host wall-clock time in QEMU's log-backend format (pid@seconds.micros:) so a
    /// trace merges with QEMU's own `-trace` output into one timeline across both processes.</summary>
    public string? Trace { get; init; }
}

public sealed class DoorbellServer : IDisposable
{
    readonly ServeOptions _options;
    readonly HostKernel _kernel;
    readonly VfioHost _vfio;
    readonly ClientMemoryAperture _aperture;
    readonly StrictMonitor _strict;
    readonly Doorbell.Runtime.EventLoop _loop;
    readonly Thread _postedThread;
    readonly List<ClientSession> _sessions = [];
    readonly object _sessionsLock = new();
    readonly Thread _acceptThread;
    readonly int _listenFd;
    long _reportedStrict;
    long _smmuEventInterruptsSeen;
    long _reportedV2Faults;
    volatile bool _stopping;

    public DoorbellServer(ServeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        _strict = new StrictMonitor { Enabled = options.Strict };
        (_kernel, _aperture) = ServeBoard.Boot(options.BoardFile, _strict);
        _vfio = _kernel.BuildVfio(new VfioOptions { AllowUnsafeInterrupts = options.AllowUnsafeInterrupts, IsolationEra = options.IsolationEra });
        if (options.Trace is { } patterns) StartTrace(patterns);
        SysfsRoot = options.SocketPath + ".sysfs";
        SysfsTree.Write(SysfsRoot, _kernel);
        if (File.Exists(options.SocketPath)) File.Delete(options.SocketPath);
        _listenFd = ServerNative.Listen(options.SocketPath);
        if (_listenFd < 0) throw new IOException($"cannot listen on '{options.SocketPath}': errno {-_listenFd}");
        _loop = _kernel.Machine.Loop;
        Stamps = new LatencyStamps(_kernel.Machine.Trace);
        // Client threads run their requests as the loop's owner (RunAsOwner); this thread serves work other threads
        // post (none of the server's own paths posts today; eventfd waiters and timers will).
        _postedThread = new Thread(ServePosted) { IsBackground = true, Name = "doorbell-posted" };
        _postedThread.Start();
        _acceptThread = new Thread(AcceptLoop) { IsBackground = true, Name = "doorbell-accept" };
        _acceptThread.Start();
    }

    /// <summary>Live trace to the log. Host-side timestamps (this process is not a model): the machine's own
    /// virtual time stays in the events; the wall-clock stamp is only for lining up with another process.</summary>
    void StartTrace(string patterns)
    {
        var mask = TraceCategories.ParseMask(patterns, out var error) ?? throw new FormatException($"--trace: {error}");
        var trace = _kernel.Machine.Trace;
        var pid = Environment.ProcessId;
        trace.Record = false;
        trace.Sink = e =>
        {
            var us = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks / 10;
            Log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{pid}@{us / 1_000_000}.{us % 1_000_000:D6}:{e.CategoryName} {e.Source}: {e.Message}"));
        };
        trace.Mask = mask;
    }

    public HostKernel Kernel => _kernel;
    public string SysfsRoot { get; }
    internal ClientMemoryAperture Aperture => _aperture;
    internal VfioHost Vfio => _vfio;
    internal TextWriter Log => _options.Log;
    internal Doorbell.Runtime.EventLoop Loop => _loop;
    internal LatencyStamps Stamps { get; }

    void ServePosted()
    {
        while (!_stopping)
            if (_loop.WaitForWork(TimeSpan.FromMilliseconds(250)))
                _ = Invoke(static () => { });
    }

    /// <summary>Runs one request (or a release) as the machine's owner, then the epilogue. An exception in it is returned
    /// to the caller (the server turns it into an error reply and a log line; the machine keeps running).</summary>
    internal Exception? Invoke(Action action)
    {
        Exception? failure = null;
        try
        {
            _loop.RunAsOwner(() =>
            {
                try { action(); }
                finally { AfterEach(); }
            });
        }
#pragma warning disable CA1031 // the server must survive anything a client provokes
        catch (Exception e) { failure = e; }
#pragma warning restore CA1031
        return failure;
    }

    /// <summary>SMMU event records seen since start (device faults, e.g. DMA to an unmapped IOVA).</summary>
    public int SmmuEventCount { get; private set; }

    readonly long[] _requests = new long[16];

    /// <summary>How many requests of kind <paramref name="op"/> clients sent since start (which path a client's
    /// BAR accesses take: MmioRead/MmioWrite through a trapped mapping, Pread/Pwrite on the region).</summary>
    public long RequestCount(ServeOp op) => (uint)op < _requests.Length ? Interlocked.Read(ref _requests[(int)op]) : 0;

    internal void CountRequest(ServeOp op)
    {
        if ((uint)op < _requests.Length) Interlocked.Increment(ref _requests[(int)op]);
    }
    readonly Queue<string> _releases = new();

    /// <summary>The last clients that went away (up to 16): pid and what each still held after release (all zero when clean).</summary>
    public IReadOnlyList<string> Releases { get { lock (_releases) return [.. _releases]; } }

    internal void RecordRelease(string line)
    {
        lock (_releases)
        {
            if (_releases.Count == 16) _releases.Dequeue();
            _releases.Enqueue(line);
        }
    }

    /// <summary>Model-thread epilogue of every request: virtual time runs until idle (a device's delayed work
    /// completes as soon as the host waits) and the SMMU events the kernel read are logged.
    /// Interrupts are pushed, not polled: a CPU whose GIC raised its IRQ input takes the interrupt from the event loop
    /// (HostCpu), and SMMUv3 event records are read by the event-queue interrupt's handler, so the epilogue looks at the
    /// queue only when that interrupt has fired. Polling every CPU's IAR and EVENTQ_PROD/CONS after every request cost
    /// 0.6 + 0.5 us, and it ran after the eventfd write of an MSI, where it delays the woken client on a shared core.</summary>
    void AfterEach()
    {
        _kernel.Machine.Clock.RunUntilIdle();
        if (_kernel.SmmuEventInterrupts != _smmuEventInterruptsSeen)
        {
            _smmuEventInterruptsSeen = _kernel.SmmuEventInterrupts;
            foreach (var e in _kernel.DrainSmmuEvents())
            {
                SmmuEventCount++;
                Log.WriteLine($"doorbell serve: SMMU event: {e}");
            }
        }
        // arm-smmu (SMMUv2 boards): the faults its global and context fault handlers read, as it prints them.
        if (_kernel.SmmuV2Driver is { } v2)
            foreach (var f in v2.Faults.TakeSince(ref _reportedV2Faults))
            {
                SmmuEventCount++;
                Log.WriteLine($"doorbell serve: SMMU {f}");
            }
        foreach (var v in _strict.Violations.TakeSince(ref _reportedStrict)) Log.WriteLine($"doorbell serve: strict: {v}");
    }

    void AcceptLoop()
    {
        while (!_stopping)
        {
            int fd;
            unsafe { fd = ServerNative.accept4(_listenFd, null, null, ServerNative.SOCK_CLOEXEC); }
            if (fd < 0)
            {
                var e = Marshal.GetLastPInvokeError();
                if (_stopping || e is 22 or 9) break; // EINVAL/EBADF after shutdown
                continue;
            }
            var s = new ClientSession(this, fd, ServerNative.PeerPid(fd));
            lock (_sessionsLock) _sessions.Add(s);
            s.Start();
        }
    }

    internal void Remove(ClientSession s)
    {
        lock (_sessionsLock) _sessions.Remove(s);
    }

    internal string Stats()
    {
        var sb = new StringBuilder();
        List<ClientSession> live;
        lock (_sessionsLock) live = [.. _sessions];
        sb.Append(CultureInfo.InvariantCulture, $"clients={live.Count}\n");
        ulong locked = 0;
        foreach (var s in live)
        {
            locked += s.Process?.LockedPages ?? 0;
            sb.Append(CultureInfo.InvariantCulture, $"client pid={s.Pid} fds={s.Process?.OpenFileCount ?? 0} locked_pages={s.Process?.LockedPages ?? 0}\n");
        }
        sb.Append(CultureInfo.InvariantCulture, $"locked_pages={locked}\n");
        sb.Append(CultureInfo.InvariantCulture, $"windows={_aperture.WindowCount}\n");
        sb.Append(CultureInfo.InvariantCulture, $"smmu_events={SmmuEventCount}\n");
        sb.Append(CultureInfo.InvariantCulture, $"dma_bytes_read={_aperture.BytesRead}\ndma_bytes_written={_aperture.BytesWritten}\n");
        sb.Append(CultureInfo.InvariantCulture, $"dma_bytes_shared={_aperture.BytesShared}\nshared_windows={_aperture.SharedWindowCount}\n");
        foreach (var r in Releases) sb.Append(CultureInfo.InvariantCulture, $"release {r}\n");
        return sb.ToString();
    }

    /// <summary>Blocks until <paramref name="cancel"/> is signalled.</summary>
    public void Wait(CancellationToken cancel) => cancel.WaitHandle.WaitOne();

    public void Dispose()
    {
        _stopping = true;
        _ = ServerNative.shutdown(_listenFd, ServerNative.SHUT_RDWR);
        _acceptThread.Join(2000);
        _ = ServerNative.close(_listenFd);
        List<ClientSession> live;
        lock (_sessionsLock) live = [.. _sessions];
        foreach (var s in live) s.Shutdown();
        foreach (var s in live) s.Join();
        _postedThread.Join(1000);
        try
        {
            if (File.Exists(_options.SocketPath)) File.Delete(_options.SocketPath);
            if (Directory.Exists(SysfsRoot)) Directory.Delete(SysfsRoot, true);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

/// <summary>One client connection: a thread that reads packets and runs each on the model thread.</summary>
internal sealed class ClientSession
{
    readonly DoorbellServer _server;
    readonly int _sock;
    readonly Thread _thread;
    readonly byte[] _rx = new byte[ServeProtocol.MaxPacket];
    readonly byte[] _tx = new byte[ServeProtocol.ReplyHeader + ServeProtocol.MaxPacket];
    readonly int[] _fds = new int[16];
    int _fdCount;
    bool _hello;
    long _received; // LatencyStamps: when the posted store being handled came off the socket (0 = not stamping)

    public ClientSession(DoorbellServer server, int sock, int pid)
    {
        _server = server;
        _sock = sock;
        Pid = pid;
        _thread = new Thread(Run) { IsBackground = true, Name = $"doorbell-client-{pid}" };
    }

    public int Pid { get; }
    public VfioProcess? Process { get; private set; }

    public void Start() => _thread.Start();
    public void Shutdown() => ServerNative.shutdown(_sock, ServerNative.SHUT_RDWR);
    public void Join() => _thread.Join(5000);

    void Run()
    {
        string reason = "disconnected";
        try
        {
            while (true)
            {
                var n = ServerNative.Receive(_sock, _rx, _fds, out _fdCount, out var truncated);
                var stamping = _server.Stamps.IsOwner(this);
                var received = stamping ? LatencyStamps.Now() : 0;
                if (n <= 0) { reason = n == 0 ? "disconnected" : $"receive failed (errno {-n})"; break; }
                if (truncated) { reason = "packet or descriptors truncated"; break; }
                if (!ServeProtocol.TryDecode(_rx.AsSpan(0, n), out var req, out var error)) { reason = "protocol error: " + error; break; }
                if (!_hello && req.Op != ServeOp.Hello && req.Op != ServeOp.Stats) { reason = "protocol error: first request is not HELLO"; break; }
                _server.CountRequest(req.Op);
                long ret = 0;
                var payloadLen = 0;
                var op = req.Op;
                var fd = req.Fd;
                ulong a0 = req.A0, a1 = req.A1, a2 = req.A2, a3 = req.A3;
                var payloadOffset = ServeProtocol.RequestHeader;
                var payloadLength = req.Payload.Length;
                if (stamping && op == ServeOp.MmioWritePosted) _received = received;
                var failure = _server.Invoke(() =>
                    ret = Handle(op, fd, a0, a1, a2, a3, _rx.AsSpan(payloadOffset, payloadLength), _tx.AsSpan(ServeProtocol.ReplyHeader), out payloadLen));
                if (stamping && op == ServeOp.MmioWritePosted) _server.Stamps.Add(StampKind.RequestDone, LatencyStamps.Now());
                CloseReceivedFds();
                if (failure is not null)
                {
                    _server.Log.WriteLine($"doorbell serve: client {Pid}: internal error on {op}: {failure.GetType().Name}: {failure.Message}");
                    ret = -Errno.EIO;
                    payloadLen = 0;
                }
                if (op == ServeOp.MmioWritePosted)
                {
                    // Posted: no completion goes back (PCIe posted writes have none); a failure is the server's to log.
                    if (ret != 0) _server.Log.WriteLine($"doorbell serve: client {Pid}: posted store to 0x{a0:x} ({a1} bytes) failed: errno {-ret}");
                    continue;
                }
                var len = ServeProtocol.EncodeReply(_tx, ret, payloadLen);
                if (ServerNative.Send(_sock, _tx.AsSpan(0, len)) < 0) { reason = "send failed"; break; }
            }
        }
        finally
        {
            CloseReceivedFds();
            var why = reason;
            _ = _server.Invoke(() => Release(why));
            _ = ServerNative.close(_sock);
            _server.Remove(this);
        }
    }

    void CloseReceivedFds()
    {
        for (var i = 0; i < _fdCount; i++) if (_fds[i] >= 0) _ = ServerNative.close(_fds[i]);
        _fdCount = 0;
    }

    /// <summary>Process exit (model thread): every descriptor closed, windows onto the client's memory dropped.</summary>
    void Release(string reason)
    {
        _server.Stamps.Release(this);
        var p = Process;
        if (p is not null)
        {
            var fds = p.OpenFileCount;
            var locked = p.LockedPages;
            p.CloseAll();
            _server.RecordRelease($"pid={Pid} closed_fds={fds} unpinned_pages={locked} fds_after={p.OpenFileCount} locked_after={p.LockedPages} pinned_after={p.Memory.PinnedPages}");
            _server.Log.WriteLine($"doorbell serve: client {Pid} {reason}: released {fds} descriptor(s), {locked} pinned page(s)");
        }
        _server.Aperture.Release(this);
    }

    long Handle(ServeOp op, int fd, ulong a0, ulong a1, ulong a2, ulong a3, Span<byte> payload, Span<byte> reply, out int replyLen)
    {
        replyLen = 0;
        if (op == ServeOp.Stats)
        {
            replyLen = Encoding.ASCII.GetBytes(_server.Stats(), reply);
            return 0;
        }
        if (op == ServeOp.Hello)
        {
            if (_hello) return -Errno.EINVAL;
            if (a2 != ServeProtocol.Version) return -71; // EPROTO
            _hello = true;
            Process = _server.Kernel.CreateProcess(_server.Vfio, a0);
            Process.CapIpcLock = a1 != 0;
            _server.Log.WriteLine($"doorbell serve: client {Pid} connected (RLIMIT_MEMLOCK {(a0 == ulong.MaxValue ? "unlimited" : a0.ToString(CultureInfo.InvariantCulture))}{(a1 != 0 ? ", CAP_IPC_LOCK" : "")})");
            replyLen = Encoding.UTF8.GetBytes(_server.SysfsRoot, reply);
            return 0;
        }
        var p = Process!;
        switch (op)
        {
            case ServeOp.Open:
                if (a0 == 0) return p.OpenContainer();
                if (a0 == 1) return a1 > int.MaxValue ? -Errno.ENOENT : p.OpenGroup((int)a1);
                return -Errno.EINVAL;
            case ServeOp.Close:
                return p.Close(fd);
            case ServeOp.Ioctl:
                return Ioctl(p, fd, (uint)a0, a1 != 0, a2, payload, reply, out replyLen);
            case ServeOp.Pread:
                {
                    if (a1 > (ulong)reply.Length) return -Errno.EINVAL;
                    var r = p.Pread(fd, reply[..(int)a1], a0);
                    replyLen = r > 0 ? (int)r : 0;
                    return r;
                }
            case ServeOp.Pwrite:
                return p.Pwrite(fd, payload, a0);
            case ServeOp.Mmap:
                {
                    if (a2 == 0 || a2 % 4096 != 0 || a1 == 0 || a2 + a1 < a2) return -Errno.EINVAL;
                    var prot = UserProt.None;
                    if ((a3 & 1) != 0) prot |= UserProt.Read;
                    if ((a3 & 2) != 0) prot |= UserProt.Write;
                    return p.Mmap(fd, a1, a0, prot, ((a3 >> 8) & 1) != 0, a2);
                }
            case ServeOp.Munmap:
                return p.Memory.Unmap(a0, a1);
            case ServeOp.MmioRead:
                {
                    if (a1 is not (1 or 2 or 4 or 8)) return -Errno.EINVAL;
                    reply[..8].Clear();
                    var r = p.Memory.Read(a0, reply[..(int)a1]);
                    replyLen = 8;
                    return r switch { UserAccess.Ok => 0, UserAccess.Segv => -Errno.EFAULT, _ => -Errno.EIO };
                }
            case ServeOp.Stamps:
                {
                    if (a0 == 1) return _server.Stamps.Start(this) ? 0 : -Errno.EBUSY;
                    if (a0 == 0) return _server.Stamps.Stop(this) is var count and >= 0 ? count : -Errno.EINVAL;
                    if (a0 != 2) return -Errno.EINVAL;
                    var n = _server.Stamps.Read(this, a1, reply);
                    if (n < 0) return -Errno.EINVAL;
                    replyLen = 16 * n;
                    return n;
                }
            case ServeOp.MmioWrite:
            case ServeOp.MmioWritePosted:
                {
                    if (op == ServeOp.MmioWritePosted && _received != 0) { _server.Stamps.Add(StampKind.StoreReceived, _received); _received = 0; }
                    if (a1 is not (1 or 2 or 4 or 8)) return -Errno.EINVAL;
                    Span<byte> b = stackalloc byte[8];
                    BinaryPrimitives.WriteUInt64LittleEndian(b, a2);
                    var r = p.Memory.Write(a0, b[..(int)a1]);
                    return r switch { UserAccess.Ok => 0, UserAccess.Segv => -Errno.EFAULT, _ => -Errno.EIO };
                }
            default:
                return -Errno.EINVAL;
        }
    }

    long Ioctl(VfioProcess p, int fd, uint request, bool scalar, ulong value, Span<byte> payload, Span<byte> reply, out int replyLen)
    {
        replyLen = 0;
        if (scalar) return p.Ioctl(fd, request, value);
        long mapStart = 0, described = 0;
        if (request == VfioIoctl.IommuMapDma)
        {
            mapStart = System.Diagnostics.Stopwatch.GetTimestamp();
            // a memfd with MAP_DMA is the range itself, moved there by the library (nothing else rides on MAP_DMA)
            DescribeClientMemory(p, payload, _fdCount == 1 ? _fds[0] : -1);
            described = System.Diagnostics.Stopwatch.GetTimestamp();
        }
        // Descriptors the client passed replace its own numbers in the argument (payload order); the client gets
        // its own numbers back.
        var positions = FdPositions(request, payload);
        var k = 0;
        foreach (var pos in positions)
        {
            var v = BinaryPrimitives.ReadInt32LittleEndian(payload[pos..]);
            if (v < 0) continue;
            BinaryPrimitives.WriteInt32LittleEndian(payload[pos..], k < _fdCount ? _fds[k++] : int.MaxValue);
        }
        var r = p.Ioctl(fd, request, payload);
        if (request == VfioIoctl.IommuMapDma && payload.Length >= 32)
        {
            // host-side measurement (not a model): how long describing, pinning and mapping the range took
            var us = System.Diagnostics.Stopwatch.GetElapsedTime(mapStart).TotalMicroseconds;
            var describeUs = System.Diagnostics.Stopwatch.GetElapsedTime(mapStart, described).TotalMicroseconds;
            _server.Log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"doorbell serve: client {Pid}: MAP_DMA iova 0x{BinaryPrimitives.ReadUInt64LittleEndian(payload[16..]):x} size 0x{BinaryPrimitives.ReadUInt64LittleEndian(payload[24..]):x}: {(r == 0 ? "mapped" : $"error {r}")} in {us:F0} us (probing the client's pages {describeUs:F0} us, pin + map {us - describeUs:F0} us)"));
        }
        payload.CopyTo(reply);
        foreach (var pos in positions) BinaryPrimitives.WriteInt32LittleEndian(reply[pos..], _clientFdsByPos[pos]);
        replyLen = payload.Length;
        return r;
    }

    readonly Dictionary<int, int> _clientFdsByPos = [];
    readonly List<int> _positions = [];

    /// <summary>Byte positions of descriptor numbers inside an ioctl argument (SET_IRQS eventfd data, IOEVENTFD fd),
    /// remembering the client's values.</summary>
    List<int> FdPositions(uint request, ReadOnlySpan<byte> arg)
    {
        _clientFdsByPos.Clear();
        var pos = _positions;
        pos.Clear();
        if (request == VfioIoctl.DeviceSetIrqs && arg.Length >= 20)
        {
            var flags = BinaryPrimitives.ReadUInt32LittleEndian(arg[4..]);
            var count = BinaryPrimitives.ReadUInt32LittleEndian(arg[16..]);
            if ((flags & VfioIrqSetFlags.DataEventFd) != 0)
                for (var i = 0u; i < count && 20 + 4 * (long)i + 4 <= arg.Length; i++) pos.Add(20 + 4 * (int)i);
        }
        else if (request == VfioIoctl.DeviceIoeventfd && arg.Length >= 28) pos.Add(24);
        foreach (var p in pos) _clientFdsByPos[p] = BinaryPrimitives.ReadInt32LittleEndian(arg[p..]);
        return pos;
    }

    /// <summary>Before MAP_DMA: describes the client's [vaddr, vaddr+size) as foreign memory reached through a new
    /// aperture window, when the client really has readable memory there (so the type1 code pins and maps it like any
    /// user memory, and a bad vaddr still gets EFAULT from it).</summary>
    void DescribeClientMemory(VfioProcess p, ReadOnlySpan<byte> arg, int memfd)
    {
        if (arg.Length < 32) return;
        var flags = BinaryPrimitives.ReadUInt32LittleEndian(arg[4..]);
        var vaddr = BinaryPrimitives.ReadUInt64LittleEndian(arg[8..]);
        var size = BinaryPrimitives.ReadUInt64LittleEndian(arg[24..]);
        if ((flags & (VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite)) == 0 || (flags & VfioDmaFlags.MapVaddr) != 0) return;
        if (size == 0 || ((vaddr | size) & 4095) != 0 || vaddr + size < vaddr || size > _server.Aperture.Size / 4) return;
        if (p.Memory.RangeInfo(vaddr, size, out _)) return; // already described (or a BAR mapping)
        var overLimit = !p.CapIpcLock && p.LockedPages + size / 4096 > p.MemlockLimitBytes / 4096;
        if (!overLimit && !(ServerNative.RangeMapped(Pid, vaddr, size, (flags & VfioDmaFlags.MapWrite) != 0) ?? ServerNative.ProbeProcess(Pid, vaddr, size))) return;
        var window = _server.Aperture.Allocate(Pid, vaddr, size, this, memfd);
        if (window != 0) p.Memory.MapForeign(vaddr, size, window);
    }
}
