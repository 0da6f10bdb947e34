using Doorbell.Gic.V2m;
using Doorbell.Gic.V3;
using Doorbell.Memory;
using Doorbell.Tracing;

namespace Doorbell.Gic.V2;

/// <summary>
/// GICv2 distributor and CPU interfaces (Arm IHI 0048B), no Security Extensions. GICD (4 KiB of registers)
/// and GICC (GICC_CTLR, PMR, BPR, IAR, EOIR, RPR, HPPIR, DIR at 0x1000). An interrupt is delivered to the
/// CPUs named in its ITARGETSR byte; the first to acknowledge takes it. The GICC frame and the banked GICD registers
/// (SGI/PPI enables, pending, active, priorities, ICFGR0-1, ITARGETSR0-7, GICD_SGIR's source) are those of the CPU
/// that makes the access (<see cref="BusAttributes.CpuIndex"/>; an index the GIC has no interface for is RAZ/WI).
/// Known limits: an SGI pending from several source CPUs at once is one pending SGI (GICC_IAR's CPUID names the latest
/// source; the architecture keeps one per source); groups 0 and 1 are both acknowledged through GICC_IAR (no FIQ, no
/// aliased AIAR/AEOIR); 8 priority bits; no virtualization extensions (GICH/GICV).
/// </summary>
public sealed class GicV2 : IMmioHandler, ISpiSink
{
    // GICD, IHI 0048B §4.3
    public const uint GICD_CTLR = 0x000, GICD_TYPER = 0x004, GICD_IIDR = 0x008, GICD_IGROUPR = 0x080,
        GICD_ISENABLER = 0x100, GICD_ICENABLER = 0x180, GICD_ISPENDR = 0x200, GICD_ICPENDR = 0x280,
        GICD_ISACTIVER = 0x300, GICD_ICACTIVER = 0x380, GICD_IPRIORITYR = 0x400, GICD_ITARGETSR = 0x800,
        GICD_ICFGR = 0xC00, GICD_SGIR = 0xF00, GICD_PIDR2 = 0xFE8;
    // GICC, IHI 0048B §4.4
    public const uint GICC_CTLR = 0x00, GICC_PMR = 0x04, GICC_BPR = 0x08, GICC_IAR = 0x0C, GICC_EOIR = 0x10,
        GICC_RPR = 0x14, GICC_HPPIR = 0x18, GICC_IIDR = 0xFC, GICC_DIR = 0x1000;

    // Group..Active follow IrqBank.BitField's order (the handlers map one onto the other).
    enum Gicd { None, Ctlr, Typer, Iidr, Group, Enable, Pending, Active, Priority, Targets, Config, Sgir, Pidr2 }
    enum Gicc { None, Ctlr, Pmr, Bpr, Iar, Eoir, Rpr, Hppir, Iidr, Dir }

    // Declared once: the tables drive dispatch (handlers switch on the id), read-only / write-only / W1S / W1C / RAZ-WI
    // behaviour, strict reports and trace names. IPRIORITYR and ITARGETSR are byte-accessible (IHI 0048B §4.3.11/12).
    public static readonly RegisterDescriptor[] DistributorRegisters =
    [
        new(GICD_CTLR, 4, "GICD_CTLR", RegisterAccess.ReadWrite, Id: (int)Gicd.Ctlr),
        new(GICD_TYPER, 4, "GICD_TYPER", RegisterAccess.ReadOnly, Id: (int)Gicd.Typer),
        new(GICD_IIDR, 4, "GICD_IIDR", RegisterAccess.ReadOnly, Id: (int)Gicd.Iidr),
        new(GICD_IGROUPR, 4, "GICD_IGROUPR", RegisterAccess.ReadWrite, 32, (int)Gicd.Group),
        new(GICD_ISENABLER, 4, "GICD_ISENABLER", RegisterAccess.WriteOneToSet, 32, (int)Gicd.Enable),
        new(GICD_ICENABLER, 4, "GICD_ICENABLER", RegisterAccess.WriteOneToClear, 32, (int)Gicd.Enable),
        new(GICD_ISPENDR, 4, "GICD_ISPENDR", RegisterAccess.WriteOneToSet, 32, (int)Gicd.Pending),
        new(GICD_ICPENDR, 4, "GICD_ICPENDR", RegisterAccess.WriteOneToClear, 32, (int)Gicd.Pending),
        new(GICD_ISACTIVER, 4, "GICD_ISACTIVER", RegisterAccess.WriteOneToSet, 32, (int)Gicd.Active),
        new(GICD_ICACTIVER, 4, "GICD_ICACTIVER", RegisterAccess.WriteOneToClear, 32, (int)Gicd.Active),
        new(GICD_IPRIORITYR, 4, "GICD_IPRIORITYR", RegisterAccess.ReadWrite, 255, (int)Gicd.Priority, MinSize: 1, ByteWrites: true),
        new(GICD_ITARGETSR, 4, "GICD_ITARGETSR", RegisterAccess.ReadWrite, 255, (int)Gicd.Targets, MinSize: 1, ByteWrites: true),
        new(GICD_ICFGR, 4, "GICD_ICFGR", RegisterAccess.ReadWrite, 64, (int)Gicd.Config),
        new(GICD_SGIR, 4, "GICD_SGIR", RegisterAccess.WriteOnly, Id: (int)Gicd.Sgir),
        new(GICD_PIDR2, 4, "GICD_PIDR2", RegisterAccess.ReadOnly, Id: (int)Gicd.Pidr2),
    ];
    /// <summary>The distributor table compiled for dispatch.</summary>
    public static readonly RegisterBlock Distributor = new("gicv2", DistributorRegisters, 0x1000, "IHI 0048B §4.3 (read-only register)");

