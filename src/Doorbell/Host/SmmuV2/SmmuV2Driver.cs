using System.Numerics;
using Doorbell.Host.Iommu;
using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V2;
using Doorbell.Vmsa;

namespace Doorbell.Host.SmmuV2;

// A host SMMUv2 driver written the way Linux's drivers/iommu/arm/arm-smmu/arm-smmu.c is: probe from the ID registers
// (stream matching vs indexing, SMR mask bits found by writing and reading back SMR0, context-bank counts, address
// sizes, table formats), reset (SMEs to fault/bypass, banks disabled, TLBIALLNSNH + global sync, sCR0), SMR
// allocation per StreamID with overlap checks, a context bank per paging domain (ASID = bank, VMID = bank + 1,
// IRPTNDX = bank), io-pgtable S1/S2 tables, TLBIVA(L)/TLBIIPAS2(L) + TLBSYNC on unmap, TLBIASID/TLBIVMID on free,
// and the context and global fault handlers. It reaches the hardware only through MMIO (ISmmuHostAccess).
//
// Known limits: no nested (iommufd) domains, no identity-domain context bank (bypass is an S2CR type), no
// AArch32 table formats, one SMMU per driver instance.

/// <summary>Driver options (what Linux takes from firmware and module parameters).</summary>
public sealed record SmmuV2DriverOptions
{
    /// <summary>arm-smmu.disable_bypass: unmatched and unattached streams fault (true) or bypass.</summary>
    public bool DisableBypass { get; init; } = true;
    /// <summary>Translation granule for domains (Linux uses PAGE_SIZE).</summary>
    public Granule Granule { get; init; } = Granule.Size4K;
    /// <summary>Upper bound on polling loops (TLBSTATUS, sTLBGSTATUS): then ETIMEDOUT.</summary>
    public int PollLimit { get; init; } = 1000;
}

/// <summary>What the probe read from the ID registers (Linux arm_smmu_device_cfg_probe).</summary>
public sealed record SmmuV2Features(
    bool Stage1, bool Stage2, bool Nested, bool StreamMatching, bool CoherentWalk, bool Vmid16, bool Atos,
    int MappingGroups, int ContextBanks, int Stage2ContextBanks, int ContextIrqs, int StreamIdBits, ushort StreamIdMask,
    ushort SmrMaskMask, int VaBits, int IpaBits, int PaBits, bool Granule4K, bool Granule16K, bool Granule64K,
    int PageShift, int NumPage, int ArchMajor);

/// <summary>A context or global fault the driver's handlers read (what Linux prints with dev_err_ratelimited).</summary>
public sealed record SmmuV2Fault(bool Global, int ContextBank, uint Status, uint Syndrome0, ulong Address, uint StreamId)
{
    public override string ToString() => Global
        ? $"global fault: sGFSR 0x{Status:x}, sGFSYNR0 0x{Syndrome0:x}, SID 0x{StreamId:x}, address 0x{Address:x}"
        : $"context fault CB{ContextBank}: FSR 0x{Status:x}, FSYNR0 0x{Syndrome0:x}, FAR 0x{Address:x}, SID 0x{StreamId:x}";
}

/// <summary>The host driver of one SMMUv2 (one arm_smmu_device).</summary>
public sealed class SmmuV2Driver : IIommuDriver
{
    readonly ISmmuHostAccess _hw;
    readonly IMemoryView _bus;
    readonly IPhysPageAllocator _alloc;
    readonly SmmuV2DriverOptions _opt;
    readonly (ushort Id, ushort Mask, bool Valid, int Count)[] _smrs;
    readonly (uint Type, int Cbndx)[] _s2crs;
    readonly SmmuV2Domain?[] _banks;
    readonly Dictionary<IommuDevice, int[]> _masters = [];
    // The last 4096 faults read (a device can fault without end).
    readonly Doorbell.Runtime.BoundedHistory<SmmuV2Fault> _faults = new(4096);
    int _nextGroupId;

