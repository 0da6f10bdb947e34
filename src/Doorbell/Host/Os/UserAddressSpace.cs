using System.Runtime.InteropServices;
using Doorbell.Memory;

// A modelled process address space: virtual pages backed by host RAM pages (anonymous mappings, faulted in on
// first touch or pin) or by device MMIO (PFN mappings from a VFIO region mmap). Pinning is what VFIO's MAP_DMA does
// (pin_user_pages). Known limits: 4 KiB pages only; no fork/COW; no swap; munmap of a pinned page keeps the host
// page alive until it is unpinned (as Linux's page refcount does).
namespace Doorbell.Host.Os;

/// <summary>Decides whether a PFN (device) mapping may be touched now; false raises SIGBUS (vfio-pci: memory decode
/// off or the device in D3).</summary>
public interface IUserMappingGuard
{
    bool CanAccess { get; }
}

public enum UserAccess : byte { Ok, Segv, Bus }

[Flags]
public enum UserProt { None = 0, Read = 1, Write = 2 }

/// <summary>A process's virtual memory (its mm): vaddr → host physical page.</summary>
public sealed class UserAddressSpace
{
    const ulong Page = 4096;
    const ulong MmapBase = 0x7f00_0000_0000;

    sealed class Vma
    {
        public ulong Start, End; // [Start, End)
        public UserProt Prot;
        public bool Pfn;
        /// <summary>Memory of a real client process, reached through a window of host physical addresses
        /// (<see cref="MapForeign"/>): resolved like a PFN mapping, pinned and accounted like anonymous memory.</summary>
        public bool Foreign;
        public ulong PfnBase;
        public IUserMappingGuard? Guard;
    }

    readonly IPhysPageAllocator _alloc;
    readonly List<Vma> _vmas = []; // sorted by Start
    readonly Dictionary<ulong, ulong> _pages = []; // anonymous vpn -> host phys
    readonly Dictionary<ulong, int> _pinned = []; // host phys -> pin count
    readonly HashSet<ulong> _orphans = []; // unmapped while pinned: freed at last unpin
    ulong _nextVa = MmapBase;

    /// <summary>A process whose anonymous pages come from <paramref name="pages"/> (zeroed blocks) in <paramref name="bus"/>'s RAM.</summary>
    public UserAddressSpace(IMemoryView bus, IPhysPageAllocator pages)
    {
        ArgumentNullException.ThrowIfNull(bus);
        ArgumentNullException.ThrowIfNull(pages);
        Bus = bus;
        _alloc = pages;
    }

    public IMemoryView Bus { get; }
    /// <summary>
    /// The event loop of the machine this address space lives on (its kernel's), or null for a bare one: what a VM
    /// created over this memory defers its vCPUs' interrupt entry to (one loop per machine, docs/design.md).
    /// </summary>
    public Doorbell.Runtime.EventLoop? Loop { get; init; }
    public long ResidentPages => _pages.Count;
    public long PinnedPages { get; private set; }

    /// <summary>mmap(NULL, length, prot, MAP_PRIVATE|MAP_ANONYMOUS): returns the page-aligned vaddr, or 0 for length 0.</summary>
    public ulong MapAnonymous(ulong length, UserProt prot = UserProt.Read | UserProt.Write)
    {
        if (length == 0) return 0;
        var len = (length + Page - 1) & ~(Page - 1);
        var va = _nextVa;
        _nextVa += len + Page; // a guard page between mappings
        Insert(new Vma { Start = va, End = va + len, Prot = prot });
        return va;
    }

    /// <summary>Maps device memory (VM_PFNMAP) at a fresh vaddr, or at <paramref name="fixedVaddr"/> (MAP_FIXED:
    /// whatever was mapped there is unmapped first) when it is nonzero.</summary>
    public ulong MapPfn(ulong length, ulong hostPhys, UserProt prot, IUserMappingGuard? guard, ulong fixedVaddr = 0)
    {
        var len = (length + Page - 1) & ~(Page - 1);
        var va = fixedVaddr;
        if (va != 0) Unmap(va, len);
        else { va = _nextVa; _nextVa += len + Page; }
        Insert(new Vma { Start = va, End = va + len, Prot = prot, Pfn = true, PfnBase = hostPhys, Guard = guard });
        return va;
    }

