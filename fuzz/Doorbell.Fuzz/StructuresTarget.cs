using System.Buffers.Binary;
using Doorbell.Gic.Its;
using Doorbell.Gic.V3;
using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V3;
using Doorbell.Vmsa;
using SmmuModel = Doorbell.Smmu.V3.SmmuV3;

namespace Doorbell.Fuzz;

/// <summary>
/// Architectural structures in emulated memory, fuzzed structure-aware: an SMMUv3 (linear or 2-level stream table,
/// STEs of every kind, CDs, stage-1/stage-2 page tables, command and event queues) and a GICv3 ITS (device,
/// collection and interrupt translation tables, command queue) are first set up validly from the input's choices,
/// then the input drives traffic (device DMA reads/writes and MSIs through the SMMU into the ITS), commands to both,
/// and — in "dirty" inputs — corruption of any structure word, random commands and register pokes.
/// Oracles:
/// - nothing throws out of a guest-driven path, and every operation ends within a CPU-time bound;
/// - every SMMU command batch is consumed, or stops with CMDQ_CONS.ERR and GERROR.CMDQ_ERR (a CERROR record); every
///   ITS command batch is consumed, or the queue stalls with a command error recorded;
/// - a device write never lands in the sentinel RAM (a region no generated value points at, at Hamming distance
///   ≥ 5 from every table, queue and data address) unless the stream's STE (or GBPA) allows pass-through;
/// - in "clean" inputs (valid structures, valid commands only) a DMA lands iff mapped: it completes and lands exactly
///   at the mapped output addresses, or it faults, writes nothing beyond the mapped prefix and leaves an event record
///   (recorded or counted as dropped); an MSI makes an LPI pending iff its DeviceID owns the event.
/// Input: byte 0 bit 0 = dirty; then a stream of choices (past its end every choice is zero).
/// </summary>
public sealed class StructuresTarget : FuzzTarget
{
    public override string Name => "structures";
    public override string Description => "SMMUv3 stream tables/STEs/CDs/page tables/queues and ITS tables/commands in memory, then DMA, MSIs and commands";

    // Physical map: RAM for the structures (S) and the data pages (D), and a sentinel RAM region (X).
    const ulong Ram = 0x4000_0000, RamSize = 0x200_0000;
    const ulong Strtab = 0x4000_0000, StrtabL2 = 0x4000_1000;
    const ulong Cmdq = 0x4001_0000, Eventq = 0x4002_0000, CdBase = 0x4003_0000;
    const int CmdqLog2 = 6, EventqLog2 = 5;
    const ulong PropTable = 0x4004_0000, PendTables = 0x4006_0000, DeviceTable = 0x4008_0000, CollTable = 0x4009_0000;
    const ulong ItsCmdq = 0x400A_0000, ItsCmdqSize = 0x1_0000, IttBase = 0x400B_0000;
    const ulong TablePool = 0x4010_0000, TablePoolSize = 0x70_0000;
    const ulong Data = 0x4100_0000, DataSize = 0x100_0000;
    /// <summary>Sentinel: bits 32, 29..26 set and bit 30 clear, so no value near a table/data address reaches it by a few bit flips.</summary>
    public const ulong Sentinel = 0x1_3C00_0000, SentinelSize = 0x1_0000;
    const ulong SmmuBase = 0x0905_0000;
    const ulong MsiIova = 0x0800_0000; // the IOVA page mapped onto the ITS translation frame (Linux's MSI cookie idea)
    const int MaxOps = 400;
    static readonly TimeSpan OpBound = TimeSpan.FromSeconds(1);

    enum Kind { Abort, Bypass, Stage1, Stage2 }

    sealed class Stream
    {
        public uint Sid;
        public Kind Kind;
        public IoPageTable? Table;
        public ushort Asid, Vmid;
        public readonly Dictionary<ulong, (ulong Pa, bool Writable)> Pages = [];
        public readonly HashSet<uint> Events = [];
        public bool DeviceMapped;
        public bool EverPassThrough;
        public IMemoryPort Port = null!;
    }

    /// <summary>The SMMU's view of memory: the bus, watched (where device-attributed writes land).</summary>
    internal sealed class Watch(PhysicalAddressSpace bus, Func<ulong, ulong>? tamper) : IMemoryView
    {
        public readonly List<(ulong Address, ulong Length)> DeviceWrites = [];
        public bool SentinelHit;

        ulong Note(ulong a, ulong n, in BusAttributes attr)
        {
            if (!attr.HasDeviceId || n == 0) return a;
            if (tamper is not null) a = tamper(a);
            DeviceWrites.Add((a, n));
            if (a < Sentinel + SentinelSize && a + n > Sentinel) SentinelHit = true;
            return a;
        }

        public BusStatus Read(PhysAddr address, int size, out ulong value, in BusAttributes attributes) => bus.Read(address, size, out value, attributes);
        public BusStatus Write(PhysAddr address, int size, ulong value, in BusAttributes attributes) => bus.Write(new PhysAddr(Note(address.Value, (ulong)size, attributes)), size, value, attributes);
        public BusStatus ReadU64(ulong address, out ulong value) => bus.ReadU64(address, out value);
        public BusStatus WriteU64(ulong address, ulong value) => bus.WriteU64(address, value);
        public BusStatus ReadU32(ulong address, out uint value) => bus.ReadU32(address, out value);
        public BusStatus WriteU32(ulong address, uint value) => bus.WriteU32(address, value);
        public BusStatus ReadBestEffort(ulong address, Span<byte> destination, in BusAttributes attributes) => bus.ReadBestEffort(address, destination, attributes);
        public BusStatus WriteBestEffort(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes) => bus.WriteBestEffort(Note(address, (ulong)source.Length, attributes), source, attributes);
        public bool IsRam(ulong address, ulong length) => bus.IsRam(address, length);
        public BusStatus Fill(ulong address, ulong length, byte value) => bus.Fill(address, length, value);
        public BusStatus Read(ulong address, Span<byte> destination, in BusAttributes attributes) => bus.Read(address, destination, attributes);
        public BusStatus Write(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes) => bus.Write(Note(address, (ulong)source.Length, attributes), source, attributes);
    }

