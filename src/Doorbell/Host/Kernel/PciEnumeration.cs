using Doorbell.Memory;

// PCI enumeration as a host kernel does it, through ECAM MMIO only (PCIe 4.0 §7.2.2): depth-first scan, bus numbers
// for bridges, BAR sizing and assignment from the 32-bit MMIO window, I/O BARs of root-bus functions from the host
// bridge's I/O window (PCI I/O addresses from 0x1000 up, as arm64 Linux's PCIBIOS_MIN_IO), bridge memory windows,
// memory (and, with an I/O BAR assigned, I/O) decode on, and ACS enabled on functions that have it (Linux
// pci_std_enable_acs: SV, RR, CR, UF). Known limits: I/O BARs behind bridges and expansion ROMs are not assigned
// (bridge I/O windows stay closed); prefetchable BARs go in the non-prefetchable window (legal, PCI-PCI Bridge 1.2
// §3.2.5.8); no resource reallocation.
namespace Doorbell.Host.Kernel;

/// <summary>What enumeration learned of one function (all read through ECAM).</summary>
public sealed class EnumeratedFunction
{
    public required int Bus { get; init; }
    public required int Device { get; init; }
    public required int Function { get; init; }
    public ushort Rid => (ushort)(Bus << 8 | Device << 3 | Function);
    public string Name => $"0000:{Bus:x2}:{Device:x2}.{Function}";
    public required ushort VendorId { get; init; }
    public required ushort DeviceId { get; init; }
    public required bool IsBridge { get; init; }
    public required bool MultiFunction { get; init; }
    /// <summary>PCIe capability offset, 0 for a conventional PCI function.</summary>
    public int PcieCap { get; internal set; }
    /// <summary>PCIe device/port type (PCIe 4.0 §7.5.3.2), -1 for conventional PCI.</summary>
    public int PortType { get; internal set; } = -1;
    public int AcsCap { get; internal set; }
    public ushort AcsCapabilities { get; internal set; }
    public ushort AcsControl { get; internal set; }
    /// <summary>The bridge above (null on the root bus).</summary>
    public EnumeratedFunction? Parent { get; init; }
    public int SecondaryBus { get; internal set; }
    /// <summary>BAR n: (PCI address, size, 64-bit, prefetchable, io); index 6 = ROM (unassigned).</summary>
    public (ulong Address, ulong Size, bool Is64, bool Prefetch, bool Io)[] Bars { get; } = new (ulong, ulong, bool, bool, bool)[7];
    public override string ToString() => Name;
}

/// <summary>The result of a scan, and the ECAM accessors the rest of the kernel uses.</summary>
public sealed class PciEnumeration
{
    readonly IMemoryView _bus;
    readonly ulong _ecam;
    readonly List<EnumeratedFunction> _fns = [];
    ulong _mmio, _mmioEnd, _high, _highEnd, _io = 0x1000, _ioEnd;
    int _lastBus;
    bool _keepBuses;

    PciEnumeration(IMemoryView bus, ulong ecam, ulong mmio, ulong mmioSize, ulong high, ulong highSize, ulong ioCpuBase, ulong ioSize)
    {
        IoCpuBase = ioCpuBase;
        _ioEnd = ioCpuBase == 0 ? 0 : ioSize;
        _bus = bus;
        _ecam = ecam;
        _mmio = mmio;
        _mmioEnd = mmio + mmioSize;
        _high = high;
        _highEnd = high + highSize;
    }

    public IReadOnlyList<EnumeratedFunction> Functions => _fns;
    /// <summary>Where PCI I/O address 0 appears in the CPU's physical space (the host bridge's I/O window; 0: none).</summary>
    public ulong IoCpuBase { get; }
    public ulong EcamBase => _ecam;

    public EnumeratedFunction? Find(string name) => _fns.FirstOrDefault(f => f.Name == name);

    public ulong ConfigAddress(ushort rid, int offset) => _ecam + ((ulong)rid << 12) + (ulong)offset;

    /// <summary>A config read through ECAM (1, 2 or 4 bytes).</summary>
    public uint Read(ushort rid, int offset, int size)
    {
        _bus.Read(new PhysAddr(ConfigAddress(rid, offset)), size, out var v, BusAttributes.Cpu);
        return (uint)v;
    }