    SmmuV2Driver(ISmmuHostAccess hw, IMemoryView bus, IPhysPageAllocator alloc, SmmuV2DriverOptions opt, SmmuV2Features f)
    {
        _hw = hw; _bus = bus; _alloc = alloc; _opt = opt; Features = f;
        _smrs = new (ushort, ushort, bool, int)[f.MappingGroups];
        _s2crs = new (uint, int)[f.MappingGroups];
        _banks = new SmmuV2Domain?[f.ContextBanks];
    }

    public string Name => "arm-smmu";
    public SmmuV2Features Features { get; }
    /// <summary>Faults the handlers read, in order.</summary>
    public Doorbell.Runtime.BoundedHistory<SmmuV2Fault> Faults => _faults;
    /// <summary>IOMMU_CAP_INTR_REMAP as the 2014 patch made arm-smmu claim it ("MSIs are just memory writes"); removed in
    /// 4.11. Off by default (today's driver); a kernel replaying the 2013–14 policy era turns it on.</summary>
    public bool ClaimsInterruptRemap { get; set; }

    uint R32(uint off) => _hw.ReadRegister32(off);
    void W32(uint off, uint v) => _hw.WriteRegister32(off, v);
    uint Gr1(uint off) => (1u << Features.PageShift) + off;
    uint Cb(int n, uint off) => (uint)((Features.NumPage + n) << Features.PageShift) + off;

    /// <summary>Probes the ID registers and resets the SMMU (arm_smmu_device_probe: cfg_probe + device_reset).</summary>
    public static SmmuV2Driver Probe(ISmmuHostAccess hw, IMemoryView bus, IPhysPageAllocator allocator, SmmuV2DriverOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(hw);
        ArgumentNullException.ThrowIfNull(bus);
        ArgumentNullException.ThrowIfNull(allocator);
        var opt = options ?? new SmmuV2DriverOptions();
        var id0 = hw.ReadRegister32(SmmuV2Gr0.ID0);
        var id1 = hw.ReadRegister32(SmmuV2Gr0.ID1);
        var id2 = hw.ReadRegister32(SmmuV2Gr0.ID2);
        var id7 = hw.ReadRegister32(SmmuV2Gr0.ID7);
        var s1 = (id0 & SmmuV2Field.Id0S1ts) != 0;
        var s2 = (id0 & SmmuV2Field.Id0S2ts) != 0;
        var nested = (id0 & SmmuV2Field.Id0Nts) != 0;
        if (!s1 && !s2) throw new IommuException(Errno.ENODEV, "no translation support");
        var sms = (id0 & SmmuV2Field.Id0Sms) != 0;
        var sidBits = (int)((id0 >> SmmuV2Field.Id0NumSidbShift) & 0xF);
        var groups = sms ? (int)(id0 & 0xFF) : 1 << sidBits;
        if (groups == 0) throw new IommuException(Errno.ENODEV, "stream-matching supported, but no SMRs present");
        var pageShift = (id1 & SmmuV2Field.Id1PageSize64K) != 0 ? 16 : 12;
        var numPage = 1 << (int)(((id1 >> SmmuV2Field.Id1NumPageNdxbShift) & 7) + 1);
        var numCb = (int)(id1 & 0xFF);
        var numS2Cb = (int)((id1 >> SmmuV2Field.Id1NumS2CbShift) & 0xFF);
        if (numS2Cb > numCb) throw new IommuException(Errno.ENODEV, $"impossible number of S2 context banks ({numS2Cb} > {numCb})");
        var irpts = (int)((id0 >> SmmuV2Field.Id0NumIrptShift) & 0xFF);
        var va = SmmuV2Options.DecodeSize(Math.Min((id2 >> SmmuV2Field.Id2UbsShift) & 0xF, 5u));
        var ipa = SmmuV2Options.DecodeSize(id2 & 0xF);
        var pa = SmmuV2Options.DecodeSize((id2 >> SmmuV2Field.Id2OasShift) & 0xF);
        var f = new SmmuV2Features(s1, s2, nested, sms, (id0 & SmmuV2Field.Id0Cttw) != 0, (id2 & SmmuV2Field.Id2Vmid16) != 0,
            (id0 & SmmuV2Field.Id0Atosns) == 0, groups, numCb, numS2Cb, irpts, sidBits, (ushort)((1 << sidBits) - 1), 0,
            va, ipa, pa, (id2 & SmmuV2Field.Id2Ptfs4K) != 0, (id2 & SmmuV2Field.Id2Ptfs16K) != 0, (id2 & SmmuV2Field.Id2Ptfs64K) != 0,
            pageShift, numPage, (int)((id7 >> 4) & 0xF));
        if (sms)
        {
            // arm_smmu_test_smr_masks: which ID and MASK bits the SMRs implement, found by writing SMR0 and reading back.
            hw.WriteRegister32(SmmuV2Gr0.SMR(0), f.StreamIdMask);
            var idMask = (ushort)(hw.ReadRegister32(SmmuV2Gr0.SMR(0)) & 0x7FFF);
            hw.WriteRegister32(SmmuV2Gr0.SMR(0), (uint)idMask << SmmuV2Field.SmrMaskShift);
            var maskMask = (ushort)((hw.ReadRegister32(SmmuV2Gr0.SMR(0)) >> SmmuV2Field.SmrMaskShift) & 0x7FFF);
            hw.WriteRegister32(SmmuV2Gr0.SMR(0), 0);
            f = f with { StreamIdMask = idMask, SmrMaskMask = maskMask };
        }
        if (irpts < numCb) throw new IommuException(Errno.ENODEV, $"found only {irpts} context irq(s) but {numCb} required");
        var d = new SmmuV2Driver(hw, bus, allocator, opt, f);
        d.Reset();
        return d;
    }

