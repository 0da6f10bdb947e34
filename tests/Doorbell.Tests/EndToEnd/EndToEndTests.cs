using System.Buffers.Binary;
using Doorbell.Devices;
using Doorbell.Examples;
using Doorbell.Host.Kernel;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Host.Vfio.Backends;
using Doorbell.Pci;
using Doorbell.Platform;
using Doorbell.Smmu.V3;

namespace Doorbell.Tests.EndToEnd;

/// <summary>1. The VFIO backends over the real SMMUv3 driver, PCI (ECAM/BAR MMIO), GIC/ITS and platform device.</summary>
public class BackendAdapterTests
{
    [Theory]
    [InlineData("qemu-virt-gicv3", true, 48)]
    [InlineData("juno-like", false, 40)]     // GICv2m: not isolated; MMU-401: 40-bit input
    [InlineData("thunderx-like", true, 48)]
    public void IommuBackend_ReportsSmmuDomainFactsAndProgramsPageTables(string board, bool isolated, int inputBits)
    {
        using var rig = E2ERig.For(board);
        var g = rig.Fn(0).Group;
        Assert.Contains(new IommuReservedRegion(0x800_0000, 0x10_0000, IommuResvType.SwMsi), g.ReservedRegions);
        Assert.Equal(isolated, g.HasIsolatedMsi);
        var d = (SmmuVfioDomain)g.AllocateDomain()!;
        Assert.NotEqual(0UL, d.PgsizeBitmap & 0x1000);
        Assert.Equal(0UL, d.ApertureStart);
        Assert.Equal((1UL << inputBits) - 1, d.ApertureEnd);
        Assert.Equal(0, d.Map(0x10_0000, 0x4800_0000, 0x2000, IommuProt.Read | IommuProt.Write));
        Assert.Equal(0x4800_1000UL, d.Domain.IovaToPhys(0x10_1000));
        Assert.Equal(-Errno.EINVAL, d.Map(0x10_0800, 0x4800_0000, 0x1000, IommuProt.Read));
        Assert.Equal(0, d.Unmap(0x10_0000, 0x2000));
        Assert.Equal(0UL, d.Domain.IovaToPhys(0x10_1000));
    }

    [Theory]
    [InlineData("qemu-virt-gicv3")]
    [InlineData("juno-like")]
    [InlineData("thunderx-like")]
    public void MapDma_LandsInTheSmmuDomainAttachedToTheDevice(string board)
    {
        using var rig = E2ERig.For(board);
        var (c, _, r) = rig.OpenGroup(rig.Fn(0).Group.Id);
        Assert.Equal(0, r);
        var va = rig.Proc.Memory.MapAnonymous(0x4000);
        Assert.Equal(0, rig.Map(c, va, 0x20_0000, 0x4000));
        Assert.Equal(UserAccess.Ok, rig.Proc.Memory.Translate(va + 0x3000, false, out var phys));
        var dom = rig.Fn(0).Group.AttachedDomain!;
        Assert.Equal(phys, dom.Domain.IovaToPhys(0x20_3000));
        // the MSI window cannot be mapped by the user (type1 IOVA ranges exclude it)
        var va2 = rig.Proc.Memory.MapAnonymous(0x1000);
        Assert.Equal(-Errno.EINVAL, rig.Map(c, va2, 0x800_0000, 0x1000));
        Assert.Equal(0, rig.Unmap(c, 0x20_0000, 0x4000));
        Assert.Equal(0UL, dom.Domain.IovaToPhys(0x20_3000));
    }

