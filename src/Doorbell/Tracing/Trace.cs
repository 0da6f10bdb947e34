using System.Globalization;
using System.Runtime.CompilerServices;
using Doorbell.Timing;

namespace Doorbell.Tracing;

// One trace per machine, in the manner of QEMU's trace events (named per model, enabled by glob patterns such as
// `-trace 'smmuv3_*'`) and its `-d guest_errors,unimp` log classes. Each event has a category (what kind of
// event), a source (which model instance or CPU: one track in a trace viewer), a message, a virtual timestamp
// and optionally a flow (one DMA or MSI transaction followed hop by hop across models).

/// <summary>Trace event categories. Names (see <see cref="TraceCategories"/>) are what `--trace` patterns match.</summary>
public enum TraceCategory
{
    SmmuReg, SmmuCmd, SmmuTranslate, SmmuEvent,
    ItsCmd, ItsTranslate, ItsDrop,
    Gicd, Gicr, Icc, Gicv2, Gicv2m,
    PciDma, PciMsi,
    Edu, DmaMq,
    MsiAlloc, VfioIrq,
    VfioIoctl, VfioGroup, VfioDma, VfioIrqSet, VfioRegion, VfioReset,
    GuestError, Strict,
    Scenario,
}

/// <summary>Names and descriptions of the categories (QEMU-style lower_snake names).</summary>
public static class TraceCategories
{
    public const int Count = (int)TraceCategory.Scenario + 1;

    static readonly (string Name, string Description)[] Table =
    [
        ("smmu_reg", "SMMUv3 register writes that change state (CR0)"),
        ("smmu_cmd", "SMMUv3 commands consumed from the command queue"),
        ("smmu_translate", "SMMUv3 translations of device transactions (per access)"),
        ("smmu_event", "SMMUv3 event records written to the event queue"),
        ("its_cmd", "GICv3 ITS commands (MAPD, MAPC, MAPTI, MOVI, ...)"),
        ("its_translate", "GICv3 ITS translations of MSI writes (DeviceID, EventID -> LPI)"),
        ("its_drop", "MSI writes the ITS dropped, with the reason"),
        ("gicd", "GICv3 distributor"),
        ("gicr", "GICv3 redistributors (LPI pending, EnableLPIs)"),
        ("gic_icc", "GICv3 CPU interfaces (acknowledge)"),
        ("gicv2", "GICv2 distributor and CPU interfaces"),
        ("gicv2m", "GICv2m MSI frame (SETSPI writes)"),
        ("pci_dma", "DMA issued by PCI functions (begins a flow)"),
        ("pci_msi", "MSI/MSI-X writes issued by PCI functions (begins a flow)"),
        ("edu", "QEMU's edu device"),
        ("dma_mq", "the multi-queue DMA device"),
        ("msi_alloc", "host MSI domain (ITS or GICv2m driver): vectors allocated to a device and the address it is given"),
        ("vfio_irq", "VFIO: a host interrupt handler signals the user's eventfd"),
        ("vfio_ioctl", "VFIO ioctls not in another vfio_* category (GET_INFO, GET_REGION_INFO, ...): request decoded, result or -errno"),
        ("vfio_group", "VFIO groups and containers: open/close, SET_CONTAINER/UNSET (vfio_connect/disconnect_container), SET_IOMMU, GET_DEVICE_FD"),
        ("vfio_dma", "VFIO type1 VFIO_IOMMU_MAP_DMA / UNMAP_DMA: vaddr, iova, size, flags, result"),
        ("vfio_irq_set", "VFIO_DEVICE_SET_IRQS: index, start, count, data and action, result"),
        ("vfio_region", "VFIO region accesses: pread/pwrite (QEMU's vfio_region_read/write) and mmap"),
        ("vfio_reset", "VFIO_DEVICE_RESET / PCI hot reset (vfio_pci_reset)"),
        ("guest_error", "software did something the architecture calls an error: ITS/SMMU command errors, C_BAD_STE/CD, GERROR (QEMU's -d guest_errors)"),
        ("strict", "strict-mode findings"),
        ("scenario", "scenario steps and user-visible actions"),
    ];

