using Doorbell.Gic.Its;
using Doorbell.Gic.V2;
using Doorbell.Gic.V2m;
using Doorbell.Gic.V3;
using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Smmu.V3;
using Doorbell.Timing;

namespace Doorbell.Platform.DeviceTree;

// A running board built from what a device tree describes (issue 19): RAM from the memory nodes, each IOMMU at its
// reg with the model of its kind, the GIC and each MSI controller with the behaviour of its kind, each PCIe host
// bridge as a generic ECAM root complex. It goes through the existing Machine / PhysicalAddressSpace seam only, so
// a new board wiring can replace DtBoard.Build without touching the probes (they use DtBoard's fields).
// Known limits: one CPU; addresses are translated through `ranges` of simple-bus parents only (no PCI or dma-ranges);
// a block whose reg overlaps an already placed one is reported and left out; SMMUv2-class IOMMUs are the SMMUv2 model
// with the ID registers of their part (MMU-400, MMU-401, else MMU-500: `arm,smmu-v2`, `arm,smmu-v1` and vendor
// MMU-500 variants); GICv3 MBI and vendor MSI controllers are reported unmodelled; no IOMMU interrupt is wired (the
// probes run the fault handlers themselves after each transaction);
// PCIe config space is a bare ECAM window (probes originate requests by requester ID, see RequesterPort).

/// <summary>A block of the tree that became (or could not become) a model on the board.</summary>
public sealed record DtBlock(FdtNode Node, string Kind, ulong Base, bool Modelled, string Status);

/// <summary>An MSI controller on the board and how a device's write reaches it.</summary>
public sealed class DtMsiTarget(MsiControllerInfo info, ulong doorbell, string status)
{
    public MsiControllerInfo Info { get; } = info;
    /// <summary>The address a device writes its MSI to (GITS_TRANSLATER, MSI_SETSPI_NS, pre-ITS window base, controller register).</summary>
    public ulong Doorbell { get; } = doorbell;
    public string Status { get; } = status;
    public GicV3Its? Its { get; init; }
    public GicV2m? V2m { get; init; }
    public InControllerMsi? DataTarget { get; init; }
    /// <summary>The SPI an in-controller MSI block raises (-1: none).</summary>
    public int Spi { get; init; } = -1;
    public bool Modelled => Its is not null || V2m is not null || DataTarget is not null;
}

/// <summary>
/// An MSI block inside a PCIe controller (e.g. a DesignWare-style MSI controller): a write of data D to its
/// register raises vector D of the controller, whoever wrote it — the requester ID is not looked at.
/// </summary>
/// Registers (the shape of a DesignWare MSI block): +0 the doorbell, +0x10 + 4·n status word n (vector 32·n + bit, write 1
/// to clear). The block's line is high while any status bit is set.
public sealed class InControllerMsi(IInterruptLine? line = null) : IMmioHandler
{
    public const int Vectors = 256;
    public const uint MSI_DOORBELL = 0x00, MSI_STATUS = 0x10;

    enum Reg { None, Doorbell, Status }

    /// <summary>The block's registers, declared once: the table drives dispatch, the W1C rule and names.</summary>
    public static readonly RegisterDescriptor[] Registers =
    [
        new(MSI_DOORBELL, 4, "MSI_DOORBELL", RegisterAccess.WriteOnly, Id: (int)Reg.Doorbell, MinSize: 2), // 16- or 32-bit MSI data
        new(MSI_STATUS, 4, "MSI_STATUS", RegisterAccess.WriteOneToClear, Vectors / 32, (int)Reg.Status),
    ];

    public static readonly RegisterBlock Block = new("in-controller-msi", Registers, 0x1000, "DesignWare-style MSI block (read-only register)");

    readonly int[] _raised = new int[Vectors];
    readonly uint[] _status = new uint[Vectors / 32];
    readonly IInterruptLine? _line = line;

