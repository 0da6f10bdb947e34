using Doorbell.Host.Iommu;
using Doorbell.Host.SmmuV3;
using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Smmu.V3;
using Doorbell.Tracing;
using SmmuModel = Doorbell.Smmu.V3.SmmuV3;

namespace Doorbell.Tests.SmmuV3;

/// <summary>The Linux-style host driver and the IOMMU API, running on the SMMUv3 model (MMIO and RAM only).</summary>
public class SmmuV3DriverTests
{
    const ulong SmmuBase = 0x0905_0000;
    const ulong Data = 0x4800_0000;

    sealed class Machine
    {
        public readonly PhysicalAddressSpace Bus = new();
        public readonly StrictMonitor Strict = new() { Enabled = true };
        public readonly SmmuModel Smmu;
        public readonly SmmuV3Driver Driver;

        public Machine(SmmuV3Options? o = null, SmmuV3DriverOptions? d = null)
        {
            Bus.AddRam(new PhysAddr(0x4000_0000), 0x2000_0000);
            Smmu = new SmmuModel(Bus, o, null, Strict);
            Smmu.Map(new PhysAddr(SmmuBase));
            Driver = SmmuV3Driver.Probe(new BusSmmuHostAccess(Bus, SmmuBase), Bus, new PhysPageAllocator(0x4100_0000, 0x400_0000), d);
        }

        public BusStatus Dma(uint sid, ulong iova, byte[] data, bool write = true)
        {
            var port = Smmu.CreateStreamPort(sid);
            return write ? port.Write(iova, data, BusAttributes.FromDevice(sid)) : port.Read(iova, data, BusAttributes.FromDevice(sid));
        }

        public uint Reg(uint off) { Bus.Read(new PhysAddr(SmmuBase + off), 4, out var v, BusAttributes.Cpu); return (uint)v; }
    }

    [Fact]
    public void Probe_reads_the_id_registers_and_enables_the_smmu_with_bypass_disabled()
    {
        var m = new Machine();
        var f = m.Driver.Features;
        Assert.True(f.Stage1 && f.Stage2 && f.TwoLevelStreamTable && f.RangeInvalidation && f.Msi);
        Assert.Equal(16, f.StreamIdBits);
        Assert.Equal(44, f.OutputAddressBits);
        Assert.Equal(SmmuV3Field.Cr0SmmuEn | SmmuV3Field.Cr0CmdqEn | SmmuV3Field.Cr0EventqEn, m.Reg(SmmuV3Reg.CR0ACK));
        Assert.NotEqual(0u, m.Reg(SmmuV3Reg.GBPA) & SmmuV3Field.GbpaAbort);
        Assert.True(m.Driver.TwoLevelStreamTable);
        Assert.Empty(m.Strict.Violations);
    }

    [Fact]
    public void Small_streamid_space_gets_a_linear_table()
    {
        var m = new Machine(new SmmuV3Options { StreamIdBits = 6 });
        Assert.False(m.Driver.TwoLevelStreamTable);
        var dev = new IommuDevice("dev", [5]);
        m.Driver.ProbeDevice(dev);
        var d = m.Driver.AllocateDomain(IommuDomainType.Identity);
        dev.Group!.Attach(d);
        Assert.Equal(BusStatus.Ok, m.Dma(5, Data, [1]));
    }

    [Fact]
    public void Unattached_streams_abort_and_an_identity_domain_bypasses()
    {
        var m = new Machine();
        var dev = new IommuDevice("edu", [8]);
        var g = m.Driver.ProbeDevice(dev);
        Assert.Equal(BusStatus.SlaveError, m.Dma(8, Data, [1]));
        g.Attach(m.Driver.AllocateDomain(IommuDomainType.Identity));
        Assert.Equal(BusStatus.Ok, m.Dma(8, Data, [0x77]));
        Assert.Equal(0x77u, m.Bus.Store.ReadU32(Data) & 0xFF);
        g.Detach();
        Assert.Equal(BusStatus.SlaveError, m.Dma(8, Data, [1]));
        Assert.Empty(m.Strict.Violations);
    }

