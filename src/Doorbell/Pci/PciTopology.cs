using Doorbell.Memory;

namespace Doorbell.Pci;

// Known limits: one PCI segment; bus 0 is the host bridge's root bus (its number is fixed); a bridge forwards
// config cycles to [secondary, subordinate] and memory to its memory and prefetchable windows when its
// COMMAND.MEM is set, and upstream DMA when its COMMAND.BME is set. Overlapping BARs: the lower one keeps the range, the other is not
// decoded (CONSTRAINED, docs/deviations.md). No hot-plug. No peer-to-peer redirect modelling beyond the ACS bits.

/// <summary>A PCI bus segment: up to 32 devices × 8 functions.</summary>
public sealed class PciBus
{
    readonly PciFunction?[] _slots = new PciFunction?[256];

    internal PciBus(PciHost host, PciBridge? parent) { Host = host; Parent = parent; }

    public PciHost Host { get; }
    /// <summary>The bridge whose secondary side this bus is (null for the root bus).</summary>
    public PciBridge? Parent { get; }
    /// <summary>The bus number: 0 for the root bus, else the SECONDARY_BUS value software wrote into the parent bridge.</summary>
    public int Number => Parent == null ? 0 : Parent.Get8(PciCfg.SecondaryBus);

    public PciFunction? this[int devfn] => (uint)devfn < 256 ? _slots[devfn] : null;

    public IEnumerable<PciFunction> Functions
    {
        get { foreach (var f in _slots) if (f != null) yield return f; }
    }

    /// <summary>Attaches a function at device.function (board construction; misuse throws).</summary>
    public T Attach<T>(T function, int device, int fn = 0) where T : PciFunction
    {
        ArgumentNullException.ThrowIfNull(function);
        if ((uint)device > 31 || (uint)fn > 7) throw new ArgumentOutOfRangeException(nameof(device));
        if (Parent != null && Parent.PortType is PciePortType.RootPort or PciePortType.SwitchDownstream && device != 0)
            throw new ArgumentException("a PCIe downstream port's link has only device 0");
        var devfn = (device << 3) | fn;
        if (_slots[devfn] != null) throw new InvalidOperationException($"slot {device:x2}.{fn} already taken");
        if (function.Bus != null) throw new InvalidOperationException("function already attached");
        _slots[devfn] = function;
        function.Bus = this;
        function.Device = device;
        function.Function = fn;
        function.Dma = Host.AttachPort(function);
        if (fn != 0 && _slots[device << 3] is { } f0) f0.SetMultiFunction(true);
        if (fn != 0) function.SetMultiFunction(true);
        function.Seal();
        if (fn == 0)
            for (var i = 1; i < 8; i++)
                if (_slots[(device << 3) | i] != null) { function.SetMultiFunction(true); break; }
        Host.ConfigChanged();
        return function;
    }

    public int FirstFreeDevice()
    {
        for (var d = Parent == null ? 1 : 0; d < 32; d++) if (_slots[d << 3] == null) return d;
        return -1;
    }
}

/// <summary>A PCI-PCI bridge (type-1 header): a PCIe root port, a switch port, or a conventional bridge.</summary>
public sealed class PciBridge : PciFunction
{
    public PciBridge(ushort vendorId, ushort deviceId, PciePortType type, string name, bool acs = true)
        : base(vendorId, deviceId, 0x060400, 0, bridge: true, name: name)
    {
        AddPcie(type);
        AddPowerManagement();
        AddAer();
        if (acs && type is PciePortType.RootPort or PciePortType.SwitchDownstream)
            AddAcs(PciCfg.AcsSourceValidation | PciCfg.AcsTranslationBlocking | PciCfg.AcsRequestRedirect
                   | PciCfg.AcsCompletionRedirect | PciCfg.AcsUpstreamForwarding);
        SetInterruptPin(1);
    }

    PciBus? _secondary;
    /// <summary>The bus on the secondary side (created on attach).</summary>
    public PciBus Secondary => _secondary ??= new PciBus(Host ?? throw new InvalidOperationException("attach the bridge first"), this);

    public int SecondaryBusNumber => Get8(PciCfg.SecondaryBus);
    public int SubordinateBusNumber => Get8(PciCfg.SubordinateBus);

