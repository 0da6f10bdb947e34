using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;

// A userspace driver for the multi-queue DMA device (PCI 1234:db01), written only against the VFIO ioctl ABI
// (include/uapi/linux/vfio.h structs, errno returns), pread/pwrite on the device fd, anonymous memory, and real
// Linux eventfd + epoll — the shape of a DPDK/SPDK-style driver. Nothing here reaches a model or kernel object
// directly: the VfioProcess stands for the libc surface (open/ioctl/pread/pwrite/mmap) of one process.
// Known limits: BAR registers are accessed with pread/pwrite rather than an mmap of BAR0.
namespace Doorbell.Examples;

/// <summary>What the driver did and saw.</summary>
public sealed class UserspaceDriverResult
{
    public List<string> Log { get; } = [];
    /// <summary>VFIO_SET_IOMMU's return (0, or -EPERM when the group's MSIs are not isolated).</summary>
    public int SetIommuResult { get; set; }
    public ulong PageSizes { get; set; }
    public List<(ulong Start, ulong End)> IovaRanges { get; } = [];
    public int Vectors { get; set; }
    /// <summary>Per queue: eventfd counts read after epoll said readable.</summary>
    public ulong[] InterruptsPerQueue { get; set; } = [];
    public int CopiesVerified { get; set; }
    public int CopiesExpected { get; set; }
    /// <summary>The completion status of the DMA aimed at an unmapped IOVA (2 = write fault).</summary>
    public uint FaultStatus { get; set; } = uint.MaxValue;
    public bool CanaryIntact { get; set; }
    public string? Failure { get; set; }
    public bool Ok => Failure is null;
}

/// <summary>The driver. <see cref="Run"/> opens container/group/device, maps its buffers, drives every queue, waits for
/// the MSI-X eventfds with epoll, checks the data, then sends one DMA to an unmapped IOVA.</summary>
public sealed class UserspaceDriver(VfioProcess process, int groupId, string deviceName)
{
    // Device register map (BAR0), from the device's datasheet (MqRegs).
    const ulong RegId = 0x000, RegNumQueues = 0x004, RegCtrl = 0x008, QBase = 0x100, QStride = 0x40;
    const ulong QSqBase = 0x00, QCqBase = 0x08, QSize = 0x10, QCtrl = 0x14, QSqTail = 0x18, QCqTail = 0x20, QError = 0x24;
    const uint CtrlEnable = 1, QCtrlEnable = 1, QCtrlIrq = 2, DeviceIdValue = 0xD0B1_0001;
    const int DescSize = 32, CplSize = 16, RingEntries = 8;

    public const ulong DmaIova = 0x10_0000, DmaSize = 0x1_0000, UnmappedIova = 0x4000_0000;
    public int DescriptorsPerQueue { get; init; } = 2;
    public int CopyLength { get; init; } = 0x800;
    public int MaxQueues { get; init; } = 4;
    public int EpollTimeoutMs { get; init; } = 1000;
    /// <summary>Called once the copies are verified, while the device is still open (for observers such as the scenario).</summary>
    public Action? OnDataVerified { get; init; }

    readonly VfioProcess _p = process;
    int _container = -1, _group = -1, _device = -1;
    ulong _bar0Offset, _cfgOffset;

    static byte[] Bytes<T>(T v, int extra = 0) where T : unmanaged
    {
        var b = new byte[UserArg.SizeOf<T>() + extra];
        MemoryMarshal.Write(b, in v);
        return b;
    }

    static string E(int r) => r < 0 ? $"errno {-r}" : r.ToString(System.Globalization.CultureInfo.InvariantCulture);

    public UserspaceDriverResult Run()
    {
        var res = new UserspaceDriverResult();
        try { Drive(res); }
        finally { Teardown(); }
        return res;
    }

    bool Fail(UserspaceDriverResult r, string why)
    {
        r.Failure = why;
        r.Log.Add("FAIL: " + why);
        return false;
    }

