using Doorbell.Gic.Its;
using Doorbell.Gic.V2m;
using Doorbell.Gic.V3;
using Doorbell.Memory;
using Doorbell.Smmu.V3;
using Doorbell.Tracing;

namespace Doorbell.Tests.Memory;

/// <summary>
/// The register descriptors drive dispatch and the access rules: first on a synthetic block through a recording
/// register file (what reaches the handler), then on every model block through its real MMIO front.
/// </summary>
public class RegisterBlockTests
{
    sealed class Recorder
    {
        public readonly List<(int Id, uint Index, ulong Value)> Writes = [];
        public int Reads;
        public readonly Dictionary<(int, uint), ulong> Values = [];
    }

    readonly struct File(Recorder rec) : IRegisterFile
    {
        public static RegisterBlock Block => Plain;
        public ulong Read(RegisterRef r, in BusAttributes attributes) { rec.Reads++; return rec.Values.GetValueOrDefault((r.Id, r.Index)); }
        public void Write(RegisterRef r, ulong value, in BusAttributes attributes) { rec.Writes.Add((r.Id, r.Index, value)); rec.Values[(r.Id, r.Index)] = value; }
    }

    static readonly RegisterDescriptor[] Table =
    [
        new(0x00, 4, "CTRL", RegisterAccess.ReadWrite, Id: 1),
        new(0x04, 4, "ID", RegisterAccess.ReadOnly, Id: 2),
        new(0x08, 8, "BASE", RegisterAccess.ReadWrite, Id: 3),
        new(0x10, 4, "DOORBELL", RegisterAccess.WriteOnly, Id: 4, MinSize: 2),
        new(0x14, 4, "RSVD", RegisterAccess.RazWi, Id: 5),
        new(0x20, 4, "SET", RegisterAccess.WriteOneToSet, 4, 6),
        new(0x30, 4, "CLR", RegisterAccess.WriteOneToClear, 4, 6),
        new(0x40, 4, "PRIO", RegisterAccess.ReadWrite, 4, 7, MinSize: 1),
    ];

    readonly struct PairedFile(Recorder rec) : IRegisterFile
    {
        public static RegisterBlock Block => Paired;
        public ulong Read(RegisterRef r, in BusAttributes attributes) => new File(rec).Read(r, in attributes);
        public void Write(RegisterRef r, ulong value, in BusAttributes attributes) => new File(rec).Write(r, value, in attributes);
    }

    static readonly RegisterBlock Plain = new("blk", Table, 0x100, "TEST §1 (read-only)");
    static readonly RegisterBlock Paired = new("blk", Table, 0x100, "TEST §1 (read-only)", pairedWords: true);

    static (RegisterBlock Block, Recorder Rec, StrictMonitor Strict) Make(bool paired = false) =>
        (paired ? Paired : Plain, new Recorder(), new StrictMonitor { Enabled = true });

    static ulong Rd(Recorder rec, ulong offset, int size) => RegisterDispatch<File>.Read(new File(rec), offset, size);
    static void Wr(Recorder rec, ulong offset, int size, ulong value, StrictMonitor strict) => RegisterDispatch<File>.Write(new File(rec), offset, size, value, BusAttributes.Cpu, strict);

    [Fact]
    public void Offsets_find_their_descriptor_in_constant_time_and_undeclared_words_are_reserved()
    {
        var (b, _, _) = Make();
        Assert.Equal("BASE", b.Find(0x0C).Name);
        Assert.Equal(3, b.Find(0x0C).Id);
        Assert.Equal("SET", b.Find(0x2C).Name);
        Assert.Equal("SET3", b.NameOf(0x2C));
        Assert.Equal(RegisterAccess.RazWi, b.Find(0x18).Access);
        Assert.Equal(0, b.Find(0x18).Id);
        Assert.Equal("0x18", b.NameOf(0x18));
        Assert.Equal(RegisterAccess.RazWi, b.Access(0x1_0000)); // outside the block
        Assert.Throws<ArgumentException>(() => new RegisterBlock("x", [new(0, 8, "A", RegisterAccess.ReadWrite), new(4, 4, "B", RegisterAccess.ReadOnly)], 0x10, "r"));
        Assert.Throws<ArgumentException>(() => new RegisterBlock("x", [new(0x10, 4, "A", RegisterAccess.ReadWrite)], 0x10, "r"));
    }

