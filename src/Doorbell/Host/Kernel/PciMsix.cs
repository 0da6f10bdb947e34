using Doorbell.Memory;

namespace Doorbell.Host.Kernel;

/// <summary>
/// The PCI core's MSI-X programming (the sequence of Linux's msix_capability_init, facts from PCI LB 3.0 §6.8.2):
/// enable MSI-X with the function masked, write each table entry (address low/high, data, vector control unmasked),
/// then clear the function mask; disable clears the enable bit. Shared by the host kernel's VFIO backend and any PCI
/// driver of the kernel layer (host or guest), over config accessors and the memory view that reaches the BAR.
/// </summary>
public static class PciMsix
{
    public const byte CapId = 0x11;
    const uint EnableBit = 0x8000, FunctionMask = 0x4000;

    /// <summary>The offset of capability <paramref name="id"/> in the standard list, or 0 (bounded walk).</summary>
    public static int FindCapability(PciEnumeration pci, ushort rid, byte id)
    {
        ArgumentNullException.ThrowIfNull(pci);
        if ((pci.Read(rid, 0x06, 2) & 0x10) == 0) return 0;
        var p = (int)pci.Read(rid, 0x34, 1) & 0xFC;
        for (var n = 0; n < 48 && p >= 0x40; n++)
        {
            var hdr = pci.Read(rid, p, 2);
            if ((hdr & 0xFF) == id) return p;
            p = (int)(hdr >> 8) & 0xFC;
        }
        return 0;
    }

    /// <summary>Table size (vectors) of the MSI-X capability at <paramref name="cap"/>.</summary>
    public static int TableSize(PciEnumeration pci, ushort rid, int cap) => (int)(pci.Read(rid, cap + 2, 2) & 0x7FF) + 1;

    /// <summary>(BAR index, offset) of the MSI-X table.</summary>
    public static (int Bar, ulong Offset) TableLocation(PciEnumeration pci, ushort rid, int cap)
    {
        var t = pci.Read(rid, cap + 4, 4);
        return ((int)(t & 7), t & ~7u);
    }

    /// <summary>Programs and enables MSI-X: entry i gets (<paramref name="addresses"/>[i], <paramref name="data"/>[i]).</summary>
    public static void Enable(IMemoryView bus, PciEnumeration pci, ushort rid, int cap, ulong tableAddress, IReadOnlyList<ulong> addresses, IReadOnlyList<uint> data)
    {
        ArgumentNullException.ThrowIfNull(bus); ArgumentNullException.ThrowIfNull(pci);
        ArgumentNullException.ThrowIfNull(addresses); ArgumentNullException.ThrowIfNull(data);
        var ctl = pci.Read(rid, cap + 2, 2);
        pci.Write(rid, cap + 2, 2, ctl | EnableBit | FunctionMask); // enabled with the function masked while the table is written
        for (var i = 0; i < addresses.Count; i++)
        {
            var e = tableAddress + (ulong)i * 16; // MSI-X table entry, PCI LB 3.0 §6.8.2.6-9
            bus.Write(new PhysAddr(e), 4, (uint)addresses[i], BusAttributes.Cpu);
            bus.Write(new PhysAddr(e + 4), 4, addresses[i] >> 32, BusAttributes.Cpu);
            bus.Write(new PhysAddr(e + 8), 4, data[i], BusAttributes.Cpu);
            bus.Write(new PhysAddr(e + 12), 4, 0, BusAttributes.Cpu);
        }
        pci.Write(rid, cap + 2, 2, (ctl | EnableBit) & ~FunctionMask);
    }

    /// <summary>Clears MSI-X Enable.</summary>
    public static void Disable(PciEnumeration pci, ushort rid, int cap)
    {
        ArgumentNullException.ThrowIfNull(pci);
        pci.Write(rid, cap + 2, 2, pci.Read(rid, cap + 2, 2) & ~EnableBit);
    }
}
