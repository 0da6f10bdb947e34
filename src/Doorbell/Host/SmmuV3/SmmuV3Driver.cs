using System.Numerics;
using Doorbell.Host.Iommu;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V3;
using Doorbell.Vmsa;

namespace Doorbell.Host.SmmuV3;

// A host SMMUv3 driver written the way Linux's drivers/iommu/arm/arm-smmu-v3 is: probe from the ID registers,
// queues and stream table in RAM, GBPA abort, enable handshakes, STE/CD writes with hitless/break-before-make
// ordering followed by CFGI + CMD_SYNC, TLBI (+range) + CMD_SYNC on unmap, event and GERROR handling.
// It reaches the SMMU through ISmmuHostAccess (registers, queues and stream/CD tables in shared RAM); the page tables
// of its domains are written by IoPageTable through the memory view it is given (the same memory, seen as a CPU).
//
// Known limits: no PASID (SVA) attach, no ATS/PRI, no nested (iommufd) domains, no MSI-capable IRQ domain of its
// own (the event queue / GERROR MSI doorbells are given as options).

/// <summary>Driver options (what Linux takes from firmware and module parameters).</summary>
public sealed record SmmuV3DriverOptions
{
    /// <summary>disable_bypass: unattached streams abort (true) or bypass.</summary>
    public bool DisableBypass { get; init; } = true;
    /// <summary>Translation granule for domains (Linux uses PAGE_SIZE).</summary>
    public Granule Granule { get; init; } = Granule.Size4K;
    public int CommandQueueLog2 { get; init; } = 8;
    public int EventQueueLog2 { get; init; } = 7;
    /// <summary>MSI doorbells (address, data) for the event queue and GERROR interrupts; null: wired lines.</summary>
    public (ulong Address, uint Data)? EventQueueMsi { get; init; }
    public (ulong Address, uint Data)? GerrorMsi { get; init; }
    /// <summary>Complete CMD_SYNC by MSI into the queue slot (Linux ARM_SMMU_OPT_MSIPOLL) when the SMMU has MSIs.</summary>
    public bool MsiPoll { get; init; } = true;
    /// <summary>Upper bound on polling loops (register handshakes, CMD_SYNC): then ETIMEDOUT.</summary>
    public int PollLimit { get; init; } = 10_000;
}

/// <summary>What the probe read from the ID registers (Linux arm_smmu_device_hw_probe).</summary>
public sealed record SmmuV3Features(
    bool Stage1, bool Stage2, bool TwoLevelStreamTable, bool TwoLevelCd, bool RangeInvalidation, bool Msi, bool Coherent,
    bool Asid16, bool Vmid16, bool Sev, bool Hyp, int StreamIdBits, int SubstreamIdBits, int OutputAddressBits,
    int CommandQueueLog2Max, int EventQueueLog2Max, bool Granule4K, bool Granule16K, bool Granule64K);

/// <summary>The host driver of one SMMUv3 (one arm_smmu_device).</summary>
public sealed class SmmuV3Driver : IIommuDriver
{
    const int StrtabSplit = 8; // Linux STRTAB_SPLIT: 256 STEs per level-2 table
    const int CdSplit = 10;    // Linux CTXDESC_SPLIT: 1024 CDs per 64 KiB leaf

    readonly ISmmuHostAccess _hw;
    readonly IMemoryView _bus;
    readonly IPhysPageAllocator _alloc;
    readonly SmmuV3DriverOptions _opt;
    readonly Dictionary<IommuDevice, Master> _masters = [];
    readonly Dictionary<uint, ulong> _l2Strtab = [];
    readonly HashSet<ushort> _asids = [];
    readonly HashSet<ushort> _vmids = [];
    // The events read, last 4096 (a device can fault without end; the queue itself is bounded, so is this).
    readonly Doorbell.Runtime.BoundedHistory<SmmuV3Event> _events = new(4096);
    readonly List<string> _log = [];

    ulong _strtab; int _strtabLog2; bool _strtab2L;
    ulong _cmdq; int _cmdqLog2; uint _cmdqProd;
    ulong _evtq; int _evtqLog2;
    int _nextGroupId;

    sealed class Master(IommuDevice device)
    {
        public readonly IommuDevice Device = device;
        public IommuDomain? Domain;
        public ulong CdTable;      // 0 until a stage-1 domain is attached
        public int S1CdMax;
        public uint S1Fmt;
        public readonly Dictionary<uint, ulong> CdLeaves = [];
    }

    SmmuV3Driver(ISmmuHostAccess hw, IMemoryView bus, IPhysPageAllocator alloc, SmmuV3DriverOptions opt, SmmuV3Features f)
    {
        _hw = hw; _bus = bus; _alloc = alloc; _opt = opt; Features = f;
    }

    public string Name => "arm-smmu-v3";
    public SmmuV3Features Features { get; }
    /// <summary>Event records drained from the event queue, oldest first: the last 4096 (<c>Total</c> counts them all).</summary>
    public Doorbell.Runtime.BoundedHistory<SmmuV3Event> Events => _events;
    /// <summary>What the driver would print (dev_err/dev_info): errors handled, overflows.</summary>
    public IReadOnlyList<string> Log => _log;
    public ulong StreamTableBase => _strtab;
    public bool TwoLevelStreamTable => _strtab2L;

    // ----- probe and reset -----

