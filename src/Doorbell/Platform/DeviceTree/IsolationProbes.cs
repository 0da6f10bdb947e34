using Doorbell.Gic.V2m;
using Doorbell.Host.Iommu;
using Doorbell.Host.Irq;
using Doorbell.Host.Kernel;
using Doorbell.Host.Os;
using Doorbell.Host.SmmuV2;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;

namespace Doorbell.Platform.DeviceTree;

// Audit by execution (issue 19): every verdict of IsolationAudit is tried on the board DtBoard built from the tree, on
// Doorbell's host kernel booted there (DtBoard.Boot). PCI ranges run through vfio-pci functions of the kernel's groups
// (IsolationProbes.Kernel.cs). What follows is the direct path, over the same kernel's drivers, for what has no such
// function (platform masters use the kernel's groups for them; a range without a function, or a board without a GIC
// model, uses groups the probe forms):
// - DMA: a requester at up to four requester IDs of each range (first, last, two between) gets a domain with one
//   page mapped, then writes to an IOVA its domain never mapped — which is also the physical address of a sentinel
//   page in RAM. A fault record (SMMU event queue) means isolated; bytes in the sentinel page mean an escape.
//   An untranslated requester (no IOMMU on its path) writes straight at the sentinel.
// - MSI: a victim requester gets 32 vectors from the host's MSI domain; the range's requester (the forger) writes
//   every victim EventID to the ITS doorbell with its own DeviceID (or the victim's, where the maps alias them), every
//   frame SPI to GICv2m's MSI_SETSPI_NS, the victim's DeviceID into the pre-ITS window address, or every vector
//   number to an in-controller MSI register. Victim vectors taken by the host CPU are counted.
// - VFIO's decision (type1: a group needs an IOMMU and, unless allow_unsafe_interrupts, an MSI domain flagged
//   isolated — the host driver's IsolatedMsi) is printed beside the attack, so a policy that accepts an unsafe
//   group shows as a contradiction.
// Known limits: a device's MSI write reaches the doorbell untranslated (Linux maps the doorbell into every DMA
// domain, so translation would not change the result); one CPU.

/// <summary>What the probes showed for one range of requester IDs (or one platform device).</summary>
public sealed record ProbeResult(MasterAudit Master, RidRange? Range, AssignmentVerdict Verdict,
    int DmaAttempts, int DmaFaults, int DmaLanded, string? DmaNotRun,
    int MsiSprayed, int MsiForged, int MsiVictimVectors, string? MsiVia, string? MsiNotRun,
    bool VfioAttaches, string VfioDecision)
{
    /// <summary>The probes ran on the booted host kernel: vfio-pci devices at the range's requester IDs, the victim's vectors
    /// counted as its VFIO eventfds.</summary>
    public bool ThroughKernel { get; init; }

    /// <summary>True when the probes show the verdict wrong (an ASSIGNABLE range that leaked DMA or took a forged MSI, …).</summary>
    public bool VerdictContradicted => Verdict switch
    {
        AssignmentVerdict.Isolated => DmaLanded > 0 || MsiForged > 0 || (DmaNotRun is null && DmaFaults < DmaAttempts),
        AssignmentVerdict.UnsafeInterruptsOnly => DmaLanded > 0 || (DmaNotRun is null && DmaFaults < DmaAttempts),
        _ => DmaNotRun is null && DmaLanded == 0,
    };

    /// <summary>The attack escaped: a DMA landed or an MSI was forged.</summary>
    public bool AttackEscaped => DmaLanded > 0 || MsiForged > 0;

    /// <summary>True when VFIO would attach the group although the attack escaped.</summary>
    public bool VfioContradicted => VfioAttaches && AttackEscaped;

    /// <summary>
    /// Type1's VFIO_SET_IOMMU result for the range's group under each isolation-policy era (2014, 4.11, today), run on
    /// the booted kernel with that era's drivers (0 = attaches); null when the range had no group to open.
    /// </summary>
    public IReadOnlyList<(IsolationPolicyEra Era, int SetIommu)>? Eras { get; init; }

    /// <summary>The eras whose policy attaches the group although the attack escaped.</summary>
    public IReadOnlyList<IsolationPolicyEra> ErasContradicted => Eras is null || !AttackEscaped ? []
        : [.. Eras.Where(e => e.SetIommu == 0).Select(e => e.Era)];

    /// <summary>"eras: 2014 attaches, 4.11 -EPERM, today -EPERM", or null.</summary>
    public string? ErasText => Eras is null ? null
        : "eras: " + string.Join(", ", Eras.Select(e => $"{IsolationPolicyEras.Name(e.Era)} {(e.SetIommu == 0 ? "attaches" : "-" + Errno.Name(e.SetIommu))}"));

    public string DmaText => DmaNotRun is not null ? $"DMA: not run ({DmaNotRun})"
        : DmaLanded > 0 ? $"DMA: {DmaLanded}/{DmaAttempts} landed" : $"DMA: {DmaFaults}/{DmaAttempts} faults";

    public string MsiText => MsiNotRun is not null ? $"MSI: not run ({MsiNotRun})"
        : $"MSI: forged {MsiForged}/{MsiVictimVectors} via {MsiVia}";
}

