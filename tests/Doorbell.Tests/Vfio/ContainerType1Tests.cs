using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Host.Vfio.Backends;

namespace Doorbell.Tests.Vfio;

public class ContainerType1Tests
{
    const uint RW = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite;

    static (VfioWorld W, FakeIommuGroup Iommu, int C, int G) Ready(uint type = VfioExtension.Type1v2Iommu, VfioOptions? o = null)
    {
        var w = new VfioWorld(o);
        var (iommu, _) = w.AddGroup(7);
        var (c, g, r) = w.Setup(7, type);
        Assert.Equal(0, r);
        return (w, iommu, c, g);
    }

    static FakeDomain Dom(FakeIommuGroup g) => (FakeDomain)g.Attached!;

    [Fact]
    public void Api_version_and_extensions_before_and_after_set_iommu()
    {
        var w = new VfioWorld();
        w.AddGroup(1);
        var c = w.Proc.OpenContainer();
        Assert.Equal(0, w.Proc.Ioctl(c, VfioIoctl.GetApiVersion, 0UL));
        Assert.Equal(1, w.Proc.Ioctl(c, VfioIoctl.CheckExtension, VfioExtension.Type1Iommu));
        Assert.Equal(1, w.Proc.Ioctl(c, VfioIoctl.CheckExtension, VfioExtension.Type1v2Iommu));
        Assert.Equal(1, w.Proc.Ioctl(c, VfioIoctl.CheckExtension, VfioExtension.UnmapAll));
        Assert.Equal(0, w.Proc.Ioctl(c, VfioIoctl.CheckExtension, VfioExtension.DmaCcIommu));
        Assert.Equal(0, w.Proc.Ioctl(c, VfioIoctl.CheckExtension, VfioExtension.ReservedType1Nesting));
        Assert.Equal(0, w.Proc.Ioctl(c, VfioIoctl.CheckExtension, VfioExtension.NoIommu));
        // Without a driver every other request is EINVAL; SET_IOMMU needs a group.
        Assert.Equal(-Errno.EINVAL, w.Proc.Ioctl(c, VfioIoctl.IommuMapDma, new byte[32]));
        Assert.Equal(-Errno.EINVAL, w.Proc.Ioctl(c, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu));
        var g = w.Proc.OpenGroup(1);
        Assert.Equal(0, w.SetContainer(g, c));
        Assert.Equal(-Errno.ENODEV, w.Proc.Ioctl(c, VfioIoctl.SetIommu, VfioExtension.SpaprTceIommu));
        Assert.Equal(0, w.Proc.Ioctl(c, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu));
        Assert.Equal(-Errno.EINVAL, w.Proc.Ioctl(c, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu));
        Assert.Equal(1, w.Proc.Ioctl(c, VfioIoctl.CheckExtension, VfioExtension.DmaCcIommu));
        Assert.Equal(1, w.Proc.Ioctl(c, VfioIoctl.CheckExtension, VfioExtension.UpdateVaddr));
        Assert.Equal(-Errno.ENOTTY, w.Proc.Ioctl(c, VfioIoctl.Io(50), new byte[8]));
    }

    [Fact]
    public void Dma_cc_is_zero_when_a_domain_does_not_enforce_coherency()
    {
        var w = new VfioWorld();
        var (iommu, _) = w.AddGroup(1);
        iommu.NewDomain = () => new FakeDomain { EnforcesCacheCoherency = false };
        var (c, _, r) = w.Setup(1);
        Assert.Equal(0, r);
        Assert.Equal(0, w.Proc.Ioctl(c, VfioIoctl.CheckExtension, VfioExtension.DmaCcIommu));
    }

