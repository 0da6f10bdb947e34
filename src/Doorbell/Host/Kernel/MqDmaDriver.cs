using System.Buffers.Binary;
using Doorbell.Devices;
using Doorbell.Host.Irq;
using Doorbell.Memory;

namespace Doorbell.Host.Kernel;

/// <summary>
/// The kernel driver of the multi-queue DMA device (PCI 1234:db01), written the way a Linux PCI driver is: probe enables
/// memory space and bus mastering, maps BAR0 (as enumeration assigned it), checks the ID register, allocates one MSI-X
/// vector per queue from the function's MSI irq domain (ITS LPIs or GICv2m SPIs), requests each interrupt, programs and
/// enables MSI-X through the PCI core (<see cref="PciMsix"/>) — or, for a function with only an MSI capability,
/// multiple-message MSI (<see cref="PciMsi"/>; queue q on vector q) — allocates each queue's submission and completion rings
/// (dma_alloc_coherent: a DMA address equal to the physical address — no IOMMU in front of this kernel's devices) and
/// enables the queues. <see cref="Submit"/> writes a descriptor and rings the queue's doorbell; the interrupt handler
/// reads the completion tail and hands each completion record to <see cref="Completed"/>. Remove undoes it all in
/// reverse. It reaches the device only through the memory view (BAR MMIO, ECAM) and memory, so it runs unchanged in a
/// guest over a vCPU's view.
/// Known limits: one descriptor ring of <see cref="RingEntries"/> per queue, no ring-full back-pressure beyond -EBUSY.
/// </summary>
public sealed class MqDmaDriver : IKernelPciDriver
{
    readonly IMemoryView _bus;
    readonly PciEnumeration _pci;
    readonly IMsiDomain _msi;
    readonly HostIrqTable _irqs;
    readonly IPhysPageAllocator _dma;
    readonly uint _deviceId;
    ulong _bar;
    int _msixCap, _msiCap;
    MsiAllocation? _vectors;
    ulong[] _sq = [], _cq = [];
    uint[] _sqTail = [], _cqHead = [];
    long[] _irqCount = [];

    /// <param name="deviceId">The function's MSI DeviceID (its requester ID through the board's msi-map).</param>
    public MqDmaDriver(IMemoryView bus, PciEnumeration pci, IMsiDomain msi, HostIrqTable irqs, IPhysPageAllocator dma, EnumeratedFunction function, uint deviceId)
    {
        ArgumentNullException.ThrowIfNull(bus); ArgumentNullException.ThrowIfNull(pci); ArgumentNullException.ThrowIfNull(msi);
        ArgumentNullException.ThrowIfNull(irqs); ArgumentNullException.ThrowIfNull(dma); ArgumentNullException.ThrowIfNull(function);
        _bus = bus; _pci = pci; _msi = msi; _irqs = irqs; _dma = dma; Function = function; _deviceId = deviceId;
    }

    /// <summary>The driver for <paramref name="function"/> of a guest kernel (identity msi-map: DeviceID = requester ID).</summary>
    public MqDmaDriver(GuestKernel kernel, EnumeratedFunction function)
        : this((kernel ?? throw new ArgumentNullException(nameof(kernel))).Bus, kernel.Pci, kernel.MsiDomain, kernel.Irqs, kernel.DmaMemory, function, function?.Rid ?? 0) { }

    public const int RingEntries = 8;
    public EnumeratedFunction Function { get; }
    public int Queues { get; private set; }
    public ulong Bar0 => _bar;
    /// <summary>The vectors from the MSI domain (null before probe / after remove).</summary>
    public MsiAllocation? Vectors => _vectors;
    /// <summary>Called from the interrupt handler for each completion: (queue, cookie, status, length).</summary>
    public Action<int, ulong, uint, uint>? Completed { get; set; }
    /// <summary>Called at the start of each queue interrupt: (queue, INTID).</summary>
    public Action<int, int>? Interrupt { get; set; }
    public ulong SubmissionRing(int queue) => _sq[queue];
    public ulong CompletionRing(int queue) => _cq[queue];
    public long InterruptsTaken(int queue) => _irqCount[queue];

