#!/usr/bin/env python3
"""Side-by-side benchmark of Doorbell's qtest front end against QEMU 7.2 (issue 17).

Starts qemu-system-aarch64 and scripts/qemu-system-aarch64-doorbell (the precompiled CLI) with the same command
line (TCG, icount shift=0,sleep=off, a vCPU parked in a wfi loop loaded with -device loader: how the project's
differential tests start QEMU), feeds both the same qtest workloads, alternating QEMU and Doorbell runs, and
prints per-operation medians and the QEMU/Doorbell ratio:
  - server-side cost per operation from both -qtest-log files' wall-clock stamps: a burst of N operations is
    sent pipelined, cost = ([S] stamp of the last answer - [R] stamp of the first line) / N;
  - end-to-end client time for pipelined bursts of 16..4096 lines, throughput with -qtest-log none;
  - process start-up to the first answered qtest command, and replay of a multi-session transcript.
Usage: bench/qtest-vs-qemu/run.py [--runs 3] [--burst 256] [--quick]
"""
import argparse, os, re, signal, socket, statistics, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
LAUNCHER = os.path.join(ROOT, "scripts", "qemu-system-aarch64-doorbell")
DOORBELL = {}  # peer kind -> binary, for --startup-only comparisons of builds (e.g. a Native AOT one)
MACHINE = "virt,gic-version=3,iommu=smmuv3"
PARK = 0x5FFFF000

# --- qemu-virt facts (DESIGN.md section 4) and the tables this benchmark builds in RAM ---------------------------
SMMU, ITS, GICD, GICR = 0x09050000, 0x08080000, 0x08000000, 0x080A0000
STRTAB, CMDQ, EVTQ, CD = 0x41000000, 0x41010000, 0x41020000, 0x41030000
L0, L1, L2, L3DMA, L3MSI = 0x41040000, 0x41041000, 0x41042000, 0x41043000, 0x41044000
PROP, PEND, DEVT, COLLT, ITSQ, ITT = 0x41100000, 0x41200000, 0x41300000, 0x41310000, 0x41400000, 0x41500000
IOVA_MSI, SID, ASID = 0x08000000, 8, 1
EDU_CFG, BAR = 0x4010008000, 0x10000000
CMDQ_LOG2 = 8            # 256 SMMU commands
ITSQ_BYTES = 4096        # one page: 128 ITS commands


def Q(a, v): return f"writeq 0x{a:x} 0x{v:x}"
def L(a, v): return f"writel 0x{a:x} 0x{v:x}"


def setup():
    """PCI bring-up, SMMUv3 stage 1 with the ITS doorbell mapped, GICv3 LPIs, ITS tables, MAPD/MAPC/MAPTI, edu MSI."""
    s = [L(EDU_CFG + 0x10, BAR), "writew 0x4010008004 0x6"]
    cd0 = 16 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 30 | 1 << 31 | 4 << 32 | 1 << 41 | 1 << 45 | 1 << 46 | ASID << 48
    page = lambda pa: pa | 1 << 10 | 3 << 8 | 1 << 6 | 3
    s += [Q(CD, cd0), Q(CD + 8, L0), Q(CD + 24, 0x44 | 0xFF << 8 | 0x04 << 16), Q(STRTAB + SID * 64, 1 | 5 << 1 | CD),
          Q(L0, L1 | 3), Q(L1, L2 | 3), Q(L2 + (IOVA_MSI >> 21 & 0x1FF) * 8, L3MSI | 3), Q(L3MSI, page(0x08090000)),
          Q(SMMU + 0x80, STRTAB), L(SMMU + 0x88, 4), Q(SMMU + 0x90, CMDQ | CMDQ_LOG2), L(SMMU + 0x98, 0), L(SMMU + 0x9C, 0),
          Q(SMMU + 0xA0, EVTQ | 4), L(SMMU + 0x100A8, 0), L(SMMU + 0x100AC, 0), L(SMMU + 0x2C, 2), L(SMMU + 0x20, 0xC),
          L(SMMU + 0x20, 0xD)]
    s += [L(GICD, 0x12), L(GICR + 0x14, 0), Q(GICR + 0x70, PROP | 15), Q(GICR + 0x78, PEND), "memset 0x41100000 64 0xa1",
          L(GICR, 1), Q(ITS + 0x100, 1 << 63 | DEVT), Q(ITS + 0x108, 1 << 63 | COLLT), Q(ITS + 0x80, 1 << 63 | ITSQ),
          Q(ITS + 0x88, 0), L(ITS, 1)]
    cmds = [[0x08 | SID << 32, 4, 1 << 63 | ITT, 0], [0x09, 0, 1 << 63, 0], [0x0A | SID << 32, 8192 << 32, 0, 0], [0x05, 0, 0, 0]]
    for i, c in enumerate(cmds):
        for j in range(4):
            s.append(Q(ITSQ + i * 32 + j * 8, c[j]))
    s.append(Q(ITS + 0x88, len(cmds) * 32))
    s += [L(EDU_CFG + 0x44, IOVA_MSI + 0x40), L(EDU_CFG + 0x48, 0), "writew 0x401000804c 0x0", "writew 0x4010008042 0x1"]
    return s


