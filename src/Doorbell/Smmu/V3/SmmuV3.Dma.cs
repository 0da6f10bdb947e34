using System.Runtime.CompilerServices;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Vmsa;

namespace Doorbell.Smmu.V3;

/// <summary>
/// The upstream port of one StreamID (and optionally one SubstreamID): what a device issues DMA and MSI writes to.
/// Each transaction is translated per translation block (a transfer spanning pages is translated page by page),
/// forwarded to the bus with its attributes unchanged, or faulted: one event record per faulting transaction and an
/// abort (SlaveError) to the device, or RAZ/WI when the CD says so. A kept translating resolution goes through the
/// <see cref="TranslatedStreamPort"/> fast path (the Translator alone); this class is the rest.
/// </summary>
public sealed class SmmuV3StreamPort : TranslatedStreamPort
{
    readonly SmmuV3 _smmu;
    internal readonly StreamContext Context;

    internal SmmuV3StreamPort(SmmuV3 smmu, uint streamId, uint? substreamId, bool atsTranslated)
        : this(smmu, streamId, substreamId, atsTranslated, new StreamContext())
    {
    }

    SmmuV3StreamPort(SmmuV3 smmu, uint streamId, uint? substreamId, bool atsTranslated, StreamContext context)
        : base(smmu.Translator, smmu.Bus, context, streamId, smmu.Trace, smmu.TraceSource)
    {
        _smmu = smmu;
        Context = context;
        SubstreamId = substreamId;
        AtsTranslated = atsTranslated;
    }

    /// <summary>The SubstreamID (PASID) every transaction of this port carries, or null for none (SSV = 0).</summary>
    public uint? SubstreamId { get; }
    /// <summary>Transactions are marked as already translated by ATS.</summary>
    public bool AtsTranslated { get; }

    protected override BusStatus TransferResolved(ulong address, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, in BusAttributes attributes) =>
        _smmu.Transfer(this, address, rd, wr, write, attributes);

    protected override BusStatus TransferFaulted(ulong address, int done, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, AccessFlags access,
        in BusAttributes attributes, in TranslationFault fault) =>
        _smmu.TransferFault(this, Context, fault, address, done, rd, write, access);

    protected override bool TranslateResolved(ulong address, AccessFlags access, out ulong physicalAddress) =>
        _smmu.TranslateOneSlow(this, address, access, out physicalAddress);

    protected override void TranslateFaulted(ulong address, AccessFlags access, in TranslationFault fault) =>
        _smmu.RecordPortFault(this, Context, fault, address, access);
}

public sealed partial class SmmuV3
{
    public IMemoryPort CreateStreamPort(uint streamId) => new SmmuV3StreamPort(this, streamId, null, false);

    /// <summary>A port whose transactions carry a SubstreamID (PASID).</summary>
    public SmmuV3StreamPort CreateStreamPort(uint streamId, uint substreamId) =>
        new(this, streamId, substreamId & 0xFFFFF, false);

    /// <summary>A port whose transactions are marked ATS-translated (this SMMU implements no ATS: they are forbidden).</summary>
    public SmmuV3StreamPort CreateTranslatedStreamPort(uint streamId) => new(this, streamId, null, true);

    /// <summary>A transaction of <paramref name="port"/> off the shared port's fast path: unsupported transactions,
    /// (re)resolution, bypass and abort, then the Translator's transfer loop.</summary>
    internal BusStatus Transfer(SmmuV3StreamPort port, ulong address, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, in BusAttributes attributes)
    {
        var length = write ? wr.Length : rd.Length;
        if (length == 0) return BusStatus.Ok;
        var access = Translator.AccessOf(write, attributes);
        var ctx = port.Context;
        // An instruction-fetch write, or a transfer wrapping past 2^64, is not a transaction the SMMU supports.
        if ((write && attributes.Instruction) || address + (ulong)length - 1 < address)
        {
            if (SmmuEnabled) RecordTransaction(Evt.F_UUT, port.StreamId, port.SubstreamId.HasValue, port.SubstreamId.GetValueOrDefault(), address, access);
            return BusStatus.SlaveError;
        }
        if (NeedsResolution(port, ctx))
        {
            var outcome = ResolvePort(port, address, access);
            if (StrictEnabled && outcome == StreamOutcome.Translate && _unsyncedInvalidations != 0)
                ReportStrict("DMA", "IHI 0070 §4.7.3: invalidation is only guaranteed complete after a CMD_SYNC",
                    $"SID 0x{port.StreamId:x} translated while {_unsyncedInvalidations} invalidation command(s) await a CMD_SYNC");
        }
        switch (ctx.Outcome)
        {
            case StreamOutcome.Bypass:
                return write ? _bus.Write(address, wr, attributes) : _bus.Read(address, rd, attributes);
            case StreamOutcome.Abort:
                _trace.Emit(TraceCategory.SmmuTranslate, TraceSource, $"SID 0x{port.StreamId:x} {(write ? "write" : "read")} 0x{address:x}: aborted by its stream configuration");
                return BusStatus.SlaveError;
        }
        // The transfer loop shared with the SMMUv2 front end: per translation block through the Translator, to the bus.
        if (_translator.Transfer(ctx, _bus, address, rd, wr, write, access, attributes, _trace, TraceSource, port.StreamId,
                out var status, out var pos, out var fault))
            return status;
        return TransferFault(port, ctx, fault, address, pos, rd, write, access);
    }

