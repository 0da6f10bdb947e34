namespace Doorbell;

/// <summary>
/// Linux errno values (include/uapi/asm-generic/errno-base.h, errno.h): the one table every host layer uses —
/// the IOMMU API, the irq layer, io-pgtable and the VFIO ioctl ABI (which returns them negated).
/// </summary>
public static class Errno
{
    public const int EPERM = 1, ENOENT = 2, EIO = 5, ENXIO = 6, EBADF = 9, ENOMEM = 12, EACCES = 13, EFAULT = 14,
        EBUSY = 16, EEXIST = 17, ENODEV = 19, EINVAL = 22, ENOTTY = 25, ENOSPC = 28, ERANGE = 34, EOVERFLOW = 75,
        EOPNOTSUPP = 95, ETIMEDOUT = 110;

    /// <summary>The symbolic name of an errno (either sign), or "errno N".</summary>
    public static string Name(int errno) => Math.Abs(errno) switch
    {
        0 => "0", EPERM => "EPERM", ENOENT => "ENOENT", EIO => "EIO", ENXIO => "ENXIO", EBADF => "EBADF", ENOMEM => "ENOMEM",
        EACCES => "EACCES", EFAULT => "EFAULT", EBUSY => "EBUSY", EEXIST => "EEXIST", ENODEV => "ENODEV",
        EINVAL => "EINVAL", ENOTTY => "ENOTTY", ENOSPC => "ENOSPC", ERANGE => "ERANGE", EOVERFLOW => "EOVERFLOW",
        EOPNOTSUPP => "EOPNOTSUPP", ETIMEDOUT => "ETIMEDOUT",
        var e => $"errno {e}",
    };
}