    /// <summary>Describes memory that a real client process owns at [vaddr, vaddr+length) (page-aligned) and that the
    /// bus reaches at host physical <paramref name="windowPhys"/> onwards. Only the gaps not already mapped are added,
    /// each gap at the window offset matching its vaddr; returns the number of pages added.</summary>
    public ulong MapForeign(ulong vaddr, ulong length, ulong windowPhys, UserProt prot = UserProt.Read | UserProt.Write)
    {
        if (vaddr % Page != 0 || length % Page != 0 || length == 0 || vaddr + length < vaddr) return 0;
        var end = vaddr + length;
        var at = vaddr;
        ulong added = 0;
        while (at < end)
        {
            var v = Find(at);
            if (v is not null) { at = Math.Min(v.End, end); continue; }
            var next = end;
            foreach (var w in _vmas)
                if (w.Start > at) { next = Math.Min(next, w.Start); break; }
            Insert(new Vma { Start = at, End = next, Prot = prot, Pfn = true, Foreign = true, PfnBase = windowPhys + (at - vaddr) });
            added += (next - at) / Page;
            at = next;
        }
        return added;
    }

    /// <summary>True when every page of [vaddr, vaddr+length) is described by a foreign mapping.</summary>
    public bool IsForeign(ulong vaddr, ulong length)
    {
        var end = vaddr + length;
        var at = vaddr;
        while (at < end)
        {
            var v = Find(at);
            if (v is null || !v.Foreign) return false;
            at = v.End;
        }
        return true;
    }

    void Insert(Vma v)
    {
        var i = 0;
        while (i < _vmas.Count && _vmas[i].Start < v.Start) i++;
        _vmas.Insert(i, v);
    }

    /// <summary>munmap of whole mappings inside [vaddr, vaddr+length): 0 or -EINVAL for misalignment.</summary>
    public int Unmap(ulong vaddr, ulong length)
    {
        if (vaddr % Page != 0 || length == 0) return -22;
        var end = vaddr + ((length + Page - 1) & ~(Page - 1));
        for (var i = _vmas.Count - 1; i >= 0; i--)
        {
            var v = _vmas[i];
            if (v.Start >= end || v.End <= vaddr) continue;
            var s = Math.Max(v.Start, vaddr);
            var e = Math.Min(v.End, end);
            if (!v.Pfn)
                for (var p = s; p < e; p += Page)
                    if (_pages.Remove(p / Page, out var phys))
                    {
                        if (_pinned.ContainsKey(phys)) _orphans.Add(phys); else _alloc.Free(phys, Page);
                    }
            if (s == v.Start && e == v.End) _vmas.RemoveAt(i);
            else if (s == v.Start) { if (v.Pfn) v.PfnBase += e - v.Start; v.Start = e; }
            else if (e == v.End) v.End = s;
            else
            {
                var tail = new Vma { Start = e, End = v.End, Prot = v.Prot, Pfn = v.Pfn, Foreign = v.Foreign, PfnBase = v.PfnBase + (e - v.Start), Guard = v.Guard };
                v.End = s;
                _vmas.Insert(i + 1, tail);
            }
        }
        return 0;
    }

