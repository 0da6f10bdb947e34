using System.Buffers.Binary;
using Doorbell.Memory;

namespace Doorbell.Pci;

// Known limits: no expansion ROM, no SR-IOV/ARI, no VPD; conventional functions expose 256 bytes of config
// space (reads past it return all-ones), PCIe functions 4 KiB. Config writes never fail (writes to read-only
// bits are dropped, as the spec requires). Power state D3hot does not gate BAR decode.

/// <summary>What a BAR decodes (prefetchability is a separate attribute of a memory BAR).</summary>
public enum PciBarKind : byte { None = 0, Mem32 = 1, Mem64 = 2, Io = 4 }

/// <summary>PCIe capability device/port type (PCIe 4.0 §7.5.3.2).</summary>
public enum PciePortType : byte
{
    Endpoint = 0, LegacyEndpoint = 1, RootPort = 4, SwitchUpstream = 5, SwitchDownstream = 6,
    PcieToPciBridge = 7, RcIntegratedEndpoint = 9, RcEventCollector = 10,
}

/// <summary>One implemented BAR.</summary>
public readonly record struct PciBar(PciBarKind Kind, ulong Size, bool Prefetchable);

/// <summary>
/// A PCI function: its config space (bytes with write and write-1-to-clear masks, PCI LB 3.0 §6.1), BARs,
/// capabilities, and the interrupt/DMA plumbing its root complex provides. Devices derive from it and
/// override <see cref="BarRead"/>/<see cref="BarWrite"/>. All guest-driven paths return values, never throw.
/// </summary>
public class PciFunction
{
    readonly byte[] _cfg = new byte[4096];
    readonly byte[] _wmask = new byte[4096];
    readonly byte[] _w1c = new byte[4096];
    byte[]? _resetImage;
    readonly PciBar[] _bars = new PciBar[6];
    byte _lastCap;       // offset of the last standard capability (0 = none)
    int _lastExtCap;     // offset of the last extended capability (0 = none)
    int _nextCapFree = 0x40;
    int _nextExtFree = PciCfg.ExtCapStart;
    bool _intxLevel;

    public PciFunction(ushort vendorId, ushort deviceId, uint classCode, byte revision, bool bridge = false, string? name = null)
    {
        Name = name ?? $"{vendorId:x4}:{deviceId:x4}";
        IsBridge = bridge;
        Set16(PciCfg.VendorId, vendorId);
        Set16(PciCfg.DeviceId, deviceId);
        _cfg[PciCfg.RevisionId] = revision;
        _cfg[PciCfg.ClassProg] = (byte)classCode;
        Set16(PciCfg.ClassCode, (ushort)(classCode >> 8));
        _cfg[PciCfg.HeaderType] = (byte)(bridge ? 1 : 0);
        // COMMAND: I/O, memory, bus master, SERR, INTx disable are writable (PCI LB 3.0 §6.2.2); parity error
        // response is hardwired 0 (allowed for functions that do not check parity; QEMU does the same)
        SetMask16(PciCfg.Command, PciCfg.CmdIo | PciCfg.CmdMemory | PciCfg.CmdBusMaster | PciCfg.CmdSerr | PciCfg.CmdIntxDisable);
        SetW1c16(PciCfg.Status, PciCfg.StsW1cMask);
        _wmask[PciCfg.CacheLineSize] = 0xFF;
        _wmask[PciCfg.LatencyTimer] = 0xFF;
        _wmask[PciCfg.InterruptLine] = 0xFF;
        if (bridge)
        {
            _wmask[PciCfg.PrimaryBus] = _wmask[PciCfg.SecondaryBus] = _wmask[PciCfg.SubordinateBus] = 0xFF;
            // I/O window: 32-bit I/O addressing (low nibble 1), address bits [15:12] writable
            _cfg[PciCfg.IoBase] = _cfg[PciCfg.IoLimit] = 0x01;
            _wmask[PciCfg.IoBase] = _wmask[PciCfg.IoLimit] = 0xF0;
            SetMask16(PciCfg.IoBaseUpper, 0xFFFF); SetMask16(PciCfg.IoLimitUpper, 0xFFFF);
            SetW1c16(PciCfg.SecondaryStatus, PciCfg.StsW1cMask);
            SetMask16(PciCfg.MemoryBase, 0xFFF0); SetMask16(PciCfg.MemoryLimit, 0xFFF0);
            // prefetchable window: 64-bit (low nibble 1)
            Set16(PciCfg.PrefMemoryBase, 1); Set16(PciCfg.PrefMemoryLimit, 1);
            SetMask16(PciCfg.PrefMemoryBase, 0xFFF0); SetMask16(PciCfg.PrefMemoryLimit, 0xFFF0);
            SetMask32(PciCfg.PrefBaseUpper, 0xFFFF_FFFF); SetMask32(PciCfg.PrefLimitUpper, 0xFFFF_FFFF);
            SetMask16(PciCfg.BridgeControl, 0x0FFF & ~0x0080); // bit 6 = secondary bus reset
        }
    }

