using System.Runtime.CompilerServices;
using Doorbell.Gic.V3;
using Doorbell.Memory;

namespace Doorbell.Gic.Its;

/// <summary>Build-time parameters of an ITS (what GITS_TYPER advertises).</summary>
public sealed record ItsOptions
{
    /// <summary>DeviceID bits (GITS_TYPER.Devbits + 1).</summary>
    public int DeviceIdBits { get; init; } = 16;
    /// <summary>EventID bits (GITS_TYPER.IDbits + 1).</summary>
    public int EventIdBits { get; init; } = 16;
    /// <summary>Collection ID bits (GITS_TYPER.CIL = 1, CIDbits + 1).</summary>
    public int CollectionIdBits { get; init; } = 16;
    /// <summary>GITS_TYPER.PTA: true, MAPC/SYNC/MOVALL name a redistributor by physical address; false, by PE number.</summary>
    public bool PhysicalTargetAddresses { get; init; }
    /// <summary>GITS_TYPER.HCC: collections held in the ITS (ICIDs below this need no collection table).</summary>
    public int HardwareCollections { get; init; }
    /// <summary>GITS_TYPER.CCT: collection tables are cumulative across ITSs (reported only; one ITS here).</summary>
    public bool CumulativeCollectionTables { get; init; }
    /// <summary>IMPDEF: an erroring command stalls the queue (CREADR.Stalled) until CWRITER.Retry; otherwise it is skipped.</summary>
    public bool StallOnCommandError { get; init; } = true;
    /// <summary>Entries of the (DeviceID, EventID) → (LPI, collection) translation cache, a power of two.</summary>
    public int TranslationCacheEntries { get; init; } = 4096;
}

/// <summary>
/// GICv3 Interrupt Translation Service (Arm IHI 0069 chapter 6). Control frame (GITS_CTLR, IIDR, TYPER,
/// CBASER, CWRITER, CREADR, BASER0 = device table, BASER1 = collection table) and translation frame
/// (GITS_TRANSLATER at +0x1_0040). A TRANSLATER write's DeviceID is the writer's <see cref="BusAttributes.DeviceId"/>.
///
/// Table entries (IMPDEF, Doorbell layout; all 8 bytes, little-endian, in guest memory):
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
/// Known limits: no GICv4 (GITS_TYPER.Virtual = 0: V-commands are unsupported-command errors); no SEIs;
/// GITS_STATUSR/UMSIR (GICv3.3 unmapped-MSI reporting) read as zero — drops are exposed as data
/// (<see cref="Drops"/>, <see cref="DropCount"/>) and strict-mode reports instead.
/// </summary>
public sealed class GicV3Its : IMmioHandler
{
    // Control frame registers, IHI 0069 §12.19; translation frame at +0x10000.
    public const uint GITS_CTLR = 0x0000, GITS_IIDR = 0x0004, GITS_TYPER = 0x0008, GITS_STATUSR = 0x0040,
        GITS_UMSIR = 0x0048, GITS_CBASER = 0x0080, GITS_CWRITER = 0x0088, GITS_CREADR = 0x0090,
        GITS_BASER = 0x0100, GITS_PIDR2 = 0xFFE8, GITS_TRANSLATER = 0x1_0040;
    public static readonly GicRegister[] Registers =
    [
        new(GITS_CTLR, 4, "GITS_CTLR", RegisterAccess.ReadWrite),
        new(GITS_IIDR, 4, "GITS_IIDR", RegisterAccess.ReadOnly),
        new(GITS_TYPER, 8, "GITS_TYPER", RegisterAccess.ReadOnly),
        new(GITS_STATUSR, 4, "GITS_STATUSR", RegisterAccess.RazWi),
        new(GITS_UMSIR, 8, "GITS_UMSIR", RegisterAccess.RazWi),
        new(GITS_CBASER, 8, "GITS_CBASER", RegisterAccess.ReadWrite),
        new(GITS_CWRITER, 8, "GITS_CWRITER", RegisterAccess.ReadWrite),
        new(GITS_CREADR, 8, "GITS_CREADR", RegisterAccess.ReadOnly),
        new(GITS_BASER, 8, "GITS_BASER", RegisterAccess.ReadWrite, 8),
        new(GITS_PIDR2, 4, "GITS_PIDR2", RegisterAccess.ReadOnly),
        new(GITS_TRANSLATER, 4, "GITS_TRANSLATER", RegisterAccess.WriteOnly),
    ];
    public const ulong FrameSize = 0x2_0000;
    public const int EntrySize = 8;
    public const ulong CtlrEnabled = 1, CtlrQuiescent = 1UL << 31;
    const ulong AddrMask52 = 0x000F_FFFF_FFFF_F000UL;
    const int DeviceTable = 0, CollectionTable = 1;

