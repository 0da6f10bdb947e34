using Doorbell.Memory;
using Doorbell.Tracing;

namespace Doorbell.Gic.V3;

/// <summary>Build-time parameters of a GICv3.</summary>
public sealed record GicV3Options
{
    /// <summary>Number of PEs, each with a redistributor and a CPU interface.</summary>
    public int CpuCount { get; init; } = 1;
    /// <summary>Number of SPIs (INTIDs 32..32+SpiCount-1); a multiple of 32, at most 988.</summary>
    public int SpiCount { get; init; } = 224;
    /// <summary>INTID bits the distributor supports (GICD_TYPER.IDbits + 1); LPIs exist when ≥ 14. At most 24 here.</summary>
    public int IdBits { get; init; } = 16;
    /// <summary>
    /// True (hardware, QEMU): every LPI pending change is written through to the pending table in memory. False (a
    /// vGIC, as KVM does): pending state lives in the redistributor while EnableLPIs = 1 — the table's contents are
    /// then UNKNOWN to software (IHI 0069 §5.1.2) — and is written out by <see cref="GicV3Redistributor.SavePendingTable"/>.
    /// </summary>
    public bool PendingTableWriteThrough { get; init; } = true;
}

/// <summary>
/// GICv3 distributor, redistributors and CPU interfaces (Arm IHI 0069). Single security state (GICD_CTLR.DS = 1,
/// as QEMU's virt board without EL3), affinity routing always on (ARE RAO/WI), Group 1 delivered through the
/// ICC_*1 interface.
/// Known limits: no Group 0 acknowledge (IAR0/EOIR0) — Group 0 interrupts are never signalled through IAR1; no
/// Secure state; no GICv4 vLPIs (the redistributor's VLPI frame is not mapped); no extended SPI/PPI ranges;
/// 8 bits of priority; LPI ID space limited to 24 bits; GICD_TYPER.MBIS = 0 (no GICD_SETSPI_NSR MSIs).
/// </summary>
public sealed class GicV3 : IMmioHandler, V2m.ISpiSink
{
    // GICD registers, Arm IHI 0069 §12.9. Declared once: the table drives dispatch (handlers switch on the id),
    // read-only / W1S / W1C / RAZ-WI behaviour, strict reports and trace names.
    public const uint GICD_CTLR = 0x0000, GICD_TYPER = 0x0004, GICD_IIDR = 0x0008, GICD_TYPER2 = 0x000C,
        GICD_STATUSR = 0x0010, GICD_IGROUPR = 0x0080, GICD_ISENABLER = 0x0100, GICD_ICENABLER = 0x0180,
        GICD_ISPENDR = 0x0200, GICD_ICPENDR = 0x0280, GICD_ISACTIVER = 0x0300, GICD_ICACTIVER = 0x0380,
        GICD_IPRIORITYR = 0x0400, GICD_ICFGR = 0x0C00, GICD_IGRPMODR = 0x0D00, GICD_IROUTER = 0x6000,
        GICD_PIDR2 = 0xFFE8;

    // Group..Active follow IrqBank.BitField's order (the handlers map one onto the other).
    enum Gicd { None, Ctlr, Typer, Iidr, Typer2, Group, Enable, Pending, Active, Priority, Config, Router, Pidr2 }