    /// <summary>arm_smmu_device_reset.</summary>
    void Reset()
    {
        W32(SmmuV2Gr0.sGFSR, R32(SmmuV2Gr0.sGFSR)); // clear the global FSR
        var initial = _opt.DisableBypass ? SmmuV2Field.S2crTypeFault : SmmuV2Field.S2crTypeBypass;
        for (var i = 0; i < _s2crs.Length; i++)
        {
            _s2crs[i] = (initial, 0);
            WriteSme(i);
        }
        for (var n = 0; n < Features.ContextBanks; n++)
        {
            W32(Cb(n, SmmuV2Cb.SCTLR), 0);
            W32(Cb(n, SmmuV2Cb.FSR), SmmuV2Field.FsrFaults | SmmuV2Field.FsrMulti);
        }
        W32(SmmuV2Gr0.TLBIALLH, 0);
        W32(SmmuV2Gr0.TLBIALLNSNH, 0);
        var cr0 = R32(SmmuV2Gr0.sCR0);
        cr0 |= SmmuV2Field.Cr0Gfre | SmmuV2Field.Cr0Gfie | SmmuV2Field.Cr0Gcfgfre | SmmuV2Field.Cr0Gcfgfie;
        cr0 &= ~(SmmuV2Field.Cr0ClientPd | SmmuV2Field.Cr0Usfcfg | SmmuV2Field.Cr0Fb | SmmuV2Field.Cr0Vmidpne | SmmuV2Field.Cr0Ptm);
        if (_opt.DisableBypass) cr0 |= SmmuV2Field.Cr0Usfcfg;
        if (Features.Vmid16) cr0 |= SmmuV2Field.Cr0Vmid16En;
        SyncGlobal();
        W32(SmmuV2Gr0.sCR0, cr0);
    }

    void WriteSme(int idx)
    {
        // arm_smmu_write_sme: S2CR first, then the SMR, so a newly valid SMR never meets a stale S2CR.
        var (type, cb) = _s2crs[idx];
        W32(SmmuV2Gr0.S2CR(idx), type << SmmuV2Field.S2crTypeShift | (uint)(cb & 0xFF));
        if (Features.StreamMatching)
        {
            var s = _smrs[idx];
            W32(SmmuV2Gr0.SMR(idx), (s.Valid ? SmmuV2Field.SmrValid : 0) | (uint)s.Mask << SmmuV2Field.SmrMaskShift | s.Id);
        }
    }