    bool Drive(UserspaceDriverResult res)
    {
        // --- container and group
        _container = _p.OpenContainer();
        if (_p.Ioctl(_container, VfioIoctl.GetApiVersion, 0UL) != VfioIoctl.ApiVersion) return Fail(res, "VFIO API version mismatch");
        if (_p.Ioctl(_container, VfioIoctl.CheckExtension, VfioExtension.Type1v2Iommu) != 1) return Fail(res, "no TYPE1v2 IOMMU");
        _group = _p.OpenGroup(groupId);
        if (_group < 0) return Fail(res, $"open group {groupId}: {E(_group)}");
        var st = Bytes(new VfioGroupStatus { Argsz = 8 });
        _p.Ioctl(_group, VfioIoctl.GroupGetStatus, st);
        if ((MemoryMarshal.Read<VfioGroupStatus>(st).Flags & VfioGroupFlags.Viable) == 0) return Fail(res, "group not viable");
        var fdb = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(fdb, _container);
        var r = _p.Ioctl(_group, VfioIoctl.GroupSetContainer, fdb);
        if (r < 0) return Fail(res, $"SET_CONTAINER: {E(r)}");
        res.SetIommuResult = _p.Ioctl(_container, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu);
        if (res.SetIommuResult < 0) return Fail(res, $"SET_IOMMU(TYPE1v2): {E(res.SetIommuResult)}");

        // --- IOMMU info: page sizes and usable IOVA ranges (capability chain)
        var info = new byte[256];
        MemoryMarshal.Write(info, new VfioIommuType1Info { Argsz = (uint)info.Length });
        r = _p.Ioctl(_container, VfioIoctl.IommuGetInfo, info);
        if (r < 0) return Fail(res, $"IOMMU_GET_INFO: {E(r)}");
        var ii = MemoryMarshal.Read<VfioIommuType1Info>(info);
        res.PageSizes = ii.IovaPgsizes;
        for (var off = (int)ii.CapOffset; off != 0 && off + 8 <= info.Length;)
        {
            var h = MemoryMarshal.Read<VfioInfoCapHeader>(info.AsSpan(off));
            if (h.Id == 1) // VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
            {
                var n = MemoryMarshal.Read<VfioIommuType1InfoCapIovaRange>(info.AsSpan(off)).NrIovas;
                for (var i = 0; i < n; i++)
                {
                    var rg = MemoryMarshal.Read<VfioIovaRange>(info.AsSpan(off + 16 + i * 16));
                    res.IovaRanges.Add((rg.Start, rg.End));
                }
            }
            off = (int)h.Next;
        }

        // --- device, regions
        _device = _p.Ioctl(_group, VfioIoctl.GroupGetDeviceFd, System.Text.Encoding.ASCII.GetBytes(deviceName + "\0"));
        if (_device < 0) return Fail(res, $"GET_DEVICE_FD {deviceName}: {E(_device)}");
        var di = Bytes(new VfioDeviceInfo { Argsz = 24 });
        _p.Ioctl(_device, VfioIoctl.DeviceGetInfo, di);
        if ((MemoryMarshal.Read<VfioDeviceInfo>(di).Flags & VfioDeviceFlags.Pci) == 0) return Fail(res, "not a PCI device");
        _bar0Offset = RegionOffset(VfioPciIndex.Bar0, out var bar0Size);
        _cfgOffset = RegionOffset(VfioPciIndex.Config, out _);
        if (bar0Size < 0x1000) return Fail(res, "BAR0 too small");
        var cmd = CfgRead16(0x04);
        CfgWrite16(0x04, (ushort)(cmd | 0x6)); // memory decode + bus master
        if (Bar32(RegId) != DeviceIdValue) return Fail(res, $"unexpected device ID 0x{Bar32(RegId):x}");
        var queues = (int)Math.Min(Bar32(RegNumQueues), (uint)MaxQueues);

        // --- DMA buffers: rings and data in one anonymous mapping, mapped at DmaIova
        var va = _p.Memory.MapAnonymous(DmaSize);
        var canary = _p.Memory.MapAnonymous(0x1000);
        _p.Memory.Write(canary, Enumerable.Repeat((byte)0xA5, 0x1000).ToArray());
        var map = Bytes(new VfioIommuType1DmaMap { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = va, Iova = DmaIova, Size = DmaSize });
        r = _p.Ioctl(_container, VfioIoctl.IommuMapDma, map);
        if (r < 0) return Fail(res, $"MAP_DMA: {E(r)}");
        res.Log.Add($"MAP_DMA vaddr 0x{va:x} -> IOVA 0x{DmaIova:x} size 0x{DmaSize:x}");

        // --- MSI-X: one eventfd per queue
        var irq = Bytes(new VfioIrqInfo { Argsz = 16, Index = VfioPciIndex.IrqMsix });
        _p.Ioctl(_device, VfioIoctl.DeviceGetIrqInfo, irq);
        var msixCount = (int)MemoryMarshal.Read<VfioIrqInfo>(irq).Count;
        if (msixCount < queues) return Fail(res, $"only {msixCount} MSI-X vectors");
        var efds = new EventFd[queues];
        using var epoll = new Epoll();
        try
        {
            var set = new byte[20 + 4 * queues];
            MemoryMarshal.Write(set, new VfioIrqSet
            {
                Argsz = (uint)set.Length, Flags = VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger,
                Index = VfioPciIndex.IrqMsix, Start = 0, Count = (uint)queues,
            });
            for (var q = 0; q < queues; q++)
            {
                efds[q] = EventFd.Create();
                BinaryPrimitives.WriteInt32LittleEndian(set.AsSpan(20 + 4 * q), efds[q].Fd);
                epoll.Add(efds[q].Fd, (ulong)q);
            }
            r = _p.Ioctl(_device, VfioIoctl.DeviceSetIrqs, set);
            if (r != 0) return Fail(res, $"SET_IRQS(MSI-X, {queues} eventfds): {E(r)}");
            res.Vectors = queues;

            // --- program the device
            Bar32W(RegCtrl, CtrlEnable);
            var rnd = new Random(6);
            for (var q = 0; q < queues; q++)
            {
                var qb = QBase + (ulong)q * QStride;
                var src = Buf(q, 2);
                var data = new byte[DescriptorsPerQueue * CopyLength];
                rnd.NextBytes(data);
                _p.Memory.Write(va + src, data);
                Bar32W(qb + QSqBase, (uint)(DmaIova + Buf(q, 0)));
                Bar32W(qb + QSqBase + 4, 0);
                Bar32W(qb + QCqBase, (uint)(DmaIova + Buf(q, 1)));
                Bar32W(qb + QCqBase + 4, 0);
                Bar32W(qb + QSize, RingEntries);
                Bar32W(qb + QCtrl, QCtrlEnable | QCtrlIrq);
                var desc = new byte[DescSize];
                for (var d = 0; d < DescriptorsPerQueue; d++)
                {
                    BinaryPrimitives.WriteUInt64LittleEndian(desc, DmaIova + src + (ulong)(d * CopyLength));
                    BinaryPrimitives.WriteUInt64LittleEndian(desc.AsSpan(8), DmaIova + Buf(q, 3) + (ulong)(d * CopyLength));
                    BinaryPrimitives.WriteUInt32LittleEndian(desc.AsSpan(16), (uint)CopyLength);
                    BinaryPrimitives.WriteUInt64LittleEndian(desc.AsSpan(24), (ulong)(q << 8 | d));
                    _p.Memory.Write(va + Buf(q, 0) + (ulong)(d * DescSize), desc);
                }
                res.CopiesExpected += DescriptorsPerQueue;
            }
            for (var q = 0; q < queues; q++) Bar32W(QBase + (ulong)q * QStride + QSqTail, (uint)DescriptorsPerQueue); // doorbells

            // --- wait for every queue's interrupt with epoll, then read the eventfds
            res.InterruptsPerQueue = new ulong[queues];
            var seen = new bool[queues];
            Span<ulong> tokens = stackalloc ulong[16];
            for (var rounds = 0; rounds < queues && seen.Contains(false); rounds++)
            {
                var n = epoll.Wait(tokens, EpollTimeoutMs);
                if (n == 0) break;
                for (var i = 0; i < n; i++)
                {
                    var q = (int)tokens[i];
                    if (efds[q].TryRead(out var count)) { res.InterruptsPerQueue[q] += count; seen[q] = true; }
                }
            }
            if (seen.Contains(false)) return Fail(res, $"no MSI-X eventfd signal from queue(s) {string.Join(",", Enumerable.Range(0, queues).Where(i => !seen[i]))}");

            // --- completions and data
            for (var q = 0; q < queues; q++)
            {
                var cq = new byte[CplSize * DescriptorsPerQueue];
                _p.Memory.Read(va + Buf(q, 1), cq);
                var src = new byte[DescriptorsPerQueue * CopyLength];
                var dst = new byte[src.Length];
                _p.Memory.Read(va + Buf(q, 2), src);
                _p.Memory.Read(va + Buf(q, 3), dst);
                for (var d = 0; d < DescriptorsPerQueue; d++)
                {
                    var cookie = BinaryPrimitives.ReadUInt64LittleEndian(cq.AsSpan(d * CplSize));
                    var status = BinaryPrimitives.ReadUInt32LittleEndian(cq.AsSpan(d * CplSize + 8));
                    var same = src.AsSpan(d * CopyLength, CopyLength).SequenceEqual(dst.AsSpan(d * CopyLength, CopyLength));
                    if (cookie == (ulong)(q << 8 | d) && status == 0 && same) res.CopiesVerified++;
                }
            }
            res.Log.Add($"{queues} queues x {DescriptorsPerQueue} copies of {CopyLength} B: {res.CopiesVerified}/{res.CopiesExpected} verified, MSI-X eventfd counts [{string.Join(",", res.InterruptsPerQueue)}]");
            if (res.CopiesVerified != res.CopiesExpected) return Fail(res, "data mismatch");
            OnDataVerified?.Invoke();

            // --- a DMA aimed at an IOVA nobody mapped: the IOMMU stops it, the device reports a write fault
            var fq = 0;
            var qb0 = QBase;
            var fdesc = new byte[DescSize];
            BinaryPrimitives.WriteUInt64LittleEndian(fdesc, DmaIova + Buf(fq, 2));
            BinaryPrimitives.WriteUInt64LittleEndian(fdesc.AsSpan(8), UnmappedIova);
            BinaryPrimitives.WriteUInt32LittleEndian(fdesc.AsSpan(16), 0x1000);
            BinaryPrimitives.WriteUInt64LittleEndian(fdesc.AsSpan(24), 0xFA17);
            var slot = (ulong)DescriptorsPerQueue;
            _p.Memory.Write(va + Buf(fq, 0) + slot * DescSize, fdesc);
            Bar32W(qb0 + QSqTail, (uint)(DescriptorsPerQueue + 1));
            if (epoll.Wait(tokens, EpollTimeoutMs) > 0) efds[fq].TryRead(out _);
            var fc = new byte[CplSize];
            _p.Memory.Read(va + Buf(fq, 1) + slot * CplSize, fc);
            res.FaultStatus = BinaryPrimitives.ReadUInt32LittleEndian(fc.AsSpan(8));
            var err = Bar32(qb0 + QError);
            var after = new byte[0x1000];
            _p.Memory.Read(canary, after);
            res.CanaryIntact = after.All(b => b == 0xA5);
            res.Log.Add($"DMA write to unmapped IOVA 0x{UnmappedIova:x}: completion status {res.FaultStatus} (2 = write fault), Q0 ERROR {err}, unrelated memory intact: {res.CanaryIntact}");
            if (res.FaultStatus != 2 || !res.CanaryIntact) return Fail(res, "unmapped DMA was not stopped");
            Bar32W(qb0 + QError, err);

            // --- disable MSI-X, unmap
            var off = Bytes(new VfioIrqSet { Argsz = 20, Flags = VfioIrqSetFlags.DataNone | VfioIrqSetFlags.ActionTrigger, Index = VfioPciIndex.IrqMsix });
            _p.Ioctl(_device, VfioIoctl.DeviceSetIrqs, off);
            var un = Bytes(new VfioIommuType1DmaUnmap { Argsz = 24, Iova = DmaIova, Size = DmaSize });
            r = _p.Ioctl(_container, VfioIoctl.IommuUnmapDma, un);
            if (r < 0 || MemoryMarshal.Read<VfioIommuType1DmaUnmap>(un).Size != DmaSize) return Fail(res, $"UNMAP_DMA: {E(r)}");
            return true;
        }
        finally
        {
            foreach (var e in efds) e?.Dispose();
        }
    }

