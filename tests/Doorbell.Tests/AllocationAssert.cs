namespace Doorbell.Tests;

/// <summary>
/// Asserts a hot path allocates nothing in steady state. The body runs once to warm up; then its allocations on
/// this thread are measured, up to three times, because tiered JIT compilation (call counting, on-stack
/// replacement) can allocate on the calling thread the first times a loop runs. Any attempt measuring zero
/// passes; a path that really allocates allocates on every attempt and fails.
/// </summary>
public static class AllocationAssert
{
    public static void None(Action body)
    {
        ArgumentNullException.ThrowIfNull(body);
        body();
        long allocated = 0;
        for (var attempt = 0; attempt < 3; attempt++)
        {
            var before = GC.GetAllocatedBytesForCurrentThread();
            body();
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (allocated == 0) return;
        }
        Assert.Fail($"hot path allocated {allocated} bytes per run in steady state");
    }
}