    public static readonly RegisterDescriptor[] CpuInterfaceRegisters =
    [
        new(GICC_CTLR, 4, "GICC_CTLR", RegisterAccess.ReadWrite, Id: (int)Gicc.Ctlr),
        new(GICC_PMR, 4, "GICC_PMR", RegisterAccess.ReadWrite, Id: (int)Gicc.Pmr),
        new(GICC_BPR, 4, "GICC_BPR", RegisterAccess.ReadWrite, Id: (int)Gicc.Bpr),
        // Reading GICC_IAR acknowledges: dispatch reads a register once per access and never merges into a read-only one.
        new(GICC_IAR, 4, "GICC_IAR", RegisterAccess.ReadOnly, Id: (int)Gicc.Iar),
        new(GICC_EOIR, 4, "GICC_EOIR", RegisterAccess.WriteOnly, Id: (int)Gicc.Eoir),
        new(GICC_RPR, 4, "GICC_RPR", RegisterAccess.ReadOnly, Id: (int)Gicc.Rpr),
        new(GICC_HPPIR, 4, "GICC_HPPIR", RegisterAccess.ReadOnly, Id: (int)Gicc.Hppir),
        new(GICC_IIDR, 4, "GICC_IIDR", RegisterAccess.ReadOnly, Id: (int)Gicc.Iidr),
        new(GICC_DIR, 4, "GICC_DIR", RegisterAccess.WriteOnly, Id: (int)Gicc.Dir),
    ];
    /// <summary>The CPU interface table compiled for dispatch (the frame is 8 KiB: GICC_DIR at 0x1000).</summary>
    public static readonly RegisterBlock CpuInterfaceBlock = new("gicv2", CpuInterfaceRegisters, 0x2000, "IHI 0048B §4.4 (read-only register)");

    readonly IrqBank[] _private;
    readonly IrqBank _spis;
    readonly byte[] _targets;
    readonly Cpu[] _cpus;
    readonly byte[] _sgiSource; // [target * 16 + SGI]: the CPU that last sent it (GICC_IAR.CPUID)
    readonly BankedCpuInterface _gicc;
    uint _ctlr;

    public GicV2(int cpuCount = 1, int spiCount = 224, StrictMonitor? strict = null)
    {
        if (cpuCount is < 1 or > 8) throw new ArgumentOutOfRangeException(nameof(cpuCount));
        if (spiCount % 32 != 0 || spiCount is < 0 or > 988) throw new ArgumentOutOfRangeException(nameof(spiCount));
        CpuCount = cpuCount; SpiCount = spiCount;
        Strict = strict ?? new StrictMonitor();
        _private = new IrqBank[cpuCount];
        _cpus = new Cpu[cpuCount];
        _irqTargets = new IInterruptTarget?[cpuCount];
        for (var c = 0; c < cpuCount; c++)
        {
            _private[c] = new IrqBank(32);
            _private[c].WriteConfig(0, 0xAAAA_AAAA, 0); // SGIs edge
            _cpus[c] = new Cpu(this, c);
            var cpu = c;
            _private[c].Raised = () => _irqTargets[cpu]?.Raise();
        }
        _spis = new IrqBank(spiCount) { Raised = Kick };
        _targets = new byte[spiCount];
        _sgiSource = new byte[cpuCount * 16];
        _gicc = new BankedCpuInterface(this);
    }

    readonly IInterruptTarget?[] _irqTargets;

