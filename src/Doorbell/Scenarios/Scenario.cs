using Doorbell.Host.Kernel;
using Doorbell.Platform;

namespace Doorbell.Scenarios;

/// <summary>One chapter of a scenario: builds what it needs, runs it, and reports what happened.</summary>
public interface IScenarioStep
{
    string Title { get; }

    /// <summary>Runs the step, writing a human-readable account. Returns false when something that should have happened did not.</summary>
    bool Run(ScenarioContext context);
}

/// <summary>A machine a step built, as the report draws it (the kernel when one booted it: IOMMU groups).</summary>
public sealed record ObservedMachine(string Title, Machine Machine, HostKernel? Kernel);

/// <summary>
/// Options and output shared by the steps of one run. Every machine a step builds gets its trace and strict
/// monitor from here (<see cref="Options"/>, <see cref="NewTrace"/>, <see cref="NewStrict"/>), so `--trace` prints
/// events as they happen, `--trace-out`/`--report` see every machine, and strict findings are printed with the
/// rule they break.
/// </summary>
public sealed class ScenarioContext
{
    readonly List<Trace> _traces = [];
    readonly List<StrictViolation> _findings = [];
    readonly List<ObservedMachine> _machines = [];

    public ScenarioContext(TextWriter output, bool strict = false, bool trace = false)
        : this(output, strict, trace ? (1UL << TraceCategories.Count) - 1 : 0, 0) { }

    /// <param name="printMask">Categories printed as they happen.</param>
    /// <param name="recordMask">Categories recorded for a trace file or report (in addition to the printed ones).</param>
    public ScenarioContext(TextWriter output, bool strict, ulong printMask, ulong recordMask)
    {
        Output = output;
        Strict = strict;
        PrintMask = printMask;
        RecordMask = recordMask;
    }

    public TextWriter Output { get; }
    public bool Strict { get; }
    public bool TraceEnabled => PrintMask != 0;
    public ulong PrintMask { get; }
    public ulong RecordMask { get; }

    /// <summary>The step being run (1-based; 0 before the first).</summary>
    public int StepNumber { get; internal set; }
    public string StepTitle { get; internal set; } = "";

    public IReadOnlyList<Trace> Traces => _traces;
    public IReadOnlyList<StrictViolation> Findings => _findings;
    public IReadOnlyList<ObservedMachine> Machines => _machines;

    public void Line(string text = "") => Output.WriteLine(text);
    public void Item(string text) => Output.WriteLine("  " + text);

    /// <summary>A trace for one machine of the current step: printing and recording as the run asked.</summary>
    public Trace NewTrace(string machine)
    {
        var t = new Trace($"{StepNumber}. {machine}") { Mask = PrintMask | RecordMask, Record = RecordMask != 0 };
        if (PrintMask != 0)
        {
            var print = PrintMask;
            t.Sink = e =>
            {
                if ((print & (1UL << (int)e.Category)) != 0) Output.WriteLine("    | " + e);
            };
        }
        _traces.Add(t);
        return t;
    }

    /// <summary>A strict monitor for one machine (enabled with --strict); each finding is printed when it happens.</summary>
    public StrictMonitor NewStrict()
    {
        var s = new StrictMonitor { Enabled = Strict };
        s.Sink = v =>
        {
            _findings.Add(v);
            Output.WriteLine($"    ! strict: {v.Source}: {v.Message}");
            Output.WriteLine($"      rule: {v.Rule}");
        };
        return s;
    }

    /// <summary>qemu-virt options whose machine traces and checks into this run.</summary>
    public QemuVirtOptions Options(string machine, QemuVirtOptions? options = null) =>
        (options ?? new QemuVirtOptions()) with { Trace = NewTrace(machine), Strict = NewStrict() };

    /// <summary>Records a machine for the report (after its kernel booted, when there is one).</summary>
    public void Observe(string title, Machine machine, HostKernel? kernel = null) => _machines.Add(new ObservedMachine($"{StepNumber}. {title}", machine, kernel));
}

/// <summary>A named, ordered list of steps.</summary>
public sealed class Scenario(string name, IReadOnlyList<IScenarioStep> steps, string description = "")
{
    public string Name { get; } = name;
    public string Description { get; } = description;
    public IReadOnlyList<IScenarioStep> Steps { get; } = steps;

    /// <summary>Runs every step in order; returns the number of steps that reported failure.</summary>
    public int Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var failures = 0;
        context.Line($"Doorbell scenario '{Name}'");
        for (var i = 0; i < Steps.Count; i++)
        {
            context.StepNumber = i + 1;
            context.StepTitle = Steps[i].Title;
            context.Line();
            context.Line($"== {i + 1}. {Steps[i].Title}");
            var ok = Steps[i].Run(context);
            if (!ok) failures++;
            context.Line(ok ? "   -> ok" : "   -> FAILED");
        }
        context.Line();
        context.Line(failures == 0
            ? (Steps.Count == 1 ? $"scenario '{Name}': its one step ok" : $"scenario '{Name}': all {Steps.Count} steps ok")
            : $"scenario '{Name}': {failures} of {Steps.Count} {(Steps.Count == 1 ? "step" : "steps")} FAILED");
        if (context.Strict)
            context.Line($"strict mode: {context.Findings.Count} finding(s)");
        return failures;
    }
}
