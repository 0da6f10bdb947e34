using BenchmarkDotNet.Attributes;
using Doorbell.Iommu;
using Doorbell.Vmsa;

namespace Doorbell.Benchmarks;

/// <summary>
/// The whole-scope invalidations (TLBI_NSNH_ALL, TLBI_S12_VMALL, TLBI_NH_ALL, TLBI_NH_ASID) on an empty and on a
/// full IOTLB (all 4,096 ways filled with 4K stage-1 entries of VMID 1, ASIDs 1–4). Issue 17 asks for O(1) of the
/// IOTLB size: both columns must be alike. After the first invocation the full IOTLB holds dead ways (entries die
/// by scope tick, their ways are reclaimed on reuse), which is the state an O(1) invalidation leaves behind;
/// <see cref="RefillThenInvalidate"/> measures reclaiming a dead way and killing the new entry again.
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
public class IotlbInvalidationBenchmarks
{
    Iotlb _tlb = null!;

    [Params(false, true)]
    public bool Full { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _tlb = new Iotlb();
        if (Full) Fill();
    }

    void Fill()
    {
        for (ulong i = 0; i < (ulong)_tlb.Capacity * 2; i++)
            _tlb.Insert(Entry(0x10_0000_0000 + (i << 12), (ushort)(1 + (i & 3))));
    }

    static TlbEntry Entry(ulong input, ushort asid) => new()
    {
        InputBase = input, OutputBase = input ^ 0x1_0000_0000_0000, SizeLog2 = 12, Level = 3, Granule = Granule.Size4K,
        Stage1Permissions = PagePermissions.All, Stage2Permissions = PagePermissions.All, Asid = asid, Vmid = 1, HasStage1 = true,
    };

    [Benchmark]
    public int NsnhAll()
    {
        _tlb.InvalidateAll();
        return _tlb.Count;
    }

    [Benchmark]
    public int S12Vmall()
    {
        _tlb.InvalidateByVmid(1);
        return _tlb.Count;
    }

    [Benchmark]
    public int NhAll()
    {
        _tlb.InvalidateStage1ByVmid(1);
        return _tlb.Count;
    }

    [Benchmark]
    public int NhAsid()
    {
        _tlb.InvalidateByAsid(1, 2);
        return _tlb.Count;
    }

    /// <summary>One insert of a fresh entry (reclaiming a dead way when the IOTLB is full of invalidated entries) plus an NH_ASID that kills it.</summary>
    [Benchmark]
    public int RefillThenInvalidate()
    {
        _tlb.Insert(Entry(0x20_0000_0000, 2));
        _tlb.InvalidateByAsid(1, 2);
        return _tlb.Count;
    }
}
