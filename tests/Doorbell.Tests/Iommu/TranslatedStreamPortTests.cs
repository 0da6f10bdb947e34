using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Tests.Vmsa;
using Doorbell.Tracing;
using Doorbell.Vmsa;

namespace Doorbell.Tests.Iommu;

/// <summary>
/// The stream port every IOMMU front end derives from: a context its front end resolved to plain translation at the
/// current configuration generation is served by the Translator alone; everything else goes back to the front end.
/// </summary>
public class TranslatedStreamPortTests
{
    /// <summary>A front end that only counts what reaches it (the SMMUs' overrides do resolution and fault reporting).</summary>
    sealed class CountingPort(Translator tr, IMemoryView bus, TranslationContext ctx)
        : TranslatedStreamPort(tr, bus, ctx, 7, null, "test")
    {
        public int Resolved, Faulted, TranslateSlow, TranslateFaults;
        public int LastDone = -1;

        protected override BusStatus TransferResolved(ulong address, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, in BusAttributes attributes)
        {
            Resolved++;
            return BusStatus.DecodeError;
        }

        protected override BusStatus TransferFaulted(ulong address, int done, Span<byte> rd, ReadOnlySpan<byte> wr, bool write, AccessFlags access,
            in BusAttributes attributes, in TranslationFault fault)
        {
            Faulted++;
            LastDone = done;
            return BusStatus.SlaveError;
        }

        protected override bool TranslateResolved(ulong address, AccessFlags access, out ulong physicalAddress)
        {
            TranslateSlow++;
            physicalAddress = 0;
            return false;
        }

        protected override void TranslateFaulted(ulong address, AccessFlags access, in TranslationFault fault) => TranslateFaults++;
    }

    static (PhysicalAddressSpace Bus, Translator Tr, TranslationContext Ctx, StrictMonitor Strict) Setup()
    {
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 1UL << 30);
        var w = new TableWriter(bus, Granule.Size4K, 39, 1, 0x4000_0000);
        w.Leaf(0x1000, 3, 0x5000_0000, Descriptors.Af | Descriptors.Ap1);
        w.Leaf(0x2000, 3, 0x5000_1000, Descriptors.Af | Descriptors.Ap1);
        w.Leaf(0x3000, 3, 0x5000_2000, Descriptors.Af | Descriptors.Ap1 | Descriptors.Ap2); // read-only
        var strict = new StrictMonitor();
        var tr = new Translator(bus, new Iotlb(), strict);
        var ctx = new TranslationContext();
        ctx.SetConfig(new TranslationConfig(new Stage1Config { Low = new TranslationRegion(Granule.Size4K, 39, w.Root), Asid = 3 }, null), 0);
        return (bus, tr, ctx, strict);
    }

    [Fact]
    public void A_current_context_is_translated_without_the_front_end_and_anything_else_goes_back_to_it()
    {
        var (bus, tr, ctx, strict) = Setup();
        var port = new CountingPort(tr, bus, ctx);
        var attrs = BusAttributes.FromDevice(7);

        // Never resolved: the front end.
        Assert.Equal(BusStatus.DecodeError, port.Write(0x1000, [1, 2, 3, 4], attrs));
        Assert.Equal(1, port.Resolved);

        // Resolved at the current generation: translated and written by the Translator, the front end not called.
        ctx.FastGeneration = tr.ConfigurationGeneration;
        Assert.Equal(BusStatus.Ok, port.Write(0x1ffe, [9, 8, 7, 6], attrs)); // spans two pages: two translation blocks
        Assert.Equal(1, port.Resolved);
        Span<byte> got = stackalloc byte[4];
        Assert.Equal(BusStatus.Ok, port.Read(0x1ffe, got, attrs));
        Assert.Equal([9, 8, 7, 6], got.ToArray());
        Assert.Equal(BusStatus.Ok, bus.Read(0x5000_0ffe, got[..2], attrs));
        Assert.Equal(BusStatus.Ok, bus.Read(0x5000_1000, got[2..], attrs));
        Assert.Equal([9, 8, 7, 6], got.ToArray()); // each block's bytes at its own output address
        Assert.True(port.TryTranslate(0x1010, AccessFlags.Read, out var pa));
        Assert.Equal(0x5000_0010UL, pa);
        Assert.Equal((1, 0, 0), (port.Resolved, port.Faulted, port.TranslateSlow));

        // A fault on the fast path: the front end reports it, told where the transfer stopped.
        Assert.Equal(BusStatus.SlaveError, port.Write(0x2ffc, [1, 1, 1, 1, 1, 1, 1, 1], attrs)); // 0x3000 is read-only
        Assert.Equal((1, 4), (port.Faulted, port.LastDone));
        Assert.False(port.TryTranslate(0x3000, AccessFlags.Write, out _));
        Assert.Equal(1, port.TranslateFaults);

        // What the fast path leaves to the front end: an empty transfer, a wrap past 2^64, an instruction-fetch write.
        Assert.Equal(BusStatus.DecodeError, port.Write(0x1000, [], attrs));
        Assert.Equal(BusStatus.DecodeError, port.Read(ulong.MaxValue - 1, got, attrs));
        Assert.Equal(BusStatus.DecodeError, port.Write(0x1000, [1], new BusAttributes(7, true, false, Instruction: true)));
        Assert.Equal(4, port.Resolved);

        // Strict mode: every transaction goes back to the front end (it re-resolves and checks).
        strict.Enabled = true;
        Assert.Equal(BusStatus.DecodeError, port.Read(0x1000, got, attrs));
        Assert.False(port.TryTranslate(0x1000, AccessFlags.Read, out _));
        Assert.Equal((5, 1), (port.Resolved, port.TranslateSlow));
        strict.Enabled = false;

        // A configuration change (the front end bumps the generation): the kept resolution no longer counts.
        tr.ConfigurationGeneration++;
        Assert.Equal(BusStatus.DecodeError, port.Read(0x1000, got, attrs));
        Assert.False(port.TryTranslate(0x1000, AccessFlags.Read, out _));
        Assert.Equal((6, 2), (port.Resolved, port.TranslateSlow));
    }

    [Fact]
    public void Both_smmu_front_ends_issue_through_the_shared_port()
    {
        var v3 = new Doorbell.Smmu.V3.SmmuV3(new PhysicalAddressSpace());
        var v2 = new Doorbell.Smmu.V2.SmmuV2(new PhysicalAddressSpace());
        Assert.IsAssignableFrom<TranslatedStreamPort>(v3.CreateStreamPort(1));
        Assert.IsAssignableFrom<TranslatedStreamPort>(v2.CreateStreamPort(1));
    }
}
