using Doorbell.Devices;
using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Timing;
using Doorbell.Tracing;

namespace Doorbell.Tests.Pci;

/// <summary>
/// The device models' registers are declared once in their tables and dispatched from them: per-queue registers as
/// strided instances, read-only and W1C rules from the table (strict mode names the register), QEMU edu's own
/// all-ones answers kept, and the 16550's byte registers looked up per byte.
/// </summary>
public class DeviceRegisterTableTests
{
    static ulong R(PciFunction f, ulong offset, int size = 4)
    {
        Assert.Equal(BusStatus.Ok, f.BarAccessRead(0, offset, size, out var v));
        return v;
    }

    static void W(PciFunction f, ulong offset, ulong value, int size = 4) => Assert.Equal(BusStatus.Ok, f.BarAccessWrite(0, offset, size, value));

    [Fact]
    public void Mq_dma_queue_registers_are_strided_instances_of_one_declaration()
    {
        Assert.Equal("SQ_TAIL3", MqRegs.Block.NameOf(MqRegs.QueueBase + 3 * MqRegs.QueueStride + MqRegs.SqTail));
        Assert.Equal("CQ_BASE31", MqRegs.Block.NameOf(MqRegs.QueueBase + 31 * MqRegs.QueueStride + MqRegs.CqBase + 4));
        Assert.Equal("0x128", MqRegs.Block.NameOf(MqRegs.QueueBase + 0x28)); // the gap after a queue's registers
        var d = new MultiQueueDmaDevice(2);
        var q1 = MqRegs.QueueBase + MqRegs.QueueStride;
        W(d, q1 + MqRegs.SqBase, 0x1_2345_6000, 8);
        W(d, q1 + MqRegs.SqBase + 4, 0x7);                  // high half merges
        Assert.Equal(0x7_2345_6000UL, R(d, q1 + MqRegs.SqBase, 8));
        Assert.Equal(0x2345_6000UL, R(d, q1 + MqRegs.SqBase));
        Assert.Equal(0x7UL, R(d, q1 + MqRegs.SqBase + 4));
        W(d, q1 + MqRegs.Size, 16);
        Assert.Equal(16UL, R(d, q1 + MqRegs.Size));
        Assert.Equal(0UL, R(d, q1 + MqRegs.QueueStride + MqRegs.Size)); // queue 2 does not exist: RAZ
        W(d, q1 + MqRegs.QueueStride + MqRegs.Size, 16);
        Assert.Equal(0UL, R(d, q1 + MqRegs.QueueStride + MqRegs.Size));
        // A 64-bit access to a pair of 32-bit registers reaches both (ID, NUM_QUEUES).
        Assert.Equal(MqRegs.IdValue | 2UL << 32, R(d, MqRegs.Id, 8));
    }

    [Fact]
    public void Mq_dma_read_only_writes_are_dropped_and_reported_and_error_is_write_one_to_clear()
    {
        var host = new PciHost(new PhysicalAddressSpace()) { Strict = new StrictMonitor { Enabled = true } };
        var d = host.RootBus.Attach(new MultiQueueDmaDevice(1), 2);
        var q0 = MqRegs.QueueBase;
        W(d, q0 + MqRegs.SqHead, 5);
        W(d, MqRegs.NumQueues, 9);
        Assert.Equal(0UL, R(d, q0 + MqRegs.SqHead));
        Assert.Equal(1UL, R(d, MqRegs.NumQueues));
        Assert.Equal(["write to read-only SQ_HEAD0", "write to read-only NUM_QUEUES"], host.Strict.Violations.Select(v => v.Message));
        Assert.All(host.Strict.Violations, v => Assert.Equal("mq-dma", v.Source));
        // ERROR latches on a failed descriptor (queue enabled, ring at an unmapped address) and clears by writing ones.
        W(d, MqRegs.Ctrl, MqRegs.CtrlEnable);
        W(d, q0 + MqRegs.SqBase, 0xDEAD_0000, 8);
        W(d, q0 + MqRegs.CqBase, 0xDEAE_0000, 8);
        W(d, q0 + MqRegs.Size, 4);
        W(d, q0 + MqRegs.QCtrl, MqRegs.QCtrlEnable);
        W(d, q0 + MqRegs.SqTail, 1);
        Assert.Equal(1UL, R(d, q0 + MqRegs.Error));
        W(d, q0 + MqRegs.Error, 0);
        Assert.Equal(1UL, R(d, q0 + MqRegs.Error));
        W(d, q0 + MqRegs.Error, 1);
        Assert.Equal(0UL, R(d, q0 + MqRegs.Error));
    }

