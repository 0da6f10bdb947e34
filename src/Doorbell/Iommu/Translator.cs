using System.Runtime.CompilerServices;
using Doorbell.Memory;
using Doorbell.Tracing;
using Doorbell.Vmsa;

namespace Doorbell.Iommu;

// Known limits: no configuration cache here (each front end caches its own STE/CD or context-bank decodes);
// faulting walks are not cached as leaves (hardware may cache them; none is required to), but the table
// descriptors they read are.

/// <summary>
/// What a front end resolved for one stream (SMMUv3 STE/CD) or context bank (SMMUv2): the configuration and the tags
/// the IOTLB keys its entries with, computed once so the hit path does no decoding.
/// </summary>
public class TranslationContext
{
    public TranslationConfig Config { get; private set; } = TranslationConfig.Bypass;
    /// <summary>VMID the IOTLB tags this context's entries with (SMMUv3: STE.S2VMID for stage-1-only streams).</summary>
    public ushort Vmid { get; private set; }
    public ushort Asid { get; private set; }
    /// <summary>TBI applies to some half: the IOTLB key must be computed by the walker's rule.</summary>
    public bool TbiKey { get; private set; }
    /// <summary>
    /// Strict-mode checks on this context's hits (stale IOTLB entries): the front end sets it when it resolves the
    /// context, so the hit path reads one flag of an object it already holds.
    /// </summary>
    public bool StrictChecks { get; set; }

    /// <summary>
    /// The configuration generation (<see cref="Translator.ConfigurationGeneration"/>) at which the front end resolved
    /// this context to plain translation — no bypass, abort, override or configuration error — or ulong.MaxValue. While
    /// it is current, the stream's port translates through the Translator without calling its front end.
    /// </summary>
    internal ulong FastGeneration = ulong.MaxValue;

    /// <summary>IOTLB ways this context last hit, one per 4 KiB page index modulo 16: lookup hints only (every use is re-checked).</summary>
    internal LookupHints Hints;

    [InlineArray(16)]
    internal struct LookupHints
    {
        int _way;
    }

    public void SetConfig(TranslationConfig config, ushort vmid)
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config;
        Vmid = vmid;
        Asid = config.Asid;
        TbiKey = config.Stage1 is { } s1 && (s1.Tbi0 || s1.Tbi1);
    }
}

/// <summary>
/// The translation front every IOMMU model uses, and its one fast path: IOTLB lookup, permission check on every access
/// (hit or miss), walk (through the walk cache) and fill on a miss. Each access probes the IOTLB once, so a miss is
/// counted once. In strict mode a hit is re-walked (without side effects) and a cached entry that no longer matches
/// memory is reported: the tables changed without TLBI + SYNC; a walk through a cached table descriptor that memory
/// no longer holds is reported too. Cached entries are still used, as hardware would.
/// </summary>
public sealed class Translator
{
    /// <summary>The rule a stale-translation report names.</summary>
    public const string StaleEntryRule =
        "Arm IHI 0070 §3.21 (TLB entries may be used until invalidated by TLBI + CMD_SYNC) / Arm ARM D8 break-before-make";

    /// <summary>The rule a walk through a stale cached table descriptor names.</summary>
    public const string StaleWalkRule =
        "Arm IHI 0070 §4.4 / §4.4.1.1 (a changed or freed table descriptor stays cached until a TLBI with Leaf = 0 covering it + CMD_SYNC) / Arm ARM D8.14";

    readonly IMemoryView _bus;
    readonly PageTableWalker _walker;
    readonly Iotlb _tlb;
    readonly StrictMonitor? _strict;
    readonly WalkCacheView _walkCache;

    public Translator(IMemoryView bus, Iotlb tlb, StrictMonitor? strict = null)
    {
        ArgumentNullException.ThrowIfNull(bus);
        ArgumentNullException.ThrowIfNull(tlb);
        _bus = bus;
        _walker = new PageTableWalker(bus);
        _tlb = tlb;
        _strict = strict;
        _walkCache = new WalkCacheView(this);
    }

    public Iotlb Tlb => _tlb;
    public PageTableWalker Walker => _walker;

