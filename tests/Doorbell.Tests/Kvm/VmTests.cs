using Doorbell.Gic.Its;
using Doorbell.Gic.V3;
using Doorbell.Host.Os;
using Doorbell.Kvm;
using Doorbell.Memory;
using Doorbell.Tests.Gic;

namespace Doorbell.Tests.Kvm;

/// <summary>
/// The in-kernel part of guests: memslots, the vGICv3 + vITS (one ITS engine, guest memory, vCPU targets), GSI routing,
/// irqfd/resamplefd on real Linux eventfds, KVM_SIGNAL_MSI and their errno rules, guest MOVI/MOVALL, teardown.
/// Guest software is the ITS harness's programming sequence, run as loads/stores of vCPU 0.
/// </summary>
public class VmTests
{
    const uint Translater = 0x0809_0040;

    /// <summary>Guest: 2 vCPUs, device 8 with 32 events, collection n → vCPU n, event e → LPI 8192 + e on collection 0.</summary>
    static ItsHarness Guest(int cpus = 2)
    {
        var h = new ItsHarness(cpus, guest: true);
        for (var c = 0; c < cpus; c++) h.Mapc((ushort)c, c);
        h.MapBasic(8, 8192, 32, 0);
        Assert.Equal(0, h.Its.CommandErrorCount);
        return h;
    }

    static List<(int Vcpu, int Intid)> Drain(Vm vm)
    {
        var got = new List<(int, int)>();
        foreach (var v in vm.Vcpus) v.TakeInterrupts(id => got.Add((v.Id, id)));
        return got;
    }

    [Fact]
    public void Memslots_follow_kvm_set_user_memory_region_rules()
    {
        var h = new ItsHarness(1, guest: true);
        var vm = h.Vm!;
        var hva = vm.Memory.Vmm.MapAnonymous(0x10_0000);
        Assert.Equal(-Errno.EINVAL, vm.SetUserMemoryRegion(new(1, 0x8, 0x8000_0000, 0x10_0000, hva)));       // unknown flag
        Assert.Equal(-Errno.EINVAL, vm.SetUserMemoryRegion(new(1, 0, 0x8000_0800, 0x10_0000, hva)));         // unaligned GPA
        Assert.Equal(-Errno.EINVAL, vm.SetUserMemoryRegion(new(1, 0, 0x8000_0000, 0x10_0100, hva)));         // unaligned size
        Assert.Equal(-Errno.EINVAL, vm.SetUserMemoryRegion(new(40000, 0, 0x8000_0000, 0x10_0000, hva)));     // slot out of range
        Assert.Equal(-Errno.EEXIST, vm.SetUserMemoryRegion(new(1, 0, 0x4FF0_0000, 0x20_0000, hva)));         // overlaps slot 0
        Assert.Equal(0, vm.SetUserMemoryRegion(new(1, KvmConst.KVM_MEM_READONLY, 0x8000_0000, 0x10_0000, hva)));
        Assert.Equal(-Errno.EINVAL, vm.SetUserMemoryRegion(new(1, KvmConst.KVM_MEM_READONLY, 0x8000_0000, 0x20_0000, hva))); // resize
        // The VMM's memory is the guest's: a VMM store is seen by a guest load, through the host page behind both.
        Assert.Equal(UserAccess.Ok, vm.Memory.Vmm.Write(hva + 0x10, BitConverter.GetBytes(0x1122_3344_5566_7788UL)));
        Assert.Equal(BusStatus.Ok, vm.Vcpus[0].Read(0x8000_0010, 8, out var v));
        Assert.Equal(0x1122_3344_5566_7788UL, v);
        Assert.Equal(UserAccess.Ok, vm.Memory.Vmm.Translate(hva + 0x10, false, out var hostPa));
        Assert.Equal(BusStatus.Ok, h.Bus.Read(new PhysAddr(hostPa), 8, out var onHost, BusAttributes.Cpu));
        Assert.Equal(0x1122_3344_5566_7788UL, onHost);
        // A store to a read-only slot and an access to no slot are MMIO exits (no VMM handler: an abort for the guest).
        var exits = vm.MmioExits;
        Assert.Equal(BusStatus.DecodeError, vm.Vcpus[0].Write(0x8000_0010, 8, 0));
        Assert.Equal(BusStatus.DecodeError, vm.Vcpus[0].Read(0x9000_0000, 4, out _));
        Assert.Equal(exits + 2, vm.MmioExits);
        Assert.Equal(0, vm.SetUserMemoryRegion(new(1, KvmConst.KVM_MEM_READONLY, 0x8000_0000, 0, hva))); // delete
        Assert.Equal(-Errno.EINVAL, vm.SetUserMemoryRegion(new(1, 0, 0x8000_0000, 0, hva)));              // nothing to delete
    }

