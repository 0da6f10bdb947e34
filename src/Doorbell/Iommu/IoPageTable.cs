using System.Numerics;
using Doorbell.Memory;
using Doorbell.Vmsa;

namespace Doorbell.Iommu;

// Known limits (details in docs/deviations.md):
// - Unmapping part of a block returns 0 and leaves the block (Linux ≥ 6.10 io-pgtable-arm, no block splitting).
// - Map replaces an EMPTY table by a block (freeing it, as Linux does); a table with live entries is -EEXIST
//   where Linux would silently tear it down.
// - Formats: AArch64 LPAE stage 1 and stage 2 with 4K/16K/64K granules; 52-bit only with 64K (FEAT_LPA).

/// <summary>Mapping permissions and attributes, with Linux's IOMMU_* values (include/linux/iommu.h).</summary>
[Flags]
public enum IoProt
{
    None = 0,
    Read = 1,
    Write = 2,
    Cache = 4,
    NoExec = 8,
    Mmio = 16,
    Priv = 32,
    ReadWrite = Read | Write,
}

/// <summary>io-pgtable formats: ARM_64_LPAE_S1 and ARM_64_LPAE_S2.</summary>
public enum IoPageTableFormat
{
    Stage1,
    Stage2,
}

/// <summary>TLB maintenance a page-table manager asks of its IOMMU driver (Linux iommu_flush_ops).</summary>
public interface IIoTlbFlushOps
{
    /// <summary>A table was removed: walk caches for [iova, iova+size) must go (and the leaf entries below), before this returns.</summary>
    void FlushWalk(ulong iova, ulong size, ulong granule);

    /// <summary>One leaf of <paramref name="granule"/> bytes at <paramref name="iova"/> was unmapped.</summary>
    void AddPage(ulong iova, ulong granule);
}

/// <summary>
/// An io-pgtable-arm style page-table manager: keeps AArch64 LPAE stage-1 or stage-2 tables in emulated memory,
/// maps with the largest block the alignment allows, unmaps, and translates in software. Host drivers use it for
/// their domains; tests use it to build tables. Errors are negative Linux errno values.
/// </summary>
public sealed class IoPageTable
{
    static readonly byte[] Zeros = new byte[1 << 16];

    readonly IMemoryView _bus;
    readonly IPhysPageAllocator _allocator;
    readonly IIoTlbFlushOps? _flush;
    readonly int _gShift;
    readonly int _stride;

    IoPageTable(IMemoryView bus, IPhysPageAllocator allocator, IoPageTableFormat format, Granule granule,
        int ias, int oas, int startLevel, int startBits, ulong pgd, ulong pageSizes, IIoTlbFlushOps? flush)
    {
        _bus = bus;
        _allocator = allocator;
        Format = format;
        Granule = granule;
        InputSize = ias;
        OutputSize = oas;
        StartLevel = startLevel;
        StartBits = startBits;
        TableBase = pgd;
        PageSizeBitmap = pageSizes;
        _flush = flush;
        _gShift = (int)granule;
        _stride = _gShift - 3;
    }

    public IoPageTableFormat Format { get; }
    public Granule Granule { get; }
    /// <summary>IAS: input (IOVA or IPA) bits.</summary>
    public int InputSize { get; }
    /// <summary>OAS: output address bits.</summary>
    public int OutputSize { get; }
    public int StartLevel { get; }
    /// <summary>Input bits resolved at the start level (more than a granule's stride when stage-2 tables are concatenated).</summary>
    public int StartBits { get; }
    /// <summary>Physical address of the first-level table (TTB0 / S2TTB).</summary>
    public ulong TableBase { get; }
    /// <summary>Supported mapping sizes, one bit per size (Linux pgsize_bitmap).</summary>
    public ulong PageSizeBitmap { get; }
    /// <summary>Number of concatenated initial tables (stage 2; 1 otherwise).</summary>
    public int ConcatenatedTables => StartBits > _stride ? 1 << (StartBits - _stride) : 1;

