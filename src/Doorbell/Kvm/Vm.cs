using Doorbell.Gic.Its;
using Doorbell.Gic.V2;
using Doorbell.Gic.V2m;
using Doorbell.Gic.V3;
using Doorbell.Host.Os;
using Doorbell.Memory;
using Doorbell.Tracing;

namespace Doorbell.Kvm;

/// <summary>A VMM's handler of MMIO exits (KVM_EXIT_MMIO): guest accesses no memslot and no in-kernel device decodes.</summary>
public interface IVmmMmioExit
{
    BusStatus Read(Vcpu vcpu, ulong gpa, int size, out ulong value);
    BusStatus Write(Vcpu vcpu, ulong gpa, int size, ulong value);
}

/// <summary>
/// A virtual machine (KVM's role): guest physical memory as memslots over the VMM's memory, vCPUs, the in-kernel
/// interrupt controller (vGICv3 with vITSs — the ITS engine over guest memory targeting vCPUs — or vGICv2 with a
/// GICv2m frame), GSI routing, irqfds
/// with resamplefds, and KVM_SIGNAL_MSI. Guest accesses resolve memslot → in-kernel device (KVM_MMIO_BUS) → MMIO exit to
/// the VMM. Ioctl-shaped methods return 0 / a positive count or a negative errno as KVM's uAPI does.
/// Threading: a VM is owned by the thread of the event loop that runs the machine; an irqfd is woken on the thread
/// that signals its eventfd (in Doorbell, the model thread running VFIO's interrupt handler).
/// Known limits: irqfd injection runs synchronously in the signaller (KVM defers a translation-cache miss to a
/// workqueue; the result is the same); one interrupt controller per VM; no KVM_IRQ_LINE; no dirty logging.
/// </summary>
public sealed class Vm : IDisposable
{
    readonly List<Vcpu> _vcpus = [];
    readonly List<(ulong Base, GicV3Its Its)> _its = [];
    readonly List<Irqfd> _irqfds = [];
    RouteEntry[][] _routes = [];
    bool _disposed;

    public Vm(UserAddressSpace vmmMemory, Trace? trace = null, StrictMonitor? strict = null)
    {
        Memory = new GuestMemory(vmmMemory);
        if (vmmMemory.Loop is { } loop) KernelMmio.Loop = loop;
        Trace = trace ?? new Trace();
        Strict = strict ?? new StrictMonitor();
    }

    public GuestMemory Memory { get; }
    /// <summary>In-kernel MMIO devices of the guest physical space (vGIC distributor/redistributors, vITS frames).</summary>
    public PhysicalAddressSpace KernelMmio { get; } = new();
    /// <summary>
    /// The event loop the VM runs on: the host machine's when the VMM's memory belongs to one (a kernel's process),
    /// else the VM's own. In-kernel device accesses and injections are operations on it, so a guest CPU kicked by one
    /// takes its interrupt after it, not inside it.
    /// </summary>
    public Doorbell.Runtime.EventLoop Loop => KernelMmio.Loop;
    public Trace Trace { get; }
    public StrictMonitor Strict { get; }
    public IReadOnlyList<Vcpu> Vcpus => _vcpus;
    public GicV3? VgicV3 { get; private set; }
    /// <summary>The vGICv2 (a GICv2 guest board), null otherwise.</summary>
    public GicV2? VgicV2 { get; private set; }
    /// <summary>The GICv2m MSI frame of a GICv2 guest board, null otherwise.</summary>
    public GicV2m? VgicV2m { get; private set; }
    /// <summary>Guest physical base of <see cref="VgicV2m"/>.</summary>
    public ulong VgicV2mBase { get; private set; }
    /// <summary>SPIs of the VM's interrupt controller (0 before one exists).</summary>
    public int SpiCount => VgicV3?.Options.SpiCount ?? VgicV2?.SpiCount ?? 0;
    bool HasIrqchip => VgicV3 is not null || VgicV2 is not null;
    /// <summary>The vITSs (ITS engines over guest memory targeting this VM's vCPUs), by guest base address.</summary>
    public IReadOnlyList<(ulong Base, GicV3Its Its)> Its => _its;
    /// <summary>The VMM's handler of MMIO exits.</summary>
    public IVmmMmioExit? MmioExit { get; set; }
    public long MmioExits { get; private set; }
    public int IrqfdCount => _irqfds.Count;
    /// <summary>Irqfd wake-ups so far (each a signal of an irqfd's eventfd that injected its GSI's routes).</summary>
    public long IrqfdWakes { get; internal set; }
    public bool IsDisposed => _disposed;