    void SyncGlobal()
    {
        W32(SmmuV2Gr0.sTLBGSYNC, 0);
        for (var i = 0; i < _opt.PollLimit; i++)
            if ((R32(SmmuV2Gr0.sTLBGSTATUS) & 1) == 0) return;
        throw new IommuException(Errno.ETIMEDOUT, "TLB sync timed out -- SMMU may be deadlocked");
    }

    internal void SyncContext(int cb)
    {
        W32(Cb(cb, SmmuV2Cb.TLBSYNC), 0);
        for (var i = 0; i < _opt.PollLimit; i++)
            if ((R32(Cb(cb, SmmuV2Cb.TLBSTATUS)) & SmmuV2Field.TlbStatusSActive) == 0) return;
        throw new IommuException(Errno.ETIMEDOUT, $"CB{cb} TLB sync timed out");
    }

    // ----- masters and stream mapping -----

    /// <summary>arm_smmu_find_sme: an SMR entirely covering (id, mask), else a free one; a partial overlap is EINVAL.</summary>
    int FindSme(ushort id, ushort mask)
    {
        if (!Features.StreamMatching) return id < _s2crs.Length ? id : -Errno.ENOSPC;
        var free = -Errno.ENOSPC;
        for (var i = 0; i < _smrs.Length; i++)
        {
            var s = _smrs[i];
            if (!s.Valid)
            {
                if (free < 0) free = i;
                continue;
            }
            if ((mask & s.Mask) == mask && ((id ^ s.Id) & ~s.Mask) == 0) return i;
            if (((id ^ s.Id) & ~(s.Mask | mask)) == 0) return -Errno.EINVAL;
        }
        return free;
    }

    public IommuGroup ProbeDevice(IommuDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (_masters.ContainsKey(device)) throw new IommuException(Errno.EEXIST, $"{device.Name} already probed");
        if (device.StreamIds.Count == 0) throw new IommuException(Errno.ENODEV, $"{device.Name} has no StreamID");
        var idx = new int[device.StreamIds.Count];
        for (var i = 0; i < idx.Length; i++)
        {
            var sid = device.StreamIds[i];
            if ((sid & ~(uint)Features.StreamIdMask) != 0)
                throw new IommuException(Errno.EINVAL, $"StreamID 0x{sid:x} of {device.Name} out of range (mask 0x{Features.StreamIdMask:x})");
            var r = FindSme((ushort)sid, 0);
            if (r < 0)
            {
                for (var j = 0; j < i; j++) ReleaseSme(idx[j]);
                throw new IommuException(-r, $"no stream mapping entry for SID 0x{sid:x} of {device.Name}");
            }
            var s = _smrs.Length > 0 ? _smrs[r] : default;
            if (_smrs.Length > 0)
            {
                if (s.Count == 0) s = ((ushort)sid, 0, true, 0);
                _smrs[r] = s with { Count = s.Count + 1 };
            }
            idx[i] = r;
        }
        foreach (var i in idx)
        {
            _s2crs[i] = (_opt.DisableBypass ? SmmuV2Field.S2crTypeFault : SmmuV2Field.S2crTypeBypass, 0);
            WriteSme(i);
        }
        _masters[device] = idx;
        return IommuGroups.Create(this, device, _nextGroupId++);
    }

    void ReleaseSme(int i)
    {
        if (_smrs.Length == 0) return;
        var s = _smrs[i];
        if (--s.Count > 0) { _smrs[i] = s; return; }
        _smrs[i] = default;
        _s2crs[i] = (_opt.DisableBypass ? SmmuV2Field.S2crTypeFault : SmmuV2Field.S2crTypeBypass, 0);
        WriteSme(i);
    }

    public void ReleaseDevice(IommuDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var idx = GetMaster(device);
        foreach (var i in idx) ReleaseSme(i);
        _masters.Remove(device);
    }

    int[] GetMaster(IommuDevice device) =>
        _masters.TryGetValue(device, out var m) ? m : throw new IommuException(Errno.ENODEV, $"{device.Name} was not probed by {Name}");

