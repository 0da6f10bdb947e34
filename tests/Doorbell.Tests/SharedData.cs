namespace Doorbell.Tests;

/// <summary>Locates ../shared (beside the checkout) from the test binaries.</summary>
public static class SharedData
{
    static readonly Lazy<string?> Root = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared", "data", "dtb");
            if (Directory.Exists(candidate)) return Path.Combine(dir.FullName, "shared");
        }
        return null;
    });

    /// <summary>Path of a file under shared/, failing the test loudly when shared/ is missing.</summary>
    public static string File(string relative) =>
        Path.Combine(Root.Value ?? throw new InvalidOperationException("../shared not found beside the checkout"), relative);
}
