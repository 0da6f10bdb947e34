using Doorbell.Memory;
namespace Doorbell.Pci;

/// <summary>
/// Config-space layout, declared once. Offsets from PCI Local Bus 3.0 §6.1 (type 0), PCI-to-PCI Bridge 1.2 §3.2
/// (type 1), PCI Express Base 4.0 §7.5 (PCIe capability) and §7.8/§7.7 (AER, ACS extended capabilities).
/// </summary>
public static class PciCfg
{
    // Common header (PCI LB 3.0 §6.1)
    public const int VendorId = 0x00, DeviceId = 0x02, Command = 0x04, Status = 0x06, RevisionId = 0x08,
        ClassProg = 0x09, ClassCode = 0x0A, CacheLineSize = 0x0C, LatencyTimer = 0x0D, HeaderType = 0x0E, Bist = 0x0F,
        Bar0 = 0x10, CapabilitiesPointer = 0x34, InterruptLine = 0x3C, InterruptPin = 0x3D;
    // Type 0
    public const int SubsystemVendorId = 0x2C, SubsystemId = 0x2E, ExpansionRom = 0x30;
    // Type 1 (PCI-PCI Bridge 1.2 §3.2)
    public const int PrimaryBus = 0x18, SecondaryBus = 0x19, SubordinateBus = 0x1A, SecondaryLatency = 0x1B,
        IoBase = 0x1C, IoLimit = 0x1D, SecondaryStatus = 0x1E, MemoryBase = 0x20, MemoryLimit = 0x22,
        PrefMemoryBase = 0x24, PrefMemoryLimit = 0x26, PrefBaseUpper = 0x28, PrefLimitUpper = 0x2C,
        IoBaseUpper = 0x30, IoLimitUpper = 0x32, BridgeRom = 0x38, BridgeControl = 0x3E;

    // COMMAND bits
    public const ushort CmdIo = 1 << 0, CmdMemory = 1 << 1, CmdBusMaster = 1 << 2, CmdParity = 1 << 6, CmdSerr = 1 << 8,
        CmdIntxDisable = 1 << 10;
    // STATUS bits
    public const ushort StsInterrupt = 1 << 3, StsCapList = 1 << 4;
    public const ushort StsW1cMask = 0xF900; // master/target abort, SERR, parity (bits 8, 11..15)

    // BAR low bits
    public const uint BarIo = 1, BarMem64 = 0x4, BarPrefetch = 0x8;

    // Capability IDs (PCI LB 3.0 App. H; PCIe 4.0 §7.6)
    public const byte CapPm = 0x01, CapMsi = 0x05, CapPcie = 0x10, CapMsix = 0x11;
    public const ushort ExtCapAer = 0x0001, ExtCapAcs = 0x000D;
    public const int ExtCapStart = 0x100;

    // MSI control (PCI LB 3.0 §6.8.1)
    public const ushort MsiEnable = 1 << 0, Msi64 = 1 << 7, MsiPerVectorMask = 1 << 8;
    // MSI-X control (PCI LB 3.0 §6.8.2)
    public const ushort MsixEnable = 1 << 15, MsixFunctionMask = 1 << 14;
    public const int MsixEntrySize = 16;
    // PCIe capability (PCIe 4.0 §7.5.3)
    public const int PcieCaps = 0x02, PcieDevCap = 0x04, PcieDevCtl = 0x08, PcieDevSta = 0x0A, PcieLinkCap = 0x0C,
        PcieLinkCtl = 0x10, PcieLinkSta = 0x12, PcieSlotCap = 0x14, PcieSlotCtl = 0x18, PcieSlotSta = 0x1A,
        PcieRootCtl = 0x1C, PcieRootSta = 0x20, PcieDevCap2 = 0x24, PcieDevCtl2 = 0x28, PcieCapSize = 0x3C;
    public const uint DevCapFlr = 1u << 28;
    public const ushort DevCtlInitiateFlr = 1 << 15;
    // ACS capability bits (PCIe 4.0 §7.7.8.2)
    public const ushort AcsSourceValidation = 1 << 0, AcsTranslationBlocking = 1 << 1, AcsRequestRedirect = 1 << 2,
        AcsCompletionRedirect = 1 << 3, AcsUpstreamForwarding = 1 << 4, AcsEgressControl = 1 << 5, AcsDirectTranslated = 1 << 6;

