using System.Buffers.Binary;
using Doorbell.Devices;
using Doorbell.Gic.Its;
using Doorbell.Gic.V3;
using Doorbell.Kvm;
using Doorbell.Memory;
using Doorbell.Vmm;

// A guest kernel's driver for the multi-queue DMA device, run as guest software on vCPU 0: it brings up the vGICv3
// and the vITS the way the host ITS driver does (tables in guest RAM, MAPC/MAPD/MAPTI through the command queue),
// programs the device's MSI-X table with the guest's GITS_TRANSLATER and EventIDs, gives the device guest-physical
// buffers, rings the doorbells and takes the LPIs on its vCPU. Every access is a guest load/store: guest RAM through
// the memslots, the vGIC in the kernel, the device's BAR as MMIO exits to the VMM.
// Known limits: the driver is told its BAR address (no guest ECAM enumeration yet); it does not reuse Doorbell's host
// ItsDriver/GicV3HostDriver (they are not yet portable across machines: issue 11 item 3).
namespace Doorbell.Examples;

public sealed class GuestMqDriverResult
{
    public List<string> Log { get; } = [];
    /// <summary>(queue, LPI INTID) for every interrupt the guest handler took.</summary>
    public List<(int Queue, int Intid)> Handled { get; } = [];
    public int CopiesVerified { get; set; }
    public int CopiesExpected { get; set; }
    public uint FaultStatus { get; set; } = uint.MaxValue;
    /// <summary>The hop counters of the first interrupt, in path order.</summary>
    public List<(string Hop, long Count)> Hops { get; } = [];
    public string? Failure { get; set; }
    public bool Ok => Failure is null;
}

/// <param name="hostInterrupts">The host kernel's interrupt entry (the host event loop's step).</param>
/// <param name="hostLpisTaken">How many LPIs the host CPUs have taken so far (for the hop list).</param>
public sealed class GuestMqDriver(GuestVm vmm, VfioPciProxy device, Func<int> hostInterrupts, Func<long> hostLpisTaken)
{
    // Guest physical layout (guest RAM from 0x4000_0000)
    const ulong Prop = 0x4010_0000, Pend = 0x4020_0000, Cmdq = 0x4030_0000, Dt = 0x4040_0000, Ct = 0x4050_0000, Itt = 0x4060_0000;
    public const ulong DmaBase = 0x4100_0000;
    /// <summary>A guest physical address outside guest RAM: never mapped in the VFIO container.</summary>
    public const ulong UnmappedGpa = 0x7000_0000;
    const int RingEntries = 8;
    public const int FirstLpi = 8192;
    public int Queues { get; init; } = 4;
    public int DescriptorsPerQueue { get; init; } = 2;
    public int CopyLength { get; init; } = 0x800;
    /// <summary>False when the guest's interrupt controller is already up (a second run after a device reset).</summary>
    public bool SetUpInterruptController { get; init; } = true;

    Vcpu Cpu => vmm.Vm.Vcpus[0];
    ulong _cwriter;

    void W(ulong a, int size, ulong v)
    {
        if (Cpu.Write(a, size, v) != BusStatus.Ok) throw new InvalidOperationException($"guest store to 0x{a:x} aborted");
    }

    uint R32(ulong a) => Cpu.Read(a, 4, out var v) == BusStatus.Ok ? (uint)v : uint.MaxValue;

    static ulong Buf(int q, int kind) => DmaBase + (ulong)kind * 0x4000 + (ulong)q * 0x1000;

    void Cmd(Action<ulong[]> build)
    {
        var c = new ulong[4];
        build(c);
        for (var i = 0; i < 4; i++) W(Cmdq + _cwriter + (ulong)i * 8, 8, c[i]);
        _cwriter += 32;
        W(QemuVirtGicV3.ItsBase.Value + GicV3Its.GITS_CWRITER, 8, _cwriter);
    }

    public GuestMqDriverResult Run()
    {
        var res = new GuestMqDriverResult();
        try { Drive(res); }
        catch (InvalidOperationException e) { res.Failure = e.Message; }
        return res;
    }

    void Drive(GuestMqDriverResult res)
    {
        var vm = vmm.Vm;
        var devId = device.GuestDeviceId;
        // --- interrupt controller: distributor, redistributors, CPU interfaces, vITS
        if (SetUpInterruptController) SetUpGic(res, devId);
        DriveDevice(res);
    }

