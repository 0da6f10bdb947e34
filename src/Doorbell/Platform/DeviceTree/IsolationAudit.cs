namespace Doorbell.Platform.DeviceTree;

// Which devices of a platform could be handed to a userspace driver or a guest, decided the way Linux decides:
// - DMA isolation needs an IOMMU reference to an enabled IOMMU node (one with #iommu-cells). A platform device
//   uses `iommus` (bindings iommu/iommu.txt); a PCI requester uses its host bridge's `iommu-map` only (Linux
//   of_iommu_configure → of_pci_iommu_init → of_map_id; an `iommus` on the host bridge does not apply to it).
// - ID maps (bindings pci/pci-iommu.txt, pci/pci-msi.txt; Linux drivers/of/base.c of_map_id): entries are four
//   cells (id-base, phandle, out-base, length) whatever the target's #cells; the ID is first ANDed with the
//   *-map-mask (default all ones); an entry whose id-base has bits outside the mask, or a property whose length
//   is zero or not a multiple of 16 bytes, is an error and translates nothing; the first entry holding the
//   masked ID gives out-base + (id − id-base); an ID no entry holds gets no IOMMU (of_iommu_xlate finds no node)
//   and keeps its own ID as MSI DeviceID in the host bridge's msi-parent domain, if it has one.
// - A PCI host bridge's requesters are the RIDs of its bus-range (default 0x00–0xff). Verdicts are per range of
//   requester IDs: a RID no map covers is never ASSIGNABLE.
// - MSI isolation (vfio_iommu_type1 / iommufd: msi_device_has_isolated_msi) needs the device's MSI domain to carry
//   IRQ_DOMAIN_FLAG_ISOLATED_MSI. Among Arm MSI controllers only the GICv3 ITS sets it (its_init_domain), and not
//   in the Socionext SynQuacer pre-ITS configuration ("socionext,synquacer-pre-its"). GICv2m frames, GICv3 MBI,
//   controller-internal MSI blocks and other data-only controllers do not. No MSI domain: not isolated either.
// - The ITS tells writers apart by DeviceID only: requesters with different StreamIDs (so possibly in different
//   IOMMU groups) that an msi-map / msi-parent specifier gives the same DeviceID can forge each other's MSIs.
//   An msi-parent with a DeviceID specifier on a bus node tags every requester below it with that DeviceID.
// - VFIO type1 refuses to attach a group without isolated MSIs (EPERM) unless allow_unsafe_interrupts is set.
// Untrusted input: negative or huge #cells, truncated lists and dangling phandles end a list as a malformed
// entry (Linux's of_phandle_iterator caps arguments at MAX_PHANDLE_ARGS = 16), never loop or throw.

public enum MsiControllerKind { GicV3Its, GicV3PreIts, GicV2m, GicV3Mbi, InController, Other }

public enum IommuKind { SmmuV3, SmmuV2, Other }

public sealed record MsiControllerInfo(FdtNode Node, MsiControllerKind Kind)
{
    public bool Isolates => Kind == MsiControllerKind.GicV3Its;
    public string KindName => Kind switch
    {
        MsiControllerKind.GicV3Its => "GICv3 ITS",
        MsiControllerKind.GicV3PreIts => "GICv3 ITS (SynQuacer pre-ITS: no DeviceID)",
        MsiControllerKind.GicV2m => "GICv2m frame",
        MsiControllerKind.GicV3Mbi => "GICv3 MBI",
        MsiControllerKind.InController => "in-controller MSI " + string.Join(",", Node.Compatible.Take(1)),
        _ => "MSI controller " + string.Join(",", Node.Compatible.Take(1)),
    };
    public string Describe() => KindName + " " + Node.Path;
}

public sealed record IommuInfo(FdtNode Node, IommuKind Kind)
{
    public string KindName => Kind switch
    {
        IommuKind.SmmuV3 => "SMMUv3",
        IommuKind.SmmuV2 => "SMMUv2",
        _ => "IOMMU " + string.Join(",", Node.Compatible.Take(1)),
    };
    public string Describe() => KindName + " " + Node.Path;
}