    /// <summary>The stream mapping entries (SMR/S2CR indices) of a probed device.</summary>
    public IReadOnlyList<int> StreamMapEntries(IommuDevice device) => GetMaster(device);

    // ----- domains -----

    public IommuDomain AllocateDomain(IommuDomainType type, IommuDomainStage? stage = null)
    {
        if (type is IommuDomainType.Blocked or IommuDomainType.Identity)
            return new SmmuV2Domain(this, type, null, -1, null);
        // arm_smmu_init_domain_context: the requested stage if implemented, else the other one.
        var st = stage ?? IommuDomainStage.Stage1;
        if (st == IommuDomainStage.Stage1 && !Features.Stage1) st = IommuDomainStage.Stage2;
        if (st == IommuDomainStage.Stage2 && !Features.Stage2) st = IommuDomainStage.Stage1;
        if (!Supports(_opt.Granule)) throw new IommuException(Errno.EOPNOTSUPP, $"granule {_opt.Granule} not supported");
        // Stage-1 banks come after the stage-2-only ones.
        var start = st == IommuDomainStage.Stage1 ? Features.Stage2ContextBanks : 0;
        var cb = -1;
        for (var i = start; i < Features.ContextBanks; i++)
            if (_banks[i] is null) { cb = i; break; }
        if (cb < 0) throw new IommuException(Errno.ENOSPC, "no free context bank");
        int ias, oas;
        if (st == IommuDomainStage.Stage1) { ias = Math.Min(Features.VaBits, 48); oas = Features.IpaBits; }
        else { ias = Features.IpaBits; oas = Features.PaBits; }
        var domain = new SmmuV2Domain(this, type, st, cb, null);
        var ret = IoPageTable.Create(_bus, _alloc, st == IommuDomainStage.Stage1 ? IoPageTableFormat.Stage1 : IoPageTableFormat.Stage2,
            _opt.Granule, ias, oas, out var table, domain);
        if (ret < 0) throw new IommuException(-ret, "io-pgtable allocation failed");
        domain.Table = table;
        _banks[cb] = domain;
        WriteContextBank(domain);
        return domain;
    }

    bool Supports(Granule g) => g switch
    {
        Granule.Size4K => Features.Granule4K,
        Granule.Size16K => Features.Granule16K,
        _ => Features.Granule64K,
    };

    static uint TgEncoding(Granule g) => g switch { Granule.Size4K => 0, Granule.Size64K => 1, _ => 2 };