    // --- memory and vCPUs ------------------------------------------------------------------------------------

    /// <summary>KVM_SET_USER_MEMORY_REGION.</summary>
    public int SetUserMemoryRegion(in KvmUserspaceMemoryRegion region) => _disposed ? -Errno.EBADF : Memory.SetUserMemoryRegion(region);

    /// <summary>KVM_CREATE_VCPU: -EBUSY once the vGIC is initialized (its redistributor count is fixed), -EINVAL beyond 512.</summary>
    public int CreateVcpu(out Vcpu? vcpu)
    {
        vcpu = null;
        if (_disposed) return -Errno.EBADF;
        if (HasIrqchip) return -Errno.EBUSY;
        if (_vcpus.Count >= 512) return -Errno.EINVAL;
        vcpu = new Vcpu(this, _vcpus.Count);
        _vcpus.Add(vcpu);
        return vcpu.Id;
    }

    internal BusStatus GuestRead(Vcpu vcpu, ulong gpa, int size, out ulong value)
    {
        if (Memory.IsMemory(gpa, (ulong)size))
        {
            Span<byte> b = stackalloc byte[8];
            b.Clear();
            var s = Memory.Read(gpa, b[..size]);
            value = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(b);
            return s;
        }
        var k = KernelMmio.Read(new PhysAddr(gpa), size, out value, vcpu.Attributes);
        if (k != BusStatus.DecodeError) return k;
        MmioExits++;
        if (MmioExit is null) { value = 0; return BusStatus.DecodeError; }
        return MmioExit.Read(vcpu, gpa, size, out value);
    }

    internal BusStatus GuestWrite(Vcpu vcpu, ulong gpa, int size, ulong value)
    {
        if (Memory.IsMemory(gpa, (ulong)size))
        {
            Span<byte> b = stackalloc byte[8];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(b, value);
            var s = Memory.Write(gpa, b[..size]);
            if (s != BusStatus.SlaveError) return s; // a read-only slot's write exits to the VMM, as KVM does
        }
        var k = KernelMmio.Write(new PhysAddr(gpa), size, value, vcpu.Attributes);
        if (k != BusStatus.DecodeError) return k;
        MmioExits++;
        if (MmioExit is null) return BusStatus.DecodeError;
        return MmioExit.Write(vcpu, gpa, size, value);
    }

    // --- interrupt controller ------------------------------------------------------------------------------

    /// <summary>
    /// KVM_CREATE_DEVICE(KVM_DEV_TYPE_ARM_VGIC_V3) + KVM_DEV_ARM_VGIC_GRP_ADDR (DIST, REDIST) + CTRL_INIT: one
    /// redistributor per vCPU, the distributor and redistributors in the guest physical space; default routing GSI n →
    /// SPI pin n. -EEXIST when the VM already has an interrupt controller, -EINVAL without vCPUs or with frames that
    /// overlap, -EBADF after teardown.
    /// </summary>
    public int CreateVgicV3(PhysAddr gicd, PhysAddr gicr, int spiCount = 224, int idBits = 16)
    {
        if (_disposed) return -Errno.EBADF;
        if (HasIrqchip) return -Errno.EEXIST;
        if (_vcpus.Count == 0 || spiCount % 32 != 0 || spiCount is < 32 or > 960 || idBits is < 14 or > 24) return -Errno.EINVAL;
        var gic = new GicV3(Memory, new GicV3Options { CpuCount = _vcpus.Count, SpiCount = spiCount, IdBits = idBits, PendingTableWriteThrough = false }, Trace, Strict);
        try { gic.Map(KernelMmio, gicd, gicr); }
        catch (ArgumentException) { return -Errno.EINVAL; }
        VgicV3 = gic;
        for (var c = 0; c < _vcpus.Count; c++)
        {
            gic.CpuInterfaces[c].Target = _vcpus[c]; // each vCPU's IRQ input
            _vcpus[c].Icc = gic.CpuInterfaces[c];
        }
        gic.SpiDeactivated = OnSpiDeactivated;
        Targets = new RedistributorTargets(gic); // the vGIC's redistributors; each raises its vCPU's IRQ input
        var defaults = new KvmIrqRoutingEntry[spiCount];
        for (var i = 0; i < spiCount; i++) defaults[i] = KvmIrqRoutingEntry.Irqchip((uint)i, (uint)i);
        SetGsiRouting(defaults);
        return 0;
    }