    public string Name { get; }
    public bool IsBridge { get; }
    public ushort VendorId => Get16(PciCfg.VendorId);
    public ushort DeviceIdValue => Get16(PciCfg.DeviceId);
    /// <summary>Size of the config space: 4 KiB with a PCIe capability, 256 bytes otherwise.</summary>
    public int ConfigSize => PcieCapOffset != 0 ? 4096 : 256;

    /// <summary>The bus this function sits on (set when attached).</summary>
    public PciBus? Bus { get; internal set; }
    public int Device { get; internal set; }
    public int Function { get; internal set; }
    /// <summary>The root complex this function belongs to (set when attached).</summary>
    public PciHost? Host => Bus?.Host;

    /// <summary>Requester ID from the bus number software programmed into the bridges above (PCIe 4.0 §2.2.6.2).</summary>
    public ushort RequesterId => PciCfg.Rid(Bus?.Number ?? 0, Device, Function);

    /// <summary>Where this function's DMA and MSI writes go (stamped with its IDs by the root complex).</summary>
    public IMemoryPort Dma { get; internal set; } = NullPort.Instance;
    /// <summary>The machine's trace, given by the root complex when attached (null when none).</summary>
    internal Trace? HostTrace;

    public int MsiCapOffset { get; private set; }
    public int MsixCapOffset { get; private set; }
    public int PcieCapOffset { get; private set; }
    public int PmCapOffset { get; private set; }
    public int AerCapOffset { get; private set; }
    public int AcsCapOffset { get; private set; }
    public MsixTable? Msix { get; private set; }

