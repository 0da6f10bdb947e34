using System.Globalization;

namespace Doorbell.Memory;

/// <summary>A physical address (the output of the last translation stage, or a CPU's view of the bus).</summary>
public readonly record struct PhysAddr(ulong Value) : IComparable<PhysAddr>
{
    public static PhysAddr operator +(PhysAddr a, ulong offset) => new(checked(a.Value + offset));
    public static PhysAddr operator -(PhysAddr a, ulong offset) => new(checked(a.Value - offset));
    public static ulong operator -(PhysAddr a, PhysAddr b) => checked(a.Value - b.Value);
    public static bool operator <(PhysAddr a, PhysAddr b) => a.Value < b.Value;
    public static bool operator >(PhysAddr a, PhysAddr b) => a.Value > b.Value;
    public static bool operator <=(PhysAddr a, PhysAddr b) => a.Value <= b.Value;
    public static bool operator >=(PhysAddr a, PhysAddr b) => a.Value >= b.Value;

    /// <summary>Adds without throwing; false when the sum wraps past 2^64.</summary>
    public bool TryAdd(ulong offset, out PhysAddr result)
    {
        var sum = Value + offset;
        result = new PhysAddr(sum);
        return sum >= Value;
    }

    public PhysAddr AlignDown(ulong alignment) => new(Value & ~(alignment - 1));
    public bool IsAligned(ulong alignment) => (Value & (alignment - 1)) == 0;
    public int CompareTo(PhysAddr other) => Value.CompareTo(other.Value);
    public override string ToString() => "PA 0x" + Value.ToString("x", CultureInfo.InvariantCulture);
}

/// <summary>An I/O virtual address: what a device puts on the bus before the IOMMU (stage-1 input, or stage-2 input when stage 1 is bypassed).</summary>
public readonly record struct Iova(ulong Value) : IComparable<Iova>
{
    public static Iova operator +(Iova a, ulong offset) => new(checked(a.Value + offset));
    public static ulong operator -(Iova a, Iova b) => checked(a.Value - b.Value);
    public bool TryAdd(ulong offset, out Iova result)
    {
        var sum = Value + offset;
        result = new Iova(sum);
        return sum >= Value;
    }
    public int CompareTo(Iova other) => Value.CompareTo(other.Value);
    public override string ToString() => "IOVA 0x" + Value.ToString("x", CultureInfo.InvariantCulture);
}

/// <summary>An intermediate physical address: stage-1 output and stage-2 input.</summary>
public readonly record struct Ipa(ulong Value) : IComparable<Ipa>
{
    public static Ipa operator +(Ipa a, ulong offset) => new(checked(a.Value + offset));
    public static ulong operator -(Ipa a, Ipa b) => checked(a.Value - b.Value);
    public bool TryAdd(ulong offset, out Ipa result)
    {
        var sum = Value + offset;
        result = new Ipa(sum);
        return sum >= Value;
    }
    public int CompareTo(Ipa other) => Value.CompareTo(other.Value);
    public override string ToString() => "IPA 0x" + Value.ToString("x", CultureInfo.InvariantCulture);
}