    public int Raised(int vector) => (uint)vector < Vectors ? _raised[vector] : 0;

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        value = RegisterDispatch<RegisterFile>.Read(new RegisterFile(this), offset, size, in attributes);
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        RegisterDispatch<RegisterFile>.Write(new RegisterFile(this), offset, size, value, in attributes, null);
        return BusStatus.Ok;
    }

    readonly struct RegisterFile(InControllerMsi m) : IRegisterFile
    {
        public static RegisterBlock Block => InControllerMsi.Block;

        public ulong Read(RegisterRef r, in BusAttributes attributes) => (Reg)r.Id == Reg.Status ? m._status[r.Index] : 0;

        public void Write(RegisterRef r, ulong value, in BusAttributes attributes)
        {
            if ((Reg)r.Id == Reg.Doorbell)
            {
                if (value >= Vectors) return;
                m._raised[(int)value]++;
                m._status[(int)value / 32] |= 1u << (int)(value % 32);
                m._line?.SetLevel(true);
                return;
            }
            m._status[r.Index] &= ~(uint)value; // W1C: the bits written as one
            if (m._status.All(w => w == 0)) m._line?.SetLevel(false);
        }
    }
}

/// <summary>
/// The Socionext SynQuacer pre-ITS window: a device writes its MSI to window + (DeviceID &lt;&lt; 2) and the window
/// forwards it to GITS_TRANSLATER tagged with that DeviceID (Linux its_enable_quirk_socionext_synquacer). The
/// DeviceID is therefore chosen by the writer's address.
/// </summary>
public sealed class PreItsWindow(PhysicalAddressSpace bus, ulong translater) : IMmioHandler
{
    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes) { value = 0; return BusStatus.Ok; }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes) =>
        bus.Write(new PhysAddr(translater), 4, value & 0xFFFF_FFFF, BusAttributes.FromDevice((uint)(offset >> 2)));
}

/// <summary>The board: machine, models by node, and what could not be modelled.</summary>
public sealed partial class DtBoard
{
    public const ulong TableArea = 0x0400_0000;   // GIC + SMMU tables at the start of RAM (64 MiB)
    public const ulong ScratchArea = 0x0100_0000; // DMA probe targets after the tables (16 MiB)

    public required Machine Machine { get; init; }
    public required Fdt Fdt { get; init; }
    public required PlatformAudit Audit { get; init; }
    public List<DtBlock> Blocks { get; } = [];
    public Dictionary<FdtNode, SmmuV3> SmmuV3s { get; } = [];
    public Dictionary<FdtNode, Doorbell.Smmu.V2.SmmuV2> SmmuV2s { get; } = [];
    public Dictionary<FdtNode, DtMsiTarget> MsiTargets { get; } = [];
    public Dictionary<FdtNode, PciHost> HostBridges { get; } = [];
    public GicV3? GicV3 { get; set; }
    public ulong GicdBase { get; set; }
    public ulong GicrBase { get; set; }
    public GicV2? GicV2 { get; set; }
    public ulong GiccBase { get; set; }
    public ulong RamBase { get; set; }
    public ulong RamSize { get; set; }
    public PhysicalAddressSpace Bus => Machine.Bus;

    /// <summary>Builds the board. Never throws for anything the tree says: what cannot be placed is a block with a status.</summary>
    public static DtBoard Build(Fdt fdt, PlatformAudit audit)
    {
        ArgumentNullException.ThrowIfNull(fdt);
        ArgumentNullException.ThrowIfNull(audit);
        var bus = new PhysicalAddressSpace();
        var b = new DtBoard { Machine = new Machine(audit.Name, bus, new VirtualClock(), null), Fdt = fdt, Audit = audit };
        b.PlaceRam();
        b.PlaceGic();
        foreach (var i in audit.Iommus) b.PlaceIommu(i);
        foreach (var m in audit.MsiControllers) b.PlaceMsi(m);
        foreach (var m in audit.Masters)
            if (m.IsPciHost) b.PlaceHostBridge(m.Node);
        b.Machine.RamBase = b.RamBase;
        b.Machine.RamSize = b.RamSize;
        b.PlaceProbeFunctions();
        return b;
    }

    bool TryPlace(string what, Action place, out string status)
    {
        try { place(); status = "placed"; return true; }
        catch (ArgumentException e) { status = "not placed: " + e.Message; return false; }
    }

