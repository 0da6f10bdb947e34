using System.Numerics;
using System.Runtime.InteropServices;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Host.Vfio.Backends;

// vfio_iommu_type1 semantics (Linux drivers/vfio/vfio_iommu_type1.c, behaviour per shared/reference/vfio-semantics.md §1c):
// DMA mappings pinned from the process's memory and mapped into every domain of the container; v1/v2 unmap rules;
// IOVA ranges = aperture minus reserved regions; the interrupt-isolation policy on attach.
// Known limits: no dirty-page tracking (DIRTY_PAGES → ENOTTY, unmap GET_DIRTY_BITMAP → EINVAL); no emulated
// (mdev) groups; wraparound reports -EOVERFLOW (newer kernels) — see docs/deviations.md.
namespace Doorbell.Host.Vfio;

/// <summary>One user DMA mapping (struct vfio_dma).</summary>
public sealed class VfioDma
{
    public ulong Iova { get; internal set; }
    public ulong Size { get; internal set; }
    public ulong Vaddr { get; internal set; }
    public IommuProt Prot { get; internal set; }
    public bool VaddrInvalid { get; internal set; }
    internal ulong[] Pages = [];
    internal int Locked;
    public ulong End => Iova + Size - 1;
}

public sealed class Type1Iommu
{
    const ulong PageSize = 4096;
    const ulong DirtyBitmapSizeMax = 256UL << 20; // DIRTY_BITMAP_SIZE_MAX

    sealed class Domain(IVfioIommuDomain backend)
    {
        public readonly IVfioIommuDomain Backend = backend;
        public readonly List<VfioGroup> Groups = [];
    }

    readonly VfioProcess _process;
    readonly VfioOptions _options;
    readonly List<Domain> _domains = [];
    readonly List<VfioDma> _dmas = []; // sorted by Iova, non-overlapping
    List<(ulong Start, ulong End)> _iovaRanges = []; // empty: everything valid
    uint _dmaAvail;
    int _vaddrInvalidCount;

    internal Type1Iommu(VfioProcess process, bool v2, VfioOptions options)
    {
        _process = process;
        V2 = v2;
        _options = options;
        _dmaAvail = options.DmaEntryLimit;
        PgsizeBitmap = ~(PageSize - 1);
    }

    public bool V2 { get; }
    /// <summary>iommu->pgsize_bitmap: the page sizes every domain supports (sub-page sizes reported as PAGE_SIZE).</summary>
    public ulong PgsizeBitmap { get; private set; }
    public IReadOnlyList<VfioDma> Mappings => _dmas;
    public IReadOnlyList<(ulong Start, ulong End)> IovaRanges => _iovaRanges;
    public uint DmaAvail => _dmaAvail;
    public int DomainCount => _domains.Count;

    ulong MinPageMask => (1UL << BitOperations.TrailingZeroCount(PgsizeBitmap)) - 1;

    internal int CheckExtension(ulong ext) => ext switch
    {
        VfioExtension.Type1Iommu or VfioExtension.Type1v2Iommu or VfioExtension.UnmapAll => 1,
        VfioExtension.UpdateVaddr => 1,
        VfioExtension.DmaCcIommu => _domains.Count > 0 && _domains.All(d => d.Backend.EnforcesCacheCoherency) ? 1 : 0,
        _ => 0,
    };

    internal int Ioctl(uint request, Span<byte> arg)
    {
        if (request == VfioIoctl.IommuGetInfo) return GetInfo(arg);
        if (request == VfioIoctl.IommuMapDma) return MapDmaIoctl(arg);
        if (request == VfioIoctl.IommuUnmapDma) return UnmapDmaIoctl(arg);
        if (request == VfioIoctl.CheckExtension) return CheckExtension(UserArg.TryRead(arg, 4, out uint e) ? e : 0);
        return -Errno.ENOTTY;
    }