    public static readonly RegisterDescriptor[] DistributorRegisters =
    [
        new(GICD_CTLR, 4, "GICD_CTLR", RegisterAccess.ReadWrite, Id: (int)Gicd.Ctlr),
        new(GICD_TYPER, 4, "GICD_TYPER", RegisterAccess.ReadOnly, Id: (int)Gicd.Typer),
        new(GICD_IIDR, 4, "GICD_IIDR", RegisterAccess.ReadOnly, Id: (int)Gicd.Iidr),
        new(GICD_TYPER2, 4, "GICD_TYPER2", RegisterAccess.ReadOnly, Id: (int)Gicd.Typer2),
        new(GICD_STATUSR, 4, "GICD_STATUSR", RegisterAccess.RazWi),
        new(GICD_IGROUPR, 4, "GICD_IGROUPR", RegisterAccess.ReadWrite, 32, (int)Gicd.Group),
        new(GICD_ISENABLER, 4, "GICD_ISENABLER", RegisterAccess.WriteOneToSet, 32, (int)Gicd.Enable),
        new(GICD_ICENABLER, 4, "GICD_ICENABLER", RegisterAccess.WriteOneToClear, 32, (int)Gicd.Enable),
        new(GICD_ISPENDR, 4, "GICD_ISPENDR", RegisterAccess.WriteOneToSet, 32, (int)Gicd.Pending),
        new(GICD_ICPENDR, 4, "GICD_ICPENDR", RegisterAccess.WriteOneToClear, 32, (int)Gicd.Pending),
        new(GICD_ISACTIVER, 4, "GICD_ISACTIVER", RegisterAccess.WriteOneToSet, 32, (int)Gicd.Active),
        new(GICD_ICACTIVER, 4, "GICD_ICACTIVER", RegisterAccess.WriteOneToClear, 32, (int)Gicd.Active),
        new(GICD_IPRIORITYR, 4, "GICD_IPRIORITYR", RegisterAccess.ReadWrite, 255, (int)Gicd.Priority, MinSize: 1, ByteWrites: true),
        new(GICD_ICFGR, 4, "GICD_ICFGR", RegisterAccess.ReadWrite, 64, (int)Gicd.Config),
        new(GICD_IGRPMODR, 4, "GICD_IGRPMODR", RegisterAccess.RazWi, 32),
        new(GICD_IROUTER, 8, "GICD_IROUTER", RegisterAccess.ReadWrite, 1020, (int)Gicd.Router),
        new(GICD_PIDR2, 4, "GICD_PIDR2", RegisterAccess.ReadOnly, Id: (int)Gicd.Pidr2),
    ];
    /// <summary>The distributor table compiled for dispatch (one index byte per word of the 64 KiB frame).</summary>
    public static readonly RegisterBlock Distributor = new("gicd", DistributorRegisters, 0x1_0000, "IHI 0069 §12.9 (read-only register)");

    // GICD_CTLR bits with DS = 1 (IHI 0069 §12.9.4)
    public const uint CtlrEnableGrp0 = 1u << 0, CtlrEnableGrp1 = 1u << 1, CtlrAre = 1u << 4, CtlrDs = 1u << 6;

    public const int FirstSpi = 32;
    public const int FirstLpi = 8192;
    public const int SpuriousIntid = 1023;

    readonly IrqBank _spis;
    readonly ulong[] _router;
    uint _ctlr = CtlrAre | CtlrDs;
    readonly uint _typer;

    public GicV3(IMemoryView bus, GicV3Options? options = null, Trace? trace = null, StrictMonitor? strict = null)
    {
        ArgumentNullException.ThrowIfNull(bus);
        Options = options ?? new GicV3Options();
        if (Options.CpuCount is < 1 or > 256) throw new ArgumentOutOfRangeException(nameof(options), "CpuCount must be 1..256");
        if (Options.SpiCount % 32 != 0 || Options.SpiCount is < 0 or > 988 + 4) throw new ArgumentOutOfRangeException(nameof(options), "SpiCount must be a multiple of 32, at most 988");
        if (Options.IdBits is < 14 or > 24) throw new ArgumentOutOfRangeException(nameof(options), "IdBits must be 14..24");
        Bus = bus;
        Trace = trace ?? new Trace();
        Strict = strict ?? new StrictMonitor();
        _spis = new IrqBank(Options.SpiCount) { Raised = Kick };
        _router = new ulong[Options.SpiCount];
        // ITLinesNumber[4:0], CPUNumber ignored with ARE, LPIS 17, IDbits[23:19]  (IHI 0069 §12.9.38)
        _typer = (uint)((Options.SpiCount + 32) / 32 - 1) | (1u << 17) | ((uint)(Options.IdBits - 1) << 19);
        var rds = new GicV3Redistributor[Options.CpuCount];
        var cpus = new GicV3CpuInterface[Options.CpuCount];
        for (var i = 0; i < Options.CpuCount; i++)
        {
            rds[i] = new GicV3Redistributor(this, i);
            cpus[i] = new GicV3CpuInterface(this, rds[i], i);
        }
        Redistributors = rds;
        CpuInterfaces = cpus;
        RedistributorFrames = new GicV3RedistributorRegion(this);
    }

