using System.Runtime.CompilerServices;
using Doorbell.Gic.V3;
using Doorbell.Memory;
using Doorbell.Tracing;

namespace Doorbell.Gic.Its;

/// <summary>
/// The ITS command engine (Arm IHI 0069 chapter 6): the programming-model state behind the registers (CTLR.Enabled,
/// CBASER, CWRITER, CREADR, BASER0 = device table, BASER1 = collection table), the command queue, the tables in
/// memory and their caches, and MSI translation. It reaches memory only through a memory view (<see cref="IMemoryView"/>: its DMA view, as QEMU's ITS is given an address space) and
/// makes LPIs pending only through an <see cref="ILpiTargets"/>, so the same engine is the physical ITS (system
/// bus, redistributors; front: <see cref="GicV3Its"/>) and a VM's vITS (guest memory through memslots, vCPUs).
///
/// Table entries (IMPDEF, Doorbell layout; all 8 bytes, little-endian, in the engine's memory):
///  DTE: V 63, ITT_addr[51:8] in place, Size[4:0] = EventID bits − 1.
///  CTE: V 63, target PE number [15:0] (resolved from RDbase at MAPC time, so PTA = 0 and 1 store the same).
///  ITE: V 63, Physical 62 (IntType; 0 reserved for GICv4 vLPIs), ICID[47:32], pINTID[31:0]. GITS_TYPER.ITT_entry_size = 8.
///  Indirect level-1 entries (architected): V 63, level-2 page address [51:0] (page aligned).
/// Caches: DTEs (direct-mapped by DeviceID), collection targets (by ICID) and translations (direct-mapped by
/// (DeviceID, EventID)); each is updated by the command that writes the entry it caches (MAPD, MAPC,
/// MAPTI/MAPI/MOVI/DISCARD), so software edits of the tables behind the ITS's back are not observed, as the
/// architecture permits.
/// Command errors: the command's architected error is logged (<see cref="CommandErrors"/>) and, with
/// <see cref="ItsOptions.StallOnCommandError"/>, the queue stalls (GITS_CREADR.Stalled = 1, CREADR pointing at
/// the erroring command) until software writes GITS_CWRITER.Retry = 1, which re-executes it.
/// Known limits: no GICv4 (V-commands are unsupported-command errors); no SEIs; drops are exposed as data
/// (<see cref="Drops"/>, <see cref="DropCount"/>) and strict-mode reports instead of GITS_STATUSR/UMSIR.
/// </summary>
public sealed class ItsEngine
{
    public const int EntrySize = 8;
    const ulong AddrMask52 = 0x000F_FFFF_FFFF_F000UL;
    const int DeviceTable = 0, CollectionTable = 1;

    struct TranslationEntry { public ulong Key; public uint Intid; public ushort Icid; public bool Valid; }
    struct DteEntry { public uint DeviceId; public bool Cached; public ulong Dte; }

    readonly IMemoryView _memory;
    readonly ILpiTargets _targets;
    readonly Trace _trace;
    readonly StrictMonitor _strict;
    /// <summary>The strict monitor the engine reports to (the MMIO front reports its register findings there too).</summary>
    internal StrictMonitor Strict => _strict;
    readonly TranslationEntry[] _tcache;
    readonly int _tcacheShift;
    readonly DteEntry[] _dteCache = new DteEntry[1024];
    readonly int[] _collectionTarget; // -2 not cached, -1 cached unmapped, else target
    readonly ulong[] _hwCollections;
    readonly ulong[] _baser = new ulong[8];
    readonly List<ItsCommandError> _errors = [];
    readonly ItsDrop[] _drops = new ItsDrop[256];
    readonly ulong[] _cmd = new ulong[4];
    bool _enabled, _stalled;
    ulong _cbaser, _cwriter, _creadr;