    [Fact]
    public void Get_info_reports_pgsizes_and_caps_in_linux_order_with_iova_ranges_excluding_the_msi_window()
    {
        var (w, _, c, _) = Ready();
        var buf = new byte[256];
        var info = new VfioIommuType1Info { Argsz = (uint)buf.Length };
        VfioWorld.Bytes(info).CopyTo(buf, 0);
        Assert.Equal(0, w.Proc.Ioctl(c, VfioIoctl.IommuGetInfo, buf));
        var got = VfioWorld.Read<VfioIommuType1Info>(buf);
        Assert.Equal(VfioIommuInfoFlags.PgSizes | VfioIommuInfoFlags.Caps, got.Flags);
        Assert.Equal(0x4000_0000UL | 0x20_0000 | 0x1000, got.IovaPgsizes);
        Assert.Equal(24u, got.CapOffset);
        // MIGRATION, DMA_AVAIL, IOVA_RANGE
        var mig = VfioWorld.Read<VfioIommuType1InfoCapMigration>(buf, 24);
        Assert.Equal(VfioIommuInfoFlags.CapMigration, mig.Header.Id);
        Assert.Equal(4096UL, mig.PgsizeBitmap);
        Assert.Equal(256UL << 20, mig.MaxDirtyBitmapSize);
        var avail = VfioWorld.Read<VfioIommuType1InfoDmaAvail>(buf, (int)mig.Header.Next);
        Assert.Equal(VfioIommuInfoFlags.CapDmaAvail, avail.Header.Id);
        Assert.Equal(65535u, avail.Avail);
        var at = (int)avail.Header.Next;
        var iova = VfioWorld.Read<VfioIommuType1InfoCapIovaRange>(buf, at);
        Assert.Equal(VfioIommuInfoFlags.CapIovaRange, iova.Header.Id);
        Assert.Equal(0u, iova.Header.Next);
        Assert.Equal(2u, iova.NrIovas);
        var r0 = VfioWorld.Read<VfioIovaRange>(buf, at + 16);
        var r1 = VfioWorld.Read<VfioIovaRange>(buf, at + 32);
        Assert.Equal((0UL, 0x7FF_FFFFUL), (r0.Start, r0.End));
        Assert.Equal((0x810_0000UL, (1UL << 48) - 1), (r1.Start, r1.End));
    }

    [Fact]
    public void Get_info_with_a_small_argsz_reports_the_needed_size_and_no_chain()
    {
        var (w, _, c, _) = Ready();
        var buf = VfioWorld.Bytes(new VfioIommuType1Info { Argsz = 24 });
        Assert.Equal(0, w.Proc.Ioctl(c, VfioIoctl.IommuGetInfo, buf));
        var got = VfioWorld.Read<VfioIommuType1Info>(buf);
        Assert.True((got.Flags & VfioIommuInfoFlags.Caps) != 0);
        Assert.Equal(0u, got.CapOffset);
        Assert.Equal(24u + 32 + 16 + 16 + 32, got.Argsz);
        Assert.Equal(-Errno.EINVAL, w.Proc.Ioctl(c, VfioIoctl.IommuGetInfo, VfioWorld.Bytes(new VfioIommuType1Info { Argsz = 15 })));
        Assert.Equal(-Errno.EFAULT, w.Proc.Ioctl(c, VfioIoctl.IommuGetInfo, new byte[8]));
    }

    [Fact]
    public void Map_pins_user_pages_and_maps_them_into_the_domain()
    {
        var (w, iommu, c, _) = Ready();
        var va = w.Proc.Memory.MapAnonymous(0x4000);
        Assert.Equal(0, w.Map(c, va, 0x1_0000_0000, 0x4000));
        var d = Dom(iommu);
        Assert.Equal(4, d.Pages.Count);
        Assert.Equal(4UL, w.Proc.LockedPages);
        // The IOMMU maps the very pages the process sees.
        w.Proc.Memory.Write(va + 0x1000, [0xAB]);
        var phys = d.Pages[0x1_0000_1000].Phys;
        Assert.Equal(0xABUL, w.Bus.Store.ReadSized(phys, 1));
        Assert.Equal(IommuProt.Read | IommuProt.Write | IommuProt.Cache, d.Pages[0x1_0000_0000].Prot);
        var cont = (VfioContainer)w.Proc.File(c)!;
        Assert.Equal(65534u, cont.Iommu!.DmaAvail);
    }

