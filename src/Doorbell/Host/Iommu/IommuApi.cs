using Doorbell.Iommu;

namespace Doorbell.Host.Iommu;

// The IOMMU API as a Linux-like kernel offers it (include/linux/iommu.h): domains, groups, capabilities and
// reserved regions. Drivers (SmmuV3Driver, …) implement IIommuDriver; users (VFIO, DMA API) see only this.

/// <summary>A host-side misuse or failure of the IOMMU API, carrying the (positive) Linux errno.</summary>
public sealed class IommuException : Exception
{
    public IommuException(int errno, string message) : base($"{Doorbell.Errno.Name(errno)}: {message}") => Errno = Math.Abs(errno);
    public IommuException() : base("IOMMU error") { }
    public IommuException(string message) : base(message) { }
    public IommuException(string message, Exception inner) : base(message, inner) { }

    public int Errno { get; }

    /// <summary>Throws for a negative errno return (io-pgtable style), else returns.</summary>
    public static void ThrowIfError(int ret, string what)
    {
        if (ret < 0) throw new IommuException(-ret, what);
    }
}

/// <summary>IOMMU_DOMAIN_* types.</summary>
public enum IommuDomainType
{
    /// <summary>All DMA blocked (an abort STE).</summary>
    Blocked,
    /// <summary>DMA untranslated (a bypass STE).</summary>
    Identity,
    /// <summary>Translated, managed by the user (VFIO).</summary>
    Unmanaged,
    /// <summary>Translated, managed by the kernel DMA API.</summary>
    Dma,
}

/// <summary>Which translation stage a paging domain uses (Linux ARM_SMMU_DOMAIN_S1 / S2).</summary>
public enum IommuDomainStage
{
    Stage1,
    Stage2,
}

/// <summary>enum iommu_cap.</summary>
public enum IommuCapability
{
    CacheCoherency,
    NoExec,
    DeferredFlush,
    DirtyTracking,
    /// <summary>IOMMU_CAP_INTR_REMAP (removed from Linux in 6.3): what type1 demanded before 4.11, and what arm-smmu
    /// claimed from 2014 until 4.11 ("MSIs are just memory writes").</summary>
    InterruptRemap,
}

/// <summary>enum iommu_resv_type.</summary>
public enum ReservedRegionType
{
    Direct,
    DirectRelaxable,
    Reserved,
    Msi,
    SoftwareMsi,
}

/// <summary>struct iommu_resv_region.</summary>
public sealed record ReservedRegion(ulong Start, ulong Length, IoProt Prot, ReservedRegionType Type)
{
    public ulong End => Start + Length - 1;
}

/// <summary>The IOVA window for software-managed MSIs (Linux MSI_IOVA_BASE / MSI_IOVA_LENGTH in arm-smmu-v3).</summary>
public static class SoftwareMsiWindow
{
    public const ulong Base = 0x800_0000;
    public const ulong Length = 0x10_0000;
}

/// <summary>A device behind an IOMMU: its name, StreamIDs and SubstreamID bits (Linux struct iommu_fwspec + master).</summary>
public sealed class IommuDevice(string name, IReadOnlyList<uint> streamIds, int substreamIdBits = 0)
{
    public string Name { get; } = name;
    public IReadOnlyList<uint> StreamIds { get; } = streamIds;
    public int SubstreamIdBits { get; } = substreamIdBits;
    public IommuGroup? Group { get; internal set; }
    public override string ToString() => Name;
}

/// <summary>A set of devices that cannot be isolated from each other: the unit of attachment (struct iommu_group).</summary>
public sealed class IommuGroup
{
    readonly List<IommuDevice> _devices = [];

    internal IommuGroup(IIommuDriver driver, int id)
    {
        Driver = driver;
        Id = id;
    }

    public int Id { get; }
    public IIommuDriver Driver { get; }
    public IReadOnlyList<IommuDevice> Devices => _devices;
    /// <summary>The domain the group is attached to (the driver's default domain at probe).</summary>
    public IommuDomain? Domain { get; private set; }

    internal void Add(IommuDevice device)
    {
        _devices.Add(device);
        device.Group = this;
    }

    /// <summary>iommu_attach_group: every device of the group moves to <paramref name="domain"/>.</summary>
    public void Attach(IommuDomain domain)
    {
        ArgumentNullException.ThrowIfNull(domain);
        if (!ReferenceEquals(domain.Driver, Driver))
            throw new IommuException(Errno.EINVAL, $"domain of another IOMMU cannot be attached to group {Id}");
        foreach (var d in _devices) Driver.AttachDevice(domain, d);
        Domain = domain;
    }

    /// <summary>iommu_detach_group: back to a blocking domain.</summary>
    public void Detach()
    {
        var blocked = Driver.AllocateDomain(IommuDomainType.Blocked);
        Attach(blocked);
    }
}

/// <summary>An IOMMU domain: an address space devices can be attached to (struct iommu_domain).</summary>
public abstract class IommuDomain
{
    readonly Dictionary<ulong, ulong> _msiPages = []; // doorbell page PA → IOVA

    protected IommuDomain(IIommuDriver driver, IommuDomainType type)
    {
        Driver = driver;
        Type = type;
    }

    public IIommuDriver Driver { get; }
    public IommuDomainType Type { get; }
    public bool IsPaging => Type is IommuDomainType.Unmanaged or IommuDomainType.Dma;
    /// <summary>Page and block sizes Map accepts (pgsize_bitmap).</summary>
    public abstract ulong PageSizeBitmap { get; }
    /// <summary>geometry.aperture_start / aperture_end.</summary>
    public abstract ulong ApertureStart { get; }
    public abstract ulong ApertureEnd { get; }

