using System.Buffers.Binary;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio.Abi;

// A userspace process using VFIO: its file-descriptor table (/dev/vfio/vfio, /dev/vfio/$GROUP, device fds),
// its modelled address space and its RLIMIT_MEMLOCK. Known limits: VFIO descriptors live in this table, separate
// from real OS descriptors; the eventfds passed to SET_IRQS are real OS descriptors.
namespace Doorbell.Host.Vfio;

/// <summary>A VFIO file (container, group or device): the ioctl-shaped entry returns 0 (or a positive value where
/// Linux does) or -errno.</summary>
public abstract class VfioFile
{
    protected VfioFile(VfioProcess process) => Process = process;

    public VfioProcess Process { get; }

    /// <summary>ioctl(fd, request, pointer): <paramref name="arg"/> is the user buffer the pointer refers to.</summary>
    public abstract int Ioctl(uint request, Span<byte> arg);

    /// <summary>ioctl(fd, request, value) for requests whose argument is a scalar (CHECK_EXTENSION, SET_IOMMU …).
    /// Pointer requests given a scalar fault (-EFAULT).</summary>
    public virtual int Ioctl(uint request, ulong arg) => Ioctl(request, Span<byte>.Empty);

    internal abstract void Release();

    /// <summary>Scalar argument passed through the pointer overload (little-endian, up to 8 bytes).</summary>
    protected static ulong ScalarOf(ReadOnlySpan<byte> arg)
    {
        Span<byte> b = stackalloc byte[8];
        b.Clear();
        arg[..Math.Min(8, arg.Length)].CopyTo(b);
        return BinaryPrimitives.ReadUInt64LittleEndian(b);
    }
}

/// <summary>A process: fd table, memory, memlock limit.</summary>
public sealed class VfioProcess
{
    readonly List<VfioFile?> _fds = [null, null, null]; // 0-2: stdio

    public VfioProcess(VfioHost host, UserAddressSpace memory, ulong memlockLimitBytes = 8UL << 20, bool capIpcLock = false)
    {
        Host = host;
        Memory = memory;
        MemlockLimitBytes = memlockLimitBytes;
        CapIpcLock = capIpcLock;
    }

    public VfioHost Host { get; }
    public UserAddressSpace Memory { get; }
    /// <summary>RLIMIT_MEMLOCK in bytes (8 MiB, the Linux default since 5.16).</summary>
    public ulong MemlockLimitBytes { get; set; }
    /// <summary>CAP_IPC_LOCK exempts pinning from RLIMIT_MEMLOCK.</summary>
    public bool CapIpcLock { get; set; }
    /// <summary>mm->locked_vm in pages.</summary>
    public ulong LockedPages { get; internal set; }

    internal int Install(VfioFile file)
    {
        for (var i = 3; i < _fds.Count; i++)
            if (_fds[i] is null) { _fds[i] = file; return i; }
        _fds.Add(file);
        return _fds.Count - 1;
    }

    public VfioFile? File(int fd) => fd >= 0 && fd < _fds.Count ? _fds[fd] : null;

    /// <summary>open("/dev/vfio/vfio").</summary>
    public int OpenContainer()
    {
        var fd = Install(new VfioContainer(this));
        if (VfioTrace.AnyOn(Host.Trace)) VfioTrace.OpenContainer(Host.Trace!, fd);
        return fd;
    }

    /// <summary>open("/dev/vfio/$id"): -ENOENT for an unknown group, -EBUSY while another open file exists.</summary>
    public int OpenGroup(int id)
    {
        var r = OpenGroupCore(id);
        if (VfioTrace.AnyOn(Host.Trace)) VfioTrace.Open(Host.Trace!, id, r);
        return r;
    }

    int OpenGroupCore(int id)
    {
        var g = Host.FindGroup(id);
        if (g is null) return -Errno.ENOENT;
        if (g.FileOpen) return -Errno.EBUSY;
        g.FileOpen = true;
        g.FileClosedPendingRelease = false;
        return Install(new VfioGroupFile(this, g));
    }