    [Theory]
    [InlineData("qemu-virt-gicv3", QemuVirtMap.PcieMmio, QemuVirtMap.PcieMmioSize)]
    [InlineData("juno-like", 0x5000_0000UL, 0x800_0000UL)]                // juno-r1.dtb: the 32-bit window
    [InlineData("thunderx-like", 0x8040_0000_0000UL, 0x1_0000_0000UL)]   // ECAM0 has a 64-bit window only
    public void PciBackend_ConfigThroughEcam_BarsAssigned_ResetRestoresHeader(string board, ulong window, ulong windowSize)
    {
        using var rig = E2ERig.For(board, devices: 2);
        var f = rig.Fn(1);
        Assert.Equal("0000:00:02.0", f.Name);
        Assert.Equal(0xdb01_1234u, f.ReadConfig(0, 4));
        var bar = f.GetBar(0);
        Assert.True(bar.Is64 && bar.Size == 0x4000 && bar.HostAddress >= window && bar.HostAddress < window + windowSize);
        Assert.Equal(bar.HostAddress, rig.Mq[1].BarAddress(0));
        Assert.NotEqual(rig.Fn(0).GetBar(0).HostAddress, bar.HostAddress);
        Assert.Equal(BusStatusOk, f.ReadBar(0, MqRegs.Id, 4, out var id));
        Assert.Equal(MqRegs.IdValue, (uint)id);
        var bar0 = f.ReadConfig(0x10, 4);
        Assert.Equal(0, f.Reset());
        Assert.Equal(bar0, f.ReadConfig(0x10, 4));
        Assert.Equal(-KernelPciFunction.ENOTTY, ResetOfConventional());
    }

    static readonly Doorbell.Memory.BusStatus BusStatusOk = Doorbell.Memory.BusStatus.Ok;

    static int ResetOfConventional()
    {
        using var rig = new E2ERig(devices: 0, populate: m => m.AddPci(new PciFunction(0x1234, 0x0001, 0x0FF000, 0, name: "plain"), 4));
        return rig.Kernel.FindFunction("0000:00:04.0")!.Reset();
    }

    [Theory]
    [InlineData("qemu-virt-gicv3", 36)]  // INTA..INTD = SPIs 3..6
    [InlineData("juno-like", 169)]       // juno-r1.dtb interrupt-map: SPIs 136..139
    [InlineData("thunderx-like", 49)]    // PEM INTx from SPI 16
    public void Intx_IsTheSwizzledGicSpi_AndSignalsTheEventfdAutomasked(string board, int intid)
    {
        using var rig = E2ERig.For(board, devices: 0, populate: m =>
        {
            var d = new MultiQueueDmaDevice(4);
            d.SetInterruptPin(1);
            m.AddPci(d, 1);
        });
        var mq = (MultiQueueDmaDevice)rig.Machine.Devices[0];
        var (_, g, _) = rig.OpenGroup(rig.Fn(0).Group.Id);
        var dev = rig.Device(g, "0000:00:01.0");
        Assert.True(dev > 0);
        Assert.Equal(intid, rig.Fn(0).IntxLine()); // slot 1, INTA -> the board's second INTx SPI
        Assert.Equal(32 + rig.Machine.Map.PcieIntxFirstSpi + (0 + 1) % 4, intid);
        using var efd = EventFd.Create();
        var set = new byte[24];
        BinaryPrimitives.WriteUInt32LittleEndian(set, 24);
        BinaryPrimitives.WriteUInt32LittleEndian(set.AsSpan(4), VfioIrqSetFlags.DataEventFd | VfioIrqSetFlags.ActionTrigger);
        BinaryPrimitives.WriteUInt32LittleEndian(set.AsSpan(8), VfioPciIndex.IrqIntx);
        BinaryPrimitives.WriteUInt32LittleEndian(set.AsSpan(16), 1);
        BinaryPrimitives.WriteInt32LittleEndian(set.AsSpan(20), efd.Fd);
        Assert.Equal(0, rig.Proc.Ioctl(dev, VfioIoctl.DeviceSetIrqs, set));
        Assert.False(efd.TryRead(out _));
        mq.SetIntx(true);                  // the device asserts INTA: CPU 0 is raised and takes the SPI from its loop (nobody polls)
        Assert.True(efd.TryRead(out var n) && n == 1);
        Assert.Contains(intid, rig.Kernel.Cpus[0].History);
        Assert.NotEqual(0, mq.CommandRegister & PciCfg.CmdIntxDisable); // automasked with DisINTx
        Assert.False(mq.IntxAsserted);
    }

