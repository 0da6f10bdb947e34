namespace Doorbell.Tracing;

/// <summary>
/// A deterministic event log shared by the models of one machine. Models check <see cref="Enabled"/> before
/// formatting anything, so a disabled trace costs one branch on hot paths. Events carry no wall-clock time.
/// </summary>
public sealed class Trace
{
    readonly List<TraceEvent> _events = [];

    public bool Enabled { get; set; }

    /// <summary>Optional live sink (the CLI prints as events arrive).</summary>
    public Action<TraceEvent>? Sink { get; set; }

    public IReadOnlyList<TraceEvent> Events => _events;

    public void Emit(string source, string message)
    {
        if (!Enabled) return;
        var e = new TraceEvent(_events.Count, source, message);
        _events.Add(e);
        Sink?.Invoke(e);
    }

    public void Clear() => _events.Clear();
}

public readonly record struct TraceEvent(int Sequence, string Source, string Message)
{
    public override string ToString() => $"[{Sequence,5}] {Source,-8} {Message}";
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
    readonly List<StrictViolation> _violations = [];

    public bool Enabled { get; set; }

    public IReadOnlyList<StrictViolation> Violations => _violations;

    public void Report(string source, string rule, string message)
    {
        if (Enabled)
            _violations.Add(new StrictViolation(source, rule, message));
    }

    public void Clear() => _violations.Clear();
}