    sealed class Rig
    {
        public readonly PhysicalAddressSpace Bus = new();
        public readonly Watch View;
        public readonly SmmuModel Smmu;
        public readonly GicV3System Gic;
        public readonly PhysPageAllocator Tables;
        public readonly List<Stream> Streams = [];
        public bool Dirty, TwoLevel, SentinelLegit;
        public Counters Checks = null!;
        public uint CmdProd;
        public ulong ItsWriter;
        public ulong NextData = Data;
        public int Ops;

        public Rig(Func<ulong, ulong>? tamper)
        {
            Bus.AddRam(new PhysAddr(Ram), RamSize);
            Bus.AddRam(new PhysAddr(Sentinel), SentinelSize, "sentinel");
            Bus.Fill(Sentinel, SentinelSize, 0xA5);
            View = new Watch(Bus, tamper);
            Tables = new PhysPageAllocator(TablePool, TablePoolSize, Bus);
            Smmu = new SmmuModel(View);
            Smmu.Map(Bus, new PhysAddr(SmmuBase));
            Gic = QemuVirtGicV3.Create(Bus, 2);
        }

        public uint R32(ulong a) { Bus.Read(new PhysAddr(a), 4, out var v, BusAttributes.Cpu); return (uint)v; }
        public ulong R64(ulong a) { Bus.Read(new PhysAddr(a), 8, out var v, BusAttributes.Cpu); return v; }
        public void W32(ulong a, uint v) => Bus.Write(new PhysAddr(a), 4, v, BusAttributes.Cpu);
        public void W64(ulong a, ulong v) => Bus.Write(new PhysAddr(a), 8, v, BusAttributes.Cpu);
        public uint Reg(uint off) => R32(SmmuBase + off);
        public void SetReg(uint off, uint v) => W32(SmmuBase + off, v);
        public ulong ItsReg(uint off) => R64(QemuVirtGicV3.ItsBase.Value + off);
    }

    readonly Func<ulong, ulong>? _tamper;

    public StructuresTarget() { }

    /// <summary>For tests of the oracles themselves: every device write's address goes through <paramref name="tamperDeviceWrite"/>
    /// (a broken SMMU, in effect).</summary>
    public StructuresTarget(Func<ulong, ulong> tamperDeviceWrite) => _tamper = tamperDeviceWrite;

    /// <summary>How often each clean-input oracle ran (so that tests can see they are reached).</summary>
    public sealed class Counters
    {
        public long MappedDmas, FaultedDmas, AbortDmas, BypassDmas, MsisTranslated, MsisDropped, CommandBatches, ItsBatches;
    }

    public Counters Checks { get; } = new();

    public long LastOps { get; private set; }
    int _lastLength = -1;

    public override long Units(ReadOnlySpan<byte> input) => input.Length == _lastLength ? LastOps : Math.Min(MaxOps, 1 + input.Length / 6);

    public override void Run(ReadOnlySpan<byte> input)
    {
        var r = new ChoiceReader(input);
        var rig = new Rig(_tamper) { Dirty = (r.Byte() & 1) != 0, Checks = Checks };
        SetUp(rig, ref r);
        while (!r.Done && rig.Ops < MaxOps)
        {
            rig.Ops++;
            var start = CpuTime.Thread;
            Step(rig, ref r);
            var spent = CpuTime.Thread - start;
            if (spent > OpBound) throw new FuzzFinding($"operation {rig.Ops} took {spent.TotalMilliseconds:F0} ms of CPU");
        }
        // Nothing may have written the sentinel except a device on a pass-through stream (checked per DMA), and no
        // SMMU or ITS write ever may (no generated register, command or table value points there).
        if (!rig.SentinelLegit)
        {
            var buf = new byte[SentinelSize];
            rig.Bus.Read(Sentinel, buf, BusAttributes.Cpu);
            if (Array.Exists(buf, b => b != 0xA5)) throw new FuzzFinding("the sentinel RAM changed although no pass-through DMA touched it");
        }
        LastOps = rig.Ops;
        _lastLength = input.Length;
    }

    // ----- valid set-up ------------------------------------------------------------------------------------------

