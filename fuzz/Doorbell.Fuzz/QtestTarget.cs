using System.Globalization;
using System.Text;
using Doorbell.Qtest;

namespace Doorbell.Fuzz;

/// <summary>
/// qtest lines on each board variant (GICv3+ITS with and without SMMUv3, GICv2+v2m, its=off, -smp N, every device).
/// Input: byte 0 picks the variant, the rest is text lines. Oracles: every line is answered, within a bound; a
/// sentinel page of RAM that no generated address or value points at never changes.
/// </summary>
public sealed class QtestTarget : FuzzTarget
{
    public override string Name => "qtest";
    public override string Description => "qtest protocol lines on 5 board variants (SMMUv3, ITS, GICv2m, PCI config/BARs, edu, multi-queue DMA)";

    public static readonly string[][] Variants =
    [
        ["-machine", "virt,gic-version=3,iommu=smmuv3", "-device", "edu", "-device", "doorbell-mq-dma"],
        ["-machine", "virt,gic-version=3", "-smp", "2", "-device", "edu,dma_mask=0xffffffffff"],
        ["-machine", "virt,gic-version=2", "-device", "edu,addr=3.0", "-device", "doorbell-mq-dma"],
        ["-machine", "virt,gic-version=3,iommu=smmuv3", "-smp", "4", "-device", "doorbell-mq-dma,queues=4"],
        ["-machine", "virt,gic-version=2,iommu=smmuv3", "-smp", "2", "-device", "edu"],
    ];

    const ulong Sentinel = 0x5F00_0000, SentinelSize = 0x1000;
    static readonly TimeSpan LineBound = TimeSpan.FromSeconds(2);

    public override void Run(ReadOnlySpan<byte> input)
    {
        if (input.Length == 0) return;
        var variant = Variants[input[0] % Variants.Length];
        var cmd = QemuCommandLine.Parse([.. variant, "-accel", "qtest", "-qtest", "unix:/nonexistent"]);
        var server = new QtestServer(cmd.Build(), null);
        Expect(server, $"memset 0x{Sentinel:x} 0x{SentinelSize:x} 0xa5");
        var sentinel = server.Handle($"b64read 0x{Sentinel:x} 0x{SentinelSize:x}");
        foreach (var line in Text(input[1..]).Split('\n'))
        {
            var start = CpuTime.Thread;
            var answer = server.Handle(line.TrimEnd('\r'));
            var spent = CpuTime.Thread - start;
            if (answer is null || answer.Length == 0 || answer[^1] != '\n')
                throw new FuzzFinding($"line '{Short(line)}' got no complete answer");
            if (spent > LineBound + TimeSpan.FromTicks(line.Length * 200L))
                throw new FuzzFinding($"line '{Short(line)}' took {spent.TotalMilliseconds:F0} ms of CPU");
        }
        if (server.Handle($"b64read 0x{Sentinel:x} 0x{SentinelSize:x}") != sentinel)
            throw new FuzzFinding("RAM that no device was pointed at changed (sentinel page)");
    }

    public override long Units(ReadOnlySpan<byte> input) => input.Length == 0 ? 0 : input[1..].Count((byte)'\n') + 1;

    static void Expect(QtestServer s, string line)
    {
        var a = s.Handle(line);
        if (a != "OK\n") throw new FuzzFinding($"set-up line '{line}' answered '{a.TrimEnd()}'");
    }

    static string Short(string s) => s.Length <= 80 ? s : s[..80] + "…";

    // --- structure-aware generation -------------------------------------------------------------------------

    const ulong Ram = 0x4000_0000, RamWindow = 0x10_0000;
    static readonly (ulong Base, ulong Size)[] Regions =
    [
        (0x0800_0000, 0x1_0000),      // GICD
        (0x0801_0000, 0x2000),        // GICv2 CPU interface
        (0x0802_0000, 0x1000),        // GICv2m frame
        (0x0808_0000, 0x2_0000),      // ITS control + translation frames
        (0x080A_0000, 0x8_0000),      // GICR frames (up to 4 CPUs)
        (0x0905_0000, 0x2_0000),      // SMMUv3 pages 0 and 1
        (0x40_1000_0000, 0x2_0000),   // ECAM bus 0, devices 0..3
        (0x1000_0000, 0x10_0000),     // PCI MMIO window (BARs once programmed)
        (Ram, RamWindow),             // the RAM the generated tables live in
    ];

