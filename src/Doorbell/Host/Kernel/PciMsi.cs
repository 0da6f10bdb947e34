namespace Doorbell.Host.Kernel;

/// <summary>
/// The PCI core's plain MSI programming (the order of Linux's msi_capability_init; layout from PCI LB 3.0 §6.8.1):
/// with per-vector masking, every vector is masked first; then Message Address (low, high for a 64-bit capability),
/// Message Data, Multiple Message Enable (log2 of the vectors granted), MSI Enable; then the granted vectors are
/// unmasked. Disable clears MSI Enable. Config accesses only, so it runs over a host or a guest ECAM.
/// </summary>
public static class PciMsi
{
    public const byte CapId = 0x05;
    const uint EnableBit = 0x1, Is64 = 0x80, PerVectorMask = 0x100;

    /// <summary>The vectors the capability at <paramref name="cap"/> asks for (Multiple Message Capable, a power of two).</summary>
    public static int MaxVectors(PciEnumeration pci, ushort rid, int cap)
    {
        ArgumentNullException.ThrowIfNull(pci);
        return 1 << (int)(pci.Read(rid, cap + 2, 2) >> 1 & 7);
    }

    /// <summary>
    /// Programs and enables MSI with <paramref name="vectors"/> messages (a power of two): data of vector v is
    /// <paramref name="data"/> with v in its low bits, so <paramref name="data"/> must be aligned to the count.
    /// </summary>
    public static void Enable(PciEnumeration pci, ushort rid, int cap, ulong address, uint data, int vectors)
    {
        ArgumentNullException.ThrowIfNull(pci);
        if (vectors is < 1 or > 32 || (vectors & (vectors - 1)) != 0 || (data & (uint)(vectors - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(vectors));
        var ctl = pci.Read(rid, cap + 2, 2);
        var is64 = (ctl & Is64) != 0;
        var dataOff = cap + (is64 ? 0x0C : 0x08);
        if ((ctl & PerVectorMask) != 0) pci.Write(rid, dataOff + 4, 4, 0xFFFF_FFFF);
        pci.Write(rid, cap + 4, 4, (uint)address);
        if (is64) pci.Write(rid, cap + 8, 4, (uint)(address >> 32));
        pci.Write(rid, dataOff, 2, data & 0xFFFF);
        var mme = (uint)System.Numerics.BitOperations.Log2((uint)vectors) << 4;
        pci.Write(rid, cap + 2, 2, (ctl & ~0x70u & ~EnableBit) | mme);
        pci.Write(rid, cap + 2, 2, (ctl & ~0x70u) | mme | EnableBit);
        if ((ctl & PerVectorMask) != 0) pci.Write(rid, dataOff + 4, 4, vectors == 32 ? 0 : 0xFFFF_FFFF << vectors);
    }

    /// <summary>Clears MSI Enable.</summary>
    public static void Disable(PciEnumeration pci, ushort rid, int cap)
    {
        ArgumentNullException.ThrowIfNull(pci);
        pci.Write(rid, cap + 2, 2, pci.Read(rid, cap + 2, 2) & ~EnableBit);
    }
}
