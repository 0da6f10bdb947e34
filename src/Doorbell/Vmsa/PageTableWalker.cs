using System.Runtime.InteropServices;
using System.Runtime.CompilerServices;
using Doorbell.Memory;

namespace Doorbell.Vmsa;

// Known limits (details in docs/deviations.md):
// - 52-bit addresses only through FEAT_LPA with the 64K granule (OA[51:48] in descriptor bits [15:12], level-1
//   blocks); FEAT_LPA2 (4K/16K 52-bit, level -1, DS = 1) is not modelled.
// - The walk cache (an IWalkCache given by the caller) holds table descriptors only; a walk starts below the deepest
//   cached one. Strict-mode re-walks never use it.
// - A misprogrammed contiguous run (entries that disagree) is CONSTRAINED UNPREDICTABLE; the walker caches the run
//   from the descriptor it read, output address aligned down to the run size.
// - Memory attributes (MAIR/MemAttr/shareability) are carried for reports only; S2PTW is honoured (stage-1 walks
//   that land on stage-2 Device memory fault).

/// <summary>The outcome of one walk: a TLB entry, or a fault naming stage, kind and level.</summary>
public readonly struct WalkResult
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public WalkResult(in TlbEntry entry, in TranslationFault fault)
    {
        Entry = entry;
        Fault = fault;
    }

    /// <summary>The translation. Valid when <see cref="IsFault"/> is false. (Fields, so reading a member copies nothing.)</summary>
    public readonly TlbEntry Entry;
    public readonly TranslationFault Fault;
    public bool IsFault => Fault.Kind != FaultKind.None;
}

/// <summary>
/// VMSAv8-64 translation table walker (Arm ARM DDI 0487 D8): stage 1, stage 2 and nested, granules 4K/16K/64K,
/// every start level, stage-2 concatenated initial tables, TTB0/TTB1 with TBI and EPD, hierarchical permissions,
/// the contiguous hint, access flag (HA) and dirty state (HD/DBM) hardware updates. Faults are values.
/// The walk allocates nothing and every loop is bounded by the number of levels.
/// </summary>
[SkipLocalsInit]
public sealed class PageTableWalker
{
    const ulong TopByteMask = 0xFF00_0000_0000_0000UL;

    readonly IMemoryView _bus;
    // The host bus when that is the view: descriptor fetches call it directly (a sealed class, so they inline).
    readonly PhysicalAddressSpace? _pas;

    public PageTableWalker(IMemoryView bus)
    {
        ArgumentNullException.ThrowIfNull(bus);
        _bus = bus;
        _pas = bus as PhysicalAddressSpace;
    }

    /// <summary>One stage's leaf: the block (or contiguous run) that maps the input address.</summary>
    struct StageLeaf
    {
        public ulong OutputBase;   // aligned to 2^SizeLog2
        public int SizeLog2;
        public int Level;
        public ulong Descriptor;
        public ulong DescriptorPa;
        public ulong TableAttributes; // OR of stage-1 table descriptor bits [63:59]
    }

    /// <summary>
    /// The address the IOTLB is keyed by: with TBI for the selected half, the top byte is replaced by copies of
    /// bit 55 (so tagged pointers share entries). Other addresses are returned unchanged.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong TlbInput(TranslationConfig config, ulong input)
    {
        ArgumentNullException.ThrowIfNull(config);
        var s1 = config.Stage1;
        if (s1 is null) return input;
        var high = (input & (1UL << 55)) != 0;
        if (!(high ? s1.Tbi1 : s1.Tbi0)) return input;
        return high ? input | TopByteMask : input & ~TopByteMask;
    }

    /// <summary>Translates <paramref name="inputAddress"/> through every stage of <paramref name="config"/> and checks <paramref name="access"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public WalkResult Walk(TranslationConfig config, ulong inputAddress, AccessFlags access) => Walk(config, inputAddress, access, true);

    /// <summary>
    /// As <see cref="Walk(TranslationConfig, ulong, AccessFlags)"/>; with <paramref name="updateDescriptors"/> false the
    /// walk never writes memory (no AF/dirty updates): what strict mode uses to compare memory with a cached entry.
    /// </summary>
    public WalkResult Walk(TranslationConfig config, ulong inputAddress, AccessFlags access, bool updateDescriptors)
    {
        ArgumentNullException.ThrowIfNull(config);
        TranslationFault fault = default;
        TlbEntry e = default;
        WalkCore(config, inputAddress, access, updateDescriptors, default, ref e, ref fault);
        return new WalkResult(e, fault);
    }

