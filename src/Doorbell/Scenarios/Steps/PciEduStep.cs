using Doorbell.Devices;
using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Platform;

namespace Doorbell.Scenarios.Steps;

/// <summary>Enumerates the qemu-virt board through ECAM, identifies QEMU's edu device, runs a DMA and an MSI.</summary>
public sealed class PciEduStep : IScenarioStep
{
    public string Title => "PCIe on qemu-virt: ECAM enumeration, edu identification, DMA and MSI";

    public bool Run(ScenarioContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var m = QemuVirtBoard.Create(context.Options("qemu-virt without IOMMU", new QemuVirtOptions { Iommu = IommuKind.None }));
        context.Observe("qemu-virt without IOMMU", m);
        m.AddPci(new EduDevice(m.Clock, ulong.MaxValue));
        var b = m.Bus;
        uint R32(ulong a) { b.Read(new PhysAddr(a), 4, out var v, BusAttributes.Cpu); return (uint)v; }
        void W(ulong a, int size, ulong v) => b.Write(new PhysAddr(a), size, v, BusAttributes.Cpu);
        var found = new List<string>();
        for (var dev = 0; dev < 32; dev++)
        {
            var id = R32(QemuVirtMap.PcieEcam + ((ulong)dev << 15));
            if (id != 0xFFFF_FFFF) found.Add($"00:{dev:x2}.0 {id & 0xFFFF:x4}:{id >> 16:x4} class {R32(QemuVirtMap.PcieEcam + ((ulong)dev << 15) + 8) >> 8:x6}");
        }
        context.Item("ECAM scan of bus 0: " + string.Join(", ", found));
        var cfg = QemuVirtMap.PcieEcam + (1UL << 15);
        W(cfg + 0x10, 4, 0xFFFF_FFFF);
        var size = ~(R32(cfg + 0x10) & 0xFFFF_FFF0) + 1;
        W(cfg + 0x10, 4, QemuVirtMap.PcieMmio);
        W(cfg + 4, 2, PciCfg.CmdMemory | PciCfg.CmdBusMaster);
        var bar = QemuVirtMap.PcieMmio;
        var ident = R32(bar);
        W(bar + 8, 4, 10);
        var fact = R32(bar + 8);
        context.Item($"edu BAR0 sized 0x{size:x} at 0x{bar:x}: id 0x{ident:x8}, 10! = {fact}");
        // DMA: RAM → edu buffer → RAM, completing in virtual time
        const ulong src = QemuVirtMap.Ram + 0x1000, dst = QemuVirtMap.Ram + 0x2000;
        W(src, 8, 0x0D00_4BE1_1CAF_E000);
        W(bar + 0x80, 8, src); W(bar + 0x88, 8, 0x40000); W(bar + 0x90, 8, 8); W(bar + 0x98, 8, 1);
        b.Read(new PhysAddr(bar + 0x98), 8, out var cmd1, BusAttributes.Cpu);
        W(bar + 0x80, 8, 0x40000); W(bar + 0x88, 8, dst); W(bar + 0x98, 8, 3);
        b.Read(new PhysAddr(bar + 0x98), 8, out var cmd2, BusAttributes.Cpu);
        b.Read(new PhysAddr(dst), 8, out var copied, BusAttributes.Cpu);
        context.Item($"DMA RAM→edu→RAM: 0x{copied:x16} at 0x{dst:x}, done at virtual t={m.Clock.Now / 1_000_000} ms (CMD 0x{cmd1:x}, 0x{cmd2:x})");
        // MSI: program the capability to a RAM address and raise; the message is a 4-byte write there
        const ulong msiAddr = QemuVirtMap.Ram + 0x3000;
        W(cfg + 0x44, 4, (uint)msiAddr); W(cfg + 0x48, 4, 0); W(cfg + 0x4C, 2, 0x41); W(cfg + 0x42, 2, PciCfg.MsiEnable);
        W(bar + 0x60, 4, 0x1);
        var msi = R32(msiAddr);
        context.Item($"MSI: edu (RID {PciCfg.Bdf(m.Pci!.RootBus[8]!.RequesterId)}) wrote data 0x{msi:x} to 0x{msiAddr:x}; IRQ status 0x{R32(bar + 0x24):x}");
        return found.Count == 2 && ident == EduRegs.IdValue && fact == 3628800 && size == 1 << 20
               && copied == 0x0D00_4BE1_1CAF_E000 && cmd1 == 0 && cmd2 == 2 && msi == 0x41;
    }
}
