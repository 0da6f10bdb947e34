using Doorbell.Gic.V3;
using Doorbell.Host.Irq;
using Doorbell.Memory;

// What a host kernel is told about a board that is not qemu-virt-shaped (issue 19): a list of each kind of block, as
// a device tree lists them. Linux's facts: every IOMMU node gets its driver (arm-smmu-v3, arm-smmu) probed at its
// reg; every MSI controller its irqchip driver (irq-gic-v3-its, irq-gic-v2m, an in-controller MSI block as
// pcie-designware-host's dw_pcie_msi); every generic ECAM host bridge is enumerated from its bus-range start, and
// each function's IOMMU fwspec and MSI DeviceID come from the bridge's iommu-map / msi-map through of_map_id
// (drivers/of/base.c). The description names controllers by string; the map functions are the board's of_map_id.
namespace Doorbell.Host.Kernel;

public enum KernelIommuKind { SmmuV3, SmmuV2 }

/// <summary>One IOMMU instance: its driver kind and the base of its registers.</summary>
public sealed record KernelIommuInstance(string Name, KernelIommuKind Kind, ulong Base);

public enum KernelMsiKind
{
    /// <summary>A GICv3 ITS (irq-gic-v3-its): DeviceID-tagged writes to GITS_TRANSLATER.</summary>
    Its,
    /// <summary>A GICv3 ITS behind the Socionext pre-ITS window: the DeviceID is the write's offset in the window.</summary>
    PreIts,
    /// <summary>A GICv2m frame (irq-gic-v2m): SETSPI takes the data as an SPI.</summary>
    GicV2m,
    /// <summary>An MSI block inside a PCIe controller: data D sets status bit D, the controller raises one SPI.</summary>
    InController,
}

/// <summary>One MSI controller: kind, register base, and for the pre-ITS its window, for an in-controller block its SPI.</summary>
public sealed record KernelMsiInstance(string Name, KernelMsiKind Kind, ulong Base, ulong Window = 0, int Spi = -1);

/// <summary>The result of of_map_id for one requester ID: the controller named and the output ID.</summary>
public readonly record struct KernelIdTarget(string Controller, uint Id);

/// <summary>
/// One generic ECAM host bridge: ECAM window (bus-range start at its base), the bus range, the 32-bit window BARs come
/// from, and the board's of_map_id for its `iommu-map` and `msi-map` (null result: no translation / no MSI domain).
/// </summary>
public sealed record KernelHostBridge(string Name, ulong Ecam, int BusFirst, int BusLast, ulong Mmio, ulong MmioSize,
    Func<uint, KernelIdTarget?> IommuOf, Func<uint, KernelIdTarget?> MsiOf, bool KeepFirmwareBuses = true)
{
    /// <summary>The requester ID of a function enumerated at ECAM-relative bus <paramref name="relativeBus"/>.</summary>
    public uint Rid(int relativeBus, int device, int function) => (uint)((BusFirst + relativeBus) << 8 | device << 3 | function);
}

/// <summary>A platform DMA master with its `iommus` StreamIDs and its msi-parent DeviceID (when it has them).</summary>
public sealed record KernelPlatformMaster(string Name, string? Iommu, IReadOnlyList<uint> StreamIds, string? Msi, uint DeviceId);

/// <summary>The interrupt controller: GICv3 (distributor, redistributor of CPU 0, the CPUs' ICC registers) or GICv2 (distributor, CPU interface).</summary>
public sealed record KernelGic(bool V3, ulong Distributor, ulong RedistributorOrCpuInterface, IReadOnlyList<IIccSystemRegisters>? GicV3Cpus);

/// <summary>A board as lists of blocks: what <see cref="HostKernel.Boot(Doorbell.Platform.Machine, KernelPlatform, IMemoryView?)"/> boots.</summary>
public sealed record KernelPlatform(KernelGic Gic, IReadOnlyList<KernelIommuInstance> Iommus, IReadOnlyList<KernelMsiInstance> MsiControllers,
    IReadOnlyList<KernelHostBridge> HostBridges, IReadOnlyList<KernelPlatformMaster> PlatformMasters);

/// <summary>An IOMMU instance the kernel probed: its description and driver.</summary>
public sealed record KernelIommu(KernelIommuInstance Instance, Doorbell.Host.Iommu.IIommuDriver Driver);

/// <summary>A host bridge the kernel enumerated.</summary>
public sealed record KernelPciHostBridge(KernelHostBridge Description, PciEnumeration Pci);

/// <summary>
/// The host driver of an in-controller MSI block (the shape of pcie-designware-host's MSI): vectors are the block's
/// data values 0..255, each a virtual interrupt number above the GIC's INTIDs; the block's one SPI handler reads the
/// status words (offset 0x10 + 4·n, write 1 to clear) and runs the handler of every set vector. Not isolating: the
/// block looks at the data only.
/// </summary>
public sealed class InControllerMsiDriver : IMsiDomain
{
    /// <summary>Virtual interrupt numbers of in-controller vectors start here (Linux allocates virqs; the GIC's INTIDs stay below).</summary>
    public const int VirqBase = 0x10_0000;
    public const int Vectors = 256;
    readonly IMemoryView _bus;
    readonly ulong _base;
    readonly HostIrqTable _irqs;
    readonly int _virq0;
    readonly bool[] _used = new bool[Vectors];

    public InControllerMsiDriver(string name, IMemoryView bus, ulong @base, HostIrqTable irqs, int index)
    {
        Name = name; _bus = bus; _base = @base; _irqs = irqs;
        _virq0 = VirqBase + index * Vectors;
    }

    public string Name { get; }
    public bool IsolatedMsi => false;

    /// <summary>The chained handler of the block's SPI: every status bit set runs its vector's handler.</summary>
    public void HandleSpi(int cpu)
    {
        for (var w = 0; w < Vectors / 32; w++)
        {
            var status = new PhysAddr(_base + Doorbell.Platform.DeviceTree.InControllerMsi.MSI_STATUS + (ulong)w * 4);
            _bus.Read(status, 4, out var st, BusAttributes.Cpu);
            if (st == 0) continue;
            _bus.Write(status, 4, st, BusAttributes.Cpu); // W1C
            for (var b = 0; b < 32; b++)
                if ((st >> b & 1) != 0) _irqs.Dispatch(_virq0 + w * 32 + b, cpu);
        }
    }

    public MsiAllocation AllocateMsis(uint deviceId, int count)
    {
        if (count is < 1 or > Vectors) throw new IrqException(Errno.EINVAL, $"{count} vectors");
        for (var start = 0; start + count <= Vectors; start++)
        {
            var free = true;
            for (var k = 0; k < count && free; k++) free = !_used[start + k];
            if (!free) continue;
            var v = new MsiVector[count];
            for (var k = 0; k < count; k++)
            {
                _used[start + k] = true;
                v[k] = new MsiVector(k, new MsiMessage(_base, (uint)(start + k)), _virq0 + start + k);
            }
            return new MsiAllocation(this, deviceId, v);
        }
        throw new IrqException(Errno.ENOSPC, $"no {count} free vectors in {Name}");
    }

    public void FreeMsis(MsiAllocation allocation)
    {
        ArgumentNullException.ThrowIfNull(allocation);
        foreach (var v in allocation.Vectors) _used[v.Intid - _virq0] = false;
    }

    public void SetAffinity(MsiVector vector, int cpu) { }
}