/// <summary>A platform audited by execution: the rules' verdicts, the board, and what the probes showed.</summary>
public sealed record ExecutedAudit(PlatformAudit Audit, DtBoard Board, IReadOnlyList<ProbeResult> Results)
{
    /// <summary>Doorbell's host kernel booted on the board (null: <see cref="BootError"/>).</summary>
    public HostKernel? Kernel { get; init; }
    public string? BootError { get; init; }
    /// <summary>Results whose probes ran on the booted kernel through VFIO devices (vfio-pci functions at the range's requester IDs).</summary>
    public int ThroughKernel => Results.Count(r => r.ThroughKernel);

    public int Contradictions => Results.Count(r => r.VerdictContradicted);
}

public sealed partial class IsolationProbes
{
    const int MsiVectors = 32;
    const ulong MappedIova = 0x1000_0000;
    readonly DtBoard _b;
    readonly ulong _sentinel, _scratch;
    readonly Dictionary<FdtNode, IIommuDriver?> _smmuDrivers = [];
    readonly Dictionary<FdtNode, IMsiDomain?> _msiDrivers = [];
    readonly Dictionary<FdtNode, string> _driverErrors = [];
    GicV3HostDriver? _v3;
    GicV2HostDriver? _v2;
    bool _gicTried;
    int _smmuCount;
    uint _nextVictimKey = 0x4000_0000;

    /// <summary>User memory of the probing process (after the tables and the DMA scratch area).</summary>
    const ulong UserPool = 0x10_0000;
    readonly VfioHost _vfio, _vfioUnsafe;
    /// <summary>The kernel's VFIO under the earlier isolation-policy eras (today's is <see cref="_vfio"/>).</summary>
    readonly Dictionary<IsolationPolicyEra, VfioHost> _eraHosts = [];
    static readonly IsolationPolicyEra[] EarlierEras = [IsolationPolicyEra.Era2013, IsolationPolicyEra.Era411];
    UserAddressSpace? _user;
    ulong _userPage;
    VfioProcess? _process;
    int _nextGroup = 100_000; // above the kernel's group numbers
    int? _setIommu;
    /// <summary>The platform master's SET_IOMMU under each era (booted kernel), for the result being built.</summary>
    List<(IsolationPolicyEra, int)>? _platformEras;
    readonly Dictionary<(FdtNode, uint, bool), (bool Fault, int SetIommu)> _streamResults = [];

    readonly HostKernel? _k;
    readonly string? _bootError;