    /// <summary>
    /// KVM_CREATE_DEVICE(KVM_DEV_TYPE_ARM_VGIC_V2) + KVM_DEV_ARM_VGIC_GRP_ADDR (DIST, CPU) + CTRL_INIT: the GICv2 model with
    /// its distributor and CPU interface frames in the guest physical space, each vCPU's IRQ input kicking it; default
    /// routing GSI n → SPI pin n. -EEXIST with an interrupt controller, -EINVAL without vCPUs, with more than 8 (GICv2's
    /// limit, as KVM's vgic-v2) or with overlapping frames.
    /// Each vCPU's accesses carry its CPU index, so the GICC frame and the banked GICD registers are its own (as KVM's
    /// vgic-v2 MMIO handlers take the accessing vcpu).
    /// </summary>
    public int CreateVgicV2(PhysAddr gicd, PhysAddr gicc, int spiCount = 224)
    {
        if (_disposed) return -Errno.EBADF;
        if (HasIrqchip) return -Errno.EEXIST;
        if (_vcpus.Count is 0 or > 8 || spiCount % 32 != 0 || spiCount is < 32 or > 960) return -Errno.EINVAL;
        var gic = new GicV2(_vcpus.Count, spiCount, Strict) { Trace = Trace };
        try { gic.Map(KernelMmio, gicd, gicc); }
        catch (ArgumentException) { return -Errno.EINVAL; }
        VgicV2 = gic;
        for (var c = 0; c < _vcpus.Count; c++) gic.SetTarget(c, _vcpus[c]);
        gic.SpiDeactivated = OnSpiDeactivated;
        var defaults = new KvmIrqRoutingEntry[spiCount];
        for (var i = 0; i < spiCount; i++) defaults[i] = KvmIrqRoutingEntry.Irqchip((uint)i, (uint)i);
        SetGsiRouting(defaults);
        return 0;
    }

    /// <summary>
    /// A GICv2m MSI frame in the guest physical space raising the vGICv2's SPIs [<paramref name="baseIntid"/>, +count):
    /// a guest (or an MSI route, irqfd or KVM_SIGNAL_MSI whose address is its MSI_SETSPI_NS) writing an SPI number there
    /// makes that SPI pending — with no DeviceID, exactly as the physical frame. (KVM has no in-kernel GICv2m; QEMU emulates
    /// it in userspace and injects with KVM_IRQ_LINE. Doorbell keeps it next to the vGIC so irqfd routes can name it:
    /// docs/deviations.md.) -ENODEV without a vGICv2, -EEXIST for a second frame, -EINVAL for a bad range or base.
    /// </summary>
    public int CreateVgicV2m(PhysAddr @base, int baseIntid, int count)
    {
        if (_disposed) return -Errno.EBADF;
        if (VgicV2 is not { } gic) return -Errno.ENODEV;
        if (VgicV2m is not null) return -Errno.EEXIST;
        if (@base.Value % 0x1000 != 0 || baseIntid < 32 || count < 1 || baseIntid + count > 32 + gic.SpiCount) return -Errno.EINVAL;
        var frame = new GicV2m(gic, baseIntid, count, Strict);
        try { frame.Map(KernelMmio, @base); }
        catch (ArgumentException) { return -Errno.EINVAL; }
        VgicV2m = frame;
        VgicV2mBase = @base.Value;
        return 0;
    }

    /// <summary>The LPI targets of this VM's vITSs: the vGIC redistributors of its vCPUs, with a kick per pending LPI.</summary>
    public ILpiTargets? Targets { get; private set; }

    /// <summary>
    /// KVM_CREATE_DEVICE(KVM_DEV_TYPE_ARM_VGIC_ITS) + KVM_DEV_ARM_VGIC_GRP_ADDR(ITS) + CTRL_INIT: the physical ITS's engine
    /// and register front, over this VM's guest memory and targeting its vCPUs. -ENODEV without a vGICv3, -EINVAL for an
    /// unaligned base or one that overlaps another in-kernel frame.
    /// </summary>
    public int CreateVits(PhysAddr @base, out GicV3Its? its, ItsOptions? options = null)
    {
        its = null;
        if (_disposed) return -Errno.EBADF;
        if (VgicV3 is null || Targets is null) return -Errno.ENODEV;
        if (@base.Value % 0x1_0000 != 0) return -Errno.EINVAL;
        var engine = new ItsEngine(Memory, Targets, options ?? new ItsOptions(), Trace, Strict);
        var front = new GicV3Its(engine);
        try { front.Map(KernelMmio, @base); }
        catch (ArgumentException) { return -Errno.EINVAL; }
        _its.Add((@base.Value, front));
        its = front;
        RefreshIrqfds();
        return 0;
    }