    // ---------------------------------------------------------------- GET_INFO
    int GetInfo(Span<byte> arg)
    {
        const int minsz = 16, capsz = 24, infoSize = 24; // offsetofend(iova_pgsizes), offsetofend(cap_offset)
        if (!UserArg.TryRead(arg, minsz, out VfioIommuType1Info info)) return -Errno.EFAULT;
        if (info.Argsz < minsz) return -Errno.EINVAL;
        var outsz = minsz;
        if (info.Argsz >= capsz)
        {
            if (!UserArg.TryRead(arg, capsz, out info)) return -Errno.EFAULT;
            outsz = capsz;
            info.CapOffset = 0;
        }
        info.Flags = VfioIommuInfoFlags.PgSizes;
        info.IovaPgsizes = PgsizeBitmap;

        var caps = new VfioCapChain();
        var mig = new VfioIommuType1InfoCapMigration
        {
            Header = new VfioInfoCapHeader { Id = VfioIommuInfoFlags.CapMigration, Version = 1 },
            Flags = 0,
            PgsizeBitmap = MinPageMask + 1,
            MaxDirtyBitmapSize = DirtyBitmapSizeMax,
        };
        WriteCap(caps.Add(mig.Header.Id, 1, UserArg.SizeOf<VfioIommuType1InfoCapMigration>()), mig);
        var avail = new VfioIommuType1InfoDmaAvail { Header = new VfioInfoCapHeader { Id = VfioIommuInfoFlags.CapDmaAvail, Version = 1 }, Avail = _dmaAvail };
        WriteCap(caps.Add(avail.Header.Id, 1, UserArg.SizeOf<VfioIommuType1InfoDmaAvail>()), avail);
        if (_iovaRanges.Count > 0)
        {
            var hdrSize = UserArg.SizeOf<VfioIommuType1InfoCapIovaRange>();
            var span = caps.Add(VfioIommuInfoFlags.CapIovaRange, 1, hdrSize + _iovaRanges.Count * 16);
            var cap = new VfioIommuType1InfoCapIovaRange { Header = new VfioInfoCapHeader { Id = VfioIommuInfoFlags.CapIovaRange, Version = 1 }, NrIovas = (uint)_iovaRanges.Count };
            WriteCap(span, cap);
            for (var i = 0; i < _iovaRanges.Count; i++)
            {
                var r = new VfioIovaRange { Start = _iovaRanges[i].Start, End = _iovaRanges[i].End };
                MemoryMarshal.Write(span[(hdrSize + i * 16)..], in r);
            }
        }
        if (caps.Size > 0)
        {
            info.Flags |= VfioIommuInfoFlags.Caps;
            if (info.Argsz < infoSize + caps.Size) info.Argsz = (uint)(infoSize + caps.Size);
            else
            {
                if (!caps.CopyTo(arg, infoSize)) return -Errno.EFAULT;
                info.CapOffset = infoSize;
            }
        }
        return UserArg.TryWrite(arg, outsz, info) ? 0 : -Errno.EFAULT;
    }

    static void WriteCap<T>(Span<byte> span, T value) where T : unmanaged
    {
        // Keep the next pointer the chain wrote.
        var next = MemoryMarshal.Read<uint>(span[4..]);
        MemoryMarshal.Write(span, in value);
        MemoryMarshal.Write(span[4..], next);
    }

    // ---------------------------------------------------------------- MAP_DMA
    int MapDmaIoctl(Span<byte> arg)
    {
        const int minsz = 32;
        if (!UserArg.TryRead(arg, minsz, out VfioIommuType1DmaMap map)) return -Errno.EFAULT;
        const uint mask = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite | VfioDmaFlags.MapVaddr;
        if (map.Argsz < minsz || (map.Flags & ~mask) != 0) return -Errno.EINVAL;
        return MapDma(map.Flags, map.Vaddr, map.Iova, map.Size);
    }

