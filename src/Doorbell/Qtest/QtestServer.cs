using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Doorbell.Memory;
using Doorbell.Platform;

namespace Doorbell.Qtest;

// Known limits: irq_intercept_in/out and set_irq_in answer "FAIL Unknown device" (no QOM tree); I/O port
// commands (inb/outb…) reach an empty I/O space as on Arm (reads 0). Malformed arguments, which make QEMU
// abort on a g_assert, answer "FAIL" instead (docs/deviations.md). Log timestamps are virtual seconds, not
// wall-clock seconds, so logs are reproducible. Facts: QEMU 7.2 softmmu/qtest.c (answer formats).

/// <summary>
/// QEMU's qtest line protocol over a machine's bus and clock: one command per line, one answer per command,
/// byte-identical answer formats (`OK`, `OK 0x%016x`, `OK 0x<hex>`, `OK <base64>`, `FAIL Unknown command '…'`).
/// Transport-independent: feed it lines, send what it returns.
/// </summary>
public sealed class QtestServer
{
    readonly Machine _machine;
    readonly TextWriter? _log;
    readonly StringBuilder _pending = new();

    public QtestServer(Machine machine, TextWriter? log = null)
    {
        _machine = machine ?? throw new ArgumentNullException(nameof(machine));
        _log = log;
    }

    public Machine Machine => _machine;
    PhysicalAddressSpace Bus => _machine.Bus;

    string Stamp => (_machine.Clock.Now / 1e9).ToString("0.000000", CultureInfo.InvariantCulture);

    /// <summary>Writes QEMU's `[I +t] OPENED` line (the connection event).</summary>
    public void Opened() => _log?.Write($"[I {Stamp}] OPENED\n");

    /// <summary>Feeds raw bytes from the transport; returns the answers for every complete line.</summary>
    public string Feed(string chunk)
    {
        _pending.Append(chunk);
        var sb = new StringBuilder();
        while (true)
        {
            var s = _pending.ToString();
            var nl = s.IndexOf('\n', StringComparison.Ordinal);
            if (nl < 0) break;
            _pending.Remove(0, nl + 1);
            sb.Append(Handle(s[..nl]));
        }
        return sb.ToString();
    }

    /// <summary>Handles one command line (without its newline) and returns the answer text (with newline).</summary>
    public string Handle(string line)
    {
        ArgumentNullException.ThrowIfNull(line);
        var words = line.Split(' ');
        _log?.Write($"[R +{Stamp}] {string.Join(' ', words)}\n");
        string answer;
        var prefixed = true;
        try
        {
            answer = Dispatch(words, ref prefixed);
        }
        catch (FormatException)
        {
            answer = "FAIL\n";
        }
        if (_log != null)
        {
            if (prefixed) _log.Write($"[S +{Stamp}] ");
            _log.Write(answer);
        }
        return answer;
    }

