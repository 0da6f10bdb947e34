using BenchmarkDotNet.Attributes;
using Doorbell.Gic.Its;
using Doorbell.Gic.V3;
using Doorbell.Host.Os;
using Doorbell.Kvm;
using Doorbell.Memory;

namespace Doorbell.Benchmarks;

/// <summary>
/// LPI injection into a guest on one core: a kernel-side signal of an eventfd (what VFIO's interrupt handler does) →
/// irqfd wake → GSI's MSI route {address, data, DeviceID} → vITS translation (cached) → vLPI pending at the vCPU's vGIC
/// redistributor → vCPU kick; the clear that re-arms the LPI is included (as in <see cref="ItsBenchmarks"/>), so the
/// figure is an upper bound. Also KVM_SIGNAL_MSI for the same MSI. Guest: 1 vCPU, the vITS programmed by guest stores.
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
public class KvmBenchmarks
{
    const ulong Ram = 0x4000_0000, Prop = 0x4010_0000, Pend = 0x4020_0000, Cmdq = 0x4030_0000, Dt = 0x4040_0000, Ct = 0x4050_0000, Itt = 0x4060_0000;
    const uint Lpi = 8192 + 33;
    Vm _vm = null!;
    Vcpu _cpu = null!;
    GicV3Redistributor _rd = null!;
    EventFd _efd = null!;
    EventFdContext _ctx = null!;
    KvmMsi _msi;

    void W(ulong a, int size, ulong v)
    {
        if (_cpu.Write(a, size, v) != BusStatus.Ok) throw new InvalidOperationException($"guest store 0x{a:x} failed");
    }

    [GlobalSetup]
    public void Setup()
    {
        var host = new PhysicalAddressSpace();
        host.AddRam(new PhysAddr(0x1_0000_0000), 0x1000_0000);
        var vmm = new UserAddressSpace(host, new PhysPageAllocator(0x1_0000_0000, 0x1000_0000, host));
        var hva = vmm.MapAnonymous(0x0800_0000);
        _vm = new Vm(vmm);
        Check(_vm.SetUserMemoryRegion(new KvmUserspaceMemoryRegion(0, 0, Ram, 0x0800_0000, hva)));
        Check(_vm.CreateVcpu(out var cpu));
        _cpu = cpu!;
        Check(_vm.CreateVgicV3(QemuVirtGicV3.GicdBase, QemuVirtGicV3.GicrBase));
        Check(_vm.CreateVits(QemuVirtGicV3.ItsBase, out var its));
        // Guest software: GIC, redistributor, LPI config, ITS tables and queue, then MAPC/MAPD/MAPTI.
        W(QemuVirtGicV3.GicdBase.Value, 4, GicV3.CtlrEnableGrp1);
        var rd = QemuVirtGicV3.GicrBase.Value;
        W(rd + GicV3Redistributor.GICR_WAKER, 4, 0);
        W(rd + GicV3Redistributor.GICR_PROPBASER, 8, Prop | 15);
        W(rd + GicV3Redistributor.GICR_PENDBASER, 8, Pend | (1UL << 62));
        W(rd + GicV3Redistributor.GICR_CTLR, 4, 1);
        W(Prop + Lpi - 8192, 1, 0xA1);
        var itsBase = QemuVirtGicV3.ItsBase.Value;
        W(itsBase + GicV3Its.GITS_BASER, 8, (1UL << 63) | Dt);
        W(itsBase + GicV3Its.GITS_BASER + 8, 8, (1UL << 63) | Ct);
        W(itsBase + GicV3Its.GITS_CBASER, 8, (1UL << 63) | Cmdq);
        W(itsBase + GicV3Its.GITS_CTLR, 4, 1);
        var c = new ulong[4];
        var q = 0UL;
        void Push() { for (var k = 0; k < 4; k++) W(Cmdq + q + (ulong)k * 8, 8, c[k]); q += 32; }
        ItsCommand.Mapc(c, 0, 0, true); Push();
        ItsCommand.Mapd(c, 8, Itt, 16, true); Push();
        ItsCommand.Mapti(c, 8, 1, Lpi, 0); Push();
        W(itsBase + GicV3Its.GITS_CWRITER, 8, q);
        if (its!.CommandErrorCount != 0) throw new InvalidOperationException("vITS setup failed");
        _rd = _vm.VgicV3!.Redistributors[0];
        _efd = EventFd.Create();
        Check(_vm.SetGsiRouting([KvmIrqRoutingEntry.Msi(1, QemuVirtGicV3.TranslaterAddress.Value, 1, devId: 8)]));
        Check(_vm.Irqfd(new KvmIrqfd(_efd.Fd, 1, 0)));
        Check(EventFdContext.TryGet(_efd.Fd, out var ctx));
        _ctx = ctx!;
        _msi = new KvmMsi(QemuVirtGicV3.TranslaterAddress.Value, 1, KvmConst.KVM_MSI_VALID_DEVID, 8);
        _ctx.Signal();
        if (!_rd.ClearLpiPending(Lpi)) throw new InvalidOperationException("irqfd injection did not reach the vCPU");
    }

    static void Check(int r)
    {
        if (r < 0) throw new InvalidOperationException($"setup ioctl failed: {r}");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _vm.Dispose();
        _ctx.Dispose();
        _efd.Dispose();
    }

    /// <summary>One LPI: eventfd signal (kernel side) → irqfd → route → vITS → vLPI pending → kick; plus the clear.</summary>
    [Benchmark]
    public bool IrqfdToVcpuPending()
    {
        _ctx.Signal();
        return _rd.ClearLpiPending(Lpi);
    }

    /// <summary>One LPI by KVM_SIGNAL_MSI (DeviceID 8, EventID 1); plus the clear.</summary>
    [Benchmark]
    public bool SignalMsiToVcpuPending()
    {
        _vm.SignalMsi(_msi);
        return _rd.ClearLpiPending(Lpi);
    }
}