    /// <summary>
    /// Bumped by the front end at every change that can alter how a stream resolves (SMMUv3: CFGI, CR0, GBPA, STRTAB_*;
    /// SMMUv2: sCR0, SMR/S2CR, context-bank registers): a context's <see cref="TranslationContext.FastGeneration"/> is
    /// current only while it equals this.
    /// </summary>
    public ulong ConfigurationGeneration;

    internal bool StrictOn => _strict is { Enabled: true };

    /// <summary>The access a transaction asks for, as its bus attributes present it (read or write, privileged, instruction).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static AccessFlags AccessOf(bool write, in BusAttributes a) =>
        (write ? AccessFlags.Write : AccessFlags.Read)
        | (a.Privileged ? AccessFlags.Privileged : 0)
        | (a.Instruction ? AccessFlags.Execute : 0);

    /// <summary>
    /// The fast path every front end calls per access (or per translation block of a longer transfer): true with the
    /// entry (use <see cref="TlbEntry.Translate"/>), false with the fault. <paramref name="context"/> must not be bypass.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Translate(TranslationContext context, ulong input, AccessFlags access, out TlbEntry entry, out TranslationFault fault)
    {
        var key = context.TbiKey ? PageTableWalker.TlbInput(context.Config, input) : input;
        ref var e = ref _tlb.Find(ref context.Hints[(int)(key >> 12) & 15], context.Vmid, context.Asid, key);
        if (Unsafe.IsNullRef(ref e))
            return OnMiss(context.Config, context.Vmid, input, access, out entry, out fault);
        entry = e;
        if (entry.DeniedBy(access) == TranslationStage.None && !context.StrictChecks)
        {
            Unsafe.SkipInit(out fault); // read only on failure: not zeroed on the hit path
            return true;
        }
        return OnHit(context.Config, context.Vmid, input, key, access, ref entry, out fault);
    }

    /// <summary>
    /// The fast path for a caller that needs only the output address (a probe, a single-beat access): as
    /// <see cref="Translate(TranslationContext, ulong, AccessFlags, out TlbEntry, out TranslationFault)"/> but a hit
    /// copies nothing out of the IOTLB.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TranslateAddress(TranslationContext context, ulong input, AccessFlags access, out ulong output, out TranslationFault fault)
    {
        var key = context.TbiKey ? PageTableWalker.TlbInput(context.Config, input) : input;
        ref var e = ref _tlb.Find(ref context.Hints[(int)(key >> 12) & 15], context.Vmid, context.Asid, key);
        if (!Unsafe.IsNullRef(ref e) && e.DeniedBy(access) == TranslationStage.None && !context.StrictChecks)
        {
            output = e.OutputBase | (input & e.OffsetMask);
            Unsafe.SkipInit(out fault); // read only on failure
            return true;
        }
        return TranslateAddressSlow(context, input, key, access, ref e, out output, out fault);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    bool TranslateAddressSlow(TranslationContext context, ulong input, ulong key, AccessFlags access, ref TlbEntry found, out ulong output, out TranslationFault fault)
    {
        bool ok;
        TlbEntry entry;
        if (Unsafe.IsNullRef(ref found))
            ok = OnMiss(context.Config, context.Vmid, input, access, out entry, out fault);
        else
        {
            entry = found;
            ok = OnHit(context.Config, context.Vmid, input, key, access, ref entry, out fault);
        }
        output = ok ? entry.Translate(input) : 0;
        return ok;
    }

    /// <summary>
    /// Translates one access with a configuration that has no context (tests, CD fetches through stage 2). Bypass
    /// configurations translate to themselves. Same path as <see cref="Translate(TranslationContext, ulong, AccessFlags, out TlbEntry, out TranslationFault)"/>.
    /// </summary>
    public bool Translate(TranslationConfig config, ulong input, AccessFlags access, out TlbEntry entry, out TranslationFault fault)
    {
        ArgumentNullException.ThrowIfNull(config);
        return Translate(config, config.Vmid, input, access, out entry, out fault);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static bool Bypass(ulong input, out TlbEntry entry, out TranslationFault fault)
    {
        fault = default;
        entry = default;
        entry.InputBase = input & ~0xFFFUL;
        entry.OutputBase = entry.InputBase;
        entry.SizeLog2 = 12;
        entry.Stage1Permissions = PagePermissions.All;
        entry.Stage2Permissions = PagePermissions.All;
        entry.Global = true;
        return true;
    }

    /// <summary>
    /// As <see cref="Translate(TranslationConfig, ulong, AccessFlags, out TlbEntry, out TranslationFault)"/> with the VMID
    /// the IOTLB tags entries with given explicitly (SMMUv3 tags stage-1-only translations with STE.S2VMID when stage 2
    /// is implemented; with a stage 2 it is that stage's VMID).
    /// </summary>
    public bool Translate(TranslationConfig config, ushort vmid, ulong input, AccessFlags access, out TlbEntry entry, out TranslationFault fault)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.IsBypass) return Bypass(input, out entry, out fault);
        var key = PageTableWalker.TlbInput(config, input);
        ref var e = ref _tlb.FindLastHitFirst(vmid, config.Asid, key);
        if (Unsafe.IsNullRef(ref e)) return OnMiss(config, vmid, input, access, out entry, out fault);
        entry = e;
        if (entry.DeniedBy(access) == TranslationStage.None && !StrictOn)
        {
            Unsafe.SkipInit(out fault); // read only on failure, as the context overload's
            return true;
        }
        return OnHit(config, vmid, input, key, access, ref entry, out fault);
    }