    /// <summary>True when a config cycle for <paramref name="bus"/> is forwarded through this bridge.</summary>
    public bool Routes(int bus) => SecondaryBusNumber != 0 && bus >= SecondaryBusNumber && bus <= SubordinateBusNumber;

    /// <summary>Memory window [base, limit] (PCI-PCI Bridge 1.2 §3.2.5.8): 1 MiB granular; empty when base &gt; limit.</summary>
    public (ulong Base, ulong Limit) MemoryWindow =>
        ((ulong)(Get16(PciCfg.MemoryBase) & 0xFFF0) << 16, ((ulong)(Get16(PciCfg.MemoryLimit) & 0xFFF0) << 16) | 0xF_FFFF);

    /// <summary>Prefetchable window (64-bit, §3.2.5.9).</summary>
    public (ulong Base, ulong Limit) PrefetchableWindow =>
        (((ulong)(Get16(PciCfg.PrefMemoryBase) & 0xFFF0) << 16) | ((ulong)Get32(PciCfg.PrefBaseUpper) << 32),
         ((ulong)(Get16(PciCfg.PrefMemoryLimit) & 0xFFF0) << 16 | 0xF_FFFF) | ((ulong)Get32(PciCfg.PrefLimitUpper) << 32));

    /// <summary>I/O window (32-bit I/O addressing, §3.2.5.6), 4 KiB granular.</summary>
    public (ulong Base, ulong Limit) IoWindow =>
        (((ulong)(Get8(PciCfg.IoBase) & 0xF0) << 8) | ((ulong)Get16(PciCfg.IoBaseUpper) << 16),
         ((ulong)(Get8(PciCfg.IoLimit) & 0xF0) << 8 | 0xFFF) | ((ulong)Get16(PciCfg.IoLimitUpper) << 16));

    /// <summary>True when a downstream memory access to [a, a+len) is forwarded through this bridge.</summary>
    public bool ForwardsMemory(ulong a, ulong len)
    {
        if (!MemoryEnabled) return false;
        var (mb, ml) = MemoryWindow;
        if (mb <= ml && a >= mb && a + len - 1 <= ml) return true;
        var (pb, pl) = PrefetchableWindow;
        return pb <= pl && a >= pb && a + len - 1 <= pl;
    }

    public bool ForwardsIo(ulong a, ulong len)
    {
        if (!IoEnabled) return false;
        var (b, l) = IoWindow;
        return b <= l && a >= b && a + len - 1 <= l;
    }
}

/// <summary>
/// The PCIe root complex (QEMU's gpex): ECAM config access (PCIe 4.0 §7.2.2: bus[27:20], device[19:15],
/// function[14:12], register[11:0]), BAR decode for the MMIO and I/O windows, INTx swizzling to wired lines,
/// and the per-function DMA ports that stamp requester-derived IDs (msi-map → DeviceID, iommu-map → StreamID)
/// and route through the IOMMU when the platform has one.
/// </summary>
public sealed class PciHost
{
    readonly PciBus _root;
    bool _dirty = true;
    // decode table (rebuilt after config changes; lookups allocate nothing)
    ulong[] _decStart = [];
    ulong[] _decEnd = [];
    PciFunction[] _decFn = [];
    int[] _decBar = [];
    ulong[] _ioStart = [];
    ulong[] _ioEnd = [];
    PciFunction[] _ioFn = [];
    int[] _ioBar = [];
    readonly int[] _intxCount = new int[4];
    readonly Dictionary<uint, IMemoryPort> _streamPorts = [];

    public PciHost(IMemoryPort upstream, IIommuUpstream? iommu = null, IdMap? iommuMap = null, IdMap? msiMap = null)
    {
        Upstream = upstream ?? throw new ArgumentNullException(nameof(upstream));
        Iommu = iommu;
        IommuMap = iommuMap ?? IdMap.Identity;
        MsiMap = msiMap ?? IdMap.Identity;
        _root = new PciBus(this, null);
    }

    /// <summary>Strict-mode findings (what hardware tolerates silently), each with the rule broken.</summary>
    public Doorbell.Tracing.StrictMonitor? Strict { get; set; }

    internal void Report(string rule, string message) => Strict?.Report("pci", rule, message);

