using Doorbell.Gic.Its;
using Doorbell.Gic.V3;
using Doorbell.Host.Os;
using Doorbell.Kvm;
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

    /// <summary>The physical bus (physical harness) or the host bus under the VMM (guest harness).</summary>
    public readonly PhysicalAddressSpace Bus = new();
    public readonly GicV3System Sys;
    public readonly StrictMonitor Strict = new() { Enabled = true };
    /// <summary>The VM when the harness runs the same programming against a vGICv3 + vITS (guest software on vCPU 0).</summary>
    public readonly Vm? Vm;
    ulong _cwriter;

    public ItsHarness(int cpus = 2, ItsOptions? its = null, int idBits = 16, int pageSizeCode = 0, bool indirectDevices = false, int tablePages = 1, bool enableIts = true, bool guest = false)
    {
        if (guest)
        {
            // Host RAM backs the VMM's memory; 256 MiB of it is the guest's RAM at the same GPA range as qemu-virt's.
            Bus.AddRam(new PhysAddr(0x1_0000_0000), 0x2000_0000, "host-ram");
            var vmm = new UserAddressSpace(Bus, new PhysPageAllocator(0x1_0000_0000, 0x2000_0000, Bus));
            var hva = vmm.MapAnonymous(0x1000_0000);
            Vm = new Vm(vmm, strict: Strict);
            Assert.Equal(0, Vm.SetUserMemoryRegion(new KvmUserspaceMemoryRegion(0, 0, Ram, 0x1000_0000, hva)));
            for (var c = 0; c < cpus; c++) Assert.True(Vm.CreateVcpu(out _) >= 0);
            Assert.Equal(0, Vm.CreateVgicV3(QemuVirtGicV3.GicdBase, QemuVirtGicV3.GicrBase, 224, idBits));
            Assert.Equal(0, Vm.CreateVits(QemuVirtGicV3.ItsBase, out var vits, its));
            Sys = new GicV3System(Vm.VgicV3!, vits!);
        }
        else
        {
            Bus.AddRam(new PhysAddr(Ram), 0x1000_0000);
            Sys = QemuVirtGicV3.Create(Bus, cpus, its, idBits, strict: Strict);
        }
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

    BusStatus Store(ulong a, int size, ulong v) =>
        Vm is null ? Bus.Write(new PhysAddr(a), size, v, BusAttributes.Cpu) : Vm.Vcpus[0].Write(a, size, v);

    BusStatus Load(ulong a, int size, out ulong v) =>
        Vm is null ? Bus.Read(new PhysAddr(a), size, out v, BusAttributes.Cpu) : Vm.Vcpus[0].Read(a, size, out v);

    /// <summary>Copies (guest) physical memory out: the bus, or guest memory through the memslots.</summary>
    public void ReadMem(ulong a, Span<byte> dst) =>
        Assert.Equal(BusStatus.Ok, Vm is null ? Bus.Read(a, dst, BusAttributes.Cpu) : Vm.Memory.Read(a, dst));

    public void WriteMem(ulong a, ReadOnlySpan<byte> src) =>
        Assert.Equal(BusStatus.Ok, Vm is null ? Bus.Write(a, src, BusAttributes.Cpu) : Vm.Memory.Write(a, src));

    /// <summary>Makes the pending tables in memory current: nothing to do on hardware (written through); a vGIC saves them (KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES).</summary>
    public void SavePendingTables()
    {
        if (Vm is not null) Assert.Equal(0, Vm.SavePendingTables());
    }

    public ulong PageSize { get; }
    public GicV3Its Its => Sys.Its;
    public GicV3 Gic => Sys.Gic;
    public GicV3CpuInterface Cpu(int n) => Sys.Cpu(n);

    public void W32(ulong a, uint v) => Assert.Equal(BusStatus.Ok, Store(a, 4, v));
    public void W64(ulong a, ulong v) => Assert.Equal(BusStatus.Ok, Store(a, 8, v));
    public ulong R64(ulong a) { Load(a, 8, out var v); return v; }
    public uint R32(ulong a) { Load(a, 4, out var v); return (uint)v; }
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
        Assert.Equal(BusStatus.Ok, Store(PropTable + lpi - 8192, 1, (ulong)(priority & 0xFC) | 2 | (enabled ? 1UL : 0)));

    public bool PendingBitInMemory(int cpu, uint lpi)
    {
        Load(PendTables + (ulong)cpu * 0x1_0000 + lpi / 8, 1, out var b);
        return (b >> (int)(lpi % 8) & 1) != 0;
    }

    /// <summary>A device MSI: a write to GITS_TRANSLATER carrying the DeviceID (physical), or KVM_SIGNAL_MSI with that DeviceID (guest).</summary>
    public BusStatus Msi(uint deviceId, uint eventId)
    {
        if (Vm is null) return Bus.Write(QemuVirtGicV3.TranslaterAddress, 4, eventId, BusAttributes.FromDevice(deviceId));
        var r = Vm.SignalMsi(new KvmMsi(QemuVirtGicV3.TranslaterAddress.Value, eventId, KvmConst.KVM_MSI_VALID_DEVID, deviceId));
        Assert.True(r >= 0, $"KVM_SIGNAL_MSI {r}");
        return BusStatus.Ok;
    }

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
