using Doorbell.Gic.Its;
using Doorbell.Gic.V3;
using Doorbell.Memory;

namespace Doorbell.Tests.Gic;

/// <summary>
/// The end-to-end cases of kvm-unit-tests arm/gic.c (its-trigger, its-migration, its-pending-migration,
/// its-migrate-unmapped-collection), restated for Doorbell: four PEs, device 2 event 20 → LPI 8195 on PE 3,
/// device 7 event 255 → LPI 8196 on PE 2. Each case runs twice: on the physical GICv3 + ITS, and as guest software on
/// vCPU 0 of a VM against the vGICv3 + vITS (the same ITS engine over guest memory, targeting vCPUs; MSIs by
/// KVM_SIGNAL_MSI with the DeviceID), which is what kvm-unit-tests exercises. "Migration" rebuilds the GIC and ITS on a copy of guest memory and
/// restores only register values, which works because every table lives in that memory.
/// </summary>
public class KvmUnitTestsScenarioTests
{
    static ItsHarness Setup1(bool guest, ItsHarness? h = null, bool mapCollection3 = true)
    {
        h ??= new ItsHarness(4, guest: guest);
        h.SetLpiConfig(8195, 0xA0, true);
        h.SetLpiConfig(8196, 0xA0, true);
        h.Mapd(2, bits: 8);
        h.Mapd(7, bits: 8);
        if (mapCollection3) h.Mapc(3, 3);
        h.Mapc(2, 2);
        h.Cmd(c => ItsCommand.Invall(c, 2));
        if (mapCollection3) h.Cmd(c => ItsCommand.Invall(c, 3));
        h.Mapti(2, 20, 8195, 3);
        h.Mapti(7, 255, 8196, 2);
        return h;
    }

    /// <summary>Takes everything each PE is signalled; returns (pe, intid) pairs.</summary>
    static List<(int Pe, ulong Intid)> Drain(ItsHarness h)
    {
        var got = new List<(int, ulong)>();
        for (var pe = 0; pe < h.Gic.CpuInterfaces.Length; pe++)
            for (var n = 0; n < 16; n++)
            {
                var id = h.Cpu(pe).Iar1();
                if (id == 1023) break;
                got.Add((pe, id));
                h.Cpu(pe).Eoir1(id);
            }
        return got;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Its_trigger(bool guest)
    {
        var h = Setup1(guest);
        h.Ev(ItsOpcode.Int, 2, 20);
        Assert.Equal([(3, 8195UL)], Drain(h));
        h.Ev(ItsOpcode.Int, 7, 255);
        Assert.Equal([(2, 8196UL)], Drain(h));

        // Disable LPI 8195 in the property table and INV: INT no longer reaches PE 3 (it stays pending).
        h.SetLpiConfig(8195, 0xA0, false);
        h.Ev(ItsOpcode.Inv, 2, 20);
        h.Ev(ItsOpcode.Int, 2, 20);
        Assert.Empty(Drain(h));
        // Re-enable and INVALL: the pending LPI is delivered, then INT works again.
        h.SetLpiConfig(8195, 0xA0, true);
        h.Cmd(c => ItsCommand.Invall(c, 3));
        Assert.Equal([(3, 8195UL)], Drain(h));
        h.Ev(ItsOpcode.Int, 2, 20);
        Assert.Equal([(3, 8195UL)], Drain(h));

        // Unmap device 2 (MAPD V = 0): INT on it is an unmapped-device error and raises nothing.
        h.Mapd(2, valid: false);
        h.Ev(ItsOpcode.Int, 2, 20);
        Assert.Empty(Drain(h));
        Assert.Equal(0x010304u, h.Its.CommandErrors[^1].Code);
    }

    /// <summary>Builds a new machine on a copy of <paramref name="src"/>'s RAM and restores register values only.</summary>
    static ItsHarness Migrate(ItsHarness src, bool pendingTablesLoaded = true)
    {
        var dst = new ItsHarness(4, enableIts: false, guest: src.Vm is not null);
        var buf = new byte[0x80_0000];
        src.SavePendingTables();
        src.ReadMem(ItsHarness.PropTable, buf);
        // The destination harness already enabled LPIs on fresh tables: restore memory, then re-enable LPIs so the
        // redistributors reload pending state, as a restore that sets GICR_CTLR last does.
        for (var c = 0; c < 4; c++)
            dst.W32(QemuVirtGicV3.GicrBase.Value + (ulong)c * 0x2_0000 + GicV3Redistributor.GICR_CTLR, 0);
        dst.WriteMem(ItsHarness.PropTable, buf);
        if (pendingTablesLoaded)
            for (var c = 0; c < 4; c++)
                dst.W32(QemuVirtGicV3.GicrBase.Value + (ulong)c * 0x2_0000 + GicV3Redistributor.GICR_CTLR, 1);
        foreach (var off in new[] { GicV3Its.GITS_BASER, GicV3Its.GITS_BASER + 8 })
            dst.W64(QemuVirtGicV3.ItsBase.Value + off, src.ItsReg(off));
        dst.W64(QemuVirtGicV3.ItsBase.Value + GicV3Its.GITS_CBASER, src.ItsReg(GicV3Its.GITS_CBASER));
        dst.W32(QemuVirtGicV3.ItsBase.Value + GicV3Its.GITS_CTLR, 1);
        // Skip the already-executed commands: the new queue starts where the old one was.
        for (var i = 0UL; i < src.Creadr / 32; i++) dst.Cmd(c => ItsCommand.Sync(c, 0), kick: false);
        dst.Kick();
        Assert.Equal(0, dst.Its.CommandErrorCount);
        return dst;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Its_migration_translations_survive_in_guest_memory(bool guest)
    {
        var src = Setup1(guest);
        var dst = Migrate(src);
        dst.Ev(ItsOpcode.Int, 2, 20);
        Assert.Equal([(3, 8195UL)], Drain(dst));
        dst.Msi(7, 255);
        Assert.Equal([(2, 8196UL)], Drain(dst));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Its_pending_migration_pending_lpis_are_delivered_on_the_destination(bool guest)
    {
        var src = Setup1(guest);
        src.Cpu(3).Pmr = 0; src.Cpu(2).Pmr = 0; // hold them pending
        src.Msi(2, 20);
        src.Msi(7, 255);
        var dst = Migrate(src);
        Assert.Equal([(2, 8196UL), (3, 8195UL)], Drain(dst));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Its_migrate_unmapped_collection_then_map_it_on_the_destination(bool guest)
    {
        var src = Setup1(guest, new ItsHarness(4, new ItsOptions { StallOnCommandError = false }, guest: guest), mapCollection3: false);
        src.Ev(ItsOpcode.Int, 2, 20);
        Assert.Equal(0x010309u, src.Its.CommandErrors[^1].Code); // collection 3 unmapped: nothing pending
        var dst = Migrate(src);
        dst.Mapc(3, 0);
        dst.Ev(ItsOpcode.Int, 2, 20);
        Assert.Equal([(0, 8195UL)], Drain(dst));
    }
}
