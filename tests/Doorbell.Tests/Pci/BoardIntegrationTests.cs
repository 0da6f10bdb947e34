using Doorbell.Devices;
using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Platform;
using static Doorbell.Tests.Pci.PciTestKit;

namespace Doorbell.Tests.Pci;

/// <summary>The qemu-virt board with the real GIC/ITS and SMMUv3 models, programmed through MMIO and memory only.</summary>
public class BoardIntegrationTests
{
    const ulong Smmu = QemuVirtMap.Smmu, Its = QemuVirtMap.GicIts, Gicr = QemuVirtMap.GicRedist;
    const ulong Strtab = 0x4100_0000, Cmdq = 0x4101_0000, Evtq = 0x4102_0000, Cd = 0x4103_0000, Pt = 0x4104_0000;
    const ulong PropBase = 0x4110_0000, PendBase = 0x4120_0000, ItsCmdq = 0x4140_0000;
    const ulong MsiIova = 0x0800_0000;

    sealed class Rig
    {
        public readonly Machine M;
        public PhysicalAddressSpace B => M.Bus;
        uint _smmuProd;
        ulong _itsWriter;
        ulong _nextTable = Pt;

        public Rig(int gic = 3, IommuKind iommu = IommuKind.SmmuV3)
        {
            M = QemuVirtBoard.Create(new QemuVirtOptions { GicVersion = gic, Iommu = iommu });
        }

        ulong NewTable() { var t = _nextTable; _nextTable += 0x1000; return t; }

        public void SmmuOn()
        {
            B.W64(Smmu + 0x80, Strtab); B.W32(Smmu + 0x88, 9);          // linear, 512 STEs
            B.W64(Smmu + 0x90, Cmdq | 6); B.W64(Smmu + 0xA0, Evtq | 6);
            B.W32(Smmu + 0x2C, 2);
            B.W32(Smmu + 0x20, 0xD);
            Assert.Equal(0xDu, B.R32(Smmu + 0x24));
        }

        void Smmu2(ulong q0, ulong q1)
        {
            B.W64(Cmdq + _smmuProd * 16UL, q0); B.W64(Cmdq + _smmuProd * 16UL + 8, q1);
            _smmuProd++;
        }

        /// <summary>Stage-1 STE for <paramref name="sid"/> whose tables map IOVA page → PA page for each pair.</summary>
        public void Stage1(uint sid, params (ulong Iova, ulong Pa)[] maps)
        {
            var l0 = NewTable();
            var cd = Cd + sid * 64UL;
            B.W64(cd, 16UL | (1UL << 8) | (1UL << 10) | (3UL << 12) | (1UL << 30) | (1UL << 31) | (4UL << 32) | (1UL << 41) | (1UL << 45) | (1UL << 46) | (1UL << 48));
            B.W64(cd + 8, l0);
            foreach (var (iova, pa) in maps)
            {
                var t = l0;
                for (var level = 0; level < 3; level++)
                {
                    var e = t + ((iova >> (39 - 9 * level)) & 0x1FF) * 8;
                    var d = B.R64(e);
                    if ((d & 3) != 3) { d = NewTable() | 3; B.W64(e, d); }
                    t = d & 0xF_FFFF_FFFF_F000;
                }
                B.W64(t + ((iova >> 12) & 0x1FF) * 8, pa | (1UL << 10) | (3UL << 8) | (1UL << 6) | 3);
            }
            B.W64(Strtab + sid * 64UL, 1UL | (5UL << 1) | cd);
            Smmu2(0x03UL | ((ulong)sid << 32), 1);
            Smmu2(0x46, 0);
            B.W32(Smmu + 0x98, _smmuProd);
            Assert.Equal(_smmuProd, B.R32(Smmu + 0x9C));
        }

        public uint SmmuEvents => B.R32(Smmu + 0x100A8);

        public void ItsOn()
        {
            B.W32(QemuVirtMap.GicDist, 0x12);
            B.W32(Gicr + 0x14, 0);
            B.W64(Gicr + 0x70, PropBase | 15);
            B.W64(Gicr + 0x78, PendBase);
            B.W32(Gicr, 1);
            B.W64(Its + 0x100, (1UL << 63) | 0x4130_0000);
            B.W64(Its + 0x108, (1UL << 63) | 0x4131_0000);
            B.W64(Its + 0x80, (1UL << 63) | ItsCmdq);
            B.W64(Its + 0x88, 0);
            B.W32(Its, 1);
            ItsCmd(0x09, 0, 1UL << 63);                                  // MAPC icid 0 → PE 0
        }

