using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Doorbell.Devices;
using Doorbell.Host.Kernel;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Platform;

namespace Doorbell.Tests.EndToEnd;

/// <summary>A qemu-virt board with real models, a booted host kernel, VFIO on top, and ioctl helpers.</summary>
sealed class E2ERig : IDisposable
{
    public readonly Machine Machine;
    public readonly BoardModels Models;
    public readonly HostKernel Kernel;
    public readonly VfioHost Vfio;
    public readonly VfioProcess Proc;
    public readonly List<MultiQueueDmaDevice> Mq = [];
    public readonly List<EventFd> EventFds = [];

    /// <param name="board">null: qemu-virt with <paramref name="gicVersion"/>; else a built-in board (juno-like,
    /// thunderx-like, its-and-gicv2m) with <paramref name="devices"/> mq-dma devices instead of its own PCIe tree.</param>
    /// <param name="era">The isolation-policy era VFIO type1 applies (today's when null).</param>
    public E2ERig(int gicVersion = 3, int devices = 1, bool allowUnsafe = false, Action<Machine>? populate = null, bool platform = false,
        PlatformMap? map = null, ulong ramSize = 512UL << 20, int cpus = 1, Func<Machine, Doorbell.Memory.IMemoryView>? memory = null,
        string? board = null, IsolationPolicyEra? era = null)
    {
        if (board is null)
        {
            (Machine, Models) = HostKernel.CreateBoard(new QemuVirtOptions
            {
                GicVersion = gicVersion, Its = gicVersion == 3, Map = map ?? PlatformMap.QemuVirt, RamSize = ramSize, Cpus = cpus,
            });
            for (var i = 0; i < devices; i++) Mq.Add(Machine.AddPci(new MultiQueueDmaDevice(4)));
        }
        else
        {
            var d = BoardDescription.LoadBuiltIn(board);
            d.Pcie = [.. Enumerable.Range(0, devices).Select(i => new PcieNode { Slot = i + 1, Device = "mq-dma", Queues = 4 })];
            (Machine, Models) = HostKernel.CreateBoard(d);
            Mq.AddRange(Machine.Devices.OfType<MultiQueueDmaDevice>());
        }
        populate?.Invoke(Machine);
        var plat = platform ? new[] { HostKernel.AddPlatformDma(Machine) } : null;
        Kernel = HostKernel.Boot(Machine, plat, memory?.Invoke(Machine));
        Vfio = Kernel.BuildVfio(new VfioOptions { AllowUnsafeInterrupts = allowUnsafe, IsolationEra = era ?? IsolationPolicyEra.Today });
        Proc = Kernel.CreateProcess(Vfio);
    }

    /// <summary>
    /// A rig on a board named as the end-to-end theories name them: qemu-virt-gicv3 (GICv3 + ITS + SMMUv3),
    /// qemu-virt-gicv2 (GICv2 + GICv2m + SMMUv3), or a built-in SMMUv2 board. The Juno-like board (GICv2m, no ITS)
    /// runs VFIO in the 2014 era unless <paramref name="era"/> says otherwise: today's policy refuses it.
    /// </summary>
    public static E2ERig For(string board, int devices = 1, bool allowUnsafe = false, Action<Machine>? populate = null, IsolationPolicyEra? era = null) => board switch
    {
        "qemu-virt-gicv3" => new E2ERig(gicVersion: 3, devices: devices, allowUnsafe: allowUnsafe, populate: populate, era: era),
        "qemu-virt-gicv2" => new E2ERig(gicVersion: 2, devices: devices, allowUnsafe: allowUnsafe, populate: populate, era: era),
        "juno-like" => new E2ERig(devices: devices, allowUnsafe: allowUnsafe, populate: populate, board: board, era: era ?? IsolationPolicyEra.Era2013),
        _ => new E2ERig(devices: devices, allowUnsafe: allowUnsafe, populate: populate, board: board, era: era),
    };

    /// <summary>A DMA fault as the board's IOMMU driver learned it: SMMUv3 event records, or arm-smmu's fault handlers.</summary>
    public sealed record DmaFault(ulong Address, uint StreamId, bool Write, bool Translation);

    long _v2FaultsSeen;