    static void SetUp(Rig rig, ref ChoiceReader r)
    {
        var n = 2 + r.Byte() % 7;
        rig.TwoLevel = r.Byte() % 4 == 0;
        for (var i = 0; i < n; i++)
        {
            var s = new Stream { Sid = (uint)i * (rig.TwoLevel ? 5u : 3u) % 64, Asid = (ushort)(i + 1), Vmid = (ushort)(i + 1) };
            s.Kind = (r.Byte() % 6) switch { 0 => Kind.Abort, 1 => Kind.Bypass, 2 or 3 or 4 => Kind.Stage1, _ => Kind.Stage2 };
            s.EverPassThrough = s.Kind == Kind.Bypass;
            rig.Streams.Add(s);
            if (s.Kind is Kind.Stage1 or Kind.Stage2)
            {
                var fmt = s.Kind == Kind.Stage1 ? IoPageTableFormat.Stage1 : IoPageTableFormat.Stage2;
                var g = (r.Byte() % 4) switch { 0 => Granule.Size64K, 1 => Granule.Size16K, _ => Granule.Size4K };
                var ias = s.Kind == Kind.Stage1 ? (r.Bit() ? 48 : 39) : 40;
                if (IoPageTable.Create(rig.Bus, rig.Tables, fmt, g, ias, 44, out var t) != 0 || t is null)
                    throw new FuzzFinding($"a valid {fmt} table ({g}, IAS {ias}) could not be created");
                s.Table = t;
                var maps = 1 + r.Byte() % 6;
                for (var k = 0; k < maps; k++) MapOne(rig, s, ref r);
                Map(rig, s, MsiIova, QemuVirtGicV3.ItsBase.Value + 0x1_0000, IoProt.ReadWrite);
            }
            s.Port = rig.Smmu.CreateStreamPort(s.Sid);
            WriteSte(rig, s);
        }
        // SMMU registers (IHI 0070 §6.3): stream table, queues, then enable.
        rig.W64(SmmuBase + SmmuV3Reg.STRTAB_BASE, Strtab);
        rig.SetReg(SmmuV3Reg.STRTAB_BASE_CFG, rig.TwoLevel ? 8u | 6u << SmmuV3Field.StrtabCfgSplitShift | 1u << SmmuV3Field.StrtabCfgFmtShift : 6u);
        if (rig.TwoLevel) rig.Bus.WriteU64(Strtab, SmmuV3Encode.L1Std(StrtabL2, 7));
        rig.W64(SmmuBase + SmmuV3Reg.CMDQ_BASE, Cmdq | CmdqLog2);
        rig.W64(SmmuBase + SmmuV3Reg.EVENTQ_BASE, Eventq | EventqLog2);
        rig.SetReg(SmmuV3Reg.CR2, SmmuV3Field.Cr2RecInvSid);
        rig.SetReg(SmmuV3Reg.CR0, SmmuV3Field.Cr0CmdqEn | SmmuV3Field.Cr0EventqEn);
        rig.SetReg(SmmuV3Reg.CR0, SmmuV3Field.Cr0CmdqEn | SmmuV3Field.Cr0EventqEn | SmmuV3Field.Cr0SmmuEn);

        // GICv3 + ITS (IHI 0069): LPIs on both redistributors, device and collection tables, command queue.
        rig.W32(QemuVirtGicV3.GicdBase.Value + GicV3.GICD_CTLR, GicV3.CtlrEnableGrp1 | GicV3.CtlrAre);
        rig.Bus.Fill(PropTable + 0, 0x1_0000, 0xA1); // priority 0xA0, enabled
        for (var c = 0; c < 2; c++)
        {
            var rd = QemuVirtGicV3.GicrBase.Value + (ulong)c * 0x2_0000;
            rig.W32(rd + GicV3Redistributor.GICR_WAKER, 0);
            rig.W64(rd + GicV3Redistributor.GICR_PROPBASER, PropTable | 15);
            rig.W64(rd + GicV3Redistributor.GICR_PENDBASER, PendTables + (ulong)c * 0x1_0000);
            rig.W32(rd + GicV3Redistributor.GICR_CTLR, 1);
        }
        var its = QemuVirtGicV3.ItsBase.Value;
        rig.W64(its + GicV3Its.GITS_BASER, 1UL << 63 | DeviceTable);
        rig.W64(its + GicV3Its.GITS_BASER + 8, 1UL << 63 | CollTable);
        rig.W64(its + GicV3Its.GITS_CBASER, 1UL << 63 | ItsCmdq | 15);
        rig.W64(its + GicV3Its.GITS_CWRITER, 0);
        rig.W32(its + GicV3Its.GITS_CTLR, 1);
        Span<ulong> c4 = stackalloc ulong[4];
        for (ushort icid = 0; icid < 2; icid++) { ItsCommand.Mapc(c4, icid, icid, true); ItsQueue(rig, c4); }
        foreach (var s in rig.Streams)
        {
            if (r.Byte() % 5 == 0) continue;
            ItsCommand.Mapd(c4, s.Sid, IttBase + s.Sid * 0x100UL, 5, true);
            ItsQueue(rig, c4);
            s.DeviceMapped = true;
            for (uint e = 0; e < 8; e++)
            {
                if (!r.Bit()) continue;
                ItsCommand.Mapti(c4, s.Sid, e, 8192 + s.Sid * 32 + e, (ushort)(e & 1));
                ItsQueue(rig, c4);
                s.Events.Add(e);
            }
        }
        ItsKick(rig, expectClean: true);
        SmmuSubmit(rig, [SmmuV3Encode.CfgiAll(), SmmuV3Encode.TlbiNsnhAll(), SmmuV3Encode.Sync()], expectClean: true);
    }

    static ulong SteAddress(Rig rig, uint sid) => rig.TwoLevel ? StrtabL2 + sid * 64UL : Strtab + sid * 64UL;
    static ulong CdAddress(Stream s) => CdBase + s.Sid * 0x40UL;

    static void WriteSte(Rig rig, Stream s)
    {
        ulong[] ste;
        switch (s.Kind)
        {
            case Kind.Abort: ste = SmmuV3Encode.AbortSte(); break;
            case Kind.Bypass: ste = SmmuV3Encode.BypassSte(); break;
            case Kind.Stage1:
                var cd = SmmuV3Encode.ContextDescriptor(s.Table!.CreateStage1Config(s.Asid));
                for (var i = 0; i < 8; i++) rig.Bus.WriteU64(CdAddress(s) + (ulong)i * 8, cd[i]);
                ste = SmmuV3Encode.Stage1Ste(CdAddress(s));
                break;
            default: ste = SmmuV3Encode.Stage2Ste(s.Table!.CreateStage2Config(s.Vmid)); break;
        }
        for (var i = 0; i < 8; i++) rig.Bus.WriteU64(SteAddress(rig, s.Sid) + (ulong)i * 8, ste[i]);
    }

    static ulong PageSize(Stream s) => s.Table!.Granule switch { Granule.Size64K => 0x1_0000UL, Granule.Size16K => 0x4000UL, _ => 0x1000UL };

    static ulong IovaChoice(Stream s, ref ChoiceReader r, ulong page) => (r.Byte() % 4) switch
    {
        0 => Sentinel + ((ulong)r.Byte() % 16) * page % SentinelSize,               // IOVAs that alias the sentinel's PAs
        1 => (ulong)(1 + r.Byte() % 64) * page,
        2 => (s.Kind == Kind.Stage2 ? 0xFF_0000_0000UL : 0x7F_0000_0000UL) + (ulong)r.Byte() * page,
        _ => 0x1_0000_0000UL + (ulong)r.U16() * page,
    };

    static void MapOne(Rig rig, Stream s, ref ChoiceReader r)
    {
        var page = PageSize(s);
        var iova = IovaChoice(s, ref r, page);
        var pages = 1 + ((ulong)r.Byte() % 3);
        var prot = r.Byte() % 4 == 0 ? IoProt.Read : IoProt.ReadWrite;
        if (rig.NextData + pages * page > Data + DataSize) return;
        var pa = (rig.NextData + page - 1) & ~(page - 1);
        rig.NextData = pa + pages * page;
        Map(rig, s, iova, pa, prot, pages * page);
    }