    struct TranslationEntry { public ulong Key; public uint Intid; public ushort Icid; public bool Valid; }
    struct DteEntry { public uint DeviceId; public bool Cached; public ulong Dte; }

    readonly GicV3 _gic;
    readonly GicV3Redistributor[] _rds;
    readonly IMemoryView _bus;
    readonly TranslationEntry[] _tcache;
    readonly int _tcacheShift;
    readonly DteEntry[] _dteCache = new DteEntry[1024];
    readonly int[] _collectionTarget; // -2 not cached, -1 cached unmapped, else PE
    readonly ulong[] _hwCollections;
    readonly ulong[] _baser = new ulong[8];
    readonly List<ItsCommandError> _errors = [];
    readonly ItsDrop[] _drops = new ItsDrop[256];
    readonly ulong[] _cmd = new ulong[4];
    bool _enabled, _stalled;
    ulong _cbaser, _cwriter, _creadr;

    public GicV3Its(GicV3 gic, ItsOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(gic);
        _gic = gic;
        _rds = gic.Redistributors;
        _bus = gic.Bus;
        Options = options ?? new ItsOptions();
        if (Options.DeviceIdBits is < 1 or > 32 || Options.EventIdBits is < 1 or > 32 || Options.CollectionIdBits is < 1 or > 16)
            throw new ArgumentOutOfRangeException(nameof(options));
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
    public GicV3 Gic => _gic;
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

    /// <summary>Maps the control and translation frames (128 KiB) at <paramref name="base"/>.</summary>
    public void Map(PhysAddr @base) => Map(_bus as IMmioMap ?? throw new InvalidOperationException("the ITS's memory view places no MMIO: use Map(map, base)"), @base);

    /// <summary>Maps the control and translation frames (128 KiB) at <paramref name="base"/> of <paramref name="map"/>.</summary>
    public void Map(IMmioMap map, PhysAddr @base)
    {
        ArgumentNullException.ThrowIfNull(map);
        map.MapMmio(@base, FrameSize, this, new MmioAccessRules(AccessSizes.All, true, MmioViolation.RazWi), "gicv3-its");
    }

    ulong Typer =>
        // Physical 0, ITT_entry_size[7:4], IDbits[12:8], Devbits[17:13], PTA 19, CCT 20, HCC[31:24], CIDbits[35:32], CIL 36
        1UL | ((ulong)(EntrySize - 1) << 4) | ((ulong)(Options.EventIdBits - 1) << 8) | ((ulong)(Options.DeviceIdBits - 1) << 13)
        | (Options.PhysicalTargetAddresses ? 1UL << 19 : 0) | (Options.CumulativeCollectionTables ? 1UL << 20 : 0) | ((ulong)(uint)Math.Min(Options.HardwareCollections, 255) << 24)
        | ((ulong)(Options.CollectionIdBits - 1) << 32) | (1UL << 36);

    // --- MMIO ------------------------------------------------------------------------------------------------

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        ulong reg = (offset & ~7UL) switch
        {
            GITS_CTLR => (_enabled ? CtlrEnabled : CtlrQuiescent) | (0x0100_143BUL << 32), // CTLR | IIDR
            GITS_TYPER => Typer,
            GITS_CBASER => _cbaser,
            GITS_CWRITER => _cwriter,
            GITS_CREADR => _creadr | (_stalled ? 1UL : 0),
            >= GITS_BASER and < GITS_BASER + 64 => _baser[(offset - GITS_BASER) / 8],
            GITS_PIDR2 => 0x3B,
            _ => 0,
        };
        var shift = (int)(offset & 7) * 8;
        value = size == 8 ? reg : (reg >> shift) & ((1UL << (8 * size)) - 1);
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        if (offset == GITS_TRANSLATER)
        {
            if (size is 2 or 4) Translate(attributes, (uint)value);
            return BusStatus.Ok;
        }
        var aligned = offset & ~7UL;
        if (size < 4) return BusStatus.Ok;
        switch (aligned)
        {
            case GITS_CTLR when offset == GITS_CTLR:
                var en = (value & 1) != 0;
                if (en && !_enabled) { _enabled = true; ProcessQueue(); }
                else if (!en) _enabled = false;
                return BusStatus.Ok;
            case GITS_CBASER:
                if (_enabled)
                {
                    _gic.Strict.Report("its", "IHI 0069 §12.19.2 GITS_CBASER (write while GITS_CTLR.Enabled = 1 is UNPREDICTABLE)", "CBASER write ignored");
                    return BusStatus.Ok;
                }
                _cbaser = Merge(_cbaser, offset, size, value) & ~(1UL << 62); // bit 62 RES0
                _creadr = 0; // a successful CBASER write resets CREADR
                _stalled = false;
                return BusStatus.Ok;
            case GITS_CWRITER:
                var w = Merge(_cwriter, offset, size, value);
                var retry = (w & 1) != 0;
                var off = w & 0xF_FFE0UL;
                if (off >= QueueBytes && (_cbaser >> 63) != 0)
                {
                    _gic.Strict.Report("its", "IHI 0069 §12.19.6 GITS_CWRITER (offset beyond the queue is UNPREDICTABLE)", $"CWRITER 0x{off:x} ignored");
                    return BusStatus.Ok;
                }
                _cwriter = off;
                if (retry && _stalled) _stalled = false;
                ProcessQueue();
                return BusStatus.Ok;
            case >= GITS_BASER and < GITS_BASER + 64:
                var n = (int)((aligned - GITS_BASER) / 8);
                if (n > CollectionTable) return BusStatus.Ok; // unimplemented: RAZ/WI
                if (_enabled)
                {
                    _gic.Strict.Report("its", "IHI 0069 §12.19.1 GITS_BASER<n> (write while Enabled is UNPREDICTABLE)", $"BASER{n} write ignored");
                    return BusStatus.Ok;
                }
                var fixedBits = _baser[n] & (0x7UL << 56 | 0x1FUL << 48);
                _baser[n] = (Merge(_baser[n], offset, size, value) & ~(0x7UL << 56 | 0x1FUL << 48)) | fixedBits;
                return BusStatus.Ok;
        }
        return BusStatus.Ok;
    }