    // ---- raw config helpers (device side) ----
    public byte Get8(int o) => _cfg[o];
    public ushort Get16(int o) => BinaryPrimitives.ReadUInt16LittleEndian(_cfg.AsSpan(o));
    public uint Get32(int o) => BinaryPrimitives.ReadUInt32LittleEndian(_cfg.AsSpan(o));
    protected void Set8(int o, byte v) => _cfg[o] = v;
    protected void Set16(int o, ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(_cfg.AsSpan(o), v);
    protected void Set32(int o, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(_cfg.AsSpan(o), v);
    protected void SetMask8(int o, byte m) => _wmask[o] = m;
    protected void SetMask16(int o, ushort m) => BinaryPrimitives.WriteUInt16LittleEndian(_wmask.AsSpan(o), m);
    protected void SetMask32(int o, uint m) => BinaryPrimitives.WriteUInt32LittleEndian(_wmask.AsSpan(o), m);
    protected void SetW1c16(int o, ushort m) => BinaryPrimitives.WriteUInt16LittleEndian(_w1c.AsSpan(o), m);
    protected void SetW1c32(int o, uint m) => BinaryPrimitives.WriteUInt32LittleEndian(_w1c.AsSpan(o), m);

    public ushort CommandRegister => Get16(PciCfg.Command);
    public bool MemoryEnabled => (CommandRegister & PciCfg.CmdMemory) != 0;
    public bool IoEnabled => (CommandRegister & PciCfg.CmdIo) != 0;
    public bool BusMasterEnabled => (CommandRegister & PciCfg.CmdBusMaster) != 0;
    public bool IsMultiFunction => (_cfg[PciCfg.HeaderType] & 0x80) != 0;

    // ---- construction (board-building time; misuse throws) ----

    public void SetSubsystem(ushort vendor, ushort id)
    {
        if (IsBridge) throw new InvalidOperationException("bridges have no subsystem IDs in the header");
        Set16(PciCfg.SubsystemVendorId, vendor); Set16(PciCfg.SubsystemId, id);
    }

    /// <summary>INTx pin: 1 = INTA … 4 = INTD, 0 = none.</summary>
    public void SetInterruptPin(int pin)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)pin, 4u);
        _cfg[PciCfg.InterruptPin] = (byte)pin;
    }

    public int InterruptPin => _cfg[PciCfg.InterruptPin];

    /// <summary>Marks the function as part of a multi-function device (HEADER_TYPE bit 7).</summary>
    public void SetMultiFunction(bool on)
    {
        _cfg[PciCfg.HeaderType] = (byte)((_cfg[PciCfg.HeaderType] & 0x7F) | (on ? 0x80 : 0));
        if (_resetImage != null) _resetImage[PciCfg.HeaderType] = _cfg[PciCfg.HeaderType];
    }

    /// <summary>Declares a BAR (PCI LB 3.0 §6.2.5.1). Size is a power of two (≥ 16 for memory, ≥ 4 for I/O); a 64-bit BAR uses index+1 too.</summary>
    public void DefineBar(int index, PciBarKind kind, ulong size, bool prefetchable = false)
    {
        var maxBars = IsBridge ? 2 : 6;
        if ((uint)index >= (uint)maxBars || kind == PciBarKind.None) throw new ArgumentOutOfRangeException(nameof(index));
        if (!ulong.IsPow2(size) || size < (kind == PciBarKind.Io ? 4UL : 16UL) || (kind == PciBarKind.Io && size > 256) || (kind == PciBarKind.Mem32 && size > 1UL << 31))
            throw new ArgumentException($"bad BAR size 0x{size:x} for {kind}", nameof(size));
        if (kind == PciBarKind.Mem64 && index + 1 >= maxBars) throw new ArgumentOutOfRangeException(nameof(index), "64-bit BAR needs two slots");
        if (_bars[index].Kind != PciBarKind.None) throw new InvalidOperationException($"BAR{index} already defined");
        var o = PciCfg.Bar0 + 4 * index;
        _bars[index] = new PciBar(kind, size, prefetchable);
        switch (kind)
        {
            case PciBarKind.Io:
                Set32(o, PciCfg.BarIo);
                SetMask32(o, (uint)~(size - 1) & 0xFFFF_FFFC);
                break;
            case PciBarKind.Mem32:
                Set32(o, prefetchable ? PciCfg.BarPrefetch : 0);
                SetMask32(o, (uint)~(size - 1) & 0xFFFF_FFF0);
                break;
            case PciBarKind.Mem64:
                if (_bars[index + 1].Kind != PciBarKind.None) throw new InvalidOperationException($"BAR{index + 1} already defined");
                Set32(o, PciCfg.BarMem64 | (prefetchable ? PciCfg.BarPrefetch : 0));
                SetMask32(o, (uint)~(size - 1) & 0xFFFF_FFF0);
                SetMask32(o + 4, (uint)(~(size - 1) >> 32));
                break;
        }
    }

    public PciBar GetBar(int index) => (uint)index < 6 ? _bars[index] : default;

    /// <summary>The BAR's programmed base address (bus address), or 0 for an unimplemented BAR.</summary>
    public ulong BarAddress(int index)
    {
        var b = GetBar(index);
        var o = PciCfg.Bar0 + 4 * index;
        return b.Kind switch
        {
            PciBarKind.Io => Get32(o) & 0xFFFF_FFFC,
            PciBarKind.Mem32 => Get32(o) & 0xFFFF_FFF0,
            PciBarKind.Mem64 => (Get32(o) & 0xFFFF_FFF0UL) | ((ulong)Get32(o + 4) << 32),
            _ => 0,
        };
    }

    /// <summary>Links a standard capability of <paramref name="size"/> bytes (a device's vendor-specific or other capability) and returns its offset.</summary>
    protected int AddCap(byte id, int size)
    {
        var o = _nextCapFree;
        if (o + size > 0x100) throw new InvalidOperationException("standard capability space full");
        _nextCapFree = (o + size + 3) & ~3;
        _cfg[o] = id;
        _cfg[o + 1] = 0;
        if (_lastCap == 0) _cfg[PciCfg.CapabilitiesPointer] = (byte)o;
        else _cfg[_lastCap + 1] = (byte)o;
        _lastCap = (byte)o;
        Set16(PciCfg.Status, (ushort)(Get16(PciCfg.Status) | PciCfg.StsCapList));
        return o;
    }

    /// <summary>Links an extended capability (after a PCI Express capability) and returns its offset.</summary>
    protected int AddExtCap(ushort id, int version, int size)
    {
        if (PcieCapOffset == 0) throw new InvalidOperationException("extended capabilities need a PCI Express capability first");
        var o = _nextExtFree;
        if (o + size > 0x1000) throw new InvalidOperationException("extended capability space full");
        _nextExtFree = (o + size + 3) & ~3;
        // Extended capability header (PCIe 4.0 §7.6.3): ID[15:0], version[19:16], next[31:20]
        Set32(o, (uint)(id | (version << 16)));
        if (_lastExtCap != 0) Set32(_lastExtCap, (Get32(_lastExtCap) & 0x000F_FFFF) | ((uint)o << 20));
        _lastExtCap = o;
        return o;
    }

    /// <summary>MSI capability (PCI LB 3.0 §6.8.1): 1–32 vectors, 32/64-bit address, optional per-vector masking.</summary>
    public int AddMsi(int vectors, bool is64Bit, bool perVectorMask)
    {
        if (!int.IsPow2(vectors) || vectors > 32) throw new ArgumentOutOfRangeException(nameof(vectors));
        var size = 10 + (is64Bit ? 4 : 0) + (perVectorMask ? 10 : 0);
        var o = MsiCapOffset = AddCap(PciCfg.CapMsi, size);
        var mmc = (ushort)(int.Log2(vectors) << 1);
        Set16(o + 2, (ushort)(mmc | (is64Bit ? PciCfg.Msi64 : 0) | (perVectorMask ? PciCfg.MsiPerVectorMask : 0)));
        SetMask16(o + 2, PciCfg.MsiEnable | 0x70); // enable, multiple message enable
        SetMask32(o + 4, 0xFFFF_FFFC);
        if (is64Bit) SetMask32(o + 8, 0xFFFF_FFFF);
        var dataOff = o + (is64Bit ? 0x0C : 0x08);
        SetMask16(dataOff, 0xFFFF);
        if (perVectorMask) SetMask32(dataOff + 4, vectors == 32 ? 0xFFFF_FFFF : (1u << vectors) - 1);
        return o;
    }

    /// <summary>MSI-X capability (PCI LB 3.0 §6.8.2): table and PBA in BARs (which must be memory BARs already defined).</summary>
    public int AddMsix(int tableSize, int tableBar, uint tableOffset, int pbaBar, uint pbaOffset)
    {
        if (tableSize is < 1 or > 2048) throw new ArgumentOutOfRangeException(nameof(tableSize));
        if (_bars[tableBar].Kind is PciBarKind.None or PciBarKind.Io || _bars[pbaBar].Kind is PciBarKind.None or PciBarKind.Io)
            throw new InvalidOperationException("MSI-X table and PBA live in memory BARs");
        if ((tableOffset & 7) != 0 || (pbaOffset & 7) != 0) throw new ArgumentException("MSI-X offsets are QWORD aligned");
        if (tableOffset + (ulong)tableSize * 16 > _bars[tableBar].Size || pbaOffset + (ulong)((tableSize + 63) / 64 * 8) > _bars[pbaBar].Size)
            throw new ArgumentException("MSI-X table or PBA does not fit its BAR");
        var o = MsixCapOffset = AddCap(PciCfg.CapMsix, 12);
        Set16(o + 2, (ushort)(tableSize - 1));
        SetMask16(o + 2, PciCfg.MsixEnable | PciCfg.MsixFunctionMask);
        Set32(o + 4, tableOffset | (uint)tableBar);
        Set32(o + 8, pbaOffset | (uint)pbaBar);
        Msix = new MsixTable(this, tableSize, tableBar, tableOffset, pbaBar, pbaOffset);
        return o;
    }

    /// <summary>PCI Express capability v2 (PCIe 4.0 §7.5.3).</summary>
    public int AddPcie(PciePortType type, bool flr = false)
    {
        var o = PcieCapOffset = AddCap(PciCfg.CapPcie, PciCfg.PcieCapSize);
        var slot = type is PciePortType.RootPort or PciePortType.SwitchDownstream;
        Set16(o + PciCfg.PcieCaps, (ushort)(2 | ((int)type << 4) | (slot ? 1 << 8 : 0)));
        // DEVCAP: MPS 256 bytes supported (1), role-based error reporting (bit 15), FLR capable (bit 28)
        Set32(o + PciCfg.PcieDevCap, 1u | (1u << 15) | (flr ? PciCfg.DevCapFlr : 0));
        // DEVCTL: error-reporting enables [3:0], relaxed ordering 4, MPS [7:5], ext tag 8, phantom 9, aux 10,
        // no-snoop 11, MRRS [14:12] (reset 512 bytes = 2); bit 15 = bridge config retry / initiate FLR
        Set16(o + PciCfg.PcieDevCtl, 0x2010);
        SetMask16(o + PciCfg.PcieDevCtl, (ushort)(0x7FFF | (flr ? PciCfg.DevCtlInitiateFlr : 0)));
        SetW1c16(o + PciCfg.PcieDevSta, 0x000F);
        // LNKCAP: 2.5 GT/s, x1, port number 0; LNKSTA: 2.5 GT/s x1
        Set32(o + PciCfg.PcieLinkCap, 0x0000_0011);
        SetMask16(o + PciCfg.PcieLinkCtl, 0x01FB);
        Set16(o + PciCfg.PcieLinkSta, 0x0011);
        if (slot)
        {
            SetMask16(o + PciCfg.PcieSlotCtl, 0x1FFF);
            SetW1c16(o + PciCfg.PcieSlotSta, 0x011F);
            Set16(o + PciCfg.PcieSlotSta, 1 << 6); // presence detect state
        }
        if (type == PciePortType.RootPort) SetMask16(o + PciCfg.PcieRootCtl, 0x001F);
        SetMask16(o + PciCfg.PcieDevCtl2, 0x041F);
        return o;
    }

    /// <summary>Power Management capability v3 (PCI PM 1.2 §3.2).</summary>
    public int AddPowerManagement()
    {
        var o = PmCapOffset = AddCap(PciCfg.CapPm, 8);
        Set16(o + 2, 0x0003);                // PMC: version 3, no PME support
        Set16(o + 4, 0x0008);                // PMCSR: D0, No_Soft_Reset
        SetMask16(o + 4, 0x0103);            // PowerState[1:0], PME_En
        SetW1c16(o + 4, 0x8000);             // PME_Status
        return o;
    }

    /// <summary>Advanced Error Reporting extended capability v2 (PCIe 4.0 §7.8.4).</summary>
    public int AddAer()
    {
        var root = PortType == PciePortType.RootPort;
        var o = AerCapOffset = AddExtCap(PciCfg.ExtCapAer, 2, root ? 0x38 : 0x2C);
        SetW1c32(o + 0x04, 0x03FF_F030);     // uncorrectable error status
        SetMask32(o + 0x08, 0x03FF_F030);    // uncorrectable error mask
        Set32(o + 0x0C, 0x0006_2030);        // severity reset value (spec defaults)
        SetMask32(o + 0x0C, 0x03FF_F030);
        SetW1c32(o + 0x10, 0x0000_F1C1);     // correctable error status
        Set32(o + 0x14, 0x0000_6000);        // correctable mask reset (advisory non-fatal, internal)
        SetMask32(o + 0x14, 0x0000_F1C1);
        SetMask32(o + 0x18, 0x0000_0540);    // ECRC generation/check enables
        if (root) { SetMask32(o + 0x2C, 0x7); SetW1c32(o + 0x30, 0x7F); }
        return o;
    }

    /// <summary>ACS extended capability (PCIe 4.0 §7.7.8): the capability bits given; the matching control bits are writable.</summary>
    public int AddAcs(ushort capabilities)
    {
        var o = AcsCapOffset = AddExtCap(PciCfg.ExtCapAcs, 1, 8);
        Set16(o + 4, capabilities);
        SetMask16(o + 6, (ushort)(capabilities & 0x7F & ~PciCfg.AcsEgressControl));
        return o;
    }

    public PciePortType? PortType => PcieCapOffset == 0 ? null : (PciePortType)((Get16(PcieCapOffset + PciCfg.PcieCaps) >> 4) & 0xF);
    public bool FlrCapable => PcieCapOffset != 0 && (Get32(PcieCapOffset + PciCfg.PcieDevCap) & PciCfg.DevCapFlr) != 0;
    public ushort AcsCapabilities => AcsCapOffset == 0 ? (ushort)0 : Get16(AcsCapOffset + 4);
    public ushort AcsControl => AcsCapOffset == 0 ? (ushort)0 : Get16(AcsCapOffset + 6);

    /// <summary>Freezes the power-on config image (called when the function is attached to a bus).</summary>
    internal void Seal() => _resetImage ??= (byte[])_cfg.Clone();

    // ---- config access (software side, via ECAM) ----

    /// <summary>A config read of 1, 2 or 4 bytes at a naturally aligned offset.</summary>
    public uint ConfigRead(int offset, int size)
    {
        if (offset < 0 || offset + size > ConfigSize) return size == 4 ? 0xFFFF_FFFF : (1u << (8 * size)) - 1;
        return size switch { 1 => _cfg[offset], 2 => Get16(offset), _ => Get32(offset) };
    }

    /// <summary>A config write of 1, 2 or 4 bytes. Read-only bits keep their value; W1C bits clear where 1 is written.</summary>
    public void ConfigWrite(int offset, int size, uint value)
    {
        if (offset < 0 || offset + size > ConfigSize) return;
        var oldCommand = CommandRegister;
        var msiMaskBefore = MsiMaskBits;
        var msixCtlBefore = MsixCapOffset != 0 ? Get16(MsixCapOffset + 2) : (ushort)0;
        for (var i = 0; i < size; i++)
        {
            var o = offset + i;
            var b = (byte)(value >> (8 * i));
            _cfg[o] = (byte)((_cfg[o] & ~_wmask[o]) | (b & _wmask[o]));
            _cfg[o] &= (byte)~(b & _w1c[o]);
        }
        if (PcieCapOffset != 0 && (Get16(PcieCapOffset + PciCfg.PcieDevCtl) & PciCfg.DevCtlInitiateFlr) != 0)
        {
            FunctionLevelReset();
            return;
        }
        if (((oldCommand ^ CommandRegister) & PciCfg.CmdIntxDisable) != 0) UpdateIntx();
        if (MsiCapOffset != 0 && (msiMaskBefore & ~MsiMaskBits) != 0) MsiDeliverUnmasked();
        if (MsixCapOffset != 0 && msixCtlBefore != Get16(MsixCapOffset + 2)) Msix!.DeliverPending();
        Host?.ConfigChanged();
        OnConfigWritten(offset, size);
    }

    /// <summary>Function-level resets since power-on (what a reset observer, e.g. a test, checks).</summary>
    public int ResetCount { get; private set; }

    /// <summary>Resets config space to its power-on image and the device to its reset state (FLR, PCIe 4.0 §6.6.2).</summary>
    public void FunctionLevelReset()
    {
        ResetCount++;
        if (_resetImage != null) _resetImage.CopyTo(_cfg, 0);
        Msix?.Reset();
        _intxLevel = false;
        UpdateIntx();
        Host?.ConfigChanged();
        OnReset();
    }

    protected virtual void OnConfigWritten(int offset, int size) { }
    protected virtual void OnReset() { }

    // ---- BAR access (the root complex dispatches decoded MMIO here) ----

    internal BusStatus BarAccessRead(int bar, ulong offset, int size, out ulong value)
    {
        if (Msix is { } m && m.Claims(bar, offset, size, out var table)) return m.Read(table, bar, offset, size, out value);
        return BarRead(bar, offset, size, out value);
    }

    internal BusStatus BarAccessWrite(int bar, ulong offset, int size, ulong value)
    {
        if (Msix is { } m && m.Claims(bar, offset, size, out var table)) return m.Write(table, bar, offset, size, value);
        return BarWrite(bar, offset, size, value);
    }

    /// <summary>Device registers behind a BAR. Default: reads as zero, writes ignored.</summary>
    protected virtual BusStatus BarRead(int bar, ulong offset, int size, out ulong value) { value = 0; return BusStatus.Ok; }
    protected virtual BusStatus BarWrite(int bar, ulong offset, int size, ulong value) => BusStatus.Ok;

    // ---- MSI ----

    public bool MsiEnabled => MsiCapOffset != 0 && (Get16(MsiCapOffset + 2) & PciCfg.MsiEnable) != 0;
    bool Msi64 => (Get16(MsiCapOffset + 2) & PciCfg.Msi64) != 0;
    bool MsiPvm => (Get16(MsiCapOffset + 2) & PciCfg.MsiPerVectorMask) != 0;
    int MsiDataOffset => MsiCapOffset + (Msi64 ? 0x0C : 0x08);
    public ulong MsiAddress => MsiCapOffset == 0 ? 0 : Get32(MsiCapOffset + 4) | (Msi64 ? (ulong)Get32(MsiCapOffset + 8) << 32 : 0);
    public ushort MsiData => MsiCapOffset == 0 ? (ushort)0 : Get16(MsiDataOffset);
    /// <summary>Vectors software allocated (MME, PCI LB 3.0 §6.8.1.3).</summary>
    public int MsiAllocatedVectors => MsiCapOffset == 0 ? 0 : 1 << ((Get16(MsiCapOffset + 2) >> 4) & 7);
    uint MsiMaskBits => MsiCapOffset != 0 && MsiPvm ? Get32(MsiDataOffset + 4) : 0;
    public uint MsiPendingBits => MsiCapOffset != 0 && MsiPvm ? Get32(MsiDataOffset + 8) : 0;

    /// <summary>
    /// Signals MSI vector <paramref name="vector"/>: a 4-byte write of data (low bits replaced by the vector
    /// number) to the programmed address, through this function's DMA port. Masked vectors become pending.
    /// Returns the bus status of the write (Ok when nothing was sent because MSI is disabled or masked).
    /// </summary>
    public BusStatus SignalMsi(int vector)
    {
        if (!MsiEnabled || (uint)vector >= (uint)MsiAllocatedVectors) return BusStatus.Ok;
        if (MsiPvm && (MsiMaskBits & (1u << vector)) != 0)
        {
            Set32(MsiDataOffset + 8, MsiPendingBits | (1u << vector));
            return BusStatus.Ok;
        }
        return SendMsi(MsiAddress, (uint)((MsiData & ~(MsiAllocatedVectors - 1)) | vector));
    }

    void MsiDeliverUnmasked()
    {
        if (!MsiEnabled) return;
        var deliver = MsiPendingBits & ~MsiMaskBits;
        for (var v = 0; v < 32 && deliver != 0; v++)
        {
            if ((deliver & (1u << v)) == 0) continue;
            deliver &= ~(1u << v);
            Set32(MsiDataOffset + 8, MsiPendingBits & ~(1u << v));
            SignalMsi(v);
        }
    }

    internal BusStatus SendMsi(ulong address, uint data)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, data);
        if (HostTrace is { } t && t.IsOn(TraceCategory.PciMsi))
        {
            var token = t.BeginFlow(TraceCategory.PciMsi, FlowKind.Msi, ToString(), $"RID 0x{RequesterId:x4} MSI write 0x{data:x} to 0x{address:x}");
            var s = Dma.Write(address, b, BusAttributes.Cpu);
            t.EndFlow(token);
            return s;
        }
        return Dma.Write(address, b, BusAttributes.Cpu);
    }

    /// <summary>Signals MSI-X vector <paramref name="vector"/> (pending in the PBA when masked).</summary>
    public BusStatus SignalMsix(int vector) => Msix?.Signal(vector) ?? BusStatus.Ok;

    /// <summary>Signals whichever of MSI-X, MSI or INTx software enabled (MSI-X first), vector 0 for INTx.</summary>
    public void SignalInterrupt(int vector)
    {
        if (Msix is { Enabled: true }) SignalMsix(vector);
        else if (MsiEnabled) SignalMsi(vector);
        else SetIntx(true);
    }

    // ---- INTx ----

    /// <summary>The device's INTx level. STATUS.INTERRUPT follows it; the wire is driven unless COMMAND.INTX_DISABLE.</summary>
    public void SetIntx(bool level)
    {
        _intxLevel = level;
        var sts = Get16(PciCfg.Status);
        Set16(PciCfg.Status, (ushort)(level ? sts | PciCfg.StsInterrupt : sts & ~PciCfg.StsInterrupt));
        UpdateIntx();
    }

    bool _intxDriven;
    public bool IntxAsserted => _intxDriven;

    void UpdateIntx()
    {
        var drive = _intxLevel && InterruptPin != 0 && (CommandRegister & PciCfg.CmdIntxDisable) == 0;
        if (drive == _intxDriven) return;
        _intxDriven = drive;
        Host?.IntxChanged(this, drive);
    }

    sealed class NullPort : IMemoryPort
    {
        public static readonly NullPort Instance = new();
        public BusStatus Read(ulong address, Span<byte> destination, in BusAttributes attributes) => BusStatus.DecodeError;
        public BusStatus Write(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes) => BusStatus.DecodeError;
    }

    public override string ToString() => $"{PciCfg.Bdf(RequesterId)} {Name}";
}

