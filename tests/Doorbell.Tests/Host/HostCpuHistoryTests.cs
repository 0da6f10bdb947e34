using Doorbell.Host.Irq;

namespace Doorbell.Tests.Host;

public class HostCpuHistoryTests
{
    /// <summary>Signals INTIDs 8192, 8193, … once each, then nothing (1023).</summary>
    sealed class Counting(int total) : IHostCpuInterface
    {
        int _next;
        public int Eois;
        public int Acknowledge() => _next < total ? 8192 + _next++ : 1023;
        public void EndOfInterrupt(int intid) => Eois++;
    }

    [Fact]
    public void History_keeps_the_last_1024_interrupts_in_order()
    {
        var table = new HostIrqTable();
        var seen = 0;
        table.Request(8192 + 5, (_, _) => seen++);
        var gic = new Counting(1500);
        var cpu = new HostCpu(0, gic, table);
        Assert.Equal(1500, cpu.HandleInterrupts());
        Assert.Equal((1500, 1, 1499L, 1L), (gic.Eois, seen, cpu.Unhandled, cpu.Handled));
        Assert.Equal(1024, cpu.History.Count);
        Assert.Equal(8192 + 1500 - 1024, cpu.History[0]);
        Assert.Equal(8192 + 1499, cpu.History[^1]);
        Assert.Equal(Enumerable.Range(8192 + 1500 - 1024, 1024), cpu.History);
        Assert.Throws<ArgumentOutOfRangeException>(() => cpu.History[1024]);
    }
}