    public void Write(ushort rid, int offset, int size, uint value) =>
        _bus.Write(new PhysAddr(ConfigAddress(rid, offset)), size, value, BusAttributes.Cpu);

    /// <summary>Scans from bus 0. BARs come from the 32-bit window [<paramref name="mmio"/>, +size); a 64-bit BAR of a
    /// root-bus function that window cannot hold (absent, as on ThunderX's ECAM, or full) comes from the 64-bit window
    /// [<paramref name="mmioHigh"/>, +size) (a host bridge's 64-bit range; bridges' non-prefetchable windows are 32-bit).
    /// I/O BARs come from PCI I/O space [0x1000, <paramref name="ioSize"/>), which the CPU reaches at
    /// <paramref name="ioCpuBase"/> + address (no window: I/O BARs stay unassigned).</summary>
    /// <param name="keepFirmwareBuses">Keep the bus numbers firmware left in bridges (Linux without
    /// PCI_REASSIGN_ALL_BUS, pci_scan_bridge_extend's first pass); otherwise number buses depth-first.</param>
    public static PciEnumeration Scan(IMemoryView bus, ulong ecam, ulong mmio, ulong mmioSize, ulong mmioHigh = 0, ulong mmioHighSize = 0,
        ulong ioCpuBase = 0, ulong ioSize = 0, bool keepFirmwareBuses = false)
    {
        var e = new PciEnumeration(bus, ecam, mmio, mmioSize, mmioHigh, mmioHighSize, ioCpuBase, ioSize) { _keepBuses = keepFirmwareBuses };
        e.ScanBus(0, null);
        return e;
    }

    static ushort Rid(int b, int d, int f) => (ushort)(b << 8 | d << 3 | f);

    void ScanBus(int busNo, EnumeratedFunction? parent)
    {
        for (var dev = 0; dev < 32; dev++)
        {
            var multi = false;
            for (var fn = 0; fn < 8; fn++)
            {
                if (fn > 0 && !multi) break;
                var rid = Rid(busNo, dev, fn);
                var id = Read(rid, 0, 4);
                if ((id & 0xFFFF) == 0xFFFF) { if (fn == 0) break; continue; }
                var header = Read(rid, 0x0E, 1);
                if (fn == 0) multi = (header & 0x80) != 0;
                var f = new EnumeratedFunction
                {
                    Bus = busNo, Device = dev, Function = fn, VendorId = (ushort)id, DeviceId = (ushort)(id >> 16),
                    IsBridge = (header & 0x7F) == 1, MultiFunction = multi, Parent = parent,
                };
                _fns.Add(f);
                FindCapabilities(f);
                if (f.AcsCap != 0)
                {
                    // pci_std_enable_acs: Source Validation, Request/Completion Redirect, Upstream Forwarding.
                    var want = (ushort)(f.AcsCapabilities & IommuGrouping.RequiredAcs);
                    Write(rid, f.AcsCap + 6, 2, want);
                    f.AcsControl = (ushort)Read(rid, f.AcsCap + 6, 2);
                }
                SizeBars(f, f.IsBridge ? 2 : 6);
                if (f.IsBridge) ScanBridge(f);
                var cmd = Read(rid, 0x04, 2) | 0x2; // memory space on (bus master stays for the driver to set)
                if (f.Bars.Any(b => b.Io && b.Address != 0)) cmd |= 0x1; // I/O space on when an I/O BAR was assigned
                if (f.IsBridge) cmd |= 0x4;        // bridges forward upstream DMA
                Write(rid, 0x04, 2, cmd);
            }
        }
    }

