using BenchmarkDotNet.Attributes;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V2;

namespace Doorbell.Benchmarks;

/// <summary>
/// SMMUv2 costs (issue 15): a DMA page translated with an IOTLB hit through a stream port (goal: within 10% of the
/// SMMUv3 figure, 0 allocations), and a context-bank switch (S2CR retargeted over MMIO) followed by the first walk.
/// Programmed as the arm-smmu driver does: SMR/S2CR, CBA2R/CBAR/TCR2/TTBR0/TCR/MAIR/SCTLR over MMIO, tables in RAM.
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
public class SmmuV2Benchmarks
{
    const ulong SmmuBase = 0x0905_0000;
    const ulong Iova = 0x1_0000_0000;
    const int Pages = 16;

    PhysicalAddressSpace _bus = null!;
    SmmuV2 _smmu = null!;
    SmmuV2StreamPort _port = null!;
    readonly byte[] _buf = new byte[8];
    int _bank;

    void W(ulong a, ulong v, int size = 4) => _bus.Write(new PhysAddr(a), size, v, BusAttributes.Cpu);

    ulong Cb(int n) => SmmuBase + ((ulong)(_smmu.Options.GlobalPages + n) << 12);

    [GlobalSetup]
    public void Setup()
    {
        _bus = new PhysicalAddressSpace();
        _bus.AddRam(new PhysAddr(0x4000_0000), 0x2000_0000);
        _smmu = new SmmuV2(_bus, SmmuV2Options.Mmu500);
        _smmu.Map(new PhysAddr(SmmuBase));
        var alloc = new PhysPageAllocator(0x4100_0000, 0x100_0000);
        for (var n = 0; n < 2; n++)
        {
            IoPageTable.Create(_bus, alloc, IoPageTableFormat.Stage1, Vmsa.Granule.Size4K, 48, 44, out var pt);
            pt!.Map(Iova, 0x4800_0000 + (ulong)n * 0x10_0000, Pages * 0x1000UL, IoProt.ReadWrite);
            var gr1 = SmmuBase + 0x1000;
            W(gr1 + SmmuV2Gr1.CBA2R(n), SmmuV2Field.Cba2rVa64 | (uint)(n + 1) << 16);
            W(gr1 + SmmuV2Gr1.CBAR(n), SmmuV2Field.CbarTypeS1BypassS2 << 16 | (uint)n << 24);
            W(Cb(n) + SmmuV2Cb.TCR2, 4 | SmmuV2Field.Tcr2As);
            W(Cb(n) + SmmuV2Cb.TTBR0, pt.TableBase | (ulong)(n + 1) << 48, 8);
            W(Cb(n) + SmmuV2Cb.TCR, 16 | SmmuV2Field.TcrEpd1);
            W(Cb(n) + SmmuV2Cb.MAIR0, (uint)IoPageTable.Mair);
            W(Cb(n) + SmmuV2Cb.SCTLR, SmmuV2Field.SctlrM | SmmuV2Field.SctlrCfre | SmmuV2Field.SctlrCfie);
        }
        W(SmmuBase + SmmuV2Gr0.SMR(0), SmmuV2Field.SmrValid | 8);
        W(SmmuBase + SmmuV2Gr0.S2CR(0), 0);
        W(SmmuBase + SmmuV2Gr0.sCR0, SmmuV2Field.Cr0Gfre | SmmuV2Field.Cr0Gfie | SmmuV2Field.Cr0Usfcfg | SmmuV2Field.Cr0Vmid16En);
        _port = (SmmuV2StreamPort)_smmu.CreateStreamPort(8);
        for (var p = 0; p < Pages; p++) _port.Read(Iova + (ulong)p * 0x1000, _buf, BusAttributes.FromDevice(8));
    }

    /// <summary>Translation of one page through the port's fast path (stream context check, IOTLB hit, permission check), 16 cached pages.</summary>
    [Benchmark(OperationsPerInvoke = Pages)]
    public ulong DmaTranslateIotlbHitPerPage()
    {
        ulong sum = 0;
        for (var p = 0; p < Pages; p++)
        {
            _port.TryTranslate(Iova + (ulong)p * 0x1000, Vmsa.AccessFlags.Read, out var pa);
            sum += pa;
        }
        return sum;
    }

    /// <summary>An 8-byte DMA read through the port with an IOTLB hit (translation + memory access).</summary>
    [Benchmark(OperationsPerInvoke = Pages)]
    public int DmaRead8IotlbHit()
    {
        var s = 0;
        for (var p = 0; p < Pages; p++)
            s += (int)_port.Read(Iova + (ulong)p * 0x1000, _buf, BusAttributes.FromDevice(8));
        return s;
    }

    /// <summary>S2CR retargeted to the other context bank (one MMIO write), TLBIALL on it + TLBSYNC, then the first
    /// translation: stream re-resolution, bank decode into a TranslationConfig, a full 4-level walk and IOTLB fill.</summary>
    [Benchmark]
    public bool ContextBankSwitchAndFirstWalk()
    {
        _bank ^= 1;
        W(SmmuBase + SmmuV2Gr0.S2CR(0), (uint)_bank);
        W(Cb(_bank) + SmmuV2Cb.TLBIALL, 0);
        W(Cb(_bank) + SmmuV2Cb.TLBSYNC, 0);
        return _port.TryTranslate(Iova, Vmsa.AccessFlags.Read, out _);
    }
}