    /// <summary>Probes the SMMU from its ID registers, allocates its structures and enables it (arm_smmu_device_probe).</summary>
    public static SmmuV3Driver Probe(ISmmuHostAccess hw, IMemoryView bus, IPhysPageAllocator allocator, SmmuV3DriverOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(hw);
        ArgumentNullException.ThrowIfNull(bus);
        ArgumentNullException.ThrowIfNull(allocator);
        var opt = options ?? new SmmuV3DriverOptions();
        var idr0 = hw.ReadRegister32(SmmuV3Reg.IDR0);
        var idr1 = hw.ReadRegister32(SmmuV3Reg.IDR1);
        var idr3 = hw.ReadRegister32(SmmuV3Reg.IDR3);
        var idr5 = hw.ReadRegister32(SmmuV3Reg.IDR5);
        bool B(uint r, int bit) => ((r >> bit) & 1) != 0;
        var ttf = (idr0 >> SmmuV3Field.Idr0TtfShift) & 3;
        if ((ttf & 2) == 0) throw new IommuException(Errno.ENODEV, "AArch64 table format not supported");
        if (((idr0 >> SmmuV3Field.Idr0TtEndianShift) & 3) == 3) throw new IommuException(Errno.ENODEV, "unknown/unsupported TT endianness");
        if (((idr1 >> 26) & 7) != 0) throw new IommuException(Errno.ENODEV, "embedded implementation (preset tables/queues) not supported");
        var oas = SmmuV3Options.DecodeAddressSize(idr5 & 7);
        if (oas < 0) oas = 48;
        var f = new SmmuV3Features(
            Stage1: B(idr0, SmmuV3Field.Idr0S1P), Stage2: B(idr0, SmmuV3Field.Idr0S2P),
            TwoLevelStreamTable: ((idr0 >> SmmuV3Field.Idr0StLevelShift) & 3) == 1, TwoLevelCd: B(idr0, SmmuV3Field.Idr0Cd2l),
            RangeInvalidation: B(idr3, SmmuV3Field.Idr3Ril), Msi: B(idr0, SmmuV3Field.Idr0Msi), Coherent: B(idr0, SmmuV3Field.Idr0Cohacc),
            Asid16: B(idr0, SmmuV3Field.Idr0Asid16), Vmid16: B(idr0, SmmuV3Field.Idr0Vmid16), Sev: B(idr0, SmmuV3Field.Idr0Sev),
            Hyp: B(idr0, SmmuV3Field.Idr0Hyp),
            StreamIdBits: (int)(idr1 & 0x3F), SubstreamIdBits: (int)((idr1 >> 6) & 0x1F), OutputAddressBits: oas,
            CommandQueueLog2Max: (int)((idr1 >> 21) & 0x1F), EventQueueLog2Max: (int)((idr1 >> 16) & 0x1F),
            Granule4K: B(idr5, SmmuV3Field.Idr5Gran4K), Granule16K: B(idr5, SmmuV3Field.Idr5Gran16K), Granule64K: B(idr5, SmmuV3Field.Idr5Gran64K));
        if (!f.Stage1 && !f.Stage2) throw new IommuException(Errno.ENODEV, "no translation support");
        var d = new SmmuV3Driver(hw, bus, allocator, opt, f);
        d.InitStructures();
        d.Reset();
        return d;
    }

    ulong AllocZeroed(ulong size, string what)
    {
        if (!_alloc.TryAllocate(size, out var pa)) throw new IommuException(Errno.ENOMEM, $"no memory for {what}");
        _hw.ZeroMemory(pa, size);
        return pa;
    }

    void InitStructures()
    {
        var f = Features;
        _cmdqLog2 = Math.Min(_opt.CommandQueueLog2, f.CommandQueueLog2Max);
        _evtqLog2 = Math.Min(_opt.EventQueueLog2, f.EventQueueLog2Max);
        _cmdq = AllocZeroed(Math.Max(32UL, (ulong)Cmd.Size << _cmdqLog2), "command queue");
        _evtq = AllocZeroed(Math.Max(32UL, (ulong)Evt.Size << _evtqLog2), "event queue");
        // Stream table: 2-level when supported and the StreamID space is larger than one level-2 table (as Linux).
        _strtab2L = f.TwoLevelStreamTable && f.StreamIdBits > StrtabSplit;
        if (_strtab2L)
        {
            _strtabLog2 = Math.Min(f.StreamIdBits, StrtabSplit + 12); // at most 4096 L1 descriptors here
            _strtab = AllocZeroed(Math.Max(64UL, 8UL << (_strtabLog2 - StrtabSplit)), "L1 stream table");
        }
        else
        {
            _strtabLog2 = f.StreamIdBits;
            if (_strtabLog2 > 16) throw new IommuException(Errno.EINVAL, $"linear stream table for {f.StreamIdBits} SID bits too large");
            _strtab = AllocZeroed(64UL << _strtabLog2, "stream table");
            for (var sid = 0u; sid < 1u << _strtabLog2; sid++) WriteInitialSte(_strtab + sid * 64UL);
        }
    }

    void WriteInitialSte(ulong address)
    {
        var ste = _opt.DisableBypass ? SmmuV3Encode.AbortSte() : SmmuV3Encode.BypassSte();
        for (var i = 7; i >= 0; i--) _hw.WriteMemory64(address + (ulong)i * 8, ste[i]);
    }