public enum AssignmentVerdict
{
    /// <summary>DMA behind an IOMMU and MSIs isolated: VFIO attaches by default.</summary>
    Isolated,
    /// <summary>DMA behind an IOMMU, MSIs not isolated: VFIO refuses unless allow_unsafe_interrupts.</summary>
    UnsafeInterruptsOnly,
    /// <summary>No IOMMU translates this master's DMA: cannot be isolated at all.</summary>
    NoIommu,
}

/// <summary>
/// Requester IDs [First, Last] of an ID-mapped bus (a PCI host bridge's RIDs, or another bus node's IDs) that share
/// one verdict, one IOMMU and one MSI controller. StreamID / DeviceID are those of First and Last (null: none).
/// </summary>
public sealed record RidRange(uint First, uint Last, AssignmentVerdict Verdict, string Reason,
    IommuInfo? Iommu, uint? StreamIdFirst, uint? StreamIdLast,
    MsiControllerInfo? Msi, uint? DeviceIdFirst, uint? DeviceIdLast, bool DeviceIdAliased)
{
    public uint Count => Last - First + 1;
}

public sealed record MasterAudit(
    FdtNode Node,
    bool IsPciHost,
    IReadOnlyList<IommuInfo> Iommus,
    IReadOnlyList<MsiControllerInfo> MsiControllers,
    AssignmentVerdict Verdict,
    string Reason)
{
    /// <summary>Per requester-ID range verdicts of a bus with ID maps (PCI host bridge, fsl-mc …); empty for a plain device.</summary>
    public IReadOnlyList<RidRange> Ranges { get; init; } = [];
    /// <summary>A plain device's StreamIDs (first cell of each `iommus` specifier).</summary>
    public IReadOnlyList<uint> StreamIds { get; init; } = [];
    /// <summary>A plain device's MSI DeviceID (msi-parent specifier), when it has one.</summary>
    public uint? DeviceId { get; init; }
    /// <summary>The bus numbers of a PCI host bridge (bus-range, default 0x00–0xff).</summary>
    public (uint First, uint Last)? BusRange { get; init; }
    /// <summary>True for a node whose requesters are IDs through iommu-map / msi-map (PCI host bridge or another bus).</summary>
    public bool IsIdMappedBus => Ranges.Count > 0;
}

public sealed record PlatformAudit(string Name, string? Model, IReadOnlyList<IommuInfo> Iommus,
    IReadOnlyList<MsiControllerInfo> MsiControllers, IReadOnlyList<MasterAudit> Masters);

/// <summary>One parsed `*-map` property (four cells per entry) with its mask, or why it translates nothing.</summary>
public sealed record DtIdMap(IReadOnlyList<DtIdMapEntry> Entries, uint Mask, string? Error)
{
    /// <summary>of_map_id for one ID: Matched (target, output), NoMatch, or Error (the map is malformed).</summary>
    public IdMapResult Map(uint id, out FdtNode? target, out uint output)
    {
        target = null;
        output = id;
        if (Error is not null) return IdMapResult.Error;
        var masked = id & Mask;
        foreach (var e in Entries)
        {
            if ((e.IdBase & ~Mask) != 0) return IdMapResult.Error;
            if (masked < e.IdBase || (ulong)masked >= (ulong)e.IdBase + e.Length) continue;
            if (e.Target is null) return IdMapResult.Error;
            target = e.Target;
            output = masked - e.IdBase + e.OutBase;
            return IdMapResult.Matched;
        }
        return IdMapResult.NoMatch;
    }
}

public readonly record struct DtIdMapEntry(uint IdBase, uint Phandle, FdtNode? Target, uint OutBase, uint Length);

public enum IdMapResult { Matched, NoMatch, Error }