        void ItsCmd(ulong dw0, ulong dw1, ulong dw2)
        {
            B.W64(ItsCmdq + _itsWriter, dw0); B.W64(ItsCmdq + _itsWriter + 8, dw1); B.W64(ItsCmdq + _itsWriter + 16, dw2); B.W64(ItsCmdq + _itsWriter + 24, 0);
            _itsWriter += 32;
            B.W64(Its + 0x88, _itsWriter);
            Assert.Equal(_itsWriter, B.R64(Its + 0x90));
        }

        public void MapDevice(uint deviceId, ulong itt, params (uint Event, uint Lpi)[] events)
        {
            ItsCmd(0x08UL | ((ulong)deviceId << 32), 4, (1UL << 63) | itt);
            foreach (var (ev, lpi) in events)
            {
                B.W8(PropBase + lpi - 8192, 0xA1);
                ItsCmd(0x0AUL | ((ulong)deviceId << 32), ev | ((ulong)lpi << 32), 0);
                ItsCmd(0x0CUL | ((ulong)deviceId << 32), ev, 0);          // INV: the redistributor re-reads the config byte
            }
        }

        public bool LpiPending(uint lpi)
        {
            B.Read(new PhysAddr(PendBase + lpi / 8), 1, out var v, BusAttributes.Cpu);
            return ((v >> (int)(lpi % 8)) & 1) != 0;
        }
    }

    [Fact]
    public void Msix_vectors_of_a_device_behind_a_root_port_reach_the_its_through_the_smmu_with_its_own_device_id()
    {
        var r = new Rig();
        var b = r.B;
        var rp = r.M.AddPci(new PciBridge(0x1b36, 0x000c, PciePortType.RootPort, "rp"), 2);
        var dev = rp.Secondary.Attach(new MultiQueueDmaDevice(2), 0);
        b.W32(Cfg(0, 2, 0, 0x18), 0x0001_0100);
        b.W32(Cfg(0, 2, 0, 0x20), 0x1010_1000);                       // memory window 0x1000_0000..0x101F_FFFF
        b.W16(Cfg(0, 2, 0, 4), PciCfg.CmdMemory | PciCfg.CmdBusMaster);
        b.W32(Cfg(1, 0, 0, 0x10), 0x1000_0000); b.W32(Cfg(1, 0, 0, 0x14), 0);
        b.W16(Cfg(1, 0, 0, 4), PciCfg.CmdMemory | PciCfg.CmdBusMaster);
        Assert.Equal((ushort)0x0100, dev.RequesterId);
        r.SmmuOn();
        r.Stage1(0x100, (MsiIova, QemuVirtMap.GitsTranslater & ~0xFFFUL));
        r.ItsOn();
        r.MapDevice(0x100, 0x4150_0000, (0, 8200), (1, 8201));
        r.MapDevice(0x008, 0x4151_0000, (0, 8300), (1, 8301));          // someone else's DeviceID
        const ulong bar = 0x1000_0000;
        for (var v = 0u; v < 2; v++)
        {
            b.W64(bar + MqRegs.MsixTableOffset + 16 * v, MsiIova + 0x40);
            b.W32(bar + MqRegs.MsixTableOffset + 16 * v + 8, v);
            b.W32(bar + MqRegs.MsixTableOffset + 16 * v + 12, 0);
        }
        b.W16(Cfg(1, 0, 0, dev.MsixCapOffset + 2), PciCfg.MsixEnable);
        Assert.Equal(BusStatus.Ok, dev.SignalMsix(1));
        Assert.Equal(0u, r.SmmuEvents);
        Assert.True(r.LpiPending(8201));
        Assert.False(r.LpiPending(8200));
        Assert.False(r.LpiPending(8301));                             // isolation: the ITS saw DeviceID 0x100
        dev.SignalMsix(0);
        Assert.True(r.LpiPending(8200));
        Assert.Equal(0u, r.SmmuEvents);
        // a vector aimed at an unmapped IOVA faults at the SMMU: an event, no LPI
        b.W64(bar + MqRegs.MsixTableOffset, 0x3000_0040);
        dev.SignalMsix(0);
        Assert.Equal(1u, r.SmmuEvents);
        Assert.Equal(0x10u | (0x100UL << 32), b.R64(Evtq));
    }

