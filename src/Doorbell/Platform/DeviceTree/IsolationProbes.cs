using Doorbell.Gic.V2m;
using Doorbell.Host.Iommu;
using Doorbell.Host.Irq;
using Doorbell.Host.SmmuV2;
using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;

namespace Doorbell.Platform.DeviceTree;

// Audit by execution (issue 19): every verdict of IsolationAudit is tried on the board DtBoard built from the tree,
// by Doorbell's own host drivers (SmmuV3Driver, GicV3HostDriver + ItsDriver, GicV2HostDriver + Gicv2mDriver):
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
    /// <summary>True when the probes show the verdict wrong (an ASSIGNABLE range that leaked DMA or took a forged MSI, …).</summary>
    public bool VerdictContradicted => Verdict switch
    {
        AssignmentVerdict.Isolated => DmaLanded > 0 || MsiForged > 0 || (DmaNotRun is null && DmaFaults < DmaAttempts),
        AssignmentVerdict.UnsafeInterruptsOnly => DmaLanded > 0 || (DmaNotRun is null && DmaFaults < DmaAttempts),
        _ => DmaNotRun is null && DmaLanded == 0,
    };

    /// <summary>True when VFIO would attach the group although the attack escaped.</summary>
    public bool VfioContradicted => VfioAttaches && (DmaLanded > 0 || MsiForged > 0);

    public string DmaText => DmaNotRun is not null ? $"DMA: not run ({DmaNotRun})"
        : DmaLanded > 0 ? $"DMA: {DmaLanded}/{DmaAttempts} landed" : $"DMA: {DmaFaults}/{DmaAttempts} faults";

    public string MsiText => MsiNotRun is not null ? $"MSI: not run ({MsiNotRun})"
        : $"MSI: forged {MsiForged}/{MsiVictimVectors} via {MsiVia}";
}

/// <summary>A platform audited by execution: the rules' verdicts, the board, and what the probes showed.</summary>
public sealed record ExecutedAudit(PlatformAudit Audit, DtBoard Board, IReadOnlyList<ProbeResult> Results)
{
    public int Contradictions => Results.Count(r => r.VerdictContradicted);
}

public sealed class IsolationProbes
{
    const int MsiVectors = 32;
    const ulong MappedIova = 0x1000_0000;
    readonly DtBoard _b;
    readonly ulong _sentinel, _scratch;
    readonly Dictionary<FdtNode, IIommuDriver?> _smmuDrivers = [];
    readonly Dictionary<(FdtNode, uint), bool> _streamFaults = [];
    readonly Dictionary<FdtNode, IMsiDomain?> _msiDrivers = [];
    readonly Dictionary<FdtNode, string> _driverErrors = [];
    GicV3HostDriver? _v3;
    GicV2HostDriver? _v2;
    bool _gicTried;
    int _smmuCount;
    uint _nextVictimKey = 0x4000_0000;

    IsolationProbes(DtBoard board)
    {
        _b = board;
        _scratch = board.RamBase + DtBoard.TableArea;
        _sentinel = _scratch + 0x10_0000;
    }

    /// <summary>Builds the board and runs every probe. Never throws for anything the tree says.</summary>
    public static ExecutedAudit Run(Fdt fdt, string name)
    {
        var audit = IsolationAudit.Audit(fdt, name);
        var board = DtBoard.Build(fdt, audit);
        var p = new IsolationProbes(board);
        var results = new List<ProbeResult>();
        foreach (var m in audit.Masters)
        {
            if (m.Ranges.Count == 0) results.Add(p.Probe(m, null));
            else foreach (var r in m.Ranges) results.Add(p.Probe(m, r));
        }
        return new ExecutedAudit(audit, board, results);
    }

    ProbeResult Probe(MasterAudit m, RidRange? r)
    {
        var verdict = r?.Verdict ?? m.Verdict;
        var (attempts, faults, landed, dmaNotRun) = BoardRamOk() ? ProbeDma(m, r) : (0, 0, 0, "no RAM on the board");
        var (sprayed, forged, victims, via, msiNotRun, isolatedFlag) = BoardRamOk() ? ProbeMsi(m, r) : (0, 0, 0, null, "no RAM on the board for the interrupt tables", false);
        var translated = verdict != AssignmentVerdict.NoIommu;
        var attaches = translated && isolatedFlag;
        var decision = !translated ? "VFIO: no IOMMU group (vfio cannot bind)"
            : attaches ? "VFIO: attaches (MSI domain flagged isolated)"
            : "VFIO: SET_IOMMU -EPERM unless allow_unsafe_interrupts=1";
        return new ProbeResult(m, r, verdict, attempts, faults, landed, dmaNotRun, sprayed, forged, victims, via, msiNotRun, attaches, decision);
    }