    public static string Name(TraceCategory c) => Table[(int)c].Name;
    public static string Description(TraceCategory c) => Table[(int)c].Description;
    public static IEnumerable<TraceCategory> All => Enumerable.Range(0, Count).Select(i => (TraceCategory)i);

    /// <summary>
    /// Parses a comma-separated list of glob patterns (`*` and `?`), QEMU style: `smmu*,its*`, `-icc` removes.
    /// Returns the category mask, or null with <paramref name="error"/> naming the pattern that matches nothing.
    /// </summary>
    public static ulong? ParseMask(string patterns, out string? error)
    {
        ArgumentNullException.ThrowIfNull(patterns);
        error = null;
        ulong mask = 0;
        foreach (var raw in patterns.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var remove = raw.StartsWith('-');
            var p = remove ? raw[1..] : raw;
            ulong m = 0;
            foreach (var c in All)
                if (Glob(p, Name(c))) m |= 1UL << (int)c;
            if (m == 0)
            {
                error = $"'{raw}' matches no trace category (see `doorbell trace-categories`)";
                return null;
            }
            mask = remove ? mask & ~m : mask | m;
        }
        if (mask == 0) { error = "no trace category selected"; return null; }
        return mask;
    }

    static bool Glob(string pattern, string name)
    {
        int p = 0, n = 0, star = -1, mark = 0;
        while (n < name.Length)
        {
            if (p < pattern.Length && (pattern[p] == '?' || pattern[p] == name[n])) { p++; n++; }
            else if (p < pattern.Length && pattern[p] == '*') { star = p++; mark = n; }
            else if (star >= 0) { p = star + 1; n = ++mark; }
            else return false;
        }
        while (p < pattern.Length && pattern[p] == '*') p++;
        return p == pattern.Length;
    }
}

/// <summary>Where an event stands in a flow (a DMA or MSI transaction followed across models).</summary>
public enum FlowPhase : byte { None, Begin, Step, End }

/// <summary>What started a flow.</summary>
public enum FlowKind : byte { None, Dma, Msi }

/// <summary>
/// The deterministic event log of one machine. Categories are enabled by a bit mask; <see cref="IsOn"/> is one
/// load and a test, and the interpolated <see cref="Emit(TraceCategory, string, ref TraceMessage)"/> formats nothing
/// (and allocates nothing) when the category is off. Timestamps are virtual: the machine's clock in nanoseconds,
/// made strictly increasing by one nanosecond per event so events at the same virtual instant keep their order.
/// </summary>
public sealed class Trace : Runtime.EventLoop.IPostedContext
{
    readonly List<TraceEvent> _events = [];
    ulong _mask;
    long _lastTime = -1;
    int _nextFlow = 1;
    int _flow;
    FlowKind _flowKind;

    public Trace(string name = "machine") => Name = name;

    /// <summary>The machine's name (one process in a trace viewer).</summary>
    public string Name { get; set; }

    /// <summary>The machine's virtual clock (timestamps); null = timestamps count events.</summary>
    public VirtualClock? Clock { get; set; }

    /// <summary>Enabled categories, one bit per <see cref="TraceCategory"/>.</summary>
    public ulong Mask { get => _mask; set => _mask = value; }

    /// <summary>True when any category is on. Setting true turns every category on; false turns all off.</summary>
    public bool Enabled
    {
        get => _mask != 0;
        set => _mask = value ? (1UL << TraceCategories.Count) - 1 : 0;
    }

    /// <summary>Whether to keep events in <see cref="Events"/> (the live sink sees them either way).</summary>
    public bool Record { get; set; } = true;

    /// <summary>Optional live sink (the CLI prints as events arrive).</summary>
    public Action<TraceEvent>? Sink { get; set; }