    /// <summary>
    /// A walk that consults and fills <paramref name="cache"/> with table descriptors, tagged with <paramref name="vmid"/>
    /// (the VMID the IOTLB tags this configuration's entries with) and the stage-1 ASID.
    /// </summary>
    public WalkResult Walk(TranslationConfig config, ushort vmid, ulong inputAddress, AccessFlags access, IWalkCache? cache)
    {
        ArgumentNullException.ThrowIfNull(config);
        TranslationFault fault = default;
        TlbEntry e = default;
        WalkCore(config, inputAddress, access, true, new CacheTags(cache, vmid, config.Stage1?.Asid ?? 0), ref e, ref fault);
        return new WalkResult(e, fault);
    }

    /// <summary>The walk cache of one walk and the tags its entries carry.</summary>
    readonly record struct CacheTags(IWalkCache? Cache, ushort Vmid, ushort Asid);

    // One result struct filled in place: a single construction of WalkResult keeps the caller's frame small.
    void WalkCore(TranslationConfig config, ulong inputAddress, AccessFlags access, bool updateDescriptors, in CacheTags tags, ref TlbEntry e, ref TranslationFault fault)
    {
        var s1 = config.Stage1;
        var s2 = config.Stage2;

        if (s1 is null)
        {
            if (s2 is null)
            {
                // Bypass: identity, everything allowed (front ends normally never call the walker for bypass).
                e.InputBase = inputAddress & ~0xFFFUL;
                e.OutputBase = e.InputBase;
                e.SizeLog2 = 12;
                e.Level = 3;
                e.Granule = Granule.Size4K;
                e.Stage1Permissions = PagePermissions.All;
                e.Stage2Permissions = PagePermissions.All;
                e.Global = true;
                return;
            }
            StageLeaf l2 = default;
            if (!WalkStage2(s2, inputAddress, inputAddress, access, false, updateDescriptors, tags, ref l2, ref fault))
                return;
            var s2Perm = Stage2Permissions(s2, l2.Descriptor, access, out var dirty2);
            e.InputBase = inputAddress & ~((1UL << l2.SizeLog2) - 1);
            e.OutputBase = l2.OutputBase;
            e.SizeLog2 = (byte)l2.SizeLog2;
            e.Level = (sbyte)l2.Level;
            e.Granule = s2.Granule;
            e.Stage1Permissions = PagePermissions.All;
            e.Stage2Permissions = s2Perm;
            e.Vmid = s2.Vmid;
            e.Global = true;
            e.HasStage2 = true;
            e.Stage2MemAttr = (byte)((l2.Descriptor >> Descriptors.MemAttrShift) & 0xF);
            e.Stage2Level = (sbyte)l2.Level;
            e.Stage2SizeLog2 = (byte)l2.SizeLog2;
            e.IpaBase = e.InputBase;
            e.DirtyUpdatable = dirty2 == DirtyState.Clean;
            if (!PermissionCheck(ref e, inputAddress, access, ref fault))
                return;
            if (updateDescriptors) ApplyUpdates(l2, dirty2 == DirtyState.Dirtied, true, s2.HardwareAccessFlag);
            return;
        }

        // Stage 1 (possibly nested).
        StageLeaf l1 = default;
        if (!WalkStage1(s1, s2, inputAddress, access, updateDescriptors, tags, ref l1, ref fault, out var granule1, out var va))
            return;
        var s1Perm = Stage1Permissions(s1, l1.Descriptor, l1.TableAttributes, access, out var dirty1);
        e.Granule = granule1;
        e.Level = (sbyte)l1.Level;
        e.Stage1Permissions = s1Perm;
        e.Stage2Permissions = PagePermissions.All;
        e.Asid = s1.Asid;
        e.Vmid = config.Vmid;
        e.Global = (l1.Descriptor & Descriptors.NotGlobal) == 0;
        e.HasStage1 = true;
        e.AttrIndex = (byte)((l1.Descriptor >> Descriptors.AttrIndxShift) & 7);
        e.DirtyUpdatable = dirty1 == DirtyState.Clean;
        var s1Mask = (1UL << l1.SizeLog2) - 1;
        var ipa = l1.OutputBase | (va & s1Mask);

        if (s2 is null)
        {
            e.InputBase = va & ~s1Mask;
            e.OutputBase = l1.OutputBase;
            e.SizeLog2 = (byte)l1.SizeLog2;
            if (!PermissionCheck(ref e, inputAddress, access, ref fault))
                return;
            if (updateDescriptors) ApplyUpdates(l1, dirty1 == DirtyState.Dirtied, false, s1.HardwareAccessFlag);
            return;
        }

        // Stage-1 permission faults take priority over the stage-2 walk of the output (Arm ARM D8 fault prioritisation).
        e.InputBase = va & ~s1Mask;
        e.SizeLog2 = (byte)l1.SizeLog2;
        if (!Allowed(s1Perm, access))
        {
            fault = new TranslationFault(FaultKind.Permission, TranslationStage.Stage1, (sbyte)l1.Level, inputAddress, 0, false, 0, access);
            return;
        }
        StageLeaf l2n = default;
        if (!WalkStage2(s2, ipa, inputAddress, access, false, updateDescriptors, tags, ref l2n, ref fault))
            return;
        var s2PermN = Stage2Permissions(s2, l2n.Descriptor, access, out var dirty2n);
        var size = Math.Min(l1.SizeLog2, l2n.SizeLog2);
        var mask = (1UL << size) - 1;
        var pa = l2n.OutputBase | (ipa & ((1UL << l2n.SizeLog2) - 1));
        e.InputBase = va & ~mask;
        e.OutputBase = pa & ~mask;
        e.SizeLog2 = (byte)size;
        e.Stage2Permissions = s2PermN;
        e.HasStage2 = true;
        e.Stage2MemAttr = (byte)((l2n.Descriptor >> Descriptors.MemAttrShift) & 0xF);
        e.Stage2Level = (sbyte)l2n.Level;
        e.Stage2SizeLog2 = (byte)l2n.SizeLog2;
        e.IpaBase = ipa & ~mask;
        e.DirtyUpdatable |= dirty2n == DirtyState.Clean;
        if (!PermissionCheck(ref e, inputAddress, access, ref fault))
            return;
        if (updateDescriptors)
        {
            ApplyUpdates(l1, dirty1 == DirtyState.Dirtied, false, s1.HardwareAccessFlag);
            ApplyUpdates(l2n, dirty2n == DirtyState.Dirtied, true, s2.HardwareAccessFlag);
        }
        return;
    }