    /// <summary>The machine's trace (categories pci_*), when the board gave one; every attached function holds it too.</summary>
    public Trace? Trace
    {
        get => _trace;
        set
        {
            _trace = value;
            foreach (var p in _ports) p.Function.HostTrace = value;
        }
    }
    Trace? _trace;
    readonly List<PciDmaPort> _ports = [];

    /// <summary>Gives a newly attached function its bus-master port and the machine's trace.</summary>
    internal PciDmaPort AttachPort(PciFunction function)
    {
        var p = new PciDmaPort(this, function);
        _ports.Add(p);
        function.HostTrace = _trace;
        return p;
    }

    /// <summary>The system bus DMA reaches when there is no IOMMU.</summary>
    public IMemoryPort Upstream { get; }
    public IIommuUpstream? Iommu { get; private set; }
    public IdMap IommuMap { get; private set; }
    public IdMap MsiMap { get; private set; }
    public PciBus RootBus => _root;
    /// <summary>The four INTx wires at the root (INTA..INTD after swizzling); null entries are unconnected.</summary>
    public IInterruptLine?[] IntxLines { get; } = new IInterruptLine?[4];
    /// <summary>Rule for the root bus: which wire slot S pin P (0 = INTA) raises. Default: (P + S) % 4 (qemu-virt).</summary>
    public Func<int, int, int> RootSwizzle { get; set; } = (slot, pin) => (pin + slot) & 3;

    /// <summary>Sets (or replaces, before any DMA) the IOMMU and the id maps.</summary>
    public void ConnectIommu(IIommuUpstream? iommu, IdMap? iommuMap = null)
    {
        Iommu = iommu;
        if (iommuMap != null) IommuMap = iommuMap;
        _streamPorts.Clear();
        InvalidateRoutes();
    }

    public void SetMsiMap(IdMap map)
    {
        MsiMap = map ?? throw new ArgumentNullException(nameof(map));
        InvalidateRoutes();
    }

    /// <summary>
    /// Called whenever the IOMMU, an id map or any config space changes (bus numbers, Bus Master Enable): every
    /// function's bus-master port re-resolves its route and bus-mastering state before its next transaction, never
    /// per transaction (QEMU toggles a function's bus-master alias region when its command register changes).
    /// </summary>
    void InvalidateRoutes()
    {
        foreach (var p in _ports) p.Stale = true;
    }

    internal void ConfigChanged()
    {
        _dirty = true;
        InvalidateRoutes();
    }

    /// <summary>Every attached function, depth-first from the root bus.</summary>
    public IEnumerable<PciFunction> AllFunctions()
    {
        var stack = new Stack<PciBus>();
        stack.Push(_root);
        while (stack.Count > 0)
        {
            var bus = stack.Pop();
            foreach (var f in bus.Functions)
            {
                yield return f;
                if (f is PciBridge b) stack.Push(b.Secondary);
            }
        }
    }

    /// <summary>Finds the function software addresses as bus:device.function (config routing through bridges).</summary>
    public PciFunction? Find(int bus, int device, int fn)
    {
        var b = _root;
        for (var depth = 0; depth < 256; depth++)
        {
            if (b.Number == bus) return b[(device << 3) | fn] is { } f && (fn == 0 || b[device << 3] != null) ? f : null;
            PciBus? next = null;
            foreach (var f in b.Functions)
                if (f is PciBridge br && br.Routes(bus)) { next = br.Secondary; break; }
            if (next == null) return null;
            b = next;
        }
        return null;
    }

    public PciFunction? FindByRid(ushort rid) => Find(rid >> 8, (rid >> 3) & 0x1F, rid & 7);

    // ---- ECAM ----

    /// <summary>ECAM region handler: map it at the ECAM base (256 buses × 1 MiB).</summary>
    public IMmioHandler Ecam => _ecam ??= new EcamHandler(this);
    IMmioHandler? _ecam;

    public uint ConfigRead(int bus, int device, int fn, int reg, int size)
    {
        var f = Find(bus, device, fn);
        if (f == null) return size == 4 ? 0xFFFF_FFFF : (1u << (8 * size)) - 1; // master abort: all ones
        return f.ConfigRead(reg, size);
    }