    IsolationProbes(DtBoard board)
    {
        _b = board;
        _scratch = board.RamBase + DtBoard.TableArea;
        _sentinel = _scratch + 0x10_0000;
        if (BoardRamOk()) _k = board.Boot(out _bootError);
        else _bootError = "no RAM on the board for the host kernel";
        if (_k is not null)
        {
            // the kernel's own VFIO (every function bound to vfio-pci) and the same with allow_unsafe_interrupts=1; the
            // sentinel is the user pool's last page (never handed out: a probe maps one page)
            _sentinel = _k.Layout.UserPages + _k.Layout.UserPagesSize - 0x1000;
            foreach (var era in EarlierEras) _eraHosts[era] = _k.BuildVfio(new VfioOptions { IsolationEra = era });
            _vfio = _k.BuildVfio(); // today's era: the drivers no longer claim interrupt remapping
            _vfioUnsafe = _k.BuildVfio(new VfioOptions { AllowUnsafeInterrupts = true });
            return;
        }
        // VFIO of today's kernel, and the same with vfio_iommu_type1.allow_unsafe_interrupts=1 (what an attacker whose
        // group VFIO refused would set to proceed)
        _vfio = new VfioHost() { Trace = board.Machine.Trace };
        _vfioUnsafe = new VfioHost(new VfioOptions { AllowUnsafeInterrupts = true }) { Trace = board.Machine.Trace };
    }

    /// <summary>The host kernel booted on the board (null when it could not boot: <see cref="BootError"/>).</summary>
    public HostKernel? Kernel => _k;
    public string? BootError => _bootError;

    /// <summary>The probing process's memory (created on first use: only a board with enough RAM gets there).</summary>
    UserAddressSpace User()
    {
        if (_user is not null) return _user;
        _user = new UserAddressSpace(_b.Bus, _k is not null ? _k.UserPages : new PhysPageAllocator(_b.RamBase + DtBoard.TableArea + DtBoard.ScratchArea, UserPool, _b.Bus));
        _userPage = _user.MapAnonymous(0x1000);
        return _user;
    }

    /// <summary>Builds the board and runs every probe. Never throws for anything the tree says.</summary>
    public static ExecutedAudit Run(Fdt fdt, string name) => Run(fdt, name, 0);

    /// <summary>As <see cref="Run(Fdt, string)"/>, with the board's trace categories in <paramref name="traceMask"/> on
    /// (e.g. vfio* to see the probing process's VFIO calls in <c>Board.Machine.Trace</c>).</summary>
    public static ExecutedAudit Run(Fdt fdt, string name, ulong traceMask)
    {
        var audit = IsolationAudit.Audit(fdt, name);
        var board = DtBoard.Build(fdt, audit);
        board.Machine.Trace.Mask = traceMask;
        var p = new IsolationProbes(board);
        var results = new List<ProbeResult>();
        foreach (var m in audit.Masters)
        {
            if (m.Ranges.Count == 0) results.Add(p.Probe(m, null));
            else foreach (var r in m.Ranges) results.Add(p.ProbeThroughKernel(m, r) ?? p.Probe(m, r));
        }
        return new ExecutedAudit(audit, board, results) { Kernel = p._k, BootError = p._bootError };
    }

    ProbeResult Probe(MasterAudit m, RidRange? r)
    {
        var verdict = r?.Verdict ?? m.Verdict;
        // MSI first: the host MSI domain the probe allocated from says whether the group's MSIs are isolated
        // (IRQ_DOMAIN_FLAG_ISOLATED_MSI), which is what VFIO's SET_IOMMU then decides on.
        var (sprayed, forged, victims, via, msiNotRun, isolatedFlag) = BoardRamOk() ? ProbeMsi(m, r) : (0, 0, 0, null, "no RAM on the board for the interrupt tables", false);
        _setIommu = null;
        _platformEras = null;
        var (attempts, faults, landed, dmaNotRun) = BoardRamOk() ? ProbeDma(m, r, isolatedFlag) : (0, 0, 0, "no RAM on the board");
        var translated = verdict != AssignmentVerdict.NoIommu;
        bool attaches;
        string decision;
        if (!translated) { attaches = false; decision = "VFIO: no IOMMU group (vfio cannot bind)"; }
        else if (_setIommu is { } rc)
        {
            // what type1's VFIO_SET_IOMMU returned for this group (the DMA probe ran in that container)
            attaches = rc == 0;
            decision = rc == 0 ? "VFIO: attaches (MSI domain flagged isolated)"
                : rc == -Errno.EPERM ? "VFIO: SET_IOMMU -EPERM unless allow_unsafe_interrupts=1"
                : $"VFIO: SET_IOMMU -{Errno.Name(rc)}";
        }
        else
        {
            // no IOMMU model to attach to: type1's rule applied to the MSI domain's flag, not run
            attaches = isolatedFlag;
            decision = attaches ? "VFIO: attaches (MSI domain flagged isolated; rule, IOMMU not modelled)"
                : "VFIO: SET_IOMMU -EPERM unless allow_unsafe_interrupts=1 (rule, IOMMU not modelled)";
        }
        return new ProbeResult(m, r, verdict, attempts, faults, landed, dmaNotRun, sprayed, forged, victims, via, msiNotRun, attaches, decision) { Eras = _platformEras };
    }