    [Fact]
    public void Map_argument_errors_follow_type1()
    {
        var (w, _, c, _) = Ready();
        var va = w.Proc.Memory.MapAnonymous(0x10000);
        Assert.Equal(-Errno.EINVAL, w.Map(c, va, 0x10000, 0x1000, argsz: 31));
        Assert.Equal(-Errno.EFAULT, w.Proc.Ioctl(c, VfioIoctl.IommuMapDma, new byte[16]));
        Assert.Equal(-Errno.EINVAL, w.Map(c, va, 0x10000, 0x1000, flags: 8));
        Assert.Equal(-Errno.EINVAL, w.Map(c, va, 0x10000, 0x1000, flags: 0));
        Assert.Equal(-Errno.EINVAL, w.Map(c, va, 0x10000, 0x1000, flags: VfioDmaFlags.MapVaddr | VfioDmaFlags.MapRead));
        Assert.Equal(-Errno.EINVAL, w.Map(c, va, 0x10000, 0));
        Assert.Equal(-Errno.EINVAL, w.Map(c, va, 0x10800, 0x1000));
        Assert.Equal(-Errno.EINVAL, w.Map(c, va + 0x800, 0x10000, 0x1000));
        Assert.Equal(-Errno.EINVAL, w.Map(c, va, 0x10000, 0x1800));
        Assert.Equal(-Errno.EOVERFLOW, w.Map(c, va, 0xFFFF_FFFF_FFFF_F000, 0x2000));
        Assert.Equal(-Errno.EINVAL, w.Map(c, va, 0x800_0000, 0x1000)); // the MSI window
        Assert.Equal(-Errno.EINVAL, w.Map(c, va, 1UL << 48, 0x1000));  // beyond the aperture
        Assert.Equal(-Errno.EFAULT, w.Map(c, 0x1000, 0x10000, 0x1000)); // no user mapping there
    }

    [Fact]
    public void Overlapping_maps_are_EEXIST()
    {
        var (w, _, c, _) = Ready();
        var va = w.Proc.Memory.MapAnonymous(0x10000);
        Assert.Equal(0, w.Map(c, va, 0x10000, 0x4000));
        Assert.Equal(-Errno.EEXIST, w.Map(c, va, 0x10000, 0x1000));
        Assert.Equal(-Errno.EEXIST, w.Map(c, va, 0x13000, 0x2000));
        Assert.Equal(-Errno.EEXIST, w.Map(c, va, 0xF000, 0x2000));
        Assert.Equal(0, w.Map(c, va, 0x14000, 0x1000));
    }

    [Fact]
    public void Dma_entry_limit_gives_ENOSPC_and_memlock_gives_ENOMEM()
    {
        var (w, _, c, _) = Ready(o: new VfioOptions { DmaEntryLimit = 2 });
        var va = w.Proc.Memory.MapAnonymous(0x10000);
        Assert.Equal(0, w.Map(c, va, 0x10000, 0x1000));
        Assert.Equal(0, w.Map(c, va, 0x20000, 0x1000));
        Assert.Equal(-Errno.ENOSPC, w.Map(c, va, 0x30000, 0x1000));
        Assert.Equal(0, w.Unmap(c, 0x10000, 0x1000, out _));
        w.Proc.MemlockLimitBytes = 0x2000; // 1 page already locked
        Assert.Equal(-Errno.ENOMEM, w.Map(c, va, 0x30000, 0x2000));
        Assert.Equal(1UL, w.Proc.LockedPages);
        w.Proc.CapIpcLock = true;
        Assert.Equal(0, w.Map(c, va, 0x30000, 0x2000));
    }