    /// <summary>close(fd): 0 or -EBADF.</summary>
    public int Close(int fd)
    {
        var f = File(fd);
        var traced = VfioTrace.AnyOn(Host.Trace);
        if (f is null)
        {
            if (traced) VfioTrace.Close(Host.Trace!, fd, null, -Errno.EBADF);
            return -Errno.EBADF;
        }
        _fds[fd] = null;
        f.Release();
        if (traced) VfioTrace.Close(Host.Trace!, fd, f, 0);
        return 0;
    }

    public int Ioctl(int fd, uint request, Span<byte> arg)
    {
        var f = File(fd);
        if (!VfioTrace.AnyOn(Host.Trace)) return f is not null ? f.Ioctl(request, arg) : -Errno.EBADF;
        var before = VfioTrace.Capture(f, request, arg);
        var r = f is not null ? f.Ioctl(request, arg) : -Errno.EBADF;
        VfioTrace.Ioctl(Host.Trace!, this, fd, f, request, false, 0, arg, before, r);
        return r;
    }

    public int Ioctl(int fd, uint request, ulong arg)
    {
        var f = File(fd);
        var r = f is not null ? f.Ioctl(request, arg) : -Errno.EBADF;
        if (VfioTrace.AnyOn(Host.Trace)) VfioTrace.Ioctl(Host.Trace!, this, fd, f, request, true, arg, default, default, r);
        return r;
    }

    /// <summary>pread(fd, buf, offset): bytes read or -errno.</summary>
    public long Pread(int fd, Span<byte> buffer, ulong offset)
    {
        var f = File(fd);
        var r = f switch
        {
            VfioDeviceFile d => d.Device.Rw(buffer, offset, false),
            null => -Errno.EBADF,
            _ => -Errno.EINVAL,
        };
        if (VfioTrace.AnyOn(Host.Trace)) VfioTrace.Region(Host.Trace!, f, offset, r > 0 ? buffer[..(int)Math.Min(r, buffer.Length)] : buffer, r, write: false);
        return r;
    }

    /// <summary>pwrite(fd, buf, offset): bytes written or -errno.</summary>
    public long Pwrite(int fd, ReadOnlySpan<byte> buffer, ulong offset)
    {
        var f = File(fd);
        long r;
        if (f is not VfioDeviceFile d) r = f is null ? -Errno.EBADF : -Errno.EINVAL;
        else
        {
            var copy = buffer.ToArray();
            r = d.Device.Rw(copy, offset, true);
        }
        if (VfioTrace.AnyOn(Host.Trace)) VfioTrace.Region(Host.Trace!, f, offset, buffer, r, write: true);
        return r;
    }

    /// <summary>mmap(NULL, length, prot, MAP_SHARED, fd, offset): the user vaddr, or -errno (as a negative long).</summary>
    public long Mmap(int fd, ulong length, ulong offset, UserProt prot = UserProt.Read | UserProt.Write, bool shared = true, ulong fixedVaddr = 0)
    {
        var f = File(fd);
        long r;
        if (f is not VfioDeviceFile d) r = f is null ? -Errno.EBADF : -Errno.ENODEV;
        else r = d.Device.Mmap(Memory, length, offset, prot, shared, fixedVaddr);
        if (VfioTrace.AnyOn(Host.Trace)) VfioTrace.Mmap(Host.Trace!, f, length, offset, r);
        return r;
    }

    /// <summary>Process exit: every descriptor is closed in ascending order (exit_files), which releases devices,
    /// groups and containers and with them every DMA mapping, pin and eventfd context.</summary>
    public void CloseAll()
    {
        for (var fd = 0; fd < _fds.Count; fd++)
            if (_fds[fd] is not null) Close(fd);
    }

    /// <summary>Open descriptors (VFIO files) in the table.</summary>
    public int OpenFileCount => _fds.Count(f => f is not null);
}

/// <summary>The file of a group (/dev/vfio/$GROUP).</summary>
public sealed class VfioGroupFile : VfioFile
{
    internal VfioGroupFile(VfioProcess process, VfioGroup group) : base(process) => Group = group;

