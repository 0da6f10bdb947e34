using System.Numerics;
using System.Runtime.CompilerServices;
using Doorbell.Gic.Its;
using Doorbell.Memory;

namespace Doorbell.Gic.V3;

// One PE's half of the GIC: its redistributor (GICR frames, LPI pending state) and its CPU interface (ICC_* system
// registers), the pair QEMU keeps in one GICv3CPUState and KVM in one struct vgic_cpu. The redistributor presents its
// PE's highest pending interrupt to the CPU interface and raises the PE's IRQ input; the CPU interface acknowledges
// from it. The redistributors' ILpiTargets (RedistributorTargets) is here too.

/// <summary>
/// One GICv3 redistributor (IHI 0069 §12.10–12.11): the RD_base frame (CTLR, TYPER, WAKER, PROPBASER,
/// PENDBASER, SETLPIR/CLRLPIR, INVLPIR/INVALLR, SYNCR) and the SGI_base frame (SGI/PPI group, enable, pending,
/// active, priority, config).
/// LPIs: configuration comes from the property table in memory (byte INTID−8192: priority[7:2], enable bit 0)
/// and is cached; the cache is refreshed only by an ITS INV/INVALL, INVLPIR/INVALLR, or a first reference
/// (an uncached LPI is read from memory). Pending state is written through to the pending table in memory
/// (bit INTID) and mirrored in a structure ordered by priority: 64 FIFO lists (one per 6-bit LPI priority)
/// plus a bitmask of non-empty lists, so set-pending, acknowledge, clear and a single INV are O(1) and the
/// highest pending LPI is found with one trailing-zero count. Per-LPI state lives in 1024-entry chunks
/// allocated on first touch.
/// Known limits: the pending table is read once, when EnableLPIs goes 0→1 (unless PENDBASER.PTZ); later
/// software writes to the pending table are not observed (as hardware that caches pending state), except that
/// with <see cref="PendingTableAuthoritative"/> (the qtest front end) a bit cleared in RAM clears the LPI; within one
/// priority, LPIs are taken in the order they became pending (IMPDEF); no VLPI frame.
/// </summary>
public sealed class GicV3Redistributor
{
    public const ulong FrameSize = 0x2_0000;
    public const uint SgiFrame = 0x1_0000;
    // RD_base registers, IHI 0069 §12.10
    public const uint GICR_CTLR = 0x0000, GICR_IIDR = 0x0004, GICR_TYPER = 0x0008, GICR_STATUSR = 0x0010,
        GICR_WAKER = 0x0014, GICR_SETLPIR = 0x0040, GICR_CLRLPIR = 0x0048, GICR_PROPBASER = 0x0070,
        GICR_PENDBASER = 0x0078, GICR_INVLPIR = 0x00A0, GICR_INVALLR = 0x00B0, GICR_SYNCR = 0x00C0,
        GICR_PIDR2 = 0xFFE8;
    // SGI_base registers (offsets within the second 64 KiB frame), IHI 0069 §12.11
    public const uint GICR_IGROUPR0 = 0x0080, GICR_ISENABLER0 = 0x0100, GICR_ICENABLER0 = 0x0180,
        GICR_ISPENDR0 = 0x0200, GICR_ICPENDR0 = 0x0280, GICR_ISACTIVER0 = 0x0300, GICR_ICACTIVER0 = 0x0380,
        GICR_IPRIORITYR = 0x0400, GICR_ICFGR0 = 0x0C00, GICR_ICFGR1 = 0x0C04, GICR_IGRPMODR0 = 0x0D00;

    enum Gicr { None, Ctlr, Iidr, Typer, Waker, SetLpi, ClrLpi, PropBase, PendBase, InvLpi, InvAll, Syncr, Pidr2, Group, Enable, Pending, Active, Priority, Config0, Config1 }

