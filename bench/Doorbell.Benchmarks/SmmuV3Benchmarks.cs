using BenchmarkDotNet.Attributes;
using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V3;

namespace Doorbell.Benchmarks;

/// <summary>
/// SMMUv3 costs against the budgets: a DMA page translated with an IOTLB hit through a stream port
/// (≤ 10 ns per page), STE + CD fetch and decode after a CFGI (≤ 50 ns), command processing (≥ 20 M commands/s).
/// Everything is set up as a driver would: tables in RAM, commands in the queue, PROD written over MMIO.
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
public class SmmuV3Benchmarks
{
    const ulong SmmuBase = 0x0905_0000;
    const ulong Strtab = 0x4010_0000, Cmdq = 0x4020_0000, Evtq = 0x4030_0000, Cd = 0x4040_0000;
    const ulong Iova = 0x1_0000_0000;
    const int Pages = 16;
    const int CmdqLog2 = 10;
    const int Batch = 512;

    PhysicalAddressSpace _bus = null!;
    SmmuV3 _smmu = null!;
    SmmuV3StreamPort _port = null!;
    StreamContext _ctx = null!;
    readonly byte[] _buf = new byte[8];
    uint _prod;

    void Reg(uint off, ulong v, int size = 4) => _bus.Write(new PhysAddr(SmmuBase + off), size, v, BusAttributes.Cpu);

    [GlobalSetup]
    public void Setup()
    {
        _bus = new PhysicalAddressSpace();
        _bus.AddRam(new PhysAddr(0x4000_0000), 0x2000_0000);
        _smmu = new SmmuV3(_bus);
        _smmu.Map(new PhysAddr(SmmuBase));
        Reg(SmmuV3Reg.STRTAB_BASE, Strtab, 8);
        Reg(SmmuV3Reg.STRTAB_BASE_CFG, 8);
        Reg(SmmuV3Reg.CMDQ_BASE, Cmdq | CmdqLog2, 8);
        Reg(SmmuV3Reg.EVENTQ_BASE, Evtq | 6, 8);
        Reg(SmmuV3Reg.CR0, SmmuV3Field.Cr0CmdqEn | SmmuV3Field.Cr0EventqEn | SmmuV3Field.Cr0SmmuEn);
        var alloc = new PhysPageAllocator(0x4100_0000, 0x100_0000);
        IoPageTable.Create(_bus, alloc, IoPageTableFormat.Stage1, Vmsa.Granule.Size4K, 48, 44, out var pt);
        pt!.Map(Iova, 0x4800_0000, Pages * 0x1000UL, IoProt.ReadWrite);
        var cd = SmmuV3Encode.ContextDescriptor(pt.CreateStage1Config(1));
        for (var i = 0; i < 8; i++) _bus.Store.WriteU64(Cd + (ulong)i * 8, cd[i]);
        var ste = SmmuV3Encode.Stage1Ste(Cd);
        for (var i = 0; i < 8; i++) _bus.Store.WriteU64(Strtab + 8 * 64 + (ulong)i * 8, ste[i]);
        _port = (SmmuV3StreamPort)_smmu.CreateStreamPort(8);
        for (var p = 0; p < Pages; p++) _port.Read(Iova + (ulong)p * 0x1000, _buf, BusAttributes.FromDevice(8));
        _ctx = new StreamContext();
        // A queue full of a realistic mix: CFGI_STE, TLBI_NH_VA, CMD_SYNC (as a driver's unmap/attach batches).
        for (var i = 0; i < 1 << CmdqLog2; i++)
        {
            var (q0, q1) = (i % 3) switch
            {
                0 => SmmuV3Encode.CfgiSte(9),
                1 => SmmuV3Encode.TlbiNhVa(0, 7, 0x7000_0000),
                _ => SmmuV3Encode.Sync(),
            };
            _bus.Store.WriteU64(Cmdq + (ulong)i * 16, q0);
            _bus.Store.WriteU64(Cmdq + (ulong)i * 16 + 8, q1);
        }
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

    /// <summary>One 8-byte DMA read per page over 16 cached pages: the translation above plus the bus access to RAM.</summary>
    [Benchmark(OperationsPerInvoke = Pages)]
    public int DmaReadIotlbHitPerPage()
    {
        var attrs = BusAttributes.FromDevice(8);
        var s = 0;
        for (var p = 0; p < Pages; p++)
            s += (int)_port.Read(Iova + (ulong)p * 0x1000, _buf, attrs);
        return s;
    }

    /// <summary>CFGI_STE of a stage-1 stream, then the STE + CD fetch (16 qwords) and decode of the next transaction.</summary>
    [Benchmark]
    public int SteCdDecodeAfterCfgi() => (int)_smmu.InvalidateAndResolve(8, _ctx);

    ulong _toggle;

    /// <summary>
    /// As above, but the STE and CD bytes changed before the CFGI (MEV and a MAIR byte toggled, two 8-byte RAM
    /// writes included), so nothing can be reused: a full STE + CD decode with its allocations.
    /// </summary>
    [Benchmark]
    public int SteCdDecodeAfterCfgiChangedBytes()
    {
        _toggle ^= 1;
        _bus.Store.WriteU64(Strtab + 8 * 64 + 8, (_bus.Store.ReadU64(Strtab + 8 * 64 + 8) & ~(1UL << 19)) | _toggle << 19);
        _bus.Store.WriteU64(Cd + 24, IoPageTable.Mair ^ _toggle << 40);
        return (int)_smmu.InvalidateAndResolve(8, _ctx);
    }

    /// <summary>512 queued commands (CFGI_STE / TLBI_NH_VA / CMD_SYNC) consumed by one PROD write.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public uint CommandProcessing()
    {
        var mask = (2u << CmdqLog2) - 1;
        _prod = (_prod + Batch) & mask;
        _bus.Write(new PhysAddr(SmmuBase + SmmuV3Reg.CMDQ_PROD), 4, _prod, BusAttributes.Cpu);
        return _prod;
    }
}