    /// <summary>A hit that strict mode checks, or that the access is denied by (a permission fault, or a DBM write that walks).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    bool OnHit(TranslationConfig config, ushort vmid, ulong input, ulong key, AccessFlags access, ref TlbEntry entry, out TranslationFault fault)
    {
        fault = default;
        if (StrictOn) CheckStale(config, vmid, input, access, entry); // the monitor decides (a context flag may be stale)
        var denied = entry.DeniedBy(access);
        if (denied == TranslationStage.None) return true;
        if (!(entry.DirtyUpdatable && (access & AccessFlags.Write) != 0))
        {
            var ipa = denied == TranslationStage.Stage2 ? entry.IpaBase | (key & entry.OffsetMask) : 0;
            var level = denied == TranslationStage.Stage2 ? entry.Stage2Level : entry.Level;
            fault = new TranslationFault(FaultKind.Permission, denied, level, input, ipa, false, 0, access);
            return false;
        }
        // A write to a clean DBM page: the hardware dirty update needs a walk.
        return OnMiss(config, vmid, input, access, out entry, out fault);
    }

    /// <summary>The walk (through the walk cache) and the IOTLB fill.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    bool OnMiss(TranslationConfig config, ushort vmid, ulong input, AccessFlags access, out TlbEntry entry, out TranslationFault fault)
    {
        var r = _walker.Walk(config, vmid, input, access, _walkCache);
        if (r.IsFault)
        {
            entry = default;
            fault = r.Fault;
            return false;
        }
        fault = default;
        entry = r.Entry;
        entry.Vmid = vmid;
        _tlb.Insert(entry);
        return true;
    }

    void CheckStale(TranslationConfig config, ushort vmid, ulong input, AccessFlags access, in TlbEntry cached)
    {
        var now = _walker.Walk(config, input, AccessFlags.None, updateDescriptors: false);
        string? what = null;
        if (now.IsFault)
            what = $"memory now gives a {now.Fault.Kind} fault (stage {(int)now.Fault.Stage}, level {now.Fault.Level})";
        else if (now.Entry.Translate(input) != cached.Translate(input))
            what = $"memory now maps it to 0x{now.Entry.Translate(input):x}";
        else if (now.Entry.Stage1Permissions != cached.Stage1Permissions || now.Entry.Stage2Permissions != cached.Stage2Permissions)
            what = $"memory now grants {now.Entry.Stage1Permissions}/{now.Entry.Stage2Permissions}";
        if (what is null) return;
        _strict!.Report("IOTLB", StaleEntryRule,
            $"{access} of 0x{input:x} (VMID {vmid}, ASID {config.Asid}) used a cached translation to 0x{cached.Translate(input):x} " +
            $"({cached.Stage1Permissions}/{cached.Stage2Permissions}) but {what}: tables changed without TLBI + SYNC");
    }