/// <summary>One entry of a phandle + specifier list (iommus, msi-parent); Target null for a dangling phandle.</summary>
public readonly record struct DtPhandleRef(uint Phandle, FdtNode? Target, uint[] Args);

/// <summary>Property decoding shared by the audit and the board builder (untrusted input: never throws or loops).</summary>
public static class DtRefs
{
    /// <summary>Linux's MAX_PHANDLE_ARGS: a specifier with more cells is malformed.</summary>
    public const int MaxPhandleArgs = 16;

    /// <summary>A `*-map` property; null when the node has none.</summary>
    public static DtIdMap? IdMap(Fdt fdt, FdtNode node, string mapName, string maskName)
    {
        ArgumentNullException.ThrowIfNull(fdt);
        ArgumentNullException.ThrowIfNull(node);
        var p = node.Property(mapName);
        if (p is null) return null;
        var mask = node.Property(maskName) is { } mp
            ? (mp.CellCount == 1 ? mp.Cell(0) : (uint?)null)
            : 0xFFFF_FFFFu;
        if (mask is null) return new DtIdMap([], 0, $"{maskName} is not one cell");
        if (p.Value.Length == 0 || p.Value.Length % 16 != 0)
            return new DtIdMap([], mask.Value, $"{mapName} length {p.Value.Length} is not a non-zero multiple of 16 bytes");
        var entries = new List<DtIdMapEntry>(p.CellCount / 4);
        for (var i = 0; i + 4 <= p.CellCount; i += 4)
        {
            var ph = p.Cell(i + 1);
            entries.Add(new DtIdMapEntry(p.Cell(i), ph, fdt.ByPhandle(ph), p.Cell(i + 2), p.Cell(i + 3)));
        }
        return new DtIdMap(entries, mask.Value, null);
    }

    /// <summary>
    /// A phandle list with specifiers sized by the target's <paramref name="cellsName"/> (missing: <paramref name="missingCells"/>,
    /// null = malformed as of_parse_phandle_with_args requires it). Stops at the first malformed entry and says why.
    /// </summary>
    public static IReadOnlyList<DtPhandleRef> PhandleList(Fdt fdt, FdtNode node, string property, string cellsName, uint? missingCells, out string? error)
    {
        ArgumentNullException.ThrowIfNull(fdt);
        ArgumentNullException.ThrowIfNull(node);
        error = null;
        var list = new List<DtPhandleRef>();
        var p = node.Property(property);
        if (p is null) return list;
        if (p.Value.Length % 4 != 0) { error = $"{property} length {p.Value.Length} is not a whole number of cells"; }
        var n = p.CellCount;
        var i = 0;
        while (i < n)
        {
            var ph = p.Cell(i);
            var target = fdt.ByPhandle(ph);
            if (target is null) { error = $"{property} phandle 0x{ph:x} names no node"; break; }
            var cells = target.Property(cellsName) is { } cp ? (cp.CellCount == 1 ? cp.Cell(0) : uint.MaxValue) : missingCells;
            if (cells is null) { error = $"{target.Path} has no {cellsName}"; break; }
            if (cells.Value > MaxPhandleArgs) { error = $"{target.Path} {cellsName} = 0x{cells.Value:x} (more than {MaxPhandleArgs} cells, or negative)"; break; }
            var c = (int)cells.Value;
            if (i + 1 + c > n) { error = $"{property} entry for {target.Path} needs {c} specifier cells, {n - i - 1} remain"; break; }
            var args = new uint[c];
            for (var k = 0; k < c; k++) args[k] = p.Cell(i + 1 + k);
            list.Add(new DtPhandleRef(ph, target, args));
            i += 1 + c;
        }
        return list;
    }

    /// <summary>bus-range of a PCI host bridge; 0x00–0xff when absent or malformed (of_pci_parse_bus_range's default).</summary>
    public static (uint First, uint Last) BusRange(FdtNode node)
    {
        ArgumentNullException.ThrowIfNull(node);
        if (node.Property("bus-range") is { CellCount: 2 } p && p.Cell(0) <= p.Cell(1) && p.Cell(1) <= 0xff)
            return (p.Cell(0), p.Cell(1));
        return (0, 0xff);
    }