    /// <summary>Connects CPU <paramref name="cpu"/>'s IRQ input: raised when an interrupt may have become pending for it.</summary>
    public void SetTarget(int cpu, IInterruptTarget? target) => _irqTargets[cpu] = target;

    void Kick()
    {
        foreach (var t in _irqTargets) t?.Raise();
    }

    public int CpuCount { get; }

    /// <summary>Called when an SPI is deactivated (EOI, or DIR with EOImode 1): a vGIC's ack notifier (KVM resamplefd).</summary>
    public Action<int>? SpiDeactivated { get; set; }

    /// <summary>The machine's trace (category gicv2), when the board gave one.</summary>
    public Trace? Trace { get; set; }
    public int SpiCount { get; }
    public StrictMonitor Strict { get; }

    /// <summary>CPU <paramref name="cpu"/>'s GICC frame.</summary>
    public IMmioHandler CpuInterface(int cpu) => _cpus[cpu];

    public void Map(IMmioMap bus, PhysAddr gicd, PhysAddr gicc)
    {
        ArgumentNullException.ThrowIfNull(bus);
        var rules = new MmioAccessRules(AccessSizes.All, true, MmioViolation.RazWi);
        bus.MapMmio(new MmioRegion(gicd, 0x1_0000, this, rules, "gicv2-gicd"), new MmioRegion(gicc, 0x1_0000, _gicc, rules, "gicv2-gicc"));
    }

    public IInterruptLine SpiLine(int intid)
    {
        if (intid < 32 || intid >= 32 + SpiCount) throw new ArgumentOutOfRangeException(nameof(intid));
        return new Line(_spis, intid - 32);
    }

    sealed class Line(IrqBank bank, int i) : IInterruptLine
    {
        public void SetLevel(bool asserted) => bank.SetLevel(i, asserted);
    }

    public void PulseSpi(int intid)
    {
        if (intid >= 32 && intid < 32 + SpiCount) _spis.SetPending(intid - 32);
    }

    bool GroupEnabled(bool group1) => (_ctlr & (group1 ? 2u : 1u)) != 0;