    void FindCapabilities(EnumeratedFunction f)
    {
        if ((Read(f.Rid, 0x06, 2) & 0x10) != 0)
        {
            var p = (int)Read(f.Rid, 0x34, 1) & 0xFC;
            for (var n = 0; n < 48 && p >= 0x40; n++) // bounded walk, (256-64)/4
            {
                var hdr = Read(f.Rid, p, 2);
                if ((hdr & 0xFF) == 0x10)
                {
                    f.PcieCap = p;
                    f.PortType = (int)(Read(f.Rid, p + 2, 2) >> 4 & 0xF);
                }
                p = (int)(hdr >> 8) & 0xFC;
            }
        }
        if (f.PcieCap == 0) return;
        var x = 0x100;
        for (var n = 0; n < 960 && x >= 0x100; n++)
        {
            var hdr = Read(f.Rid, x, 4);
            if (hdr == 0 || hdr == 0xFFFF_FFFF) break;
            if ((hdr & 0xFFFF) == 0x000D)
            {
                f.AcsCap = x;
                f.AcsCapabilities = (ushort)Read(f.Rid, x + 4, 2);
                f.AcsControl = (ushort)Read(f.Rid, x + 6, 2);
            }
            x = (int)(hdr >> 20) & 0xFFC;
        }
    }

    void SizeBars(EnumeratedFunction f, int count)
    {
        for (var i = 0; i < count; i++)
        {
            var off = 0x10 + i * 4;
            var orig = Read(f.Rid, off, 4);
            Write(f.Rid, off, 4, 0xFFFF_FFFF);
            var lo = Read(f.Rid, off, 4);
            Write(f.Rid, off, 4, orig);
            if (lo == 0) continue;
            if ((lo & 1) != 0)
            {
                // I/O BAR (PCI LB 3.0 §6.2.5.1): root-bus functions get space from the host bridge's I/O window.
                var ioSize = (ulong)(~(lo & ~3u) + 1) & 0xFFFF;
                ulong io = 0;
                if (ioSize != 0 && f.Parent is null && _ioEnd != 0)
                {
                    var a0 = (_io + ioSize - 1) & ~(ioSize - 1);
                    if (a0 + ioSize <= _ioEnd) { io = a0; _io = a0 + ioSize; Write(f.Rid, off, 4, (uint)io); }
                }
                f.Bars[i] = (io, ioSize, false, false, true);
                continue;
            }
            var is64 = (lo >> 1 & 3) == 2;
            var pf = (lo & 8) != 0;
            ulong mask = lo & ~0xFu;
            if (is64 && i + 1 < count)
            {
                var origHi = Read(f.Rid, off + 4, 4);
                Write(f.Rid, off + 4, 4, 0xFFFF_FFFF);
                var hi = Read(f.Rid, off + 4, 4);
                Write(f.Rid, off + 4, 4, origHi);
                mask |= (ulong)hi << 32;
            }
            else mask |= 0xFFFF_FFFF_0000_0000UL;
            var size = ~mask + 1;
            if (size == 0) continue;
            var a = (_mmio + size - 1) & ~(size - 1);
            if (a + size <= _mmioEnd && a + size > a) _mmio = a + size;
            else
            {
                var h = (_high + size - 1) & ~(size - 1);
                if (!is64 || f.Parent is not null || h + size > _highEnd || h + size < h) continue; // no window holds it: unassigned
                a = h;
                _high = h + size;
            }
            Write(f.Rid, off, 4, (uint)a);
            if (is64) Write(f.Rid, off + 4, 4, (uint)(a >> 32));
            f.Bars[i] = (a, size, is64, pf, false);
            if (is64) i++;
        }
    }

