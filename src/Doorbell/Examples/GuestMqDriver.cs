using Doorbell.Devices;
using Doorbell.Host.Kernel;
using Doorbell.Kvm;
using Doorbell.Memory;
using Doorbell.Vmm;

// Guest software on vCPU 0 using the multi-queue DMA device through Doorbell's own kernel layer: it boots the guest
// kernel (GuestKernel: the host's GICv3 + ITS or GICv2 + GICv2m drivers and PCI enumeration, over the vCPU's view of
// guest physical space), binds the same MqDmaDriver a kernel uses for the device (found by enumerating the VMM's guest
// ECAM, its BAR placed by enumeration, its MSI-X vectors from the guest's MSI domain), then submits copies between
// guest-physical buffers, takes the completions in the guest's interrupt handler and checks the data in guest RAM.
// This file only plays the part of a test module inside the guest: every driver it calls is shared with the host.
namespace Doorbell.Examples;

public sealed class GuestMqDriverResult
{
    public List<string> Log { get; } = [];
    /// <summary>(queue, INTID) for every interrupt the guest handler took.</summary>
    public List<(int Queue, int Intid)> Handled { get; } = [];
    public int CopiesVerified { get; set; }
    public int CopiesExpected { get; set; }
    public uint FaultStatus { get; set; } = uint.MaxValue;
    /// <summary>The hop counters of the first interrupt, in path order.</summary>
    public List<(string Hop, long Count)> Hops { get; } = [];
    public string? Failure { get; set; }
    public bool Ok => Failure is null;
    /// <summary>The guest kernel's driver (rings, vectors) after the run.</summary>
    public MqDmaDriver? Driver { get; set; }
    /// <summary>Guest physical address of queue q's source buffer (the copies' data).</summary>
    public IReadOnlyList<ulong> Sources { get; set; } = [];
}

/// <param name="hostLpisTaken">How many host interrupts of the device the host CPUs have taken so far (for the hop list).</param>
public sealed class GuestMqDriver(GuestVm vmm, VfioPciProxy device, Func<long> hostLpisTaken)
{
    /// <summary>A guest physical address outside guest RAM: never mapped in the VFIO container.</summary>
    public const ulong UnmappedGpa = 0x7000_0000;
    public int Queues { get; init; } = 4;
    public int DescriptorsPerQueue { get; init; } = 2;
    public int CopyLength { get; init; } = 0x800;
    /// <summary>False when the guest kernel is already booted (a second run after a device reset re-binds the driver).</summary>
    public bool SetUpInterruptController { get; init; } = true;

    Vcpu Cpu => vmm.Vm.Vcpus[0];

    /// <summary>The guest kernel booted on <paramref name="vm"/>'s board over vCPU 0 (GICv3 + ITS or GICv2 + GICv2m as the board has).</summary>
    public static GuestKernel BootKernel(GuestVm vm)
    {
        ArgumentNullException.ThrowIfNull(vm);
        var v3 = vm.InterruptController == GuestInterruptController.GicV3Its;
        var icc = v3 ? vm.Vm.Vcpus.Select(c => (Doorbell.Gic.V3.IIccSystemRegisters)c.Icc!).ToArray() : null;
        var views = vm.Vm.Vcpus.Select(c => (IMemoryView)new VcpuMemoryView(c)).ToArray();
        var k = GuestKernel.Boot(views[0], vm.Board, vm.RamSize, icc, its: v3, gicV2m: !v3, gicV2CpuViews: v3 ? null : views, loop: vm.Vm.Loop);
        vm.GuestSoftware = k;
        // the guest kernel runs on the vCPUs: a kick raises its CPU's IRQ input (KVM_RUN)
        for (var i = 0; i < k.Cpus.Count && i < vm.Vm.Vcpus.Count; i++) vm.Vm.Vcpus[i].Run(k.Cpus[i]);
        return k;
    }

    public GuestMqDriverResult Run()
    {
        var res = new GuestMqDriverResult();
        try { Drive(res); }
        catch (InvalidOperationException e) { res.Failure = e.Message; }
        catch (Doorbell.Host.Irq.IrqException e) { res.Failure = e.Message; }
        return res;
    }

