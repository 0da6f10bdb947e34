using System.CommandLine;
using Doorbell.Platform.DeviceTree;

namespace Doorbell.Cli;

/// <summary>`doorbell audit FILE|DIR...`: which devices of real platforms (DTBs) VFIO could isolate, and why.</summary>
static class AuditCommand
{
    public static Command Create()
    {
        var paths = new Argument<string[]>("paths") { Description = "DTB files or folders of them", Arity = ArgumentArity.OneOrMore };
        var summary = new Option<bool>("--summary") { Description = "One line per platform" };
        var command = new Command("audit", "Audit DMA and MSI isolation of platforms described by device trees (.dtb).");
        command.Arguments.Add(paths);
        command.Options.Add(summary);
        command.SetAction(parse =>
        {
            var files = new List<string>();
            foreach (var p in parse.GetValue(paths) ?? [])
            {
                if (Directory.Exists(p)) files.AddRange(Directory.EnumerateFiles(p, "*.dtb", SearchOption.AllDirectories).Order(StringComparer.Ordinal));
                else files.Add(p);
            }
            var rc = 0;
            foreach (var f in files)
            {
                byte[] blob;
                try { blob = File.ReadAllBytes(f); }
                catch (IOException e) { Console.Error.WriteLine($"{f}: {e.Message}"); rc = 2; continue; }
                catch (UnauthorizedAccessException e) { Console.Error.WriteLine($"{f}: {e.Message}"); rc = 2; continue; }
                var fdt = Fdt.TryParse(blob, out var error);
                if (fdt is null) { Console.Error.WriteLine($"{f}: not a valid device tree: {error}"); rc = 2; continue; }
                var audit = IsolationAudit.Audit(fdt, Path.GetFileName(f));
                if (parse.GetValue(summary))
                {
                    var (iso, unsafeIrq, none) = AuditReport.Count(audit);
                    Console.WriteLine($"{audit.Name,-48} assignable {iso,2}  unsafe-irq {unsafeIrq,2}  no-iommu {none,2}");
                }
                else
                {
                    AuditReport.Write(audit, Console.Out);
                    Console.WriteLine();
                }
            }
            return rc;
        });
        return command;
    }
}