    [Fact]
    public void VfioPlatform_OverTheKernel_IsRefusedWithoutUnsafeInterrupts_ThenWorks()
    {
        using (var strict = new E2ERig(devices: 0, platform: true))
        {
            var p = strict.Kernel.PlatformDevices[0];
            var grp = strict.Kernel.Groups.Single(x => x.DeviceNames.Contains(p.Name));
            Assert.False(grp.HasIsolatedMsi); // no msi-parent: not isolated (Linux arch_is_isolated_msi is false on arm64)
            Assert.Equal(-Errno.EPERM, strict.OpenGroup(grp.Id).SetIommu);
        }
        using var rig = new E2ERig(devices: 0, platform: true, allowUnsafe: true);
        var pd = rig.Kernel.PlatformDevices[0];
        var (_, g, r) = rig.OpenGroup(rig.Kernel.Groups.Single(x => x.DeviceNames.Contains(pd.Name)).Id);
        Assert.Equal(0, r);
        var dev = rig.Device(g, pd.Name);
        Assert.True(dev > 0);
        var b = new byte[4];
        Assert.Equal(4, rig.Proc.Pread(dev, b, 0));
        Assert.Equal(PlatformDmaRegs.IdValue, BinaryPrimitives.ReadUInt32LittleEndian(b));
    }
}

/// <summary>2. IOMMU groups from the topology.</summary>
public class TopologyGroupTests
{
    static E2ERig Rig(Action<Machine> populate) => new(devices: 0, populate: populate);

    /// <summary>Functions other than the gpex host bridge at 00:00.0 (which has its own group, as on Linux).</summary>
    static List<KernelPciFunction> Endpoints(E2ERig rig) => [.. rig.Kernel.Functions.Where(f => f.Name != "0000:00:00.0")];

    static PciFunction Conventional(string name) => new(0x1234, 0x0002, 0x0FF000, 0, name: name);

    [Fact]
    public void RootPortsWithAcs_IsolateTheirEndpoints()
    {
        using var rig = Rig(m =>
        {
            var rp1 = m.AddPci(new PciBridge(0x1b36, 0x000c, PciePortType.RootPort, "rp1"), 1);
            var rp2 = m.AddPci(new PciBridge(0x1b36, 0x000c, PciePortType.RootPort, "rp2"), 2);
            rp1.Secondary.Attach(new MultiQueueDmaDevice(2), 0);
            rp2.Secondary.Attach(new MultiQueueDmaDevice(2), 0);
        });
        var eps = Endpoints(rig);
        Assert.Equal(["0000:01:00.0", "0000:02:00.0"], eps.Select(f => f.Name));
        Assert.Equal(3, rig.Kernel.Groups.Count); // + the host bridge 00:00.0
        Assert.NotEqual(eps[0].Group, eps[1].Group);
    }

    [Fact]
    public void RootPortWithoutAcs_MergesEverythingBelowIt()
    {
        using var rig = Rig(m =>
        {
            var rp = m.AddPci(new PciBridge(0x1b36, 0x000c, PciePortType.RootPort, "rp", acs: false), 1);
            var up = rp.Secondary.Attach(new PciBridge(0x10b5, 0x8605, PciePortType.SwitchUpstream, "usp"), 0);
            var d0 = up.Secondary.Attach(new PciBridge(0x10b5, 0x8605, PciePortType.SwitchDownstream, "dsp0"), 0);
            var d1 = up.Secondary.Attach(new PciBridge(0x10b5, 0x8605, PciePortType.SwitchDownstream, "dsp1"), 1);
            d0.Secondary.Attach(new MultiQueueDmaDevice(2), 0);
            d1.Secondary.Attach(new MultiQueueDmaDevice(2), 0);
            m.AddPci(new MultiQueueDmaDevice(2), 2);
        });
        var below = rig.Kernel.Functions.Where(f => f.Bus > 0).ToList();
        Assert.Equal(2, below.Count);
        Assert.Same(below[0].Group, below[1].Group);
        Assert.Equal(2, below[0].Group.DeviceNames.Count);
        Assert.NotSame(below[0].Group, rig.Kernel.FindFunction("0000:00:02.0")!.Group);
    }

