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

    public const int MaxQueues = 32;

    internal enum Reg { None, Id, NumQueues, Ctrl, Status, SqBase, CqBase, Size, QCtrl, SqTail, SqHead, CqTail, Error }

    // Declared once: the table drives dispatch, the read-only / W1C rules and names. Queue n's registers are at
    // QueueBase + n × QueueStride (instance n: SQ_BASE3 is queue 3's); a queue the device does not have reads as zero.
    public static readonly RegisterDescriptor[] Table =
    [
        new((uint)Id, 4, "ID", RegisterAccess.ReadOnly, Id: (int)Reg.Id),
        new((uint)NumQueues, 4, "NUM_QUEUES", RegisterAccess.ReadOnly, Id: (int)Reg.NumQueues),
        new((uint)Ctrl, 4, "CTRL", RegisterAccess.ReadWrite, Id: (int)Reg.Ctrl),
        new((uint)Status, 4, "STATUS", RegisterAccess.ReadOnly, Id: (int)Reg.Status),
        new((uint)(QueueBase + SqBase), 8, "SQ_BASE", RegisterAccess.ReadWrite, MaxQueues, (int)Reg.SqBase, Stride: (int)QueueStride),
        new((uint)(QueueBase + CqBase), 8, "CQ_BASE", RegisterAccess.ReadWrite, MaxQueues, (int)Reg.CqBase, Stride: (int)QueueStride),
        new((uint)(QueueBase + Size), 4, "SIZE", RegisterAccess.ReadWrite, MaxQueues, (int)Reg.Size, Stride: (int)QueueStride),
        new((uint)(QueueBase + QCtrl), 4, "QCTRL", RegisterAccess.ReadWrite, MaxQueues, (int)Reg.QCtrl, Stride: (int)QueueStride),
        new((uint)(QueueBase + SqTail), 4, "SQ_TAIL", RegisterAccess.ReadWrite, MaxQueues, (int)Reg.SqTail, Stride: (int)QueueStride),
        new((uint)(QueueBase + SqHead), 4, "SQ_HEAD", RegisterAccess.ReadOnly, MaxQueues, (int)Reg.SqHead, Stride: (int)QueueStride),
        new((uint)(QueueBase + CqTail), 4, "CQ_TAIL", RegisterAccess.ReadOnly, MaxQueues, (int)Reg.CqTail, Stride: (int)QueueStride),
        new((uint)(QueueBase + Error), 4, "ERROR", RegisterAccess.WriteOneToClear, MaxQueues, (int)Reg.Error, Stride: (int)QueueStride),
    ];

    /// <summary>The register table compiled for dispatch (the BAR below the MSI-X table). A 64-bit access to a pair of
    /// 32-bit registers reaches both, as before.</summary>
    public static readonly RegisterBlock Block = new("mq-dma", Table, MsixTableOffset, "mq-dma register map (read-only register)", pairedWords: true);
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
        value = RegisterDispatch<RegisterFile>.Read(new RegisterFile(this), offset, size);
        return BusStatus.Ok;
    }

    protected override BusStatus BarWrite(int bar, ulong offset, int size, ulong value)
    {
        RegisterDispatch<RegisterFile>.Write(new RegisterFile(this), offset, size, value, BusAttributes.Cpu, Host?.Strict);
        return BusStatus.Ok;
    }

    /// <summary>BAR 0's registers by id; the instance of a per-queue register is its queue.</summary>
    readonly struct RegisterFile(MultiQueueDmaDevice d) : IRegisterFile
    {
        public static RegisterBlock Block => MqRegs.Block;

        public ulong Read(RegisterRef r, in BusAttributes attributes)
        {
            switch ((MqRegs.Reg)r.Id)
            {
                case MqRegs.Reg.Id: return MqRegs.IdValue;
                case MqRegs.Reg.NumQueues: return (uint)d._queues.Length;
                case MqRegs.Reg.Ctrl: return d._ctrl;
                case MqRegs.Reg.Status: return d._ctrl & MqRegs.CtrlEnable;
            }
            if (r.Index >= (uint)d._queues.Length) return 0;
            var q = d._queues[r.Index];
            return (MqRegs.Reg)r.Id switch
            {
                MqRegs.Reg.SqBase => q.SqBase, MqRegs.Reg.CqBase => q.CqBase, MqRegs.Reg.Size => q.Size, MqRegs.Reg.QCtrl => q.Ctrl,
                MqRegs.Reg.SqTail => q.SqTail, MqRegs.Reg.SqHead => q.SqHead, MqRegs.Reg.CqTail => q.CqTail, MqRegs.Reg.Error => q.Error,
                _ => 0,
            };
        }

        public void Write(RegisterRef r, ulong value, in BusAttributes attributes)
        {
            var v = (uint)value;
            if ((MqRegs.Reg)r.Id == MqRegs.Reg.Ctrl)
            {
                if ((v & MqRegs.CtrlReset) != 0) { d.OnReset(); return; }
                d._ctrl = v & MqRegs.CtrlEnable;
                return;
            }
            if (r.Index >= (uint)d._queues.Length) return;
            var q = d._queues[r.Index];
            switch ((MqRegs.Reg)r.Id)
            {
                case MqRegs.Reg.SqBase: q.SqBase = value; break; // a 32-bit half arrives merged with the other half
                case MqRegs.Reg.CqBase: q.CqBase = value; break;
                case MqRegs.Reg.Size:
                    if ((q.Ctrl & MqRegs.QCtrlEnable) == 0) q.Size = uint.IsPow2(v) && v <= MqRegs.MaxRing ? v : 0;
                    break;
                case MqRegs.Reg.QCtrl:
                    q.Ctrl = v & (MqRegs.QCtrlEnable | MqRegs.QCtrlIrq);
                    if ((q.Ctrl & MqRegs.QCtrlEnable) == 0) { q.SqHead = q.SqTail = q.CqTail = 0; }
                    break;
                case MqRegs.Reg.SqTail:
                    q.SqTail = q.Size == 0 ? 0 : v & (q.Size - 1);
                    d.Process(q, (int)r.Index);
                    break;
                case MqRegs.Reg.Error: q.Error &= ~v; break; // W1C: the bits written as one
            }
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
