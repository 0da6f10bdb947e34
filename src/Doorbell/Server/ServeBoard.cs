using Doorbell.Devices;
using Doorbell.Host.Kernel;
using Doorbell.Memory;
using Doorbell.Platform;
using Doorbell.Tracing;

// The board `doorbell serve` boots: by default qemu-virt (GICv3 + ITS + SMMUv3) with the multi-queue DMA device at
// 00:01.0, edu at 00:02.0 with a 64-bit DMA mask (QEMU's dma_mask property) and the platform DMA engine; or a board
// description file (Platform/BoardDescription) or a built-in board's name (juno-like, thunderx-like, its-and-gicv2m:
// the SMMUv2 boards). The client-memory aperture is mapped on the bus before boot, where the board's map puts it.
namespace Doorbell.Server;

public static class ServeBoard
{
    /// <summary>Boards `--board` accepts by name (shipped inside the library) when no file of that name exists.</summary>
    public static readonly string[] BuiltInBoards = ["juno-like", "thunderx-like", "its-and-gicv2m"];

    /// <summary>Builds and boots the board. A malformed board file throws FormatException with a one-line reason.</summary>
    public static (HostKernel Kernel, ClientMemoryAperture Aperture) Boot(string? boardFile, StrictMonitor? strict)
    {
        Machine m;
        var platform = new List<PlatformDmaInfo>();
        if (boardFile is null)
        {
            m = QemuVirtBoard.Create(new QemuVirtOptions { Strict = strict }, QemuVirtWiring.Models);
            m.AddPci(new MultiQueueDmaDevice(4), slot: 1);
            m.AddPci(new EduDevice(m.Clock, ulong.MaxValue), slot: 2);
            platform.Add(HostKernel.AddPlatformDma(m));
        }
        else
        {
            BoardDescription d;
            if (File.Exists(boardFile)) d = BoardDescription.Load(boardFile);
            else if (BuiltInBoards.Contains(boardFile)) d = BoardDescription.LoadBuiltIn(boardFile);
            else throw new FormatException($"board file '{boardFile}' does not exist (built-in boards: {string.Join(", ", BuiltInBoards)})");
            if (!(string.Equals(d.Iommu, "smmuv3", StringComparison.OrdinalIgnoreCase) || string.Equals(d.Iommu, "smmuv2", StringComparison.OrdinalIgnoreCase)))
                throw new FormatException($"board '{d.Name}': doorbell serve needs iommu: smmuv3 or smmuv2 (VFIO type1 has no IOMMU to program otherwise)");
            var plat = d.Platform;
            d.Platform = [];
            m = d.Build(QemuVirtWiring.Models);
            if (strict is not null) m.Strict.Enabled |= strict.Enabled;
            foreach (var p in plat)
            {
                if (p.Device != "dma-engine") throw new FormatException($"platform device '{p.Device}' is unknown (dma-engine)");
                var @base = BoardDescription.Num(p.Base);
                var sid = (uint)BoardDescription.Num(p.StreamId);
                platform.Add(new PlatformDmaInfo(m.AddPlatformDma(@base, p.Spi, sid), @base, p.Spi, sid));
            }
        }
        var aperture = new ClientMemoryAperture(m.Map.ClientAperture, m.Map.ClientApertureSize);
        m.Bus.MapMmio(new PhysAddr(aperture.Base), aperture.Size, aperture,
            new MmioAccessRules(AccessSizes.All, false, MmioViolation.SlaveError), "client-memory");
        return (HostKernel.Boot(m, platform, null), aperture);
    }
}
