using System.Numerics;
using Doorbell.Gic.Its;
using Doorbell.Memory;

namespace Doorbell.Host.Irq;

/// <summary>Choices the ITS driver makes when sizing tables (Linux picks 64K pages when the ITS accepts them).</summary>
public sealed record ItsDriverOptions
{
    /// <summary>BASER page size to try first: 0x1000, 0x4000 or 0x10000.</summary>
    public ulong PageSize { get; init; } = 0x1_0000;
    /// <summary>Use a two-level device table even when a flat one would fit in two pages.</summary>
    public bool ForceIndirect { get; init; }
}

/// <summary>
/// Host ITS driver, written like Linux's irq-gic-v3-its.c: sizes and allocates the device and collection
/// tables from GITS_BASER&lt;n&gt; (flat or two-level, 64K/16K/4K pages), allocates the command queue, maps one
/// collection per CPU (MAPC, RDbase = PE number or redistributor address per GITS_TYPER.PTA), creates a device
/// per DeviceID with its ITT (MAPD), allocates LPIs and maps events (MAPTI), enables them in the property table
/// followed by INV, waits for completion with SYNC, and retargets with MOVI.
/// Its MSI domain isolates MSIs: an ITS only translates a write for the DeviceID the interconnect attached.
/// </summary>
public sealed class ItsDriver : IMsiDomain
{
    readonly GicV3HostDriver _gic;
    readonly IMemoryView _bus;
    readonly ulong _its;
    readonly ItsDriverOptions _options;
    ulong _cmdq, _cmdqSize, _cwriter;
    int _iteSize, _devBits, _eventBits, _cidBits;
    bool _pta;
    ulong _devTable, _devPageSize; bool _devIndirect; ulong _devTableBytes; int _devEsz;
    bool[] _lpiUsed = [];  // the GIC's one LPI space, shared by every ITS (Linux's global its_lpi_alloc)
    readonly Dictionary<uint, Device> _devices = [];
    readonly Dictionary<int, (uint Dev, uint Event)> _eventOfLpi = [];
    readonly ulong[] _cmd = new ulong[4];

    sealed class Device(uint id, ulong itt, int eventBits)
    {
        public uint Id { get; } = id;
        public ulong Itt { get; } = itt;
        public int EventBits { get; } = eventBits;
        public readonly int[] Lpis = new int[1 << eventBits];
        public readonly bool[] Used = new bool[1 << eventBits];
    }

    public ItsDriver(GicV3HostDriver gic, PhysAddr itsBase, ItsDriverOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(gic);
        _gic = gic; _bus = gic.Bus; _its = itsBase.Value; _options = options ?? new ItsDriverOptions();
    }

    public string Name => "ITS-MSI";
    public bool IsolatedMsi => true;
    public ulong TranslaterAddress => _its + GicV3Its.GITS_TRANSLATER;
    public bool DeviceTableIndirect => _devIndirect;
    public ulong DeviceTablePageSize => _devPageSize;
    /// <summary>Commands that failed (the ITS stalled); the driver skips them by reprogramming the queue.</summary>
    public long FailedCommands { get; private set; }

    ulong R64(ulong a) { _bus.Read(new PhysAddr(a), 8, out var v, BusAttributes.Cpu); return v; }
    void W64(ulong a, ulong v) => _bus.Write(new PhysAddr(a), 8, v, BusAttributes.Cpu);
    void W32(ulong a, uint v) => _bus.Write(new PhysAddr(a), 4, v, BusAttributes.Cpu);

    /// <summary>Probe and initialise (its_probe_one + its_init_domain + its_cpu_init_collections).</summary>
    public void Init()
    {
        var typer = R64(_its + GicV3Its.GITS_TYPER);
        if ((typer & 1) == 0) throw new IrqException(Errno.ENODEV, "ITS without physical LPIs");
        _iteSize = (int)(typer >> 4 & 0xF) + 1;
        _eventBits = (int)(typer >> 8 & 0x1F) + 1;
        _devBits = (int)(typer >> 13 & 0x1F) + 1;
        _pta = (typer >> 19 & 1) != 0;
        _cidBits = (typer >> 36 & 1) != 0 ? (int)(typer >> 32 & 0xF) + 1 : 16;
        W32(_its + GicV3Its.GITS_CTLR, 0);

        _cmdqSize = 0x1_0000;
        _cmdq = IrqTableMemory.Allocate(_gic.Memory, _cmdqSize, 0x1_0000);
        W64(_its + GicV3Its.GITS_CBASER, (1UL << 63) | _cmdq | (_cmdqSize / 0x1000 - 1));
        W64(_its + GicV3Its.GITS_CWRITER, 0);
        _cwriter = 0;

        for (var n = 0; n < 8; n++)
        {
            var baserAddr = _its + GicV3Its.GITS_BASER + (ulong)n * 8;
            var b = R64(baserAddr);
            var type = (int)(b >> 56 & 7);
            if (type == 0) continue;
            var esz = (int)(b >> 48 & 0x1F) + 1;
            var ids = type == 1 ? _devBits : _cidBits;
            SetupBaser(baserAddr, type, esz, ids);
        }

        _lpiUsed = _gic.LpiSpace();
        W32(_its + GicV3Its.GITS_CTLR, 1);
        for (var c = 0; c < _gic.Cpus.Count; c++)
        {
            Send(s => ItsCommand.Mapc(s, (ushort)c, RdBase(c), true));
            Send(s => ItsCommand.Invall(s, (ushort)c));
            Sync(c);
        }
    }