    static bool Allowed(PagePermissions granted, AccessFlags access)
    {
        var need = AccessPermissions.Required(access);
        return (granted & need) == need;
    }

    static bool PermissionCheck(ref TlbEntry e, ulong input, AccessFlags access, ref TranslationFault fault)
    {
        var stage = e.DeniedBy(access);
        if (stage == TranslationStage.None) return true;
        var ipa = stage == TranslationStage.Stage2 ? e.IpaBase | (input & e.OffsetMask) : 0;
        var level = stage == TranslationStage.Stage2 ? e.Stage2Level : e.Level;
        fault = new TranslationFault(FaultKind.Permission, stage, level, input, ipa, false, 0, access);
        return false;
    }

    enum DirtyState : byte { None, Clean, Dirtied }

    /// <summary>Stage-1 permissions, EL1&amp;0 regime with two privilege levels (Arm ARM D8.4): AP[2:1], UXN/PXN, APTable, XNTable, WXN.</summary>
    static PagePermissions Stage1Permissions(Stage1Config s1, ulong d, ulong tableAttr, AccessFlags access, out DirtyState dirty)
    {
        var readOnly = (d & Descriptors.Ap2) != 0;
        var el0 = (d & Descriptors.Ap1) != 0;
        dirty = DirtyState.None;
        var noWriteBelow = (tableAttr & Descriptors.ApTable1) != 0;
        if (readOnly && s1.HardwareDirty && (d & Descriptors.Dbm) != 0 && !noWriteBelow)
        {
            // HD: a write to a writable-clean page sets it dirty (clears AP[2]) instead of faulting.
            if ((access & AccessFlags.Write) != 0) { readOnly = false; dirty = DirtyState.Dirtied; }
            else dirty = DirtyState.Clean;
        }
        if (noWriteBelow) readOnly = true;
        if ((tableAttr & Descriptors.ApTable0) != 0) el0 = false;
        var pw = !readOnly;
        var ur = el0;
        var uw = el0 && !readOnly;
        var ux = (d & Descriptors.Uxn) == 0 && (tableAttr & Descriptors.UxnTable) == 0;
        // A region writable at EL0 is never executable at EL1.
        var px = (d & Descriptors.Pxn) == 0 && (tableAttr & Descriptors.PxnTable) == 0 && !uw;
        if (s1.Wxn)
        {
            if (uw) ux = false;
            if (pw) px = false;
        }
        var p = PagePermissions.PrivRead;
        if (pw) p |= PagePermissions.PrivWrite;
        if (px) p |= PagePermissions.PrivExecute;
        if (ur) p |= PagePermissions.UserRead;
        if (uw) p |= PagePermissions.UserWrite;
        if (ux) p |= PagePermissions.UserExecute;
        return p;
    }

