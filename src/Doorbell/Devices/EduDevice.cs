using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Timing;

namespace Doorbell.Devices;

// Known limits: the factorial is computed at the write (QEMU uses a thread), so STATUS.COMPUTING is never seen
// set; the result wraps at 32 bits as QEMU's does. DMA completes 100 ms of virtual time after CMD, or at the
// next access to the device's registers (whichever comes first: the machine is idle while the harness polls,
// the way QEMU's icount clock warps over an idle vCPU). Out-of-range DMA (QEMU 7.2 aborts, later versions
// overrun the buffer) transfers nothing. Facts: QEMU 7.2 hw/misc/edu.c, docs/specs/edu.rst [QEDU].

/// <summary>Register map of QEMU's edu device (BAR0), declared once [QEDU].</summary>
public static class EduRegs
{
    public const ulong Id = 0x00, Liveness = 0x04, Factorial = 0x08, Status = 0x20, IrqStatus = 0x24,
        IrqRaise = 0x60, IrqAck = 0x64, DmaSrc = 0x80, DmaDst = 0x88, DmaCount = 0x90, DmaCmd = 0x98;
    public const uint IdValue = 0x010000ed;
    public const uint StatusComputing = 0x01, StatusIrqFact = 0x80;
    public const ulong DmaRun = 1, DmaToRam = 2, DmaIrq = 4;
    public const uint FactIrq = 0x001, DmaIrqBit = 0x100;
    public const ulong DmaBufferBase = 0x40000, DmaBufferSize = 0x1000;
    public const long DmaDelayNs = 100_000_000;

    internal enum Reg { None, Id, Liveness, Factorial, Status, IrqStatus, IrqRaise, IrqAck, DmaSrc, DmaDst, DmaCount, DmaCmd }

    // Declared once: the device looks each access up here and switches on the id. QEMU's edu answers only at a
    // register's own offset (a 4-byte access to a 64-bit DMA register is its low half; +4 is nothing), and reads all
    // ones where it has nothing to say (unknown offsets, IRQ_RAISE/IRQ_ACK), so it uses the table's lookup
    // (RegisterBlock.TryFind) and access kinds rather than the generic dispatch's RAZ/WI rules.
    public static readonly RegisterDescriptor[] Table =
    [
        new((uint)Id, 4, "ID", RegisterAccess.ReadOnly, Id: (int)Reg.Id),
        new((uint)Liveness, 4, "LIVENESS", RegisterAccess.ReadWrite, Id: (int)Reg.Liveness),
        new((uint)Factorial, 4, "FACTORIAL", RegisterAccess.ReadWrite, Id: (int)Reg.Factorial),
        new((uint)Status, 4, "STATUS", RegisterAccess.ReadWrite, Id: (int)Reg.Status),
        new((uint)IrqStatus, 4, "IRQ_STATUS", RegisterAccess.ReadOnly, Id: (int)Reg.IrqStatus),
        new((uint)IrqRaise, 4, "IRQ_RAISE", RegisterAccess.WriteOnly, Id: (int)Reg.IrqRaise),
        new((uint)IrqAck, 4, "IRQ_ACK", RegisterAccess.WriteOnly, Id: (int)Reg.IrqAck),
        new((uint)DmaSrc, 8, "DMA_SRC", RegisterAccess.ReadWrite, Id: (int)Reg.DmaSrc),
        new((uint)DmaDst, 8, "DMA_DST", RegisterAccess.ReadWrite, Id: (int)Reg.DmaDst),
        new((uint)DmaCount, 8, "DMA_COUNT", RegisterAccess.ReadWrite, Id: (int)Reg.DmaCount),
        new((uint)DmaCmd, 8, "DMA_CMD", RegisterAccess.ReadWrite, Id: (int)Reg.DmaCmd),
    ];

    /// <summary>The table compiled for lookup (BAR 0 is 1 MiB; the registers end at 0xA0).</summary>
    public static readonly RegisterBlock Block = new("edu", Table, 1 << 20, "QEMU edu.rst (read-only register)");
}

