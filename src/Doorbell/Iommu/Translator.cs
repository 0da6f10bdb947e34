using Doorbell.Memory;
using Doorbell.Tracing;
using Doorbell.Vmsa;

namespace Doorbell.Iommu;

// Known limits: no walk caches and no configuration cache here (the SMMU front ends cache STE/CD decodes);
// faulting walks are not cached (hardware may cache them; none is required to).

/// <summary>
/// The translation front every IOMMU model uses: IOTLB lookup, permission check on every access (hit or miss),
/// walk and fill on a miss. In strict mode a hit is re-walked (without side effects) and a cached entry that no
/// longer matches memory is reported: the tables changed without TLBI + SYNC. The cached entry is still used,
/// as hardware would.
/// </summary>
public sealed class Translator
{
    /// <summary>The rule a stale-translation report names.</summary>
    public const string StaleEntryRule =
        "Arm IHI 0070 §3.21 (TLB entries may be used until invalidated by TLBI + CMD_SYNC) / Arm ARM D8 break-before-make";

    readonly PageTableWalker _walker;
    readonly Iotlb _tlb;
    readonly StrictMonitor? _strict;

    public Translator(IMemoryView bus, Iotlb tlb, StrictMonitor? strict = null)
    {
        ArgumentNullException.ThrowIfNull(bus);
        ArgumentNullException.ThrowIfNull(tlb);
        _walker = new PageTableWalker(bus);
        _tlb = tlb;
        _strict = strict;
    }

    public Iotlb Tlb => _tlb;
    public PageTableWalker Walker => _walker;

    /// <summary>
    /// Translates one access. True with the entry (use <see cref="TlbEntry.Translate"/>); false with the fault.
    /// Bypass configurations translate to themselves.
    /// </summary>
    public bool Translate(TranslationConfig config, ulong input, AccessFlags access, out TlbEntry entry, out TranslationFault fault)
    {
        ArgumentNullException.ThrowIfNull(config);
        return Translate(config, config.Vmid, input, access, out entry, out fault);
    }

    /// <summary>
    /// As <see cref="Translate(TranslationConfig, ulong, AccessFlags, out TlbEntry, out TranslationFault)"/> with the VMID
    /// the IOTLB tags entries with given explicitly (SMMUv3 tags stage-1-only translations with STE.S2VMID when stage 2
    /// is implemented; with a stage 2 it is that stage's VMID).
    /// </summary>
    public bool Translate(TranslationConfig config, ushort vmid, ulong input, AccessFlags access, out TlbEntry entry, out TranslationFault fault)
    {
        ArgumentNullException.ThrowIfNull(config);
        fault = default;
        if (config.IsBypass)
        {
            entry = default;
            entry.InputBase = input & ~0xFFFUL;
            entry.OutputBase = entry.InputBase;
            entry.SizeLog2 = 12;
            entry.Stage1Permissions = PagePermissions.All;
            entry.Stage2Permissions = PagePermissions.All;
            entry.Global = true;
            return true;
        }
        var key = PageTableWalker.TlbInput(config, input);
        if (_tlb.TryLookup(vmid, config.Asid, key, out entry))
        {
            if (_strict is { Enabled: true })
                CheckStale(config, vmid, input, access, entry);
            var denied = PageTableWalker.DeniedBy(entry, access);
            if (denied == TranslationStage.None)
                return true;
            if (!(entry.DirtyUpdatable && (access & AccessFlags.Write) != 0))
            {
                var ipa = denied == TranslationStage.Stage2 ? entry.IpaBase | (key & entry.OffsetMask) : 0;
                var level = denied == TranslationStage.Stage2 ? entry.Stage2Level : entry.Level;
                fault = new TranslationFault(FaultKind.Permission, denied, level, input, ipa, false, 0, access);
                return false;
            }
            // A write to a clean DBM page: the hardware dirty update needs a walk.
        }
        var r = _walker.Walk(config, input, access);
        if (r.IsFault)
        {
            fault = r.Fault;
            return false;
        }
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
}
