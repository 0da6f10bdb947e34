using System.Buffers.Binary;
using System.Text.RegularExpressions;
using Doorbell.Devices;
using Doorbell.Server;
using Doorbell.Tests.Serve;

namespace Doorbell.Tests.Qtest;

/// <summary>
/// Issue 13: Debian's unmodified QEMU 7.2 re-creates Doorbell's devices (edu at host 00:02.0, the multi-queue DMA
/// device at host 00:01.0) inside its own virt guest through VFIO, and the test drives that guest over qtest:
/// ECAM enumeration, BARs through QEMU's mmap of the region and through pread/pwrite (x-no-mmap=on), DMA into
/// QEMU's guest RAM through Doorbell's SMMUv3, a fault on a guest address QEMU never mapped, MSI and MSI-X into
/// QEMU's emulated ITS, INTx into QEMU's GICv2, and FLR from the guest reaching Doorbell's device.
/// </summary>
public class RealQemuVfioTests
{
    const ulong EduBar = 0x1000_0000, MqBar = 0x1010_0000;
    const int Mq = RealQemuRig.GuestMqSlot, Edu = RealQemuRig.GuestEduSlot;
    /// <summary>ITS DeviceIDs: QEMU's virt ITS takes the requester ID (bus 0, slot, function 0).</summary>
    const uint MqDeviceId = Mq << 3, EduDeviceId = Edu << 3;
    const ulong GitsTranslater = 0x0809_0040;

    static RealQemuRig Start(string machine = "virt,gic-version=3", bool noMmap = false, string? serverTrace = null, params string[] extra) =>
        new(machine, noMmap, serverTrace, extra);

    /// <summary>BAR0 of both functions programmed (mq-dma's is 64-bit), memory decode and bus mastering on.</summary>
    static void BringUp(RealQemuRig q)
    {
        q.WriteL(RealQemuRig.Cfg(Edu, 0x10), (uint)EduBar);
        q.WriteL(RealQemuRig.Cfg(Mq, 0x10), (uint)MqBar | 4);
        q.WriteL(RealQemuRig.Cfg(Mq, 0x14), 0);
        q.WriteW(RealQemuRig.Cfg(Edu, 0x04), 0x6);
        q.WriteW(RealQemuRig.Cfg(Mq, 0x04), 0x6);
    }