/// <summary>
/// MSI-X table and PBA (PCI LB 3.0 §6.8.2): 16-byte entries {address lo, address hi, data, vector control},
/// vectors reset masked; the PBA is read-only. Accesses are DWORD or QWORD; others are RAZ/WI.
/// </summary>
public sealed class MsixTable
{
    readonly PciFunction _fn;
    readonly byte[] _table;
    readonly ulong[] _pba;

    internal MsixTable(PciFunction fn, int size, int tableBar, uint tableOffset, int pbaBar, uint pbaOffset)
    {
        _fn = fn; Size = size; TableBar = tableBar; TableOffset = tableOffset; PbaBar = pbaBar; PbaOffset = pbaOffset;
        _table = new byte[size * PciCfg.MsixEntrySize];
        _pba = new ulong[(size + 63) / 64];
        Reset();
    }

    public int Size { get; }
    public int TableBar { get; }
    public uint TableOffset { get; }
    public int PbaBar { get; }
    public uint PbaOffset { get; }

    ushort Control => _fn.Get16(_fn.MsixCapOffset + 2);
    public bool Enabled => (Control & PciCfg.MsixEnable) != 0;
    public bool FunctionMasked => (Control & PciCfg.MsixFunctionMask) != 0;
    public bool VectorMasked(int v) => (_table[v * 16 + 12] & 1) != 0;
    public bool Pending(int v) => (_pba[v >> 6] & (1UL << (v & 63))) != 0;
    public ulong EntryAddress(int v) => BinaryPrimitives.ReadUInt64LittleEndian(_table.AsSpan(v * 16));
    public uint EntryData(int v) => BinaryPrimitives.ReadUInt32LittleEndian(_table.AsSpan(v * 16 + 8));

