using System.Buffers;
using System.Buffers.Text;
using System.Runtime.CompilerServices;
using System.Text;
using Doorbell.Memory;
using Doorbell.Platform;

namespace Doorbell.Qtest;

// Known limits: irq_intercept_in/out and set_irq_in answer "FAIL Unknown device" (no QOM tree); I/O port
// commands (inb/outb…) reach an empty I/O space as on Arm (reads 0). Malformed arguments, which make QEMU
// abort on a g_assert, answer "FAIL <command>: <reason>" instead; invalid base64 in b64write is a FAIL where
// QEMU writes what glib salvaged (docs/deviations.md). Facts: QEMU 7.2 softmmu/qtest.c (answer and log
// formats: `[R +s.us]` when a line is taken for processing, `[S +s.us]` before its answer, wall-clock seconds
// since the server started, `[I 0.000000] OPENED`, `[I +s.us] CLOSED`).

/// <summary>
/// QEMU's qtest line protocol over a machine's bus and clock: one command per line, one answer per command,
/// byte-identical answer formats (`OK`, `OK 0x%016x`, `OK 0x<hex>`, `OK <base64>`, `FAIL Unknown command '…'`).
/// Transport-independent and byte-oriented: feed it bytes (<see cref="Feed(ReadOnlySpan{byte})"/> or
/// <see cref="ReceiveBuffer"/> + <see cref="Received"/>), send <see cref="Output"/>. Lines are parsed in place
/// from one input buffer with a cursor, so N pipelined lines cost O(N) and the register commands
/// (read*/write*) allocate nothing; answers are formatted straight into the output buffer.
/// </summary>
public sealed class QtestServer
{
    /// <summary>
    /// Attributes of a qtest CPU access. QEMU's CPU accesses carry requester ID 0, so a qtest write to
    /// GITS_TRANSLATER is an MSI from DeviceID 0 (QEMU's choice; docs/deviations.md).
    /// </summary>
    public static readonly BusAttributes CpuAttributes = new(0, true, true, false);

    const int MaxTransfer = 64 << 20; // bound what one command may move (bad input never exhausts memory)
    const int MaxLine = 2 * MaxTransfer + 4096; // the longest legal line: `write ADDR LEN 0x<2 × 64 MiB hex>`
    const int MaxWords = 6;

    readonly Machine _machine;
    readonly PhysicalAddressSpace _bus;
    readonly TextWriter? _logText;
    readonly Stream? _logStream;
    readonly TimeProvider _time;
    readonly long _start;

    byte[] _in = new byte[1 << 16];
    int _inStart, _inEnd, _scan;
    bool _discarding; // an over-long line is being skipped up to its newline
    byte[] _out = new byte[1 << 16];
    int _outLen;
    byte[] _log = [];
    int _logLen;
    byte[] _scratch = new byte[4096];

    /// <summary>A server logging to a text writer (null: no log).</summary>
    public QtestServer(Machine machine, TextWriter? log = null, TimeProvider? time = null)
        : this(machine, log, null, time) { }

    /// <summary>A server logging bytes to a stream (the fast path the launcher uses).</summary>
    public static QtestServer LoggingTo(Machine machine, Stream log, TimeProvider? time = null) =>
        new(machine, null, log ?? throw new ArgumentNullException(nameof(log)), time);

    QtestServer(Machine machine, TextWriter? logText, Stream? logStream, TimeProvider? time)
    {
        _machine = machine ?? throw new ArgumentNullException(nameof(machine));
        _bus = machine.Bus;
        _logText = logText;
        _logStream = logStream;
        _time = time ?? TimeProvider.System;
        _start = _time.GetTimestamp();
        // QEMU's choice for harnesses: the LPI pending table in RAM is authoritative (docs/deviations.md)
        if (machine.GicV3 is { } gic)
            foreach (var rd in gic.Redistributors) rd.PendingTableAuthoritative = true;
        if (Logging) _log = new byte[1 << 16];
    }

    public Machine Machine => _machine;
    bool Logging => _logText != null || _logStream != null;

    /// <summary>Answers produced so far and not yet taken (send them, then <see cref="ClearOutput"/>).</summary>
    public ReadOnlySpan<byte> Output => _out.AsSpan(0, _outLen);
    public void ClearOutput() => _outLen = 0;

    /// <summary>Lines parsed since the server started.</summary>
    public long Lines { get; private set; }

    // --- transport side -----------------------------------------------------------------------------------------

