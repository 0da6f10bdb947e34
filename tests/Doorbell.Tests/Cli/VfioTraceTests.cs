using System.Text.Json;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Reporting;
using Doorbell.Tests.EndToEnd;
using Doorbell.Tracing;

namespace Doorbell.Tests.Cli;

/// <summary>Issue 18: the vfio_* trace categories — every VFIO ioctl decoded with its result or errno, MAP/UNMAP_DMA,
/// SET_IRQS, region accesses, reset, group/container attach — under `--trace 'vfio*'` and in the Perfetto JSON.</summary>
public class VfioTraceTests
{
    static List<string> Session(out Trace trace)
    {
        using var rig = new E2ERig();
        trace = rig.Machine.Trace;
        trace.Mask = TraceCategories.ParseMask("vfio*", out _)!.Value;
        var (c, dev, va, _) = rig.CopyOnceWithMsix();
        Assert.Equal(-Errno.EINVAL, rig.Map(c, va, 0x3, 0x1000));                      // unaligned IOVA
        Assert.Equal(0, rig.Proc.Ioctl(dev, VfioIoctl.DeviceReset, Span<byte>.Empty));
        Assert.Equal(-Errno.ENOTTY, rig.Proc.Ioctl(c, VfioIoctl.DeviceGetInfo, new byte[16])); // a device request on the container
        Assert.Equal(-Errno.EBADF, rig.Proc.Ioctl(99, VfioIoctl.GetApiVersion, 0UL));
        Assert.Equal(0, rig.Unmap(c, 0x10_0000, 0x4000));
        Assert.Equal(0, rig.Proc.Close(dev));
        return trace.Events.Where(e => e.CategoryName.StartsWith("vfio", StringComparison.Ordinal)).Select(e => $"{e.CategoryName} {e.Message}").ToList();
    }

    [Fact]
    public void Every_vfio_operation_is_traced_with_its_decoded_request_and_result()
    {
        var lines = Session(out var trace);
        void Has(string category, string text) =>
            Assert.True(lines.Any(l => l.StartsWith(category + " ", StringComparison.Ordinal) && l.Contains(text, StringComparison.Ordinal)),
                $"no {category} event containing '{text}' in:\n{string.Join('\n', lines)}");
        Has("vfio_group", "open(\"/dev/vfio/vfio\") = 3");
        Has("vfio_group", "vfio_group_open open(\"/dev/vfio/1\") = 4");
        Has("vfio_group", "vfio_connect_container VFIO_GROUP_SET_CONTAINER(group 1 fd 4, container fd 3) = 0");
        Has("vfio_group", "vfio_set_iommu VFIO_SET_IOMMU(fd 3, VFIO_TYPE1v2_IOMMU) = 0");
        Has("vfio_group", "vfio_get_device VFIO_GROUP_GET_DEVICE_FD(group 1 fd 4, \"0000:00:01.0\") = 5");
        Has("vfio_dma", "vfio_dma_map VFIO_IOMMU_MAP_DMA(fd 3, vaddr 0x7f0000000000, iova 0x100000, size 0x4000, READ|WRITE) = 0");
        Has("vfio_dma", "iova 0x3, size 0x1000, READ|WRITE) = -EINVAL");
        Has("vfio_dma", "vfio_dma_unmap VFIO_IOMMU_UNMAP_DMA(fd 3, iova 0x100000, size 0x4000) = 0, unmapped 0x4000");
        Has("vfio_irq_set", "vfio_set_irqs VFIO_DEVICE_SET_IRQS(0000:00:01.0, index MSIX, start 0, count 4, DATA_EVENTFD|ACTION_TRIGGER) = 0");
        Has("vfio_region", "vfio_region_write (0000:00:01.0:region7+0x4, 0x6, 2)");
        Has("vfio_region", "vfio_region_write (0000:00:01.0:region0+");
        Has("vfio_reset", "vfio_pci_reset VFIO_DEVICE_RESET(0000:00:01.0) = 0");
        Has("vfio_ioctl", "VFIO_DEVICE_GET_REGION_INFO(0000:00:01.0, region 7) = 0, size 0x1000, offset 0x70000000000");
        Has("vfio_ioctl", "VFIO_DEVICE_GET_INFO(fd 3) = -ENOTTY");                         // a device request on the container
        Has("vfio_ioctl", "VFIO_GET_API_VERSION(fd 99) = -EBADF");
        Has("vfio_group", "close(fd 5) vfio_put_device 0000:00:01.0 = 0");
        Has("vfio_irq", "handled by vfio-msix[0](0000:00:01.0)");                            // the completion MSI: its eventfd
        // device operations on their own track, container/group operations on "vfio"
        Assert.Contains(trace.Events, e => e.Source == "vfio:0000:00:01.0" && e.Category == TraceCategory.VfioReset);
        Assert.Contains(trace.Events, e => e.Source == "vfio" && e.Category == TraceCategory.VfioDma);
    }