    [Fact]
    public void PcieToPciBridge_AliasesAllConventionalDevicesBelowIntoOneGroup()
    {
        using var rig = Rig(m =>
        {
            var rp = m.AddPci(new PciBridge(0x1b36, 0x000c, PciePortType.RootPort, "rp"), 1);
            var br = rp.Secondary.Attach(new PciBridge(0x1b36, 0x000e, PciePortType.PcieToPciBridge, "pcie-pci"), 0);
            br.Secondary.Attach(Conventional("a"), 1);
            br.Secondary.Attach(Conventional("b"), 2);
            var rp2 = m.AddPci(new PciBridge(0x1b36, 0x000c, PciePortType.RootPort, "rp2"), 2);
            rp2.Secondary.Attach(new MultiQueueDmaDevice(2), 0);
        });
        var conv = rig.Kernel.Functions.Where(f => f.Enumerated.VendorId == 0x1234 && f.Enumerated.DeviceId == 0x0002).ToList();
        Assert.Equal(2, conv.Count);
        Assert.Same(conv[0].Group, conv[1].Group);
        Assert.Equal(3, rig.Kernel.Groups.Count); // conventional pair, the mq device, the host bridge
    }

    [Fact]
    public void MultiFunctionDevice_SharesAGroupWithoutAcs_AndSplitsWithIt()
    {
        static MultiQueueDmaDevice Mf(bool acs)
        {
            var d = new MultiQueueDmaDevice(2);
            d.SetMultiFunction(true);
            if (acs) d.AddAcs(PciCfg.AcsSourceValidation | PciCfg.AcsRequestRedirect | PciCfg.AcsCompletionRedirect | PciCfg.AcsUpstreamForwarding);
            return d;
        }
        using (var rig = Rig(m => { m.AddPci(Mf(false), 3, 0); m.AddPci(Mf(false), 3, 1); }))
        {
            var eps = Endpoints(rig);
            Assert.Equal(2, eps.Count);
            Assert.Same(eps[0].Group, eps[1].Group);
            // the group is viable only as a whole: both functions are in it
            Assert.Equal(["0000:00:03.0", "0000:00:03.1"], eps[0].Group.DeviceNames);
        }
        using (var rig = Rig(m => { m.AddPci(Mf(true), 3, 0); m.AddPci(Mf(true), 3, 1); }))
        {
            var eps = Endpoints(rig);
            Assert.Equal(2, eps.Count);
            Assert.NotSame(eps[0].Group, eps[1].Group);
        }
    }
}

/// <summary>3. The MSI doorbell mapped through the SMMU's SW_MSI window (iommu_dma MSI cookie).</summary>
public class MsiDoorbellTests
{
    [Theory]
    [InlineData("qemu-virt-gicv3", 0x0809_0000UL)]
    [InlineData("qemu-virt-gicv2", 0x0802_0000UL)]
    [InlineData("juno-like", 0x2C1C_0000UL)]         // the GICv2m frame of juno-r1.dtb
    [InlineData("thunderx-like", 0x8010_0003_0000UL)] // GITS_TRANSLATER's page of thunder-88xx.dtb's ITS
    public void MsixAddressIsTheDoorbellIovaInTheMsiWindow(string board, ulong doorbellPage)
    {
        using var rig = E2ERig.For(board, allowUnsafe: true);
        var (_, g, r) = rig.OpenGroup(rig.Fn(0).Group.Id);
        Assert.Equal(0, r);
        var dev = rig.Device(g, "0000:00:01.0");
        rig.EnableMsix(dev, 4);
        var f = rig.Fn(0);
        Assert.True(f.Group.AttachedDomain!.HasMsiCookie);
        Assert.All(f.ProgrammedMsiAddresses, a => Assert.Equal(0x800_0040UL, a));
        Assert.Equal(doorbellPage, f.Group.AttachedDomain.Domain.IovaToPhys(0x800_0000));
        // the device's MSI-X table holds the IOVA (read by the host through BAR MMIO)
        Assert.Equal(Doorbell.Memory.BusStatus.Ok, f.ReadBar(0, MqRegs.MsixTableOffset, 4, out var lo));
        Assert.Equal(0x800_0040UL, lo);
    }