    void Poll(Func<bool> done, string what)
    {
        for (var i = 0; i < _opt.PollLimit; i++)
            if (done()) return;
        throw new IommuException(Errno.ETIMEDOUT, $"timeout waiting for {what}");
    }

    void WriteCr0(uint value)
    {
        _hw.WriteRegister32(SmmuV3Reg.CR0, value);
        Poll(() => _hw.ReadRegister32(SmmuV3Reg.CR0ACK) == value, "CR0ACK");
    }

    void UpdateGbpa(uint set, uint clear)
    {
        Poll(() => (_hw.ReadRegister32(SmmuV3Reg.GBPA) & SmmuV3Field.GbpaUpdate) == 0, "GBPA.UPDATE");
        var reg = (_hw.ReadRegister32(SmmuV3Reg.GBPA) & ~clear) | set;
        _hw.WriteRegister32(SmmuV3Reg.GBPA, reg | SmmuV3Field.GbpaUpdate);
        Poll(() => (_hw.ReadRegister32(SmmuV3Reg.GBPA) & SmmuV3Field.GbpaUpdate) == 0, "GBPA.UPDATE");
    }

    /// <summary>arm_smmu_device_reset: quiesce, abort incoming traffic, program tables and queues, invalidate, enable.</summary>
    void Reset()
    {
        if ((_hw.ReadRegister32(SmmuV3Reg.CR0) & SmmuV3Field.Cr0SmmuEn) != 0)
        {
            _log.Add("SMMU currently enabled! Resetting...");
            UpdateGbpa(SmmuV3Field.GbpaAbort, 0);
        }
        WriteCr0(0);
        if (_opt.DisableBypass) UpdateGbpa(SmmuV3Field.GbpaAbort, 0);
        // CR1: tables and queues inner-shareable, write-back (ISH = 3, WB = 1).
        _hw.WriteRegister32(SmmuV3Reg.CR1, 3u << 10 | 1u << 8 | 1u << 6 | 3u << 4 | 1u << 2 | 1u);
        _hw.WriteRegister32(SmmuV3Reg.CR2, SmmuV3Field.Cr2RecInvSid | SmmuV3Field.Cr2Ptm);
        _hw.WriteRegister64(SmmuV3Reg.STRTAB_BASE, _strtab | SmmuV3Field.StrtabBaseRa);
        _hw.WriteRegister32(SmmuV3Reg.STRTAB_BASE_CFG, _strtab2L
            ? 1u << SmmuV3Field.StrtabCfgFmtShift | (uint)StrtabSplit << SmmuV3Field.StrtabCfgSplitShift | (uint)_strtabLog2
            : (uint)_strtabLog2);
        _hw.WriteRegister64(SmmuV3Reg.CMDQ_BASE, _cmdq | SmmuV3Field.QBaseRwa | (uint)_cmdqLog2);
        _hw.WriteRegister32(SmmuV3Reg.CMDQ_PROD, 0);
        _hw.WriteRegister32(SmmuV3Reg.CMDQ_CONS, 0);
        _cmdqProd = 0;
        var enables = SmmuV3Field.Cr0CmdqEn;
        WriteCr0(enables);
        Issue([SmmuV3Encode.CfgiAll()], sync: true);
        Issue([SmmuV3Encode.TlbiNsnhAll()], sync: true);
        _hw.WriteRegister64(SmmuV3Reg.EVENTQ_BASE, _evtq | SmmuV3Field.QBaseRwa | (uint)_evtqLog2);
        _hw.WriteRegister32(SmmuV3Reg.EVENTQ_PROD, 0);
        _hw.WriteRegister32(SmmuV3Reg.EVENTQ_CONS, 0);
        enables |= SmmuV3Field.Cr0EventqEn;
        WriteCr0(enables);
        // Interrupts: MSIs when configured, else the wired lines.
        _hw.WriteRegister32(SmmuV3Reg.IRQ_CTRL, 0);
        Poll(() => _hw.ReadRegister32(SmmuV3Reg.IRQ_CTRLACK) == 0, "IRQ_CTRLACK");
        if (Features.Msi)
        {
            var (ea, ed) = _opt.EventQueueMsi ?? (0, 0);
            _hw.WriteRegister64(SmmuV3Reg.EVENTQ_IRQ_CFG0, ea);
            _hw.WriteRegister32(SmmuV3Reg.EVENTQ_IRQ_CFG1, ed);
            _hw.WriteRegister32(SmmuV3Reg.EVENTQ_IRQ_CFG2, 1); // Device-nGnRE
            var (ga, gd) = _opt.GerrorMsi ?? (0, 0);
            _hw.WriteRegister64(SmmuV3Reg.GERROR_IRQ_CFG0, ga);
            _hw.WriteRegister32(SmmuV3Reg.GERROR_IRQ_CFG1, gd);
            _hw.WriteRegister32(SmmuV3Reg.GERROR_IRQ_CFG2, 1);
        }
        const uint irqs = SmmuV3Field.IrqCtrlGerrorEn | SmmuV3Field.IrqCtrlEventqEn;
        _hw.WriteRegister32(SmmuV3Reg.IRQ_CTRL, irqs);
        Poll(() => _hw.ReadRegister32(SmmuV3Reg.IRQ_CTRLACK) == irqs, "IRQ_CTRLACK");
        enables |= SmmuV3Field.Cr0SmmuEn;
        WriteCr0(enables);
    }