    /// <summary>
    /// Creates a table. Returns 0, -EINVAL for an unsupported granule/IAS/OAS combination, or -ENOMEM.
    /// Stage 1: levels as io-pgtable-arm computes them. Stage 2: a level-0 start with at most 16 entries becomes
    /// concatenated level-1 tables (as Linux does), and a start level the SL0 rules forbid for this output size is
    /// replaced by concatenated tables one level down where that fits.
    /// </summary>
    public static int Create(IMemoryView bus, IPhysPageAllocator allocator, IoPageTableFormat format, Granule granule,
        int ias, int oas, out IoPageTable? table, IIoTlbFlushOps? flush = null)
    {
        ArgumentNullException.ThrowIfNull(bus);
        ArgumentNullException.ThrowIfNull(allocator);
        table = null;
        var gShift = (int)granule;
        if (granule is not (Granule.Size4K or Granule.Size16K or Granule.Size64K)) return -Errno.EINVAL;
        var maxBits = granule == Granule.Size64K ? 52 : 48;
        if (oas is not (32 or 36 or 40 or 42 or 44 or 48 or 52) || oas > maxBits) return -Errno.EINVAL;
        if (ias < gShift + 1 || ias > maxBits) return -Errno.EINVAL;
        if (format == IoPageTableFormat.Stage2 && ias > oas) return -Errno.EINVAL;
        var stride = gShift - 3;
        var levels = (ias - gShift + stride - 1) / stride;
        var start = 4 - levels;
        var bits = ias - (gShift + (levels - 1) * stride);
        if (format == IoPageTableFormat.Stage2)
        {
            if (start == 0 && bits <= 4) { start = 1; bits += stride; }
            // Bounded: the start level only moves down, at most to level 3.
            while (new Stage2Config { Granule = granule, InputSize = ias, StartLevel = start, TableBase = 0, OutputSize = oas }.Validate() is not null)
            {
                if (start >= 3 || bits > 4) return -Errno.EINVAL;
                start++;
                bits += stride;
            }
        }
        ulong sizes = granule switch
        {
            Granule.Size4K => (1UL << 12) | (1UL << 21) | (1UL << 30),
            Granule.Size16K => (1UL << 14) | (1UL << 25),
            _ => (1UL << 16) | (1UL << 29) | (oas > 48 ? 1UL << 42 : 0),
        };
        // Only sizes a level at or below the start level can hold.
        var maxShift = gShift + (3 - start) * stride;
        sizes &= maxShift >= 63 ? ulong.MaxValue : (2UL << maxShift) - 1;
        var pgdSize = Math.Max(64UL, 8UL << bits);
        if (!allocator.TryAllocate(pgdSize, out var pgd)) return -Errno.ENOMEM;
        ZeroTable(bus, pgd, pgdSize);
        table = new IoPageTable(bus, allocator, format, granule, ias, oas, start, bits, pgd, sizes, flush);
        return 0;
    }

    static void ZeroTable(IMemoryView bus, ulong pa, ulong size)
    {
        for (ulong off = 0; off < size; off += (ulong)Zeros.Length)
            bus.Write(pa + off, Zeros.AsSpan(0, (int)Math.Min((ulong)Zeros.Length, size - off)), BusAttributes.Cpu);
    }

    int LevelShift(int level) => _gShift + (3 - level) * _stride;

    int BitsAt(int level) => level == StartLevel ? StartBits : _stride;

    ulong ReadPte(ulong pa)
    {
        _bus.ReadU64(pa, out var v);
        return v;
    }

    void WritePte(ulong pa, ulong v) => _bus.WriteU64(pa, v);

    ulong PteAddress(ulong table, int level, ulong iova) => table + (((iova >> LevelShift(level)) & ((1UL << BitsAt(level)) - 1)) << 3);

    ulong NextTable(ulong pte) => Descriptors.OutputAddress(pte, Granule, OutputSize);

    bool IsTable(ulong pte, int level) => level < 3 && (pte & 3) == 3;

    /// <summary>Leaf attributes for a mapping (Linux arm_lpae_prot_to_pte facts: AF, inner shareable, AP / S2AP, AttrIndx / MemAttr, XN, nG).</summary>
    ulong LeafAttributes(IoProt prot)
    {
        var pte = Descriptors.Af | (3UL << Descriptors.ShShift);
        if (Format == IoPageTableFormat.Stage1)
        {
            pte |= Descriptors.NotGlobal;
            if ((prot & IoProt.Write) == 0 && (prot & IoProt.Read) != 0) pte |= Descriptors.Ap2;
            if ((prot & IoProt.Priv) == 0) pte |= Descriptors.Ap1;
            var idx = (prot & IoProt.Mmio) != 0 ? 2UL : (prot & IoProt.Cache) != 0 ? 1UL : 0UL; // MAIR: NC 0, cacheable 1, device 2
            pte |= idx << Descriptors.AttrIndxShift;
            if ((prot & IoProt.NoExec) != 0) pte |= Descriptors.Uxn | Descriptors.Pxn;
        }
        else
        {
            if ((prot & IoProt.Read) != 0) pte |= Descriptors.S2ApRead;
            if ((prot & IoProt.Write) != 0) pte |= Descriptors.S2ApWrite;
            var memAttr = (prot & IoProt.Mmio) != 0 ? 0x1UL : (prot & IoProt.Cache) != 0 ? 0xFUL : 0x5UL; // Device-nGnRE, WB, NC
            pte |= memAttr << Descriptors.MemAttrShift;
            if ((prot & IoProt.NoExec) != 0) pte |= Descriptors.S2Xn1; // XN[1:0] = 0b10: not executable (see deviations)
        }
        return pte;
    }

