using Doorbell.Memory;

namespace Doorbell.Scenarios.Steps;

/// <summary>Shows the physical address space: sparse RAM across a 48-bit map, and a decode error as a value.</summary>
public sealed class PhysicalMemoryStep : IScenarioStep
{
    public string Title => "Physical address space: sparse RAM and bus decode";

    public bool Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(0x4000_0000), 0xFFFF_C000_0000, "ram");
        var top = 0xFFFF_FFFF_F000UL;
        var ok = bus.Write(new PhysAddr(top), 8, 0xD00B_E11, BusAttributes.Cpu) == BusStatus.Ok
                 && bus.Read(new PhysAddr(top), 8, out var v, BusAttributes.Cpu) == BusStatus.Ok && v == 0xD00B_E11;
        context.Item($"RAM 0x4000_0000..2^48 declared; wrote and read back at 0x{top:x}: {(ok ? "ok" : "MISMATCH")}; pages allocated: {bus.Store.AllocatedPages}");
        var status = bus.Read(new PhysAddr(0x1000), 4, out _, BusAttributes.Cpu);
        context.Item($"read of 0x1000 (nothing there) -> {status}");
        return ok && status == BusStatus.DecodeError && bus.Store.AllocatedPages == 1;
    }
}