    [Fact]
    public void V2_unmap_rejects_bisection_and_reports_unmapped_size()
    {
        var (w, iommu, c, _) = Ready();
        var va = w.Proc.Memory.MapAnonymous(0x10000);
        Assert.Equal(0, w.Map(c, va, 0x10000, 0x4000));
        Assert.Equal(0, w.Map(c, va + 0x4000, 0x20000, 0x1000));
        Assert.Equal(-Errno.EINVAL, w.Unmap(c, 0x11000, 0x1000, out _));
        Assert.Equal(-Errno.EINVAL, w.Unmap(c, 0x10000, 0x1000, out _));
        Assert.Equal(-Errno.EINVAL, w.Unmap(c, 0x10000, 0, out _));
        Assert.Equal(-Errno.EINVAL, w.Unmap(c, 0x10800, 0x1000, out _));
        Assert.Equal(-Errno.EOVERFLOW, w.Unmap(c, 0xFFFF_FFFF_FFFF_F000, 0x2000, out _));
        Assert.Equal(0, w.Unmap(c, 0x50000, 0x1000, out var none));
        Assert.Equal(0UL, none);
        Assert.Equal(0, w.Unmap(c, 0, 0x100000, out var all));
        Assert.Equal(0x5000UL, all);
        Assert.Empty(Dom(iommu).Pages);
        Assert.Equal(0UL, w.Proc.LockedPages);
    }

    [Fact]
    public void V1_unmap_inside_a_mapping_is_a_no_op_and_covering_its_start_removes_it_whole()
    {
        var (w, iommu, c, _) = Ready(VfioExtension.Type1Iommu);
        var va = w.Proc.Memory.MapAnonymous(0x10000);
        Assert.Equal(0, w.Map(c, va, 0x10000, 0x4000));
        Assert.Equal(0, w.Unmap(c, 0x11000, 0x1000, out var n));
        Assert.Equal(0UL, n);
        Assert.Equal(4, Dom(iommu).Pages.Count);
        Assert.Equal(0, w.Unmap(c, 0x10000, 0x1000, out n));
        Assert.Equal(0x4000UL, n);
        Assert.Empty(Dom(iommu).Pages);
    }

    [Fact]
    public void Unmap_all_needs_zero_iova_and_size()
    {
        var (w, iommu, c, _) = Ready();
        var va = w.Proc.Memory.MapAnonymous(0x10000);
        Assert.Equal(0, w.Map(c, va, 0x10000, 0x1000));
        Assert.Equal(0, w.Map(c, va + 0x1000, 0x90000, 0x1000));
        Assert.Equal(-Errno.EINVAL, w.Unmap(c, 0x10000, 0, out _, VfioDmaFlags.UnmapAll));
        Assert.Equal(-Errno.EINVAL, w.Unmap(c, 0, 0x1000, out _, VfioDmaFlags.UnmapAll));
        Assert.Equal(-Errno.EINVAL, w.Unmap(c, 0, 0, out _, 8));
        Assert.Equal(-Errno.EINVAL, w.Unmap(c, 0, 0, out _, VfioDmaFlags.UnmapAll | VfioDmaFlags.UnmapGetDirtyBitmap));
        Assert.Equal(0, w.Unmap(c, 0, 0, out var n, VfioDmaFlags.UnmapAll));
        Assert.Equal(0x2000UL, n);
        Assert.Empty(Dom(iommu).Pages);
    }

    [Fact]
    public void Update_vaddr_invalidates_then_remaps_exactly()
    {
        var (w, _, c, _) = Ready();
        var va = w.Proc.Memory.MapAnonymous(0x10000);
        Assert.Equal(0, w.Map(c, va, 0x10000, 0x2000));
        Assert.Equal(-Errno.EINVAL, w.Map(c, va, 0x10000, 0x2000, VfioDmaFlags.MapVaddr)); // not invalidated
        Assert.Equal(-Errno.ENOENT, w.Map(c, va, 0x40000, 0x2000, VfioDmaFlags.MapVaddr));
        Assert.Equal(0, w.Unmap(c, 0x10000, 0x2000, out var n, VfioDmaFlags.UnmapVaddr));
        Assert.Equal(0x2000UL, n);
        Assert.Equal(-Errno.EINVAL, w.Unmap(c, 0x10000, 0x2000, out _, VfioDmaFlags.UnmapVaddr)); // already invalid
        Assert.Equal(-Errno.EINVAL, w.Map(c, va, 0x10000, 0x1000, VfioDmaFlags.MapVaddr)); // size mismatch
        Assert.Equal(0, w.Map(c, va + 0x4000, 0x10000, 0x2000, VfioDmaFlags.MapVaddr));
        var t1 = ((VfioContainer)w.Proc.File(c)!).Iommu!;
        Assert.Equal(va + 0x4000, t1.Mappings[0].Vaddr);
    }

