using System.Buffers.Binary;
using Doorbell.Host.Os;
using Doorbell.Memory;

namespace Doorbell.Kvm;

/// <summary>One memslot: guest physical [GuestPhysAddr, +Size) backed by the VMM's virtual memory at UserspaceAddr.</summary>
public readonly record struct Memslot(uint Slot, uint Flags, ulong GuestPhysAddr, ulong Size, ulong UserspaceAddr)
{
    public bool ReadOnly => (Flags & KvmConst.KVM_MEM_READONLY) != 0;
    public ulong End => GuestPhysAddr + Size;
}

/// <summary>
/// A VM's guest physical memory: memslots backed by the VMM process's memory (<see cref="UserAddressSpace"/>), which is
/// itself backed by host RAM pages — so a page the VMM maps into its VFIO container at IOVA = GPA is the very page the
/// guest reads. Accesses resolve GPA → memslot → VMM virtual address → host page (KVM's gfn_to_hva and copy_from_user).
/// A GPA in no memslot is not memory: <see cref="BusStatus.DecodeError"/> (the vCPU path turns it into an MMIO exit).
/// This is the memory view (<see cref="IMemoryView"/>) of the vITS engine and of the vGIC's redistributors, as KVM's vgic
/// reads guest tables with kvm_read_guest. Attributes are ignored (guest memory has no MMIO side here).
/// </summary>
public sealed class GuestMemory : IMemoryView
{
    Memslot[] _slots = [];

    public GuestMemory(UserAddressSpace vmm)
    {
        ArgumentNullException.ThrowIfNull(vmm);
        Vmm = vmm;
    }

    /// <summary>The VMM process's memory that backs the slots.</summary>
    public UserAddressSpace Vmm { get; }
    public IReadOnlyList<Memslot> Slots => _slots;

    /// <summary>
    /// KVM_SET_USER_MEMORY_REGION (virt/kvm/kvm_main.c rules): unknown flags, unaligned size/GPA/address, a slot number
    /// out of range or a GPA range that wraps give -EINVAL; size 0 deletes the slot; a new range that overlaps another
    /// slot gives -EEXIST; an existing slot may move (same size, flags) but not change size or flags (-EINVAL).
    /// </summary>
    public int SetUserMemoryRegion(in KvmUserspaceMemoryRegion r)
    {
        const ulong page = KvmConst.PageSize;
        if ((r.Flags & ~(KvmConst.KVM_MEM_LOG_DIRTY_PAGES | KvmConst.KVM_MEM_READONLY)) != 0) return -Errno.EINVAL;
        if (r.MemorySize % page != 0 || r.GuestPhysAddr % page != 0 || r.UserspaceAddr % page != 0) return -Errno.EINVAL;
        if (r.Slot >= KvmConst.KVM_USER_MEM_SLOTS) return -Errno.EINVAL;
        if (r.GuestPhysAddr + r.MemorySize < r.GuestPhysAddr || r.UserspaceAddr + r.MemorySize < r.UserspaceAddr) return -Errno.EINVAL;
        var slotId = r.Slot;
        var existing = Array.FindIndex(_slots, s => s.Slot == slotId);
        if (r.MemorySize == 0)
        {
            if (existing < 0) return -Errno.EINVAL;
            _slots = [.. _slots.Where((_, i) => i != existing)];
            return 0;
        }
        if (existing >= 0 && (_slots[existing].Size != r.MemorySize || _slots[existing].Flags != r.Flags)) return -Errno.EINVAL;
        foreach (var s in _slots)
            if (s.Slot != r.Slot && r.GuestPhysAddr < s.End && s.GuestPhysAddr < r.GuestPhysAddr + r.MemorySize) return -Errno.EEXIST;
        var slot = new Memslot(r.Slot, r.Flags, r.GuestPhysAddr, r.MemorySize, r.UserspaceAddr);
        _slots = existing >= 0 ? [.. _slots.Select((s, i) => i == existing ? slot : s)] : [.. _slots, slot];
        Array.Sort(_slots, (a, b) => a.GuestPhysAddr.CompareTo(b.GuestPhysAddr));
        return 0;
    }

    /// <summary>The memslot holding <paramref name="gpa"/>, or -1.</summary>
    public int SlotIndexOf(ulong gpa)
    {
        var s = _slots;
        for (var i = 0; i < s.Length; i++)
            if (gpa >= s[i].GuestPhysAddr && gpa < s[i].End) return i;
        return -1;
    }

    /// <summary>True when [gpa, gpa+length) lies in one memslot.</summary>
    public bool IsMemory(ulong gpa, ulong length)
    {
        var i = SlotIndexOf(gpa);
        return i >= 0 && gpa + length <= _slots[i].End && gpa + length >= gpa;
    }

    /// <summary>VMM virtual address of <paramref name="gpa"/> (gfn_to_hva), or false.</summary>
    public bool TryGetHva(ulong gpa, out ulong hva)
    {
        var i = SlotIndexOf(gpa);
        hva = i < 0 ? 0 : _slots[i].UserspaceAddr + (gpa - _slots[i].GuestPhysAddr);
        return i >= 0;
    }

