using Doorbell.Gic.Its;
using Doorbell.Gic.V2m;
using Doorbell.Gic.V3;
using Doorbell.Memory;

namespace Doorbell.Tests.Gic;

public class GicFuzzTests
{
    /// <summary>Random register writes and reads of every GIC block (fixed seed): nothing throws, every access completes.</summary>
    [Fact]
    public void Random_mmio_to_every_gic_block_never_throws()
    {
        var rng = new Random(20261124);
        var h = new ItsHarness(2, new ItsOptions { StallOnCommandError = rng.Next(2) == 0 });
        // A GICv2 (its GICD moved off the GICv3's) and a GICv2m frame on the same bus.
        var v2 = new Doorbell.Gic.V2.GicV2(2);
        v2.Map(h.Bus, new PhysAddr(0x0C00_0000), QemuVirtGicV2.GiccBase);
        new GicV2m(v2, 80, 64).Map(h.Bus, QemuVirtGicV2.V2mBase);
        (ulong Base, ulong Size)[] blocks =
        [
            (QemuVirtGicV3.GicdBase.Value, 0x1_0000), (QemuVirtGicV3.GicrBase.Value, 0x4_0000), (QemuVirtGicV3.ItsBase.Value, 0x2_0000),
            (0x0C00_0000, 0x1_0000), (QemuVirtGicV2.GiccBase.Value, 0x1_0000), (QemuVirtGicV2.V2mBase.Value, 0x1000),
        ];
        int[] sizes = [1, 2, 4, 8];
        for (var i = 0; i < 60_000; i++)
        {
            var (b, size) = blocks[rng.Next(blocks.Length)];
            var s = sizes[rng.Next(4)];
            var off = (ulong)rng.NextInt64(0, (long)size) & ~(ulong)(s - 1);
            if (rng.Next(3) == 0) off &= 0x1FF; // favour the dense register area
            var value = rng.Next(4) switch
            {
                0 => (ulong)rng.NextInt64(),
                1 => ItsHarness.Ram + (ulong)rng.Next(0, 0x100_0000) | (1UL << 63),
                2 => QemuVirtGicV3.ItsBase.Value + (ulong)rng.Next(0, 0x2_0000), // tables pointing at MMIO
                _ => (ulong)rng.Next(0, 0x2000),
            };
            var attrs = rng.Next(2) == 0 ? BusAttributes.Cpu : BusAttributes.FromDevice((uint)rng.Next(0, 64));
            if (rng.Next(2) == 0) h.Bus.Write(new PhysAddr(b + off), s, value, attrs);
            else h.Bus.Read(new PhysAddr(b + off), s, out _, attrs);
            if (i % 64 == 0) { h.Cpu(rng.Next(2)).Iar1(); h.Cpu(rng.Next(2)).Eoir1((ulong)rng.Next(0, 9000)); }
        }
        // The ITS still accounts for every MSI: each one is either translated or dropped with a reason.
        var before = h.Its.Translations + h.Its.DropCount;
        for (var k = 0u; k < 3; k++) h.Msi(k, k);
        Assert.Equal(before + 3, h.Its.Translations + h.Its.DropCount);
    }

    [Fact]
    public void An_itt_placed_over_the_its_own_registers_cannot_recurse_into_the_command_queue()
    {
        var h = new ItsHarness(1);
        h.Mapc(0, 0);
        h.Cmd(c => ItsCommand.Mapd(c, 1, QemuVirtGicV3.ItsBase.Value, 8, true)); // ITT = the ITS frame itself
        h.Mapti(1, (uint)(GicV3Its.GITS_CWRITER / 8), 8192, 0);                  // its ITE lands on GITS_CWRITER
        // The ITE write moved CWRITER (to ITE bits [19:5] = 0x2000) mid-command; no recursion: the outer loop
        // carries on into the zeroed queue and stalls on its first empty slot (opcode 0x00, unsupported).
        Assert.True(h.Its.Stalled);
        Assert.Equal(ItsError.Unsupported(0), h.Its.CommandErrors[^1].Code);
        Assert.Equal(0x2000UL, h.ItsReg(GicV3Its.GITS_CWRITER));
    }
}
