using System.Runtime.InteropServices;

// Real Linux eventfd(2) and epoll(7) objects, so a userspace driver written against Doorbell's VFIO can
// poll/epoll/read its interrupts exactly as on Linux. Known limits: Linux only (x86-64/arm64 epoll_event layout
// handled); no io_uring.
namespace Doorbell.Host.Os;

internal static partial class LibC
{
    public const int EFD_SEMAPHORE = 1, EFD_CLOEXEC = 0x80000, EFD_NONBLOCK = 0x800;
    public const int EPOLL_CLOEXEC = 0x80000, EPOLL_CTL_ADD = 1, EPOLL_CTL_DEL = 2;
    public const uint EPOLLIN = 1;
    public const int EAGAIN = 11, EINTR = 4;

    [LibraryImport("libc", SetLastError = true)] public static partial int eventfd(uint initval, int flags);
    [LibraryImport("libc", SetLastError = true)] public static unsafe partial nint read(int fd, void* buf, nint count);
    [LibraryImport("libc", SetLastError = true)] public static unsafe partial nint write(int fd, void* buf, nint count);
    [LibraryImport("libc", SetLastError = true)] public static partial int close(int fd);
    [LibraryImport("libc", SetLastError = true)] public static partial int dup(int fd);
    [LibraryImport("libc", SetLastError = true)] public static partial int fcntl(int fd, int cmd, int arg);
    [LibraryImport("libc", SetLastError = true)] public static partial int epoll_create1(int flags);
    [LibraryImport("libc", SetLastError = true)] public static unsafe partial int epoll_ctl(int epfd, int op, int fd, void* ev);
    [LibraryImport("libc", SetLastError = true)] public static unsafe partial int epoll_wait(int epfd, void* events, int maxevents, int timeout);
    [LibraryImport("libc", SetLastError = true)] public static unsafe partial int poll(void* fds, nuint nfds, int timeout);
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static unsafe partial nint readlink(string path, byte* buf, nint size);

    // struct epoll_event is packed on x86-64 (12 bytes) and naturally aligned elsewhere (16 bytes).
    public static readonly int EpollEventSize = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;
    public static readonly int EpollDataOffset = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 4 : 8;
}

/// <summary>An in-kernel waiter on an eventfd's wait queue (Linux: KVM's irqfd_wakeup hooked with add_wait_queue).</summary>
public interface IEventFdWaiter
{
    /// <summary>Called synchronously by the signaller; the waiter consumes the signal (the counter stays 0).</summary>
    void Wake();
}

/// <summary>
/// The kernel object behind eventfd descriptors: one per eventfd, shared by every descriptor (and dup) that refers
/// to it, identified by the kernel's eventfd-id (/proc/self/fdinfo). It carries the in-kernel wait queue: when any
/// waiter is registered, a signal from Doorbell's kernel side or a Doorbell-owned <see cref="EventFd"/> wakes the
/// waiters synchronously instead of writing the counter (as eventfd_signal → wake_up → irqfd_wakeup, which reads
/// the count back to 0). A write(2) by code outside Doorbell still lands in the counter; waiters' owners drain it
/// from their poll step.
/// </summary>
public sealed class EventFdFile
{
    static readonly Dictionary<long, WeakReference<EventFdFile>> Registry = [];
    IEventFdWaiter[] _waiters = [];

    EventFdFile(long id) => Id = id;

    /// <summary>The kernel's eventfd-id.</summary>
    public long Id { get; }
    public int WaiterCount => _waiters.Length;

    public void AddWaiter(IEventFdWaiter waiter)
    {
        lock (this) _waiters = [.. _waiters, waiter];
    }

    public void RemoveWaiter(IEventFdWaiter waiter)
    {
        lock (this) _waiters = [.. _waiters.Where(w => !ReferenceEquals(w, waiter))];
    }

