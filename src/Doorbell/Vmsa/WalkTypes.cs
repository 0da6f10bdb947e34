namespace Doorbell.Vmsa;

/// <summary>What a transaction wants to do. Requests carry exactly one of Read/Write/Execute, plus Privileged when the master is privileged.</summary>
[Flags]
public enum AccessFlags : byte
{
    None = 0,
    Read = 1,
    Write = 2,
    Execute = 4,
    Privileged = 8,
}

/// <summary>Permissions a translation grants (one stage, or the two stages combined).</summary>
[Flags]
public enum PagePermissions : byte
{
    None = 0,
    UserRead = 1,
    UserWrite = 2,
    UserExecute = 4,
    PrivRead = 8,
    PrivWrite = 16,
    PrivExecute = 32,
    All = 63,
}

/// <summary>What an access needs of a translation's permissions.</summary>
public static class AccessPermissions
{
    /// <summary>The permission bit an access needs (none for a probe with no Read/Write/Execute).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public static PagePermissions Required(AccessFlags access) =>
        (PagePermissions)System.Runtime.CompilerServices.Unsafe.Add(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(RequiredByAccess), (int)access & 15);

    // Required(access) for the 16 combinations of Read/Write/Execute/Privileged, as one load on the hit path: Write wins
    // over Execute wins over Read if a caller sets several; a probe with none needs nothing; Privileged selects the
    // privileged bits (PagePermissions: user R/W/X = 1/2/4, privileged = 8/16/32).
    static ReadOnlySpan<byte> RequiredByAccess =>
    [
        0, 1, 2, 2, 4, 4, 2, 2, // user:       none, R, W, RW, X, RX, WX, RWX
        0, 8, 16, 16, 32, 32, 16, 16, // privileged: the same, shifted by 3
    ];
}

public enum TranslationStage : byte
{
    None = 0,
    Stage1 = 1,
    Stage2 = 2,
}

/// <summary>Fault kinds of a VMSAv8-64 translation (Arm ARM D8; SMMUv3 F_TRANSLATION/F_ACCESS/F_PERMISSION/F_ADDR_SIZE/F_WALK_EABT).</summary>
public enum FaultKind : byte
{
    None = 0,
    Translation,
    AccessFlag,
    Permission,
    AddressSize,
    /// <summary>A descriptor fetch was answered with an external abort (nothing decodes the table address).</summary>
    WalkExternalAbort,
}

/// <summary>
/// A translation fault as a value. For a stage-2 fault taken on a stage-1 table walk (nested),
/// <see cref="OnStage1Walk"/> is true and <see cref="Ipa"/> is the table address that stage 2 could not translate.
/// </summary>
public readonly record struct TranslationFault(
    FaultKind Kind,
    TranslationStage Stage,
    sbyte Level,
    ulong InputAddress,
    ulong Ipa,
    bool OnStage1Walk,
    ulong FetchAddress,
    AccessFlags Access)
{
    public bool IsFault => Kind != FaultKind.None;
    public override string ToString() =>
        $"{Kind} fault, stage {(int)Stage}, level {Level}, input 0x{InputAddress:x}" +
        (Stage == TranslationStage.Stage2 ? $", IPA 0x{Ipa:x}" : "") +
        (OnStage1Walk ? " (on stage-1 table walk)" : "") +
        (Kind == FaultKind.WalkExternalAbort ? $", fetch 0x{FetchAddress:x}" : "");
}