    /// <summary>Both frames' registers, declared once (SGI_base ones at +64 KiB): the table drives dispatch, access rules and names.</summary>
    public static readonly RegisterDescriptor[] Registers =
    [
        new(GICR_CTLR, 4, "GICR_CTLR", RegisterAccess.ReadWrite, Id: (int)Gicr.Ctlr),
        new(GICR_IIDR, 4, "GICR_IIDR", RegisterAccess.ReadOnly, Id: (int)Gicr.Iidr),
        new(GICR_TYPER, 8, "GICR_TYPER", RegisterAccess.ReadOnly, Id: (int)Gicr.Typer),
        new(GICR_STATUSR, 4, "GICR_STATUSR", RegisterAccess.RazWi),
        new(GICR_WAKER, 4, "GICR_WAKER", RegisterAccess.ReadWrite, Id: (int)Gicr.Waker),
        new(GICR_SETLPIR, 8, "GICR_SETLPIR", RegisterAccess.WriteOnly, Id: (int)Gicr.SetLpi),
        new(GICR_CLRLPIR, 8, "GICR_CLRLPIR", RegisterAccess.WriteOnly, Id: (int)Gicr.ClrLpi),
        new(GICR_PROPBASER, 8, "GICR_PROPBASER", RegisterAccess.ReadWrite, Id: (int)Gicr.PropBase),
        new(GICR_PENDBASER, 8, "GICR_PENDBASER", RegisterAccess.ReadWrite, Id: (int)Gicr.PendBase),
        new(GICR_INVLPIR, 8, "GICR_INVLPIR", RegisterAccess.WriteOnly, Id: (int)Gicr.InvLpi),
        new(GICR_INVALLR, 8, "GICR_INVALLR", RegisterAccess.WriteOnly, Id: (int)Gicr.InvAll),
        new(GICR_SYNCR, 4, "GICR_SYNCR", RegisterAccess.ReadOnly, Id: (int)Gicr.Syncr),
        new(GICR_PIDR2, 4, "GICR_PIDR2", RegisterAccess.ReadOnly, Id: (int)Gicr.Pidr2),
        new(SgiFrame + GICR_IGROUPR0, 4, "GICR_IGROUPR0", RegisterAccess.ReadWrite, Id: (int)Gicr.Group),
        new(SgiFrame + GICR_ISENABLER0, 4, "GICR_ISENABLER0", RegisterAccess.WriteOneToSet, Id: (int)Gicr.Enable),
        new(SgiFrame + GICR_ICENABLER0, 4, "GICR_ICENABLER0", RegisterAccess.WriteOneToClear, Id: (int)Gicr.Enable),
        new(SgiFrame + GICR_ISPENDR0, 4, "GICR_ISPENDR0", RegisterAccess.WriteOneToSet, Id: (int)Gicr.Pending),
        new(SgiFrame + GICR_ICPENDR0, 4, "GICR_ICPENDR0", RegisterAccess.WriteOneToClear, Id: (int)Gicr.Pending),
        new(SgiFrame + GICR_ISACTIVER0, 4, "GICR_ISACTIVER0", RegisterAccess.WriteOneToSet, Id: (int)Gicr.Active),
        new(SgiFrame + GICR_ICACTIVER0, 4, "GICR_ICACTIVER0", RegisterAccess.WriteOneToClear, Id: (int)Gicr.Active),
        new(SgiFrame + GICR_IPRIORITYR, 4, "GICR_IPRIORITYR", RegisterAccess.ReadWrite, 8, (int)Gicr.Priority, MinSize: 1, ByteWrites: true),
        new(SgiFrame + GICR_ICFGR0, 4, "GICR_ICFGR0", RegisterAccess.ReadOnly, Id: (int)Gicr.Config0),
        new(SgiFrame + GICR_ICFGR1, 4, "GICR_ICFGR1", RegisterAccess.ReadWrite, Id: (int)Gicr.Config1),
        new(SgiFrame + GICR_IGRPMODR0, 4, "GICR_IGRPMODR0", RegisterAccess.RazWi),
    ];
    /// <summary>The table compiled for dispatch (one index byte per word of the 128 KiB frame pair).</summary>
    public static readonly RegisterBlock Block = new("gicr", Registers, FrameSize, "IHI 0069 §12.10-12.11 (read-only register)", pairedWords: true);

    const int ChunkShift = 10, ChunkSize = 1 << ChunkShift;
    const byte FlagPending = 1;
    const int Parked = 64; // list of pending LPIs whose cached config says disabled
    const int None = -1;

    struct LpiSlot
    {
        public int Gen;     // == _gen when Config is a valid cached copy
        public int Next, Prev;
        public byte Config;
        public byte Flags;
        public sbyte List;  // list the LPI is linked in (0..63 priority, 64 parked), -1 none
    }

    readonly GicV3 _gic;
    readonly Trace _trace;
    readonly IMemoryView _memory;
    readonly IrqBank _ppi = new(32);
    bool _enableLpis;
    bool _sleep = true;
    ulong _propbaser, _pendbaser;
    ulong _propBase, _pendBase;
    int _lpiLimit; // INTIDs below this are valid LPIs on this redistributor
    int _gen = 1;
    bool _propInRam, _pendInRam;
    /// <summary>The pending table's RAM pages (a table of at most 2 MiB found to be RAM), filled on first use; an empty array marks a page the memory view cannot give.</summary>
    byte[]?[]? _pendPages;
    const int MaxCachedPendingBytes = 2 << 20;
    readonly bool _writeThrough;
    LpiSlot[]?[] _chunks = [];
    readonly int[] _head = new int[65], _tail = new int[65];
    ulong _listMask; // bit p: list p (priority p << 2) is non-empty

    internal GicV3Redistributor(GicV3 gic, int cpu)
    {
        _gic = gic;
        _trace = gic.Trace;
        _memory = gic.Bus;
        _writeThrough = gic.Options.PendingTableWriteThrough;
        Cpu = cpu;
        for (var i = 0; i < 16; i++) _ppi.WriteConfig(0, 0xAAAA_AAAA, 0); // SGIs are edge-triggered
        _ppi.WriteConfig(16, 0, 16);
        _ppi.Raised = RaiseCpu;
        Array.Fill(_head, None); Array.Fill(_tail, None);
    }

    public int Cpu { get; }

    /// <summary>Pushes a possible new interrupt to this redistributor's PE.</summary>
    GicV3CpuInterface? _cpuInterface;
    void RaiseCpu() => (_cpuInterface ??= _gic.CpuInterfaces[Cpu]).Target?.Raise();
    internal IrqBank Private => _ppi;
    public bool LpisEnabled => _enableLpis;
    public bool Awake => !_sleep;
    /// <summary>LPIs dropped because LPIs were disabled or the INTID was outside the property table.</summary>
    public long DroppedLpis { get; private set; }
    /// <summary>Count of LPI configuration reads from the property table (cache fills).</summary>
    public long PropertyReads { get; private set; }
    public ulong PendingTableBase => _pendBase;
    public ulong PropertyTableBase => _propBase;

    // --- LPI machinery ----------------------------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    ref LpiSlot Slot(int index)
    {
        var chunk = _chunks[index >> ChunkShift] ??= NewChunk();
        return ref chunk[index & (ChunkSize - 1)];
    }

