using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Doorbell.Host.Irq;
using Doorbell.Host.Kernel;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Memory;

namespace Doorbell.Platform.DeviceTree;

// Probes of a PCI range run on the booted host kernel (issue 19): the range's probe functions were enumerated by the
// kernel, got their IOMMU fwspec and DeviceID from the bridge's maps and an IOMMU group from pci_device_group. For each
// one a user process opens the container and the kernel's group, VFIO_SET_IOMMU (type1's answer is the printed
// decision; on -EPERM the attack continues with allow_unsafe_interrupts=1), gets the device fd, turns bus mastering on
// through the config region, MAP_DMAs one page, and the device writes to an IOVA never mapped. The first function is
// also the MSI victim: VFIO_DEVICE_SET_IRQS gives its MSI-X vectors eventfds; a raw requester elsewhere on the bridge
// forges (ITS EventID spray with its own DeviceID, or with the victim's where the maps alias them; the victim's
// DeviceID written into the pre-ITS window; every frame SPI to GICv2m SETSPI; every vector number to an in-controller
// block), and the count is how many of the victim's eventfds became readable.
public sealed partial class IsolationProbes
{
    ProbeResult? ProbeThroughKernel(MasterAudit m, RidRange r)
    {
        if (_k is null || !m.IsPciHost || !_b.Bridges.TryGetValue(m.Node, out var br)) return null;
        var rids = DtBoard.ProbeRids(r.First, r.Last, br.BusFirst).Where(br.Probes.ContainsKey).ToList();
        if (rids.Count == 0) return null;
        int attempts = 0, faults = 0, landed = 0;
        string? dmaNotRun = null;
        int? setIommu = null;
        int? firstGroup = null;
        (int Sprayed, int Forged, int Victims, string? Via, string? NotRun) msi = (0, 0, 0, null, "no probe function with an IOMMU group");
        var msiDone = false;
        var unprobeable = 0;
        string? firstError = null, refusedKind = null;
        var buf = new byte[8];
        foreach (var rid in rids)
        {
            var dev = br.Probes[rid];
            var fn = _k.Functions.FirstOrDefault(f => f.HostBridge.Description.Name == br.Node.Path && Rid(f) == rid);
            if (fn is null && _k.UntranslatedFunctions.FirstOrDefault(u => u.Bridge.Description.Name == br.Node.Path && u.Rid == rid) is { Iommu: { } named } refused)
            {
                if (_k.Iommus.Any(i => i.Instance.Name == named))
                {
                    // the IOMMU driver refused the function's fwspec (arm_smmu_probe_device): no group, nothing to attack
                    unprobeable++;
                    firstError ??= refused.Reason;
                    refusedKind ??= _b.SmmuV3s.Keys.Any(n => n.Path == named) ? "SMMUv3" : "SMMUv2";
                    continue;
                }
                // an IOMMU without a driver (not modelled, or its probe failed): Linux defers the device's probe
                dmaNotRun = _b.Blocks.FirstOrDefault(b => b.Node.Path == named)?.Status ?? refused.Reason;
                break;
            }
            if (fn is null)
            {
                // no fwspec (iommu-map gives no IOMMU with a driver): no group, vfio-pci cannot bind; the function DMAs raw
                attempts++;
                // bus mastering on, as its (non-VFIO) host driver would
                var bus = dev.Bus?.Number ?? 0;
                br.Host.ConfigWrite(bus, dev.Device, dev.Function, 0x04, 2, br.Host.ConfigRead(bus, dev.Device, dev.Function, 0x04, 2) | 0x6);
                var raw = buf.AsSpan();
                BinaryPrimitives.WriteUInt64LittleEndian(raw, 0xD0_0B_E1_1D_0B_E1_1Du + rid);
                Clear(_sentinel);
                dev.Dma.Write(_sentinel, raw, BusAttributes.Cpu);
                if (Landed(_sentinel, 0xD0_0B_E1_1D_0B_E1_1Du + rid)) landed++;
                continue;
            }
            var iommuName = _k.Iommus.First(i => ReferenceEquals(i.Driver, fn.Group.Driver)).Instance.Name;
            var process = _k.CreateProcess(_vfio);
            var rc = OpenDevice(process, fn, out var container, out var device);
            setIommu ??= rc;
            firstGroup ??= fn.Group.Id;
            if (rc == -Errno.EPERM)
            {
                process.CloseAll();
                process = _k.CreateProcess(_vfioUnsafe);
                rc = OpenDevice(process, fn, out container, out device);
            }
            if (rc != 0) { dmaNotRun = $"VFIO: -{Errno.Name(rc)}"; process.CloseAll(); break; }
            try
            {
                // bus mastering on, through the device's config region (what a userspace driver does)
                var cmd = buf.AsSpan(0, 2);
                var cfg = VfioPciIndex.IndexToOffset(VfioPciIndex.Config);
                process.Pread(device, cmd, cfg + 4);
                BinaryPrimitives.WriteUInt16LittleEndian(cmd, (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(cmd) | 0x6));
                process.Pwrite(device, cmd, cfg + 4);
                var user = process.Memory.MapAnonymous(0x1000);
                var map = new byte[32];
                MemoryMarshal.Write(map, new VfioIommuType1DmaMap
                { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = user, Iova = MappedIova, Size = 0x1000 });
                var mr = process.Ioctl(container, VfioIoctl.IommuMapDma, map);
                if (mr != 0) { dmaNotRun = $"VFIO: MAP_DMA -{Errno.Name(mr)}"; break; }
                var before = _k.DrainFaults(iommuName);
                var v = buf.AsSpan();
                BinaryPrimitives.WriteUInt64LittleEndian(v, 0x5AFE_5AFE_5AFE_5AFEUL + rid);
                Clear(_sentinel);
                dev.Dma.Write(_sentinel, v, BusAttributes.Cpu); // an IOVA the container never mapped = the sentinel's physical address
                attempts++;
                if (Landed(_sentinel, 0x5AFE_5AFE_5AFE_5AFEUL + rid)) landed++;
                else if (_k.DrainFaults(iommuName) > before) faults++;
                if (!msiDone) { msi = ForgeThroughVfio(process, device, fn, br, r); msiDone = true; }
            }
            finally { process.CloseAll(); }
        }
        if (dmaNotRun is null && unprobeable == rids.Count) dmaNotRun = $"{refusedKind} driver: {firstError}";
        var verdict = r.Verdict;
        bool attaches;
        string decision;
        if (setIommu is { } s)
        {
            attaches = s == 0;
            decision = s == 0 ? "VFIO: attaches (MSI domain flagged isolated)"
                : s == -Errno.EPERM ? "VFIO: SET_IOMMU -EPERM unless allow_unsafe_interrupts=1" : $"VFIO: SET_IOMMU -{Errno.Name(s)}";
        }
        else { attaches = false; decision = "VFIO: no IOMMU group (vfio cannot bind)"; }
        if (!msiDone)
        {
            // no function of the range has an IOMMU group, so no VFIO device owns vectors: the forgery is counted at the
            // host handlers of vectors the kernel's MSI domain gave (the rules' view, as before the kernel booted)
            var (sp, fo, vi, via, nr, _) = ProbeMsi(m, r);
            msi = (sp, fo, vi, via, nr);
        }
        return new ProbeResult(m, r, verdict, attempts, faults, landed, dmaNotRun, msi.Sprayed, msi.Forged, msi.Victims, msi.Via, msi.NotRun,
            attaches, decision) { ThroughKernel = true, Eras = firstGroup is { } g && setIommu is { } today ? [.. EarlierEraDecisions(g), (IsolationPolicyEra.Today, today)] : null };
    }