    bool BoardRamOk() => _b.RamSize >= DtBoard.TableArea + DtBoard.ScratchArea + UserPool;

    static uint[] Samples(uint first, uint last)
    {
        var n = (ulong)last - first;
        var s = new SortedSet<uint> { first, last, (uint)(first + n / 3), (uint)(first + 2 * n / 3) };
        return [.. s];
    }

    // ---------------- DMA ----------------

    (int, int, int, string?) ProbeDma(MasterAudit m, RidRange? r, bool isolatedMsi)
    {
        if (r is not null)
        {
            if (r.Iommu is null) return Untranslated(Samples(r.First, r.Last).Length);
            var map = DtRefs.IdMap(_b.Fdt, m.Node, "iommu-map", "iommu-map-mask");
            var sids = new List<uint>();
            foreach (var rid in Samples(r.First, r.Last))
                if (map?.Map(rid, out _, out var sid) == IdMapResult.Matched) sids.Add(sid);
            return Translated(r.Iommu, sids, isolatedMsi);
        }
        if (m.Verdict == AssignmentVerdict.NoIommu || m.Iommus.Count == 0) return Untranslated(1);
        if (_k is not null) return PlatformThroughKernel(m);
        return Translated(m.Iommus[0], m.StreamIds.Take(4).ToList(), isolatedMsi);
    }

    (int, int, int, string?) Untranslated(int count)
    {
        var landed = 0;
        for (var i = 0; i < count; i++)
        {
            Clear(_sentinel);
            _b.Bus.Write(new PhysAddr(_sentinel), 8, 0xD0_0B_E1_1D_0B_E1_1Du + (ulong)i, BusAttributes.FromDevice(0));
            if (Landed(_sentinel, 0xD0_0B_E1_1D_0B_E1_1Du + (ulong)i)) landed++;
        }
        return (count, 0, landed, null);
    }

