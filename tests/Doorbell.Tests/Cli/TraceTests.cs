using Doorbell.Devices;
using Doorbell.Memory;
using Doorbell.Platform;
using Doorbell.Tracing;

namespace Doorbell.Tests.Cli;

public class TraceTests
{
    [Fact]
    public void Patterns_select_categories_qemu_style()
    {
        var m = TraceCategories.ParseMask("smmu*,its*", out var err);
        Assert.Null(err);
        var names = TraceCategories.All.Where(c => (m!.Value & (1UL << (int)c)) != 0).Select(TraceCategories.Name).ToList();
        Assert.Equal(["smmu_reg", "smmu_cmd", "smmu_translate", "smmu_event", "its_cmd", "its_translate", "its_drop"], names);
        var minus = TraceCategories.ParseMask("gic*,-gicv2*", out _)!.Value;
        Assert.True((minus & (1UL << (int)TraceCategory.Gicr)) != 0);
        Assert.True((minus & (1UL << (int)TraceCategory.Gicv2m)) == 0);
        Assert.Null(TraceCategories.ParseMask("nope*", out err));
        Assert.Contains("'nope*' matches no trace category", err, StringComparison.Ordinal);
    }

    [Fact]
    public void Emitting_to_a_category_that_is_off_formats_and_allocates_nothing()
    {
        var t = new Trace { Mask = 1UL << (int)TraceCategory.ItsCmd };
        ulong iova = 0x1234;
        var sid = 8u;
        AllocationAssert.None(() =>
        {
            for (var i = 0; i < 100; i++)
            {
                t.Emit(TraceCategory.SmmuTranslate, "smmuv3", $"SID 0x{sid:x} IOVA 0x{iova:x} -> {i}");
                var f = t.BeginFlow(TraceCategory.PciDma, FlowKind.Dma, "dev", $"DMA 0x{iova:x}");
                t.EndFlow(f);
            }
        });
        Assert.Equal(0, t.Count);
        t.Emit(TraceCategory.ItsCmd, "its", $"MAPD dev {sid}");
        Assert.Equal("MAPD dev 8", Assert.Single(t.Events).Message);
    }

    [Fact]
    public void A_device_dma_on_a_traced_machine_reaches_one_trace_as_one_flow_with_virtual_time()
    {
        var trace = new Trace("m") { Enabled = true };
        var m = QemuVirtBoard.Create(new QemuVirtOptions { Trace = trace });
        Assert.Same(trace, m.Trace);
        Assert.Same(trace, m.SmmuV3!.Trace);
        Assert.Same(trace, m.GicV3!.Trace);
        Assert.Same(trace, m.Pci!.Trace);
        var edu = m.AddPci(new EduDevice(m.Clock, ulong.MaxValue));
        edu.ConfigWrite(4, 2, 0x6); // memory + bus master; SMMU disabled: bypass (GBPA)
        trace.Clear();
        var before = trace.Count;
        Assert.Equal(BusStatus.Ok, edu.Dma.Write(QemuVirtMap.Ram + 0x100, new byte[8], BusAttributes.Cpu));
        var evs = trace.Events;
        Assert.True(evs.Count >= 1, "the DMA was traced");
        var first = evs[0];
        Assert.Equal(TraceCategory.PciDma, first.Category);
        Assert.Equal(FlowPhase.Begin, first.Phase);
        Assert.Equal(FlowKind.Dma, first.FlowKind);
        Assert.All(evs, e => Assert.Equal(first.Flow, e.Flow));
        Assert.Equal(0, trace.CurrentFlow);
        // timestamps follow virtual time and stay strictly increasing
        m.Clock.AdvanceTo(5000);
        edu.Dma.Write(QemuVirtMap.Ram + 0x100, new byte[8], BusAttributes.Cpu);
        Assert.True(trace.Events[^1].Time >= 5000);
        for (var i = 1; i < trace.Events.Count; i++) Assert.True(trace.Events[i].Time > trace.Events[i - 1].Time);
        Assert.True(before == 0);
    }

    [Fact]
    public void A_disabled_machine_trace_records_nothing_and_the_models_share_it()
    {
        var m = QemuVirtBoard.Create(new QemuVirtOptions { GicVersion = 2, Its = false });
        Assert.Same(m.Trace, m.GicV2!.Trace);
        Assert.Same(m.Trace, m.GicV2m!.Trace);
        m.Bus.Write(new PhysAddr(QemuVirtMap.V2mSetSpi), 4, (ulong)QemuVirtMap.V2mFirstSpi + 32, BusAttributes.FromDevice(8));
        Assert.Equal(0, m.Trace.Count);
        m.Trace.Mask = 1UL << (int)TraceCategory.Gicv2m;
        m.Bus.Write(new PhysAddr(QemuVirtMap.V2mSetSpi), 4, (ulong)QemuVirtMap.V2mFirstSpi + 32, BusAttributes.FromDevice(8));
        Assert.Contains("MSI_SETSPI_NS", Assert.Single(m.Trace.Events).Message, StringComparison.Ordinal);
    }
}