    static LpiSlot[] NewChunk()
    {
        var c = new LpiSlot[ChunkSize];
        for (var i = 0; i < c.Length; i++) c[i].List = -1;
        return c;
    }

    bool ValidLpi(uint intid) => _enableLpis && intid >= GicV3.FirstLpi && intid < (uint)_lpiLimit;

    void EnsureConfig(ref LpiSlot s, int index)
    {
        if (s.Gen == _gen) return;
        ulong cfg;
        if (_propInRam)
        {
            var a = _propBase + (ulong)index;
            _memory.ReadU64(a & ~7UL, out cfg); // aligned word in a RAM table: never crosses a page
            cfg >>= (int)((a & 7) * 8);
        }
        else _gic.Bus.Read(new PhysAddr(_propBase + (ulong)index), 1, out cfg, BusAttributes.Cpu);
        s.Config = (byte)cfg;
        s.Gen = _gen;
        PropertyReads++;
    }

    void Link(int index, ref LpiSlot s)
    {
        var list = (s.Config & 1) != 0 ? s.Config >> 2 : Parked;
        s.List = (sbyte)list;
        s.Next = None;
        s.Prev = _tail[list];
        if (_tail[list] == None) _head[list] = index; else Slot(_tail[list]).Next = index;
        _tail[list] = index;
        if (list != Parked) _listMask |= 1UL << list;
    }

    void Unlink(int index, ref LpiSlot s)
    {
        int list = s.List;
        if (list < 0) return;
        if (s.Prev == None) _head[list] = s.Next; else Slot(s.Prev).Next = s.Next;
        if (s.Next == None) _tail[list] = s.Prev; else Slot(s.Next).Prev = s.Prev;
        if (_head[list] == None && list != Parked) _listMask &= ~(1UL << list);
        s.List = -1;
    }