    uint R32(ulong off) { _bus.Read(new PhysAddr(_bar + off), 4, out var v, BusAttributes.Cpu); return (uint)v; }
    void W32(ulong off, uint v) => _bus.Write(new PhysAddr(_bar + off), 4, v, BusAttributes.Cpu);
    void W64(ulong off, ulong v) => _bus.Write(new PhysAddr(_bar + off), 8, v, BusAttributes.Cpu);
    static ulong Q(int q) => MqRegs.QueueBase + (ulong)q * MqRegs.QueueStride;

    public int Probe()
    {
        var b = Function.Bars[0];
        if (b.Size == 0 || b.Address == 0 || b.Io) return -Errno.ENODEV; // BAR0 unassigned
        var rid = Function.Rid;
        _pci.Write(rid, 0x04, 2, _pci.Read(rid, 0x04, 2) | 0x6); // pci_enable_device_mem + pci_set_master
        _bar = b.Address;
        if (R32(MqRegs.Id) != MqRegs.IdValue) return -Errno.ENODEV;
        var queues = (int)R32(MqRegs.NumQueues);
        // pci_alloc_irq_vectors(PCI_IRQ_MSIX | PCI_IRQ_MSI): MSI-X when the function has it, else multiple-message MSI.
        _msixCap = PciMsix.FindCapability(_pci, rid, PciMsix.CapId);
        _msiCap = _msixCap == 0 ? PciMsix.FindCapability(_pci, rid, PciMsi.CapId) : 0;
        if ((_msixCap == 0 && _msiCap == 0) || queues < 1) return -Errno.ENODEV;
        if (_msixCap != 0) queues = Math.Min(queues, PciMsix.TableSize(_pci, rid, _msixCap));
        var nvec = _msixCap != 0 ? queues : Math.Min((int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)queues), PciMsi.MaxVectors(_pci, rid, _msiCap));
        try { _vectors = _msi.AllocateMsis(_deviceId, nvec); }
        catch (IrqException e) { return -e.Errno; }
        if (_msiCap != 0 && (_vectors.Vectors[0].Message.Data & (uint)(nvec - 1)) != 0)
        {
            _msi.FreeMsis(_vectors); // the domain's block is not aligned for multi-MSI's low data bits
            _vectors = null;
            return -Errno.ENOSPC;
        }
        queues = Math.Min(queues, nvec);
        Queues = queues;
        _irqCount = new long[queues];
        var requested = 0;
        try
        {
            for (; requested < _vectors.Vectors.Count; requested++)
            {
                var q = requested % queues;
                _irqs.Request(_vectors.Vectors[requested].Intid, (intid, _) => OnInterrupt(q, intid));
            }
        }
        catch (IrqException e)
        {
            for (var i = 0; i < requested; i++) _irqs.Free(_vectors.Vectors[i].Intid);
            _msi.FreeMsis(_vectors);
            _vectors = null;
            return -e.Errno;
        }
        if (_msixCap != 0)
        {
            var (tbar, toff) = PciMsix.TableLocation(_pci, rid, _msixCap);
            PciMsix.Enable(_bus, _pci, rid, _msixCap, Function.Bars[tbar].Address + toff,
                [.. _vectors.Vectors.Select(v => v.Message.Address)], [.. _vectors.Vectors.Select(v => v.Message.Data)]);
        }
        else PciMsi.Enable(_pci, rid, _msiCap, _vectors.Vectors[0].Message.Address, _vectors.Vectors[0].Message.Data, nvec);
        // Rings: every submission ring, then every completion ring (one page each).
        _sq = new ulong[queues]; _cq = new ulong[queues]; _sqTail = new uint[queues]; _cqHead = new uint[queues];
        for (var q = 0; q < queues; q++) if (!_dma.TryAllocate(0x1000, out _sq[q])) return FailRings();
        for (var q = 0; q < queues; q++) if (!_dma.TryAllocate(0x1000, out _cq[q])) return FailRings();
        W32(MqRegs.Ctrl, MqRegs.CtrlEnable);
        for (var q = 0; q < queues; q++)
        {
            W64(Q(q) + MqRegs.SqBase, _sq[q]);
            W64(Q(q) + MqRegs.CqBase, _cq[q]);
            W32(Q(q) + MqRegs.Size, RingEntries);
            W32(Q(q) + MqRegs.QCtrl, MqRegs.QCtrlEnable | MqRegs.QCtrlIrq);
        }
        return 0;
    }

    int FailRings()
    {
        Remove();
        return -Errno.ENOMEM;
    }

    /// <summary>
    /// Queues one copy of <paramref name="length"/> bytes (DMA addresses) on <paramref name="queue"/> and, unless
    /// <paramref name="ring"/> is false (a batch: <see cref="Ring"/> later), rings its doorbell. 0, -EINVAL or -EBUSY (ring full).
    /// </summary>
    public int Submit(int queue, ulong source, ulong destination, uint length, ulong cookie, bool ring = true)
    {
        if ((uint)queue >= (uint)Queues) return -Errno.EINVAL;
        var tail = _sqTail[queue];
        if (tail - _cqHead[queue] >= RingEntries - 1) return -Errno.EBUSY;
        Span<byte> d = stackalloc byte[MqRegs.DescriptorSize];
        d.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(d, source);
        BinaryPrimitives.WriteUInt64LittleEndian(d[8..], destination);
        BinaryPrimitives.WriteUInt32LittleEndian(d[16..], length);
        BinaryPrimitives.WriteUInt64LittleEndian(d[24..], cookie);
        _bus.Write(_sq[queue] + (tail % RingEntries) * MqRegs.DescriptorSize, d, BusAttributes.Cpu);
        _sqTail[queue] = tail + 1;
        if (ring) Ring(queue);
        return 0;
    }

    /// <summary>Writes the queue's submission tail (the doorbell).</summary>
    public void Ring(int queue) => W32(Q(queue) + MqRegs.SqTail, _sqTail[queue] % RingEntries);

    void OnInterrupt(int queue, int intid)
    {
        _irqCount[queue]++;
        Interrupt?.Invoke(queue, intid);
        var tail = R32(Q(queue) + MqRegs.CqTail);
        Span<byte> c = stackalloc byte[MqRegs.CompletionSize];
        while (_cqHead[queue] != tail)
        {
            _bus.Read(_cq[queue] + (_cqHead[queue] % RingEntries) * MqRegs.CompletionSize, c, BusAttributes.Cpu);
            _cqHead[queue]++;
            Completed?.Invoke(queue, BinaryPrimitives.ReadUInt64LittleEndian(c), BinaryPrimitives.ReadUInt32LittleEndian(c[8..]), BinaryPrimitives.ReadUInt32LittleEndian(c[12..]));
        }
    }

    public void Remove()
    {
        if (_bar != 0)
        {
            for (var q = 0; q < Queues; q++) W32(Q(q) + MqRegs.QCtrl, 0);
            W32(MqRegs.Ctrl, 0);
        }
        if (_msixCap != 0) PciMsix.Disable(_pci, Function.Rid, _msixCap);
        if (_msiCap != 0) PciMsi.Disable(_pci, Function.Rid, _msiCap);
        if (_vectors is not null)
        {
            foreach (var v in _vectors.Vectors) _irqs.Free(v.Intid);
            _msi.FreeMsis(_vectors);
            _vectors = null;
        }
        foreach (var a in _sq) if (a != 0) _dma.Free(a, 0x1000);
        foreach (var a in _cq) if (a != 0) _dma.Free(a, 0x1000);
        _sq = _cq = [];
        _pci.Write(Function.Rid, 0x04, 2, _pci.Read(Function.Rid, 0x04, 2) & ~0x4u); // pci_clear_master
        Queues = 0;
    }
}