    static ulong Value(Random rng) => rng.Next(8) switch
    {
        0 => (ulong)rng.NextInt64(),
        1 => Ram + ((ulong)rng.Next(0, (int)RamWindow) & ~0xFUL),
        2 => (Ram + ((ulong)rng.Next(0, (int)RamWindow) & ~0xFFFUL)) | (uint)rng.Next(0, 32),
        3 => Regions[rng.Next(Regions.Length)].Base + (ulong)rng.Next(0, 0x200),
        4 => (ulong)rng.Next(0, 16),
        5 => 1UL << rng.Next(64),
        6 => ulong.MaxValue - (ulong)rng.Next(0, 4),
        _ => (ulong)rng.Next(0, 0x10000),
    };

    static ulong Address(Random rng, int size)
    {
        var (b, s) = Regions[rng.Next(Regions.Length)];
        var off = (ulong)rng.NextInt64(0, (long)s);
        if (rng.Next(2) == 0) off &= 0x1FF;
        return (b + off) & ~(ulong)(size - 1);
    }

    // Bring-up prologues: PCI BARs and bus mastering, SMMUv3 queues and stream table, ITS tables, GICR LPIs — so that
    // random commands and table contents reach the deep paths rather than bouncing off disabled blocks.
    static readonly string[] Prologue =
    [
        "writel 0x4010008010 0x10000000", "writew 0x4010008004 0x6",          // 00:01.0 BAR0, MEM|MASTER
        "writel 0x4010010010 0x10100000", "writew 0x4010010004 0x6",          // 00:02.0
        "writel 0x4010018010 0x10200000", "writew 0x4010018004 0x6",          // 00:03.0
        "writeq 0x9050080 0x40000000", "writel 0x9050088 0x6",                // STRTAB_BASE, linear, 64 STEs
        "writeq 0x9050090 0x40010005", "writel 0x9050098 0x0",                // CMDQ_BASE (32 entries)
        "writeq 0x90500a0 0x40020005",                                         // EVENTQ_BASE
        "writel 0x9050028 0xd75", "writel 0x9050020 0xd",                      // CR1, CR0: SMMUEN|EVTQEN|CMDQEN
        "writel 0x8000000 0x12",                                               // GICD_CTLR ARE, Group1
        "writeq 0x80a0070 0x4003000f", "writeq 0x80a0078 0x40040000", "writel 0x80a0000 0x1",
        "writeq 0x8080100 0x8000000040050000", "writeq 0x8080108 0x8000000040060000",
        "writeq 0x8080080 0x8000000040070000", "writeq 0x8080088 0x0", "writel 0x8080000 0x1",
    ];

