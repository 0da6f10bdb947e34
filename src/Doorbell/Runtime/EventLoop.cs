using System.Collections.Concurrent;
using Doorbell.Memory;

namespace Doorbell.Runtime;

/// <summary>
/// The one event loop of a machine and its threading rule: all model and kernel state is owned by one thread (the
/// loop's owner) and changes in a deterministic order; other threads (client sockets, timers, eventfd waiters) never
/// touch it — they <see cref="Post"/> work, which the owner runs from <see cref="RunUntilIdle"/>.
/// <para>
/// On the owner thread the loop also keeps the machine's deferred work, run iteratively when the outermost model
/// operation (an MMIO access on the bus) returns: posted writes (a device- or SMMU-originated write that lands on
/// MMIO while a model is already running — hardware's posted writes, so an MSI aimed at a register never recurses)
/// and interrupt entry (a CPU whose interrupt controller raised its IRQ input takes the interrupt from here, not
/// because the issuer of a store polls). Work deferred when no model operation is running runs at once.
/// </para>
/// </summary>
public sealed class EventLoop
{
    /// <summary>Context a posted write carries from where it was issued to where it runs (the trace's flow, so a posted MSI stays in its DMA's flow).</summary>
    public interface IPostedContext
    {
        long Capture();
        void Restore(long context);
    }

    /// <summary>The context posted writes carry (the machine's trace), or null.</summary>
    public IPostedContext? Context { get; set; }

    struct Item
    {
        public IMmioHandler? Handler;
        public ulong Offset, Value;
        public int Size;
        public BusAttributes Attributes;
        public Action? Work;
        public long Context;
    }

    Item[] _ring = new Item[64];
    int _head, _count;
    int _depth;
    bool _draining;
    readonly ConcurrentQueue<Action> _posted = new();
    readonly SemaphoreSlim _signal = new(0, int.MaxValue);

    /// <summary>At most this many deferred items run per drain; the rest waits for the next one (a guard against device
    /// ping-pong, and against a CPU whose interrupt never stops: see <c>HostCpu.EntryBatch</c>).</summary>
    public int DrainBudget { get; set; } = 1 << 16;
    /// <summary>Posted writes executed so far.</summary>
    public long PostedWrites { get; private set; }
    /// <summary>Drains that stopped at <see cref="DrainBudget"/> with work left (devices signalling each other without end).</summary>
    public long DrainOverruns { get; private set; }
    /// <summary>Deepest nesting of model operations seen (1 = no MMIO access ran inside another).</summary>
    public int MaxDepth => Math.Max(_maxDepth, 1);
    int _maxDepth;
    /// <summary>
    /// Diagnostics: 0 (default) for no limit; otherwise an operation nested deeper throws <see cref="InvalidOperationException"/>
    /// (so a test can show unbounded recursion without overflowing the stack).
    /// </summary>
    public int DepthLimit { get; set; }
    /// <summary>Diagnostics: false runs nested MMIO writes synchronously (the behaviour before posted writes).</summary>
    public bool PostNestedWrites { get; set; } = true;
    /// <summary>Items waiting on the owner thread.</summary>
    public int Pending => _count;
    /// <summary>True while a model operation (an MMIO access) is running on the owner thread.</summary>
    public bool InOperation => _depth > 0 && PostNestedWrites;

    // --- owner thread: model operations and deferred work ------------------------------------------------------

