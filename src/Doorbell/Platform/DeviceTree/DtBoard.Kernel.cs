using Doorbell.Devices;
using Doorbell.Gic.V2m;
using Doorbell.Host.Kernel;
using Doorbell.Memory;
using Doorbell.Pci;

namespace Doorbell.Platform.DeviceTree;

// The part of a device-tree board that lets Doorbell's host kernel boot on it (issue 19):
// - each placed ECAM host bridge routes its requesters as the tree's maps say: requester ID → iommu-map → (SMMU model,
//   StreamID), or straight to memory when no entry covers it; msi-map (or msi-parent) → the DeviceID every write
//   carries (RequesterRouter, the board's wiring behind the root complex);
// - "firmware" puts a probe function (a multi-queue DMA engine with 32 MSI-X vectors) at requester IDs of every range
//   the audit gave: on the root bus directly, on another bus behind an ACS-capable root port whose bus numbers firmware
//   programmed (the kernel keeps them, as Linux does without PCI_REASSIGN_ALL_BUS);
// - KernelPlatform() describes the board as lists for HostKernel.Boot.
// Known limits: a probe RID off the root bus must be device 0 function 0 of its bus (a PCIe link has only device 0),
// so samples snap to those; a bus firmware cannot reach (root-bus slots and switch buses used up) gets no function
// (its range is probed by raw requesters); a bridge's memory window is a free hole below 4 GiB (identity PCI = CPU
// addresses), not the `ranges` address; an iommu-map entry naming an IOMMU without a model forwards untranslated.
public sealed partial class DtBoard
{
    /// <summary>MSI-X vectors of every probe function (what VFIO_DEVICE_SET_IRQS enables for a victim).</summary>
    public const int ProbeVectors = 32;

    /// <summary>A placed host bridge: its maps as the board routes them, and the probe functions firmware put below it.</summary>
    public sealed class DtBridge
    {
        public required FdtNode Node { get; init; }
        public required PciHost Host { get; init; }
        public required ulong Ecam { get; init; }
        public required int BusFirst { get; init; }
        public required int BusLast { get; init; }
        public ulong Mmio { get; set; }
        public ulong MmioSize { get; set; }
        public DtIdMap? IommuMap { get; init; }
        public DtIdMap? MsiMap { get; init; }
        public MsiControllerInfo? MsiParent { get; init; }
        public uint? MsiParentDeviceId { get; init; }
        public MsiControllerInfo? InController { get; init; }
        /// <summary>Probe functions by absolute requester ID.</summary>
        public Dictionary<uint, MultiQueueDmaDevice> Probes { get; } = [];
        /// <summary>Why a wanted probe requester ID got no function.</summary>
        public Dictionary<uint, string> NotPlaced { get; } = [];

        /// <summary>of_map_id over iommu-map: (IOMMU node, StreamID), or null (no map, no entry, malformed, or an IOMMU
        /// node that is not available: of_iommu_xlate's of_device_is_available leaves the device without an IOMMU).</summary>
        public (FdtNode Iommu, uint Sid)? IommuOf(uint rid) =>
            IommuMap?.Map(rid, out var t, out var sid) == IdMapResult.Matched && t is not null && DtRefs.EnabledPath(t) ? (t, sid) : null;

        /// <summary>of_msi_map_id: the in-controller block, msi-map (falling back to msi-parent), or msi-parent with the RID
        /// (or the parent's DeviceID specifier).</summary>
        public (MsiControllerInfo Controller, uint DeviceId)? MsiOf(uint rid, IReadOnlyDictionary<FdtNode, MsiControllerInfo> controllers)
        {
            if (InController is not null) return (InController, rid);
            if (MsiMap is not null)
            {
                var r = MsiMap.Map(rid, out var t, out var id);
                if (r == IdMapResult.Matched) return t is not null && controllers.TryGetValue(t, out var c) ? (c, id) : null;
                if (r == IdMapResult.Error) return null;
            }
            return MsiParent is not null ? (MsiParent, MsiParentDeviceId ?? rid) : null;
        }
    }

