using System.Buffers.Binary;
using Doorbell.Memory;
using Doorbell.Pci;

namespace Doorbell.Devices;

// Known limits: a submission is processed synchronously at its doorbell write (deterministic; no virtual-time
// latency); copies are at most 64 KiB per descriptor; a batch is bounded by the ring size. DMA faults become
// completion status codes and latch ERROR; nothing throws. One MSI-X vector per queue, raised once per batch.

/// <summary>Register map of the multi-queue DMA device (BAR0), declared once. Doorbell-defined device.</summary>
public static class MqRegs
{
    public const ulong Id = 0x000, NumQueues = 0x004, Ctrl = 0x008, Status = 0x00C;
    public const ulong QueueBase = 0x100, QueueStride = 0x40;
    // per-queue offsets
    public const ulong SqBase = 0x00, CqBase = 0x08, Size = 0x10, QCtrl = 0x14, SqTail = 0x18, SqHead = 0x1C, CqTail = 0x20, Error = 0x24;
    public const uint IdValue = 0xD0B1_0001;
    public const uint CtrlEnable = 1, CtrlReset = 2;
    public const uint QCtrlEnable = 1, QCtrlIrq = 2;
    public const int DescriptorSize = 32, CompletionSize = 16, MaxLength = 64 << 10, MaxRing = 4096;
    public const uint StatusOk = 0, StatusReadFault = 1, StatusWriteFault = 2, StatusTooLong = 3;
    public const uint MsixTableOffset = 0x2000, MsixPbaOffset = 0x3000;

    public static readonly RegisterDescriptor[] Table =
    [
        new(0x000, 4, "ID", RegisterAccess.ReadOnly), new(0x004, 4, "NUM_QUEUES", RegisterAccess.ReadOnly), new(0x008, 4, "CTRL", RegisterAccess.ReadWrite),
        new(0x00C, 4, "STATUS", RegisterAccess.ReadOnly),
        new(0x100, 8, "Qn_SQ_BASE", RegisterAccess.ReadWrite), new(0x108, 8, "Qn_CQ_BASE", RegisterAccess.ReadWrite), new(0x110, 4, "Qn_SIZE", RegisterAccess.ReadWrite),
        new(0x114, 4, "Qn_CTRL", RegisterAccess.ReadWrite), new(0x118, 4, "Qn_SQ_TAIL", RegisterAccess.ReadWrite), new(0x11C, 4, "Qn_SQ_HEAD", RegisterAccess.ReadOnly),
        new(0x120, 4, "Qn_CQ_TAIL", RegisterAccess.ReadOnly), new(0x124, 4, "Qn_ERROR", RegisterAccess.WriteOneToClear),
    ];
}

/// <summary>
/// A NIC-shaped multi-queue DMA engine (PCI 1234:db01): per queue a submission ring of 32-byte descriptors
/// {src, dst, len, flags, cookie} and a completion ring of 16-byte records {cookie, status, len}; software
/// writes SQ_TAIL, the device copies, writes completions and raises the queue's MSI-X vector.
/// </summary>
public sealed class MultiQueueDmaDevice : PciFunction
{
    sealed class Queue
    {
        public ulong SqBase, CqBase;
        public uint Size, Ctrl, SqTail, SqHead, CqTail, Error;
    }

    readonly Queue[] _queues;
    readonly byte[] _copy = new byte[MqRegs.MaxLength];
    uint _ctrl;