    [Theory]
    [InlineData("qemu-virt-gicv3")]
    [InlineData("juno-like")]
    [InlineData("thunderx-like")]
    public void MsisWorkWhileMapped_AndFaultAtTheSmmuOnceTheDoorbellIsUnmapped(string board)
    {
        using var rig = E2ERig.For(board);
        var (_, dev, va, efd) = rig.CopyOnceWithMsix();
        Assert.True(efd[0].TryRead(out var n) && n == 1, "MSI-X through the mapped doorbell must signal the eventfd");
        Assert.Empty(rig.DrainFaults());

        var dom = rig.Fn(0).Group.AttachedDomain!.Domain;
        Assert.Equal(0x1000UL, dom.Unmap(0x800_0000, 0x1000)); // the doorbell page leaves the domain
        var lpi = rig.Fn(0).Vectors!.Vectors[0].Intid;
        var before = rig.Kernel.Cpus[0].History.Count(i => i == lpi);
        rig.Submit(dev, 0, va, 1, 0x10_2000, 0x10_3000, 64, 2);
        Assert.Equal(0u, rig.CompletionStatus(va + 0x1000, 1)); // the copy itself still works
        Assert.False(efd[0].TryRead(out _), "no interrupt may be delivered");
        Assert.Equal(before, rig.Kernel.Cpus[0].History.Count(i => i == lpi));
        var ev = Assert.Single(rig.DrainFaults());
        Assert.True(ev.Translation);
        Assert.Equal(0x800_0040UL, ev.Address);
        Assert.Equal(0x0008u, ev.StreamId);
        Assert.True(ev.Write);
    }
}

/// <summary>4. The isolation policy on real boards, and why: forged MSIs through the ITS vs GICv2m.</summary>
public class IsolationPolicyTests
{
    [Fact]
    public void ItsBoardAttaches_GicV2mBoardIsEpermUnlessUnsafeAllowed()
    {
        using (var its = new E2ERig(gicVersion: 3))
        {
            Assert.True(its.Fn(0).Group.HasIsolatedMsi);
            Assert.Equal(0, its.OpenGroup(its.Fn(0).Group.Id).SetIommu);
        }
        using (var v2m = new E2ERig(gicVersion: 2))
        {
            Assert.False(v2m.Fn(0).Group.HasIsolatedMsi);
            Assert.Equal(-Errno.EPERM, v2m.OpenGroup(v2m.Fn(0).Group.Id).SetIommu);
        }
        using var unsafeOk = new E2ERig(gicVersion: 2, allowUnsafe: true);
        Assert.Equal(0, unsafeOk.OpenGroup(unsafeOk.Fn(0).Group.Id).SetIommu);
    }

    /// <summary>Both devices assigned (own containers), MSI-X on; device A's userspace driver programs a 4-byte DMA of
    /// <paramref name="forged"/> to A's own doorbell IOVA. Returns A's and B's eventfds.</summary>
    static (EventFd[] A, EventFd[] B) Forge(E2ERig rig, Func<E2ERig, uint> forged)
    {
        var (ca, ga, ra) = rig.OpenGroup(rig.Fn(0).Group.Id);
        var (_, gb, rb) = rig.OpenGroup(rig.Fn(1).Group.Id);
        Assert.Equal(0, ra);
        Assert.Equal(0, rb);
        var da = rig.Device(ga, "0000:00:01.0");
        var db = rig.Device(gb, "0000:00:02.0");
        var efdA = rig.EnableMsix(da, 4);
        var efdB = rig.EnableMsix(db, 4);
        var va = rig.Proc.Memory.MapAnonymous(0x4000);
        Assert.Equal(0, rig.Map(ca, va, 0x10_0000, 0x4000));
        rig.EnableMaster(da);
        rig.SetupQueue(da, 0, 0x10_0000);
        var data = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(data, forged(rig));
        rig.Proc.Memory.Write(va + 0x2000, data);
        var doorbellIova = rig.Fn(0).ProgrammedMsiAddresses[0];
        rig.Submit(da, 0, va, 0, 0x10_2000, doorbellIova, 4, 0xF0);
        Assert.Equal(0u, rig.CompletionStatus(va + 0x1000, 0)); // the write reached the doorbell
        Assert.Empty(rig.DrainFaults());
        return (efdA, efdB);
    }

