using Doorbell.Devices;
using Doorbell.Memory;
using Doorbell.Platform;
using Doorbell.Qtest;
using Doorbell.Smmu.V3;

namespace Doorbell.Tests.Runtime;

/// <summary>
/// Issue 20 item 2: device- or SMMU-originated writes that land on MMIO are posted (queued, drained iteratively after
/// the outermost access) — the exact fuzzer sequences used to overflow the stack.
/// </summary>
public class PostedWriteTests
{
    static QtestServer Server(params string[] extra)
    {
        var cmd = QemuCommandLine.Parse(["-machine", "virt,gic-version=3,iommu=smmuv3", "-accel", "qtest", .. extra, "-qtest", "unix:/nonexistent"]);
        return new QtestServer(cmd.Build());
    }

    static readonly string[] CmdSyncAtCmdqProd =
    [
        "writeq 0x9050090 0x41010004", // CMDQ_BASE = 0x4101_0000, log2size 4
        "writel 0x9050020 0x8",        // CR0.CMDQEN
        "writeq 0x41010000 0x100001046", // CMD_SYNC, CS = SIG_IRQ, MSI data 1
        "writeq 0x41010008 0x9050098", // MSI address = CMDQ_PROD
        "writel 0x9050098 0x1",        // PROD = 1
    ];

    [Fact]
    public void CmdSync_msi_aimed_at_cmdq_prod_is_posted_and_the_queue_completes()
    {
        var s = Server();
        var loop = s.Machine.Loop;
        foreach (var l in CmdSyncAtCmdqProd) Assert.Equal("OK\n", s.Handle(l));
        Assert.Equal("OK 0x0000000000000001\n", s.Handle("readl 0x905009c")); // CONS passed the SYNC, no error
        Assert.True(loop.PostedWrites >= 1, "the completion MSI was posted");
        Assert.True(loop.MaxDepth <= 2, $"nesting {loop.MaxDepth}");
        Assert.Equal(0, loop.Pending);
    }

    [Fact]
    public void CmdSync_msi_aimed_at_cmdq_prod_recursed_without_posted_writes()
    {
        var s = Server();
        var loop = s.Machine.Loop;
        loop.PostNestedWrites = false; // the behaviour before the fix
        loop.DepthLimit = 64;          // turn the stack overflow into an exception
        for (var i = 0; i < CmdSyncAtCmdqProd.Length - 1; i++) s.Handle(CmdSyncAtCmdqProd[i]);
        Assert.Throws<InvalidOperationException>(() => s.Machine.Bus.Write(new PhysAddr(0x9050098), 4, 1, BusAttributes.Cpu));
    }

    /// <summary>SMMU on with an all-invalid stream table and a 128-entry event queue whose MSI targets edu's IRQ_RAISE; edu's MSI faults.</summary>
    static (QtestServer Server, EduDevice Edu) EduPingPong()
    {
        var s = Server("-device", "edu");
        var edu = s.Machine.Devices.OfType<EduDevice>().Single();
        string[] lines =
        [
            "writel 0x4010008010 0x10000000", // edu BAR0
            "writew 0x4010008004 0x6",        // memory decode + bus master
            $"writel 0x{0x4010008000 + (ulong)edu.MsiCapOffset + 4:x} 0x08090040", // MSI address (faults: no valid STE)
            $"writew 0x{0x4010008000 + (ulong)edu.MsiCapOffset + 2:x} 0x1",        // MSI enable
            "writeq 0x9050080 0x41000000",    // STRTAB_BASE (zeroed: STE.V = 0)
            "writel 0x9050088 0x5",           // linear, log2size 5 (StreamID 8 is inside)
            "writeq 0x90500a0 0x41020007",    // EVENTQ_BASE, log2size 7
            "writeq 0x90500b0 0x10000060",    // EVENTQ_IRQ_CFG0 = edu IRQ_RAISE
            "writel 0x90500b8 0x1",           // EVENTQ_IRQ_CFG1 = data 1
            "writel 0x9050050 0x4",           // IRQ_CTRL.EVENTQ_IRQEN
            "writel 0x9050020 0x5",           // CR0.SMMUEN | EVENTQEN
        ];
        foreach (var l in lines) Assert.Equal("OK\n", s.Handle(l));
        return (s, edu);
    }

    [Fact]
    public void Event_queue_msi_aimed_at_edu_raise_ping_pongs_iteratively_until_the_queue_is_full()
    {
        var (s, _) = EduPingPong();
        var smmu = s.Machine.SmmuV3!;
        Assert.Equal("OK\n", s.Handle("writel 0x10000060 0x1"));
        Assert.Equal(128, smmu.EventsRecorded);   // every fault recorded until the queue filled
        Assert.True(smmu.EventsDropped >= 1);      // then overflow: no record, no MSI, the ping-pong ends
        Assert.True(s.Machine.Loop.MaxDepth <= 2, $"nesting {s.Machine.Loop.MaxDepth}");
        Assert.Equal(0, s.Machine.Loop.Pending);
    }

    [Fact]
    public void Event_queue_msi_aimed_at_edu_raise_recursed_without_posted_writes()
    {
        var (s, _) = EduPingPong();
        s.Machine.Loop.PostNestedWrites = false;
        s.Machine.Loop.DepthLimit = 64;
        Assert.Throws<InvalidOperationException>(() => s.Machine.Bus.Write(new PhysAddr(0x10000060), 4, 1, BusAttributes.Cpu));
    }
}
