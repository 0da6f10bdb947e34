using Doorbell.Host.Irq;

namespace Doorbell.Tests.Host;

public class BoundedHistoryTests
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

    [Fact]
    public void A_history_holds_its_capacity_counts_everything_and_wraps_in_order()
    {
        var h = new Doorbell.Runtime.BoundedHistory<string>(3);
        Assert.Empty(h);
        h.AddRange(["a", "b"]);
        Assert.Equal(["a", "b"], h);
        h.AddRange(["c", "d", "e"]);
        Assert.Equal(["c", "d", "e"], h);
        Assert.Equal((3, 5L, "c", "e"), (h.Count, h.Total, h[0], h[^1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => h[3]);
        Assert.Throws<ArgumentOutOfRangeException>(() => new Doorbell.Runtime.BoundedHistory<int>(0));
    }

    [Fact]
    public void A_device_that_faults_without_end_costs_the_host_kernel_bounded_memory()
    {
        using var rig = Doorbell.Tests.EndToEnd.E2ERig.For("qemu-virt-gicv3");
        _ = rig.CopyOnceWithMsix(); // the device in a VFIO container's domain, bus mastering on
        var k = rig.Kernel;
        var before = k.SmmuEvents.Total;
        const int Faults = 5000;
        for (var i = 0; i < Faults; i++)
            rig.Mq[0].Dma.Write(0xdead_0000, [1, 2, 3, 4], Doorbell.Memory.BusAttributes.Cpu); // an IOVA never mapped
        k.DrainSmmuEvents();
        Assert.True(k.SmmuEvents.Total - before >= Faults - 64, $"{k.SmmuEvents.Total - before} events read"); // the queue may overflow between reads
        Assert.Equal(4096, k.SmmuEvents.Count);
        Assert.Equal(4096, k.SmmuV3Driver!.Events.Count);
        Assert.Equal(0xdead_0000UL, k.SmmuEvents[^1].InputAddress);
    }

    [Fact]
    public void A_reader_cursor_by_total_sees_each_item_once_and_skips_what_was_overwritten()
    {
        var h = new Doorbell.Runtime.BoundedHistory<int>(4);
        long seen = 0;
        int[] Read() => h.TakeSince(ref seen);
        h.AddRange([1, 2]);
        Assert.Equal([1, 2], Read());
        Assert.Empty(Read());
        h.AddRange([3, 4, 5]);
        Assert.Equal([3, 4, 5], Read());
        h.AddRange(Enumerable.Range(6, 10)); // 6..15: only the last four are still held
        Assert.Equal([12, 13, 14, 15], Read());
        h.Clear();
        Assert.Empty(h);
        h.Add(16);
        Assert.Equal([16], Read());
        Assert.Equal(16L, h.Total);
    }

    [Fact]
    public void Strict_findings_are_bounded_and_counted()
    {
        var strict = new Doorbell.Tracing.StrictMonitor { Enabled = true };
        for (var i = 0; i < 5000; i++) strict.Report("test", "rule", $"finding {i}");
        Assert.Equal((4096, 5000L), (strict.Violations.Count, strict.Violations.Total));
        Assert.Equal("finding 4999", strict.Violations[^1].Message);
    }
}
