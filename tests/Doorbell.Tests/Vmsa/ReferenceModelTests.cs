using Doorbell.Iommu;
using Doorbell.Memory;
using Doorbell.Vmsa;

namespace Doorbell.Tests.Vmsa;

/// <summary>
/// The walker against an independent naive model: random mappings (all granules, mixed block sizes, contiguous runs,
/// AF = 0 leaves, out-of-range outputs, poisoned table descriptors) are written with the low-level
/// <see cref="TableWriter"/> (and stage 2 of nested with <see cref="IoPageTable"/>), and recorded in a plain list of
/// intervals with abstract attributes. Random lookups must agree on the output address or on the fault
/// (kind, stage, level, fetch address / IPA), for stage 1, stage 2 and nested, with fixed seeds.
/// </summary>
public class ReferenceModelTests
{
    const ulong RamBase = 0x4000_0000;
    const ulong Unbacked = 0x1000_0000;      // no RAM here: descriptor fetches abort
    const ulong S1TableIpa = 0x4000_0000;    // nested: stage-1 tables live at this IPA...
    const ulong S1TableDelta = 0x1000_0000;  // ...which stage 2 maps to IPA + delta
    const ulong NestedWindow = 1UL << 30;    // nested: stage-1 outputs (IPAs) fall in [0, 1G)
    const ulong NestedPaOffset = 1UL << 32;  // nested: stage 2 maps the window to IPA + 4G
    const ulong UnmappedTableIpa = 0x4800_0000;

    enum Kind { Leaf, PoisonAddressSize, PoisonAbort, PoisonBadBlock, PoisonS2Hole }

    sealed record Item(Kind Kind, ulong InBase, ulong Size, int Level, ulong OutBase, bool Af,
        bool Ap2, bool Ap1, bool Uxn, bool Pxn, bool S2R, bool S2W, int S2Xn, ulong PoisonTarget);

    sealed class Model
    {
        public readonly List<Item> Items = [];
        public bool Overlaps(ulong b, ulong size) => Items.Any(i => b < i.InBase + i.Size && i.InBase < b + size);
        public Item? Find(ulong a) => Items.FirstOrDefault(i => a >= i.InBase && a - i.InBase < i.Size);
    }

    static readonly AccessFlags[] Accesses =
    [
        AccessFlags.Read, AccessFlags.Write, AccessFlags.Execute,
        AccessFlags.Read | AccessFlags.Privileged, AccessFlags.Write | AccessFlags.Privileged, AccessFlags.Execute | AccessFlags.Privileged,
    ];