    [Fact]
    public void Edu_keeps_qemus_answers_through_the_table()
    {
        var edu = new EduDevice(new VirtualClock());
        Assert.Equal((ulong)EduRegs.IdValue, R(edu, EduRegs.Id));
        W(edu, EduRegs.Id, 0);                                   // read-only
        Assert.Equal((ulong)EduRegs.IdValue, R(edu, EduRegs.Id));
        Assert.Equal(0xFFFF_FFFFUL, R(edu, EduRegs.IrqRaise));    // write-only: QEMU answers all ones
        Assert.Equal(0xFFFF_FFFFUL, R(edu, 0x0C));                // undeclared: all ones
        Assert.Equal(ulong.MaxValue, R(edu, EduRegs.Liveness, 8)); // 8-byte read below 0x80
        W(edu, EduRegs.Liveness, 0x1234);
        Assert.Equal(~0x1234u, (uint)R(edu, EduRegs.Liveness));
        W(edu, EduRegs.DmaSrc, 0x1_0000_4000, 8);
        W(edu, EduRegs.DmaSrc, 0x5000);                           // a 4-byte write replaces the whole register
        Assert.Equal(0x5000UL, R(edu, EduRegs.DmaSrc, 8));
        W(edu, EduRegs.DmaSrc + 4, 0x9);                          // +4 is nothing to edu
        Assert.Equal(0x5000UL, R(edu, EduRegs.DmaSrc, 8));
        Assert.Equal(0xFFFF_FFFFUL, R(edu, EduRegs.DmaSrc + 4));
        Assert.Equal("DMA_CMD", EduRegs.Block.NameOf(EduRegs.DmaCmd + 4));
    }

    [Fact]
    public void Uart_byte_registers_are_looked_up_per_byte_and_lsr_is_read_only()
    {
        var uart = new PciSerialDevice();
        Assert.True(Uart16550Regs.Block.ByteGranular);
        Assert.Equal("SCR", Uart16550Regs.Block.NameOf(Uart16550Regs.Scr));
        W(uart, Uart16550Regs.Scr, 0x5A, 1);
        Assert.Equal(0x5AUL, R(uart, Uart16550Regs.Scr, 1));
        W(uart, Uart16550Regs.Lsr, 0, 1);                          // read-only: ignored
        Assert.Equal((ulong)(Uart16550Regs.LsrThre | Uart16550Regs.LsrTemt), R(uart, Uart16550Regs.Lsr, 1));
        // A wider access covers consecutive registers: a halfword at 3 is LCR (3) and MCR (4).
        W(uart, Uart16550Regs.Lcr, 0x1F03, 2);
        Assert.Equal(0x03UL, R(uart, Uart16550Regs.Lcr, 1));
        Assert.Equal(0x1FUL, R(uart, Uart16550Regs.Mcr, 1));
        W(uart, Uart16550Regs.RbrThr, 'H', 1);
        Assert.Equal([(byte)'H'], uart.Transmitted);
        // A guest printing without end: the last 64 KiB are kept, every byte is counted.
        for (var i = 0; i < 70_000; i++) W(uart, Uart16550Regs.RbrThr, (ulong)(i & 0x7F), 1);
        Assert.Equal((65_536, 70_001L), (uart.Transmitted.Count, uart.Transmitted.Total));
        Assert.Equal((byte)(69_999 & 0x7F), uart.Transmitted[^1]);
        // The generic dispatch takes word-granular blocks only.
        Assert.Throws<TypeInitializationException>(() => RegisterDispatch<UartFile>.Read(default, 0, 1));
    }

    readonly struct UartFile : IRegisterFile
    {
        public static RegisterBlock Block => Uart16550Regs.Block;
        public ulong Read(RegisterRef r, in BusAttributes attributes) => 0;
        public void Write(RegisterRef r, ulong value, in BusAttributes attributes) { }
    }