    /// <summary>Writes QEMU's `[I 0.000000] OPENED` line (the connection event).</summary>
    public void Opened()
    {
        if (!Logging) return;
        LogAscii("[I 0.000000] OPENED\n");
        FlushLog();
    }

    /// <summary>Writes QEMU's `[I +t] CLOSED` line.</summary>
    public void Closed()
    {
        if (!Logging) return;
        LogAscii("[I +");
        LogStamp();
        LogAscii("] CLOSED\n");
        FlushLog();
    }

    /// <summary>Free space at the end of the input buffer to receive into (at least 4 KiB); then call <see cref="Received"/>.</summary>
    public ArraySegment<byte> ReceiveBuffer()
    {
        EnsureInputSpace(4096);
        return new ArraySegment<byte>(_in, _inEnd, _in.Length - _inEnd);
    }

    /// <summary>Takes <paramref name="count"/> bytes written into <see cref="ReceiveBuffer"/> and answers every complete line.</summary>
    public void Received(int count)
    {
        if ((uint)count > (uint)(_in.Length - _inEnd)) throw new ArgumentOutOfRangeException(nameof(count));
        _inEnd += count;
        ProcessInput();
    }

    /// <summary>Feeds raw bytes from the transport; answers for every complete line are appended to <see cref="Output"/>.</summary>
    public void Feed(ReadOnlySpan<byte> chunk)
    {
        EnsureInputSpace(chunk.Length);
        chunk.CopyTo(_in.AsSpan(_inEnd));
        _inEnd += chunk.Length;
        ProcessInput();
    }

    /// <summary>Feeds text (Latin-1 bytes); returns the answers for every complete line.</summary>
    public string Feed(string chunk)
    {
        ArgumentNullException.ThrowIfNull(chunk);
        var mark = _outLen;
        Feed(Encoding.Latin1.GetBytes(chunk));
        var s = Encoding.Latin1.GetString(_out, mark, _outLen - mark);
        _outLen = mark;
        return s;
    }

    /// <summary>Handles one command line (without its newline) and returns the answer text (with newline).</summary>
    public string Handle(string line)
    {
        ArgumentNullException.ThrowIfNull(line);
        var mark = _outLen;
        ProcessLine(Encoding.Latin1.GetBytes(line));
        FlushLog();
        var s = Encoding.Latin1.GetString(_out, mark, _outLen - mark);
        _outLen = mark;
        return s;
    }

    void EnsureInputSpace(int count)
    {
        if (_in.Length - _inEnd >= count) return;
        var live = _inEnd - _inStart;
        if (_inStart > 0 && _in.Length - live >= count && live <= _in.Length / 2)
        {
            Buffer.BlockCopy(_in, _inStart, _in, 0, live);
        }
        else
        {
            var need = (long)live + count;
            long size = _in.Length;
            while (size < need) size *= 2;
            // the longest legal line needs MaxLine plus one receive; growing past that only wastes memory
            const int cap = MaxLine + (1 << 16);
            if (size > cap && need <= cap) size = cap;
            if (size > Array.MaxLength) size = need <= Array.MaxLength ? Array.MaxLength : throw new InsufficientMemoryException("qtest input");
            var n = new byte[(int)size];
            Buffer.BlockCopy(_in, _inStart, n, 0, live);
            _in = n;
        }
        _scan -= _inStart;
        _inEnd = live;
        _inStart = 0;
    }

    void ProcessInput()
    {
        while (true)
        {
            var nl = _in.AsSpan(_scan, _inEnd - _scan).IndexOf((byte)'\n');
            if (nl < 0)
            {
                _scan = _inEnd;
                if (_inEnd - _inStart > MaxLine)
                {
                    // no legal line is this long: drop what we have and skip to the newline
                    _discarding = true;
                    _inStart = _scan = _inEnd = 0;
                }
                break;
            }
            var end = _scan + nl;
            var line = _in.AsSpan(_inStart, end - _inStart);
            _inStart = _scan = end + 1;
            if (_discarding)
            {
                _discarding = false;
                Lines++;
                AnswerFail(default, "line too long (longer than any legal command)");
            }
            else if (line.Length > MaxLine)
            {
                Lines++;
                AnswerFail(default, "line too long (longer than any legal command)");
            }
            else ProcessLine(line);
        }
        if (_inStart == _inEnd) _inStart = _inEnd = _scan = 0;
        FlushLog();
    }

    // --- one line ---------------------------------------------------------------------------------------------

