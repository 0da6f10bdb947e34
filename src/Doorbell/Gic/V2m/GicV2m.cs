using Doorbell.Memory;
using Doorbell.Tracing;

namespace Doorbell.Gic.V2m;

/// <summary>Something that takes an SPI as an edge (a GICv2 or GICv3 distributor).</summary>
public interface ISpiSink
{
    /// <summary>Sets SPI <paramref name="intid"/> pending (edge). Out-of-range INTIDs are ignored.</summary>
    void PulseSpi(int intid);
}

/// <summary>
/// A GICv2m MSI frame (Arm SBSA / "GICv2m" frame layout; facts also in QEMU hw/intc/arm_gicv2m.c and Linux
/// irq-gic-v2m.c): MSI_TYPER at 0x008 (base INTID [25:16], number of SPIs [9:0]), MSI_SETSPI_NS at 0x040,
/// MSI_IIDR at 0xFCC. A write of N to MSI_SETSPI_NS raises SPI N (an INTID) when base ≤ N &lt; base + count,
/// whoever wrote it: the frame sees no DeviceID, so it cannot isolate MSIs.
/// Known limits: no Secure frame (MSI_SETSPI_S); writes of data outside the frame's range are dropped (counted).
/// </summary>
public sealed class GicV2m : IMmioHandler
{
    public const uint MSI_TYPER = 0x008, MSI_SETSPI_NS = 0x040, MSI_IIDR = 0xFCC;

    enum V2m { None, Typer, SetSpi, Iidr }

    /// <summary>The frame's registers, declared once: the table drives dispatch, access rules and names.</summary>
    public static readonly RegisterDescriptor[] Registers =
    [
        new(MSI_TYPER, 4, "MSI_TYPER", RegisterAccess.ReadOnly, Id: (int)V2m.Typer),
        new(MSI_SETSPI_NS, 4, "MSI_SETSPI_NS", RegisterAccess.WriteOnly, Id: (int)V2m.SetSpi, MinSize: 2), // 16- or 32-bit MSI writes
        new(MSI_IIDR, 4, "MSI_IIDR", RegisterAccess.ReadOnly, Id: (int)V2m.Iidr),
    ];
    public const ulong FrameSize = 0x1000;
    /// <summary>The table compiled for dispatch.</summary>
    public static readonly RegisterBlock Block = new("gicv2m", Registers, FrameSize, "GICv2m frame (read-only register)");

    readonly ISpiSink _gic;
    readonly StrictMonitor _strict;

    /// <summary>The machine's trace (category gicv2m), when the board gave one.</summary>
    public Trace? Trace { get; set; }

    /// <param name="baseIntid">First SPI of the frame, as an INTID (≥ 32).</param>
    public GicV2m(ISpiSink gic, int baseIntid, int count, StrictMonitor? strict = null)
    {
        ArgumentNullException.ThrowIfNull(gic);
        if (baseIntid < 32 || baseIntid > 1019 || count < 1 || count > 1023 || baseIntid + count > 1020) throw new ArgumentOutOfRangeException(nameof(baseIntid));
        _gic = gic; BaseIntid = baseIntid; Count = count; _strict = strict ?? new StrictMonitor();
    }

    public int BaseIntid { get; }
    public int Count { get; }
    public long Raised { get; private set; }
    public long Dropped { get; private set; }
    /// <summary>DeviceIDs seen on SETSPI writes are ignored; this counts writes that carried none (CPU stores) for reporting.</summary>
    public long WritesWithoutDeviceId { get; private set; }

    public void Map(IMmioMap bus, PhysAddr @base)
    {
        ArgumentNullException.ThrowIfNull(bus);
        bus.MapMmio(@base, FrameSize, this, new MmioAccessRules(AccessSizes.All, true, MmioViolation.RazWi), "gicv2m");
    }

    public BusStatus Read(ulong offset, int size, out ulong value, in BusAttributes attributes)
    {
        value = RegisterDispatch<RegisterFile>.Read(new RegisterFile(this), offset, size, in attributes);
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong offset, int size, ulong value, in BusAttributes attributes)
    {
        RegisterDispatch<RegisterFile>.Write(new RegisterFile(this), offset, size, value, attributes, _strict);
        return BusStatus.Ok;
    }

    readonly struct RegisterFile(GicV2m frame) : IRegisterFile
    {
        public static RegisterBlock Block => GicV2m.Block;

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        public ulong Read(RegisterRef r, in BusAttributes attributes) => (V2m)r.Id switch
        {
            V2m.Typer => ((ulong)(uint)frame.BaseIntid << 16) | (uint)frame.Count,
            _ => 0, // MSI_IIDR: 0
        };

        public void Write(RegisterRef r, ulong value, in BusAttributes attributes)
        {
            if ((V2m)r.Id == V2m.SetSpi) frame.SetSpi(in attributes, value, r);
        }
    }

    void SetSpi(in BusAttributes attributes, ulong value, RegisterRef r)
    {
        if (!attributes.HasDeviceId) WritesWithoutDeviceId++;
        var intid = (int)(value & 0x3FF);
        if (intid < BaseIntid || intid >= BaseIntid + Count)
        {
            Dropped++;
            if (_strict.Enabled) _strict.Report("gicv2m", "GICv2m MSI_SETSPI_NS (data outside MSI_TYPER range is ignored)", $"SETSPI {intid} outside {BaseIntid}..{BaseIntid + Count - 1}");
            return;
        }
        Raised++;
        if (Trace is { } t && t.IsOn(TraceCategory.Gicv2m)) t.Emit(TraceCategory.Gicv2m, "gicv2m", $"{Block.NameOf(r)} <- {intid} ({(attributes.HasDeviceId ? $"from DeviceID 0x{attributes.DeviceId:x}, not checked" : "no DeviceID")}): SPI {intid} raised");
        _gic.PulseSpi(intid);
    }
}
