using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V2;
using Doorbell.Vmsa;
using static Doorbell.Fuzz.StructuresTarget;

namespace Doorbell.Fuzz;

/// <summary>
/// The SMMUv2 variant of <see cref="StructuresTarget"/>: stream matching (SMRs, S2CRs) and context banks (stage 1 with
/// stage 2 bypassed, stage 2) programmed validly from the input's choices on an MMU-500- or MMU-401-like SMMU, page
/// tables in memory; then device DMA, TLB maintenance, fault acknowledgement and — in dirty inputs — corrupted
/// page-table words, translation-table base and TCR rewrites and random context-bank register writes.
/// Oracles: nothing throws, every operation ends within a CPU-time bound; a device write never lands in the sentinel
/// RAM from a translating stream; in clean inputs a DMA lands iff mapped (exact output addresses, or a fault that
/// writes nothing beyond the mapped prefix and leaves a record in the bank's FSR).
/// Input: byte 0 bit 0 = dirty, bit 1 = MMU-401 instead of MMU-500; then a stream of choices.
/// </summary>
public sealed class SmmuV2Target : FuzzTarget
{
    public override string Name => "smmuv2";
    public override string Description => "SMMUv2 SMRs/S2CRs/context banks and page tables in memory, then DMA, TLB maintenance and corruption";

    const ulong Ram = 0x4000_0000, RamSize = 0x200_0000, TablePool = 0x4010_0000, TablePoolSize = 0x70_0000;
    const ulong Data = 0x4100_0000, DataSize = 0x100_0000, SmmuBase = 0x0905_0000;
    const int MaxOps = 400;
    static readonly TimeSpan OpBound = TimeSpan.FromSeconds(1);

    enum Kind { Fault, Bypass, Stage1, Stage2 }

    sealed class Stream
    {
        public uint Sid;
        public int Bank;
        public Kind Kind;
        public IoPageTable? Table;
        public ushort Asid;
        public uint Vmid;
        public readonly Dictionary<ulong, (ulong Pa, bool Writable)> Pages = [];
        public IMemoryPort Port = null!;
    }

    sealed class Rig
    {
        public readonly PhysicalAddressSpace Bus = new();
        public readonly Watch View;
        public readonly SmmuV2 Smmu;
        public readonly PhysPageAllocator Tables;
        public readonly List<Stream> Streams = [];
        public bool Dirty;
        public ulong NextData = Data;
        public int Ops;
        public long Mapped, Faulted;

        public Rig(bool mmu401, Func<ulong, ulong>? tamper)
        {
            Bus.AddRam(new PhysAddr(Ram), RamSize);
            Bus.AddRam(new PhysAddr(Sentinel), SentinelSize, "sentinel");
            Bus.Fill(Sentinel, SentinelSize, 0xA5);
            View = new Watch(Bus, tamper);
            Tables = new PhysPageAllocator(TablePool, TablePoolSize, Bus);
            Smmu = new SmmuV2(View, mmu401 ? SmmuV2Options.Mmu401 : SmmuV2Options.Mmu500);
            Smmu.Map(Bus, new PhysAddr(SmmuBase));
        }

        public SmmuV2Options O => Smmu.Options;
        public ulong Gr1 => SmmuBase + (1UL << O.PageShift);
        public ulong Cb(int n) => SmmuBase + ((ulong)(O.GlobalPages + n) << O.PageShift);
        public uint R32(ulong a) { Bus.Read(new PhysAddr(a), 4, out var v, BusAttributes.Cpu); return (uint)v; }
        public void W32(ulong a, uint v) => Bus.Write(new PhysAddr(a), 4, v, BusAttributes.Cpu);
        public void W64(ulong a, ulong v) => Bus.Write(new PhysAddr(a), 8, v, BusAttributes.Cpu);
    }

    readonly Func<ulong, ulong>? _tamper;

    public SmmuV2Target() { }

    /// <summary>For tests of the oracles: every device write's address goes through <paramref name="tamperDeviceWrite"/>.</summary>
    public SmmuV2Target(Func<ulong, ulong> tamperDeviceWrite) => _tamper = tamperDeviceWrite;

    public long MappedDmas { get; private set; }
    public long FaultedDmas { get; private set; }
    public long LastOps { get; private set; }
    int _lastLength = -1;

    public override long Units(ReadOnlySpan<byte> input) => input.Length == _lastLength ? LastOps : Math.Min(MaxOps, 1 + input.Length / 6);

