using CsCheck;
using Doorbell.Gic.V3;
using Doorbell.Memory;

namespace Doorbell.Tests.Gic;

/// <summary>
/// The CPU interfaces find the highest-priority candidate by visiting only pending interrupts (IrqBank.NextPending):
/// the index must say exactly what Pending(i) says after any sequence of operations.
/// </summary>
public class IrqBankPendingIndexTests
{
    static int[] Indexed(IrqBank b)
    {
        var l = new List<int>();
        for (var i = b.NextPending(0); i >= 0; i = b.NextPending(i + 1)) l.Add(i);
        return [.. l];
    }

    static int[] Scanned(IrqBank b) => [.. Enumerable.Range(0, b.Count).Where(b.Pending)];

    [Fact]
    public void The_pending_index_matches_the_pending_state_after_any_operations()
    {
        // (operation, interrupt, value): level, set/clear pending, acknowledge, the pending and config register views.
        var op = Gen.Select(Gen.Int[0, 6], Gen.Int[0, 199], Gen.UInt);
        Gen.Select(Gen.Bool, op.Array[1, 60]).Sample(t =>
        {
            var (allEdge, ops) = t;
            var b = new IrqBank(200, allEdge);
            foreach (var (kind, i, v) in ops)
            {
                switch (kind)
                {
                    case 0: b.SetLevel(i, (v & 1) != 0); break;
                    case 1: b.SetPending(i); break;
                    case 2: b.ClearPending(i); break;
                    case 3: b.Acknowledge(i); break;
                    case 4: b.WriteBits(IrqBank.BitField.Pending, i & ~31, v, (v & 1) != 0 ? RegisterAccess.WriteOneToSet : RegisterAccess.WriteOneToClear); break;
                    case 5: b.WriteConfig(i & ~15, v, 0); break;
                    default: b.SetActive(i, (v & 1) != 0); break;
                }
            }
            Assert.Equal(Scanned(b), Indexed(b));
        }, iter: 300, threads: 1);
    }

    [Fact]
    public void NextPending_crosses_words_and_ends_at_the_bank()
    {
        var b = new IrqBank(130);
        Assert.Equal(-1, b.NextPending(0));
        b.SetPending(0); b.SetPending(63); b.SetPending(64); b.SetPending(129);
        Assert.Equal([0, 63, 64, 129], Indexed(b));
        Assert.Equal(129, b.NextPending(65));
        Assert.Equal(-1, b.NextPending(130));
        b.SetLevel(5, true); // level-sensitive: pending while asserted
        Assert.Equal(5, b.NextPending(1));
        b.WriteConfig(0, 2u << 10, 0); // INTID 5 becomes edge-triggered: a held level is no longer pending
        Assert.Equal(63, b.NextPending(1));
    }
}