    /// <summary>Wakes every waiter; false when there is none (the caller then writes the counter).</summary>
    internal bool WakeWaiters()
    {
        var w = _waiters;
        if (w.Length == 0) return false;
        for (var i = 0; i < w.Length; i++) w[i].Wake();
        return true;
    }

    /// <summary>The file of eventfd descriptor <paramref name="fd"/>, or null when fdinfo names no eventfd-id.</summary>
    internal static EventFdFile? Of(int fd)
    {
        long id = -1;
        try
        {
            foreach (var line in System.IO.File.ReadLines($"/proc/self/fdinfo/{fd}"))
                if (line.StartsWith("eventfd-id:", StringComparison.Ordinal) && long.TryParse(line.AsSpan(11).Trim(), out var v)) { id = v; break; }
        }
        catch (System.IO.IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
        if (id < 0) return null;
        lock (Registry)
        {
            if (Registry.TryGetValue(id, out var weak) && weak.TryGetTarget(out var f)) return f;
            f = new EventFdFile(id);
            Registry[id] = new WeakReference<EventFdFile>(f);
            return f;
        }
    }
}

/// <summary>A Linux eventfd owned by this object (closed on Dispose).</summary>
public sealed class EventFd : IDisposable
{
    public int Fd { get; private set; }
    readonly EventFdFile? _file;

    EventFd(int fd)
    {
        Fd = fd;
        _file = EventFdFile.Of(fd);
    }

    /// <summary>The kernel object (with its in-kernel wait queue), or null where fdinfo does not identify eventfds.</summary>
    public EventFdFile? File => _file;

    /// <summary>eventfd(initval, EFD_CLOEXEC [| EFD_NONBLOCK] [| EFD_SEMAPHORE]).</summary>
    public static EventFd Create(uint initialValue = 0, bool nonBlocking = true, bool semaphore = false)
    {
        var flags = LibC.EFD_CLOEXEC | (nonBlocking ? LibC.EFD_NONBLOCK : 0) | (semaphore ? LibC.EFD_SEMAPHORE : 0);
        var fd = LibC.eventfd(initialValue, flags);
        if (fd < 0) throw new InvalidOperationException($"eventfd failed: errno {Marshal.GetLastPInvokeError()}");
        return new EventFd(fd);
    }

    /// <summary>Adds <paramref name="value"/> to the counter (write(2) of 8 bytes).</summary>
    public bool Signal(ulong value = 1)
    {
        if (_file is not null && _file.WakeWaiters()) return true;
        return EventFdIo.Write(Fd, value);
    }

    /// <summary>Reads and resets the counter (read(2)); false when it is zero (EAGAIN on a non-blocking eventfd).</summary>
    public bool TryRead(out ulong value) => EventFdIo.TryRead(Fd, out value);

    /// <summary>poll(2) for readability with a timeout in milliseconds.</summary>
    public bool WaitReadable(int timeoutMs) => EventFdIo.PollIn(Fd, timeoutMs);

    public void Dispose()
    {
        if (Fd >= 0) { _ = LibC.close(Fd); Fd = -1; }
    }
}

internal static class EventFdIo
{
    public static unsafe bool Write(int fd, ulong value)
    {
        for (var i = 0; i < 4; i++)
        {
            if (LibC.write(fd, &value, 8) == 8) return true;
            if (Marshal.GetLastPInvokeError() != LibC.EINTR) return false;
        }
        return false;
    }

    public static unsafe bool TryRead(int fd, out ulong value)
    {
        ulong v = 0;
        var n = LibC.read(fd, &v, 8);
        value = v;
        return n == 8;
    }