    public void ConfigWrite(int bus, int device, int fn, int reg, int size, uint value) =>
        Find(bus, device, fn)?.ConfigWrite(reg, size, value);

    sealed class EcamHandler(PciHost host) : IMmioHandler
    {
        /// <summary>A configuration read returns bytes of config space and nothing else (<see cref="PciFunction.ConfigRead"/>).</summary>
        public bool ReadsDeferNothing => true;

        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
        {
            if (size == 8)
            {
                var lo = Read4(offset); var hi = Read4(offset + 4);
                value = lo | ((ulong)hi << 32);
                return BusStatus.Ok;
            }
            value = host.ConfigRead((int)(offset >> 20) & 0xFF, (int)(offset >> 15) & 0x1F, (int)(offset >> 12) & 7, (int)(offset & 0xFFF), size);
            return BusStatus.Ok;
        }

        uint Read4(ulong o) => host.ConfigRead((int)(o >> 20) & 0xFF, (int)(o >> 15) & 0x1F, (int)(o >> 12) & 7, (int)(o & 0xFFF), 4);

        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
        {
            if (size == 8)
            {
                Write(offset, 4, (uint)value, attributes);
                return Write(offset + 4, 4, value >> 32, attributes);
            }
            host.ConfigWrite((int)(offset >> 20) & 0xFF, (int)(offset >> 15) & 0x1F, (int)(offset >> 12) & 7, (int)(offset & 0xFFF), size, (uint)value);
            return BusStatus.Ok;
        }
    }

    // ---- BAR decode ----

    /// <summary>
    /// A handler for a CPU window onto PCI memory space: CPU address = window base + offset maps to PCI bus
    /// address <paramref name="pciBase"/> + offset (qemu-virt windows are identity-mapped).
    /// </summary>
    public IMmioHandler MemoryWindow(ulong pciBase) => new WindowHandler(this, pciBase, io: false);
    public IMmioHandler IoWindow(ulong pciBase = 0) => new WindowHandler(this, pciBase, io: true);

    void Rebuild()
    {
        var mem = new List<(ulong S, ulong E, PciFunction F, int B)>();
        var io = new List<(ulong S, ulong E, PciFunction F, int B)>();
        foreach (var f in AllFunctions())
        {
            for (var i = 0; i < 6; i++)
            {
                var bar = f.GetBar(i);
                if (bar.Kind == PciBarKind.None) continue;
                var a = f.BarAddress(i);
                if (a + bar.Size < a) continue;
                if (bar.Kind == PciBarKind.Io)
                {
                    if (f.IoEnabled && UpstreamForwards(f, a, bar.Size, io: true)) io.Add((a, a + bar.Size, f, i));
                }
                else if (f.MemoryEnabled && UpstreamForwards(f, a, bar.Size, io: false)) mem.Add((a, a + bar.Size, f, i));
            }
        }
        mem.Sort((x, y) => x.S.CompareTo(y.S));
        // Overlap is CONSTRAINED: the lower BAR keeps the range; a BAR overlapping one below it is not decoded.
        for (var i = 1; i < mem.Count; i++)
        {
            if (mem[i].S >= mem[i - 1].E) continue;
            Report("PCI LB 3.0 §6.2.5.1 (BARs must not overlap)", $"{mem[i].F} BAR{mem[i].B} at 0x{mem[i].S:x} overlaps {mem[i - 1].F} BAR{mem[i - 1].B}: not decoded");
            mem.RemoveAt(i--);
        }
        io.Sort((x, y) => x.S.CompareTo(y.S));
        _decStart = [.. mem.Select(m => m.S)]; _decEnd = [.. mem.Select(m => m.E)]; _decFn = [.. mem.Select(m => m.F)]; _decBar = [.. mem.Select(m => m.B)];
        _ioStart = [.. io.Select(m => m.S)]; _ioEnd = [.. io.Select(m => m.E)]; _ioFn = [.. io.Select(m => m.F)]; _ioBar = [.. io.Select(m => m.B)];
        _dirty = false;
    }

    static bool UpstreamForwards(PciFunction f, ulong a, ulong len, bool io)
    {
        for (var bus = f.Bus; bus?.Parent is { } br; bus = br.Bus)
            if (io ? !br.ForwardsIo(a, len) : !br.ForwardsMemory(a, len)) return false;
        return true;
    }