    [Fact]
    public void The_vfio_trace_is_deterministic_and_lands_in_perfetto_json()
    {
        var a = Session(out var trace);
        var b = Session(out _);
        Assert.Equal(a, b);                                                                   // no OS eventfd number, no wall clock
        using var ms = new MemoryStream();
        TraceEventJson.Write([trace], ms);
        using var doc = JsonDocument.Parse(ms.ToArray());
        var cats = doc.RootElement.GetProperty("traceEvents").EnumerateArray()
            .Where(e => e.GetProperty("ph").GetString() == "X").Select(e => e.GetProperty("cat").GetString()).ToHashSet();
        foreach (var c in new[] { "vfio_group", "vfio_dma", "vfio_irq_set", "vfio_region", "vfio_reset", "vfio_ioctl" }) Assert.Contains(c, cats);
        var tracks = doc.RootElement.GetProperty("traceEvents").EnumerateArray()
            .Where(e => e.GetProperty("ph").GetString() == "M" && e.GetProperty("name").GetString() == "thread_name")
            .Select(e => e.GetProperty("args").GetProperty("name").GetString()).ToList();
        Assert.Contains("vfio", tracks);
        Assert.Contains("vfio:0000:00:01.0", tracks);
    }

    [Fact]
    public void Vfio_categories_are_off_unless_asked_for()
    {
        var m = TraceCategories.ParseMask("vfio*", out _)!.Value;
        Assert.Equal(["vfio_irq", "vfio_ioctl", "vfio_group", "vfio_dma", "vfio_irq_set", "vfio_region", "vfio_reset"],
            TraceCategories.All.Where(c => (m & (1UL << (int)c)) != 0).Select(TraceCategories.Name));
        using var rig = new E2ERig();
        rig.Machine.Trace.Mask = TraceCategories.ParseMask("smmu*", out _)!.Value;
        rig.CopyOnceWithMsix();
        Assert.DoesNotContain(rig.Machine.Trace.Events, e => e.CategoryName.StartsWith("vfio", StringComparison.Ordinal));
    }
}

public class VfioTraceCliTests
{
    [Fact]
    public void Run_trace_vfio_prints_the_vfio_events_and_writes_them_to_the_trace_json()
    {
        var dir = Directory.CreateTempSubdirectory("doorbell-vfio-trace").FullName;
        var r = CliProcess.Run(dir, "run", "vfio", "--trace", "vfio*", "--trace-out", "t.json");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("vfio_set_iommu VFIO_SET_IOMMU(fd 3, VFIO_TYPE1v2_IOMMU) = -EPERM", r.Stdout, StringComparison.Ordinal); // VFIO's refusal, traced
        Assert.Contains("vfio_dma_map VFIO_IOMMU_MAP_DMA(", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("vfio_set_irqs VFIO_DEVICE_SET_IRQS(", r.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("smmu_cmd", r.Stdout, StringComparison.Ordinal);                // only what the pattern selects
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir, "t.json")));
        Assert.Contains(doc.RootElement.GetProperty("traceEvents").EnumerateArray(),
            e => e.TryGetProperty("cat", out var c) && c.GetString() == "vfio_dma");
    }
}
