using Doorbell.Gic.Its;
using Doorbell.Gic.V2m;
using Doorbell.Gic.V3;
using Doorbell.Host.Irq;
using Doorbell.Memory;

namespace Doorbell.Scenarios.Steps;

/// <summary>
/// An MSI travels DeviceID/EventID → ITS (DTE → ITE) → LPI → collection → redistributor → host CPU, set up by
/// the host ITS driver; then the same forgery is tried against the ITS (dropped) and a GICv2m frame (succeeds).
/// </summary>
public sealed class ItsMsiStep : IScenarioStep
{
    public string Title => "Interrupts: MSI through the GICv3 ITS to a host CPU; ITS vs GICv2m forging";

    public bool Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 0x2000_0000);
        var trace = context.NewTrace("GICv3 + ITS on a bare bus");
        var sys = QemuVirtGicV3.Create(bus, cpus: 2, trace: trace, strict: context.NewStrict());
        var gic = new GicV3HostDriver(bus, QemuVirtGicV3.GicdBase, QemuVirtGicV3.GicrBase, sys.Gic.CpuInterfaces, new PhysPageAllocator(0x5000_0000, 0x1000_0000, bus));
        gic.Init();
        var its = new ItsDriver(gic, QemuVirtGicV3.ItsBase);
        its.Init();
        const uint dev = 0x0008, rogue = 0x0010; // PCI 00:01.0 and 00:02.0 (requester ID = DeviceID)
        var msi = its.AllocateMsis(dev, 2).Vectors[1];
        its.SetAffinity(msi, 1);
        var handledOn = -1;
        gic.Irqs.Request(msi.Intid, (_, cpu) => handledOn = cpu);
        context.Item($"host ITS driver: device 0x{dev:x4} vector 1 = {msi.Message} -> LPI {msi.Intid}, MOVI to collection 1 (CPU 1); domain isolates MSIs: {its.IsolatedMsi}");
        var flow = trace.BeginFlow(TraceCategory.PciMsi, FlowKind.Msi, "00:01.0", $"DeviceID 0x{dev:x4} MSI write {msi.Message.Data} to 0x{msi.Message.Address:x}");
        bus.Write(new PhysAddr(msi.Message.Address), 4, msi.Message.Data, BusAttributes.FromDevice(dev));
        trace.EndFlow(flow);
        var pending = sys.Gic.Redistributors[1].IsLpiPending((uint)msi.Intid);
        var taken = gic.Cpus[1].HandleInterrupts();
        context.Item($"device 0x{dev:x4} writes EventID {msi.Message.Data} to GITS_TRANSLATER -> LPI {msi.Intid} pending at CPU 1: {pending}; CPU 1 IAR1/EOIR1 took {taken}, handler ran on CPU {handledOn}");
        flow = trace.BeginFlow(TraceCategory.PciDma, FlowKind.Dma, "00:02.0 (rogue)", $"DeviceID 0x{rogue:x4} DMA write {msi.Message.Data} to 0x{msi.Message.Address:x} (forged MSI)");
        bus.Write(new PhysAddr(msi.Message.Address), 4, msi.Message.Data, BusAttributes.FromDevice(rogue));
        trace.EndFlow(flow);
        var forgedIts = gic.Cpus[0].HandleInterrupts() + gic.Cpus[1].HandleInterrupts();
        context.Item($"ITS: device 0x{rogue:x4} replays that write -> {sys.Its.LastDrop.Reason}, {forgedIts} interrupts (isolated)");

        var frame = new GicV2m(sys.Gic, QemuVirtGicV2.V2mBaseIntid, QemuVirtGicV2.V2mSpiCount);
        frame.Map(bus, QemuVirtGicV2.V2mBase);
        frame.Trace = trace;
        gic.EnableSpi(QemuVirtGicV2.V2mBaseIntid, 0, edge: true);
        var spiHandled = 0;
        gic.Irqs.Request(QemuVirtGicV2.V2mBaseIntid, (_, _) => spiHandled++);
        flow = trace.BeginFlow(TraceCategory.PciDma, FlowKind.Dma, "00:02.0 (rogue)", $"DeviceID 0x{rogue:x4} DMA write {QemuVirtGicV2.V2mBaseIntid} to MSI_SETSPI_NS (forged MSI)");
        bus.Write(new PhysAddr(QemuVirtGicV2.V2mBase.Value + GicV2m.MSI_SETSPI_NS), 4, (uint)QemuVirtGicV2.V2mBaseIntid, BusAttributes.FromDevice(rogue));
        trace.EndFlow(flow);
        gic.Cpus[0].HandleInterrupts();
        context.Item($"GICv2m: device 0x{rogue:x4} writes {QemuVirtGicV2.V2mBaseIntid} to MSI_SETSPI_NS -> SPI {QemuVirtGicV2.V2mBaseIntid} handled {spiHandled}x (any writer raises any SPI: not isolated)");
        return pending && taken == 1 && handledOn == 1 && forgedIts == 0 && sys.Its.LastDrop.Reason == ItsDropReason.UnmappedDevice && spiHandled == 1;
    }
}