    /// <summary>Faults reported since the last call: the SMMUv3 event queue read, or (SMMUv2) the interrupts taken and
    /// the faults arm-smmu's handlers read from the fault registers.</summary>
    public List<DmaFault> DrainFaults()
    {
        var list = Kernel.DrainSmmuEvents().Select(e => new DmaFault(e.InputAddress, e.StreamId, !e.Read, e.Id == Doorbell.Smmu.V3.Evt.F_TRANSLATION)).ToList();
        if (Kernel.SmmuV2Driver is { } d)
        {
            Kernel.ServiceInterrupts();
            foreach (var f in d.Faults.TakeSince(ref _v2FaultsSeen))
            {
                list.Add(new DmaFault(f.Address, f.StreamId, (f.Syndrome0 & Doorbell.Smmu.V2.SmmuV2Field.FsynrWnr) != 0,
                    !f.Global && (f.Status & Doorbell.Smmu.V2.SmmuV2Field.FsrFaults) == Doorbell.Smmu.V2.SmmuV2Field.FsrTf));
            }
        }
        return list;
    }

    public void Dispose()
    {
        foreach (var e in EventFds) e.Dispose();
    }

    public KernelPciFunction Fn(int i) => Kernel.FindFunction($"0000:00:{i + 1:x2}.0")!;

    public static byte[] Bytes<T>(T v, int extra = 0) where T : unmanaged
    {
        var b = new byte[UserArg.SizeOf<T>() + extra];
        MemoryMarshal.Write(b, in v);
        return b;
    }

    /// <summary>Opens a container with <paramref name="group"/> and sets TYPE1v2. Returns (container, group fd, SET_IOMMU result).</summary>
    public (int Container, int Group, int SetIommu) OpenGroup(int group, int container = -1)
    {
        var c = container >= 0 ? container : Proc.OpenContainer();
        var g = Proc.OpenGroup(group);
        Assert.True(g > 0, $"open group {group}: {g}");
        var fd = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(fd, c);
        Assert.Equal(0, Proc.Ioctl(g, VfioIoctl.GroupSetContainer, fd));
        var r = container >= 0 ? 0 : Proc.Ioctl(c, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu);
        return (c, g, r);
    }

    public int Device(int groupFd, string name) =>
        Proc.Ioctl(groupFd, VfioIoctl.GroupGetDeviceFd, System.Text.Encoding.ASCII.GetBytes(name + "\0"));

    public int Map(int container, ulong vaddr, ulong iova, ulong size) =>
        Proc.Ioctl(container, VfioIoctl.IommuMapDma, Bytes(new VfioIommuType1DmaMap
        { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = vaddr, Iova = iova, Size = size }));

    public int Unmap(int container, ulong iova, ulong size) =>
        Proc.Ioctl(container, VfioIoctl.IommuUnmapDma, Bytes(new VfioIommuType1DmaUnmap { Argsz = 24, Iova = iova, Size = size }));

    /// <summary>MSI-X with one new eventfd per vector; returns the eventfds.</summary>
    public EventFd[] EnableMsix(int device, int count)
    {
        var set = new byte[20 + 4 * count];
        MemoryMarshal.Write(set, new VfioIrqSet { Argsz = (uint)set.Length, Flags = VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger, Index = VfioPciIndex.IrqMsix, Count = (uint)count });
        var efds = new EventFd[count];
        for (var i = 0; i < count; i++)
        {
            efds[i] = EventFd.Create();
            EventFds.Add(efds[i]);
            BinaryPrimitives.WriteInt32LittleEndian(set.AsSpan(20 + 4 * i), efds[i].Fd);
        }
        Assert.Equal(0, Proc.Ioctl(device, VfioIoctl.DeviceSetIrqs, set));
        return efds;
    }

    /// <summary>
    /// Function 0's group in a new container: 16 KiB of user memory mapped at IOVA 0x10_0000, bus mastering, MSI-X on
    /// four new eventfds, queue 0 set up and one 64-byte copy submitted (its completion status checked).
    /// </summary>
    public (int Container, int Device, ulong Va, EventFd[] EventFds) CopyOnceWithMsix()
    {
        var (c, g, r) = OpenGroup(Fn(0).Group.Id);
        Assert.Equal(0, r);
        var dev = Device(g, "0000:00:01.0");
        var va = Proc.Memory.MapAnonymous(0x4000);
        Assert.Equal(0, Map(c, va, 0x10_0000, 0x4000));
        EnableMaster(dev);
        var efd = EnableMsix(dev, 4);
        SetupQueue(dev, 0, 0x10_0000);
        Submit(dev, 0, va, 0, 0x10_2000, 0x10_3000, 64, 1);
        Assert.Equal(0u, CompletionStatus(va + 0x1000, 0));
        return (c, dev, va, efd);
    }