    static void Map(Rig rig, Stream s, ulong iova, ulong pa, IoProt prot, ulong size = 0)
    {
        var page = PageSize(s);
        if (size == 0) size = page;
        for (var k = 0UL; k < size; k += page) if (s.Pages.ContainsKey(iova + k)) return;
        if (s.Table!.Map(iova, pa, size, prot) != 0) return;
        for (var k = 0UL; k < size; k += page) s.Pages[iova + k] = (pa + k, prot.HasFlag(IoProt.Write));
    }

    // ----- operations --------------------------------------------------------------------------------------------

    /// <summary>Set DOORBELL_FUZZ_TRACE=1 to see each operation of a replayed input on stderr.</summary>
    static readonly bool Verbose = Environment.GetEnvironmentVariable("DOORBELL_FUZZ_TRACE") == "1";

    static void Step(Rig rig, ref ChoiceReader r)
    {
        var op = r.Byte() % (rig.Dirty ? 12 : 7);
        var s = rig.Streams[r.Byte() % rig.Streams.Count];
        if (Verbose)
            Console.Error.WriteLine($"op {rig.Ops}: {op} SID {s.Sid} ({s.Kind}) CR0 0x{rig.Reg(SmmuV3Reg.CR0):x} CMDQ_BASE 0x{rig.R64(SmmuBase + SmmuV3Reg.CMDQ_BASE):x} PROD 0x{rig.Reg(SmmuV3Reg.CMDQ_PROD):x} CONS 0x{rig.Reg(SmmuV3Reg.CMDQ_CONS):x} GERROR 0x{rig.Reg(SmmuV3Reg.GERROR):x}/0x{rig.Reg(SmmuV3Reg.GERRORN):x} CREADR 0x{rig.ItsReg(GicV3Its.GITS_CREADR):x}");
        switch (op)
        {
            case 0: Dma(rig, s, ref r, write: true); break;
            case 1: Dma(rig, s, ref r, write: r.Bit()); break;
            case 2: Msi(rig, s, ref r); break;
            case 3: ValidSmmuCommands(rig, s, ref r); break;
            case 4: ValidItsCommand(rig, s, ref r); break;
            case 5: Acknowledge(rig); break;
            case 6: Remap(rig, s, ref r); break;
            case 7: CorruptSmmu(rig, s, ref r); break;
            case 8: CorruptIts(rig, s, ref r); break;
            case 9: RandomSmmuCommand(rig, ref r); break;
            case 10: RandomItsCommand(rig, ref r); break;
            default: PokeRegister(rig, ref r); break;
        }
        if (rig.Dirty) foreach (var t in rig.Streams) Observe(rig, t);
    }

    /// <summary>Reference decode (IHI 0070 §5.2, §6.3.12, §6.3.24): may this stream's transactions pass untranslated now?
    /// SMMUEN = 0 with GBPA.ABORT = 0, or a valid STE with Config = bypass, or stage 1 with S1DSS = bypass. Sticky,
    /// because the SMMU may keep using a cached configuration until it is invalidated.</summary>
    static void Observe(Rig rig, Stream s)
    {
        if (s.EverPassThrough) return;
        var cr0 = rig.Reg(SmmuV3Reg.CR0);
        if ((cr0 & SmmuV3Field.Cr0SmmuEn) == 0)
        {
            if ((rig.Reg(SmmuV3Reg.GBPA) & SmmuV3Field.GbpaAbort) == 0) s.EverPassThrough = true;
            return;
        }
        var baseAddr = rig.R64(SmmuBase + SmmuV3Reg.STRTAB_BASE) & SmmuV3Field.StrtabBaseAddrMask;
        var cfg = rig.Reg(SmmuV3Reg.STRTAB_BASE_CFG);
        // Decode the STE both as a linear and as a 2-level table would place it (a conservative superset).
        s.EverPassThrough |= PassThrough(rig, baseAddr + s.Sid * 64UL);
        var split = (int)(cfg >> SmmuV3Field.StrtabCfgSplitShift) & 0x1F;
        if (split is > 0 and < 32)
        {
            rig.Bus.ReadU64(baseAddr + (s.Sid >> split) * 8UL, out var l1);
            s.EverPassThrough |= PassThrough(rig, (l1 & Ste.L1L2PtrMask) + (s.Sid & ((1u << split) - 1)) * 64UL);
        }
    }

    static bool PassThrough(Rig rig, ulong ste)
    {
        rig.Bus.ReadU64(ste, out var q0);
        rig.Bus.ReadU64(ste + 8, out var q1);
        if ((q0 & 1) == 0) return false;
        var config = (uint)(q0 >> Ste.ConfigShift) & 7;
        return config == Ste.ConfigBypass || ((config & 0b101) == 0b101 && (q1 & 3) == Ste.S1DssBypass);
    }