    /// <summary>True when the node and all its ancestors are enabled.</summary>
    public static bool EnabledPath(FdtNode n)
    {
        ArgumentNullException.ThrowIfNull(n);
        for (var p = n; p is not null; p = p.Parent)
            if (!p.IsEnabled) return false;
        return true;
    }

    public static bool IsPciHost(FdtNode n) => n.Property("device_type")?.AsString() == "pci";
}

public static class IsolationAudit
{
    public static PlatformAudit Audit(Fdt fdt, string name)
    {
        ArgumentNullException.ThrowIfNull(fdt);
        var iommus = new Dictionary<FdtNode, IommuInfo>();
        var msis = new Dictionary<FdtNode, MsiControllerInfo>();
        foreach (var n in fdt.AllNodes)
        {
            if (n.Has("#iommu-cells") && DtRefs.EnabledPath(n))
                iommus[n] = new IommuInfo(n, ClassifyIommu(n));
            if (n.Has("msi-controller") && DtRefs.EnabledPath(n))
                msis[n] = new MsiControllerInfo(n, ClassifyMsi(n));
        }

        var ctx = new Context(fdt, iommus, msis);
        var pending = new List<Func<MasterAudit>>();
        foreach (var n in fdt.AllNodes)
        {
            if (!IsDmaMaster(n)) continue;
            if (DtRefs.IsPciHost(n) || n.Has("iommu-map") || (n.Has("msi-map") && !n.Has("iommus")))
            {
                var bus = new BusAudit(ctx, n);
                bus.Collect();
                pending.Add(bus.Finish);
            }
            else
            {
                var dev = new DeviceAudit(ctx, n);
                dev.Collect();
                pending.Add(dev.Finish);
            }
        }
        var masters = pending.Select(f => f()).ToList();
        return new PlatformAudit(name, fdt.Model, [.. iommus.Values], [.. msis.Values], masters);
    }

    /// <summary>
    /// A node that masters the bus: a PCI host bridge (its requesters), a node with iommus / iommu-map, or one with
    /// msi-parent / msi-map that is not itself an IOMMU, interrupt controller or MSI controller (those name an MSI
    /// parent for their own wired or message interrupts, not as DMA masters).
    /// </summary>
    public static bool IsDmaMaster(FdtNode n)
    {
        ArgumentNullException.ThrowIfNull(n);
        if (!DtRefs.EnabledPath(n)) return false;
        if (DtRefs.IsPciHost(n)) return n.Parent is null || !DtRefs.IsPciHost(n.Parent); // a root port node below a host bridge is not a second host
        if (n.Has("iommus") || n.Has("iommu-map")) return !n.Has("#iommu-cells");
        if (!n.Has("msi-parent") && !n.Has("msi-map")) return false;
        if (n.Has("msi-parent") && !n.Has("msi-map") && n.Has("#address-cells") && n.Children.Count > 0) return false; // a bus handing its msi-parent down
        return !n.Has("#iommu-cells") && !n.Has("interrupt-controller") && !n.Has("msi-controller") && !n.Has("#interrupt-cells");
    }

    static IommuKind ClassifyIommu(FdtNode n)
    {
        if (n.IsCompatible("arm,smmu-v3")) return IommuKind.SmmuV3;
        foreach (var c in n.Compatible)
            if (c is "arm,mmu-500" or "arm,smmu-v2" or "arm,smmu-v1" or "arm,mmu-400" or "arm,mmu-401" or "qcom,smmu-v2" or "qcom,smmu-500" or "nvidia,smmu-500"
                || c.EndsWith("-smmu-500", StringComparison.Ordinal))
                return IommuKind.SmmuV2;
        return IommuKind.Other;
    }