    static ulong Merge(ulong reg, ulong off, int size, ulong value)
    {
        if (size == 8) return value;
        var shift = (int)(off & 7) * 8;
        var mask = ((1UL << (8 * size)) - 1) << shift;
        return (reg & ~mask) | ((value << shift) & mask);
    }

    ulong QueueBytes => ((_cbaser & 0xFF) + 1) * 4096;

    // --- translation (the MSI hot path) -----------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    int CacheIndex(ulong key) => (int)((key * 0x9E37_79B9_7F4A_7C15UL) >> _tcacheShift);

    /// <summary>An MSI: (DeviceID from the bus, EventID = data) → LPI pending at the collection's redistributor.</summary>
    public ItsDropReason Translate(in BusAttributes attributes, uint eventId)
    {
        if (!attributes.HasDeviceId) return Drop(ItsDropReason.NoDeviceId, 0, eventId);
        var deviceId = attributes.DeviceId;
        if (!_enabled) return Drop(ItsDropReason.ItsDisabled, deviceId, eventId);
        if (Options.DeviceIdBits < 32 && deviceId >> Options.DeviceIdBits != 0) return Drop(ItsDropReason.DeviceIdOutOfRange, deviceId, eventId);
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
        if (_gic.Trace.IsOn(TraceCategory.ItsTranslate)) _gic.Trace.Emit(TraceCategory.ItsTranslate, "its", $"DeviceID 0x{deviceId:x} EventID {eventId} -> LPI {intid} (ICID {icid}, cpu{target})");
        if (!_rds[target].SetLpiPending(intid)) return Drop(ItsDropReason.LpiRejected, deviceId, eventId);
        Translations++;
        return ItsDropReason.None;
    }

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