    internal void Reset()
    {
        Array.Clear(_table);
        Array.Clear(_pba);
        for (var v = 0; v < Size; v++) _table[v * 16 + 12] = 1; // vector control: masked
    }

    internal bool Claims(int bar, ulong offset, int size, out bool table)
    {
        table = bar == TableBar && offset >= TableOffset && offset + (ulong)size <= TableOffset + (ulong)_table.Length;
        if (table) return true;
        return bar == PbaBar && offset >= PbaOffset && offset + (ulong)size <= PbaOffset + (ulong)_pba.Length * 8;
    }

    void Misaligned(ulong offset, int size) =>
        _fn.Host?.Report("PCI LB 3.0 §6.8.2 (MSI-X table/PBA accesses are aligned DWORD or QWORD)", $"{_fn} {size}-byte access at BAR offset 0x{offset:x}: RAZ/WI");

    internal BusStatus Read(bool table, int bar, ulong offset, int size, out ulong value)
    {
        value = 0;
        if (size is not (4 or 8) || (offset & (ulong)(size - 1)) != 0) { Misaligned(offset, size); return BusStatus.Ok; }
        if (table)
        {
            var o = (int)(offset - TableOffset);
            value = size == 8 ? BinaryPrimitives.ReadUInt64LittleEndian(_table.AsSpan(o)) : BinaryPrimitives.ReadUInt32LittleEndian(_table.AsSpan(o));
        }
        else
        {
            var o = (int)(offset - PbaOffset);
            var q = _pba[o >> 3];
            value = size == 8 ? q : (uint)(q >> (8 * (o & 4)));
        }
        return BusStatus.Ok;
    }