    /// <summary>Stage-2 permissions (Arm ARM D8.4.2): S2AP[1:0] read/write, XN[1:0] (FEAT_XNX encoding).</summary>
    static PagePermissions Stage2Permissions(Stage2Config s2, ulong d, AccessFlags access, out DirtyState dirty)
    {
        var r = (d & Descriptors.S2ApRead) != 0;
        var w = (d & Descriptors.S2ApWrite) != 0;
        dirty = DirtyState.None;
        if (!w && s2.HardwareDirty && (d & Descriptors.Dbm) != 0)
        {
            if ((access & AccessFlags.Write) != 0) { w = true; dirty = DirtyState.Dirtied; }
            else dirty = DirtyState.Clean;
        }
        var xn = (int)((d >> 53) & 3);
        // XN[1:0]: 00 executable at EL1 and EL0; 01 not at EL1; 10 at neither; 11 not at EL0.
        var ux = xn is 0 or 1;
        var px = xn is 0 or 3;
        var p = PagePermissions.None;
        if (r) p |= PagePermissions.UserRead | PagePermissions.PrivRead;
        if (w) p |= PagePermissions.UserWrite | PagePermissions.PrivWrite;
        if (ux) p |= PagePermissions.UserExecute;
        if (px) p |= PagePermissions.PrivExecute;
        return p;
    }

    void ApplyUpdates(in StageLeaf leaf, bool dirtied, bool stage2, bool hardwareAf)
    {
        var d = hardwareAf ? leaf.Descriptor | Descriptors.Af : leaf.Descriptor;
        if (dirtied) d = stage2 ? d | Descriptors.S2ApWrite : d & ~Descriptors.Ap2;
        if (d != leaf.Descriptor)
            _bus.WriteU64(leaf.DescriptorPa, d);
    }

    /// <summary>Number of levels needed to resolve <paramref name="inputSize"/> bits (constant divisors per granule).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int StartLevelFor(Granule g, int inputSize) => g switch
    {
        Granule.Size4K => 4 - (inputSize - 12 + 8) / 9,
        Granule.Size16K => 4 - (inputSize - 14 + 10) / 11,
        _ => 4 - (inputSize - 16 + 12) / 13,
    };

    bool WalkStage1(Stage1Config s1, Stage2Config? s2, ulong input, AccessFlags access, bool update, in CacheTags tags,
        ref StageLeaf leaf, ref TranslationFault fault, out Granule granule, out ulong va)
    {
        // TTB0/TTB1 selection by VA[55]; TBI ignores the top byte for the range check (Arm ARM D8.1.8, D8.2).
        var high = (input & (1UL << 55)) != 0;
        var region = high ? s1.High : s1.Low;
        var tbi = high ? s1.Tbi1 : s1.Tbi0;
        va = tbi ? (high ? input | TopByteMask : input & ~TopByteMask) : input;
        granule = Granule.Size4K;
        if (region is null)
        {
            return Fail(ref fault, FaultKind.Translation, TranslationStage.Stage1, 0, input, access);
        }
        granule = region.Granule;
        var n = region.InputSize;
        if (n is < 12 or > 52)
        {
            return Fail(ref fault, FaultKind.Translation, TranslationStage.Stage1, 0, input, access);
        }
        var upperMask = ~((1UL << n) - 1);
        var upper = va & upperMask;
        if (high ? upper != upperMask : upper != 0)
        {
            // Input outside the configured range: translation fault at level 0.
            return Fail(ref fault, FaultKind.Translation, TranslationStage.Stage1, 0, input, access);
        }
        if (region.WalksDisabled)
        {
            // EPDn = 1: a miss in this half faults without a walk.
            return Fail(ref fault, FaultKind.Translation, TranslationStage.Stage1, 0, input, access);
        }
        var start = StartLevelFor(granule, n);
        return WalkTables(granule, n, start, region.TableBase, s1.OutputSize, va, input, access,
            TranslationStage.Stage1, s1.HardwareAccessFlag, s1.AccessFlagFaultsDisabled, s2, update, tags, ref leaf, ref fault);
    }

