namespace Doorbell.Kvm;

// The parts of KVM's uAPI (include/uapi/linux/kvm.h, arm64 vgic documentation) the in-kernel model implements, as
// typed values with the uAPI's field names and flag values. Errors are negative errnos, as the ioctls return them.

/// <summary>KVM flag and limit values (include/uapi/linux/kvm.h; arm64's KVM_IRQCHIP_NUM_PINS from asm/kvm.h).</summary>
public static class KvmConst
{
    /// <summary>kvm_userspace_memory_region.flags.</summary>
    public const uint KVM_MEM_LOG_DIRTY_PAGES = 1, KVM_MEM_READONLY = 2;
    /// <summary>Memslots a VM may have (KVM_USER_MEM_SLOTS on arm64).</summary>
    public const uint KVM_USER_MEM_SLOTS = 32764;
    /// <summary>kvm_irqfd.flags.</summary>
    public const uint KVM_IRQFD_FLAG_DEASSIGN = 1, KVM_IRQFD_FLAG_RESAMPLE = 2;
    /// <summary>kvm_irq_routing_entry.type.</summary>
    public const uint KVM_IRQ_ROUTING_IRQCHIP = 1, KVM_IRQ_ROUTING_MSI = 2;
    /// <summary>kvm_msi.flags / kvm_irq_routing_entry.flags for MSI: the devid field is valid.</summary>
    public const uint KVM_MSI_VALID_DEVID = 1;
    public const uint KVM_MAX_IRQ_ROUTES = 4096;
    /// <summary>arm64: irqchip pins are SPIs, pin n = INTID 32 + n.</summary>
    public const uint KVM_IRQCHIP_NUM_PINS = 1020 - 32;
    public const ulong PageSize = 4096;
}

/// <summary>struct kvm_userspace_memory_region.</summary>
public readonly record struct KvmUserspaceMemoryRegion(uint Slot, uint Flags, ulong GuestPhysAddr, ulong MemorySize, ulong UserspaceAddr);

/// <summary>struct kvm_irqfd: fd, gsi, flags, resamplefd.</summary>
public readonly record struct KvmIrqfd(int Fd, uint Gsi, uint Flags, int ResampleFd = -1);

/// <summary>struct kvm_msi: address, data, flags (KVM_MSI_VALID_DEVID), devid.</summary>
public readonly record struct KvmMsi(ulong Address, uint Data, uint Flags, uint DevId)
{
    public uint AddressLo => (uint)Address;
    public uint AddressHi => (uint)(Address >> 32);
}

/// <summary>
/// struct kvm_irq_routing_entry: gsi, type, flags and the union u — irqchip {irqchip, pin} or msi {address_lo,
/// address_hi, data, devid}.
/// </summary>
public readonly record struct KvmIrqRoutingEntry(uint Gsi, uint Type, uint Flags, uint IrqChip, uint Pin, uint AddressLo, uint AddressHi, uint Data, uint DevId)
{
    public static KvmIrqRoutingEntry Irqchip(uint gsi, uint pin, uint irqchip = 0) =>
        new(gsi, KvmConst.KVM_IRQ_ROUTING_IRQCHIP, 0, irqchip, pin, 0, 0, 0, 0);

    public static KvmIrqRoutingEntry Msi(uint gsi, ulong address, uint data, uint? devId) =>
        new(gsi, KvmConst.KVM_IRQ_ROUTING_MSI, devId is null ? 0 : KvmConst.KVM_MSI_VALID_DEVID, 0, 0, (uint)address, (uint)(address >> 32), data, devId ?? 0);

    public ulong Address => AddressLo | ((ulong)AddressHi << 32);
}
