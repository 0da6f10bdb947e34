using Doorbell.Memory;

namespace Doorbell.Smmu.V3;

/// <summary>One event record as written to the event queue (IHI 0070 §7.3), for reports and tests.</summary>
public readonly record struct SmmuV3Event(ulong Q0, ulong Q1, ulong Q2, ulong Q3)
{
    public byte Id => (byte)Q0;
    public uint StreamId => (uint)(Q0 >> Evt.SidShift);
    public bool SubstreamValid => ((Q0 >> Evt.Ssv) & 1) != 0;
    public uint SubstreamId => (uint)((Q0 >> Evt.SsidShift) & 0xFFFFF);
    public bool Read => ((Q1 >> Evt.RnW) & 1) != 0;
    public bool Stage2 => ((Q1 >> Evt.S2) & 1) != 0;
    public uint Class => (uint)((Q1 >> Evt.ClassShift) & 3);
    public bool Instruction => ((Q1 >> Evt.InD) & 1) != 0;
    public bool Privileged => ((Q1 >> Evt.PnU) & 1) != 0;
    public ulong InputAddress => Q2;
    public ulong Ipa => Q3 & Evt.IpaMask;
    public ulong FetchAddress => Q3 & Evt.FetchAddrMask;

    public static SmmuV3Event Parse(ReadOnlySpan<ulong> q) => new(q[0], q[1], q[2], q[3]);

    public override string ToString()
    {
        var s = $"{Evt.Name(Id)} SID 0x{StreamId:x}";
        if (SubstreamValid) s += $" SSID 0x{SubstreamId:x}";
        switch (Id)
        {
            case Evt.F_TRANSLATION or Evt.F_ADDR_SIZE or Evt.F_ACCESS or Evt.F_PERMISSION:
                s += $" {(Read ? "read" : "write")} input 0x{InputAddress:x} stage {(Stage2 ? 2 : 1)} class {Class switch { 0 => "CD", 1 => "TT", _ => "IN" }}";
                if (Stage2) s += $" IPA 0x{Ipa:x}";
                break;
            case Evt.F_WALK_EABT:
                s += $" {(Read ? "read" : "write")} input 0x{InputAddress:x} fetch 0x{FetchAddress:x}";
                break;
            case Evt.F_STE_FETCH or Evt.F_CD_FETCH:
                s += $" fetch 0x{FetchAddress:x}";
                break;
            case Evt.F_UUT or Evt.F_TRANSL_FORBIDDEN:
                s += $" {(Read ? "read" : "write")} input 0x{InputAddress:x}";
                break;
        }
        return s;
    }
}

// Event queue, GERROR and interrupts (IHI 0070 §7, §6.3.16–18, §3.18).
public sealed partial class SmmuV3
{
    /// <summary>Writes one record at EVENTQ_PROD, or drops it when the queue is disabled or full (then OVFLG toggles).</summary>
    internal void RecordEvent(ulong q0, ulong q1, ulong q2, ulong q3)
    {
        _trace.Emit(TraceCategory.SmmuEvent, TraceSource, $"event {new SmmuV3Event(q0, q1, q2, q3)}");
        if (!EventqEnabled)
        {
            EventsDropped++;
            return;
        }
        var log2 = EventqLog2Size;
        var ptrMask = QueueIndexMask(log2);
        var idxMask = (1u << log2) - 1;
        var prod = _eventqProd & ptrMask;
        var cons = _eventqCons & ptrMask;
        var full = (prod & idxMask) == (cons & idxMask) && prod != cons;
        if (full)
        {
            // Overflow (§7.4): the record is lost; OVFLG toggles if the previous overflow was acknowledged.
            EventsDropped++;
            var ovflg = _eventqProd & SmmuV3Field.QOvflg;
            var ovack = _eventqCons & SmmuV3Field.QOvflg;
            if (ovflg == ovack) _eventqProd ^= SmmuV3Field.QOvflg;
            return;
        }
        var addr = (_eventqBase & SmmuV3Field.QBaseAddrMask) + (ulong)(prod & idxMask) * Evt.Size;
        Span<byte> rec = stackalloc byte[Evt.Size];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(rec, q0);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(rec[8..], q1);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(rec[16..], q2);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(rec[24..], q3);
        if (_bus.Write(addr, rec, _ownAttributes) != BusStatus.Ok)
        {
            EventsDropped++;
            RaiseGlobalError(SmmuV3Field.GerrorEventqAbt);
            return;
        }
        EventsRecorded++;
        _eventqProd = ((prod + 1) & ptrMask) | (_eventqProd & SmmuV3Field.QOvflg);
        if ((_irqCtrl & SmmuV3Field.IrqCtrlEventqEn) != 0)
            SignalIrq(_eventqIrqCfg0, _eventqIrqCfg1, EventQueueIrq, SmmuV3Field.GerrorMsiEventqAbt);
    }

    /// <summary>Makes a GERROR condition active (toggles its bit when not already active) and signals the GERROR interrupt.</summary>
    void RaiseGlobalError(uint bit)
    {
        if (((_gerror ^ _gerrorn) & bit) != 0) return; // already active
        _gerror ^= bit;
        TraceEmit($"GERROR 0x{_gerror:x} (GERRORN 0x{_gerrorn:x})");
        if ((_irqCtrl & SmmuV3Field.IrqCtrlGerrorEn) != 0 && bit != SmmuV3Field.GerrorMsiGerrorAbt)
            SignalIrq(_gerrorIrqCfg0, _gerrorIrqCfg1, GerrorIrq, SmmuV3Field.GerrorMsiGerrorAbt);
    }

    void WriteGerrorn(uint v)
    {
        var wasCmdqError = CmdqErrorActive;
        _gerrorn = v;
        // Acknowledging CMDQ_ERR lets the queue run again from CONS (which software has usually fixed up).
        if (wasCmdqError && !CmdqErrorActive)
            ProcessCommands();
    }

    /// <summary>An MSI (32-bit write of CFG1 to CFG0) when MSIs are implemented and CFG0 is set, else a pulse on the wired line.</summary>
    void SignalIrq(ulong cfg0, uint cfg1, IInterruptLine? line, uint abortBit)
    {
        if (_o.Msi && cfg0 != 0)
        {
            if (_bus.Write(new PhysAddr(cfg0), 4, cfg1, _ownAttributes) != BusStatus.Ok)
                RaiseGlobalError(abortBit);
            return;
        }
        Pulse(line);
    }
}