    public IReadOnlyList<TraceEvent> Events => _events;

    /// <summary>The flow in progress (0 = none): events emitted while a transaction is in flight carry it.</summary>
    public int CurrentFlow => _flow;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsOn(TraceCategory category) => (_mask & (1UL << (int)category)) != 0;

    /// <summary>Emits an event whose message is formatted only when <paramref name="category"/> is on.</summary>
    public void Emit(TraceCategory category, string source, [InterpolatedStringHandlerArgument("", "category")] ref TraceMessage message)
    {
        if (!message.IsOn) return;
        Add(category, source, message.ToStringAndClear(), _flow == 0 ? FlowPhase.None : FlowPhase.Step);
    }

    /// <summary>Emits a preformatted message (callers guard with <see cref="IsOn"/> when formatting costs).</summary>
    public void EmitText(TraceCategory category, string source, string message)
    {
        if (!IsOn(category)) return;
        Add(category, source, message, _flow == 0 ? FlowPhase.None : FlowPhase.Step);
    }

    /// <summary>Legacy form: the source names the model ("its", "gicd", "gicr", "icc", "smmuv3").</summary>
    public void Emit(string source, string message)
    {
        var c = source switch
        {
            "its" => TraceCategory.ItsCmd,
            "gicd" => TraceCategory.Gicd,
            "gicr" => TraceCategory.Gicr,
            "icc" => TraceCategory.Icc,
            "smmuv3" => TraceCategory.SmmuReg,
            _ => TraceCategory.Scenario,
        };
        if (!IsOn(c)) return;
        if (c == TraceCategory.SmmuReg && message.StartsWith("event ", StringComparison.Ordinal)) c = TraceCategory.SmmuEvent;
        if (!IsOn(c)) return;
        Add(c, source, message, _flow == 0 ? FlowPhase.None : FlowPhase.Step);
    }

    /// <summary>
    /// Starts a flow (a DMA or MSI transaction) if none is in progress and <paramref name="category"/> is on; the
    /// first event carries <see cref="FlowPhase.Begin"/>. Returns a token for <see cref="EndFlow"/> (0 = nothing started).
    /// </summary>
    public int BeginFlow(TraceCategory category, FlowKind kind, string source, [InterpolatedStringHandlerArgument("", "category")] ref TraceMessage message)
    {
        if (!message.IsOn) return 0;
        if (_flow != 0)
        {
            Add(category, source, message.ToStringAndClear(), FlowPhase.Step);
            return 0;
        }
        _flow = _nextFlow++;
        _flowKind = kind;
        Add(category, source, message.ToStringAndClear(), FlowPhase.Begin);
        return _flow;
    }

    /// <summary>Ends the flow <paramref name="token"/> started (no-op for 0).</summary>
    public void EndFlow(int token)
    {
        if (token == 0 || token != _flow) return;
        _flow = 0;
        _flowKind = FlowKind.None;
    }

    /// <summary>The kind of the flow in progress.</summary>
    public FlowKind CurrentFlowKind => _flowKind;

    long Runtime.EventLoop.IPostedContext.Capture() => ((long)_flow << 8) | (byte)_flowKind;

    void Runtime.EventLoop.IPostedContext.Restore(long context)
    {
        _flow = (int)(context >> 8);
        _flowKind = (FlowKind)(byte)context;
    }

    void Add(TraceCategory category, string source, string message, FlowPhase phase)
    {
        var now = Clock?.Now ?? 0;
        _lastTime = now > _lastTime ? now : _lastTime + 1;
        var e = new TraceEvent(_count++, _lastTime, category, source, message, phase == FlowPhase.None ? 0 : _flow, phase, _flowKind);
        if (Record) _events.Add(e);
        Sink?.Invoke(e);
    }

    int _count;

    public void Clear() => _events.Clear();

    /// <summary>Events emitted so far (recorded or only streamed).</summary>
    public int Count => _count;
}

