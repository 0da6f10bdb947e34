using System.Runtime.CompilerServices;
using Doorbell.Memory;
using Doorbell.Tracing;
using Doorbell.Vmsa;

namespace Doorbell.Iommu;

/// <summary>
/// The transfer loop of every SMMU front end (SMMUv3 stream ports, SMMUv2 stream ports), once a transaction's stream
/// has resolved to a translating context: the transfer is translated per translation block through the
/// <see cref="Translator"/>'s one fast path and each block's bytes go to the bus with the attributes unchanged. What a
/// fault means (an event record, fault registers, RAZ/WI or abort) stays the front end's: the loop stops at the
/// faulting block and says where.
/// </summary>
public static class TransferLoop
{
    /// <summary>
    /// Carries out [<paramref name="address"/>, + length): reads into <paramref name="rd"/> or writes
    /// <paramref name="wr"/>. True when every block went to the bus, or the bus answered an error
    /// (<paramref name="status"/>); false at a translation fault, with the offset of the faulting block in
    /// <paramref name="done"/> (the bytes before it were transferred) and the fault. With a <paramref name="trace"/>,
    /// each block is traced under <see cref="TraceCategory.SmmuTranslate"/> when that category is on.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Run(Translator translator, TranslationContext context, IMemoryView bus, ulong address,
        Span<byte> rd, ReadOnlySpan<byte> wr, bool write, AccessFlags access, in BusAttributes attributes,
        Trace? trace, string traceSource, uint streamId, out BusStatus status, out int done, out TranslationFault fault)
    {
        var length = write ? wr.Length : rd.Length;
        var pos = 0;
        var va = address;
        while (pos < length)
        {
            if (!translator.Translate(context, va, access, out var entry, out fault))
            {
                status = BusStatus.SlaveError;
                done = pos;
                return false;
            }
            var inBlock = entry.SizeLog2 >= 63 ? ulong.MaxValue : entry.SizeBytes - (va & entry.OffsetMask);
            var chunk = (int)Math.Min((ulong)(length - pos), inBlock);
            var pa = entry.Translate(va);
            if (trace is not null && trace.IsOn(TraceCategory.SmmuTranslate))
                trace.Emit(TraceCategory.SmmuTranslate, traceSource, $"SID 0x{streamId:x} {(write ? "write" : "read")} IOVA 0x{va:x} -> PA 0x{pa:x} ({chunk} bytes)");
            var s = write ? bus.Write(pa, wr.Slice(pos, chunk), attributes) : bus.Read(pa, rd.Slice(pos, chunk), attributes);
            if (s != BusStatus.Ok)
            {
                status = s;
                done = pos;
                return true;
            }
            pos += chunk;
            va += (ulong)chunk;
        }
        status = BusStatus.Ok;
        done = length;
        Unsafe.SkipInit(out fault);
        return true;
    }
}
