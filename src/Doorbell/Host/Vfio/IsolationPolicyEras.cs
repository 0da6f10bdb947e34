namespace Doorbell.Host.Vfio;

/// <summary>The names users give the isolation-policy eras (`doorbell serve --isolation-era`, scenario files).</summary>
public static class IsolationPolicyEras
{
    /// <summary>What the parser accepts, for help texts and error messages.</summary>
    public const string Accepted = "1|2014, 2|4.11, 3|today";

    /// <summary>1, 2013, 2014 → the 2013–14 era; 2, 4.11 → the 4.11 era; 3, today → today's; null for anything else.</summary>
    public static IsolationPolicyEra? Parse(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        "1" or "2013" or "2014" => IsolationPolicyEra.Era2013,
        "2" or "4.11" => IsolationPolicyEra.Era411,
        "3" or "today" => IsolationPolicyEra.Today,
        _ => null,
    };

    /// <summary>The era's usual name (2014, 4.11, today).</summary>
    public static string Name(IsolationPolicyEra era) => era switch
    {
        IsolationPolicyEra.Era2013 => "2014",
        IsolationPolicyEra.Era411 => "4.11",
        _ => "today",
    };
}