    bool WalkStage2(Stage2Config s2, ulong ipa, ulong input, AccessFlags access, bool onStage1Walk, bool update, in CacheTags tags,
        ref StageLeaf leaf, ref TranslationFault fault)
    {
        var n = s2.InputSize;
        if (n is < 12 or > 52 || (ipa >> n) != 0)
        {
            return Fail(ref fault, FaultKind.Translation, TranslationStage.Stage2, 0, input, access, ipa: ipa, onStage1Walk: onStage1Walk);
        }
        if (!WalkTables(s2.Granule, n, s2.StartLevel, s2.TableBase, s2.OutputSize, ipa, input, access,
                TranslationStage.Stage2, s2.HardwareAccessFlag, s2.AccessFlagFaultsDisabled, null, update, tags, ref leaf, ref fault))
        {
            // Stage-2 faults report the IPA and whether they happened on a stage-1 table walk.
            fault = fault with { Ipa = ipa, OnStage1Walk = onStage1Walk };
            return false;
        }
        return true;
    }

    /// <summary>Records a fault; kept out of line so the walk loop stays small enough for the bus read to inline.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static bool Fail(ref TranslationFault fault, FaultKind kind, TranslationStage stage, int level, ulong input, AccessFlags access,
        ulong fetch = 0, ulong ipa = 0, bool onStage1Walk = false)
    {
        fault = new TranslationFault(kind, stage, (sbyte)level, input, ipa, onStage1Walk, fetch, access);
        return false;
    }

    /// <summary>
    /// The table walk of one stage. <paramref name="address"/> is the stage's input (VA or IPA); <paramref name="input"/>
    /// is the transaction's original address for fault records. With <paramref name="walkStage2"/> set (nested), every
    /// descriptor address is an IPA translated by stage 2 before the fetch.
    /// </summary>
    bool WalkTables(Granule g, int inputSize, int startLevel, ulong tableBase, int outputSize, ulong address, ulong input,
        AccessFlags access, TranslationStage stage, bool hardwareAf, bool afFaultsDisabled, Stage2Config? walkStage2,
        bool update, in CacheTags tags, ref StageLeaf leaf, ref TranslationFault fault)
    {
        var gShift = (int)g;
        var stride = gShift - 3;
        if (outputSize is < 32 or > 52) outputSize = 48;
        if (startLevel is < 0 or > 3)
        {
            return Fail(ref fault, FaultKind.Translation, stage, 0, input, access);
        }
        var level = startLevel;
        var shift = gShift + (3 - level) * stride;
        var bits = inputSize - shift;
        if (bits < 1 || bits > stride + 4)
        {
            // Not resolvable from this start level (at most 16 concatenated tables): an invalid configuration.
            return Fail(ref fault, FaultKind.Translation, stage, level, input, access);
        }
        // The base is aligned to the initial table's size (low bits treated as zero).
        var table = tableBase & ~((8UL << bits) - 1);
        if ((table >> outputSize) != 0)
        {
            // Table base beyond the output size: address size fault at level 0.
            return Fail(ref fault, FaultKind.AddressSize, stage, 0, input, access);
        }
        ulong tableAttr = 0;
        var oaField = Descriptors.AddressMask48 & ~((1UL << gShift) - 1);
        var lpa64 = g == Granule.Size64K && outputSize > 48;
        var root = table;
        var asid = stage == TranslationStage.Stage1 ? tags.Asid : (ushort)0;
        if (tags.Cache is { } cache)
        {
            // Start below the deepest cached table descriptor (levels start..2 hold table descriptors).
            for (var l = 2; l >= startLevel; l--)
            {
                var sh = WalkCacheEntry.BlockShift(g, l);
                var k = new WalkCacheEntry { Stage = stage, Vmid = tags.Vmid, Asid = asid, Granule = g, Level = (sbyte)l, Root = root, Prefix = address >> sh };
                if (!cache.TryGetTable(ref k)) continue;
                table = k.Next;
                tableAttr = k.TableAttributes;
                level = l + 1;
                shift = sh - stride;
                bits = stride;
                break;
            }
        }
        for (var i = 0; i < 4; i++) // at most four levels: the loop is bounded whatever memory says
        {
            var descAddr = table + (((address >> shift) & ((1UL << bits) - 1)) << 3);
            var descPa = descAddr;
            if (walkStage2 is not null)
            {
                // Nested: the stage-1 table address is an IPA. Stage 2 must grant read (and write for an AF/dirty update).
                StageLeaf tl = default;
                var walkAccess = AccessFlags.Read;
                if (!WalkStage2(walkStage2, descAddr, input, walkAccess, true, update, tags, ref tl, ref fault))
                    return false;
                if ((tl.Descriptor & Descriptors.S2ApRead) == 0
                    || (walkStage2.ProtectedTableWalk && ((tl.Descriptor >> (Descriptors.MemAttrShift + 2)) & 3) == 0))
                {
                    return Fail(ref fault, FaultKind.Permission, TranslationStage.Stage2, tl.Level, input, access, ipa: descAddr, onStage1Walk: true);
                }
                if (update && (tl.Descriptor & Descriptors.Af) == 0) ApplyUpdates(tl, false, true, walkStage2.HardwareAccessFlag);
                descPa = tl.OutputBase | (descAddr & ((1UL << tl.SizeLog2) - 1));
            }
            ulong d;
            if ((_pas is { } pas ? pas.ReadU64(descPa, out d) : _bus.ReadU64(descPa, out d)) != BusStatus.Ok)
            {
                return Fail(ref fault, FaultKind.WalkExternalAbort, stage, level, input, access, descPa);
            }
            if ((d & Descriptors.Valid) == 0)
            {
                return Fail(ref fault, FaultKind.Translation, stage, level, input, access);
            }
            var oa = d & oaField;
            if (lpa64) oa |= ((d >> Descriptors.Lpa64KHighShift) & 0xF) << 48;
            if (level < 3 && (d & Descriptors.TypeTableOrPage) != 0)
            {
                if ((oa >> outputSize) != 0)
                {
                    return Fail(ref fault, FaultKind.AddressSize, stage, level, input, access);
                }
                if (stage == TranslationStage.Stage1) tableAttr |= d & 0xF800_0000_0000_0000UL;
                tags.Cache?.PutTable(new WalkCacheEntry
                {
                    Stage = stage, Vmid = tags.Vmid, Asid = asid, Granule = g, Level = (sbyte)level, Root = root, Prefix = address >> shift,
                    Next = oa, TableAttributes = tableAttr, DescriptorPa = descPa, Descriptor = d,
                });
                table = oa;
                level++;
                shift -= stride;
                bits = stride;
                continue;
            }
            if (level == 3 ? (d & Descriptors.TypeTableOrPage) == 0 : !Descriptors.BlockAllowed(g, level, outputSize))
            {
                // Reserved encoding (block at level 3, or a block where the granule has none).
                return Fail(ref fault, FaultKind.Translation, stage, level, input, access);
            }
            oa &= ~((1UL << shift) - 1);
            if ((oa >> outputSize) != 0)
            {
                return Fail(ref fault, FaultKind.AddressSize, stage, level, input, access);
            }
            if ((d & Descriptors.Af) == 0 && !hardwareAf && !afFaultsDisabled)
            {
                return Fail(ref fault, FaultKind.AccessFlag, stage, level, input, access);
            }
            if ((d & Descriptors.Contiguous) != 0)
            {
                shift += Descriptors.ContiguousBits(g, level);
                oa &= ~((1UL << shift) - 1);
            }
            leaf.OutputBase = oa;
            leaf.SizeLog2 = shift;
            leaf.Level = level;
            leaf.Descriptor = d;
            leaf.DescriptorPa = descPa;
            leaf.TableAttributes = tableAttr;
            return true;
        }
        return Fail(ref fault, FaultKind.Translation, stage, 3, input, access);
    }
}