    /// <summary>Disables translation; with <paramref name="abort"/> incoming traffic is aborted (arm_smmu_device_disable + GBPA).</summary>
    public void Shutdown(bool abort = true)
    {
        WriteCr0(0);
        if (abort) UpdateGbpa(SmmuV3Field.GbpaAbort, 0);
    }

    // ----- command queue -----

    uint QueueMask => (2u << _cmdqLog2) - 1;
    uint QueueSize => 1u << _cmdqLog2;

    /// <summary>
    /// Writes commands at PROD (waiting for space), optionally appends a CMD_SYNC, rings the doorbell and waits for
    /// completion: by MSI into the CMD_SYNC's own slot (MSIPOLL) or by CONS passing it. Queue errors are handled as
    /// arm_smmu_cmdq_skip_err does, and the wait goes on.
    /// </summary>
    public void Issue(ReadOnlySpan<(ulong, ulong)> commands, bool sync)
    {
        var mask = QueueMask;
        var idxMask = QueueSize - 1;
        ulong syncSlot = 0;
        var total = commands.Length + (sync ? 1 : 0);
        for (var n = 0; n < total; n++)
        {
            WaitForSpace();
            var slot = _cmdq + (_cmdqProd & idxMask) * (ulong)Cmd.Size;
            (ulong q0, ulong q1) cmd;
            if (n < commands.Length) cmd = commands[n];
            else
            {
                var msi = _opt.MsiPoll && Features.Msi && Features.Coherent;
                cmd = msi ? SmmuV3Encode.Sync(Cmd.SyncCsIrq, slot, 0) : SmmuV3Encode.Sync(Features.Sev ? Cmd.SyncCsSev : Cmd.SyncCsNone);
                syncSlot = msi ? slot : 0;
            }
            _hw.WriteMemory64(slot + 8, cmd.q1);
            _hw.WriteMemory64(slot, cmd.q0);
            _cmdqProd = (_cmdqProd + 1) & mask;
            // Flush a full batch so long command lists never overrun the queue.
            if ((n + 1) % (int)Math.Max(1, QueueSize / 2) == 0) _hw.WriteRegister32(SmmuV3Reg.CMDQ_PROD, _cmdqProd);
        }
        _hw.WriteRegister32(SmmuV3Reg.CMDQ_PROD, _cmdqProd);
        if (!sync) return;
        var target = _cmdqProd;
        Poll(() =>
        {
            HandleGlobalErrors();
            if (syncSlot != 0 && _hw.ReadMemory32(syncSlot) == 0) return true;
            return QueueConsumed(target);
        }, "CMD_SYNC");
    }

    bool QueueConsumed(uint target)
    {
        var cons = _hw.ReadRegister32(SmmuV3Reg.CMDQ_CONS) & QueueMask;
        return cons == target;
    }

    void WaitForSpace()
    {
        Poll(() =>
        {
            HandleGlobalErrors();
            var cons = _hw.ReadRegister32(SmmuV3Reg.CMDQ_CONS) & QueueMask;
            var used = (_cmdqProd - cons) & QueueMask;
            return used < QueueSize;
        }, "command queue space");
    }

    /// <summary>arm_smmu_gerror_handler + arm_smmu_cmdq_skip_err: report, fix up a failed command with CMD_SYNC, acknowledge.</summary>
    public void HandleGlobalErrors()
    {
        var gerror = _hw.ReadRegister32(SmmuV3Reg.GERROR);
        var gerrorn = _hw.ReadRegister32(SmmuV3Reg.GERRORN);
        var active = (gerror ^ gerrorn) & SmmuV3Field.GerrorMask;
        if (active == 0) return;
        if ((active & SmmuV3Field.GerrorCmdq) != 0)
        {
            var cons = _hw.ReadRegister32(SmmuV3Reg.CMDQ_CONS);
            var err = (cons >> SmmuV3Field.CmdqConsErrShift) & 0x7F;
            var slot = _cmdq + (cons & (QueueSize - 1)) * (ulong)Cmd.Size;
            var bad = _hw.ReadMemory64(slot);
            var why = err switch
            {
                SmmuV3Field.CerrorIll => "Illegal command",
                SmmuV3Field.CerrorAbt => "Abort on command fetch",
                SmmuV3Field.CerrorAtcInvSync => "ATC invalidate timeout",
                _ => $"unknown error {err}",
            };
            _log.Add($"CMDQ error (cons 0x{cons:x}): {why} {Cmd.Name((byte)bad)} 0x{bad:x16}; skipping it");
            // Replace the failed command with a CMD_SYNC (no completion signal) so the queue can go on.
            var (s0, s1) = SmmuV3Encode.Sync();
            _hw.WriteMemory64(slot + 8, s1);
            _hw.WriteMemory64(slot, s0);
        }
        if ((active & SmmuV3Field.GerrorEventqAbt) != 0) _log.Add("EVTQ write aborted -- events may have been lost");
        if ((active & SmmuV3Field.GerrorMsiCmdqAbt) != 0) _log.Add("CMDQ MSI write aborted");
        if ((active & SmmuV3Field.GerrorMsiEventqAbt) != 0) _log.Add("EVTQ MSI write aborted");
        if ((active & SmmuV3Field.GerrorMsiGerrorAbt) != 0) _log.Add("GERROR MSI write aborted");
        if ((active & SmmuV3Field.GerrorSfm) != 0) _log.Add("device has entered Service Failure Mode!");
        _hw.WriteRegister32(SmmuV3Reg.GERRORN, gerror);
    }