    static readonly byte[] SmmuOpcodes = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x10, 0x11, 0x12, 0x13, 0x18, 0x1A, 0x20, 0x28, 0x2A, 0x30, 0x40, 0x41, 0x44, 0x45, 0x46, 0x7F];
    static readonly byte[] ItsOpcodes = [0x01, 0x03, 0x04, 0x05, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x22];

    public override byte[] Generate(Random rng)
    {
        ArgumentNullException.ThrowIfNull(rng);
        var sb = new StringBuilder();
        var lines = 10 + rng.Next(200);
        if (rng.Next(3) != 0) foreach (var p in Prologue) if (rng.Next(8) != 0) sb.Append(p).Append('\n');
        for (var i = 0; i < lines; i++) AppendLine(sb, rng);
        var body = Encoding.UTF8.GetBytes(sb.ToString());
        var input = new byte[body.Length + 1];
        input[0] = (byte)rng.Next(Variants.Length);
        body.CopyTo(input, 1);
        return input;
    }

    static readonly string[] Sizes = ["b", "w", "l", "q"];

    static void AppendLine(StringBuilder sb, Random rng)
    {
        var inv = CultureInfo.InvariantCulture;
        switch (rng.Next(16))
        {
            case < 5:
                var k = rng.Next(4);
                sb.Append(inv, $"write{Sizes[k]} 0x{Address(rng, 1 << k):x} 0x{Value(rng):x}\n");
                break;
            case < 8:
                var r = rng.Next(4);
                sb.Append(inv, $"read{Sizes[r]} 0x{Address(rng, 1 << r):x}\n");
                break;
            case 8:   // an SMMU command at a random queue slot, then the producer index
                var q0 = (ulong)SmmuOpcodes[rng.Next(SmmuOpcodes.Length)] | ((ulong)rng.NextInt64() & ~0xFFUL & (rng.Next(2) == 0 ? 0xFFFF_FFFF_FFFF_FF00UL : 0x0000_00FF_0000_0000UL));
                var slot = (ulong)rng.Next(32);
                sb.Append(inv, $"writeq 0x{0x4001_0000 + slot * 16:x} 0x{q0:x}\nwriteq 0x{0x4001_0008 + slot * 16:x} 0x{Value(rng):x}\n");
                sb.Append(inv, $"writel 0x9050098 0x{(uint)rng.Next(0, 64):x}\n");
                break;
            case 9:   // an ITS command, then CWRITER
                var c = (ulong)rng.Next(0, 0x1000);
                var op = (ulong)ItsOpcodes[rng.Next(ItsOpcodes.Length)] | ((ulong)rng.Next(0, 64) << 32);
                sb.Append(inv, $"writeq 0x{0x4007_0000 + c * 32:x} 0x{op:x}\nwriteq 0x{0x4007_0008 + c * 32:x} 0x{Value(rng):x}\n");
                sb.Append(inv, $"writeq 0x{0x4007_0010 + c * 32:x} 0x{Value(rng):x}\nwriteq 0x{0x4007_0018 + c * 32:x} 0x{Value(rng):x}\n");
                sb.Append(inv, $"writeq 0x8080088 0x{(c + 1) * 32:x}\n");
                break;
            case 10:  // table contents: STEs, CDs, page tables, ITS tables all live in the RAM window
                var a = Ram + ((ulong)rng.Next(0, (int)RamWindow) & ~7UL);
                sb.Append(inv, $"writeq 0x{a:x} 0x{Value(rng):x}\n");
                break;
            case 11:  // device DMA and MSIs: edu's DMA engine and raise register at each programmed BAR, the ITS doorbell
                var bar = 0x1000_0000UL + 0x10_0000UL * (ulong)rng.Next(3);
                sb.Append(inv, $"writeq 0x{bar + 0x80:x} 0x{Value(rng):x}\nwriteq 0x{bar + 0x88:x} 0x{Value(rng):x}\n");
                sb.Append(inv, $"writeq 0x{bar + 0x90:x} 0x{rng.Next(0, 0x2000):x}\nwriteq 0x{bar + 0x98:x} 0x{rng.Next(0, 4):x}\n");
                sb.Append(inv, $"writel 0x{bar + 0x60:x} 0x{rng.Next(0, 64):x}\nwritel 0x8090040 0x{rng.Next(0, 64):x}\n");
                break;
            case 12:
                sb.Append(rng.Next(3) switch
                {
                    0 => $"clock_step {rng.Next(0, 1_000_000)}\n",
                    1 => "clock_step\n",
                    _ => $"clock_set {(ulong)rng.NextInt64():d}\n",
                });
                break;
            case 13:
                var n = rng.Next(4) == 0 ? rng.Next(0, 0x10000) : rng.Next(0, 64);
                var addr = Address(rng, 1);
                sb.Append(rng.Next(4) switch
                {
                    0 => $"write 0x{addr:x} 0x{n:x} 0x{Convert.ToHexString(RandomBytes(rng, n))}\n",
                    1 => $"b64write 0x{addr:x} 0x{n:x} {Convert.ToBase64String(RandomBytes(rng, n))}\n",
                    2 => $"memset 0x{addr:x} 0x{n:x} 0x{rng.Next(256):x}\n",
                    _ => $"read 0x{addr:x} 0x{n:x}\n",
                });
                break;
            case 14:
                sb.Append(rng.Next(5) switch
                {
                    0 => "irq_intercept_in /machine/unattached/device[0]\n",
                    1 => "endianness\n",
                    2 => $"b64read 0x{Address(rng, 1):x} 0x{rng.Next(0, 256):x}\n",
                    3 => "irq_intercept_out /machine/unattached/device[1]\n",
                    _ => $"set_irq_in /machine/unattached/device[0] {rng.Next(4)} {rng.Next(2)}\n",
                });
                break;
            default:  // malformed: wrong arity, bad numbers, unknown commands, junk bytes
                string[] junk = ["readl", "writeq 0x", "write 0x40000000 4 0xzz", "b64write 0x40000000 4 !!!!", "readq -1",
                                 "writel 0xffffffffffffffff 1", "clock_step -5", "frobnicate", "", "memset 0x40000000 -1 1",
                                 "read 0x40000000 0xffffffffffff", "writeb 0x40000000 0x1ff"];
                sb.Append(junk[rng.Next(junk.Length)]).Append('\n');
                break;
        }
    }

    static byte[] RandomBytes(Random rng, int n)
    {
        var b = new byte[n];
        rng.NextBytes(b);
        return b;
    }
}