    [Fact]
    public void Vits_tables_live_in_guest_memory_behind_the_vmm_pages()
    {
        var h = Guest();
        // The guest's DTE for device 8 is in guest memory at DeviceTable + 8 * 8, i.e. in a host page of the VMM.
        var vm = h.Vm!;
        Span<byte> dte = stackalloc byte[8];
        h.ReadMem(ItsHarness.DeviceTable + 8 * 8, dte);
        Assert.Equal(1UL, BitConverter.ToUInt64(dte) >> 63);
        Assert.True(vm.Memory.TryGetHva(ItsHarness.DeviceTable, out var hva));
        Assert.Equal(UserAccess.Ok, vm.Memory.Vmm.Translate(hva, false, out var hostPa));
        Assert.Equal(BusStatus.Ok, h.Bus.ReadU64(hostPa + 8 * 8, out var onHost));
        Assert.Equal(BitConverter.ToUInt64(dte), onHost);
        // Nothing of the guest's ITS lives on the host's physical map: no ITS frame there.
        Assert.DoesNotContain(h.Bus.Regions, r => r.Name.Contains("its", StringComparison.Ordinal));
    }

    [Fact]
    public void Irqfd_msi_route_with_devid_reaches_the_guest_handler_through_the_vits()
    {
        var h = Guest();
        var vm = h.Vm!;
        using var efd = EventFd.Create();
        Assert.Equal(0, vm.SetGsiRouting([KvmIrqRoutingEntry.Msi(40, Translater, 5, devId: 8)]));
        Assert.Equal(0, vm.Irqfd(new KvmIrqfd(efd.Fd, 40, 0)));
        var kicks = vm.Vcpus[0].Kicks;
        Assert.True(efd.Signal()); // userspace (or VFIO's handler) signals: the irqfd's wake runs in the signaller
        Assert.Equal(kicks + 1, vm.Vcpus[0].Kicks);
        Assert.True(vm.Vcpus[0].KickPending);
        Assert.False(efd.TryRead(out _)); // consumed by the irqfd, as KVM's irqfd_wakeup does
        Assert.Equal([(0, 8197)], Drain(vm));
        Assert.Equal(1, h.Its.Translations);
    }

    [Fact]
    public void Irqfd_msi_route_without_devid_is_dropped_and_signal_msi_says_einval()
    {
        var h = Guest();
        var vm = h.Vm!;
        using var efd = EventFd.Create();
        Assert.Equal(0, vm.SetGsiRouting([KvmIrqRoutingEntry.Msi(3, Translater, 5, devId: null)]));
        Assert.Equal(0, vm.Irqfd(new KvmIrqfd(efd.Fd, 3, 0)));
        efd.Signal();
        Assert.Empty(Drain(vm));
        Assert.Equal(0, h.Its.Translations);
        Assert.Equal(-Errno.EINVAL, vm.SignalMsi(new KvmMsi(Translater, 5, 0, 8)));
    }