    public Dictionary<FdtNode, DtBridge> Bridges { get; } = [];

    Dictionary<FdtNode, MsiControllerInfo> MsiInfos() => Audit.MsiControllers.ToDictionary(m => m.Node);

    void WireBridge(FdtNode node, PciHost host, ulong ecam, int b0, int b1)
    {
        var infos = MsiInfos();
        var msiHolder = Nearest(node, "msi-map");
        var parentHolder = Nearest(node, "msi-parent");
        var mmap = msiHolder is not null && (parentHolder is null || Depth(msiHolder) >= Depth(parentHolder))
            ? DtRefs.IdMap(Fdt, msiHolder, "msi-map", "msi-map-mask") : null;
        MsiControllerInfo? parent = null;
        uint? parentId = null;
        if (parentHolder is not null)
        {
            var refs = DtRefs.PhandleList(Fdt, parentHolder, "msi-parent", "#msi-cells", 0, out _);
            if (refs.Count > 0 && refs[0].Target is { } t && infos.TryGetValue(t, out var pc))
            {
                parent = pc;
                if (refs[0].Args.Length == 1) parentId = refs[0].Args[0];
            }
        }
        var br = new DtBridge
        {
            Node = node, Host = host, Ecam = ecam, BusFirst = b0, BusLast = b1,
            IommuMap = DtRefs.IdMap(Fdt, node, "iommu-map", "iommu-map-mask"), MsiMap = mmap, MsiParent = parent, MsiParentDeviceId = parentId,
            InController = infos.TryGetValue(node, out var self) && self.Kind == MsiControllerKind.InController ? self : null,
        };
        Bridges[node] = br;
        host.ConnectIommu(new RequesterRouter(this, br));
    }

    static FdtNode? Nearest(FdtNode n, string property)
    {
        for (FdtNode? p = n; p is not null; p = p.Parent) if (p.Has(property)) return p;
        return null;
    }

    static int Depth(FdtNode n) { var d = 0; for (var p = n.Parent; p is not null; p = p.Parent) d++; return d; }

    /// <summary>The requester IDs of a range that get a probe function: first, last and two between, each snapped to an
    /// enumerable place (function 0 of its device on the root bus; device 0 function 0 on another bus, where a PCIe link
    /// has only device 0), or, when that falls before the range, the range's first function of the same device.</summary>
    public static IReadOnlyList<uint> ProbeRids(uint first, uint last, int busFirst)
    {
        var n = (ulong)last - first;
        var set = new SortedSet<uint>();
        foreach (var c in new[] { first, (uint)(first + n / 3), (uint)(first + 2 * n / 3), last })
        {
            var root = (int)(c >> 8) == busFirst;
            var step = root ? 8u : 0x100u;
            var s = c & ~(step - 1);
            if (s < first) s = (first & ~(step - 1)) == s ? first : s + step;
            if (s >= first && s <= last && ((int)(s >> 8) == busFirst) == root) set.Add(s);
        }
        return [.. set];
    }

    /// <summary>Attaches a probe at device <paramref name="dev"/> function <paramref name="fn"/> of <paramref name="bus"/>;
    /// a function other than 0 needs function 0 of its device (a multi-function device), so a filler function goes there.</summary>
    static MultiQueueDmaDevice AttachProbe(Doorbell.Pci.PciBus bus, int dev, int fn)
    {
        if (fn != 0 && bus[dev << 3] is null) bus.Attach(new MultiQueueDmaDevice(ProbeVectors), dev, 0);
        return bus[dev << 3 | fn] as MultiQueueDmaDevice ?? bus.Attach(new MultiQueueDmaDevice(ProbeVectors), dev, fn);
    }

