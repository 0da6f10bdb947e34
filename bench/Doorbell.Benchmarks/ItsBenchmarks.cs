using BenchmarkDotNet.Attributes;
using Doorbell.Gic.Its;
using Doorbell.Gic.V3;
using Doorbell.Memory;

namespace Doorbell.Benchmarks;

/// <summary>
/// ITS costs on the qemu-virt GICv3: an MSI write through the bus (translate + LPI pending in the pending
/// table), MAPTI and INV as commands consumed from the in-memory queue (CWRITER doorbell), INV at two LPI ID
/// space sizes to show it does not depend on the table size.
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
public class ItsBenchmarks
{
    const ulong Prop = 0x4010_0000, Pend = 0x4400_0000, Cmdq = 0x4500_0000, Dt = 0x4600_0000, Ct = 0x4610_0000, Itt = 0x4620_0000;
    const int Batch = 256;
    const int QueueCommands = 512; // 16 KiB queue
    PhysicalAddressSpace _bus = null!;
    GicV3System _sys = null!;
    GicV3Redistributor _rd = null!;
    ulong _cwriter;
    uint _lpi;
    ulong _cmdBytesA, _cmdBytesB; // two halves of the queue

    /// <summary>LPI INTID bits (GICD_TYPER.IDbits + 1, PROPBASER.IDbits + 1).</summary>
    [Params(16, 24)]
    public int IdBits { get; set; }

    void W(ulong a, int size, ulong v) => _bus.Write(new PhysAddr(a), size, v, BusAttributes.Cpu);

    void Build(Func<int, ulong[]> command)
    {
        _bus = new PhysicalAddressSpace();
        _bus.AddRam(new PhysAddr(0x4000_0000), 0x1000_0000);
        _sys = QemuVirtGicV3.Create(_bus, 1, new ItsOptions { EventIdBits = 16 }, IdBits);
        W(QemuVirtGicV3.GicdBase.Value, 4, GicV3.CtlrEnableGrp1);
        var rd = QemuVirtGicV3.GicrBase.Value;
        W(rd + GicV3Redistributor.GICR_WAKER, 4, 0);
        W(rd + GicV3Redistributor.GICR_PROPBASER, 8, Prop | (ulong)(uint)(IdBits - 1));
        W(rd + GicV3Redistributor.GICR_PENDBASER, 8, Pend | (1UL << 62));
        W(rd + GicV3Redistributor.GICR_CTLR, 4, 1);
        _rd = _sys.Gic.Redistributors[0];
        var its = QemuVirtGicV3.ItsBase.Value;
        W(its + GicV3Its.GITS_BASER, 8, (1UL << 63) | Dt | 15);
        W(its + GicV3Its.GITS_BASER + 8, 8, (1UL << 63) | Ct);
        W(its + GicV3Its.GITS_CBASER, 8, (1UL << 63) | Cmdq | (QueueCommands * 32 / 4096 - 1));
        W(its + GicV3Its.GITS_CTLR, 4, 1);
        _lpi = (uint)((1 << IdBits) - 64); // near the top of the ID space
        _bus.Store.WriteSized(Prop + _lpi - 8192, 1, 0xA1);
        var setup = new ulong[3][];
        setup[0] = new ulong[4]; ItsCommand.Mapc(setup[0], 0, 0, true);
        setup[1] = new ulong[4]; ItsCommand.Mapd(setup[1], 8, Itt, 16, true);
        setup[2] = new ulong[4]; ItsCommand.Mapti(setup[2], 8, 1, _lpi, 0);
        _cwriter = 0;
        foreach (var c in setup) Push(c);
        Ring();
        // Fill the rest of the queue with the measured command, then consume up to the first half boundary.
        var start = _cwriter;
        for (var i = (int)(start / 32); i < QueueCommands; i++) Write(i, command(i));
        for (var i = 0; i < (int)(start / 32); i++) Write(i, command(i));
        _cmdBytesA = 0; _cmdBytesB = Batch * 32;
        // Run until CREADR = 0 so each invocation consumes exactly one half.
        _cwriter = 0;
        Ring();
        if (_sys.Its.CommandErrorCount != 0 || _sys.Its.Stalled) throw new InvalidOperationException("benchmark setup failed");
    }

    void Write(int index, ulong[] c)
    {
        for (var k = 0; k < 4; k++) _bus.Store.WriteU64(Cmdq + (ulong)index * 32 + (ulong)k * 8, c[k]);
    }

    void Push(ulong[] c) { Write((int)(_cwriter / 32), c); _cwriter += 32; }
    void Ring() => W(QemuVirtGicV3.ItsBase.Value + GicV3Its.GITS_CWRITER, 8, _cwriter);

    [GlobalSetup(Target = nameof(MsiTranslateAndSetPending))]
    public void SetupMsi() => Build(_ => { var c = new ulong[4]; ItsCommand.Sync(c, 0); return c; });

    [GlobalSetup(Target = nameof(Mapti))]
    public void SetupMapti() => Build(i => { var c = new ulong[4]; ItsCommand.Mapti(c, 8, (uint)(i % 1024) + 2, _lpi, 0); return c; });

    [GlobalSetup(Target = nameof(Inv))]
    public void SetupInv()
    {
        Build(_ => { var c = new ulong[4]; ItsCommand.DeviceEvent(c, ItsOpcode.Inv, 8, 1); return c; });
        _rd.SetLpiPending(_lpi); // worst case: a pending LPI is re-sorted by each INV
    }

    /// <summary>One MSI: bus write to GITS_TRANSLATER with DeviceID 8 → LPI pending (memory + priority lists); the clear that follows is included, so the figure is an upper bound.</summary>
    [Benchmark]
    public bool MsiTranslateAndSetPending()
    {
        _bus.Write(QemuVirtGicV3.TranslaterAddress, 4, 1, BusAttributes.FromDevice(8));
        return _rd.ClearLpiPending(_lpi);
    }

    /// <summary>Per MAPTI: 256 commands consumed from the queue by one CWRITER write.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public ulong Mapti() => Consume();

    /// <summary>Per INV: 256 commands consumed from the queue by one CWRITER write.</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public ulong Inv() => Consume();

    ulong Consume()
    {
        var next = _cwriter == _cmdBytesA ? _cmdBytesB : _cmdBytesA;
        _cwriter = next;
        W(QemuVirtGicV3.ItsBase.Value + GicV3Its.GITS_CWRITER, 8, next);
        return next;
    }
}