    /// <summary>Reads guest memory (may span slots); DecodeError where no slot, SlaveError where the VMM's memory faults.</summary>
    public BusStatus Read(ulong gpa, Span<byte> destination)
    {
        var done = 0;
        while (done < destination.Length)
        {
            var a = gpa + (ulong)done;
            var i = SlotIndexOf(a);
            if (i < 0) return BusStatus.DecodeError;
            var s = _slots[i];
            var n = (int)Math.Min((ulong)(destination.Length - done), s.End - a);
            if (Vmm.Read(s.UserspaceAddr + (a - s.GuestPhysAddr), destination.Slice(done, n)) != UserAccess.Ok) return BusStatus.SlaveError;
            done += n;
        }
        return BusStatus.Ok;
    }

    /// <summary>Writes guest memory; a read-only slot rejects the write with SlaveError (KVM: an MMIO exit for the vCPU).</summary>
    public BusStatus Write(ulong gpa, ReadOnlySpan<byte> source)
    {
        var done = 0;
        while (done < source.Length)
        {
            var a = gpa + (ulong)done;
            var i = SlotIndexOf(a);
            if (i < 0) return BusStatus.DecodeError;
            var s = _slots[i];
            if (s.ReadOnly) return BusStatus.SlaveError;
            var n = (int)Math.Min((ulong)(source.Length - done), s.End - a);
            if (Vmm.Write(s.UserspaceAddr + (a - s.GuestPhysAddr), source.Slice(done, n)) != UserAccess.Ok) return BusStatus.SlaveError;
            done += n;
        }
        return BusStatus.Ok;
    }

    public BusStatus ReadU64(ulong address, out ulong value) => Read(new PhysAddr(address), 8, out value, BusAttributes.Cpu);
    public BusStatus WriteU64(ulong address, ulong value) => Write(new PhysAddr(address), 8, value, BusAttributes.Cpu);

    public BusStatus ReadU32(ulong address, out uint value)
    {
        var s = Read(new PhysAddr(address), 4, out var v, BusAttributes.Cpu);
        value = (uint)v;
        return s;
    }

    public BusStatus WriteU32(ulong address, uint value) => Write(new PhysAddr(address), 4, value, BusAttributes.Cpu);

    public BusStatus Read(PhysAddr address, int size, out ulong value, in BusAttributes attributes)
    {
        value = 0;
        if (size is not (1 or 2 or 4 or 8)) return BusStatus.SlaveError;
        Span<byte> b = stackalloc byte[8];
        b.Clear();
        var s = Read(address.Value, b[..size]);
        if (s == BusStatus.Ok) value = BinaryPrimitives.ReadUInt64LittleEndian(b);
        return s;
    }

    public BusStatus Write(PhysAddr address, int size, ulong value, in BusAttributes attributes)
    {
        if (size is not (1 or 2 or 4 or 8)) return BusStatus.SlaveError;
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        return Write(address.Value, b[..size]);
    }

    public BusStatus Read(ulong address, Span<byte> destination, in BusAttributes attributes) => Read(address, destination);
    public BusStatus Write(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes) => Write(address, source);

    public BusStatus ReadBestEffort(ulong address, Span<byte> destination, in BusAttributes attributes)
    {
        var first = BusStatus.Ok;
        for (var pos = 0; pos < destination.Length;)
        {
            var n = Math.Min(destination.Length - pos, (int)(KvmConst.PageSize - (address + (ulong)pos) % KvmConst.PageSize));
            var s = Read(address + (ulong)pos, destination.Slice(pos, n));
            if (s != BusStatus.Ok) { destination.Slice(pos, n).Clear(); if (first == BusStatus.Ok) first = s; }
            pos += n;
        }
        return first;
    }

    public BusStatus WriteBestEffort(ulong address, ReadOnlySpan<byte> source, in BusAttributes attributes)
    {
        var first = BusStatus.Ok;
        for (var pos = 0; pos < source.Length;)
        {
            var n = Math.Min(source.Length - pos, (int)(KvmConst.PageSize - (address + (ulong)pos) % KvmConst.PageSize));
            var s = Write(address + (ulong)pos, source.Slice(pos, n));
            if (s != BusStatus.Ok && first == BusStatus.Ok) first = s;
            pos += n;
        }
        return first;
    }

    public bool IsRam(ulong address, ulong length) => IsMemory(address, length);

    public BusStatus Fill(ulong address, ulong length, byte value)
    {
        if (!IsMemory(address, length)) return BusStatus.DecodeError;
        Span<byte> chunk = stackalloc byte[256];
        chunk.Fill(value);
        for (var done = 0UL; done < length;)
        {
            var n = (int)Math.Min(length - done, (ulong)chunk.Length);
            var s = Write(address + done, chunk[..n]);
            if (s != BusStatus.Ok) return s;
            done += (ulong)n;
        }
        return BusStatus.Ok;
    }
}
