using Doorbell.Host.Iommu;
using Doorbell.Host.SmmuV2;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V2;

namespace Doorbell.Tests.SmmuV2;

public class SmmuV2DriverTests
{
    [Theory]
    [InlineData(SmmuV2Variant.Mmu401)]
    [InlineData(SmmuV2Variant.Mmu500)]
    [InlineData(SmmuV2Variant.Mmu400)]
    public void ProbeAttachMapDma_Unmap_Faults(SmmuV2Variant variant)
    {
        var rig = new SmmuV2Rig(SmmuV2Options.For(variant), strict: true);
        var drv = rig.Driver();
        Assert.Equal(variant != SmmuV2Variant.Mmu400, drv.Features.Stage1);
        var dev = new IommuDevice("dev0", [0x8]);
        drv.ProbeDevice(dev);
        var dom = (SmmuV2Domain)drv.AllocateDomain(IommuDomainType.Unmanaged, IommuDomainStage.Stage1);
        Assert.Equal(variant == SmmuV2Variant.Mmu400 ? IommuDomainStage.Stage2 : IommuDomainStage.Stage1, dom.Stage);
        dom.Map(0x10_0000, SmmuV2Rig.DataArea + 0x3000, 0x1000, IoProt.Read | IoProt.Write);
        var port = rig.Port(0x8);
        // Attached to the blocked domain at probe: DMA is terminated.
        Assert.Equal(BusStatus.SlaveError, rig.DmaWrite(port, 0x10_0010, 0xAB));
        drv.AttachDevice(dom, dev);
        Assert.Equal(BusStatus.Ok, rig.DmaWrite(port, 0x10_0010, 0xCAFE));
        Assert.Equal(0xCAFEu, rig.Ram32(SmmuV2Rig.DataArea + 0x3010));
        Assert.Equal(0x1000UL, dom.Unmap(0x10_0000, 0x1000));
        Assert.Equal(BusStatus.SlaveError, rig.DmaWrite(port, 0x10_0010, 0xBEEF));
        Assert.Equal(0xCAFEu, rig.Ram32(SmmuV2Rig.DataArea + 0x3010));
        Assert.True(rig.ContextIrqs[dom.IrqIndex].Level);
        Assert.Equal(1, drv.HandleContextInterrupt(dom.IrqIndex));
        var f = Assert.Single(drv.Faults);
        Assert.Equal(0x10_0010UL, f.Address);
        Assert.Equal(0x8u, f.StreamId);
        Assert.Equal(SmmuV2Field.FsrTf, f.Status & SmmuV2Field.FsrFaults);
        Assert.False(rig.ContextIrqs[dom.IrqIndex].Level);
        Assert.Empty(rig.Strict.Violations);
        // An unknown stream: sCR0.USFCFG (disable_bypass) makes it a global fault.
        Assert.Equal(BusStatus.SlaveError, rig.DmaWrite(rig.Port(0x99), 0x10_0000, 1));
        Assert.True(rig.GlobalIrq.Level);
        Assert.True(drv.HandleGlobalInterrupt());
        Assert.Equal(SmmuV2Field.GfsrUsf, drv.Faults[^1].Status);
        Assert.Equal(0x99u, drv.Faults[^1].StreamId);
        Assert.False(rig.GlobalIrq.Level);
    }
}
