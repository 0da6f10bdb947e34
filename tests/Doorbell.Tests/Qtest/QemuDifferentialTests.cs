using System.Text;

namespace Doorbell.Tests.Qtest;

/// <summary>
/// Runs the same qtest sequences against Debian's QEMU 7.2 and Doorbell and compares every answer. Clock
/// commands are not sent (QEMU without the qtest accelerator does not know them); the answers compared are
/// architectural state: config space, BAR sizing, device registers, memory written by DMA and MSI.
/// </summary>
public class QemuDifferentialTests
{
    /// <summary>Commands whose answers legitimately differ, with the reason (docs/deviations.md).</summary>
    static readonly Dictionary<string, string> KnownDeviations = new()
    {
        // SMMUv3 event record word 1, bits [63:32] of the first F_TRANSLATION and of the MSI fault: Doorbell's
        // SMMU model sets CLASS (bits [41:40]) = IN (0b10) for a stage-1 fault; QEMU 7.2 leaves CLASS 0. QEMU
        ["readl 0x4102000c"] = "event CLASS field on stage-1 faults",
        ["readl 0x4102002c"] = "event CLASS field on stage-1 faults",
    };

    internal static void Compare(string machine, string[] extra, IEnumerable<string> commands) =>
        Compare(machine, extra, commands.Select(c => new QStep(c)));

    /// <summary>Runs the sequence on Doorbell alone and checks every expected answer (no QEMU needed).</summary>
    internal static void RunDoorbell(string machine, string[] extra, IEnumerable<QStep> steps)
    {
        using var db = new DoorbellPeer(machine, extra);
        var errors = new StringBuilder();
        var n = 0;
        foreach (var s in steps)
        {
            n++;
            var got = Ask(db, s.Command);
            if (s.Expect != null && got != s.Expect) errors.AppendLine($"  #{n} {s.Command}\n     expected: {s.Expect}\n     doorbell: {got}");
        }
        Assert.True(errors.Length == 0, $"unexpected answers:\n{errors}");
    }

    internal static string Ask(IQtestPeer peer, string c)
    {
        if (!c.StartsWith("poll ", StringComparison.Ordinal)) return peer.Ask(c);
        var parts = c.Split(' ', 3);
        return Poll(peer, parts[2], Convert.ToUInt64(parts[1], 16));
    }

    internal static void Compare(string machine, string[] extra, IEnumerable<QStep> steps, bool viaLauncher = false)
    {
        var commands = steps.ToList();
        using var qemu = new QemuPeer(machine, extra);
        using IQtestPeer db = viaLauncher ? QemuPeer.DoorbellLauncher(machine, extra) : new DoorbellPeer(machine, extra);
        var diffs = new StringBuilder();
        var n = 0;
        foreach (var step in commands)
        {
            n++;
            var c = step.Command;
            // "poll MASK CMD": what harnesses do with edu's DMA_CMD — re-issue the read until (value & MASK) == 0
            var a = Ask(qemu, c);
            var b = Ask(db, c);
            if (a != b && !KnownDeviations.ContainsKey(c)) diffs.AppendLine($"  #{n} {c}\n     qemu:     {a}\n     doorbell: {b}");
            if (step.Expect != null && b != step.Expect) diffs.AppendLine($"  #{n} {c}\n     expected: {step.Expect}\n     doorbell: {b}");
        }
        Assert.True(diffs.Length == 0, $"answers differ from QEMU 7.2:\n{diffs}");
        Assert.True(n > 5);
    }

    static string Poll(IQtestPeer peer, string command, ulong mask)
    {
        if (mask == 0xfffe0) return PollCreadr(peer, command);
        var answer = "";
        for (var i = 0; i < 100_000; i++)
        {
            answer = peer.Ask(command);
            if (!answer.StartsWith("OK 0x", StringComparison.Ordinal) || (Convert.ToUInt64(answer[5..], 16) & mask) == 0) return answer;
        }
        return answer + " (still set after polling)";
    }

    /// <summary>GITS_CREADR reaches GITS_CWRITER (QEMU processes ITS commands synchronously too, but be a harness).</summary>
    static string PollCreadr(IQtestPeer peer, string command)
    {
        var cwriter = peer.Ask("readq 0x8080088");
        var answer = "";
        for (var i = 0; i < 10_000; i++)
        {
            answer = peer.Ask(command);
            if (answer == cwriter) break;
        }
        return answer;
    }

