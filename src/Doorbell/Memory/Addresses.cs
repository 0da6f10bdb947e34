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