    public override void Run(ReadOnlySpan<byte> input)
    {
        var r = new ChoiceReader(input);
        var mode = r.Byte();
        var rig = new Rig((mode & 2) != 0, _tamper) { Dirty = (mode & 1) != 0 };
        SetUp(rig, ref r);
        while (!r.Done && rig.Ops < MaxOps)
        {
            rig.Ops++;
            var start = CpuTime.Thread;
            Step(rig, ref r);
            var spent = CpuTime.Thread - start;
            if (spent > OpBound) throw new FuzzFinding($"operation {rig.Ops} took {spent.TotalMilliseconds:F0} ms of CPU");
        }
        LastOps = rig.Ops;
        _lastLength = input.Length;
        MappedDmas += rig.Mapped;
        FaultedDmas += rig.Faulted;
    }

    static void SetUp(Rig rig, ref ChoiceReader r)
    {
        var n = 2 + r.Byte() % Math.Min(6, rig.O.ContextBanks - 1);
        for (var i = 0; i < n; i++)
        {
            var s = new Stream { Sid = (uint)(i * 3 + 1), Bank = i, Asid = (ushort)(i + 1), Vmid = (uint)(i + 1) };
            s.Kind = (r.Byte() % 6) switch { 0 => Kind.Fault, 1 => Kind.Bypass, 2 or 3 => Kind.Stage1, _ => Kind.Stage2 };
            // A part without stage 2 (or 1) gets the other kind of bank.
            if (s.Kind == Kind.Stage2 && !rig.O.Stage2) s.Kind = Kind.Stage1;
            if (s.Kind == Kind.Stage1 && !rig.O.Stage1) s.Kind = Kind.Stage2;
            rig.Streams.Add(s);
            if (s.Kind is Kind.Stage1 or Kind.Stage2)
            {
                var fmt = s.Kind == Kind.Stage1 ? IoPageTableFormat.Stage1 : IoPageTableFormat.Stage2;
                var ias = s.Kind == Kind.Stage1 ? (r.Bit() && rig.O.UpstreamBusBits >= 48 ? 48 : 39) : 40;
                if (IoPageTable.Create(rig.Bus, rig.Tables, fmt, Granule.Size4K, ias, 40, out var t) != 0 || t is null)
                    throw new FuzzFinding($"a valid {fmt} table (IAS {ias}) could not be created");
                s.Table = t;
                for (var k = 1 + r.Byte() % 6; k > 0; k--) MapOne(rig, s, ref r);
                ProgramBank(rig, s);
            }
            // SMR i matches exactly this StreamID; S2CR i routes it (IHI 0062 §2.4).
            rig.W32(SmmuBase + SmmuV2Gr0.SMR(i), SmmuV2Field.SmrValid | s.Sid);
            var type = s.Kind switch { Kind.Bypass => SmmuV2Field.S2crTypeBypass, Kind.Fault => SmmuV2Field.S2crTypeFault, _ => SmmuV2Field.S2crTypeTranslate };
            rig.W32(SmmuBase + SmmuV2Gr0.S2CR(i), type << SmmuV2Field.S2crTypeShift | (uint)s.Bank);
            s.Port = rig.Smmu.CreateStreamPort(s.Sid);
        }
        rig.W32(SmmuBase + SmmuV2Gr0.sCR0, SmmuV2Field.Cr0Gfre | SmmuV2Field.Cr0Gfie | SmmuV2Field.Cr0Gcfgfre | SmmuV2Field.Cr0Gcfgfie | SmmuV2Field.Cr0Usfcfg);
    }

    static void ProgramBank(Rig rig, Stream s)
    {
        var t = s.Table!;
        var n = s.Bank;
        var cb = rig.Cb(n);
        rig.W32(rig.Gr1 + SmmuV2Gr1.CBA2R(n), SmmuV2Field.Cba2rVa64);
        if (s.Kind == Kind.Stage1)
        {
            rig.W32(rig.Gr1 + SmmuV2Gr1.CBAR(n), SmmuV2Field.CbarTypeS1BypassS2 << SmmuV2Field.CbarTypeShift | (uint)n << SmmuV2Field.CbarIrptNdxShift);
            rig.W32(cb + SmmuV2Cb.TCR2, (uint)SmmuV2Options.EncodeSize(t.OutputSize) | SmmuV2Field.Tcr2As);
            rig.W64(cb + SmmuV2Cb.TTBR0, t.TableBase | (ulong)s.Asid << 48);
            rig.W64(cb + SmmuV2Cb.TTBR1, (ulong)s.Asid << 48);
            rig.W32(cb + SmmuV2Cb.TCR, (uint)(64 - t.InputSize) | SmmuV2Field.TcrEpd1);
            rig.W32(cb + SmmuV2Cb.MAIR0, (uint)IoPageTable.Mair);
            rig.W32(cb + SmmuV2Cb.MAIR1, (uint)(IoPageTable.Mair >> 32));
        }
        else
        {
            rig.W32(rig.Gr1 + SmmuV2Gr1.CBAR(n), SmmuV2Field.CbarTypeS2 << SmmuV2Field.CbarTypeShift | (uint)n << SmmuV2Field.CbarIrptNdxShift | s.Vmid);
            rig.W64(cb + SmmuV2Cb.TTBR0, t.TableBase);
            var sl0 = (uint)(2 - t.StartLevel);
            rig.W32(cb + SmmuV2Cb.TCR, (uint)SmmuV2Options.EncodeSize(t.OutputSize) << SmmuV2Field.TcrS2PaSizeShift | sl0 << SmmuV2Field.TcrSl0Shift | (uint)(64 - t.InputSize));
        }
        rig.W32(cb + SmmuV2Cb.SCTLR, SmmuV2Field.SctlrM | SmmuV2Field.SctlrCfre | SmmuV2Field.SctlrCfie);
    }

