using System.Runtime.InteropServices;

// The few Linux system calls the VFIO server needs that .NET does not expose: AF_UNIX SOCK_SEQPACKET sockets with
// SCM_RIGHTS descriptor passing, SO_PEERCRED, and process_vm_readv/writev for DMA into a client's memory.
// Known limits: Linux x86-64/arm64 only (struct msghdr/cmsghdr layouts of LP64).
namespace Doorbell.Server;

internal static unsafe partial class ServerNative
{
    public const int AF_UNIX = 1, SOCK_SEQPACKET = 5, SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1, SO_PEERCRED = 17, SCM_RIGHTS = 1;
    public const int MSG_CMSG_CLOEXEC = 0x40000000, MSG_NOSIGNAL = 0x4000, MSG_TRUNC = 0x20, MSG_CTRUNC = 0x8;
    public const int SHUT_RDWR = 2;
    public const int EINTR = 4, ESRCH = 3, EFAULT = 14;

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec { public void* Base; public nuint Len; }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name; public uint NameLen; public IoVec* Iov; public nuint IovLen;
        public void* Control; public nuint ControlLen; public int Flags;
    }

    [LibraryImport("libc", SetLastError = true)] public static partial int socket(int domain, int type, int protocol);
    [LibraryImport("libc", SetLastError = true)] public static partial int bind(int fd, byte* addr, uint len);
    [LibraryImport("libc", SetLastError = true)] public static partial int listen(int fd, int backlog);
    [LibraryImport("libc", SetLastError = true)] public static partial int accept4(int fd, void* addr, void* len, int flags);
    [LibraryImport("libc", SetLastError = true)] public static partial int connect(int fd, byte* addr, uint len);
    [LibraryImport("libc", SetLastError = true)] public static partial nint recvmsg(int fd, MsgHdr* msg, int flags);
    [LibraryImport("libc", SetLastError = true)] public static partial nint sendmsg(int fd, MsgHdr* msg, int flags);
    [LibraryImport("libc", SetLastError = true)] public static partial int getsockopt(int fd, int level, int name, void* val, uint* len);
    [LibraryImport("libc", SetLastError = true)] public static partial int shutdown(int fd, int how);
    [LibraryImport("libc", SetLastError = true)] public static partial int close(int fd);
    [LibraryImport("libc", SetLastError = true)] public static partial nint process_vm_readv(int pid, IoVec* local, nuint liovcnt, IoVec* remote, nuint riovcnt, nuint flags);
    [LibraryImport("libc", SetLastError = true)] public static partial nint process_vm_writev(int pid, IoVec* local, nuint liovcnt, IoVec* remote, nuint riovcnt, nuint flags);
    [LibraryImport("libc", SetLastError = true)] public static partial void* mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);
    [LibraryImport("libc", SetLastError = true)] public static partial int munmap(void* addr, nuint length);
    [LibraryImport("libc", SetLastError = true)] public static partial int fcntl(int fd, int cmd, int arg);
    [LibraryImport("libc", SetLastError = true)] public static partial long lseek(int fd, long offset, int whence);
    [LibraryImport("libc", SetLastError = true)] public static partial int fstatfs(int fd, void* buf);

    /// <summary>
    /// Maps a client's DMA memory into this process when the client passed it as a memfd with MAP_DMA (the library
    /// moves small private anonymous buffers onto one). Only a tmpfs file sealed against shrinking, writable, and at
    /// least <paramref name="size"/> bytes long is taken, so the client cannot make an access here fault (SIGBUS past
    /// the end of a shrunk file, a hugetlbfs pool running dry). Returns the mapping or null (DMA then goes through
    /// process_vm_readv/writev as for any other memory).
    /// </summary>
    public static void* MapClientMemory(int fd, ulong size)
    {
        const int F_GET_SEALS = 1034, F_SEAL_SHRINK = 2, F_SEAL_WRITE = 8, F_SEAL_FUTURE_WRITE = 16;
        const long TMPFS_MAGIC = 0x01021994;
        if (fd < 0 || size == 0 || size > long.MaxValue) return null;
        var seals = fcntl(fd, F_GET_SEALS, 0);
        if (seals < 0 || (seals & F_SEAL_SHRINK) == 0 || (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) != 0) return null;
        var statfs = stackalloc long[16]; // struct statfs (120 bytes on LP64); f_type first
        if (fstatfs(fd, statfs) != 0 || statfs[0] != TMPFS_MAGIC) return null;
        var length = lseek(fd, 0, 2); // SEEK_END
        if (length < 0 || (ulong)length < size) return null;
        var p = mmap(null, (nuint)size, 3, 1, fd, 0); // PROT_READ|PROT_WRITE, MAP_SHARED
        return p == (void*)-1 ? null : p;
    }

    /// <summary>struct sockaddr_un for a path (sun_path is 108 bytes); false when the path does not fit.</summary>
    public static bool SockAddr(string path, Span<byte> addr, out uint len)
    {
        addr.Clear();
        var bytes = System.Text.Encoding.UTF8.GetBytes(path);
        len = 0;
        if (bytes.Length >= 108) return false;
        addr[0] = AF_UNIX;
        bytes.CopyTo(addr[2..]);
        len = (uint)(2 + bytes.Length + 1);
        return true;
    }

    /// <summary>A listening SOCK_SEQPACKET socket bound to <paramref name="path"/>, or -errno.</summary>
    public static int Listen(string path)
    {
        Span<byte> addr = stackalloc byte[110];
        if (!SockAddr(path, addr, out var len)) return -36; // ENAMETOOLONG
        var fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0) return -Marshal.GetLastPInvokeError();
        fixed (byte* a = addr)
            if (bind(fd, a, len) != 0 || listen(fd, 64) != 0)
            {
                var e = Marshal.GetLastPInvokeError();
                close(fd);
                return -e;
            }
        return fd;
    }

    /// <summary>Connects a SOCK_SEQPACKET socket to <paramref name="path"/>, or -errno.</summary>
    public static int Connect(string path)
    {
        Span<byte> addr = stackalloc byte[110];
        if (!SockAddr(path, addr, out var len)) return -36;
        var fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0) return -Marshal.GetLastPInvokeError();
        fixed (byte* a = addr)
            if (connect(fd, a, len) != 0)
            {
                var e = Marshal.GetLastPInvokeError();
                close(fd);
                return -e;
            }
        return fd;
    }

    /// <summary>The peer's pid (SO_PEERCRED), or -1.</summary>
    public static int PeerPid(int fd)
    {
        var cred = stackalloc int[3];
        uint len = 12;
        return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) == 0 ? cred[0] : -1;
    }

    /// <summary>recvmsg of one packet with up to <paramref name="fds"/>.Length passed descriptors. Returns the packet
    /// length (0 = peer closed) or -errno; <paramref name="fdCount"/> receives how many descriptors arrived (they are
    /// owned by the caller); <paramref name="truncated"/> is set when the packet or the control data did not fit.</summary>
    public static int Receive(int sock, Span<byte> buffer, Span<int> fds, out int fdCount, out bool truncated)
    {
        fdCount = 0;
        truncated = false;
        const int maxFds = 16;
        var control = stackalloc byte[16 + 4 * maxFds]; // CMSG_SPACE(4 * 16)
        fixed (byte* b = buffer)
        {
            IoVec iov = new() { Base = b, Len = (nuint)buffer.Length };
            MsgHdr msg = new() { Iov = &iov, IovLen = 1, Control = control, ControlLen = (nuint)(16 + 4 * maxFds) };
            nint n;
            do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
            while (n < 0 && Marshal.GetLastPInvokeError() == EINTR);
            if (n < 0) return -Marshal.GetLastPInvokeError();
            truncated = (msg.Flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
            // walk the control messages: cmsghdr { size_t len; int level; int type; data }
            var off = 0;
            while (msg.ControlLen >= 16 && off + 16 <= (int)msg.ControlLen)
            {
                var clen = (int)*(nuint*)(control + off);
                var level = *(int*)(control + off + 8);
                var type = *(int*)(control + off + 12);
                if (clen < 16 || off + clen > (int)msg.ControlLen) break;
                if (level == SOL_SOCKET && type == SCM_RIGHTS)
                    for (var p = 16; p + 4 <= clen; p += 4)
                    {
                        var fd = *(int*)(control + off + p);
                        if (fdCount < fds.Length) fds[fdCount++] = fd; else { close(fd); truncated = true; }
                    }
                off += (clen + 7) & ~7;
            }
            return (int)n;
        }
    }

    /// <summary>sendmsg of one packet (no descriptors). Returns bytes sent or -errno.</summary>
    public static int Send(int sock, ReadOnlySpan<byte> data)
    {
        fixed (byte* b = data)
        {
            IoVec iov = new() { Base = b, Len = (nuint)data.Length };
            MsgHdr msg = new() { Iov = &iov, IovLen = 1 };
            nint n;
            do n = sendmsg(sock, &msg, MSG_NOSIGNAL);
            while (n < 0 && Marshal.GetLastPInvokeError() == EINTR);
            return n < 0 ? -Marshal.GetLastPInvokeError() : (int)n;
        }
    }

    /// <summary>sendmsg of one packet carrying descriptors (SCM_RIGHTS). Returns bytes sent or -errno.</summary>
    public static int SendWithFds(int sock, ReadOnlySpan<byte> data, ReadOnlySpan<int> fds)
    {
        if (fds.Length == 0) return Send(sock, data);
        var clen = 16 + 4 * fds.Length;
        var control = stackalloc byte[(clen + 7) & ~7];
        *(nuint*)control = (nuint)clen;
        *(int*)(control + 8) = SOL_SOCKET;
        *(int*)(control + 12) = SCM_RIGHTS;
        for (var i = 0; i < fds.Length; i++) *(int*)(control + 16 + 4 * i) = fds[i];
        fixed (byte* b = data)
        {
            IoVec iov = new() { Base = b, Len = (nuint)data.Length };
            MsgHdr msg = new() { Iov = &iov, IovLen = 1, Control = control, ControlLen = (nuint)((clen + 7) & ~7) };
            var n = sendmsg(sock, &msg, MSG_NOSIGNAL);
            return n < 0 ? -Marshal.GetLastPInvokeError() : (int)n;
        }
    }

    /// <summary>Reads another process's memory; true when every byte was transferred.</summary>
    public static bool ReadProcess(int pid, ulong address, Span<byte> destination)
    {
        fixed (byte* d = destination)
        {
            IoVec local = new() { Base = d, Len = (nuint)destination.Length };
            IoVec remote = new() { Base = (void*)address, Len = (nuint)destination.Length };
            return process_vm_readv(pid, &local, 1, &remote, 1, 0) == destination.Length;
        }
    }

    /// <summary>Writes another process's memory; true when every byte was transferred.</summary>
    public static bool WriteProcess(int pid, ulong address, ReadOnlySpan<byte> source)
    {
        fixed (byte* s = source)
        {
            IoVec local = new() { Base = s, Len = (nuint)source.Length };
            IoVec remote = new() { Base = (void*)address, Len = (nuint)source.Length };
            return process_vm_writev(pid, &local, 1, &remote, 1, 0) == source.Length;
        }
    }

    /// <summary>
    /// True when [address, address+length) of the process is wholly covered by its memory mappings with the
    /// permissions asked for — the VMA-level check pinning makes (get_user_pages fails with EFAULT on a hole or on a
    /// mapping without the access). Read from /proc/PID/maps: one file read however large the range, instead of
    /// touching every page (which faulted in hundreds of MiB of a VMM's guest RAM). Null when the maps file cannot
    /// be read (then <see cref="ProbeProcess"/> decides).
    /// </summary>
    public static bool? RangeMapped(int pid, ulong address, ulong length, bool write)
    {
        string text;
        try { text = File.ReadAllText($"/proc/{pid}/maps"); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
        var at = address;
        var end = address + length;
        // lines are "start-end perms offset dev inode path", sorted by start
        foreach (var line in text.AsSpan().EnumerateLines())
        {
            var dash = line.IndexOf('-');
            var sp = line.IndexOf(' ');
            if (dash <= 0 || sp <= dash + 1 || line.Length < sp + 3) continue;
            if (!ulong.TryParse(line[..dash], System.Globalization.NumberStyles.HexNumber, null, out var s)
                || !ulong.TryParse(line[(dash + 1)..sp], System.Globalization.NumberStyles.HexNumber, null, out var e)) continue;
            if (e <= at) continue;
            if (s > at) return false; // a hole
            if (line[sp + 1] != 'r' || (write && line[sp + 2] != 'w')) return false;
            at = e;
            if (at >= end) return true;
        }
        return false;
    }

    /// <summary>True when every page of [address, address+length) of the process is readable (one byte per page,
    /// up to 512 pages per system call).</summary>
    public static bool ProbeProcess(int pid, ulong address, ulong length)
    {
        const int batch = 512;
        var scratch = stackalloc byte[batch];
        var local = stackalloc IoVec[batch];
        var remote = stackalloc IoVec[batch];
        var at = address & ~4095UL;
        var end = address + length;
        while (at < end)
        {
            var n = 0;
            for (; n < batch && at < end; n++, at += 4096)
            {
                local[n] = new IoVec { Base = scratch + n, Len = 1 };
                remote[n] = new IoVec { Base = (void*)at, Len = 1 };
            }
            if (process_vm_readv(pid, local, (nuint)n, remote, (nuint)n, 0) != n) return false;
        }
        return true;
    }
}
