using BenchmarkDotNet.Attributes;
using Doorbell.Memory;

namespace Doorbell.Benchmarks;

/// <summary>MMIO dispatch and RAM access costs on the system bus.</summary>
[MemoryDiagnoser]
public class BusBenchmarks
{
    sealed class Reg : IMmioHandler
    {
        public ulong Value;
        public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes) { value = Value; return BusStatus.Ok; }
        public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes) { Value = value; return BusStatus.Ok; }
    }

    readonly PhysicalAddressSpace _bus = new();

    [GlobalSetup]
    public void Setup()
    {
        _bus.AddRam(new PhysAddr(0x4000_0000), 1UL << 32);
        for (var i = 0; i < 64; i++)
            _bus.MapMmio(new PhysAddr(0x0800_0000 + (ulong)i * 0x1_0000), 0x1_0000, new Reg(), MmioAccessRules.Registers32And64, $"r{i}");
        _bus.Store.WriteU64(0x4000_0000, 1);
    }

    [Benchmark]
    public ulong MmioReadAlternatingRegions()
    {
        _bus.Read(new PhysAddr(0x0800_0000), 4, out var a, BusAttributes.Cpu);
        _bus.Read(new PhysAddr(0x0830_0000), 4, out var b, BusAttributes.Cpu);
        return a + b;
    }

    [Benchmark]
    public ulong RamReadU64()
    {
        _bus.ReadU64(0x4000_0000, out var v);
        return v;
    }
}