    void PlaceRam()
    {
        foreach (var n in Fdt.AllNodes)
        {
            if (n.Property("device_type")?.AsString() != "memory" || !DtRefs.EnabledPath(n)) continue;
            foreach (var (a, s) in DtAddress.Reg(n))
            {
                if (s < 2 * TableArea) continue;
                var size = Math.Min(s, 1UL << 40);
                if (TryPlace("ram", () => Bus.AddRam(new PhysAddr(a), size, "ram@" + a.ToString("x", System.Globalization.CultureInfo.InvariantCulture)), out var st) && RamSize == 0)
                { RamBase = a; RamSize = size; }
                Blocks.Add(new DtBlock(n, "RAM", a, st == "placed", st == "placed" ? $"{size >> 20} MiB" : st));
            }
        }
        if (RamSize != 0) return;
        // No usable memory node (firmware fills it in on many boards): RAM where nothing else is described.
        foreach (var candidate in new ulong[] { 0x8000_0000, 0x40_0000_0000, 0x800_0000_0000 })
        {
            if (Overlaps(candidate, 0x4000_0000)) continue;
            if (TryPlace("ram", () => Bus.AddRam(new PhysAddr(candidate), 0x4000_0000, "ram (assumed)"), out _))
            {
                RamBase = candidate; RamSize = 0x4000_0000;
                Blocks.Add(new DtBlock(Fdt.Root, "RAM", candidate, true, "1024 MiB assumed (the tree gives no usable memory node)"));
                return;
            }
        }
    }

    List<(FdtNode Node, ulong Address, ulong Size)>? _regs;

    bool Overlaps(ulong a, ulong size, FdtNode? except = null)
    {
        _regs ??= [.. Fdt.AllNodes.SelectMany(n => DtAddress.Reg(n).Select(r => (n, r.Address, r.Size)))];
        foreach (var (n, ra, rs) in _regs)
            if (n != except && a < ra + rs && ra < a + size) return true;
        return false;
    }

    void PlaceGic()
    {
        var v3 = Fdt.AllNodes.FirstOrDefault(n => n.IsCompatible("arm,gic-v3") && DtRefs.EnabledPath(n));
        if (v3 is not null)
        {
            var regs = DtAddress.Reg(v3);
            if (regs.Count >= 2)
            {
                var gic = new GicV3(Bus, new GicV3Options { CpuCount = 1, SpiCount = 960 });
                var ok = TryPlace("gicv3", () => gic.Map(new PhysAddr(regs[0].Address), new PhysAddr(regs[1].Address)), out var st);
                if (ok) { GicV3 = gic; GicdBase = regs[0].Address; GicrBase = regs[1].Address; Machine.SetSpiProvider(n => gic.SpiLine(32 + n)); }
                Blocks.Add(new DtBlock(v3, "GICv3", regs[0].Address, ok, ok ? "distributor + redistributor (1 CPU)" : st));
            }
            else Blocks.Add(new DtBlock(v3, "GICv3", 0, false, "reg lacks distributor and redistributor"));
            return;
        }
        var v2 = Fdt.AllNodes.FirstOrDefault(n => DtRefs.EnabledPath(n) && n.Has("interrupt-controller") &&
            n.Compatible.Any(c => c is "arm,gic-400" or "arm,cortex-a15-gic" or "arm,cortex-a9-gic" or "arm,cortex-a7-gic" or "arm,gic-v2"));
        if (v2 is null) return;
        var r2 = DtAddress.Reg(v2);
        if (r2.Count < 2) { Blocks.Add(new DtBlock(v2, "GICv2", 0, false, "reg lacks distributor and CPU interface")); return; }
        var g2 = new GicV2(1, 480);
        // The frames at the sizes the tree gives (GIC-400: a 4 KiB distributor, an 8 KiB CPU interface), so that packed
        // frames (hikey960: CPU interface 4 KiB after the distributor) fit; GicV2.Map's 64 KiB frames otherwise.
        var rules = new MmioAccessRules(AccessSizes.All, true, MmioViolation.RazWi);
        var dSize = Math.Clamp(r2[0].Size, 0x1000UL, 0x1_0000UL);
        var cSize = Math.Clamp(r2[1].Size, 0x2000UL, 0x1_0000UL);
        var ok2 = TryPlace("gicv2", () =>
        {
            Bus.MapMmio(new PhysAddr(r2[0].Address), dSize, g2, rules, "gicv2-gicd");
            Bus.MapMmio(new PhysAddr(r2[1].Address), cSize, g2.CpuInterface(0), rules, "gicv2-gicc");
        }, out var st2);
        if (ok2) { GicV2 = g2; GicdBase = r2[0].Address; GiccBase = r2[1].Address; Machine.SetSpiProvider(n => g2.SpiLine(32 + n)); }
        Blocks.Add(new DtBlock(v2, "GICv2", r2[0].Address, ok2, ok2 ? "distributor + CPU interface (1 CPU)" : st2));
    }

