using System.Globalization;
using Doorbell.Devices;
using Doorbell.Pci;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.Serialization;
using YamlDotNet.Serialization.NamingConventions;

namespace Doorbell.Platform;

// Known limits: the address map is one of the named maps (qemu-virt by default; juno-r1 and thunderx-cn88xx from the
// real platforms' device trees, Platform/RealPlatformMaps), not described address by address; a description
// chooses it, RAM size, GIC and IOMMU kind, CPUs, the PCIe tree, platform devices and the id maps. Bus numbers are
// not described: software (firmware or the host driver) programs them, as on hardware.

/// <summary>
/// A board description file (YAML). Numbers accept decimal, 0x-hex and size suffixes (K, M, G). Example:
/// <code>
/// name: two-port
/// ram: 1G
/// cpus: 2
/// gic: { version: 3, its: true }
/// iommu: smmuv3
/// iommu-map: [{ rid-base: 0, output-base: 0, length: 0x10000 }]
/// msi-map: [{ rid-base: 0, output-base: 0x10000, length: 0x10000 }]
/// pcie:
///   - { slot: 1, device: edu, dma-mask: 0xffffffffff }
///   - slot: 2
///     root-port: [{ device: mq-dma, queues: 4 }]
///   - slot: 3
///     switch: [{ device: edu }, { device: mq-dma }]
/// platform:
///   - { device: dma-engine, base: 0x0a000000, spi: 40, stream-id: 0x77 }
/// </code>
/// </summary>
public sealed class BoardDescription
{
    public string Name { get; set; } = "custom";
    /// <summary>The address map: qemu-virt (the default), juno-r1 or thunderx-cn88xx.</summary>
    public string? AddressMap { get; set; }
    public string Ram { get; set; } = "512M";
    public int Cpus { get; set; } = 1;
    public GicDescription Gic { get; set; } = new();
    public string Iommu { get; set; } = "smmuv3";
    /// <summary>With iommu: smmuv2, the part: mmu-400, mmu-401 (Juno) or mmu-500 (the default).</summary>
    public string? SmmuModel { get; set; }
    /// <summary>The MSI controller of PCI devices: its or gicv2m (default: the ITS when there is one).</summary>
    public string? MsiParent { get; set; }
    public List<IdMapDescription>? IommuMap { get; set; }
    public string? IommuMapMask { get; set; }
    public List<IdMapDescription>? MsiMap { get; set; }
    public string? MsiMapMask { get; set; }
    public List<PcieNode> Pcie { get; set; } = [];
    public List<PlatformDeviceDescription> Platform { get; set; } = [];

    public static BoardDescription Parse(string yaml)
    {
        ArgumentNullException.ThrowIfNull(yaml);
        var d = new DeserializerBuilder().WithNamingConvention(HyphenatedNamingConvention.Instance).Build();
        try
        {
            // A board is a mapping. Anything else is refused before deserializing: YamlDotNet would turn a scalar
            // document into a BoardDescription by calling this very method on it (its static Parse(string)
            // convention), without end.
            var parser = new YamlDotNet.Core.Parser(new StringReader(yaml));
            parser.Consume<YamlDotNet.Core.Events.StreamStart>();
            if (parser.Accept<YamlDotNet.Core.Events.StreamEnd>(out _)) return new BoardDescription();
            parser.Consume<YamlDotNet.Core.Events.DocumentStart>();
            if (!parser.Accept<YamlDotNet.Core.Events.MappingStart>(out _))
            {
                var at = parser.Current?.Start;
                throw new FormatException($"board description: line {at?.Line}: expected a mapping of board properties (name, ram, gic, pcie, ...)");
            }
            return (d.Deserialize<BoardDescription>(yaml) ?? new BoardDescription()).Normalized();
        }
        catch (YamlDotNet.Core.YamlException e)
        {
            throw new FormatException($"board description: line {e.Start.Line}: {Reason(e)}", e);
        }
    }

