using Doorbell.Host.Os;
using Doorbell.Host.Vfio.Abi;

namespace Doorbell.Tests.Vfio;

public class EventFdTests
{
    [Fact]
    public void Signal_makes_the_eventfd_readable_with_the_summed_counter()
    {
        using var e = EventFd.Create();
        Assert.False(e.TryRead(out _));
        Assert.False(e.WaitReadable(0));
        e.Signal(2);
        e.Signal(3);
        Assert.True(e.WaitReadable(0));
        Assert.True(e.TryRead(out var v));
        Assert.Equal(5UL, v);
        Assert.False(e.TryRead(out _));
    }

    [Fact]
    public void Epoll_reports_only_the_signalled_eventfds()
    {
        using var a = EventFd.Create();
        using var b = EventFd.Create();
        using var ep = new Epoll();
        ep.Add(a.Fd, 10);
        ep.Add(b.Fd, 20);
        var tokens = new ulong[4];
        Assert.Equal(0, ep.Wait(tokens, 0));
        b.Signal();
        Assert.Equal(1, ep.Wait(tokens, 100));
        Assert.Equal(20UL, tokens[0]);
    }

    [Fact]
    public void Kernel_context_resolves_eventfds_and_rejects_other_descriptors()
    {
        using var e = EventFd.Create();
        Assert.Equal(0, EventFdContext.TryGet(e.Fd, out var ctx));
        using (ctx)
        {
            ctx!.Signal();
            Assert.True(e.TryRead(out var v));
            Assert.Equal(1UL, v);
        }
        Assert.Equal(-Errno.EBADF, EventFdContext.TryGet(-1, out _));
        Assert.Equal(-Errno.EBADF, EventFdContext.TryGet(987_654, out _));
        using var f = File.OpenRead("/proc/self/stat");
        var fd = (int)f.SafeFileHandle.DangerousGetHandle();
        Assert.Equal(-Errno.EINVAL, EventFdContext.TryGet(fd, out _));
    }

    [Fact]
    public void Kernel_context_survives_the_user_closing_its_descriptor()
    {
        var e = EventFd.Create();
        Assert.Equal(0, EventFdContext.TryGet(e.Fd, out var ctx));
        using (ctx)
        {
            using var ep = new Epoll();
            ep.Add(e.Fd, 1);
            ctx!.Signal();
            var t = new ulong[1];
            Assert.Equal(1, ep.Wait(t, 100));
            e.Dispose();
            ctx.Signal(); // no crash: the context holds its own reference
        }
    }
}