    (int, int, int, string?) Translated(IommuInfo iommu, List<uint> sids, bool isolatedMsi)
    {
        var v3 = _b.SmmuV3s.GetValueOrDefault(iommu.Node);
        var v2 = _b.SmmuV2s.GetValueOrDefault(iommu.Node);
        if (v3 is null && v2 is null)
        {
            var block = _b.Blocks.FirstOrDefault(x => x.Node == iommu.Node);
            return (0, 0, 0, block?.Status ?? "IOMMU not on the board");
        }
        var kind = v3 is not null ? "SMMUv3" : "SMMUv2";
        var driver = SmmuDriver(iommu.Node, v3, v2);
        if (driver is null) return (0, 0, 0, $"{kind} driver probe failed: " + _driverErrors.GetValueOrDefault(iommu.Node, "?"));
        int faults = 0, landed = 0, unprobeable = 0;
        string? firstError = null;
        Span<byte> v = stackalloc byte[8];
        foreach (var sid in sids)
        {
            // the same StreamID with the same MSI isolation behaves the same in every range that reaches it
            if (_streamResults.TryGetValue((iommu.Node, sid, isolatedMsi), out var known))
            {
                _setIommu ??= known.SetIommu;
                if (known.Fault) faults++; else landed++;
                continue;
            }
            var dev = new IommuDevice($"probe-{sid:x}", [sid]);
            try { driver.ProbeDevice(dev); }
            catch (IommuException e)
            {
                // arm_smmu_probe_device refuses a StreamID wider than the SMMU implements: no group, nothing to attack
                unprobeable++;
                firstError ??= e.Message;
                continue;
            }
            bool fault;
            int setIommu;
            try
            {
                // The user's side, through VFIO: a container with the device's group, VFIO_SET_IOMMU (type1 decides on the
                // group's MSI isolation; when it refuses, the attacker is a host with allow_unsafe_interrupts=1), one
                // page MAP_DMA'd at MappedIova; then the device writes to an IOVA the container never mapped.
                var group = new ProbeGroup(_nextGroup++, driver, dev, isolatedMsi);
                var rc = Attach(_vfio, group, out var container);
                _setIommu ??= rc;
                setIommu = rc;
                if (rc == -Errno.EPERM)
                {
                    _process!.CloseAll();
                    rc = Attach(_vfioUnsafe, group, out container);
                }
                if (rc != 0) return (0, 0, 0, $"VFIO: SET_IOMMU -{Errno.Name(rc)}");
                var map = new byte[32];
                System.Runtime.InteropServices.MemoryMarshal.Write(map, new VfioIommuType1DmaMap
                { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = _userPage, Iova = MappedIova, Size = 0x1000 });
                var mr = _process!.Ioctl(container, VfioIoctl.IommuMapDma, map);
                if (mr != 0) { _process.CloseAll(); return (0, 0, 0, $"VFIO: MAP_DMA -{Errno.Name(mr)}"); }
                var before = Faults(driver);
                IMemoryPort port = v3 is not null ? v3.CreateStreamPort(sid) : v2!.CreateStreamPort(sid);
                BitConverter.TryWriteBytes(v, 0x5AFE_5AFE_5AFE_5AFEUL + sid);
                Clear(_sentinel);
                port.Write(_sentinel, v, BusAttributes.FromDevice(sid)); // IOVA never mapped = the sentinel's physical address
                fault = !Landed(_sentinel, 0x5AFE_5AFE_5AFE_5AFEUL + sid) && Faults(driver) > before;
                _process.CloseAll(); // closing the files detaches the group and unmaps, as process exit does
            }
            catch (IommuException e)
            {
                return (0, 0, 0, $"{kind} driver: " + e.Message);
            }
            catch (ArgumentException e)
            {
                return (0, 0, 0, "VFIO process memory: " + e.Message);
            }
            finally
            {
                try { driver.ReleaseDevice(dev); } catch (IommuException) { }
            }
            _streamResults[(iommu.Node, sid, isolatedMsi)] = (fault, setIommu);
            if (fault) faults++; else landed++;
        }
        if (unprobeable == sids.Count && sids.Count > 0) return (0, 0, 0, $"{kind} driver: {firstError}");
        return (sids.Count - unprobeable, faults, landed, null);
    }

    /// <summary>open /dev/vfio/vfio and the group, VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU(TYPE1v2): SET_IOMMU's result.</summary>
    int Attach(VfioHost host, ProbeGroup group, out int container)
    {
        var vg = host.AddGroup(group);
        _process = new VfioProcess(host, User());
        container = _process.OpenContainer();
        var g = _process.OpenGroup(vg.Id);
        if (g < 0) return g;
        var r = _process.Ioctl(g, VfioIoctl.GroupSetContainer, BitConverter.GetBytes(container));
        return r != 0 ? r : _process.Ioctl(container, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu);
    }

    /// <summary>The probe device's IOMMU group as VFIO sees it: the driver's paging domains, the device's reserved regions,
    /// and whether its MSI domain isolates (what type1's SET_IOMMU checks). Detaching frees the domain, as the last
    /// user of an arm-smmu domain does (context banks and SMRs are few).</summary>
    sealed class ProbeGroup(int id, IIommuDriver driver, IommuDevice device, bool isolatedMsi) : IVfioIommuGroup
    {
        public int Id { get; } = id;
        public bool HasIsolatedMsi { get; } = isolatedMsi;
        public bool SystemHasIsolatedMsiDomain => HasIsolatedMsi;

