using Doorbell.Vmsa;

namespace Doorbell.Smmu.V3;

/// <summary>
/// Per-board configuration of an SMMUv3 instance. The ID registers are computed from it and advertise only what
/// the model implements: AArch64 tables, little-endian, no ATS/PRI/stall/HTTU, MSIs, SEV, ASID16/VMID16.
/// </summary>
public sealed record SmmuV3Options
{
    /// <summary>IDR1.SIDSIZE: StreamID bits (0..32).</summary>
    public int StreamIdBits { get; init; } = 16;
    /// <summary>IDR1.SSIDSIZE: SubstreamID bits (0..20).</summary>
    public int SubstreamIdBits { get; init; } = 20;
    /// <summary>IDR1.CMDQS / EVTQS: log2 of the largest command / event queue (entries).</summary>
    public int CommandQueueLog2Max { get; init; } = 19;
    public int EventQueueLog2Max { get; init; } = 19;
    /// <summary>IDR0.S1P / S2P.</summary>
    public bool Stage1 { get; init; } = true;
    public bool Stage2 { get; init; } = true;
    /// <summary>IDR0.ST_LEVEL = 1: 2-level stream tables. IDR0.CD2L: 2-level CD tables.</summary>
    public bool TwoLevelStreamTable { get; init; } = true;
    public bool TwoLevelCdTable { get; init; } = true;
    /// <summary>IDR3.RIL: range invalidation (TLBI with TG/NUM/SCALE). Implies SMMUv3.2 (AIDR).</summary>
    public bool RangeInvalidation { get; init; } = true;
    /// <summary>IDR0.MSI: MSIs for CMD_SYNC, event queue and GERROR.</summary>
    public bool Msi { get; init; } = true;
    /// <summary>IDR5.OAS in bits (32, 36, 40, 42, 44, 48, 52).</summary>
    public int OutputAddressBits { get; init; } = 44;
    public bool Granule4K { get; init; } = true;
    public bool Granule16K { get; init; } = true;
    public bool Granule64K { get; init; } = true;
    /// <summary>The SMMU's own DeviceID for its MSI writes (its msi-parent ID), or null when its writes carry none.</summary>
    public uint? OwnDeviceId { get; init; }
    /// <summary>IIDR value (implementer/product); Arm MMU-600-like by default.</summary>
    public uint Iidr { get; init; } = 0x0483_043B;

    public static readonly SmmuV3Options QemuVirt = new();

    /// <summary>IDR5.OAS encoding of an output size in bits (PS/IPS encoding), or −1.</summary>
    public static int EncodeAddressSize(int bits) => bits switch
    {
        32 => 0, 36 => 1, 40 => 2, 42 => 3, 44 => 4, 48 => 5, 52 => 6, _ => -1,
    };

    /// <summary>PS/IPS/OAS encoding to bits; 7 (reserved) gives −1.</summary>
    public static int DecodeAddressSize(uint encoded) => encoded switch
    {
        0 => 32, 1 => 36, 2 => 40, 3 => 42, 4 => 44, 5 => 48, 6 => 52, _ => -1,
    };

    internal bool SupportsGranule(Granule g) => g switch
    {
        Granule.Size4K => Granule4K,
        Granule.Size16K => Granule16K,
        _ => Granule64K,
    };

    /// <summary>Throws for a board-construction mistake (never for anything a guest does).</summary>
    public void Validate()
    {
        if (StreamIdBits is < 0 or > 32) throw new ArgumentOutOfRangeException(nameof(StreamIdBits));
        if (SubstreamIdBits is < 0 or > 20) throw new ArgumentOutOfRangeException(nameof(SubstreamIdBits));
        if (CommandQueueLog2Max is < 0 or > 19) throw new ArgumentOutOfRangeException(nameof(CommandQueueLog2Max));
        if (EventQueueLog2Max is < 0 or > 19) throw new ArgumentOutOfRangeException(nameof(EventQueueLog2Max));
        if (EncodeAddressSize(OutputAddressBits) < 0) throw new ArgumentOutOfRangeException(nameof(OutputAddressBits));
        if (!Stage1 && !Stage2) throw new ArgumentException("an SMMU implements at least one stage");
        if (!Granule4K && !Granule16K && !Granule64K) throw new ArgumentException("at least one granule");
    }

    public uint Idr0 =>
        (Stage2 ? 1u << SmmuV3Field.Idr0S2P : 0) | (Stage1 ? 1u << SmmuV3Field.Idr0S1P : 0)
        | 2u << SmmuV3Field.Idr0TtfShift          // AArch64 tables only
        | 1u << SmmuV3Field.Idr0Cohacc
        | 1u << SmmuV3Field.Idr0Asid16
        | (Msi ? 1u << SmmuV3Field.Idr0Msi : 0)
        | 1u << SmmuV3Field.Idr0Sev
        | 1u << SmmuV3Field.Idr0Vmid16
        | (TwoLevelCdTable ? 1u << SmmuV3Field.Idr0Cd2l : 0)
        | 2u << SmmuV3Field.Idr0TtEndianShift     // little-endian only
        | 1u << SmmuV3Field.Idr0StallModelShift   // stall not supported
        | (TwoLevelStreamTable ? 1u << SmmuV3Field.Idr0StLevelShift : 0);

    public uint Idr1 =>
        (uint)StreamIdBits << SmmuV3Field.Idr1SidSizeShift
        | (uint)SubstreamIdBits << SmmuV3Field.Idr1SsidSizeShift
        | (uint)EventQueueLog2Max << SmmuV3Field.Idr1EvtqsShift
        | (uint)CommandQueueLog2Max << SmmuV3Field.Idr1CmdqsShift;

    public uint Idr3 => RangeInvalidation ? 1u << SmmuV3Field.Idr3Ril : 0;

    public uint Idr5 =>
        (uint)EncodeAddressSize(OutputAddressBits) << SmmuV3Field.Idr5OasShift
        | (Granule4K ? 1u << SmmuV3Field.Idr5Gran4K : 0)
        | (Granule16K ? 1u << SmmuV3Field.Idr5Gran16K : 0)
        | (Granule64K ? 1u << SmmuV3Field.Idr5Gran64K : 0);

    /// <summary>AIDR: SMMUv3.2 when range invalidation is implemented, else SMMUv3.1.</summary>
    public uint Aidr => RangeInvalidation ? 2u : 1u;
}