    [Fact]
    public void Edu_dma_is_translated_by_the_smmu_and_faults_when_unmapped()
    {
        var r = new Rig();
        var b = r.B;
        var edu = r.M.AddPci(new EduDevice(r.M.Clock, ulong.MaxValue));
        b.W32(Cfg(0, 1, 0, 0x10), 0x1000_0000);
        b.W16(Cfg(0, 1, 0, 4), PciCfg.CmdMemory | PciCfg.CmdBusMaster);
        r.SmmuOn();
        r.Stage1(8, (0x1_0000_0000, 0x4200_0000));
        b.W64(0x4200_0010, 0xFACE_F00D);
        b.W64(0x1000_0080, 0x1_0000_0010); b.W64(0x1000_0088, 0x40000); b.W64(0x1000_0090, 8); b.W64(0x1000_0098, 1);
        Assert.Equal(0UL, b.R64(0x1000_0098));
        Assert.Equal(0xFACE_F00DUL, BitConverter.ToUInt64(edu.Buffer));
        b.W64(0x1000_0080, 0x4200_0010);                               // a physical address is not an IOVA here
        b.W64(0x1000_0098, 1);
        Assert.Equal(0UL, b.R64(0x1000_0098));
        Assert.Equal(1, edu.FailedDmaCount);
        Assert.Equal(1u, r.SmmuEvents);
    }

    [Fact]
    public void Gicv2_variant_delivers_edu_msi_through_the_v2m_frame_as_an_spi()
    {
        var r = new Rig(gic: 2, iommu: IommuKind.None);
        var b = r.B;
        Assert.Null(r.M.Its);
        Assert.NotNull(r.M.GicV2m);
        var typer = b.R32(QemuVirtMap.GicV2m + 8);
        Assert.Equal((80u << 16) | 64u, typer);                      // base INTID 80, 64 SPIs (QEMU's MSI_TYPER)
        r.M.AddPci(new EduDevice(r.M.Clock));
        b.W32(Cfg(0, 1, 0, 0x10), 0x1000_0000);
        b.W16(Cfg(0, 1, 0, 4), PciCfg.CmdMemory | PciCfg.CmdBusMaster);
        b.W32(Cfg(0, 1, 0, 0x44), (uint)QemuVirtMap.V2mSetSpi);
        b.W32(Cfg(0, 1, 0, 0x48), 0);
        b.W16(Cfg(0, 1, 0, 0x4C), 85);
        b.W16(Cfg(0, 1, 0, 0x42), PciCfg.MsiEnable);
        Assert.Equal(0u, b.R32(QemuVirtMap.GicDist + 0x200 + 4 * (85 / 32)) & (1u << (85 % 32)));
        b.W32(0x1000_0060, 1);
        Assert.NotEqual(0u, b.R32(QemuVirtMap.GicDist + 0x200 + 4 * (85 / 32)) & (1u << (85 % 32)));
        Assert.Equal(QemuVirtMap.V2mSetSpi, r.M.MsiDoorbell);
    }

    [Fact]
    public void Qemu_virt_places_every_block_at_its_design_address()
    {
        var m = QemuVirtBoard.Create();
        Assert.NotNull(m.SmmuV3);
        Assert.NotNull(m.Its);
        Assert.Equal(QemuVirtMap.GitsTranslater, m.MsiDoorbell);
        var names = m.Bus.Regions.ToDictionary(x => x.Base.Value, x => x.Name);
        Assert.Equal("pcie-ecam", names[QemuVirtMap.PcieEcam]);
        Assert.Equal("pcie-mmio", names[QemuVirtMap.PcieMmio]);
        Assert.Equal("ram", names[QemuVirtMap.Ram]);
        Assert.True(names.ContainsKey(QemuVirtMap.Smmu));
        Assert.True(names.ContainsKey(QemuVirtMap.GicDist));
        Assert.True(names.ContainsKey(QemuVirtMap.GicIts));
        Assert.NotEqual(0u, m.Bus.R32(QemuVirtMap.Smmu));            // SMMU_IDR0
        var m4 = QemuVirtBoard.Create(new QemuVirtOptions { Cpus = 4 });
        Assert.Equal(4, m4.GicV3!.CpuInterfaces.Length);
    }
}