    [Fact]
    public void Read_only_writes_are_dropped_and_reported_with_the_descriptor_name_and_block_rule()
    {
        var (b, rec, strict) = Make();
        rec.Values[(2, 0)] = 0x1234;
        Wr(rec, 0x04, 4, 0xFFFF_FFFF, strict);
        Assert.Empty(rec.Writes);
        Assert.Equal(0x1234UL, Rd(rec, 0x04, 4));
        var v = Assert.Single(strict.Violations);
        Assert.Equal("blk", v.Source);
        Assert.Equal("TEST §1 (read-only)", v.Rule);
        Assert.Equal("write to read-only ID", v.Message);
        Wr(rec, 0x04, 4, 1, new StrictMonitor()); // permissive: silently dropped
        Assert.Empty(rec.Writes);
    }

    [Fact]
    public void Write_only_and_reserved_registers_read_as_zero_without_reaching_the_handler()
    {
        var (b, rec, strict) = Make();
        rec.Values[(4, 0)] = 77; rec.Values[(5, 0)] = 77;
        Assert.Equal(0UL, Rd(rec, 0x10, 4));
        Assert.Equal(0UL, Rd(rec, 0x14, 4));
        Assert.Equal(0UL, Rd(rec, 0x18, 4));
        Assert.Equal(0, rec.Reads);
        Wr(rec, 0x14, 4, 0xFFFF_FFFF, strict);
        Wr(rec, 0x18, 4, 0xFFFF_FFFF, strict);
        Assert.Empty(rec.Writes);
        Assert.Empty(strict.Violations);
        // A 16-bit write to the write-only doorbell reaches the handler as the bytes written, in place.
        Wr(rec, 0x12, 2, 0xABCD, strict);
        Assert.Equal((4, 0u, 0xABCD_0000UL), Assert.Single(rec.Writes));
        Assert.Equal(0, rec.Reads);
    }

    [Fact]
    public void W1s_and_w1c_registers_pass_the_mask_of_ones_and_ignore_a_write_of_zero()
    {
        var (b, rec, strict) = Make();
        Wr(rec, 0x24, 4, 0, strict);
        Wr(rec, 0x34, 4, 0, strict);
        Assert.Empty(rec.Writes);
        Wr(rec, 0x24, 4, 0x8000_0001, strict);
        Wr(rec, 0x38, 4, 2, strict);
        Assert.Equal([(6, 1u, 0x8000_0001UL), (6, 2u, 2UL)], rec.Writes);
        Assert.Equal(0, rec.Reads); // no read-modify-write for W1S/W1C
    }

    [Fact]
    public void Sub_register_accesses_merge_and_accesses_outside_a_registers_sizes_are_raz_wi()
    {
        var (b, rec, strict) = Make();
        rec.Values[(3, 0)] = 0x1111_2222_3333_4444;
        Wr(rec, 0x0C, 4, 0xAAAA_BBBB, strict); // high half of a 64-bit register
        Assert.Equal((3, 0u, 0xAAAA_BBBB_3333_4444UL), Assert.Single(rec.Writes));
        Assert.Equal(0xAAAA_BBBBUL, Rd(rec, 0x0C, 4));
        Assert.Equal(0x3333_4444UL, Rd(rec, 0x08, 4));
        rec.Writes.Clear();
        Wr(rec, 0x00, 2, 0xFFFF, strict);  // narrower than CTRL takes
        Wr(rec, 0x00, 8, 0xFFFF, strict);  // wider than CTRL (no paired words)
        Wr(rec, 0x08, 2, 0xFFFF, strict);  // 16-bit access to a 64-bit register
        Assert.Empty(rec.Writes);
        Assert.Equal(0UL, Rd(rec, 0x00, 8));
        rec.Values[(7, 1)] = 0x4433_2211;
        Wr(rec, 0x46, 1, 0xEE, strict);     // byte-accessible PRIO1, byte 2
        Assert.Equal((7, 1u, 0x44EE_2211UL), Assert.Single(rec.Writes));
        Assert.Equal(0x44UL, Rd(rec, 0x47, 1));
        Assert.Equal(0UL, Rd(rec, 0x45, 2)); // misaligned within the register
    }

