using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Tracing;
using Doorbell.Vmsa;

namespace Doorbell.Smmu.V3;

// SMMUv3 (Arm IHI 0070), Non-secure programming interface, programmed only through its registers (page 0 and
// page 1 at +0x10000) and its in-memory structures (stream table, CDs, command and event queues).
//
// Known limits (each also in docs/deviations.md):
// - Non-secure state only: no Secure registers, SSEC commands are illegal, NS attributes are not modelled.
// - No ATS, PRI, stall model, HTTU, BTM, E2H/HYP, VATOS, MPAM, PMCG or RAS: the ID registers say so, and the
//   corresponding commands (ATC_INV, PRI_RESP, RESUME, STALL_TERM, TLBI_EL2_*, TLBI_EL3_*) are CERROR_ILL.
// - AArch64, little-endian tables only (IDR0.TTF = 2, TTENDIAN = 2).
// - Everything happens synchronously: a PROD write runs the queue to completion (or to an error) before the
//   write returns, so CR0ACK, GBPA.UPDATE and CMD_SYNC complete at once. Memory attributes (CR1, RA/WA, SH,
//   MemAttr) are stored and read back but have no effect.
// - The config cache never holds invalid (V = 0) or ILLEGAL structures, so no CFGI is needed to make them valid.

/// <summary>An SMMUv3 instance over a memory view (its tables, queues and DMA go through it): map its registers with <see cref="Map(PhysAddr, string)"/>.</summary>
[System.Runtime.CompilerServices.SkipLocalsInit]
public sealed partial class SmmuV3 : IMmioHandler, IIommuUpstream
{
    readonly IMemoryView _bus;
    readonly SmmuV3Options _o;
    readonly Trace _trace;
    readonly StrictMonitor? _strict;
    readonly BusAttributes _ownAttributes;
    readonly Iotlb _iotlb;
    readonly Translator _translator;
    internal Translator Translator => _translator;

    // Register state (IHI 0070 §6.3).
    uint _cr0, _cr1, _cr2, _gbpa = SmmuV3Field.GbpaReset, _irqCtrl, _gerror, _gerrorn;
    ulong _gerrorIrqCfg0; uint _gerrorIrqCfg1, _gerrorIrqCfg2;
    ulong _strtabBase; uint _strtabBaseCfg;
    ulong _cmdqBase; uint _cmdqProd, _cmdqCons;
    ulong _eventqBase; uint _eventqProd, _eventqCons;
    ulong _eventqIrqCfg0; uint _eventqIrqCfg1, _eventqIrqCfg2;

    /// <summary>Bumped by every change that can alter how a stream resolves (CFGI, CR0, GBPA, STRTAB_*); ports revalidate against it.</summary>
    internal ulong Generation
    {
        get => _translator.ConfigurationGeneration;
        set => _translator.ConfigurationGeneration = value;
    }

    public SmmuV3(IMemoryView bus, SmmuV3Options? options = null, Trace? trace = null, StrictMonitor? strict = null, Iotlb? iotlb = null)
    {
        ArgumentNullException.ThrowIfNull(bus);
        _bus = bus;
        _o = options ?? SmmuV3Options.QemuVirt;
        _o.Validate();
        _trace = trace ?? new Trace("smmuv3");
        _strict = strict;
        _ownAttributes = _o.OwnDeviceId is { } id ? BusAttributes.FromDevice(id) : new BusAttributes(0, false, true, false);
        _iotlb = iotlb ?? new Iotlb();
        _translator = new Translator(bus, _iotlb, strict);
    }

    public SmmuV3Options Options => _o;
    public Iotlb Iotlb => _iotlb;
    public IMemoryView Bus => _bus;
    internal StrictMonitor? Strict => _strict;
    internal bool StrictEnabled => _strict is { Enabled: true };

    /// <summary>Wired interrupt outputs (used when the corresponding MSI address is 0 or MSIs are not implemented).</summary>
    public IInterruptLine? EventQueueIrq { get; set; }
    public IInterruptLine? GerrorIrq { get; set; }
    public IInterruptLine? CmdSyncIrq { get; set; }

    /// <summary>Counters, for reports and tests.</summary>
    public long CommandsProcessed { get; private set; }
    public long SyncsCompleted { get; private set; }
    public long SevCount { get; private set; }
    public long EventsRecorded { get; private set; }
    public long EventsDropped { get; private set; }
    public long ConfigFetches { get; private set; }