    static MsiControllerKind ClassifyMsi(FdtNode n)
    {
        if (n.IsCompatible("arm,gic-v3-its"))
            return n.Has("socionext,synquacer-pre-its") ? MsiControllerKind.GicV3PreIts : MsiControllerKind.GicV3Its;
        if (n.IsCompatible("arm,gic-v2m-frame")) return MsiControllerKind.GicV2m;
        if (n.IsCompatible("arm,gic-v3")) return MsiControllerKind.GicV3Mbi;
        for (var p = n; p is not null; p = p.Parent)
            if (DtRefs.IsPciHost(p)) return MsiControllerKind.InController;
        return MsiControllerKind.Other;
    }

    internal sealed class Context(Fdt fdt, Dictionary<FdtNode, IommuInfo> iommus, Dictionary<FdtNode, MsiControllerInfo> msis)
    {
        public Fdt Fdt { get; } = fdt;
        public Dictionary<FdtNode, IommuInfo> Iommus { get; } = iommus;
        public Dictionary<FdtNode, MsiControllerInfo> Msis { get; } = msis;
        // (MSI controller, DeviceID) → the isolation unit that first used it, and which pairs two units share.
        readonly Dictionary<(FdtNode, uint), (object, uint)> _owner = [];
        readonly HashSet<(FdtNode, uint)> _aliased = [];

        public void Claim(FdtNode msi, uint deviceId, object unitNode, uint unitId)
        {
            var key = (msi, deviceId);
            if (_owner.TryGetValue(key, out var owner)) { if (owner != (unitNode, unitId)) _aliased.Add(key); }
            else _owner[key] = (unitNode, unitId);
        }

        public bool Aliased(FdtNode msi, uint deviceId) => _aliased.Contains((msi, deviceId));
    }

    /// <summary>The MSI side of a requester: controller, DeviceID (null when the controller needs none or none is known), or why none.</summary>
    readonly record struct MsiTarget(MsiControllerInfo? Controller, uint? DeviceId, string? Problem);

    /// <summary>Nearest node from <paramref name="n"/> up that carries <paramref name="property"/>.</summary>
    static FdtNode? Nearest(FdtNode n, string property)
    {
        for (var p = n; p is not null; p = p.Parent)
            if (p.Has(property)) return p;
        return null;
    }

    static MsiTarget MsiParent(Context ctx, FdtNode node, out IReadOnlyList<DtPhandleRef> refs)
    {
        refs = [];
        var holder = Nearest(node, "msi-parent");
        if (holder is null) return new MsiTarget(null, null, "no MSI domain (no msi-parent/msi-map)");
        refs = DtRefs.PhandleList(ctx.Fdt, holder, "msi-parent", "#msi-cells", 0, out var error);
        if (refs.Count == 0) return new MsiTarget(null, null, "msi-parent malformed: " + (error ?? "empty"));
        var first = refs[0];
        if (first.Target is null || !ctx.Msis.TryGetValue(first.Target, out var info))
            return new MsiTarget(null, null, $"msi-parent {first.Target?.Path ?? "?"} is not an enabled MSI controller");
        return new MsiTarget(info, first.Args.Length > 0 ? first.Args[0] : null, null);
    }

    static string MsiProblem(MsiControllerInfo c) => "MSIs go to " + c.Describe() + ", which cannot tell writers apart";

    static readonly Comparer<AssignmentVerdict> Worse = Comparer<AssignmentVerdict>.Default;

    /// <summary>A plain device: `iommus` and msi-parent.</summary>
    sealed class DeviceAudit(Context ctx, FdtNode node)
    {
        readonly List<IommuInfo> _iommus = [];
        readonly List<uint> _sids = [];
        string? _dmaProblem;
        MsiTarget _msi;
        object _unitNode = node;
        uint _unitId;

