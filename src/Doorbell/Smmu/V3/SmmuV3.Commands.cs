using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Vmsa;

namespace Doorbell.Smmu.V3;

// Command queue (IHI 0070 §4). Processing runs when PROD is written (or the queue is enabled, or a CMDQ_ERR is
// acknowledged) and stops at PROD, at an error, or after one pass over the queue (the bound on a guest loop).
public sealed partial class SmmuV3
{
    /// <summary>Invalidation commands since the last CMD_SYNC (strict mode: a device must not rely on them yet).</summary>
    int _unsyncedInvalidations;

    bool CmdqErrorActive => ((_gerror ^ _gerrorn) & SmmuV3Field.GerrorCmdq) != 0;

    void ProcessCommands()
    {
        if (!CmdqEnabled || CmdqErrorActive) return;
        var log2 = CmdqLog2Size;
        var idxMask = (1u << log2) - 1;
        var ptrMask = QueueIndexMask(log2);
        var baseAddr = _cmdqBase & SmmuV3Field.QBaseAddrMask;
        var cons = _cmdqCons & ptrMask;
        var prod = _cmdqProd & ptrMask;
        var budget = 1u << log2; // at most one pass over the queue per trigger
        // The queue's current RAM page, looked up once per page (commands are 16-byte aligned: never cross one).
        byte[]? page = null;
        var pageBase = ulong.MaxValue;
        var tracing = _trace.IsOn(TraceCategory.SmmuCmd);
        while (cons != prod && budget-- > 0)
        {
            var addr = baseAddr + (ulong)(cons & idxMask) * Cmd.Size;
            uint err;
            ulong q0, q1;
            var pb = addr & ~(ulong)(SparseMemory.PageSize - 1);
            if (pb != pageBase)
            {
                pageBase = pb;
                if (!_bus.TryGetRamPage(pb, out page)) page = null;
            }
            if (page is not null)
            {
                var o = (int)(addr - pb);
                q0 = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(o, 8));
                q1 = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(o + 8, 8));
                err = Execute(q0, q1);
            }
            else if (_bus.ReadU64(addr, out q0) != BusStatus.Ok || _bus.ReadU64(addr + 8, out q1) != BusStatus.Ok)
                err = SmmuV3Field.CerrorAbt;
            else
                err = Execute(q0, q1);
            if (err != SmmuV3Field.CerrorNone)
            {
                // CONS stays on the failing command; ERR says why; GERROR.CMDQ_ERR becomes active (§4.6).
                _cmdqCons = cons | (err << SmmuV3Field.CmdqConsErrShift);
                TraceEmit($"command queue error {err} at index {cons & idxMask} ({Cmd.Name((byte)q0)})");
                RaiseGlobalError(SmmuV3Field.GerrorCmdq);
                return;
            }
            if (tracing) TraceConsumed(q0);
            CommandsProcessed++;
            cons = (cons + 1) & ptrMask;
        }
        _cmdqCons = cons | (_cmdqCons & SmmuV3Field.CmdqConsErrMask);
    }

    void TraceConsumed(ulong q0) =>
        _trace.Emit(TraceCategory.SmmuCmd, TraceSource, $"{Cmd.Name((byte)q0)} consumed (SID 0x{(uint)(q0 >> Cmd.SidShift):x})");

    /// <summary>Executes one command; returns a CERROR code (0 = done).</summary>
    uint Execute(ulong q0, ulong q1)
    {
        var op = (byte)q0;
        var ssec = ((q0 >> Cmd.Ssec) & 1) != 0;
        if (ssec) return SmmuV3Field.CerrorIll; // Non-secure interface: SSEC must be 0
        var sid = (uint)(q0 >> Cmd.SidShift);
        switch (op)
        {
            case Cmd.PrefetchConfig:
            case Cmd.PrefetchAddr:
                // Prefetches are hints: permitted to do nothing (and must not make errors visible).
                return 0;
            case Cmd.CfgiSte:
                InvalidateSte(sid, sid);
                return 0;
            case Cmd.CfgiSteRange:
            {
                var range = (int)(q1 & Cmd.RangeMask);
                if (range == Cmd.CfgiAllRange) { InvalidateAllConfig(); return 0; }
                var span = 1UL << (range + 1);
                var first = sid & ~(span - 1);
                InvalidateSte((uint)first, (uint)Math.Min(first + span - 1, uint.MaxValue));
                return 0;
            }
            case Cmd.CfgiCd:
            {
                var ssid = (uint)((q0 >> Cmd.SsidShift) & 0xFFFFF);
                InvalidateCd(sid, ssid, all: false);
                return 0;
            }
            case Cmd.CfgiCdAll:
                InvalidateCd(sid, 0, all: true);
                return 0;
            case Cmd.TlbiNhAll:
            case Cmd.TlbiNhAsid:
            case Cmd.TlbiNhVa:
            case Cmd.TlbiNhVaa:
                if (!_o.Stage1) return SmmuV3Field.CerrorIll;
                return Tlbi(op, q0, q1);
            case Cmd.TlbiS12Vmall:
            case Cmd.TlbiS2Ipa:
                if (!_o.Stage2) return SmmuV3Field.CerrorIll;
                return Tlbi(op, q0, q1);
            case Cmd.TlbiNsnhAll:
                _iotlb.InvalidateAll();
                _unsyncedInvalidations++;
                return 0;
            case Cmd.Sync:
                return Sync(q0, q1);
            // Not implemented, hence not advertised: ATS (IDR0.ATS = 0), PRI (IDR0.PRI = 0), stall (STALL_MODEL = 0b01),
            // EL2 (IDR0.HYP = 0), Secure (no Secure interface). Each is ILLEGAL on such an SMMU.
            case Cmd.AtcInv:
            case Cmd.PriResp:
            case Cmd.Resume:
            case Cmd.StallTerm:
            case Cmd.TlbiEl2All:
            case Cmd.TlbiEl2Asid:
            case Cmd.TlbiEl2Va:
            case Cmd.TlbiEl2Vaa:
            case Cmd.TlbiEl3All:
            case Cmd.TlbiEl3Va:
            default:
                return SmmuV3Field.CerrorIll;
        }
    }

    /// <summary>The TLBI commands; returns a CERROR code (0 = done).</summary>
    uint Tlbi(byte op, ulong q0, ulong q1)
    {
        var vmid = (ushort)(q0 >> Cmd.VmidShift);
        var asid = (ushort)(q0 >> Cmd.AsidShift);
        var leaf = (q1 & 1) != 0;
        // Range form (IHI 0070 §4.4.1.1): TG != 0 with IDR3.RIL; without RIL the fields are RES0 and ignored.
        var tg = _o.RangeInvalidation ? (int)((q1 >> Cmd.TgShift) & 3) : 0;
        switch (op)
        {
            case Cmd.TlbiNhAll:
                _iotlb.InvalidateStage1ByVmid(vmid);
                _unsyncedInvalidations++;
                return 0;
            case Cmd.TlbiNhAsid:
                _iotlb.InvalidateByAsid(vmid, asid);
                _unsyncedInvalidations++;
                return 0;
            case Cmd.TlbiS12Vmall:
                _iotlb.InvalidateByVmid(vmid);
                _unsyncedInvalidations++;
                return 0;
        }
        var addr = op == Cmd.TlbiS2Ipa ? q1 & Cmd.IpaMask : q1 & Cmd.VaMask;
        if (tg == 0)
        {
            // TG = 0: NUM, SCALE and TTL are RES0, not used.
            InvalidateChunk(op, vmid, asid, addr, TlbiRange.Single, leaf);
            _unsyncedInvalidations++;
            return 0;
        }
        var num = (int)((q0 >> Cmd.NumShift) & 0x1F);
        var scale = (int)((q0 >> Cmd.ScaleShift) & 0x1F); // 5 bits: IDR5.DS = 0, bit 25 is RES0
        var ttl = (int)((q1 >> Cmd.TtlShift) & 3);
        // 16K granule, TTL = 0b01 is Reserved without DS and treated as 0b00 (no level-1 leaves).
        if (tg == 2 && ttl == 1) ttl = 0;
        // NUM = SCALE = 0 with TTL = 0b00 gives granule information with no purpose: Reserved, CERROR_ILL.
        if (num == 0 && scale == 0 && ttl == 0) return SmmuV3Field.CerrorIll;
        var range = new TlbiRange(tg, num, scale, ttl);
        if (StrictEnabled)
        {
            // With a level hint the address must be aligned to that level's block (TTL 1, 2) or the granule (TTL 3, 0).
            var align = ttl is 1 or 2 ? WalkCacheEntry.BlockShift(range.Granule, ttl) : (int)range.Granule;
            if ((addr & ((1UL << align) - 1)) != 0)
                ReportStrict(Cmd.Name(op), "IHI 0070 §4.4.1.1: the range invalidated is UNPREDICTABLE when Address is not aligned to the TTL level's block (or to TG for TTL 0b00/0b11)",
                    $"address 0x{addr:x} with TG {tg}, TTL {ttl}: invalidated from 0x{addr & ~(range.Granule.Bytes() - 1):x}");
        }
        // (NUM + 1) × 2^SCALE granules of TG from the address, TTL a level hint.
        InvalidateChunk(op, vmid, asid, addr, range, leaf);
        _unsyncedInvalidations++;
        return 0;
    }

    void InvalidateChunk(byte op, ushort vmid, ushort asid, ulong addr, TlbiRange range, bool leaf)
    {
        switch (op)
        {
            case Cmd.TlbiNhVa:
                if (range.IsRange) _iotlb.InvalidateByVaRange(vmid, asid, addr, range, leaf);
                else _iotlb.InvalidateByVa(vmid, asid, addr, leaf);
                break;
            case Cmd.TlbiNhVaa:
                if (range.IsRange) _iotlb.InvalidateByVaRangeAllAsids(vmid, addr, range, leaf);
                else _iotlb.InvalidateByVaAllAsids(vmid, addr, leaf);
                break;
            case Cmd.TlbiS2Ipa:
                if (range.IsRange) _iotlb.InvalidateByIpaRange(vmid, addr, range, leaf);
                else _iotlb.InvalidateByIpa(vmid, addr, leaf);
                break;
        }
    }

    uint Sync(ulong q0, ulong q1)
    {
        var cs = (uint)((q0 >> Cmd.SyncCsShift) & 3);
        if (cs == 3) return SmmuV3Field.CerrorIll; // CS = 0b11 is reserved (QEMU accepts it)
        _unsyncedInvalidations = 0;
        if (_cfgiPending.Count != 0) CompletePendingCfgi();
        SyncsCompleted++;
        switch (cs)
        {
            case Cmd.SyncCsIrq:
            {
                var addr = q1 & Cmd.SyncMsiAddrMask;
                if (_o.Msi && addr != 0)
                {
                    var data = (uint)(q0 >> Cmd.SyncMsiDataShift);
                    if (_bus.Write(new PhysAddr(addr), 4, data, _ownAttributes) != BusStatus.Ok)
                        RaiseGlobalError(SmmuV3Field.GerrorMsiCmdqAbt);
                }
                else
                    Pulse(CmdSyncIrq);
                break;
            }
            case Cmd.SyncCsSev:
                SevCount++; // a WFE wake-up event; nothing else to model
                break;
        }
        return 0;
    }

    static void Pulse(IInterruptLine? line)
    {
        if (line is null) return;
        line.SetLevel(true);
        line.SetLevel(false);
    }
}
