using Doorbell.Memory;
using Doorbell.Pci;

// The narrow, Linux-shaped seams the VFIO layer is built against. The lead adapts them to Doorbell's IOMMU API
// (SMMUv3/SMMUv2 drivers), PCIe functions and irq domains (ITS / GICv2m). Tests use fakes.
// Known limits: one domain type (paging); no PASID, no nesting, no dirty tracking in the domain.
namespace Doorbell.Host.Vfio.Backends;

/// <summary>IOMMU_READ/WRITE/CACHE/NOEXEC/MMIO/PRIV (include/linux/iommu.h).</summary>
[Flags]
public enum IommuProt
{
    None = 0, Read = 1 << 0, Write = 1 << 1, Cache = 1 << 2, NoExec = 1 << 3, Mmio = 1 << 4, Priv = 1 << 5,
}

/// <summary>enum iommu_resv_type (include/linux/iommu.h), in Linux's order.</summary>
public enum IommuResvType { Direct, DirectRelaxable, Reserved, Msi, SwMsi }

/// <summary>A reserved IOVA region of a group (iommu_get_group_resv_regions): [Start, Start+Length).</summary>
public readonly record struct IommuReservedRegion(ulong Start, ulong Length, IommuResvType Type)
{
    public ulong End => Start + Length - 1; // inclusive
    /// <summary>The ARM SMMU software-managed MSI window (MSI_IOVA_BASE 0x8000000, MSI_IOVA_LENGTH 0x100000, arm-smmu-v3.c).</summary>
    public static IommuReservedRegion ArmSwMsi => new(0x800_0000, 0x10_0000, IommuResvType.SwMsi);
}

/// <summary>An IOMMU paging domain (struct iommu_domain) as type1 uses it.</summary>
public interface IVfioIommuDomain
{
    /// <summary>domain->pgsize_bitmap.</summary>
    ulong PgsizeBitmap { get; }
    /// <summary>domain->geometry.aperture_start / aperture_end (inclusive).</summary>
    ulong ApertureStart { get; }
    ulong ApertureEnd { get; }
    /// <summary>iommu_enforce_cache_coherency succeeded (answers VFIO_DMA_CC_IOMMU).</summary>
    bool EnforcesCacheCoherency { get; }
    /// <summary>iommu_map: 0 or -errno. The range is page aligned to the smallest page size.</summary>
    int Map(ulong iova, ulong phys, ulong size, IommuProt prot);
    /// <summary>iommu_unmap: 0 or -errno.</summary>
    int Unmap(ulong iova, ulong size);
    /// <summary>iommu_get_msi_cookie: MSI doorbells will be mapped on demand at <paramref name="iovaBase"/>.</summary>
    int EnableMsiCookie(ulong iovaBase);
    /// <summary>iommu_domain_free: type1 is done with the domain (no group attached, nothing mapped).</summary>
    void Free() { }
}

/// <summary>An IOMMU group (struct iommu_group) and what type1 asks of it.</summary>
public interface IVfioIommuGroup
{
    /// <summary>The group number (/dev/vfio/$GROUP).</summary>
    int Id { get; }
    /// <summary>iommu_get_group_resv_regions, including SW_MSI windows.</summary>
    IReadOnlyList<IommuReservedRegion> ReservedRegions { get; }
    /// <summary>iommu_group_has_isolated_msi: every device's MSI domain (or a parent) has IRQ_DOMAIN_FLAG_ISOLATED_MSI.</summary>
    bool HasIsolatedMsi { get; }
    /// <summary>iommu_capable(dev, IOMMU_CAP_INTR_REMAP) for the group's IOMMU (the pre-4.11 check; false today).</summary>
    bool IommuClaimsInterruptRemap => false;
    /// <summary>irq_domain_check_msi_remap(): some MSI irq domain anywhere in the system isolates (the 4.11 check).</summary>
    bool SystemHasIsolatedMsiDomain => HasIsolatedMsi;
    /// <summary>iommu_paging_domain_alloc for the group's devices; null when the IOMMU cannot allocate one.</summary>
    IVfioIommuDomain? AllocateDomain();
    /// <summary>iommu_attach_group: 0, or -EINVAL/-EMEDIUMTYPE when the domain is incompatible.</summary>
    int Attach(IVfioIommuDomain domain);
    /// <summary>iommu_detach_group.</summary>
    void Detach(IVfioIommuDomain domain);
}

/// <summary>One PCI resource: size (0 when unimplemented), kind (the one <see cref="PciBarKind"/> of the PCI layer), the host physical address it is assigned, prefetchable.</summary>
public readonly record struct PciBarInfo(ulong Size, PciBarKind Kind, ulong HostAddress, bool Prefetchable = false)
{
    public bool IsMemory => Kind is PciBarKind.Mem32 or PciBarKind.Mem64;
    public bool Is64 => Kind == PciBarKind.Mem64;
}

/// <summary>Where host-side interrupt handlers report to VFIO. Called by the adapter from the host IRQ handler
/// (the Linux irq handler VFIO registered), never from a guest- or user-controlled path. Message-signalled vectors
/// need no sink: VFIO requests each vector with its trigger's signal (<see cref="IVfioPciFunction.RequestVector"/>).</summary>
public interface IVfioIrqSink
{
    /// <summary>The INTx line was asserted (level); VFIO's handler masks it and signals.</summary>
    void OnIntx();
    /// <summary>An AER error was reported for the function (ERR index).</summary>
    void OnError();
}

public enum PciIrqKind { Msi, Msix }