        public void Collect()
        {
            var refs = DtRefs.PhandleList(ctx.Fdt, node, "iommus", "#iommu-cells", null, out var error);
            if (!node.Has("iommus")) _dmaProblem = "no iommus/iommu-map: DMA is untranslated";
            else if (error is not null) _dmaProblem = "iommus malformed: " + error;
            else if (refs.Count == 0) _dmaProblem = "iommus is empty: DMA is untranslated";
            foreach (var r in refs)
            {
                if (r.Target is not null && ctx.Iommus.TryGetValue(r.Target, out var info))
                {
                    if (!_iommus.Contains(info)) _iommus.Add(info);
                    _sids.Add(r.Args.Length > 0 ? r.Args[0] : 0);
                }
                else _dmaProblem ??= $"its IOMMU reference {r.Target?.Path} points to no enabled IOMMU";
            }
            if (_dmaProblem is null && _iommus.Count > 0) { _unitNode = _iommus[0].Node; _unitId = _sids[0]; }
            _msi = MsiParent(ctx, node, out _);
            if (_msi.Controller is { } c && _msi.DeviceId is { } id) ctx.Claim(c.Node, id, _unitNode, _unitId);
        }

        public MasterAudit Finish()
        {
            AssignmentVerdict verdict;
            string reason;
            var msiList = _msi.Controller is { } c0 ? new[] { c0 } : [];
            if (_dmaProblem is not null || _iommus.Count == 0)
            {
                verdict = AssignmentVerdict.NoIommu;
                reason = _dmaProblem ?? "no iommus/iommu-map: DMA is untranslated";
            }
            else if (_msi.Controller is not { } c)
            {
                verdict = AssignmentVerdict.UnsafeInterruptsOnly;
                reason = _msi.Problem + ": MSIs are not isolated";
            }
            else if (!c.Isolates)
            {
                verdict = AssignmentVerdict.UnsafeInterruptsOnly;
                reason = MsiProblem(c);
            }
            else if (_msi.DeviceId is not { } id)
            {
                verdict = AssignmentVerdict.UnsafeInterruptsOnly;
                reason = $"msi-parent {c.Node.Path} gives no DeviceID: the ITS cannot take its MSIs";
            }
            else if (ctx.Aliased(c.Node, id))
            {
                verdict = AssignmentVerdict.UnsafeInterruptsOnly;
                reason = $"DeviceID 0x{id:x} at {c.Node.Path} is shared with another requester: MSIs can be forged";
            }
            else
            {
                verdict = AssignmentVerdict.Isolated;
                reason = "DMA translated by the IOMMU, MSIs tagged with DeviceID at the ITS";
            }
            return new MasterAudit(node, false, _iommus, msiList, verdict, reason)
            { StreamIds = _sids, DeviceId = _msi.DeviceId };
        }
    }

    /// <summary>A bus whose requesters are IDs: a PCI host bridge (RIDs of its bus-range) or another bus with id maps.</summary>
    sealed class BusAudit(Context ctx, FdtNode node)
    {
        // Per-requester results, indexed by id − _first.
        const byte DmaOk = 0, DmaNoMap = 1, DmaBadMap = 2, DmaUncovered = 3, DmaNotIommu = 4;
        uint _first, _last;
        byte[] _dma = [];
        FdtNode?[] _dmaTarget = [];
        uint[] _sid = [];
        MsiControllerInfo?[] _msiCtl = [];
        uint[] _devId = [];
        bool[] _hasDevId = [];
        byte[] _msiProblem = [];
        readonly List<string> _msiProblems = [];
        string _dmaError = "";

        byte ProblemIndex(string p)
        {
            var i = _msiProblems.IndexOf(p);
            if (i < 0) { _msiProblems.Add(p); i = _msiProblems.Count - 1; }
            return (byte)Math.Min(i + 1, 255);
        }