    public static TheoryData<int, Granule> Seeds()
    {
        var d = new TheoryData<int, Granule>();
        for (var seed = 1; seed <= 6; seed++)
            foreach (var g in new[] { Granule.Size4K, Granule.Size16K, Granule.Size64K })
                d.Add(seed, g);
        return d;
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Stage1_matches_the_naive_model(int seed, Granule g) => Run(seed, g, stage2Only: false, nested: false);

    [Fact]
    public void The_random_runs_exercise_every_fault_kind_and_stage()
    {
        var seen = new HashSet<(FaultKind, TranslationStage, bool)>();
        foreach (var g in new[] { Granule.Size4K, Granule.Size16K, Granule.Size64K })
            for (var seed = 1; seed <= 6; seed++)
            {
                seen.UnionWith(Run(seed, g, false, false));
                seen.UnionWith(Run(seed, g, true, false));
                seen.UnionWith(Run(seed, g, false, true));
            }
        foreach (var k in new[] { FaultKind.Translation, FaultKind.AccessFlag, FaultKind.Permission, FaultKind.AddressSize, FaultKind.WalkExternalAbort })
            foreach (var st in new[] { TranslationStage.Stage1, TranslationStage.Stage2 })
                Assert.Contains((k, st, false), seen);
        Assert.Contains((FaultKind.Translation, TranslationStage.Stage2, true), seen);
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Stage2_matches_the_naive_model(int seed, Granule g) => Run(seed, g, stage2Only: true, nested: false);

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Nested_matches_the_naive_model(int seed, Granule g) => Run(seed, g, stage2Only: false, nested: true);

    static HashSet<(FaultKind, TranslationStage, bool)> Run(int seed, Granule g, bool stage2Only, bool nested)
    {
        var seen = new HashSet<(FaultKind, TranslationStage, bool)>();
        var rng = new Random(seed * 7919 + (int)g * 31 + (stage2Only ? 1 : 0) + (nested ? 2 : 0));
        var bus = new PhysicalAddressSpace();
        bus.AddRam(new PhysAddr(RamBase), 1UL << 30);
        int[] sizes = [32, 36, 40, 42, 44, 48];

        // ---- configuration ----
        int ias, oas, start;
        if (nested) { ias = rng.Next(32, 49); oas = 40; start = new TranslationRegion(g, ias, 0).StartLevel; }
        else if (stage2Only)
        {
            oas = sizes[rng.Next(sizes.Length)];
            ias = rng.Next(25, oas + 1);
            var candidates = Enumerable.Range(0, 4).Where(l =>
                new Stage2Config { Granule = g, InputSize = ias, StartLevel = l, TableBase = 0, OutputSize = oas }.Validate() is null).ToList();
            if (candidates.Count == 0) { ias = oas; candidates = [new TranslationRegion(g, ias, 0).StartLevel]; }
            start = candidates[rng.Next(candidates.Count)];
        }
        else { oas = sizes[rng.Next(sizes.Length)]; ias = rng.Next(25, 49); start = new TranslationRegion(g, ias, 0).StartLevel; }

        var stage = stage2Only ? TranslationStage.Stage2 : TranslationStage.Stage1;
        Func<ulong, ulong>? toPa = nested ? ipa => ipa + S1TableDelta : null;
        var w = new TableWriter(bus, g, ias, start, nested ? S1TableIpa : RamBase, toPa);
        var afDisabled = rng.Next(8) == 0;
        var hwAf = !afDisabled && rng.Next(8) == 0;

        // ---- random mappings ----
        var model = new Model();
        var leafLevels = Enumerable.Range(start, 4 - start).Where(l => l == 3 || Descriptors.BlockAllowed(g, l, oas)).ToArray();
        var regionBases = Enumerable.Range(0, 4).Select(_ => RandomBelow(rng, 1UL << ias)).ToArray();
        var outLimit = nested ? NestedWindow : 1UL << oas;
        for (var n = 0; n < 160; n++)
        {
            var level = leafLevels[rng.Next(leafLevels.Length)];
            var shift = g.LevelShift(level);
            var contiguous = rng.Next(10) == 0 && Descriptors.ContiguousBits(g, level) > 0;
            var runShift = shift + (contiguous ? Descriptors.ContiguousBits(g, level) : 0);
            if (runShift >= ias) continue;
            var near = regionBases[rng.Next(regionBases.Length)] + RandomBelow(rng, 1UL << Math.Min(ias, shift + 12));
            var inBase = near & ~((1UL << runShift) - 1);
            if ((inBase >> ias) != 0) continue;
            var size = 1UL << runShift;
            if (model.Overlaps(inBase, size) || TableBelow(w, inBase, size, level)) continue;
            var poison = rng.Next(12);
            if (poison == 0 && level < 3 && !contiguous)
            {
                // A table descriptor at `level` pointing where no table can be.
                var kinds = new List<Kind> { Kind.PoisonAbort };
                if (oas < 48 && !stage2Only && !nested || oas < 48 && stage2Only) kinds.Add(Kind.PoisonAddressSize);
                if (!Descriptors.BlockAllowed(g, level, oas)) kinds.Add(Kind.PoisonBadBlock);
                if (nested) kinds.Add(Kind.PoisonS2Hole);
                var k = kinds[rng.Next(kinds.Count)];
                if (nested && k == Kind.PoisonAbort) k = Kind.PoisonS2Hole;
                var target = k switch
                {
                    Kind.PoisonAddressSize => (1UL << oas) + (1UL << g.Shift()),
                    Kind.PoisonS2Hole => UnmappedTableIpa,
                    _ => Unbacked,
                };
                var desc = k == Kind.PoisonBadBlock
                    ? Descriptors.Leaf(0x1234UL << 30, g, level, Descriptors.Af)
                    : Descriptors.Table(target, g);
                w.SetDescriptor(inBase, level, desc);
                model.Items.Add(new Item(k, inBase, 1UL << shift, level, 0, true, false, false, false, false, false, false, 0, target));
                continue;
            }
            var outBase = RandomBelow(rng, outLimit) & ~((1UL << runShift) - 1);
            if (rng.Next(10) == 0 && (nested || oas < 48)) outBase = ((nested ? 1UL << 40 : 1UL << oas) + RandomBelow(rng, 1UL << 40)) & ~((1UL << runShift) - 1) & ((1UL << 48) - 1);
            var item = new Item(Kind.Leaf, inBase, size, level, outBase, rng.Next(8) != 0,
                rng.Next(2) == 0, rng.Next(2) == 0, rng.Next(3) == 0, rng.Next(3) == 0,
                rng.Next(5) != 0, rng.Next(2) == 0, rng.Next(4), 0);
            ulong attrs = item.Af ? Descriptors.Af : 0;
            if (stage2Only)
                attrs |= (item.S2R ? Descriptors.S2ApRead : 0) | (item.S2W ? Descriptors.S2ApWrite : 0) | ((ulong)item.S2Xn << 53) | (0xFUL << 2);
            else
                attrs |= (item.Ap2 ? Descriptors.Ap2 : 0) | (item.Ap1 ? Descriptors.Ap1 : 0) | (item.Uxn ? Descriptors.Uxn : 0) | (item.Pxn ? Descriptors.Pxn : 0) | Descriptors.NotGlobal;
            w.NextTableAttributes = stage2Only || rng.Next(4) != 0 ? 0 : (ulong)rng.Next(1, 16) << 59;
            if (contiguous) w.ContiguousRun(inBase, level, outBase, attrs);
            else w.Leaf(inBase, level, outBase, attrs);
            w.NextTableAttributes = 0;
            model.Items.Add(item);
        }

        // ---- nested: stage 2 built by IoPageTable, recorded in a chunk dictionary ----
        Dictionary<ulong, IoProt> s2Chunks = [];
        Stage2Config? s2 = null;
        if (nested)
        {
            var alloc = new PhysPageAllocator(0x7000_0000, 0x800_0000);
            Assert.Equal(0, IoPageTable.Create(bus, alloc, IoPageTableFormat.Stage2, Granule.Size4K, 40, 48, out var s2t));
            Assert.Equal(0, s2t!.Map(S1TableIpa, S1TableIpa + S1TableDelta, 0x400_0000, IoProt.ReadWrite)); // the stage-1 tables
            IoProt[] prots = [IoProt.Read, IoProt.Write, IoProt.ReadWrite, IoProt.ReadWrite | IoProt.NoExec, IoProt.Read | IoProt.NoExec];
            for (ulong c = 0; c < NestedWindow >> 21; c++)
            {
                if (rng.Next(10) == 0) continue; // hole
                var prot = prots[rng.Next(prots.Length)];
                Assert.Equal(0, s2t.Map(c << 21, (c << 21) + NestedPaOffset, 1UL << 21, prot));
                s2Chunks[c] = prot;
            }
            s2 = s2t.CreateStage2Config(vmid: 9);
        }

        Stage1Config? s1 = stage2Only ? null : new Stage1Config
        {
            Low = new TranslationRegion(g, ias, w.Root),
            OutputSize = oas,
            Asid = 5,
            AccessFlagFaultsDisabled = afDisabled,
            HardwareAccessFlag = hwAf,
        };
        if (stage2Only)
            s2 = new Stage2Config
            {
                Granule = g, InputSize = ias, StartLevel = start, TableBase = w.Root, OutputSize = oas,
                AccessFlagFaultsDisabled = afDisabled, HardwareAccessFlag = hwAf,
            };
        var cfg = new TranslationConfig(s1, s2);
        var walker = new PageTableWalker(bus);

        // ---- random lookups ----
        var checkedLeaves = 0;
        for (var n = 0; n < 700; n++)
        {
            ulong a;
            var pick = rng.Next(100);
            if (pick < 70 && model.Items.Count > 0)
            {
                var it = model.Items[rng.Next(model.Items.Count)];
                a = it.InBase + RandomBelow(rng, it.Size);
            }
            else if (pick < 97) a = RandomBelow(rng, 1UL << ias);
            else a = (1UL << ias) + RandomBelow(rng, 1UL << 20);
            var access = Accesses[rng.Next(Accesses.Length)];
            var expected = Expect(model, w, a, access, stage, g, ias, oas, afDisabled || hwAf, nested, s2Chunks);
            var r = walker.Walk(cfg, a, access);
            var what = $"seed {seed} {g} ias {ias} oas {oas} start {start} {(nested ? "nested" : stage2Only ? "S2" : "S1")}: {access} at 0x{a:x}";
            if (expected.Fault is { } f)
            {
                seen.Add((f.Kind, f.Stage, f.OnStage1Walk));
                Assert.True(r.IsFault, $"{what}: expected {f.Kind} got 0x{r.Entry.Translate(a):x}");
                Assert.True((f.Kind, f.Stage, f.OnStage1Walk) == (r.Fault.Kind, r.Fault.Stage, r.Fault.OnStage1Walk),
                    $"{what}: expected {f.Kind} stage {(int)f.Stage} level {f.Level}, got {r.Fault}; item {model.Find(a)}");
                if (f.Level >= 0) Assert.True(f.Level == r.Fault.Level, $"{what}: {f.Kind} level {r.Fault.Level}, expected {f.Level}");
                if (f.Kind == FaultKind.WalkExternalAbort) Assert.Equal(f.FetchAddress, r.Fault.FetchAddress);
                if (f.Stage == TranslationStage.Stage2) Assert.True(f.Ipa == r.Fault.Ipa, $"{what}: IPA 0x{r.Fault.Ipa:x}, expected 0x{f.Ipa:x}");
            }
            else
            {
                Assert.False(r.IsFault, $"{what}: expected 0x{expected.Output:x}, got {r.Fault}");
                Assert.Equal(expected.Output, r.Entry.Translate(a));
                Assert.True(a >= r.Entry.InputBase && a - r.Entry.InputBase <= r.Entry.OffsetMask);
                checkedLeaves++;
            }
        }
        Assert.True(checkedLeaves > 50, $"only {checkedLeaves} successful translations checked");
        return seen;
    }

    /// <summary>True when a table already exists where a block at <paramref name="level"/> would go.</summary>
    static bool TableBelow(TableWriter w, ulong inBase, ulong size, int level)
    {
        for (var a = inBase; a < inBase + size; a += 1UL << w.Granule.LevelShift(level))
            if (level < 3 && w.Tables.ContainsKey((level + 1, a >> w.Granule.LevelShift(level)))) return true;
        return false;
    }

    static ulong RandomBelow(Random rng, ulong limit) => limit <= 1 ? 0 : (ulong)rng.NextInt64(long.MaxValue) % limit;

    readonly record struct Expected(TranslationFault? Fault, ulong Output);

    static Expected Fault(FaultKind k, TranslationStage s, int level, ulong fetch = 0, ulong ipa = 0, bool onWalk = false) =>
        new(new TranslationFault(k, s, (sbyte)level, 0, ipa, onWalk, fetch, AccessFlags.None), 0);

    /// <summary>The naive model's answer.</summary>
    static Expected Expect(Model m, TableWriter w, ulong a, AccessFlags access, TranslationStage stage, Granule g, int ias, int oas,
        bool afOk, bool nested, Dictionary<ulong, IoProt> s2Chunks)
    {
        if ((a >> ias) != 0) return Fault(FaultKind.Translation, stage, 0, ipa: stage == TranslationStage.Stage2 ? a : 0);
        var stageIpa = stage == TranslationStage.Stage2 ? a : 0;
        var it = m.Find(a);
        if (it is null)
        {
            var level = w.StartLevel;
            while (level < 3 && w.Tables.ContainsKey((level + 1, a >> g.LevelShift(level)))) level++;
            return Fault(FaultKind.Translation, stage, level, ipa: stageIpa);
        }
        switch (it.Kind)
        {
            case Kind.PoisonAddressSize: return Fault(FaultKind.AddressSize, stage, it.Level, ipa: stageIpa);
            case Kind.PoisonBadBlock: return Fault(FaultKind.Translation, stage, it.Level, ipa: stageIpa);
            case Kind.PoisonAbort:
            {
                var idx = (a >> g.LevelShift(it.Level + 1)) & ((1UL << g.Stride()) - 1);
                return Fault(FaultKind.WalkExternalAbort, stage, it.Level + 1, fetch: it.PoisonTarget + idx * 8, ipa: stageIpa);
            }
            case Kind.PoisonS2Hole:
            {
                var idx = (a >> g.LevelShift(it.Level + 1)) & ((1UL << g.Stride()) - 1);
                return Fault(FaultKind.Translation, TranslationStage.Stage2, -1, ipa: it.PoisonTarget + idx * 8, onWalk: true);
            }
        }
        // Each descriptor of a contiguous run is checked on its own: test the output of this address.
        if (((it.OutBase + (a - it.InBase)) >> (nested ? 40 : oas)) != 0) return Fault(FaultKind.AddressSize, stage, it.Level, ipa: stageIpa);
        if (!it.Af && !afOk) return Fault(FaultKind.AccessFlag, stage, it.Level, ipa: stageIpa);
        var allowed = stage == TranslationStage.Stage2 ? S2Allows(it.S2R, it.S2W, it.S2Xn, access) : S1Allows(it, TableAttrs(w, a), access);
        if (!allowed) return Fault(FaultKind.Permission, stage, it.Level, ipa: stageIpa);
        var output = it.OutBase + (a - it.InBase);
        if (!nested) return new Expected(null, output);
        // Stage 2 of the output IPA.
        if (!s2Chunks.TryGetValue(output >> 21, out var prot))
            return Fault(FaultKind.Translation, TranslationStage.Stage2, -1, ipa: output);
        var xn = (prot & IoProt.NoExec) != 0 ? 2 : 0;
        if (!S2Allows((prot & IoProt.Read) != 0, (prot & IoProt.Write) != 0, xn, access))
            return Fault(FaultKind.Permission, TranslationStage.Stage2, 2, ipa: output);
        return new Expected(null, output + NestedPaOffset);
    }

    static ulong TableAttrs(TableWriter w, ulong a)
    {
        ulong attrs = 0;
        for (var t = w.StartLevel + 1; t <= 3; t++)
            if (w.TableAttributes.TryGetValue((t, a >> w.Granule.LevelShift(t - 1)), out var x)) attrs |= x;
        return attrs;
    }

    /// <summary>Stage-1 rules written out from the Arm ARM tables (AP[2:1], APTable, UXN/PXN, XNTable, EL0-writable ⇒ PXN).</summary>
    static bool S1Allows(Item it, ulong tableAttrs, AccessFlags a)
    {
        var (privR, privW, userR, userW) = (it.Ap2, it.Ap1) switch
        {
            (false, false) => (true, true, false, false),
            (false, true) => (true, true, true, true),
            (true, false) => (true, false, false, false),
            _ => (true, false, true, false),
        };
        if ((tableAttrs & (1UL << 62)) != 0) { privW = false; userW = false; }
        if ((tableAttrs & (1UL << 61)) != 0) { userR = false; userW = false; }
        var priv = (a & AccessFlags.Privileged) != 0;
        if ((a & AccessFlags.Write) != 0) return priv ? privW : userW;
        if ((a & AccessFlags.Execute) != 0)
            return priv ? !(it.Pxn || (tableAttrs & (1UL << 59)) != 0 || userW) : !(it.Uxn || (tableAttrs & (1UL << 60)) != 0);
        return priv ? privR : userR;
    }

    /// <summary>Stage-2 rules: S2AP read/write; XN[1:0] 00 both execute, 01 EL0 only, 10 neither, 11 EL1 only.</summary>
    static bool S2Allows(bool r, bool wr, int xn, AccessFlags a)
    {
        var priv = (a & AccessFlags.Privileged) != 0;
        if ((a & AccessFlags.Write) != 0) return wr;
        if ((a & AccessFlags.Execute) != 0) return xn switch { 0 => true, 1 => !priv, 2 => false, _ => priv };
        return r;
    }
}