/// <summary>QEMU's `edu` educational PCI device (1234:11e8), register-compatible with QEMU 7.2.</summary>
public sealed class EduDevice : PciFunction
{
    readonly VirtualClock _clock;
    readonly byte[] _buffer = new byte[EduRegs.DmaBufferSize];
    uint _liveness, _fact, _status, _irqStatus;
    ulong _src, _dst, _count, _cmd;
    long _dmaEvent = -1;
    long _dmaDeadline;

    public EduDevice(VirtualClock clock, ulong dmaMask = (1UL << 28) - 1) : base(0x1234, 0x11e8, 0x00FF00, 0x10, name: "edu")
    {
        _clock = clock ?? throw new ArgumentNullException(nameof(clock));
        DmaMask = dmaMask;
        SetSubsystem(0x1AF4, 0x1100); // QEMU's default subsystem IDs
        SetInterruptPin(1);
        AddMsi(1, is64Bit: true, perVectorMask: false);
        DefineBar(0, PciBarKind.Mem32, 1 << 20);
    }

    public ulong DmaMask { get; }
    public ReadOnlySpan<byte> Buffer => _buffer;
    public uint IrqStatus => _irqStatus;
    /// <summary>DMA transfers rejected as out of the buffer's range (QEMU logs a guest error).</summary>
    public int RejectedDmaCount { get; private set; }
    /// <summary>DMA transfers whose bus access failed (IOMMU fault, no bus mastering).</summary>
    public int FailedDmaCount { get; private set; }

    protected override BusStatus BarRead(int bar, ulong offset, int size, out ulong value)
    {
        // QEMU's memory core rejects accesses below the region's 4-byte minimum (they read 0 and never reach
        // the device); edu itself answers all ones to an 8-byte read below 0x80.
        value = 0;
        if (size < 4) return BusStatus.Ok;
        value = ulong.MaxValue;
        if (offset < 0x80 && size != 4) return BusStatus.Ok;
        CompleteDmaIfPending();
        var known = EduRegs.Block.TryFind(offset, out var r) && r.Access != RegisterAccess.WriteOnly;
        value = !known ? ulong.MaxValue : (EduRegs.Reg)r.Id switch
        {
            EduRegs.Reg.Id => EduRegs.IdValue,
            EduRegs.Reg.Liveness => _liveness,
            EduRegs.Reg.Factorial => _fact,
            EduRegs.Reg.Status => _status,
            EduRegs.Reg.IrqStatus => _irqStatus,
            EduRegs.Reg.DmaSrc => _src,
            EduRegs.Reg.DmaDst => _dst,
            EduRegs.Reg.DmaCount => _count,
            _ => _cmd,
        };
        if (size == 4) value &= 0xFFFF_FFFF;
        return BusStatus.Ok;
    }