    readonly struct LaneFile(Recorder rec, List<(int Offset, int Size)> parts) : IRegisterFile
    {
        public static RegisterBlock Block => Lanes;
        public ulong Read(RegisterRef r, in BusAttributes attributes) => new File(rec).Read(r, in attributes);
        public void Write(RegisterRef r, ulong value, in BusAttributes attributes)
        {
            parts.Add((r.PartOffset, r.PartSize));
            new File(rec).Write(r, value, in attributes);
        }
    }

    static readonly RegisterBlock Lanes = new("blk", [new(0x00, 4, "TARGETS", RegisterAccess.ReadWrite, 4, 8, MinSize: 1, ByteWrites: true)], 0x10, "TEST §1 (read-only)");

    [Fact]
    public void Byte_write_registers_get_a_narrow_store_as_it_is_without_a_read()
    {
        var rec = new Recorder();
        var parts = new List<(int, int)>();
        var strict = new StrictMonitor { Enabled = true };
        void W(ulong offset, int size, ulong value) => RegisterDispatch<LaneFile>.Write(new LaneFile(rec, parts), offset, size, value, BusAttributes.Cpu, strict);
        W(0x06, 1, 0x1EE);     // byte 2 of TARGETS1: just the byte (value masked to it)
        W(0x0A, 2, 0xBBAA);    // halfword at byte 2 of TARGETS2
        W(0x0C, 4, 0x11223344); // whole TARGETS3: PartSize 0
        W(0x05, 2, 0xFFFF);    // misaligned halfword: RAZ/WI
        Assert.Equal([(8, 1u, 0xEEUL), (8, 2u, 0xBBAAUL), (8, 3u, 0x11223344UL)], rec.Writes);
        Assert.Equal([(2, 1), (2, 2), (0, 0)], parts);
        Assert.Equal(0, rec.Reads);
        Assert.Empty(strict.Violations);
        // Only byte-accessible 32-bit read-write registers may take stores as they are.
        Assert.Throws<ArgumentException>(() => new RegisterBlock("x", [new(0, 4, "A", RegisterAccess.ReadOnly, MinSize: 1, ByteWrites: true)], 0x10, "r"));
        Assert.Throws<ArgumentException>(() => new RegisterBlock("x", [new(0, 8, "A", RegisterAccess.ReadWrite, MinSize: 1, ByteWrites: true)], 0x10, "r"));
        Assert.Throws<ArgumentException>(() => new RegisterBlock("x", [new(0, 4, "A", RegisterAccess.ReadWrite, ByteWrites: true)], 0x10, "r"));
    }

    [Fact]
    public void Paired_word_blocks_take_a_64_bit_access_over_two_32_bit_registers()
    {
        var (b, rec, strict) = Make(paired: true);
        rec.Values[(1, 0)] = 0x5; rec.Values[(2, 0)] = 0x1234;
        Assert.True(b.PairedWords);
        Assert.Equal(0x0000_1234_0000_0005UL, RegisterDispatch<PairedFile>.Read(new PairedFile(rec), 0x00, 8));
        RegisterDispatch<PairedFile>.Write(new PairedFile(rec), 0x00, 8, 0x0000_0009_0000_0007, BusAttributes.Cpu, strict);
        Assert.Equal((1, 0u, 7UL), Assert.Single(rec.Writes));
        Assert.Equal("write to read-only ID", Assert.Single(strict.Violations).Message);
    }

    // ----- every model block, through its real MMIO front, in strict mode -----

    public static TheoryData<string> Blocks => ["gicd", "gicr", "its", "its-translation", "smmuv3", "gicv2m", "gicv2-gicd", "gicv2-gicc"];
    /// <summary>The blocks that have read-only registers (the ITS translation frame holds only the write-only doorbell).</summary>
    public static TheoryData<string> BlocksWithReadOnlyRegisters => ["gicd", "gicr", "its", "smmuv3", "gicv2m", "gicv2-gicd", "gicv2-gicc"];

