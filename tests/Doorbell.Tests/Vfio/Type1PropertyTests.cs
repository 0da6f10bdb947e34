using CsCheck;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;

namespace Doorbell.Tests.Vfio;

/// <summary>Random MAP/UNMAP sequences against a reference model of type1 v2, and random ioctls that must never throw.</summary>
public class Type1PropertyTests
{
    const ulong P = 4096;

    [Fact]
    public void Random_map_unmap_sequences_match_the_reference_and_keep_domain_and_accounting_consistent()
    {
        var op = Gen.Select(Gen.Bool, Gen.Int[0, 31], Gen.Int[1, 6]);
        Gen.Select(op.Array[1, 40], Gen.Bool).Sample(t =>
        {
            var (ops, v2) = t;
            var w = new VfioWorld();
            var (iommu, _) = w.AddGroup(1);
            var (c, _, r) = w.Setup(1, v2 ? VfioExtension.Type1v2Iommu : VfioExtension.Type1Iommu);
            Assert.Equal(0, r);
            var va = w.Proc.Memory.MapAnonymous(64 * P);
            var model = new List<(ulong Start, ulong Pages)>(); // in page units
            foreach (var (isMap, at, n) in ops)
            {
                ulong s = (ulong)at, e = (ulong)(at + n - 1);
                if (isMap)
                {
                    var overlap = model.Any(m => s <= m.Start + m.Pages - 1 && m.Start <= e);
                    var got = w.Map(c, va + s * P, 0x10_0000 + s * P, (ulong)n * P);
                    Assert.Equal(overlap ? -Errno.EEXIST : 0, got);
                    if (!overlap) model.Add((s, (ulong)n));
                }
                else
                {
                    int expect = 0;
                    ulong expectSize = 0;
                    var hit = model.Where(m => s <= m.Start + m.Pages - 1 && m.Start <= e).OrderBy(m => m.Start).ToList();
                    if (v2 && hit.Any(m => m.Start < s || m.Start + m.Pages - 1 > e)) expect = -Errno.EINVAL;
                    else
                    {
                        foreach (var m in hit)
                        {
                            if (!v2 && s > m.Start) break;
                            expectSize += m.Pages * P;
                            model.Remove(m);
                        }
                    }
                    var got = w.Unmap(c, 0x10_0000 + s * P, (ulong)n * P, out var size);
                    Assert.Equal(expect, got);
                    if (got == 0) Assert.Equal(expectSize, size);
                }
                var pages = model.Sum(m => (long)m.Pages);
                Assert.Equal(pages, ((FakeDomain)iommu.Attached!).Pages.Count);
                Assert.Equal((ulong)pages, w.Proc.LockedPages);
            }
        }, iter: 300);
    }

    [Fact]
    public void Random_ioctls_on_every_file_never_throw()
    {
        var t = new PciTestDevice();
        var files = new[] { t.Container, t.Group, t.Fd };
        Gen.Select(Gen.Int[0, 2], Gen.Int[0, 20], Gen.Byte.Array[0, 64], Gen.UInt).Sample(x =>
        {
            var (f, nr, buf, argsz) = x;
            if (nr == 5 && f == 1) return; // UNSET_CONTAINER would tear the fixture down
            if (buf.Length >= 4) BitConverter.TryWriteBytes(buf, argsz % 128);
            var r = t.W.Proc.Ioctl(files[f], VfioIoctl.Io((uint)nr), buf);
            Assert.True(r <= 64);
            var rb = new byte[buf.Length];
            t.W.Proc.Pread(t.Fd, rb, ((ulong)(argsz % 10) << 40) + (argsz >> 20));
            t.W.Proc.Pwrite(t.Fd, buf, ((ulong)(argsz % 10) << 40) + (argsz >> 20));
        }, iter: 3000, seed: "0N0XIzNsQ0O2", threads: 1); // one shared fixture: the machine has one owner thread (docs/design.md, threading rule)
    }

    [Fact]
    public void Huge_map_requests_are_refused_without_allocating()
    {
        var w = new VfioWorld();
        w.AddGroup(1);
        var (c, _, _) = w.Setup(1);
        var va = w.Proc.Memory.MapAnonymous(1UL << 40);
        Assert.Equal(-Errno.ENOMEM, w.Map(c, va, 1UL << 40, 1UL << 40));
        w.Proc.CapIpcLock = true;
        Assert.Equal(-Errno.ENOMEM, w.Map(c, va, 1UL << 40, 1UL << 40));
        Assert.Equal(0UL, w.Proc.LockedPages);
    }
}