    /// <summary>vfio_dma_do_map: 0 or -errno.</summary>
    public int MapDma(uint flags, ulong vaddr, ulong iova, ulong size)
    {
        var setVaddr = (flags & VfioDmaFlags.MapVaddr) != 0;
        var prot = IommuProt.None;
        if ((flags & VfioDmaFlags.MapWrite) != 0) prot |= IommuProt.Write;
        if ((flags & VfioDmaFlags.MapRead) != 0) prot |= IommuProt.Read;
        if ((prot != IommuProt.None && setVaddr) || (prot == IommuProt.None && !setVaddr)) return -Errno.EINVAL;

        var mask = MinPageMask;
        if (size == 0 || ((size | iova | vaddr) & mask) != 0) return -Errno.EINVAL;
        if (iova + (size - 1) < iova || vaddr + (size - 1) < vaddr) return -Errno.EOVERFLOW;

        var found = FindDma(iova, size);
        if (setVaddr)
        {
            if (found < 0) return -Errno.ENOENT;
            var d = _dmas[found];
            if (!d.VaddrInvalid || d.Iova != iova || d.Size != size) return -Errno.EINVAL;
            d.Vaddr = vaddr;
            d.VaddrInvalid = false;
            _vaddrInvalidCount--;
            return 0;
        }
        if (found >= 0) return -Errno.EEXIST;
        if (_dmaAvail == 0) return -Errno.ENOSPC;
        if (!IovaValid(iova, iova + size - 1)) return -Errno.EINVAL;

        // Pin (vfio_pin_pages_remote) against RLIMIT_MEMLOCK. Refuse before allocating when it cannot succeed.
        var limitPages = _process.MemlockLimitBytes / PageSize;
        if (!_process.Memory.RangeInfo(vaddr, size, out var anon, out var foreign)) return -Errno.EFAULT;
        if (!_process.CapIpcLock && _process.LockedPages + anon + foreign > limitPages) return -Errno.ENOMEM;
        if (anon > (ulong)_process.Memory.AvailablePages || size / PageSize > int.MaxValue / 16) return -Errno.ENOMEM;
        var npages = (int)(size / PageSize);
        var pages = new ulong[npages];
        var pinned = _process.Memory.Pin(vaddr, pages, (prot & IommuProt.Write) != 0);
        if (pinned < 0) return pinned;
        if (!_process.CapIpcLock && _process.LockedPages + (ulong)pinned > limitPages)
        {
            _process.Memory.Unpin(pages);
            return -Errno.ENOMEM;
        }
        _process.LockedPages += (ulong)pinned;
        var dma = new VfioDma { Iova = iova, Size = size, Vaddr = vaddr, Prot = prot, Pages = pages, Locked = pinned };

        for (var di = 0; di < _domains.Count; di++)
        {
            var r = MapIntoDomain(_domains[di].Backend, dma);
            if (r != 0)
            {
                for (var dj = 0; dj < di; dj++) _domains[dj].Backend.Unmap(iova, size);
                ReleasePages(dma);
                return r;
            }
        }
        _dmas.Insert(InsertionPoint(iova), dma);
        _dmaAvail--;
        return 0;
    }

    /// <summary>Maps physically contiguous runs of a mapping's pages (vfio_iommu_map per contiguous chunk).</summary>
    static int MapIntoDomain(IVfioIommuDomain domain, VfioDma dma)
    {
        var prot = dma.Prot | (domain.EnforcesCacheCoherency ? IommuProt.Cache : IommuProt.None);
        var pages = dma.Pages;
        var i = 0;
        while (i < pages.Length)
        {
            var j = i + 1;
            while (j < pages.Length && pages[j] == pages[j - 1] + PageSize) j++;
            var r = domain.Map(dma.Iova + (ulong)i * PageSize, pages[i], (ulong)(j - i) * PageSize, prot);
            if (r != 0)
            {
                if (i > 0) domain.Unmap(dma.Iova, (ulong)i * PageSize);
                return r;
            }
            i = j;
        }
        return 0;
    }