    string Dispatch(string[] w, ref bool prefixed)
    {
        switch (w[0])
        {
            case "readb": case "readw": case "readl": case "readq":
            {
                var addr = U64(Arg(w, 1));
                var size = SizeOf(w[0][4]);
                Bus.Read(new PhysAddr(addr), size, out var v, BusAttributes.Cpu);
                if (size < 8) v &= (1UL << (8 * size)) - 1;
                return $"OK 0x{v:x16}\n";
            }
            case "writeb": case "writew": case "writel": case "writeq":
            {
                var addr = U64(Arg(w, 1));
                var value = U64(Arg(w, 2));
                var size = SizeOf(w[0][5]);
                if (size < 8) value &= (1UL << (8 * size)) - 1;
                Bus.Write(new PhysAddr(addr), size, value, BusAttributes.Cpu);
                return "OK\n";
            }
            case "read":
            {
                var addr = U64(Arg(w, 1));
                var len = Len(Arg(w, 2));
                if (len == 0) throw new FormatException();
                var data = ReadBytes(addr, len);
                return "OK 0x" + Convert.ToHexStringLower(data) + "\n";
            }
            case "b64read":
            {
                var data = ReadBytes(U64(Arg(w, 1)), Len(Arg(w, 2)));
                return "OK " + Convert.ToBase64String(data) + "\n";
            }
            case "write":
            {
                var addr = U64(Arg(w, 1));
                var len = Len(Arg(w, 2));
                var hex = Arg(w, 3);
                if (hex.Length < 3) { prefixed = false; return "ERR invalid argument size\n"; }
                var data = new byte[len];
                for (var i = 0; i < len; i++)
                    if (i * 2 + 4 <= hex.Length)
                        data[i] = (byte)(((uint)Nib(hex[i * 2 + 2]) << 4) | (uint)Nib(hex[i * 2 + 3]));
                WriteBytes(addr, data);
                return "OK\n";
            }
            case "memset":
            {
                var addr = U64(Arg(w, 1));
                var len = Len(Arg(w, 2));
                var pattern = (byte)U64(Arg(w, 3));
                if (len > 0)
                {
                    var data = new byte[len];
                    Array.Fill(data, pattern);
                    WriteBytes(addr, data);
                }
                return "OK\n";
            }
            case "b64write":
            {
                var addr = U64(Arg(w, 1));
                var len = Len(Arg(w, 2));
                var b64 = Arg(w, 3);
                if (b64.Length < 3) { prefixed = false; return "ERR invalid argument size\n"; }
                byte[] decoded;
                try { decoded = Convert.FromBase64String(b64); } catch (FormatException) { decoded = []; }
                var data = new byte[len];
                decoded.AsSpan(0, Math.Min(decoded.Length, len)).CopyTo(data);
                WriteBytes(addr, data);
                return "OK\n";
            }
            case "endianness":
                return "OK little\n";
            case "clock_step":
            {
                long? ns = w.Length > 1 ? I64(w[1]) : null;
                return $"OK {_machine.Clock.Step(ns)}\n";
            }
            case "clock_set":
                return $"OK {_machine.Clock.Set(I64(Arg(w, 1)))}\n";
            case "outb": case "outw": case "outl":
                U64(Arg(w, 1)); U64(Arg(w, 2));
                return "OK\n";
            case "inb": case "inw": case "inl":
                U64(Arg(w, 1));
                return "OK 0x0000\n";
            case "irq_intercept_in": case "irq_intercept_out": case "set_irq_in":
                Arg(w, 1);
                return "FAIL Unknown device\n";
            default:
                return $"FAIL Unknown command '{w[0]}'\n";
        }
    }

    const int MaxTransfer = 64 << 20; // bound what one command may move (bad input never exhausts memory)

    static int SizeOf(char c) => c switch { 'b' => 1, 'w' => 2, 'l' => 4, _ => 8 };

    static string Arg(string[] w, int i) => i < w.Length ? w[i] : throw new FormatException();

    static int Len(string s)
    {
        var v = U64(s);
        return v > MaxTransfer ? throw new FormatException() : (int)v;
    }

    static int Nib(char c) => c switch
    {
        >= '0' and <= '9' => c - '0',
        >= 'a' and <= 'f' => 10 + c - 'a',
        >= 'A' and <= 'F' => 10 + c - 'A',
        _ => -1,
    };

    /// <summary>qemu_strtou64 with base 0: 0x hex, leading-0 octal, decimal; a leading '-' negates (wraps).</summary>
    public static ulong U64(string s)
    {
        ArgumentNullException.ThrowIfNull(s);
        var neg = s.StartsWith('-');
        var t = neg ? s[1..] : s;
        ulong v;
        if (t.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            if (!ulong.TryParse(t.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out v)) throw new FormatException();
        }
        else if (t.Length > 1 && t[0] == '0')
        {
            v = 0;
            foreach (var c in t.AsSpan(1))
            {
                if (c is < '0' or > '7' || v > (ulong.MaxValue >> 3)) throw new FormatException();
                v = (v << 3) | (uint)(c - '0');
            }
        }
        else if (!ulong.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out v)) throw new FormatException();
        return neg ? unchecked(0 - v) : v;
    }

    static long I64(string s) => unchecked((long)U64(s));

    /// <summary>CPU read of a range; parts nobody decodes read as zero (QEMU's unassigned memory).</summary>
    byte[] ReadBytes(ulong addr, int len)
    {
        var data = new byte[len];
        Bus.ReadBestEffort(addr, data, BusAttributes.Cpu);
        return data;
    }

    /// <summary>CPU write of a range; parts nobody decodes are dropped (QEMU's unassigned memory).</summary>
    void WriteBytes(ulong addr, byte[] data) => Bus.WriteBestEffort(addr, data, BusAttributes.Cpu);
}
