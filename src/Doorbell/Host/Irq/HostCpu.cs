namespace Doorbell.Host.Irq;

/// <summary>How a host CPU acknowledges and ends interrupts at its interrupt controller (GICv3 system registers or a GICv2 GICC frame).</summary>
public interface IHostCpuInterface
{
    /// <summary>Acknowledge: the INTID, or 1023 when nothing is signalled.</summary>
    int Acknowledge();
    void EndOfInterrupt(int intid);
}

/// <summary>
/// What request_irq registers for an INTID: a handler called with (INTID, CPU), or a signal taking no arguments
/// (the handler whose only work is its dev_id's: vfio-pci's vfio_msihandler is eventfd_signal of the trigger, so the
/// trigger's signal is the action). A named action with a trace is traced at entry, as Linux's irq_handler_entry.
/// </summary>
public readonly record struct IrqAction(Action<int, int>? Handler, Action? Signal, string? Name, Doorbell.Tracing.Trace? Trace,
    Doorbell.Tracing.TraceCategory Category);

/// <summary>Handlers registered by INTID (Linux's irq descriptors, flattened): shared by all host CPUs.</summary>
public sealed class HostIrqTable
{
    readonly Dictionary<int, IrqAction> _actions = [];

    /// <summary>Registers <paramref name="handler"/>(intid, cpu). -EBUSY if one is already registered.</summary>
    public void Request(int intid, Action<int, int> handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        Add(intid, new IrqAction(handler, null, null, null, default));
    }

    /// <summary>
    /// request_irq(intid, handler, 0, <paramref name="name"/>, dev_id) for a handler whose only work is
    /// <paramref name="signal"/>; traced under <paramref name="category"/> at entry when <paramref name="trace"/> is on.
    /// -EBUSY if one is already registered.
    /// </summary>
    public void Request(int intid, string name, Action signal, Doorbell.Tracing.Trace? trace, Doorbell.Tracing.TraceCategory category)
    {
        ArgumentNullException.ThrowIfNull(name); ArgumentNullException.ThrowIfNull(signal);
        Add(intid, new IrqAction(null, signal, name, trace, category));
    }

    void Add(int intid, IrqAction action)
    {
        if (!_actions.TryAdd(intid, action)) throw new IrqException(Errno.EBUSY, $"INTID {intid} already has a handler");
    }

    public void Free(int intid) => _actions.Remove(intid);

    /// <summary>The name <see cref="Request(int, string, Action, Doorbell.Tracing.Trace?, Doorbell.Tracing.TraceCategory)"/> gave, or null (unregistered or unnamed).</summary>
    public string? NameOf(int intid) => _actions.TryGetValue(intid, out var a) ? a.Name : null;

    /// <summary>Runs the action registered for <paramref name="intid"/> on <paramref name="cpu"/> (traced at entry when named). False when none is.</summary>
    internal bool Dispatch(int intid, int cpu)
    {
        if (!_actions.TryGetValue(intid, out var a)) return false;
        if (a.Trace is { } t && t.IsOn(a.Category))
            t.Emit(a.Category, Doorbell.Tracing.TraceSources.Cpu(cpu), $"INTID {intid} handled by {a.Name}");
        if (a.Signal is { } signal) signal();
        else a.Handler!(intid, cpu);
        return true;
    }
}

/// <summary>
/// A host CPU as an execution context: its interrupt entry is acknowledge, dispatch to the registered handler, end
/// of interrupt — the loop of Linux's gic_handle_irq. Unhandled INTIDs are acknowledged and ended (and counted), as
/// Linux's spurious path. On a GICv3 the acknowledge and the end are the CPU's own system registers (MRS ICC_IAR1_EL1,
/// MSR ICC_EOIR1_EL1), read here as the entry code would, with no driver object between; on a GICv2 they are loads and
/// stores to the GICC frame, which the irqchip driver performs (<see cref="IHostCpuInterface"/>).
/// Attached to an <see cref="Doorbell.Runtime.EventLoop"/>, it is an <see cref="Doorbell.Memory.IInterruptTarget"/>:
/// when its interrupt controller raises its IRQ input it takes the interrupts from the loop (after the model operation
/// that raised them), so nobody has to poll for them.
/// </summary>
public sealed class HostCpu : Doorbell.Memory.IInterruptTarget
{
    readonly Doorbell.Gic.V3.IIccSystemRegisters? _icc;
    readonly IHostCpuInterface? _cpuInterface;
    readonly HostIrqTable _table;

    /// <summary>A CPU whose GIC CPU interface is its ICC_* system registers (GICv3).</summary>
    public HostCpu(int index, Doorbell.Gic.V3.IIccSystemRegisters icc, HostIrqTable table)
    {
        ArgumentNullException.ThrowIfNull(icc); ArgumentNullException.ThrowIfNull(table);
        Index = index; _icc = icc; _table = table;
    }

    /// <summary>A CPU whose GIC CPU interface is reached through its irqchip driver (GICv2's GICC frame).</summary>
    public HostCpu(int index, IHostCpuInterface cpuInterface, HostIrqTable table)
    {
        ArgumentNullException.ThrowIfNull(cpuInterface); ArgumentNullException.ThrowIfNull(table);
        Index = index; _cpuInterface = cpuInterface; _table = table;
    }

    Doorbell.Runtime.EventLoop? _loop;
    Action? _entry;
    bool _scheduled;

    /// <summary>
    /// Interrupts one entry from the loop takes before it yields: with more signalled it schedules itself again behind
    /// the work already deferred (other CPUs' entries, posted writes), so a CPU whose interrupt never stops (a handler
    /// that does not quiet a level-triggered device) shares the loop instead of holding it.
    /// </summary>
    public const int EntryBatch = 16;

    /// <summary>Makes interrupts pushed: from now on <see cref="Raise"/> schedules the interrupt entry on <paramref name="loop"/>.</summary>
    public void Attach(Doorbell.Runtime.EventLoop loop)
    {
        ArgumentNullException.ThrowIfNull(loop);
        _loop = loop;
        _entry = () =>
        {
            _scheduled = false;
            if (HandleInterrupts(EntryBatch) == EntryBatch) Raise(); // maybe more: continue after what waits
        };
    }

    /// <summary>The IRQ input: schedules the interrupt entry once (coalesced) when attached to a loop.</summary>
    public void Raise()
    {
        if (_loop is null || _scheduled) return;
        _scheduled = true;
        _loop.Defer(_entry!);
    }

    public int Index { get; }
    public long Handled { get; private set; }
    public long Unhandled { get; private set; }
    /// <summary>The INTIDs this CPU handled, in order (last 1024).</summary>
    public IReadOnlyList<int> History => _history;
    readonly Doorbell.Runtime.BoundedHistory<int> _history = new(1024);

    /// <summary>Takes interrupts until none is signalled (at most <paramref name="limit"/>). Returns how many were taken.</summary>
    public int HandleInterrupts(int limit = 4096)
    {
        var n = 0;
        while (n < limit)
        {
            var intid = _icc is { } icc ? (int)icc.Iar1() : _cpuInterface!.Acknowledge();
            if (intid is >= 1020 and <= 1023) break;
            n++;
            _history.Add(intid);
            if (_table.Dispatch(intid, Index)) Handled++;
            else Unhandled++;
            if (_icc is { } eoi) eoi.Eoir1((ulong)intid);
            else _cpuInterface!.EndOfInterrupt(intid);
        }
        return n;
    }
}