    [Theory]
    [InlineData(IommuDomainStage.Stage1, 0x1234u)]
    [InlineData(IommuDomainStage.Stage2, 0x0008u)]
    public void Paging_domain_maps_translates_and_unmaps_with_tlbi_and_sync(IommuDomainStage stage, uint sid)
    {
        var m = new Machine();
        var dev = new IommuDevice("dev", [sid]);
        var g = m.Driver.ProbeDevice(dev);
        var dom = m.Driver.AllocateDomain(IommuDomainType.Unmanaged, stage);
        g.Attach(dom);
        dom.Map(0x10_0000, Data, 0x4000, IoProt.ReadWrite);
        Assert.Equal(Data + 0x2010, dom.IovaToPhys(0x10_2010));
        Assert.Equal(BusStatus.Ok, m.Dma(sid, 0x10_1FFC, [1, 2, 3, 4, 5, 6, 7, 8]));
        Assert.Equal(0x04030201u, m.Bus.Store.ReadU32(Data + 0x1FFC));
        Assert.Equal(0x08070605u, m.Bus.Store.ReadU32(Data + 0x2000));
        Assert.Equal(0x4000UL, dom.Unmap(0x10_0000, 0x4000));
        Assert.Equal(0UL, dom.IovaToPhys(0x10_2010));
        Assert.Equal(BusStatus.SlaveError, m.Dma(sid, 0x10_1000, [1]));
        var e = Assert.Single(m.Driver.DrainEvents());
        Assert.Equal(Evt.F_TRANSLATION, e.Id);
        Assert.Equal(sid, e.StreamId);
        Assert.Equal(stage == IommuDomainStage.Stage2, e.Stage2);
        Assert.Empty(m.Strict.Violations); // every cached STE/CD/TLB entry was invalidated and synced in time
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Unmapping_many_pages_invalidates_every_cached_one(bool ril)
    {
        var m = new Machine(new SmmuV3Options { RangeInvalidation = ril });
        var dev = new IommuDevice("dev", [8]);
        var g = m.Driver.ProbeDevice(dev);
        var dom = m.Driver.AllocateDomain(IommuDomainType.Dma);
        g.Attach(dom);
        dom.Map(0x20_0000, Data, 0x2B000, IoProt.ReadWrite);  // 43 pages
        for (var i = 0UL; i < 43; i++) Assert.Equal(BusStatus.Ok, m.Dma(8, 0x20_0000 + i * 0x1000, [1]));
        Assert.Equal(0x2B000UL, dom.Unmap(0x20_0000, 0x2B000));
        for (var i = 0UL; i < 43; i++) Assert.Equal(BusStatus.SlaveError, m.Dma(8, 0x20_0000 + i * 0x1000, [1]));
        Assert.Empty(m.Strict.Violations);
    }

    [Fact]
    public void Moving_a_device_between_stage1_domains_follows_the_new_tables_hitlessly()
    {
        var m = new Machine();
        var dev = new IommuDevice("dev", [8]);
        var g = m.Driver.ProbeDevice(dev);
        var a = m.Driver.AllocateDomain(IommuDomainType.Unmanaged);
        var b = m.Driver.AllocateDomain(IommuDomainType.Unmanaged);
        a.Map(0x1000, Data, 0x1000, IoProt.ReadWrite);
        b.Map(0x1000, Data + 0x1000, 0x1000, IoProt.ReadWrite);
        g.Attach(a);
        Assert.Equal(BusStatus.Ok, m.Dma(8, 0x1000, [0xA]));
        g.Attach(b);
        Assert.Equal(BusStatus.Ok, m.Dma(8, 0x1000, [0xB]));
        g.Attach(m.Driver.AllocateDomain(IommuDomainType.Dma, IommuDomainStage.Stage2));
        g.Attach(a);
        Assert.Equal(BusStatus.Ok, m.Dma(8, 0x1004, [0xC]));
        Assert.Equal(0xAu, m.Bus.Store.ReadU32(Data) & 0xFF);
        Assert.Equal(0xCu, m.Bus.Store.ReadU32(Data + 4) & 0xFF);
        Assert.Equal(0xBu, m.Bus.Store.ReadU32(Data + 0x1000) & 0xFF);
        Assert.Empty(m.Strict.Violations);
    }

    [Fact]
    public void Msi_doorbell_is_mapped_in_the_software_msi_window()
    {
        var m = new Machine();
        var its = new Doorbell();
        m.Bus.MapMmio(new PhysAddr(0x0809_0000), 0x1_0000, its, MmioAccessRules.AnySizeAligned, "GITS_TRANSLATER frame");
        var dev = new IommuDevice("edu", [8]);
        var g = m.Driver.ProbeDevice(dev);
        var resv = Assert.Single(m.Driver.GetReservedRegions(dev));
        Assert.Equal((0x800_0000UL, 0x10_0000UL, ReservedRegionType.SoftwareMsi), (resv.Start, resv.Length, resv.Type));
        var dom = m.Driver.AllocateDomain(IommuDomainType.Unmanaged);
        g.Attach(dom);
        var msiIova = dom.MapMsiDoorbell(0x0809_0040);
        Assert.Equal(0x800_0040UL, msiIova);
        Assert.Equal(msiIova, dom.MapMsiDoorbell(0x0809_0040)); // mapped once
        Assert.Equal(BusStatus.Ok, m.Dma(8, msiIova, BitConverter.GetBytes(17u)));
        Assert.Equal((0x40UL, 17UL, 8u), its.Last);
    }

    sealed class Doorbell : IMmioHandler
    {
        public (ulong, ulong, uint) Last;
        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes) { value = 0; return BusStatus.Ok; }
        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
        {
            Last = (offset, value, attributes.DeviceId);
            return BusStatus.Ok;
        }
    }

