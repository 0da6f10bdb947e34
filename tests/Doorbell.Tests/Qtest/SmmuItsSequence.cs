namespace Doorbell.Tests.Qtest;

/// <summary>One qtest command, with the answer Doorbell must give when the sequence is meant to prove something.</summary>
public readonly record struct QStep(string Command, string? Expect = null)
{
    public static implicit operator QStep(string c) => new(c);
}

/// <summary>
/// A qtest sequence a harness would run on `-machine virt,gic-version=3,iommu=smmuv3 -device edu`: PCI
/// bring-up, SMMUv3 stage 1 (stream table, CD, 4 KiB page tables written with qtest memory writes),
/// GICv3 redistributor LPIs and ITS tables/commands, edu DMA through the SMMU, an F_TRANSLATION fault, an MSI
/// through an SMMU-mapped ITS doorbell (LPI pending bit in the pending table), and the same MSI after the
/// doorbell is unmapped (no LPI; a fault record instead). Layouts: IHI 0070 (STE §5.2, CD §5.4, commands §4,
/// event records §7.3), IHI 0069 (ITS commands §5.3, LPI tables §5.1), VMSAv8-64 stage 1 descriptors.
/// </summary>
public static class SmmuItsSequence
{
    const ulong Smmu = 0x0905_0000, Its = 0x0808_0000, Gicd = 0x0800_0000, Gicr = 0x080A_0000;
    const ulong Strtab = 0x4100_0000, Cmdq = 0x4101_0000, Evtq = 0x4102_0000, Cd = 0x4103_0000;
    const ulong L0 = 0x4104_0000, L1 = 0x4104_1000, L2 = 0x4104_2000, L3Dma = 0x4104_3000, L3Msi = 0x4104_4000;
    const ulong PropBase = 0x4110_0000, PendBase = 0x4120_0000, DevTable = 0x4130_0000, CollTable = 0x4131_0000,
        ItsCmdq = 0x4140_0000, Itt = 0x4150_0000, DmaPage = 0x4200_0000;
    const ulong IovaDma = 0x1000_0000, IovaMsi = 0x0800_0000, IovaUnmapped = 0x2000_0000;
    const uint Sid = 8, Asid = 1;
    const ulong Edu = 0x40_1000_8000, Bar = 0x1000_0000;

    static string Q(ulong a, ulong v) => $"writeq 0x{a:x} 0x{v:x}";
    static string L(ulong a, ulong v) => $"writel 0x{a:x} 0x{v:x}";

    /// <summary>Stage-1 4 KiB page descriptor: AF, inner shareable, AP[2:1] = 01 (read/write), valid page.</summary>
    static ulong Page(ulong pa) => pa | (1UL << 10) | (3UL << 8) | (1UL << 6) | 3;
    static ulong Table(ulong pa) => pa | 3;