    static void Dma(Rig rig, Stream s, ref ChoiceReader r, bool write)
    {
        var page = s.Table is null ? 0x1000UL : PageSize(s);
        ulong iova;
        if (s.Pages.Count > 0 && r.Byte() % 4 != 0)
        {
            var keys = s.Pages.Keys.Where(k => k != MsiIova).Order().ToArray();
            iova = keys.Length == 0 ? Data : keys[r.Byte() % keys.Length] + (ulong)r.U16() % page;
        }
        else iova = (r.Byte() % 3) switch
        {
            0 => Sentinel + (ulong)r.U16() % SentinelSize,
            1 => rig.Dirty ? r.U64() : Data + (ulong)r.U16() * 8,
            // low addresses (MMIO among them): a pass-through stream of a clean input stays in RAM
            _ => rig.Dirty || s.Kind != Kind.Bypass ? (ulong)r.U16() << 12 | r.Byte() : Data + r.Byte(),
        };
        var length = 1 + ((r.Byte() % 4) switch { 0 => (int)(r.U16() % 0x3000), _ => r.Byte() % 64 });
        var data = new byte[length];
        for (var i = 0; i < length; i++) data[i] = (byte)(0x5A ^ i ^ rig.Ops);
        if (rig.Dirty) Observe(rig, s);
        var eventsBefore = rig.Smmu.EventsRecorded + rig.Smmu.EventsDropped;
        rig.View.DeviceWrites.Clear();
        rig.View.SentinelHit = false;
        var attrs = BusAttributes.FromDevice(s.Sid);
        var status = write ? s.Port.Write(iova, data, attrs) : s.Port.Read(iova, data, attrs);
        if (rig.View.SentinelHit) rig.SentinelLegit |= s.EverPassThrough;
        if (rig.View.SentinelHit && !s.EverPassThrough)
            throw new FuzzFinding($"SID {s.Sid} ({s.Kind}) {(write ? "wrote" : "read")} IOVA 0x{iova:x}+{length} and a write landed in the sentinel, which no STE lets it reach");
        if (rig.Dirty) return;

        // Clean: a DMA lands iff mapped.
        switch (s.Kind)
        {
            case Kind.Abort:
                if (status == BusStatus.Ok || rig.View.DeviceWrites.Count != 0) throw new FuzzFinding($"SID {s.Sid} has an abort STE but its DMA at 0x{iova:x} completed ({status}) or wrote");
                rig.Checks.AbortDmas++;
                return;
            case Kind.Bypass:
                CheckBypassDma(s.Sid, iova, length, rig.View);
                rig.Checks.BypassDmas++;
                return;
        }
        // Translated: the DMA lands iff every page is mapped (for a write, writable).
        if (CheckTranslatedDma($"SID {s.Sid} ({s.Kind})", iova, data, write, page, s.Pages, rig.View, rig.Bus, status, skipNonRam: true))
            rig.Checks.MappedDmas++;
        else
        {
            if (status == BusStatus.Ok) throw new FuzzFinding($"SID {s.Sid} ({s.Kind}) DMA {(write ? "write" : "read")} at IOVA 0x{iova:x}+{length}, not (fully) mapped, completed");
            if (rig.Smmu.EventsRecorded + rig.Smmu.EventsDropped == eventsBefore)
                throw new FuzzFinding($"SID {s.Sid} ({s.Kind}) DMA fault at IOVA 0x{iova:x} left no event record");
            rig.Checks.FaultedDmas++;
        }
    }

    /// <summary>A bypassed DMA writes only [iova, iova + length) (the SMMUv3 and SMMUv2 targets' shared oracle).</summary>
    internal static void CheckBypassDma(uint sid, ulong iova, int length, Watch view)
    {
        foreach (var (a, n) in view.DeviceWrites)
            if (a < iova || a + n > iova + (ulong)length) throw new FuzzFinding($"SID {sid} (bypass) DMA at 0x{iova:x}+{length} wrote 0x{a:x}+{n}");
    }

    /// <summary>
    /// A translated DMA of <paramref name="data"/> at <paramref name="iova"/> against the pages the test mapped (the SMMUv3
    /// and SMMUv2 targets' shared oracle): writes land only where the tables map them; when every page is mapped (and
    /// writable for a write) the DMA completes and the bytes at each PA are the transferred ones. Returns whether every
    /// page was mapped; the caller checks the fault side. <paramref name="skipNonRam"/>: PAs that are registers (an
    /// MSI page mapping the ITS frame) are not read back.
    /// </summary>
    internal static bool CheckTranslatedDma(string who, ulong iova, byte[] data, bool write, ulong page,
        Dictionary<ulong, (ulong Pa, bool Writable)> pages, Watch view, PhysicalAddressSpace bus, BusStatus status, bool skipNonRam)
    {
        var length = data.Length;
        var allowed = new List<(ulong Pa, ulong Len, int Offset)>();
        var mappedAll = true;
        for (var pos = 0UL; pos < (ulong)length;)
        {
            var va = iova + pos;
            var pageBase = va & ~(page - 1);
            var chunk = Math.Min((ulong)length - pos, page - (va - pageBase));
            if (!pages.TryGetValue(pageBase, out var m) || (write && !m.Writable)) { mappedAll = false; break; }
            allowed.Add((m.Pa + (va - pageBase), chunk, (int)pos));
            pos += chunk;
        }
        foreach (var (a, n) in view.DeviceWrites)
            if (!allowed.Exists(x => a >= x.Pa && a + n <= x.Pa + x.Len))
                throw new FuzzFinding($"{who} DMA at IOVA 0x{iova:x}+{length} wrote PA 0x{a:x}+{n}, which its tables do not map there");
        if (!mappedAll) return false;
        if (status != BusStatus.Ok) throw new FuzzFinding($"{who} DMA {(write ? "write" : "read")} at mapped IOVA 0x{iova:x}+{length} failed: {status}");
        foreach (var (pa, n, off) in allowed)
        {
            if (skipNonRam && !bus.IsRam(pa, n)) continue;
            var mem = new byte[n];
            bus.Read(pa, mem, BusAttributes.Cpu);
            if (!mem.AsSpan().SequenceEqual(data.AsSpan(off, (int)n)))
                throw new FuzzFinding($"{who} DMA at IOVA 0x{iova:x}: the bytes at PA 0x{pa:x} are not the transferred ones");
        }
        return true;
    }