    [QemuGccTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Guest_enumerates_doorbells_devices_through_qemus_ECAM_and_drives_their_registers(bool noMmap)
    {
        using var q = Start(noMmap: noMmap);
        // realize: QEMU mapped all of its guest RAM (512 MiB at GPA 0x4000_0000 = IOVA) and pinned every page of it
        Assert.Contains("MAP_DMA iova 0x40000000 size 0x20000000: mapped in", q.ServerLog);
        using (var stats = new RawClient(q.Socket))
        {
            Assert.Equal(0, stats.Hello());
            Assert.Matches($"client pid={q.Qemu.Pid} fds=\\d+ locked_pages=131072\n", stats.Stats());
        }
        // bus 0 as the guest sees it: QEMU's own host bridge, then the two functions re-created from VFIO
        Assert.Equal(0x0008_1b36u, q.ReadL(RealQemuRig.Cfg(0, 0)));
        Assert.Equal(0xdb01_1234u, q.ReadL(RealQemuRig.Cfg(Mq, 0)));     // Doorbell's vendor/device IDs
        Assert.Equal(0x11e8_1234u, q.ReadL(RealQemuRig.Cfg(Edu, 0)));
        Assert.Equal(0xFFFF_FFFFu, q.ReadL(RealQemuRig.Cfg(3, 0)));      // nothing else
        Assert.Equal(0x0880_0000u, q.ReadL(RealQemuRig.Cfg(Mq, 8)) & 0xFFFF_FF00);  // class code 08 80 00
        Assert.Equal(0x0001_0000u, q.ReadL(RealQemuRig.Cfg(Mq, 0x2C)) >> 16 << 16); // subsystem 1234:0001 (device part)
        Assert.Equal(0x10u, q.ReadW(RealQemuRig.Cfg(Mq, 6)) & 0x10);     // status: capability list

        // capability lists as VFIO (Doorbell's vfio-pci, then QEMU's) present them
        var (eduCaps, eduExt) = q.CapabilityLists(Edu);
        Assert.Equal([(0x40, 0x05)], eduCaps);                           // MSI only
        Assert.Empty(eduExt);                                            // conventional PCI: no extended space
        var (mqCaps, mqExt) = q.CapabilityLists(Mq);
        Assert.Equal([(0x40, 0x01), (0x48, 0x11), (0x54, 0x10)], mqCaps); // PM, MSI-X, PCIe
        Assert.Equal([(0x100, 0x0001)], mqExt);                           // AER
        Assert.Equal(3u, q.ReadW(RealQemuRig.Cfg(Mq, 0x4A)) & 0x7FF);     // MSI-X table size 4 (N-1)
        Assert.Equal(0x2000u, q.ReadL(RealQemuRig.Cfg(Mq, 0x4C)));       // table: BIR 0, offset 0x2000
        Assert.Equal(0x3000u, q.ReadL(RealQemuRig.Cfg(Mq, 0x50)));       // PBA: BIR 0, offset 0x3000
        // QEMU turns an endpoint on its root bus into a root-complex integrated endpoint (PCIe type 9)
        Assert.Equal(9u, (q.ReadW(RealQemuRig.Cfg(Mq, 0x56)) >> 4) & 0xF);
        Assert.NotEqual(0u, q.ReadL(RealQemuRig.Cfg(Mq, 0x58)) & (1u << 28)); // DevCap: FLR

        // BAR sizes
        Assert.Equal(1UL << 20, q.BarSize(Edu, 0));                      // edu: 1 MiB, 32-bit
        Assert.Equal(0u, q.ReadL(RealQemuRig.Cfg(Edu, 0x10)) & 0x6);
        Assert.Equal(0x4000UL, q.BarSize(Mq, 0));                        // mq-dma: 16 KiB, 64-bit
        Assert.Equal(4u, q.ReadL(RealQemuRig.Cfg(Mq, 0x10)) & 0x6);
        Assert.Equal(0xFFFF_FFFFu, q.ReadL(EduBar));                     // not programmed/decoded yet: nothing there

        BringUp(q);
        Assert.Equal(0x6u, q.ReadW(RealQemuRig.Cfg(Edu, 4)) & 0x7);
        var reqBefore = (q.Server.RequestCount(ServeOp.MmioRead), q.Server.RequestCount(ServeOp.Pread));

        // device registers through QEMU's BAR mapping
        Assert.Equal(0x0100_00EDu, q.ReadL(EduBar));                     // edu identification
        q.WriteL(EduBar + 4, 0x1234_5678);
        Assert.Equal(0xEDCB_A987u, q.ReadL(EduBar + 4));                 // liveness: the device inverts
        q.WriteL(EduBar + 8, 10);
        q.PollUntil(() => q.ReadL(EduBar + 0x20), v => (v & 1) == 0);
        Assert.Equal(3_628_800u, q.ReadL(EduBar + 8));                   // 10!
        Assert.Equal(MqRegs.IdValue, q.ReadL(MqBar));
        Assert.Equal(4u, q.ReadL(MqBar + MqRegs.NumQueues));
        q.WriteQ(MqBar + MqRegs.QueueBase + MqRegs.SqBase, 0x4160_0000);
        Assert.Equal(0x4160_0000UL, q.ReadQ(MqBar + MqRegs.QueueBase + MqRegs.SqBase));

        // which path QEMU took to reach them
        var mmioReads = q.Server.RequestCount(ServeOp.MmioRead) - reqBefore.Item1;
        var preads = q.Server.RequestCount(ServeOp.Pread) - reqBefore.Item2;
        if (noMmap) { Assert.Equal(0, mmioReads); Assert.True(preads >= 7, $"{preads} region preads"); }
        else Assert.True(mmioReads >= 7, $"{mmioReads} trapped BAR reads");
        AssertNoUnexplainedVfioWarnings(q.Qemu.Stderr);
    }

    [QemuGccFact]
    public void Device_DMA_lands_in_qemus_guest_RAM_through_doorbells_SMMU_and_an_unmapped_guest_address_faults()
    {
        using var q = Start();
        BringUp(q);
        using var stats = new RawClient(q.Socket);
        Assert.Equal(0, stats.Hello());

        // edu: RAM → device buffer → RAM, at guest physical addresses (IOVA = GPA in QEMU's type1 container)
        var pattern = new byte[16];
        for (var i = 0; i < pattern.Length; i++) pattern[i] = (byte)(0xA0 + i * 7);
        q.WriteMem(0x4000_1000, pattern);
        q.WriteQ(EduBar + 0x80, 0x4000_1000); q.WriteQ(EduBar + 0x88, 0x40000); q.WriteQ(EduBar + 0x90, 16); q.WriteQ(EduBar + 0x98, 1);
        Assert.Equal(0UL, q.PollUntil(() => q.ReadQ(EduBar + 0x98), v => (v & 1) == 0));
        q.WriteQ(EduBar + 0x80, 0x40000); q.WriteQ(EduBar + 0x88, 0x4000_2000); q.WriteQ(EduBar + 0x90, 16); q.WriteQ(EduBar + 0x98, 3);
        q.PollUntil(() => q.ReadQ(EduBar + 0x98), v => (v & 1) == 0);
        Assert.Equal(pattern, q.ReadMem(0x4000_2000, 16));

        // mq-dma: descriptors in guest RAM, the doorbell rung through the BAR
        const ulong sq = 0x4160_0000, cq = 0x4160_1000, src = 0x4161_0000, dst = 0x4162_0000, unmapped = 0x8000_0000;
        var data = new byte[4096];
        new Random(13).NextBytes(data);
        q.WriteMem(src, data);
        var canary = Enumerable.Repeat((byte)0x5A, 64).ToArray();
        q.WriteMem(dst + 4096, canary);
        var desc = new byte[64];
        Descriptor(desc.AsSpan(0, 32), src, dst, 4096, 0xC0FFEE01);
        Descriptor(desc.AsSpan(32, 32), src, unmapped, 256, 0xC0FFEE02);            // a guest address QEMU never mapped
        q.WriteMem(sq, desc);
        var written0 = StatValue(stats.Stats(), "dma_bytes_written");
        var events0 = q.Server.SmmuEventCount;
        const ulong q0 = MqBar + MqRegs.QueueBase;
        q.WriteL(MqBar + MqRegs.Ctrl, MqRegs.CtrlEnable);
        q.WriteQ(q0 + MqRegs.SqBase, sq);
        q.WriteQ(q0 + MqRegs.CqBase, cq);
        q.WriteL(q0 + MqRegs.Size, 4);
        q.WriteL(q0 + MqRegs.QCtrl, MqRegs.QCtrlEnable);
        q.WriteL(q0 + MqRegs.SqTail, 2);
        Assert.Equal(2u, q.ReadL(q0 + MqRegs.CqTail));
        Assert.Equal(data, q.ReadMem(dst, 4096));                                   // the bytes, in QEMU's memory
        Assert.Equal(canary, q.ReadMem(dst + 4096, 64));                            // and not one more
        var cpl = q.ReadMem(cq, 32);
        Assert.Equal(0xC0FFEE01UL, BinaryPrimitives.ReadUInt64LittleEndian(cpl));
        Assert.Equal(MqRegs.StatusOk, BinaryPrimitives.ReadUInt32LittleEndian(cpl.AsSpan(8)));
        Assert.Equal(4096u, BinaryPrimitives.ReadUInt32LittleEndian(cpl.AsSpan(12)));
        Assert.Equal(0xC0FFEE02UL, BinaryPrimitives.ReadUInt64LittleEndian(cpl.AsSpan(16)));
        Assert.Equal(MqRegs.StatusWriteFault, BinaryPrimitives.ReadUInt32LittleEndian(cpl.AsSpan(24)));
        Assert.Equal(1u, q.ReadL(q0 + MqRegs.Error));
        // the fault is an event record in Doorbell's SMMU, and nothing else was written anywhere
        Assert.Equal(events0 + 1, q.Server.SmmuEventCount);
        Assert.Matches(@"SMMU event: F_TRANSLATION SID 0x8 write input 0x80000000", q.ServerLog);
        Assert.Equal(written0 + 4096 + 2 * MqRegs.CompletionSize, StatValue(stats.Stats(), "dma_bytes_written"));
        Assert.Equal(pattern, q.ReadMem(0x4000_2000, 16));
        AssertNoUnexplainedVfioWarnings(q.Qemu.Stderr);
    }

    static void Descriptor(Span<byte> d, ulong src, ulong dst, uint len, ulong cookie)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(d, src);
        BinaryPrimitives.WriteUInt64LittleEndian(d[8..], dst);
        BinaryPrimitives.WriteUInt32LittleEndian(d[16..], len);
        BinaryPrimitives.WriteUInt32LittleEndian(d[20..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(d[24..], cookie);
    }

    static long StatValue(string stats, string key)
    {
        var m = Regex.Match(stats, $"(?m)^{key}=(\\d+)$");
        Assert.True(m.Success, $"{key} not in stats: {stats}");
        return long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
    }

    bool Pending(RealQemuRig q, uint lpi)
    {
        var (b, bit) = SmmuItsSequence.PendingBit(lpi);
        return ((q.ReadB(b) >> bit) & 1) != 0;
    }

    const ulong MsixQueue1 = MqBar + MqRegs.QueueBase + MqRegs.QueueStride;

    /// <summary>mq-dma's four MSI-X vectors → GITS_TRANSLATER with EventID = vector, MSI-X on, queue 1 holding one
    /// 64-byte copy descriptor with its completion interrupt enabled (rung by writing SQ_TAIL = 1).</summary>
    static void SetUpMsixQueue1(RealQemuRig q)
    {
        const ulong table = MqBar + MqRegs.MsixTableOffset;
        for (var v = 0u; v < 4; v++)
        {
            q.WriteL(table + 16 * v, (uint)GitsTranslater);
            q.WriteL(table + 16 * v + 4, 0);
            q.WriteL(table + 16 * v + 8, v);
            q.WriteL(table + 16 * v + 12, 0);                            // unmasked
        }
        q.WriteW(RealQemuRig.Cfg(Mq, 0x4A), 0x8003);                     // MSI-X enable
        q.WriteMem(0x4170_0000, new byte[64]);
        Span<byte> d = stackalloc byte[32];
        Descriptor(d, 0x4170_0000, 0x4170_0100, 64, 7);
        q.WriteMem(0x4171_0000, d);
        q.WriteL(MqBar + MqRegs.Ctrl, MqRegs.CtrlEnable);
        q.WriteQ(MsixQueue1 + MqRegs.SqBase, 0x4171_0000);
        q.WriteQ(MsixQueue1 + MqRegs.CqBase, 0x4172_0000);
        q.WriteL(MsixQueue1 + MqRegs.Size, 4);
        q.WriteL(MsixQueue1 + MqRegs.QCtrl, MqRegs.QCtrlEnable | MqRegs.QCtrlIrq);
    }

    static void SetUpIts(RealQemuRig q) => q.Run(SmmuItsSequence.GicItsSetup(
    [
        (EduDeviceId, 0x4150_0000, [(0, 8192)]),
        (MqDeviceId, 0x4151_0000, [(0, 8200), (1, 8201), (2, 8202), (3, 8203)]),
    ]));

    [QemuGccFact]
    public void Msi_and_msix_reach_qemus_ITS_as_guest_LPIs_through_eventfds()
    {
        using var q = Start(extra: ["-trace", "vfio_msi_interrupt", "-trace", "vfio_msix_vector_do_use", "-trace", "vfio_msi_enable"]);
        BringUp(q);
        SetUpIts(q);

        // edu's MSI, programmed in the guest's view of its capability (QEMU emulates it and calls SET_IRQS)
        q.WriteL(RealQemuRig.Cfg(Edu, 0x44), (uint)GitsTranslater);
        q.WriteL(RealQemuRig.Cfg(Edu, 0x48), 0);
        q.WriteW(RealQemuRig.Cfg(Edu, 0x4C), 0);                          // EventID 0
        q.WriteW(RealQemuRig.Cfg(Edu, 0x42), 1);                          // MSI enable
        Assert.False(Pending(q, 8192));
        q.WriteL(EduBar + 0x60, 1);                                       // edu raises its interrupt
        Assert.Equal(1UL, q.PollUntil(() => Pending(q, 8192) ? 1UL : 0, v => v == 1));
        Assert.Equal(1u, q.ReadL(EduBar + 0x24));
        q.WriteL(EduBar + 0x64, 1);

        // mq-dma's MSI-X: QEMU emulates the table in the guest's BAR; vector 1 → EventID 1
        SetUpMsixQueue1(q);
        Assert.False(Pending(q, 8201));
        q.WriteL(MsixQueue1 + MqRegs.SqTail, 1);
        Assert.Equal(1UL, q.PollUntil(() => Pending(q, 8201) ? 1UL : 0, v => v == 1));
        Assert.False(Pending(q, 8200));                                   // only queue 1's vector
        Assert.False(Pending(q, 8202));

        var log = q.QemuLogWith("vfio_msi_interrupt", 2);
        Assert.Contains("vfio_msi_enable", log);                          // edu's eventfd given to SET_IRQS
        Assert.Contains("vfio_msix_vector_do_use", log);                  // mq-dma's vectors
        Assert.True(Regex.Matches(log, "vfio_msi_interrupt").Count >= 2, log); // QEMU read the eventfds Doorbell signalled
        AssertNoUnexplainedVfioWarnings(log);
    }

    /// <summary>Doorbell's side of an MSI (the server's trace categories) and QEMU's side (its trace events).</summary>
    public const string ServerMsiTrace = "pci_msi,smmu_translate,its_translate,gicr,gic_icc,vfio_irq";
    public static readonly string[] QemuMsiTrace = ["-trace", "vfio_msi_interrupt", "-trace", "gicv3_its_translation_write", "-trace", "gicv3_cpuif_update"];

    /// <summary>One hop of a cross-process trace: host wall-clock time (µs), process, event and its text.</summary>
    public sealed record Hop(long Micros, string Process, string Event, string Text);

    /// <summary>Lines stamped `pid@seconds.micros:event …` (QEMU's log trace backend; `doorbell serve --trace` and
    /// libdoorbell-vfio's DOORBELL_TRACE use the same stamp), from both logs, in time order.</summary>
    public static List<Hop> MergeTraces(string serverLog, string qemuLog)
    {
        var hops = new List<Hop>();
        foreach (var (log, who) in new[] { (serverLog, "doorbell"), (qemuLog, "qemu") })
            foreach (Match m in Regex.Matches(log, @"(?m)^\d+@(\d+)\.(\d{6}):(\S+)(.*)$"))
                hops.Add(new(long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) * 1_000_000
                    + long.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture), who, m.Groups[3].Value, m.Groups[4].Value.Trim()));
        return [.. hops.OrderBy(h => h.Micros)];
    }

