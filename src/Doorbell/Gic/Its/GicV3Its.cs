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
/// GICv3 Interrupt Translation Service, the MMIO front (Arm IHI 0069 §12.19): the control frame (GITS_CTLR, IIDR,
/// TYPER, CBASER, CWRITER, CREADR, BASER0..7) decoded onto an <see cref="ItsEngine"/>, which owns the tables, caches,
/// command queue and translation. The translation frame (GITS_TRANSLATER at +0x1_0040) is the engine's own
/// <see cref="ItsTranslationFrame"/>: <see cref="Map"/> places it as a second region, so an MSI does not pass through
/// this front (an access to it here, at +0x1_0000 and above, is handed to the frame). The physical ITS is this front
/// over an engine on the system bus and the GIC's redistributors; a vITS is the same front over an engine on guest
/// memory and vCPUs.
/// Known limits: GITS_STATUSR/UMSIR (GICv3.3 unmapped-MSI reporting) read as zero; see <see cref="ItsEngine"/>.
/// </summary>
public sealed class GicV3Its : IMmioHandler
{
    // Control frame registers, IHI 0069 §12.19; the translation frame at +0x10000 (GITS_TRANSLATER: ItsTranslationFrame).
    public const uint GITS_CTLR = 0x0000, GITS_IIDR = 0x0004, GITS_TYPER = 0x0008, GITS_STATUSR = 0x0040,
        GITS_UMSIR = 0x0048, GITS_CBASER = 0x0080, GITS_CWRITER = 0x0088, GITS_CREADR = 0x0090,
        GITS_BASER = 0x0100, GITS_PIDR2 = 0xFFE8;
    /// <summary>GITS_TRANSLATER from the ITS base: the translation frame's register, one 64 KiB frame up.</summary>
    public const uint GITS_TRANSLATER = (uint)ControlFrameSize + ItsTranslationFrame.GITS_TRANSLATER;

    enum Gits { None, Ctlr, Iidr, Typer, Cbaser, Cwriter, Creadr, Baser, Pidr2 }

    /// <summary>The control frame's registers, declared once: the table drives dispatch, access rules and names.</summary>
    public static readonly RegisterDescriptor[] Registers =
    [
        new(GITS_CTLR, 4, "GITS_CTLR", RegisterAccess.ReadWrite, Id: (int)Gits.Ctlr),
        new(GITS_IIDR, 4, "GITS_IIDR", RegisterAccess.ReadOnly, Id: (int)Gits.Iidr),
        new(GITS_TYPER, 8, "GITS_TYPER", RegisterAccess.ReadOnly, Id: (int)Gits.Typer),
        new(GITS_STATUSR, 4, "GITS_STATUSR", RegisterAccess.RazWi),
        new(GITS_UMSIR, 8, "GITS_UMSIR", RegisterAccess.RazWi),
        new(GITS_CBASER, 8, "GITS_CBASER", RegisterAccess.ReadWrite, Id: (int)Gits.Cbaser),
        new(GITS_CWRITER, 8, "GITS_CWRITER", RegisterAccess.ReadWrite, Id: (int)Gits.Cwriter),
        new(GITS_CREADR, 8, "GITS_CREADR", RegisterAccess.ReadOnly, Id: (int)Gits.Creadr),
        new(GITS_BASER, 8, "GITS_BASER", RegisterAccess.ReadWrite, 8, (int)Gits.Baser),
        new(GITS_PIDR2, 4, "GITS_PIDR2", RegisterAccess.ReadOnly, Id: (int)Gits.Pidr2),
    ];
    /// <summary>Both frames: the control frame and the translation frame.</summary>
    public const ulong FrameSize = 0x2_0000;
    /// <summary>The control frame (this front).</summary>
    public const ulong ControlFrameSize = 0x1_0000;
    public const int EntrySize = ItsEngine.EntrySize;
    public const ulong CtlrEnabled = 1, CtlrQuiescent = 1UL << 31;

    /// <summary>The table compiled for dispatch (one index byte per word of the 64 KiB control frame).</summary>
    public static readonly RegisterBlock Block = new("its", Registers, ControlFrameSize, "IHI 0069 §12.19 (read-only register)", pairedWords: true);

    readonly ItsEngine _engine;