    [Fact]
    public void Signal_msi_follows_kvm_return_rules()
    {
        var h = Guest();
        var vm = h.Vm!;
        Assert.Equal(1, vm.SignalMsi(new KvmMsi(Translater, 3, KvmConst.KVM_MSI_VALID_DEVID, 8)));
        Assert.Equal(0, vm.SignalMsi(new KvmMsi(Translater, 3, KvmConst.KVM_MSI_VALID_DEVID, 9)));   // unmapped device: blocked
        Assert.Equal(ItsDropReason.UnmappedDevice, h.Its.LastDrop.Reason);
        Assert.Equal(-Errno.EINVAL, vm.SignalMsi(new KvmMsi(Translater, 3, 0x4, 8)));                  // unknown flag
        Assert.Equal(-Errno.EINVAL, vm.SignalMsi(new KvmMsi(0x0900_0040, 3, KvmConst.KVM_MSI_VALID_DEVID, 8))); // not a vITS
        h.W32(QemuVirtGicV3.ItsBase.Value + GicV3Its.GITS_CTLR, 0);
        Assert.Equal(-Errno.EBUSY, vm.SignalMsi(new KvmMsi(Translater, 3, KvmConst.KVM_MSI_VALID_DEVID, 8)));
        var noIts = new ItsHarness(1, guest: true).Vm!;
        noIts.Dispose();
        Assert.Equal(-Errno.EBADF, noIts.SignalMsi(new KvmMsi(Translater, 3, KvmConst.KVM_MSI_VALID_DEVID, 8)));
        Assert.Equal([(0, 8195)], Drain(vm));
    }

    [Fact]
    public void Gsi_routing_errno_rules()
    {
        var vm = Guest().Vm!;
        Assert.Equal(-Errno.EINVAL, vm.SetGsiRouting([], flags: 1));
        Assert.Equal(-Errno.EINVAL, vm.SetGsiRouting([KvmIrqRoutingEntry.Irqchip(4096, 1)]));                          // GSI beyond the limit
        Assert.Equal(-Errno.EINVAL, vm.SetGsiRouting([KvmIrqRoutingEntry.Irqchip(1, KvmConst.KVM_IRQCHIP_NUM_PINS)]));  // pin
        Assert.Equal(-Errno.EINVAL, vm.SetGsiRouting([KvmIrqRoutingEntry.Irqchip(1, 1, irqchip: 1)]));                  // chip
        Assert.Equal(-Errno.EINVAL, vm.SetGsiRouting([KvmIrqRoutingEntry.Irqchip(1, 1) with { Flags = 1 }]));            // flags on irqchip
        Assert.Equal(-Errno.EINVAL, vm.SetGsiRouting([KvmIrqRoutingEntry.Msi(1, Translater, 0, 8) with { Flags = 3 }])); // MSI flags
        Assert.Equal(-Errno.EINVAL, vm.SetGsiRouting([KvmIrqRoutingEntry.Irqchip(1, 1) with { Type = 7 }]));             // type
        Assert.Equal(-Errno.EINVAL, vm.SetGsiRouting([KvmIrqRoutingEntry.Irqchip(1, 1), KvmIrqRoutingEntry.Irqchip(1, 2)])); // twice to the chip
        Assert.Equal(-Errno.EINVAL, vm.SetGsiRouting([KvmIrqRoutingEntry.Irqchip(1, 1), KvmIrqRoutingEntry.Msi(1, Translater, 0, 8)]));
        Assert.Equal(-Errno.EINVAL, vm.SetGsiRouting(new KvmIrqRoutingEntry[4097]));
        Assert.Equal(0, vm.SetGsiRouting([KvmIrqRoutingEntry.Irqchip(1, 1), KvmIrqRoutingEntry.Msi(2, Translater, 0, 8)]));
    }