    /// <summary>
    /// KVM_DEV_ARM_VGIC_GRP_CTRL / KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES: writes every vCPU redistributor's LPI pending
    /// state into its pending table in guest memory (the vGIC does not write through). -ENXIO without a vGICv3, -EFAULT
    /// when a table is not guest memory.
    /// </summary>
    public int SavePendingTables()
    {
        if (_disposed) return -Errno.EBADF;
        if (VgicV3 is null) return -6; // ENXIO
        foreach (var rd in VgicV3.Redistributors)
            if (rd.SavePendingTable() != BusStatus.Ok) return -Errno.EFAULT;
        return 0;
    }

    ItsEngine? ItsAt(ulong address)
    {
        foreach (var (b, i) in _its)
            if (address >= b && address < b + GicV3Its.FrameSize) return i.Engine;
        return null;
    }

    /// <summary>
    /// KVM_SIGNAL_MSI (arm64 vgic-its): 1 when the MSI became a pending LPI, 0 when the guest's ITS configuration blocks
    /// it (unmapped device/event/collection), -ENODEV without a vITS, -EINVAL for unknown flags, a missing
    /// KVM_MSI_VALID_DEVID or an address that is no vITS, -EBUSY when that vITS is disabled.
    /// </summary>
    public int SignalMsi(in KvmMsi msi)
    {
        if (_disposed) return -Errno.EBADF;
        if ((msi.Flags & ~KvmConst.KVM_MSI_VALID_DEVID) != 0) return -Errno.EINVAL;
        var loop = Loop;
        loop.Enter(); // a kicked guest CPU takes the interrupt when the injection is done
        var r = InjectMsi(msi.Address, msi.Data, msi.Flags, msi.DevId, null);
        loop.Exit();
        return r;
    }

    int InjectMsi(ulong address, uint data, uint flags, uint devId, ItsEngine? its)
    {
        if (its is null && VgicV2m is { } v2m && address == VgicV2mBase + GicV2m.MSI_SETSPI_NS)
        {
            // a GICv2m frame takes no DeviceID: the data alone picks the SPI (out-of-range data is dropped by the frame)
            var raised = v2m.Raised;
            v2m.Write(GicV2m.MSI_SETSPI_NS, 4, data, BusAttributes.Cpu);
            return v2m.Raised == raised ? 0 : 1; // the vGICv2 kicked the vCPUs it signals
        }
        if (_its.Count == 0) return -Errno.ENODEV;
        if ((flags & KvmConst.KVM_MSI_VALID_DEVID) == 0) return -Errno.EINVAL;
        its ??= ItsAt(address);
        if (its is null) return -Errno.EINVAL;
        if (!its.Enabled) return -Errno.EBUSY;
        return its.Translate(devId, data) == ItsDropReason.None ? 1 : 0;
    }

    void SetSpiLevel(uint pin, bool level)
    {
        if (pin >= SpiCount) return;
        if (VgicV3 is { } g3) g3.SpiLine(GicV3.FirstSpi + (int)pin).SetLevel(level);
        else VgicV2?.SpiLine(32 + (int)pin).SetLevel(level);
        // the vGIC raises the IRQ inputs of the vCPUs it signals (each vCPU kicks itself when one is)
    }

    // --- GSI routing -----------------------------------------------------------------------------------------

    internal readonly record struct RouteEntry(uint Type, uint Pin, ulong Address, uint Data, uint Flags, uint DevId);

