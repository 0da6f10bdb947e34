using Doorbell.Gic.Its;
using Doorbell.Gic.V3;
using Doorbell.Memory;
using Doorbell.Tracing;

namespace Doorbell.Tests.Gic;

/// <summary>
/// A GICv3 + ITS on the qemu-virt map, programmed the way the specification describes: registers by MMIO and
/// tables written into RAM. Tests read like the spec's programming sequences.
/// </summary>
sealed class ItsHarness
{
    public const ulong Ram = 0x4000_0000;
    public const ulong PropTable = 0x4010_0000;
    public const ulong PendTables = 0x4020_0000; // + cpu * 64 KiB
    public const ulong CmdQueue = 0x4030_0000;   // 64 KiB
    public const ulong DeviceTable = 0x4040_0000;
    public const ulong CollectionTable = 0x4050_0000;
    public const ulong IttBase = 0x4060_0000;    // + 0x1000 per device in tests
    public const ulong L2Pages = 0x4070_0000;

    public readonly PhysicalAddressSpace Bus = new();
    public readonly GicV3System Sys;
    public readonly StrictMonitor Strict = new() { Enabled = true };
    ulong _cwriter;

    public ItsHarness(int cpus = 2, ItsOptions? its = null, int idBits = 16, int pageSizeCode = 0, bool indirectDevices = false, int tablePages = 1, bool enableIts = true)
    {
        Bus.AddRam(new PhysAddr(Ram), 0x1000_0000);
        Sys = QemuVirtGicV3.Create(Bus, cpus, its, idBits, strict: Strict);
        W32(QemuVirtGicV3.GicdBase.Value + GicV3.GICD_CTLR, GicV3.CtlrEnableGrp1 | GicV3.CtlrAre);
        for (var c = 0; c < cpus; c++)
        {
            var rd = QemuVirtGicV3.GicrBase.Value + (ulong)c * 0x2_0000;
            W32(rd + GicV3Redistributor.GICR_WAKER, 0);
            W64(rd + GicV3Redistributor.GICR_PROPBASER, PropTable | (ulong)(idBits - 1));
            W64(rd + GicV3Redistributor.GICR_PENDBASER, PendTables + (ulong)c * 0x1_0000);
            W32(rd + GicV3Redistributor.GICR_CTLR, 1);
            Sys.Cpu(c).Pmr = 0xFF;
            Sys.Cpu(c).IgrpEn1 = 1;
        }
        var its0 = QemuVirtGicV3.ItsBase.Value;
        var pageBits = (ulong)pageSizeCode << 8;
        var pageSize = pageSizeCode switch { 0 => 0x1000UL, 1 => 0x4000UL, _ => 0x1_0000UL };
        var size = (ulong)(tablePages - 1);
        W64(its0 + GicV3Its.GITS_BASER, (1UL << 63) | (indirectDevices ? 1UL << 62 : 0) | DeviceTable | pageBits | size);
        W64(its0 + GicV3Its.GITS_BASER + 8, (1UL << 63) | CollectionTable | pageBits | size);
        PageSize = pageSize;
        W64(its0 + GicV3Its.GITS_CBASER, (1UL << 63) | CmdQueue | 15);
        W64(its0 + GicV3Its.GITS_CWRITER, 0);
        if (enableIts) W32(its0 + GicV3Its.GITS_CTLR, 1);
    }

    public ulong PageSize { get; }
    public GicV3Its Its => Sys.Its;
    public GicV3 Gic => Sys.Gic;
    public GicV3CpuInterface Cpu(int n) => Sys.Cpu(n);

    public void W32(ulong a, uint v) => Assert.Equal(BusStatus.Ok, Bus.Write(new PhysAddr(a), 4, v, BusAttributes.Cpu));
    public void W64(ulong a, ulong v) => Assert.Equal(BusStatus.Ok, Bus.Write(new PhysAddr(a), 8, v, BusAttributes.Cpu));
    public ulong R64(ulong a) { Bus.Read(new PhysAddr(a), 8, out var v, BusAttributes.Cpu); return v; }
    public uint R32(ulong a) { Bus.Read(new PhysAddr(a), 4, out var v, BusAttributes.Cpu); return (uint)v; }
    public ulong ItsReg(uint off) => R64(QemuVirtGicV3.ItsBase.Value + off);
    public ulong Creadr => ItsReg(GicV3Its.GITS_CREADR);
    public ulong Cwriter => _cwriter;

    public delegate void CommandBuilder(Span<ulong> c);

    /// <summary>Writes one command at CWRITER and advances CWRITER (ringing the doorbell).</summary>
    public void Cmd(CommandBuilder build, bool kick = true)
    {
        Span<ulong> c = stackalloc ulong[4];
        build(c);
        for (var i = 0; i < 4; i++) W64(CmdQueue + _cwriter + (ulong)i * 8, c[i]);
        _cwriter = (_cwriter + 32) % 0x1_0000;
        if (kick) Kick();
    }

    public void Kick(bool retry = false) => W64(QemuVirtGicV3.ItsBase.Value + GicV3Its.GITS_CWRITER, _cwriter | (retry ? 1UL : 0));

    public void Mapd(uint dev, int bits = 5, bool valid = true) => Cmd(c => ItsCommand.Mapd(c, dev, IttBase + dev % 256 * 0x1000, bits, valid));
    public void Mapc(ushort icid, int cpu, bool valid = true) => Cmd(c => ItsCommand.Mapc(c, icid, Its.RdBaseOf(cpu), valid));
    public void Mapti(uint dev, uint ev, uint lpi, ushort icid) => Cmd(c => ItsCommand.Mapti(c, dev, ev, lpi, icid));
    public void Ev(byte op, uint dev, uint ev) => Cmd(c => ItsCommand.DeviceEvent(c, op, dev, ev));
    public void Sync(int cpu) => Cmd(c => ItsCommand.Sync(c, Its.RdBaseOf(cpu)));

    /// <summary>LPI configuration byte: priority[7:2], bit 1 RES1 (Linux sets it as "group 1"), enable bit 0.</summary>
    public void SetLpiConfig(uint lpi, byte priority, bool enabled) =>
        Bus.Write(new PhysAddr(PropTable + lpi - 8192), 1, (ulong)(priority & 0xFC) | 2 | (enabled ? 1UL : 0), BusAttributes.Cpu);

    public bool PendingBitInMemory(int cpu, uint lpi)
    {
        Bus.Read(new PhysAddr(PendTables + (ulong)cpu * 0x1_0000 + lpi / 8), 1, out var b, BusAttributes.Cpu);
        return (b >> (int)(lpi % 8) & 1) != 0;
    }

    public BusStatus Msi(uint deviceId, uint eventId) =>
        Bus.Write(QemuVirtGicV3.TranslaterAddress, 4, eventId, BusAttributes.FromDevice(deviceId));

    /// <summary>Standard setup: devices mapped with 32 events, collection n → CPU n, event e of device d → LPI base + e.</summary>
    public void MapBasic(uint dev, uint lpiBase, int events, ushort icid, byte priority = 0xA0)
    {
        Mapd(dev, 5);
        for (var e = 0u; e < events; e++)
        {
            SetLpiConfig(lpiBase + e, priority, true);
            Mapti(dev, e, lpiBase + e, icid);
        }
    }
}
