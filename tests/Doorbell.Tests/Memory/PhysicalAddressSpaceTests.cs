using Doorbell.Memory;

namespace Doorbell.Tests.Memory;

public class PhysicalAddressSpaceTests
{
    sealed class RecordingDevice : IMmioHandler
    {
        public readonly List<(bool Write, ulong Offset, int Size, ulong Value)> Log = [];
        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
        {
            value = 0x1122_3344_5566_7788UL & (size == 8 ? ulong.MaxValue : (1UL << (8 * size)) - 1);
            Log.Add((false, offset, size, value));
            return BusStatus.Ok;
        }
        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
        {
            Log.Add((true, offset, size, value));
            return BusStatus.Ok;
        }
    }

    sealed class Tagged(ulong tag) : IMmioHandler
    {
        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes) { value = tag + offset; return BusStatus.Ok; }
        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes) => BusStatus.Ok;
    }

    [Fact]
    public void Region_cache_never_answers_with_a_neighbour_in_the_same_granule_or_aliased_slot_or_after_a_new_mapping()
    {
        var bus = new PhysicalAddressSpace();
        // Two 4 KiB regions in one 64 KiB granule, a third 4 MiB away (the same direct-mapped cache slot), and a hole.
        bus.MapMmio(new PhysAddr(0x0900_0000), 0x1000, new Tagged(0x100000), MmioAccessRules.Registers32And64, "a");
        bus.MapMmio(new PhysAddr(0x0900_2000), 0x1000, new Tagged(0x200000), MmioAccessRules.Registers32And64, "b");
        bus.MapMmio(new PhysAddr(0x0940_0000), 0x1000, new Tagged(0x300000), MmioAccessRules.Registers32And64, "c");
        for (var round = 0; round < 3; round++)
        {
            Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(0x0900_0008), 4, out var a, BusAttributes.Cpu));
            Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(0x0900_2008), 4, out var b, BusAttributes.Cpu));
            Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(0x0940_0008), 4, out var c, BusAttributes.Cpu));
            Assert.Equal(BusStatus.DecodeError, bus.Read(new PhysAddr(0x0900_1008), 4, out _, BusAttributes.Cpu));
            Assert.Equal((0x100008UL, 0x200008UL, 0x300008UL), (a, b, c));
        }
        // A region mapped into the hole after the cache saw its neighbours is found.
        bus.MapMmio(new PhysAddr(0x0900_1000), 0x1000, new Tagged(0x400000), MmioAccessRules.Registers32And64, "d");
        Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(0x0900_1008), 4, out var d, BusAttributes.Cpu));
        Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(0x0900_2008), 4, out var b2, BusAttributes.Cpu));
        Assert.Equal((0x400008UL, 0x200008UL), (d, b2));
    }

    [Fact]
    public void Sparse_ram_spanning_48_bits_allocates_only_touched_pages()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0), 1UL << 48);
        Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(0x7FFF_0000_0000), 8, out var untouched, BusAttributes.Cpu));
        Assert.Equal(0UL, untouched);
        Assert.Equal(0, bus.Store.AllocatedPages);
        for (var i = 0UL; i < 4; i++)
            bus.Write(new PhysAddr(i << 40), 8, i + 1, BusAttributes.Cpu);
        Assert.Equal(4, bus.Store.AllocatedPages);
        for (var i = 0UL; i < 4; i++)
        {
            bus.Read(new PhysAddr(i << 40), 8, out var v, BusAttributes.Cpu);
            Assert.Equal(i + 1, v);
        }
    }

    [Fact]
    public void Bulk_copy_crosses_page_boundaries_little_endian()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 0x10_0000);
        var data = Enumerable.Range(0, 10000).Select(i => (byte)(i * 7)).ToArray();
        var start = 0x4000_0FFDUL; // 3 bytes before a page end
        Assert.Equal(BusStatus.Ok, bus.Write(start, data, BusAttributes.Cpu));
        var back = new byte[data.Length];
        Assert.Equal(BusStatus.Ok, bus.Read(start, back, BusAttributes.Cpu));
        Assert.Equal(data, back);
        // an 8-byte value straddling the page boundary reads little-endian
        bus.Read(new PhysAddr(start), 8, out var v, BusAttributes.Cpu);
        Assert.Equal(BitConverter.ToUInt64(data, 0), v);
        Assert.Equal(BitConverter.ToUInt64(data, 0), bus.Store.ReadU64(start));
    }

    [Fact]
    public void Access_to_nothing_is_a_decode_error_value_and_transfers_nothing()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x1000), 0x1000);
        Assert.Equal(BusStatus.DecodeError, bus.Read(new PhysAddr(0x3000), 4, out var v, BusAttributes.Cpu));
        Assert.Equal(0UL, v);
        Assert.Equal(BusStatus.DecodeError, bus.Write(new PhysAddr(0x3000), 4, 1, BusAttributes.Cpu));
        // a bulk write that runs off the end of RAM fails before writing anything
        var buf = new byte[16];
        Array.Fill(buf, (byte)0xAA);
        Assert.Equal(BusStatus.DecodeError, bus.Write(0x1FF8, buf, BusAttributes.Cpu));
        Assert.Equal(0UL, bus.Store.ReadU64(0x1FF8));
        // an access that straddles the end of RAM is a decode error too
        Assert.Equal(BusStatus.DecodeError, bus.Read(new PhysAddr(0x1FFC), 8, out _, BusAttributes.Cpu));
        Assert.Equal(BusStatus.DecodeError, bus.Read(new PhysAddr(ulong.MaxValue - 3), 8, out _, BusAttributes.Cpu));
    }

    [Fact]
    public void Overlapping_registration_is_rejected()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 0x1000_0000);
        var dev = new RecordingDevice();
        bus.MapMmio(new PhysAddr(0x0900_0000), 0x1000, dev, MmioAccessRules.AnySizeAligned, "uart");
        Assert.Throws<ArgumentException>(() => bus.MapMmio(new PhysAddr(0x0900_0FFF), 0x10, dev, MmioAccessRules.AnySizeAligned, "x"));
        Assert.Throws<ArgumentException>(() => bus.MapMmio(new PhysAddr(0x3FFF_F000), 0x2000, dev, MmioAccessRules.AnySizeAligned, "y"));
        Assert.Throws<ArgumentException>(() => bus.AddRam(new PhysAddr(0x08FF_F000), 0x2000, "z"));
        Assert.Throws<ArgumentException>(() => bus.MapMmio(new PhysAddr(0x100), 0, dev, MmioAccessRules.AnySizeAligned, "empty"));
        bus.MapMmio(new PhysAddr(0x0900_1000), 0x1000, dev, MmioAccessRules.AnySizeAligned, "adjacent");
    }

    [Fact]
    public void Mmio_dispatch_finds_the_right_region_among_many_and_passes_offsets()
    {
        var bus = new PhysicalAddressSpace();
        var devices = new RecordingDevice[64];
        // register out of order to exercise the sorted insert
        foreach (var i in Enumerable.Range(0, 64).OrderBy(i => (i * 37) % 64))
        {
            devices[i] = new RecordingDevice();
            bus.MapMmio(new PhysAddr(0x1000_0000 + (ulong)i * 0x10000), 0x1000, devices[i], MmioAccessRules.AnySizeAligned, $"d{i}");
        }
        for (var i = 0; i < 64; i++)
            Assert.Equal(BusStatus.Ok, bus.Write(new PhysAddr(0x1000_0000 + (ulong)i * 0x10000 + 0x10), 4, (ulong)i, BusAttributes.Cpu));
        for (var i = 0; i < 64; i++)
            Assert.Equal((true, 0x10UL, 4, (ulong)i), Assert.Single(devices[i].Log));
        // the hole between two regions decodes to nothing
        Assert.Equal(BusStatus.DecodeError, bus.Read(new PhysAddr(0x1000_1000), 4, out _, BusAttributes.Cpu));
        Assert.Equal(BusStatus.DecodeError, bus.Read(new PhysAddr(0x0FFF_FFFC), 4, out _, BusAttributes.Cpu));
    }

    [Fact]
    public void Mmio_size_and_alignment_rules_are_each_regions_own()
    {
        var bus = new PhysicalAddressSpace();
        var strictDev = new RecordingDevice();
        var razwi = new RecordingDevice();
        bus.MapMmio(new PhysAddr(0x1000), 0x1000, strictDev, new MmioAccessRules(AccessSizes.Word, true, MmioViolation.SlaveError), "strict");
        bus.MapMmio(new PhysAddr(0x2000), 0x1000, razwi, MmioAccessRules.Registers32And64, "razwi");
        Assert.Equal(BusStatus.SlaveError, bus.Read(new PhysAddr(0x1000), 8, out _, BusAttributes.Cpu));
        Assert.Equal(BusStatus.SlaveError, bus.Read(new PhysAddr(0x1002), 4, out _, BusAttributes.Cpu));
        Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(0x1004), 4, out _, BusAttributes.Cpu));
        Assert.Equal(BusStatus.Ok, bus.Read(new PhysAddr(0x2001), 1, out var v, BusAttributes.Cpu));
        Assert.Equal(0UL, v);
        Assert.Equal(BusStatus.Ok, bus.Write(new PhysAddr(0x2004), 4, 5, BusAttributes.Cpu));
        Assert.Equal(BusStatus.Ok, bus.Write(new PhysAddr(0x2006), 2, 5, BusAttributes.Cpu)); // WI
        Assert.Single(strictDev.Log);
        Assert.Equal((true, 4UL, 4, 5UL), Assert.Single(razwi.Log));
        Assert.Equal(BusStatus.SlaveError, bus.Read(new PhysAddr(0x1000), 3, out _, BusAttributes.Cpu));
    }

    [Fact]
    public void Bulk_access_to_mmio_is_split_into_aligned_accesses()
    {
        var bus = new PhysicalAddressSpace();
        var dev = new RecordingDevice();
        bus.MapMmio(new PhysAddr(0x1000), 0x1000, dev, MmioAccessRules.AnySizeAligned, "d");
        Assert.Equal(BusStatus.Ok, bus.Write(0x1003, new byte[13], BusAttributes.Cpu));
        Assert.Equal([(0x3UL, 1), (0x4UL, 4), (0x8UL, 8)], dev.Log.Select(l => (l.Offset, l.Size)));
    }

    [Fact]
    public void Device_attributes_reach_the_handler()
    {
        var bus = new PhysicalAddressSpace();
        var seen = new List<BusAttributes>();
        bus.MapMmio(new PhysAddr(0x1000), 0x1000, new AttrCapture(seen), MmioAccessRules.AnySizeAligned, "d");
        bus.Write(new PhysAddr(0x1040), 4, 7, BusAttributes.FromDevice(0x8));
        bus.Write(new PhysAddr(0x1040), 4, 7, BusAttributes.Cpu);
        Assert.Equal([BusAttributes.FromDevice(8), BusAttributes.Cpu], seen);
    }

    sealed class AttrCapture(List<BusAttributes> seen) : IMmioHandler
    {
        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes) { value = 0; seen.Add(attributes); return BusStatus.Ok; }
        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes) { seen.Add(attributes); return BusStatus.Ok; }
    }

    [Fact]
    public void Typed_addresses_use_checked_arithmetic()
    {
        var pa = new PhysAddr(ulong.MaxValue - 1);
        Assert.Throws<OverflowException>(() => pa + 2UL);
        Assert.False(pa.TryAdd(2, out _));
        Assert.True(pa.TryAdd(1, out var top));
        Assert.Equal(ulong.MaxValue, top.Value);
        Assert.Throws<OverflowException>(() => new PhysAddr(1) - new PhysAddr(2)); // Iova/Ipa were unused and removed: the one typed address keeps the checks
        Assert.Throws<OverflowException>(() => new PhysAddr(ulong.MaxValue) + 1UL);
        Assert.Equal(new PhysAddr(0x1000), new PhysAddr(0x1FFF).AlignDown(0x1000));
    }

    [Fact]
    public void Words_in_one_page_are_read_with_one_lookup_and_page_crossings_are_refused()
    {
        var mem = new SparseMemory();
        for (var i = 0UL; i < 4; i++) mem.WriteU64(0x1FE0 + i * 8, 0x1111_0000UL + i);
        var words = new ulong[4];
        Assert.True(mem.TryReadWordsInPage(0x1FE0, words));
        Assert.Equal([0x1111_0000UL, 0x1111_0001UL, 0x1111_0002UL, 0x1111_0003UL], words);
        Assert.False(mem.TryReadWordsInPage(0x1FF0, words)); // would cross into the next page
        Assert.Equal(0x1111_0000UL, words[0]); // untouched on refusal
        Assert.True(mem.TryReadWordsInPage(0x9000, words)); // never written: zeros, no allocation
        Assert.All(words, w => Assert.Equal(0UL, w));
        Assert.Equal(1, mem.AllocatedPages);
    }

    [Fact]
    public void Best_effort_bulk_access_completes_what_decodes_and_reports_the_first_failure()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x1000), 0x1000);
        var dev = new RecordingDevice();
        bus.MapMmio(new PhysAddr(0x3000), 0x1000, dev, MmioAccessRules.AnySizeAligned, "d");
        // 0x1FF8..0x2007 straddles the end of RAM into a hole: strict access transfers nothing, best effort the RAM part
        var src = Enumerable.Range(1, 16).Select(i => (byte)i).ToArray();
        Assert.Equal(BusStatus.DecodeError, bus.Write(0x1FF8, src, BusAttributes.Cpu));
        Assert.Equal(0UL, bus.Store.ReadU64(0x1FF8));
        Assert.Equal(BusStatus.DecodeError, bus.WriteBestEffort(0x1FF8, src, BusAttributes.Cpu));
        Assert.Equal(BitConverter.ToUInt64(src, 0), bus.Store.ReadU64(0x1FF8));
        var back = new byte[16];
        Array.Fill(back, (byte)0xEE);
        Assert.Equal(BusStatus.DecodeError, bus.ReadBestEffort(0x1FF8, back, BusAttributes.Cpu));
        Assert.Equal(src[..8], back[..8]);
        Assert.All(back[8..], b => Assert.Equal(0, b)); // the hole reads as zero
        // a hole followed by MMIO: the MMIO part is written exactly once
        Assert.Equal(BusStatus.DecodeError, bus.WriteBestEffort(0x2FF8, src, BusAttributes.Cpu));
        Assert.Equal((true, 0UL, 8, BitConverter.ToUInt64(src, 8)), Assert.Single(dev.Log));
        // fully decoded ranges succeed
        Assert.Equal(BusStatus.Ok, bus.ReadBestEffort(0x3000, back, BusAttributes.Cpu));
    }
}