    [Fact]
    public void Domain_geometry_and_capabilities()
    {
        var m = new Machine();
        var d = m.Driver.AllocateDomain(IommuDomainType.Unmanaged);
        Assert.Equal(0x4000_1000UL | 0x20_0000, d.PageSizeBitmap & 0x4020_1000);
        Assert.Equal((1UL << 48) - 1, d.ApertureEnd);
        Assert.True(m.Driver.Capable(IommuCapability.CacheCoherency));
        Assert.True(m.Driver.Capable(IommuCapability.NoExec));
        Assert.False(m.Driver.Capable(IommuCapability.DirtyTracking));
    }

    [Fact]
    public void Host_misuse_gets_linux_errnos()
    {
        var m = new Machine(new SmmuV3Options { Stage1 = false });
        var dev = new IommuDevice("dev", [8]);
        static int Errno(Action a) => Assert.Throws<IommuException>(a).Errno;
        Assert.Equal(global::Doorbell.Errno.ENODEV, Errno(() => m.Driver.AttachDevice(m.Driver.AllocateDomain(IommuDomainType.Identity), dev)));
        var g = m.Driver.ProbeDevice(dev);
        Assert.Equal(global::Doorbell.Errno.EEXIST, Errno(() => m.Driver.ProbeDevice(dev)));
        Assert.Equal(global::Doorbell.Errno.ERANGE, Errno(() => m.Driver.ProbeDevice(new IommuDevice("far", [0x1_0000]))));
        Assert.Equal(global::Doorbell.Errno.EOPNOTSUPP, Errno(() => m.Driver.AllocateDomain(IommuDomainType.Unmanaged, IommuDomainStage.Stage1)));
        var dom = m.Driver.AllocateDomain(IommuDomainType.Unmanaged);
        Assert.Equal(IommuDomainStage.Stage2, ((SmmuV3Domain)dom).Stage);
        Assert.Equal(global::Doorbell.Errno.EINVAL, Errno(() => dom.Map(0x1001, Data, 0x1000, IoProt.Read)));
        dom.Map(0x1000, Data, 0x1000, IoProt.Read);
        Assert.Equal(global::Doorbell.Errno.EEXIST, Errno(() => dom.Map(0x1000, Data, 0x1000, IoProt.Read)));
        Assert.Equal(global::Doorbell.Errno.EFAULT, Errno(() => dom.Map(1UL << 50, Data, 0x1000, IoProt.Read)));
        g.Attach(dom);
        Assert.Equal(global::Doorbell.Errno.EBUSY, Errno(() => m.Driver.FreeDomain(dom)));
        var other = new Machine();
        Assert.Equal(global::Doorbell.Errno.EINVAL, Errno(() => g.Attach(other.Driver.AllocateDomain(IommuDomainType.Identity))));
        Assert.Equal(global::Doorbell.Errno.EINVAL, Errno(() => m.Driver.AllocateDomain(IommuDomainType.Blocked).Map(0, 0, 0x1000, IoProt.Read)));
        g.Detach();
        m.Driver.FreeDomain(dom);
        Assert.Equal(global::Doorbell.Errno.EINVAL, Errno(() => dom.Map(0x2000, Data, 0x1000, IoProt.Read)));
    }

