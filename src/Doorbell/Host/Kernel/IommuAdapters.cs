using Doorbell.Host.Iommu;
using Doorbell.Host.Irq;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Iommu;

// VFIO's IOMMU backend over the SMMUv3 driver's IOMMU API: a group of one or more IOMMU devices (the topology
// decides, see IommuGrouping), paging domains from the driver, and Linux's iommu_dma MSI cookie (the doorbell
// page mapped into the SW_MSI window on vector allocation). Each group belongs to one IOMMU instance (a board may have several).
namespace Doorbell.Host.Kernel;

/// <summary>An unmanaged SMMUv3 paging domain as type1 uses it.</summary>
public sealed class SmmuVfioDomain(IommuDomain domain) : IVfioIommuDomain
{
    public IommuDomain Domain { get; } = domain;
    public ulong PgsizeBitmap => Domain.PageSizeBitmap;
    public ulong ApertureStart => Domain.ApertureStart;
    public ulong ApertureEnd => Domain.ApertureEnd;
    public bool EnforcesCacheCoherency => Domain.Driver.Capable(IommuCapability.CacheCoherency);
    /// <summary>iommu_get_msi_cookie was called: MSI doorbells are mapped into the window on demand.</summary>
    public bool HasMsiCookie { get; private set; }
    public ulong MsiCookieBase { get; private set; }

    public int Map(ulong iova, ulong phys, ulong size, IommuProt prot)
    {
        try
        {
            Domain.Map(iova, phys, size, ToIoProt(prot));
            return 0;
        }
        catch (IommuException e) { return -e.Errno; }
    }

    public int Unmap(ulong iova, ulong size)
    {
        try
        {
            Domain.Unmap(iova, size);
            return 0;
        }
        catch (IommuException e) { return -e.Errno; }
    }

    public int EnableMsiCookie(ulong iovaBase)
    {
        var r = Domain.SetMsiCookie(iovaBase);
        if (r != 0) return r;
        HasMsiCookie = true;
        MsiCookieBase = iovaBase;
        return 0;
    }

    /// <summary>iommu_domain_free (type1 no longer uses it): returns the driver's context (an arm-smmu context bank is scarce).</summary>
    public void Free()
    {
        try { Domain.Driver.FreeDomain(Domain); }
        catch (IommuException) { }
    }

    /// <summary>iommu_dma_prepare_msi + compose: the address the device must write for doorbell <paramref name="doorbell"/>.</summary>
    public ulong MsiAddress(ulong doorbell) => HasMsiCookie ? Domain.MapMsiDoorbell(doorbell) : doorbell;

    static IoProt ToIoProt(IommuProt p)
    {
        var r = IoProt.None;
        if ((p & IommuProt.Read) != 0) r |= IoProt.Read;
        if ((p & IommuProt.Write) != 0) r |= IoProt.Write;
        if ((p & IommuProt.NoExec) != 0) r |= IoProt.NoExec;
        if ((p & IommuProt.Mmio) != 0) r |= IoProt.Mmio;
        if ((p & IommuProt.Cache) != 0) r |= IoProt.Cache;
        if ((p & IommuProt.Priv) != 0) r |= IoProt.Priv;
        return r;
    }
}

/// <summary>An IOMMU group formed from the topology: its devices (each probed by the SMMUv3 driver), their MSI
/// domains, and the domain VFIO attached.</summary>
public sealed class KernelIommuGroup : IVfioIommuGroup
{
    readonly HostKernel _kernel;
    readonly List<(IommuDevice Device, IMsiDomain? Msi)> _members = [];

    internal KernelIommuGroup(HostKernel kernel, int id, string key, IIommuDriver driver)
    {
        _kernel = kernel;
        Driver = driver;
        Id = id;
        Key = key;
    }

    public int Id { get; }
    /// <summary>The driver of the IOMMU instance the group's devices sit behind.</summary>
    public IIommuDriver Driver { get; }
    /// <summary>Why these devices are together (the alias point of pci_device_group).</summary>
    public string Key { get; }
    public IReadOnlyList<IommuDevice> Devices => _members.ConvertAll(m => m.Device);
    internal List<KernelPciFunction> PciFunctions { get; } = [];
    internal List<KernelPlatformDevice> PlatformDevices { get; } = [];
    public IReadOnlyList<string> DeviceNames => [.. PciFunctions.Select(f => f.Name), .. PlatformDevices.Select(p => p.Name)];
    /// <summary>The VFIO domain the group is attached to, or null.</summary>
    public SmmuVfioDomain? AttachedDomain { get; private set; }

    internal void AddMember(IommuDevice device, IMsiDomain? msi) => _members.Add((device, msi));

    public IReadOnlyList<IommuReservedRegion> ReservedRegions
    {
        get
        {
            var list = new List<IommuReservedRegion>();
            foreach (var (d, _) in _members)
                foreach (var r in Driver.GetReservedRegions(d))
                {
                    var rr = new IommuReservedRegion(r.Start, r.Length, r.Type switch
                    {
                        ReservedRegionType.Direct => IommuResvType.Direct,
                        ReservedRegionType.DirectRelaxable => IommuResvType.DirectRelaxable,
                        ReservedRegionType.Reserved => IommuResvType.Reserved,
                        ReservedRegionType.Msi => IommuResvType.Msi,
                        _ => IommuResvType.SwMsi,
                    });
                    if (!list.Contains(rr)) list.Add(rr);
                }
            return list;
        }
    }

    /// <summary>iommu_group_has_isolated_msi: every device has an MSI domain flagged IRQ_DOMAIN_FLAG_ISOLATED_MSI
    /// (the ITS); a device without an MSI domain, or behind GICv2m, is not isolated (arch_is_isolated_msi is false on arm64).</summary>
    public bool HasIsolatedMsi => _members.Count > 0 && _members.All(m => m.Msi is { IsolatedMsi: true });

    /// <summary>iommu_capable(IOMMU_CAP_INTR_REMAP) of the group's IOMMU driver.</summary>
    public bool IommuClaimsInterruptRemap => Driver.Capable(IommuCapability.InterruptRemap);

    /// <summary>irq_domain_check_msi_remap: any MSI domain the kernel registered isolates.</summary>
    public bool SystemHasIsolatedMsiDomain => _kernel.MsiDomains.Any(d => d.IsolatedMsi);

    public IVfioIommuDomain? AllocateDomain()
    {
        try { return new SmmuVfioDomain(Driver.AllocateDomain(IommuDomainType.Unmanaged, IommuDomainStage.Stage1)); }
        catch (IommuException) { return null; }
    }

    public int Attach(IVfioIommuDomain domain)
    {
        if (domain is not SmmuVfioDomain d) return -Errno.EINVAL;
        try
        {
            foreach (var (dev, _) in _members) Driver.AttachDevice(d.Domain, dev);
            AttachedDomain = d;
            return 0;
        }
        catch (IommuException e) { return -e.Errno; }
    }

    public void Detach(IVfioIommuDomain domain)
    {
        var blocked = Driver.AllocateDomain(IommuDomainType.Blocked);
        foreach (var (dev, _) in _members) Driver.AttachDevice(blocked, dev);
        if (ReferenceEquals(domain, AttachedDomain)) AttachedDomain = null;
    }

    public override string ToString() => $"group {Id} [{string.Join(", ", DeviceNames)}]";
}
