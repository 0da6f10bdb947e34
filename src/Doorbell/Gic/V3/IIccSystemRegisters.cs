namespace Doorbell.Gic.V3;

/// <summary>
/// The Group 1 ICC_* system registers of one PE (IHI 0069 §12.2), as MRS/MSR on that PE would reach them. The GICv3
/// model's <see cref="GicV3CpuInterface"/> implements it; a vCPU's virtual CPU interface (ICV_*) can too, so the
/// host GIC driver runs unchanged as a guest kernel's driver.
/// </summary>
public interface IIccSystemRegisters
{
    /// <summary>ICC_PMR_EL1.</summary>
    ulong Pmr { get; set; }
    /// <summary>ICC_BPR1_EL1.</summary>
    ulong Bpr1 { get; set; }
    /// <summary>ICC_IGRPEN1_EL1.</summary>
    ulong IgrpEn1 { get; set; }
    /// <summary>ICC_CTLR_EL1.</summary>
    ulong Ctlr { get; set; }
    /// <summary>ICC_RPR_EL1.</summary>
    ulong Rpr { get; }
    /// <summary>ICC_HPPIR1_EL1.</summary>
    ulong Hppir1 { get; }
    /// <summary>ICC_IAR1_EL1 read: acknowledge.</summary>
    ulong Iar1();
    /// <summary>ICC_EOIR1_EL1 write.</summary>
    void Eoir1(ulong value);
    /// <summary>ICC_DIR_EL1 write.</summary>
    void Dir(ulong value);
    /// <summary>ICC_SGI1R_EL1 write.</summary>
    void Sgi1r(ulong value);
}