    void WritePendingBit(uint intid, bool set)
    {
        if (!_writeThrough) return;
        if (_pendInRam)
        {
            // Fast path: the whole pending table is RAM (checked when LPIs were enabled); an aligned 64-bit
            // read-modify-write never crosses a page.
            var mask = 1UL << (int)(intid & 63);
            // The table base is 64 KiB aligned (GICR_PENDBASER[51:16]), so page k of the table holds INTIDs k·2^15 ….
            if (_pendPages is { } pages && (intid >> 15) < (uint)pages.Length
                && (pages[intid >> 15] ?? PendingPage((int)(intid >> 15))) is { Length: > 0 } page)
            {
                ref var word = ref Unsafe.As<byte, ulong>(ref page[(int)((intid >> 3) & 0xFF8)]);
                word = set ? word | mask : word & ~mask;
                return;
            }
            _memory.UpdateU64(_pendBase + (intid >> 6) * 8, set ? 0 : mask, set ? mask : 0);
            return;
        }
        var a = new PhysAddr(_pendBase + intid / 8);
        var bit = 1UL << (int)(intid & 7);
        _gic.Bus.Read(a, 1, out var b, BusAttributes.Cpu);
        _gic.Bus.Write(a, 1, set ? b | bit : b & ~bit, BusAttributes.Cpu);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    byte[] PendingPage(int k) =>
        _pendPages![k] = _memory.TryGetRamPage(_pendBase + (ulong)k * 4096, out var page) && page is not null ? page : [];

    /// <summary>
    /// QEMU's choice, used by the qtest front end (docs/deviations.md): the pending table in RAM is authoritative
    /// for clearing. Set-pending is written through as always; a bit software cleared in RAM makes the LPI not
    /// pending (seen when the LPI is next set, tested or is the highest pending one). Off: pending state is
    /// cached as hardware may (IHI 0069 §5.1.2: changing the table while EnableLPIs = 1 is UNPREDICTABLE).
    /// </summary>
    public bool PendingTableAuthoritative { get; set; }

    bool PendingBitInRam(uint intid)
    {
        if (_pendInRam)
        {
            _memory.ReadU64(_pendBase + (intid >> 6) * 8, out var word);
            return ((word >> (int)(intid & 63)) & 1) != 0;
        }
        _gic.Bus.Read(new PhysAddr(_pendBase + intid / 8), 1, out var b, BusAttributes.Cpu);
        return ((b >> (int)(intid & 7)) & 1) != 0;
    }

    /// <summary>With <see cref="PendingTableAuthoritative"/>: true when a cached-pending LPI was cleared in RAM (and drops it).</summary>
    bool ClearedInRam(uint intid, int index, ref LpiSlot s)
    {
        if (!PendingTableAuthoritative || PendingBitInRam(intid)) return false;
        s.Flags &= unchecked((byte)~FlagPending);
        Unlink(index, ref s);
        return true;
    }

    /// <summary>Makes LPI <paramref name="intid"/> pending here (ITS translation, INT, SETLPIR). False when dropped.</summary>
    public bool SetLpiPending(uint intid)
    {
        if (!ValidLpi(intid)) { DroppedLpis++; return false; }
        var index = (int)intid - GicV3.FirstLpi;
        ref var s = ref Slot(index);
        if ((s.Flags & FlagPending) != 0 && !ClearedInRam(intid, index, ref s)) return true;
        s.Flags |= FlagPending;
        if (_trace.IsOn(TraceCategory.Gicr)) TracePending(intid);
        WritePendingBit(intid, true);
        EnsureConfig(ref s, index);
        Link(index, ref s);
        RaiseCpu();
        return true;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    void TracePending(uint intid) => _trace.Emit(TraceCategory.Gicr, TraceSources.Gicr(Cpu), $"LPI {intid} pending");

    /// <summary>Clears LPI pending state (CLEAR, DISCARD, CLRLPIR, acknowledge). True when it was pending.</summary>
    public bool ClearLpiPending(uint intid)
    {
        if (!ValidLpi(intid)) return false;
        var index = (int)intid - GicV3.FirstLpi;
        var chunk = _chunks[index >> ChunkShift];
        if (chunk is null) return false;
        ref var s = ref chunk[index & (ChunkSize - 1)];
        if ((s.Flags & FlagPending) == 0) return false;
        s.Flags &= unchecked((byte)~FlagPending);
        Unlink(index, ref s);
        WritePendingBit(intid, false);
        return true;
    }

    public bool IsLpiPending(uint intid)
    {
        if (!ValidLpi(intid)) return false;
        var index = (int)intid - GicV3.FirstLpi;
        var chunk = _chunks[index >> ChunkShift];
        if (chunk is null) return false;
        ref var s = ref chunk[index & (ChunkSize - 1)];
        return (s.Flags & FlagPending) != 0 && !ClearedInRam(intid, index, ref s);
    }

    /// <summary>Re-reads one LPI's configuration from the property table (INV, INVLPIR). O(1).</summary>
    public void InvalidateLpi(uint intid)
    {
        if (!ValidLpi(intid)) return;
        var index = (int)intid - GicV3.FirstLpi;
        var chunk = _chunks[index >> ChunkShift];
        if (chunk is null) return; // nothing cached
        ref var s = ref chunk[index & (ChunkSize - 1)];
        s.Gen = 0;
        if ((s.Flags & FlagPending) == 0) return;
        Unlink(index, ref s);
        EnsureConfig(ref s, index);
        Link(index, ref s);
        RaiseCpu();
    }

    readonly List<int> _relink = [];

    /// <summary>Drops every cached LPI configuration (INVALL, INVALLR): O(1) plus O(pending LPIs) to re-sort them.</summary>
    public void InvalidateAllLpis()
    {
        if (!_enableLpis) return; // nothing cached
        _gen++;
        if (_gen == int.MaxValue) _gen = 1;
        _relink.Clear();
        for (var l = 0; l <= Parked; l++)
            for (var i = _head[l]; i != None && _relink.Count <= _lpiLimit; i = Slot(i).Next)
                _relink.Add(i);
        foreach (var i in _relink)
        {
            ref var s = ref Slot(i);
            Unlink(i, ref s);
            EnsureConfig(ref s, i);
            Link(i, ref s);
        }
        if (_relink.Count > 0) RaiseCpu();
    }

    /// <summary>Moves every pending LPI of this redistributor to <paramref name="target"/> (MOVALL).</summary>
    internal void MoveAllPendingTo(GicV3Redistributor target)
    {
        if (target == this || !_enableLpis) return;
        _relink.Clear();
        for (var l = 0; l <= Parked; l++)
            for (var i = _head[l]; i != None && _relink.Count <= _lpiLimit; i = Slot(i).Next)
                _relink.Add(i);
        foreach (var i in _relink.ToArray())
        {
            var intid = (uint)(i + GicV3.FirstLpi);
            ClearLpiPending(intid);
            target.SetLpiPending(intid);
        }
    }

    /// <summary>
    /// Writes this redistributor's LPI pending state into its pending table (one bit per INTID, bytes of LPIs never
    /// referenced left as they are): what a vGIC does on a save request (KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES) since it
    /// does not write through. Returns the bus status of the first failing write, or Ok.
    /// </summary>
    public BusStatus SavePendingTable()
    {
        if (!_enableLpis) return BusStatus.Ok;
        Span<byte> bytes = stackalloc byte[ChunkSize / 8];
        for (var c = 0; c < _chunks.Length; c++)
        {
            var chunk = _chunks[c];
            if (chunk is null) continue;
            bytes.Clear();
            for (var i = 0; i < chunk.Length; i++)
                if ((chunk[i].Flags & FlagPending) != 0) bytes[i >> 3] |= (byte)(1 << (i & 7));
            var firstIntid = (ulong)(c * ChunkSize + GicV3.FirstLpi); // a multiple of 8: whole bytes
            var n = (int)Math.Min((ulong)bytes.Length, ((ulong)_lpiLimit - firstIntid) / 8);
            var s = _gic.Bus.Write(_pendBase + firstIntid / 8, bytes[..n], BusAttributes.Cpu);
            if (s != BusStatus.Ok) return s;
        }
        return BusStatus.Ok;
    }

    /// <summary>Highest-priority pending enabled LPI: (INTID, priority) or INTID -1. O(1).</summary>
    internal (int Intid, int Priority) HighestLpi()
    {
        while (_listMask != 0)
        {
            var p = BitOperations.TrailingZeroCount(_listMask);
            var head = _head[p];
            if (PendingTableAuthoritative && ClearedInRam((uint)(head + GicV3.FirstLpi), head, ref Slot(head))) continue;
            return (head + GicV3.FirstLpi, p << 2);
        }
        return (-1, 256);
    }

    // EnableLPIs 1 -> 0 (IHI 0069 §12.11.2: IMPLEMENTATION DEFINED whether it can be cleared; Doorbell allows it).
    // Every cached LPI and every list that threads through the cache goes with it, so nothing can index freed slots.
    void DisableLpis()
    {
        _enableLpis = false;
        _chunks = [];
        Array.Fill(_head, None); Array.Fill(_tail, None);
        _listMask = 0;
        _lpiLimit = 0;
        _pendPages = null;
        _gen++;
    }

    void EnableLpis()
    {
        var idBits = Math.Min((int)(_propbaser & 0x1F) + 1, _gic.Options.IdBits);
        if (idBits < 14)
        {
            // PROPBASER.IDbits below 13 means no LPIs (IHI 0069 §12.11.28); LPIs stay unusable.
            _gic.Strict.Report("gicr", "IHI 0069 §12.11.28 GICR_PROPBASER.IDbits", $"EnableLPIs with IDbits {idBits} < 14: no LPIs");
            _lpiLimit = 0;
        }
        else _lpiLimit = 1 << idBits;
        _propBase = _propbaser & 0x000F_FFFF_FFFF_F000UL;
        _pendBase = _pendbaser & 0x000F_FFFF_FFFF_0000UL;
        var count = Math.Max(0, _lpiLimit - GicV3.FirstLpi);
        _propInRam = count > 0 && _gic.Bus.IsRam(_propBase, (ulong)count);
        _pendInRam = count > 0 && _gic.Bus.IsRam(_pendBase, (ulong)_lpiLimit / 8);
        _pendPages = _pendInRam && _lpiLimit / 8 <= MaxCachedPendingBytes ? new byte[]?[(_lpiLimit / 8 + 4095) / 4096] : null;
        _chunks = new LpiSlot[]?[(count + ChunkSize - 1) >> ChunkShift];
        Array.Fill(_head, None); Array.Fill(_tail, None); _listMask = 0;
        _gen++;
        _enableLpis = true;
        if ((_pendbaser & (1UL << 62)) != 0 || count == 0) return; // PTZ: the table is known to be zero
        // Load pending state from the table (bounded: at most 2^24 bits).
        Span<byte> buf = stackalloc byte[512];
        for (var intid = GicV3.FirstLpi; intid < _lpiLimit; intid += buf.Length * 8)
        {
            var n = Math.Min(buf.Length, (_lpiLimit - intid) / 8);
            if (_gic.Bus.Read(_pendBase + (ulong)intid / 8, buf[..n], BusAttributes.Cpu) != BusStatus.Ok) break;
            for (var k = 0; k < n; k++)
            {
                if (buf[k] == 0) continue;
                for (var b = 0; b < 8; b++)
                    if ((buf[k] >> b & 1) != 0)
                    {
                        var index = intid + k * 8 + b - GicV3.FirstLpi;
                        ref var s = ref Slot(index);
                        s.Flags |= FlagPending;
                        EnsureConfig(ref s, index);
                        Link(index, ref s);
                    }
            }
        }
    }

    // --- MMIO ---------------------------------------------------------------------------------------------------

    internal ulong Read(ulong off, int size) => RegisterDispatch<RegisterFile>.Read(new RegisterFile(this), off, size);

    ulong Typer()
    {
        // PLPIS 0, DirectLPI 3, Last 4, Processor_Number[23:8], Affinity_Value[63:32] (IHI 0069 §12.11.39)
        var last = Cpu == _gic.Options.CpuCount - 1 ? 1UL << 4 : 0;
        return 1UL | (1UL << 3) | last | ((ulong)Cpu << 8) | (GicV3.AffinityOf(Cpu) << 32);
    }

    internal void Write(ulong off, int size, ulong value) => RegisterDispatch<RegisterFile>.Write(new RegisterFile(this), off, size, value, BusAttributes.Cpu, _gic.Strict);

    // Out of line: the register write path keeps no trace- or report-message locals.
    [MethodImpl(MethodImplOptions.NoInlining)]
    void WriteCtlr(ulong value)
    {
        var want = (value & 1) != 0;
        if (want && !_enableLpis) EnableLpis();
        else if (!want && _enableLpis) DisableLpis();
        _trace.Emit(TraceCategory.Gicr, TraceSources.Gicr(Cpu), $"EnableLPIs={(want ? 1 : 0)}");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    void ReportBaseWhileEnabled(RegisterRef r) =>
        _gic.Strict.Report("gicr", "IHI 0069 §12.11.28/29 (write with EnableLPIs = 1)", $"cpu{Cpu} {Block.NameOf(r)} written while LPIs are enabled: ignored");

    /// <summary>RD_base and SGI_base as a register file: whole registers by id.</summary>
    readonly struct RegisterFile(GicV3Redistributor rd) : IRegisterFile
    {
        public static RegisterBlock Block => GicV3Redistributor.Block;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public ulong Read(RegisterRef r, in BusAttributes attributes) => (Gicr)r.Id switch
        {
            Gicr.Ctlr => rd._enableLpis ? 1UL : 0,
            Gicr.Iidr => 0x0100_143B,
            Gicr.Typer => rd.Typer(),
            Gicr.Waker => rd._sleep ? 6UL : 0, // ProcessorSleep 1, ChildrenAsleep 2
            Gicr.PropBase => rd._propbaser,
            Gicr.PendBase => rd._pendbaser,
            Gicr.Syncr => 0, // never busy: every operation completes synchronously
            Gicr.Pidr2 => 0x3B, // ArchRev 3
            Gicr.Group => rd._ppi.ReadBits(IrqBank.BitField.Group, 0),
            Gicr.Enable => rd._ppi.ReadBits(IrqBank.BitField.Enable, 0),
            Gicr.Pending => rd._ppi.ReadBits(IrqBank.BitField.Pending, 0),
            Gicr.Active => rd._ppi.ReadBits(IrqBank.BitField.Active, 0),
            Gicr.Priority => rd._ppi.ReadPriorities((int)r.Index * 4, 4),
            Gicr.Config0 => rd._ppi.ReadConfig(0),
            Gicr.Config1 => rd._ppi.ReadConfig(16),
            _ => 0,
        };

        public void Write(RegisterRef r, ulong value, in BusAttributes attributes)
        {
            switch ((Gicr)r.Id)
            {
                case Gicr.Ctlr: rd.WriteCtlr(value); return;
                case Gicr.Waker:
                    rd._sleep = (value & 2) != 0;
                    rd._ppi.NoteRoutingChange(); // the PE's candidates and 1-of-N SPI routing read Awake
                    rd._gic.Spis.NoteRoutingChange();
                    return;
                case Gicr.PropBase or Gicr.PendBase when rd._enableLpis:
                    // Writing either register while EnableLPIs = 1 is UNPREDICTABLE; Doorbell ignores it.
                    rd.ReportBaseWhileEnabled(r);
                    return;
                case Gicr.PropBase: rd._propbaser = value & 0x0FFF_FFFF_FFFF_FFFFUL; return;
                case Gicr.PendBase: rd._pendbaser = value; return;
                case Gicr.SetLpi: rd.SetLpiPending((uint)value); return;
                case Gicr.ClrLpi: rd.ClearLpiPending((uint)value); return;
                case Gicr.InvLpi: rd.InvalidateLpi((uint)value); return;
                case Gicr.InvAll: rd.InvalidateAllLpis(); return;
                case Gicr.Group: rd._ppi.WriteBits(IrqBank.BitField.Group, 0, (uint)value, r.Access); return;
                case Gicr.Enable: rd._ppi.WriteBits(IrqBank.BitField.Enable, 0, (uint)value, r.Access); return;
                case Gicr.Pending: rd._ppi.WriteBits(IrqBank.BitField.Pending, 0, (uint)value, r.Access); return;
                case Gicr.Active: rd._ppi.WriteBits(IrqBank.BitField.Active, 0, (uint)value, r.Access); return;
                case Gicr.Priority: rd._ppi.WritePriorities((int)r.Index * 4 + r.PartOffset, r.PartSize == 0 ? 4 : r.PartSize, value); return;
                case Gicr.Config1: rd._ppi.WriteConfig(16, (uint)value, 16); return; // ICFGR0 (SGIs) is read-only: always edge
            }
        }
    }

    /// <summary>A wired input for PPI <paramref name="intid"/> (16..31) of this PE.</summary>
    public IInterruptLine PpiLine(int intid)
    {
        if (intid is < 16 or > 31) throw new ArgumentOutOfRangeException(nameof(intid));
        return new PpiInput(_ppi, intid);
    }

    sealed class PpiInput(IrqBank bank, int i) : IInterruptLine
    {
        public void SetLevel(bool asserted) => bank.SetLevel(i, asserted);
    }
}

/// <summary>The MMIO region of all redistributors: frame n (128 KiB) belongs to PE n.</summary>
public sealed class GicV3RedistributorRegion : IMmioHandler
{
    readonly GicV3 _gic;
    internal GicV3RedistributorRegion(GicV3 gic) => _gic = gic;

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        var rd = (int)(offset / GicV3Redistributor.FrameSize);
        value = rd < _gic.Redistributors.Length ? _gic.Redistributors[rd].Read(offset % GicV3Redistributor.FrameSize, size) : 0;
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        var rd = (int)(offset / GicV3Redistributor.FrameSize);
        if (rd < _gic.Redistributors.Length) _gic.Redistributors[rd].Write(offset % GicV3Redistributor.FrameSize, size, value);
        return BusStatus.Ok;
    }
}

/// <summary>
/// The redistributors of a <see cref="GicV3"/> as an ITS engine's LPI targets (<see cref="ILpiTargets"/>): the GIC provides the
/// seam the ITS declares, so the ITS folder knows no GICv3 class and a vGIC provides the same for a vITS.
/// </summary>
public sealed class RedistributorTargets(GicV3 gic) : ILpiTargets
{
    readonly GicV3Redistributor[] _rds = gic.Redistributors;

    public int Count => _rds.Length;
    public int IntidBits => gic.Options.IdBits;
    public bool SetPending(int target, uint intid) => _rds[target].SetLpiPending(intid);
    public bool ClearPending(int target, uint intid) => _rds[target].ClearLpiPending(intid);
    public void Invalidate(int target, uint intid) => _rds[target].InvalidateLpi(intid);
    public void InvalidateAll(int target) => _rds[target].InvalidateAllLpis();
    public void MoveAll(int from, int to) => _rds[from].MoveAllPendingTo(_rds[to]);

    public int TargetAt(ulong address)
    {
        var b = gic.RedistributorBase;
        if (b == ulong.MaxValue || address < b || (address - b) % GicV3Redistributor.FrameSize != 0) return -1;
        var k = (address - b) / GicV3Redistributor.FrameSize;
        return k < (ulong)_rds.Length ? (int)k : -1;
    }

    public ulong AddressOf(int target) =>
        gic.RedistributorBase == ulong.MaxValue ? ulong.MaxValue : gic.RedistributorBase + (ulong)target * GicV3Redistributor.FrameSize;
}

/// <summary>
/// The GICv3 CPU interface of one PE, as its Group 1 system registers (IHI 0069 §12.2): ICC_IAR1_EL1,
/// ICC_EOIR1_EL1, ICC_DIR_EL1, ICC_PMR_EL1, ICC_BPR1_EL1, ICC_IGRPEN1_EL1, ICC_SGI1R_EL1, ICC_HPPIR1_EL1,
/// ICC_RPR_EL1, ICC_CTLR_EL1 (EOImode). Software running "on" the PE calls these methods the way an MRS/MSR
/// would execute.
/// Priority: 8 bits implemented (ICC_CTLR_EL1.PRIbits = 7). An interrupt is signalled when it is the highest
/// priority pending Group 1 interrupt for this PE, its priority is below (numerically less than) PMR, and its
/// group priority (priority masked by BPR1) is below the running priority. Acknowledging pushes its priority
/// on the active-priority stack; EOIR1 drops the top entry (priority drop) and, with EOImode = 0, deactivates.
/// Known limits: no Group 0 registers (IAR0/EOIR0/BPR0/IGRPEN0); no virtual interface (ICH_*/ICV_*);
/// ICC_SGI1R_EL1 range selector RS must be 0 (Aff0 &lt; 16 per cluster here).
/// </summary>
public sealed class GicV3CpuInterface : IIccSystemRegisters
{
    readonly GicV3 _gic;
    readonly GicV3Redistributor _rd;
    readonly IrqBank _ppi, _spis;
    readonly Trace _trace;
    // The best wired (SGI, PPI, SPI) candidate, kept until either bank's change stamp moves: an LPI's acknowledge, and the
    // IAR read that finds nothing after it, read the redistributor's LPI lists only.
    int _ppiSeen = -1, _spiSeen = -1;
    /// <summary>How many times the wired candidates were looked for again (diagnostics: an LPI's acknowledge makes none).</summary>
    internal long WiredRescans { get; private set; }
    int _wiredIntid = -1, _wiredPrio = 256;
    bool _on;
    readonly int[] _activeIntid = new int[257];
    readonly int[] _activePrio = new int[257];
    int _depth;
    byte _pmr;
    int _bpr1 = 1;
    bool _igrpen1, _eoiMode;

    internal GicV3CpuInterface(GicV3 gic, GicV3Redistributor rd, int cpu)
    {
        _gic = gic; _rd = rd; Cpu = cpu;
        _ppi = rd.Private; _spis = gic.Spis; _trace = gic.Trace;
    }

    public int Cpu { get; }
    /// <summary>The PE's IRQ input: raised when an interrupt may have become pending for this PE.</summary>
    public Doorbell.Memory.IInterruptTarget? Target { get; set; }
    internal bool Group1Enabled => _igrpen1;

    /// <summary>ICC_PMR_EL1: priority mask; only interrupts with priority strictly lower than PMR are signalled. Reset 0 (all masked).</summary>
    public ulong Pmr { get => _pmr; set { _pmr = (byte)value; Target?.Raise(); } }

    /// <summary>ICC_BPR1_EL1 (minimum 1 with 8 priority bits: a write below the minimum reads back as the minimum).</summary>
    public ulong Bpr1 { get => (ulong)_bpr1; set => _bpr1 = Math.Clamp((int)(value & 7), 1, 7); }

    /// <summary>ICC_IGRPEN1_EL1.Enable.</summary>
    public ulong IgrpEn1
    {
        get => _igrpen1 ? 1UL : 0;
        set
        {
            _igrpen1 = (value & 1) != 0;
            _spis.NoteRoutingChange(); // 1-of-N SPI routing reads every PE's group enable
            Target?.Raise();
        }
    }

    /// <summary>ICC_CTLR_EL1: CBPR 0 (RAZ/WI), EOImode 1, PRIbits[10:8] = 7, IDbits[13:11] (0: 16 bits, 1: 24 bits).</summary>
    public ulong Ctlr
    {
        get => (_eoiMode ? 2UL : 0) | (7UL << 8) | ((_gic.Options.IdBits > 16 ? 1UL : 0) << 11);
        set => _eoiMode = (value & 2) != 0;
    }

    /// <summary>ICC_RPR_EL1: the running (group) priority, 0xFF when idle.</summary>
    public ulong Rpr => _depth == 0 ? 0xFFUL : (ulong)_activePrio[_depth - 1];

    int GroupPriority(int priority) => priority & (0xFF << _bpr1) & 0xFF;
    int RunningPriority => _depth == 0 ? 0x100 : _activePrio[_depth - 1];

    /// <summary>Highest-priority pending Group 1 interrupt for this PE, ignoring PMR and running priority.</summary>
    internal (int Intid, int Priority) Highest()
    {
        if (_ppi.Changes != _ppiSeen || _spis.Changes != _spiSeen) RescanWired();
        if (!_on) return (-1, 256);
        int best = _wiredIntid, bestPrio = _wiredPrio;
        var (lpi, lpiPrio) = _rd.HighestLpi();
        if (lpi >= 0 && lpiPrio < bestPrio) { best = lpi; bestPrio = lpiPrio; }
        return (best, bestPrio);
    }

    // The wired candidates changed: visit only pending SGIs/PPIs and SPIs (ascending, so ties go to the lowest INTID).
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    void RescanWired()
    {
        WiredRescans++;
        _ppiSeen = _ppi.Changes;
        _spiSeen = _spis.Changes;
        _on = _gic.Group1Enabled && _rd.Awake;
        int best = -1, bestPrio = 256;
        var ppi = _ppi;
        for (var i = ppi.NextPending(0); i >= 0; i = ppi.NextPending(i + 1))
            if (ppi.Priority(i) < bestPrio && ppi.Candidate(i)) { best = i; bestPrio = ppi.Priority(i); }
        var spis = _spis;
        for (var i = spis.NextPending(0); i >= 0; i = spis.NextPending(i + 1))
            if (spis.Priority(i) < bestPrio && spis.Candidate(i) && _gic.SpiTarget(i) == Cpu) { best = i + GicV3.FirstSpi; bestPrio = spis.Priority(i); }
        _wiredIntid = best;
        _wiredPrio = bestPrio;
    }

    /// <summary>True when the PE's IRQ input is asserted: an interrupt would be acknowledged by IAR1 now.</summary>
    public bool IrqPending
    {
        get
        {
            if (!_igrpen1) return false;
            var (intid, prio) = Highest();
            return intid >= 0 && prio < _pmr && GroupPriority(prio) < RunningPriority;
        }
    }

    /// <summary>ICC_HPPIR1_EL1: INTID of the highest-priority pending Group 1 interrupt, or 1023.</summary>
    public ulong Hppir1
    {
        get
        {
            var (intid, _) = Highest();
            return intid < 0 ? GicV3.SpuriousIntid : (ulong)intid;
        }
    }

    /// <summary>ICC_IAR1_EL1: acknowledges the signalled interrupt and returns its INTID, or 1023 (spurious).</summary>
    public ulong Iar1()
    {
        if (!_igrpen1) return GicV3.SpuriousIntid;
        var (intid, prio) = Highest();
        if (intid < 0 || prio >= _pmr || GroupPriority(prio) >= RunningPriority) return GicV3.SpuriousIntid;
        if (intid < GicV3.FirstSpi) _ppi.Acknowledge(intid);
        else if (intid < GicV3.FirstLpi) _spis.Acknowledge(intid - GicV3.FirstSpi);
        else _rd.ClearLpiPending((uint)intid); // LPIs have no active state
        _activeIntid[_depth] = intid;
        _activePrio[_depth] = GroupPriority(prio);
        _depth++;
        if (_trace.IsOn(TraceCategory.Icc)) TraceAcknowledge(intid, prio);
        return (ulong)intid;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    void TraceAcknowledge(int intid, int prio) => _trace.Emit(TraceCategory.Icc, TraceSources.Cpu(Cpu), $"IAR1 -> {intid} (priority 0x{prio:x2})");

    /// <summary>ICC_EOIR1_EL1: priority drop of the most recent active interrupt, and deactivation when EOImode = 0.</summary>
    public void Eoir1(ulong value)
    {
        var intid = (int)(value & 0xFF_FFFF);
        if (intid is >= 1020 and <= 1023) return; // special INTIDs: no effect
        if (_depth == 0)
        {
            _gic.Strict.Report("icc", "IHI 0069 §12.2.9 ICC_EOIR1_EL1", $"cpu{Cpu} EOI of {intid} with no active priority: ignored");
            return;
        }
        if (_activeIntid[_depth - 1] != intid)
            _gic.Strict.Report("icc", "IHI 0069 §4.1.1 (EOI not of the most recently acknowledged interrupt)", $"cpu{Cpu} EOI {intid}, expected {_activeIntid[_depth - 1]}");
        _depth--;
        if (!_eoiMode) Deactivate(intid);
    }

    /// <summary>ICC_DIR_EL1: deactivates an interrupt (meaningful with EOImode = 1).</summary>
    public void Dir(ulong value)
    {
        var intid = (int)(value & 0xFF_FFFF);
        if (!_eoiMode)
            _gic.Strict.Report("icc", "IHI 0069 §12.2.6 ICC_DIR_EL1 (write with EOImode = 0 is UNPREDICTABLE)", $"cpu{Cpu} DIR {intid} with EOImode 0");
        Deactivate(intid);
    }

    void Deactivate(int intid)
    {
        if (intid >= GicV3.FirstLpi) return; // LPIs have no active state (IHI 0069 §4.1): nothing to deactivate
        if (intid < GicV3.FirstSpi) _ppi.SetActive(intid, false);
        else if (intid < GicV3.FirstSpi + _spis.Count)
        {
            _spis.SetActive(intid - GicV3.FirstSpi, false);
            _gic.SpiDeactivated?.Invoke(intid);
        }
    }

    /// <summary>ICC_SGI1R_EL1: TargetList[15:0], Aff1[23:16], INTID[27:24], Aff2[39:32], IRM 40, RS[47:44], Aff3[55:48].</summary>
    public void Sgi1r(ulong value)
    {
        var sgi = (int)(value >> 24 & 0xF);
        if ((value & (1UL << 40)) != 0)
        {
            for (var c = 0; c < _gic.Redistributors.Length; c++)
                if (c != Cpu) _gic.Redistributors[c].Private.SetPending(sgi);
            return;
        }
        if ((value >> 44 & 0xF) != 0) return; // RS > 0: no PE has Aff0 ≥ 16 here
        var upper = ((value >> 16) & 0xFFUL) << 8 | ((value >> 32) & 0xFFUL) << 16 | ((value >> 48) & 0xFFUL) << 32;
        for (var t = 0; t < 16; t++)
        {
            if ((value >> t & 1) == 0) continue;
            var cpu = _gic.CpuOfAffinity(upper | (uint)t);
            if (cpu >= 0) _gic.Redistributors[cpu].Private.SetPending(sgi);
        }
    }
}
