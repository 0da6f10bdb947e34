using Doorbell.Memory;
using Doorbell.Pci;

namespace Doorbell.Devices;

// Known limits: transmit only (nothing is ever received: RBR reads 0, LSR.DR stays 0); no interrupts (IER is stored
// but no THRE/receive interrupt is raised); FIFOs are not modelled beyond FCR's enable bit in IIR; the modem
// control/status lines are not connected (MSR reads 0). Facts: QEMU docs/specs/pci-serial.rst (1b36:0002, one 16550 in
// an 8-byte I/O BAR 0, INTA) and the 16550 register set (National Semiconductor PC16550D data sheet).

/// <summary>Register offsets of the 16550 UART in BAR 0 [PC16550D table II].</summary>
public static class Uart16550Regs
{
    public const ulong RbrThr = 0, Ier = 1, IirFcr = 2, Lcr = 3, Mcr = 4, Lsr = 5, Msr = 6, Scr = 7;
    public const byte LcrDlab = 0x80, LsrThre = 0x20, LsrTemt = 0x40, IirNoInterrupt = 0x01, IirFifos = 0xC0;

    internal enum Reg { None, RbrThr, Ier, IirFcr, Lcr, Mcr, Lsr, Msr, Scr }

    // Declared once (byte registers: a byte-granular block, looked up per byte). Offset 0 is RBR/THR (DLL with LCR.DLAB),
    // 1 IER (DLM with DLAB), 2 IIR on reads and FCR on writes.
    public static readonly RegisterDescriptor[] Table =
    [
        new((uint)RbrThr, 1, "RBR_THR", RegisterAccess.ReadWrite, Id: (int)Reg.RbrThr),
        new((uint)Ier, 1, "IER", RegisterAccess.ReadWrite, Id: (int)Reg.Ier),
        new((uint)IirFcr, 1, "IIR_FCR", RegisterAccess.ReadWrite, Id: (int)Reg.IirFcr),
        new((uint)Lcr, 1, "LCR", RegisterAccess.ReadWrite, Id: (int)Reg.Lcr),
        new((uint)Mcr, 1, "MCR", RegisterAccess.ReadWrite, Id: (int)Reg.Mcr),
        new((uint)Lsr, 1, "LSR", RegisterAccess.ReadOnly, Id: (int)Reg.Lsr),
        new((uint)Msr, 1, "MSR", RegisterAccess.ReadOnly, Id: (int)Reg.Msr),
        new((uint)Scr, 1, "SCR", RegisterAccess.ReadWrite, Id: (int)Reg.Scr),
    ];

    /// <summary>The table compiled for lookup, one entry per byte of the 8-byte I/O BAR.</summary>
    public static readonly RegisterBlock Block = new("pci-serial", Table, 8, "PC16550D (read-only register)", byteGranular: true);
}

/// <summary>
/// QEMU's single-port PCI serial card (pci-serial, 1b36:0002): a 16550-compatible UART whose eight registers are an
/// I/O BAR — the device here that has an I/O BAR, so the I/O paths (host I/O window, VFIO I/O region, a VMM's guest I/O
/// BAR) have something to reach. Bytes written to THR are collected in <see cref="Transmitted"/>.
/// </summary>
public sealed class PciSerialDevice : PciFunction
{
    // The last 64 KiB transmitted: a guest that prints without end costs bounded memory.
    readonly Doorbell.Runtime.BoundedHistory<byte> _tx = new(64 * 1024);
    byte _ier, _lcr, _mcr, _scr, _dll = 0x0C, _dlm, _fcr;

    public PciSerialDevice() : base(0x1b36, 0x0002, 0x070002, 1, name: "pci-serial") // class serial, prog-if 16550
    {
        SetInterruptPin(1);
        DefineBar(0, PciBarKind.Io, 8);
    }

    /// <summary>The bytes the UART transmitted (THR writes with DLAB clear): the last 64 KiB, <c>Total</c> counts all.</summary>
    public Doorbell.Runtime.BoundedHistory<byte> Transmitted => _tx;
    /// <summary>The divisor latch (DLM:DLL) software programmed.</summary>
    public ushort Divisor => (ushort)(_dlm << 8 | _dll);

    byte ReadReg(ulong offset)
    {
        if (!Uart16550Regs.Block.TryFind(offset, out var r)) return 0;
        var dlab = (_lcr & Uart16550Regs.LcrDlab) != 0;
        return (Uart16550Regs.Reg)r.Id switch
        {
            Uart16550Regs.Reg.RbrThr => dlab ? _dll : (byte)0,
            Uart16550Regs.Reg.Ier => dlab ? _dlm : _ier,
            Uart16550Regs.Reg.IirFcr => (byte)(Uart16550Regs.IirNoInterrupt | ((_fcr & 1) != 0 ? Uart16550Regs.IirFifos : 0)),
            Uart16550Regs.Reg.Lcr => _lcr,
            Uart16550Regs.Reg.Mcr => _mcr,
            Uart16550Regs.Reg.Lsr => Uart16550Regs.LsrThre | Uart16550Regs.LsrTemt, // transmitter always empty: a write is sent at once
            Uart16550Regs.Reg.Scr => _scr,
            _ => 0, // MSR: modem lines not connected
        };
    }

    void WriteReg(ulong offset, byte v)
    {
        if (!Uart16550Regs.Block.TryFind(offset, out var r) || r.Access == RegisterAccess.ReadOnly) return;
        var dlab = (_lcr & Uart16550Regs.LcrDlab) != 0;
        switch ((Uart16550Regs.Reg)r.Id)
        {
            case Uart16550Regs.Reg.RbrThr: if (dlab) _dll = v; else _tx.Add(v); break;
            case Uart16550Regs.Reg.Ier: if (dlab) _dlm = v; else _ier = (byte)(v & 0x0F); break;
            case Uart16550Regs.Reg.IirFcr: _fcr = (byte)(v & 0xC9); break;
            case Uart16550Regs.Reg.Lcr: _lcr = v; break;
            case Uart16550Regs.Reg.Mcr: _mcr = (byte)(v & 0x1F); break;
            case Uart16550Regs.Reg.Scr: _scr = v; break;
        }
    }

    // A wider access covers consecutive registers, lowest offset in the lowest byte (as a CPU's I/O string access).
    protected override BusStatus BarRead(int bar, ulong offset, int size, out ulong value)
    {
        value = 0;
        for (var i = 0; i < size && offset + (ulong)i < 8; i++) value |= (ulong)ReadReg(offset + (ulong)i) << (8 * i);
        return BusStatus.Ok;
    }

    protected override BusStatus BarWrite(int bar, ulong offset, int size, ulong value)
    {
        for (var i = 0; i < size && offset + (ulong)i < 8; i++) WriteReg(offset + (ulong)i, (byte)(value >> (8 * i)));
        return BusStatus.Ok;
    }

    protected override void OnReset()
    {
        _tx.Clear();
        _ier = _lcr = _mcr = _scr = _dlm = _fcr = 0;
        _dll = 0x0C;
    }
}