    /// <summary>The hops of the MSI raised by the last trapped SQ_TAIL store, in order: guest store (QEMU, trapped by
    /// libdoorbell-vfio) → device MSI write → SMMU → host ITS → host LPI pending → host handler → eventfd → QEMU reads it →
    /// QEMU's ITS translates → the guest LPI becomes the CPU interface's highest pending interrupt.</summary>
    public static List<Hop> MsiJourney(List<Hop> all, uint lpi)
    {
        var start = all.FindLastIndex(h => h.Event == "doorbell_vfio_mmio_write");
        Assert.True(start >= 0, "no trapped store in the trace");
        var want = new (string Event, Func<Hop, bool> Match)[]
        {
            ("doorbell_vfio_mmio_write", _ => true),
            ("pci_msi", _ => true),
            ("smmu_translate", _ => true),
            ("its_translate", _ => true),
            ("gicr", _ => true),
            ("vfio_irq", _ => true),
            ("vfio_msi_interrupt", _ => true),
            ("gicv3_its_translation_write", _ => true),
            ("gicv3_cpuif_update", h => h.Text.Contains($"irq {lpi} ", StringComparison.Ordinal)),
        };
        var journey = new List<Hop>();
        var i = start;
        foreach (var (ev, match) in want)
        {
            while (i < all.Count && !(all[i].Event == ev && match(all[i]))) i++;
            Assert.True(i < all.Count, $"hop {ev} missing after {string.Join(" → ", journey.Select(j => j.Event))}:\n{string.Join("\n", all.Skip(start).Select(h => $"{h.Micros} {h.Process} {h.Event} {h.Text}"))}");
            journey.Add(all[i]);
        }
        return journey;
    }

