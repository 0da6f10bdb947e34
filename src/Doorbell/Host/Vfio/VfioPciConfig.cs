using System.Buffers.Binary;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Pci;

// vfio-pci config-space virtualization (rules: shared/reference/vfio-semantics.md §2, from Linux
// drivers/vfio/pci/vfio_pci_config.c). One owner byte per config byte (0 = header, cap ID, 0xFF = gap with raw
// passthrough), per-bit virt/write permissions, a virtual copy (vconfig) filled from hardware at open.
// Known limits: VPD accesses are virtual only (no pci_read_vpd); VC/REBAR/DPA/TPH lengths use the simple forms
// (docs/deviations.md); no VF (SR-IOV) specifics.
namespace Doorbell.Host.Vfio;

internal sealed class VfioPciConfig
{
    // Owner markers (vfio_pci_priv.h PCI_CAP_ID_INVALID / INVALID_VIRT).
    public const byte Gap = 0xFF, VirtOnly = 0xFE, Basic = 0x00;

    // PCI config offsets and bits (include/uapi/linux/pci_regs.h).
    public const int Command = 0x04, Status = 0x06, Bar0 = 0x10, Rom = 0x30, CapPtr = 0x34, IntLine = 0x3C, IntPin = 0x3D;
    public const ushort CmdIo = 0x1, CmdMemory = 0x2, CmdMaster = 0x4, CmdIntxDisable = 0x400;
    public const ushort StatusInterrupt = 0x08, StatusCapList = 0x10;
    public const byte CapPm = 0x01, CapAgp = 0x02, CapVpd = 0x03, CapMsi = 0x05, CapPcix = 0x07, CapHt = 0x08, CapVndr = 0x09,
        CapExp = 0x10, CapMsix = 0x11, CapSata = 0x12, CapAf = 0x13, CapIdMax = 0x15;
    public const ushort ExtErr = 0x01, ExtVc = 0x02, ExtDsn = 0x03, ExtPwr = 0x04, ExtMfvc = 0x08, ExtVc9 = 0x09, ExtVndr = 0x0B,
        ExtAcs = 0x0D, ExtAri = 0x0E, ExtAts = 0x0F, ExtSriov = 0x10, ExtMcast = 0x12, ExtPri = 0x13, ExtRebar = 0x15, ExtDpa = 0x16,
        ExtTph = 0x17, ExtLtr = 0x18, ExtPasid = 0x1B, ExtDvsec = 0x23, ExtIdMax = 0x2E;
    public const ushort MsiFlagsEnable = 0x1, MsiFlagsQmask = 0xE, MsiFlagsQsize = 0x70, MsiFlags64 = 0x80, MsiFlagsMaskBit = 0x100;

    readonly IVfioPciFunction _fn;
    readonly int _size;
    readonly byte[] _map, _virt, _write, _vconfig;
    readonly ushort[] _capStart; // owning capability's start offset, for caps
    readonly bool[] _rawWrite; // owner capability takes raw writes (VNDR, DVSEC)

    public VfioPciConfig(IVfioPciFunction fn)
    {
        _fn = fn;
        _size = fn.ConfigSize;
        _map = new byte[_size];
        _virt = new byte[_size];
        _write = new byte[_size];
        _vconfig = new byte[_size];
        _capStart = new ushort[_size];
        _rawWrite = new bool[_size];
    }

    public int Size => _size;
    public int MsiCap { get; private set; }
    public int MsixCap { get; private set; }
    public int ExpCap { get; private set; }
    public int PmCap { get; private set; }
    public int AfCap { get; private set; }
    public bool BarDirty { get; set; } = true;
    /// <summary>log2 of the MSI vectors enabled through SET_IRQS (vdev->msi_qmax).</summary>
    public int MsiQmax { get; set; }
    public bool VirqDisabled { get; private set; }
    public byte OwnerAt(int pos) => _map[pos];
    public ReadOnlySpan<byte> Virtual => _vconfig;

    /// <summary>Hooks the device gives the config layer.</summary>
    public Func<bool> IsMsiEnabled { get; set; } = () => false;
    public Action<bool> OnVirqDisabledChanged { get; set; } = _ => { };
    public Action OnFunctionReset { get; set; } = () => { };
    public Action<int> OnPowerState { get; set; } = _ => { };