    ulong RdBase(int cpu) => _pta ? _gic.RedistributorFrame(cpu) >> 16 : (ulong)_gic.ProcessorNumber(cpu);

    void SetupBaser(ulong baserAddr, int type, int esz, int idBits)
    {
        foreach (var psz in (ReadOnlySpan<ulong>)[_options.PageSize, 0x1_0000, 0x4000, 0x1000])
        {
            var flatBytes = (ulong)esz << Math.Min(idBits, 40);
            var indirect = type == 1 && (_options.ForceIndirect || flatBytes > psz * 2);
            var tableBytes = indirect ? Math.Max(8UL, (flatBytes / psz + (flatBytes % psz != 0 ? 1UL : 0)) * 8) : flatBytes;
            // Only the device table is sized by its ID bits; the others (collections) get one page, as Linux allocates.
            var pages = type == 1 ? Math.Min(256UL, (tableBytes + psz - 1) / psz) : 1UL;
            var table = IrqTableMemory.Allocate(_gic.Memory, pages * psz, psz);
            var code = psz switch { 0x1000 => 0UL, 0x4000 => 1UL, _ => 2UL };
            var pa = psz == 0x1_0000 ? (table & 0x0000_FFFF_FFFF_0000UL) | ((table >> 48 & 0xF) << 12) : table;
            var v = (1UL << 63) | (indirect ? 1UL << 62 : 0) | pa | (code << 8) | (pages - 1);
            W64(baserAddr, v);
            var back = R64(baserAddr);
            if ((back >> 8 & 3) != code) continue;                       // page size not accepted: try the next
            if (indirect && (back >> 62 & 1) == 0) { indirect = false; } // no two-level support
            if (type == 1)
            {
                _devTable = table; _devPageSize = psz; _devIndirect = indirect; _devTableBytes = pages * psz; _devEsz = esz;
            }
            return;
        }
        throw new IrqException(Errno.ENXIO, "no GITS_BASER page size accepted");
    }

    /// <summary>Makes sure the device table can hold <paramref name="deviceId"/> (its_alloc_table_entry).</summary>
    void EnsureDeviceTableEntry(uint deviceId)
    {
        if (_devBits < 32 && deviceId >> _devBits != 0) throw new IrqException(Errno.EINVAL, $"DeviceID {deviceId} beyond GITS_TYPER.Devbits");
        if (!_devIndirect)
        {
            if ((ulong)deviceId * (ulong)_devEsz >= _devTableBytes) throw new IrqException(Errno.ENOSPC, $"DeviceID {deviceId} beyond the device table");
            return;
        }
        var perPage = _devPageSize / (ulong)_devEsz;
        var l1 = deviceId / perPage;
        if (l1 * 8 >= _devTableBytes) throw new IrqException(Errno.ENOSPC, $"DeviceID {deviceId} beyond the device table");
        if ((R64(_devTable + l1 * 8) >> 63) != 0) return;
        var page = IrqTableMemory.Allocate(_gic.Memory, _devPageSize, _devPageSize);
        W64(_devTable + l1 * 8, (1UL << 63) | page);
    }

    /// <summary>Queues one command and waits for the ITS to consume it. A stalled command becomes -EIO.</summary>
    void Send(Action<ulong[]> build)
    {
        build(_cmd);
        for (var i = 0; i < 4; i++) W64(_cmdq + _cwriter + (ulong)i * 8, _cmd[i]);
        _cwriter = (_cwriter + 32) % _cmdqSize;
        W64(_its + GicV3Its.GITS_CWRITER, _cwriter);
        for (var n = 0; n < 1000; n++)
        {
            var r = R64(_its + GicV3Its.GITS_CREADR);
            if ((r & 1) != 0)
            {
                FailedCommands++;
                // Recover as a kernel would have to: disable, reprogram CBASER (CREADR = 0), re-enable.
                W32(_its + GicV3Its.GITS_CTLR, 0);
                W64(_its + GicV3Its.GITS_CBASER, (1UL << 63) | _cmdq | (_cmdqSize / 0x1000 - 1));
                _cwriter = 0;
                W64(_its + GicV3Its.GITS_CWRITER, 0);
                W32(_its + GicV3Its.GITS_CTLR, 1);
                throw new IrqException(Errno.EIO, $"ITS command {ItsOpcode.Name((int)(_cmd[0] & 0xFF))} failed");
            }
            if ((r & 0xF_FFE0) == _cwriter) return;
        }
        throw new IrqException(Errno.ETIMEDOUT, "ITS command queue did not drain");
    }