    public static IEnumerable<QStep> Steps()
    {
        // --- PCI: edu BAR0 at 0x1000_0000, memory + bus master
        yield return L(Edu + 0x10, Bar);
        yield return new("writew 0x4010008004 0x6", "OK");
        yield return new("readl 0x10000000", "OK 0x00000000010000ed");

        // --- SMMUv3: tables in memory
        // CD (IHI 0070 §5.4): T0SZ 16, TG0 4K, IR0/OR0 WBWA, SH0 inner, EPD1, V, IPS 44-bit, AA64, R, A, ASID 1
        var cd0 = 16UL | (1UL << 8) | (1UL << 10) | (3UL << 12) | (1UL << 30) | (1UL << 31) | (4UL << 32) | (1UL << 41) | (1UL << 45) | (1UL << 46) | ((ulong)Asid << 48);
        yield return Q(Cd, cd0);
        yield return Q(Cd + 8, L0);
        yield return Q(Cd + 24, 0x44UL | (0xFFUL << 8) | (0x04UL << 16)); // MAIR
        // STE (§5.2): V, Config = S1 translate (0b101), S1ContextPtr; word 1 zero (S1DSS/S1CIR... defaults)
        yield return Q(Strtab + Sid * 64, 1UL | (5UL << 1) | Cd);
        // page tables: IOVA 0x1000_0000 → DmaPage; IOVA 0x0800_0000 → the GITS_TRANSLATER page
        yield return Q(L0, Table(L1));
        yield return Q(L1, Table(L2));
        yield return Q(L2 + (IovaDma >> 21 & 0x1FF) * 8, Table(L3Dma));
        yield return Q(L2 + (IovaMsi >> 21 & 0x1FF) * 8, Table(L3Msi));
        yield return Q(L3Dma, Page(DmaPage));
        yield return Q(L3Msi, Page(0x0809_0000));
        // registers: stream table (linear, 16 STEs), queues (16 entries), CR2.RECINVSID, then enable
        yield return Q(Smmu + 0x80, Strtab);
        yield return L(Smmu + 0x88, 4);
        yield return Q(Smmu + 0x90, Cmdq | 4);
        yield return L(Smmu + 0x98, 0);
        yield return L(Smmu + 0x9C, 0);
        yield return Q(Smmu + 0xA0, Evtq | 4);
        yield return L(Smmu + 0x100A8, 0);
        yield return L(Smmu + 0x100AC, 0);
        yield return L(Smmu + 0x2C, 2);
        yield return L(Smmu + 0x20, 0xC);                        // CMDQEN | EVENTQEN
        yield return new("readl 0x9050024", "OK 0x000000000000000c");
        yield return L(Smmu + 0x20, 0xD);                        // + SMMUEN
        yield return new("readl 0x9050024", "OK 0x000000000000000d");
        yield return new("readl 0x9050060", "OK 0x0000000000000000"); // GERROR
        // CFGI_STE(8) + CMD_SYNC
        yield return Q(Cmdq, 0x03UL | ((ulong)Sid << 32));
        yield return Q(Cmdq + 8, 1);
        yield return Q(Cmdq + 16, 0x46);
        yield return Q(Cmdq + 24, 0);
        yield return L(Smmu + 0x98, 2);
        yield return new("readl 0x905009c", "OK 0x0000000000000002");

        // --- edu DMA through the SMMU: RAM(IOVA) → edu → RAM(IOVA + 0x100)
        yield return "write 0x42000000 8 0x1122334455667788";
        yield return Q(Bar + 0x80, IovaDma);
        yield return Q(Bar + 0x88, 0x40000);
        yield return Q(Bar + 0x90, 8);
        yield return Q(Bar + 0x98, 1);
        yield return new("poll 1 readq 0x10000098", "OK 0x0000000000000000");
        yield return Q(Bar + 0x80, 0x40000);
        yield return Q(Bar + 0x88, IovaDma + 0x100);
        yield return Q(Bar + 0x98, 3);
        yield return new("poll 1 readq 0x10000098", "OK 0x0000000000000002");
        yield return new("read 0x42000100 8", "OK 0x1122334455667788");
        yield return new("readl 0x90600a8", "OK 0x0000000000000000"); // no event yet

        // --- F_TRANSLATION: edu reads from an unmapped IOVA
        // (4 bytes: QEMU splits a faulting DMA into 4-byte accesses and records one event per access)
        yield return Q(Bar + 0x80, IovaUnmapped + 0x40);
        yield return Q(Bar + 0x88, 0x40000);
        yield return Q(Bar + 0x90, 4);
        yield return Q(Bar + 0x98, 1);
        yield return new("poll 1 readq 0x10000098", "OK 0x0000000000000000");
        yield return new("readl 0x90600a8", "OK 0x0000000000000001");
        yield return new($"readl 0x{Evtq:x}", "OK 0x0000000000000010");      // event type F_TRANSLATION
        yield return new($"readl 0x{Evtq + 4:x}", "OK 0x0000000000000008");  // StreamID
        yield return $"readl 0x{Evtq + 8:x}";
        yield return $"readl 0x{Evtq + 12:x}";
        yield return new($"readq 0x{Evtq + 16:x}", $"OK 0x{IovaUnmapped + 0x40:x16}"); // InputAddr
        yield return L(Smmu + 0x100AC, 1);

        foreach (var step in GicItsSetup([(Sid, Itt, [(0, 8192), (1, 8193)])])) yield return step;
        yield return new("readq 0x8080090", "OK 0x00000000000000a0");

        // --- MSI through the SMMU-mapped doorbell: IOVA 0x0800_0040 = GITS_TRANSLATER, EventID 0
        yield return L(Edu + 0x44, (uint)IovaMsi + 0x40);
        yield return L(Edu + 0x48, 0);
        yield return "writew 0x401000804c 0x0";
        yield return "writew 0x4010008042 0x1";
        yield return new("read 0x41200400 1", "OK 0x00");
        yield return L(Bar + 0x60, 1);
        yield return new("read 0x41200400 1", "OK 0x01");            // LPI 8192 pending
        yield return new("readl 0x90600a8", "OK 0x0000000000000001"); // no new event
        yield return L(Bar + 0x64, 1);

        // --- unmap the doorbell page, invalidate, and send EventID 1: translation fault, no LPI 8193
        yield return Q(L3Msi, 0);
        yield return Q(Cmdq + 32, 0x10);                             // CMD_TLBI_NH_ALL
        yield return Q(Cmdq + 40, 0);
        yield return Q(Cmdq + 48, 0x46);                             // CMD_SYNC
        yield return Q(Cmdq + 56, 0);
        yield return L(Smmu + 0x98, 4);
        yield return new("readl 0x905009c", "OK 0x0000000000000004");
        yield return "writew 0x401000804c 0x1";
        yield return L(Bar + 0x60, 2);
        yield return new("read 0x41200400 1", "OK 0x01");            // 8193 not pending
        yield return new("readl 0x90600a8", "OK 0x0000000000000002");
        yield return new($"readl 0x{Evtq + 32:x}", "OK 0x0000000000000010");
        yield return new($"readl 0x{Evtq + 36:x}", "OK 0x0000000000000008");
        yield return $"readl 0x{Evtq + 40:x}";
        yield return $"readl 0x{Evtq + 44:x}";
        yield return new($"readq 0x{Evtq + 48:x}", $"OK 0x{IovaMsi + 0x40:x16}");
        yield return new("readl 0x10000024", "OK 0x0000000000000002");
    }