    ItsDropReason Drop(ItsDropReason reason, uint deviceId, uint eventId)
    {
        _drops[DropCount % _drops.Length] = new ItsDrop(reason, deviceId, eventId);
        DropCount++;
        _gic.Trace.Emit(TraceCategory.ItsDrop, "its", $"MSI DeviceID 0x{deviceId:x} EventID {eventId} dropped: {reason}");
        if (_gic.Strict.Enabled)
            _gic.Strict.Report("its", "IHI 0069 §6.2 (untranslatable MSI is ignored)", $"MSI DeviceID {deviceId} EventID {eventId} dropped: {reason}");
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
        if (_bus.ReadU64(pa + l1 * 8, out var l1e) != BusStatus.Ok || (l1e >> 63) == 0) return false;
        address = (l1e & 0x000F_FFFF_FFFF_FFFFUL & ~(page - 1)) + (id % perPage) * EntrySize;
        return true;
    }

    bool TryReadDte(uint deviceId, out ulong dte)
    {
        ref var c = ref _dteCache[deviceId & (uint)(_dteCache.Length - 1)];
        if (c.Cached && c.DeviceId == deviceId) { dte = c.Dte; return true; }
        dte = 0;
        if (!EntryAddress(DeviceTable, deviceId, out var a) || _bus.ReadU64(a, out dte) != BusStatus.Ok) return false;
        c.DeviceId = deviceId; c.Dte = dte; c.Cached = true;
        return true;
    }

    bool TryReadIte(ulong dte, uint eventId, out ulong ite)
    {
        var itt = dte & 0x000F_FFFF_FFFF_FF00UL;
        return _bus.ReadU64(itt + (ulong)eventId * EntrySize, out ite) == BusStatus.Ok;
    }

    bool WriteIte(ulong dte, uint eventId, ulong ite)
    {
        var a = (dte & 0x000F_FFFF_FFFF_FF00UL) + (ulong)eventId * EntrySize;
        return _bus.WriteU64(a, ite) == BusStatus.Ok;
    }

    /// <summary>The PE a collection targets, or -1 when unmapped (collection table entry not valid or unreachable).</summary>
    int CollectionTarget(ushort icid)
    {
        if (icid >= _collectionTarget.Length) return -1;
        var t = _collectionTarget[icid];
        if (t != -2) return t;
        ulong cte = 0;
        if (icid < _hwCollections.Length) cte = _hwCollections[icid];
        else if (!EntryAddress(CollectionTable, icid, out var a) || _bus.ReadU64(a, out cte) != BusStatus.Ok) cte = 0;
        t = (cte >> 63) != 0 && (int)(cte & 0xFFFF) < _gic.Redistributors.Length ? (int)(cte & 0xFFFF) : -1;
        _collectionTarget[icid] = t;
        return t;
    }

    /// <summary>The PE named by an RDbase field: a PE number (PTA = 0) or a redistributor address >> 16 (PTA = 1). -1 if none.</summary>
    int ResolveRd(ulong rdBase)
    {
        if (!Options.PhysicalTargetAddresses)
            return rdBase < (ulong)_gic.Redistributors.Length ? (int)rdBase : -1;
        var pa = rdBase << 16;
        var b = _gic.RedistributorBase;
        if (b == ulong.MaxValue || pa < b || (pa - b) % GicV3Redistributor.FrameSize != 0) return -1;
        var k = (pa - b) / GicV3Redistributor.FrameSize;
        return k < (ulong)_gic.Redistributors.Length ? (int)k : -1;
    }