    void PlaceProbeFunctions()
    {
        foreach (var m in Audit.Masters)
        {
            if (!m.IsPciHost || !Bridges.TryGetValue(m.Node, out var br)) continue;
            var perRange = m.Ranges.Select(r => ProbeRids(r.First, r.Last, br.BusFirst)).ToList();
            var wanted = perRange.SelectMany(l => l).Distinct().ToList();
            var span = br.BusLast - br.BusFirst;
            var rootSlots = new SortedSet<int>(Enumerable.Range(0, 32));
            foreach (var rid in wanted.Where(r => (int)(r >> 8) == br.BusFirst))
            {
                br.Probes[rid] = AttachProbe(br.Host.RootBus, (int)(rid >> 3) & 31, (int)rid & 7);
                rootSlots.Remove((int)(rid >> 3) & 31);
            }
            var first = perRange.Where(l => l.Count > 0).Select(l => (int)(l[0] >> 8) - br.BusFirst).Where(b => b > 0).ToHashSet();
            var targets = wanted.Select(r => (int)(r >> 8) - br.BusFirst).Where(b => b > 0 && b <= span).ToHashSet();
            var placed = PlanTopology(br, targets, first, rootSlots, span);
            foreach (var rid in wanted.Where(r => (int)(r >> 8) != br.BusFirst))
            {
                var rel = (int)(rid >> 8) - br.BusFirst;
                if (rel < 0 || rel > span) { br.NotPlaced[rid] = "outside the ECAM window"; continue; }
                if (!placed.TryGetValue(rel, out var port)) { br.NotPlaced[rid] = "no place left in the PCIe topology for its bus"; continue; }
                br.Probes[rid] = AttachProbe(port.Secondary, 0, (int)rid & 7);
            }
            PlaceWindow(br, br.Probes.Count);
        }
    }

    /// <summary>
    /// Firmware's PCIe topology for the probe buses (ECAM-relative), as bus numbers a depth-first scan keeps: a root port
    /// per bus while root-bus slots last; with more buses than slots, switches (root port → upstream port on bus u →
    /// up to 32 downstream ports on bus v, one per bus), u and v taken from buses no range's first probe needs. Every
    /// port is ACS-capable, so each probe function is its own IOMMU group. Returns the downstream/root port of each bus.
    /// </summary>
    static Dictionary<int, Doorbell.Pci.PciBridge> PlanTopology(DtBridge br, HashSet<int> targets, HashSet<int> first, SortedSet<int> slots, int span)
    {
        var ports = new Dictionary<int, Doorbell.Pci.PciBridge>();
        var sorted = targets.Order().ToList();
        var slotQueue = new Queue<int>(slots);
        void Write(int bus, int dev, int primary, int secondary, int subordinate) =>
            br.Host.ConfigWrite(bus, dev, 0, 0x18, 4, (uint)(subordinate << 16 | secondary << 8 | primary));
        void Direct(int t)
        {
            var slot = slotQueue.Dequeue();
            ports[t] = br.Host.RootBus.Attach(new Doorbell.Pci.PciBridge(0x1b36, 0x000c, PciePortType.RootPort, $"root-port-{t:x2}", acs: true), slot);
            Write(0, slot, 0, t, t);
        }
        int NextFree(int b)
        {
            while (b <= span && first.Contains(b)) b++;
            return b;
        }
        var c = 1;
        while (slotQueue.Count > 0)
        {
            var rest = sorted.Where(t => t >= c).ToList();
            if (rest.Count == 0) break;
            if (rest.Count <= slotQueue.Count) { foreach (var t in rest) Direct(t); break; }
            // a switch's two internal buses: buses no range's first probe needs, near c; where the probe buses are dense,
            // c and c+1 (their probes are given up)
            var u = NextFree(c);
            var v = NextFree(u + 1);
            if (v > span || v - c > 3) { u = c; v = c + 1; }
            if (v > span) break;
            foreach (var t in rest.Where(t => t < u))
                if (slotQueue.Count > 1) Direct(t);
            var chunk = sorted.Where(t => t > v).Take(32).ToList();
            if (chunk.Count == 0) break;
            var end = chunk[^1];
            var s = slotQueue.Dequeue();
            var root = br.Host.RootBus.Attach(new Doorbell.Pci.PciBridge(0x1b36, 0x000c, PciePortType.RootPort, $"root-port-{u:x2}", acs: true), s);
            Write(0, s, 0, u, end);
            var up = root.Secondary.Attach(new Doorbell.Pci.PciBridge(0x1b36, 0x000d, PciePortType.SwitchUpstream, $"switch-up-{u:x2}", acs: false), 0);
            Write(u, 0, u, v, end);
            for (var i = 0; i < chunk.Count; i++)
            {
                var down = up.Secondary.Attach(new Doorbell.Pci.PciBridge(0x1b36, 0x000e, PciePortType.SwitchDownstream, $"switch-down-{chunk[i]:x2}", acs: true), i);
                Write(v, i, v, chunk[i], chunk[i]);
                ports[chunk[i]] = down;
            }
            c = end + 1;
        }
        return ports;
    }

