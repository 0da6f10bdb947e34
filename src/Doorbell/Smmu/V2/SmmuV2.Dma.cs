using System.Runtime.CompilerServices;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Vmsa;

namespace Doorbell.Smmu.V2;

// Stream mapping (SMR/S2CR), context-bank decode into TranslationConfig, the transaction path, context and global
// fault recording, RESUME, and the ATS1* address-translation operations (Arm IHI 0062: stream mapping, translation
// context banks, fault handling, address translation operations).
public sealed partial class SmmuV2
{
    // ------------------------------------------------------------------ stream mapping

    /// <summary>Resolves a StreamID: stream match (or index), S2CR, and the context bank's decoded configuration.</summary>
    internal void ResolveInto(uint sid, V2StreamContext ctx, bool record)
    {
        ctx.Bank = -1; ctx.S2Bank = -1; ctx.Stage2Fault = false; ctx.ConfigError = null; ctx.GlobalFaultBit = 0;
        ctx.PrivCfg = 0; ctx.InstCfg = 0; ctx.Fast = false;
        ctx.SetConfig(TranslationConfig.Bypass, 0);
        if ((_cr0 & SmmuV2Field.Cr0ClientPd) != 0)
        {
            ctx.Outcome = V2Outcome.Bypass;
            return;
        }
        int index;
        if (_o.StreamMatching)
        {
            index = -1;
            var matches = 0;
            for (var i = 0; i < _smr.Length; i++)
            {
                if (!SmrMatches(_smr[i], sid)) continue;
                if (matches++ == 0) index = i;
            }
            if (matches > 1)
            {
                if ((_cr0 & SmmuV2Field.Cr0Smcfcfg) != 0)
                {
                    SetGlobalFault(ctx, SmmuV2Field.GfsrSmcf);
                    return;
                }
                // SMCFCFG = 0: behaviour is UNPREDICTABLE; this model uses the lowest-numbered matching group.
                if (record) ReportStrict($"SID 0x{sid:x}", RuleSmConflict, $"matches {matches} SMRs (SMCFCFG = 0: group {index} used)");
            }
        }
        else
        {
            index = sid < (uint)_s2cr.Length ? (int)sid : -1;
        }
        if (index < 0)
        {
            // Unidentified stream: sCR0.USFCFG chooses fault or bypass.
            if ((_cr0 & SmmuV2Field.Cr0Usfcfg) != 0) SetGlobalFault(ctx, SmmuV2Field.GfsrUsf);
            else ctx.Outcome = V2Outcome.Bypass;
            return;
        }
        var s2cr = _s2cr[index];
        ctx.PrivCfg = (byte)((s2cr >> SmmuV2Field.S2crPrivCfgShift) & 3);
        ctx.InstCfg = (byte)((s2cr >> SmmuV2Field.S2crInstCfgShift) & 3);
        switch ((s2cr >> SmmuV2Field.S2crTypeShift) & 3)
        {
            case SmmuV2Field.S2crTypeBypass:
                ctx.Outcome = V2Outcome.Bypass;
                return;
            case SmmuV2Field.S2crTypeFault:
                ctx.Outcome = V2Outcome.Terminate;
                return;
            case 3:
                if (record) ReportStrict($"S2CR{index}", "IHI 0062 (SMMU_S2CRn.TYPE): 0b11 is reserved", "TYPE = 3: transactions are terminated");
                ctx.Outcome = V2Outcome.Terminate;
                return;
        }
        var cb = (int)(s2cr & 0xFF);
        if (cb >= _banks.Length)
        {
            SetGlobalFault(ctx, SmmuV2Field.GfsrUcbf);
            return;
        }
        DecodeContext(cb, ctx);
    }

    static void SetGlobalFault(V2StreamContext ctx, uint bit)
    {
        ctx.Outcome = V2Outcome.GlobalFault;
        ctx.GlobalFaultBit = bit;
    }