    /// <summary>
    /// Maps [iova, iova+size) to [pa, pa+size), each piece with the largest supported size the alignment allows.
    /// Returns 0, -EINVAL (size 0 or not aligned to the smallest page), -ERANGE (outside IAS/OAS), -EEXIST (something
    /// already mapped there; what this call mapped is undone) or -ENOMEM. A mapping with neither Read nor Write maps
    /// nothing and returns 0, as Linux does.
    /// </summary>
    public int Map(ulong iova, ulong pa, ulong size, IoProt prot)
    {
        var min = 1UL << _gShift;
        if (size == 0 || ((iova | pa | size) & (min - 1)) != 0) return -Errno.EINVAL;
        if (iova + size < iova || pa + size < pa) return -Errno.ERANGE;
        if (((iova + size - 1) >> InputSize) != 0 || ((pa + size - 1) >> OutputSize) != 0) return -Errno.ERANGE;
        if ((prot & (IoProt.Read | IoProt.Write)) == 0) return 0;
        var attrs = LeafAttributes(prot);
        ulong done = 0;
        while (done < size)
        {
            var pgsize = PickSize(iova + done, pa + done, size - done);
            var r = MapOne(iova + done, pa + done, pgsize, attrs);
            if (r != 0)
            {
                if (done > 0) Unmap(iova, done);
                return r;
            }
            done += pgsize;
        }
        return 0;
    }

    ulong PickSize(ulong iova, ulong pa, ulong remaining)
    {
        var sizes = PageSizeBitmap;
        var best = 1UL << _gShift;
        while (sizes != 0)
        {
            var s = 1UL << BitOperations.TrailingZeroCount(sizes);
            sizes &= sizes - 1;
            if (s <= remaining && ((iova | pa) & (s - 1)) == 0) best = s;
        }
        return best;
    }

    int LevelForSize(ulong size)
    {
        for (var l = 3; l >= StartLevel; l--)
            if (1UL << LevelShift(l) == size) return l;
        return -1;
    }

    int MapOne(ulong iova, ulong pa, ulong size, ulong attrs)
    {
        var target = LevelForSize(size);
        if (target < 0) return -Errno.EINVAL;
        var table = TableBase;
        for (var level = StartLevel; level < target; level++)
        {
            var ptep = PteAddress(table, level, iova);
            var pte = ReadPte(ptep);
            if ((pte & Descriptors.Valid) == 0)
            {
                var tsize = 1UL << _gShift;
                if (!_allocator.TryAllocate(tsize, out var t)) return -Errno.ENOMEM;
                ZeroTable(_bus, t, tsize);
                pte = Descriptors.Table(t, Granule);
                WritePte(ptep, pte);
            }
            else if (!IsTable(pte, level))
                return -Errno.EEXIST; // a block already covers this range
            table = NextTable(pte);
        }
        var leafp = PteAddress(table, target, iova);
        var old = ReadPte(leafp);
        if ((old & Descriptors.Valid) != 0)
        {
            if (!IsTable(old, target) || !IsEmpty(NextTable(old), target + 1)) return -Errno.EEXIST;
            // An empty table left by earlier unmaps: clear it, invalidate its walk at once (as Linux does), then free it
            // and put the block in its place.
            WritePte(leafp, 0);
            _flush?.FlushWalk(iova, size, 1UL << _gShift);
            FreeTables(NextTable(old), target + 1);
        }
        WritePte(leafp, Descriptors.Leaf(pa, Granule, target, attrs));
        return 0;
    }

    /// <summary>True when no valid leaf exists in the subtree (empty tables below are allowed).</summary>
    bool IsEmpty(ulong table, int level)
    {
        var entries = 1UL << _stride;
        for (ulong i = 0; i < entries; i++)
        {
            var pte = ReadPte(table + i * 8);
            if ((pte & Descriptors.Valid) == 0) continue;
            if (!IsTable(pte, level) || !IsEmpty(NextTable(pte), level + 1)) return false;
        }
        return true;
    }

