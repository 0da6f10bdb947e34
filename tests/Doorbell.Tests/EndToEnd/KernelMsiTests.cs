using Doorbell.Devices;
using Doorbell.Host.Kernel;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Platform;

namespace Doorbell.Tests.EndToEnd;

/// <summary>
/// The host kernel's plain-MSI bring-up for a VFIO user goes through the PCI core's sequence (Linux's
/// msi_capability_init, PCI LB 3.0 §6.8.1): with per-vector masking every vector is masked first, then address, data,
/// Multiple Message Enable and Enable, then only the granted vectors are unmasked.
/// </summary>
public class KernelMsiTests
{
    [Theory]
    [InlineData(2, 0b1100u, 0x11u)] // 2 of 4: vectors 2 and 3 stay masked; MME = 1
    [InlineData(4, 0u, 0x21u)]      // all 4 granted: none masked; MME = 2
    public void Granted_vectors_are_unmasked_and_the_rest_stay_masked(int nvec, uint mask, uint mmeAndEnable)
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions());
        m.AddPci(new MultiQueueDmaDevice(4, msi: true)); // MSI: 4 vectors, 64-bit, per-vector masking
        var k = HostKernel.Boot(m, models);
        var f = k.FindFunction("0000:00:01.0")!;
        var cap = PciMsix.FindCapability(k.Pci, f.Enumerated.Rid, PciMsi.CapId);
        Assert.NotEqual(0, cap);
        Assert.Equal(nvec, f.EnableVectors(PciIrqKind.Msi, nvec));
        Assert.Equal(mmeAndEnable, f.ReadConfig(cap + 2, 2) & 0x71);
        Assert.Equal(mask, f.ReadConfig(cap + 0x10, 4));   // Mask Bits (64-bit capability: after Message Data)
        Assert.Equal(f.ProgrammedMsiAddresses[0], (ulong)f.ReadConfig(cap + 4, 4) | (ulong)f.ReadConfig(cap + 8, 4) << 32);
        f.DisableVectors();
        Assert.Equal(0u, f.ReadConfig(cap + 2, 2) & 1);
    }
}