    uint HwRead(int pos, int n) => _fn.ReadConfig(pos, n);
    void HwWrite(int pos, int n, uint v) => _fn.WriteConfig(pos, n, v);

    void Fill(int pos, int len)
    {
        for (var i = 0; i < len && pos + i < _size; i++) _vconfig[pos + i] = (byte)HwRead(pos + i, 1);
    }

    void Perm(int pos, int len, uint virt, uint write)
    {
        for (var i = 0; i < len && pos + i < _size; i++)
        {
            _virt[pos + i] = (byte)(virt >> (8 * i));
            _write[pos + i] = (byte)(write >> (8 * i));
        }
    }

    ushort V16(int pos) => BinaryPrimitives.ReadUInt16LittleEndian(_vconfig.AsSpan(pos));
    void V16(int pos, ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(_vconfig.AsSpan(pos), v);
    uint V32(int pos) => BinaryPrimitives.ReadUInt32LittleEndian(_vconfig.AsSpan(pos));
    void V32(int pos, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(_vconfig.AsSpan(pos), v);

    /// <summary>vfio_config_init: header permissions, capability chain rewrite (hidden caps relinked).</summary>
    public void Init(bool noIntx)
    {
        Array.Fill(_map, Gap);
        Array.Clear(_virt);
        Array.Clear(_write);
        Array.Clear(_vconfig);
        Array.Clear(_rawWrite);
        Fill(0, 64);
        for (var i = 0; i < 64; i++) _map[i] = Basic;
        // init_pci_cap_basic_perm
        Perm(0x00, 2, 0xFFFF, 0); Perm(0x02, 2, 0xFFFF, 0);          // vendor, device: virt RO
        Perm(Command, 2, CmdIntxDisable, 0xFFFF);                   // only INTX_DISABLE virtual
        Perm(Status, 2, StatusCapList, 0);
        Perm(0x0C, 1, 0, 0xFF); Perm(0x0D, 1, 0, 0xFF); Perm(0x0F, 1, 0, 0xFF); // cache line, latency, BIST
        for (var b = 0; b < 6; b++) Perm(Bar0 + 4 * b, 4, 0xFFFF_FFFF, 0xFFFF_FFFF);
        Perm(Rom, 4, 0xFFFF_FFFF, 0xFFFF_FFFF);
        Perm(CapPtr, 1, 0xFF, 0);
        Perm(IntLine, 1, 0xFF, 0xFF);
        Perm(IntPin, 1, 0xFF, 0);
        if (noIntx) _vconfig[IntPin] = 0;
        BarDirty = true;
        VirqDisabled = false;
        MsiQmax = 0;
        MsiCap = MsixCap = ExpCap = PmCap = AfCap = 0;
        InitCaps();
        InitExtCaps();
    }

    int StdCapLength(byte id, int pos)
    {
        switch (id)
        {
            case CapPm: return 8;
            case CapAgp: return 12;
            case CapVpd: return 8;
            case CapMsix: return 12;
            case CapAf: return 6;
            case CapMsi:
                {
                    var f = HwRead(pos + 2, 2);
                    var len = 10;
                    if ((f & MsiFlags64) != 0) len += 4;
                    if ((f & MsiFlagsMaskBit) != 0) len += 10;
                    return len;
                }
            case CapPcix: return ((HwRead(pos + 2, 2) >> 12) & 3) != 0 ? 24 : 8;
            case CapHt: return (HwRead(pos + 3, 1) & 0xE0) == 0 ? 28 : 24;
            case CapVndr: return (int)HwRead(pos + 2, 1);
            case CapSata: return (HwRead(pos + 4, 1) & 0xF) == 0xF ? 16 : 8;
            case CapExp:
                {
                    var f = HwRead(pos + 2, 2);
                    var rcEnd = ((f >> 4) & 0xF) == 0x9;
                    return (f & 0xF) >= 2 ? (rcEnd ? 0x2C : 0x3C) : (rcEnd ? 0x0C : 0x14);
                }
            default: return 0; // hidden: SLOTID, CHSWP, DBG, CCRC, SHPC, SSVID, AGP3, SECDEV, EA, FPB, NULL, > MAX
        }
    }

    void InitCaps()
    {
        if ((V16(Status) & StatusCapList) == 0) return;
        var prev = CapPtr;
        var pos = _vconfig[CapPtr] & 0xFC;
        var caps = 0;
        for (var loops = (256 - 64) / 4; pos != 0 && loops > 0; loops--)
        {
            var id = (byte)HwRead(pos, 1);
            var next = (int)HwRead(pos + 1, 1) & 0xFC;
            if (pos < 0x40) break; // a pointer into the header ends the walk
            var len = id <= CapIdMax ? StdCapLength(id, pos) : 0;
            if (len == 0 || pos + len > 256)
            {
                _vconfig[prev] = (byte)next; // hidden: relink
                pos = next;
                continue;
            }
            for (var i = 0; i < len; i++) _map[pos + i] = id;
            var rounded = (len + 3) & ~3;
            for (var i = 0; i < rounded && pos + i < 256; i++) _capStart[pos + i] = (ushort)pos;
            Fill(pos, rounded);
            Perm(pos, rounded, 0, 0);
            Perm(pos, 2, 0xFFFF, 0); // ID and NEXT come from vconfig (direct read)
            StdCapPerms(id, pos, len);
            prev = pos + 1;
            pos = next;
            caps++;
        }
        _vconfig[prev] = 0;
        if (caps == 0) V16(Status, (ushort)(V16(Status) & ~StatusCapList));
    }

    void StdCapPerms(byte id, int pos, int len)
    {
        switch (id)
        {
            case CapPm:
                PmCap = pos;
                Perm(pos + 2, 2, 0xF800, 0);
                V16(pos + 2, (ushort)(V16(pos + 2) & ~0xF800)); // PME support cleared
                Perm(pos + 4, 4, 0x8100, ~0x8103u);
                V16(pos + 4, (ushort)(V16(pos + 4) & ~0x8100));
                break;
            case CapVpd:
                Perm(pos + 2, 2, 0xFFFF, 0xFFFF);
                Perm(pos + 4, 4, 0xFFFF_FFFF, 0xFFFF_FFFF);
                break;
            case CapPcix:
                Perm(pos + 2, 2, 0, 0xFFFF);
                if (len >= 12) Perm(pos + 8, 4, 0, 0xFFFF_FFFF);
                break;
            case CapMsi:
                {
                    MsiCap = pos;
                    var f = V16(pos + 2);
                    Perm(pos + 2, 1, 0xFF, 0xFF);
                    Perm(pos + 4, 4, 0xFFFF_FFFF, 0xFFFF_FFFF);
                    var is64 = (f & MsiFlags64) != 0;
                    if (is64) Perm(pos + 8, 4, 0xFFFF_FFFF, 0xFFFF_FFFF);
                    var data = pos + (is64 ? 12 : 8);
                    Perm(data, 2, 0xFFFF, 0xFFFF);
                    if ((f & MsiFlagsMaskBit) != 0)
                    {
                        var mask = pos + (is64 ? 16 : 12);
                        Perm(mask, 4, 0, 0xFFFF_FFFF);
                        Perm(mask + 4, 4, 0, 0xFFFF_FFFF);
                    }
                    break;
                }
            case CapMsix: MsixCap = pos; break; // direct read, writes dropped
            case CapExp:
                ExpCap = pos;
                Perm(pos + 8, 2, 0x8000 | 0x00E0 | 0x7000, ~0x0200u & 0xFFFF); // DEVCTL: FLR|PAYLOAD|READRQ virt; all but PHANTOM writable
                if (len > 0x28) Perm(pos + 0x28, 2, 0, ~0x0020u & 0xFFFF);       // DEVCTL2: all but ARI writable
                V16(pos + 8, (ushort)(V16(pos + 8) & ~0x8000));
                break;
            case CapAf:
                AfCap = pos;
                Perm(pos + 4, 1, 0x01, 0x01);
                _vconfig[pos + 4] &= 0xFE;
                break;
            case CapVndr:
                for (var i = 0; i < len; i++) _rawWrite[pos + i] = true;
                break;
            default: break; // AGP, HT, SATA: direct read, no write
        }
    }

    int ExtCapLength(ushort id, int pos)
    {
        switch (id)
        {
            case ExtErr: return 0x2C; // PCI_ERR_ROOT_COMMAND
            case ExtDsn: return 12;
            case ExtPwr: return 16;
            case ExtAri: return 8;
            case ExtAts: return 8;
            case ExtSriov: return 0x40;
            case ExtMcast: return 0x28;
            case ExtPri: return 16;
            case ExtLtr: return 8;
            case ExtPasid: return 8;
            case ExtAcs: return 8;
            case ExtVc or ExtVc9 or ExtMfvc: return 0x10 + 0x0C * (int)((HwRead(pos + 4, 4) & 7) + 1);
            case ExtRebar: return 4 + 8 * (int)Math.Max(1, (HwRead(pos + 8, 4) >> 5) & 7);
            case ExtDpa: return 16 + (int)((HwRead(pos + 4, 4) & 0x1F) + 1);
            case ExtTph: return 12;
            case ExtVndr or ExtDvsec: return (int)(HwRead(pos + 4, 4) >> 20);
            default: return 0; // hidden: RCLD, RCILC, RCEC, RCRB, CAC, MRIOV, AMD_XXX, SECPCI, PMUX, unlisted, > MAX
        }
    }

    void InitExtCaps()
    {
        if (_size <= 256) return;
        var epos = 0x100;
        var prev = -1;
        var ecaps = 0;
        for (var loops = (_size - 256) / 4; loops > 0; loops--)
        {
            var header = HwRead(epos, 4);
            var id = (ushort)(header & 0xFFFF);
            var next = (int)(header >> 20) & 0xFFC;
            var len = id <= ExtIdMax ? ExtCapLength(id, epos) : 0;
            var hidden = false;
            if (len == 0 || epos + len > _size)
            {
                if (prev >= 0)
                {
                    V32(prev, (V32(prev) & ~(0xFFCu << 20)) | ((uint)next << 20));
                    epos = next;
                    if (epos < 0x100) break;
                    continue;
                }
                len = 4;
                hidden = true;
            }
            for (var i = 0; i < len; i++) _map[epos + i] = (byte)Math.Min(id, (ushort)0xFD);
            var rounded = (len + 3) & ~3;
            for (var i = 0; i < rounded && epos + i < _size; i++) _capStart[epos + i] = (ushort)epos;
            Fill(epos, rounded);
            Perm(epos, rounded, 0, 0);
            Perm(epos, 4, 0xFFFF_FFFF, 0); // header dword from vconfig
            if (hidden) V32(epos, V32(epos) & (0xFFCu << 20));
            else
            {
                ecaps++;
                ExtCapPerms(id, epos, len);
            }
            prev = epos;
            epos = next;
            if (epos < 0x100) break;
        }
        if (ecaps == 0) V32(0x100, 0);
    }

    void ExtCapPerms(ushort id, int pos, int len)
    {
        switch (id)
        {
            case ExtErr:
                {
                    const uint uncor = 0x1 | 0x10 | 0x20 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000 | 0x40000 | 0x80000 |
                                       0x100000 | 0x200000 | 0x400000 | 0x800000 | 0x1000000 | 0x2000000;
                    const uint cor = 0x1 | 0x40 | 0x80 | 0x100 | 0x1000 | 0x2000 | 0x4000 | 0x8000;
                    Perm(pos + 0x04, 4, 0, uncor); Perm(pos + 0x08, 4, 0, uncor); Perm(pos + 0x0C, 4, 0, uncor);
                    Perm(pos + 0x10, 4, 0, cor); Perm(pos + 0x14, 4, 0, cor);
                    Perm(pos + 0x18, 4, 0, 0x40 | 0x100);
                    break;
                }
            case ExtPwr: Perm(pos + 4, 1, 0, 0xFF); break;
            case ExtVndr or ExtDvsec:
                for (var i = 0; i < len; i++) _rawWrite[pos + i] = true;
                break;
            default: break;
        }
    }

    // ------------------------------------------------------------------ access
    /// <summary>Config region read: -EFAULT out of range, else the byte count.</summary>
    public int Read(int pos, Span<byte> buf)
    {
        if (pos < 0 || pos >= _size || pos + buf.Length > _size) return -14;
        var done = 0;
        while (done < buf.Length)
        {
            var p = pos + done;
            var n = Chunk(p, buf.Length - done);
            var v = ReadChunk(p, n);
            for (var i = 0; i < n; i++) buf[done + i] = (byte)(v >> (8 * i));
            done += n;
        }
        return done;
    }

    public int Write(int pos, ReadOnlySpan<byte> buf)
    {
        if (pos < 0 || pos >= _size || pos + buf.Length > _size) return -14;
        var done = 0;
        while (done < buf.Length)
        {
            var p = pos + done;
            var n = Chunk(p, buf.Length - done);
            uint v = 0;
            for (var i = 0; i < n; i++) v |= (uint)buf[done + i] << (8 * i);
            WriteChunk(p, n, v);
            done += n;
        }
        return done;
    }

    static int Chunk(int pos, int count) => count >= 4 && pos % 4 == 0 ? 4 : count >= 2 && pos % 2 == 0 ? 2 : 1;

    uint Mask(byte[] arr, int pos, int n)
    {
        uint m = 0;
        for (var i = 0; i < n; i++) m |= (uint)arr[pos + i] << (8 * i);
        return m;
    }

    uint VRead(int pos, int n)
    {
        uint m = 0;
        for (var i = 0; i < n; i++) m |= (uint)_vconfig[pos + i] << (8 * i);
        return m;
    }

    void VWrite(int pos, int n, uint v)
    {
        for (var i = 0; i < n; i++) _vconfig[pos + i] = (byte)(v >> (8 * i));
    }

    uint ReadChunk(int pos, int n)
    {
        var owner = _map[pos];
        if (owner == Gap) return HwRead(pos, n);
        if (owner == VirtOnly) return VRead(pos, n);
        if (pos < 64)
        {
            if (BarDirty && Overlaps(pos, n, Bar0, 24 + 0) || BarDirty && Overlaps(pos, n, Rom, 4)) BarFixup();
        }
        else if (pos < 256 && owner == CapMsi && MsiCap != 0 && Overlaps(pos, n, MsiCap + 2, 1))
        {
            var f = V16(MsiCap + 2);
            V16(MsiCap + 2, (ushort)((f & ~MsiFlagsQmask) | (MsiQmax << 1)));
        }
        var full = n == 4 ? 0xFFFF_FFFFu : (1u << (8 * n)) - 1;
        var virt = Mask(_virt, pos, n);
        var phys = virt == full ? 0 : HwRead(pos, n);
        return (phys & ~virt | VRead(pos, n) & virt) & full;
    }

    static bool Overlaps(int pos, int n, int start, int len) => pos < start + len && start < pos + n;

    void WriteChunk(int pos, int n, uint val)
    {
        var owner = _map[pos];
        if (owner == Gap) { HwWrite(pos, n, val); return; }
        if (owner == VirtOnly) { VWrite(pos, n, val); return; }
        if (_rawWrite[pos]) { HwWrite(pos, n, val); return; }

        var oldCmd = V16(Command);
        var oldPhysCmd = pos < 64 && Overlaps(pos, n, Command, 2) ? (ushort)HwRead(Command, 2) : (ushort)0;
        var oldReadrq = ExpCap != 0 ? V16(ExpCap + 8) & 0x7000 : 0;

        var write = Mask(_write, pos, n);
        if (write == 0) return; // silently dropped
        var virt = Mask(_virt, pos, n);
        var wv = write & virt;
        if (wv != 0) VWrite(pos, n, VRead(pos, n) & ~wv | val & wv);
        var wp = write & ~virt;
        if (wp != 0)
        {
            var phys = HwRead(pos, n);
            HwWrite(pos, n, phys & ~wp | val & wp);
        }

        if (pos < 64)
        {
            if (Overlaps(pos, n, Bar0, 24) || Overlaps(pos, n, Rom, 4)) BarDirty = true;
            if (Overlaps(pos, n, Command, 2)) CommandWritten(oldCmd, oldPhysCmd);
            return;
        }
        var start = _capStart[pos];
        if (start == MsiCap && MsiCap != 0 && Overlaps(pos, n, MsiCap + 2, 1)) MsiFlagsWritten();
        else if (start == ExpCap && ExpCap != 0 && Overlaps(pos, n, ExpCap + 8, 2)) DevctlWritten(oldReadrq);
        else if (start == AfCap && AfCap != 0 && Overlaps(pos, n, AfCap + 4, 1)) AfCtrlWritten();
        else if (start == PmCap && PmCap != 0 && pos <= PmCap + 4 && pos + n > PmCap + 4) OnPowerState((int)(val >> (8 * (PmCap + 4 - pos))) & 3);
    }

    void CommandWritten(ushort oldVirtCmd, ushort oldPhysCmd)
    {
        var newPhys = (ushort)HwRead(Command, 2);
        // Virtual MEM/IO enable tracking: re-enabling what we believe is on but hardware lost (backdoor reset)
        // restores the BARs first.
        var virtMemIo = oldVirtCmd & (CmdMemory | CmdIo);
        if ((newPhys & (CmdMemory | CmdIo)) != 0 && virtMemIo != 0 && (oldPhysCmd & (CmdMemory | CmdIo)) == 0) RestoreBars?.Invoke();
        var cmd = V16(Command);
        cmd = (ushort)((cmd & ~(CmdMemory | CmdIo)) | (newPhys & (CmdMemory | CmdIo)));
        V16(Command, cmd);
        var disabled = (cmd & CmdIntxDisable) != 0;
        if (disabled != VirqDisabled)
        {
            VirqDisabled = disabled;
            OnVirqDisabledChanged(disabled);
        }
    }

    public Action? RestoreBars { get; set; }

    void MsiFlagsWritten()
    {
        var flags = V16(MsiCap + 2);
        if (!IsMsiEnabled()) flags = (ushort)(flags & ~MsiFlagsEnable);
        if (((flags & MsiFlagsQsize) >> 4) > MsiQmax) flags = (ushort)((flags & ~MsiFlagsQsize) | (MsiQmax << 4));
        V16(MsiCap + 2, flags);
        HwWrite(MsiCap + 2, 2, flags);
    }

    void DevctlWritten(int oldReadrq)
    {
        var ctl = V16(ExpCap + 8);
        if ((ctl & 0x8000) != 0)
        {
            V16(ExpCap + 8, (ushort)(ctl & ~0x8000));
            if ((HwRead(ExpCap + 4, 4) & 0x1000_0000) != 0) OnFunctionReset();
            ctl = V16(ExpCap + 8);
        }
        if ((ctl & 0x7000) != oldReadrq)
        {
            // MRRS goes to hardware, never below the physical MPS.
            var mps = (int)(HwRead(ExpCap + 8, 2) >> 5) & 7;
            var rq = Math.Max((ctl & 0x7000) >> 12, mps);
            var phys = HwRead(ExpCap + 8, 2);
            HwWrite(ExpCap + 8, 2, (uint)(phys & ~0x7000u | (uint)rq << 12));
        }
    }

    void AfCtrlWritten()
    {
        if ((_vconfig[AfCap + 4] & 1) == 0) return;
        _vconfig[AfCap + 4] &= 0xFE;
        var cap = HwRead(AfCap + 3, 1);
        if ((cap & 0x3) == 0x3) OnFunctionReset(); // AF_CAP: TP and FLR
    }

    /// <summary>vfio_bar_fixup: virtual BARs masked to their size with the type flags (this is BAR sizing).</summary>
    void BarFixup()
    {
        for (var i = 0; i < 6; i++)
        {
            var at = Bar0 + 4 * i;
            var bar = _fn.GetBar(i);
            if (bar.Size == 0)
            {
                V32(at, 0);
                continue;
            }
            var mask = ~(bar.Size - 1);
            if (bar.Kind == PciBarKind.Io)
            {
                V32(at, (V32(at) & (uint)mask & ~3u) | 1u);
                continue;
            }
            uint flags = 0;
            if (bar.Is64) flags |= 0x4;
            if (bar.Prefetchable) flags |= 0x8;
            V32(at, (V32(at) & (uint)mask & ~0xFu) | flags);
            if (bar.Is64 && i < 5)
            {
                i++;
                V32(Bar0 + 4 * i, V32(Bar0 + 4 * i) & (uint)(mask >> 32));
            }
        }
        var rom = _fn.GetBar(6);
        if (rom.Size != 0)
        {
            var mask = (uint)~(rom.Size - 1) | 1u;
            V32(Rom, V32(Rom) & mask);
        }
        else V32(Rom, 0);
        BarDirty = false;
    }
}