    protected override BusStatus BarWrite(int bar, ulong offset, int size, ulong value)
    {
        if (offset < 0x80 ? size != 4 : size is not (4 or 8)) return BusStatus.Ok;
        CompleteDmaIfPending();
        if (!EduRegs.Block.TryFind(offset, out var r) || r.Access == RegisterAccess.ReadOnly) return BusStatus.Ok;
        var dmaRunning = (_cmd & EduRegs.DmaRun) != 0;
        switch ((EduRegs.Reg)r.Id)
        {
            case EduRegs.Reg.Liveness: _liveness = ~(uint)value; break;
            case EduRegs.Reg.Factorial:
                if ((_status & EduRegs.StatusComputing) != 0) break;
                _fact = Factorial((uint)value);
                if ((_status & EduRegs.StatusIrqFact) != 0) Raise(EduRegs.FactIrq);
                break;
            case EduRegs.Reg.Status:
                _status = ((uint)value & EduRegs.StatusIrqFact) != 0 ? _status | EduRegs.StatusIrqFact : _status & ~EduRegs.StatusIrqFact;
                break;
            case EduRegs.Reg.IrqRaise: Raise((uint)value); break;
            case EduRegs.Reg.IrqAck: Lower((uint)value); break;
            case EduRegs.Reg.DmaSrc: if (!dmaRunning) _src = value; break;
            case EduRegs.Reg.DmaDst: if (!dmaRunning) _dst = value; break;
            case EduRegs.Reg.DmaCount: if (!dmaRunning) _count = value; break;
            case EduRegs.Reg.DmaCmd:
                if ((value & EduRegs.DmaRun) == 0 || dmaRunning) break;
                _cmd = value;
                _dmaDeadline = _clock.After(EduRegs.DmaDelayNs);
                _dmaEvent = _clock.Schedule(_dmaDeadline, RunDma);
                if (Host?.Trace is { } t) t.Emit(TraceCategory.Edu, Name, $"DMA {((value & EduRegs.DmaToRam) != 0 ? "buffer -> RAM" : "RAM -> buffer")} src 0x{_src:x} dst 0x{_dst:x} {_count} bytes, due at t={_dmaDeadline} ns");
                break;
        }
        return BusStatus.Ok;
    }

    static uint Factorial(uint n)
    {
        if (n >= 34) return 0; // 34! has 2^32 as a factor: the 32-bit product is 0 from there on (bounds the loop)
        uint r = 1;
        for (; n > 0; n--) r *= n; // wraps like QEMU's uint32_t
        return r;
    }

    /// <summary>The device is polled while the machine idles: let virtual time reach the pending DMA's deadline.</summary>
    void CompleteDmaIfPending()
    {
        if (_dmaEvent >= 0 && _clock.IsPending(_dmaEvent)) _clock.AdvanceTo(_dmaDeadline);
    }

    void RunDma()
    {
        _dmaEvent = -1;
        if ((_cmd & EduRegs.DmaRun) == 0) return;
        var toRam = (_cmd & EduRegs.DmaToRam) != 0;
        var devAddr = toRam ? _src : _dst;
        var busAddr = (toRam ? _dst : _src) & DmaMask;
        if (devAddr < EduRegs.DmaBufferBase || _count > EduRegs.DmaBufferSize || devAddr - EduRegs.DmaBufferBase > EduRegs.DmaBufferSize - _count)
        {
            RejectedDmaCount++;
            Host?.Report("QEMU edu.rst (DMA must stay inside the 4 KiB buffer at 0x40000)", $"edu DMA of {_count} bytes at device address 0x{devAddr:x} rejected");
        }
        else
        {
            var span = _buffer.AsSpan((int)(devAddr - EduRegs.DmaBufferBase), (int)_count);
            var s = toRam ? Dma.Write(busAddr, span, BusAttributes.Cpu) : Dma.Read(busAddr, span, BusAttributes.Cpu);
            if (s != BusStatus.Ok) FailedDmaCount++;
            if (Host?.Trace is { } t) t.Emit(TraceCategory.Edu, Name, $"DMA of {_count} bytes done: {s}");
        }
        _cmd &= ~EduRegs.DmaRun;
        if ((_cmd & EduRegs.DmaIrq) != 0) Raise(EduRegs.DmaIrqBit);
    }

    void Raise(uint bits)
    {
        _irqStatus |= bits;
        if (_irqStatus == 0) return;
        if (MsiEnabled) SignalMsi(0);
        else SetIntx(true);
    }

    void Lower(uint bits)
    {
        _irqStatus &= ~bits;
        if (_irqStatus == 0 && !MsiEnabled) SetIntx(false);
    }

    protected override void OnReset()
    {
        if (_dmaEvent >= 0) _clock.Cancel(_dmaEvent);
        _dmaEvent = -1;
        _liveness = _fact = _status = _irqStatus = 0;
        _src = _dst = _count = _cmd = 0;
        Array.Clear(_buffer);
    }
}