    /// <summary>What YamlDotNet says, in the description's own terms (keys, values), without .NET type names or its position suffix.</summary>
    static string Reason(YamlDotNet.Core.YamlException e)
    {
        var m = OneLine(e.InnerException is YamlDotNet.Core.YamlException i ? i.Message : e.Message);
        var notFound = System.Text.RegularExpressions.Regex.Match(m, "Property '([^']*)' not found on type '[^']*?([A-Za-z]+)'");
        if (notFound.Success)
        {
            var where = notFound.Groups[2].Value switch
            {
                "BoardDescription" => "board", "GicDescription" => "gic", "IdMapDescription" => "id-map entry",
                "PcieNode" => "pcie node", "PlatformDeviceDescription" => "platform device", var t => t,
            };
            return $"unknown key '{notFound.Groups[1].Value}' in {where}";
        }
        if (m.Contains("No node deserializer", StringComparison.Ordinal) || m.Contains("Exception during deserialization", StringComparison.Ordinal))
        {
            var inner = e.InnerException?.InnerException ?? e.InnerException;
            return inner is FormatException or OverflowException ? $"a value of the wrong kind ({OneLine(inner.Message)})" : "a value of the wrong kind here (a list or mapping where a single value belongs, or the reverse)";
        }
        var cut = m.IndexOf("(Line:", StringComparison.Ordinal);
        return (cut > 0 ? m[..cut] : m).Trim().TrimEnd(':', '.').Trim();
    }

    // A key given with no value (`platform:`) deserializes to null: it means "none" for lists and the default for the rest.
    BoardDescription Normalized()
    {
        Name ??= "custom"; Ram ??= "512M"; Gic ??= new GicDescription(); Iommu ??= "smmuv3";
        Pcie ??= []; Platform ??= [];
        if (Pcie.Any(n => n is null) || Platform.Any(p => p is null) || (IommuMap?.Any(e => e is null) ?? false) || (MsiMap?.Any(e => e is null) ?? false))
            throw new FormatException("board description: a list has an empty entry");
        return this;
    }

    static string OneLine(string s) => s.ReplaceLineEndings(" ");

    public static BoardDescription Load(string path) => Parse(File.ReadAllText(path));

    /// <summary>Builds the machine. Every board-description error is a FormatException with a one-line message, including
    /// the values the models themselves refuse (CPU count, GIC version, a slot taken twice).</summary>
    public Machine Build(BoardWiring? wiring = null, Tracing.Trace? trace = null, Tracing.StrictMonitor? strict = null)
    {
        try
        {
            return BuildChecked(wiring, trace, strict);
        }
        catch (ArgumentException e)
        {
            var msg = e.ParamName is { } p ? e.Message.Replace($" (Parameter '{p}')", "", StringComparison.Ordinal) : e.Message;
            throw new FormatException($"board '{Name}': {msg}", e);
        }
        catch (InvalidOperationException e)
        {
            throw new FormatException($"board '{Name}': {e.Message}", e);
        }
    }

    Machine BuildChecked(BoardWiring? wiring, Tracing.Trace? trace, Tracing.StrictMonitor? strict)
    {
        var m = QemuVirtBoard.Create(ToOptions() with { Trace = trace, Strict = strict }, wiring);
        var host = m.Pci!;
        if (IommuMap != null || IommuMapMask != null)
            host.ConnectIommu(m.Iommu, new IdMap((IommuMap ?? []).Select(e => e.ToEntry()), (uint)Num(IommuMapMask ?? "0xffff")));
        if (MsiMap != null || MsiMapMask != null)
            host.SetMsiMap(new IdMap((MsiMap ?? []).Select(e => e.ToEntry()), (uint)Num(MsiMapMask ?? "0xffff")));
        foreach (var n in Pcie) Attach(m, host.RootBus, n, m.Clock);
        foreach (var p in Platform)
        {
            if (p.Device != "dma-engine") throw new FormatException($"platform device '{p.Device}' is unknown (dma-engine)");
            m.AddPlatformDma(Num(p.Base), p.Spi, (uint)Num(p.StreamId));
        }
        return m;
    }