    internal BusStatus Write(bool table, int bar, ulong offset, int size, ulong value)
    {
        if (size is not (4 or 8) || (offset & (ulong)(size - 1)) != 0) { Misaligned(offset, size); return BusStatus.Ok; }
        if (!table) return BusStatus.Ok; // PBA is RO
        var o = (int)(offset - TableOffset);
        if (size == 8) BinaryPrimitives.WriteUInt64LittleEndian(_table.AsSpan(o), value);
        else BinaryPrimitives.WriteUInt32LittleEndian(_table.AsSpan(o), (uint)value);
        // vector control: only the mask bit is defined; the rest is reserved (reads zero)
        var v = o / 16;
        _table[v * 16 + 12] &= 1; _table[v * 16 + 13] = _table[v * 16 + 14] = _table[v * 16 + 15] = 0;
        if (!VectorMasked(v) && Pending(v)) DeliverPending();
        return BusStatus.Ok;
    }

    /// <summary>Sends the message of a vector, or sets its pending bit when masked (by vector or function).</summary>
    public BusStatus Signal(int v)
    {
        if ((uint)v >= (uint)Size || !Enabled) return BusStatus.Ok;
        if (FunctionMasked || VectorMasked(v))
        {
            _pba[v >> 6] |= 1UL << (v & 63);
            return BusStatus.Ok;
        }
        return _fn.SendMsi(EntryAddress(v), EntryData(v));
    }

