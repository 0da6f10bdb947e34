using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Pci;

namespace Doorbell.Tests.Vfio;

/// <summary>A PCIe endpoint with a typical layout, bound to vfio-pci in group 1 of a ready container.</summary>
public sealed class PciTestDevice
{
    public readonly VfioWorld W;
    public readonly FakePciFunction F;
    public readonly VfioPciDevice Dev;
    public readonly int Container, Group, Fd;
    public readonly int PmCap, MsiCap, SsvidCap, ExpCap, MsixCap, VndrCap, AerCap, L1ssCap, DsnCap;

    public PciTestDevice(VfioOptions? options = null, Action<FakePciFunction>? customize = null, bool pcie = true)
    {
        W = new VfioWorld(options);
        F = new FakePciFunction();
        F.SetBar(0, 0x10_0000, PciBarKind.Mem64, 0x10_0000_0000);
        F.SetBar(2, 0x4000, PciBarKind.Mem32, 0x1000_0000);
        F.SetBar(4, 0x20, PciBarKind.Io, 0x1000);
        F.SetBar(6, 0x1_0000, PciBarKind.Mem32, 0x1100_0000);
        var fn = F.Function; // the real PciFunction: capability layouts and masks are its own
        PmCap = fn.AddPowerManagement();
        fn.Poke16(PmCap + 2, 0xC803); // PMC: version 3, PME from D0/D3hot/D3cold
        MsiCap = fn.AddMsi(vectors: 8, is64Bit: true, perVectorMask: true);
        SsvidCap = fn.Cap(0x0D, 8);
        if (pcie) ExpCap = fn.AddPcie(PciePortType.Endpoint, flr: true);
        MsixCap = fn.AddMsix(tableSize: 4, tableBar: 2, tableOffset: 0x2000, pbaBar: 2, pbaOffset: 0x3000);
        VndrCap = fn.Cap(0x09, 8, 8, 0xAA);
        fn.Mask(VndrCap + 4, 4, 0xFFFF_FFFF);
        if (pcie) // extended capabilities live in PCI Express extended config space
        {
            AerCap = fn.AddAer();
            fn.Mask(AerCap + 8, 4, 0xFFFF_FFFF); // UNCOR_MASK fully writable on this device, so VFIO's filter shows
            L1ssCap = fn.ExtCap(0x1E, 0x10);
            DsnCap = fn.ExtCap(0x03, 12);
            F.W32(DsnCap + 4, 0xDEAD_BEEF);
        }
        customize?.Invoke(F);
        var (_, group) = W.AddGroup(1);
        Assert.Equal(0, W.Host.BindPci(group, F, out var dev));
        Dev = dev!;
        (Container, Group, var r) = W.Setup(1);
        Assert.Equal(0, r);
        Fd = W.GetDeviceFd(Group, F.Name);
        Assert.True(Fd > 2);
    }

    public uint Cfg(int offset, int size) => W.CfgRead(Fd, offset, size);
    public void CfgW(int offset, int size, uint value) => W.CfgWrite(Fd, offset, size, value);
}
