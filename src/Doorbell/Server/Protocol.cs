using System.Buffers.Binary;

// The wire protocol between libdoorbell-vfio.so and `doorbell serve`: one SOCK_SEQPACKET packet per request and
// per reply, little-endian. The C side is native/libdoorbell-vfio/protocol.h; both must agree on these numbers.
//   request: u32 op, i32 fd, u64 a0, u64 a1, u64 a2, u64 a3, u32 payload_len, u32 reserved(0), payload…
//   reply:   i64 ret (>= 0 or -errno), u32 payload_len, u32 reserved(0), payload…
// Descriptors travel as SCM_RIGHTS on a request (the eventfds of SET_IRQS and IOEVENTFD, in payload order).
namespace Doorbell.Server;

public enum ServeOp : uint
{
    /// <summary>a0 = RLIMIT_MEMLOCK in bytes (~0 = unlimited), a1 = 1 if the client has CAP_IPC_LOCK, a2 = protocol version.</summary>
    Hello = 1,
    /// <summary>a0 = 0 for /dev/vfio/vfio, 1 for /dev/vfio/$a1. Returns the server-side descriptor.</summary>
    Open = 2,
    Close = 3,
    /// <summary>a0 = request, a1 = 1 for a scalar argument (a2), 0 for a pointer argument (the payload, returned updated).</summary>
    Ioctl = 4,
    /// <summary>a0 = offset, a1 = count. Reply payload = the bytes read.</summary>
    Pread = 5,
    /// <summary>a0 = offset, payload = the bytes.</summary>
    Pwrite = 6,
    /// <summary>a0 = offset, a1 = length, a2 = the client's vaddr (already reserved PROT_NONE), a3 = prot | shared &lt;&lt; 8.</summary>
    Mmap = 7,
    /// <summary>a0 = vaddr, a1 = length.</summary>
    Munmap = 8,
    /// <summary>A trapped load: a0 = vaddr, a1 = size. Reply payload = 8 bytes (value). ret -EFAULT = SIGSEGV, -EIO = SIGBUS.</summary>
    MmioRead = 9,
    /// <summary>A trapped store: a0 = vaddr, a1 = size, a2 = value.</summary>
    MmioWrite = 10,
    /// <summary>Reply payload: server statistics as "key=value" lines.</summary>
    Stats = 11,
    /// <summary>
    /// A trapped store sent posted, as a CPU store to MMIO is on PCIe: same arguments as <see cref="MmioWrite"/>, no
    /// reply (a failure is logged by the server). Requests of one client still run in order, so a later load sees it.
    /// </summary>
    MmioWritePosted = 12,
    /// <summary>
    /// Latency stamps for benchmarks (host CLOCK_MONOTONIC, see LatencyStamps): a0 = 1 starts stamping for this client
    /// (-EBUSY while another client has it), a0 = 0 stops and returns how many stamps there are, a0 = 2 returns up to
    /// 4096 of them from index a1 in the reply payload (each u64 kind, u64 nanoseconds) and their number.
    /// </summary>
    Stamps = 13,
}

/// <summary>A decoded request (payload as a slice of the receive buffer).</summary>
public readonly ref struct ServeRequest
{
    public ServeRequest(ServeOp op, int fd, ulong a0, ulong a1, ulong a2, ulong a3, ReadOnlySpan<byte> payload)
    {
        Op = op; Fd = fd; A0 = a0; A1 = a1; A2 = a2; A3 = a3; Payload = payload;
    }

    public ServeOp Op { get; }
    public int Fd { get; }
    public ulong A0 { get; }
    public ulong A1 { get; }
    public ulong A2 { get; }
    public ulong A3 { get; }
    public ReadOnlySpan<byte> Payload { get; }
}

public static class ServeProtocol
{
    public const int RequestHeader = 48, ReplyHeader = 16;
    public const uint Version = 1;
    /// <summary>Largest packet either side sends (header + 1 MiB of payload).</summary>
    public const int MaxPacket = RequestHeader + (1 << 20);

    /// <summary>Decodes one packet. A malformed packet (short header, unknown op, length mismatch, reserved bits)
    /// gives false and a one-line reason; the server then disconnects that client.</summary>
    public static bool TryDecode(ReadOnlySpan<byte> packet, out ServeRequest request, out string? error)
    {
        request = default;
        if (packet.Length < RequestHeader) { error = $"truncated request ({packet.Length} bytes, header is {RequestHeader})"; return false; }
        var op = BinaryPrimitives.ReadUInt32LittleEndian(packet);
        if (op is < (uint)ServeOp.Hello or > (uint)ServeOp.Stamps) { error = $"unknown operation {op}"; return false; }
        var len = BinaryPrimitives.ReadUInt32LittleEndian(packet[40..]);
        var reserved = BinaryPrimitives.ReadUInt32LittleEndian(packet[44..]);
        if (reserved != 0) { error = "reserved header word is not zero"; return false; }
        if ((ulong)len != (ulong)(packet.Length - RequestHeader)) { error = $"payload length {len} does not match the packet ({packet.Length - RequestHeader} bytes)"; return false; }
        request = new ServeRequest((ServeOp)op, BinaryPrimitives.ReadInt32LittleEndian(packet[4..]),
            BinaryPrimitives.ReadUInt64LittleEndian(packet[8..]), BinaryPrimitives.ReadUInt64LittleEndian(packet[16..]),
            BinaryPrimitives.ReadUInt64LittleEndian(packet[24..]), BinaryPrimitives.ReadUInt64LittleEndian(packet[32..]),
            packet[RequestHeader..]);
        error = null;
        return true;
    }

    /// <summary>Encodes a request (for tests and C# clients); returns its length.</summary>
    public static int Encode(Span<byte> packet, ServeOp op, int fd, ulong a0 = 0, ulong a1 = 0, ulong a2 = 0, ulong a3 = 0, ReadOnlySpan<byte> payload = default)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(packet, (uint)op);
        BinaryPrimitives.WriteInt32LittleEndian(packet[4..], fd);
        BinaryPrimitives.WriteUInt64LittleEndian(packet[8..], a0);
        BinaryPrimitives.WriteUInt64LittleEndian(packet[16..], a1);
        BinaryPrimitives.WriteUInt64LittleEndian(packet[24..], a2);
        BinaryPrimitives.WriteUInt64LittleEndian(packet[32..], a3);
        BinaryPrimitives.WriteUInt32LittleEndian(packet[40..], (uint)payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(packet[44..], 0);
        payload.CopyTo(packet[RequestHeader..]);
        return RequestHeader + payload.Length;
    }

    /// <summary>Writes a reply header; the payload is already in place after it.</summary>
    public static int EncodeReply(Span<byte> packet, long ret, int payloadLength)
    {
        BinaryPrimitives.WriteInt64LittleEndian(packet, ret);
        BinaryPrimitives.WriteUInt32LittleEndian(packet[8..], (uint)payloadLength);
        BinaryPrimitives.WriteUInt32LittleEndian(packet[12..], 0);
        return ReplyHeader + payloadLength;
    }
}