    void ProcessLine(ReadOnlySpan<byte> line)
    {
        Lines++;
        if (Logging)
        {
            LogAscii("[R +");
            LogStamp();
            LogAscii(line.IsEmpty ? "]" : "] ");
            LogBytes(line);
            LogByte((byte)'\n');
        }
        // g_strsplit(line, " "): every space separates, so empty words are kept
        Span<int> starts = stackalloc int[MaxWords];
        Span<int> lens = stackalloc int[MaxWords];
        var count = 0;
        var pos = 0;
        while (true)
        {
            var sp = line[pos..].IndexOf((byte)' ');
            var len = sp < 0 ? line.Length - pos : sp;
            if (count < MaxWords) { starts[count] = pos; lens[count] = len; }
            count++;
            if (sp < 0) break;
            pos += sp + 1;
        }
        var words = new Words(line, starts, lens, Math.Min(count, MaxWords));
        Dispatch(ref words);
    }

    ref struct Words(ReadOnlySpan<byte> line, Span<int> starts, Span<int> lens, int count)
    {
        readonly ReadOnlySpan<byte> _line = line;
        readonly Span<int> _starts = starts, _lens = lens;
        public readonly int Count = count;
        public readonly ReadOnlySpan<byte> this[int i] => i < Count ? _line.Slice(_starts[i], _lens[i]) : default;
    }

    void Dispatch(ref Words w)
    {
        var cmd = w[0];
        switch (cmd.Length)
        {
            case 5 when cmd.StartsWith("read"u8) && SizeOf(cmd[4]) is var rs and > 0:
            {
                if (!Number(ref w, 1, "address", out var addr)) return;
                _bus.Read(new PhysAddr(addr), rs, out var v, CpuAttributes);
                if (rs < 8) v &= (1UL << (8 * rs)) - 1;
                AnswerHex64(v);
                return;
            }
            case 6 when cmd.StartsWith("write"u8) && SizeOf(cmd[5]) is var ws and > 0:
            {
                if (!Number(ref w, 1, "address", out var addr) || !Number(ref w, 2, "value", out var value)) return;
                if (ws < 8) value &= (1UL << (8 * ws)) - 1;
                _bus.Write(new PhysAddr(addr), ws, value, CpuAttributes);
                AnswerOk();
                return;
            }
        }
        if (cmd.SequenceEqual("read"u8)) { Read(ref w); return; }
        if (cmd.SequenceEqual("write"u8)) { Write(ref w); return; }
        if (cmd.SequenceEqual("b64read"u8)) { B64Read(ref w); return; }
        if (cmd.SequenceEqual("b64write"u8)) { B64Write(ref w); return; }
        if (cmd.SequenceEqual("memset"u8)) { Memset(ref w); return; }
        if (cmd.SequenceEqual("endianness"u8)) { Answer("OK little\n"); return; }
        if (cmd.SequenceEqual("clock_step"u8))
        {
            long? ns = null;
            if (w.Count > 1)
            {
                if (!Number(ref w, 1, "nanoseconds", out var n)) return;
                ns = unchecked((long)n);
            }
            AnswerClock(_machine.Clock.Step(ns));
            return;
        }
        if (cmd.SequenceEqual("clock_set"u8))
        {
            if (!Number(ref w, 1, "nanoseconds", out var n)) return;
            AnswerClock(_machine.Clock.Set(unchecked((long)n)));
            return;
        }
        if (cmd.SequenceEqual("outb"u8) || cmd.SequenceEqual("outw"u8) || cmd.SequenceEqual("outl"u8))
        {
            if (Number(ref w, 1, "port", out _) && Number(ref w, 2, "value", out _)) AnswerOk();
            return;
        }
        if (cmd.SequenceEqual("inb"u8) || cmd.SequenceEqual("inw"u8) || cmd.SequenceEqual("inl"u8))
        {
            if (Number(ref w, 1, "port", out _)) Answer("OK 0x0000\n");
            return;
        }
        if (cmd.SequenceEqual("irq_intercept_in"u8) || cmd.SequenceEqual("irq_intercept_out"u8) || cmd.SequenceEqual("set_irq_in"u8))
        {
            if (w.Count < 2) { AnswerFail(cmd, "missing argument 1 (QOM path)"); return; }
            Answer("FAIL Unknown device\n");
            return;
        }
        // QEMU: FAIL Unknown command '%s'
        BeginAnswer();
        Out("FAIL Unknown command '"u8);
        OutSanitized(cmd, 64);
        Out("'\n"u8);
        EndAnswer();
    }