    [Fact]
    public void A_second_group_gets_existing_mappings_replayed_and_the_last_group_out_unmaps_everything()
    {
        var w = new VfioWorld();
        var (i1, _) = w.AddGroup(1);
        var (i2, _) = w.AddGroup(2);
        var (c, g1, r) = w.Setup(1);
        Assert.Equal(0, r);
        var va = w.Proc.Memory.MapAnonymous(0x3000);
        Assert.Equal(0, w.Map(c, va, 0x10000, 0x3000));
        var g2 = w.Proc.OpenGroup(2);
        Assert.Equal(0, w.SetContainer(g2, c));
        Assert.NotSame(i1.Attached, i2.Attached);
        Assert.Equal(Dom(i1).Pages, Dom(i2).Pages);
        Assert.Equal(2, ((VfioContainer)w.Proc.File(c)!).Iommu!.DomainCount);
        Assert.Equal(0, w.Proc.Ioctl(g2, VfioIoctl.GroupUnsetContainer, 0UL));
        Assert.Equal(3UL, w.Proc.LockedPages);
        Assert.Equal(0, w.Proc.Ioctl(g1, VfioIoctl.GroupUnsetContainer, 0UL));
        Assert.Equal(0UL, w.Proc.LockedPages);
        Assert.Empty(((FakeDomain)i1.Allocated[0]).Pages);
        Assert.Null(((VfioContainer)w.Proc.File(c)!).Iommu);
    }

    [Fact]
    public void Groups_sharing_an_iommu_share_one_domain()
    {
        var w = new VfioWorld();
        var (i1, _) = w.AddGroup(1);
        var (i2, _) = w.AddGroup(2);
        i2.ShareDomains = true;
        var (c, _, _) = w.Setup(1);
        var g2 = w.Proc.OpenGroup(2);
        Assert.Equal(0, w.SetContainer(g2, c));
        Assert.Same(i1.Attached, i2.Attached);
        Assert.Equal(1, ((VfioContainer)w.Proc.File(c)!).Iommu!.DomainCount);
    }

    [Fact]
    public void Attach_conflicting_with_existing_mappings_is_EINVAL()
    {
        var w = new VfioWorld();
        w.AddGroup(1).Iommu.Resv.Clear();
        var (i2, _) = w.AddGroup(2);
        var (c, _, _) = w.Setup(1);
        var va = w.Proc.Memory.MapAnonymous(0x1000);
        Assert.Equal(0, w.Map(c, va, 0x800_0000, 0x1000)); // legal without an MSI window
        var g2 = w.Proc.OpenGroup(2);
        Assert.Equal(-Errno.EINVAL, w.SetContainer(g2, c)); // group 2 reserves that IOVA
        Assert.Null(i2.Attached);
    }

    [Fact]
    public void Sw_msi_window_gets_an_msi_cookie()
    {
        var (_, iommu, _, _) = Ready();
        Assert.Equal(0x800_0000UL, Dom(iommu).MsiCookie);
    }

    [Fact]
    public void A_failing_domain_map_unwinds_pins()
    {
        var (w, iommu, c, _) = Ready();
        Dom(iommu).FailMapsAfter = 0;
        var va = w.Proc.Memory.MapAnonymous(0x2000);
        Assert.Equal(-Errno.ENOMEM, w.Map(c, va, 0x10000, 0x2000));
        Assert.Equal(0UL, w.Proc.LockedPages);
        Assert.Equal(0L, w.Proc.Memory.PinnedPages);
    }
}
