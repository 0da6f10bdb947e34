using BenchmarkDotNet.Attributes;
using Doorbell.Devices;
using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Platform;

namespace Doorbell.Benchmarks;

/// <summary>PCI hot paths: a BAR register read through the bus and the root complex, an MSI-X message, an ECAM config read.</summary>
[MemoryDiagnoser]
public class PciBenchmarks
{
    Machine _m = null!;
    MultiQueueDmaDevice _dev = null!;
    const ulong Bar = 0x80_0000_0000, Ecam = QemuVirtMap.PcieEcam;

    sealed class Sink : IMmioHandler
    {
        public ulong Last;
        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes) { value = 0; return BusStatus.Ok; }
        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes) { Last = value; return BusStatus.Ok; }
    }

    [GlobalSetup]
    public void Setup()
    {
        _m = QemuVirtBoard.Create(new QemuVirtOptions { Iommu = IommuKind.None }, BoardWiring.None);
        _m.Bus.MapMmio(new PhysAddr(0x0900_0000), 0x1000, new Sink(), MmioAccessRules.AnySizeAligned, "sink");
        _m.AddPci(new EduDevice(_m.Clock));
        _dev = _m.AddPci(new MultiQueueDmaDevice(4), 2);
        var b = _m.Bus;
        b.Write(new PhysAddr(Ecam + (2UL << 15) + 0x10), 4, 0, BusAttributes.Cpu);
        b.Write(new PhysAddr(Ecam + (2UL << 15) + 0x14), 4, 0x80, BusAttributes.Cpu);
        b.Write(new PhysAddr(Ecam + (2UL << 15) + 4), 2, PciCfg.CmdMemory | PciCfg.CmdBusMaster, BusAttributes.Cpu);
        b.Write(new PhysAddr(Bar + MqRegs.MsixTableOffset), 8, 0x0900_0000, BusAttributes.Cpu);
        b.Write(new PhysAddr(Bar + MqRegs.MsixTableOffset + 12), 4, 0, BusAttributes.Cpu);
        b.Write(new PhysAddr(Ecam + (2UL << 15) + (ulong)_dev.MsixCapOffset + 2), 2, PciCfg.MsixEnable, BusAttributes.Cpu);
    }

    [Benchmark]
    public ulong BarRegisterRead()
    {
        _m.Bus.Read(new PhysAddr(Bar + MqRegs.NumQueues), 4, out var v, BusAttributes.Cpu);
        return v;
    }

    [Benchmark]
    public BusStatus MsixMessage() => _dev.SignalMsix(0);

    [Benchmark]
    public ulong EcamConfigRead()
    {
        _m.Bus.Read(new PhysAddr(Ecam + (2UL << 15)), 4, out var v, BusAttributes.Cpu);
        return v;
    }
}