/// <summary>
/// A cached translation: an input block of 2^SizeLog2 bytes at InputBase maps to OutputBase. For nested
/// translations the block is the smaller of the stage-1 and stage-2 blocks and both stages' permissions are kept,
/// so a permission fault can name the stage that denied it.
/// </summary>
public struct TlbEntry
{
    public ulong InputBase;
    public ulong OutputBase;
    public byte SizeLog2;
    /// <summary>Level of the leaf descriptor (stage 1 when present, else stage 2).</summary>
    public sbyte Level;
    public Granule Granule;
    public PagePermissions Stage1Permissions;
    public PagePermissions Stage2Permissions;
    public ushort Asid;
    public ushort Vmid;
    /// <summary>nG = 0 at stage 1 (or no stage 1): matches any ASID.</summary>
    public bool Global;
    public bool HasStage1;
    public bool HasStage2;
    /// <summary>Stage-1 AttrIndx (MAIR index) and stage-2 MemAttr, for reports.</summary>
    public byte AttrIndex;
    public byte Stage2MemAttr;
    /// <summary>Level of the stage-2 leaf (when HasStage2), for faults that stage 2 reports on a cached entry.</summary>
    public sbyte Stage2Level;
    /// <summary>Log2 of the stage-2 block that produced this entry (TLBI by IPA removes every entry derived from it).</summary>
    public byte Stage2SizeLog2;
    /// <summary>A write to this clean (DBM = 1, read-only) page would be made writable by a hardware dirty-state update (HD): a write must re-walk.</summary>
    public bool DirtyUpdatable;
    /// <summary>IPA of InputBase (stage 2 present): the stage-1 output, or the input itself for stage-2-only entries.</summary>
    public ulong IpaBase;
    /// <summary>The IOTLB's tick when the entry was inserted (its liveness against scope invalidations), kept in the entry's own cache line.</summary>
    internal ulong InsertTick;

    public readonly ulong SizeBytes => 1UL << SizeLog2;
    public readonly ulong OffsetMask => (1UL << SizeLog2) - 1;
    public readonly ulong Translate(ulong input) => OutputBase | (input & OffsetMask);

    /// <summary>
    /// Checks one access against this (possibly cached) translation: the stage that denies it, or
    /// <see cref="TranslationStage.None"/> when allowed. Stage 1 is checked first (it faults first).
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public readonly TranslationStage DeniedBy(AccessFlags access)
    {
        var need = AccessPermissions.Required(access);
        if ((Stage1Permissions & need) != need) return TranslationStage.Stage1;
        if ((Stage2Permissions & need) != need) return TranslationStage.Stage2;
        return TranslationStage.None;
    }
}

/// <summary>
/// One cached table descriptor of a walk (an intermediate entry of a walk cache): the table at <see cref="Level"/> + 1
/// that the descriptor at <see cref="Level"/> gives for inputs whose bits above that level's block size equal
/// <see cref="Prefix"/>. Stage-1 entries are tagged with VMID and ASID, stage-2 entries with VMID (Arm ARM D8.14,
/// IHI 0070 §3.17); <see cref="Root"/> (the walk's first table) is kept so a walk from another table never uses it.
/// </summary>
public struct WalkCacheEntry
{
    public TranslationStage Stage;
    public ushort Vmid;
    public ushort Asid;
    public Granule Granule;
    public sbyte Level;
    public ulong Root;
    public ulong Prefix;
    /// <summary>The next-level table (a PA, or an IPA for a nested stage-1 walk).</summary>
    public ulong Next;
    /// <summary>Stage-1 table attributes (APTable, XNTable, PXNTable) accumulated down to this descriptor.</summary>
    public ulong TableAttributes;
    /// <summary>Where the descriptor was read (PA) and what it held: strict mode compares them with memory.</summary>
    public ulong DescriptorPa;
    public ulong Descriptor;

    /// <summary>Log2 of the input block one descriptor at <paramref name="level"/> covers.</summary>
    public static int BlockShift(Granule granule, int level) => (int)granule + (3 - level) * ((int)granule - 3);
}

/// <summary>A walk cache the walker consults before reading table descriptors and fills after reading them.</summary>
public interface IWalkCache
{
    /// <summary>Looks up the entry with the key fields of <paramref name="entry"/> (stage, tags, granule, level, root, prefix); fills the rest on a hit.</summary>
    bool TryGetTable(ref WalkCacheEntry entry);

    void PutTable(in WalkCacheEntry entry);
}
