using Doorbell.Vmsa;
using Doorbell.Smmu.V2;

namespace Doorbell.Tests.SmmuV2;

/// <summary>The SMMUv2 register frame dispatched from its descriptor tables (global space 0, global space 1, context banks).</summary>
public class SmmuV2RegisterTableTests
{
    [Fact]
    public void A_write_to_a_read_only_register_is_dropped_and_strict_mode_names_it_with_the_rule()
    {
        var rig = new SmmuV2Rig(strict: true);
        var id0 = rig.Gr0R(SmmuV2Gr0.ID0);
        rig.Gr0W(SmmuV2Gr0.ID0, ~id0);
        rig.Gr0W(SmmuV2Gr0.sGFSYNR0 + 8, 0x1234);
        Assert.Equal(id0, rig.Gr0R(SmmuV2Gr0.ID0));
        Assert.Equal(0u, rig.Gr0R(SmmuV2Gr0.sGFSYNR0 + 8));
        Assert.Collection(rig.Strict.Violations,
            v => Assert.Contains("write to read-only ID0", v.ToString()),
            v => Assert.Contains("write to read-only sGFSYNR2", v.ToString()));
        Assert.All(rig.Strict.Violations, v => Assert.Contains("IHI 0062", v.ToString()));
    }

    [Fact]
    public void Instances_past_the_implemented_count_read_as_zero_and_ignore_writes()
    {
        var rig = new SmmuV2Rig(SmmuV2Options.Mmu500 with { StreamMatchGroups = 4, ContextBanks = 2, Stage2OnlyContextBanks = 0, ContextInterrupts = 2 });
        rig.Gr0W(SmmuV2Gr0.SMR(3), SmmuV2Field.SmrValid | 7);
        rig.Gr0W(SmmuV2Gr0.SMR(4), SmmuV2Field.SmrValid | 9); // no SMR4
        Assert.Equal(SmmuV2Field.SmrValid | 7, rig.Gr0R(SmmuV2Gr0.SMR(3)));
        Assert.Equal(0u, rig.Gr0R(SmmuV2Gr0.SMR(4)));
        rig.W32(rig.Gr1 + SmmuV2Gr1.CBA2R(1), SmmuV2Field.Cba2rVa64);
        rig.W32(rig.Gr1 + SmmuV2Gr1.CBA2R(2), SmmuV2Field.Cba2rVa64); // no bank 2
        Assert.Equal(SmmuV2Field.Cba2rVa64, rig.R32(rig.Gr1 + SmmuV2Gr1.CBA2R(1)));
        Assert.Equal(0u, rig.R32(rig.Gr1 + SmmuV2Gr1.CBA2R(2)));
    }

    [Fact]
    public void Sixty_four_bit_registers_take_halves_and_an_operation_fires_on_its_low_word_only()
    {
        var rig = new SmmuV2Rig();
        rig.CbW64(0, SmmuV2Cb.TTBR0, 0x1122_3344_5566_7000);
        rig.CbW(0, SmmuV2Cb.TTBR0 + 4, 0xAABB_CCDD); // high half merged with the low one
        Assert.Equal(0xAABB_CCDD_5566_7000UL, rig.CbR64(0, SmmuV2Cb.TTBR0));
        Assert.Equal(0x5566_7000u, rig.CbR(0, SmmuV2Cb.TTBR0));
        Assert.Equal(0u, rig.CbR(0, SmmuV2Cb.TLBIVA)); // write-only: reads as zero
        // A cached translation of VA 0x1000 for bank 0's tags (VMID 0 at reset, ASID 0).
        rig.Smmu.Iotlb.Insert(new TlbEntry
        {
            InputBase = 0x1000, OutputBase = 0x4000_1000, SizeLog2 = 12, Level = 3, Granule = Granule.Size4K,
            Stage1Permissions = PagePermissions.All, Stage2Permissions = PagePermissions.All, HasStage1 = true,
        });
        Assert.True(rig.Smmu.Iotlb.TryLookup(0, 0, 0x1000, out _));
        rig.CbW(0, SmmuV2Cb.TLBIVA + 4, 0x1); // the high word of an operation alone does nothing
        Assert.True(rig.Smmu.Iotlb.TryLookup(0, 0, 0x1000, out _));
        rig.CbW(0, SmmuV2Cb.TLBIVA, 0x1); // the low word fires it: VA[55:12] = 1, ASID 0
        Assert.False(rig.Smmu.Iotlb.TryLookup(0, 0, 0x1000, out _));
    }

    [Fact]
    public void Register_names_come_from_the_tables()
    {
        var rig = new SmmuV2Rig();
        var page = 1UL << rig.O.PageShift;
        Assert.Equal("sCR0", rig.Smmu.RegisterName(SmmuV2Gr0.sCR0));
        Assert.Equal("S2CR5", rig.Smmu.RegisterName(SmmuV2Gr0.S2CR(5)));
        Assert.Equal("CBA2R3", rig.Smmu.RegisterName(page + SmmuV2Gr1.CBA2R(3)));
        Assert.Equal("CB1_TTBR0", rig.Smmu.RegisterName(((ulong)rig.O.GlobalPages + 1) * page + SmmuV2Cb.TTBR0 + 4));
        Assert.Equal("0xc", rig.Smmu.RegisterName(0xC));
    }
}