    [QemuGccFact]
    public void One_msix_is_traced_hop_by_hop_across_doorbell_and_qemu()
    {
        using var q = Start(serverTrace: ServerMsiTrace, extra: QemuMsiTrace);
        BringUp(q);
        SetUpIts(q);
        SetUpMsixQueue1(q);
        q.WriteL(MsixQueue1 + MqRegs.SqTail, 1);
        Assert.Equal(1UL, q.PollUntil(() => Pending(q, 8201) ? 1UL : 0, v => v == 1));
        q.QemuLogWith("gicv3_cpuif_update.*irq 8201 ");
        var journey = MsiJourney(MergeTraces(q.ServerLog, q.Qemu.Stderr), 8201);
        Assert.Equal(["qemu", "doorbell", "doorbell", "doorbell", "doorbell", "doorbell", "qemu", "qemu", "qemu"], journey.Select(h => h.Process));
        Assert.Contains("EventID 1 -> LPI", journey[3].Text);              // the host LPI Doorbell's ITS chose
        Assert.Contains("handled by vfio-msix[1](", journey[5].Text);      // mq-dma's vector 1: its eventfd is the handler
        Assert.Matches(@"data 0x1 size 4 requester_id 0x8$", journey[7].Text);  // QEMU's ITS: EventID 1 from 00:01.0
        foreach (var h in journey) _output.WriteLine($"{h.Micros - journey[0].Micros,8} us  {h.Process,-8} {h.Event,-28} {h.Text}");
    }