    static int SizeOf(byte c) => c switch { (byte)'b' => 1, (byte)'w' => 2, (byte)'l' => 4, (byte)'q' => 8, _ => 0 };

    void Read(ref Words w)
    {
        if (!Number(ref w, 1, "address", out var addr) || !Length(ref w, 2, out var len)) return;
        if (len == 0) { AnswerFail(w[0], "length 0"); return; } // QEMU asserts len != 0
        var data = Scratch(len);
        _bus.ReadBestEffort(addr, data, CpuAttributes);
        BeginAnswer();
        Out("OK 0x"u8);
        var dst = OutSpace(2 * len);
        Convert.TryToHexStringLower(data, dst, out var written);
        _outLen += written;
        Out("\n"u8);
        EndAnswer();
    }

    void B64Read(ref Words w)
    {
        if (!Number(ref w, 1, "address", out var addr) || !Length(ref w, 2, out var len)) return;
        var data = Scratch(len);
        _bus.ReadBestEffort(addr, data, CpuAttributes);
        BeginAnswer();
        Out("OK "u8);
        var dst = OutSpace(Base64.GetMaxEncodedToUtf8Length(len));
        Base64.EncodeToUtf8(data, dst, out _, out var written);
        _outLen += written;
        Out("\n"u8);
        EndAnswer();
    }

    void Write(ref Words w)
    {
        if (!Number(ref w, 1, "address", out var addr) || !Length(ref w, 2, out var len)) return;
        if (w.Count < 4) { AnswerFail(w[0], "missing argument 3 (data)"); return; }
        var hex = w[3];
        if (hex.Length < 3) { Answer("ERR invalid argument size\n", prefixed: false); return; }
        var data = Scratch(len);
        // QEMU: data[i] from hex[2i+2], hex[2i+3] (the first two characters are skipped unread); bytes the text
        // does not reach are zero; a non-hex digit decodes as 0xF (its hex2nib returns -1).
        var full = Math.Min(len, (hex.Length - 2) / 2);
        var src = hex.Slice(2, 2 * full);
        if (Convert.FromHexString(src, data[..full], out _, out var decoded) != OperationStatus.Done || decoded != full)
            for (var i = 0; i < full; i++) data[i] = unchecked((byte)((Nib(src[2 * i]) << 4) | Nib(src[2 * i + 1])));
        data[full..].Clear();
        _bus.WriteBestEffort(addr, data, CpuAttributes);
        AnswerOk();
    }

    void B64Write(ref Words w)
    {
        if (!Number(ref w, 1, "address", out var addr) || !Length(ref w, 2, out var len)) return;
        if (w.Count < 4) { AnswerFail(w[0], "missing argument 3 (data)"); return; }
        var b64 = w[3];
        if (b64.Length < 3) { Answer("ERR invalid argument size\n", prefixed: false); return; }
        // unpadded input (glib accepts it) is completed with '='; anything else that is not base64 is an error
        var maxOut = Base64.GetMaxDecodedFromUtf8Length(b64.Length + 3);
        var data = Scratch(Math.Max(len, maxOut));
        var status = Base64.DecodeFromUtf8(b64, data, out var consumed, out var decoded, isFinalBlock: (b64.Length & 3) == 0);
        if (status == OperationStatus.NeedMoreData && (b64.Length & 3) is 2 or 3)
        {
            Span<byte> tail = stackalloc byte[4];
            var rest = b64[consumed..];
            rest.CopyTo(tail);
            tail[rest.Length..].Fill((byte)'=');
            status = Base64.DecodeFromUtf8(tail, data[decoded..], out _, out var more, isFinalBlock: true);
            decoded += more;
        }
        if (status != OperationStatus.Done) { AnswerFail(w[0], "invalid base64 data"); return; }
        if (decoded != len)
        {
            // QEMU logs the mismatch as a prefixed line and writes LEN bytes (Doorbell: the missing ones are zero)
            if (Logging)
            {
                LogAscii("[S +");
                LogStamp();
                LogAscii("] b64write: data length mismatch (told ");
                LogNumber((ulong)len);
                LogAscii(", found ");
                LogNumber((ulong)decoded);
                LogAscii(")\n");
            }
            if (decoded < len) data[decoded..len].Clear();
        }
        _bus.WriteBestEffort(addr, data[..len], CpuAttributes);
        AnswerOk();
    }

