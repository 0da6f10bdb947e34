using System.Buffers.Binary;
using System.Diagnostics;
using Doorbell.Tracing;
using Trace = Doorbell.Tracing.Trace;

// Host-side latency stamps for the MSI-X → client eventfd benchmark (issue 12): while a client asks for them
// (ServeOp.Stamps), the server notes CLOCK_MONOTONIC at the points of one MSI's journey that only it can see — a posted
// BAR store taken off the socket, the device's MSI-X write (trace category pci_msi), the host handler signalling the
// user's eventfd (vfio_irq, just before its write(2)) and the end of the request — so the client, which stamps the
// same clock before its store and when epoll_wait returns, can split its loop into hops. Host instrumentation, not a
// model: the machine's virtual time and trace are untouched (the two trace categories are turned on only while
// stamping, and their events are not recorded).
namespace Doorbell.Server;

public enum StampKind : ulong
{
    /// <summary>A posted BAR store (op 12) came off the socket (recvmsg returned).</summary>
    StoreReceived = 1,
    /// <summary>A PCI function issued an MSI/MSI-X write (trace pci_msi).</summary>
    MsiIssued = 2,
    /// <summary>A host interrupt handler signals the user's eventfd (trace vfio_irq).</summary>
    EventFdSignalled = 3,
    /// <summary>The server finished the posted store's request (epilogue included).</summary>
    RequestDone = 4,
}

internal sealed class LatencyStamps
{
    /// <summary>At most this many stamps are kept per session (later ones are dropped and counted).</summary>
    public const int Capacity = 1 << 16;

    readonly Trace _trace;
    readonly long[] _kinds = new long[Capacity];
    readonly long[] _times = new long[Capacity];
    int _count;
    object? _owner;
    object? _reader;
    ulong _savedMask;
    bool _savedRecord;
    Action<TraceEvent>? _savedSink;

    public LatencyStamps(Trace trace) => _trace = trace;

    /// <summary>True while a client has stamping on (read without the machine held: a stale answer costs one stamp).</summary>
    public volatile bool Active;

    /// <summary>Stamps dropped because the buffer was full.</summary>
    public long Dropped { get; private set; }

    public static long Now() => Stopwatch.GetTimestamp();

    static ulong Nanoseconds(long timestamp) =>
        Stopwatch.Frequency == 1_000_000_000 ? (ulong)timestamp : (ulong)(timestamp * (1_000_000_000.0 / Stopwatch.Frequency));

    /// <summary>True when <paramref name="session"/> is the one stamping.</summary>
    public bool IsOwner(object session) => Active && ReferenceEquals(_owner, session);

    /// <summary>Owner thread: starts stamping for <paramref name="owner"/> (a session); false when another has it.</summary>
    public bool Start(object owner)
    {
        if (_owner is not null && !ReferenceEquals(_owner, owner)) return false;
        if (_owner is null)
        {
            _savedMask = _trace.Mask;
            _savedRecord = _trace.Record;
            _savedSink = _trace.Sink;
            var previous = _savedSink;
            var saved = _savedMask;
            _trace.Record = false;
            _trace.Mask = saved | (1UL << (int)TraceCategory.PciMsi) | (1UL << (int)TraceCategory.VfioIrq);
            _trace.Sink = e =>
            {
                var now = Now();
                if (e.Category == TraceCategory.PciMsi) Add(StampKind.MsiIssued, now);
                else if (e.Category == TraceCategory.VfioIrq) Add(StampKind.EventFdSignalled, now);
                if (previous is not null && (saved & (1UL << (int)e.Category)) != 0) previous(e);
            };
        }
        _owner = owner;
        _reader = null;
        _count = 0;
        Dropped = 0;
        Active = true;
        return true;
    }

    /// <summary>At most this many stamps go in one reply (a SOCK_SEQPACKET reply must fit the socket's send buffer).</summary>
    public const int PerReply = 4096;

    /// <summary>Owner thread: stops stamping if <paramref name="owner"/> has it; returns how many stamps it can now read
    /// with <see cref="Read"/>, or -1.</summary>
    public int Stop(object owner)
    {
        if (!ReferenceEquals(_owner, owner)) return -1;
        Active = false;
        _owner = null;
        _reader = owner;
        _trace.Mask = _savedMask;
        _trace.Record = _savedRecord;
        _trace.Sink = _savedSink;
        _count = Math.Min(_count, Capacity);
        return _count;
    }

    /// <summary>Owner thread: writes stamps from <paramref name="index"/> on (u64 kind, u64 nanoseconds of CLOCK_MONOTONIC,
    /// in order; at most <see cref="PerReply"/>) into <paramref name="reply"/> for the client that stopped them; returns
    /// how many, or -1.</summary>
    public int Read(object owner, ulong index, Span<byte> reply)
    {
        if (!ReferenceEquals(_reader, owner) || Active) return -1;
        if (index >= (ulong)_count) return 0;
        var n = (int)Math.Min(Math.Min((ulong)_count - index, PerReply), (ulong)(reply.Length / 16));
        for (var i = 0; i < n; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(reply[(16 * i)..], (ulong)_kinds[(int)index + i]);
            BinaryPrimitives.WriteUInt64LittleEndian(reply[(16 * i + 8)..], Nanoseconds(_times[(int)index + i]));
        }
        return n;
    }

    /// <summary>Owner thread: the session went away; stamping ends with it.</summary>
    public void Release(object owner)
    {
        if (ReferenceEquals(_owner, owner)) _ = Stop(owner);
        if (ReferenceEquals(_reader, owner)) _reader = null;
    }

    /// <summary>Notes one stamp (the owner thread, or the stamping session's own thread after its request).</summary>
    public void Add(StampKind kind, long timestamp)
    {
        if (!Active) return;
        var i = Interlocked.Increment(ref _count) - 1;
        if (i >= Capacity) { _count = Capacity; Dropped++; return; }
        _kinds[i] = (long)kind;
        _times[i] = timestamp;
    }
}
