using Doorbell.Gic.V3;
using Doorbell.Memory;

namespace Doorbell.Kvm;

/// <summary>
/// A vCPU: a software execution context of a VM. Its GICv3 CPU interface is its own state, reached as the vCPU's ICC_*
/// system registers (<see cref="Icc"/>); guest code "running on" the vCPU loads and stores through
/// <see cref="Read"/>/<see cref="Write"/> (memslots, then in-kernel devices, then an MMIO exit to the VMM). A model
/// that makes an interrupt pending for this vCPU kicks it (<see cref="Kick"/>): the pending-interrupt signal. While the
/// vCPU runs guest software (<see cref="Run"/>, KVM_RUN's part here) a kick raises the IRQ input of the guest's CPU, which
/// takes the interrupt from the machine's event loop after the current operation — pushed, as the host CPUs take theirs;
/// while it does not run (before <see cref="Run"/>, after <see cref="Stop"/>) a kick is only recorded
/// (<see cref="KickPending"/>) and is delivered when the vCPU runs again, as KVM delivers at the next guest entry.
/// </summary>
public sealed class Vcpu : IInterruptTarget
{
    internal Vcpu(Vm vm, int id)
    {
        Vm = vm;
        Id = id;
        Attributes = BusAttributes.OfCpu(id);
    }

    /// <summary>What this vCPU's accesses carry to in-kernel devices: its CPU index (a vGICv2 banks GICC and GICD by it).</summary>
    internal BusAttributes Attributes { get; }

    public Vm Vm { get; }
    public int Id { get; }
    /// <summary>The vCPU's GICv3 CPU interface (ICC_IAR1_EL1, EOIR1, PMR, IGRPEN1, …); null until the vGICv3 exists.</summary>
    public GicV3CpuInterface? Icc { get; internal set; }
    /// <summary>Number of kicks (its vGIC raised its IRQ input with an interrupt signalled for this vCPU).</summary>
    public long Kicks { get; private set; }
    /// <summary>A kick arrived while the vCPU was not running guest software; cleared when its interrupts are taken (or it runs).</summary>
    public bool KickPending { get; private set; }
    /// <summary>True while guest software runs on this vCPU (<see cref="Run"/> until <see cref="Stop"/>): kicks are pushed to it.</summary>
    public bool Running { get; private set; }
    /// <summary>The IRQ input of the guest software's CPU on this vCPU (a guest kernel's CPU), once <see cref="Run"/> named it.</summary>
    public IInterruptTarget? GuestCpu { get; private set; }

    /// <summary>
    /// Guest software runs on this vCPU from now on (the VMM's KVM_RUN): a kick raises <paramref name="guestCpu"/>'s IRQ
    /// input (null: the one named before). An interrupt already signalled is delivered now, as at guest entry.
    /// </summary>
    /// <exception cref="InvalidOperationException">No guest CPU was ever named.</exception>
    public void Run(IInterruptTarget? guestCpu = null)
    {
        GuestCpu = guestCpu ?? GuestCpu ?? throw new InvalidOperationException($"vCPU {Id}: no guest CPU to run");
        Running = true;
        var due = KickPending || IrqPending;
        KickPending = false;
        if (due) GuestCpu.Raise();
    }

    /// <summary>The vCPU leaves guest software (KVM_RUN returned): kicks are recorded, not delivered, until <see cref="Run"/>.</summary>
    public void Stop() => Running = false;

    void Kick()
    {
        Kicks++;
        if (Running) GuestCpu!.Raise();
        else KickPending = true;
    }

    /// <summary>
    /// The vCPU's IRQ input, raised by its vGIC when an interrupt may have become deliverable to it (a redistributor
    /// for its own LPIs, the distributor for any SPI change): a kick when one is signalled now, so a vCPU is not woken
    /// for another vCPU's SPI.
    /// </summary>
    void IInterruptTarget.Raise()
    {
        if (IrqPending) Kick();
    }

    /// <summary>True when the vCPU's IRQ input is asserted (an interrupt would be acknowledged now; GICv2: GICC_HPPIR names one).</summary>
    public bool IrqPending
    {
        get
        {
            if (Icc is { } icc) return icc.IrqPending;
            if (Vm.VgicV2 is not { } g2) return false;
            g2.CpuInterface(Id).Read(Doorbell.Gic.V2.GicV2.GICC_HPPIR, 4, out var v, Attributes);
            return v < 1020;
        }
    }

    /// <summary>A guest load of 1, 2, 4 or 8 bytes.</summary>
    public BusStatus Read(ulong gpa, int size, out ulong value) => Vm.GuestRead(this, gpa, size, out value);

    /// <summary>A guest store of 1, 2, 4 or 8 bytes.</summary>
    public BusStatus Write(ulong gpa, int size, ulong value) => Vm.GuestWrite(this, gpa, size, value);

    /// <summary>
    /// The guest's IRQ entry on this vCPU: while an interrupt is signalled, acknowledge it (ICC_IAR1_EL1), call
    /// <paramref name="handler"/> with its INTID and end it (ICC_EOIR1_EL1). Returns the number handled.
    /// </summary>
    public int TakeInterrupts(Action<int> handler, int max = 1024)
    {
        ArgumentNullException.ThrowIfNull(handler);
        KickPending = false;
        var n = 0;
        var icc = Icc;
        if (icc is null) return 0;
        while (n < max && icc.IrqPending)
        {
            var intid = icc.Iar1();
            if (intid >= 1020 && intid <= 1023) break;
            handler((int)intid);
            icc.Eoir1(intid);
            n++;
        }
        return n;
    }
}