class Queues:
    """Producer indices of the SMMU command queue and the ITS command queue across a session."""
    def __init__(self):
        self.smmu = 0          # commands written (producer index with wrap)
        self.its = len([0] * 4) * 32

    def smmu_cmds(self, *cmds):
        out = []
        size = 1 << CMDQ_LOG2
        for d0, d1 in cmds:
            slot = self.smmu % size
            out += [Q(CMDQ + slot * 16, d0), Q(CMDQ + slot * 16 + 8, d1)]
            self.smmu += 1
        p = self.smmu % (2 * size)
        out.append(L(SMMU + 0x98, (p % size) | ((p // size) & 1) << CMDQ_LOG2))
        return out

    def its_cmd(self, c):
        off = self.its % ITSQ_BYTES
        out = [Q(ITSQ + off + j * 8, c[j]) for j in range(4)]
        self.its += 32
        out.append(Q(ITS + 0x88, self.its % ITSQ_BYTES))
        return out


SYNC = (0x46, 0)
MSI = L(BAR + 0x60, 1)


def operations(q):
    """name -> function(i) giving the qtest lines of the i-th operation."""
    return {
        "edu MMIO write": lambda i: [L(BAR + 4, i)],
        "edu MMIO read": lambda i: ["readl 0x10000004"],
        "MSI via SMMU+ITS (pending set)": lambda i: [MSI],
        "SMMU TLBI_NH_ALL+SYNC": lambda i: q.smmu_cmds((0x10, 0), SYNC),
        "SMMU TLBI_NH_ASID+SYNC": lambda i: q.smmu_cmds((0x11 | ASID << 48, 0), SYNC),
        "TLBI_NH_ALL+SYNC, then MSI (walk)": lambda i: q.smmu_cmds((0x10, 0), SYNC) + [MSI],
        "CFGI_STE+SYNC, then MSI": lambda i: q.smmu_cmds((0x03 | SID << 32, 1), SYNC) + [MSI],
        "ITS MAPTI": lambda i: q.its_cmd([0x0A | SID << 32, (i % 32) | (8192 + i % 32) << 32, 0, 0]),
        "ITS INV (16 ID bits)": lambda i: q.its_cmd([0x0C | SID << 32, 0, 0, 0]),
        "ITS INVALL": lambda i: q.its_cmd([0x0D, 0, 0, 0]),
    }


# --- peers ---------------------------------------------------------------------------------------------------------

class Peer:
    def __init__(self, kind, log):
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix="qtest-bench-")
        path = os.path.join(self.dir, "q.sock")
        blob = os.path.join(self.dir, "park.bin")
        with open(blob, "wb") as f:
            f.write(bytes([0x7f, 0x20, 0x03, 0xd5, 0xff, 0xff, 0xff, 0x17]))
        self.log = os.path.join(self.dir, "qtest.log") if log else "none"
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(path)
        lst.listen(1)
        binary = "qemu-system-aarch64" if kind == "qemu" else DOORBELL.get(kind, LAUNCHER)
        args = [binary, "-machine", MACHINE, "-accel", "tcg", "-icount", "shift=0,sleep=off", "-cpu", "cortex-a57",
                "-m", "512M", "-display", "none", "-nodefaults", "-serial", "none", "-monitor", "none",
                "-device", f"loader,file={blob},addr=0x{PARK:x},cpu-num=0", "-device", "edu,dma_mask=0xffffffffff",
                "-qtest", "unix:" + path, "-qtest-log", self.log]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lst.settimeout(120)
        self.sock, _ = lst.accept()
        lst.close()
        self.buf = b""
        self.sent = 0  # commands sent so far = index of the next one's [R] and [S] log stamps
        self.ask("endianness")
        self.startup = time.perf_counter() - t0

    def ask(self, line):
        return self.burst([line])[0]

    def burst(self, lines):
        """Sends the lines pipelined (one write) and returns their answers."""
        data = ("\n".join(lines) + "\n").encode()
        t = threading.Thread(target=self.sock.sendall, args=(data,))
        t.start()
        want = len(lines)
        chunks = [self.buf]
        got = self.buf.count(b"\n")
        while got < want:
            c = self.sock.recv(1 << 20)
            if not c:
                raise IOError(f"{self.kind} closed the socket")
            chunks.append(c)
            got += c.count(b"\n")
        t.join()
        allb = b"".join(chunks)
        parts = allb.split(b"\n")
        self.buf = b"\n".join(parts[want:])
        self.sent += want
        return [p.decode() for p in parts[:want]]

    def close(self):
        self.sock.close()
        if self.kind == "qemu":
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def stamps(self):
        """([R] stamps, [S] stamps) in order, seconds."""
        r, s = [], []
        rx = re.compile(r"^\[([RS]) \+(\d+)\.(\d{6})\]")
        with open(self.log, errors="replace") as f:
            for line in f:
                m = rx.match(line)
                if m:
                    (r if m.group(1) == "R" else s).append(int(m.group(2)) + int(m.group(3)) / 1e6)
        return r, s

    def cleanup(self):
        for n in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, n))
        os.rmdir(self.dir)


# --- runs ----------------------------------------------------------------------------------------------------------

def run_log_session(kind, burst, reps):
    """One process: setup, then each operation in `reps` pipelined bursts of `burst`; server-side cost per op."""
    p = Peer(kind, log=True)
    try:
        for line in setup():
            p.ask(line)
        q = Queues()
        spans = {}
        for name, op in operations(q).items():
            for r in range(reps):
                lines = []
                for i in range(burst):
                    lines += op(r * burst + i)
                first = p.sent
                answers = p.burst(lines)
                bad = [a for a in answers if not a.startswith("OK")]
                if bad:
                    raise RuntimeError(f"{kind}: {name}: {bad[0]}")
                spans.setdefault(name, []).append((first, p.sent - 1, burst))
        sizes = [16, 64, 256, 1024, 4096]
        for n in sizes:
            first = p.sent
            p.burst(["readl 0x10000004"] * n)
            spans.setdefault(f"burst of {n} readl (per line)", []).append((first, p.sent - 1, n))
    finally:
        p.close()
    r, s = p.stamps()
    out = {}
    for name, lst in spans.items():
        out[name] = [(s[b] - r[a]) / n for a, b, n in lst]
    p.cleanup()
    return out


def run_nolog_session(kind, sizes):
    """One process without a log: start-up, end-to-end time of pipelined bursts (client side)."""
    p = Peer(kind, log=False)
    res = {"start-up to first answer": [p.startup]}
    try:
        for line in setup()[:2]:
            p.ask(line)
        for n in sizes:
            lines = [L(BAR + 4, i) for i in range(n)]
            p.burst(lines)  # warm
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                p.burst(lines)
                times.append((time.perf_counter() - t0) / n)
            res[f"end to end, burst of {n} writel (per line)"] = [statistics.median(times)]
    finally:
        p.close()
        p.cleanup()
    return res


def transcript():
    """A session as a harness runs it: setup, then a mix of MMIO, MSIs, invalidations and ITS commands."""
    q = Queues()
    ops = operations(q)
    lines = list(setup())
    names = list(ops)
    for i in range(60):
        lines += ops[names[i % len(names)]](i)
        lines += ["readl 0x10000004", "read 0x41200400 8", L(BAR + 0x64, 1)]
    return lines


def run_replay(kind, sessions):
    """Multi-session transcript end to end: start the process, answer every line one at a time, stop it."""
    lines = transcript()
    t0 = time.perf_counter()
    for _ in range(sessions):
        p = Peer(kind, log=False)
        for line in lines:
            a = p.ask(line)
            if not a.startswith("OK"):
                raise RuntimeError(f"{kind}: {line}: {a}")
        p.close()
        p.cleanup()
    return time.perf_counter() - t0, sessions * (len(lines) + 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="alternating runs per peer")
    ap.add_argument("--burst", type=int, default=256, help="operations per pipelined burst")
    ap.add_argument("--reps", type=int, default=3, help="bursts per operation per run")
    ap.add_argument("--sessions", type=int, default=3, help="sessions in the replayed transcript")
    ap.add_argument("--startup-only", nargs="*", metavar="NAME=BINARY",
                    help="only measure start-up to the first answer: QEMU, the launcher and each NAME=BINARY, alternating")
    args = ap.parse_args()
    if args.startup_only is not None:
        kinds = ["qemu", "doorbell"]
        for spec in args.startup_only:
            name, binary = spec.split("=", 1)
            DOORBELL[name] = binary
            kinds.append(name)
        subprocess.run([LAUNCHER, "-M", "help"], check=True, stdout=subprocess.DEVNULL)
        times = {k: [] for k in kinds}
        for r in range(args.runs):
            for k in (kinds if r % 2 == 0 else kinds[::-1]):
                p = Peer(k, log=False)
                times[k].append(p.startup)
                p.close()
                p.cleanup()
        load = open("/proc/loadavg").read().split()[:3]
        print(f"start-up to first answered qtest command, median of {args.runs} alternating runs, load {' '.join(load)}")
        for k in kinds:
            print(f"  {k:<12} {statistics.median(times[k]) * 1e3:8.1f} ms  (min {min(times[k]) * 1e3:.1f} ms)")
        return
    # build the precompiled CLI now, not inside a timed start-up
    subprocess.run([LAUNCHER, "-M", "help"], check=True, stdout=subprocess.DEVNULL)
    server = {"qemu": {}, "doorbell": {}}
    client = {"qemu": {}, "doorbell": {}}
    replay = {"qemu": [], "doorbell": []}
    sizes = [16, 64, 256, 1024, 4096]
    for run in range(args.runs):
        order = ["qemu", "doorbell"] if run % 2 == 0 else ["doorbell", "qemu"]
        for kind in order:
            for k, v in run_log_session(kind, args.burst, args.reps).items():
                server[kind].setdefault(k, []).extend(v)
            for k, v in run_nolog_session(kind, sizes).items():
                client[kind].setdefault(k, []).extend(v)
            replay[kind].append(run_replay(kind, args.sessions))
    med = statistics.median
    load = open("/proc/loadavg").read().split()[:3]
    print(f"# qtest-vs-qemu: {args.runs} alternating runs per peer, bursts of {args.burst} ops x {args.reps}; "
          f"load average {' '.join(load)}; {os.cpu_count()} CPUs")
    print(f"# QEMU: {subprocess.run(['qemu-system-aarch64', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}")
    print()
    print("server-side cost per operation (log stamps: ([S] last - [R] first) / N, median over bursts)")
    print(f"| {'operation':<40} | {'QEMU 7.2':>12} | {'Doorbell':>12} | {'QEMU/Doorbell':>13} |")
    print(f"|{'-' * 42}|{'-' * 13}:|{'-' * 13}:|{'-' * 14}:|")
    for k in server["qemu"]:
        a, b = med(server["qemu"][k]), med(server["doorbell"][k])
        print(f"| {k:<40} | {a * 1e6:>9.3f} us | {b * 1e6:>9.3f} us | {a / b if b > 0 else float('inf'):>12.1f}x |")
    print()
    print("client side (no log): start-up and end-to-end pipelined bursts")
    print(f"| {'measure':<40} | {'QEMU 7.2':>12} | {'Doorbell':>12} | {'QEMU/Doorbell':>13} |")
    print(f"|{'-' * 42}|{'-' * 13}:|{'-' * 13}:|{'-' * 14}:|")
    for k in client["qemu"]:
        a, b = med(client["qemu"][k]), med(client["doorbell"][k])
        unit, f = ("ms", 1e3) if "start" in k else ("us", 1e6)
        print(f"| {k:<40} | {a * f:>9.3f} {unit} | {b * f:>9.3f} {unit} | {a / b:>12.2f}x |")
    for kind in ("qemu", "doorbell"):
        per = med(client[kind]["end to end, burst of 4096 writel (per line)"])
        print(f"{kind}: {1 / per / 1e6:.2f} M MMIO commands/s end to end (bursts of 4096 over the unix socket)")
    print()
    rq, rd = med(t for t, _ in replay["qemu"]), med(t for t, _ in replay["doorbell"])
    n = replay["qemu"][0][1]
    print(f"replay of a {args.sessions}-session transcript ({n} commands, one at a time, process start to exit): "
          f"QEMU {rq:.3f} s, Doorbell {rd:.3f} s, QEMU/Doorbell {rq / rd:.2f}x")


if __name__ == "__main__":
    main()
