namespace Doorbell.Gic.V3;

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
