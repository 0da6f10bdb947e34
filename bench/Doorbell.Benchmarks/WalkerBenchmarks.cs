using BenchmarkDotNet.Attributes;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Vmsa;

namespace Doorbell.Benchmarks;

/// <summary>
/// Translation costs: IOTLB hit (budget ≤ 10 ns), a cold 4-level 4K stage-1 walk with no TLB (≤ 60 ns), and a
/// nested stage-1 + stage-2 walk, 4 levels each (≤ 400 ns). Tables are built with IoPageTable in sparse RAM.
/// </summary>
[MemoryDiagnoser]
public class WalkerBenchmarks
{
    const ulong Iova = 0x0000_1234_5678_9000;
    PageTableWalker _walker = null!;
    Translator _translator = null!;
    Iotlb _tlb = null!;
    TranslationConfig _s1 = null!;
    TranslationConfig _nested = null!;
    PhysicalAddressSpace _bus = null!;
    readonly ulong[] _tablePages = new ulong[4];

    [GlobalSetup]
    public void Setup()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 1UL << 32);
        var alloc = new PhysPageAllocator(0x4000_0000, 1UL << 28);
        // Stage 1: 48-bit IOVA, 4K pages, start level 0 (four levels).
        IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage1, Granule.Size4K, 48, 48, out var s1);
        s1!.Map(Iova, 0x8000_0000, 0x1000, IoProt.ReadWrite);
        _s1 = new TranslationConfig(s1.CreateStage1Config(asid: 1), null);

        // Nested: stage-1 tables in IPA space, translated by a 48-bit 4K stage 2 (start level 0) mapped with 4K pages.
        IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage2, Granule.Size4K, 48, 48, out var s2);
        var ipaAlloc = new IpaAllocator(0x1_0000_0000, s2!);
        IoPageTable.Create(bus, ipaAlloc, IoPageTableFormat.Stage1, Granule.Size4K, 48, 48, out var s1n);
        // The stage-1 manager writes through IPA = PA here only for building; the walker translates every fetch.
        s1n!.Map(Iova, 0x2_0000_0000, 0x1000, IoProt.ReadWrite);
        s2!.Map(0x2_0000_0000, 0x9000_0000, 0x1000, IoProt.ReadWrite);
        _nested = new TranslationConfig(s1n.CreateStage1Config(asid: 2), s2.CreateStage2Config(vmid: 3));

        _bus = bus;
        var t = s1.TableBase;
        for (var level = 0; level < 4; level++)
        {
            var ea = t + (((Iova >> (39 - 9 * level)) & 0x1FF) << 3);
            _tablePages[level] = ea;
            bus.ReadU64(ea, out var d);
            t = d & 0x0000_FFFF_FFFF_F000UL;
        }
        _walker = new PageTableWalker(bus);
        _tlb = new Iotlb();
        _translator = new Translator(bus, _tlb);
        _translator.Translate(_s1, Iova, AccessFlags.Read, out _, out _);
        if (_walker.Walk(_nested, Iova, AccessFlags.Read).IsFault) throw new InvalidOperationException("nested setup");
    }

    /// <summary>Stage-1 table pages get IPA = PA; stage 2 maps each with a 4K page (so every stage-2 walk is 4 levels).</summary>
    sealed class IpaAllocator(ulong ipaBase, IoPageTable s2) : IPhysPageAllocator
    {
        ulong _next = ipaBase;
        public bool TryAllocate(ulong size, out ulong physicalAddress)
        {
            physicalAddress = (_next + size - 1) & ~(size - 1);
            _next = physicalAddress + Math.Max(size, 0x1000);
            // Identity IPA → PA for the table's page so the builder (which writes at the IPA) and the walker agree.
            s2.Map(physicalAddress & ~0xFFFUL, physicalAddress & ~0xFFFUL, 0x1000, IoProt.ReadWrite);
            return true;
        }
        public void Free(ulong physicalAddress, ulong size) { }
        public ulong FreeBytes => ulong.MaxValue;
    }

    /// <summary>The memory floor of a 4-level walk: four 8-byte bus reads from the four table pages the walk touches.</summary>
    [Benchmark]
    public ulong FourDescriptorReads()
    {
        ulong sum = 0;
        for (var i = 0; i < 4; i++)
        {
            _bus.ReadU64(_tablePages[i], out var v);
            sum += v;
        }
        return sum;
    }

    [Benchmark]
    public ulong IotlbHit()
    {
        _tlb.TryLookup(0, 1, Iova, out var e);
        return e.OutputBase;
    }

    [Benchmark]
    public ulong TranslatorHit()
    {
        _translator.Translate(_s1, Iova, AccessFlags.Read, out var e, out _);
        return e.OutputBase;
    }

    [Benchmark]
    public ulong ColdWalk4Level4K() => _walker.Walk(_s1, Iova, AccessFlags.Read).Entry.OutputBase;

    [Benchmark]
    public ulong NestedWalk4x4() => _walker.Walk(_nested, Iova, AccessFlags.Read).Entry.OutputBase;
}
