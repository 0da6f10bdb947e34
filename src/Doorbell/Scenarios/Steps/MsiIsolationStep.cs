using Doorbell.Devices;
using Doorbell.Examples;
using Doorbell.Gic.V2m;
using Doorbell.Host.Kernel;
using Doorbell.Host.Vfio;
using Doorbell.Platform;

namespace Doorbell.Scenarios.Steps;

/// <summary>
/// The isolation question as a demonstration: device A's VFIO driver (only ioctls and its own DMA engine) sprays
/// message data at its own MSI doorbell IOVA, hoping to raise device B's vectors. On an ITS board the write carries
/// A's DeviceID, so it can only reach A's own ITT; on a GICv2m board the frame sees no DeviceID and every victim
/// vector fires (which is why type1 refuses that board unless allow_unsafe_interrupts=1).
/// </summary>
public sealed class MsiIsolationStep(bool its) : IScenarioStep
{
    public string Title => its
        ? "Isolation: forged MSIs on an ITS board (the DeviceID confines them to the forger's own ITT)"
        : "Isolation: forged MSIs on a GICv2m board (any writer raises any SPI)";

    public bool Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var name = its ? "ITS board" : "GICv2m board";
        var o = context.Options(name, its ? new QemuVirtOptions() : new QemuVirtOptions { GicVersion = 2, Its = false });
        var (m, models) = HostKernel.CreateBoard(o, o.Strict);
        m.AddPci(new MultiQueueDmaDevice(4));
        m.AddPci(new MultiQueueDmaDevice(4));
        var k = HostKernel.Boot(m, models);
        context.Observe(name, m, k);
        var a = k.FindFunction("0000:00:01.0")!;
        var b = k.FindFunction("0000:00:02.0")!;
        context.Item($"{name}: A = {a.Name} (group {a.Group.Id}), B = {b.Name} (group {b.Group.Id}); MSI domain {k.MsiDomain.Name}, isolates MSIs: {a.Group.HasIsolatedMsi}");
        var vfio = k.BuildVfio(new VfioOptions { AllowUnsafeInterrupts = !its });
        var probe = new MsiForgeryProbe(k.CreateProcess(vfio), (a.Group.Id, a.Name), (b.Group.Id, b.Name));
        var r = its ? probe.Run(0, 32) : probe.Run((uint)QemuVirtGicV2.V2mBaseIntid, QemuVirtGicV2.V2mSpiCount);
        var what = its ? "EventIDs 0-31" : $"SPIs {QemuVirtGicV2.V2mBaseIntid}-{QemuVirtGicV2.V2mBaseIntid + QemuVirtGicV2.V2mSpiCount - 1}";
        context.Item($"A's DMA engine writes {what} to its doorbell IOVA 0x{r.DoorbellIova:x} ({r.ValuesSprayed} writes{(its ? "" : ", allow_unsafe_interrupts=1")})");
        context.Item($"victim B's vectors raised: {r.VictimVectorsRaised}/4; A's own: {r.ForgerVectorsRaised}/4");
        var ok = its ? !r.VictimReached && r.ForgerVectorsRaised == 4 : r.VictimVectorsRaised == 4;
        context.Item(its ? "verdict: MSIs isolated (the ITS translates with the writer's DeviceID)"
                         : "verdict: MSIs NOT isolated (the GICv2m frame cannot tell writers apart)");
        return ok;
    }
}