    // ----- event queue -----

    /// <summary>arm_smmu_evtq_thread: drains new event records (bounded by the queue size) and handles overflow.</summary>
    public IReadOnlyList<SmmuV3Event> DrainEvents()
    {
        var mask = (2u << _evtqLog2) - 1;
        var idxMask = (1u << _evtqLog2) - 1;
        var prod = _hw.ReadRegister32(SmmuV3Reg.EVENTQ_PROD);
        var cons = _hw.ReadRegister32(SmmuV3Reg.EVENTQ_CONS);
        List<SmmuV3Event>? drained = null;
        for (var n = 0u; (cons & mask) != (prod & mask) && n <= idxMask; n++)
        {
            var a = _evtq + (cons & idxMask) * (ulong)Evt.Size;
            var ev = new SmmuV3Event(_hw.ReadMemory64(a), _hw.ReadMemory64(a + 8), _hw.ReadMemory64(a + 16), _hw.ReadMemory64(a + 24));
            _events.Add(ev);
            (drained ??= []).Add(ev);
            cons = (((cons & mask) + 1) & mask) | (cons & SmmuV3Field.QOvflg);
        }
        if (((prod ^ cons) & SmmuV3Field.QOvflg) != 0)
        {
            _log.Add("EVTQ overflow detected -- events lost");
            cons = (cons & ~SmmuV3Field.QOvflg) | (prod & SmmuV3Field.QOvflg);
        }
        _hw.WriteRegister32(SmmuV3Reg.EVENTQ_CONS, cons);
        return drained ?? (IReadOnlyList<SmmuV3Event>)[];
    }

    // ----- stream table and masters -----

    ulong SteAddress(uint sid)
    {
        if (!_strtab2L) return _strtab + sid * 64UL;
        var l1 = sid >> StrtabSplit;
        if (!_l2Strtab.TryGetValue(l1, out var l2))
        {
            // arm_smmu_init_l2_strtab: a level-2 table of initial STEs, then its (previously invalid) L1 descriptor.
            l2 = AllocZeroed(64UL << StrtabSplit, "level-2 stream table");
            for (var i = 0u; i < 1u << StrtabSplit; i++) WriteInitialSte(l2 + i * 64UL);
            _hw.WriteMemory64(_strtab + l1 * 8UL, SmmuV3Encode.L1Std(l2, StrtabSplit + 1));
            _l2Strtab[l1] = l2;
        }
        return l2 + (sid & ((1u << StrtabSplit) - 1)) * 64UL;
    }

    public IommuGroup ProbeDevice(IommuDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (_masters.ContainsKey(device)) throw new IommuException(Errno.EEXIST, $"{device.Name} already probed");
        if (device.StreamIds.Count == 0) throw new IommuException(Errno.ENODEV, $"{device.Name} has no StreamID");
        foreach (var sid in device.StreamIds)
            if (sid >> _strtabLog2 != 0 && _strtabLog2 < 32)
                throw new IommuException(Errno.ERANGE, $"StreamID 0x{sid:x} of {device.Name} out of range ({_strtabLog2} bits)");
        if (device.SubstreamIdBits > Features.SubstreamIdBits)
            throw new IommuException(Errno.EINVAL, $"{device.Name} needs {device.SubstreamIdBits} SSID bits, SMMU has {Features.SubstreamIdBits}");
        foreach (var sid in device.StreamIds) _ = SteAddress(sid);
        _masters[device] = new Master(device);
        var group = IommuGroups.Create(this, device, _nextGroupId++);
        return group;
    }

    public void ReleaseDevice(IommuDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var m = GetMaster(device);
        foreach (var sid in device.StreamIds) WriteSte(sid, _opt.DisableBypass ? SmmuV3Encode.AbortSte() : SmmuV3Encode.BypassSte());
        if (m.CdTable != 0) ClearCd(m);
        _masters.Remove(device);
    }

    Master GetMaster(IommuDevice device) =>
        _masters.TryGetValue(device, out var m) ? m : throw new IommuException(Errno.ENODEV, $"{device.Name} was not probed by {Name}");

    // ----- domains -----

