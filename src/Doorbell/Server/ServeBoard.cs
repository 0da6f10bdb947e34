using Doorbell.Devices;
using Doorbell.Host.Kernel;
using Doorbell.Memory;
using Doorbell.Platform;
using Doorbell.Tracing;

// The board `doorbell serve` boots: by default qemu-virt (GICv3 + ITS + SMMUv3) with the multi-queue DMA device at
// 00:01.0, edu at 00:02.0 with a 64-bit DMA mask (QEMU's dma_mask property) and the platform DMA engine; or a board
// description file (Platform/BoardDescription). The client-memory aperture is mapped on the bus before boot.
namespace Doorbell.Server;

public static class ServeBoard
{
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
            if (!File.Exists(boardFile)) throw new FormatException($"board file '{boardFile}' does not exist");
            var d = BoardDescription.Load(boardFile);
            if (!string.Equals(d.Iommu, "smmuv3", StringComparison.OrdinalIgnoreCase))
                throw new FormatException($"board '{d.Name}': doorbell serve needs iommu: smmuv3 (VFIO type1 has no IOMMU to program otherwise)");
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
        var aperture = new ClientMemoryAperture();
        m.Bus.MapMmio(new PhysAddr(ClientMemoryAperture.Base), ClientMemoryAperture.Size, aperture,
            new MmioAccessRules(AccessSizes.All, false, MmioViolation.SlaveError), "client-memory");
        return (HostKernel.Boot(m, platform, null), aperture);
    }
}