    /// <summary>
    /// The policy history replayed on this board: type1's SET_IOMMU for <paramref name="group"/> under each earlier era
    /// (that era's VFIO and, for 2014, SMMU drivers that claim IOMMU_CAP_INTR_REMAP), each in a process of its own
    /// that closes before the next opens the group. Today's answer is the probe's own.
    /// </summary>
    List<(IsolationPolicyEra, int)> EarlierEraDecisions(int group)
    {
        var list = new List<(IsolationPolicyEra, int)>();
        foreach (var era in EarlierEras)
        {
            _k!.ClaimInterruptRemap(era == IsolationPolicyEra.Era2013);
            var p = _k.CreateProcess(_eraHosts[era]);
            try { list.Add((era, OpenGroup(p, group, out _))); }
            finally { p.CloseAll(); _k.ClaimInterruptRemap(false); }
        }
        return list;
    }

    /// <summary>
    /// A platform DMA master on the booted kernel: the kernel probed it with its `iommus` into its own IOMMU group; a
    /// user process opens that group through VFIO (SET_IOMMU is type1's decision, on -EPERM the attack continues with
    /// allow_unsafe_interrupts=1), MAP_DMAs one page, and a requester with each of the master's StreamIDs (up to four)
    /// writes to an IOVA never mapped. The tree's device has no model, so the requester is raw (its StreamID on the SMMU model).
    /// </summary>
    (int, int, int, string?) PlatformThroughKernel(MasterAudit m)
    {
        var entry = _k!.PlatformMasters.FirstOrDefault(x => x.Master.Name == m.Node.Path);
        var iommuNode = m.Iommus[0].Node;
        var v3 = _b.SmmuV3s.GetValueOrDefault(iommuNode);
        var v2 = _b.SmmuV2s.GetValueOrDefault(iommuNode);
        if (v3 is null && v2 is null) return (0, 0, 0, _b.Blocks.FirstOrDefault(x => x.Node == iommuNode)?.Status ?? "IOMMU not on the board");
        var kind = v3 is not null ? "SMMUv3" : "SMMUv2";
        if (entry.Group is null) return (0, 0, 0, $"{kind} driver: " + (entry.Error ?? "master not probed"));
        var earlier = EarlierEraDecisions(entry.Group.Id);
        var process = _k.CreateProcess(_vfio);
        try
        {
            var rc = OpenGroup(process, entry.Group.Id, out var container);
            _setIommu ??= rc;
            _platformEras ??= [.. earlier, (IsolationPolicyEra.Today, rc)];
            if (rc == -Errno.EPERM)
            {
                process.CloseAll();
                process = _k.CreateProcess(_vfioUnsafe);
                rc = OpenGroup(process, entry.Group.Id, out container);
            }
            if (rc != 0) return (0, 0, 0, $"VFIO: SET_IOMMU -{Errno.Name(rc)}");
            var user = process.Memory.MapAnonymous(0x1000);
            var map = new byte[32];
            MemoryMarshal.Write(map, new VfioIommuType1DmaMap
            { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = user, Iova = MappedIova, Size = 0x1000 });
            var mr = process.Ioctl(container, VfioIoctl.IommuMapDma, map);
            if (mr != 0) return (0, 0, 0, $"VFIO: MAP_DMA -{Errno.Name(mr)}");
            var name = m.Iommus[0].Node.Path;
            int faults = 0, landed = 0, attempts = 0;
            var v = new byte[8];
            foreach (var sid in m.StreamIds.Take(4))
            {
                attempts++;
                var before = _k.DrainFaults(name);
                IMemoryPort port = v3 is not null ? v3.CreateStreamPort(sid) : v2!.CreateStreamPort(sid);
                BinaryPrimitives.WriteUInt64LittleEndian(v, 0x5AFE_5AFE_5AFE_5AFEUL + sid);
                Clear(_sentinel);
                port.Write(_sentinel, v, BusAttributes.FromDevice(sid));
                if (Landed(_sentinel, 0x5AFE_5AFE_5AFE_5AFEUL + sid)) landed++;
                else if (_k.DrainFaults(name) > before) faults++;
            }
            return (attempts, faults, landed, null);
        }
        finally { process.CloseAll(); }
    }