    const string SmmuItsMachine = "virt,gic-version=3,iommu=smmuv3";

    [Fact]
    public void Smmu_its_sequence_works_on_doorbell() =>
        RunDoorbell(SmmuItsMachine, ["-device", "edu,dma_mask=0xffffffffff"], SmmuItsSequence.Steps());

    [QemuFact]
    public void Smmu_stage1_its_dma_fault_and_msi_sequence_matches_qemu() =>
        Compare(SmmuItsMachine, ["-device", "edu,dma_mask=0xffffffffff"], SmmuItsSequence.Steps());

    const string Edu = "0x4010008000"; // ECAM 00:01.0

    public static IEnumerable<string> PciBringUp()
    {
        // enumerate bus 0: every slot's ID, then the edu header and its capability list
        for (var dev = 0; dev < 4; dev++) yield return $"readl 0x{0x40_1000_0000UL + ((ulong)dev << 15):x}";
        yield return "readl 0x4010000008";
        yield return "readl 0x401000000c";
        for (var reg = 0; reg < 0x50; reg += 4) yield return $"readl 0x{0x40_1000_8000UL + (ulong)reg:x}";
        yield return "readw 0x4010008002";
        yield return "readb 0x4010008003";
        yield return "readl 0x4010008100";                 // conventional function: no extended space
        yield return "readl 0x4010009000";                 // 00:01.1 absent
        // BAR sizing, then program BAR0 and enable memory + bus mastering
        yield return $"writel {Edu[..^4]}8010 0xffffffff";
        yield return "readl 0x4010008010";
        yield return "writel 0x4010008014 0xffffffff";
        yield return "readl 0x4010008014";
        yield return "writel 0x4010008010 0x10000000";
        yield return "readl 0x10000000";                   // memory decode still off
        yield return "writel 0x4010008004 0xffffffff";     // every writable COMMAND bit
        yield return "readl 0x4010008004";
        yield return "writew 0x4010008004 0x6";
        yield return "readl 0x4010008004";
    }

    public static IEnumerable<string> EduBasics()
    {
        yield return "readl 0x10000000";
        yield return "writel 0x10000004 0x12345678";
        yield return "readl 0x10000004";
        yield return "writel 0x10000008 10";
        yield return "poll 1 readl 0x10000020";            // STATUS.COMPUTING (QEMU computes in a thread)
        yield return "readl 0x10000008";
        yield return "writel 0x10000008 12";
        yield return "poll 1 readl 0x10000020";
        yield return "readl 0x10000008";
        yield return "readw 0x10000000";
        yield return "readq 0x10000000";
        yield return "readl 0x10000010";
        yield return "writeb 0x10000004 1";
        yield return "readl 0x10000004";
        yield return "writel 0x10000060 0x5";
        yield return "readl 0x10000024";
        yield return "readl 0x4010008004";                 // STATUS.INTERRUPT set (INTx mode)
        yield return "writel 0x10000064 0x5";
        yield return "readl 0x10000024";
        yield return "readl 0x4010008004";
    }

    public static IEnumerable<string> EduDmaAndMsi()
    {
        yield return "write 0x40001000 16 0x0102030405060708a1a2a3a4a5a6a7a8";
        yield return "writeq 0x10000080 0x40001000";
        yield return "writeq 0x10000088 0x40000";
        yield return "writeq 0x10000090 16";
        yield return "writeq 0x10000098 5";
        yield return "poll 1 readq 0x10000098";            // polled until RUN clears
        yield return "readl 0x10000024";
        yield return "writel 0x10000064 0x100";
        yield return "readq 0x10000080";
        yield return "readl 0x10000090";
        yield return "writeq 0x10000080 0x40008";          // edu → RAM from the middle of the buffer
        yield return "writeq 0x10000088 0x40002000";
        yield return "writeq 0x10000090 8";
        yield return "writeq 0x10000098 3";
        yield return "poll 1 readq 0x10000098";
        yield return "read 0x40002000 16";
        yield return "b64read 0x40002000 8";
        // MSI to a RAM address: the 4-byte message lands in memory
        yield return "writel 0x4010008044 0x40003000";
        yield return "writel 0x4010008048 0";
        yield return "writew 0x401000804c 0x4321";
        yield return "writew 0x4010008042 0x1";
        yield return "readl 0x4010008040";
        yield return "readl 0x4010008044";
        yield return "readl 0x401000804c";
        yield return "writel 0x10000060 0x2";
        yield return "read 0x40003000 8";
        yield return "readl 0x10000024";
        yield return "readl 0x4010008004";                 // MSI mode: no INTx status
        yield return "memset 0x40003000 8 0";
        yield return "writew 0x4010008004 0x2";            // bus mastering off: the MSI is not sent
        yield return "writel 0x10000060 0x4";
        yield return "read 0x40003000 8";
        yield return "endianness";
        yield return "frobnicate 1";
    }