    /// <summary>Delivers every pending vector that is no longer masked (bounded by the table size).</summary>
    internal void DeliverPending()
    {
        if (!Enabled || FunctionMasked) return;
        for (var v = 0; v < Size; v++)
        {
            if (!Pending(v) || VectorMasked(v)) continue;
            _pba[v >> 6] &= ~(1UL << (v & 63));
            _fn.SendMsi(EntryAddress(v), EntryData(v));
        }
    }
}

/// <summary>
/// The port a PCI function masters through (QEMU's PCIDevice bus_master_as): its DMA and MSI writes. Each
/// transaction carries the DeviceID msi-map gives for the function's current requester ID and, when the platform has
/// an IOMMU, enters it at the iommu-map StreamID. A function without bus mastering (its own or a bridge's) gets an
/// Unsupported Request (DecodeError). The root complex resolves the route when it changes (<see cref="Stale"/>), so a
/// transaction reads nothing of the root complex.
/// </summary>
public sealed class PciDmaPort : IMemoryPort
{
    readonly PciHost _host;
    readonly PciFunction _fn;
    // What the function's config space and the bridges above it say, read again after the root complex marks it stale.
    bool _cachedMaster;
    bool _cachedOk;
    IMemoryPort _cachedPort = null!;
    BusAttributes _cachedAttr;