    /// <summary>Context bank <paramref name="cb"/> (and its linked stage-2 bank when nested) as a TranslationConfig.</summary>
    internal void DecodeContext(int cb, V2StreamContext ctx)
    {
        var b = _banks[cb];
        ctx.Bank = cb;
        Stage1Config? s1 = null;
        Stage2Config? s2 = null;
        string? err = null;
        var type = b.Type;
        var s2OnlyBank = cb < _o.Stage2OnlyContextBanks;
        switch (type)
        {
            case SmmuV2Field.CbarTypeS2:
                if (!_o.Stage2) { SetGlobalFault(ctx, SmmuV2Field.GfsrIcf); return; }
                if (b.Enabled) s2 = DecodeStage2(b, BankVmid(cb), ref err);
                break;
            case SmmuV2Field.CbarTypeS1BypassS2:
            case SmmuV2Field.CbarTypeS1FaultS2:
                if (!_o.Stage1 || s2OnlyBank) { SetGlobalFault(ctx, SmmuV2Field.GfsrIcf); return; }
                if (b.Enabled) s1 = DecodeStage1(b, ref err);
                ctx.Stage2Fault = type == SmmuV2Field.CbarTypeS1FaultS2 && _o.Stage2;
                break;
            default: // nested: stage 1 here, stage 2 in the bank CBAR[15:8] names
            {
                if (!_o.Nested || s2OnlyBank) { SetGlobalFault(ctx, SmmuV2Field.GfsrIcf); return; }
                var s2cb = (int)((b.Cbar >> SmmuV2Field.CbarS2CbNdxShift) & 0xFF);
                if (s2cb >= _banks.Length || _banks[s2cb].Type != SmmuV2Field.CbarTypeS2) { SetGlobalFault(ctx, SmmuV2Field.GfsrIcf); return; }
                ctx.S2Bank = s2cb;
                if (b.Enabled) s1 = DecodeStage1(b, ref err);
                if (_banks[s2cb].Enabled) s2 = DecodeStage2(_banks[s2cb], BankVmid(s2cb), ref err);
                break;
            }
        }
        ctx.ConfigError = err;
        // The decoded bank is the context the Translator's fast path keys the IOTLB with (VMID, ASID, TBI rule).
        ctx.SetConfig(s1 is null && s2 is null ? TranslationConfig.Bypass : new TranslationConfig(s1, s2), BankVmid(cb));
        ctx.Outcome = err is null && ctx.Config.IsBypass && !ctx.Stage2Fault ? V2Outcome.Bypass : V2Outcome.Translate;
        ctx.Fast = ctx.Outcome == V2Outcome.Translate && err is null && !ctx.Stage2Fault && ctx.PrivCfg == 0 && ctx.InstCfg == 0;
    }

    const ulong TtbrAddrMask = 0x0000_FFFF_FFFF_FFF0UL;

    static Granule? Tg0(uint tg) => tg switch { 0 => Granule.Size4K, 1 => Granule.Size64K, 2 => Granule.Size16K, _ => null };
    static Granule? Tg1(uint tg) => tg switch { 1 => Granule.Size16K, 2 => Granule.Size4K, 3 => Granule.Size64K, _ => null };