    public GicV3Options Options { get; }
    public IMemoryView Bus { get; }
    public Trace Trace { get; }
    public StrictMonitor Strict { get; }
    public GicV3Redistributor[] Redistributors { get; }
    public GicV3CpuInterface[] CpuInterfaces { get; }
    /// <summary>The MMIO handler of all redistributors (frames of 128 KiB, CPU 0 first).</summary>
    public GicV3RedistributorRegion RedistributorFrames { get; }
    /// <summary>Physical base of the redistributor region once mapped (used by ITSs with GITS_TYPER.PTA = 1).</summary>
    public ulong RedistributorBase { get; private set; } = ulong.MaxValue;

    /// <summary>Called when an SPI is deactivated (EOI with EOImode 0, or DIR): a vGIC's ack notifier (KVM resamplefd).</summary>
    public Action<int>? SpiDeactivated { get; set; }

    internal IrqBank Spis => _spis;
    internal bool Group1Enabled => (_ctlr & CtlrEnableGrp1) != 0;

    /// <summary>Maps GICD (64 KiB) and the redistributors (CpuCount × 128 KiB) on the bus.</summary>
    public void Map(PhysAddr gicd, PhysAddr gicr) =>
        Map(Bus as IMmioMap ?? throw new InvalidOperationException("the GIC's memory view places no MMIO: use Map(map, gicd, gicr)"), gicd, gicr);

    /// <summary>
    /// Maps GICD and the redistributors on <paramref name="map"/>, which may differ from the view the GIC reads its LPI
    /// tables through (a vGIC: frames on the VM's in-kernel MMIO bus, tables in guest memory).
    /// </summary>
    public void Map(IMmioMap map, PhysAddr gicd, PhysAddr gicr)
    {
        ArgumentNullException.ThrowIfNull(map);
        var rules = MmioAccessRules.Registers32And64 with { Sizes = AccessSizes.All, OnViolation = MmioViolation.RazWi };
        map.MapMmio(
            new MmioRegion(gicd, 0x1_0000, this, rules, "gicv3-gicd"),
            new MmioRegion(gicr, (ulong)Options.CpuCount * GicV3Redistributor.FrameSize, RedistributorFrames, rules, "gicv3-gicr"));
        RedistributorBase = gicr.Value;
    }

    /// <summary>Pushes a possible new interrupt to every PE (SPIs may route to any; a PE with nothing to take finds IAR idle).</summary>
    internal void Kick()
    {
        foreach (var c in CpuInterfaces) c.Target?.Raise();
    }

    /// <summary>Affinity (MPIDR Aff3.Aff2.Aff1.Aff0 packed as in GICD_IROUTER) of PE <paramref name="cpu"/>: Aff0 = cpu % 16, Aff1 = cpu / 16.</summary>
    public static ulong AffinityOf(int cpu) => (uint)(cpu % 16) | ((ulong)(uint)(cpu / 16) << 8);

    /// <summary>The PE with affinity <paramref name="aff"/> (IROUTER layout), or -1.</summary>
    public int CpuOfAffinity(ulong aff)
    {
        var a0 = (int)(aff & 0xFF); var a1 = (int)(aff >> 8 & 0xFF);
        if ((aff >> 16 & 0xFF) != 0 || (aff >> 32 & 0xFF) != 0 || a0 >= 16) return -1;
        var cpu = a1 * 16 + a0;
        return cpu < Options.CpuCount ? cpu : -1;
    }

    /// <summary>A wired interrupt input for SPI INTID <paramref name="intid"/> (32 ≤ intid &lt; 32 + SpiCount).</summary>
    public IInterruptLine SpiLine(int intid)
    {
        if (intid < FirstSpi || intid >= FirstSpi + Options.SpiCount) throw new ArgumentOutOfRangeException(nameof(intid));
        return new Line(this, intid - FirstSpi);
    }

    sealed class Line(GicV3 gic, int index) : IInterruptLine
    {
        public void SetLevel(bool asserted) => gic._spis.SetLevel(index, asserted);
    }

    /// <summary>Sets SPI pending as an edge (GICv2m-style MSI into a v3 distributor, GICD_SETSPI).</summary>
    public void PulseSpi(int intid)
    {
        if (intid >= FirstSpi && intid < FirstSpi + Options.SpiCount) _spis.SetPending(intid - FirstSpi);
    }

    /// <summary>The PE an SPI is routed to, or -1 (IROUTER names no PE, or 1-of-N with no PE able to take it).</summary>
    internal int SpiTarget(int index)
    {
        var r = _router[index];
        if ((r & (1UL << 31)) != 0)
        {
            for (var c = 0; c < CpuInterfaces.Length; c++)
                if (CpuInterfaces[c].Group1Enabled && Redistributors[c].Awake) return c;
            return -1;
        }
        return CpuOfAffinity(r & 0xFF_00FF_FFFF);
    }