    void ScanBridge(EnumeratedFunction b)
    {
        var buses = Read(b.Rid, 0x18, 4);
        var fwSecondary = (int)(buses >> 8 & 0xFF);
        var fwSubordinate = (int)(buses >> 16 & 0xFF);
        var keep = _keepBuses && (buses & 0xFF) == b.Bus && fwSecondary > b.Bus && fwSubordinate >= fwSecondary && fwSecondary > _lastBus;
        var secondary = keep ? fwSecondary : ++_lastBus;
        b.SecondaryBus = secondary;
        // PRIMARY, SECONDARY, SUBORDINATE (0xFF while scanning below), PCI-PCI Bridge 1.2 §3.2.5.3-5
        if (!keep) Write(b.Rid, 0x18, 4, (Read(b.Rid, 0x18, 4) & 0xFF00_0000) | 0xFF_0000u | (uint)secondary << 8 | (uint)b.Bus);
        else _lastBus = secondary;
        _mmio = (_mmio + 0xF_FFFF) & ~0xF_FFFFUL;
        var start = _mmio;
        ScanBus(secondary, b);
        if (keep) _lastBus = Math.Max(_lastBus, fwSubordinate);
        else Write(b.Rid, 0x1A, 1, (uint)_lastBus);
        _mmio = (_mmio + 0xF_FFFF) & ~0xF_FFFFUL;
        if (_mmio > start)
        {
            Write(b.Rid, 0x20, 2, (uint)(start >> 16) & 0xFFF0);
            Write(b.Rid, 0x22, 2, (uint)((_mmio - 1) >> 16) & 0xFFF0);
        }
        else { Write(b.Rid, 0x20, 2, 0xFFF0); Write(b.Rid, 0x22, 2, 0); }
        Write(b.Rid, 0x24, 2, 0xFFF0); // prefetchable window closed
        Write(b.Rid, 0x26, 2, 0);
        Write(b.Rid, 0x1C, 2, 0x00F0); // I/O window closed
    }
}

/// <summary>
/// IOMMU group formation for PCI, following Linux's pci_device_group rules (facts: drivers/iommu/iommu.c,
/// drivers/pci/pci.c pci_acs_enabled): functions behind a conventional (PCIe-to-PCI) bridge alias to it; going up,
/// every bridge that is not ACS-isolated (SV, RR, CR, UF where implemented) merges everything below it; a
/// multi-function device whose functions lack ACS is one group.
/// </summary>
public static class IommuGrouping
{
    /// <summary>REQ_ACS_FLAGS: PCI_ACS_SV | PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_UF.</summary>
    public const ushort RequiredAcs = 0x01 | 0x04 | 0x08 | 0x10;
    const int PortRoot = 4, PortDownstream = 6, PortPcieToPci = 7, PortPciToPcie = 8;

    /// <summary>pci_acs_enabled(pdev, REQ_ACS_FLAGS).</summary>
    public static bool AcsEnabled(EnumeratedFunction f)
    {
        if (f.PortType < 0) return false; // conventional PCI: no ACS
        var needsAcs = f.PortType is PortRoot or PortDownstream || f.MultiFunction;
        if (!needsAcs) return true; // single-function endpoints and upstream ports: peer-to-peer is not possible below them
        if (f.AcsCap == 0) return false;
        var flags = (ushort)(RequiredAcs & f.AcsCapabilities); // pci_acs_flags_enabled: unimplemented controls are not required
        return (f.AcsControl & flags) == flags;
    }

    /// <summary>pci_acs_path_enabled(start, NULL): every bridge from <paramref name="start"/> up to the root is ACS-isolated.</summary>
    public static bool AcsPathEnabled(EnumeratedFunction start)
    {
        for (var b = start; b is not null; b = b.Parent)
            if (!AcsEnabled(b)) return false;
        return true;
    }

    static bool IsConventionalBridge(EnumeratedFunction b) => b.PortType == PortPcieToPci || b.PortType < 0;

    /// <summary>A key shared by exactly the functions that end up in one IOMMU group.</summary>
    public static string GroupKey(PciEnumeration pci, EnumeratedFunction f)
    {
        ArgumentNullException.ThrowIfNull(pci);
        ArgumentNullException.ThrowIfNull(f);
        var pdev = f;
        // DMA aliases: requests from below a PCIe-to-PCI bridge carry the bridge's ID (pci_for_each_dma_alias).
        for (var b = f.Parent; b is not null; b = b.Parent)
            if (IsConventionalBridge(b) && b.PortType != PortPciToPcie) pdev = b;
        // Upstream from the alias point while devices there are not isolated from us.
        for (var b = pdev.Parent; b is not null; b = b.Parent)
        {
            if (AcsPathEnabled(b)) break;
            pdev = b;
        }
        // Functions of one multi-function device without ACS share a group (get_pci_function_alias_group).
        if (pdev.MultiFunction && !AcsEnabled(pdev)) return $"slot:{pdev.Bus:x2}:{pdev.Device:x2}";
        return $"dev:{pdev.Rid:x4}";
    }
}