    [Fact]
    public void Platform_dma_dispatches_from_its_table()
    {
        var bus = new PhysicalAddressSpace();
        var line = new Line();
        var d = new PlatformDmaDevice(bus, null, 0, line);
        Assert.Equal(PlatformDmaRegs.IdValue, Rd(d, PlatformDmaRegs.Id));
        d.Write(PlatformDmaRegs.Id, 4, 0, BusAttributes.Cpu);
        Assert.Equal(PlatformDmaRegs.IdValue, Rd(d, PlatformDmaRegs.Id));
        d.Write(PlatformDmaRegs.Src, 8, 0x1_0000_0000, BusAttributes.Cpu);
        d.Write(PlatformDmaRegs.Src, 4, 0x2000, BusAttributes.Cpu);             // low half merges
        Assert.Equal(0x1_0000_2000UL, Rd(d, PlatformDmaRegs.Src, 8));
        d.Write(PlatformDmaRegs.Cmd, 4, 0, BusAttributes.Cpu);
        Assert.Equal(0UL, Rd(d, PlatformDmaRegs.Cmd));                         // write-only
        d.Write(PlatformDmaRegs.Ctrl, 4, PlatformDmaRegs.CtrlIrqEnable, BusAttributes.Cpu);
        d.Write(PlatformDmaRegs.Len, 4, PlatformDmaRegs.MaxLength + 1, BusAttributes.Cpu);
        d.Write(PlatformDmaRegs.Cmd, 4, PlatformDmaRegs.CmdStart, BusAttributes.Cpu); // too long: ERROR
        Assert.Equal((ulong)PlatformDmaRegs.StatusError, Rd(d, PlatformDmaRegs.Status));
        Assert.True(line.Level);
        d.Write(PlatformDmaRegs.Status, 4, 0, BusAttributes.Cpu);               // W1C: zero clears nothing
        Assert.True(line.Level);
        d.Write(PlatformDmaRegs.Status, 4, PlatformDmaRegs.StatusError, BusAttributes.Cpu);
        Assert.Equal(0UL, Rd(d, PlatformDmaRegs.Status));
        Assert.False(line.Level);
        Assert.Equal("DST", PlatformDmaRegs.Block.NameOf(PlatformDmaRegs.Dst + 4));
    }

    [Fact]
    public void In_controller_msi_block_dispatches_from_its_table()
    {
        var line = new Line();
        var m = new Doorbell.Platform.DeviceTree.InControllerMsi(line);
        const uint St = Doorbell.Platform.DeviceTree.InControllerMsi.MSI_STATUS;
        m.Write(Doorbell.Platform.DeviceTree.InControllerMsi.MSI_DOORBELL, 4, 37, BusAttributes.FromDevice(3)); // vector 37: word 1, bit 5
        Assert.Equal(1, m.Raised(37));
        Assert.True(line.Level);
        m.Read(St + 4, 4, out var st, BusAttributes.Cpu);
        Assert.Equal(1UL << 5, st);
        m.Read(Doorbell.Platform.DeviceTree.InControllerMsi.MSI_DOORBELL, 4, out var db, BusAttributes.Cpu);
        Assert.Equal(0UL, db);                                   // write-only
        m.Write(St + 4, 4, 0, BusAttributes.Cpu);                // W1C of zero: nothing
        Assert.True(line.Level);
        m.Write(St + 4, 4, 1u << 5, BusAttributes.Cpu);
        m.Read(St + 4, 4, out st, BusAttributes.Cpu);
        Assert.Equal(0UL, st);
        Assert.False(line.Level);
        Assert.Equal("MSI_STATUS7", Doorbell.Platform.DeviceTree.InControllerMsi.Block.NameOf(St + 28));
    }

    static ulong Rd(PlatformDmaDevice d, ulong offset, int size = 4)
    {
        d.Read(offset, size, out var v, BusAttributes.Cpu);
        return v;
    }

    sealed class Line : IInterruptLine
    {
        public bool Level;
        public void SetLevel(bool asserted) => Level = asserted;
    }
}