    [Fact]
    public void Irqfd_errno_rules_and_rerouting()
    {
        var h = Guest();
        var vm = h.Vm!;
        using var efd = EventFd.Create();
        Assert.Equal(-Errno.EINVAL, vm.Irqfd(new KvmIrqfd(efd.Fd, 1, 0x8)));
        Assert.Equal(-Errno.EBADF, vm.Irqfd(new KvmIrqfd(-1, 1, 0)));
        Assert.Equal(-Errno.EBADF, vm.Irqfd(new KvmIrqfd(987_654, 1, 0)));
        using (var notEventFd = File.OpenRead("/proc/self/status"))
            Assert.Equal(-Errno.EINVAL, vm.Irqfd(new KvmIrqfd((int)notEventFd.SafeFileHandle.DangerousGetHandle(), 1, 0)));
        Assert.Equal(0, vm.Irqfd(new KvmIrqfd(efd.Fd, 7, 0)));
        Assert.Equal(-Errno.EBUSY, vm.Irqfd(new KvmIrqfd(efd.Fd, 8, 0)));
        Assert.Equal(1, efd.File!.WaiterCount);
        // Before the vGIC exists an irqfd cannot be assigned.
        var bare = new Vm(vm.Memory.Vmm);
        Assert.True(bare.CreateVcpu(out _) >= 0);
        Assert.Equal(-11, bare.Irqfd(new KvmIrqfd(efd.Fd, 1, 0)));
        Assert.Equal(-Errno.EBUSY, vm.CreateVcpu(out _)); // vCPUs are fixed once the vGIC is initialized
        // GSI 7 has no route yet: a signal is consumed and injects nothing; a new routing table is picked up.
        efd.Signal();
        Assert.Empty(Drain(vm));
        Assert.Equal(0, vm.SetGsiRouting([KvmIrqRoutingEntry.Msi(7, Translater, 9, devId: 8)]));
        efd.Signal();
        Assert.Equal([(0, 8201)], Drain(vm));
        // Deassign: the eventfd leaves the wait queue and a signal lands in its counter again.
        Assert.Equal(0, vm.Irqfd(new KvmIrqfd(efd.Fd, 7, KvmConst.KVM_IRQFD_FLAG_DEASSIGN)));
        Assert.Equal(0, vm.Irqfd(new KvmIrqfd(efd.Fd, 7, KvmConst.KVM_IRQFD_FLAG_DEASSIGN))); // none left: still 0
        Assert.Equal(0, efd.File.WaiterCount);
        efd.Signal();
        Assert.True(efd.TryRead(out var count));
        Assert.Equal(1UL, count);
        Assert.Empty(Drain(vm));
    }

    [Fact]
    public void Resamplefd_level_intx_is_held_until_guest_eoi_then_resampled()
    {
        var h = Guest();
        var vm = h.Vm!;
        // SPI 3 (INTID 35, qemu-virt's INTA of slot 0) level-triggered, enabled, routed to vCPU 1.
        var gicd = QemuVirtGicV3.GicdBase.Value;
        h.W32(gicd + GicV3.GICD_ICFGR + 8, 0); // INTIDs 32..47 level
        h.W32(gicd + GicV3.GICD_IPRIORITYR + 32, 0xA0A0_A0A0);
        h.W64(gicd + GicV3.GICD_IROUTER + 35 * 8, GicV3.AffinityOf(1));
        h.W32(gicd + GicV3.GICD_IGROUPR + 4, 0xFFFF_FFFF);
        h.W32(gicd + GicV3.GICD_ISENABLER + 4, 1u << 3);
        using var trigger = EventFd.Create();
        using var resample = EventFd.Create();
        Assert.Equal(0, vm.Irqfd(new KvmIrqfd(trigger.Fd, 3, KvmConst.KVM_IRQFD_FLAG_RESAMPLE, resample.Fd))); // default route GSI 3 → pin 3
        trigger.Signal();
        Assert.True(vm.Vcpus[1].IrqPending);
        Assert.True(vm.Vcpus[1].KickPending);
        var taken = new List<int>();
        var icc = vm.Vcpus[1].Icc!;
        var intid = (int)icc.Iar1();
        Assert.Equal(35, intid);
        Assert.False(resample.TryRead(out _)); // still asserted: no resample before EOI
        icc.Eoir1((ulong)intid);
        Assert.True(resample.TryRead(out var n)); // the resampler de-asserted the line and told the VMM
        Assert.Equal(1UL, n);
        Assert.False(vm.Vcpus[1].IrqPending);
    }