    // --- distributor MMIO (banked registers are the accessing CPU's) -------------------------------------------

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        value = (uint)attributes.CpuIndex < (uint)CpuCount ? RegisterDispatch<DistributorFile>.Read(new DistributorFile(this), offset, size, in attributes) : 0;
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        if ((uint)attributes.CpuIndex < (uint)CpuCount) RegisterDispatch<DistributorFile>.Write(new DistributorFile(this), offset, size, value, in attributes, Strict);
        return BusStatus.Ok;
    }

    /// <summary>The GICC frame on the bus: each CPU reaches its own interface through it.</summary>
    sealed class BankedCpuInterface(GicV2 gic) : IMmioHandler
    {
        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
        {
            if ((uint)attributes.CpuIndex < (uint)gic.CpuCount) return gic._cpus[attributes.CpuIndex].Read(offset, size, out value, attributes);
            value = 0;
            return BusStatus.Ok;
        }

        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes) =>
            (uint)attributes.CpuIndex < (uint)gic.CpuCount ? gic._cpus[attributes.CpuIndex].Write(offset, size, value, attributes) : BusStatus.Ok;
    }

    /// <summary>
    /// GICD as a register file: whole registers by id and instance; instance 0 of the bit arrays, IPRIORITYR0-7,
    /// ITARGETSR0-7 and ICFGR0-1 (the SGIs and PPIs) are the accessing CPU's (<see cref="BusAttributes.CpuIndex"/>, checked
    /// by the caller).
    /// </summary>
    readonly struct DistributorFile(GicV2 gic) : IRegisterFile
    {
        public static RegisterBlock Block => Distributor;

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        public ulong Read(RegisterRef r, in BusAttributes attributes)
        {
            var index = (int)r.Index;
            var cpu = attributes.CpuIndex;
            var id = (Gicd)r.Id;
            // The one-bit-per-interrupt arrays first (what Linux touches at run time): ids Group..Active in BitField order.
            if ((uint)(id - Gicd.Group) <= Gicd.Active - Gicd.Group)
                return index == 0 ? gic._private[cpu].ReadBits((IrqBank.BitField)(id - Gicd.Group), 0) : gic._spis.ReadBits((IrqBank.BitField)(id - Gicd.Group), index * 32 - 32);
            switch (id)
            {
                case Gicd.Ctlr: return gic._ctlr;
                // ITLinesNumber[4:0], CPUNumber[7:5] (IHI 0048B §4.3.2)
                case Gicd.Typer: return (uint)((gic.SpiCount + 32) / 32 - 1) | ((uint)(gic.CpuCount - 1) << 5);
                case Gicd.Iidr: return 0x0200_043B;
                case Gicd.Pidr2: return 0x2B; // ArchRev 2
                case Gicd.Priority: return index < 8 ? gic._private[cpu].ReadPriorities(index * 4, 4) : gic._spis.ReadPriorities(index * 4 - 32, 4);
                case Gicd.Targets: return index < 8 ? 0x0101_0101u << cpu : gic.ReadTargets(index * 4 - 32);
                case Gicd.Config: return index < 2 ? gic._private[cpu].ReadConfig(index * 16) : gic._spis.ReadConfig(index * 16 - 32);
                default: return 0;
            }
        }

        public void Write(RegisterRef r, ulong value, in BusAttributes attributes)
        {
            var index = (int)r.Index;
            var cpu = attributes.CpuIndex;
            var v = (uint)value;
            var id = (Gicd)r.Id;
            if ((uint)(id - Gicd.Group) <= Gicd.Active - Gicd.Group)
            {
                var field = (IrqBank.BitField)(id - Gicd.Group);
                if (index == 0) gic._private[cpu].WriteBits(field, 0, v, r.Access); else gic._spis.WriteBits(field, index * 32 - 32, v, r.Access);
                return;
            }
            switch (id)
            {
                case Gicd.Ctlr: gic.WriteCtlr(r, v); return;
                case Gicd.Priority:
                {
                    // A byte store (Linux's) writes just its byte; a whole write all four.
                    var first = index * 4 + r.PartOffset;
                    var n = r.PartSize == 0 ? 4 : r.PartSize;
                    if (index < 8) gic._private[cpu].WritePriorities(first, n, v); else gic._spis.WritePriorities(first - 32, n, v);
                    return;
                }
                case Gicd.Targets:
                    if (index >= 8) gic.WriteTargets(index * 4 + r.PartOffset - 32, r.PartSize == 0 ? 4 : r.PartSize, v); // ITARGETSR0-7 (SGIs, PPIs) are read-only
                    return;
                case Gicd.Config:
                    // ICFGR0 (SGIs) is read-only: always edge.
                    if (index < 2) gic._private[cpu].WriteConfig(index * 16, v, 16); else gic._spis.WriteConfig(index * 16 - 32, v, 0);
                    return;
                case Gicd.Sgir: gic.SendSgi(cpu, v); return;
            }
        }
    }

    // Out of line: the register write path keeps no trace-message locals.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    void WriteCtlr(RegisterRef r, uint v)
    {
        _ctlr = v & 3;
        Kick();
        if (Trace is { } t) t.Emit(TraceCategory.Gicv2, "gicv2", $"{Distributor.NameOf(r)} <- 0x{v:x}");
    }

    uint ReadTargets(int first)
    {
        uint v = 0;
        for (var k = 0; k < 4; k++)
            if (first + k < SpiCount) v |= (uint)_targets[first + k] << (8 * k);
        return v;
    }

    void WriteTargets(int first, int count, uint v)
    {
        for (var k = 0; k < count; k++)
            if (first + k < SpiCount) _targets[first + k] = (byte)((v >> (8 * k)) & ((1u << CpuCount) - 1));
        _spis.SetPriority(0, _spis.Count > 0 ? _spis.Priority(0) : (byte)0); // a target change may make an SPI deliverable elsewhere
    }

    void SendSgi(int cpu, uint v)
    {
        // TargetListFilter[25:24], CPUTargetList[23:16], SGIINTID[3:0] (IHI 0048B §4.3.15)
        var sgi = (int)(v & 0xF);
        var mask = (v >> 24 & 3) switch { 0 => v >> 16 & 0xFF, 1 => 0xFFu & ~(1u << cpu), 2 => 1u << cpu, _ => 0u };
        for (var c = 0; c < CpuCount; c++)
            if ((mask >> c & 1) != 0)
            {
                _sgiSource[c * 16 + sgi] = (byte)cpu;
                _private[c].SetPending(sgi);
            }
    }

    // --- CPU interface -------------------------------------------------------------------------------------------

    sealed class Cpu(GicV2 gic, int index) : IMmioHandler
    {
        uint _ctlr, _pmr, _bpr = 2;
        readonly int[] _stackId = new int[257];
        readonly int[] _stackPrio = new int[257];
        readonly int[] _stackSrc = new int[257];
        int _depth;

        void RaiseOwn() => gic._irqTargets[index]?.Raise();

        int GroupPriority(int p) => p & (0xFF << (int)(_bpr + 1)) & 0xFF;
        int Running => _depth == 0 ? 0x100 : _stackPrio[_depth - 1];

        (int Intid, int Prio) Highest()
        {
            int best = -1, bp = 256;
            var priv = gic._private[index];
            // Only pending interrupts are visited (ascending: ties go to the lowest INTID).
            for (var i = priv.NextPending(0); i >= 0; i = priv.NextPending(i + 1))
                if (priv.Priority(i) < bp && Deliverable(priv, i)) { best = i; bp = priv.Priority(i); }
            var spis = gic._spis;
            for (var i = spis.NextPending(0); i >= 0; i = spis.NextPending(i + 1))
                if (spis.Priority(i) < bp && (gic._targets[i] >> index & 1) != 0 && Deliverable(spis, i)) { best = i + 32; bp = spis.Priority(i); }
            return (best, bp);
        }

        bool Deliverable(IrqBank b, int i)
        {
            if (!b.Enabled(i) || b.Active(i) || !b.Pending(i)) return false;
            var g1 = b.Group1(i);
            return gic.GroupEnabled(g1) && (_ctlr & (g1 ? 2u : 1u)) != 0;
        }

        uint Iar(RegisterRef r)
        {
            var (id, p) = Highest();
            if (id < 0 || p >= _pmr || GroupPriority(p) >= Running) return 1023;
            if (id < 32) gic._private[index].Acknowledge(id); else gic._spis.Acknowledge(id - 32);
            _stackId[_depth] = id; _stackPrio[_depth] = GroupPriority(p); _depth++;
            if (gic.Trace is { } t && t.IsOn(TraceCategory.Gicv2)) t.Emit(TraceCategory.Gicv2, TraceSources.Cpu(index), $"{CpuInterfaceBlock.NameOf(r)} -> {id}");
            return id < 16 ? (uint)id | (uint)gic._sgiSource[index * 16 + id] << 10 : (uint)id; // CPUID[12:10]: an SGI's source
        }

        void Eoi(uint v)
        {
            var id = (int)(v & 0x3FF);
            if (id >= 1020) return;
            if (_depth == 0) { gic.Strict.Report("gicv2", "IHI 0048B §4.4.5 GICC_EOIR", $"EOI {id} with nothing active"); return; }
            if (_stackId[_depth - 1] != id) gic.Strict.Report("gicv2", "IHI 0048B §3.2.2 (EOI order)", $"EOI {id}, expected {_stackId[_depth - 1]}");
            _depth--;
            if ((_ctlr & (1u << 9)) == 0) Deactivate(id);
        }

        void Deactivate(int id)
        {
            if (id < 32) gic._private[index].SetActive(id, false);
            else if (id - 32 < gic.SpiCount)
            {
                gic._spis.SetActive(id - 32, false);
                gic.SpiDeactivated?.Invoke(id);
            }
        }

        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
        {
            value = RegisterDispatch<CpuFile>.Read(new CpuFile(this), offset, size, in attributes);
            return BusStatus.Ok;
        }

        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
        {
            RegisterDispatch<CpuFile>.Write(new CpuFile(this), offset, size, value, in attributes, gic.Strict);
            return BusStatus.Ok;
        }

        /// <summary>This CPU's GICC frame as a register file.</summary>
        readonly struct CpuFile(Cpu c) : IRegisterFile
        {
            public static RegisterBlock Block => CpuInterfaceBlock;

            [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
            public ulong Read(RegisterRef r, in BusAttributes attributes) => (Gicc)r.Id switch
            {
                Gicc.Ctlr => c._ctlr,
                Gicc.Pmr => c._pmr,
                Gicc.Bpr => c._bpr,
                Gicc.Iar => c.Iar(r),
                Gicc.Rpr => c._depth == 0 ? 0xFFu : (uint)c._stackPrio[c._depth - 1],
                Gicc.Hppir => c.Highest().Intid is var h and >= 0 ? (uint)h : 1023u,
                Gicc.Iidr => 0x0002_043B,
                _ => 0,
            };

            [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
            public void Write(RegisterRef r, ulong value, in BusAttributes attributes)
            {
                var v = (uint)value;
                switch ((Gicc)r.Id)
                {
                    case Gicc.Ctlr: c._ctlr = v & (3u | 1u << 9); c.RaiseOwn(); break;
                    case Gicc.Pmr: c._pmr = v & 0xFF; c.RaiseOwn(); break;
                    case Gicc.Bpr: c._bpr = v & 7; break;
                    case Gicc.Eoir: c.Eoi(v); break;
                    case Gicc.Dir: c.Deactivate((int)(v & 0x3FF)); break;
                }
            }
        }
    }
}