    [Theory]
    [InlineData("qemu-virt-gicv3")]
    [InlineData("thunderx-like")]
    public void ThroughTheIts_AForgedEventIdCannotRaiseTheOtherDevicesLpi(string board)
    {
        using var rig = E2ERig.For(board, devices: 2);
        // B's vector 1 is EventID 1 of DeviceID 0x10; A writes EventID 1 — translated with A's DeviceID 0x08.
        var (a, b) = Forge(rig, r => r.Fn(1).Vectors!.Vectors[1].Message.Data);
        var lpiB1 = rig.Fn(1).Vectors!.Vectors[1].Intid;
        var lpiA1 = rig.Fn(0).Vectors!.Vectors[1].Intid;
        Assert.NotEqual(lpiA1, lpiB1);
        Assert.All(b, e => Assert.False(e.TryRead(out _)));
        Assert.DoesNotContain(lpiB1, rig.Kernel.Cpus[0].History);
        Assert.True(a[1].TryRead(out _), "the forged EventID maps to the forger's own LPI");
        Assert.Contains(lpiA1, rig.Kernel.Cpus[0].History);
    }

    [Theory]
    [InlineData("qemu-virt-gicv3")]
    [InlineData("thunderx-like")]
    public void ThroughTheIts_AnEventIdOutsideTheForgersIttRaisesNothing(string board)
    {
        using var rig = E2ERig.For(board, devices: 2);
        var (a, b) = Forge(rig, _ => 9);
        Assert.All(b, e => Assert.False(e.TryRead(out _)));
        Assert.False(a[1].TryRead(out _));
        Assert.False(a[2].TryRead(out _));
        Assert.False(a[3].TryRead(out _));
        Assert.True(a[0].TryRead(out _)); // only A's own completion interrupt
    }

    [Theory]
    [InlineData("qemu-virt-gicv2")]
    [InlineData("juno-like")] // accepted by the 2014-era check
    public void ThroughGicV2m_AForgedSpiNumberRaisesTheOtherDevicesInterrupt(string board)
    {
        using var rig = E2ERig.For(board, devices: 2, allowUnsafe: board == "qemu-virt-gicv2");
        var (a, b) = Forge(rig, r => r.Fn(1).Vectors!.Vectors[1].Message.Data);
        var spiB1 = rig.Fn(1).Vectors!.Vectors[1].Intid;
        Assert.True(b[1].TryRead(out var n) && n == 1, "GICv2m cannot tell who wrote: B's vector fires");
        Assert.Contains(spiB1, rig.Kernel.Cpus[0].History);
        Assert.False(b[0].TryRead(out _));
        Assert.True(a[0].TryRead(out _));
    }
}

/// <summary>5. The userspace driver example end to end.</summary>
public class UserspaceDriverTests
{
    [Theory]
    [InlineData("qemu-virt-gicv3")]
    [InlineData("juno-like")]
    [InlineData("thunderx-like")]
    public void DrivesAllQueuesWithMsixEventfdsAndEpoll_AndAnUnmappedDmaFaults(string board)
    {
        using var rig = E2ERig.For(board);
        var res = new UserspaceDriver(rig.Proc, rig.Fn(0).Group.Id, "0000:00:01.0").Run();
        Assert.True(res.Ok, res.Failure);
        Assert.Equal(0, res.SetIommuResult);
        Assert.Equal(4, res.Vectors);
        Assert.Equal(8, res.CopiesExpected);
        Assert.Equal(8, res.CopiesVerified);
        Assert.All(res.InterruptsPerQueue, n => Assert.True(n >= 1));
        Assert.Equal(MqRegs.StatusWriteFault, res.FaultStatus);
        Assert.True(res.CanaryIntact);
        Assert.NotEqual(0UL, res.PageSizes & 0x1000);
        Assert.DoesNotContain(res.IovaRanges, r => r.Start <= 0x800_0000 && r.End >= 0x800_0000);
        var faults = rig.DrainFaults();
        Assert.Contains(faults, e => e.Translation && e.Address == UserspaceDriver.UnmappedIova);
        Assert.Equal(8 + 1, rig.Mq[0].DescriptorsProcessed);
    }