    /// <summary>The port's kept resolution is stale, or is never kept (ATS-marked ports; strict mode checks every transaction).</summary>
    bool NeedsResolution(SmmuV3StreamPort port, StreamContext ctx) => ctx.Generation != Generation || StrictEnabled || port.AtsTranslated;

    /// <summary>Resolves the port's stream (STE, CD) into its context and keeps the result when it may be reused.</summary>
    StreamOutcome ResolvePort(SmmuV3StreamPort port, ulong address, AccessFlags access)
    {
        var ctx = port.Context;
        var outcome = Resolve(port.StreamId, port.SubstreamId.HasValue, port.SubstreamId.GetValueOrDefault(), address, access, port.AtsTranslated, ctx);
        // Only successful resolutions are reused (failures re-run and re-report for every transaction); a translating
        // one also opens the shared port's fast path.
        ctx.Generation = outcome == StreamOutcome.Abort || port.AtsTranslated ? ulong.MaxValue : Generation;
        ctx.FastGeneration = outcome == StreamOutcome.Translate ? ctx.Generation : ulong.MaxValue;
        return outcome;
    }

    /// <summary>A transfer stopped by a translation fault at byte <paramref name="pos"/>: the event (if the STE/CD records
    /// it), then abort, or RAZ/WI for the rest of a stage-1 termination with CD.A = 0.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal BusStatus TransferFault(SmmuV3StreamPort port, StreamContext ctx, in TranslationFault fault, ulong address, int pos, Span<byte> rd, bool write, AccessFlags access)
    {
        RecordPortFault(port, ctx, fault, address + (ulong)pos, access);
        if (fault.Stage != TranslationStage.Stage2 && !ctx.AbortStage1)
        {
            // CD.A = 0: the rest of the transaction is RAZ/WI and completes successfully.
            if (!write) rd[pos..].Clear();
            return BusStatus.Ok;
        }
        return BusStatus.SlaveError;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal bool TranslateOneSlow(SmmuV3StreamPort port, ulong address, AccessFlags access, out ulong pa)
    {
        var ctx = port.Context;
        TlbEntry entry;
        TranslationFault fault;
        pa = 0;
        if (NeedsResolution(port, ctx)) ResolvePort(port, address, access);
        switch (ctx.Outcome)
        {
            case StreamOutcome.Bypass:
                pa = address;
                return true;
            case StreamOutcome.Abort:
                return false;
        }
        if (_translator.Translate(ctx, address, access, out entry, out fault))
        {
            pa = entry.Translate(address);
            return true;
        }
        RecordPortFault(port, ctx, fault, address, access);
        return false;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void RecordPortFault(SmmuV3StreamPort port, StreamContext ctx, in TranslationFault fault, ulong address, AccessFlags access)
    {
        var stage2 = fault.Stage == TranslationStage.Stage2;
        if (fault.Kind == FaultKind.WalkExternalAbort || (stage2 ? ctx.RecordStage2 : ctx.RecordStage1))
            RecordTranslationFault(fault, port.StreamId, port.SubstreamId.HasValue, port.SubstreamId.GetValueOrDefault(), address, access,
                fault.OnStage1Walk ? Evt.ClassTt : Evt.ClassIn, cdIpa: 0);
    }

    // ----- event record builders (IHI 0070 §7.3) -----

    static ulong Q0(byte id, uint sid, bool ssv, uint ssid) =>
        id | (ssv ? 1UL << Evt.Ssv | (ulong)(ssid & 0xFFFFF) << Evt.SsidShift : 0) | (ulong)sid << Evt.SidShift;

    static ulong AccessBits(AccessFlags a) =>
        ((a & AccessFlags.Write) == 0 ? 1UL << Evt.RnW : 0)
        | ((a & AccessFlags.Execute) != 0 ? 1UL << Evt.InD : 0)
        | ((a & AccessFlags.Privileged) != 0 ? 1UL << Evt.PnU : 0);

    void RecordConfig(byte id, uint sid, bool ssv, uint ssid) => RecordEvent(Q0(id, sid, ssv, ssid), 0, 0, 0);

    void RecordFetch(byte id, uint sid, bool ssv, uint ssid, ulong fetchAddress) =>
        RecordEvent(Q0(id, sid, ssv, ssid), 0, 0, fetchAddress & Evt.FetchAddrMask);

    void RecordTransaction(byte id, uint sid, bool ssv, uint ssid, ulong input, AccessFlags access) =>
        RecordEvent(Q0(id, sid, ssv, ssid), AccessBits(access), input, 0);

    void RecordTranslationFault(in TranslationFault f, uint sid, bool ssv, uint ssid, ulong input, AccessFlags access, uint cls, ulong cdIpa)
    {
        var id = f.Kind switch
        {
            FaultKind.AccessFlag => Evt.F_ACCESS,
            FaultKind.Permission => Evt.F_PERMISSION,
            FaultKind.AddressSize => Evt.F_ADDR_SIZE,
            FaultKind.WalkExternalAbort => Evt.F_WALK_EABT,
            _ => Evt.F_TRANSLATION,
        };
        var stage2 = f.Stage == TranslationStage.Stage2;
        var q1 = AccessBits(access) | (ulong)cls << Evt.ClassShift | (stage2 ? 1UL << Evt.S2 : 0);
        ulong q3;
        if (id == Evt.F_WALK_EABT) q3 = f.FetchAddress & Evt.FetchAddrMask;
        else if (stage2) q3 = (cls == Evt.ClassCd ? cdIpa : f.Ipa) & Evt.IpaMask;
        else q3 = 0;
        RecordEvent(Q0(id, sid, ssv, ssid), q1, input, q3);
    }
}