    void ReleasePages(VfioDma dma)
    {
        _process.Memory.Unpin(dma.Pages);
        _process.LockedPages -= (ulong)dma.Locked;
        dma.Locked = 0;
    }

    bool IovaValid(ulong start, ulong end)
    {
        if (_iovaRanges.Count == 0) return true;
        foreach (var (s, e) in _iovaRanges)
            if (start >= s && end <= e) return true;
        return false;
    }

    /// <summary>Index of a mapping overlapping [iova, iova+size), or -1 (vfio_find_dma).</summary>
    int FindDma(ulong iova, ulong size)
    {
        var last = iova + (size - 1);
        int lo = 0, hi = _dmas.Count - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >> 1;
            var d = _dmas[mid];
            if (last < d.Iova) hi = mid - 1;
            else if (iova > d.End) lo = mid + 1;
            else return mid;
        }
        return -1;
    }

    int InsertionPoint(ulong iova)
    {
        int lo = 0, hi = _dmas.Count;
        while (lo < hi)
        {
            var mid = (lo + hi) >> 1;
            if (_dmas[mid].Iova < iova) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    // ---------------------------------------------------------------- UNMAP_DMA
    int UnmapDmaIoctl(Span<byte> arg)
    {
        const int minsz = 24;
        if (!UserArg.TryRead(arg, minsz, out VfioIommuType1DmaUnmap unmap)) return -Errno.EFAULT;
        const uint mask = VfioDmaFlags.UnmapGetDirtyBitmap | VfioDmaFlags.UnmapAll | VfioDmaFlags.UnmapVaddr;
        if (unmap.Argsz < minsz || (unmap.Flags & ~mask) != 0) return -Errno.EINVAL;
        if ((unmap.Flags & VfioDmaFlags.UnmapGetDirtyBitmap) != 0) return -Errno.EINVAL; // dirty tracking never started
        var r = UnmapDma(unmap.Flags, unmap.Iova, unmap.Size, out var unmapped);
        if (r != 0) return r;
        unmap.Size = unmapped;
        return UserArg.TryWrite(arg, minsz, unmap) ? 0 : -Errno.EFAULT;
    }

    /// <summary>vfio_dma_do_unmap: 0 or -errno; <paramref name="unmapped"/> is the number of bytes unmapped.</summary>
    public int UnmapDma(uint flags, ulong iova, ulong size, out ulong unmapped)
    {
        unmapped = 0;
        var all = (flags & VfioDmaFlags.UnmapAll) != 0;
        var invalidateVaddr = (flags & VfioDmaFlags.UnmapVaddr) != 0;
        var pgmask = MinPageMask;
        if ((iova & pgmask) != 0) return -Errno.EINVAL;
        ulong iovaEnd;
        if (all)
        {
            if (iova != 0 || size != 0) return -Errno.EINVAL;
            iovaEnd = ulong.MaxValue;
        }
        else
        {
            if (size == 0 || (size & pgmask) != 0) return -Errno.EINVAL;
            if (iova + (size - 1) < iova) return -Errno.EOVERFLOW;
            iovaEnd = iova + (size - 1);
        }

        if (V2 && !all)
        {
            var a = FindDma(iova, 1);
            if (a >= 0 && _dmas[a].Iova != iova) return -Errno.EINVAL;
            var b = FindDma(iovaEnd, 1);
            if (b >= 0 && _dmas[b].End != iovaEnd) return -Errno.EINVAL;
        }

        // First mapping overlapping [iova, iovaEnd].
        var n = InsertionPoint(iova);
        if (n > 0 && _dmas[n - 1].End >= iova) n--;
        if (invalidateVaddr)
        {
            var first = n;
            for (var i = n; i < _dmas.Count; i++)
            {
                var d = _dmas[i];
                if (d.Iova > iovaEnd) break;
                if (!V2 && iova > d.Iova) break;
                if (d.VaddrInvalid)
                {
                    for (var j = first; j < i; j++) { _dmas[j].VaddrInvalid = false; _vaddrInvalidCount--; }
                    unmapped = 0;
                    return -Errno.EINVAL;
                }
                d.VaddrInvalid = true;
                _vaddrInvalidCount++;
                unmapped += d.Size;
            }
            return 0;
        }
        while (n < _dmas.Count)
        {
            var d = _dmas[n];
            if (d.Iova > iovaEnd) break;
            if (!V2 && iova > d.Iova) break;
            RemoveDmaAt(n);
            unmapped += d.Size;
        }
        return 0;
    }

    /// <summary>Era 1: the IOMMU claims IOMMU_CAP_INTR_REMAP. Era 2 (4.11): any isolating MSI domain in the system, or
    /// the capability. Today: every device of the group sits under an isolating MSI domain.</summary>
    bool IsolationCheck(IVfioIommuGroup g) => _options.IsolationEra switch
    {
        IsolationPolicyEra.Era2013 => g.IommuClaimsInterruptRemap,
        IsolationPolicyEra.Era411 => g.SystemHasIsolatedMsiDomain || g.IommuClaimsInterruptRemap,
        _ => g.HasIsolatedMsi,
    };

    void RemoveDmaAt(int index)
    {
        var d = _dmas[index];
        foreach (var dom in _domains) dom.Backend.Unmap(d.Iova, d.Size);
        ReleasePages(d);
        if (d.VaddrInvalid) _vaddrInvalidCount--;
        _dmas.RemoveAt(index);
        _dmaAvail++;
    }

    // ---------------------------------------------------------------- attach / detach
    /// <summary>vfio_iommu_type1_attach_group: 0 or -errno (EINVAL duplicate/conflict, EPERM isolation, EBUSY …).</summary>
    internal int AttachGroup(VfioGroup group)
    {
        if (_domains.Any(d => d.Groups.Contains(group))) return -Errno.EINVAL;
        if (_vaddrInvalidCount > 0) return -Errno.EBUSY;
        var backend = group.Iommu.AllocateDomain();
        if (backend is null) return -Errno.ENOMEM;
        var r = group.Iommu.Attach(backend);
        if (r != 0) { backend.Free(); return r; }

        var resv = group.Iommu.ReservedRegions;
        // Aperture conflict: existing mappings outside the new domain's aperture.
        if (_dmas.Any(d => d.Iova < backend.ApertureStart || d.End > backend.ApertureEnd)) { group.Iommu.Detach(backend); backend.Free(); return -Errno.EINVAL; }
        // Reserved-region conflict with existing mappings.
        foreach (var rr in resv)
        {
            if (rr.Type == IommuResvType.DirectRelaxable || rr.Length == 0) continue;
            if (FindDma(rr.Start, rr.Length) >= 0) { group.Iommu.Detach(backend); backend.Free(); return -Errno.EINVAL; }
        }
        var newRanges = ComputeRanges(_iovaRanges.Count == 0 ? [(0UL, ulong.MaxValue)] : [.. _iovaRanges], backend, resv);
        if (newRanges.Count == 0) { group.Iommu.Detach(backend); backend.Free(); return -Errno.EINVAL; }

        // The interrupt-isolation policy of the selected era (vfio_iommu_type1.c through its history).
        if (!_options.AllowUnsafeInterrupts && !IsolationCheck(group.Iommu)) { group.Iommu.Detach(backend); backend.Free(); return -Errno.EPERM; }

        foreach (var rr in resv)
            if (rr.Type == IommuResvType.SwMsi)
            {
                var c = backend.EnableMsiCookie(rr.Start);
                if (c != 0 && c != -Errno.ENODEV) { group.Iommu.Detach(backend); backend.Free(); return c; }
                break;
            }

        // Try to share an existing compatible domain (no replay needed then).
        foreach (var d in _domains)
        {
            if (d.Backend.EnforcesCacheCoherency != backend.EnforcesCacheCoherency) continue;
            group.Iommu.Detach(backend);
            if (group.Iommu.Attach(d.Backend) == 0)
            {
                backend.Free(); // joined an existing domain: the new one goes (iommu_domain_free)
                d.Groups.Add(group);
                _iovaRanges = newRanges;
                return 0;
            }
            if (group.Iommu.Attach(backend) != 0) { backend.Free(); return -Errno.EINVAL; }
        }

        // Replay existing mappings into the new domain (vfio_iommu_replay).
        for (var i = 0; i < _dmas.Count; i++)
        {
            var m = MapIntoDomain(backend, _dmas[i]);
            if (m != 0)
            {
                for (var j = 0; j < i; j++) backend.Unmap(_dmas[j].Iova, _dmas[j].Size);
                group.Iommu.Detach(backend);
                backend.Free();
                return m;
            }
        }
        var dom = new Domain(backend);
        dom.Groups.Add(group);
        _domains.Add(dom);
        _iovaRanges = newRanges;
        UpdatePgsizeBitmap();
        return 0;
    }

    void UpdatePgsizeBitmap()
    {
        var bitmap = ulong.MaxValue;
        foreach (var d in _domains) bitmap &= d.Backend.PgsizeBitmap;
        if ((bitmap & (PageSize - 1)) != 0)
        {
            bitmap &= ~(PageSize - 1);
            bitmap |= PageSize;
        }
        PgsizeBitmap = bitmap;
    }

    /// <summary>Intersects the ranges with the aperture and removes non-relaxable reserved regions
    /// (vfio_iommu_aper_resize + vfio_iommu_resv_exclude).</summary>
    static List<(ulong Start, ulong End)> ComputeRanges(List<(ulong Start, ulong End)> ranges, IVfioIommuDomain domain, IReadOnlyList<IommuReservedRegion> resv)
    {
        var list = new List<(ulong Start, ulong End)>();
        foreach (var (s, e) in ranges)
        {
            var ns = Math.Max(s, domain.ApertureStart);
            var ne = Math.Min(e, domain.ApertureEnd);
            if (ns <= ne) list.Add((ns, ne));
        }
        foreach (var rr in resv)
        {
            if (rr.Type == IommuResvType.DirectRelaxable || rr.Length == 0) continue;
            var rs = rr.Start;
            var re = rr.End;
            var next = new List<(ulong Start, ulong End)>();
            foreach (var (s, e) in list)
            {
                if (re < s || rs > e) { next.Add((s, e)); continue; }
                if (rs > s) next.Add((s, rs - 1));
                if (re < e) next.Add((re + 1, e));
            }
            list = next;
        }
        return list;
    }

    internal void DetachGroup(VfioGroup group)
    {
        for (var i = 0; i < _domains.Count; i++)
        {
            var d = _domains[i];
            if (!d.Groups.Remove(group)) continue;
            group.Iommu.Detach(d.Backend);
            if (d.Groups.Count == 0)
            {
                if (_domains.Count == 1) UnmapAll();
                else foreach (var m in _dmas) d.Backend.Unmap(m.Iova, m.Size);
                _domains.RemoveAt(i);
                d.Backend.Free();
            }
            break;
        }
        RecomputeRanges();
        UpdatePgsizeBitmap();
    }

    void RecomputeRanges()
    {
        List<(ulong, ulong)> ranges = [];
        var first = true;
        foreach (var d in _domains)
            foreach (var g in d.Groups)
            {
                ranges = ComputeRanges(first ? [(0UL, ulong.MaxValue)] : ranges, d.Backend, g.Iommu.ReservedRegions);
                first = false;
            }
        _iovaRanges = ranges;
    }

    void UnmapAll()
    {
        while (_dmas.Count > 0) RemoveDmaAt(_dmas.Count - 1);
    }

    internal void Release()
    {
        UnmapAll();
        foreach (var d in _domains)
            foreach (var g in d.Groups) g.Iommu.Detach(d.Backend);
        _domains.Clear();
    }
}