    /// <summary>Maps both register pages at <paramref name="base"/> (128 KiB).</summary>
    public void Map(PhysAddr @base, string name = "smmuv3") =>
        Map(_bus as IMmioMap ?? throw new InvalidOperationException("the SMMU's memory view places no MMIO: use Map(map, base)"), @base, name);

    /// <summary>Maps both register pages at <paramref name="base"/> of <paramref name="map"/> (the SMMU's memory view may differ).</summary>
    public void Map(IMmioMap map, PhysAddr @base, string name = "smmuv3")
    {
        ArgumentNullException.ThrowIfNull(map);
        map.MapMmio(@base, SmmuV3Reg.FrameSize, this, MmioAccessRules.Registers32And64, name);
    }

    bool SmmuEnabled => (_cr0 & SmmuV3Field.Cr0SmmuEn) != 0;
    bool CmdqEnabled => (_cr0 & SmmuV3Field.Cr0CmdqEn) != 0;
    bool EventqEnabled => (_cr0 & SmmuV3Field.Cr0EventqEn) != 0;

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        value = RegisterDispatch<RegisterFile>.Read(new RegisterFile(this), offset, size, in attributes);
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        RegisterDispatch<RegisterFile>.Write(new RegisterFile(this), offset, size, value, attributes, _strict);
        return BusStatus.Ok;
    }

    /// <summary>The register pages as a register file: whole registers by id (the table in <see cref="SmmuV3Reg"/>).</summary>
    readonly struct RegisterFile(SmmuV3 smmu) : IRegisterFile
    {
        public static RegisterBlock Block => SmmuV3Reg.Block;

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        public ulong Read(RegisterRef r, in BusAttributes attributes) => smmu.ReadRegister((SmmuV3Reg.RegId)r.Id);
        public void Write(RegisterRef r, ulong value, in BusAttributes attributes) => smmu.WriteRegister(r, value);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    ulong ReadRegister(SmmuV3Reg.RegId id)
    {
        // What a driver polls and reads at run time first (conditional branches), the rest by the switch.
        if (id == SmmuV3Reg.RegId.CmdqCons) return _cmdqCons;
        if (id == SmmuV3Reg.RegId.EventqProd) return _eventqProd;
        if (id == SmmuV3Reg.RegId.Gerror) return _gerror;
        if (id == SmmuV3Reg.RegId.CmdqProd) return _cmdqProd;
        return ReadOtherRegister(id);
    }

    ulong ReadOtherRegister(SmmuV3Reg.RegId id) => id switch
    {
        SmmuV3Reg.RegId.GerrorIrqCfg0 => _gerrorIrqCfg0,
        SmmuV3Reg.RegId.StrtabBase => _strtabBase,
        SmmuV3Reg.RegId.CmdqBase => _cmdqBase,
        SmmuV3Reg.RegId.EventqBase => _eventqBase,
        SmmuV3Reg.RegId.EventqIrqCfg0 => _eventqIrqCfg0,
        SmmuV3Reg.RegId.Idr0 => _o.Idr0,
        SmmuV3Reg.RegId.Idr1 => _o.Idr1,
        SmmuV3Reg.RegId.Idr3 => _o.Idr3,
        SmmuV3Reg.RegId.Idr5 => _o.Idr5,
        SmmuV3Reg.RegId.Iidr => _o.Iidr,
        SmmuV3Reg.RegId.Aidr => _o.Aidr,
        SmmuV3Reg.RegId.Cr0 => _cr0,
        SmmuV3Reg.RegId.Cr0ack => _cr0, // updates complete synchronously
        SmmuV3Reg.RegId.Cr1 => _cr1,
        SmmuV3Reg.RegId.Cr2 => _cr2,
        SmmuV3Reg.RegId.Gbpa => _gbpa,
        SmmuV3Reg.RegId.IrqCtrl => _irqCtrl,
        SmmuV3Reg.RegId.IrqCtrlack => _irqCtrl,
        SmmuV3Reg.RegId.Gerrorn => _gerrorn,
        SmmuV3Reg.RegId.GerrorIrqCfg1 => _gerrorIrqCfg1,
        SmmuV3Reg.RegId.GerrorIrqCfg2 => _gerrorIrqCfg2,
        SmmuV3Reg.RegId.StrtabBaseCfg => _strtabBaseCfg,
        SmmuV3Reg.RegId.EventqCons => _eventqCons,
        SmmuV3Reg.RegId.EventqIrqCfg1 => _eventqIrqCfg1,
        SmmuV3Reg.RegId.EventqIrqCfg2 => _eventqIrqCfg2,
        // CoreSight-style identification (Arm MMU-600-like part number 0x483, JEP106 Arm 0x43B).
        SmmuV3Reg.RegId.Pidr0 => 0x83,
        SmmuV3Reg.RegId.Pidr1 => 0xB4,
        SmmuV3Reg.RegId.Pidr2 => 0x0B,
        SmmuV3Reg.RegId.Pidr3 => 0x00,
        SmmuV3Reg.RegId.Pidr4 => 0x04,
        SmmuV3Reg.RegId.Cidr0 => 0x0D,
        SmmuV3Reg.RegId.Cidr1 => 0xF0,
        SmmuV3Reg.RegId.Cidr2 => 0x05,
        SmmuV3Reg.RegId.Cidr3 => 0xB1,
        _ => 0, // IDR2, IDR4, STATUSR; reserved offsets never get here (RAZ/WI by the table)
    };

    void WriteRegister(RegisterRef r, ulong value)
    {
        var v = (uint)value;
        var id = (SmmuV3Reg.RegId)r.Id;
        // The run-time writes first (conditional branches): the command queue doorbell and the event queue consumer.
        if (id == SmmuV3Reg.RegId.CmdqProd)
        {
            _cmdqProd = v & QueueIndexMask(CmdqLog2Size);
            ProcessCommands();
            return;
        }
        if (id == SmmuV3Reg.RegId.EventqCons)
        {
            _eventqCons = v & (QueueIndexMask(EventqLog2Size) | SmmuV3Field.QOvflg);
            return;
        }
        switch (id)
        {
            case SmmuV3Reg.RegId.GerrorIrqCfg0:
                _gerrorIrqCfg0 = value & SmmuV3Field.MsiAddrMask;
                break;
            case SmmuV3Reg.RegId.EventqIrqCfg0:
                _eventqIrqCfg0 = value & SmmuV3Field.MsiAddrMask;
                break;
            case SmmuV3Reg.RegId.StrtabBase:
                if (SmmuEnabled)
                {
                    IgnoredWrite(r, "IHI 0070 §6.3.24: STRTAB_BASE must not be changed while CR0.SMMUEN = 1", value, " while SMMUEN = 1");
                    return;
                }
                _strtabBase = value & (SmmuV3Field.StrtabBaseAddrMask | SmmuV3Field.StrtabBaseRa);
                Generation++;
                break;
            case SmmuV3Reg.RegId.CmdqBase:
                if (CmdqEnabled)
                {
                    IgnoredWrite(r, "IHI 0070 §6.3.25: CMDQ_BASE must not be changed while CR0.CMDQEN = 1", value, " while CMDQEN = 1");
                    return;
                }
                _cmdqBase = value & (SmmuV3Field.QBaseAddrMask | SmmuV3Field.QBaseRwa | SmmuV3Field.QBaseLog2SizeMask);
                break;
            case SmmuV3Reg.RegId.EventqBase:
                if (EventqEnabled)
                {
                    IgnoredWrite(r, "IHI 0070 §6.3.28: EVENTQ_BASE must not be changed while CR0.EVENTQEN = 1", value, " while EVENTQEN = 1");
                    return;
                }
                _eventqBase = value & (SmmuV3Field.QBaseAddrMask | SmmuV3Field.QBaseRwa | SmmuV3Field.QBaseLog2SizeMask);
                break;
            case SmmuV3Reg.RegId.Cr0:
                WriteCr0(v & SmmuV3Field.Cr0Mask, r);
                break;
            case SmmuV3Reg.RegId.Cr1:
                _cr1 = v & SmmuV3Field.Cr1Mask;
                break;
            case SmmuV3Reg.RegId.Cr2:
                // E2H is RES0 without HYP; PTM is stored (no BTM, so it has no effect).
                _cr2 = v & (SmmuV3Field.Cr2RecInvSid | SmmuV3Field.Cr2Ptm);
                break;
            case SmmuV3Reg.RegId.Gbpa:
                // Only a write with UPDATE = 1 changes the fields; the update completes at once (UPDATE reads 0).
                if ((v & SmmuV3Field.GbpaUpdate) != 0)
                {
                    _gbpa = v & SmmuV3Field.GbpaFieldsMask;
                    Generation++;
                }
                break;
            case SmmuV3Reg.RegId.IrqCtrl:
                _irqCtrl = v & (SmmuV3Field.IrqCtrlGerrorEn | SmmuV3Field.IrqCtrlEventqEn);
                break;
            case SmmuV3Reg.RegId.Gerrorn:
                WriteGerrorn(v & SmmuV3Field.GerrorMask);
                break;
            case SmmuV3Reg.RegId.GerrorIrqCfg1:
                _gerrorIrqCfg1 = v;
                break;
            case SmmuV3Reg.RegId.GerrorIrqCfg2:
                _gerrorIrqCfg2 = v & SmmuV3Field.MsiCfg2Mask;
                break;
            case SmmuV3Reg.RegId.StrtabBaseCfg:
                if (SmmuEnabled)
                {
                    IgnoredWrite(r, "IHI 0070 §6.3.25: STRTAB_BASE_CFG must not be changed while CR0.SMMUEN = 1", v, " while SMMUEN = 1");
                    return;
                }
                _strtabBaseCfg = v & SmmuV3Field.StrtabCfgMask;
                Generation++;
                break;
            case SmmuV3Reg.RegId.CmdqCons:
                if (CmdqEnabled)
                {
                    // Read-only while the queue is enabled (QEMU lets it be written).
                    IgnoredWrite(r, "IHI 0070 §6.3.27: CMDQ_CONS is read-only while CR0.CMDQEN = 1", v, "");
                    return;
                }
                _cmdqCons = v & (QueueIndexMask(CmdqLog2Size) | SmmuV3Field.CmdqConsErrMask);
                break;
            case SmmuV3Reg.RegId.EventqProd:
                if (EventqEnabled)
                {
                    IgnoredWrite(r, "IHI 0070 §6.3.29: EVENTQ_PROD is read-only while CR0.EVENTQEN = 1", v, "");
                    return;
                }
                _eventqProd = v & (QueueIndexMask(EventqLog2Size) | SmmuV3Field.QOvflg);
                break;
            case SmmuV3Reg.RegId.EventqIrqCfg1:
                _eventqIrqCfg1 = v;
                break;
            case SmmuV3Reg.RegId.EventqIrqCfg2:
                _eventqIrqCfg2 = v & SmmuV3Field.MsiCfg2Mask;
                break;
        }
    }

    void WriteCr0(uint v, RegisterRef r)
    {
        var old = _cr0;
        _cr0 = v;
        if ((old ^ v) != 0) Generation++;
        if (old != v) _trace.Emit(TraceCategory.SmmuReg, TraceSource, $"{SmmuV3Reg.Block.NameOf(r)} 0x{old:x} -> 0x{v:x}");
        // Enabling the command queue starts processing whatever is already between CONS and PROD.
        if ((old & SmmuV3Field.Cr0CmdqEn) == 0 && (v & SmmuV3Field.Cr0CmdqEn) != 0)
            ProcessCommands();
    }

    void ReportStrict(string what, string rule, string message) => _strict?.Report("smmuv3", rule, $"{what}: {message}");

    /// <summary>A write the register's state forbids (out of line: the register write path keeps no message-building locals).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    void IgnoredWrite(RegisterRef r, string rule, ulong value, string why) =>
        ReportStrict(SmmuV3Reg.Block.NameOf(r), rule, $"write 0x{value:x} ignored{why}");

    internal void TraceEmit(string message) => _trace.EmitText(TraceCategory.GuestError, TraceSource, message);

    /// <summary>The machine's trace this SMMU emits to (categories smmu_*).</summary>
    public Trace Trace => _trace;

    /// <summary>This model's track name in traces.</summary>
    public string TraceSource { get; } = "smmuv3";

    // ----- queue geometry (IHI 0070 §3.5): index = low log2size bits, wrap = bit log2size -----

    int CmdqLog2Size => (int)Math.Min(_cmdqBase & SmmuV3Field.QBaseLog2SizeMask, (ulong)_o.CommandQueueLog2Max);
    int EventqLog2Size => (int)Math.Min(_eventqBase & SmmuV3Field.QBaseLog2SizeMask, (ulong)_o.EventQueueLog2Max);
    static uint QueueIndexMask(int log2) => (2u << log2) - 1; // index + wrap bit
}
