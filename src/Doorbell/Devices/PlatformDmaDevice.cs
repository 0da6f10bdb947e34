using Doorbell.Memory;

namespace Doorbell.Devices;

// Known limits: one transfer at a time, processed synchronously at the START write, at most 1 MiB; the
// interrupt is level-sensitive (asserted while DONE or ERROR is set and IRQ_EN is on).

/// <summary>Register map of the platform DMA engine, declared once. Doorbell-defined device ("doorbell,dma-engine").</summary>
public static class PlatformDmaRegs
{
    public const ulong Id = 0x00, Ctrl = 0x04, Status = 0x08, Src = 0x10, Dst = 0x18, Len = 0x20, Cmd = 0x24;
    public const uint IdValue = 0xD0B1_0002;
    public const uint CtrlIrqEnable = 1;
    public const uint StatusDone = 1, StatusError = 2;
    public const uint CmdStart = 1;
    public const uint MaxLength = 1 << 20;
    public const ulong RegionSize = 0x1000;

    public static readonly (ulong Offset, int Width, string Name, string Access)[] Table =
    [
        (0x00, 4, "ID", "RO"), (0x04, 4, "CTRL", "RW"), (0x08, 4, "STATUS", "W1C"), (0x10, 8, "SRC", "RW"),
        (0x18, 8, "DST", "RW"), (0x20, 4, "LEN", "RW"), (0x24, 4, "CMD", "WO"),
    ];
}

/// <summary>
/// A non-PCI DMA engine for vfio-platform: MMIO registers, one wired SPI, and DMA through the IOMMU at a
/// fixed StreamID (from the board's `iommus` property), or straight to the bus without an IOMMU.
/// </summary>
public sealed class PlatformDmaDevice : IMmioHandler
{
    readonly IMemoryPort _dma;
    readonly IInterruptLine _irq;
    readonly BusAttributes _attr;
    readonly byte[] _buffer = new byte[PlatformDmaRegs.MaxLength];
    uint _ctrl, _status, _len;
    ulong _src, _dst;

    public PlatformDmaDevice(IMemoryPort bus, IIommuUpstream? iommu, uint streamId, IInterruptLine irq)
    {
        ArgumentNullException.ThrowIfNull(bus);
        _irq = irq ?? throw new ArgumentNullException(nameof(irq));
        StreamId = streamId;
        _dma = iommu?.CreateStreamPort(streamId) ?? bus;
        _attr = BusAttributes.FromDevice(streamId);
    }

    public uint StreamId { get; }
    public int Transfers { get; private set; }

    public BusStatus Read(ulong offset, int size, out ulong value)
    {
        value = offset switch
        {
            PlatformDmaRegs.Id => PlatformDmaRegs.IdValue,
            PlatformDmaRegs.Ctrl => _ctrl,
            PlatformDmaRegs.Status => _status,
            PlatformDmaRegs.Src => _src,
            PlatformDmaRegs.Src + 4 => _src >> 32,
            PlatformDmaRegs.Dst => _dst,
            PlatformDmaRegs.Dst + 4 => _dst >> 32,
            PlatformDmaRegs.Len => _len,
            _ => 0,
        };
        if (size == 4) value &= 0xFFFF_FFFF;
        return BusStatus.Ok;
    }

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes) => Read(offset, size, out value);

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        switch (offset)
        {
            case PlatformDmaRegs.Ctrl: _ctrl = (uint)value & PlatformDmaRegs.CtrlIrqEnable; break;
            case PlatformDmaRegs.Status: _status &= ~(uint)value; break;
            case PlatformDmaRegs.Src: _src = size == 8 ? value : (_src & ~0xFFFF_FFFFUL) | (uint)value; break;
            case PlatformDmaRegs.Src + 4: _src = (_src & 0xFFFF_FFFFUL) | (value << 32); break;
            case PlatformDmaRegs.Dst: _dst = size == 8 ? value : (_dst & ~0xFFFF_FFFFUL) | (uint)value; break;
            case PlatformDmaRegs.Dst + 4: _dst = (_dst & 0xFFFF_FFFFUL) | (value << 32); break;
            case PlatformDmaRegs.Len: _len = (uint)value; break;
            case PlatformDmaRegs.Cmd: if ((value & PlatformDmaRegs.CmdStart) != 0) Run(); break;
        }
        UpdateIrq();
        return BusStatus.Ok;
    }

    void Run()
    {
        Transfers++;
        if (_len > PlatformDmaRegs.MaxLength) { _status |= PlatformDmaRegs.StatusError; return; }
        var span = _buffer.AsSpan(0, (int)_len);
        if (_dma.Read(_src, span, _attr) != BusStatus.Ok || _dma.Write(_dst, span, _attr) != BusStatus.Ok)
            _status |= PlatformDmaRegs.StatusError;
        else
            _status |= PlatformDmaRegs.StatusDone;
    }

    void UpdateIrq() => _irq.SetLevel((_ctrl & PlatformDmaRegs.CtrlIrqEnable) != 0 && _status != 0);
}
