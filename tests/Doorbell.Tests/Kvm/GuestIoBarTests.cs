using System.Runtime.InteropServices;
using System.Text;
using Doorbell.Devices;
using Doorbell.Examples;
using Doorbell.Host.Kernel;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;
using Doorbell.Kvm;
using Doorbell.Memory;
using Doorbell.Pci;
using Doorbell.Platform;
using Doorbell.Vmm;

namespace Doorbell.Tests.Kvm;

/// <summary>
/// An assigned device with an I/O BAR (QEMU's pci-serial, a 16550 in 8 bytes of I/O space): the host kernel assigns it
/// in the host bridge's I/O window, VFIO exposes it as a BAR region, the VMM shows it to the guest as an I/O BAR, the
/// guest kernel places it in the guest's I/O window and its port accesses reach the UART through pread/pwrite.
/// </summary>
public class GuestIoBarTests
{
    const ulong Ecam = 0x40_1000_0000;

    [Fact]
    public void A_guest_places_an_assigned_devices_io_bar_and_its_port_accesses_reach_the_device_register()
    {
        var (m, models) = HostKernel.CreateBoard(new QemuVirtOptions());
        var uart = m.AddPci(new PciSerialDevice());
        var k = HostKernel.Boot(m, models);
        var host = k.FindFunction("0000:00:01.0")!;
        // Host: the I/O BAR was assigned from PCI I/O 0x1000 (the host bridge's I/O window) and I/O decode enabled.
        var hb = host.GetBar(0);
        Assert.Equal(PciBarKind.Io, hb.Kind);
        Assert.Equal(8UL, hb.Size);
        Assert.Equal(0x1000UL, hb.HostAddress);
        Assert.Equal(BusStatus.Ok, host.WriteBar(0, Uart16550Regs.Scr, 1, 0x33));
        Assert.Equal(BusStatus.Ok, host.ReadBar(0, Uart16550Regs.Scr, 1, out var scr));
        Assert.Equal(0x33UL, scr);

        // VFIO: BAR0 is a read/write region of 8 bytes without mmap (I/O space cannot be mapped), reached by pread/pwrite.
        var vfio = k.BuildVfio();
        var proc = k.CreateProcess(vfio);
        var container = proc.OpenContainer();
        var group = proc.OpenGroup(host.Group.Id);
        Assert.Equal(0, proc.Ioctl(group, VfioIoctl.GroupSetContainer, BitConverter.GetBytes(container)));
        Assert.Equal(0, proc.Ioctl(container, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu));
        var dev = proc.Ioctl(group, VfioIoctl.GroupGetDeviceFd, Encoding.ASCII.GetBytes(host.Name + "\0"));
        Assert.True(dev >= 0);
        var ri = new byte[32];
        MemoryMarshal.Write(ri, new VfioRegionInfo { Argsz = 32, Index = VfioPciIndex.Bar0 });
        Assert.Equal(0, proc.Ioctl(dev, VfioIoctl.DeviceGetRegionInfo, ri));
        var info = MemoryMarshal.Read<VfioRegionInfo>(ri);
        Assert.Equal(8UL, info.Size);
        Assert.Equal(VfioRegionFlags.Read | VfioRegionFlags.Write, info.Flags);
        var b = new byte[1];
        Assert.Equal(1, proc.Pread(dev, b, info.Offset + Uart16550Regs.Scr));
        Assert.Equal(0x33, b[0]);
        proc.Close(dev); proc.Close(group); proc.Close(container);

        Assert.Equal(0, GuestVm.Create(k.CreateProcess(vfio), 1, 0x0200_0000, out var vmm));
        Assert.Equal(0, vmm!.AddDevice(host.Group.Id, host.Name, 0x0008, out var proxy));
        var cpu = vmm.Vm.Vcpus[0];
        // Composed config space: BAR0 is an I/O BAR of 8 bytes (sizing reads back 0xFFFFFFF9), placed by the guest.
        Assert.True(proxy!.IsIoBar(0));
        Assert.Equal(BusStatus.Ok, cpu.Write(Ecam + (1 << 15) + 0x10, 4, 0xFFFF_FFFF));
        Assert.Equal(BusStatus.Ok, cpu.Read(Ecam + (1 << 15) + 0x10, 4, out var sized));
        Assert.Equal(0xFFFF_FFF9UL, sized);
        // The guest kernel enumerates: its I/O BAR gets guest PCI I/O 0x1000 and I/O decode is turned on.
        var gk = GuestMqDriver.BootKernel(vmm);
        var fn = gk.FindFunction("0000:00:01.0")!;
        Assert.Equal(0x0002_1b36u, (uint)fn.VendorId | (uint)fn.DeviceId << 16);
        Assert.True(fn.Bars[0].Io);
        Assert.Equal((0x1000UL, 8UL), (fn.Bars[0].Address, fn.Bars[0].Size));
        Assert.Equal(0x1000UL, proxy.BarAddress(0));
        Assert.Equal(1u, gk.Pci.Read(fn.Rid, 0x04, 2) & 1);
        var port = vmm.Board.PciePio + fn.Bars[0].Address; // outb: a store into the guest's I/O window

        // Port accesses exit to the VMM and are forwarded to the VFIO BAR region: bytes written to THR are transmitted.
        var exits = vmm.Vm.MmioExits;
        foreach (var ch in "Hi") Assert.Equal(BusStatus.Ok, cpu.Write(port + Uart16550Regs.RbrThr, 1, ch));
        Assert.Equal("Hi", Encoding.ASCII.GetString([.. uart.Transmitted]));
        Assert.True(vmm.Vm.MmioExits >= exits + 2);
        Assert.Equal(BusStatus.Ok, cpu.Read(port + Uart16550Regs.Lsr, 1, out var lsr));
        Assert.Equal(0x60UL, lsr);                              // THR empty, transmitter empty
        Assert.Equal(BusStatus.Ok, cpu.Write(port + Uart16550Regs.Scr, 1, 0x5A));
        Assert.Equal(BusStatus.Ok, cpu.Read(port + Uart16550Regs.Scr, 1, out var s2));
        Assert.Equal(0x5AUL, s2);
        Assert.Equal(BusStatus.Ok, host.ReadBar(0, Uart16550Regs.Scr, 1, out var s3)); // the physical register itself
        Assert.Equal(0x5AUL, s3);
        // Divisor latch: LCR.DLAB, DLL/DLM at offsets 0/1.
        Assert.Equal(BusStatus.Ok, cpu.Write(port + Uart16550Regs.Lcr, 1, 0x83));
        Assert.Equal(BusStatus.Ok, cpu.Write(port + Uart16550Regs.RbrThr, 1, 0x01));
        Assert.Equal(BusStatus.Ok, cpu.Write(port + Uart16550Regs.Ier, 1, 0x00));
        Assert.Equal(BusStatus.Ok, cpu.Write(port + Uart16550Regs.Lcr, 1, 0x03));
        Assert.Equal((ushort)1, uart.Divisor);
        Assert.Equal(2, uart.Transmitted.Count);

        // With I/O space off in the guest's command register the BAR does not decode and nothing reaches the device.
        gk.Pci.Write(fn.Rid, 0x04, 2, gk.Pci.Read(fn.Rid, 0x04, 2) & ~1u);
        Assert.Equal(BusStatus.DecodeError, cpu.Write(port + Uart16550Regs.RbrThr, 1, (ulong)'!'));
        Assert.Equal(2, uart.Transmitted.Count);
        vmm.Dispose();
    }
}