/// <summary>A PCI function as the host kernel sees it (struct pci_dev): raw config space (what hardware returns),
/// resources, BAR accesses, reset, and vector allocation from its MSI domain.</summary>
public interface IVfioPciFunction
{
    /// <summary>The device name, "0000:00:01.0".</summary>
    string Name { get; }
    ushort Segment { get; }
    byte Bus { get; }
    byte Devfn { get; }
    /// <summary>pdev->cfg_size: 256 or 4096.</summary>
    int ConfigSize { get; }
    /// <summary>Raw config read of 1, 2 or 4 bytes at a naturally aligned offset (pci_user_read_config_*).</summary>
    uint ReadConfig(int offset, int size);
    /// <summary>Raw config write (pci_user_write_config_*).</summary>
    void WriteConfig(int offset, int size, uint value);
    /// <summary>BAR 0..5 resource; index 6 is the expansion ROM.</summary>
    PciBarInfo GetBar(int index);
    /// <summary>
    /// Memory access to a range of a BAR (or the ROM at index 6) through the host's mapping, as vfio-pci's
    /// ioread/iowrite loop issues it: naturally aligned accesses of up to 8 bytes (the memory view splits the range).
    /// </summary>
    BusStatus ReadBar(int index, ulong offset, Span<byte> destination);
    BusStatus WriteBar(int index, ulong offset, ReadOnlySpan<byte> source);
    /// <summary>pci_try_reset_function (FLR or another method; saves and restores host-owned state): 0, -ENOTTY when no
    /// reset method exists, or -errno.</summary>
    int Reset();
    /// <summary>pci_alloc_irq_vectors(1, nvec): allocates vectors from the function's MSI domain and programs the
    /// device's MSI/MSI-X capability. No handler is registered yet: a vector that fires before
    /// <see cref="RequestVector"/> is spurious at the CPU. Returns the number allocated (may be fewer than asked) or -errno.</summary>
    int EnableVectors(PciIrqKind kind, int nvec);
    /// <summary>
    /// request_irq(pci_irq_vector(pdev, <paramref name="vector"/>), …, <paramref name="name"/>, trigger) for a handler
    /// whose only work is <paramref name="signal"/> (vfio_msihandler: eventfd_signal of the trigger). 0, -EINVAL for a
    /// vector not allocated, -EBUSY when one is registered.
    /// </summary>
    int RequestVector(int vector, string name, Action signal);
    /// <summary>free_irq for an allocated vector (nothing when none is registered).</summary>
    void FreeVector(int vector);
    /// <summary>pci_free_irq_vectors (frees the vectors' handlers first).</summary>
    void DisableVectors();
    /// <summary>request_irq for INTx: <paramref name="sink"/> gets OnIntx while the line is asserted and not masked;
    /// null disconnects. Returns 0 or -errno (-ENODEV without an IRQ).</summary>
    int ConnectIntx(IVfioIrqSink? sink);
    /// <summary>disable_irq / enable_irq on the INTx line at the interrupt controller (non-PCI-2.3 masking).</summary>
    void SetIntxLineMasked(bool masked);
    /// <summary>AER reporting hook (ERR index).</summary>
    void ConnectErrors(IVfioIrqSink? sink);
}

/// <summary>One function affected by a bus or slot reset: its address and IOMMU group.</summary>
public readonly record struct PciResetPeer(ushort Segment, byte Bus, byte Devfn, int GroupId);

/// <summary>Optional for an <see cref="IVfioPciFunction"/>: the function can take part in a slot or bus ("hot")
/// reset (pci_probe_reset_slot / pci_probe_reset_bus succeed). Functions without it answer -ENODEV.</summary>
public interface IVfioPciHotResetScope
{
    /// <summary>Every function the reset affects, the calling one included.</summary>
    IReadOnlyList<PciResetPeer> HotResetPeers { get; }
    /// <summary>pci_reset_bus / slot reset: 0 or -errno.</summary>
    int HotReset();
}

/// <summary>One MMIO resource of a platform device.</summary>
public readonly record struct PlatformRegionInfo(ulong HostAddress, ulong Size, bool ReadOnly);

/// <summary>A platform (device-tree) device: MMIO resources, wired interrupts, and an optional reset handler.</summary>
public interface IVfioPlatformDevice
{
    /// <summary>The device name, e.g. "9000000.ethernet".</summary>
    string Name { get; }
    bool IsAmba { get; }
    IReadOnlyList<PlatformRegionInfo> Regions { get; }
    /// <summary>A range of a region, as vfio-platform's loop issues it: naturally aligned accesses of up to 4 bytes (the memory view splits the range).</summary>
    BusStatus ReadRegion(int index, ulong offset, Span<byte> destination);
    BusStatus WriteRegion(int index, ulong offset, ReadOnlySpan<byte> source);
    /// <summary>Per IRQ: true for level-triggered (IRQ_TYPE_LEVEL_*), false for edge.</summary>
    IReadOnlyList<bool> IrqIsLevel { get; }
    /// <summary>Current level of a wired line (level-triggered IRQs re-fire on enable while asserted).</summary>
    bool IrqLineAsserted(int index);
    /// <summary>request_irq: <paramref name="handler"/> runs when the line fires and is enabled; null frees.</summary>
    void ConnectIrq(int index, Action<int>? handler);
    /// <summary>disable_irq_nosync / enable_irq.</summary>
    void SetIrqEnabled(int index, bool enabled);
    /// <summary>True when a vfio-platform reset module exists for the compatible string.</summary>
    bool HasReset { get; }
    int Reset();
}