    /// <summary>The IOTLB's walk cache as the walker sees it; in strict mode every hit is compared with memory.</summary>
    sealed class WalkCacheView(Translator owner) : IWalkCache
    {
        public bool TryGetTable(ref WalkCacheEntry entry)
        {
            if (!owner._tlb.TryGetTable(ref entry)) return false;
            if (owner.StrictOn && (owner._bus.ReadU64(entry.DescriptorPa, out var now) != BusStatus.Ok || now != entry.Descriptor))
                owner._strict!.Report("IOTLB", StaleWalkRule,
                    $"walk of stage {(int)entry.Stage} (VMID {entry.Vmid}, ASID {entry.Asid}) used a stale table descriptor at level {entry.Level} " +
                    $"(PA 0x{entry.DescriptorPa:x}, cached 0x{entry.Descriptor:x}, memory now 0x{now:x}) for inputs 0x{entry.Prefix << WalkCacheEntry.BlockShift(entry.Granule, entry.Level):x}+: " +
                    "a table was changed or freed without a non-leaf TLBI + SYNC");
            return true;
        }

        public void PutTable(in WalkCacheEntry entry) => owner._tlb.PutTable(entry);
    }

    // The message is built out of line, so the loop inlined into a port stays small.
    [MethodImpl(MethodImplOptions.NoInlining)]
    static void TraceBlock(Trace trace, string traceSource, uint streamId, bool write, ulong va, ulong pa, int chunk) =>
        trace.Emit(TraceCategory.SmmuTranslate, traceSource, $"SID 0x{streamId:x} {(write ? "write" : "read")} IOVA 0x{va:x} -> PA 0x{pa:x} ({chunk} bytes)");

    // ---- The transfer loop of every SMMU front end ----
    // Once a transaction's stream has resolved to a translating context (SMMUv3 stream ports, SMMUv2 stream ports), the
    // transfer is translated per translation block through the one fast path above and each block's bytes go to the bus
    // with the attributes unchanged. What a fault means (an event record, fault registers, RAZ/WI or abort) stays the
    // front end's: the loop stops at the faulting block and says where.

    /// <summary>
    /// Carries out [<paramref name="address"/>, + length): reads into <paramref name="rd"/> or writes
    /// <paramref name="wr"/>. True when every block went to the bus, or the bus answered an error
    /// (<paramref name="status"/>); false at a translation fault, with the offset of the faulting block in
    /// <paramref name="done"/> (the bytes before it were transferred) and the fault. With a <paramref name="trace"/>,
    /// each block is traced under <see cref="TraceCategory.SmmuTranslate"/> when that category is on.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Transfer(TranslationContext context, IMemoryView bus, ulong address,
        Span<byte> rd, ReadOnlySpan<byte> wr, bool write, AccessFlags access, in BusAttributes attributes,
        Trace? trace, string traceSource, uint streamId, out BusStatus status, out int done, out TranslationFault fault)
    {
        var length = write ? wr.Length : rd.Length;
        var pos = 0;
        var va = address;
        while (pos < length)
        {
            if (!Translate(context, va, access, out var entry, out fault))
            {
                status = BusStatus.SlaveError;
                done = pos;
                return false;
            }
            var inBlock = entry.SizeLog2 >= 63 ? ulong.MaxValue : entry.SizeBytes - (va & entry.OffsetMask);
            var chunk = (int)Math.Min((ulong)(length - pos), inBlock);
            var pa = entry.Translate(va);
            if (trace is not null && trace.IsOn(TraceCategory.SmmuTranslate)) TraceBlock(trace, traceSource, streamId, write, va, pa, chunk);
            var s = write ? bus.Write(pa, wr.Slice(pos, chunk), attributes) : bus.Read(pa, rd.Slice(pos, chunk), attributes);
            if (s != BusStatus.Ok)
            {
                status = s;
                done = pos;
                return true;
            }
            pos += chunk;
            va += (ulong)chunk;
        }
        status = BusStatus.Ok;
        done = length;
        Unsafe.SkipInit(out fault);
        return true;
    }
}