    /// <summary>Which function and BAR decode a PCI memory address (after COMMAND and bridge windows), or null.</summary>
    public (PciFunction Function, int Bar, ulong Offset)? DecodeMemory(ulong pciAddress)
    {
        var i = Lookup(pciAddress, io: false);
        return i < 0 ? null : (_decFn[i], _decBar[i], pciAddress - _decStart[i]);
    }

    int Lookup(ulong a, bool io)
    {
        if (_dirty) Rebuild();
        var starts = io ? _ioStart : _decStart;
        var ends = io ? _ioEnd : _decEnd;
        int lo = 0, hi = starts.Length - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            if (starts[mid] <= a) lo = mid + 1; else hi = mid - 1;
        }
        return hi >= 0 && a < ends[hi] ? hi : -1;
    }

    sealed class WindowHandler(PciHost host, ulong pciBase, bool io) : IMmioHandler
    {
        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
        {
            var a = pciBase + offset;
            var i = host.Lookup(a, io);
            // Unclaimed: Unsupported Request; the root complex completes CPU reads with all ones (PCIe 4.0 §2.3.2)
            if (i < 0 || a + (ulong)size > (io ? host._ioEnd : host._decEnd)[i])
            {
                value = size == 8 ? ulong.MaxValue : (1UL << (8 * size)) - 1;
                return BusStatus.Ok;
            }
            var s = io ? host._ioFn[i].BarAccessRead(host._ioBar[i], a - host._ioStart[i], size, out value)
                       : host._decFn[i].BarAccessRead(host._decBar[i], a - host._decStart[i], size, out value);
            if (size < 8) value &= (1UL << (8 * size)) - 1;
            return s;
        }

        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
        {
            var a = pciBase + offset;
            var i = host.Lookup(a, io);
            if (i < 0 || a + (ulong)size > (io ? host._ioEnd : host._decEnd)[i]) return BusStatus.Ok; // dropped
            return io ? host._ioFn[i].BarAccessWrite(host._ioBar[i], a - host._ioStart[i], size, value)
                      : host._decFn[i].BarAccessWrite(host._decBar[i], a - host._decStart[i], size, value);
        }
    }

    // ---- INTx ----

    internal void IntxChanged(PciFunction f, bool asserted)
    {
        // Swizzle up through bridges (PCI-PCI Bridge 1.2 §9.1): pin' = (pin + device) % 4 at each level.
        var pin = f.InterruptPin - 1;
        var dev = f.Device;
        var bus = f.Bus;
        for (var depth = 0; bus?.Parent is { } br && depth < 256; depth++)
        {
            pin = (pin + dev) & 3;
            dev = br.Device;
            bus = br.Bus;
        }
        var line = RootSwizzle(dev, pin) & 3;
        var before = _intxCount[line] > 0;
        _intxCount[line] += asserted ? 1 : -1;
        var after = _intxCount[line] > 0;
        if (before != after) IntxLines[line]?.SetLevel(after);
    }

    // ---- DMA ----

    /// <summary>Resolves the port a requester's transactions enter (the IOMMU's for its StreamID, or the bus).</summary>
    internal bool TryRoute(ushort rid, out IMemoryPort port, out BusAttributes attributes)
    {
        attributes = BusAttributes.Cpu;
        port = Upstream;
        if (!MsiMap.TryMap(rid, out var deviceId)) return false;
        attributes = BusAttributes.FromDevice(deviceId);
        if (Iommu == null) return true;
        if (!IommuMap.TryMap(rid, out var sid)) return false;
        if (!_streamPorts.TryGetValue(sid, out var p))
        {
            p = Iommu.CreateStreamPort(sid);
            _streamPorts[sid] = p;
        }
        port = p;
        return true;
    }

    /// <summary>Upstream forwarding needs BME on the function and on every bridge above it (PCI-PCI Bridge 1.2 §3.2.2.1).</summary>
    internal static bool MayMaster(PciFunction f)
    {
        if (!f.BusMasterEnabled) return false;
        for (var bus = f.Bus; bus?.Parent is { } br; bus = br.Bus)
            if (!br.BusMasterEnabled) return false;
        return true;
    }
}
