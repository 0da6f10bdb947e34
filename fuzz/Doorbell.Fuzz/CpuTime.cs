using System.Runtime.InteropServices;

namespace Doorbell.Fuzz;

/// <summary>
/// CPU time of the calling thread and of the process (clock_gettime CLOCK_THREAD_CPUTIME_ID / CLOCK_PROCESS_CPUTIME_ID).
/// Time bounds are on CPU time, not wall time, so a loaded or niced machine does not turn slowness into "hangs".
/// </summary>
static partial class CpuTime
{
    const int ClockProcessCpuTime = 2, ClockThreadCpuTime = 3; // <linux/time.h>

    [StructLayout(LayoutKind.Sequential)]
    struct Timespec { public long Sec; public long Nsec; }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGettime(int clock, out Timespec ts);

    static TimeSpan Read(int clock) =>
        ClockGettime(clock, out var ts) == 0 ? TimeSpan.FromTicks(ts.Sec * TimeSpan.TicksPerSecond + ts.Nsec / 100) : TimeSpan.Zero;

    public static TimeSpan Thread => Read(ClockThreadCpuTime);
    public static TimeSpan Process => Read(ClockProcessCpuTime);
}
