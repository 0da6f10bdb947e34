namespace Doorbell.Gic.Its;

/// <summary>ITS command opcodes, DW0[7:0] of a 32-byte command (Arm IHI 0069 §6.3; values as in Linux arm-gic-v3.h).</summary>
public static class ItsOpcode
{
    public const byte Movi = 0x01, Int = 0x03, Clear = 0x04, Sync = 0x05, Mapd = 0x08, Mapc = 0x09,
        Mapti = 0x0A, Mapi = 0x0B, Inv = 0x0C, Invall = 0x0D, Movall = 0x0E, Discard = 0x0F;

    public static string Name(int op) => op switch
    {
        Movi => "MOVI", Int => "INT", Clear => "CLEAR", Sync => "SYNC", Mapd => "MAPD", Mapc => "MAPC",
        Mapti => "MAPTI", Mapi => "MAPI", Inv => "INV", Invall => "INVALL", Movall => "MOVALL", Discard => "DISCARD",
        _ => $"op 0x{op:x2}",
    };
}

/// <summary>
/// Command error codes. The values reported by Linux/KVM (arm-gic-v3.h: 0x01, command byte, reason) are the
/// pattern; where Linux defines no constant Doorbell follows the same pattern with the reasons
/// 01 DeviceID out of range, 02 size / processor out of range, 03 collection out of range, 04 unmapped device,
/// 05 EventID out of range, 06 physical INTID out of range, 07 unmapped interrupt, 09 unmapped collection.
/// CLEAR's unmapped-interrupt code is 0x010507 as in Linux. Unsupported opcodes report 0x01FF00 | opcode (IMPDEF).
/// </summary>
public static class ItsError
{
    public const uint MoviUnmappedInterrupt = 0x010107, MoviUnmappedCollection = 0x010109,
        IntUnmappedInterrupt = 0x010307, ClearUnmappedInterrupt = 0x010507,
        MapdDeviceOor = 0x010801, MapdIttSizeOor = 0x010802, MapcProcnumOor = 0x010902, MapcCollectionOor = 0x010903,
        MaptiUnmappedDevice = 0x010A04, MaptiIdOor = 0x010A05, MaptiPhysicalIdOor = 0x010A06,
        InvUnmappedInterrupt = 0x010C07, InvallUnmappedCollection = 0x010D09, MovallProcnumOor = 0x010E01,
        DiscardUnmappedInterrupt = 0x010F07;

    public const byte DeviceOor = 0x01, SizeOor = 0x02, CollectionOor = 0x03, UnmappedDevice = 0x04, EventOor = 0x05,
        PhysicalIdOor = 0x06, UnmappedInterrupt = 0x07, UnmappedCollection = 0x09;

    public static uint Code(byte opcode, byte reason) =>
        opcode == ItsOpcode.Clear && reason == UnmappedInterrupt ? ClearUnmappedInterrupt : 0x01_0000u | ((uint)opcode << 8) | reason;

    public static uint Unsupported(byte opcode) => 0x01_FF00u | opcode;
    /// <summary>The command could not be read from the queue (bus abort). IMPDEF code.</summary>
    public const uint CommandFetchAbort = 0x01_FE00;
}

/// <summary>Why a write to GITS_TRANSLATER did not make an LPI pending (the architecture drops such writes silently).</summary>
public enum ItsDropReason : byte
{
    None = 0,
    NoDeviceId,
    ItsDisabled,
    DeviceIdOutOfRange,
    UnmappedDevice,
    EventIdOutOfRange,
    UnmappedInterrupt,
    UnmappedCollection,
    /// <summary>The target redistributor did not accept the LPI (LPIs disabled there, or INTID beyond its property table).</summary>
    LpiRejected,
}

/// <summary>One command error: the code, the command, and where in the queue it stalled.</summary>
public readonly record struct ItsCommandError(uint Code, byte Opcode, uint QueueOffset, uint DeviceId, uint EventId)
{
    public override string ToString() => $"{ItsOpcode.Name(Opcode)} at queue offset 0x{QueueOffset:x}: error 0x{Code:x6} (DeviceID {DeviceId}, EventID {EventId})";
}

/// <summary>One dropped MSI.</summary>
public readonly record struct ItsDrop(ItsDropReason Reason, uint DeviceId, uint EventId);

/// <summary>
/// Encoders for 32-byte ITS commands (field positions: IHI 0069 §6.3, as tabulated in arm-layouts.md). Used by
/// the host driver and by tests to build queues that read like the specification.
/// </summary>
public static class ItsCommand
{
    public static void Mapd(Span<ulong> c, uint deviceId, ulong ittAddress, int eventIdBits, bool valid)
    {
        c.Clear();
        c[0] = ItsOpcode.Mapd | ((ulong)deviceId << 32);
        c[1] = (ulong)(uint)(Math.Max(eventIdBits, 1) - 1) & 0x1F;
        c[2] = (ittAddress & 0x000F_FFFF_FFFF_FF00UL) | (valid ? 1UL << 63 : 0);
    }

    /// <summary>MAPC: RDbase is the PE number (GITS_TYPER.PTA = 0) or the redistributor's physical address >> 16 (PTA = 1).</summary>
    public static void Mapc(Span<ulong> c, ushort icid, ulong rdBase, bool valid)
    {
        c.Clear();
        c[0] = ItsOpcode.Mapc;
        c[2] = icid | ((rdBase & 0xF_FFFF_FFFFUL) << 16) | (valid ? 1UL << 63 : 0);
    }

    public static void Mapti(Span<ulong> c, uint deviceId, uint eventId, uint pIntid, ushort icid)
    {
        c.Clear();
        c[0] = ItsOpcode.Mapti | ((ulong)deviceId << 32);
        c[1] = eventId | ((ulong)pIntid << 32);
        c[2] = icid;
    }

    public static void Mapi(Span<ulong> c, uint deviceId, uint eventId, ushort icid)
    {
        c.Clear();
        c[0] = ItsOpcode.Mapi | ((ulong)deviceId << 32);
        c[1] = eventId;
        c[2] = icid;
    }

    public static void Movi(Span<ulong> c, uint deviceId, uint eventId, ushort icid)
    {
        c.Clear();
        c[0] = ItsOpcode.Movi | ((ulong)deviceId << 32);
        c[1] = eventId;
        c[2] = icid;
    }

    /// <summary>INT, CLEAR, INV, DISCARD: DeviceID and EventID only.</summary>
    public static void DeviceEvent(Span<ulong> c, byte opcode, uint deviceId, uint eventId)
    {
        c.Clear();
        c[0] = opcode | ((ulong)deviceId << 32);
        c[1] = eventId;
    }

    public static void Invall(Span<ulong> c, ushort icid)
    {
        c.Clear();
        c[0] = ItsOpcode.Invall;
        c[2] = icid;
    }

    public static void Sync(Span<ulong> c, ulong rdBase)
    {
        c.Clear();
        c[0] = ItsOpcode.Sync;
        c[2] = (rdBase & 0xF_FFFF_FFFFUL) << 16;
    }

    public static void Movall(Span<ulong> c, ulong rdBase1, ulong rdBase2)
    {
        c.Clear();
        c[0] = ItsOpcode.Movall;
        c[2] = (rdBase1 & 0xF_FFFF_FFFFUL) << 16;
        c[3] = (rdBase2 & 0xF_FFFF_FFFFUL) << 16;
    }
}