    void PlaceIommu(IommuInfo info)
    {
        var regs = DtAddress.Reg(info.Node);
        var @base = regs.Count > 0 ? regs[0].Address : 0;
        switch (info.Kind)
        {
            case IommuKind.SmmuV3 when regs.Count > 0:
                var smmu = new SmmuV3(Bus, SmmuV3Options.QemuVirt);
                var ok = TryPlace("smmuv3", () => smmu.Map(new PhysAddr(@base)), out var st);
                if (ok) SmmuV3s[info.Node] = smmu;
                Blocks.Add(new DtBlock(info.Node, "SMMUv3", @base, ok, ok ? "SMMUv3 model" : st));
                break;
            case IommuKind.SmmuV3:
                Blocks.Add(new DtBlock(info.Node, "SMMUv3", 0, false, "no reg"));
                break;
            case IommuKind.SmmuV2 when regs.Count > 0:
            {
                var (options, part) = SmmuV2Part(info.Node);
                var v2 = new Doorbell.Smmu.V2.SmmuV2(Bus, options);
                var ok2 = TryPlace("smmuv2", () => v2.Map(new PhysAddr(@base)), out var st2);
                if (ok2) SmmuV2s[info.Node] = v2;
                Blocks.Add(new DtBlock(info.Node, "SMMUv2", @base, ok2, ok2 ? $"SMMUv2 model ({part})" : st2));
                break;
            }
            case IommuKind.SmmuV2:
                Blocks.Add(new DtBlock(info.Node, "SMMUv2", 0, false, "no reg"));
                break;
            default:
                Blocks.Add(new DtBlock(info.Node, info.KindName, @base, false, "IOMMU kind Doorbell does not model (" + string.Join(",", info.Node.Compatible.Take(1)) + ")"));
                break;
        }
    }

    /// <summary>The SMMUv2 part a node's compatible names (Linux's arm-smmu match table: MMU-400 and MMU-401 are their own
    /// parts; `arm,mmu-500`, vendor MMU-500 variants and the generic `arm,smmu-v1`/`arm,smmu-v2` get MMU-500's ID registers with 127 SMRs).</summary>
    public static (Doorbell.Smmu.V2.SmmuV2Options Options, string Part) SmmuV2Part(FdtNode node)
    {
        ArgumentNullException.ThrowIfNull(node);
        if (node.IsCompatible("arm,mmu-400")) return (Doorbell.Smmu.V2.SmmuV2Options.Mmu400, "MMU-400");
        if (node.IsCompatible("arm,mmu-401")) return (Doorbell.Smmu.V2.SmmuV2Options.Mmu401, "MMU-401");
        // MMU-500 is configured with up to 127 stream match register groups (SMMU_IDR0.NUMSMRG's largest value); a tree does not
        // say how many a part has, and the booted kernel holds one per master StreamID, so the board takes the most.
        var mmu500 = Doorbell.Smmu.V2.SmmuV2Options.Mmu500 with { StreamMatchGroups = 127 };
        if (node.IsCompatible("arm,mmu-500")) return (mmu500, "MMU-500");
        var c = node.Compatible.FirstOrDefault() ?? "?";
        return (mmu500, $"{c}: MMU-500 ID registers");
    }

