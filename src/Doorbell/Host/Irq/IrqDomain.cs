using Doorbell.Memory;

namespace Doorbell.Host.Irq;

/// <summary>Host API misuse or a failed hardware operation, carrying the Linux errno a kernel would return (negated there).</summary>
public sealed class IrqException(int errno, string message) : Exception($"{message} (errno {errno})")
{
    public int Errno { get; } = errno;
}

/// <summary>The (address, data) pair a device writes to signal one MSI vector (Linux struct msi_msg).</summary>
public readonly record struct MsiMessage(ulong Address, uint Data)
{
    public override string ToString() => $"addr 0x{Address:x} data 0x{Data:x}";
}

/// <summary>One allocated MSI vector: what the device programs, and the interrupt (INTID) it ends up as.</summary>
public readonly record struct MsiVector(int Index, MsiMessage Message, int Intid);

/// <summary>The MSI vectors of one device in one domain.</summary>
public sealed class MsiAllocation(IMsiDomain domain, uint deviceId, MsiVector[] vectors)
{
    public IMsiDomain Domain { get; } = domain;
    public uint DeviceId { get; } = deviceId;
    public IReadOnlyList<MsiVector> Vectors { get; } = vectors;
}

/// <summary>
/// An MSI irq domain (Linux irq_domain with MSI parent ops). <see cref="IsolatedMsi"/> says whether the
/// interrupt controller can tell devices apart (Linux IRQ_DOMAIN_FLAG_ISOLATED_MSI, what VFIO checks before
/// allowing assignment without allow_unsafe_interrupts): true for the ITS (DeviceID-tagged writes), false for GICv2m.
/// </summary>
public interface IMsiDomain
{
    string Name { get; }
    bool IsolatedMsi { get; }
    /// <summary>Allocates <paramref name="count"/> vectors for the device with bus DeviceID <paramref name="deviceId"/>.</summary>
    MsiAllocation AllocateMsis(uint deviceId, int count);
    void FreeMsis(MsiAllocation allocation);
    /// <summary>Routes the interrupt of one vector to host CPU <paramref name="cpu"/>.</summary>
    void SetAffinity(MsiVector vector, int cpu);
}

/// <summary>How the irq drivers take table memory from the one page allocator: failure is -ENOMEM as in Linux.</summary>
static class IrqTableMemory
{
    public static ulong Allocate(IPhysPageAllocator allocator, ulong size, ulong alignment)
    {
        if (alignment == 0 || (alignment & (alignment - 1)) != 0) throw new IrqException(Errno.EINVAL, "alignment must be a power of two");
        if (!allocator.TryAllocate(size, alignment, out var a)) throw new IrqException(Errno.ENOMEM, $"host table memory exhausted (0x{size:x} bytes)");
        return a;
    }
}
