using Doorbell.Runtime;

namespace Doorbell.Tests.Runtime;

public class EventLoopTests
{
    [Fact]
    public void Work_posted_from_other_threads_runs_on_the_owner_in_arrival_order()
    {
        var loop = new EventLoop();
        var ran = new List<int>();
        var owner = Environment.CurrentManagedThreadId;
        var threads = new List<int>();
        var t = new Thread(() =>
        {
            for (var i = 0; i < 100; i++) { var k = i; loop.Post(() => { ran.Add(k); threads.Add(Environment.CurrentManagedThreadId); }); }
        });
        t.Start();
        t.Join();
        Assert.True(loop.WaitForWork(TimeSpan.Zero));
        Assert.Equal(100, loop.RunUntilIdle());
        Assert.Equal(Enumerable.Range(0, 100), ran);
        Assert.All(threads, id => Assert.Equal(owner, id));
        Assert.False(loop.WaitForWork(TimeSpan.FromMilliseconds(1)));
    }

    [Fact]
    public void Deferred_work_runs_after_the_outermost_operation_iteratively()
    {
        var loop = new EventLoop();
        var log = new List<string>();
        loop.Enter();
        loop.Defer(() => { log.Add("a"); loop.Defer(() => log.Add("c")); log.Add("b"); });
        log.Add("inside");
        loop.Exit();
        Assert.Equal(["inside", "a", "b", "c"], log);
        loop.Defer(() => log.Add("now")); // no operation running: at once
        Assert.Equal("now", log[^1]);
    }

    [Fact]
    public void Drain_budget_stops_an_endless_chain_and_leaves_the_rest_queued()
    {
        var loop = new EventLoop { DrainBudget = 1000 };
        var n = 0;
        void Again() { n++; loop.Defer(Again); }
        loop.Defer(Again);
        Assert.Equal(1000, n);
        Assert.Equal(1, loop.Pending);
        Assert.Equal(1, loop.DrainOverruns);
    }
}
