namespace Doorbell.Scenarios;

/// <summary>One chapter of a scenario: builds what it needs, runs it, and reports what happened.</summary>
public interface IScenarioStep
{
    string Title { get; }

    /// <summary>Runs the step, writing a human-readable account. Returns false when something that should have happened did not.</summary>
    bool Run(ScenarioContext context);
}

/// <summary>Options and output shared by the steps of one run.</summary>
public sealed class ScenarioContext(TextWriter output, bool strict = false, bool trace = false)
{
    public TextWriter Output { get; } = output;
    public bool Strict { get; } = strict;
    public bool TraceEnabled { get; } = trace;

    public void Line(string text = "") => Output.WriteLine(text);
    public void Item(string text) => Output.WriteLine("  " + text);
}

/// <summary>A named, ordered list of steps.</summary>
public sealed class Scenario(string name, IReadOnlyList<IScenarioStep> steps)
{
    public string Name { get; } = name;
    public IReadOnlyList<IScenarioStep> Steps { get; } = steps;

    /// <summary>Runs every step in order; returns the number of steps that reported failure.</summary>
    public int Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var failures = 0;
        context.Line($"Doorbell scenario '{Name}'");
        for (var i = 0; i < Steps.Count; i++)
        {
            context.Line();
            context.Line($"== {i + 1}. {Steps[i].Title}");
            var ok = Steps[i].Run(context);
            if (!ok) failures++;
            context.Line(ok ? "   -> ok" : "   -> FAILED");
        }
        context.Line();
        context.Line(failures == 0 ? $"scenario '{Name}': all {Steps.Count} steps ok" : $"scenario '{Name}': {failures} of {Steps.Count} steps FAILED");
        return failures;
    }
}