    Vma? Find(ulong vaddr)
    {
        // binary search: last vma with Start <= vaddr
        int lo = 0, hi = _vmas.Count - 1, found = -1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >> 1;
            if (_vmas[mid].Start <= vaddr) { found = mid; lo = mid + 1; } else hi = mid - 1;
        }
        return found >= 0 && vaddr < _vmas[found].End ? _vmas[found] : null;
    }

    /// <summary>Faults in (if needed) and returns the host physical address backing <paramref name="vaddr"/>.</summary>
    public UserAccess Translate(ulong vaddr, bool write, out ulong phys)
    {
        phys = 0;
        var v = Find(vaddr);
        if (v is null) return UserAccess.Segv;
        if ((v.Prot & (write ? UserProt.Write : UserProt.Read)) == 0) return UserAccess.Segv;
        if (v.Pfn)
        {
            if (v.Guard is { CanAccess: false }) return UserAccess.Bus;
            phys = v.PfnBase + (vaddr - v.Start);
            return UserAccess.Ok;
        }
        var vpn = vaddr / Page;
        if (!_pages.TryGetValue(vpn, out var pagePhys))
        {
            if (!_alloc.TryAllocate(Page, out pagePhys)) return UserAccess.Bus; // OOM: SIGBUS
            _pages[vpn] = pagePhys;
        }
        phys = pagePhys + (vaddr % Page);
        return UserAccess.Ok;
    }

    /// <summary>A CPU load from user memory (page by page through the bus).</summary>
    public UserAccess Read(ulong vaddr, Span<byte> destination)
    {
        var done = 0;
        while (done < destination.Length)
        {
            var va = vaddr + (ulong)done;
            var r = Translate(va, false, out var phys);
            if (r != UserAccess.Ok) return r;
            var chunk = (int)Math.Min((ulong)(destination.Length - done), Page - va % Page);
            if (Bus.Read(phys, destination.Slice(done, chunk), BusAttributes.Cpu) != BusStatus.Ok) return UserAccess.Bus;
            done += chunk;
        }
        return UserAccess.Ok;
    }

    /// <summary>A CPU store to user memory.</summary>
    public UserAccess Write(ulong vaddr, ReadOnlySpan<byte> source)
    {
        var done = 0;
        while (done < source.Length)
        {
            var va = vaddr + (ulong)done;
            var r = Translate(va, true, out var phys);
            if (r != UserAccess.Ok) return r;
            var chunk = (int)Math.Min((ulong)(source.Length - done), Page - va % Page);
            if (Bus.Write(phys, source.Slice(done, chunk), BusAttributes.Cpu) != BusStatus.Ok) return UserAccess.Bus;
            done += chunk;
        }
        return UserAccess.Ok;
    }

    /// <summary>Host pages that could still back anonymous memory (free in the allocator plus already resident).</summary>
    public long AvailablePages => (long)(_alloc.FreeBytes / Page) + _pages.Count;

    /// <summary>True when every page of [vaddr, vaddr+length) is mapped; counts the anonymous (pinnable) pages without
    /// touching them, so a caller can refuse a huge request before allocating anything.</summary>
    public bool RangeInfo(ulong vaddr, ulong length, out ulong anonymousPages) => RangeInfo(vaddr, length, out anonymousPages, out _);

    /// <summary><see cref="RangeInfo(ulong, ulong, out ulong)"/> that also counts the foreign (client-owned) pages,
    /// which are accounted as pinned but need no host page.</summary>
    public bool RangeInfo(ulong vaddr, ulong length, out ulong anonymousPages, out ulong foreignPages)
    {
        anonymousPages = 0;
        foreignPages = 0;
        var end = vaddr + length;
        if (end < vaddr) return false;
        var at = vaddr;
        for (var guard = 0; at < end && guard <= _vmas.Count; guard++)
        {
            var v = Find(at);
            if (v is null) return false;
            var e = Math.Min(v.End, end);
            if (!v.Pfn) anonymousPages += (e - at + Page - 1) / Page;
            else if (v.Foreign) foreignPages += (e - at + Page - 1) / Page;
            at = e;
        }
        return at >= end;
    }

    /// <summary>pin_user_pages / follow_pfn: resolves <paramref name="physOut"/>.Length pages from page-aligned
    /// <paramref name="vaddr"/>. Anonymous pages are faulted in and pinned; PFN (MMIO) pages are resolved but not
    /// pinned. Returns the number of pinned (accountable) pages, or -EFAULT when any page is unmapped.</summary>
    public int Pin(ulong vaddr, Span<ulong> physOut, bool write)
    {
        var pinned = 0;
        var need = write ? UserProt.Write : UserProt.Read;
        _pinned.EnsureCapacity(_pinned.Count + physOut.Length);
        var i = 0;
        while (i < physOut.Length)
        {
            var va = vaddr + (ulong)i * Page;
            var v = Find(va);
            if (v is null || (v.Prot & need) == 0 || (v.Pfn && v.Guard is { CanAccess: false }))
            {
                for (var j = 0; j < i; j++) UnpinOne(physOut[j]);
                return -14;
            }
            if (v.Pfn)
            {
                // PFN and foreign mappings resolve arithmetically: the whole run inside this VMA at once (a VMM's
                // guest RAM is one foreign VMA of 10^5..10^6 pages)
                var n = (int)Math.Min((ulong)(physOut.Length - i), (v.End - va) / Page);
                var phys = v.PfnBase + (va - v.Start);
                for (var k = 0; k < n; k++, phys += Page)
                {
                    physOut[i + k] = phys;
                    if (!v.Foreign) continue;
                    CollectionsMarshal.GetValueRefOrAddDefault(_pinned, phys, out _)++;
                }
                if (v.Foreign) { PinnedPages += n; pinned += n; }
                i += n;
                continue;
            }
            if (Translate(va, write, out var p) != UserAccess.Ok)
            {
                for (var j = 0; j < i; j++) UnpinOne(physOut[j]);
                return -14;
            }
            physOut[i] = p;
            CollectionsMarshal.GetValueRefOrAddDefault(_pinned, p, out _)++;
            PinnedPages++;
            pinned++;
            i++;
        }
        return pinned;
    }

    /// <summary>unpin_user_pages for host pages pinned by <see cref="Pin"/> (PFN addresses are ignored).</summary>
    public void Unpin(ReadOnlySpan<ulong> phys)
    {
        foreach (var p in phys) UnpinOne(p);
    }

    void UnpinOne(ulong phys)
    {
        if (!_pinned.TryGetValue(phys, out var n)) return;
        PinnedPages--;
        if (n > 1) { _pinned[phys] = n - 1; return; }
        _pinned.Remove(phys);
        if (_orphans.Remove(phys)) _alloc.Free(phys, Page);
    }
}