        public IReadOnlyList<IommuReservedRegion> ReservedRegions =>
            [.. driver.GetReservedRegions(device).Select(r => new IommuReservedRegion(r.Start, r.Length, r.Type switch
            {
                ReservedRegionType.Direct => IommuResvType.Direct,
                ReservedRegionType.DirectRelaxable => IommuResvType.DirectRelaxable,
                ReservedRegionType.Reserved => IommuResvType.Reserved,
                ReservedRegionType.Msi => IommuResvType.Msi,
                _ => IommuResvType.SwMsi,
            }))];

        public IVfioIommuDomain? AllocateDomain()
        {
            try { return new SmmuVfioDomain(driver.AllocateDomain(IommuDomainType.Unmanaged)); }
            catch (IommuException) { return null; }
        }

        public int Attach(IVfioIommuDomain domain)
        {
            if (domain is not SmmuVfioDomain d) return -Errno.EINVAL;
            try { driver.AttachDevice(d.Domain, device); return 0; }
            catch (IommuException e) { return -e.Errno; }
        }

        public void Detach(IVfioIommuDomain domain)
        {
            try
            {
                driver.AttachDevice(driver.AllocateDomain(IommuDomainType.Blocked), device); // type1 then frees the domain
            }
            catch (IommuException) { }
        }
    }

    /// <summary>Fault records the driver has read so far: SMMUv3 event records (event queue drained), SMMUv2 context and
    /// global faults (the handlers run, as the fault interrupts would — the board wires no IOMMU interrupt).</summary>
    static int Faults(IIommuDriver driver) => FaultRecords.Read(driver);

    IIommuDriver? SmmuDriver(FdtNode node, Doorbell.Smmu.V3.SmmuV3? v3, Doorbell.Smmu.V2.SmmuV2? v2)
    {
        if (_smmuDrivers.TryGetValue(node, out var d)) return d;
        if (_k is not null)
        {
            d = _k.Iommus.FirstOrDefault(i => i.Instance.Name == node.Path)?.Driver;
            if (d is null) _driverErrors[node] = _k.ProbeErrors.GetValueOrDefault(node.Path, "not probed");
            _smmuDrivers[node] = d;
            return d;
        }
        var @base = _b.Blocks.First(x => x.Node == node).Base;
        var tables = _b.RamBase + 0x0200_0000 + (ulong)_smmuCount++ * 0x0040_0000;
        try
        {
            if (tables + 0x0040_0000 > _b.RamBase + DtBoard.TableArea) { d = null; _driverErrors[node] = "no table memory left"; }
            else if (v3 is not null) d = SmmuV3Driver.Probe(new BusSmmuHostAccess(_b.Bus, @base), _b.Bus, new PhysPageAllocator(tables, 0x0040_0000));
            else d = SmmuV2Driver.Probe(new BusSmmuHostAccess(_b.Bus, @base), _b.Bus, new PhysPageAllocator(tables, 0x0040_0000));
        }
        catch (Exception e) when (e is IommuException or ArgumentException) { d = null; _driverErrors[node] = e.Message; }
        _ = v2;
        _smmuDrivers[node] = d;
        return d;
    }

    void Clear(ulong pa) => _b.Bus.Write(new PhysAddr(pa), 8, 0, BusAttributes.Cpu);

    bool Landed(ulong pa, ulong value) =>
        _b.Bus.Read(new PhysAddr(pa), 8, out var v, BusAttributes.Cpu) == BusStatus.Ok && v == value;

    // ---------------- MSI ----------------