    /// <summary>Type-0 header, the table tracing and reports use.</summary>
    public static readonly RegisterDescriptor[] Type0Header =
    [
        new(0x00, 2, "VENDOR_ID", RegisterAccess.ReadOnly), new(0x02, 2, "DEVICE_ID", RegisterAccess.ReadOnly),
        new(0x04, 2, "COMMAND", RegisterAccess.ReadWrite), new(0x06, 2, "STATUS", RegisterAccess.WriteOneToClear),
        new(0x08, 1, "REVISION_ID", RegisterAccess.ReadOnly), new(0x09, 3, "CLASS_CODE", RegisterAccess.ReadOnly),
        new(0x0C, 1, "CACHE_LINE_SIZE", RegisterAccess.ReadWrite), new(0x0D, 1, "LATENCY_TIMER", RegisterAccess.ReadWrite),
        new(0x0E, 1, "HEADER_TYPE", RegisterAccess.ReadOnly), new(0x0F, 1, "BIST", RegisterAccess.ReadOnly),
        new(0x10, 4, "BAR0", RegisterAccess.ReadWrite), new(0x14, 4, "BAR1", RegisterAccess.ReadWrite), new(0x18, 4, "BAR2", RegisterAccess.ReadWrite),
        new(0x1C, 4, "BAR3", RegisterAccess.ReadWrite), new(0x20, 4, "BAR4", RegisterAccess.ReadWrite), new(0x24, 4, "BAR5", RegisterAccess.ReadWrite),
        new(0x28, 4, "CARDBUS_CIS", RegisterAccess.ReadOnly), new(0x2C, 2, "SUBSYSTEM_VENDOR_ID", RegisterAccess.ReadOnly),
        new(0x2E, 2, "SUBSYSTEM_ID", RegisterAccess.ReadOnly), new(0x30, 4, "EXPANSION_ROM", RegisterAccess.ReadOnly),
        new(0x34, 1, "CAPABILITIES_PTR", RegisterAccess.ReadOnly), new(0x3C, 1, "INTERRUPT_LINE", RegisterAccess.ReadWrite),
        new(0x3D, 1, "INTERRUPT_PIN", RegisterAccess.ReadOnly), new(0x3E, 1, "MIN_GNT", RegisterAccess.ReadOnly), new(0x3F, 1, "MAX_LAT", RegisterAccess.ReadOnly),
    ];

    /// <summary>Type-1 header (bridges).</summary>
    public static readonly RegisterDescriptor[] Type1Header =
    [
        new(0x00, 2, "VENDOR_ID", RegisterAccess.ReadOnly), new(0x02, 2, "DEVICE_ID", RegisterAccess.ReadOnly),
        new(0x04, 2, "COMMAND", RegisterAccess.ReadWrite), new(0x06, 2, "STATUS", RegisterAccess.WriteOneToClear),
        new(0x08, 1, "REVISION_ID", RegisterAccess.ReadOnly), new(0x09, 3, "CLASS_CODE", RegisterAccess.ReadOnly),
        new(0x0C, 1, "CACHE_LINE_SIZE", RegisterAccess.ReadWrite), new(0x0E, 1, "HEADER_TYPE", RegisterAccess.ReadOnly),
        new(0x10, 4, "BAR0", RegisterAccess.ReadWrite), new(0x14, 4, "BAR1", RegisterAccess.ReadWrite),
        new(0x18, 1, "PRIMARY_BUS", RegisterAccess.ReadWrite), new(0x19, 1, "SECONDARY_BUS", RegisterAccess.ReadWrite),
        new(0x1A, 1, "SUBORDINATE_BUS", RegisterAccess.ReadWrite), new(0x1B, 1, "SECONDARY_LATENCY", RegisterAccess.ReadOnly),
        new(0x1C, 1, "IO_BASE", RegisterAccess.ReadWrite), new(0x1D, 1, "IO_LIMIT", RegisterAccess.ReadWrite),
        new(0x1E, 2, "SECONDARY_STATUS", RegisterAccess.WriteOneToClear), new(0x20, 2, "MEMORY_BASE", RegisterAccess.ReadWrite),
        new(0x22, 2, "MEMORY_LIMIT", RegisterAccess.ReadWrite), new(0x24, 2, "PREF_MEMORY_BASE", RegisterAccess.ReadWrite),
        new(0x26, 2, "PREF_MEMORY_LIMIT", RegisterAccess.ReadWrite), new(0x28, 4, "PREF_BASE_UPPER32", RegisterAccess.ReadWrite),
        new(0x2C, 4, "PREF_LIMIT_UPPER32", RegisterAccess.ReadWrite), new(0x30, 2, "IO_BASE_UPPER16", RegisterAccess.ReadWrite),
        new(0x32, 2, "IO_LIMIT_UPPER16", RegisterAccess.ReadWrite), new(0x34, 1, "CAPABILITIES_PTR", RegisterAccess.ReadOnly),
        new(0x38, 4, "EXPANSION_ROM", RegisterAccess.ReadOnly), new(0x3C, 1, "INTERRUPT_LINE", RegisterAccess.ReadWrite),
        new(0x3D, 1, "INTERRUPT_PIN", RegisterAccess.ReadOnly), new(0x3E, 2, "BRIDGE_CONTROL", RegisterAccess.ReadWrite),
    ];

    /// <summary>Requester ID (PCIe 4.0 §2.2.6.2): bus[15:8], device[7:3], function[2:0].</summary>
    public static ushort Rid(int bus, int device, int function) => (ushort)((bus << 8) | (device << 3) | function);

    public static string Bdf(ushort rid) => $"{rid >> 8:x2}:{(rid >> 3) & 0x1f:x2}.{rid & 7}";
}