    readonly Xunit.Abstractions.ITestOutputHelper _output;

    public RealQemuVfioTests(Xunit.Abstractions.ITestOutputHelper output) => _output = output;

    [QemuGccFact]
    public void Intx_reaches_qemus_GICv2_as_a_level_SPI_and_is_unmasked_after_the_guest_acks()
    {
        using var q = Start("virt,gic-version=2", extra: ["-trace", "vfio_intx_interrupt", "-trace", "vfio_intx_eoi"]);
        BringUp(q);
        const ulong gicd = 0x0800_0000;
        // edu at slot 2, pin A: swizzled to INTC → SPI 5 → INTID 37 (bit 5 of GICD_ISPENDR1)
        Assert.Equal(1u, q.ReadB(RealQemuRig.Cfg(Edu, 0x3D)));
        q.WriteL(gicd, 1);                                                // GICD_CTLR
        q.WriteL(gicd + 0x104, 1u << 5);                                  // GICD_ISENABLER1
        Assert.Equal(0u, q.ReadL(gicd + 0x204) & (1u << 5));
        q.WriteL(EduBar + 0x60, 1);
        Assert.Equal(1u << 5, q.PollUntil(() => q.ReadL(gicd + 0x204) & (1u << 5), v => v != 0));
        Assert.Equal(0x8u, q.ReadW(RealQemuRig.Cfg(Edu, 6)) & 0x8);      // STATUS.INTERRUPT
        q.WriteL(EduBar + 0x64, 1);                                       // ack in the device: QEMU's EOI path unmasks
        Assert.Equal(0u, q.PollUntil(() => q.ReadL(gicd + 0x204) & (1u << 5), v => v == 0));
        q.WriteL(EduBar + 0x60, 2);                                       // a second interrupt gets through again
        Assert.Equal(1u << 5, q.PollUntil(() => q.ReadL(gicd + 0x204) & (1u << 5), v => v != 0));
        q.WriteL(EduBar + 0x64, 2);
        var log = q.QemuLogWith("vfio_intx_interrupt", 2);
        Assert.True(Regex.Matches(log, "vfio_intx_interrupt").Count >= 2, log);
        AssertNoUnexplainedVfioWarnings(log);
    }