    public IommuDomain AllocateDomain(IommuDomainType type, IommuDomainStage? stage = null)
    {
        if (type is IommuDomainType.Blocked or IommuDomainType.Identity)
        {
            if (stage is not null) throw new IommuException(Errno.EINVAL, $"{type} domains have no stage");
            return new SmmuV3Domain(this, type, null, 0, null);
        }
        var st = stage ?? (Features.Stage1 ? IommuDomainStage.Stage1 : IommuDomainStage.Stage2);
        if (st == IommuDomainStage.Stage1 && !Features.Stage1) throw new IommuException(Errno.EOPNOTSUPP, "no stage-1 translation");
        if (st == IommuDomainStage.Stage2 && !Features.Stage2) throw new IommuException(Errno.EOPNOTSUPP, "no stage-2 translation");
        if (!Supports(_opt.Granule)) throw new IommuException(Errno.EOPNOTSUPP, $"granule {_opt.Granule} not supported");
        // arm_smmu_domain_finalise: tag allocation and io-pgtable.
        ushort tag;
        if (st == IommuDomainStage.Stage1) tag = AllocateId(_asids, Features.Asid16 ? 16 : 8, "ASID");
        else tag = AllocateId(_vmids, Features.Vmid16 ? 16 : 8, "VMID");
        var ias = st == IommuDomainStage.Stage1 ? 48 : Math.Min(Features.OutputAddressBits, 48);
        var oas = Features.OutputAddressBits;
        var domain = new SmmuV3Domain(this, type, st, tag, null);
        var ret = IoPageTable.Create(_bus, _alloc, st == IommuDomainStage.Stage1 ? IoPageTableFormat.Stage1 : IoPageTableFormat.Stage2,
            _opt.Granule, ias, oas, out var table, domain);
        if (ret < 0)
        {
            (st == IommuDomainStage.Stage1 ? _asids : _vmids).Remove(tag);
            throw new IommuException(-ret, "io-pgtable allocation failed");
        }
        domain.Table = table;
        return domain;
    }

    bool Supports(Granule g) => g switch
    {
        Granule.Size4K => Features.Granule4K,
        Granule.Size16K => Features.Granule16K,
        _ => Features.Granule64K,
    };

    static ushort AllocateId(HashSet<ushort> used, int bits, string what)
    {
        for (var id = 1; id < 1 << bits; id++)
            if (used.Add((ushort)id)) return (ushort)id;
        throw new IommuException(Errno.ENOSPC, $"no free {what}");
    }

    public void FreeDomain(IommuDomain domain)
    {
        if (domain is not SmmuV3Domain d || !ReferenceEquals(d.Driver, this)) throw new IommuException(Errno.EINVAL, "not a domain of this SMMU");
        if (_masters.Values.Any(m => ReferenceEquals(m.Domain, d))) throw new IommuException(Errno.EBUSY, "domain still has devices attached");
        if (d.Freed) throw new IommuException(Errno.EINVAL, "domain already freed");
        d.Freed = true;
        if (d.Stage == IommuDomainStage.Stage1)
        {
            Issue([SmmuV3Encode.TlbiNhAsid(0, d.Tag)], sync: true);
            _asids.Remove(d.Tag);
        }
        else if (d.Stage == IommuDomainStage.Stage2)
        {
            Issue([SmmuV3Encode.TlbiS12Vmall(d.Tag)], sync: true);
            _vmids.Remove(d.Tag);
        }
        d.Table?.Free();
    }

    public void AttachDevice(IommuDomain domain, IommuDevice device)
    {
        ArgumentNullException.ThrowIfNull(domain);
        ArgumentNullException.ThrowIfNull(device);
        if (domain is not SmmuV3Domain d || !ReferenceEquals(d.Driver, this)) throw new IommuException(Errno.EINVAL, "domain belongs to another IOMMU");
        if (d.Freed) throw new IommuException(Errno.EINVAL, "domain was freed");
        var m = GetMaster(device);
        ulong[] ste;
        switch (d.Type)
        {
            case IommuDomainType.Blocked:
                ste = SmmuV3Encode.AbortSte();
                break;
            case IommuDomainType.Identity:
                ste = SmmuV3Encode.BypassSte();
                break;
            default:
                if (d.Stage == IommuDomainStage.Stage1)
                {
                    EnsureCdTable(m);
                    WriteCd(m, 0, SmmuV3Encode.ContextDescriptor(d.Table!.CreateStage1Config(d.Tag)));
                    ste = SmmuV3Encode.Stage1Ste(m.CdTable, m.S1CdMax, m.S1Fmt, Ste.S1DssSubstream0);
                }
                else
                    ste = SmmuV3Encode.Stage2Ste(d.Table!.CreateStage2Config(d.Tag));
                break;
        }
        foreach (var sid in device.StreamIds) WriteSte(sid, ste);
        // Leaving a stage-1 domain: the CD is no longer reachable; make it invalid so nothing stale remains.
        if (m.CdTable != 0 && !(d.IsPaging && d.Stage == IommuDomainStage.Stage1)) ClearCd(m);
        m.Domain = d;
    }

    void EnsureCdTable(Master m)
    {
        if (m.CdTable != 0) return;
        var bits = Math.Min(m.Device.SubstreamIdBits, Features.SubstreamIdBits);
        m.S1CdMax = bits;
        if (bits > CdSplit && Features.TwoLevelCd)
        {
            m.S1Fmt = Cd.S1Fmt2Level64K;
            m.CdTable = AllocZeroed(Math.Max(64UL, 8UL << (bits - CdSplit)), "L1 CD table");
        }
        else
        {
            m.S1Fmt = Cd.S1FmtLinear;
            m.CdTable = AllocZeroed(64UL << bits, "CD table");
        }
    }

    ulong CdAddress(Master m, uint ssid)
    {
        if (m.S1Fmt == Cd.S1FmtLinear) return m.CdTable + ssid * 64UL;
        var l1 = ssid >> CdSplit;
        if (!m.CdLeaves.TryGetValue(l1, out var leaf))
        {
            leaf = AllocZeroed(64UL << CdSplit, "CD leaf table");
            _hw.WriteMemory64(m.CdTable + l1 * 8UL, SmmuV3Encode.L1Cd(leaf));
            m.CdLeaves[l1] = leaf;
            // The L1 descriptor may have been cached invalid by nobody (invalid entries are not cached); sync anyway.
            SyncCd(m, ssid);
        }
        return leaf + (ssid & ((1u << CdSplit) - 1)) * 64UL;
    }