    public VfioGroup Group { get; }

    public override int Ioctl(uint request, Span<byte> arg)
    {
        if (request == VfioIoctl.GroupGetStatus) return GetStatus(arg);
        if (request == VfioIoctl.GroupSetContainer) return SetContainer(arg);
        if (request == VfioIoctl.GroupUnsetContainer) return UnsetContainer();
        if (request == VfioIoctl.GroupGetDeviceFd) return GetDeviceFd(arg);
        return -Errno.ENOTTY;
    }

    public override int Ioctl(uint request, ulong arg) =>
        request == VfioIoctl.GroupUnsetContainer ? UnsetContainer() : base.Ioctl(request, arg);

    int GetStatus(Span<byte> arg)
    {
        const int minsz = 8;
        if (!UserArg.TryRead(arg, minsz, out VfioGroupStatus st)) return -Errno.EFAULT;
        if (st.Argsz < minsz) return -Errno.EINVAL;
        st.Flags = 0;
        if (Group.Container is not null) st.Flags |= VfioGroupFlags.ContainerSet | VfioGroupFlags.Viable; // vfio_group_has_iommu
        else if (Group.IsViable) st.Flags |= VfioGroupFlags.Viable;
        return UserArg.TryWrite(arg, minsz, st) ? 0 : -Errno.EFAULT;
    }

    int SetContainer(Span<byte> arg)
    {
        if (arg.Length < 4) return -Errno.EFAULT;
        var fd = BinaryPrimitives.ReadInt32LittleEndian(arg);
        var f = Process.File(fd);
        if (f is null) return -Errno.EBADF;
        if (Group.Container is not null) return -Errno.EINVAL;
        if (f is not VfioContainer c) return -77; // EBADFD
        return c.AttachGroup(Group);
    }

    internal int UnsetContainer()
    {
        if (Group.Container is null) return -Errno.EINVAL;
        if (Group.OpenDeviceFiles > 0) return -Errno.EBUSY;
        Group.Container.DetachGroup(Group);
        return 0;
    }

    int GetDeviceFd(Span<byte> arg)
    {
        var nul = arg.IndexOf((byte)0);
        if (nul < 0) return -Errno.EFAULT;
        var name = System.Text.Encoding.ASCII.GetString(arg[..nul]);
        var dev = Group.Devices.FirstOrDefault(d => d.Name == name);
        if (dev is null) return -Errno.ENODEV;
        if (Group.Container?.Iommu is null) return -Errno.EINVAL;
        var r = dev.Open();
        if (r < 0) return r;
        Group.OpenDeviceFiles++;
        return Process.Install(new VfioDeviceFile(Process, dev));
    }

    internal override void Release()
    {
        Group.FileOpen = false;
        if (Group.OpenDeviceFiles == 0) { if (Group.Container is not null) Group.Container.DetachGroup(Group); }
        else Group.FileClosedPendingRelease = true;
    }
}

/// <summary>A device file returned by GET_DEVICE_FD.</summary>
public sealed class VfioDeviceFile : VfioFile
{
    bool _released;

    internal VfioDeviceFile(VfioProcess process, VfioDevice device) : base(process) => Device = device;

    public VfioDevice Device { get; }

    public override int Ioctl(uint request, Span<byte> arg) => _released ? -Errno.EBADF : Device.Ioctl(request, arg);

    public override int Ioctl(uint request, ulong arg) =>
        request == VfioIoctl.DeviceReset ? Device.Ioctl(request, Span<byte>.Empty) : base.Ioctl(request, arg);

    internal override void Release()
    {
        if (_released) return;
        _released = true;
        Device.Close();
        var g = Device.Group;
        g.OpenDeviceFiles--;
        if (g.OpenDeviceFiles == 0 && g.FileClosedPendingRelease)
        {
            g.FileClosedPendingRelease = false;
            g.Container?.DetachGroup(g);
        }
    }
}