    [Fact]
    public void Asids_are_allocated_uniquely_and_recycled()
    {
        var m = new Machine();
        var a = (SmmuV3Domain)m.Driver.AllocateDomain(IommuDomainType.Unmanaged);
        var b = (SmmuV3Domain)m.Driver.AllocateDomain(IommuDomainType.Unmanaged);
        Assert.NotEqual(a.Tag, b.Tag);
        m.Driver.FreeDomain(a);
        Assert.Equal(a.Tag, ((SmmuV3Domain)m.Driver.AllocateDomain(IommuDomainType.Unmanaged)).Tag);
    }

    [Fact]
    public void Driver_skips_an_illegal_command_and_the_queue_goes_on()
    {
        var m = new Machine();
        m.Driver.Issue([(0x7F, 0), SmmuV3Encode.TlbiNsnhAll()], sync: true);
        Assert.Contains(m.Driver.Log, l => l.Contains("Illegal command", StringComparison.Ordinal));
        Assert.Equal(0u, (m.Reg(SmmuV3Reg.GERROR) ^ m.Reg(SmmuV3Reg.GERRORN)) & SmmuV3Field.GerrorCmdq);
        var syncs = m.Smmu.SyncsCompleted;
        m.Driver.Issue([SmmuV3Encode.PrefetchConfig(8)], sync: true);
        Assert.Equal(syncs + 1, m.Smmu.SyncsCompleted);
        Assert.Equal(0u, (m.Reg(SmmuV3Reg.GERROR) ^ m.Reg(SmmuV3Reg.GERRORN)) & SmmuV3Field.GerrorCmdq); // no error pending
    }

    [Fact]
    public void Cmd_sync_completes_by_msi_into_its_own_queue_slot()
    {
        var m = new Machine();
        var before = m.Smmu.SyncsCompleted;
        m.Driver.Issue([SmmuV3Encode.TlbiNsnhAll()], sync: true);
        Assert.Equal(before + 1, m.Smmu.SyncsCompleted);
        // The CMD_SYNC's first word was overwritten by MSIData = 0; its MSIAddr is its own slot.
        var cons = m.Reg(SmmuV3Reg.CMDQ_CONS) & 0xFF;
        m.Bus.Read(new PhysAddr(SmmuBase + SmmuV3Reg.CMDQ_BASE), 8, out var qbase, BusAttributes.Cpu);
        var slot = (qbase & SmmuV3Field.QBaseAddrMask) + ((cons - 1) & 0xFF) * 16UL;
        Assert.Equal(0u, m.Bus.Store.ReadU32(slot));
        Assert.Equal(slot, m.Bus.Store.ReadU64(slot + 8));
    }

    [Fact]
    public void Event_queue_overflow_is_noticed_by_the_driver()
    {
        var m = new Machine(d: new SmmuV3DriverOptions { EventQueueLog2 = 2 });
        for (var i = 0u; i < 7; i++) m.Dma(0x100 + i, 0, [1]); // no probe: abort STEs → no events; use bad SIDs instead
        for (var i = 0u; i < 7; i++) m.Dma(0xFFFF_0000 + i, 0, [1]);
        var ev = m.Driver.DrainEvents();
        Assert.Equal(4, ev.Count);
        Assert.All(ev, e => Assert.Equal(Evt.C_BAD_STREAMID, e.Id));
        Assert.Contains(m.Driver.Log, l => l.Contains("overflow", StringComparison.Ordinal));
    }

    [Fact]
    public void Reprobing_an_enabled_smmu_resets_it()
    {
        var m = new Machine();
        var again = SmmuV3Driver.Probe(new BusSmmuHostAccess(m.Bus, SmmuBase), m.Bus, new PhysPageAllocator(0x4600_0000, 0x100_0000));
        Assert.Contains(again.Log, l => l.Contains("Resetting", StringComparison.Ordinal));
        Assert.NotEqual(0u, m.Reg(SmmuV3Reg.CR0ACK) & SmmuV3Field.Cr0SmmuEn);
    }
}