    void Sync(int cpu) => Send(s => ItsCommand.Sync(s, RdBase(cpu)));

    int AllocateLpis(int count)
    {
        for (var start = 0; start + count <= _lpiUsed.Length; start++)
        {
            var ok = true;
            for (var k = 0; k < count && ok; k++) ok = !_lpiUsed[start + k];
            if (!ok) continue;
            for (var k = 0; k < count; k++) _lpiUsed[start + k] = true;
            return start + 8192;
        }
        throw new IrqException(Errno.ENOSPC, $"no {count} free LPIs");
    }

    /// <summary>Creates the ITS device (MAPD with a fresh ITT) and maps <paramref name="count"/> events to new LPIs on CPU 0.</summary>
    public MsiAllocation AllocateMsis(uint deviceId, int count)
    {
        if (count < 1 || count > 1 << Math.Min(_eventBits, 16)) throw new IrqException(Errno.EINVAL, $"bad vector count {count}");
        if (_devices.ContainsKey(deviceId)) throw new IrqException(Errno.EEXIST, $"DeviceID {deviceId} already has MSIs");
        EnsureDeviceTableEntry(deviceId);
        var eventBits = Math.Max(1, BitOperations.Log2(BitOperations.RoundUpToPowerOf2((uint)count)));
        var itt = IrqTableMemory.Allocate(_gic.Memory, Math.Max(256UL, (ulong)_iteSize << eventBits), 256);
        var dev = new Device(deviceId, itt, eventBits);
        Send(s => ItsCommand.Mapd(s, deviceId, itt, eventBits, true));
        var lpiBase = AllocateLpis(count);
        var vectors = new MsiVector[count];
        for (var e = 0; e < count; e++)
        {
            var lpi = lpiBase + e;
            dev.Lpis[e] = lpi; dev.Used[e] = true;
            _eventOfLpi[lpi] = (deviceId, (uint)e);
            Send(s => ItsCommand.Mapti(s, deviceId, (uint)e, (uint)lpi, 0));
            _gic.SetLpiConfig(lpi, GicV3HostDriver.DefaultPriority, true);
            Send(s => ItsCommand.DeviceEvent(s, ItsOpcode.Inv, deviceId, (uint)e));
            vectors[e] = new MsiVector(e, new MsiMessage(TranslaterAddress, (uint)e), lpi);
        }
        Sync(0);
        _devices[deviceId] = dev;
        return new MsiAllocation(this, deviceId, vectors);
    }

    public void FreeMsis(MsiAllocation allocation)
    {
        ArgumentNullException.ThrowIfNull(allocation);
        if (!_devices.Remove(allocation.DeviceId, out var dev)) throw new IrqException(Errno.EINVAL, $"DeviceID {allocation.DeviceId} has no MSIs");
        for (var e = 0; e < dev.Used.Length; e++)
        {
            if (!dev.Used[e]) continue;
            Send(s => ItsCommand.DeviceEvent(s, ItsOpcode.Discard, dev.Id, (uint)e));
            _gic.SetLpiConfig(dev.Lpis[e], GicV3HostDriver.DefaultPriority, false);
            _lpiUsed[dev.Lpis[e] - 8192] = false;
            _eventOfLpi.Remove(dev.Lpis[e]);
        }
        Send(s => ItsCommand.Mapd(s, dev.Id, 0, 1, false));
        Sync(0);
    }

    /// <summary>irq_set_affinity: MOVI to the target CPU's collection, then SYNC there.</summary>
    public void SetAffinity(MsiVector vector, int cpu)
    {
        if (cpu < 0 || cpu >= _gic.Cpus.Count) throw new IrqException(Errno.EINVAL, $"no CPU {cpu}");
        if (!_eventOfLpi.TryGetValue(vector.Intid, out var ev)) throw new IrqException(Errno.EINVAL, $"LPI {vector.Intid} is not an ITS MSI");
        Send(s => ItsCommand.Movi(s, ev.Dev, ev.Event, (ushort)cpu));
        Sync(cpu);
    }

    /// <summary>irq_mask / irq_unmask: the property table's enable bit, made visible with INV.</summary>
    public void SetMasked(MsiVector vector, bool masked)
    {
        if (!_eventOfLpi.TryGetValue(vector.Intid, out var ev)) throw new IrqException(Errno.EINVAL, $"LPI {vector.Intid} is not an ITS MSI");
        _gic.SetLpiConfig(vector.Intid, GicV3HostDriver.DefaultPriority, !masked);
        Send(s => ItsCommand.DeviceEvent(s, ItsOpcode.Inv, ev.Dev, ev.Event));
        Sync(0);
    }
}
