using Doorbell.Host.Vfio.Abi;
using Doorbell.Host.Vfio.Backends;

// The host kernel's VFIO core: registered IOMMU groups with their devices, the module parameters, and the
// processes that open /dev/vfio/*. Known limits: no iommufd/cdev interface; no noiommu mode; groups come from the
// IOMMU backend (topology-based grouping — ACS, bridges, multi-function — is the IOMMU layer's job).
namespace Doorbell.Host.Vfio;

/// <summary>Module parameters (vfio_iommu_type1.*, vfio_pci.*).</summary>
public sealed class VfioOptions
{
    /// <summary>vfio_iommu_type1.allow_unsafe_interrupts: attach groups whose MSIs are not isolated.</summary>
    public bool AllowUnsafeInterrupts { get; set; }
    /// <summary>vfio_iommu_type1.dma_entry_limit (default U16_MAX).</summary>
    public uint DmaEntryLimit { get; set; } = 65535;
    /// <summary>vfio_pci.nointxmask: use the interrupt controller rather than PCI 2.3 DisINTx to mask INTx.</summary>
    public bool NoIntxMask { get; set; }
    /// <summary>Pre-4.16 vfio-pci behaviour: the MSI-X table page is excluded from mmap with a SPARSE_MMAP
    /// capability instead of being reported mappable with MSIX_MAPPABLE.</summary>
    public bool ExcludeMsixTableFromMmap { get; set; }
    /// <summary>vfio_platform.reset_required: refuse platform devices without a reset handler.</summary>
    public bool PlatformResetRequired { get; set; } = true;
    /// <summary>Which kernel's interrupt-isolation check type1 applies at attach (the policy history replayed).</summary>
    public IsolationPolicyEra IsolationEra { get; set; } = IsolationPolicyEra.Today;
}

/// <summary>The eras of VFIO type1's interrupt-isolation check (see docs/design.md "SMMUv2 and the policy eras").</summary>
public enum IsolationPolicyEra
{
    /// <summary>2013–14: <c>iommu_domain_has_cap(IOMMU_CAP_INTR_REMAP)</c>; arm-smmu claimed it ("MSIs are just memory writes").</summary>
    Era2013 = 1,
    /// <summary>4.11: <c>irq_domain_check_msi_remap() || iommu_capable(INTR_REMAP)</c>: any isolating MSI domain in the system.</summary>
    Era411 = 2,
    /// <summary>Today (6.3+): <c>iommu_group_has_isolated_msi()</c>: every device of the group under an isolating MSI domain.</summary>
    Today = 3,
}

public enum HostDriver { None, Vfio, PciStub, HostKernel }

/// <summary>An IOMMU group as VFIO tracks it: its devices (VFIO ones and others), the container it is attached to.</summary>
public sealed class VfioGroup
{
    readonly List<VfioDevice> _devices = [];
    readonly Dictionary<string, HostDriver> _otherDevices = [];

    internal VfioGroup(VfioHost host, IVfioIommuGroup iommu)
    {
        Host = host;
        Iommu = iommu;
    }

    public VfioHost Host { get; }
    public IVfioIommuGroup Iommu { get; }
    public int Id => Iommu.Id;
    public IReadOnlyList<VfioDevice> Devices => _devices;
    internal VfioContainer? Container { get; set; }
    internal bool FileOpen { get; set; }
    internal bool FileClosedPendingRelease { get; set; }
    internal int OpenDeviceFiles { get; set; }

    /// <summary>The group is viable when no device in it is driven by a host (non-VFIO, non-stub) driver:
    /// iommu_group_claim_dma_owner would otherwise fail.</summary>
    public bool IsViable => _otherDevices.Values.All(d => d != HostDriver.HostKernel);

    internal void Add(VfioDevice device) => _devices.Add(device);

    /// <summary>Records a device of the group that is not a VFIO device (bound to <paramref name="driver"/>).</summary>
    public void SetOtherDevice(string name, HostDriver driver) => _otherDevices[name] = driver;
}

/// <summary>The VFIO core of one host kernel.</summary>
public sealed class VfioHost
{
    readonly Dictionary<int, VfioGroup> _groups = [];

    public VfioHost(VfioOptions? options = null) => Options = options ?? new VfioOptions();

    public VfioOptions Options { get; }

    /// <summary>The machine trace the vfio_* events go to (the host kernel's machine; null = untraced).</summary>
    public Doorbell.Tracing.Trace? Trace { get; set; }

    /// <summary>Registers an IOMMU group (iommu_group_add_device for its members happens in the backend).</summary>
    public VfioGroup AddGroup(IVfioIommuGroup iommu)
    {
        ArgumentNullException.ThrowIfNull(iommu);
        if (_groups.ContainsKey(iommu.Id)) throw new InvalidOperationException($"group {iommu.Id} already registered");
        var g = new VfioGroup(this, iommu);
        _groups.Add(iommu.Id, g);
        return g;
    }

    /// <summary>vfio-pci probe: binds a PCI function of <paramref name="group"/> to vfio-pci. Refuses (-EINVAL)
    /// functions whose header type is not a normal (type 0) header, as vfio_pci_core_register_device does.</summary>
    public int BindPci(VfioGroup group, IVfioPciFunction function, out VfioPciDevice? device)
    {
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(function);
        device = null;
        if ((function.ReadConfig(0x0E, 1) & 0x7F) != 0) return -Errno.EINVAL;
        device = new VfioPciDevice(group, function, Options);
        group.Add(device);
        return 0;
    }

    /// <summary>vfio-platform probe. Without a reset handler the device is refused (-EINVAL) when reset is required.</summary>
    public int BindPlatform(VfioGroup group, IVfioPlatformDevice platform, out VfioPlatformDevice? device)
    {
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(platform);
        device = null;
        if (Options.PlatformResetRequired && !platform.HasReset) return -Errno.EINVAL;
        device = new VfioPlatformDevice(group, platform);
        group.Add(device);
        return 0;
    }

    internal VfioGroup? FindGroup(int id) => _groups.GetValueOrDefault(id);
}
