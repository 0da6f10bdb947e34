using Doorbell.Memory;

namespace Doorbell.Kvm;

/// <summary>
/// What guest software running on a vCPU sees as its physical address space: every access is a load or store of that
/// vCPU (memslot → in-kernel device → MMIO exit to the VMM, <see cref="Vcpu.Read"/>/<see cref="Vcpu.Write"/>). It is the
/// <see cref="IMemoryView"/> the guest kernel's drivers are given — the same seam the host kernel's drivers take over the
/// system bus — so Doorbell's own GIC, ITS and PCI drivers run unchanged as guest software. Span accesses and fills of
/// guest RAM go straight to the memslots (a guest memcpy/memset); elsewhere they are split into naturally aligned
/// scalar accesses, as a CPU's string copy to MMIO would be.
/// </summary>
public sealed class VcpuMemoryView(Vcpu vcpu) : IMemoryView
{
    public Vcpu Vcpu { get; } = vcpu ?? throw new ArgumentNullException(nameof(vcpu));
    GuestMemory Ram => Vcpu.Vm.Memory;

    public BusStatus Read(PhysAddr address, int size, out ulong value, in BusAttributes attributes) => Vcpu.Read(address.Value, size, out value);
    public BusStatus Write(PhysAddr address, int size, ulong value, in BusAttributes attributes) => Vcpu.Write(address.Value, size, value);
    public BusStatus ReadU64(ulong address, out ulong value) => Vcpu.Read(address, 8, out value);
    public BusStatus WriteU64(ulong address, ulong value) => Vcpu.Write(address, 8, value);

    public BusStatus ReadU32(ulong address, out uint value)
    {
        var s = Vcpu.Read(address, 4, out var v);
        value = (uint)v;
        return s;
    }

    public BusStatus WriteU32(ulong address, uint value) => Vcpu.Write(address, 4, value);

    public BusStatus Read(ulong address, Span<byte> destination, in BusAttributes attributes)
    {
        if (Ram.IsMemory(address, (ulong)destination.Length)) return Ram.Read(address, destination);
        for (var pos = 0; pos < destination.Length;)
        {
            var a = address + (ulong)pos;
            var n = Chunk(a, destination.Length - pos);
            var s = Vcpu.Read(a, n, out var v);
            if (s != BusStatus.Ok) return s;
            for (var i = 0; i < n; i++) destination[pos + i] = (byte)(v >> (8 * i));
            pos += n;
        }
        return BusStatus.Ok;
    }

    public BusStatus Write(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes)
    {
        if (Ram.IsMemory(address, (ulong)source.Length)) return Ram.Write(address, source);
        for (var pos = 0; pos < source.Length;)
        {
            var a = address + (ulong)pos;
            var n = Chunk(a, source.Length - pos);
            ulong v = 0;
            for (var i = 0; i < n; i++) v |= (ulong)source[pos + i] << (8 * i);
            var s = Vcpu.Write(a, n, v);
            if (s != BusStatus.Ok) return s;
            pos += n;
        }
        return BusStatus.Ok;
    }

    /// <summary>The largest naturally aligned access (8, 4, 2, 1) at <paramref name="a"/> not beyond <paramref name="left"/>.</summary>
    static int Chunk(ulong a, int left)
    {
        foreach (var n in (ReadOnlySpan<int>)[8, 4, 2])
            if (left >= n && a % (ulong)n == 0) return n;
        return 1;
    }

    public BusStatus ReadBestEffort(ulong address, Span<byte> destination, in BusAttributes attributes)
    {
        if (Ram.IsMemory(address, (ulong)destination.Length)) return Ram.Read(address, destination);
        var first = BusStatus.Ok;
        for (var pos = 0; pos < destination.Length; pos++)
        {
            var s = Vcpu.Read(address + (ulong)pos, 1, out var v);
            destination[pos] = s == BusStatus.Ok ? (byte)v : (byte)0;
            if (s != BusStatus.Ok && first == BusStatus.Ok) first = s;
        }
        return first;
    }

    public BusStatus WriteBestEffort(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes)
    {
        if (Ram.IsMemory(address, (ulong)source.Length)) return Ram.Write(address, source);
        var first = BusStatus.Ok;
        for (var pos = 0; pos < source.Length; pos++)
        {
            var s = Vcpu.Write(address + (ulong)pos, 1, source[pos]);
            if (s != BusStatus.Ok && first == BusStatus.Ok) first = s;
        }
        return first;
    }

    public bool IsRam(ulong address, ulong length) => Ram.IsMemory(address, length);
    public BusStatus Fill(ulong address, ulong length, byte value) => Ram.Fill(address, length, value);
}