    /// <summary>Per-queue buffer offsets in the DMA mapping: 0 SQ, 1 CQ, 2 source, 3 destination (4 KiB each, 4 queues).</summary>
    static ulong Buf(int q, int kind) => (ulong)kind * 0x4000 + (ulong)q * 0x1000;

    ulong RegionOffset(uint index, out ulong size)
    {
        var ri = Bytes(new VfioRegionInfo { Argsz = 32, Index = index });
        _p.Ioctl(_device, VfioIoctl.DeviceGetRegionInfo, ri);
        var v = MemoryMarshal.Read<VfioRegionInfo>(ri);
        size = v.Size;
        return v.Offset;
    }

    uint Bar32(ulong reg)
    {
        Span<byte> b = stackalloc byte[4];
        return _p.Pread(_device, b, _bar0Offset + reg) == 4 ? BinaryPrimitives.ReadUInt32LittleEndian(b) : uint.MaxValue;
    }

    void Bar32W(ulong reg, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        _p.Pwrite(_device, b, _bar0Offset + reg);
    }

    ushort CfgRead16(int off)
    {
        Span<byte> b = stackalloc byte[2];
        _p.Pread(_device, b, _cfgOffset + (ulong)off);
        return BinaryPrimitives.ReadUInt16LittleEndian(b);
    }

    void CfgWrite16(int off, ushort v)
    {
        Span<byte> b = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, v);
        _p.Pwrite(_device, b, _cfgOffset + (ulong)off);
    }

    void Teardown()
    {
        if (_device >= 0) _p.Close(_device);
        if (_group >= 0) _p.Close(_group);
        if (_container >= 0) _p.Close(_container);
        _device = _group = _container = -1;
    }
}