    static void MapOne(Rig rig, Stream s, ref ChoiceReader r)
    {
        const ulong page = 0x1000;
        var iova = (r.Byte() % 3) switch
        {
            0 => Sentinel + ((ulong)r.Byte() % 16) * page,
            1 => (1 + (ulong)r.Byte() % 64) * page,
            _ => 0x1_0000_0000UL + (ulong)r.U16() * page,
        };
        var pages = 1 + (ulong)r.Byte() % 3;
        var prot = r.Byte() % 4 == 0 ? IoProt.Read : IoProt.ReadWrite;
        if (rig.NextData + pages * page > Data + DataSize) return;
        var pa = rig.NextData;
        rig.NextData += pages * page;
        for (var k = 0UL; k < pages; k++) if (s.Pages.ContainsKey(iova + k * page)) return;
        if (s.Table!.Map(iova, pa, pages * page, prot) != 0) return;
        for (var k = 0UL; k < pages; k++) s.Pages[iova + k * page] = (pa + k * page, prot.HasFlag(IoProt.Write));
    }

    static void Invalidate(Rig rig, Stream s)
    {
        var cb = rig.Cb(s.Bank);
        if (s.Kind == Kind.Stage1) rig.W32(cb + SmmuV2Cb.TLBIASID, s.Asid);
        else rig.W32(SmmuBase + SmmuV2Gr0.TLBIVMID, s.Vmid);
        rig.W32(cb + SmmuV2Cb.TLBSYNC, 0);
        rig.W32(SmmuBase + SmmuV2Gr0.sTLBGSYNC, 0);
    }

    static void Step(Rig rig, ref ChoiceReader r)
    {
        var s = rig.Streams[r.Byte() % rig.Streams.Count];
        switch (r.Byte() % (rig.Dirty ? 7 : 4))
        {
            case 0: case 1: Dma(rig, s, ref r); break;
            case 2: // remap: unmap a page (with TLB maintenance) or map more
                if (s.Table is null) break;
                if (r.Bit() && s.Pages.Count > 1)
                {
                    var keys = s.Pages.Keys.Order().ToArray();
                    var iova = keys[r.Byte() % keys.Length];
                    var unmapped = s.Table.Unmap(iova, 0x1000);
                    if (unmapped != 0x1000 && !rig.Dirty) throw new FuzzFinding($"unmapping a mapped page at 0x{iova:x} unmapped 0x{unmapped:x} bytes");
                    s.Pages.Remove(iova);
                    Invalidate(rig, s);
                }
                else MapOne(rig, s, ref r);
                break;
            case 3: // acknowledge faults (W1C)
                foreach (var t in rig.Streams) rig.W32(rig.Cb(t.Bank) + SmmuV2Cb.FSR, rig.R32(rig.Cb(t.Bank) + SmmuV2Cb.FSR));
                rig.W32(SmmuBase + SmmuV2Gr0.sGFSR, rig.R32(SmmuBase + SmmuV2Gr0.sGFSR));
                break;
            case 4: // corrupt a page-table word, then perhaps invalidate
            {
                var used = Math.Max(0x1000UL, rig.Tables.BytesInUse);
                var a = TablePool + ((ulong)r.U32() % used & ~7UL);
                rig.Bus.ReadU64(a, out var old);
                var v = (r.Byte() % 4) switch
                {
                    0 => old ^ 1UL << (r.Byte() % 64),
                    1 => r.U64(),
                    2 => (Ram + ((ulong)r.U32() % RamSize & ~0xFFFUL)) | 3,
                    _ => (ulong)r.Byte(),
                };
                var pageOf = v & 0x000F_FFFF_FFFF_0000UL;
                if (pageOf >= Sentinel && pageOf < Sentinel + SentinelSize) v ^= 1UL << 33;
                rig.Bus.WriteU64(a, v);
                if (r.Bit()) Invalidate(rig, s);
                break;
            }
            case 5: // translation regime rewrites on a translating bank: TTBR0 to any table page, T0SZ, TLB maintenance
            {
                if (s.Table is null) break;
                var cb = rig.Cb(s.Bank);
                switch (r.Byte() % 4)
                {
                    case 0: rig.W64(cb + SmmuV2Cb.TTBR0, TablePool + ((ulong)r.U16() << 12) % TablePoolSize | (s.Kind == Kind.Stage1 ? (ulong)s.Asid << 48 : 0)); break;
                    case 1: rig.W32(cb + SmmuV2Cb.TCR, (rig.R32(cb + SmmuV2Cb.TCR) & ~0x3Fu) | (uint)(r.Byte() % 64)); break;
                    case 2: rig.W32(cb + SmmuV2Cb.TLBIVA, r.U32()); break;
                    default: rig.W32(SmmuBase + SmmuV2Gr0.TLBIALLNSNH, 0); break;
                }
                break;
            }
            default: // any other context-bank register of a translating bank except SCTLR (M stays set)
            {
                if (s.Table is null) break;
                var off = (uint)(r.U16() % 0x1000) & ~3u;
                if (off is SmmuV2Cb.SCTLR) break;
                rig.W32(rig.Cb(s.Bank) + off, r.U32());
                break;
            }
        }
    }