    /// <summary>The bridge's memory window: a free hole below 4 GiB (PCI = CPU addresses), 1 MiB per probe function and
    /// port (bridge windows are 1 MiB grained) with room to spare, at least 64 MiB.</summary>
    void PlaceWindow(DtBridge br, int functions)
    {
        var want = 0x400_0000UL;
        while (want < (ulong)(2 * functions + 16) << 20 && want < 0x4000_0000UL) want <<= 1;
        for (var size = want; size >= 0x400_0000UL; size >>= 1)
            for (var a = Math.Max(0x1000_0000UL, size); a + size <= 0x1_0000_0000UL; a += size)
            {
                if (Overlaps(a, size) || (a < RamBase + RamSize && RamBase < a + size)) continue;
                var at = a;
                var sz = size;
                if (!TryPlace("pcie-mmio", () => Bus.MapMmio(new PhysAddr(at), sz, br.Host.MemoryWindow(at),
                        new MmioAccessRules(AccessSizes.All, false, MmioViolation.RazWi), "pcie-mmio"), out _)) continue;
                br.Mmio = a;
                br.MmioSize = size;
                return;
            }
    }

    /// <summary>The board as lists for <see cref="HostKernel.Boot(Machine, KernelPlatform, IMemoryView?)"/>; null without a GIC model.</summary>
    public KernelPlatform? KernelPlatform()
    {
        KernelGic gic;
        if (GicV3 is { } g3) gic = new KernelGic(true, GicdBase, GicrBase, g3.CpuInterfaces);
        else if (GicV2 is not null) gic = new KernelGic(false, GicdBase, GiccBase, null);
        else return null;
        var iommus = new List<KernelIommuInstance>();
        foreach (var (n, _) in SmmuV3s) iommus.Add(new KernelIommuInstance(n.Path, KernelIommuKind.SmmuV3, Blocks.First(b => b.Node == n).Base));
        foreach (var (n, _) in SmmuV2s) iommus.Add(new KernelIommuInstance(n.Path, KernelIommuKind.SmmuV2, Blocks.First(b => b.Node == n).Base));
        var msis = new List<KernelMsiInstance>();
        foreach (var (n, t) in MsiTargets)
        {
            var @base = Blocks.First(b => b.Node == n && b.Modelled).Base;
            if (t.Its is not null)
                msis.Add(t.Info.Kind == MsiControllerKind.GicV3PreIts
                    ? new KernelMsiInstance(n.Path, KernelMsiKind.PreIts, @base, t.Doorbell)
                    : new KernelMsiInstance(n.Path, KernelMsiKind.Its, @base));
            else if (t.V2m is not null) msis.Add(new KernelMsiInstance(n.Path, KernelMsiKind.GicV2m, t.Doorbell - GicV2m.MSI_SETSPI_NS));
            else if (t.DataTarget is not null) msis.Add(new KernelMsiInstance(n.Path, KernelMsiKind.InController, t.Doorbell, Spi: t.Spi));
        }
        var infos = MsiInfos();
        var bridges = new List<KernelHostBridge>();
        foreach (var (n, br) in Bridges)
        {
            if (br.MmioSize == 0) continue;
            bridges.Add(new KernelHostBridge(n.Path, br.Ecam, br.BusFirst, br.BusLast, br.Mmio, br.MmioSize,
                rid => br.IommuOf(rid) is { } t ? new KernelIdTarget(t.Iommu.Path, t.Sid) : null,
                rid => br.MsiOf(rid, infos) is { } t ? new KernelIdTarget(t.Controller.Node.Path, t.DeviceId) : null));
        }
        var masters = new List<KernelPlatformMaster>();
        foreach (var m in Audit.Masters)
        {
            if (m.IsPciHost || m.Ranges.Count > 0) continue;
            masters.Add(new KernelPlatformMaster(m.Node.Path, m.Iommus.Count > 0 ? m.Iommus[0].Node.Path : null, m.StreamIds,
                m.MsiControllers.FirstOrDefault()?.Node.Path, m.DeviceId ?? 0));
        }
        return new KernelPlatform(gic, iommus, msis, bridges, masters);
    }