    void SetUpGic(GuestMqDriverResult res, uint devId)
    {
        var vm = vmm.Vm;
        W(QemuVirtGicV3.GicdBase.Value + GicV3.GICD_CTLR, 4, GicV3.CtlrEnableGrp1 | GicV3.CtlrAre);
        for (var c = 0; c < vm.Vcpus.Count; c++)
        {
            var rd = QemuVirtGicV3.GicrBase.Value + (ulong)c * GicV3Redistributor.FrameSize;
            W(rd + GicV3Redistributor.GICR_WAKER, 4, 0);
            W(rd + GicV3Redistributor.GICR_PROPBASER, 8, Prop | 15);
            W(rd + GicV3Redistributor.GICR_PENDBASER, 8, Pend + (ulong)c * 0x1_0000 | (1UL << 62));
            W(rd + GicV3Redistributor.GICR_CTLR, 4, 1);
            vm.Vcpus[c].Icc!.Pmr = 0xFF;
            vm.Vcpus[c].Icc!.IgrpEn1 = 1;
        }
        var its = QemuVirtGicV3.ItsBase.Value;
        W(its + GicV3Its.GITS_BASER, 8, (1UL << 63) | Dt);
        W(its + GicV3Its.GITS_BASER + 8, 8, (1UL << 63) | Ct);
        W(its + GicV3Its.GITS_CBASER, 8, (1UL << 63) | Cmdq | 15);
        W(its + GicV3Its.GITS_CTLR, 4, 1);
        Cmd(c => ItsCommand.Mapc(c, 0, 0, true));
        Cmd(c => ItsCommand.Mapd(c, devId, Itt, 5, true));
        for (var q = 0; q < Queues; q++)
        {
            var qq = q;
            W(Prop + (ulong)q, 1, 0xA0 | 2 | 1); // LPI 8192+q: priority 0xA0, enabled
            Cmd(c => ItsCommand.Mapti(c, devId, (uint)qq, (uint)(FirstLpi + qq), 0));
        }
        if (vmm.Its.CommandErrorCount != 0) throw new InvalidOperationException($"vITS command error {vmm.Its.CommandErrors[0]}");
        res.Log.Add($"guest: vGICv3 up, vITS: MAPC icid 0 -> vCPU 0, MAPD DeviceID 0x{devId:x}, MAPTI events 0..{Queues - 1} -> LPIs {FirstLpi}..{FirstLpi + Queues - 1}");
    }

    void DriveDevice(GuestMqDriverResult res)
    {
        var vm = vmm.Vm;

        // --- the device: MSI-X table entries = (guest GITS_TRANSLATER, EventID q), unmasked
        var bar = device.GuestBar0;
        if (R32(bar + MqRegs.Id) != MqRegs.IdValue) throw new InvalidOperationException($"device ID 0x{R32(bar + MqRegs.Id):x}");
        for (var q = 0; q < Queues; q++)
        {
            var e = bar + device.MsixTableOffset + (ulong)q * 16;
            W(e, 4, QemuVirtGicV3.TranslaterAddress.Value & 0xFFFF_FFFF);
            W(e + 4, 4, QemuVirtGicV3.TranslaterAddress.Value >> 32);
            W(e + 8, 4, (ulong)q);
            W(e + 12, 4, 0);
        }
        res.Log.Add($"guest: MSI-X[0..{Queues - 1}] = (0x{QemuVirtGicV3.TranslaterAddress.Value:x}, q); VMM: {device.ActiveVectors} vectors as irqfds (GSI {device.GsiOf(0)}..), VFIO_DEVICE_SET_IRQS");

        // --- queues with guest-physical buffers (IOVA = GPA)
        W(bar + MqRegs.Ctrl, 4, MqRegs.CtrlEnable);
        var rnd = new Random(14);
        var mem = vm.Memory;
        for (var q = 0; q < Queues; q++)
        {
            var qb = bar + MqRegs.QueueBase + (ulong)q * MqRegs.QueueStride;
            var data = new byte[DescriptorsPerQueue * CopyLength];
            rnd.NextBytes(data);
            mem.Write(Buf(q, 2), data);
            W(qb + MqRegs.SqBase, 8, Buf(q, 0));
            W(qb + MqRegs.CqBase, 8, Buf(q, 1));
            W(qb + MqRegs.Size, 4, RingEntries);
            W(qb + MqRegs.QCtrl, 4, MqRegs.QCtrlEnable | MqRegs.QCtrlIrq);
            var desc = new byte[MqRegs.DescriptorSize];
            for (var d = 0; d < DescriptorsPerQueue; d++)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(desc, Buf(q, 2) + (ulong)(d * CopyLength));
                BinaryPrimitives.WriteUInt64LittleEndian(desc.AsSpan(8), Buf(q, 3) + (ulong)(d * CopyLength));
                BinaryPrimitives.WriteUInt32LittleEndian(desc.AsSpan(16), (uint)CopyLength);
                BinaryPrimitives.WriteUInt64LittleEndian(desc.AsSpan(24), (ulong)(q << 8 | d));
                mem.Write(Buf(q, 0) + (ulong)(d * MqRegs.DescriptorSize), desc);
            }
            res.CopiesExpected += DescriptorsPerQueue;
        }