    void PlaceMsi(MsiControllerInfo info)
    {
        var regs = DtAddress.Reg(info.Node);
        var @base = regs.Count > 0 ? regs[0].Address : 0;
        DtMsiTarget? target = null;
        string status;
        switch (info.Kind)
        {
            case MsiControllerKind.GicV3Its or MsiControllerKind.GicV3PreIts when GicV3 is not null && regs.Count > 0:
            {
                var its = new GicV3Its(GicV3, new ItsOptions { DeviceIdBits = 20 });
                if (!TryPlace("its", () => its.Map(Bus, new PhysAddr(@base)), out status)) break;
                var translater = @base + GicV3Its.GITS_TRANSLATER;
                if (info.Kind == MsiControllerKind.GicV3PreIts)
                {
                    // Two 32-bit cells: window base and size (Linux reads them with of_property_read_u32_array).
                    var cells = info.Node.Property("socionext,synquacer-pre-its")?.Cells() ?? [];
                    var preBase = cells.Length >= 2 ? cells[0] : 0UL;
                    var preSize = cells.Length >= 2 ? cells[1] : 0UL;
                    if (preBase == 0 || preSize == 0 || preSize > 1UL << 32) { status = "pre-ITS window malformed"; break; }
                    if (!TryPlace("pre-its", () => Bus.MapMmio(new PhysAddr(preBase), preSize, new PreItsWindow(Bus, translater),
                            new MmioAccessRules(AccessSizes.All, false, MmioViolation.RazWi), "pre-its"), out status)) break;
                    target = new DtMsiTarget(info, preBase, "GICv3 ITS behind the pre-ITS window") { Its = its };
                }
                else target = new DtMsiTarget(info, translater, "GICv3 ITS model") { Its = its };
                status = target.Status;
                break;
            }
            case MsiControllerKind.GicV2m when regs.Count > 0 && (GicV2 is not null || GicV3 is not null):
            {
                var index = MsiTargets.Values.Count(t => t.V2m is not null);
                var first = info.Node.CellsValue("arm,msi-base-spi") is { } bs && bs is >= 32 and < 1000 ? (int)bs : 96 + 64 * index;
                var count = info.Node.CellsValue("arm,msi-num-spis") is { } ns && ns is >= 1 and <= 64 ? (int)ns : 64;
                if (first + count > 32 + (GicV2 is not null ? 480 : 960)) { status = "SPIs beyond the GIC"; break; }
                ISpiSink sink = GicV2 is not null ? GicV2 : GicV3!;
                var frame = new GicV2m(sink, first, count);
                if (!TryPlace("v2m", () => frame.Map(Bus, new PhysAddr(@base)), out status)) break;
                target = new DtMsiTarget(info, @base + GicV2m.MSI_SETSPI_NS, $"GICv2m frame model, INTIDs {first}–{first + count - 1}") { V2m = frame };
                status = target.Status;
                break;
            }
            case MsiControllerKind.InController when regs.Count > 0:
            {
                // the block's SPI: one the board builder picks above the tree's (the tree's interrupt for it is not parsed)
                var spi = (GicV3 is not null ? 900 : 440) + MsiTargets.Values.Count(t => t.DataTarget is not null);
                IInterruptLine? line = GicV3?.SpiLine(32 + spi) ?? GicV2?.SpiLine(32 + spi);
                var data = new InControllerMsi(line);
                // The MSI register block: the reg entry named "msi", else the last entry of a host bridge's reg.
                var names = info.Node.Property("reg-names")?.Strings().ToList() ?? [];
                var mi = names.IndexOf("msi");
                var at = mi >= 0 && mi < regs.Count ? regs[mi].Address : DtRefs.IsPciHost(info.Node) && regs.Count > 1 ? regs[^1].Address : regs[0].Address;
                if (!TryPlace("msi", () => Bus.MapMmio(new PhysAddr(at), 0x1000, data, new MmioAccessRules(AccessSizes.All, false, MmioViolation.RazWi), "in-controller-msi"), out status)) break;
                target = new DtMsiTarget(info, at, "in-controller MSI model (raises by data alone)") { DataTarget = data, Spi = line is null ? -1 : spi };
                status = target.Status;
                break;
            }
            case MsiControllerKind.GicV3Its or MsiControllerKind.GicV3PreIts or MsiControllerKind.GicV2m:
                status = regs.Count == 0 ? "no reg" : "no GIC model on this board";
                break;
            default:
                status = "MSI controller kind Doorbell does not model (" + info.KindName + ")";
                break;
        }
        if (target is not null) MsiTargets[info.Node] = target;
        Blocks.Add(new DtBlock(info.Node, info.KindName, @base, target is not null, status));
    }

