using System.Globalization;
using Doorbell.Host.Kernel;

// The sysfs a VFIO program reads, written as a real directory tree that mirrors Linux's layout under a private
// root; libdoorbell-vfio redirects /sys/bus/pci/devices, /sys/kernel/iommu_groups, /sys/bus/platform/devices, the
// vfio-pci/vfio-platform driver directories, the devices' /sys/devices/... directories and /dev/vfio there, so
// open/stat/readlink/realpath/opendir work unchanged (symlinks are relative, as in sysfs). Facts from Linux's
// drivers/pci/pci-sysfs.c (attribute formats: "0x%04x\n", class "0x%06x\n") and drivers/iommu/iommu.c (the
// iommu_group link and /sys/kernel/iommu_groups/$N/devices). Known limits: every PCI function sits directly
// under /sys/devices/pci0000:00 (bridges are not nested in the path); only the attributes a VFIO program reads.
namespace Doorbell.Server;

public static class SysfsTree
{
    /// <summary>Writes the tree for <paramref name="kernel"/>'s devices under <paramref name="root"/> (created afresh).</summary>
    public static void Write(string root, HostKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        if (Directory.Exists(root)) Directory.Delete(root, true);
        string P(string abs) => Path.Combine(root, abs.TrimStart('/'));
        void Dir(string abs) => Directory.CreateDirectory(P(abs));
        void FileText(string abs, string text) { Dir(Path.GetDirectoryName(abs)!); File.WriteAllText(P(abs), text); }
        void Link(string abs, string targetAbs)
        {
            Dir(Path.GetDirectoryName(abs)!);
            var rel = Path.GetRelativePath(Path.GetDirectoryName(abs)!, targetAbs);
            File.CreateSymbolicLink(P(abs), rel);
        }
        Dir("/sys/bus/pci/devices");
        Dir("/sys/bus/pci/drivers/vfio-pci");
        Dir("/sys/bus/platform/devices");
        Dir("/sys/bus/platform/drivers/vfio-platform");
        Dir("/sys/kernel/iommu_groups");
        Dir("/dev/vfio");
        File.WriteAllText(P("/dev/vfio/vfio"), "");
        foreach (var g in kernel.Groups)
        {
            Dir($"/sys/kernel/iommu_groups/{g.Id}/devices");
            File.WriteAllText(P($"/dev/vfio/{g.Id}"), "");
        }
        static string Hex(uint v, int digits) => "0x" + v.ToString("x" + digits.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture) + "\n";
        foreach (var f in kernel.Functions)
        {
            var dev = $"/sys/devices/pci0000:00/{f.Name}";
            FileText($"{dev}/vendor", Hex(f.ReadConfig(0x00, 2), 4));
            FileText($"{dev}/device", Hex(f.ReadConfig(0x02, 2), 4));
            FileText($"{dev}/class", Hex(f.ReadConfig(0x08, 4) >> 8, 6));
            FileText($"{dev}/revision", Hex(f.ReadConfig(0x08, 1), 2));
            FileText($"{dev}/subsystem_vendor", Hex(f.ReadConfig(0x2C, 2), 4));
            FileText($"{dev}/subsystem_device", Hex(f.ReadConfig(0x2E, 2), 4));
            FileText($"{dev}/numa_node", "-1\n");
            FileText($"{dev}/driver_override", "vfio-pci\n");
            Link($"{dev}/iommu_group", $"/sys/kernel/iommu_groups/{f.Group.Id}");
            Link($"{dev}/driver", "/sys/bus/pci/drivers/vfio-pci");
            Link($"/sys/bus/pci/devices/{f.Name}", dev);
            Link($"/sys/bus/pci/drivers/vfio-pci/{f.Name}", dev);
            Link($"/sys/kernel/iommu_groups/{f.Group.Id}/devices/{f.Name}", dev);
        }
        foreach (var p in kernel.PlatformDevices)
        {
            var g = kernel.Groups.First(x => x.DeviceNames.Contains(p.Name));
            var dev = $"/sys/devices/platform/{p.Name}";
            FileText($"{dev}/driver_override", "vfio-platform\n");
            FileText($"{dev}/modalias", "of:NdmaT(null)Cdoorbell,dma-engine\n");
            Link($"{dev}/iommu_group", $"/sys/kernel/iommu_groups/{g.Id}");
            Link($"{dev}/driver", "/sys/bus/platform/drivers/vfio-platform");
            Link($"/sys/bus/platform/devices/{p.Name}", dev);
            Link($"/sys/bus/platform/drivers/vfio-platform/{p.Name}", dev);
            Link($"/sys/kernel/iommu_groups/{g.Id}/devices/{p.Name}", dev);
        }
    }
}