    [Theory]
    [InlineData("qemu-virt-gicv2")]
    [InlineData("juno-like")]
    public void OnAGicV2mBoard_TheDriverIsRefusedAtSetIommu(string board)
    {
        using var rig = E2ERig.For(board, era: IsolationPolicyEra.Today);
        var res = new UserspaceDriver(rig.Proc, rig.Fn(0).Group.Id, "0000:00:01.0").Run();
        Assert.False(res.Ok);
        Assert.Equal(-Errno.EPERM, res.SetIommuResult);
        Assert.Equal(0, rig.Mq[0].DescriptorsProcessed);
    }

    [Theory]
    [InlineData("qemu-virt-gicv2")]
    [InlineData("juno-like")]
    public void OnAGicV2mBoardWithUnsafeInterrupts_TheDriverRuns(string board)
    {
        using var rig = E2ERig.For(board, allowUnsafe: true, era: IsolationPolicyEra.Today);
        var res = new UserspaceDriver(rig.Proc, rig.Fn(0).Group.Id, "0000:00:01.0").Run();
        Assert.True(res.Ok, res.Failure);
        Assert.Equal(8, res.CopiesVerified);
    }
}

/// <summary>The scenario step prints the run and returns true only when everything it claims happened.</summary>
public class UserspaceDriverStepTests
{
    [Fact]
    public void StepRunsEndToEndAndReportsTheVerdict()
    {
        var sw = new StringWriter();
        var ok = new Doorbell.Scenarios.Steps.UserspaceDriverStep().Run(new Doorbell.Scenarios.ScenarioContext(sw));
        Assert.True(ok, sw.ToString());
        var text = sw.ToString();
        Assert.Contains("F_TRANSLATION", text);
        Assert.Contains("-EPERM", text);
        Assert.Contains("0x8000040 -> PA 0x8090040", text);
        Assert.True(text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length <= 20);
    }
}

/// <summary>1. vfio-platform over the kernel: the MMIO region, DMA through the SMMU, the wired SPI on an eventfd.</summary>
public class PlatformEndToEndTests
{
    [Fact]
    public void PlatformDma_ThroughTheSmmu_SignalsItsWiredSpiOnAnEventfd()
    {
        using var rig = new E2ERig(devices: 0, platform: true, allowUnsafe: true);
        var pd = rig.Kernel.PlatformDevices[0];
        var (c, g, r) = rig.OpenGroup(rig.Kernel.Groups.Single(x => x.DeviceNames.Contains(pd.Name)).Id);
        Assert.Equal(0, r);
        var dev = rig.Device(g, pd.Name);
        var va = rig.Proc.Memory.MapAnonymous(0x2000);
        rig.Proc.Memory.Write(va, "platform"u8);
        Assert.Equal(0, rig.Map(c, va, 0x30_0000, 0x2000));
        using var efd = EventFd.Create();
        rig.TriggerOnEventFd(dev, 0, efd.Fd);
        void W(ulong reg, uint v) => rig.RegionWrite(dev, 0, reg, v);
        W(PlatformDmaRegs.Src, 0x30_0000); W(PlatformDmaRegs.Src + 4, 0);
        W(PlatformDmaRegs.Dst, 0x30_1000); W(PlatformDmaRegs.Dst + 4, 0);
        W(PlatformDmaRegs.Len, 8);
        W(PlatformDmaRegs.Ctrl, PlatformDmaRegs.CtrlIrqEnable);
        Assert.False(efd.TryRead(out _));
        W(PlatformDmaRegs.Cmd, PlatformDmaRegs.CmdStart);
        Assert.True(efd.TryRead(out var n) && n == 1, "the wired SPI must reach the eventfd");
        Assert.Contains(pd.Intid, rig.Kernel.Cpus[0].History);
        var got = new byte[8];
        rig.Proc.Memory.Read(va + 0x1000, got);
        Assert.Equal("platform"u8.ToArray(), got);
        // a DMA outside the mapping is stopped by the SMMU (F_TRANSLATION for the platform StreamID)
        W(PlatformDmaRegs.Status, 3);
        W(PlatformDmaRegs.Dst, 0x50_0000);
        W(PlatformDmaRegs.Cmd, PlatformDmaRegs.CmdStart);
        var ev = Assert.Single(rig.Kernel.DrainSmmuEvents());
        Assert.Equal(Evt.F_TRANSLATION, ev.Id);
        Assert.Equal(0xFF00u, ev.StreamId);
    }
}