    void PlaceHostBridge(FdtNode node)
    {
        var regs = DtAddress.Reg(node);
        var names = node.Property("reg-names")?.Strings() ?? [];
        var idx = names.ToList().FindIndex(n => n is "config" or "cfg" or "ecam");
        var (cfg, size) = regs.Count == 0 ? (0UL, 0UL) : regs[idx >= 0 && idx < regs.Count ? idx : 0];
        var host = new PciHost(Bus);
        var (b0, b1) = DtRefs.BusRange(node);
        // A generic ECAM window for the whole bus range at the config reg (the controller's own programming model does
        // not change isolation; its ID maps do).
        var full = (b1 - b0 + 1UL) << 20;
        var ok = false;
        var treeCfg = cfg;
        if (cfg != 0 && (Overlaps(cfg, full, node) || !TryPlace("ecam", () => Bus.MapMmio(new PhysAddr(cfg), full, host.Ecam,
                new MmioAccessRules(AccessSizes.All, true, MmioViolation.RazWi), "ecam"), out _)))
        {
            // the tree's config reg cannot hold a whole-range ECAM (a controller with its own config mechanism): the
            // window goes to a free place high in the address map, where nothing of the tree is
            cfg = 0;
            for (var i = 0UL; i < 64 && cfg == 0; i++)
            {
                var at = 0x6000_0000_0000UL + i * 0x1000_0000UL;
                if (!Overlaps(at, full) && TryPlace("ecam", () => Bus.MapMmio(new PhysAddr(at), full, host.Ecam,
                        new MmioAccessRules(AccessSizes.All, true, MmioViolation.RazWi), "ecam"), out _)) cfg = at;
            }
        }
        if (cfg != 0) ok = true;
        HostBridges[node] = host;
        if (ok) WireBridge(node, host, cfg, (int)b0, (int)b1);
        var status = !ok ? "generic root complex (ECAM window not placed: reg missing or overlapping)"
            : $"generic ECAM root complex, buses {b0:x2}–{b1:x2}" + (cfg != treeCfg ? $", ECAM at 0x{cfg:x} (the config reg is too small for it)" : "");
        Blocks.Add(new DtBlock(node, "PCIe host bridge", ok ? cfg : treeCfg, ok, status));
    }
}

/// <summary>reg decoding: (address, size) pairs translated to CPU physical addresses through the parents' ranges.</summary>
public static class DtAddress
{
    public static IReadOnlyList<(ulong Address, ulong Size)> Reg(FdtNode node)
    {
        ArgumentNullException.ThrowIfNull(node);
        var list = new List<(ulong, ulong)>();
        var p = node.Property("reg");
        if (p is null || node.Parent is null) return list;
        var ac = (int)Math.Min(node.Parent.CellsValue("#address-cells") ?? 2, 3);
        var sc = (int)Math.Min(node.Parent.CellsValue("#size-cells") ?? 1, 2);
        if (ac == 0 || ac + sc == 0) return list;
        var cells = p.Cells();
        for (var i = 0; i + ac + sc <= cells.Length && list.Count < 16; i += ac + sc)
        {
            var a = Read(cells, i, Math.Min(ac, 2), ac);
            var s = Read(cells, i + ac, sc, sc);
            if (Translate(node.Parent, a) is { } t && t < 1UL << 52) list.Add((t, s));
        }
        return list;
    }

    static ulong Read(uint[] cells, int at, int take, int width)
    {
        ulong v = 0;
        for (var k = width - take; k < width; k++) v = v << 32 | cells[at + k];
        return v;
    }

    /// <summary>Child bus address → parent address through `ranges`; empty or absent ranges are identity.</summary>
    static ulong? Translate(FdtNode bus, ulong address)
    {
        for (var depth = 0; bus.Parent is not null && depth < 64; bus = bus.Parent, depth++)
        {
            var r = bus.Property("ranges");
            if (r is null || r.Value.Length == 0) continue;
            var ca = (int)Math.Min(bus.CellsValue("#address-cells") ?? 2, 3);
            var cs = (int)Math.Min(bus.CellsValue("#size-cells") ?? 1, 2);
            var pa = (int)Math.Min(bus.Parent.CellsValue("#address-cells") ?? 2, 3);
            var cells = r.Cells();
            var stride = ca + pa + cs;
            if (stride == 0) return null;
            var hit = false;
            for (var i = 0; i + stride <= cells.Length; i += stride)
            {
                var child = Read(cells, i, Math.Min(ca, 2), ca);
                var parent = Read(cells, i + ca, Math.Min(pa, 2), pa);
                var size = Read(cells, i + ca + pa, cs, cs);
                if (address >= child && address - child < size) { address = parent + (address - child); hit = true; break; }
            }
            if (!hit) return null;
        }
        return address;
    }
}