    [QemuGccFact]
    public void Flr_from_the_guest_through_qemus_config_space_resets_doorbells_device()
    {
        using var q = Start(extra: ["-trace", "vfio_pci_write_config"]);
        BringUp(q);
        const ulong q0 = MqBar + MqRegs.QueueBase;
        q.WriteL(MqBar + MqRegs.Ctrl, MqRegs.CtrlEnable);
        q.WriteQ(q0 + MqRegs.SqBase, 0x4160_0000);
        q.WriteL(q0 + MqRegs.Size, 8);
        Assert.Equal(1u, q.ReadL(MqBar + MqRegs.Status));
        var dev = q.Server.Kernel.Machine.Devices.OfType<MultiQueueDmaDevice>().Single();
        var resetsBefore = dev.ResetCount;
        // PCIe DevCtl (cap 0x54 + 8): Initiate Function Level Reset
        var devctl = q.ReadW(RealQemuRig.Cfg(Mq, 0x5C));
        q.WriteW(RealQemuRig.Cfg(Mq, 0x5C), devctl | 0x8000);
        Assert.Equal(resetsBefore + 1, dev.ResetCount);         // Doorbell's device saw the reset
        Assert.Equal(0u, q.ReadW(RealQemuRig.Cfg(Mq, 0x5C)) & 0x8000);   // the bit reads as zero
        // the device's registers are at their reset values, seen through the guest's BAR again
        q.WriteW(RealQemuRig.Cfg(Mq, 0x04), 0x6);
        Assert.Equal(MqRegs.IdValue, q.ReadL(MqBar));
        Assert.Equal(0u, q.ReadL(MqBar + MqRegs.Status));
        Assert.Equal(0UL, q.ReadQ(q0 + MqRegs.SqBase));
        Assert.Equal(0u, q.ReadL(q0 + MqRegs.Size));
        AssertNoUnexplainedVfioWarnings(q.Qemu.Stderr);
    }

