using BenchmarkDotNet.Attributes;
using Doorbell.Iommu;
using Doorbell.Vmsa;

namespace Doorbell.Benchmarks;

/// <summary>IOTLB costs with several block sizes in use (each lookup probes one set per size), a miss, and an insert that evicts.</summary>
[MemoryDiagnoser]
public class IotlbBenchmarks
{
    readonly Iotlb _tlb = new();
    ulong _next;

    [GlobalSetup]
    public void Setup()
    {
        // Fill to capacity with 4K entries, plus 64K (contiguous), 2M and 1G entries: four sizes in use.
        for (ulong i = 0; i < 4096; i++)
            _tlb.Insert(Entry(0x10_0000_0000 + (i << 12), 12));
        _tlb.Insert(Entry(0x20_0001_0000, 16));
        _tlb.Insert(Entry(0x30_0020_0000, 21));
        _tlb.Insert(Entry(0x40_4000_0000, 30));
        _tlb.TryLookup(1, 1, 0x30_0020_0000, out _);
    }

    static TlbEntry Entry(ulong input, int size) => new()
    {
        InputBase = input, OutputBase = input ^ 0x1_0000_0000_0000, SizeLog2 = (byte)size, Level = 3, Granule = Granule.Size4K,
        Stage1Permissions = PagePermissions.All, Stage2Permissions = PagePermissions.All, Asid = 1, Vmid = 1, HasStage1 = true,
    };

    /// <summary>Two lookups that alternate between a 2M and a 4K entry, so neither is the last hit: both probe the sets.</summary>
    [Benchmark(OperationsPerInvoke = 2)]
    public ulong HitAlternatingWithFourSizesInUse()
    {
        _tlb.TryLookup(1, 1, 0x30_0020_1234, out var a);
        _tlb.TryLookup(1, 1, 0x10_0000_5678, out var b);
        return a.OutputBase + b.OutputBase;
    }

    /// <summary>A DMA stream in one page: the last-hit way answers before any set probe.</summary>
    [Benchmark]
    public ulong HitSamePage()
    {
        _tlb.TryLookup(1, 1, 0x30_0020_1234, out var e);
        return e.OutputBase;
    }

    [Benchmark]
    public bool MissWithFourSizesInUse() => _tlb.TryLookup(1, 1, 0x50_0000_0000, out _);

    [Benchmark]
    public int InsertEvicting()
    {
        _next += 0x1000;
        _tlb.Insert(Entry(0x60_0000_0000 + (_next & 0xFFF_FFFF_F000), 12));
        return _tlb.Count;
    }
}
