using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Platform;

namespace Doorbell.Tests.Pci;

/// <summary>An MMIO region that records every write with its sideband attributes (an MSI doorbell stand-in).</summary>
public sealed class RecordingSink : IMmioHandler
{
    public readonly List<(ulong Offset, int Size, ulong Value, BusAttributes Attr)> Writes = [];
    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes) { value = 0; return BusStatus.Ok; }
    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        Writes.Add((offset, size, value, attributes));
        return BusStatus.Ok;
    }
}

/// <summary>An IOMMU stand-in: records the StreamIDs ports were created for and passes transactions to the bus.</summary>
public sealed class PassThroughIommu(IMemoryPort bus) : IIommuUpstream
{
    public readonly List<uint> StreamIds = [];
    public readonly List<(uint Sid, ulong Address, int Length, BusAttributes Attr)> Log = [];
    public IMemoryPort CreateStreamPort(uint streamId)
    {
        StreamIds.Add(streamId);
        return new Port(this, streamId, bus);
    }

    sealed class Port(PassThroughIommu owner, uint sid, IMemoryPort bus) : IMemoryPort
    {
        public BusStatus Read(ulong address, Span<byte> destination, in BusAttributes attributes)
        {
            owner.Log.Add((sid, address, destination.Length, attributes));
            return bus.Read(address, destination, attributes);
        }
        public BusStatus Write(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes)
        {
            owner.Log.Add((sid, address, source.Length, attributes));
            return bus.Write(address, source, attributes);
        }
    }
}

/// <summary>A test endpoint with any BAR layout; BAR reads return offset | bar &lt;&lt; 24, writes are recorded.</summary>
public class TestEndpoint(ushort device = 0x0001) : PciFunction(0x1de5, device, 0x058000, 1, name: "test-ep")
{
    public readonly List<(int Bar, ulong Offset, int Size, ulong Value)> BarWrites = [];
    protected override BusStatus BarRead(int bar, ulong offset, int size, out ulong value) { value = offset | ((ulong)bar << 24); return BusStatus.Ok; }
    protected override BusStatus BarWrite(int bar, ulong offset, int size, ulong value) { BarWrites.Add((bar, offset, size, value)); return BusStatus.Ok; }
}

public static class PciTestKit
{
    public const ulong Ecam = QemuVirtMap.PcieEcam;

    public static Machine Virt(IommuKind iommu = IommuKind.None) =>
        QemuVirtBoard.Create(new QemuVirtOptions { Iommu = iommu }, BoardWiring.None);

    public static ulong Cfg(int bus, int dev, int fn, int reg) => Ecam + ((ulong)bus << 20) + ((ulong)dev << 15) + ((ulong)fn << 12) + (ulong)reg;

    public static uint R32(this PhysicalAddressSpace b, ulong a)
    {
        Assert.Equal(BusStatus.Ok, b.Read(new PhysAddr(a), 4, out var v, BusAttributes.Cpu));
        return (uint)v;
    }

    public static ulong R64(this PhysicalAddressSpace b, ulong a)
    {
        Assert.Equal(BusStatus.Ok, b.Read(new PhysAddr(a), 8, out var v, BusAttributes.Cpu));
        return v;
    }

    public static void W32(this PhysicalAddressSpace b, ulong a, uint v) => Assert.Equal(BusStatus.Ok, b.Write(new PhysAddr(a), 4, v, BusAttributes.Cpu));
    public static void W64(this PhysicalAddressSpace b, ulong a, ulong v) => Assert.Equal(BusStatus.Ok, b.Write(new PhysAddr(a), 8, v, BusAttributes.Cpu));
    public static void W16(this PhysicalAddressSpace b, ulong a, ushort v) => Assert.Equal(BusStatus.Ok, b.Write(new PhysAddr(a), 2, v, BusAttributes.Cpu));
    public static void W8(this PhysicalAddressSpace b, ulong a, byte v) => Assert.Equal(BusStatus.Ok, b.Write(new PhysAddr(a), 1, v, BusAttributes.Cpu));
}