    /// <param name="msi">Give the function a plain MSI capability (64-bit, per-vector masking, one message per queue
    /// rounded up to a power of two) instead of MSI-X: queue q signals MSI vector q modulo the vectors software
    /// enabled (a variant for the MSI paths; the default device has MSI-X only).</param>
    public MultiQueueDmaDevice(int queues = 4, bool msi = false) : base(0x1234, 0xdb01, 0x088000, 1, name: "mq-dma")
    {
        if (queues is < 1 or > 32) throw new ArgumentOutOfRangeException(nameof(queues));
        _queues = new Queue[queues];
        for (var i = 0; i < queues; i++) _queues[i] = new Queue();
        SetSubsystem(0x1234, 0x0001);
        DefineBar(0, PciBarKind.Mem64, 0x4000);
        AddPowerManagement();
        if (msi) AddMsi((int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)queues), is64Bit: true, perVectorMask: true);
        else AddMsix(queues, 0, MqRegs.MsixTableOffset, 0, MqRegs.MsixPbaOffset);
        AddPcie(PciePortType.Endpoint, flr: true);
        AddAer();
    }

    public int QueueCount => _queues.Length;
    public long DescriptorsProcessed { get; private set; }

    protected override BusStatus BarRead(int bar, ulong offset, int size, out ulong value)
    {
        value = 0;
        if (size is not (4 or 8) || (offset & (ulong)(size - 1)) != 0) return BusStatus.Ok;
        value = size == 8 ? Reg(offset) | ((ulong)Reg(offset + 4) << 32) : Reg(offset);
        return BusStatus.Ok;
    }

    uint Reg(ulong o)
    {
        switch (o)
        {
            case MqRegs.Id: return MqRegs.IdValue;
            case MqRegs.NumQueues: return (uint)_queues.Length;
            case MqRegs.Ctrl: return _ctrl;
            case MqRegs.Status: return _ctrl & MqRegs.CtrlEnable;
        }
        if (!QueueReg(o, out var q, out var r)) return 0;
        return r switch
        {
            MqRegs.SqBase => (uint)q.SqBase, MqRegs.SqBase + 4 => (uint)(q.SqBase >> 32),
            MqRegs.CqBase => (uint)q.CqBase, MqRegs.CqBase + 4 => (uint)(q.CqBase >> 32),
            MqRegs.Size => q.Size, MqRegs.QCtrl => q.Ctrl, MqRegs.SqTail => q.SqTail, MqRegs.SqHead => q.SqHead,
            MqRegs.CqTail => q.CqTail, MqRegs.Error => q.Error, _ => 0,
        };
    }

    bool QueueReg(ulong o, out Queue q, out ulong r)
    {
        q = null!; r = 0;
        if (o < MqRegs.QueueBase) return false;
        var i = (o - MqRegs.QueueBase) / MqRegs.QueueStride;
        if (i >= (ulong)_queues.Length) return false;
        q = _queues[i];
        r = (o - MqRegs.QueueBase) % MqRegs.QueueStride;
        return true;
    }

    protected override BusStatus BarWrite(int bar, ulong offset, int size, ulong value)
    {
        if (size is not (4 or 8) || (offset & (ulong)(size - 1)) != 0) return BusStatus.Ok;
        if (size == 8)
        {
            // 64-bit base registers take one access; a doorbell is 32-bit
            if (QueueReg(offset, out var q8, out var r8) && r8 is MqRegs.SqBase or MqRegs.CqBase)
            {
                if (r8 == MqRegs.SqBase) q8.SqBase = value; else q8.CqBase = value;
                return BusStatus.Ok;
            }
            WriteReg(offset, (uint)value);
            WriteReg(offset + 4, (uint)(value >> 32));
            return BusStatus.Ok;
        }
        WriteReg(offset, (uint)value);
        return BusStatus.Ok;
    }

    void WriteReg(ulong o, uint v)
    {
        if (o == MqRegs.Ctrl)
        {
            if ((v & MqRegs.CtrlReset) != 0) { OnReset(); return; }
            _ctrl = v & MqRegs.CtrlEnable;
            return;
        }
        if (!QueueReg(o, out var q, out var r)) return;
        var qi = (int)((o - MqRegs.QueueBase) / MqRegs.QueueStride);
        switch (r)
        {
            case MqRegs.SqBase: q.SqBase = (q.SqBase & ~0xFFFF_FFFFUL) | v; break;
            case MqRegs.SqBase + 4: q.SqBase = (q.SqBase & 0xFFFF_FFFFUL) | ((ulong)v << 32); break;
            case MqRegs.CqBase: q.CqBase = (q.CqBase & ~0xFFFF_FFFFUL) | v; break;
            case MqRegs.CqBase + 4: q.CqBase = (q.CqBase & 0xFFFF_FFFFUL) | ((ulong)v << 32); break;
            case MqRegs.Size:
                if ((q.Ctrl & MqRegs.QCtrlEnable) == 0) q.Size = uint.IsPow2(v) && v <= MqRegs.MaxRing ? v : 0;
                break;
            case MqRegs.QCtrl:
                q.Ctrl = v & (MqRegs.QCtrlEnable | MqRegs.QCtrlIrq);
                if ((q.Ctrl & MqRegs.QCtrlEnable) == 0) { q.SqHead = q.SqTail = q.CqTail = 0; }
                break;
            case MqRegs.SqTail:
                q.SqTail = q.Size == 0 ? 0 : v & (q.Size - 1);
                Process(q, qi);
                break;
            case MqRegs.Error: q.Error &= ~v; break;
        }
    }

    void Process(Queue q, int index)
    {
        if ((_ctrl & MqRegs.CtrlEnable) == 0 || (q.Ctrl & MqRegs.QCtrlEnable) == 0 || q.Size == 0) return;
        Span<byte> desc = stackalloc byte[MqRegs.DescriptorSize];
        Span<byte> cpl = stackalloc byte[MqRegs.CompletionSize];
        var done = 0;
        for (var n = 0u; n < q.Size && q.SqHead != q.SqTail; n++)
        {
            var status = MqRegs.StatusOk;
            uint len = 0;
            ulong cookie = 0;
            if (Dma.Read(q.SqBase + (ulong)q.SqHead * MqRegs.DescriptorSize, desc, BusAttributes.Cpu) != BusStatus.Ok)
                status = MqRegs.StatusReadFault;
            else
            {
                var src = BinaryPrimitives.ReadUInt64LittleEndian(desc);
                var dst = BinaryPrimitives.ReadUInt64LittleEndian(desc[8..]);
                len = BinaryPrimitives.ReadUInt32LittleEndian(desc[16..]);
                cookie = BinaryPrimitives.ReadUInt64LittleEndian(desc[24..]);
                if (len > MqRegs.MaxLength) status = MqRegs.StatusTooLong;
                else if (Dma.Read(src, _copy.AsSpan(0, (int)len), BusAttributes.Cpu) != BusStatus.Ok) status = MqRegs.StatusReadFault;
                else if (Dma.Write(dst, _copy.AsSpan(0, (int)len), BusAttributes.Cpu) != BusStatus.Ok) status = MqRegs.StatusWriteFault;
            }
            BinaryPrimitives.WriteUInt64LittleEndian(cpl, cookie);
            BinaryPrimitives.WriteUInt32LittleEndian(cpl[8..], status);
            BinaryPrimitives.WriteUInt32LittleEndian(cpl[12..], status == MqRegs.StatusOk ? len : 0);
            if (Dma.Write(q.CqBase + (ulong)(q.CqTail & (q.Size - 1)) * MqRegs.CompletionSize, cpl, BusAttributes.Cpu) != BusStatus.Ok)
                status = MqRegs.StatusWriteFault;
            if (status != MqRegs.StatusOk) q.Error |= 1;
            if (Host?.Trace is { } t) t.Emit(TraceCategory.DmaMq, Name, $"queue {index} descriptor {q.SqHead}: {len} bytes, status {status}");
            q.SqHead = (q.SqHead + 1) & (q.Size - 1);
            q.CqTail++;
            done++;
            DescriptorsProcessed++;
        }
        if (done > 0 && (q.Ctrl & MqRegs.QCtrlIrq) != 0)
        {
            if (Msix is not null) SignalMsix(index);
            else SignalMsi(index & (MsiAllocatedVectors - 1)); // multiple-message MSI: fewer messages than queues fold
        }
    }

    protected override void OnReset()
    {
        _ctrl = 0;
        foreach (var q in _queues) { q.SqBase = q.CqBase = 0; q.Size = q.Ctrl = q.SqTail = q.SqHead = q.CqTail = q.Error = 0; }
    }
}