/// <summary>
/// The upstream port of one stream (what a device issues DMA and MSI writes to), whichever IOMMU front end owns it. The
/// fast path — a context its front end resolved to plain translation at the current configuration generation, strict
/// mode off, a transaction the IOMMU supports — is the <see cref="Translator"/>'s alone: IOTLB, permission check, each
/// translation block to the bus. Resolution, bypass, aborts, unsupported transactions and what a fault means (an event
/// record, fault registers, RAZ/WI) are the front end's overrides.
/// </summary>
public abstract class TranslatedStreamPort : IMemoryPort
{
    readonly Translator _translator;
    readonly IMemoryView _downstream;
    readonly TranslationContext _context;
    readonly Trace? _trace;
    readonly string _traceSource;

    protected TranslatedStreamPort(Translator translator, IMemoryView downstream, TranslationContext context, uint streamId, Trace? trace, string traceSource)
    {
        ArgumentNullException.ThrowIfNull(translator);
        ArgumentNullException.ThrowIfNull(downstream);
        ArgumentNullException.ThrowIfNull(context);
        _translator = translator;
        _downstream = downstream;
        _context = context;
        _trace = trace;
        _traceSource = traceSource;
        StreamId = streamId;
    }

    public uint StreamId { get; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    bool FastContext() => _context.FastGeneration == _translator.ConfigurationGeneration && !_translator.StrictOn;

    /// <summary>A non-empty transfer that does not wrap past 2^64 and is not an instruction-fetch write, on a fast context.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    bool Fast(ulong address, int length, bool write, in BusAttributes a) =>
        FastContext() && length != 0 && address + (ulong)length - 1 >= address && !(write && a.Instruction);

    public BusStatus Read(ulong address, Span<byte> destination, in BusAttributes attributes) =>
        Transfer(address, destination, default, false, attributes);

    public BusStatus Write(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes) =>
        Transfer(address, default, source, true, attributes);

    // Inlined into Read and Write, where write is a constant.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    BusStatus Transfer(ulong address, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, in BusAttributes attributes)
    {
        if (!Fast(address, write ? wr.Length : rd.Length, write, attributes)) return TransferResolved(address, rd, wr, write, attributes);
        var access = Translator.AccessOf(write, attributes);
        if (_translator.Transfer(_context, _downstream, address, rd, wr, write, access, attributes, _trace, _traceSource, StreamId,
                out var status, out var pos, out var fault))
            return status;
        return TransferFaulted(address, pos, rd, wr, write, access, attributes, fault);
    }

    /// <summary>
    /// Translates one address as a transaction of this port would be (same resolution, IOTLB, permission check and
    /// fault report) without moving data. True with the output address.
    /// </summary>
    public bool TryTranslate(ulong address, AccessFlags access, out ulong physicalAddress)
    {
        if (FastContext())
        {
            if (_translator.TranslateAddress(_context, address, access, out physicalAddress, out var fault)) return true;
            TranslateFaulted(address, access, fault);
            return false;
        }
        return TranslateResolved(address, access, out physicalAddress);
    }

    /// <summary>Everything off the fast path: the front end (re)resolves the stream and carries the transaction out.</summary>
    protected abstract BusStatus TransferResolved(ulong address, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, in BusAttributes attributes);

    /// <summary>A fast-path transfer stopped by a translation fault at byte <paramref name="done"/> (the bytes before it moved).</summary>
    protected abstract BusStatus TransferFaulted(ulong address, int done, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, AccessFlags access,
        in BusAttributes attributes, in TranslationFault fault);

    /// <summary><see cref="TryTranslate"/> off the fast path.</summary>
    protected abstract bool TranslateResolved(ulong address, AccessFlags access, out ulong physicalAddress);

    /// <summary>A fast-path <see cref="TryTranslate"/> that faulted: the front end reports it.</summary>
    protected abstract void TranslateFaulted(ulong address, AccessFlags access, in TranslationFault fault);
}