    void SyncSte(uint sid) => Issue([SmmuV3Encode.CfgiSte(sid)], sync: true);

    void SyncCd(Master m, uint ssid)
    {
        Span<(ulong, ulong)> cmds = stackalloc (ulong, ulong)[m.Device.StreamIds.Count];
        for (var i = 0; i < cmds.Length; i++) cmds[i] = SmmuV3Encode.CfgiCd(m.Device.StreamIds[i], ssid);
        Issue(cmds, sync: true);
    }

    void WriteSte(uint sid, ulong[] target) => WriteEntry(SteAddress(sid), target, isSte: true, () => SyncSte(sid));

    void WriteCd(Master m, uint ssid, ulong[] target) => WriteEntry(CdAddress(m, ssid), target, isSte: false, () => SyncCd(m, ssid));

    void ClearCd(Master m)
    {
        var addr = CdAddress(m, 0);
        if ((_hw.ReadMemory64(addr) & 1UL << Cd.V) == 0) return;
        _hw.WriteMemory64(addr, 0);
        SyncCd(m, 0);
    }

    /// <summary>
    /// Updates an STE or CD the way Linux's entry writer does (arm_smmu_write_entry), so that whatever mix of old and
    /// new qwords the SMMU reads is one of the two configurations, and each step ends in CFGI + CMD_SYNC (IHI 0070
    /// §3.21.3.1). Only qwords whose used bits must change count: when one does, the update is hitless — first the
    /// bits the current configuration ignores, then that one qword, then the bits the new one ignores; when several
    /// do, break-before-make — V = 0, the other qwords, then qword 0. A fill of an invalid entry is the hitless case
    /// with qword 0 (holding V) last, as §3.21.3.1 requires.
    /// </summary>
    void WriteEntry(ulong address, ulong[] target, bool isSte, Action sync)
    {
        Span<ulong> cur = stackalloc ulong[8];
        Span<ulong> curUsed = stackalloc ulong[8];
        Span<ulong> targetUsed = stackalloc ulong[8];
        Span<ulong> step = stackalloc ulong[8];
        for (var i = 0; i < 8; i++) cur[i] = _hw.ReadMemory64(address + (ulong)i * 8);
        if (isSte) { SmmuV3Decoder.SteUsedBits(cur, curUsed); SmmuV3Decoder.SteUsedBits(target, targetUsed); }
        else { SmmuV3Decoder.CdUsedBits(cur, curUsed); SmmuV3Decoder.CdUsedBits(target, targetUsed); }
        var critical = 0;
        for (var i = 0; i < 8; i++)
        {
            // The bits the current configuration ignores can take their new values at once.
            step[i] = (cur[i] & curUsed[i]) | (target[i] & ~curUsed[i]);
            // A qword is critical when, after that, a bit the new configuration uses still differs.
            if ((step[i] & targetUsed[i]) != target[i]) critical |= 1 << i;
        }
        if (BitOperations.PopCount((uint)critical) == 1)
        {
            var c = BitOperations.TrailingZeroCount(critical);
            step[c] = cur[c];
            SetQwords(address, cur, step, 0, 8, sync);
            SetQwords(address, cur, target, c, 1, sync);
            SetQwords(address, cur, target, 0, 8, sync);
        }
        else if (critical != 0)
        {
            var vBit = 1UL << (isSte ? Ste.V : Cd.V);
            step[0] = cur[0] & ~vBit;
            SetQwords(address, cur, step, 0, 1, sync);
            SetQwords(address, cur, target, 1, 7, sync);
            SetQwords(address, cur, target, 0, 1, sync);
        }
        else
            SetQwords(address, cur, target, 0, 8, sync);
    }

    /// <summary>Writes the qwords [first, first + count) that differ, then CFGI + CMD_SYNC when anything was written.</summary>
    void SetQwords(ulong address, Span<ulong> cur, ReadOnlySpan<ulong> value, int first, int count, Action sync)
    {
        var wrote = false;
        for (var i = first; i < first + count; i++)
        {
            if (cur[i] == value[i]) continue;
            _hw.WriteMemory64(address + (ulong)i * 8, value[i]);
            cur[i] = value[i];
            wrote = true;
        }
        if (wrote) sync();
    }

    // ----- capabilities and reserved regions -----

    /// <summary>IOMMU_CAP_INTR_REMAP as arm-smmu-v3 claimed it until 4.11; off by default (today's driver).</summary>
    public bool ClaimsInterruptRemap { get; set; }

    public bool Capable(IommuCapability capability) => capability switch
    {
        IommuCapability.CacheCoherency => Features.Coherent,
        IommuCapability.NoExec => true,
        IommuCapability.InterruptRemap => ClaimsInterruptRemap,
        _ => false,
    };

    public IReadOnlyList<ReservedRegion> GetReservedRegions(IommuDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        _ = GetMaster(device);
        return [new ReservedRegion(SoftwareMsiWindow.Base, SoftwareMsiWindow.Length, IoProt.Write | IoProt.Mmio | IoProt.NoExec, ReservedRegionType.SoftwareMsi)];
    }