/// <summary>Formats a trace message only when its category is on (C# interpolated string handler).</summary>
[InterpolatedStringHandler]
public ref struct TraceMessage
{
    DefaultInterpolatedStringHandler _inner;

    public TraceMessage(int literalLength, int formattedCount, Trace trace, TraceCategory category, out bool isOn)
    {
        ArgumentNullException.ThrowIfNull(trace);
        isOn = trace.IsOn(category);
        IsOn = isOn;
        _inner = isOn ? new DefaultInterpolatedStringHandler(literalLength, formattedCount, CultureInfo.InvariantCulture) : default;
    }

    internal bool IsOn { get; }

    public void AppendLiteral(string value) => _inner.AppendLiteral(value);
    public void AppendFormatted<T>(T value) => _inner.AppendFormatted(value);
    public void AppendFormatted<T>(T value, string? format) => _inner.AppendFormatted(value, format);
    public void AppendFormatted<T>(T value, int alignment) => _inner.AppendFormatted(value, alignment);
    public void AppendFormatted(ReadOnlySpan<char> value) => _inner.AppendFormatted(value);
    public void AppendFormatted(string? value) => _inner.AppendFormatted(value);

    internal string ToStringAndClear() => _inner.ToStringAndClear();
}

/// <summary>One trace event. <see cref="Time"/> is virtual nanoseconds; <see cref="Flow"/> 0 = not part of a flow.</summary>
public readonly record struct TraceEvent(int Sequence, long Time, TraceCategory Category, string Source, string Message,
    int Flow = 0, FlowPhase Phase = FlowPhase.None, FlowKind FlowKind = FlowKind.None)
{
    public string CategoryName => TraceCategories.Name(Category);
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"[{Time,9}] {CategoryName,-14} {Source,-18} {Message}");
}

/// <summary>One thing strict mode caught that real hardware would silently tolerate, with the rule it breaks.</summary>
public sealed record StrictViolation(string Source, string Rule, string Message)
{
    public override string ToString() => $"{Source}: {Message} (breaks {Rule})";
}

/// <summary>
/// Collects strict-mode reports. In permissive mode (Enabled = false) models behave exactly like hardware and
/// report nothing; in strict mode they behave the same and additionally record each violation here.
/// </summary>
public sealed class StrictMonitor
{
    // The last 4096 findings: a client or guest that keeps breaking a rule must not grow the process without bound.
    readonly Doorbell.Runtime.BoundedHistory<StrictViolation> _violations = new(4096);

    public bool Enabled { get; set; }

    /// <summary>Optional trace that also receives each finding (category strict).</summary>
    public Trace? Trace { get; set; }

    /// <summary>Optional live sink (the CLI prints findings as they happen).</summary>
    public Action<StrictViolation>? Sink { get; set; }

    /// <summary>The findings, oldest first: the last 4096 (<c>Violations.Total</c> counts them all).</summary>
    public Doorbell.Runtime.BoundedHistory<StrictViolation> Violations => _violations;

    public void Report(string source, string rule, string message)
    {
        if (!Enabled) return;
        var v = new StrictViolation(source, rule, message);
        _violations.Add(v);
        Trace?.EmitText(TraceCategory.Strict, source, v.ToString());
        Sink?.Invoke(v);
    }

    public void Clear() => _violations.Clear();
}

/// <summary>Cached track names, so models name a CPU or redistributor without allocating.</summary>
public static class TraceSources
{
    static readonly string[] Cpus = Enumerable.Range(0, 512).Select(i => "cpu" + i.ToString(CultureInfo.InvariantCulture)).ToArray();
    static readonly string[] Gicrs = Enumerable.Range(0, 512).Select(i => "gicr" + i.ToString(CultureInfo.InvariantCulture)).ToArray();

    public static string Cpu(int n) => (uint)n < (uint)Cpus.Length ? Cpus[n] : "cpu?";
    public static string Gicr(int n) => (uint)n < (uint)Gicrs.Length ? Gicrs[n] : "gicr?";
}