    void Drive(GuestMqDriverResult res)
    {
        var vm = vmm.Vm;
        GuestKernel k;
        if (SetUpInterruptController)
        {
            var exits = vm.MmioExits;
            k = BootKernel(vmm);
            res.Log.Add($"guest kernel: {k.Interrupts.MsiDomain.Name} MSI domain up ({(k.Interrupts.GicV3 is not null ? "GICv3" : "GICv2")} driver), PCI enumerated over guest ECAM 0x{vmm.Board.PcieEcam:x}: " +
                string.Join(", ", k.Pci.Functions.Select(f => $"{f.Name} {f.VendorId:x4}:{f.DeviceId:x4}")) + $" ({vm.MmioExits - exits} MMIO exits)");
        }
        else k = vmm.GuestSoftware as GuestKernel ?? throw new InvalidOperationException("no guest kernel booted");
        var name = $"0000:00:{device.GuestSlot:x2}.0";
        var fn = k.FindFunction(name) ?? throw new InvalidOperationException($"guest enumeration did not find {name}");
        k.Unbind(fn); // a re-run after a reset re-binds (remove, then probe)
        var drv = new MqDmaDriver(k, fn);
        var r = k.Bind(drv);
        if (r < 0) throw new InvalidOperationException($"mq-dma probe: {Errno.Name(r)}");
        res.Driver = drv;
        if (drv.Queues < Queues) throw new InvalidOperationException($"device has {drv.Queues} queues");
        res.Log.Add($"guest: mq-dma bound to {name}, BAR0 at GPA 0x{drv.Bar0:x}; {(device.MsiEnabled ? "MSI" : "MSI-X")}[0..{Queues - 1}] = " +
            string.Join(", ", drv.Vectors!.Vectors.Take(Queues).Select(v => $"(0x{v.Message.Address:x}, {v.Message.Data}) -> INTID {v.Intid}")) +
            $"; VMM: {device.ActiveVectors} vectors as irqfds (GSI {device.GsiOf(0)}..), VFIO_DEVICE_SET_IRQS");
        var handled = res.Handled;
        drv.Interrupt = (q, intid) => handled.Add((q, intid));
        var completions = new List<(int Queue, ulong Cookie, uint Status)>();
        drv.Completed = (q, cookie, status, _) => completions.Add((q, cookie, status));

        // --- data buffers (guest RAM = DMA addresses), filled by the guest
        var bytes = DescriptorsPerQueue * CopyLength;
        var pages = (ulong)Math.Max(0x1000, (bytes + 0xFFF) & ~0xFFF);
        var src = new ulong[Queues];
        var dst = new ulong[Queues];
        for (var q = 0; q < Queues; q++) if (!k.DmaMemory.TryAllocate(pages, out src[q])) throw new InvalidOperationException("guest DMA memory exhausted");
        for (var q = 0; q < Queues; q++) if (!k.DmaMemory.TryAllocate(pages, out dst[q])) throw new InvalidOperationException("guest DMA memory exhausted");
        res.Sources = src;
        var rnd = new Random(14);
        var mem = vm.Memory;
        var data = new byte[Queues][];
        for (var q = 0; q < Queues; q++)
        {
            data[q] = new byte[bytes];
            rnd.NextBytes(data[q]);
            mem.Write(src[q], data[q]);
        }
        res.CopiesExpected = Queues * DescriptorsPerQueue;

        // --- queue 0 first, alone, with its hops counted
        var hostBefore = hostLpisTaken();
        var irqfdWakesBefore = vm.IrqfdWakes;
        var translationsBefore = VirtualTranslations();
        var kicksBefore = Cpu.Kicks;
        var before = handled.Count;
        for (var d = 0; d < DescriptorsPerQueue; d++)
            Check(drv.Submit(0, src[0] + (ulong)(d * CopyLength), dst[0] + (ulong)(d * CopyLength), (uint)CopyLength, (ulong)(0 << 8 | d), ring: false));
        // the doorbell store; everything below happens before it returns, pushed from model to model: nobody polls
        drv.Ring(0);
        res.Hops.Add(($"device {(device.MsiEnabled ? "MSI" : "MSI-X")} write through the SMMU to the host's MSI controller; host CPU took it, VFIO's handler signalled the vector's eventfd", hostLpisTaken() - hostBefore));
        res.Hops.Add(("irqfd woke on that eventfd (GSI route: MSI with the guest DeviceID)", vm.IrqfdWakes - irqfdWakesBefore));
        res.Hops.Add((vmm.InterruptController == GuestInterruptController.GicV3Its ? "vITS translated (DeviceID, EventID) to a vLPI" : "vGICv2m frame raised the SPI the data names",
            VirtualTranslations() - translationsBefore));
        res.Hops.Add(("vCPU 0 kicked (interrupt pending at its virtual CPU interface)", Cpu.Kicks - kicksBefore));
        res.Hops.Add(("guest kernel's handler ran (IAR / EOI on vCPU 0, mq-dma's interrupt handler)", handled.Count - before));
        // --- the other queues together
        for (var q = 1; q < Queues; q++)
            for (var d = 0; d < DescriptorsPerQueue; d++)
                Check(drv.Submit(q, src[q] + (ulong)(d * CopyLength), dst[q] + (ulong)(d * CopyLength), (uint)CopyLength, (ulong)(q << 8 | d)));

        // --- completions (taken by the handler) and data, read by the guest from its RAM
        for (var q = 0; q < Queues; q++)
        {
            var got = new byte[bytes];
            mem.Read(dst[q], got);
            for (var d = 0; d < DescriptorsPerQueue; d++)
                if (completions.Contains((q, (ulong)(q << 8 | d), MqRegs.StatusOk)) &&
                    data[q].AsSpan(d * CopyLength, CopyLength).SequenceEqual(got.AsSpan(d * CopyLength, CopyLength)))
                    res.CopiesVerified++;
        }
        res.Log.Add($"guest: {res.CopiesVerified}/{res.CopiesExpected} DMA copies verified in guest RAM; interrupts handled on vCPU 0: {string.Join(",", handled.Select(h => h.Intid))}");

        // --- a DMA to a guest physical address the VMM never mapped: the physical SMMU stops it
        completions.Clear();
        Check(drv.Submit(0, src[0], UnmappedGpa, 0x1000, 0xFA17));
        res.FaultStatus = completions.Where(c => c.Cookie == 0xFA17).Select(c => c.Status).DefaultIfEmpty(uint.MaxValue).First();
        res.Log.Add($"guest: DMA write to unmapped GPA 0x{UnmappedGpa:x}: completion status {res.FaultStatus} (2 = write fault)");
        if (res.CopiesVerified != res.CopiesExpected) res.Failure = "data mismatch";
        else if (res.FaultStatus != MqRegs.StatusWriteFault) res.Failure = "unmapped DMA was not stopped";
    }

    long VirtualTranslations() => vmm.InterruptController == GuestInterruptController.GicV3Its ? vmm.Its.Translations : vmm.Vm.VgicV2m?.Raised ?? 0;

    static void Check(int r)
    {
        if (r < 0) throw new InvalidOperationException($"mq-dma submit: {Errno.Name(r)}");
    }
}