    Stage1Config? DecodeStage1(Bank b, ref string? err)
    {
        var tcr = b.Tcr;
        var mair = (ulong)b.Mair1 << 32 | b.Mair0;
        var afDisabled = (b.Sctlr & SmmuV2Field.SctlrAffd) != 0;
        if ((b.Cba2r & SmmuV2Field.Cba2rVa64) == 0)
        {
            // AArch32 state: only the long-descriptor format (TTBCR.EAE = 1) is implemented, TTBR0 range only.
            if ((tcr & (1u << 31)) == 0) { err = "short-descriptor tables (TCR.EAE = 0) are not implemented"; return null; }
            var n = 32 - (int)(tcr & 7);
            return new Stage1Config
            {
                Low = new TranslationRegion(Granule.Size4K, n, b.Ttbr0 & 0xFF_FFFF_FFE0UL, (tcr & SmmuV2Field.TcrEpd0) != 0),
                OutputSize = Math.Min(40, _o.OutputAddressBits),
                Asid = (ushort)((b.Ttbr0 >> 48) & 0xFF),
                AccessFlagFaultsDisabled = afDisabled,
                Mair = mair,
            };
        }
        var g0 = Tg0((tcr >> SmmuV2Field.TcrTg0Shift) & 3);
        var epd0 = (tcr & SmmuV2Field.TcrEpd0) != 0;
        var epd1 = (tcr & SmmuV2Field.TcrEpd1) != 0;
        var g1 = Tg1((tcr >> SmmuV2Field.TcrTg1Shift) & 3);
        if (g0 is null && !epd0) { err = "TCR.TG0 = 3 is reserved"; return null; }
        if (g1 is null && !epd1) { err = "TCR.TG1 = 0 is reserved"; return null; }
        var gr0 = g0 ?? Granule.Size4K;
        var gr1 = g1 ?? Granule.Size4K;
        if ((!epd0 && !_o.SupportsGranule(gr0)) || (!epd1 && !_o.SupportsGranule(gr1))) { err = "granule not implemented (ID2.PTFS)"; return null; }
        var low = new TranslationRegion(gr0, 64 - (int)(tcr & 0x3F), b.Ttbr0 & TtbrAddrMask, epd0);
        var high = new TranslationRegion(gr1, 64 - (int)((tcr >> SmmuV2Field.TcrT1szShift) & 0x3F), b.Ttbr1 & TtbrAddrMask, epd1);
        var maxIn = Math.Min(48, _o.UpstreamBusBits);
        if (!epd0 && low.Validate(maxIn) is { } e0) { err = "TTBR0 range: " + e0; return null; }
        if (!epd1 && high.Validate(maxIn) is { } e1) { err = "TTBR1 range: " + e1; return null; }
        var ps = SmmuV2Options.DecodeSize(b.Tcr2 & 7);
        if (ps < 0) { err = "TCR2.PASIZE is reserved"; return null; }
        var asid = (ushort)((((tcr & SmmuV2Field.TcrA1) != 0 ? b.Ttbr1 : b.Ttbr0) >> 48) & ((b.Tcr2 & SmmuV2Field.Tcr2As) != 0 ? 0xFFFFu : 0xFFu));
        return new Stage1Config
        {
            Low = low,
            High = high,
            OutputSize = Math.Min(ps, _o.IntermediateAddressBits),
            Asid = asid,
            Tbi0 = (b.Tcr2 & SmmuV2Field.Tcr2Tbi0) != 0,
            Tbi1 = (b.Tcr2 & SmmuV2Field.Tcr2Tbi1) != 0,
            AccessFlagFaultsDisabled = afDisabled,
            Wxn = (b.Sctlr & SmmuV2Field.SctlrWxn) != 0,
            Uwxn = (b.Sctlr & SmmuV2Field.SctlrUwxn) != 0,
            Mair = mair,
        };
    }

    Stage2Config? DecodeStage2(Bank b, ushort vmid, ref string? err)
    {
        var tcr = b.Tcr;
        var g = Tg0((tcr >> SmmuV2Field.TcrTg0Shift) & 3);
        if (g is null) { err = "stage-2 TCR.TG0 = 3 is reserved"; return null; }
        if (!_o.SupportsGranule(g.Value)) { err = "granule not implemented (ID2.PTFS)"; return null; }
        var ps = SmmuV2Options.DecodeSize((tcr >> SmmuV2Field.TcrS2PaSizeShift) & 7);
        if (ps < 0) { err = "stage-2 TCR.PASIZE is reserved"; return null; }
        var cfg = new Stage2Config
        {
            Granule = g.Value,
            InputSize = 64 - (int)(tcr & 0x3F),
            StartLevel = Stage2Config.StartLevelFromSl0(g.Value, (int)((tcr >> SmmuV2Field.TcrSl0Shift) & 3)),
            TableBase = b.Ttbr0 & TtbrAddrMask,
            OutputSize = Math.Min(ps, _o.OutputAddressBits),
            Vmid = vmid,
            AccessFlagFaultsDisabled = (b.Sctlr & SmmuV2Field.SctlrAffd) != 0,
        };
        if (cfg.InputSize > _o.IntermediateAddressBits) { err = $"stage-2 input size {cfg.InputSize} exceeds IAS {_o.IntermediateAddressBits}"; return null; }
        if (cfg.Validate() is { } e) { err = "stage 2: " + e; return null; }
        return cfg;
    }