    public static unsafe bool PollIn(int fd, int timeoutMs)
    {
        // struct pollfd { int fd; short events; short revents; }
        var pfd = stackalloc int[2];
        pfd[0] = fd;
        pfd[1] = 1; // POLLIN in the low half, revents 0
        var n = LibC.poll(pfd, 1, timeoutMs);
        return n == 1 && ((pfd[1] >> 16) & 1) != 0;
    }
}

/// <summary>A kernel-side reference to a user's eventfd (Linux's eventfd_ctx): resolved from a file descriptor number,
/// kept alive by a private dup(2) so the user may close theirs, and signalled with eventfd_signal semantics.</summary>
public sealed class EventFdContext : IDisposable
{
    int _fd;

    EventFdContext(int fd)
    {
        _fd = fd;
        File = EventFdFile.Of(fd);
    }

    /// <summary>The kernel object this context refers to (shared with every other descriptor of the same eventfd).</summary>
    public EventFdFile? File { get; }

    /// <summary>The eventfd_ctx_fdget of Linux: -EBADF when <paramref name="fd"/> is not an open descriptor,
    /// -EINVAL when it is not an eventfd.</summary>
    public static int TryGet(int fd, out EventFdContext? context)
    {
        context = null;
        if (fd < 0) return -Doorbell.Errno.EBADF;
        var target = ReadLink($"/proc/self/fd/{fd}");
        if (target is null) return -Doorbell.Errno.EBADF;
        if (target != "anon_inode:[eventfd]") return -Doorbell.Errno.EINVAL;
        var own = LibC.dup(fd);
        if (own < 0) return -Doorbell.Errno.EBADF;
        _ = LibC.fcntl(own, 2 /* F_SETFD */, 1 /* FD_CLOEXEC */);
        context = new EventFdContext(own);
        return 0;
    }

    static unsafe string? ReadLink(string path)
    {
        var buf = stackalloc byte[128];
        var n = LibC.readlink(path, buf, 128);
        return n <= 0 ? null : System.Text.Encoding.UTF8.GetString(buf, (int)n);
    }

    /// <summary>Adds 1 to the counter (eventfd_signal).</summary>
    public void Signal()
    {
        if (_fd < 0) return;
        if (File is not null && File.WakeWaiters()) return;
        EventFdIo.Write(_fd, 1);
    }

    /// <summary>Consumes the counter if nonzero (used for irqfds the user signals towards the kernel).</summary>
    public bool TryConsume() => _fd >= 0 && EventFdIo.TryRead(_fd, out var v) && v != 0;

    public void Dispose()
    {
        if (_fd >= 0) { _ = LibC.close(_fd); _fd = -1; }
    }
}

/// <summary>An epoll(7) instance over eventfds.</summary>
public sealed class Epoll : IDisposable
{
    int _fd;

    public Epoll()
    {
        _fd = LibC.epoll_create1(LibC.EPOLL_CLOEXEC);
        if (_fd < 0) throw new InvalidOperationException($"epoll_create1 failed: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>EPOLL_CTL_ADD for EPOLLIN with a 64-bit user token.</summary>
    public unsafe void Add(int fd, ulong token)
    {
        var ev = stackalloc byte[16];
        *(uint*)ev = LibC.EPOLLIN;
        *(ulong*)(ev + LibC.EpollDataOffset) = token;
        if (LibC.epoll_ctl(_fd, LibC.EPOLL_CTL_ADD, fd, ev) != 0)
            throw new InvalidOperationException($"epoll_ctl failed: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>epoll_wait; writes the tokens of ready descriptors and returns how many.</summary>
    public unsafe int Wait(Span<ulong> tokens, int timeoutMs)
    {
        var max = Math.Min(tokens.Length, 64);
        var evs = stackalloc byte[64 * 16];
        var n = LibC.epoll_wait(_fd, evs, max, timeoutMs);
        if (n < 0) return 0;
        for (var i = 0; i < n; i++) tokens[i] = *(ulong*)(evs + i * LibC.EpollEventSize + LibC.EpollDataOffset);
        return n;
    }

    public void Dispose()
    {
        if (_fd >= 0) { _ = LibC.close(_fd); _fd = -1; }
    }
}