    static (IMmioHandler Handler, RegisterBlock Block, StrictMonitor Strict) Model(string name)
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 1UL << 24);
        var strict = new StrictMonitor { Enabled = true };
        var gic = new GicV3(bus, new GicV3Options { CpuCount = 2 }, strict: strict);
        return name switch
        {
            "gicd" => (gic, GicV3.Distributor, strict),
            "gicr" => (gic.RedistributorFrames, GicV3Redistributor.Block, strict),
            "its" => (new GicV3Its(gic), GicV3Its.Block, strict),
            "its-translation" => (new GicV3Its(gic).Engine.TranslationFrame, ItsTranslationFrame.Block, strict),
            "smmuv3" => (new Doorbell.Smmu.V3.SmmuV3(bus, strict: strict), SmmuV3Reg.Block, strict),
            "gicv2-gicd" => (new Doorbell.Gic.V2.GicV2(2, 64, strict), Doorbell.Gic.V2.GicV2.Distributor, strict),
            "gicv2-gicc" => (new Doorbell.Gic.V2.GicV2(2, 64, strict).CpuInterface(0), Doorbell.Gic.V2.GicV2.CpuInterfaceBlock, strict),
            _ => (new GicV2m(gic, 64, 64, strict), GicV2m.Block, strict),
        };
    }

    static IEnumerable<(RegisterDescriptor R, uint Index)> Instances(RegisterBlock block)
    {
        foreach (var r in block.Table.ToArray())
        {
            yield return (r, 0);
            if (r.Count > 1) yield return (r, (uint)r.Count - 1);
        }
    }

    [Theory]
    [MemberData(nameof(BlocksWithReadOnlyRegisters))]
    public void Every_read_only_register_of_a_model_ignores_writes_and_reports_them_by_name(string name)
    {
        var (h, block, strict) = Model(name);
        var checkedAny = false;
        foreach (var (r, i) in Instances(block))
        {
            if (r.Access != RegisterAccess.ReadOnly) continue;
            var offset = r.InstanceOffset(i);
            h.Read(offset, r.Width, out var before, BusAttributes.Cpu);
            strict.Clear();
            h.Write(offset, r.Width, ~before, BusAttributes.Cpu);
            h.Read(offset, r.Width, out var after, BusAttributes.Cpu);
            Assert.Equal(before, after);
            var v = Assert.Single(strict.Violations);
            Assert.Equal(block.Source, v.Source);
            Assert.Equal(block.ReadOnlyRule, v.Rule);
            Assert.Equal($"write to read-only {r.InstanceName(i)}", v.Message);
            checkedAny = true;
        }
        Assert.True(checkedAny);
    }

    [Theory]
    [MemberData(nameof(Blocks))]
    public void Every_write_only_and_reserved_register_of_a_model_reads_as_zero(string name)
    {
        var (h, block, strict) = Model(name);
        foreach (var (r, i) in Instances(block))
        {
            var offset = r.InstanceOffset(i);
            if (r.Access == RegisterAccess.RazWi)
            {
                h.Write(offset, r.Width, ulong.MaxValue, BusAttributes.Cpu);
                h.Read(offset, r.Width, out var v, BusAttributes.Cpu);
                Assert.Equal(0UL, v);
            }
            else if (r.Access == RegisterAccess.WriteOnly)
            {
                h.Read(offset, r.Width, out var v, BusAttributes.Cpu);
                Assert.Equal(0UL, v);
            }
        }
        Assert.Empty(strict.Violations);
    }

    [Theory]
    [MemberData(nameof(Blocks))]
    public void Every_32_bit_register_of_a_model_reads_a_32_bit_value_whole_and_by_halves_of_64_bit_ones(string name)
    {
        // The whole-register read path returns a handler's value as it is: a 32-bit register's must fit in 32 bits.
        var (h, block, _) = Model(name);
        foreach (var (r, i) in Instances(block))
        {
            if (r.Access is RegisterAccess.WriteOnly or RegisterAccess.RazWi) continue;
            var offset = r.InstanceOffset(i);
            h.Read(offset, r.Width, out var whole, BusAttributes.Cpu);
            if (r.Width == 4) Assert.True(whole <= uint.MaxValue, $"{r.InstanceName(i)} = 0x{whole:x}");
            if (r.Width == 8 && r.NarrowestAccess <= 4)
            {
                h.Read(offset, 4, out var lo, BusAttributes.Cpu);
                h.Read(offset + 4, 4, out var hi, BusAttributes.Cpu);
                Assert.Equal(whole, lo | hi << 32);
            }
        }
    }

    [Fact]
    public void Model_register_names_in_traces_and_reports_come_from_the_tables()
    {
        // Names for each id are the descriptors' (no second name table): the SMMU's report names the register it guards.
        var bus = new PhysicalAddressSpace();
        var strict = new StrictMonitor { Enabled = true };
        var smmu = new Doorbell.Smmu.V3.SmmuV3(bus, strict: strict);
        smmu.Write(SmmuV3Reg.CR0, 4, SmmuV3Field.Cr0SmmuEn, BusAttributes.Cpu);
        smmu.Write(SmmuV3Reg.STRTAB_BASE_CFG, 4, 1, BusAttributes.Cpu);
        Assert.StartsWith(SmmuV3Reg.Block.Find(SmmuV3Reg.STRTAB_BASE_CFG).Name + ":", Assert.Single(strict.Violations).Message, StringComparison.Ordinal);
        Assert.Equal("GICD_IROUTER40", GicV3.Distributor.NameOf(GicV3.GICD_IROUTER + 8 * 40 + 4));
        Assert.Equal("GICR_ISENABLER0", GicV3Redistributor.Block.NameOf(GicV3Redistributor.SgiFrame + GicV3Redistributor.GICR_ISENABLER0));
        Assert.Equal("GITS_BASER7", GicV3Its.Block.NameOf(GicV3Its.GITS_BASER + 7 * 8));
    }

    [Fact]
    public void Register_dispatch_allocates_nothing()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 1UL << 24);
        var gic = new GicV3(bus);
        var its = new GicV3Its(gic);
        var smmu = new Doorbell.Smmu.V3.SmmuV3(bus);
        var v2 = new Doorbell.Gic.V2.GicV2(2, 64);
        var v2m = new GicV2m(gic, 64, 64);
        AllocationAssert.None(() =>
        {
            for (var k = 0; k < 100; k++)
            {
                gic.Read(GicV3.GICD_TYPER, 4, out _, BusAttributes.Cpu);
                gic.Write(GicV3.GICD_ISENABLER + 4, 4, 1, BusAttributes.Cpu);
                gic.Write(GicV3.GICD_IPRIORITYR + 33, 1, 0xA0, BusAttributes.Cpu);
                gic.RedistributorFrames.Read(GicV3Redistributor.GICR_TYPER, 8, out _, BusAttributes.Cpu);
                its.Read(GicV3Its.GITS_CWRITER + 4, 4, out _, BusAttributes.Cpu);
                its.Write(GicV3Its.GITS_BASER + 8, 8, 0, BusAttributes.Cpu);
                smmu.Read(SmmuV3Reg.EVENTQ_PROD, 4, out _, BusAttributes.Cpu);
                smmu.Write(SmmuV3Reg.GERROR_IRQ_CFG0 + 4, 4, 0, BusAttributes.Cpu);
                v2.Read(Doorbell.Gic.V2.GicV2.GICD_ISENABLER, 4, out _, BusAttributes.OfCpu(1));
                v2.Write(Doorbell.Gic.V2.GicV2.GICD_ITARGETSR + 33, 1, 1, BusAttributes.Cpu);
                v2.CpuInterface(1).Write(Doorbell.Gic.V2.GicV2.GICC_BPR, 4, 2, BusAttributes.OfCpu(1));
                v2.CpuInterface(1).Read(Doorbell.Gic.V2.GicV2.GICC_RPR, 4, out _, BusAttributes.OfCpu(1));
                v2m.Write(GicV2m.MSI_SETSPI_NS, 4, 200, BusAttributes.FromDevice(8)); // dropped, permissive: no message built
            }
        });
    }
}