    /// <summary>open /dev/vfio/vfio and the group, VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU(TYPE1v2): SET_IOMMU's result.</summary>
    static int OpenGroup(VfioProcess p, int group, out int container) => OpenGroup(p, group, out container, out _);

    static int OpenGroup(VfioProcess p, int group, out int container, out int g)
    {
        container = p.OpenContainer();
        g = p.OpenGroup(group);
        if (g < 0) return g;
        var r = p.Ioctl(g, VfioIoctl.GroupSetContainer, BitConverter.GetBytes(container));
        return r != 0 ? r : p.Ioctl(container, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu);
    }

    /// <summary>open the container and the function's group, VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU(TYPE1v2), then GET_DEVICE_FD.</summary>
    static int OpenDevice(VfioProcess p, KernelPciFunction fn, out int container, out int device)
    {
        device = -1;
        var r = OpenGroup(p, fn.Group.Id, out container, out var g);
        if (r != 0) return r;
        device = p.Ioctl(g, VfioIoctl.GroupGetDeviceFd, System.Text.Encoding.ASCII.GetBytes(fn.Name + "\0"));
        return device < 0 ? device : 0;
    }

    (int, int, int, string?, string?) ForgeThroughVfio(VfioProcess p, int device, KernelPciFunction victim, DtBoard.DtBridge br, RidRange r)
    {
        if (victim.MsiDomain is not { } domain || domain.Name == "none") return (0, 0, 0, null, "no MSI domain");
        var infos = _b.Audit.MsiControllers.ToDictionary(c => c.Node);
        var victimRid = Rid(victim);
        if (br.MsiOf(victimRid, infos) is not { } vt || !_b.MsiTargets.TryGetValue(vt.Controller.Node, out var target))
            return (0, 0, 0, null, "MSI controller not on the board");
        EventFd[]? efds = null;
        var n = DtBoard.ProbeVectors;
        var rc = 0;
        for (; n >= 1 && efds is null; n /= 2) efds = VfioUserIrqs.Trigger(p, device, VfioPciIndex.IrqMsix, n, out rc);
        if (efds is null) return (0, 0, 0, null, $"VFIO_DEVICE_SET_IRQS -{Errno.Name(rc)}");
        try
        {
            var vectors = efds.Length;
            int sprayed;
            string via;
            if (target.Its is not null)
            {
                var preIts = vt.Controller.Kind == MsiControllerKind.GicV3PreIts;
                // the forger: a requester whose DeviceID is the victim's (aliased maps) or differs from it
                if (Forger(br, infos, victimRid, vt.DeviceId, r.DeviceIdAliased && !preIts) is not { } forgerDevId)
                    return (0, 0, vectors, null, r.DeviceIdAliased ? "no other requester shares the DeviceID" : "no other requester on the bridge");
                for (var e = 0u; e < vectors; e++)
                {
                    var at = preIts ? target.Doorbell + ((ulong)vt.DeviceId << 2) : target.Doorbell;
                    _b.Bus.Write(new PhysAddr(at), 4, e, BusAttributes.FromDevice(forgerDevId));
                }
                sprayed = vectors;
                via = preIts ? "pre-ITS window DeviceID choice" : r.DeviceIdAliased ? "ITS EventID spray, aliased DeviceID" : "ITS EventID spray";
            }
            else if (target.V2m is { } frame)
            {
                var forgerDevId = Forger(br, infos, victimRid, vt.DeviceId, false) ?? 0;
                for (var spi = frame.BaseIntid; spi < frame.BaseIntid + frame.Count; spi++)
                    _b.Bus.Write(new PhysAddr(target.Doorbell), 4, (ulong)spi, BusAttributes.FromDevice(forgerDevId));
                sprayed = frame.Count;
                via = "GICv2m SETSPI";
            }
            else if (target.DataTarget is not null)
            {
                for (var v = 0u; v < InControllerMsi.Vectors; v++) _b.Bus.Write(new PhysAddr(target.Doorbell), 4, v, BusAttributes.FromDevice(0));
                sprayed = InControllerMsi.Vectors;
                via = "in-controller MSI data spray";
            }
            else return (0, 0, vectors, null, "MSI controller not modelled");
            // nothing to poll: each forged message was taken by a host CPU when its write returned
            var forged = 0;
            foreach (var e in efds) if (e.TryRead(out var c) && c > 0) forged++;
            return (sprayed, forged, vectors, via, null);
        }
        finally { foreach (var e in efds) e.Dispose(); }
    }

    /// <summary>A requester on the bridge other than the victim: one whose DeviceID equals the victim's when
    /// <paramref name="sameDeviceId"/>, else one whose DeviceID differs (its DeviceID, or null when the bus has none).</summary>
    static uint? Forger(DtBoard.DtBridge br, Dictionary<FdtNode, MsiControllerInfo> infos, uint victimRid, uint victimDevId, bool sameDeviceId)
    {
        var first = (uint)br.BusFirst << 8;
        var last = (uint)br.BusLast << 8 | 0xFF;
        for (var rid = first; rid <= last; rid++)
        {
            if (rid == victimRid) continue;
            if (br.MsiOf(rid, infos) is not { } t) continue;
            if ((t.DeviceId == victimDevId) == sameDeviceId) return t.DeviceId;
        }
        return null;
    }

    static uint Rid(KernelPciFunction f) => f.HostBridge.Description.Rid(f.Enumerated.Bus, f.Enumerated.Device, f.Enumerated.Function);
}
