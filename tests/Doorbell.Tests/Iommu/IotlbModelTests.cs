using Doorbell.Iommu;
using Doorbell.Vmsa;

namespace Doorbell.Tests.Iommu;

/// <summary>
/// The IOTLB against a naive list model: random inserts, lookups and every invalidation kind (fixed seeds). With a
/// capacity larger than what is inserted nothing is evicted, so every lookup must agree exactly with the model.
/// </summary>
public class IotlbModelTests
{
    sealed record E(ushort Vmid, ushort Asid, bool Global, bool S1, bool S2, ulong In, int Size, ulong Out, ulong Ipa, int S2Size, int Level);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void Random_operations_agree_with_a_naive_model(int seed)
    {
        var rng = new Random(seed);
        var tlb = new Iotlb(sets: 1024, ways: 8);
        var model = new List<E>();
        int[] sizes = [12, 16, 21, 30];
        var lookups = 0;
        var hints = new int[3 * 4 * 16]; // one lookup hint per (VMID, ASID, page index mod 16), as a TranslationContext keeps
        var hintedHits = 0;
        for (var step = 0; step < 4000; step++)
        {
            var op = rng.Next(100);
            var vmid = (ushort)rng.Next(1, 3);
            var asid = (ushort)rng.Next(1, 4);
            ulong addr = (ulong)rng.NextInt64(1L << 32);
            if (op < 45)
            {
                var size = sizes[rng.Next(sizes.Length)];
                var kind = rng.Next(3); // 0 S1 only, 1 S2 only, 2 nested
                var inBase = addr & ~((1UL << size) - 1);
                if (model.Any(x => x.Vmid == vmid && inBase < x.In + (1UL << x.Size) && x.In < inBase + (1UL << size))) continue;
                var s2Size = kind == 0 ? 0 : Math.Max(size, sizes[rng.Next(sizes.Length)]);
                var ipa = kind == 1 ? inBase : (ulong)rng.NextInt64(1L << 32) & ~((1UL << size) - 1);
                var e = new E(vmid, asid, kind == 1 || rng.Next(4) == 0, kind != 1, kind != 0, inBase, size,
                    (ulong)rng.NextInt64(1L << 40) & ~((1UL << size) - 1), ipa, kind == 1 ? size : s2Size, rng.Next(1, 4));
                model.Add(e);
                tlb.Insert(ToEntry(e));
            }
            else if (op < 85)
            {
                lookups++;
                if (model.Count > 0 && rng.Next(2) == 0)
                {
                    // Half the lookups aim inside a cached block (so hints are set, reused and made stale).
                    var m = model[rng.Next(model.Count)];
                    (vmid, asid) = (m.Vmid, m.Global ? asid : m.Asid);
                    addr = m.In + ((ulong)rng.NextInt64(long.MaxValue) & ((1UL << m.Size) - 1));
                }
                var expected = model.FirstOrDefault(x => x.Vmid == vmid && (x.Global || x.Asid == asid) && addr >= x.In && addr - x.In < (1UL << x.Size));
                // The hinted lookup first (a stale hint must cost a probe, never give a wrong answer), then the plain one.
                ref var hinted = ref tlb.Find(ref hints[(vmid * 4 + asid) * 16 + (int)((addr >> 12) & 15)], vmid, asid, addr);
                Assert.Equal(expected is not null, !System.Runtime.CompilerServices.Unsafe.IsNullRef(ref hinted));
                if (expected is not null)
                {
                    Assert.Equal(expected.Out | (addr & ((1UL << expected.Size) - 1)), hinted.Translate(addr));
                    hintedHits++;
                }
                var hit = tlb.TryLookup(vmid, asid, addr, out var got);
                Assert.Equal(expected is not null, hit);
                if (expected is not null) Assert.Equal(expected.Out | (addr & ((1UL << expected.Size) - 1)), got.Translate(addr));
            }
            else
            {
                var which = rng.Next(9);
                var range = new TlbiRange(rng.Next(1, 4), rng.Next(32), rng.Next(12), rng.Next(4));
                var rStart = addr & ~(range.Granule.Bytes() - 1);
                var rEnd = rStart + range.Length; // small enough not to wrap here
                bool InRange(ulong b, int s) => b < rEnd && rStart < b + (1UL << s);
                bool TtlOk(E x, int level) => range.Ttl == 0 || GranuleOf(x) != range.Granule || level == range.Ttl;
                switch (which)
                {
                    case 0: tlb.InvalidateAll(); model.Clear(); break;
                    case 1: tlb.InvalidateByVmid(vmid); model.RemoveAll(x => x.Vmid == vmid); break;
                    case 2: tlb.InvalidateStage1ByVmid(vmid); model.RemoveAll(x => x.Vmid == vmid && x.S1); break;
                    case 3: tlb.InvalidateByAsid(vmid, asid); model.RemoveAll(x => x.Vmid == vmid && x.S1 && !x.Global && x.Asid == asid); break;
                    case 4:
                        tlb.InvalidateByVa(vmid, asid, addr, rng.Next(2) == 0);
                        model.RemoveAll(x => x.Vmid == vmid && x.S1 && (x.Global || x.Asid == asid) && addr >= x.In && addr - x.In < (1UL << x.Size));
                        break;
                    case 5:
                        tlb.InvalidateByVaAllAsids(vmid, addr, true);
                        model.RemoveAll(x => x.Vmid == vmid && x.S1 && addr >= x.In && addr - x.In < (1UL << x.Size));
                        break;
                    case 6:
                        tlb.InvalidateByIpa(vmid, addr, true);
                        model.RemoveAll(x => x.Vmid == vmid && x.S2 && (addr >> x.S2Size) == (x.Ipa >> x.S2Size));
                        break;
                    case 7:
                        tlb.InvalidateByVaRange(vmid, asid, addr, range, true);
                        model.RemoveAll(x => x.Vmid == vmid && x.S1 && (x.Global || x.Asid == asid) && InRange(x.In, x.Size) && TtlOk(x, x.Level));
                        break;
                    case 8:
                        tlb.InvalidateByIpaRange(vmid, addr, range, true);
                        model.RemoveAll(x => x.Vmid == vmid && x.S2 && InRange(x.Ipa & ~((1UL << x.S2Size) - 1), x.S2Size) && TtlOk(x, x.Level));
                        break;
                }
                Assert.True(model.Count == tlb.Count, $"step {step}: invalidation {which} left {tlb.Count} entries, model {model.Count}");
            }
        }
        Assert.Equal(0, tlb.Evictions);
        Assert.True(lookups > 1000);
        Assert.True(hintedHits > 300, $"only {hintedHits} hinted hits");
    }

    static Granule GranuleOf(E x) => Granule.Size4K;

    static TlbEntry ToEntry(E e) => new()
    {
        InputBase = e.In,
        OutputBase = e.Out,
        SizeLog2 = (byte)e.Size,
        Level = (sbyte)e.Level,
        Stage2Level = (sbyte)e.Level,
        Granule = Granule.Size4K,
        Stage1Permissions = PagePermissions.All,
        Stage2Permissions = PagePermissions.All,
        Asid = e.Asid,
        Vmid = e.Vmid,
        Global = e.Global,
        HasStage1 = e.S1,
        HasStage2 = e.S2,
        IpaBase = e.Ipa,
        Stage2SizeLog2 = (byte)e.S2Size,
    };
}