    void Memset(ref Words w)
    {
        if (!Number(ref w, 1, "address", out var addr) || !Length(ref w, 2, out var len) || !Number(ref w, 3, "pattern", out var pattern)) return;
        if (len > 0)
        {
            var data = Scratch(len);
            data.Fill((byte)pattern);
            _bus.WriteBestEffort(addr, data, CpuAttributes);
        }
        AnswerOk();
    }

    Span<byte> Scratch(int len)
    {
        if (_scratch.Length < len) _scratch = new byte[Math.Max(len, _scratch.Length * 2)];
        return _scratch.AsSpan(0, len);
    }

    static int Nib(byte c) => c switch
    {
        >= (byte)'0' and <= (byte)'9' => c - '0',
        >= (byte)'a' and <= (byte)'f' => 10 + c - 'a',
        >= (byte)'A' and <= (byte)'F' => 10 + c - 'A',
        _ => -1,
    };

    bool Number(ref Words w, int i, string what, out ulong value)
    {
        if (i >= w.Count)
        {
            value = 0;
            AnswerFailMissing(w[0], i, what);
            return false;
        }
        if (TryParseU64(w[i], out value)) return true;
        BeginAnswer();
        Out("FAIL "u8);
        OutSanitized(w[0], 64);
        Out(": invalid "u8);
        OutAscii(what);
        Out(" '"u8);
        OutSanitized(w[i], 40);
        Out("'\n"u8);
        EndAnswer();
        return false;
    }

    bool Length(ref Words w, int i, out int len)
    {
        len = 0;
        if (!Number(ref w, i, "length", out var v)) return false;
        if (v > MaxTransfer)
        {
            AnswerFail(w[0], "length beyond 64 MiB (Doorbell's bound on one transfer)");
            return false;
        }
        len = (int)v;
        return true;
    }

    /// <summary>qemu_strtou64 with base 0: 0x hex, leading-0 octal, decimal; a leading '-' negates (wraps); nothing may follow.</summary>
    public static bool TryParseU64(ReadOnlySpan<byte> s, out ulong value)
    {
        value = 0;
        var neg = false;
        if (s.Length > 0 && (s[0] == '-' || s[0] == '+')) { neg = s[0] == '-'; s = s[1..]; }
        if (s.IsEmpty) return false;
        ulong v = 0;
        if (s.Length > 2 && s[0] == '0' && (s[1] | 0x20) == 'x')
        {
            s = s[2..];
            foreach (var c in s)
            {
                int d = c switch
                {
                    >= (byte)'0' and <= (byte)'9' => c - '0',
                    >= (byte)'a' and <= (byte)'f' => c - 'a' + 10,
                    >= (byte)'A' and <= (byte)'F' => c - 'A' + 10,
                    _ => -1,
                };
                if (d < 0 || v >> 60 != 0) return false;
                v = (v << 4) | (uint)d;
            }
        }
        else if (s[0] == '0')
        {
            foreach (var c in s[1..])
            {
                if (c is < (byte)'0' or > (byte)'7' || v >> 61 != 0) return false;
                v = (v << 3) | (uint)(c - '0');
            }
        }
        else
        {
            foreach (var c in s)
            {
                if (c is < (byte)'0' or > (byte)'9') return false;
                var d = (uint)(c - '0');
                if (v > (ulong.MaxValue - d) / 10) return false;
                v = v * 10 + d;
            }
        }
        value = neg ? unchecked(0 - v) : v;
        return true;
    }

    /// <summary>qemu_strtou64 with base 0 on text; throws FormatException when it is not a number.</summary>
    public static ulong U64(string s)
    {
        ArgumentNullException.ThrowIfNull(s);
        return TryParseU64(Encoding.Latin1.GetBytes(s), out var v) ? v : throw new FormatException($"'{s}' is not a number");
    }

    // --- answers ----------------------------------------------------------------------------------------------

    // QEMU writes "[S +t] " before each answer except the ERR ones (qtest_send without qtest_send_prefix).
    void BeginAnswer(bool prefixed = true)
    {
        if (!Logging) return;
        if (prefixed)
        {
            LogAscii("[S +");
            LogStamp();
            LogAscii("] ");
        }
        _answerStart = _outLen;
    }

    int _answerStart;

    void EndAnswer()
    {
        if (Logging) LogBytes(_out.AsSpan(_answerStart, _outLen - _answerStart));
    }

    void AnswerOk()
    {
        BeginAnswer();
        Out("OK\n"u8);
        EndAnswer();
    }