    // ------------------------------------------------------------------ the transaction path

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static AccessFlags AccessOf(bool write, in BusAttributes a, V2StreamContext ctx)
    {
        var acc = Translator.AccessOf(write, a);
        // S2CR.PRIVCFG: 2 unprivileged, 3 privileged; S2CR.INSTCFG: 2 data, 3 instruction (reads only).
        if (ctx.PrivCfg == 2) acc &= ~AccessFlags.Privileged;
        else if (ctx.PrivCfg == 3) acc |= AccessFlags.Privileged;
        if (ctx.InstCfg == 2) acc &= ~AccessFlags.Execute;
        else if (ctx.InstCfg == 3 && !write) acc |= AccessFlags.Execute;
        return acc;
    }

    void Revalidate(SmmuV2StreamPort port, V2StreamContext ctx)
    {
        _observedStreams.Add(port.StreamId);
        ResolveInto(port.StreamId, ctx, record: true);
        ctx.Generation = ctx.Outcome == V2Outcome.GlobalFault ? ulong.MaxValue : Generation;
        ctx.FastGeneration = ctx.Fast ? ctx.Generation : ulong.MaxValue;
        ctx.StrictChecks = StrictEnabled; // strict mode revalidates every transaction, so this follows the monitor
        if (!StrictEnabled || ctx.Outcome != V2Outcome.Translate) return;
        var unsynced = _globalUnsynced + _banks[ctx.Bank].Unsynced + (ctx.S2Bank >= 0 ? _banks[ctx.S2Bank].Unsynced : 0);
        if (unsynced != 0)
            ReportStrict($"SID 0x{port.StreamId:x}", RuleTlbSync, $"translated through CB{ctx.Bank} while {unsynced} TLB invalidation(s) await TLBSYNC/sTLBGSYNC");
        if (_taintedStreams.TryGetValue(port.StreamId, out var t))
            ReportStrict($"SID 0x{port.StreamId:x}", RuleStreamMapTags,
                $"moved from CB{t.Bank} to CB{ctx.Bank}, both tagged VMID {t.Vmid} ASID {t.Asid}, without invalidating that tag: CB{t.Bank}'s cached translations still apply");
    }