    static void Msi(Rig rig, Stream s, ref ChoiceReader r)
    {
        var e = (uint)(r.Byte() % 10);
        var target = s.Kind == Kind.Bypass ? QemuVirtGicV3.TranslaterAddress.Value : MsiIova + 0x40;
        if (rig.Dirty && r.Bit()) target = r.Bit() ? QemuVirtGicV3.TranslaterAddress.Value : MsiIova + 0x40;
        var before = rig.Gic.Its.Translations;
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, e);
        if (rig.Dirty) Observe(rig, s);
        rig.View.SentinelHit = false;
        s.Port.Write(target, b, BusAttributes.FromDevice(s.Sid));
        if (rig.View.SentinelHit) throw new FuzzFinding($"SID {s.Sid} MSI write landed in the sentinel");
        if (rig.Dirty) return;
        var expected = s.Kind != Kind.Abort && s.DeviceMapped && s.Events.Contains(e);
        var got = rig.Gic.Its.Translations - before;
        if (got != (expected ? 1 : 0))
            throw new FuzzFinding($"MSI from DeviceID {s.Sid} ({s.Kind}) EventID {e}: {got} LPI(s) made pending, expected {(expected ? 1 : 0)}");
        if (expected) rig.Checks.MsisTranslated++; else rig.Checks.MsisDropped++;
    }

    // ----- SMMU commands -----------------------------------------------------------------------------------------

    static void SmmuSubmit(Rig rig, ReadOnlySpan<(ulong, ulong)> cmds, bool expectClean)
    {
        var q = rig.R64(SmmuBase + SmmuV3Reg.CMDQ_BASE);
        var log2 = (int)Math.Min(q & SmmuV3Field.QBaseLog2SizeMask, (ulong)rig.Smmu.Options.CommandQueueLog2Max);
        var addr = q & SmmuV3Field.QBaseAddrMask;
        var ptrMask = (2u << log2) - 1;
        rig.CmdProd &= ptrMask;
        // A driver never has more than the queue's size outstanding: only what fits is written.
        var free = (1u << log2) - ((rig.CmdProd - rig.Reg(SmmuV3Reg.CMDQ_CONS)) & ptrMask);
        if (free > 1u << log2) free = 0;
        if (cmds.Length > free) cmds = cmds[..(int)free];
        foreach (var (q0, q1) in cmds)
        {
            var slot = addr + (rig.CmdProd & ((1u << log2) - 1)) * 16UL;
            rig.Bus.WriteU64(slot, q0);
            rig.Bus.WriteU64(slot + 8, q1);
            rig.CmdProd = (rig.CmdProd + 1) & ptrMask;
        }
        rig.SetReg(SmmuV3Reg.CMDQ_PROD, rig.CmdProd);
        var cons = rig.Reg(SmmuV3Reg.CMDQ_CONS);
        var cmdqOn = (rig.Reg(SmmuV3Reg.CR0) & SmmuV3Field.Cr0CmdqEn) != 0;
        var cerror = ((rig.Reg(SmmuV3Reg.GERROR) ^ rig.Reg(SmmuV3Reg.GERRORN)) & SmmuV3Field.GerrorCmdq) != 0;
        var consumed = (cons & ptrMask) == (rig.Reg(SmmuV3Reg.CMDQ_PROD) & ptrMask);
        if (cmdqOn && !consumed && !cerror)
            throw new FuzzFinding($"CMDQ stopped at CONS 0x{cons:x} (PROD 0x{rig.CmdProd:x}) without GERROR.CMDQ_ERR");
        if (cerror && (cons & SmmuV3Field.CmdqConsErrMask) == 0 && cmdqOn && !consumed)
            throw new FuzzFinding($"CMDQ error without an error code in CMDQ_CONS (0x{cons:x})");
        rig.Checks.CommandBatches++;
        if (expectClean && (!consumed || cerror))
            throw new FuzzFinding($"valid commands were not all consumed (CONS 0x{cons:x}, PROD 0x{rig.CmdProd:x}, CMDQ_ERR {cerror})");
    }

    static void ValidSmmuCommands(Rig rig, Stream s, ref ChoiceReader r)
    {
        var cmds = new List<(ulong, ulong)>();
        for (var k = 1 + r.Byte() % 4; k > 0; k--)
            cmds.Add((r.Byte() % 9) switch
            {
                0 => SmmuV3Encode.CfgiSte(s.Sid),
                1 => SmmuV3Encode.CfgiAll(),
                2 => SmmuV3Encode.TlbiNhAsid(0, s.Asid),
                3 => SmmuV3Encode.TlbiS12Vmall(s.Vmid),
                4 => SmmuV3Encode.TlbiNhAll(0),
                5 => SmmuV3Encode.PrefetchConfig(s.Sid),
                6 => SmmuV3Encode.CfgiCdAll(s.Sid),
                7 => SmmuV3Encode.TlbiNsnhAll(),
                _ => SmmuV3Encode.Sync(),
            });
        cmds.Add(SmmuV3Encode.Sync());
        SmmuSubmit(rig, [.. cmds], expectClean: !rig.Dirty);
    }

    static void RandomSmmuCommand(Rig rig, ref ChoiceReader r)
    {
        byte[] ops = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x10, 0x11, 0x12, 0x13, 0x18, 0x1A, 0x20, 0x28, 0x2A, 0x30, 0x40, 0x41, 0x44, 0x45, 0x46, 0x7F, 0x00, 0xFF];
        var q0 = ops[r.Byte() % ops.Length] | (r.Bit() ? Value(ref r) & ~0xFFUL : (ulong)r.U32() << 32 | (ulong)r.Byte() << 8);
        var q1 = Value(ref r);
        SmmuSubmit(rig, [(q0, q1), SmmuV3Encode.Sync()], expectClean: false);
    }

    static void Remap(Rig rig, Stream s, ref ChoiceReader r)
    {
        if (s.Table is null) return;
        var page = PageSize(s);
        if (r.Bit() && s.Pages.Count > 1)
        {
            var keys = s.Pages.Keys.Where(k => k != MsiIova).Order().ToArray();
            if (keys.Length == 0) return;
            var iova = keys[r.Byte() % keys.Length];
            var unmapped = s.Table.Unmap(iova, page);
            if (unmapped != page && !rig.Dirty) throw new FuzzFinding($"unmapping a mapped page at 0x{iova:x} ({s.Table.Granule}, {s.Kind}) unmapped 0x{unmapped:x} bytes");
            s.Pages.Remove(iova);
            var inv = s.Kind == Kind.Stage1 ? SmmuV3Encode.TlbiNhVa(0, s.Asid, iova) : SmmuV3Encode.TlbiS2Ipa(s.Vmid, iova);
            SmmuSubmit(rig, [inv, SmmuV3Encode.Sync()], expectClean: !rig.Dirty);
        }
        else MapOne(rig, s, ref r);
    }

    static void Acknowledge(Rig rig)
    {
        // Drain the event queue and acknowledge global errors (replacing a failed command by a CMD_SYNC, as Linux does).
        rig.SetReg(SmmuV3Reg.EVENTQ_CONS, rig.Reg(SmmuV3Reg.EVENTQ_PROD));
        var gerror = rig.Reg(SmmuV3Reg.GERROR);
        if (((gerror ^ rig.Reg(SmmuV3Reg.GERRORN)) & SmmuV3Field.GerrorCmdq) != 0)
        {
            var q = rig.R64(SmmuBase + SmmuV3Reg.CMDQ_BASE);
            var log2 = (int)Math.Min(q & SmmuV3Field.QBaseLog2SizeMask, (ulong)rig.Smmu.Options.CommandQueueLog2Max);
            var slot = (q & SmmuV3Field.QBaseAddrMask) + (rig.Reg(SmmuV3Reg.CMDQ_CONS) & ((1u << log2) - 1)) * 16UL;
            var (s0, s1) = SmmuV3Encode.Sync();
            rig.Bus.WriteU64(slot, s0);
            rig.Bus.WriteU64(slot + 8, s1);
        }
        rig.SetReg(SmmuV3Reg.GERRORN, gerror);
        if ((rig.ItsReg(GicV3Its.GITS_CREADR) & 1) != 0)
        {
            // A stalled ITS: drop the failed command (SYNC in its place) and retry.
            var slot = ItsCmdq + (rig.ItsReg(GicV3Its.GITS_CREADR) & (ItsCmdqSize - 32));
            Span<ulong> c = stackalloc ulong[4];
            ItsCommand.Sync(c, 0);
            for (var i = 0; i < 4; i++) rig.Bus.WriteU64(slot + (ulong)i * 8, c[i]);
            rig.W64(QemuVirtGicV3.ItsBase.Value + GicV3Its.GITS_CWRITER, rig.ItsWriter | 1);
        }
    }

    // ----- ITS commands ------------------------------------------------------------------------------------------

    static void ItsQueue(Rig rig, ReadOnlySpan<ulong> c)
    {
        for (var i = 0; i < 4; i++) rig.Bus.WriteU64(ItsCmdq + rig.ItsWriter + (ulong)i * 8, c[i]);
        rig.ItsWriter = (rig.ItsWriter + 32) % ItsCmdqSize;
    }

    static void ItsKick(Rig rig, bool expectClean)
    {
        var errors = rig.Gic.Its.CommandErrorCount;
        var wasStalled = (rig.ItsReg(GicV3Its.GITS_CREADR) & 1) != 0;
        rig.W64(QemuVirtGicV3.ItsBase.Value + GicV3Its.GITS_CWRITER, rig.ItsWriter);
        var creadr = rig.ItsReg(GicV3Its.GITS_CREADR);
        var enabled = (rig.ItsReg(GicV3Its.GITS_CTLR) & 1) != 0;
        var consumed = (creadr & ~1UL) == rig.ItsWriter;
        var stalled = (creadr & 1) != 0;
        if (enabled && !consumed && !(stalled && (wasStalled || rig.Gic.Its.CommandErrorCount > errors)))
            throw new FuzzFinding($"ITS queue stopped at CREADR 0x{creadr:x} (CWRITER 0x{rig.ItsWriter:x}) without a stall and a command error");
        rig.Checks.ItsBatches++;
        if (expectClean && (!consumed || rig.Gic.Its.CommandErrorCount != errors))
            throw new FuzzFinding($"valid ITS commands failed: CREADR 0x{creadr:x}, CWRITER 0x{rig.ItsWriter:x}, last error {rig.Gic.Its.CommandErrors.LastOrDefault()}");
    }

    static void ValidItsCommand(Rig rig, Stream s, ref ChoiceReader r)
    {
        Span<ulong> c = stackalloc ulong[4];
        var e = (uint)(r.Byte() % 8);
        var icid = (ushort)(r.Byte() & 1);
        if (!s.DeviceMapped) { ItsCommand.Invall(c, icid); ItsQueue(rig, c); ItsKick(rig, !rig.Dirty); return; }
        switch (r.Byte() % 7)
        {
            case 0 when !s.Events.Contains(e):
                ItsCommand.Mapti(c, s.Sid, e, 8192 + s.Sid * 32 + e, icid);
                s.Events.Add(e);
                break;
            case 1 when s.Events.Contains(e):
                ItsCommand.DeviceEvent(c, ItsOpcode.Discard, s.Sid, e);
                s.Events.Remove(e);
                break;
            case 2 when s.Events.Contains(e): ItsCommand.Movi(c, s.Sid, e, icid); break;
            case 3 when s.Events.Contains(e): ItsCommand.DeviceEvent(c, r.Bit() ? ItsOpcode.Int : ItsOpcode.Clear, s.Sid, e); break;
            case 4 when s.Events.Contains(e): ItsCommand.DeviceEvent(c, ItsOpcode.Inv, s.Sid, e); break;
            case 5: ItsCommand.Movall(c, icid, (ulong)(icid ^ 1)); break;
            default: ItsCommand.Sync(c, icid); break;
        }
        ItsQueue(rig, c);
        ItsKick(rig, !rig.Dirty);
    }

    static void RandomItsCommand(Rig rig, ref ChoiceReader r)
    {
        byte[] ops = [ItsOpcode.Movi, ItsOpcode.Int, ItsOpcode.Clear, ItsOpcode.Sync, ItsOpcode.Mapd, ItsOpcode.Mapc, ItsOpcode.Mapti,
                      ItsOpcode.Mapi, ItsOpcode.Inv, ItsOpcode.Invall, ItsOpcode.Movall, ItsOpcode.Discard, 0x22, 0x00, 0xFF];
        Span<ulong> c = stackalloc ulong[4];
        c[0] = ops[r.Byte() % ops.Length] | (r.Bit() ? (ulong)r.Byte() << 32 : Value(ref r) & ~0xFFUL);
        c[1] = r.Bit() ? (ulong)r.Byte() | (ulong)(8192 + r.U16()) << 32 : Value(ref r);
        c[2] = r.Bit() ? (IttBase + (ulong)r.Byte() * 0x100) | 1UL << 63 | (ulong)r.Byte() % 4 : Value(ref r);
        c[3] = Value(ref r);
        ItsQueue(rig, c);
        ItsKick(rig, expectClean: false);
    }

    // ----- corruption (dirty inputs) -----------------------------------------------------------------------------

    /// <summary>A value for a structure word: edges, addresses of the structure/data RAM, random — never one that points
    /// into the sentinel.</summary>
    static ulong Value(ref ChoiceReader r)
    {
        ulong v = (r.Byte() % 8) switch
        {
            0 => r.U64(),
            1 => Ram + ((ulong)r.U32() % RamSize & ~0x3FUL),
            2 => (Data + ((ulong)r.U32() % DataSize & ~0xFFFUL)) | 0x403,
            3 => TablePool + ((ulong)r.U16() << 6) | 3,
            4 => (ulong)r.Byte() % 16,
            5 => 1UL << (r.Byte() % 64),
            6 => ulong.MaxValue - ((ulong)r.Byte() % 4),
            _ => r.U32(),
        };
        var page = v & 0x000F_FFFF_FFFF_0000UL;
        return page >= Sentinel && page < Sentinel + SentinelSize ? v ^ 1UL << 33 : v;
    }

    static ulong Flip(ulong old, ref ChoiceReader r) => (r.Byte() % 3) switch
    {
        0 => old ^ 1UL << (r.Byte() % 64),
        1 => old ^ (ulong)r.Byte() << (r.Byte() % 57),
        _ => Value(ref r),
    };

    static void Corrupt(Rig rig, ulong address, ref ChoiceReader r)
    {
        rig.Bus.ReadU64(address, out var old);
        var v = Flip(old, ref r);
        var page = v & 0x000F_FFFF_FFFF_0000UL;
        if (page >= Sentinel && page < Sentinel + SentinelSize) v ^= 1UL << 33;
        rig.Bus.WriteU64(address, v);
    }

    static void CorruptSmmu(Rig rig, Stream s, ref ChoiceReader r)
    {
        var pool = rig.Tables.BytesInUse == 0 ? 0x1000UL : rig.Tables.BytesInUse;
        var where = (r.Byte() % 6) switch
        {
            0 or 1 => SteAddress(rig, s.Sid) + ((ulong)r.Byte() % 8) * 8,
            2 => CdAddress(s) + ((ulong)r.Byte() % 8) * 8,
            3 => TablePool + ((ulong)r.U32() % pool & ~7UL),
            4 => rig.TwoLevel ? Strtab + ((ulong)r.Byte() % 4) * 8 : Strtab + (ulong)r.U16() % 0x1000 & ~7UL,
            _ => (r.Bit() ? Cmdq : Eventq) + (ulong)r.U16() % 0x800 & ~7UL,
        };
        Corrupt(rig, where, ref r);
        if (r.Bit()) SmmuSubmit(rig, [SmmuV3Encode.CfgiSte(s.Sid), SmmuV3Encode.TlbiNsnhAll(), SmmuV3Encode.Sync()], expectClean: false);
    }

    static void CorruptIts(Rig rig, Stream s, ref ChoiceReader r)
    {
        var where = (r.Byte() % 5) switch
        {
            0 => DeviceTable + s.Sid * 8UL,
            1 => IttBase + s.Sid * 0x100UL + ((ulong)r.Byte() % 32) * 8,
            2 => CollTable + ((ulong)r.Byte() % 4) * 8,
            3 => PropTable + (ulong)r.U16() % 0x1_0000 & ~7UL,
            _ => ItsCmdq + (ulong)r.U16() % ItsCmdqSize & ~7UL,
        };
        Corrupt(rig, where, ref r);
        if (r.Bit())
        {
            Span<ulong> c = stackalloc ulong[4];
            ItsCommand.Invall(c, (ushort)(r.Byte() & 1));
            ItsQueue(rig, c);
            ItsKick(rig, expectClean: false);
        }
    }

    static void PokeRegister(Rig rig, ref ChoiceReader r)
    {
        var its = QemuVirtGicV3.ItsBase.Value;
        switch (r.Byte() % 10)
        {
            case 0: rig.SetReg(SmmuV3Reg.CR0, (uint)(r.Byte() & 0xF)); break;
            case 1: rig.SetReg(SmmuV3Reg.GBPA, SmmuV3Field.GbpaUpdate | (r.Bit() ? SmmuV3Field.GbpaAbort : 0) | 0x1000); break;
            case 2: rig.SetReg(SmmuV3Reg.STRTAB_BASE_CFG, (uint)r.U16() & SmmuV3Field.StrtabCfgMask | (r.Bit() ? 1u << SmmuV3Field.StrtabCfgFmtShift : 0)); break;
            case 3: rig.W64(SmmuBase + SmmuV3Reg.STRTAB_BASE, r.Bit() ? Strtab : Value(ref r)); break;
            case 4: rig.W64(SmmuBase + (r.Bit() ? SmmuV3Reg.CMDQ_BASE : SmmuV3Reg.EVENTQ_BASE), (r.Bit() ? Cmdq : Eventq) | ((ulong)r.Byte() % 24)); break;
            case 5: rig.SetReg(SmmuV3Reg.IRQ_CTRL, (uint)(r.Byte() & 7)); break;
            case 6: rig.W64(SmmuBase + SmmuV3Reg.EVENTQ_IRQ_CFG0, r.Bit() ? QemuVirtGicV3.TranslaterAddress.Value : Value(ref r)); rig.SetReg(SmmuV3Reg.EVENTQ_IRQ_CFG1, r.U32()); break;
            case 7: rig.W32(its + GicV3Its.GITS_CTLR, (uint)(r.Byte() & 1)); break;
            case 8: rig.W64(its + GicV3Its.GITS_BASER + ((ulong)r.Byte() % 2) * 8, r.Bit() ? 1UL << 63 | (r.Bit() ? 1UL << 62 : 0) | DeviceTable | ((ulong)r.Byte() % 4) : Value(ref r)); break;
            default: rig.SetReg(SmmuV3Reg.CR0, SmmuV3Field.Cr0CmdqEn | SmmuV3Field.Cr0EventqEn | SmmuV3Field.Cr0SmmuEn); break;
        }
    }

    // ----- generation --------------------------------------------------------------------------------------------

    public override byte[] Generate(Random rng)
    {
        ArgumentNullException.ThrowIfNull(rng);
        var b = new byte[64 + rng.Next(2000)];
        rng.NextBytes(b);
        b[0] = (byte)(rng.Next(3) == 0 ? 0 : 1); // a third clean (lands-iff-mapped oracles), the rest dirty
        return b;
    }

}
