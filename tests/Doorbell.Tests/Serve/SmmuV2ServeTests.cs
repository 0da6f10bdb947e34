using Doorbell.Host.Vfio;
using Doorbell.Server;

namespace Doorbell.Tests.Serve;

/// <summary>A [Theory] that reports itself skipped (visibly) when gcc or &lt;linux/vfio.h&gt; is missing.</summary>
public sealed class GccTheoryAttribute : TheoryAttribute
{
    public GccTheoryAttribute()
    {
        if (ServeRig.NativeBuildError is { } why) Skip = why;
    }
}

/// <summary>
/// `doorbell serve` on the SMMUv2 boards with the policy era as an option: the C driver (examples/c/vfio-driver.c)
/// under doorbell-exec on the Juno-like board (EPERM today and in the 4.11 era, the whole VFIO flow in the 2014 era),
/// and the same driver against an in-process server on both boards, with the MSI path observed on the models
/// (GICv2m on Juno, the ITS on ThunderX) and the DMA fault read by arm-smmu's fault handler.
/// </summary>
public class SmmuV2ServeTests
{
    static string Exec => Path.Combine(ServeRig.RepoRoot, "scripts", "doorbell-exec");

    [GccFact]
    public void Juno_like_SET_IOMMU_is_EPERM_today_and_accepted_in_the_2014_era()
    {
        var today = ServeRig.Run(Exec, ["--board", "juno-like", "--", ServeRig.Driver, "--expect-eperm"], null, 120_000);
        Assert.True(today.Exit == 0, today.Stdout + today.Stderr);
        Assert.Contains("SET_IOMMU: EPERM", today.Stdout);
        Assert.Contains("isolation era today", today.Stderr);
        var v411 = ServeRig.Run(Exec, ["--board", "juno-like", "--isolation-era", "4.11", "--", ServeRig.Driver, "--expect-eperm"], null, 120_000);
        Assert.True(v411.Exit == 0, v411.Stdout + v411.Stderr); // no ITS anywhere: the global check refuses too
        Assert.Contains("isolation era 4.11", v411.Stderr);
        var era1 = ServeRig.Run(Exec, ["--board", "juno-like", "--isolation-era", "1", "--", ServeRig.Driver], null, 120_000);
        Assert.True(era1.Exit == 0, era1.Stdout + era1.Stderr);
        Assert.Contains("isolation era 2014", era1.Stderr);
        Assert.Contains("IOVA range(s): [0x0-0x7ffffff] [0x8100000-0xffffffffff]", era1.Stdout); // MMU-401: 40-bit input
        Assert.Contains("DMA: 256 bytes copied by the device inside our buffer, completion written, MSI-X -> eventfd", era1.Stdout);
        Assert.Contains("write fault reported (status 2)", era1.Stdout);
        Assert.EndsWith("PASS\n", era1.Stdout);
        Assert.Contains("SMMU context fault CB", era1.Stderr); // arm-smmu's context fault handler read the fault
        Assert.Contains("FAR 0x200000000", era1.Stderr);
        Assert.Contains("released 0 descriptor(s)", era1.Stderr);
    }

    [GccTheory]
    [InlineData("juno-like", IsolationPolicyEra.Era2013)]
    [InlineData("thunderx-like", IsolationPolicyEra.Today)]
    [InlineData("thunderx-like", IsolationPolicyEra.Era2013)]
    public void C_driver_runs_on_the_SMMUv2_board_with_MSI_X_through_its_MSI_controller(string board, IsolationPolicyEra era)
    {
        var socket = ServeRig.TempSocket();
        using var server = new DoorbellServer(new ServeOptions
        {
            SocketPath = socket, BoardFile = board, IsolationEra = era, Log = TextWriter.Synchronized(new StringWriter()),
        });
        var m = server.Kernel.Machine;
        using var p = ServeRig.Start(socket);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), "driver timed out");
        Assert.True(p.ExitCode == 0, stdout.Result + stderr.Result);
        Assert.Contains("MSI-X -> eventfd (count 1)", stdout.Result);
        Assert.EndsWith("PASS\n", stdout.Result);
        Assert.Equal("arm-smmu", server.Kernel.Smmu.Name);
        if (board == "juno-like")
        {
            // The MSI-X write went through the MMU-401 to the GICv2m frame, which raised one of its SPIs (224..255).
            Assert.Null(m.Its);
            Assert.Equal(224, m.GicV2m!.BaseIntid);
            Assert.True(m.GicV2m.Raised >= 1);
        }
        else
        {
            // ... through the MMU-500 to GITS_TRANSLATER, translated by the ITS with the device's DeviceID.
            Assert.Null(m.GicV2m);
            Assert.True(m.Its!.Translations >= 1);
            Assert.Equal(0, m.Its.DropCount);
        }
        // The DMA to the unmapped IOVA is a context fault arm-smmu's handler read (through the board's shared SPI).
        var fault = Assert.Single(server.Kernel.SmmuV2Driver!.Faults);
        Assert.False(fault.Global);
        Assert.Equal(0x2_0000_0000UL, fault.Address & ~0xFFFUL);
        Assert.Equal(0x8u, fault.StreamId);
        Assert.Empty(server.Kernel.Machine.Strict.Violations);
    }

    [Fact]
    public void A_bad_isolation_era_is_a_one_line_error_and_help_documents_the_option()
    {
        var dll = Path.Combine(ServeRig.RepoRoot, "src", "Doorbell.Cli", "bin", "Release", "net10.0", "Doorbell.Cli.dll");
        var socket = ServeRig.TempSocket();
        var bad = ServeRig.Run("dotnet", ["exec", dll, "serve", "--socket", socket, "--isolation-era", "2020"], null, 120_000);
        Assert.Equal(1, bad.Exit); // every bad argument of every command: one line naming the option, exit 1 (issue 18)
        Assert.Equal("doorbell: serve: --isolation-era '2020' is unknown (1|2014, 2|4.11, 3|today)\n", bad.Stderr);
        Assert.False(File.Exists(socket));
        var help = ServeRig.Run("dotnet", ["exec", dll, "serve", "--help"], null, 120_000);
        Assert.Contains("--isolation-era", help.Stdout);
        Assert.Contains("4.11", help.Stdout);
        var exec = ServeRig.Run(Exec, ["--isolation-era", "5", "--", "true"], null, 60_000);
        Assert.Equal(2, exec.Exit);
        Assert.Equal("doorbell-exec: --isolation-era '5' is unknown (1|2014, 2|4.11, 3|today)\n", exec.Stderr);
        var execHelp = ServeRig.Run(Exec, ["--help"], null, 60_000);
        Assert.Contains("--isolation-era", execHelp.Stdout);
        Assert.Equal(IsolationPolicyEra.Era2013, IsolationPolicyEras.Parse("2014"));
        Assert.Equal(IsolationPolicyEra.Era411, IsolationPolicyEras.Parse("2"));
        Assert.Equal(IsolationPolicyEra.Today, IsolationPolicyEras.Parse("today"));
        Assert.Null(IsolationPolicyEras.Parse("4.12"));
    }

    [Fact]
    public void An_unknown_board_name_is_a_one_line_error_naming_the_built_in_boards()
    {
        var e = Assert.Throws<FormatException>(() => new DoorbellServer(new ServeOptions { SocketPath = ServeRig.TempSocket(), BoardFile = "juno-r2" }));
        Assert.Equal("board file 'juno-r2' does not exist (built-in boards: juno-like, thunderx-like, its-and-gicv2m)", e.Message);
    }
}