    /// <summary>The README's one-line scenario: scripts/real-qemu.py runs the whole sequence under doorbell-exec
    /// (the real `doorbell serve` process) and passes every step.</summary>
    [QemuGccPythonFact]
    public void The_readme_scenario_script_passes_every_step()
    {
        var r = ServeRig.Run(QemuGccPythonFactAttribute.Python!, [Path.Combine(ServeRig.RepoRoot, "scripts", "real-qemu.py")], null, 240_000);
        Assert.True(r.Exit == 0, r.Stdout + r.Stderr);
        Assert.DoesNotContain("FAIL", r.Stdout);
        Assert.Contains("one MSI followed across both processes: 9 of 9 hops", r.Stdout);
        Assert.Contains("Doorbell's SMMU recorded the fault: SMMU event: F_TRANSLATION", r.Stdout);
        Assert.EndsWith("PASS\n", r.Stdout);
    }

    /// <summary>VFIO warnings QEMU prints that real hardware would print too, with the reason (docs/deviations.md,
    /// "Real QEMU"). Anything else QEMU says about VFIO fails the test.</summary>
    static readonly string[] ExplainedVfioWarnings =
    [
        // edu is conventional PCI without FLR, PM reset or a bus to reset: a real such function has no reset either
        "vfio: Cannot reset device 0000:00:02.0, no available reset mechanism.",
    ];

    internal static void AssertNoUnexplainedVfioWarnings(string qemuStderr)
    {
        foreach (var line in qemuStderr.Split('\n'))
        {
            if (!line.Contains("qemu-system-aarch64:", StringComparison.Ordinal)) continue;
            if (ExplainedVfioWarnings.Any(w => line.Contains(w, StringComparison.Ordinal))) continue;
            if (line.Contains("icount sleep disabled and no active timers", StringComparison.Ordinal)) continue; // the qtest set-up, not VFIO
            Assert.Fail($"QEMU printed an unexplained warning: {line}");
        }
    }
}

/// <summary>A [Theory] that needs both gcc (the preload library) and Debian's qemu-system-aarch64; skipped visibly otherwise.</summary>
public sealed class QemuGccTheoryAttribute : TheoryAttribute
{
    public QemuGccTheoryAttribute()
    {
        if (ServeRig.NativeBuildError is { } why) Skip = why;
        else if (QemuPeer.Binary == null) Skip = "qemu-system-aarch64 not found (scripts/setup-test-deps.sh installs Debian's qemu-system-arm): real-QEMU VFIO test skipped";
    }
}

/// <summary>A [Fact] that also needs python3 (the README's scenario script); skipped visibly otherwise.</summary>
public sealed class QemuGccPythonFactAttribute : FactAttribute
{
    public static string? Python { get; } =
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Where(d => d.Length > 0).Select(d => Path.Combine(d, "python3")).FirstOrDefault(File.Exists);

    public QemuGccPythonFactAttribute()
    {
        if (ServeRig.NativeBuildError is { } why) Skip = why;
        else if (QemuPeer.Binary == null) Skip = "qemu-system-aarch64 not found (scripts/setup-test-deps.sh installs Debian's qemu-system-arm): real-QEMU scenario skipped";
        else if (Python == null) Skip = "python3 not found: the README's scripts/real-qemu.py scenario cannot run";
    }
}