    // ----- TLB maintenance for domains -----

    /// <summary>
    /// TLB invalidation of [iova, iova + size) for a domain (arm_smmu_tlb_inv_range_domain): leaf invalidations carry
    /// the level of <paramref name="granule"/> as TTL; a non-leaf range whose page count would leave NUM = SCALE = 0
    /// with TTL = 0 (Reserved, CERROR_ILL, IHI 0070 §4.4.1.1) is widened by one page, as Linux does since 5.15.
    /// </summary>
    internal void InvalidateRange(SmmuV3Domain d, ulong iova, ulong size, ulong granule, bool leaf)
    {
        if (size == 0) return;
        var tg = BitOperations.TrailingZeroCount(d.PageSizeBitmap);
        var pageBytes = 1UL << tg;
        var start = iova & ~(pageBytes - 1);
        var end = iova + size;
        var pages = (end - start + pageBytes - 1) >> tg;
        var cmds = new List<(ulong, ulong)>();
        if (Features.RangeInvalidation)
        {
            // Chunks of NUM × 2^SCALE pages, SCALE = lowest set bit of what remains.
            var tgEnc = (tg - 10) / 2;
            var ttl = leaf ? 4 - (BitOperations.Log2(granule) - 3) / (tg - 3) : 0;
            if (!leaf && (pages & 31) == 1) pages++;
            var remaining = pages;
            var a = start;
            while (remaining > 0)
            {
                var scale = BitOperations.TrailingZeroCount(remaining);
                var num = (remaining >> scale) & 31;
                cmds.Add(d.Stage == IommuDomainStage.Stage1
                    ? SmmuV3Encode.TlbiNhVaRange(0, d.Tag, a, tgEnc, (int)num - 1, scale, ttl, leaf)
                    : SmmuV3Encode.TlbiS2IpaRange(d.Tag, a, tgEnc, (int)num - 1, scale, ttl, leaf));
                a += (num << scale) << tg;
                remaining -= Math.Min(remaining, num << scale);
            }
        }
        else if (pages > QueueSize / 2)
        {
            cmds.Add(d.Stage == IommuDomainStage.Stage1 ? SmmuV3Encode.TlbiNhAsid(0, d.Tag) : SmmuV3Encode.TlbiS12Vmall(d.Tag));
        }
        else
        {
            for (var a = start; a < end; a += granule)
                cmds.Add(d.Stage == IommuDomainStage.Stage1 ? SmmuV3Encode.TlbiNhVa(0, d.Tag, a, leaf) : SmmuV3Encode.TlbiS2Ipa(d.Tag, a, leaf));
        }
        // Stage 2 leaves may back combined stage-1+2 entries: the S12 invalidation that Linux issues for nesting parents is not needed here.
        Issue(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(cmds), sync: true);
    }
}

/// <summary>An SMMUv3 domain (struct arm_smmu_domain) over an io-pgtable.</summary>
public sealed class SmmuV3Domain : IoPageTableDomain, IIoTlbFlushOps
{
    readonly SmmuV3Driver _smmu;
    // The iotlb gather of one unmap (struct iommu_iotlb_gather): one leaf size, one contiguous range.
    ulong _gatherStart = ulong.MaxValue, _gatherEnd, _gatherGranule;

    internal SmmuV3Domain(SmmuV3Driver smmu, IommuDomainType type, IommuDomainStage? stage, ushort tag, IoPageTable? table)
        : base(smmu, type, table)
    {
        _smmu = smmu;
        Stage = stage;
        Tag = tag;
    }

    public IommuDomainStage? Stage { get; }
    /// <summary>ASID (stage 1) or VMID (stage 2).</summary>
    public ushort Tag { get; }
    public override ulong Unmap(ulong iova, ulong size)
    {
        var t = Paging("unmap");
        ResetGather();
        var n = t.Unmap(iova, size);
        FlushGather();
        return n;
    }

    void ResetGather()
    {
        _gatherStart = ulong.MaxValue;
        _gatherEnd = 0;
        _gatherGranule = 0;
    }

    /// <summary>iommu_iotlb_sync: the gathered leaves, invalidated with their size's TTL, then CMD_SYNC.</summary>
    void FlushGather()
    {
        if (_gatherStart != ulong.MaxValue)
            _smmu.InvalidateRange(this, _gatherStart, _gatherEnd - _gatherStart, _gatherGranule, leaf: true);
        ResetGather();
    }

    /// <summary>A table went (unmap, or map replacing an empty table): its walk is invalidated at once, before the table is freed.</summary>
    void IIoTlbFlushOps.FlushWalk(ulong iova, ulong size, ulong granule) => _smmu.InvalidateRange(this, iova, size, granule, leaf: false);

    /// <summary>iommu_iotlb_gather_add_page: a leaf of another size, or one not adjacent to the range, flushes what was gathered first.</summary>
    void IIoTlbFlushOps.AddPage(ulong iova, ulong granule)
    {
        if (_gatherStart != ulong.MaxValue && (granule != _gatherGranule || iova + granule < _gatherStart || iova > _gatherEnd))
            FlushGather();
        _gatherStart = Math.Min(_gatherStart, iova);
        _gatherEnd = Math.Max(_gatherEnd, iova + granule);
        _gatherGranule = granule;
    }
}