    public ItsEngine(IMemoryView memory, ILpiTargets targets, ItsOptions? options = null, Trace? trace = null, StrictMonitor? strict = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(targets);
        TranslationFrame = new ItsTranslationFrame(this);
        _memory = memory;
        _targets = targets;
        _trace = trace ?? new Trace();
        _strict = strict ?? new StrictMonitor();
        Options = options ?? new ItsOptions();
        if (Options.DeviceIdBits is < 1 or > 32 || Options.EventIdBits is < 1 or > 32 || Options.CollectionIdBits is < 1 or > 16)
            throw new ArgumentOutOfRangeException(nameof(options));
        _deviceIdLimit = 1UL << Options.DeviceIdBits;
        if (Options.TranslationCacheEntries < 2 || (Options.TranslationCacheEntries & (Options.TranslationCacheEntries - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(options), "TranslationCacheEntries must be a power of two");
        _tcache = new TranslationEntry[Options.TranslationCacheEntries];
        _tcacheShift = 64 - System.Numerics.BitOperations.Log2((uint)Options.TranslationCacheEntries);
        _collectionTarget = new int[1 << Options.CollectionIdBits];
        Array.Fill(_collectionTarget, -2);
        _hwCollections = new ulong[Math.Max(0, Options.HardwareCollections)];
        // BASER Type[58:56] and Entry_Size[52:48] are read-only (IHI 0069 §12.19.1)
        _baser[DeviceTable] = (1UL << 56) | ((ulong)(EntrySize - 1) << 48);
        _baser[CollectionTable] = (4UL << 56) | ((ulong)(EntrySize - 1) << 48);
    }

    public ItsOptions Options { get; }
    /// <summary>The translation frame (the MSI doorbell), mapped as its own region so an MSI reaches the engine directly.</summary>
    public ItsTranslationFrame TranslationFrame { get; }
    /// <summary>2^DeviceIdBits: the first DeviceID out of range (the MSI hot path compares with it).</summary>
    readonly ulong _deviceIdLimit;
    public ILpiTargets Targets => _targets;
    public IMemoryView Memory => _memory;
    public bool Enabled => _enabled;
    public bool Stalled => _stalled;
    /// <summary>Command errors, oldest first (the first 4096 kept).</summary>
    public IReadOnlyList<ItsCommandError> CommandErrors => _errors;
    public long CommandErrorCount { get; private set; }
    public long CommandsProcessed { get; private set; }
    /// <summary>MSIs that became pending LPIs.</summary>
    public long Translations { get; private set; }
    /// <summary>MSIs dropped (no DeviceID, unmapped device/event/collection, ITS disabled, ...).</summary>
    public long DropCount { get; private set; }
    /// <summary>The most recent drops (up to 256), oldest first.</summary>
    public IEnumerable<ItsDrop> Drops
    {
        get
        {
            var n = (int)Math.Min(DropCount, _drops.Length);
            for (var i = 0; i < n; i++) yield return _drops[(DropCount - n + i) % _drops.Length];
        }
    }
    public ItsDrop LastDrop => DropCount == 0 ? default : _drops[(DropCount - 1) % _drops.Length];

    // --- programming model (what the register front reads and writes) -------------------------------------------

    /// <summary>GITS_TYPER: Physical 0, ITT_entry_size[7:4], IDbits[12:8], Devbits[17:13], PTA 19, CCT 20, HCC[31:24], CIDbits[35:32], CIL 36.</summary>
    public ulong Typer =>
        1UL | ((ulong)(EntrySize - 1) << 4) | ((ulong)(Options.EventIdBits - 1) << 8) | ((ulong)(Options.DeviceIdBits - 1) << 13)
        | (Options.PhysicalTargetAddresses ? 1UL << 19 : 0) | (Options.CumulativeCollectionTables ? 1UL << 20 : 0) | ((ulong)(uint)Math.Min(Options.HardwareCollections, 255) << 24)
        | ((ulong)(Options.CollectionIdBits - 1) << 32) | (1UL << 36);

    public ulong Cbaser => _cbaser;
    public ulong Cwriter => _cwriter;
    /// <summary>GITS_CREADR: offset, Stalled in bit 0.</summary>
    public ulong Creadr => _creadr | (_stalled ? 1UL : 0);
    public ulong Baser(int n) => _baser[n];

    /// <summary>GITS_CTLR.Enabled write: 0→1 starts processing the queue.</summary>
    public void SetEnabled(bool enable)
    {
        if (enable && !_enabled) { _enabled = true; ProcessQueue(); }
        else if (!enable) _enabled = false;
    }

    /// <summary>GITS_CBASER write (the whole 64-bit value).</summary>
    public void WriteCbaser(ulong value)
    {
        if (_enabled)
        {
            _strict.Report("its", "IHI 0069 §12.19.2 GITS_CBASER (write while GITS_CTLR.Enabled = 1 is UNPREDICTABLE)", "CBASER write ignored");
            return;
        }
        _cbaser = value & ~(1UL << 62); // bit 62 RES0
        _creadr = 0; // a successful CBASER write resets CREADR
        _stalled = false;
    }

    /// <summary>GITS_CWRITER write (the whole 64-bit value: Retry bit 0, offset [19:5]); processes the queue.</summary>
    public void WriteCwriter(ulong value)
    {
        var retry = (value & 1) != 0;
        var off = value & 0xF_FFE0UL;
        if (off >= QueueBytes && (_cbaser >> 63) != 0)
        {
            _strict.Report("its", "IHI 0069 §12.19.6 GITS_CWRITER (offset beyond the queue is UNPREDICTABLE)", $"CWRITER 0x{off:x} ignored");
            return;
        }
        _cwriter = off;
        if (retry && _stalled) _stalled = false;
        ProcessQueue();
    }

    /// <summary>GITS_BASER&lt;n&gt; write (the whole 64-bit value); Type and Entry_Size stay read-only, BASER2..7 RAZ/WI.</summary>
    public void WriteBaser(int n, ulong value)
    {
        if (n > CollectionTable) return; // unimplemented: RAZ/WI
        if (_enabled)
        {
            _strict.Report("its", "IHI 0069 §12.19.1 GITS_BASER<n> (write while Enabled is UNPREDICTABLE)", $"BASER{n} write ignored");
            return;
        }
        const ulong fixedMask = 0x7UL << 56 | 0x1FUL << 48;
        _baser[n] = (value & ~fixedMask) | (_baser[n] & fixedMask);
    }

    ulong QueueBytes => ((_cbaser & 0xFF) + 1) * 4096;

    // --- translation (the MSI hot path) -----------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    int CacheIndex(ulong key) => (int)((key * 0x9E37_79B9_7F4A_7C15UL) >> _tcacheShift);

    /// <summary>An MSI: (DeviceID from the bus, EventID = data) → LPI pending at the collection's target.</summary>
    public ItsDropReason Translate(in BusAttributes attributes, uint eventId) =>
        attributes.HasDeviceId ? Translate(attributes.DeviceId, eventId) : Drop(ItsDropReason.NoDeviceId, 0, eventId);

    /// <summary>An MSI with a known DeviceID (a bus write to GITS_TRANSLATER, or an MSI injected into a vITS) → LPI pending.</summary>
    public ItsDropReason Translate(uint deviceId, uint eventId)
    {
        if (!_enabled) return Drop(ItsDropReason.ItsDisabled, deviceId, eventId);
        if (deviceId >= _deviceIdLimit) return Drop(ItsDropReason.DeviceIdOutOfRange, deviceId, eventId);
        var key = ((ulong)deviceId << 32) | eventId;
        ref var e = ref _tcache[CacheIndex(key)];
        uint intid; ushort icid;
        if (e.Valid && e.Key == key) { intid = e.Intid; icid = e.Icid; }
        else
        {
            var r = ResolveSlow(deviceId, eventId, out intid, out icid);
            if (r != ItsDropReason.None) return Drop(r, deviceId, eventId);
            e.Key = key; e.Intid = intid; e.Icid = icid; e.Valid = true;
        }
        var targets = _collectionTarget;
        var target = icid < targets.Length ? targets[icid] : -1; // an ITE read from memory may hold any ICID
        if (target == -2) target = CollectionTarget(icid);
        if (target < 0) return Drop(ItsDropReason.UnmappedCollection, deviceId, eventId);
        if (_trace.IsOn(TraceCategory.ItsTranslate)) TraceTranslation(deviceId, eventId, intid, icid, target);
        if (!_targets.SetPending(target, intid)) return Drop(ItsDropReason.LpiRejected, deviceId, eventId);
        Translations++;
        return ItsDropReason.None;
    }

    // Out of line: string formatting on the hot path would make every MSI zero its stack frame.
    [MethodImpl(MethodImplOptions.NoInlining)]
    void TraceTranslation(uint deviceId, uint eventId, uint intid, ushort icid, int target) =>
        _trace.Emit(TraceCategory.ItsTranslate, "its", $"DeviceID 0x{deviceId:x} EventID {eventId} -> LPI {intid} (ICID {icid}, cpu{target})");

    [MethodImpl(MethodImplOptions.NoInlining)]
    ItsDropReason ResolveSlow(uint deviceId, uint eventId, out uint intid, out ushort icid)
    {
        intid = 0; icid = 0;
        if (!TryReadDte(deviceId, out var dte) || (dte >> 63) == 0) return ItsDropReason.UnmappedDevice;
        if (!EventInRange(dte, eventId)) return ItsDropReason.EventIdOutOfRange;
        if (!TryReadIte(dte, eventId, out var ite) || (ite >> 63) == 0) return ItsDropReason.UnmappedInterrupt;
        intid = (uint)ite;
        icid = (ushort)(ite >> 32);
        return ItsDropReason.None;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    ItsDropReason Drop(ItsDropReason reason, uint deviceId, uint eventId)
    {
        _drops[DropCount % _drops.Length] = new ItsDrop(reason, deviceId, eventId);
        DropCount++;
        _trace.Emit(TraceCategory.ItsDrop, "its", $"MSI DeviceID 0x{deviceId:x} EventID {eventId} dropped: {reason}");
        if (_strict.Enabled)
            _strict.Report("its", "IHI 0069 §6.2 (untranslatable MSI is ignored)", $"MSI DeviceID {deviceId} EventID {eventId} dropped: {reason}");
        return reason;
    }

    static bool EventInRange(ulong dte, uint eventId)
    {
        var bits = (int)(dte & 0x1F) + 1;
        return bits >= 32 || eventId >> bits == 0;
    }

    // --- tables --------------------------------------------------------------------------------------------------

    static ulong PageSizeOf(ulong baser) => ((baser >> 8) & 3) switch { 0 => 0x1000UL, 1 => 0x4000UL, _ => 0x1_0000UL };

    /// <summary>Address of entry <paramref name="id"/> of table <paramref name="n"/>, or false (beyond the table, or level-2 page not valid).</summary>
    bool EntryAddress(int n, uint id, out ulong address)
    {
        address = 0;
        var b = _baser[n];
        if ((b >> 63) == 0) return false;
        var page = PageSizeOf(b);
        var pa = b & 0x0000_FFFF_FFFF_F000UL & ~(page - 1);
        if (page == 0x1_0000) pa |= ((b >> 12) & 0xF) << 48; // 64K pages: PA[51:48] in [15:12]
        var bytes = ((b & 0xFF) + 1) * page;
        if ((b & (1UL << 62)) == 0)
        {
            if ((ulong)id * EntrySize >= bytes) return false;
            address = pa + (ulong)id * EntrySize;
            return true;
        }
        var perPage = page / EntrySize;
        var l1 = id / perPage;
        if (l1 * 8 >= bytes) return false;
        if (_memory.ReadU64(pa + l1 * 8, out var l1e) != BusStatus.Ok || (l1e >> 63) == 0) return false;
        address = (l1e & 0x000F_FFFF_FFFF_FFFFUL & ~(page - 1)) + (id % perPage) * EntrySize;
        return true;
    }

    bool TryReadDte(uint deviceId, out ulong dte)
    {
        ref var c = ref _dteCache[deviceId & (uint)(_dteCache.Length - 1)];
        if (c.Cached && c.DeviceId == deviceId) { dte = c.Dte; return true; }
        dte = 0;
        if (!EntryAddress(DeviceTable, deviceId, out var a) || _memory.ReadU64(a, out dte) != BusStatus.Ok) return false;
        c.DeviceId = deviceId; c.Dte = dte; c.Cached = true;
        return true;
    }

    bool TryReadIte(ulong dte, uint eventId, out ulong ite)
    {
        var itt = dte & 0x000F_FFFF_FFFF_FF00UL;
        return _memory.ReadU64(itt + (ulong)eventId * EntrySize, out ite) == BusStatus.Ok;
    }

    bool WriteIte(ulong dte, uint eventId, ulong ite)
    {
        var a = (dte & 0x000F_FFFF_FFFF_FF00UL) + (ulong)eventId * EntrySize;
        return _memory.WriteU64(a, ite) == BusStatus.Ok;
    }

    /// <summary>The PE a collection targets, or -1 when unmapped (collection table entry not valid or unreachable).</summary>
    int CollectionTarget(ushort icid)
    {
        if (icid >= _collectionTarget.Length) return -1;
        var t = _collectionTarget[icid];
        if (t != -2) return t;
        ulong cte = 0;
        if (icid < _hwCollections.Length) cte = _hwCollections[icid];
        else if (!EntryAddress(CollectionTable, icid, out var a) || _memory.ReadU64(a, out cte) != BusStatus.Ok) cte = 0;
        t = (cte >> 63) != 0 && (int)(cte & 0xFFFF) < _targets.Count ? (int)(cte & 0xFFFF) : -1;
        _collectionTarget[icid] = t;
        return t;
    }

    /// <summary>The PE named by an RDbase field: a PE number (PTA = 0) or a redistributor address >> 16 (PTA = 1). -1 if none.</summary>
    int ResolveRd(ulong rdBase)
    {
        if (!Options.PhysicalTargetAddresses)
            return rdBase < (ulong)_targets.Count ? (int)rdBase : -1;
        return _targets.TargetAt(rdBase << 16);
    }

    /// <summary>The RDbase value software must use for PE <paramref name="cpu"/> under this ITS's PTA setting.</summary>
    public ulong RdBaseOf(int cpu) => Options.PhysicalTargetAddresses
        ? _targets.AddressOf(cpu) >> 16
        : (ulong)cpu;

    void InvalidateDeviceTranslations(uint deviceId)
    {
        for (var i = 0; i < _tcache.Length; i++)
            if (_tcache[i].Valid && (uint)(_tcache[i].Key >> 32) == deviceId) _tcache[i].Valid = false;
    }

    // --- command queue ---------------------------------------------------------------------------------------------

    bool _processing;

    void ProcessQueue()
    {
        // Re-entrancy guard: a guest can point a table at the ITS's own registers, so a command's memory write
        // may land on CWRITER; the outer loop picks the new CWRITER up.
        if (_processing || !_enabled || _stalled || (_cbaser >> 63) == 0) return;
        _processing = true;
        try { ProcessQueueLoop(); }
        finally { _processing = false; }
    }

    void ProcessQueueLoop()
    {
        var qbytes = QueueBytes;
        var qbase = _cbaser & AddrMask52 & 0x000F_FFFF_FFFF_F000UL;
        var budget = qbytes / 32; // bounded: at most one pass over the queue per kick
        // The queue's current RAM page, looked up once per page.
        byte[]? page = null;
        var pageBase = ulong.MaxValue;
        var tracing = _trace.IsOn(TraceCategory.ItsCmd);
        var cmd = System.Runtime.InteropServices.MemoryMarshal.AsBytes(_cmd.AsSpan());
        while (_creadr != _cwriter && budget-- > 0)
        {
            uint err;
            var a = qbase + _creadr;
            // A 32-byte command at a 32-byte aligned offset of a 4K-aligned queue never crosses a page.
            var pb = a & ~(ulong)(SparseMemory.PageSize - 1);
            if (pb != pageBase)
            {
                pageBase = pb;
                if (!_memory.TryGetRamPage(pb, out page)) page = null;
            }
            if (page is not null)
            {
                page.AsSpan((int)(a - pb), 32).CopyTo(cmd);
                err = Execute(_cmd);
            }
            else if (_memory.Read(a, cmd, BusAttributes.Cpu) != BusStatus.Ok)
                err = ItsError.CommandFetchAbort;
            else
                err = Execute(_cmd);
            if (err != 0)
            {
                CommandErrorCount++;
                var e = new ItsCommandError(err, (byte)_cmd[0], (uint)_creadr, (uint)(_cmd[0] >> 32), (uint)_cmd[1]);
                if (_errors.Count < 4096) _errors.Add(e);
                _trace.Emit(TraceCategory.GuestError, "its", $"command error: {e}");
                _strict.Report("its", "IHI 0069 §6.3 (command error)", e.ToString());
                if (Options.StallOnCommandError) { _stalled = true; return; }
            }
            else if (tracing) TraceConsumed();
            CommandsProcessed++;
            _creadr += 32;
            if (_creadr >= qbytes) _creadr = 0;
        }
    }

    void TraceConsumed() => _trace.Emit(TraceCategory.ItsCmd, "its", $"{ItsOpcode.Name((byte)_cmd[0])} consumed at CREADR 0x{_creadr:x}");

    /// <summary>Executes one command; returns 0 or its error code. Never throws on guest data.</summary>
    uint Execute(ulong[] c)
    {
        var op = (byte)c[0];
        var deviceId = (uint)(c[0] >> 32);
        var eventId = (uint)c[1];
        switch (op)
        {
            case ItsOpcode.Mapd: return Mapd(deviceId, (int)(c[1] & 0x1F), c[2] & 0x000F_FFFF_FFFF_FF00UL, (c[2] >> 63) != 0);
            case ItsOpcode.Mapc: return Mapc((ushort)c[2], (c[2] >> 16) & 0xF_FFFF_FFFFUL, (c[2] >> 63) != 0);
            case ItsOpcode.Mapti: return Map(op, deviceId, eventId, (uint)(c[1] >> 32), (ushort)c[2]);
            case ItsOpcode.Mapi: return Map(op, deviceId, eventId, eventId, (ushort)c[2]);
            case ItsOpcode.Movi: return Movi(deviceId, eventId, (ushort)c[2]);
            case ItsOpcode.Int or ItsOpcode.Clear or ItsOpcode.Inv or ItsOpcode.Discard: return EventCommand(op, deviceId, eventId);
            case ItsOpcode.Invall:
            {
                var icid = (ushort)c[2];
                if (icid >= _collectionTarget.Length) return ItsError.Code(op, ItsError.CollectionOor);
                var t = CollectionTarget(icid);
                if (t < 0) return ItsError.InvallUnmappedCollection;
                _targets.InvalidateAll(t);
                return 0;
            }
            case ItsOpcode.Sync:
                return ResolveRd((c[2] >> 16) & 0xF_FFFF_FFFFUL) < 0 ? ItsError.Code(op, ItsError.SizeOor) : 0; // everything is already complete
            case ItsOpcode.Movall:
            {
                var from = ResolveRd((c[2] >> 16) & 0xF_FFFF_FFFFUL);
                var to = ResolveRd((c[3] >> 16) & 0xF_FFFF_FFFFUL);
                if (from < 0 || to < 0) return ItsError.MovallProcnumOor;
                _targets.MoveAll(from, to);
                _trace.Emit(TraceCategory.ItsCmd, "its", $"MOVALL cpu{from} -> cpu{to}");
                return 0;
            }
            default:
                return ItsError.Unsupported(op);
        }
    }

    uint Mapd(uint deviceId, int size, ulong itt, bool valid)
    {
        const byte op = ItsOpcode.Mapd;
        if ((Options.DeviceIdBits < 32 && deviceId >> Options.DeviceIdBits != 0) || !EntryAddress(DeviceTable, deviceId, out var a))
            return ItsError.MapdDeviceOor;
        if (valid && size + 1 > Options.EventIdBits) return ItsError.MapdIttSizeOor;
        var dte = valid ? (1UL << 63) | itt | (uint)size : 0;
        if (_memory.WriteU64(a, dte) != BusStatus.Ok) return ItsError.Code(op, ItsError.DeviceOor);
        ref var cached = ref _dteCache[deviceId & (uint)(_dteCache.Length - 1)];
        cached.DeviceId = deviceId; cached.Dte = dte; cached.Cached = true;
        InvalidateDeviceTranslations(deviceId);
        _trace.Emit(TraceCategory.ItsCmd, "its", $"MAPD dev {deviceId} {(valid ? $"ITT 0x{itt:x} {size + 1} bits" : "unmapped")}");
        return 0;
    }

    uint Mapc(ushort icid, ulong rdBase, bool valid)
    {
        const byte op = ItsOpcode.Mapc;
        if (icid >= _collectionTarget.Length) return ItsError.MapcCollectionOor;
        var target = ResolveRd(rdBase);
        if (valid && target < 0) return ItsError.MapcProcnumOor;
        var cte = valid ? (1UL << 63) | (uint)target : 0;
        if (icid < _hwCollections.Length) _hwCollections[icid] = cte;
        else if (!EntryAddress(CollectionTable, icid, out var a) || _memory.WriteU64(a, cte) != BusStatus.Ok)
            return ItsError.Code(op, ItsError.CollectionOor);
        _collectionTarget[icid] = valid ? target : -1;
        _trace.Emit(TraceCategory.ItsCmd, "its", $"MAPC icid {icid} -> {(valid ? $"cpu{target}" : "unmapped")}");
        return 0;
    }

    /// <summary>Common DeviceID/EventID checks: reads the DTE and, when <paramref name="needIte"/>, the valid ITE.</summary>
    uint Lookup(byte op, uint deviceId, uint eventId, bool needIte, out ulong dte, out ulong ite)
    {
        ite = 0; dte = 0;
        if (Options.DeviceIdBits < 32 && deviceId >> Options.DeviceIdBits != 0) return ItsError.Code(op, ItsError.DeviceOor);
        if (!TryReadDte(deviceId, out dte) || (dte >> 63) == 0) return ItsError.Code(op, ItsError.UnmappedDevice);
        if (!EventInRange(dte, eventId)) return ItsError.Code(op, ItsError.EventOor);
        if (!needIte) return 0;
        // The translation cache is kept coherent by every command that writes an ITE, so a hit stands for the ITE.
        var key = ((ulong)deviceId << 32) | eventId;
        ref var e = ref _tcache[CacheIndex(key)];
        if (e.Valid && e.Key == key)
        {
            ite = (1UL << 63) | (1UL << 62) | ((ulong)e.Icid << 32) | e.Intid;
            return 0;
        }
        if (!TryReadIte(dte, eventId, out ite) || (ite >> 63) == 0) return ItsError.Code(op, ItsError.UnmappedInterrupt);
        return 0;
    }

    uint Map(byte op, uint deviceId, uint eventId, uint pIntid, ushort icid)
    {
        var err = Lookup(op, deviceId, eventId, false, out var dte, out _);
        if (err != 0) return err;
        if (icid >= _collectionTarget.Length) return ItsError.Code(op, ItsError.CollectionOor);
        if (pIntid < GicV3.FirstLpi || pIntid >> _targets.IntidBits != 0) return ItsError.Code(op, ItsError.PhysicalIdOor);
        var ite = (1UL << 63) | (1UL << 62) | ((ulong)icid << 32) | pIntid;
        if (!WriteIte(dte, eventId, ite)) return ItsError.Code(op, ItsError.UnmappedDevice);
        var key = ((ulong)deviceId << 32) | eventId;
        ref var e = ref _tcache[CacheIndex(key)];
        e.Key = key; e.Intid = pIntid; e.Icid = icid; e.Valid = true;
        return 0;
    }

    uint Movi(uint deviceId, uint eventId, ushort icid)
    {
        const byte op = ItsOpcode.Movi;
        var err = Lookup(op, deviceId, eventId, true, out var dte, out var ite);
        if (err != 0) return err;
        if (icid >= _collectionTarget.Length) return ItsError.Code(op, ItsError.CollectionOor);
        var to = CollectionTarget(icid);
        if (to < 0) return ItsError.MoviUnmappedCollection;
        var intid = (uint)ite;
        var from = CollectionTarget((ushort)(ite >> 32));
        // The pending state follows the interrupt to its new redistributor (IHI 0069 §6.3.11 MOVI).
        if (from >= 0 && from != to && _targets.ClearPending(from, intid))
            _targets.SetPending(to, intid);
        var newIte = (ite & ~(0xFFFFUL << 32)) | ((ulong)icid << 32);
        WriteIte(dte, eventId, newIte);
        var key = ((ulong)deviceId << 32) | eventId;
        ref var e = ref _tcache[CacheIndex(key)];
        e.Key = key; e.Intid = intid; e.Icid = icid; e.Valid = true;
        _trace.Emit(TraceCategory.ItsCmd, "its", $"MOVI dev {deviceId} ev {eventId} (LPI {intid}) -> icid {icid} (cpu{to})");
        return 0;
    }

    uint EventCommand(byte op, uint deviceId, uint eventId)
    {
        var err = Lookup(op, deviceId, eventId, true, out var dte, out var ite);
        if (err != 0) return err;
        var intid = (uint)ite;
        var target = CollectionTarget((ushort)(ite >> 32));
        if (target < 0 && op != ItsOpcode.Discard) return ItsError.Code(op, ItsError.UnmappedCollection);
        switch (op)
        {
            case ItsOpcode.Int: _targets.SetPending(target, intid); break;
            case ItsOpcode.Clear: _targets.ClearPending(target, intid); break;
            case ItsOpcode.Inv: _targets.Invalidate(target, intid); break;
            case ItsOpcode.Discard:
                if (target >= 0) _targets.ClearPending(target, intid);
                WriteIte(dte, eventId, 0);
                var key = ((ulong)deviceId << 32) | eventId;
                ref var e = ref _tcache[CacheIndex(key)];
                if (e.Key == key) e.Valid = false;
                break;
        }
        return 0;
    }
}

/// <summary>
/// The ITS's translation frame, the second 64 KiB page of its MMIO (Arm IHI 0069 §12.19): GITS_TRANSLATER at 0x40 is the
/// MSI doorbell, its DeviceID the writer's <see cref="BusAttributes.DeviceId"/> and its EventID the data (16-bit writes
/// carry a 16-bit EventID, §12.19.11). The frame is a region of its own on the bus, as QEMU keeps its ITS translation
/// region apart from the control registers, so an MSI runs no code of the control front (<see cref="GicV3Its"/>); the
/// physical ITS and a vITS map the same frame of their engine.
/// </summary>
public sealed class ItsTranslationFrame : IMmioHandler
{
    /// <summary>GITS_TRANSLATER within the frame.</summary>
    public const uint GITS_TRANSLATER = 0x0040;
    public const ulong Size = 0x1_0000;

    /// <summary>The frame's one register, declared once: the table drives dispatch, access rules and names.</summary>
    public static readonly RegisterDescriptor[] Registers =
    [
        new(GITS_TRANSLATER, 4, "GITS_TRANSLATER", RegisterAccess.WriteOnly, Id: 1, MinSize: 2),
    ];

    public static readonly RegisterBlock Block = new("its", Registers, Size, "IHI 0069 §12.19 (read-only register)", pairedWords: true);

    readonly ItsEngine _engine;

    internal ItsTranslationFrame(ItsEngine engine) => _engine = engine;

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        value = RegisterDispatch<RegisterFile>.Read(new RegisterFile(_engine), offset, size, in attributes);
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        // The whole-register doorbell write is what the generic path would do with it; taking it first keeps an MSI one
        // compare away.
        if (offset == GITS_TRANSLATER && size == 4)
        {
            _engine.Translate(attributes, (uint)value);
            return BusStatus.Ok;
        }
        RegisterDispatch<RegisterFile>.Write(new RegisterFile(_engine), offset, size, value, attributes, _engine.Strict);
        return BusStatus.Ok;
    }

    readonly struct RegisterFile(ItsEngine engine) : IRegisterFile
    {
        public static RegisterBlock Block => ItsTranslationFrame.Block;
        public ulong Read(RegisterRef r, in BusAttributes attributes) => 0; // write-only
        public void Write(RegisterRef r, ulong value, in BusAttributes attributes) => engine.Translate(attributes, (uint)value);
    }
}