    /// <summary>
    /// KVM_SET_GSI_ROUTING (virt/kvm/irqchip.c and arm64 vgic-irqfd.c rules): -EINVAL for nonzero ioctl flags, more than
    /// KVM_MAX_IRQ_ROUTES entries, a GSI beyond that limit, entry flags other than KVM_MSI_VALID_DEVID on an MSI route (or
    /// any on an irqchip route), an unknown type, an irqchip other than 0 or a pin beyond KVM_IRQCHIP_NUM_PINS, or a GSI
    /// routed twice to the irqchip or mixing an MSI route with another. The new table replaces the old one whole and
    /// every irqfd picks up its GSI's new routes.
    /// </summary>
    public int SetGsiRouting(ReadOnlySpan<KvmIrqRoutingEntry> entries, uint flags = 0)
    {
        if (_disposed) return -Errno.EBADF;
        if (flags != 0 || (uint)entries.Length > KvmConst.KVM_MAX_IRQ_ROUTES) return -Errno.EINVAL;
        var maxGsi = 0u;
        foreach (var e in entries)
        {
            if (e.Gsi >= KvmConst.KVM_MAX_IRQ_ROUTES) return -Errno.EINVAL;
            switch (e.Type)
            {
                case KvmConst.KVM_IRQ_ROUTING_MSI:
                    if ((e.Flags & ~KvmConst.KVM_MSI_VALID_DEVID) != 0) return -Errno.EINVAL;
                    break;
                case KvmConst.KVM_IRQ_ROUTING_IRQCHIP:
                    if (e.Flags != 0 || e.IrqChip != 0 || e.Pin >= KvmConst.KVM_IRQCHIP_NUM_PINS) return -Errno.EINVAL;
                    break;
                default:
                    return -Errno.EINVAL;
            }
            maxGsi = Math.Max(maxGsi, e.Gsi + 1);
        }
        var table = new List<RouteEntry>[maxGsi];
        foreach (var e in entries)
        {
            var list = table[e.Gsi] ??= [];
            // one irqchip route per GSI and chip; an MSI route stands alone (setup_routing_entry)
            if (list.Count > 0 && (e.Type == KvmConst.KVM_IRQ_ROUTING_MSI || list[0].Type == KvmConst.KVM_IRQ_ROUTING_MSI || e.Type == KvmConst.KVM_IRQ_ROUTING_IRQCHIP))
                return -Errno.EINVAL;
            list.Add(new RouteEntry(e.Type, e.Pin, e.Address, e.Data, e.Flags, e.DevId));
        }
        _routes = [.. table.Select(l => l is null ? [] : l.ToArray())];
        RefreshIrqfds();
        return 0;
    }

    internal RouteEntry[] RoutesOf(uint gsi) => gsi < (uint)_routes.Length ? _routes[gsi] : [];

    void RefreshIrqfds()
    {
        foreach (var f in _irqfds) f.Update(RoutesOf(f.Gsi));
    }

    // --- irqfd ---------------------------------------------------------------------------------------------------

    /// <summary>
    /// KVM_IRQFD. Assign: -EINVAL for unknown flags, -EAGAIN before the vGIC exists, -EBADF / -EINVAL when fd or
    /// resamplefd is not an open eventfd, -EBUSY when this VM already has an irqfd on that eventfd. Deassign
    /// (KVM_IRQFD_FLAG_DEASSIGN): removes the irqfd of that eventfd and GSI; 0 even when there is none, as KVM.
    /// An irqfd is woken synchronously by its eventfd's signaller; the signal is consumed and the GSI's route injected.
    /// </summary>
    public int Irqfd(in KvmIrqfd args)
    {
        if (_disposed) return -Errno.EBADF;
        if ((args.Flags & ~(KvmConst.KVM_IRQFD_FLAG_DEASSIGN | KvmConst.KVM_IRQFD_FLAG_RESAMPLE)) != 0) return -Errno.EINVAL;
        if ((args.Flags & KvmConst.KVM_IRQFD_FLAG_DEASSIGN) != 0)
        {
            var g = EventFdContext.TryGet(args.Fd, out var probe);
            if (g < 0) return g;
            using (probe)
                for (var i = _irqfds.Count - 1; i >= 0; i--)
                    if (_irqfds[i].Gsi == args.Gsi && ReferenceEquals(_irqfds[i].File, probe!.File)) RemoveIrqfd(i);
            return 0;
        }
        if (!HasIrqchip) return -11; // EAGAIN: the interrupt controller is not initialized
        var r = EventFdContext.TryGet(args.Fd, out var ctx);
        if (r < 0) return r;
        if (ctx!.File is null) { ctx.Dispose(); return -Errno.EINVAL; }
        foreach (var f in _irqfds)
            if (ReferenceEquals(f.File, ctx.File)) { ctx.Dispose(); return -Errno.EBUSY; }
        EventFdContext? resample = null;
        if ((args.Flags & KvmConst.KVM_IRQFD_FLAG_RESAMPLE) != 0)
        {
            r = EventFdContext.TryGet(args.ResampleFd, out resample);
            if (r < 0) { ctx.Dispose(); return r; }
        }
        var irqfd = new Irqfd(this, ctx, args.Gsi, resample);
        irqfd.Update(RoutesOf(args.Gsi));
        _irqfds.Add(irqfd);
        ctx.File.AddWaiter(irqfd);
        // A signal written before the irqfd existed is picked up, as KVM's irqfd checks the eventfd on assignment.
        if (ctx.TryConsume()) irqfd.Wake();
        return 0;
    }

