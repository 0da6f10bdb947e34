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
        PmCap = F.AddCap(0x01, 8, 0x03, 0xC8); // PMC: version 3, PME from D0/D3hot...
        F.Writable(PmCap + 4, 2, 0x8103);
        F.W16(PmCap + 4, 0x0008); // NoSoftRst
        MsiCap = F.AddMsi(is64: true, maskBit: true, mmcLog2: 3);
        SsvidCap = F.AddCap(0x0D, 8);
        if (pcie) ExpCap = F.AddPcie(flr: true);
        MsixCap = F.AddMsix(tableSize: 4, bir: 2, tableOffset: 0x2000, pbaOffset: 0x3000);
        VndrCap = F.AddCap(0x09, 8, 8, 0xAA);
        F.Writable(VndrCap + 4, 4, 0xFFFF_FFFF);
        AerCap = F.AddExtCap(0x01, 0x48, 2);
        F.Writable(AerCap + 8, 4, 0xFFFF_FFFF);
        L1ssCap = F.AddExtCap(0x1E, 0x10);
        DsnCap = F.AddExtCap(0x03, 12);
        F.W32(DsnCap + 4, 0xDEAD_BEEF);
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
