using Doorbell.Memory;
namespace Doorbell.Gic.V3;

/// <summary>
/// State of a block of wired interrupts (SGIs/PPIs of one redistributor, or the SPIs of a distributor), one
/// entry per INTID offset: group, enable, pending latch, input level, active, edge/level, priority. The
/// distributor registers that expose one bit, two bits or one byte per interrupt read and write through here.
/// A level-sensitive interrupt is pending while its input is asserted or its latch is set (GICv3 IHI 0069 §4.1).
/// </summary>
public sealed class IrqBank
{
    readonly bool[] _group, _enabled, _latch, _level, _active, _edge;
    readonly byte[] _priority;
    /// <summary>Bit i = <see cref="Pending"/>(i), kept with the latch, level and edge state so a CPU interface looking for
    /// the highest-priority candidate visits only pending interrupts, not the whole bank.</summary>
    readonly ulong[] _pend;

    public IrqBank(int count, bool allEdge = false)
    {
        Count = count;
        _group = new bool[count]; _enabled = new bool[count]; _latch = new bool[count];
        _level = new bool[count]; _active = new bool[count]; _edge = new bool[count];
        _priority = new byte[count];
        _pend = new ulong[(count + 63) / 64];
        if (allEdge) Array.Fill(_edge, true);
    }

    public int Count { get; }

    /// <summary>
    /// Bumped by every change to the bank's state (and by the owner when routing that reads the bank changes: GICD_CTLR,
    /// GICD_IROUTER, a redistributor waking, a CPU interface's group enable). A CPU interface keeps its best wired
    /// candidate until the stamps of the two banks it reads move, so an acknowledge of an LPI does not rescan SGIs, PPIs
    /// and SPIs that did not change. A field, not a property: comparing it runs no code of the bank.
    /// </summary>
    internal int Changes;

    /// <summary>Routing that reads this bank changed (see <see cref="Changes"/>).</summary>
    internal void NoteRoutingChange() => Changes++;

    /// <summary>
    /// Called after a change that can make an interrupt deliverable (pending set, level raised, enabled, priority or
    /// group changed): the owner pushes it to the CPU interfaces it routes to, which wake their PE.
    /// </summary>
    public Action? Raised { get; set; }

    void Raise() => Raised?.Invoke();

    public bool Group1(int i) => _group[i];
    public bool Enabled(int i) => _enabled[i];
    public bool Active(int i) => _active[i];
    public bool Edge(int i) => _edge[i];
    public byte Priority(int i) => _priority[i];
    public bool Pending(int i) => _latch[i] || (!_edge[i] && _level[i]);

    void SyncPending(int i)
    {
        if (_latch[i] || (!_edge[i] && _level[i])) _pend[i >> 6] |= 1UL << i;
        else _pend[i >> 6] &= ~(1UL << i);
    }

    /// <summary>The lowest pending interrupt at or above <paramref name="from"/>, or −1.</summary>
    public int NextPending(int from)
    {
        if (from < 0) from = 0;
        var w = from >> 6;
        if (w >= _pend.Length) return -1;
        var bits = _pend[w] & (~0UL << (from & 63));
        while (bits == 0)
        {
            if (++w >= _pend.Length) return -1;
            bits = _pend[w];
        }
        return (w << 6) + System.Numerics.BitOperations.TrailingZeroCount(bits);
    }

    /// <summary>Can be signalled: pending, enabled, not active, Group 1.</summary>
    public bool Candidate(int i) => _enabled[i] && _group[i] && !_active[i] && (_latch[i] || (!_edge[i] && _level[i]));

    public void SetLevel(int i, bool asserted)
    {
        if (_edge[i] && asserted && !_level[i]) _latch[i] = true; // rising edge latches
        _level[i] = asserted;
        SyncPending(i);
        Changes++;
        if (asserted) Raise();
    }

    public void SetPending(int i) { _latch[i] = true; SyncPending(i); Changes++; Raise(); }
    public void ClearPending(int i) { _latch[i] = false; SyncPending(i); Changes++; }
    public void SetActive(int i, bool v) { _active[i] = v; Changes++; if (!v) Raise(); }
    public void SetGroup1(int i, bool v) { _group[i] = v; Changes++; Raise(); }
    public void SetEnabled(int i, bool v) { _enabled[i] = v; Changes++; if (v) Raise(); }
    public void SetPriority(int i, byte v) { _priority[i] = v; Changes++; Raise(); }

    /// <summary>Acknowledge: pending → active (the latch clears; a level input still high keeps it pending too).</summary>
    public void Acknowledge(int i) { _latch[i] = false; _active[i] = true; SyncPending(i); Changes++; }