    /// <summary>SET_IRQS(DATA_EVENTFD | ACTION_TRIGGER) of one eventfd (-1: none) on IRQ index <paramref name="index"/>, vector <paramref name="start"/>.</summary>
    public void TriggerOnEventFd(int device, uint index, int eventFd, uint start = 0)
    {
        var set = new byte[24];
        BinaryPrimitives.WriteUInt32LittleEndian(set, 24);
        BinaryPrimitives.WriteUInt32LittleEndian(set.AsSpan(4), VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger);
        BinaryPrimitives.WriteUInt32LittleEndian(set.AsSpan(8), index);
        BinaryPrimitives.WriteUInt32LittleEndian(set.AsSpan(12), start);
        BinaryPrimitives.WriteUInt32LittleEndian(set.AsSpan(16), 1);
        BinaryPrimitives.WriteInt32LittleEndian(set.AsSpan(20), eventFd);
        Assert.Equal(0, Proc.Ioctl(device, VfioIoctl.DeviceSetIrqs, set));
    }

    /// <summary>A 32-bit pwrite at <paramref name="reg"/> of region <paramref name="region"/>.</summary>
    public void RegionWrite(int device, uint region, ulong reg, uint value)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        Assert.Equal(4, Proc.Pwrite(device, b, RegionOffset(device, region) + reg));
    }

    public ulong RegionOffset(int device, uint index)
    {
        var ri = Bytes(new VfioRegionInfo { Argsz = 32, Index = index });
        Assert.Equal(0, Proc.Ioctl(device, VfioIoctl.DeviceGetRegionInfo, ri));
        return MemoryMarshal.Read<VfioRegionInfo>(ri).Offset;
    }

    public void Bar(int device, ulong reg, uint value)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        Assert.Equal(4, Proc.Pwrite(device, b, RegionOffset(device, VfioPciIndex.Bar0) + reg));
    }

    public uint BarRead(int device, ulong reg)
    {
        var b = new byte[4];
        Assert.Equal(4, Proc.Pread(device, b, RegionOffset(device, VfioPciIndex.Bar0) + reg));
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    public void EnableMaster(int device)
    {
        var cfg = RegionOffset(device, VfioPciIndex.Config);
        var b = new byte[2];
        Proc.Pread(device, b, cfg + 4);
        b[0] |= 0x6;
        Assert.Equal(2, Proc.Pwrite(device, b, cfg + 4));
    }

    /// <summary>Sets queue <paramref name="q"/> of the device up with rings at iova (SQ) / iova+0x1000 (CQ), 8 entries, IRQ on.</summary>
    public void SetupQueue(int device, int q, ulong iova)
    {
        Bar(device, MqRegs.Ctrl, MqRegs.CtrlEnable);
        var qb = MqRegs.QueueBase + (ulong)q * MqRegs.QueueStride;
        Bar(device, qb + MqRegs.SqBase, (uint)iova); Bar(device, qb + MqRegs.SqBase + 4, (uint)(iova >> 32));
        Bar(device, qb + MqRegs.CqBase, (uint)(iova + 0x1000)); Bar(device, qb + MqRegs.CqBase + 4, (uint)((iova + 0x1000) >> 32));
        Bar(device, qb + MqRegs.Size, 8);
        Bar(device, qb + MqRegs.QCtrl, MqRegs.QCtrlEnable | MqRegs.QCtrlIrq);
    }

    /// <summary>Writes descriptor <paramref name="slot"/> of a queue whose SQ is at user address <paramref name="sqVa"/> and rings the doorbell.</summary>
    public void Submit(int device, int q, ulong sqVa, uint slot, ulong src, ulong dst, uint len, ulong cookie)
    {
        var d = new byte[32];
        BinaryPrimitives.WriteUInt64LittleEndian(d, src);
        BinaryPrimitives.WriteUInt64LittleEndian(d.AsSpan(8), dst);
        BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(16), len);
        BinaryPrimitives.WriteUInt64LittleEndian(d.AsSpan(24), cookie);
        Proc.Memory.Write(sqVa + slot * 32UL, d);
        Bar(device, MqRegs.QueueBase + (ulong)q * MqRegs.QueueStride + MqRegs.SqTail, (slot + 1) & 7);
    }

    public uint CompletionStatus(ulong cqVa, uint slot)
    {
        var c = new byte[16];
        Proc.Memory.Read(cqVa + slot * 16UL, c);
        return BinaryPrimitives.ReadUInt32LittleEndian(c.AsSpan(8));
    }
}