    /// <summary>iommu_map: throws <see cref="IommuException"/> (EINVAL for misalignment or a non-paging domain, EEXIST, ENOMEM, ERANGE).</summary>
    public abstract void Map(ulong iova, ulong physicalAddress, ulong size, IoProt prot);
    /// <summary>iommu_unmap: bytes unmapped (TLB invalidated and synchronised before return).</summary>
    public abstract ulong Unmap(ulong iova, ulong size);
    /// <summary>iommu_iova_to_phys: 0 when nothing is mapped.</summary>
    public abstract ulong IovaToPhys(ulong iova);

    /// <summary>The IOVA base of the MSI cookie (iommu_get_msi_cookie), or null when none was set: the SW_MSI window's base is used.</summary>
    public ulong? MsiCookieBase { get; private set; }

    /// <summary>
    /// iommu_get_msi_cookie: doorbells are mapped from <paramref name="iovaBase"/> (VFIO passes the start of the
    /// SW_MSI reserved region). 0, -EINVAL for a domain that is not paging, -EEXIST when a cookie exists (Linux).
    /// </summary>
    public int SetMsiCookie(ulong iovaBase)
    {
        if (!IsPaging) return -Errno.EINVAL;
        if (MsiCookieBase is not null) return -Errno.EEXIST;
        MsiCookieBase = iovaBase;
        return 0;
    }

    /// <summary>
    /// iommu_dma_get_msi_page for a software-managed MSI window: maps the doorbell's page in the SW_MSI region
    /// (once) and returns the IOVA the device must write its MSI to.
    /// </summary>
    public ulong MapMsiDoorbell(ulong doorbellPhysicalAddress)
    {
        if (!IsPaging) return doorbellPhysicalAddress;
        var granule = 1UL << System.Numerics.BitOperations.TrailingZeroCount(PageSizeBitmap);
        var page = doorbellPhysicalAddress & ~(granule - 1);
        if (!_msiPages.TryGetValue(page, out var iova))
        {
            var window = MsiCookieBase ?? SoftwareMsiWindow.Base;
            iova = window + (ulong)_msiPages.Count * granule;
            if (iova + granule > window + SoftwareMsiWindow.Length)
                throw new IommuException(Errno.ENOSPC, "software MSI window full");
            Map(iova, page, granule, IoProt.Write | IoProt.Mmio | IoProt.NoExec);
            _msiPages[page] = iova;
        }
        return iova + (doorbellPhysicalAddress - page);
    }
}

/// <summary>What an IOMMU driver offers the core (struct iommu_ops).</summary>
public interface IIommuDriver
{
    string Name { get; }
    /// <summary>probe_device + device_group: the device gets a group (attached to a blocking domain).</summary>
    IommuGroup ProbeDevice(IommuDevice device);
    void ReleaseDevice(IommuDevice device);
    IommuDomain AllocateDomain(IommuDomainType type, IommuDomainStage? stage = null);
    void FreeDomain(IommuDomain domain);
    void AttachDevice(IommuDomain domain, IommuDevice device);
    bool Capable(IommuCapability capability);
    IReadOnlyList<ReservedRegion> GetReservedRegions(IommuDevice device);
}

/// <summary>Helper for drivers: creates groups (the core's iommu_group_alloc), numbered per driver in probe order.</summary>
public static class IommuGroups
{
    public static IommuGroup Create(IIommuDriver driver, IommuDevice device, int id)
    {
        var g = new IommuGroup(driver, id);
        g.Add(device);
        return g;
    }
}

/// <summary>
/// A domain whose translations live in an io-pgtable (the paging domains of arm-smmu and arm-smmu-v3): the page-size
/// bitmap and aperture come from the table, and map checks alignment and aperture before writing it, as
/// iommu_map does. The driver supplies unmap and its TLB maintenance.
/// </summary>
public abstract class IoPageTableDomain : IommuDomain
{
    protected IoPageTableDomain(IIommuDriver driver, IommuDomainType type, IoPageTable? table) : base(driver, type) => Table = table;

    internal IoPageTable? Table { get; set; }
    internal bool Freed { get; set; }

    public override ulong PageSizeBitmap => Table?.PageSizeBitmap ?? 0;
    public override ulong ApertureStart => 0;
    public override ulong ApertureEnd => Table is null ? 0 : (1UL << Table.InputSize) - 1;

    protected IoPageTable Paging(string op)
    {
        if (Freed) throw new IommuException(Errno.EINVAL, $"{op} on a freed domain");
        return Table ?? throw new IommuException(Errno.EINVAL, $"{op} on a {Type} domain");
    }

    public override void Map(ulong iova, ulong physicalAddress, ulong size, IoProt prot)
    {
        var t = Paging("map");
        var g = 1UL << System.Numerics.BitOperations.TrailingZeroCount(PageSizeBitmap);
        if (size == 0 || ((iova | physicalAddress | size) & (g - 1)) != 0)
            throw new IommuException(Errno.EINVAL, $"map 0x{iova:x} -> 0x{physicalAddress:x} size 0x{size:x} not aligned to 0x{g:x}");
        if (iova + size - 1 > ApertureEnd || iova + size - 1 < iova)
            throw new IommuException(Errno.EFAULT, $"map 0x{iova:x} size 0x{size:x} outside the aperture");
        // New valid entries need no invalidation: an SMMU does not cache invalid translations.
        IommuException.ThrowIfError(t.Map(iova, physicalAddress, size, prot), $"map 0x{iova:x} size 0x{size:x}");
    }

    public override ulong IovaToPhys(ulong iova) => Table is null || Freed ? 0 : Table.IovaToPhys(iova);
}