    void RemoveIrqfd(int i)
    {
        var f = _irqfds[i];
        _irqfds.RemoveAt(i);
        f.Shutdown();
    }

    /// <summary>Drains irqfd eventfds written by code outside Doorbell's wait queue (a raw write(2)): the event loop's poll step.</summary>
    public int PollIrqfds()
    {
        var n = 0;
        foreach (var f in _irqfds.ToArray())
            if (f.Context.TryConsume()) { f.Wake(); n++; }
        return n;
    }

    internal void Inject(Irqfd irqfd, RouteEntry[] routes)
    {
        // One operation on the loop: a kicked guest CPU takes its interrupt once every route is injected. (No
        // try/finally: injection reports through return values and throws nothing, as the bus's own bracket.)
        var loop = Loop;
        loop.Enter();
        for (var i = 0; i < routes.Length; i++)
        {
            ref readonly var e = ref routes[i];
            if (e.Type == KvmConst.KVM_IRQ_ROUTING_MSI)
                InjectMsi(e.Address, e.Data, e.Flags, e.DevId, irqfd.ItsOf(i));
            else if (irqfd.Resample is not null)
            {
                irqfd.Asserted = true;
                SetSpiLevel(e.Pin, true); // level: held until the guest EOIs it (resampler)
            }
            else
            {
                SetSpiLevel(e.Pin, true);
                SetSpiLevel(e.Pin, false);
            }
        }
        loop.Exit();
    }

    internal ItsEngine? ResolveIts(ulong address) => ItsAt(address);

    void OnSpiDeactivated(int intid)
    {
        var pin = (uint)(intid - 32);
        foreach (var f in _irqfds.ToArray())
        {
            if (f.Resample is null || !f.Asserted) continue;
            foreach (var e in f.Routes)
                if (e.Type == KvmConst.KVM_IRQ_ROUTING_IRQCHIP && e.Pin == pin)
                {
                    // the resampler: de-assert the line, then tell the VMM (VFIO unmasks INTx on this signal)
                    f.Asserted = false;
                    SetSpiLevel(pin, false);
                    f.Resample.Signal();
                    break;
                }
        }
    }

    /// <summary>
    /// VM teardown (close of the VM fd): every irqfd leaves its eventfd's wait queue and drops its references, the
    /// routing table is emptied and later ioctls give -EBADF. The guest memory (the VMM's) is the VMM's to free.
    /// </summary>
    public void Dispose()
    {
        if (_disposed) return;
        for (var i = _irqfds.Count - 1; i >= 0; i--) RemoveIrqfd(i);
        _routes = [];
        _disposed = true;
    }
}

/// <summary>One irqfd: an eventfd on whose wait queue the VM waits; its wake injects the GSI's routes.</summary>
sealed class Irqfd(Vm vm, EventFdContext context, uint gsi, EventFdContext? resample) : IEventFdWaiter
{
    Vm.RouteEntry[] _routes = [];
    ItsEngine?[] _its = [];

    public uint Gsi => gsi;
    public EventFdContext Context => context;
    public EventFdFile? File => context.File;
    public EventFdContext? Resample => resample;
    public bool Asserted { get; set; }
    public long Wakes { get; private set; }
    internal Vm.RouteEntry[] Routes => _routes;

    /// <summary>irqfd_update: caches the GSI's routes and, for MSI routes, the vITS their doorbell address names.</summary>
    internal void Update(Vm.RouteEntry[] routes)
    {
        var its = new ItsEngine?[routes.Length];
        for (var i = 0; i < routes.Length; i++)
            if (routes[i].Type == KvmConst.KVM_IRQ_ROUTING_MSI) its[i] = vm.ResolveIts(routes[i].Address);
        _its = its;
        _routes = routes;
    }

    internal ItsEngine? ItsOf(int i) => _its[i];

    public void Wake()
    {
        Wakes++;
        vm.IrqfdWakes++;
        vm.Inject(this, _routes);
    }

    internal void Shutdown()
    {
        context.File?.RemoveWaiter(this);
        context.Dispose();
        resample?.Dispose();
    }
}
