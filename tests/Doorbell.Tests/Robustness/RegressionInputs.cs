using Doorbell.Platform;
using Doorbell.Qtest;

namespace Doorbell.Tests.Robustness;

/// <summary>
/// Crash and hang inputs found by outside fuzzing (issue 20), replayed as qtest transcripts. Each failed before its fix:
/// an exception out of <see cref="QtestServer.Handle"/> (a crash of the process) or a DMA that never completed.
/// </summary>
public class RegressionInputs
{
    static QtestServer Server(params string[] args)
    {
        var cmd = QemuCommandLine.Parse(["-machine", "virt,gic-version=3,iommu=smmuv3", "-accel", "qtest", .. args, "-qtest", "unix:/nonexistent"]);
        return new QtestServer(cmd.Build(), new StringWriter());
    }

    // GICR_PROPBASER = 0xf (IDbits 16), EnableLPIs 1, GICR_PENDBASER, EnableLPIs 0, then INVALLR: the LPI lists of the
    // disabled redistributor were stale and INVALLR indexed freed slots (IndexOutOfRange).
    [Theory]
    [InlineData("writeq 0x80a00b0 0x0")]                 // GICR_INVALLR
    [InlineData("writeq 0x80a00a0 0x2000")]              // GICR_INVLPIR
    [InlineData("writel 0x80a0000 0x1")]                 // enable again
    public void Redistributor_lpi_lists_are_dropped_when_lpis_are_disabled(string last)
    {
        var s = Server();
        Assert.StartsWith("OK", s.Handle("writeq 0x80a0070 0xf"));
        Assert.StartsWith("OK", s.Handle("writel 0x80a0000 0x1"));
        Assert.StartsWith("OK", s.Handle("writeq 0x80a0040 0x2000"));
        Assert.StartsWith("OK", s.Handle("writel 0x80a0000 0x0"));
        Assert.Equal("OK\n", s.Handle(last));
        Assert.Equal("OK\n", s.Handle("writeq 0x80a00b0 0x0"));
    }

    // With LPIs pending in the lists (set through GICR_SETLPIR), disabling and re-enabling LPIs must not leave any
    // stale list entry behind: the redistributor reports no pending LPI afterwards and INVALLR is harmless.
    [Fact]
    public void Pending_lpis_do_not_survive_disable_and_reenable()
    {
        var s = Server();
        s.Handle("writeq 0x80a0070 0xf");          // PROPBASER (table at 0, IDbits 16)
        s.Handle("writeq 0x80a0078 0x40100000");   // PENDBASER
        s.Handle("writel 0x80a0000 0x1");
        s.Handle("writeq 0x80a0040 0x2000");       // SETLPIR 8192
        s.Handle("writeq 0x80a0040 0x2001");
        s.Handle("writel 0x80a0000 0x0");
        s.Handle("writel 0x80a0000 0x1");
        Assert.Equal("OK\n", s.Handle("writeq 0x80a00b0 0x0"));
        Assert.Equal("OK\n", s.Handle("writeq 0x80a00a0 0x2000"));
    }

    // clock_set near the top of the 63-bit range: edu's DMA deadline (now + delay) overflowed to a negative time and the
    // DMA never completed while polled. Virtual time saturates instead.
    [Fact]
    public void Edu_dma_completes_after_clock_set_near_the_end_of_time()
    {
        var s = Server("-device", "edu,addr=3.0,dma_mask=0xffffffffff");
        string H(string c) => s.Handle(c);
        Assert.Equal("OK 9223372036854775552\n", H("clock_set 0x7fffffffffffff00"));
        H("writel 0x4010018010 0x10000000"); H("writew 0x4010018004 0x6");
        H("write 0x40001000 8 0x0102030405060708");
        H("writeq 0x10000080 0x40001000"); H("writeq 0x10000088 0x40000"); H("writeq 0x10000090 8");
        H("writeq 0x10000098 1");
        string status = "";
        for (var i = 0; i < 100 && !status.EndsWith("00\n", StringComparison.Ordinal); i++) status = H("readl 0x10000098");
        Assert.Equal("OK 0x0000000000000000\n", status);
        Assert.StartsWith("OK", H("clock_step 1000000"));   // time does not wrap past the end
        Assert.Equal("OK 9223372036854775807\n", H("clock_step 1000000"));
    }
}
