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

    internal enum Reg { None, Id, Ctrl, Status, Src, Dst, Len, Cmd }

    // Declared once: the table drives dispatch, the read-only / write-only / W1C rules and names.
    public static readonly RegisterDescriptor[] Table =
    [
        new((uint)Id, 4, "ID", RegisterAccess.ReadOnly, Id: (int)Reg.Id),
        new((uint)Ctrl, 4, "CTRL", RegisterAccess.ReadWrite, Id: (int)Reg.Ctrl),
        new((uint)Status, 4, "STATUS", RegisterAccess.WriteOneToClear, Id: (int)Reg.Status),
        new((uint)Src, 8, "SRC", RegisterAccess.ReadWrite, Id: (int)Reg.Src),
        new((uint)Dst, 8, "DST", RegisterAccess.ReadWrite, Id: (int)Reg.Dst),
        new((uint)Len, 4, "LEN", RegisterAccess.ReadWrite, Id: (int)Reg.Len),
        new((uint)Cmd, 4, "CMD", RegisterAccess.WriteOnly, Id: (int)Reg.Cmd),
    ];

    /// <summary>The table compiled for dispatch.</summary>
    public static readonly RegisterBlock Block = new("platform-dma", Table, RegionSize, "doorbell,dma-engine register map (read-only register)");
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

    public BusStatus Read(ulong offset, int size, out ulong value) => Read(offset, size, out value, BusAttributes.Cpu);

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        value = RegisterDispatch<RegisterFile>.Read(new RegisterFile(this), offset, size, in attributes);
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        RegisterDispatch<RegisterFile>.Write(new RegisterFile(this), offset, size, value, in attributes, null);
        UpdateIrq();
        return BusStatus.Ok;
    }

    readonly struct RegisterFile(PlatformDmaDevice d) : IRegisterFile
    {
        public static RegisterBlock Block => PlatformDmaRegs.Block;

        public ulong Read(RegisterRef r, in BusAttributes attributes) => (PlatformDmaRegs.Reg)r.Id switch
        {
            PlatformDmaRegs.Reg.Id => PlatformDmaRegs.IdValue,
            PlatformDmaRegs.Reg.Ctrl => d._ctrl,
            PlatformDmaRegs.Reg.Status => d._status,
            PlatformDmaRegs.Reg.Src => d._src,
            PlatformDmaRegs.Reg.Dst => d._dst,
            PlatformDmaRegs.Reg.Len => d._len,
            _ => 0,
        };

        public void Write(RegisterRef r, ulong value, in BusAttributes attributes)
        {
            switch ((PlatformDmaRegs.Reg)r.Id)
            {
                case PlatformDmaRegs.Reg.Ctrl: d._ctrl = (uint)value & PlatformDmaRegs.CtrlIrqEnable; break;
                case PlatformDmaRegs.Reg.Status: d._status &= ~(uint)value; break; // W1C: the bits written as one
                case PlatformDmaRegs.Reg.Src: d._src = value; break; // a 32-bit half arrives merged with the other half
                case PlatformDmaRegs.Reg.Dst: d._dst = value; break;
                case PlatformDmaRegs.Reg.Len: d._len = (uint)value; break;
                case PlatformDmaRegs.Reg.Cmd: if ((value & PlatformDmaRegs.CmdStart) != 0) d.Run(); break;
            }
        }
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