    /// <summary>Boots Doorbell's host kernel on this board (drivers over MMIO, every host bridge enumerated, IOMMU groups),
    /// and wires CPU 0's interrupt input to the kernel's CPU. Null with the reason when it cannot boot.</summary>
    public HostKernel? Boot(out string? error)
    {
        error = null;
        if (KernelPlatform() is not { } platform) { error = "no GIC model on the board"; return null; }
        try
        {
            var k = HostKernel.Boot(Machine, platform, null);
            if (GicV3 is { } g3) g3.CpuInterfaces[0].Target = k.Cpus[0];
            else GicV2!.SetTarget(0, k.Cpus[0]);
            return k;
        }
        catch (Exception e) when (e is Doorbell.Host.Irq.IrqException or ArgumentException or InvalidOperationException)
        {
            error = "host kernel boot: " + e.Message;
            return null;
        }
    }

    /// <summary>
    /// The board's routing behind a host bridge, per requester: the DeviceID its writes carry (msi-map / msi-parent) and
    /// where they go (the SMMU model iommu-map names at the StreamID it gives, or memory untranslated). PciHost hands
    /// the ECAM-relative requester ID as the stream ID (identity iommu-map at the PciHost).
    /// </summary>
    sealed class RequesterRouter(DtBoard board, DtBridge bridge) : IIommuUpstream
    {
        public IMemoryPort CreateStreamPort(uint streamId)
        {
            var rid = streamId + ((uint)bridge.BusFirst << 8);
            var devId = bridge.MsiOf(rid, board.MsiInfos()) is { } m ? m.DeviceId : rid;
            IMemoryPort next = board.Bus;
            if (bridge.IommuOf(rid) is { } t)
            {
                if (board.SmmuV3s.TryGetValue(t.Iommu, out var v3)) next = v3.CreateStreamPort(t.Sid);
                else if (board.SmmuV2s.TryGetValue(t.Iommu, out var v2)) next = v2.CreateStreamPort(t.Sid);
            }
            return new Tagged(next, BusAttributes.FromDevice(devId));
        }

        sealed class Tagged(IMemoryPort next, BusAttributes attributes) : IMemoryPort
        {
            public BusStatus Read(ulong address, Span<byte> destination, in BusAttributes _) => next.Read(address, destination, attributes);
            public BusStatus Write(ulong address, ReadOnlySpan<byte> source, in BusAttributes _) => next.Write(address, source, attributes);
        }
    }
}