/// <summary>4. The forgery written as a malicious userspace driver (VFIO ABI only), on both boards.</summary>
public class MsiForgeryProbeTests
{
    [Fact]
    public void ItsBoard_SprayOfEventIdsNeverReachesTheVictim()
    {
        using var rig = new E2ERig(gicVersion: 3, devices: 2);
        var r = new MsiForgeryProbe(rig.Proc, (rig.Fn(0).Group.Id, "0000:00:01.0"), (rig.Fn(1).Group.Id, "0000:00:02.0")).Run(0, 32);
        Assert.Equal(0x800_0040UL, r.DoorbellIova);
        Assert.Equal(0, r.VictimVectorsRaised);
        Assert.Equal(4, r.ForgerVectorsRaised);
    }

    [Fact]
    public void GicV2mBoard_SprayOfSpiNumbersRaisesEveryVictimVector()
    {
        using var rig = new E2ERig(gicVersion: 2, devices: 2, allowUnsafe: true);
        var r = new MsiForgeryProbe(rig.Proc, (rig.Fn(0).Group.Id, "0000:00:01.0"), (rig.Fn(1).Group.Id, "0000:00:02.0")).Run(80, 64);
        Assert.Equal(0x800_0040UL, r.DoorbellIova);
        Assert.Equal(4, r.VictimVectorsRaised);
        Assert.Equal(4, r.ForgerVectorsRaised);
    }
}

/// <summary>1. Two groups in one container share the SMMU domain (type1 attaches to the existing domain first).</summary>
public class SharedContainerTests
{
    [Fact]
    public void SecondGroupJoinsTheExistingDomain_AndItsDeviceDmasThroughEarlierMappings()
    {
        using var rig = new E2ERig(devices: 2);
        var (c, _, r) = rig.OpenGroup(rig.Fn(0).Group.Id);
        Assert.Equal(0, r);
        var va = rig.Proc.Memory.MapAnonymous(0x4000);
        Assert.Equal(0, rig.Map(c, va, 0x40_0000, 0x4000));
        var (_, g1, _) = rig.OpenGroup(rig.Fn(1).Group.Id, c);
        var d0 = rig.Fn(0).Group.AttachedDomain!;
        var d1 = rig.Fn(1).Group.AttachedDomain!;
        Assert.Same(d0.Domain, d1.Domain);
        Assert.Equal(UserAccess.Ok, rig.Proc.Memory.Translate(va + 0x1000, false, out var phys));
        Assert.Equal(phys, d1.Domain.IovaToPhys(0x40_1000));
        // device B (StreamID 0x10) copies through the mapping made before its group joined
        var dev = rig.Device(g1, "0000:00:02.0");
        Assert.True(dev > 0);
        rig.EnableMaster(dev);
        rig.SetupQueue(dev, 0, 0x40_0000);
        rig.Proc.Memory.Write(va + 0x2000, "joined!!"u8);
        rig.Submit(dev, 0, va, 0, 0x40_2000, 0x40_3000, 8, 7);
        Assert.Equal(0u, rig.CompletionStatus(va + 0x1000, 0));
        var got = new byte[8];
        rig.Proc.Memory.Read(va + 0x3000, got);
        Assert.Equal("joined!!"u8.ToArray(), got);
    }
}