    /// <summary>
    /// Unmaps [iova, iova+size) piece by piece (largest supported size the alignment allows). Returns the bytes
    /// unmapped, stopping at the first piece with nothing mapped or that would split a block (0 when the first does).
    /// A piece covering a whole table unmaps everything below it and frees the table.
    /// </summary>
    public ulong Unmap(ulong iova, ulong size)
    {
        var min = 1UL << _gShift;
        if (size == 0 || ((iova | size) & (min - 1)) != 0 || iova + size < iova) return 0;
        if (((iova + size - 1) >> InputSize) != 0) return 0;
        ulong done = 0;
        while (done < size)
        {
            var pgsize = PickSize(iova + done, 0, size - done);
            var n = UnmapOne(iova + done, pgsize);
            if (n == 0) break;
            done += n;
        }
        return done;
    }

    ulong UnmapOne(ulong iova, ulong size)
    {
        var target = LevelForSize(size);
        if (target < 0) return 0;
        var table = TableBase;
        for (var level = StartLevel; level <= 3; level++)
        {
            var ptep = PteAddress(table, level, iova);
            var pte = ReadPte(ptep);
            if ((pte & Descriptors.Valid) == 0) return 0;
            var blockSize = 1UL << LevelShift(level);
            if (level == target)
            {
                WritePte(ptep, 0);
                if (IsTable(pte, level))
                {
                    // Walk caches go before the table is given back (it may be reused at once).
                    _flush?.FlushWalk(iova, blockSize, 1UL << _gShift);
                    FreeTables(NextTable(pte), level + 1);
                }
                else
                    _flush?.AddPage(iova, blockSize);
                return blockSize;
            }
            if (!IsTable(pte, level))
                return 0; // a larger block: partial unmap is refused (no splitting)
            table = NextTable(pte);
        }
        return 0;
    }

    void FreeTables(ulong table, int level)
    {
        if (level < 3)
        {
            var entries = 1UL << _stride;
            for (ulong i = 0; i < entries; i++)
            {
                var pte = ReadPte(table + i * 8);
                if ((pte & Descriptors.Valid) != 0 && IsTable(pte, level))
                    FreeTables(NextTable(pte), level + 1);
            }
        }
        _allocator.Free(table, 1UL << _gShift);
    }

    /// <summary>Software walk: the physical address <paramref name="iova"/> maps to, or 0 when unmapped (Linux iova_to_phys).</summary>
    public ulong IovaToPhys(ulong iova)
    {
        if ((iova >> InputSize) != 0) return 0;
        var table = TableBase;
        for (var level = StartLevel; level <= 3; level++)
        {
            var pte = ReadPte(PteAddress(table, level, iova));
            if ((pte & Descriptors.Valid) == 0) return 0;
            if (IsTable(pte, level)) { table = NextTable(pte); continue; }
            if (level == 3 && (pte & 2) == 0) return 0;
            var mask = (1UL << LevelShift(level)) - 1;
            return (Descriptors.OutputAddress(pte, Granule, OutputSize) & ~mask) | (iova & mask);
        }
        return 0;
    }

    /// <summary>Frees every table, the first-level one included. The table must not be used afterwards.</summary>
    public void Free()
    {
        if (StartLevel < 3)
        {
            var entries = 1UL << StartBits;
            for (ulong i = 0; i < entries; i++)
            {
                var pte = ReadPte(TableBase + i * 8);
                if ((pte & Descriptors.Valid) != 0 && IsTable(pte, StartLevel))
                    FreeTables(NextTable(pte), StartLevel + 1);
            }
        }
        _allocator.Free(TableBase, Math.Max(64UL, 8UL << StartBits));
    }

    /// <summary>The MAIR value the stage-1 attribute indices assume (Linux: 0 NC, 1 write-back, 2 Device-nGnRE, 3 inner-NC/outer-WB).</summary>
    public const ulong Mair = 0x44UL | (0xFFUL << 8) | (0x04UL << 16) | (0xF4UL << 24);

    /// <summary>A stage-1 configuration for this table (TTB0 only; TTB1 walks disabled).</summary>
    public Stage1Config CreateStage1Config(ushort asid = 0, bool tbi = false)
    {
        if (Format != IoPageTableFormat.Stage1) throw new InvalidOperationException("not a stage-1 table");
        return new Stage1Config
        {
            Low = new TranslationRegion(Granule, InputSize, TableBase),
            OutputSize = OutputSize,
            Asid = asid,
            Tbi0 = tbi,
            Mair = Mair,
        };
    }

    /// <summary>A stage-2 configuration for this table (start level and concatenation as chosen at creation).</summary>
    public Stage2Config CreateStage2Config(ushort vmid = 0)
    {
        if (Format != IoPageTableFormat.Stage2) throw new InvalidOperationException("not a stage-2 table");
        return new Stage2Config
        {
            Granule = Granule,
            InputSize = InputSize,
            StartLevel = StartLevel,
            TableBase = TableBase,
            OutputSize = OutputSize,
            Vmid = vmid,
        };
    }
}