    /// <summary>Marks the start of a model operation (the bus calls this around MMIO handlers).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public void Enter()
    {
        // The outermost operation only bumps the depth; nesting is the rare path.
        if (_depth++ != 0) NoteDeeper();
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    void NoteDeeper()
    {
        if (_depth > _maxDepth) _maxDepth = _depth;
        if (DepthLimit > 0 && _depth > DepthLimit)
        {
            _depth--;
            throw new InvalidOperationException($"model operations nested {DepthLimit + 1} deep");
        }
    }

    /// <summary>Marks its end; the outermost end runs the deferred work.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public void Exit()
    {
        if (--_depth == 0 && _count > 0) DrainUnlessDraining();
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    void DrainUnlessDraining()
    {
        if (!_draining) Drain();
    }

    /// <summary>Queues a write to an MMIO handler to run after the current operation (a posted write).</summary>
    public void PostWrite(IMmioHandler handler, ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        ref var it = ref Push();
        it.Handler = handler; it.Offset = offset; it.Size = size; it.Value = value; it.Attributes = attributes; it.Work = null;
        it.Context = Context?.Capture() ?? 0;
        if (_depth == 0 && !_draining) Drain();
    }

    /// <summary>Runs <paramref name="work"/> after the current model operation (at once when none is running).</summary>
    public void Defer(Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        ref var it = ref Push();
        it.Handler = null; it.Work = work;
        if (_depth == 0 && !_draining) Drain();
    }

    ref Item Push()
    {
        if (_count == _ring.Length)
        {
            var bigger = new Item[_ring.Length * 2];
            for (var i = 0; i < _count; i++) bigger[i] = _ring[(_head + i) % _ring.Length];
            _ring = bigger;
            _head = 0;
        }
        return ref _ring[(_head + _count++) % _ring.Length];
    }

    /// <summary>Runs deferred items in FIFO order, iteratively, until none is left (or the budget is spent).</summary>
    public void Drain()
    {
        if (_draining) return;
        _draining = true;
        try
        {
            var budget = DrainBudget;
            while (_count > 0)
            {
                if (budget-- <= 0) { DrainOverruns++; break; }
                var it = _ring[_head];
                _ring[_head] = default;
                _head = (_head + 1) % _ring.Length;
                _count--;
                if (it.Handler is { } h)
                {
                    PostedWrites++;
                    _depth++;
                    var ctx = Context;
                    var saved = ctx?.Capture() ?? 0;
                    ctx?.Restore(it.Context);
                    try { h.Write(it.Offset, it.Size, it.Value, it.Attributes); }
                    finally { _depth--; ctx?.Restore(saved); }
                }
                else it.Work!();
            }
        }
        finally { _draining = false; }
    }

    // --- any thread -------------------------------------------------------------------------------------------

    readonly object _turn = new();

    /// <summary>
    /// Runs <paramref name="work"/> on the calling thread as the loop's owner, then everything it posted or deferred
    /// until idle. Threads take turns (one owner at a time, so models still see one thread and need no locks); this is
    /// how a system call runs in Linux: in the caller's context, with the machine held, rather than handed to another
    /// thread and waited for. An exception from <paramref name="work"/> propagates after the loop is idle again.
    /// </summary>
    public void RunAsOwner(Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        lock (_turn)
        {
            try { work(); }
            finally { RunUntilIdle(); }
        }
    }

    /// <summary>Queues work from any thread; the owner runs it in arrival order from <see cref="RunUntilIdle"/>.</summary>
    public void Post(Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        _posted.Enqueue(work);
        _signal.Release();
    }

    /// <summary>Owner thread: runs posted work and deferred work until both are empty. Returns the number of posted items run.</summary>
    public int RunUntilIdle()
    {
        var n = 0;
        while (true)
        {
            if (_count > 0) Drain();
            if (!_posted.TryDequeue(out var w)) break;
            _signal.Wait(0);
            n++;
            w(); // a top-level operation: its own MMIO accesses drain what they defer
        }
        return n;
    }

    /// <summary>Owner thread: blocks until work is posted (true) or <paramref name="timeout"/> passes (false).</summary>
    public bool WaitForWork(TimeSpan timeout)
    {
        if (!_posted.IsEmpty || _count > 0) return true;
        if (!_signal.Wait(timeout)) return false;
        _signal.Release(); // leave the count for RunUntilIdle's bookkeeping
        return true;
    }
}