    /// <summary>The RDbase value software must use for PE <paramref name="cpu"/> under this ITS's PTA setting.</summary>
    public ulong RdBaseOf(int cpu) => Options.PhysicalTargetAddresses
        ? (_gic.RedistributorBase + (ulong)cpu * GicV3Redistributor.FrameSize) >> 16
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
        while (_creadr != _cwriter && budget-- > 0)
        {
            uint err;
            var a = qbase + _creadr;
            if (_bus.Read(a, System.Runtime.InteropServices.MemoryMarshal.AsBytes(_cmd.AsSpan()), BusAttributes.Cpu) != BusStatus.Ok)
                err = ItsError.CommandFetchAbort;
            else
                err = Execute(_cmd);
            if (err != 0)
            {
                CommandErrorCount++;
                var e = new ItsCommandError(err, (byte)_cmd[0], (uint)_creadr, (uint)(_cmd[0] >> 32), (uint)_cmd[1]);
                if (_errors.Count < 4096) _errors.Add(e);
                _gic.Trace.Emit(TraceCategory.GuestError, "its", $"command error: {e}");
                _gic.Strict.Report("its", "IHI 0069 §6.3 (command error)", e.ToString());
                if (Options.StallOnCommandError) { _stalled = true; return; }
            }
            else _gic.Trace.Emit(TraceCategory.ItsCmd, "its", $"{ItsOpcode.Name((byte)_cmd[0])} consumed at CREADR 0x{_creadr:x}");
            CommandsProcessed++;
            _creadr += 32;
            if (_creadr >= qbytes) _creadr = 0;
        }
    }

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
                _gic.Redistributors[t].InvalidateAllLpis();
                return 0;
            }
            case ItsOpcode.Sync:
                return ResolveRd((c[2] >> 16) & 0xF_FFFF_FFFFUL) < 0 ? ItsError.Code(op, ItsError.SizeOor) : 0; // everything is already complete
            case ItsOpcode.Movall:
            {
                var from = ResolveRd((c[2] >> 16) & 0xF_FFFF_FFFFUL);
                var to = ResolveRd((c[3] >> 16) & 0xF_FFFF_FFFFUL);
                if (from < 0 || to < 0) return ItsError.MovallProcnumOor;
                _gic.Redistributors[from].MoveAllPendingTo(_gic.Redistributors[to]);
                _gic.Trace.Emit(TraceCategory.ItsCmd, "its", $"MOVALL cpu{from} -> cpu{to}");
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
        if (_bus.WriteU64(a, dte) != BusStatus.Ok) return ItsError.Code(op, ItsError.DeviceOor);
        ref var cached = ref _dteCache[deviceId & (uint)(_dteCache.Length - 1)];
        cached.DeviceId = deviceId; cached.Dte = dte; cached.Cached = true;
        InvalidateDeviceTranslations(deviceId);
        _gic.Trace.Emit(TraceCategory.ItsCmd, "its", $"MAPD dev {deviceId} {(valid ? $"ITT 0x{itt:x} {size + 1} bits" : "unmapped")}");
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
        else if (!EntryAddress(CollectionTable, icid, out var a) || _bus.WriteU64(a, cte) != BusStatus.Ok)
            return ItsError.Code(op, ItsError.CollectionOor);
        _collectionTarget[icid] = valid ? target : -1;
        _gic.Trace.Emit(TraceCategory.ItsCmd, "its", $"MAPC icid {icid} -> {(valid ? $"cpu{target}" : "unmapped")}");
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
        if (pIntid < GicV3.FirstLpi || pIntid >> _gic.Options.IdBits != 0) return ItsError.Code(op, ItsError.PhysicalIdOor);
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
        if (from >= 0 && from != to && _gic.Redistributors[from].ClearLpiPending(intid))
            _gic.Redistributors[to].SetLpiPending(intid);
        var newIte = (ite & ~(0xFFFFUL << 32)) | ((ulong)icid << 32);
        WriteIte(dte, eventId, newIte);
        var key = ((ulong)deviceId << 32) | eventId;
        ref var e = ref _tcache[CacheIndex(key)];
        e.Key = key; e.Intid = intid; e.Icid = icid; e.Valid = true;
        _gic.Trace.Emit(TraceCategory.ItsCmd, "its", $"MOVI dev {deviceId} ev {eventId} (LPI {intid}) -> icid {icid} (cpu{to})");
        return 0;
    }

    uint EventCommand(byte op, uint deviceId, uint eventId)
    {
        var err = Lookup(op, deviceId, eventId, true, out var dte, out var ite);
        if (err != 0) return err;
        var intid = (uint)ite;
        var target = CollectionTarget((ushort)(ite >> 32));
        if (target < 0 && op != ItsOpcode.Discard) return ItsError.Code(op, ItsError.UnmappedCollection);
        var rd = target >= 0 ? _gic.Redistributors[target] : null;
        switch (op)
        {
            case ItsOpcode.Int: rd!.SetLpiPending(intid); break;
            case ItsOpcode.Clear: rd!.ClearLpiPending(intid); break;
            case ItsOpcode.Inv: rd!.InvalidateLpi(intid); break;
            case ItsOpcode.Discard:
                rd?.ClearLpiPending(intid);
                WriteIte(dte, eventId, 0);
                var key = ((ulong)deviceId << 32) | eventId;
                ref var e = ref _tcache[CacheIndex(key)];
                if (e.Key == key) e.Valid = false;
                break;
        }
        return 0;
    }
}