    bool BoardRamOk() => _b.RamSize >= DtBoard.TableArea + DtBoard.ScratchArea;

    static uint[] Samples(uint first, uint last)
    {
        var n = (ulong)last - first;
        var s = new SortedSet<uint> { first, last, (uint)(first + n / 3), (uint)(first + 2 * n / 3) };
        return [.. s];
    }

    // ---------------- DMA ----------------

    (int, int, int, string?) ProbeDma(MasterAudit m, RidRange? r)
    {
        if (r is not null)
        {
            if (r.Iommu is null) return Untranslated(Samples(r.First, r.Last).Length);
            var map = DtRefs.IdMap(_b.Fdt, m.Node, "iommu-map", "iommu-map-mask");
            var sids = new List<uint>();
            foreach (var rid in Samples(r.First, r.Last))
                if (map?.Map(rid, out _, out var sid) == IdMapResult.Matched) sids.Add(sid);
            return Translated(r.Iommu, sids);
        }
        if (m.Verdict == AssignmentVerdict.NoIommu || m.Iommus.Count == 0) return Untranslated(1);
        return Translated(m.Iommus[0], m.StreamIds.Take(4).ToList());
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

    (int, int, int, string?) Translated(IommuInfo iommu, List<uint> sids)
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
            if (_streamFaults.TryGetValue((iommu.Node, sid), out var knownFault)) { if (knownFault) faults++; else landed++; continue; }
            bool fault;
            var dev = new IommuDevice($"probe-{sid:x}", [sid]);
            IommuDomain? domain = null;
            var probed = false;
            try
            {
                try { driver.ProbeDevice(dev); }
                catch (IommuException e)
                {
                    // arm_smmu_probe_device refuses a StreamID wider than the SMMU implements: no group, nothing to attack
                    unprobeable++;
                    firstError ??= e.Message;
                    continue;
                }
                probed = true;
                domain = driver.AllocateDomain(IommuDomainType.Unmanaged);
                driver.AttachDevice(domain, dev);
                domain.Map(MappedIova, _scratch, 0x1000, IoProt.Read | IoProt.Write);
                var before = Faults(driver);
                IMemoryPort port = v3 is not null ? v3.CreateStreamPort(sid) : v2!.CreateStreamPort(sid);
                BitConverter.TryWriteBytes(v, 0x5AFE_5AFE_5AFE_5AFEUL + sid);
                Clear(_sentinel);
                port.Write(_sentinel, v, BusAttributes.FromDevice(sid)); // IOVA never mapped = the sentinel's physical address
                fault = !Landed(_sentinel, 0x5AFE_5AFE_5AFE_5AFEUL + sid) && Faults(driver) > before;
            }
            catch (IommuException e)
            {
                return (0, 0, 0, $"{kind} driver: " + e.Message);
            }
            finally
            {
                // Each probe device goes away again (arm-smmu has few SMRs and context banks).
                try
                {
                    if (probed) driver.ReleaseDevice(dev);
                    if (domain is not null) driver.FreeDomain(domain);
                }
                catch (IommuException) { }
            }
            _streamFaults[(iommu.Node, sid)] = fault;
            if (fault) faults++; else landed++;
        }
        if (unprobeable == sids.Count && sids.Count > 0) return (0, 0, 0, $"{kind} driver: {firstError}");
        return (sids.Count - unprobeable, faults, landed, null);
    }

    /// <summary>Fault records the driver has read so far: SMMUv3 event records (event queue drained), SMMUv2 context and
    /// global faults (the handlers run, as the fault interrupts would — the board wires no IOMMU interrupt).</summary>
    int Faults(IIommuDriver driver)
    {
        switch (driver)
        {
            case SmmuV3Driver d3:
                _v3Events.TryGetValue(d3, out var n);
                n += d3.DrainEvents().Count;
                _v3Events[d3] = n;
                return n;
            case SmmuV2Driver d2:
                d2.HandleGlobalInterrupt();
                for (var i = 0; i < d2.Features.ContextIrqs; i++) d2.HandleContextInterrupt(i);
                return d2.Faults.Count;
            default:
                return 0;
        }
    }

    readonly Dictionary<SmmuV3Driver, int> _v3Events = [];

    IIommuDriver? SmmuDriver(FdtNode node, Doorbell.Smmu.V3.SmmuV3? v3, Doorbell.Smmu.V2.SmmuV2? v2)
    {
        if (_smmuDrivers.TryGetValue(node, out var d)) return d;
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