    /// <summary>arm_smmu_write_context_bank: CBA2R, CBAR, TCR2, TTBRs, TCR, MAIRs, then SCTLR (enable last).</summary>
    void WriteContextBank(SmmuV2Domain d)
    {
        var cb = d.ContextBank;
        var t = d.Table!;
        var s1 = d.Stage == IommuDomainStage.Stage1;
        W32(Gr1(SmmuV2Gr1.CBA2R(cb)), SmmuV2Field.Cba2rVa64 | (Features.Vmid16 ? (uint)d.Vmid << SmmuV2Field.Cba2rVmid16Shift : 0));
        var cbar = (s1 ? SmmuV2Field.CbarTypeS1BypassS2 : SmmuV2Field.CbarTypeS2) << SmmuV2Field.CbarTypeShift
            | (uint)d.IrqIndex << SmmuV2Field.CbarIrptNdxShift;
        if (s1) cbar |= 3u << SmmuV2Field.CbarBpShCfgShift | 0xFu << SmmuV2Field.CbarMemAttrShift; // NSH, write-back
        else if (!Features.Vmid16) cbar |= d.Vmid & 0xFFu;
        W32(Gr1(SmmuV2Gr1.CBAR(cb)), cbar);
        var tcrCommon = TgEncoding(t.Granule) << SmmuV2Field.TcrTg0Shift | 3u << 12 | 1u << 10 | 1u << 8 | (uint)(64 - t.InputSize);
        if (s1)
        {
            var ps = (uint)SmmuV2Options.EncodeSize(t.OutputSize);
            W32(Cb(cb, SmmuV2Cb.TCR2), ps | SmmuV2Field.Tcr2As | 7u << 15);
            _hw.WriteRegister64(Cb(cb, SmmuV2Cb.TTBR0), t.TableBase | (ulong)d.Asid << 48);
            _hw.WriteRegister64(Cb(cb, SmmuV2Cb.TTBR1), (ulong)d.Asid << 48);
            W32(Cb(cb, SmmuV2Cb.TCR), tcrCommon | SmmuV2Field.TcrEpd1);
            W32(Cb(cb, SmmuV2Cb.MAIR0), (uint)IoPageTable.Mair);
            W32(Cb(cb, SmmuV2Cb.MAIR1), (uint)(IoPageTable.Mair >> 32));
        }
        else
        {
            var sl0 = t.Granule == Granule.Size4K ? 2 - t.StartLevel : 3 - t.StartLevel;
            _hw.WriteRegister64(Cb(cb, SmmuV2Cb.TTBR0), t.TableBase);
            W32(Cb(cb, SmmuV2Cb.TCR), 1u << 31 | (uint)SmmuV2Options.EncodeSize(t.OutputSize) << SmmuV2Field.TcrS2PaSizeShift
                | (uint)sl0 << SmmuV2Field.TcrSl0Shift | tcrCommon);
        }
        var sctlr = SmmuV2Field.SctlrCfie | SmmuV2Field.SctlrCfre | SmmuV2Field.SctlrAfe | SmmuV2Field.SctlrTre | SmmuV2Field.SctlrM;
        if (s1) sctlr |= SmmuV2Field.SctlrAsidPne;
        W32(Cb(cb, SmmuV2Cb.SCTLR), sctlr);
    }

    public void FreeDomain(IommuDomain domain)
    {
        if (domain is not SmmuV2Domain d || !ReferenceEquals(d.Driver, this)) throw new IommuException(Errno.EINVAL, "not a domain of this SMMU");
        if (d.Freed) throw new IommuException(Errno.EINVAL, "domain already freed");
        if (d.ContextBank >= 0 && _masters.Values.Any(m => m.Any(i => _s2crs[i] == (SmmuV2Field.S2crTypeTranslate, d.ContextBank))))
            throw new IommuException(Errno.EBUSY, "domain still has devices attached");
        d.Freed = true;
        if (d.ContextBank < 0) return;
        FlushAll(d);
        // arm_smmu_destroy_domain_context: disable the bank, free it, free the tables.
        W32(Cb(d.ContextBank, SmmuV2Cb.SCTLR), 0);
        _banks[d.ContextBank] = null;
        d.Table?.Free();
    }

    public void AttachDevice(IommuDomain domain, IommuDevice device)
    {
        ArgumentNullException.ThrowIfNull(domain);
        ArgumentNullException.ThrowIfNull(device);
        if (domain is not SmmuV2Domain d || !ReferenceEquals(d.Driver, this)) throw new IommuException(Errno.EINVAL, "domain belongs to another IOMMU");
        if (d.Freed) throw new IommuException(Errno.EINVAL, "domain was freed");
        var idx = GetMaster(device);
        var type = d.Type switch
        {
            IommuDomainType.Blocked => SmmuV2Field.S2crTypeFault,
            IommuDomainType.Identity => SmmuV2Field.S2crTypeBypass,
            _ => SmmuV2Field.S2crTypeTranslate,
        };
        // arm_smmu_domain_add_master: only the S2CRs change; the SMRs stay valid.
        foreach (var i in idx)
        {
            var cb = d.ContextBank < 0 ? 0 : d.ContextBank;
            if (_s2crs[i] == (type, cb)) continue;
            _s2crs[i] = (type, cb);
            W32(SmmuV2Gr0.S2CR(i), type << SmmuV2Field.S2crTypeShift | (uint)cb);
        }
    }

    // ----- capabilities and reserved regions -----

    public bool Capable(IommuCapability capability) => capability switch
    {
        IommuCapability.CacheCoherency => Features.CoherentWalk,
        IommuCapability.NoExec => true,
        IommuCapability.InterruptRemap => ClaimsInterruptRemap,
        _ => false,
    };

