using System.Buffers.Binary;
using System.Text;
using Doorbell.Platform.DeviceTree;

namespace Doorbell.Fuzz;

/// <summary>
/// Device-tree blobs, generated structure-aware (cells, phandles, iommus/iommu-map/msi-map/msi-parent, nesting,
/// hostile #iommu-cells/#msi-cells) and then byte-mutated. Oracles: the parser returns a tree or an error value, the
/// isolation audit never throws and finishes within a bound; so does the audit by execution (board builder, the host
/// kernel booted on the board, every probe through VFIO), and the kernel boots wherever the board has a GIC and RAM.
/// </summary>
public sealed class DtbTarget : FuzzTarget
{
    public override string Name => "dtb";
    public override string Description => "flattened device trees through the parser and the isolation audit";

    public override void Run(ReadOnlySpan<byte> input)
    {
        var fdt = Fdt.TryParse(input, out var error);
        if (fdt is null)
        {
            if (string.IsNullOrEmpty(error)) throw new FuzzFinding("a rejected blob has no error message");
            return;
        }
        var start = CpuTime.Thread;
        var audit = IsolationAudit.Audit(fdt, "fuzz");
        AuditReport.Write(audit, TextWriter.Null);
        var spent = CpuTime.Thread - start;
        if (spent > TimeSpan.FromSeconds(2)) throw new FuzzFinding($"audit took {spent.TotalMilliseconds:F0} ms of CPU");
        // audit by execution: the board builder, the host kernel booted on it (drivers, enumeration, groups) and every
        // probe through VFIO never throw and finish within a bound
        start = CpuTime.Thread;
        var run = IsolationProbes.Run(fdt, "fuzz");
        AuditReport.WriteExecuted(run, TextWriter.Null);
        spent = CpuTime.Thread - start;
        if (spent > TimeSpan.FromSeconds(10)) throw new FuzzFinding($"audit by execution took {spent.TotalMilliseconds:F0} ms of CPU");
        if (run.Kernel is null && (run.Board.GicV3 is not null || run.Board.GicV2 is not null) && run.Board.RamSize >= 1UL << 28)
            throw new FuzzFinding("the host kernel did not boot on a board with a GIC and RAM: " + run.BootError);
    }

    public override byte[] Generate(Random rng)
    {
        ArgumentNullException.ThrowIfNull(rng);
        var blob = new TreeGen(rng).Build();
        return rng.Next(4) == 0 ? Mutate(blob, rng) : blob;
    }

    /// <summary>Random platform trees: a GIC with an ITS / v2m frame / pre-ITS, IOMMUs of several kinds, host bridges with
    /// ID maps, platform masters, all cross-referenced by phandles that are sometimes dangling.</summary>
    sealed class TreeGen(Random rng)
    {
        readonly FdtWriter _w = new();
        readonly List<uint> _iommus = [], _msi = [];
        uint _next = 1;

        static readonly uint[] HostileCells = [0, 1, 2, 3, 0xFFFF_FFFF, 0xFFFF_FFFE, 0xFFFF_FFFD, 0x8000_0000, 64];

        uint Cells() => rng.Next(3) == 0 ? HostileCells[rng.Next(HostileCells.Length)] : (uint)rng.Next(0, 3);
        uint AnyPhandle(List<uint> pool) => pool.Count > 0 && rng.Next(6) != 0 ? pool[rng.Next(pool.Count)] : (uint)rng.Next(0, 40);
        uint Id() => rng.Next(4) == 0 ? (uint)rng.NextInt64(0, 1L << 32) : (uint)rng.Next(0, 0x10000);

        public byte[] Build()
        {
            _w.Begin("");
            _w.Prop("#address-cells", 2u); _w.Prop("#size-cells", 2u);
            _w.Prop("model", "fuzz board");
            _w.Prop("compatible", "fuzz,board");
            Gic();
            for (var i = rng.Next(4); i > 0; i--) Iommu();
            for (var i = rng.Next(4); i > 0; i--) HostBridge();
            var soc = rng.Next(2) == 0;
            if (soc) { _w.Begin("soc"); _w.Prop("#address-cells", 1u); _w.Prop("#size-cells", 1u); if (rng.Next(2) == 0) _w.Prop("msi-parent", AnyPhandle(_msi)); }
            for (var i = rng.Next(5); i > 0; i--) Platform(0);
            if (soc) _w.End();
            _w.End();
            return _w.Finish();
        }