    internal PciDmaPort(PciHost host, PciFunction fn) { _host = host; _fn = fn; }

    internal PciFunction Function => _fn;
    /// <summary>Set by the root complex when a route may have changed; the next transaction re-resolves it.</summary>
    internal bool Stale = true;

    void Refresh()
    {
        _cachedMaster = PciHost.MayMaster(_fn);
        _cachedOk = _host.TryRoute(_fn.RequesterId, out _cachedPort, out _cachedAttr);
        Stale = false;
    }

    public BusStatus Read(ulong address, Span<byte> destination, in BusAttributes attributes)
    {
        if (_fn.HostTrace is { } t && t.IsOn(TraceCategory.PciDma)) return Traced(t, address, destination, default, false);
        if (Stale) Refresh();
        if (!_cachedMaster) return NotMastering();
        if (!_cachedOk) return Unmapped();
        return _cachedPort.Read(address, destination, _cachedAttr);
    }

    public BusStatus Write(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes)
    {
        if (_fn.HostTrace is { } t && t.IsOn(TraceCategory.PciDma)) return Traced(t, address, default, source, true);
        if (Stale) Refresh();
        if (!_cachedMaster) return NotMastering();
        if (!_cachedOk) return Unmapped();
        return _cachedPort.Write(address, source, _cachedAttr);
    }

    // A traced transaction: one flow from the function through the IOMMU and interrupt controller models.
    BusStatus Traced(Trace t, ulong address, Span<byte> rd, ReadOnlySpan<byte> wr, bool write)
    {
        var src = _fn.ToString();
        var token = t.BeginFlow(TraceCategory.PciDma, FlowKind.Dma, src, $"RID 0x{_fn.RequesterId:x4} DMA {(write ? "write" : "read")} 0x{address:x} ({(write ? wr.Length : rd.Length)} bytes)");
        if (Stale) Refresh();
        BusStatus s;
        if (!_cachedMaster) s = NotMastering();
        else if (!_cachedOk) s = Unmapped();
        else s = write ? _cachedPort.Write(address, wr, _cachedAttr) : _cachedPort.Read(address, rd, _cachedAttr);
        if (s != BusStatus.Ok) t.Emit(TraceCategory.PciDma, src, $"DMA {(write ? "write" : "read")} 0x{address:x} completed {s}");
        t.EndFlow(token);
        return s;
    }

    BusStatus NotMastering()
    {
        _host.Report("PCIe 4.0 §7.5.1.1.3 (Bus Master Enable gates upstream requests)", $"{_fn} issued DMA/MSI without bus mastering on its path: dropped");
        return BusStatus.DecodeError;
    }

    BusStatus Unmapped()
    {
        _host.Report("DT pci-iommu.txt / pci-msi.txt (every requester ID needs a map entry)", $"{_fn} RID 0x{_fn.RequesterId:x4} has no iommu-map/msi-map entry: aborted");
        return BusStatus.DecodeError;
    }
}