        public void Collect()
        {
            var isPci = DtRefs.IsPciHost(node);
            (_first, _last) = isPci ? BusRangeRids(node) : (0u, 0xFFFFu);
            var count = (int)(_last - _first + 1);
            _dma = new byte[count];
            _dmaTarget = new FdtNode?[count];
            _sid = new uint[count];
            _msiCtl = new MsiControllerInfo?[count];
            _devId = new uint[count];
            _hasDevId = new bool[count];
            _msiProblem = new byte[count];

            var imap = DtRefs.IdMap(ctx.Fdt, node, "iommu-map", "iommu-map-mask");
            if (imap?.Error is { } ie) _dmaError = ie;
            var msiHolder = Nearest(node, "msi-map");
            var parentHolder = Nearest(node, "msi-parent");
            // msi-map on a nearer node wins over an msi-parent further up (of_msi_xlate walks up, maps first).
            var mmap = msiHolder is not null && (parentHolder is null || Depth(msiHolder) >= Depth(parentHolder))
                ? DtRefs.IdMap(ctx.Fdt, msiHolder, "msi-map", "msi-map-mask") : null;
            var parent = MsiParent(ctx, node, out _);
            var inController = ctx.Msis.TryGetValue(node, out var selfMsi) ? selfMsi : null;

            for (var i = 0; i < count; i++)
            {
                var rid = _first + (uint)i;
                // DMA
                if (imap is null) _dma[i] = DmaNoMap;
                else
                {
                    switch (imap.Map(rid, out var t, out var sid))
                    {
                        case IdMapResult.Error: _dma[i] = DmaBadMap; break;
                        case IdMapResult.NoMatch: _dma[i] = DmaUncovered; break;
                        default:
                            _dmaTarget[i] = t;
                            _sid[i] = sid;
                            _dma[i] = ctx.Iommus.ContainsKey(t!) ? DmaOk : DmaNotIommu;
                            break;
                    }
                }
                // MSI
                if (inController is not null) { _msiCtl[i] = inController; }
                else if (mmap is not null)
                {
                    var r = mmap.Map(rid, out var t, out var devId);
                    if (r == IdMapResult.Error) _msiProblem[i] = ProblemIndex("msi-map malformed: " + mmap.Error);
                    else if (r == IdMapResult.Matched)
                    {
                        if (ctx.Msis.TryGetValue(t!, out var info)) { _msiCtl[i] = info; _devId[i] = devId; _hasDevId[i] = true; }
                        else _msiProblem[i] = ProblemIndex($"msi-map target {t!.Path} is not an enabled MSI controller");
                    }
                    else if (parent.Controller is { } pc) { _msiCtl[i] = pc; _devId[i] = rid; _hasDevId[i] = true; }
                    else _msiProblem[i] = ProblemIndex("no msi-map entry and no msi-parent: no MSI domain");
                }
                else if (parent.Controller is { } pc)
                {
                    _msiCtl[i] = pc;
                    _devId[i] = parent.DeviceId ?? rid; // a specifier on a bus node tags every requester with it
                    _hasDevId[i] = true;
                }
                else _msiProblem[i] = ProblemIndex(parent.Problem ?? "no MSI domain");

                if (_msiCtl[i] is { } ctl && _hasDevId[i])
                {
                    if (_dma[i] == DmaOk) ctx.Claim(ctl.Node, _devId[i], _dmaTarget[i]!, _sid[i]);
                    else ctx.Claim(ctl.Node, _devId[i], node, rid);
                }
            }
        }

        static int Depth(FdtNode n) { var d = 0; for (var p = n.Parent; p is not null; p = p.Parent) d++; return d; }

        static (uint, uint) BusRangeRids(FdtNode n)
        {
            var (b0, b1) = DtRefs.BusRange(n);
            return (b0 << 8, (b1 << 8) | 0xFF);
        }

        readonly Dictionary<object, string> _reasons = [];

        string Cached(object key, Func<string> make)
        {
            if (!_reasons.TryGetValue(key, out var r)) _reasons[key] = r = make();
            return r;
        }