    /// <summary>The whole front end as a harness sees it: the launcher script started with QEMU's arguments (wfi loader, TCG, icount…), connecting to the harness socket.</summary>
    [QemuFact]
    public void Launcher_script_started_with_qemus_own_arguments_answers_like_qemu() =>
        Compare("virt", ["-device", "edu,dma_mask=0xffffffffff"], PciBringUp().Concat(EduDmaAndMsi()).Select(c => new QStep(c)), viaLauncher: true);

    [QemuFact]
    public void Pci_bring_up_and_edu_identification_match_qemu() =>
        Compare("virt", ["-device", "edu,dma_mask=0xffffffffff"], PciBringUp().Concat(EduBasics()));

    [QemuFact]
    public void Edu_dma_and_msi_to_memory_match_qemu() =>
        Compare("virt", ["-device", "edu,dma_mask=0xffffffffff"], PciBringUp().Concat(EduDmaAndMsi()));

    /// <summary>gic-version=2: edu's MSI goes to the GICv2m frame's SETSPI and pends an SPI in the distributor.</summary>
    [QemuFact]
    public void Gicv2m_msi_pends_the_spi_like_qemu() =>
        Compare("virt,gic-version=2", ["-device", "edu"], PciBringUp().Select(c => new QStep(c)).Concat(
        [
            new("readl 0x8020008", "OK 0x0000000000500040"),         // MSI_TYPER: base INTID 80, 64 SPIs
            "writel 0x8000000 0x1",                                  // GICD_CTLR enable
            "writel 0x8000c14 0x800",                                // GICD_ICFGR5: INTID 85 edge-triggered (as Linux sets MSI SPIs)
            new("readl 0x8000208", "OK 0x0000000000000000"),         // GICD_ISPENDR2 (INTIDs 64..95)
            "writel 0x4010008044 0x8020040",
            "writel 0x4010008048 0x0",
            "writew 0x401000804c 0x55",                              // INTID 85
            "writew 0x4010008042 0x1",
            "writel 0x10000060 0x1",
            new("readl 0x8000208", "OK 0x0000000000200000"),         // bit 85 - 64
            "readl 0x10000024",
        ]));

    /// <summary>INTx: edu at slot 3 pin A is swizzled to INTC ((0 + 3) % 4 = 3) = SPI 6 = INTID 38; raise, then ack.</summary>
    [QemuFact]
    public void Edu_intx_swizzle_and_level_match_qemu() =>
        Compare("virt,gic-version=3", ["-device", "edu,addr=03.0"],
        new QStep[]
        {
            "writel 0x4010018010 0x10000000",
            "writew 0x4010018004 0x6",
            "writel 0x8000000 0x12",                                  // GICD_CTLR: ARE | EnableGrp1
            "writel 0x8000104 0xffffffff",                            // GICD_ISENABLER1 (INTIDs 32..63)
            new("readl 0x8000204", "OK 0x0000000000000000"),          // GICD_ISPENDR1
            "writel 0x10000060 0x1",
            new("readl 0x8000204", "OK 0x0000000000000040"),          // INTID 38 pending (level high)
            new("readl 0x4010018004", "OK 0x0000000000180006"),       // STATUS.INTERRUPT | CAP_LIST
            "writel 0x10000064 0x1",
            new("readl 0x8000204", "OK 0x0000000000000000"),
            new("readl 0x4010018004", "OK 0x0000000000100006"),
        });

    [QemuFact]
    public void Gicv3_board_with_edu_at_a_chosen_slot_matches_qemu() =>
        Compare("virt,gic-version=3", ["-device", "edu,addr=03.0"],
            Enumerable.Range(0, 6).Select(d => $"readl 0x{0x40_1000_0000UL + ((ulong)d << 15):x}")
                .Concat(["readl 0x4010018008", "readl 0x4010018034", "writel 0x4010018010 0xffffffff", "readl 0x4010018010"]));
}
