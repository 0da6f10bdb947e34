using Doorbell.Devices;
using Doorbell.Examples;
using Doorbell.Host.Kernel;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Platform;
using Doorbell.Smmu.V3;

namespace Doorbell.Scenarios.Steps;

/// <summary>
/// The whole stack on qemu-virt: a host kernel boots the board (SMMUv3 driver, ITS, ECAM enumeration, IOMMU groups),
/// a userspace driver written only against the VFIO ABI drives the multi-queue DMA device with MSI-X on eventfds and
/// epoll, an unmapped DMA faults at the SMMU, and the isolation policy is applied to an ITS and a GICv2m board.
/// </summary>
public sealed class UserspaceDriverStep : IScenarioStep
{
    public string Title => "End to end: userspace driver over VFIO on qemu-virt (SMMUv3 + ITS), and the isolation verdict";

    public bool Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var o = context.Options("ITS board");
        var (m, models) = HostKernel.CreateBoard(o, o.Strict);
        var mq = m.AddPci(new MultiQueueDmaDevice(4));
        m.AddPci(new MultiQueueDmaDevice(4)); // a second assigned device: the forgery's victim
        var k = HostKernel.Boot(m, models);
        context.Observe("ITS board", m, k);
        var vfio = k.BuildVfio();
        var fn = k.FindFunction("0000:00:01.0")!;
        context.Item($"boot: {k.Smmu.Name} + {k.MsiDomain.Name}, {k.Functions.Count} PCI functions via ECAM, {k.Groups.Count} IOMMU groups; {fn.Name} (mq-dma) in group {fn.Group.Id}, BAR0 at 0x{fn.GetBar(0).HostAddress:x}");
        var translations = "";
        var driver = new UserspaceDriver(k.CreateProcess(vfio), fn.Group.Id, fn.Name)
        {
            OnDataVerified = () =>
            {
                var d = fn.Group.AttachedDomain!.Domain;
                var msi = fn.ProgrammedMsiAddresses[0];
                translations = $"SMMU domain: IOVA 0x{UserspaceDriver.DmaIova:x} -> PA 0x{d.IovaToPhys(UserspaceDriver.DmaIova):x}; MSI-X address 0x{msi:x} -> PA 0x{d.IovaToPhys(msi):x} (GITS_TRANSLATER, SW_MSI window)";
            },
        };
        var res = driver.Run();
        var processed = mq.DescriptorsProcessed;
        foreach (var l in res.Log) context.Item("driver: " + l);
        if (translations.Length > 0) context.Item(translations);
        var lpis = fn.Group.Id >= 0 ? k.Cpus[0].History.Where(i => i >= 8192).Distinct().ToList() : [];
        context.Item($"interrupts taken by CPU 0: LPIs {string.Join(",", lpis)} (ITS DeviceID 0x{fn.DeviceId:x}) -> eventfds -> epoll");
        var events = k.DrainSmmuEvents();
        foreach (var e in events.Take(2)) context.Item($"SMMU event: {e}");

        // The isolation verdict on both interrupt controllers.
        var o2 = context.Options("GICv2m board", new QemuVirtOptions { GicVersion = 2, Its = false });
        var (m2, models2) = HostKernel.CreateBoard(o2, o2.Strict);
        m2.AddPci(new MultiQueueDmaDevice(4));
        m2.AddPci(new MultiQueueDmaDevice(4));
        var k2 = HostKernel.Boot(m2, models2);
        context.Observe("GICv2m board", m2, k2);
        var fn2 = k2.FindFunction("0000:00:01.0")!;
        var res2 = new UserspaceDriver(k2.CreateProcess(k2.BuildVfio()), fn2.Group.Id, fn2.Name).Run();
        context.Item($"isolation: ITS board group {fn.Group.Id} isolated MSI={fn.Group.HasIsolatedMsi} -> SET_IOMMU {res.SetIommuResult}; " +
                     $"GICv2m board isolated MSI={fn2.Group.HasIsolatedMsi} -> SET_IOMMU {(res2.SetIommuResult == -Errno.EPERM ? "-EPERM" : res2.SetIommuResult.ToString(System.Globalization.CultureInfo.InvariantCulture))} (allow_unsafe_interrupts=0)");
        // Why: device A's driver sprays MSI data at its own doorbell IOVA; does any of device B's vectors fire?
        var b1 = k.FindFunction("0000:00:02.0")!;
        var fIts = new MsiForgeryProbe(k.CreateProcess(k.BuildVfio()), (fn.Group.Id, fn.Name), (b1.Group.Id, b1.Name)).Run(0, 32);
        var b2 = k2.FindFunction("0000:00:02.0")!;
        var fV2m = new MsiForgeryProbe(k2.CreateProcess(k2.BuildVfio(new VfioOptions { AllowUnsafeInterrupts = true })), (fn2.Group.Id, fn2.Name), (b2.Group.Id, b2.Name))
            .Run((uint)Doorbell.Gic.V2m.QemuVirtGicV2.V2mBaseIntid, Doorbell.Gic.V2m.QemuVirtGicV2.V2mSpiCount);
        context.Item($"forged MSIs via ITS (A writes EventIDs 0-31 to IOVA 0x{fIts.DoorbellIova:x}): victim B vectors raised {fIts.VictimVectorsRaised}/4, A's own {fIts.ForgerVectorsRaised}/4 (DeviceID picks A's ITT)");
        context.Item($"forged MSIs via GICv2m (A writes SPIs {Doorbell.Gic.V2m.QemuVirtGicV2.V2mBaseIntid}-{Doorbell.Gic.V2m.QemuVirtGicV2.V2mBaseIntid + Doorbell.Gic.V2m.QemuVirtGicV2.V2mSpiCount - 1}, allow_unsafe_interrupts=1): victim B vectors raised {fV2m.VictimVectorsRaised}/4");
        var ok = !fIts.VictimReached && fIts.ForgerVectorsRaised == 4 && fV2m.VictimVectorsRaised == 4 && res.Ok && res.CopiesVerified == res.CopiesExpected && res.FaultStatus == MqRegs.StatusWriteFault && res.CanaryIntact
                 && events.Any(e => e.Id == Evt.F_TRANSLATION && e.InputAddress == UserspaceDriver.UnmappedIova)
                 && res2.SetIommuResult == -Errno.EPERM && processed == res.CopiesExpected + 1 && lpis.Count == res.Vectors;
        context.Item(ok ? "verdict: DMA confined to mapped IOVAs, MSIs isolated by the ITS; GICv2m refused without allow_unsafe_interrupts"
                        : "verdict: FAILED " + (res.Failure ?? ""));
        return ok;
    }
}
