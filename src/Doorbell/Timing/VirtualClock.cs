namespace Doorbell.Timing;

// Known limits: single-threaded; events scheduled for the same instant run in scheduling order.

/// <summary>
/// Deterministic virtual time in nanoseconds (QEMU's QEMU_CLOCK_VIRTUAL role). Nothing reads the wall clock:
/// time moves only when <see cref="Step"/>, <see cref="Set"/> or <see cref="RunUntilIdle"/> is called, and
/// scheduled events fire in (time, sequence) order as time passes them.
/// </summary>
public sealed class VirtualClock
{
    readonly SortedSet<(long At, long Seq)> _queue = [];
    readonly Dictionary<long, Action> _actions = [];
    long _seq;

    public long Now { get; private set; }

    /// <summary>Schedules <paramref name="action"/> at absolute time <paramref name="at"/> (clamped to now); returns a handle for <see cref="Cancel"/>.</summary>
    public long Schedule(long at, Action action)
    {
        ArgumentNullException.ThrowIfNull(action);
        var id = ++_seq;
        _queue.Add((Math.Max(at, Now), id));
        _actions[id] = action;
        return id;
    }

    public bool Cancel(long handle)
    {
        if (!_actions.Remove(handle)) return false;
        _queue.RemoveWhere(e => e.Seq == handle);
        return true;
    }

    /// <summary>Time of the next scheduled event, or null when none is pending.</summary>
    public long? NextDeadline => _queue.Count == 0 ? null : _queue.Min.At;

    /// <summary>
    /// The absolute time <paramref name="delayNs"/> from now, saturating at <see cref="long.MaxValue"/>: virtual time is
    /// 63-bit and a qtest clock_set may put it near the end, where now + delay must not wrap into the past.
    /// </summary>
    public long After(long delayNs) => delayNs <= 0 ? Now : (Now > long.MaxValue - delayNs ? long.MaxValue : Now + delayNs);

    public bool IsPending(long handle) => _actions.ContainsKey(handle);

    /// <summary>Advances to <paramref name="target"/> (no-op if in the past), running every event due on the way.</summary>
    public long AdvanceTo(long target)
    {
        // bounded: each iteration consumes one event; events scheduled by events still need time to pass
        for (var guard = 0; guard < 1_000_000 && _queue.Count > 0 && _queue.Min.At <= target; guard++)
        {
            var e = _queue.Min;
            _queue.Remove(e);
            Now = Math.Max(Now, e.At);
            if (_actions.Remove(e.Seq, out var a)) a();
        }
        if (target > Now) Now = target;
        return Now;
    }

    /// <summary>QEMU qtest clock_step: advance by <paramref name="ns"/>, or to the next deadline when null (no deadline: stay).</summary>
    public long Step(long? ns = null)
    {
        if (ns is { } d) return AdvanceTo(After(d));
        return NextDeadline is { } next ? AdvanceTo(next) : Now;
    }

    /// <summary>QEMU qtest clock_set: advance to an absolute time (time never goes back).</summary>
    public long Set(long ns) => AdvanceTo(ns);

    /// <summary>Runs events until the queue is empty or <paramref name="maxEvents"/> ran (what an idle machine does).</summary>
    public long RunUntilIdle(int maxEvents = 10_000)
    {
        for (var i = 0; i < maxEvents && NextDeadline is { } next; i++) AdvanceTo(next);
        return Now;
    }
}