    /// <summary>The board options this description selects (address map, GIC, IOMMU, MSI routing).</summary>
    public QemuVirtOptions ToOptions()
    {
        var iommu = Iommu.ToLowerInvariant() switch
        {
            "smmuv3" => IommuKind.SmmuV3,
            "smmuv2" => IommuKind.SmmuV2,
            "none" => IommuKind.None,
            var k => throw new FormatException($"iommu '{k}' is not supported (smmuv3, smmuv2, none)"),
        };
        var v2 = SmmuModel?.ToLowerInvariant() switch
        {
            null => iommu == IommuKind.SmmuV2 ? Doorbell.Smmu.V2.SmmuV2Options.Mmu500 : null,
            "mmu-400" => Doorbell.Smmu.V2.SmmuV2Options.Mmu400,
            "mmu-401" => Doorbell.Smmu.V2.SmmuV2Options.Mmu401,
            "mmu-500" => Doorbell.Smmu.V2.SmmuV2Options.Mmu500,
            var k => throw new FormatException($"smmu-model '{k}' is unknown (mmu-400, mmu-401, mmu-500)"),
        };
        if (v2 is not null && iommu != IommuKind.SmmuV2) throw new FormatException("smmu-model needs iommu: smmuv2");
        var parent = MsiParent?.ToLowerInvariant() switch
        {
            null => Doorbell.Platform.MsiParent.Default,
            "its" => Doorbell.Platform.MsiParent.Its,
            "gicv2m" => Doorbell.Platform.MsiParent.GicV2m,
            var k => throw new FormatException($"msi-parent '{k}' is unknown (its, gicv2m)"),
        };
        var ram = Num(Ram);
        if (ram < Doorbell.Host.Kernel.HostMemoryLayout.MinimumRamSize)
            throw new FormatException($"ram '{Ram}' is too small for the host kernel (at least 8M)");
        var map = AddressMap is null ? PlatformMap.QemuVirt
            : PlatformMap.ByName(AddressMap) ?? throw new FormatException($"address-map '{AddressMap}' is unknown (qemu-virt, juno-r1, thunderx-cn88xx)");
        return new QemuVirtOptions
        {
            Map = map,
            Name = Name, GicVersion = Gic.Version, Its = Gic.Its, Iommu = iommu, RamSize = ram, Cpus = Cpus,
            SmmuV2 = v2, GicV2mWithGicV3 = Gic.Version == 3 && Gic.V2m, PciMsiParent = parent,
        };
    }

    /// <summary>Loads one of the board files shipped inside the library (juno-like, thunderx-like, its-and-gicv2m).</summary>
    public static BoardDescription LoadBuiltIn(string name)
    {
        using var s = typeof(BoardDescription).Assembly.GetManifestResourceStream($"Doorbell.Boards.{name}.yaml")
            ?? throw new FormatException($"board '{name}' is not built in");
        using var r = new StreamReader(s);
        return Parse(r.ReadToEnd());
    }