    /// <summary>arm_smmu_get_resv_regions: the software-managed MSI window (MSI_IOVA_BASE/LENGTH), as arm-smmu-v3.</summary>
    public IReadOnlyList<ReservedRegion> GetReservedRegions(IommuDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        _ = GetMaster(device);
        return [new ReservedRegion(SoftwareMsiWindow.Base, SoftwareMsiWindow.Length, IoProt.Write | IoProt.Mmio | IoProt.NoExec, ReservedRegionType.SoftwareMsi)];
    }

    // ----- TLB maintenance -----

    /// <summary>arm_smmu_tlb_inv_range_s1/_s2 + context sync: one TLBI per granule, TLBIASID/TLBIVMID when large.</summary>
    internal void InvalidateRange(SmmuV2Domain d, ulong iova, ulong size, ulong granule, bool leaf)
    {
        if (size == 0 || d.ContextBank < 0) return;
        var cb = d.ContextBank;
        if (size / granule > 256)
        {
            FlushAll(d);
            return;
        }
        if (d.Stage == IommuDomainStage.Stage1)
        {
            var reg = Cb(cb, leaf ? SmmuV2Cb.TLBIVAL : SmmuV2Cb.TLBIVA);
            for (var a = iova & ~(granule - 1); a < iova + size; a += granule)
                _hw.WriteRegister64(reg, (a >> 12) | (ulong)d.Asid << 48);
        }
        else
        {
            var reg = Cb(cb, leaf ? SmmuV2Cb.TLBIIPAS2L : SmmuV2Cb.TLBIIPAS2);
            for (var a = iova & ~(granule - 1); a < iova + size; a += granule)
                _hw.WriteRegister64(reg, a >> 12);
        }
        SyncContext(cb);
    }

    /// <summary>arm_smmu_tlb_inv_context_s1 (TLBIASID + context sync) / _s2 (TLBIVMID + global sync).</summary>
    internal void FlushAll(SmmuV2Domain d)
    {
        if (d.ContextBank < 0) return;
        if (d.Stage == IommuDomainStage.Stage1)
        {
            W32(Cb(d.ContextBank, SmmuV2Cb.TLBIASID), d.Asid);
            SyncContext(d.ContextBank);
        }
        else
        {
            W32(SmmuV2Gr0.TLBIVMID, d.Vmid);
            SyncGlobal();
        }
    }

    // ----- fault handlers -----

    /// <summary>arm_smmu_context_fault for every bank on context interrupt <paramref name="irqIndex"/>: reads and
    /// clears FSR, terminates a stalled transaction. Returns the faults handled (IRQ_HANDLED when any).</summary>
    public int HandleContextInterrupt(int irqIndex)
    {
        var n = 0;
        for (var cb = 0; cb < _banks.Length; cb++)
        {
            if (_banks[cb] is not { } d || d.IrqIndex != irqIndex) continue;
            var fsr = R32(Cb(cb, SmmuV2Cb.FSR));
            if ((fsr & (SmmuV2Field.FsrFaults | SmmuV2Field.FsrMulti)) == 0) continue;
            var fsynr0 = R32(Cb(cb, SmmuV2Cb.FSYNR0));
            var far = _hw.ReadRegister64(Cb(cb, SmmuV2Cb.FAR));
            var sid = R32(Gr1(SmmuV2Gr1.CBFRSYNRA(cb))) & 0xFFFF;
            _faults.Add(new SmmuV2Fault(false, cb, fsr, fsynr0, far, sid));
            W32(Cb(cb, SmmuV2Cb.FSR), fsr);
            if ((fsr & SmmuV2Field.FsrSs) != 0) W32(Cb(cb, SmmuV2Cb.RESUME), SmmuV2Field.ResumeTerminate);
            n++;
        }
        return n;
    }

