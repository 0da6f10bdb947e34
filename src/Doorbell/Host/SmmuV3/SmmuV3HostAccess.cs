using Doorbell.Memory;

namespace Doorbell.Host.SmmuV3;

/// <summary>
/// How the driver reaches an SMMU: its registers (offsets from page 0) and the host RAM it shares with it.
/// The model is reached through the bus; a qtest client implementing the same interface reaches QEMU's SMMUv3.
/// </summary>
public interface ISmmuHostAccess
{
    uint ReadRegister32(uint offset);
    void WriteRegister32(uint offset, uint value);
    ulong ReadRegister64(uint offset);
    void WriteRegister64(uint offset, ulong value);
    ulong ReadMemory64(ulong address);
    uint ReadMemory32(ulong address);
    void WriteMemory64(ulong address, ulong value);
    /// <summary>Zeroes [address, address + length) (fresh tables and queues).</summary>
    void ZeroMemory(ulong address, ulong length);
}

/// <summary>Access through the emulated bus as a CPU (MMIO for registers, RAM for tables).</summary>
public sealed class BusSmmuHostAccess(IMemoryView bus, ulong registerBase) : ISmmuHostAccess
{
    public uint ReadRegister32(uint offset)
    {
        bus.Read(new PhysAddr(registerBase + offset), 4, out var v, BusAttributes.Cpu);
        return (uint)v;
    }

    public void WriteRegister32(uint offset, uint value) => bus.Write(new PhysAddr(registerBase + offset), 4, value, BusAttributes.Cpu);

    public ulong ReadRegister64(uint offset)
    {
        bus.Read(new PhysAddr(registerBase + offset), 8, out var v, BusAttributes.Cpu);
        return v;
    }

    public void WriteRegister64(uint offset, ulong value) => bus.Write(new PhysAddr(registerBase + offset), 8, value, BusAttributes.Cpu);

    public ulong ReadMemory64(ulong address)
    {
        bus.ReadU64(address, out var v);
        return v;
    }

    public uint ReadMemory32(ulong address)
    {
        bus.ReadU32(address, out var v);
        return v;
    }

    public void WriteMemory64(ulong address, ulong value) => bus.WriteU64(address, value);

    public void ZeroMemory(ulong address, ulong length)
    {
        if (bus.Fill(address, length, 0) != BusStatus.Ok)
            for (ulong o = 0; o < length; o += 8) bus.WriteU64(address + o, 0);
    }
}