    (int Sprayed, int Forged, int Victims, string? Via, string? NotRun, bool IsolatedFlag) ProbeMsi(MasterAudit m, RidRange? r)
    {
        var ctl = r is not null ? r.Msi : m.MsiControllers.FirstOrDefault();
        if (ctl is null) return (0, 0, 0, null, "no MSI domain", false);
        if (!_b.MsiTargets.TryGetValue(ctl.Node, out var target))
            return (0, 0, 0, null, _b.Blocks.FirstOrDefault(x => x.Node == ctl.Node)?.Status ?? "MSI controller not on the board", false);
        var forgerId = r is not null ? r.DeviceIdFirst : m.DeviceId;
        var aliased = r?.DeviceIdAliased ?? (m.Verdict == AssignmentVerdict.UnsafeInterruptsOnly && m.Reason.Contains("is shared", StringComparison.Ordinal));
        try
        {
            if (target.Its is not null)
            {
                var its = ItsDriverFor(ctl.Node, target);
                if (its is null) return (0, 0, 0, null, "ITS driver: " + _driverErrors.GetValueOrDefault(ctl.Node, "?"), false);
                if (forgerId is not { } df) return (0, 0, 0, null, "no DeviceID for the ITS", false);
                var preIts = ctl.Kind == MsiControllerKind.GicV3PreIts;
                // Victim: another requester. With aliasing it holds the forger's own DeviceID.
                var dv = aliased ? df : (df == 0 ? 1u : df - 1);
                if (dv >= 1u << 20 || df >= 1u << 20) return (0, 0, 0, null, $"DeviceID 0x{Math.Max(dv, df):x} beyond the ITS model's 20 DeviceID bits", !preIts);
                var alloc = its.AllocateMsis(dv, MsiVectors);
                try
                {
                    var raised = CountVictims(alloc, () =>
                    {
                        for (var e = 0u; e < MsiVectors; e++)
                        {
                            if (preIts) _b.Bus.Write(new PhysAddr(target.Doorbell + ((ulong)dv << 2)), 4, e, BusAttributes.FromDevice(df));
                            else _b.Bus.Write(new PhysAddr(target.Doorbell), 4, e, BusAttributes.FromDevice(df));
                        }
                    });
                    var via = preIts ? "pre-ITS window DeviceID choice" : aliased ? "ITS EventID spray, aliased DeviceID" : "ITS EventID spray";
                    return (MsiVectors, raised, MsiVectors, via, null, !preIts && its.IsolatedMsi);
                }
                finally { its.FreeMsis(alloc); FreeHandlers(alloc); }
            }
            if (target.V2m is { } frame)
            {
                var v2m = V2mDriverFor(ctl.Node, target);
                if (v2m is null) return (0, 0, 0, null, "GICv2m driver: " + _driverErrors.GetValueOrDefault(ctl.Node, "?"), false);
                var n = Math.Min(MsiVectors, Math.Max(1, v2m.Count / 2));
                var alloc = v2m.AllocateMsis(_nextVictimKey++, n);
                try
                {
                    var raised = CountVictims(alloc, () =>
                    {
                        for (var spi = frame.BaseIntid; spi < frame.BaseIntid + frame.Count; spi++)
                            _b.Bus.Write(new PhysAddr(target.Doorbell), 4, (ulong)spi, BusAttributes.FromDevice(forgerId ?? 0));
                    });
                    return (frame.Count, raised, n, "GICv2m SETSPI", null, v2m.IsolatedMsi);
                }
                finally { v2m.FreeMsis(alloc); FreeHandlers(alloc); }
            }
            if (target.DataTarget is { } data)
            {
                // The host gives the victim vectors 0..31 of the controller; the forger writes each vector number.
                var before = new int[MsiVectors];
                for (var v = 0; v < MsiVectors; v++) before[v] = data.Raised(v);
                for (var v = 0u; v < MsiVectors; v++) _b.Bus.Write(new PhysAddr(target.Doorbell), 4, v, BusAttributes.FromDevice(forgerId ?? 0));
                var raised = 0;
                for (var v = 0; v < MsiVectors; v++) if (data.Raised(v) > before[v]) raised++;
                return (MsiVectors, raised, MsiVectors, "in-controller MSI data spray", null, false);
            }
        }
        catch (IrqException e) { return (0, 0, 0, null, "MSI domain: " + e.Message, false); }
        return (0, 0, 0, null, "MSI controller not modelled", false);
    }