    // --- register views ----------------------------------------------------------------------------------

    public enum BitField : byte { Group, Enable, Pending, Active }

    public uint ReadBits(BitField field, int first)
    {
        uint v = 0;
        for (var b = 0; b < 32; b++)
        {
            var i = first + b;
            if (i < 0 || i >= Count) continue;
            var set = field switch
            {
                BitField.Group => _group[i],
                BitField.Enable => _enabled[i],
                BitField.Pending => Pending(i),
                _ => _active[i],
            };
            if (set) v |= 1u << b;
        }
        return v;
    }

    // The seven one-bit-per-interrupt register blocks share one layout in the GICv2 and GICv3 distributors and the
    // GICv3 redistributor SGI frame: IGROUPR 0x080, ISENABLER/ICENABLER 0x100/0x180, ISPENDR/ICPENDR 0x200/0x280,
    // ISACTIVER/ICACTIVER 0x300/0x380 (Arm IHI 0069 §12.9 and §12.11, IHI 0048B §4.3).

    /// <summary>True when <paramref name="block"/> (a register offset with its low 7 bits clear) is one of the bit-array blocks.</summary>
    public static bool IsBitBlock(uint block) => block is >= 0x080 and < 0x400 && (block & 0x7F) == 0;

    static (BitField Field, RegisterAccess Access) DecodeBitBlock(uint block) => block switch
    {
        0x080 => (BitField.Group, RegisterAccess.ReadWrite),
        0x100 => (BitField.Enable, RegisterAccess.WriteOneToSet),
        0x180 => (BitField.Enable, RegisterAccess.WriteOneToClear),
        0x200 => (BitField.Pending, RegisterAccess.WriteOneToSet),
        0x280 => (BitField.Pending, RegisterAccess.WriteOneToClear),
        0x300 => (BitField.Active, RegisterAccess.WriteOneToSet),
        _ => (BitField.Active, RegisterAccess.WriteOneToClear),
    };

    /// <summary>Reads the 32 interrupts from <paramref name="first"/> through bit-array block <paramref name="block"/> (the set and clear views read alike).</summary>
    public uint ReadBitBlock(uint block, int first) => ReadBits(DecodeBitBlock(block).Field, first);

    /// <summary>Writes the 32 interrupts from <paramref name="first"/> through bit-array block <paramref name="block"/>.</summary>
    public void WriteBitBlock(uint block, int first, uint value)
    {
        var (field, access) = DecodeBitBlock(block);
        WriteBits(field, first, value, access);
    }

    /// <summary>Writes a one-bit-per-interrupt register: plain (group), set-on-1 or clear-on-1.</summary>
    public void WriteBits(BitField field, int first, uint value, RegisterAccess kind, int firstWritable = 0)
    {
        for (var b = 0; b < 32; b++)
        {
            var i = first + b;
            if (i < firstWritable || i >= Count) continue;
            var one = (value >> b & 1) != 0;
            if (kind == RegisterAccess.ReadWrite) { if (field == BitField.Group) _group[i] = one; continue; }
            if (!one) continue;
            var set = kind == RegisterAccess.WriteOneToSet;
            switch (field)
            {
                case BitField.Enable: _enabled[i] = set; break;
                case BitField.Pending: _latch[i] = set; SyncPending(i); break;
                case BitField.Active: _active[i] = set; break;
            }
        }
        Changes++;
        Raise();
    }

    public uint ReadPriorities(int first, int size)
    {
        uint v = 0;
        for (var k = 0; k < size; k++)
            if (first + k >= 0 && first + k < Count) v |= (uint)_priority[first + k] << (8 * k);
        return v;
    }

    public void WritePriorities(int first, int size, ulong value)
    {
        for (var k = 0; k < size; k++)
            if (first + k >= 0 && first + k < Count) _priority[first + k] = (byte)(value >> (8 * k));
        Changes++;
        Raise();
    }

    /// <summary>ICFGR: two bits per interrupt, bit 1 of each field = edge-triggered.</summary>
    public uint ReadConfig(int first)
    {
        uint v = 0;
        for (var k = 0; k < 16; k++)
            if (first + k >= 0 && first + k < Count && _edge[first + k]) v |= 2u << (2 * k);
        return v;
    }

    public void WriteConfig(int first, uint value, int firstWritable)
    {
        for (var k = 0; k < 16; k++)
        {
            var i = first + k;
            if (i >= firstWritable && i < Count)
            {
                _edge[i] = (value >> (2 * k + 1) & 1) != 0;
                SyncPending(i);
            }
        }
        Changes++;
        Raise();
    }
}