        // --- queue 0 first, alone, with its hops counted
        var hostBefore = hostLpisTaken();
        var irqfdWakesBefore = vm.IrqfdWakes;
        var vitsBefore = vmm.Its.Translations;
        var kicksBefore = Cpu.Kicks;
        W(bar + MqRegs.QueueBase + MqRegs.SqTail, 4, (ulong)DescriptorsPerQueue);
        hostInterrupts();
        res.Hops.Add(("device MSI-X write through the SMMU to the physical ITS; host CPU took the LPI, VFIO's handler signalled the vector's eventfd", hostLpisTaken() - hostBefore));
        res.Hops.Add(("irqfd woke on that eventfd (GSI route: MSI with the guest DeviceID)", vm.IrqfdWakes - irqfdWakesBefore));
        res.Hops.Add(("vITS translated (DeviceID, EventID) to a vLPI", vmm.Its.Translations - vitsBefore));
        res.Hops.Add(("vCPU 0 kicked (vLPI pending at its redistributor)", Cpu.Kicks - kicksBefore));
        var handled = Cpu.TakeInterrupts(intid => res.Handled.Add((intid - FirstLpi, intid)));
        res.Hops.Add(("guest handler ran (ICC_IAR1 / ICC_EOIR1 on vCPU 0)", handled));
        // --- the other queues together
        for (var q = 1; q < Queues; q++) W(bar + MqRegs.QueueBase + (ulong)q * MqRegs.QueueStride + MqRegs.SqTail, 4, (ulong)DescriptorsPerQueue);
        hostInterrupts();
        Cpu.TakeInterrupts(intid => res.Handled.Add((intid - FirstLpi, intid)));

        // --- completions and data, read by the guest from its RAM
        for (var q = 0; q < Queues; q++)
        {
            var cq = new byte[MqRegs.CompletionSize * DescriptorsPerQueue];
            var src = new byte[DescriptorsPerQueue * CopyLength];
            var dst = new byte[src.Length];
            mem.Read(Buf(q, 1), cq);
            mem.Read(Buf(q, 2), src);
            mem.Read(Buf(q, 3), dst);
            for (var d = 0; d < DescriptorsPerQueue; d++)
            {
                var cookie = BinaryPrimitives.ReadUInt64LittleEndian(cq.AsSpan(d * MqRegs.CompletionSize));
                var status = BinaryPrimitives.ReadUInt32LittleEndian(cq.AsSpan(d * MqRegs.CompletionSize + 8));
                if (cookie == (ulong)(q << 8 | d) && status == MqRegs.StatusOk &&
                    src.AsSpan(d * CopyLength, CopyLength).SequenceEqual(dst.AsSpan(d * CopyLength, CopyLength)))
                    res.CopiesVerified++;
            }
        }
        res.Log.Add($"guest: {res.CopiesVerified}/{res.CopiesExpected} DMA copies verified in guest RAM; LPIs handled on vCPU 0: {string.Join(",", res.Handled.Select(h => h.Intid))}");

        // --- a DMA to a guest physical address the VMM never mapped: the physical SMMU stops it
        var fdesc = new byte[MqRegs.DescriptorSize];
        BinaryPrimitives.WriteUInt64LittleEndian(fdesc, Buf(0, 2));
        BinaryPrimitives.WriteUInt64LittleEndian(fdesc.AsSpan(8), UnmappedGpa);
        BinaryPrimitives.WriteUInt32LittleEndian(fdesc.AsSpan(16), 0x1000);
        BinaryPrimitives.WriteUInt64LittleEndian(fdesc.AsSpan(24), 0xFA17);
        mem.Write(Buf(0, 0) + (ulong)DescriptorsPerQueue * MqRegs.DescriptorSize, fdesc);
        W(bar + MqRegs.QueueBase + MqRegs.SqTail, 4, (ulong)(DescriptorsPerQueue + 1));
        hostInterrupts();
        Cpu.TakeInterrupts(_ => { });
        var fc = new byte[MqRegs.CompletionSize];
        mem.Read(Buf(0, 1) + (ulong)DescriptorsPerQueue * MqRegs.CompletionSize, fc);
        res.FaultStatus = BinaryPrimitives.ReadUInt32LittleEndian(fc.AsSpan(8));
        res.Log.Add($"guest: DMA write to unmapped GPA 0x{UnmappedGpa:x}: completion status {res.FaultStatus} (2 = write fault)");
        if (res.CopiesVerified != res.CopiesExpected) res.Failure = "data mismatch";
        else if (res.FaultStatus != MqRegs.StatusWriteFault) res.Failure = "unmapped DMA was not stopped";
    }
}