    void Answer(string ascii, bool prefixed = true)
    {
        BeginAnswer(prefixed);
        OutAscii(ascii);
        EndAnswer();
    }

    void AnswerHex64(ulong v)
    {
        BeginAnswer();
        var d = OutSpace(22);
        "OK 0x"u8.CopyTo(d);
        for (var i = 0; i < 16; i++) d[5 + i] = HexDigits[(int)(v >> (60 - 4 * i)) & 0xF];
        d[21] = (byte)'\n';
        _outLen += 22;
        EndAnswer();
    }

    void AnswerClock(long ns)
    {
        BeginAnswer();
        Out("OK "u8);
        ns.TryFormat(OutSpace(20), out var n, default, System.Globalization.CultureInfo.InvariantCulture);
        _outLen += n;
        Out("\n"u8);
        EndAnswer();
    }

    void AnswerFail(ReadOnlySpan<byte> cmd, string reason)
    {
        BeginAnswer();
        Out("FAIL "u8);
        if (!cmd.IsEmpty)
        {
            OutSanitized(cmd, 64);
            Out(": "u8);
        }
        OutAscii(reason);
        Out("\n"u8);
        EndAnswer();
    }

    void AnswerFailMissing(ReadOnlySpan<byte> cmd, int i, string what)
    {
        BeginAnswer();
        Out("FAIL "u8);
        OutSanitized(cmd, 64);
        Out(": missing argument "u8);
        Out([(byte)('0' + i)]);
        Out(" ("u8);
        OutAscii(what);
        Out(")\n"u8);
        EndAnswer();
    }

    static ReadOnlySpan<byte> HexDigits => "0123456789abcdef"u8;

    Span<byte> OutSpace(int n)
    {
        if (_out.Length - _outLen < n) Array.Resize(ref _out, Math.Max(_out.Length * 2, _outLen + n));
        return _out.AsSpan(_outLen);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void Out(ReadOnlySpan<byte> s)
    {
        s.CopyTo(OutSpace(s.Length));
        _outLen += s.Length;
    }

    void OutAscii(string s)
    {
        var d = OutSpace(s.Length);
        for (var i = 0; i < s.Length; i++) d[i] = (byte)s[i];
        _outLen += s.Length;
    }

    /// <summary>An echoed argument: printable ASCII only, cut at <paramref name="max"/> characters, so an answer stays one short line.</summary>
    void OutSanitized(ReadOnlySpan<byte> s, int max)
    {
        var n = Math.Min(s.Length, max);
        var d = OutSpace(n + 3);
        for (var i = 0; i < n; i++) d[i] = s[i] is >= 0x20 and < 0x7F ? s[i] : (byte)'?';
        _outLen += n;
        if (s.Length > max) Out("..."u8);
    }

    // --- log --------------------------------------------------------------------------------------------------

    Span<byte> LogSpace(int n)
    {
        if (_log.Length - _logLen < n) Array.Resize(ref _log, Math.Max(_log.Length * 2, _logLen + n));
        return _log.AsSpan(_logLen);
    }

    void LogBytes(ReadOnlySpan<byte> s)
    {
        s.CopyTo(LogSpace(s.Length));
        _logLen += s.Length;
    }

    void LogByte(byte b)
    {
        LogSpace(1)[0] = b;
        _logLen++;
    }

    void LogAscii(string s)
    {
        var d = LogSpace(s.Length);
        for (var i = 0; i < s.Length; i++) d[i] = (byte)s[i];
        _logLen += s.Length;
    }

    void LogNumber(ulong v)
    {
        v.TryFormat(LogSpace(20), out var n, default, System.Globalization.CultureInfo.InvariantCulture);
        _logLen += n;
    }

    /// <summary>Wall-clock seconds since the server started, as QEMU's FMT_timeval: `%ld.%06ld`.</summary>
    void LogStamp()
    {
        var us = (ulong)Math.Max(0, _time.GetElapsedTime(_start).Ticks / 10);
        LogNumber(us / 1_000_000);
        var d = LogSpace(7);
        d[0] = (byte)'.';
        var frac = us % 1_000_000;
        for (var i = 6; i >= 1; i--) { d[i] = (byte)('0' + (int)(frac % 10)); frac /= 10; }
        _logLen += 7;
    }

    void FlushLog()
    {
        if (_logLen == 0) return;
        if (_logStream != null) _logStream.Write(_log, 0, _logLen);
        else _logText?.Write(Encoding.Latin1.GetString(_log, 0, _logLen));
        _logLen = 0;
    }
}