        void Gic()
        {
            var v3 = rng.Next(3) != 0;
            _w.Begin(v3 ? "interrupt-controller@8000000" : "interrupt-controller@2c001000");
            _w.Prop("compatible", v3 ? "arm,gic-v3" : "arm,gic-400");
            _w.Prop("interrupt-controller", Array.Empty<uint>());
            _w.Prop("#interrupt-cells", 3u);
            _w.Prop("phandle", _next++);
            var frames = rng.Next(4);
            for (var i = 0; i < frames; i++)
            {
                var kind = rng.Next(3);
                _w.Begin($"msi@{0x8080000 + i * 0x20000:x}");
                _w.Prop("compatible", kind switch { 0 => "arm,gic-v3-its", 1 => "arm,gic-v2m-frame", _ => "socionext,synquacer-pre-its" });
                _w.Prop("msi-controller", Array.Empty<uint>());
                if (rng.Next(4) != 0) _w.Prop("#msi-cells", rng.Next(3) == 0 ? Cells() : 1u);
                if (rng.Next(6) == 0) _w.Prop("status", "disabled");
                var ph = _next++;
                _w.Prop("phandle", ph);
                _msi.Add(ph);
                _w.End();
            }
            _w.End();
        }

        void Iommu()
        {
            string[] kinds = ["arm,smmu-v3", "arm,mmu-500", "arm,smmu-v2", "arm,mmu-401", "arm,mmu-400", "qcom,smmu-500", "vendor,unknown-iommu"];
            _w.Begin($"iommu@{0x9050000 + _iommus.Count * 0x20000:x}");
            _w.Prop("compatible", kinds[rng.Next(kinds.Length)]);
            _w.Prop("#iommu-cells", Cells());
            if (rng.Next(5) == 0) _w.Prop("status", "disabled");
            var ph = _next++;
            _w.Prop("phandle", ph);
            _iommus.Add(ph);
            _w.End();
        }

        uint[] Map(List<uint> pool)
        {
            var entries = rng.Next(0, 4);
            var cells = new List<uint>();
            for (var i = 0; i < entries; i++)
            {
                cells.Add(Id()); cells.Add(AnyPhandle(pool));
                var extra = rng.Next(4) == 0 ? rng.Next(0, 3) : 1;   // the target's cells (normally #iommu-cells = 1)
                for (var k = 0; k < extra; k++) cells.Add(Id());
                cells.Add(rng.Next(5) == 0 ? 0u : (uint)rng.Next(1, 0x10001));
            }
            if (cells.Count > 0 && rng.Next(8) == 0) cells.RemoveAt(rng.Next(cells.Count));
            return [.. cells];
        }

        void HostBridge()
        {
            _w.Begin($"pcie@{0x4010000000L + _next * 0x10000000L:x}");
            _w.Prop("compatible", "pci-host-ecam-generic");
            _w.Prop("device_type", "pci");
            if (rng.Next(4) != 0) _w.Prop("bus-range", (uint)rng.Next(0, 256), (uint)rng.Next(0, 256));
            if (rng.Next(3) != 0) _w.Prop("iommu-map", Map(_iommus));
            if (rng.Next(3) == 0) _w.Prop("iommu-map-mask", Id());
            if (rng.Next(2) == 0) _w.Prop("msi-map", Map(_msi));
            else if (rng.Next(2) == 0) _w.Prop("msi-parent", AnyPhandle(_msi));
            if (rng.Next(3) == 0) _w.Prop("msi-map-mask", Id());
            if (rng.Next(6) == 0) _w.Prop("status", "disabled");
            _w.End();
        }

        void Platform(int depth)
        {
            _w.Begin($"dev@{rng.Next(0, 0x10000):x}");
            _w.Prop("compatible", rng.Next(2) == 0 ? "vendor,dma-master" : "vendor,thing");
            if (rng.Next(3) != 0)
            {
                var cells = new List<uint>();
                for (var i = rng.Next(1, 4); i > 0; i--) { cells.Add(AnyPhandle(_iommus)); for (var k = rng.Next(0, 3); k > 0; k--) cells.Add(Id()); }
                _w.Prop("iommus", [.. cells]);
            }
            if (rng.Next(3) == 0) _w.Prop("msi-parent", rng.Next(3) == 0 ? [AnyPhandle(_msi), Id()] : [AnyPhandle(_msi)]);
            if (rng.Next(4) == 0) _w.Prop("phandle", _next++);
            if (depth < 6 && rng.Next(4) == 0) Platform(depth + 1);
            _w.End();
        }
    }
}