    static void Dma(Rig rig, Stream s, ref ChoiceReader r)
    {
        const ulong page = 0x1000;
        var write = r.Bit();
        ulong iova;
        if (s.Pages.Count > 0 && r.Byte() % 4 != 0)
        {
            var keys = s.Pages.Keys.Order().ToArray();
            iova = keys[r.Byte() % keys.Length] + (ulong)r.U16() % page;
        }
        else iova = (r.Byte() % 3) switch
        {
            0 => Sentinel + (ulong)r.U16() % SentinelSize,
            1 => rig.Dirty ? r.U64() : Data + (ulong)r.U16() * 8,
            _ => rig.Dirty || s.Kind != Kind.Bypass ? (ulong)r.U16() << 12 | r.Byte() : Data + r.Byte(),
        };
        var length = 1 + ((r.Byte() % 4) switch { 0 => (int)(r.U16() % 0x3000), _ => r.Byte() % 64 });
        var data = new byte[length];
        for (var i = 0; i < length; i++) data[i] = (byte)(0xC3 ^ i ^ rig.Ops);
        var fsrAddr = rig.Cb(s.Bank) + SmmuV2Cb.FSR;
        if (s.Table is not null) rig.W32(fsrAddr, rig.R32(fsrAddr));
        rig.View.DeviceWrites.Clear();
        rig.View.SentinelHit = false;
        var attrs = BusAttributes.FromDevice(s.Sid);
        var status = write ? s.Port.Write(iova, data, attrs) : s.Port.Read(iova, data, attrs);
        if (rig.View.SentinelHit && s.Kind != Kind.Bypass)
            throw new FuzzFinding($"SID {s.Sid} ({s.Kind}) DMA at IOVA 0x{iova:x}+{length}: a write landed in the sentinel, which no SMR/S2CR/bank lets it reach");
        if (rig.Dirty) return;
        switch (s.Kind)
        {
            case Kind.Fault:
                if (status == BusStatus.Ok || rig.View.DeviceWrites.Count != 0) throw new FuzzFinding($"SID {s.Sid} routed to fault: its DMA completed ({status}) or wrote");
                return;
            case Kind.Bypass:
                CheckBypassDma(s.Sid, iova, length, rig.View);
                return;
        }
        if (CheckTranslatedDma($"SID {s.Sid} ({s.Kind})", iova, data, write, page, s.Pages, rig.View, rig.Bus, status, skipNonRam: false))
            rig.Mapped++;
        else
        {
            if (status == BusStatus.Ok) throw new FuzzFinding($"SID {s.Sid} ({s.Kind}) DMA at IOVA 0x{iova:x}+{length}, not (fully) mapped, completed");
            if ((rig.R32(fsrAddr) & SmmuV2Field.FsrFaults) == 0) throw new FuzzFinding($"SID {s.Sid} ({s.Kind}) DMA fault at IOVA 0x{iova:x} left no record in CB{s.Bank}_FSR");
            rig.Faulted++;
        }
    }

    public override byte[] Generate(Random rng)
    {
        ArgumentNullException.ThrowIfNull(rng);
        var b = new byte[64 + rng.Next(2000)];
        rng.NextBytes(b);
        b[0] = (byte)((rng.Next(3) == 0 ? 0 : 1) | (rng.Next(2) << 1));
        return b;
    }

}