    static void Attach(Machine m, PciBus bus, PcieNode n, Timing.VirtualClock clock)
    {
        var slot = n.Slot ?? bus.FirstFreeDevice();
        if (slot < 0) throw new FormatException("no free slot on a bus");
        if (slot > 31) throw new FormatException($"slot {slot}: a PCI device number is 0..31");
        if (n.Queues is < 1 or > 32) throw new FormatException($"queues {n.Queues}: the multi-queue device has 1..32 queues");
        if (n.RootPort != null || n.Switch != null)
        {
            var rp = bus.Attach(new PciBridge(0x1b36, 0x000c, PciePortType.RootPort, n.Name ?? "root-port", acs: n.Acs), slot);
            if (n.RootPort != null)
                foreach (var c in n.RootPort.Take(1)) Attach(m, rp.Secondary, c with { Slot = 0 }, clock);
            if (n.Switch != null)
            {
                var up = rp.Secondary.Attach(new PciBridge(0x10b5, 0x8605, PciePortType.SwitchUpstream, "switch-up"), 0);
                for (var i = 0; i < n.Switch.Count; i++)
                {
                    var dp = up.Secondary.Attach(new PciBridge(0x10b5, 0x8605, PciePortType.SwitchDownstream, $"switch-down{i}", acs: n.Acs), i);
                    Attach(m, dp.Secondary, n.Switch[i] with { Slot = 0 }, clock);
                }
            }
            return;
        }
        if (n.Functions != null)
        {
            for (var f = 0; f < n.Functions.Count && f < 8; f++)
                bus.Attach(CreateDevice(n.Functions[f], clock), slot, f);
            return;
        }
        var fn = bus.Attach(CreateDevice(n, clock), slot);
        m.Devices.Add(fn);
    }

    static PciFunction CreateDevice(PcieNode n, Timing.VirtualClock clock) => n.Device switch
    {
        "edu" => new EduDevice(clock, n.DmaMask is { } mask ? Num(mask) : (1UL << 28) - 1),
        "mq-dma" => new MultiQueueDmaDevice(n.Queues ?? 4),
        null => throw new FormatException("a PCIe node needs device, functions, root-port or switch"),
        var d => throw new FormatException($"PCI device '{d}' is unknown (edu, mq-dma)"),
    };

    /// <summary>Decimal, 0x-hex, or a size with a K/M/G/T suffix.</summary>
    public static ulong Num(string s)
    {
        ArgumentNullException.ThrowIfNull(s);
        s = s.Trim().Replace("_", "", StringComparison.Ordinal);
        if (s.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
            return ulong.TryParse(s.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var h) ? h : throw new FormatException($"bad number '{s}'");
        if (s.Length > 0 && char.IsLetter(s[^1]))
        {
            var unit = char.ToUpperInvariant(s[^1]) switch { 'K' => 1UL << 10, 'M' => 1UL << 20, 'G' => 1UL << 30, 'T' => 1UL << 40, _ => throw new FormatException($"bad size '{s}'") };
            if (!ulong.TryParse(s.AsSpan(0, s.Length - 1), NumberStyles.None, CultureInfo.InvariantCulture, out var n)) throw new FormatException($"bad size '{s}'");
            return n <= ulong.MaxValue / unit ? n * unit : throw new FormatException($"size '{s}' is larger than 2^64");
        }
        return ulong.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var d) ? d : throw new FormatException($"bad number '{s}'");
    }
}

public sealed class GicDescription
{
    public int Version { get; set; } = 3;
    public bool Its { get; set; } = true;
    /// <summary>A GICv2m frame next to a GICv3 (version 3 only; version 2 always has one).</summary>
    public bool V2m { get; set; }
}

public sealed class IdMapDescription
{
    public string RidBase { get; set; } = "0";
    public string OutputBase { get; set; } = "0";
    public string Length { get; set; } = "0x10000";
    public IdMapEntry ToEntry() => new((uint)BoardDescription.Num(RidBase), (uint)BoardDescription.Num(OutputBase), (uint)BoardDescription.Num(Length));
}

/// <summary>A node of the PCIe tree: a device, a multi-function device, a root port, or a root port with a switch.</summary>
public sealed record PcieNode
{
    public int? Slot { get; set; }
    public string? Name { get; set; }
    public string? Device { get; set; }
    public string? DmaMask { get; set; }
    public int? Queues { get; set; }
    public bool Acs { get; set; } = true;
    public List<PcieNode>? Functions { get; set; }
    public List<PcieNode>? RootPort { get; set; }
    public List<PcieNode>? Switch { get; set; }
}

public sealed class PlatformDeviceDescription
{
    public string Device { get; set; } = "dma-engine";
    public string Base { get; set; } = "0x0a000000";
    public int Spi { get; set; } = 40;
    public string StreamId { get; set; } = "0";
}
