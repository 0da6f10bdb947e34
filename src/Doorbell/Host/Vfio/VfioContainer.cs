using Doorbell.Host.Vfio.Abi;

// The VFIO container (/dev/vfio/vfio): groups attached to it and the IOMMU driver chosen with SET_IOMMU.
// Known limits: type1 (v1/v2) is the only IOMMU driver; no SPAPR TCE, no noiommu.
namespace Doorbell.Host.Vfio;

public sealed class VfioContainer : VfioFile
{
    readonly List<VfioGroup> _groups = [];

    internal VfioContainer(VfioProcess process) : base(process) { }

    public IReadOnlyList<VfioGroup> Groups => _groups;
    /// <summary>The type1 driver state once SET_IOMMU succeeded.</summary>
    public Type1Iommu? Iommu { get; private set; }

    public override int Ioctl(uint request, ulong arg)
    {
        if (request == VfioIoctl.GetApiVersion) return VfioIoctl.ApiVersion;
        if (request == VfioIoctl.CheckExtension) return CheckExtension(arg);
        if (request == VfioIoctl.SetIommu) return SetIommu(arg);
        return Iommu is null ? -Errno.EINVAL : Iommu.Ioctl(request, Span<byte>.Empty);
    }

    public override int Ioctl(uint request, Span<byte> arg)
    {
        if (request == VfioIoctl.GetApiVersion || request == VfioIoctl.CheckExtension || request == VfioIoctl.SetIommu)
            return Ioctl(request, ScalarOf(arg));
        // vfio_fops_unl_ioctl: everything else goes to the IOMMU driver; without one, -EINVAL.
        return Iommu is null ? -Errno.EINVAL : Iommu.Ioctl(request, arg);
    }

    int CheckExtension(ulong ext)
    {
        if (Iommu is not null) return Iommu.CheckExtension(ext);
        // No driver yet: ask each registered driver (only type1 here) with no state.
        return ext is VfioExtension.Type1Iommu or VfioExtension.Type1v2Iommu or VfioExtension.UnmapAll ? 1 : 0;
    }

    int SetIommu(ulong type)
    {
        if (_groups.Count == 0 || Iommu is not null) return -Errno.EINVAL;
        if (type is not (VfioExtension.Type1Iommu or VfioExtension.Type1v2Iommu)) return -Errno.ENODEV;
        var iommu = new Type1Iommu(Process, type == VfioExtension.Type1v2Iommu, Process.Host.Options);
        for (var i = 0; i < _groups.Count; i++)
        {
            var r = iommu.AttachGroup(_groups[i]);
            if (r != 0)
            {
                for (var j = i - 1; j >= 0; j--) iommu.DetachGroup(_groups[j]);
                return r;
            }
        }
        Iommu = iommu;
        return 0;
    }

    /// <summary>vfio_container_attach_group.</summary>
    internal int AttachGroup(VfioGroup group)
    {
        if (!group.IsViable) return -Errno.EBUSY; // iommu_group_claim_dma_owner
        if (Iommu is not null)
        {
            var r = Iommu.AttachGroup(group);
            if (r != 0) return r;
        }
        _groups.Add(group);
        group.Container = this;
        return 0;
    }

    /// <summary>vfio_group_detach_container: the last group out releases the IOMMU driver (all mappings go).</summary>
    internal void DetachGroup(VfioGroup group)
    {
        Iommu?.DetachGroup(group);
        _groups.Remove(group);
        group.Container = null;
        if (_groups.Count == 0 && Iommu is not null)
        {
            Iommu.Release();
            Iommu = null;
        }
    }

    internal override void Release()
    {
        // The container stays alive while groups reference it (the group's file holds it), as in Linux.
    }
}