        (AssignmentVerdict Verdict, string Reason, bool Aliased) Judge(int i)
        {
            switch (_dma[i])
            {
                case DmaNoMap:
                    return (AssignmentVerdict.NoIommu, node.Has("iommus") && DtRefs.IsPciHost(node)
                        ? "no iommu-map (an iommus on a host bridge does not translate its requesters): DMA is untranslated"
                        : "no iommus/iommu-map: DMA is untranslated", false);
                case DmaBadMap: return (AssignmentVerdict.NoIommu, "iommu-map translates nothing: " + (_dmaError.Length > 0 ? _dmaError : "an entry's id-base has bits outside iommu-map-mask or names no node"), false);
                case DmaUncovered: return (AssignmentVerdict.NoIommu, "no iommu-map entry covers these IDs: DMA is untranslated", false);
                case DmaNotIommu: { var t = _dmaTarget[i]!; return (AssignmentVerdict.NoIommu, Cached(t, () => $"its IOMMU reference {t.Path} points to no enabled IOMMU"), false); }
            }
            if (_msiCtl[i] is not { } c)
            {
                var p = _msiProblem[i];
                return (AssignmentVerdict.UnsafeInterruptsOnly, Cached(p, () => (p > 0 ? _msiProblems[p - 1] : "no MSI domain") + ": MSIs are not isolated"), false);
            }
            if (!c.Isolates) return (AssignmentVerdict.UnsafeInterruptsOnly, Cached(c, () => MsiProblem(c)), false);
            if (ctx.Aliased(c.Node, _devId[i]))
                return (AssignmentVerdict.UnsafeInterruptsOnly, Cached((c, "alias"), () => $"DeviceIDs at {c.Node.Path} are shared with requesters of other StreamIDs: MSIs can be forged"), true);
            return (AssignmentVerdict.Isolated, "DMA translated by the IOMMU, MSIs tagged with DeviceID at the ITS", false);
        }

        public MasterAudit Finish()
        {
            var ranges = new List<RidRange>();
            var count = _dma.Length;
            var start = 0;
            var cur = Judge(0);
            for (var i = 1; i <= count; i++)
            {
                var next = i < count ? Judge(i) : default;
                if (i < count && next == cur && _dmaTarget[i] == _dmaTarget[start] && _msiCtl[i] == _msiCtl[start]) continue;
                var last = i - 1;
                var iommu = _dma[start] == DmaOk ? ctx.Iommus[_dmaTarget[start]!] : null;
                ranges.Add(new RidRange(_first + (uint)start, _first + (uint)last, cur.Verdict, cur.Reason,
                    iommu, iommu is null ? null : _sid[start], iommu is null ? null : _sid[last],
                    _msiCtl[start], _hasDevId[start] ? _devId[start] : null, _hasDevId[last] ? _devId[last] : null, cur.Aliased));
                start = i;
                cur = next;
            }
            var worst = ranges.Max(r => r.Verdict);
            var reason = ranges.Count == 1
                ? ranges[0].Reason
                : $"requester IDs differ: {string.Join(", ", ranges.GroupBy(r => r.Verdict).OrderBy(g => g.Key).Select(g => $"{g.Sum(r => (long)r.Count)} {Label(g.Key)}"))}";
            var iommus = ranges.Where(r => r.Iommu is not null).Select(r => r.Iommu!).Distinct().ToList();
            var msis = ranges.Where(r => r.Msi is not null).Select(r => r.Msi!).Distinct().ToList();
            return new MasterAudit(node, DtRefs.IsPciHost(node), iommus, msis, worst, reason)
            {
                Ranges = ranges,
                BusRange = DtRefs.IsPciHost(node) ? DtRefs.BusRange(node) : null,
            };
        }
    }

    /// <summary>The verdict word printed by the reports.</summary>
    public static string Label(AssignmentVerdict v) => v switch
    {
        AssignmentVerdict.Isolated => "ASSIGNABLE",
        AssignmentVerdict.UnsafeInterruptsOnly => "UNSAFE-IRQ",
        _ => "NO-IOMMU",
    };
}