    /// <summary>The physical ITS of <paramref name="gic"/>: an engine on the GIC's bus targeting its redistributors.</summary>
    public GicV3Its(GicV3 gic, ItsOptions? options = null)
        : this(new ItsEngine(gic.Bus, new RedistributorTargets(gic), options, gic.Trace, gic.Strict))
    {
    }

    /// <summary>A front over any engine (a vITS: guest memory, vCPU targets).</summary>
    public GicV3Its(ItsEngine engine)
    {
        ArgumentNullException.ThrowIfNull(engine);
        _engine = engine;
    }

    public ItsEngine Engine => _engine;
    public ItsOptions Options => _engine.Options;
    public bool Enabled => _engine.Enabled;
    public bool Stalled => _engine.Stalled;
    public IReadOnlyList<ItsCommandError> CommandErrors => _engine.CommandErrors;
    public long CommandErrorCount => _engine.CommandErrorCount;
    public long CommandsProcessed => _engine.CommandsProcessed;
    public long Translations => _engine.Translations;
    public long DropCount => _engine.DropCount;
    public IEnumerable<ItsDrop> Drops => _engine.Drops;
    public ItsDrop LastDrop => _engine.LastDrop;
    public ItsDropReason Translate(in BusAttributes attributes, uint eventId) => _engine.Translate(attributes, eventId);
    /// <summary>The RDbase value software must use for PE <paramref name="cpu"/> under this ITS's PTA setting.</summary>
    public ulong RdBaseOf(int cpu) => _engine.RdBaseOf(cpu);

    /// <summary>Maps the control frame and, after it, the engine's translation frame (128 KiB in all) at <paramref name="base"/> of <paramref name="map"/>.</summary>
    public void Map(IMmioMap map, PhysAddr @base)
    {
        ArgumentNullException.ThrowIfNull(map);
        var rules = new MmioAccessRules(AccessSizes.All, true, MmioViolation.RazWi);
        map.MapMmio(
            new MmioRegion(@base, ControlFrameSize, this, rules, "gicv3-its"),
            new MmioRegion(new PhysAddr(@base.Value + ControlFrameSize), ItsTranslationFrame.Size, _engine.TranslationFrame, rules, "gicv3-its-translation"));
    }

    // --- MMIO ------------------------------------------------------------------------------------------------

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        if (offset >= ControlFrameSize) return _engine.TranslationFrame.Read(offset - ControlFrameSize, size, out value, attributes);
        value = RegisterDispatch<RegisterFile>.Read(new RegisterFile(_engine), offset, size, in attributes);
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        if (offset >= ControlFrameSize) return _engine.TranslationFrame.Write(offset - ControlFrameSize, size, value, attributes);
        RegisterDispatch<RegisterFile>.Write(new RegisterFile(_engine), offset, size, value, attributes, _engine.Strict);
        return BusStatus.Ok;
    }

    /// <summary>The control frame as a register file over the engine.</summary>
    readonly struct RegisterFile(ItsEngine engine) : IRegisterFile
    {
        public static RegisterBlock Block => GicV3Its.Block;

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        public ulong Read(RegisterRef r, in BusAttributes attributes)
        {
            var id = (Gits)r.Id;
            if (id == Gits.Cwriter) return engine.Cwriter;
            if (id == Gits.Creadr) return engine.Creadr;
            if (id == Gits.Typer) return engine.Typer;
            if (id == Gits.Ctlr) return engine.Enabled ? CtlrEnabled : CtlrQuiescent;
            if (id == Gits.Cbaser) return engine.Cbaser;
            if (id == Gits.Baser) return engine.Baser((int)r.Index);
            if (id == Gits.Iidr) return 0x0100_143B;
            if (id == Gits.Pidr2) return 0x3B;
            return 0;
        }

        public void Write(RegisterRef r, ulong value, in BusAttributes attributes)
        {
            switch ((Gits)r.Id)
            {
                case Gits.Ctlr: engine.SetEnabled((value & 1) != 0); return;
                case Gits.Cbaser: engine.WriteCbaser(value); return;
                case Gits.Cwriter: engine.WriteCwriter(value); return;
                case Gits.Baser: engine.WriteBaser((int)r.Index, value); return;
            }
        }
    }
}