    /// <summary>arm_smmu_global_fault: reads sGFSR and its syndromes, clears it. Returns whether there was one.</summary>
    public bool HandleGlobalInterrupt()
    {
        var gfsr = R32(SmmuV2Gr0.sGFSR);
        if (gfsr == 0) return false;
        var syn0 = R32(SmmuV2Gr0.sGFSYNR0);
        var syn1 = R32(SmmuV2Gr0.sGFSYNR1);
        var far = _hw.ReadRegister64(SmmuV2Gr0.sGFAR);
        _faults.Add(new SmmuV2Fault(true, -1, gfsr, syn0, far, syn1 & 0xFFFF));
        W32(SmmuV2Gr0.sGFSR, gfsr);
        return true;
    }

    /// <summary>arm_smmu_iova_to_phys_hard: ATS1PR through the domain's bank, PAR read back (0 on a fault).</summary>
    public ulong IovaToPhysHard(SmmuV2Domain d, ulong iova)
    {
        ArgumentNullException.ThrowIfNull(d);
        if (d.ContextBank < 0 || !Features.Atos || d.Stage != IommuDomainStage.Stage1) return d.IovaToPhys(iova);
        _hw.WriteRegister64(Cb(d.ContextBank, SmmuV2Cb.ATS1PR), iova & ~0xFFFUL);
        for (var i = 0; i < _opt.PollLimit; i++)
            if ((R32(Cb(d.ContextBank, SmmuV2Cb.ATSR)) & SmmuV2Field.AtsrActive) == 0) break;
        var par = _hw.ReadRegister64(Cb(d.ContextBank, SmmuV2Cb.PAR));
        if ((par & SmmuV2Field.ParF) != 0) return 0;
        return (par & SmmuV2Field.ParPaMask) | (iova & 0xFFF);
    }
}

/// <summary>An SMMUv2 domain (struct arm_smmu_domain): a context bank over an io-pgtable.</summary>
public sealed class SmmuV2Domain : IoPageTableDomain, IIoTlbFlushOps
{
    readonly SmmuV2Driver _smmu;
    ulong _gatherStart = ulong.MaxValue, _gatherEnd, _gatherGranule;

    internal SmmuV2Domain(SmmuV2Driver smmu, IommuDomainType type, IommuDomainStage? stage, int contextBank, IoPageTable? table)
        : base(smmu, type, table)
    {
        _smmu = smmu;
        Stage = stage;
        ContextBank = contextBank;
    }

    public IommuDomainStage? Stage { get; }
    /// <summary>The context bank (−1 for blocked/identity domains).</summary>
    public int ContextBank { get; }
    /// <summary>ASID = bank index, VMID = bank index + 1, context interrupt = bank index (Linux's choices).</summary>
    public ushort Asid => (ushort)Math.Max(ContextBank, 0);
    public ushort Vmid => (ushort)(ContextBank + 1);
    public int IrqIndex => ContextBank;
    public override ulong Unmap(ulong iova, ulong size)
    {
        var t = Paging("unmap");
        _gatherStart = ulong.MaxValue; _gatherEnd = 0; _gatherGranule = 0;
        var n = t.Unmap(iova, size);
        if (_gatherStart != ulong.MaxValue)
            _smmu.InvalidateRange(this, _gatherStart, _gatherEnd - _gatherStart, _gatherGranule, leaf: true);
        return n;
    }

    void Gather(ulong iova, ulong size, ulong granule)
    {
        _gatherStart = Math.Min(_gatherStart, iova);
        _gatherEnd = Math.Max(_gatherEnd, iova + size);
        _gatherGranule = _gatherGranule == 0 ? granule : Math.Min(_gatherGranule, granule);
    }

    // A walk flush is issued at once, as arm_smmu_tlb_inv_walk_s1/_s2 do (TLBIVA / TLBIIPAS2 over the range, then a
    // sync): io-pgtable calls it when a table is replaced or about to be freed, also from map, where no gather follows.
    void IIoTlbFlushOps.FlushWalk(ulong iova, ulong size, ulong granule) =>
        _smmu.InvalidateRange(this, iova, size, granule, leaf: false);

    void IIoTlbFlushOps.AddPage(ulong iova, ulong granule) => Gather(iova, granule, granule);
}