    /// <summary>Pending-table byte and bit of an LPI (IHI 0069 §5.1.2: one bit per INTID from PENDBASER).</summary>
    public static (ulong Byte, int Bit) PendingBit(uint lpi) => (PendBase + lpi / 8, (int)(lpi % 8));

    /// <summary>
    /// GICv3 on qemu-virt as a harness sets it up for LPIs: distributor (ARE, Group 1), redistributor 0
    /// (awake, PROPBASER with 16 ID bits, PENDBASER, LPIs 8192.. enabled at priority 0xA0), the ITS device and
    /// collection tables and command queue, then MAPD per device (5 event bits, its ITT), MAPC(0 → PE 0), MAPTI
    /// per (event, LPI) and SYNC, polling GITS_CREADR until it reaches GITS_CWRITER.
    /// </summary>
    public static IEnumerable<QStep> GicItsSetup(IReadOnlyList<(uint DeviceId, ulong Itt, (uint Event, uint Lpi)[] Maps)> devices)
    {
        yield return L(Gicd, 0x12);                                   // ARE | EnableGrp1 (DS=1)
        yield return L(Gicr + 0x14, 0);                               // GICR_WAKER
        yield return Q(Gicr + 0x70, PropBase | 15);                   // PROPBASER: 16 ID bits
        yield return Q(Gicr + 0x78, PendBase);                        // PENDBASER
        var maxLpi = devices.SelectMany(d => d.Maps).Max(m => m.Lpi);
        yield return $"memset 0x{PropBase:x} {maxLpi - 8192 + 1} 0xa1";   // LPIs 8192..: priority 0xA0, enabled
        yield return L(Gicr, 1);                                      // EnableLPIs
        yield return Q(Its + 0x100, (1UL << 63) | DevTable);
        yield return Q(Its + 0x108, (1UL << 63) | CollTable);
        yield return Q(Its + 0x80, (1UL << 63) | ItsCmdq);
        yield return Q(Its + 0x88, 0);
        yield return L(Its, 1);
        var cmds = new List<ulong[]>();
        foreach (var d in devices) cmds.Add([0x08UL | ((ulong)d.DeviceId << 32), 4, (1UL << 63) | d.Itt, 0]); // MAPD
        cmds.Add([0x09, 0, 1UL << 63, 0]);                                                                  // MAPC
        foreach (var d in devices)
            foreach (var (ev, lpi) in d.Maps) cmds.Add([0x0AUL | ((ulong)d.DeviceId << 32), ev | ((ulong)lpi << 32), 0, 0]); // MAPTI
        cmds.Add([0x05, 0, 0, 0]);                                                                          // SYNC
        for (var i = 0; i < cmds.Count; i++)
            for (var j = 0; j < 4; j++)
                yield return Q(ItsCmdq + (ulong)(i * 32 + j * 8), cmds[i][j]);
        yield return Q(Its + 0x88, (ulong)cmds.Count * 32);
        yield return new("poll 0xfffe0 readq 0x8080090", null);       // GITS_CREADR … until it reaches CWRITER
    }
}