    [Fact]
    public void Guest_movi_and_movall_move_pending_vlpis_between_vcpus()
    {
        var h = Guest(3);
        var vm = h.Vm!;
        foreach (var v in vm.Vcpus) v.Icc!.Pmr = 0; // hold everything pending
        Assert.Equal(1, vm.SignalMsi(new KvmMsi(Translater, 1, KvmConst.KVM_MSI_VALID_DEVID, 8)));
        Assert.Equal(1, vm.SignalMsi(new KvmMsi(Translater, 2, KvmConst.KVM_MSI_VALID_DEVID, 8)));
        var rd = vm.VgicV3!.Redistributors;
        Assert.True(rd[0].IsLpiPending(8193) && rd[0].IsLpiPending(8194));
        h.Cmd(c => ItsCommand.Movi(c, 8, 1, 1)); // event 1 → collection 1 (vCPU 1): its pending state follows
        Assert.False(rd[0].IsLpiPending(8193));
        Assert.True(rd[1].IsLpiPending(8193));
        h.Cmd(c => ItsCommand.Movall(c, h.Its.RdBaseOf(0), h.Its.RdBaseOf(2)));
        Assert.False(rd[0].IsLpiPending(8194));
        Assert.True(rd[2].IsLpiPending(8194));
        Assert.Equal(0, h.Its.CommandErrorCount);
        foreach (var v in vm.Vcpus) v.Icc!.Pmr = 0xFF;
        Assert.Equal([(1, 8193), (2, 8194)], Drain(vm));
        // Later MSIs of event 1 go to vCPU 1 (the moved translation).
        Assert.Equal(1, vm.SignalMsi(new KvmMsi(Translater, 1, KvmConst.KVM_MSI_VALID_DEVID, 8)));
        Assert.Equal([(1, 8193)], Drain(vm));
    }

    [Fact]
    public void Two_vms_have_separate_vits_tables_and_targets()
    {
        var a = Guest();
        var b = Guest();
        // Same guest layout, same DeviceID/EventID, different VMs: an MSI into A never makes B's LPI pending.
        Assert.Equal(1, a.Vm!.SignalMsi(new KvmMsi(Translater, 4, KvmConst.KVM_MSI_VALID_DEVID, 8)));
        Assert.Empty(Drain(b.Vm!));
        Assert.Equal([(0, 8196)], Drain(a.Vm!));
        Assert.NotSame(a.Its.Engine, b.Its.Engine);
    }

    [Fact]
    public void Teardown_releases_irqfds_and_routes()
    {
        var h = Guest();
        var vm = h.Vm!;
        using var e1 = EventFd.Create();
        using var e2 = EventFd.Create();
        using var rs = EventFd.Create();
        Assert.Equal(0, vm.SetGsiRouting([KvmIrqRoutingEntry.Msi(1, Translater, 0, 8), KvmIrqRoutingEntry.Irqchip(2, 3)]));
        Assert.Equal(0, vm.Irqfd(new KvmIrqfd(e1.Fd, 1, 0)));
        Assert.Equal(0, vm.Irqfd(new KvmIrqfd(e2.Fd, 2, KvmConst.KVM_IRQFD_FLAG_RESAMPLE, rs.Fd)));
        Assert.Equal(2, vm.IrqfdCount);
        vm.Dispose();
        Assert.Equal(0, vm.IrqfdCount);
        Assert.Equal(0, e1.File!.WaiterCount);
        Assert.Equal(0, e2.File!.WaiterCount);
        Assert.Equal(-Errno.EBADF, vm.SetGsiRouting([]));
        Assert.Equal(-Errno.EBADF, vm.Irqfd(new KvmIrqfd(e1.Fd, 1, 0)));
        e1.Signal(); // no waiter any more: the count lands in the eventfd
        Assert.True(e1.TryRead(out _));
    }
}