    // Out of line: the register write path keeps no trace-message locals.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    void WriteCtlr(RegisterRef r, uint v)
    {
        _ctlr = (v & (CtlrEnableGrp0 | CtlrEnableGrp1)) | CtlrAre | CtlrDs;
        _spis.NoteRoutingChange();
        Kick();
        Trace.Emit(TraceCategory.Gicd, "gicd", $"{Distributor.NameOf(r)} <- 0x{v:x}");
    }

    // --- GICD MMIO -----------------------------------------------------------------------------------------

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        value = RegisterDispatch<DistributorFile>.Read(new DistributorFile(this), offset, size, in attributes);
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        RegisterDispatch<DistributorFile>.Write(new DistributorFile(this), offset, size, value, attributes, Strict);
        return BusStatus.Ok;
    }

    /// <summary>GICD as a register file: whole registers by id and instance (SGIs/PPIs live in the redistributors: RAZ/WI here).</summary>
    readonly struct DistributorFile(GicV3 gic) : IRegisterFile
    {
        public static RegisterBlock Block => Distributor;

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        public ulong Read(RegisterRef r, in BusAttributes attributes)
        {
            var index = r.Index;
            var spis = gic._spis;
            var first = (int)index * 32 - FirstSpi; // first SPI of a one-bit-per-interrupt register
            var id = (Gicd)r.Id;
            // The registers Linux touches at run time first, with conditional branches: the one-bit-per-interrupt
            // arrays (ids Group..Active in IrqBank.BitField order) and IROUTER.
            if ((uint)(id - Gicd.Group) <= Gicd.Active - Gicd.Group) return first < 0 ? 0 : spis.ReadBits((IrqBank.BitField)(id - Gicd.Group), first);
            if (id == Gicd.Router)
            {
                var router = gic._router;
                var spi = index - FirstSpi; // wraps for the SGI/PPI instances (reserved with ARE)
                return spi < (uint)router.Length ? router[spi] : 0;
            }
            switch (id)
            {
                case Gicd.Ctlr: return gic._ctlr;
                case Gicd.Typer: return gic._typer;
                case Gicd.Iidr: return 0x0100_143B; // implementer Arm (0x43B), an arbitrary product revision
                case Gicd.Pidr2: return 0x3B; // ArchRev 3 in [7:4]
                case Gicd.Priority: return index < FirstSpi / 4 ? 0 : spis.ReadPriorities((int)index * 4 - FirstSpi, 4);
                case Gicd.Config: return index < FirstSpi / 16 ? 0 : spis.ReadConfig((int)index * 16 - FirstSpi);
                default: return 0;
            }
        }

        public void Write(RegisterRef r, ulong value, in BusAttributes attributes)
        {
            var index = r.Index;
            var spis = gic._spis;
            var first = (int)index * 32 - FirstSpi;
            var v = (uint)value;
            var id = (Gicd)r.Id;
            if ((uint)(id - Gicd.Group) <= Gicd.Active - Gicd.Group)
            {
                if (first >= 0) spis.WriteBits((IrqBank.BitField)(id - Gicd.Group), first, v, r.Access);
                return;
            }
            switch (id)
            {
                case Gicd.Ctlr: gic.WriteCtlr(r, v); return;
                case Gicd.Priority:
                    // A byte store (Linux's) writes just its byte; a whole write all four.
                    if (index >= FirstSpi / 4) spis.WritePriorities((int)index * 4 + r.PartOffset - FirstSpi, r.PartSize == 0 ? 4 : r.PartSize, v);
                    return;
                case Gicd.Config: if (index >= FirstSpi / 16) spis.WriteConfig((int)index * 16 - FirstSpi, v, 0); return;
                case Gicd.Router:
                    var router = gic._router;
                    var spi = index - FirstSpi;
                    if (spi >= (uint)router.Length) return;
                    router[spi] = value & (0xFF_8000_0000UL | 0xFF_FFFF); // Interrupt_Routing_Mode, Aff3..Aff0
                    spis.NoteRoutingChange(); // a routing change may make an SPI deliverable elsewhere
                    gic.Kick();
                    return;
            }
        }
    }
}