    int CountVictims(MsiAllocation alloc, Action spray)
    {
        var table = _v3?.Irqs ?? _v2!.Irqs;
        var hit = new bool[alloc.Vectors.Count];
        for (var i = 0; i < alloc.Vectors.Count; i++)
        {
            var idx = i;
            table.Request(alloc.Vectors[i].Intid, (_, _) => hit[idx] = true);
        }
        spray();
        var cpus = _v3?.Cpus ?? [_v2!.Cpu0];
        foreach (var c in cpus) c.HandleInterrupts();
        return hit.Count(h => h);
    }

    void FreeHandlers(MsiAllocation alloc)
    {
        var table = _v3?.Irqs ?? _v2!.Irqs;
        foreach (var v in alloc.Vectors) table.Free(v.Intid);
    }

    bool InitGic()
    {
        if (_gicTried) return _v3 is not null || _v2 is not null;
        _gicTried = true;
        if (_k is not null) { _v3 = _k.GicV3Driver; _v2 = _k.GicV2Driver; return true; }
        try
        {
            if (_b.GicV3 is { } g3)
            {
                _v3 = new GicV3HostDriver(_b.Bus, new PhysAddr(_b.GicdBase), new PhysAddr(_b.GicrBase), g3.CpuInterfaces,
                    new PhysPageAllocator(_b.RamBase, 0x0200_0000, _b.Bus));
                _v3.Init();
            }
            else if (_b.GicV2 is not null)
            {
                _v2 = new GicV2HostDriver(_b.Bus, new PhysAddr(_b.GicdBase), new PhysAddr(_b.GiccBase));
                _v2.Init();
            }
        }
        catch (Exception e) when (e is IrqException or ArgumentException) { _v3 = null; _v2 = null; }
        return _v3 is not null || _v2 is not null;
    }

    ItsDriver? ItsDriverFor(FdtNode node, DtMsiTarget target)
    {
        if (_msiDrivers.TryGetValue(node, out var d)) return d as ItsDriver;
        if (_k is not null && InitGic())
        {
            var kd = _k.MsiControllers.GetValueOrDefault(node.Path);
            var ki = kd as ItsDriver ?? (kd as HostKernel.PreItsDomain)?.Its;
            if (ki is null) _driverErrors[node] = _k.ProbeErrors.GetValueOrDefault(node.Path, "not probed");
            _msiDrivers[node] = ki;
            return ki;
        }
        ItsDriver? its = null;
        if (InitGic() && _v3 is not null)
        {
            try
            {
                var @base = _b.Blocks.First(x => x.Node == node).Base;
                its = new ItsDriver(_v3, new PhysAddr(@base), new ItsDriverOptions { ForceIndirect = true });
                its.Init();
            }
            catch (IrqException e) { its = null; _driverErrors[node] = e.Message; }
        }
        else _driverErrors[node] = "no GICv3 host driver";
        _ = target;
        _msiDrivers[node] = its;
        return its;
    }

    Gicv2mDriver? V2mDriverFor(FdtNode node, DtMsiTarget target)
    {
        if (_msiDrivers.TryGetValue(node, out var d)) return d as Gicv2mDriver;
        if (_k is not null && InitGic())
        {
            var kv = _k.MsiControllers.GetValueOrDefault(node.Path) as Gicv2mDriver;
            if (kv is null) _driverErrors[node] = _k.ProbeErrors.GetValueOrDefault(node.Path, "not probed");
            _msiDrivers[node] = kv;
            return kv;
        }
        Gicv2mDriver? v2m = null;
        if (InitGic() && _v2 is not null)
        {
            try
            {
                v2m = new Gicv2mDriver(_v2, new PhysAddr(target.Doorbell - GicV2m.MSI_SETSPI_NS));
                v2m.Init();
            }
            catch (IrqException e) { v2m = null; _driverErrors[node] = e.Message; }
        }
        else _driverErrors[node] = _v3 is not null ? "GICv2m on a GICv3 board: no host driver for that pairing" : "no GICv2 host driver";
        _msiDrivers[node] = v2m;
        return v2m;
    }
}
