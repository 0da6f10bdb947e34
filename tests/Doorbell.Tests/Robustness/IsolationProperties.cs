using System.Buffers.Binary;
using CsCheck;
using Doorbell.Devices;
using Doorbell.Tests.EndToEnd;
using Doorbell.Tests.Gic;

namespace Doorbell.Tests.Robustness;

/// <summary>
/// The two isolation promises as properties over random topologies, checked on the whole stack and shrunk to a minimal
/// counterexample by CsCheck when one fails (issue 20 oracles).
/// </summary>
public class IsolationProperties
{
    const ulong Page = 4096, Rings = 0x100_0000; // IOVA of every device's rings (always mapped)

    /// <summary>
    /// A DMA lands iff mapped: 1–3 multi-queue devices, each alone in its group and container, each container mapping a
    /// random subset of 16 IOVA pages onto its own buffer; every device DMAs between random pages. A copy completes iff
    /// both its source and its destination are mapped in that device's container (else a read or write fault), the bytes
    /// land exactly there, and no other container's buffer changes.
    /// </summary>
    [Fact]
    public void A_dma_lands_iff_its_pages_are_mapped_in_the_devices_own_container()
    {
        var topology = Gen.Select(Gen.Int[1, 3], Gen.UShort.Array[3]);                    // devices, mapped-page masks
        var dma = Gen.Select(Gen.Int[0, 2], Gen.Int[0, 15], Gen.Int[0, 15], Gen.Int[1, 512]); // device, src, dst, length
        Gen.Select(topology, dma.Array[1, 12]).Sample(t =>
        {
            var ((devices, masks), dmas) = t;
            using var rig = new E2ERig(devices: devices);
            var dev = new int[devices];
            var va = new ulong[devices];
            var rings = new ulong[devices];
            for (var d = 0; d < devices; d++)
            {
                var (c, g, r) = rig.OpenGroup(rig.Fn(d).Group.Id);
                Assert.Equal(0, r);
                dev[d] = rig.Device(g, $"0000:00:{d + 1:x2}.0");
                va[d] = rig.Proc.Memory.MapAnonymous(16 * Page);
                var ring = rig.Proc.Memory.MapAnonymous(2 * Page);
                Assert.Equal(0, rig.Map(c, ring, Rings, 2 * Page));
                for (var p = 0; p < 16; p++)
                    if ((masks[d] >> p & 1) != 0) Assert.Equal(0, rig.Map(c, va[d] + (ulong)p * Page, (ulong)p * Page, Page));
                // every byte of the buffer says whose it is and where: (device, page) in the first two bytes of each 16
                for (var p = 0; p < 16; p++)
                {
                    var fill = new byte[Page];
                    for (var i = 0; i < fill.Length; i += 16) { fill[i] = (byte)(d + 1); fill[i + 1] = (byte)p; }
                    rig.Proc.Memory.Write(va[d] + (ulong)p * Page, fill);
                }
                rig.EnableMaster(dev[d]);
                rig.SetupQueue(dev[d], 0, Rings);
                rings[d] = ring;
            }
            var slot = new uint[devices];
            foreach (var (dRaw, src, dst, len) in dmas)
            {
                var d = dRaw % devices;
                var before = Snapshot(rig, va, devices);
                rig.Submit(dev[d], 0, rings[d], slot[d] % 8, (ulong)src * Page, (ulong)dst * Page + 64, (uint)len, 1);
                rig.Kernel.ServiceInterrupts();
                var status = rig.CompletionStatus(rings[d] + Page, slot[d] % 8);
                slot[d]++;
                bool srcOk = (masks[d] >> src & 1) != 0, dstOk = (masks[d] >> dst & 1) != 0;
                var expect = !srcOk ? MqRegs.StatusReadFault : !dstOk ? MqRegs.StatusWriteFault : MqRegs.StatusOk;
                Assert.Equal(expect, status);
                var after = Snapshot(rig, va, devices);
                for (var o = 0; o < devices; o++)
                {
                    if (o != d || expect != MqRegs.StatusOk) { Assert.Equal(before[o], after[o]); continue; }
                    var landed = after[o].AsSpan((int)((ulong)dst * Page + 64), len);
                    Assert.True(landed.SequenceEqual(before[o].AsSpan((int)((ulong)src * Page), len)), "the copied bytes are the source's");
                }
                if (expect == MqRegs.StatusOk) Array.Copy(after[d], before[d], after[d].Length);
            }
        }, iter: 40);
    }

    static byte[][] Snapshot(E2ERig rig, ulong[] va, int devices)
    {
        var s = new byte[devices][];
        for (var d = 0; d < devices; d++)
        {
            s[d] = new byte[16 * Page];
            rig.Proc.Memory.Read(va[d], s[d]);
        }
        return s;
    }

    /// <summary>
    /// An MSI raises an interrupt iff its DeviceID owns the event: random ITS mappings of (DeviceID, EventID) → LPI for up
    /// to 6 devices, then random MSIs from any DeviceID with any EventID. An MSI makes exactly the LPI its own mapping
    /// names pending and nothing else; an unmapped pair (another device's event, an unmapped device) raises nothing.
    /// </summary>
    [Fact]
    public void An_msi_raises_an_interrupt_iff_its_device_id_owns_the_event()
    {
        var mapping = Gen.Select(Gen.UInt[0, 5], Gen.UInt[0, 7]);
        var msi = Gen.Select(Gen.UInt[0, 7], Gen.UInt[0, 9]);
        Gen.Select(mapping.Array[0, 16], msi.Array[1, 24]).Sample(t =>
        {
            var (maps, msis) = t;
            var h = new ItsHarness(1);
            h.Mapc(0, 0);
            var owned = new Dictionary<(uint Dev, uint Ev), uint>();
            var mapped = new HashSet<uint>();
            var next = 8192u;
            foreach (var (dev, ev) in maps)
            {
                if (owned.ContainsKey((dev, ev))) continue;
                if (mapped.Add(dev)) h.Mapd(dev, 5);
                h.SetLpiConfig(next, 0xA0, true);
                h.Mapti(dev, ev, next, 0);
                owned[(dev, ev)] = next++;
            }
            var pending = new HashSet<uint>();
            foreach (var (dev, ev) in msis)
            {
                h.Msi(dev, ev);
                if (owned.TryGetValue((dev, ev), out var lpi)) pending.Add(lpi);
                for (var l = 8192u; l < next; l++)
                    Assert.True(pending.Contains(l) == h.Gic.Redistributors[0].IsLpiPending(l),
                        $"LPI {l}: pending {h.Gic.Redistributors[0].IsLpiPending(l)} after MSI dev {dev} ev {ev}");
            }
        }, iter: 200);
    }
}
