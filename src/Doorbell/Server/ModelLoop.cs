using System.Collections.Concurrent;

// The one thread that owns all model and host-kernel state while `doorbell serve` runs. Client threads only move
// bytes on their sockets and post work here, one item at a time, waiting for it to finish. Kept minimal on purpose:
// it is the stand-in for the machine-wide event loop (issue 11 item 5) and is replaced by it when that lands.
namespace Doorbell.Server;

public sealed class ModelLoop : IDisposable
{
    /// <summary>A reusable unit of work (one per client thread, so posting allocates nothing).</summary>
    public sealed class Work : IDisposable
    {
        internal Action? Action;
        internal Exception? Failure;
        internal readonly ManualResetEventSlim Done = new(false);

        public void Dispose() => Done.Dispose();
    }

    readonly BlockingCollection<Work> _queue = [];
    readonly Thread _thread;
    readonly Action _afterEach;

    /// <param name="afterEach">Runs after every work item on the model thread (virtual time, interrupts, events).</param>
    public ModelLoop(Action afterEach)
    {
        _afterEach = afterEach;
        _thread = new Thread(Run) { IsBackground = true, Name = "doorbell-model" };
        _thread.Start();
    }

    /// <summary>Runs <paramref name="action"/> on the model thread and waits for it. An exception in it is returned
    /// to the caller (the server turns it into an error reply and a log line; the loop keeps running).</summary>
    public Exception? Invoke(Work work, Action action)
    {
        ArgumentNullException.ThrowIfNull(work);
        work.Action = action;
        work.Failure = null;
        work.Done.Reset();
        try { _queue.Add(work); }
        catch (InvalidOperationException) { return new ObjectDisposedException(nameof(ModelLoop)); }
        work.Done.Wait();
        return work.Failure;
    }

    void Run()
    {
        foreach (var w in _queue.GetConsumingEnumerable())
        {
            try
            {
                w.Action!();
                _afterEach();
            }
#pragma warning disable CA1031 // the model thread must survive anything a client provokes
            catch (Exception e) { w.Failure = e; }
#pragma warning restore CA1031
            w.Done.Set();
        }
    }

    public void Dispose()
    {
        _queue.CompleteAdding();
        _thread.Join(5000);
        _queue.Dispose();
    }
}