    /// <summary>A transaction of <paramref name="port"/> off the shared port's fast path (or a RESUME retry): the stream
    /// re-resolved when its kept resolution is stale, then carried out by <see cref="TransferResolved"/>.</summary>
    internal BusStatus Transfer(SmmuV2StreamPort port, ulong address, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, in BusAttributes attributes)
    {
        if ((write ? wr.Length : rd.Length) == 0) return BusStatus.Ok;
        var ctx = port.Context;
        if (ctx.Generation != Generation || StrictEnabled) Revalidate(port, ctx);
        return TransferResolved(port, ctx, address, rd, wr, write, attributes);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal BusStatus RecordLoopFault(V2StreamContext ctx, in TranslationFault fault, ulong address, int pos, AccessFlags access,
        SmmuV2StreamPort port, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, in BusAttributes attributes) =>
        RecordContextFault(ctx, FsrBitOf(fault.Kind), fault, address + (ulong)pos, access, port, rd[(write ? 0 : pos)..], wr[(write ? pos : 0)..], write, attributes);

    /// <summary>A transaction on its resolved stream, whatever the resolution: bypass, terminate, global fault, S2CR
    /// overrides, a configuration error, the stage-2-fault type, an unsupported transaction, or plain translation.</summary>
    BusStatus TransferResolved(SmmuV2StreamPort port, V2StreamContext ctx, ulong address, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, in BusAttributes attributes)
    {
        var length = write ? wr.Length : rd.Length;
        switch (ctx.Outcome)
        {
            case V2Outcome.Bypass:
                return write ? _bus.Write(address, wr, attributes) : _bus.Read(address, rd, attributes);
            case V2Outcome.Terminate:
                Terminated++;
                return BusStatus.SlaveError;
            case V2Outcome.GlobalFault:
                return RecordGlobalFault(ctx.GlobalFaultBit, port.StreamId, address, AccessOf(write, attributes, ctx), rd, write);
        }
        var access = AccessOf(write, attributes, ctx);
        if ((write && attributes.Instruction) || address + (ulong)length - 1 < address)
            return RecordContextFault(ctx, SmmuV2Field.FsrUut, default, address, access, port, rd, wr, write, attributes);
        if (ctx.ConfigError is not null)
        {
            ReportStrict($"CB{ctx.Bank}", "IHI 0062 (SMMU_CBn_TCR): an invalid translation configuration is CONSTRAINED UNPREDICTABLE (this model: translation fault)", ctx.ConfigError);
            var f = new TranslationFault(FaultKind.Translation, TranslationStage.Stage1, 0, address, 0, false, 0, access);
            return RecordContextFault(ctx, SmmuV2Field.FsrTf, f, address, access, port, rd, wr, write, attributes);
        }
        if (ctx.Stage2Fault)
        {
            // CBAR type "stage 1 followed by stage 2 fault": the first block's stage-1 output is faulted at stage 2
            // (or its stage-1 translation faults first); nothing is transferred either way.
            if (!_translator.Translate(ctx, address, access, out var s1, out var s1Fault))
                return RecordContextFault(ctx, FsrBitOf(s1Fault.Kind), s1Fault, address, access, port, rd, wr, write, attributes);
            var f = new TranslationFault(FaultKind.Translation, TranslationStage.Stage2, 0, address, s1.Translate(address), false, 0, access);
            return RecordContextFault(ctx, SmmuV2Field.FsrTf, f, address, access, port, rd, wr, write, attributes);
        }
        if (_translator.Transfer(ctx, _bus, address, rd, wr, write, access, attributes, null, "smmuv2", port.StreamId,
                out var status, out var pos, out var fault))
            return status;
        return RecordLoopFault(ctx, fault, address, pos, access, port, rd, wr, write, attributes);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void RecordTranslateOneFault(SmmuV2StreamPort port, V2StreamContext ctx, in TranslationFault fault, ulong address, AccessFlags access)
    {
        var attrs = new BusAttributes(0, false, (access & AccessFlags.Privileged) != 0, (access & AccessFlags.Execute) != 0);
        RecordContextFault(ctx, FsrBitOf(fault.Kind), fault, address, access, port, default, default, write: false, attrs);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal bool TranslateOneResolved(SmmuV2StreamPort port, ulong address, AccessFlags access, out ulong pa)
    {
        var ctx = port.Context;
        TlbEntry entry;
        TranslationFault fault;
        pa = 0;
        if (ctx.Generation != Generation || StrictEnabled) Revalidate(port, ctx);
        var write = (access & AccessFlags.Write) != 0;
        var attrs = new BusAttributes(0, false, (access & AccessFlags.Privileged) != 0, (access & AccessFlags.Execute) != 0);
        switch (ctx.Outcome)
        {
            case V2Outcome.Bypass:
                pa = address;
                return true;
            case V2Outcome.Terminate:
                Terminated++;
                return false;
            case V2Outcome.GlobalFault:
                RecordGlobalFault(ctx.GlobalFaultBit, port.StreamId, address, access, default, write: true);
                return false;
        }
        access = AccessOf(write, attrs, ctx);
        if (ctx.ConfigError is not null)
        {
            var cf = new TranslationFault(FaultKind.Translation, TranslationStage.Stage1, 0, address, 0, false, 0, access);
            RecordContextFault(ctx, SmmuV2Field.FsrTf, cf, address, access, port, default, default, write: false, attrs);
            return false;
        }
        if (!_translator.Translate(ctx, address, access, out entry, out fault))
        {
            RecordContextFault(ctx, FsrBitOf(fault.Kind), fault, address, access, port, default, default, write: false, attrs);
            return false;
        }
        if (ctx.Stage2Fault)
        {
            var f = new TranslationFault(FaultKind.Translation, TranslationStage.Stage2, 0, address, entry.Translate(address), false, 0, access);
            RecordContextFault(ctx, SmmuV2Field.FsrTf, f, address, access, port, default, default, write: false, attrs);
            return false;
        }
        pa = entry.Translate(address);
        return true;
    }

    static uint FsrBitOf(FaultKind k) => k switch
    {
        FaultKind.AccessFlag => SmmuV2Field.FsrAff,
        FaultKind.Permission => SmmuV2Field.FsrPf,
        FaultKind.AddressSize => SmmuV2Field.FsrAsf,
        FaultKind.WalkExternalAbort => SmmuV2Field.FsrEf,
        _ => SmmuV2Field.FsrTf,
    };

    // ------------------------------------------------------------------ faults

    BusStatus RecordGlobalFault(uint bit, uint sid, ulong address, AccessFlags access, Span<byte> rd, bool write)
    {
        GlobalFaults++;
        if ((_gfsr & SmmuV2Field.GfsrFaults) != 0) _gfsr |= SmmuV2Field.GfsrMulti;
        else
        {
            _gfsr |= bit;
            _gfar = address;
            _gfsynr0 = ((access & AccessFlags.Write) != 0 ? SmmuV2Field.GfsynrWnr : 0)
                | ((access & AccessFlags.Privileged) != 0 ? SmmuV2Field.GfsynrPnu : 0)
                | ((access & AccessFlags.Execute) != 0 ? SmmuV2Field.GfsynrInd : 0);
            _gfsynr1 = sid & 0xFFFF;
            _gfsynr2 = 0;
        }
        UpdateGlobalIrq();
        TraceEmit($"global fault sGFSR 0x{_gfsr:x} SID 0x{sid:x} address 0x{address:x}");
        var configFault = bit != SmmuV2Field.GfsrUsf;
        var report = (_cr0 & (configFault ? SmmuV2Field.Cr0Gcfgfre : SmmuV2Field.Cr0Gfre)) != 0;
        if (report) return BusStatus.SlaveError;
        if (!write) rd.Clear(); // not reported to the client: RAZ/WI
        return BusStatus.Ok;
    }

    BusStatus RecordContextFault(V2StreamContext ctx, uint fsrBit, in TranslationFault f, ulong va, AccessFlags access,
        SmmuV2StreamPort port, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, in BusAttributes attributes)
    {
        ContextFaults++;
        // Nested: a stage-2 fault is recorded in the linked stage-2 bank, with S1CBNDX naming the stage-1 bank.
        var n = f.Stage == TranslationStage.Stage2 && ctx.S2Bank >= 0 ? ctx.S2Bank : ctx.Bank;
        var b = _banks[n];
        var stall = (b.Sctlr & SmmuV2Field.SctlrCfcfg) != 0 && (_cr0 & SmmuV2Field.Cr0Stalld) == 0;
        if ((b.Fsr & (SmmuV2Field.FsrFaults | SmmuV2Field.FsrSs)) != 0)
        {
            b.Fsr |= SmmuV2Field.FsrMulti;
            stall = false; // one stalled transaction per bank: the rest terminate
        }
        else
        {
            b.Fsr |= fsrBit;
            b.Fsynr0 = (uint)(Math.Max((int)f.Level, 0) & 3)
                | ((access & AccessFlags.Write) != 0 ? SmmuV2Field.FsynrWnr : 0)
                | ((access & AccessFlags.Privileged) != 0 ? SmmuV2Field.FsynrPnu : 0)
                | ((access & AccessFlags.Execute) != 0 ? SmmuV2Field.FsynrInd : 0)
                | (f.OnStage1Walk ? SmmuV2Field.FsynrPtwf : 0)
                | (n != ctx.Bank ? (uint)ctx.Bank << SmmuV2Field.FsynrS1CbNdxShift : 0);
            b.Far = va;
            b.Ipafar = f.Stage == TranslationStage.Stage2 ? f.Ipa : 0;
            b.Cbfrsynra = port.StreamId & 0xFFFF;
            if (stall)
            {
                b.Fsr |= SmmuV2Field.FsrSs;
                if (write)
                {
                    b.StalledData = wr.ToArray();
                    b.StalledAddress = va;
                    b.StalledPort = port;
                    b.StalledAttributes = attributes;
                }
            }
        }
        UpdateContextIrqs();
        TraceEmit($"CB{n} fault FSR 0x{b.Fsr:x} FSYNR0 0x{b.Fsynr0:x} FAR 0x{va:x} SID 0x{port.StreamId:x}{(stall ? " (stalled)" : "")}");
        if (stall && write) return BusStatus.Ok; // the write is held until RESUME
        if ((b.Sctlr & SmmuV2Field.SctlrCfre) != 0 || stall) return BusStatus.SlaveError;
        if (!write) rd.Clear(); // CFRE = 0: no abort to the client, RAZ/WI
        return BusStatus.Ok;
    }

    /// <summary>CBn_RESUME: retry (TnR = 0) or terminate (TnR = 1) the stalled transaction; ignored when not stalled.</summary>
    void Resume(int n, bool terminate)
    {
        var b = _banks[n];
        if ((b.Fsr & SmmuV2Field.FsrSs) == 0) return;
        b.Fsr &= ~SmmuV2Field.FsrSs;
        var port = b.StalledPort;
        var data = b.StalledData;
        var address = b.StalledAddress;
        var attrs = b.StalledAttributes;
        b.StalledPort = null;
        b.StalledData = null;
        UpdateContextIrqs();
        TraceEmit($"CB{n} RESUME {(terminate ? "terminate" : "retry")}");
        if (!terminate && port is not null && data is not null)
            Transfer(port, address, default, data, write: true, attrs);
    }

    // ------------------------------------------------------------------ ATS1* address translation operations

    void AddressTranslate(int n, bool write, bool privileged, ulong va)
    {
        if (_o.AtosNotSupported) return;
        var access = (write ? AccessFlags.Write : AccessFlags.Read) | (privileged ? AccessFlags.Privileged : 0);
        va &= ~0xFFFUL;
        var b = _banks[n];
        var ctx = new V2StreamContext { StrictChecks = StrictEnabled };
        DecodeContext(n, ctx);
        if (ctx.Outcome == V2Outcome.GlobalFault || ctx.ConfigError is not null)
        {
            b.Par = SmmuV2Field.ParF | SmmuV2Field.FsrTf;
            return;
        }
        if (ctx.Outcome == V2Outcome.Bypass)
        {
            b.Par = va & SmmuV2Field.ParPaMask;
            return;
        }
        if (!_translator.Translate(ctx, va, access, out var e, out var f))
        {
            b.Par = SmmuV2Field.ParF | FsrBitOf(f.Kind) | (ulong)(Math.Max((int)f.Level, 0) & 3) << SmmuV2Field.ParPlvlShift
                | (f.Stage == TranslationStage.Stage2 ? SmmuV2Field.ParStage2 : 0);
            return;
        }
        if (ctx.Stage2Fault)
        {
            b.Par = SmmuV2Field.ParF | SmmuV2Field.FsrTf | SmmuV2Field.ParStage2;
            return;
        }
        // Stage-1 operations report the stage-1 output: the IPA for a nested context, else the PA.
        var output = ctx.Config.IsNested ? e.IpaBase | (va & e.OffsetMask) : e.Translate(va);
        var attr = ctx.Config.Stage1 is { } s1 && e.HasStage1 ? (s1.Mair >> (8 * (e.AttrIndex & 7))) & 0xFF : 0;
        b.Par = (output & SmmuV2Field.ParPaMask) | attr << 56;
    }
}
