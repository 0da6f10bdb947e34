using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Vmsa;

namespace Doorbell.Tests.Iommu;

/// <summary>Random map/unmap sequences on IoPageTable against a naive interval model, checked by IovaToPhys and by the hardware walker (fixed seeds).</summary>
public class IoPageTableModelTests
{
    sealed record M(ulong Iova, ulong Pa, ulong Size, IoProt Prot);

    [Theory]
    [InlineData(1, IoPageTableFormat.Stage1, Granule.Size4K)]
    [InlineData(2, IoPageTableFormat.Stage1, Granule.Size16K)]
    [InlineData(3, IoPageTableFormat.Stage1, Granule.Size64K)]
    [InlineData(4, IoPageTableFormat.Stage2, Granule.Size4K)]
    [InlineData(5, IoPageTableFormat.Stage2, Granule.Size16K)]
    [InlineData(6, IoPageTableFormat.Stage2, Granule.Size64K)]
    public void Random_map_unmap_agrees_with_a_naive_model(int seed, IoPageTableFormat fmt, Granule g)
    {
        var rng = new Random(seed);
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0xC000_0000), 1UL << 28);
        var alloc = new PhysPageAllocator(0xC000_0000, 1UL << 28);
        Assert.Equal(0, IoPageTable.Create(bus, alloc, fmt, g, 40, 44, out var t));
        var pt = t!;
        var cfg = fmt == IoPageTableFormat.Stage1 ? new TranslationConfig(pt.CreateStage1Config(), null) : new TranslationConfig(null, pt.CreateStage2Config());
        var walker = new PageTableWalker(bus);
        var model = new List<M>();
        var gran = g.Bytes();
        var block = 1UL << g.LevelShift(2);
        IoProt[] prots = [IoProt.Read, IoProt.Write, IoProt.ReadWrite, IoProt.ReadWrite | IoProt.NoExec];
        for (var step = 0; step < 400; step++)
        {
            if (rng.Next(3) != 0 || model.Count == 0)
            {
                // Sizes from one granule to a few blocks, often block-aligned so blocks get used.
                var size = rng.Next(2) == 0 ? gran * (ulong)rng.Next(1, 40) : block * (ulong)rng.Next(1, 3) + gran * (ulong)rng.Next(0, 3);
                var iova = (ulong)rng.NextInt64(1L << 36) & ~(rng.Next(2) == 0 ? block - 1 : gran - 1);
                var pa = (ulong)rng.NextInt64(1L << 42) & ~(rng.Next(2) == 0 ? block - 1 : gran - 1);
                var prot = prots[rng.Next(prots.Length)];
                var overlaps = model.Any(m => iova < m.Iova + m.Size && m.Iova < iova + size);
                var rc = pt.Map(iova, pa, size, prot);
                Assert.Equal(overlaps ? -Errno.EEXIST : 0, rc);
                if (rc == 0) model.Add(new M(iova, pa, size, prot));
            }
            else
            {
                // Unmap a whole earlier mapping: always exactly its size (maps and unmaps split the same way).
                var m = model[rng.Next(model.Count)];
                Assert.Equal(m.Size, pt.Unmap(m.Iova, m.Size));
                model.Remove(m);
            }
            for (var k = 0; k < 6; k++)
            {
                ulong a;
                M? hit;
                if (model.Count > 0 && rng.Next(3) != 0)
                {
                    hit = model[rng.Next(model.Count)];
                    a = hit.Iova + (ulong)rng.NextInt64((long)hit.Size);
                }
                else
                {
                    a = (ulong)rng.NextInt64(1L << 36);
                    hit = model.FirstOrDefault(m => a >= m.Iova && a - m.Iova < m.Size);
                }
                var expected = hit is null ? 0 : hit.Pa + (a - hit.Iova);
                Assert.Equal(expected, pt.IovaToPhys(a));
                var access = (hit?.Prot & IoProt.Write) != 0 ? AccessFlags.Write : AccessFlags.Read;
                var r = walker.Walk(cfg, a, access);
                if (hit is null) Assert.Equal(FaultKind.Translation, r.Fault.Kind);
                else
                {
                    Assert.False(r.IsFault, r.Fault.ToString());
                    Assert.Equal(expected, r.Entry.Translate(a));
                    // Stage 1 cannot express write-only (AP grants read with write): only stage 2 denies the read.
                    if ((hit.Prot & IoProt.Read) == 0 && fmt == IoPageTableFormat.Stage2) Assert.Equal(FaultKind.Permission, walker.Walk(cfg, a, AccessFlags.Read | AccessFlags.Privileged).Fault.Kind);
                }
            }
        }
    }
}
