#!/usr/bin/env python3
"""Debian's unmodified QEMU 7.2 as the VMM of Doorbell's devices, step by step (issue 13).

Runs `scripts/doorbell-exec --trace … -- qemu-system-aarch64 … -device vfio-pci,host=0000:00:01.0
-device vfio-pci,host=0000:00:02.0 -qtest unix:…` and is the guest's driver over QEMU's qtest socket (TCG,
icount, a vCPU parked in wfi: no guest kernel). It enumerates QEMU's guest PCI bus through QEMU's ECAM, programs
the BARs, drives the registers (through QEMU's mmap of the region, then with x-no-mmap=on), has the multi-queue
DMA device copy into QEMU's guest RAM through Doorbell's SMMUv3 and fault on a guest address QEMU never mapped,
routes an MSI-X into QEMU's ITS (printing the MSI's hops across both processes with their times), resets the
device with an FLR from the guest, raises INTx into a GICv2 guest, and checks QEMU's log for VFIO warnings.
Each step prints PASS or FAIL; the exit status is 0 only when all pass.

  scripts/real-qemu.py              the scenario
  scripts/real-qemu.py --measure    figures for docs/performance.md: start-to-realized (vs QEMU's own edu),
                                    MAP_DMA time of all guest RAM, BAR read cost (mmap trap vs x-no-mmap),
                                    device MSI-X -> guest LPI latency per hop (medians over --msis MSIs)
The test suite runs the same sequence as tests (tests/Doorbell.Tests/Qtest/RealQemuVfioTests.cs).
"""
import argparse, os, re, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
EXEC = os.path.join(ROOT, "scripts", "doorbell-exec")
QEMU = "qemu-system-aarch64"
PARK = 0x5FFFF000
ECAM, EDU_BAR, MQ_BAR, MQ, EDU = 0x4010000000, 0x10000000, 0x10100000, 1, 2
GICD, GICR, ITS, TRANSLATER = 0x08000000, 0x080A0000, 0x08080000, 0x08090040
PROP, PEND, DEVT, COLLT, ITSQ = 0x41100000, 0x41200000, 0x41300000, 0x41310000, 0x41400000
SERVER_TRACE = "pci_msi,smmu_translate,its_translate,gicr,vfio_irq"
QEMU_TRACE = ["-trace", "vfio_msi_interrupt", "-trace", "gicv3_its_translation_write", "-trace", "gicv3_cpuif_update"]
STAMP = re.compile(r"^(\d+)@(\d+)\.(\d{6}):(\S+)\s*(.*)$")


def cfg(slot, reg): return ECAM + (slot << 15) + reg


class Guest:
    """One QEMU under doorbell-exec, driven over qtest. `log()` is the merged stderr of doorbell serve and QEMU."""

    def __init__(self, machine="virt,gic-version=3", no_mmap=False, devices=True, trace=True, mem="512M", extra=(), server=None):
        self.dir = tempfile.mkdtemp(prefix="doorbell-qemu.")
        qs = os.path.join(self.dir, "qtest.sock")
        park = os.path.join(self.dir, "park.bin")
        with open(park, "wb") as f:
            f.write(bytes([0x7f, 0x20, 0x03, 0xd5, 0xff, 0xff, 0xff, 0x17]))  # wfi; b .-4
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(qs)
        self.listener.listen(1)
        opt = ",x-no-mmap=on" if no_mmap else ""
        dev = ["-device", f"vfio-pci,host=0000:00:01.0,addr=01.0{opt}", "-device", f"vfio-pci,host=0000:00:02.0,addr=02.0{opt}"] if devices else []
        qemu = [QEMU, "-machine", machine, "-accel", "tcg", "-icount", "shift=0,sleep=off", "-cpu", "cortex-a57", "-m", mem,
                "-display", "none", "-nodefaults", "-serial", "none", "-monitor", "none",
                "-device", f"loader,file={park},addr=0x{PARK:x},cpu-num=0", *dev, "-d", "guest_errors,unimp",
                *(QEMU_TRACE + ["-msg", "timestamp=on"] if trace else []), *extra, "-qtest", "unix:" + qs, "-qtest-log", "none",
                "-pidfile", os.path.join(self.dir, "qemu.pid")]
        cmd = ([EXEC, "--trace", SERVER_TRACE, "--"] if trace else [EXEC, "--"]) + qemu if devices else qemu
        env = dict(os.environ)
        if server:
            env["DOORBELL_SOCKET"] = server  # doorbell-exec then uses that running server instead of starting one
        if trace:
            env["DOORBELL_TRACE"] = "1"
        self.logpath = os.path.join(self.dir, "stderr.log")
        self.errf = open(self.logpath, "w")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.errf, env=env)
        self.listener.settimeout(120)
        try:
            self.conn, _ = self.listener.accept()
        except socket.timeout:
            self.close()
            raise RuntimeError("QEMU did not connect to the qtest socket:\n" + self.log())
        self.f = self.conn.makefile("rw")
        # QEMU connects to the qtest socket early (accelerator set-up) and answers only once its machine, the
        # vfio-pci devices included, is realized and its main loop runs: the first answer is the realized moment
        self.ask(f"readl 0x{ECAM:x}")
        self.start_to_realized = time.monotonic() - t0

    def ask(self, line):
        self.f.write(line + "\n")
        self.f.flush()
        r = self.f.readline().strip()
        if not r.startswith("OK"):
            raise RuntimeError(f"{line}: {r}")
        return r

    def burst(self, lines):
        """Pipelined: send all, then read all answers."""
        self.f.write("".join(l + "\n" for l in lines))
        self.f.flush()
        return [self.f.readline().strip() for _ in lines]

    def rd(self, size, a): return int(self.ask(f"read{size} 0x{a:x}")[5:], 16)
    def wr(self, size, a, v): self.ask(f"write{size} 0x{a:x} 0x{v:x}")
    def mem(self, a, data): self.ask(f"write 0x{a:x} {len(data)} 0x{data.hex()}")
    def read(self, a, n): return bytes.fromhex(self.ask(f"read 0x{a:x} {n}")[5:])

    def poll(self, fn, tries=3000):
        for i in range(tries):
            v = fn()
            if v:
                return v
            if i > 50:
                time.sleep(0.001)
        return fn()

    def log(self):
        self.errf.flush()
        with open(self.logpath) as f:
            return f.read()

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass
        self.listener.close()
        try:  # QEMU keeps running without its qtest peer: stop it; doorbell-exec then stops the server
            with open(os.path.join(self.dir, "qemu.pid")) as f:
                os.kill(int(f.read().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.errf.close()


# ------------------------------------------------------------------------------------------------ guest set-up
def bring_up(g):
    g.wr("l", cfg(EDU, 0x10), EDU_BAR)
    g.wr("l", cfg(MQ, 0x10), MQ_BAR | 4)
    g.wr("l", cfg(MQ, 0x14), 0)
    g.wr("w", cfg(EDU, 4), 6)
    g.wr("w", cfg(MQ, 4), 6)


def its_setup(g, devices):
    """GICv3 LPIs and the ITS (IHI 0069): MAPD per device, MAPC 0 -> PE 0, MAPTI per (event, LPI), SYNC."""
    g.wr("l", GICD, 0x12); g.wr("l", GICR + 0x14, 0); g.wr("q", GICR + 0x70, PROP | 15); g.wr("q", GICR + 0x78, PEND)
    g.ask(f"memset 0x{PROP:x} 64 0xa1"); g.wr("l", GICR, 1)
    g.wr("q", ITS + 0x100, 1 << 63 | DEVT); g.wr("q", ITS + 0x108, 1 << 63 | COLLT); g.wr("q", ITS + 0x80, 1 << 63 | ITSQ)
    g.wr("q", ITS + 0x88, 0); g.wr("l", ITS, 1)
    cmds = [[0x08 | d << 32, 4, 1 << 63 | itt, 0] for d, itt, _ in devices] + [[0x09, 0, 1 << 63, 0]]
    cmds += [[0x0A | d << 32, ev | lpi << 32, 0, 0] for d, _, maps in devices for ev, lpi in maps] + [[0x05, 0, 0, 0]]
    for i, c in enumerate(cmds):
        for j in range(4):
            g.wr("q", ITSQ + i * 32 + j * 8, c[j])
    g.wr("q", ITS + 0x88, len(cmds) * 32)
    g.poll(lambda: g.rd("q", ITS + 0x90) == len(cmds) * 32)


def pending(g, lpi): return (g.rd("b", PEND + lpi // 8) >> (lpi % 8)) & 1


def desc(src, dst, n, cookie): return src.to_bytes(8, "little") + dst.to_bytes(8, "little") + n.to_bytes(4, "little") + bytes(4) + cookie.to_bytes(8, "little")


def msix_queue1(g):
    """mq-dma vectors 0..3 -> GITS_TRANSLATER, EventID = vector; queue 1 with 4 copy descriptors and its interrupt on."""
    for v in range(4):
        t = MQ_BAR + 0x2000 + 16 * v
        g.wr("l", t, TRANSLATER); g.wr("l", t + 4, 0); g.wr("l", t + 8, v); g.wr("l", t + 12, 0)
    g.wr("w", cfg(MQ, 0x4A), 0x8003)
    g.mem(0x41710000, b"".join(desc(0x41700000, 0x41700100, 64, i) for i in range(4)))
    q1 = MQ_BAR + 0x140
    g.wr("l", MQ_BAR + 8, 1); g.wr("q", q1, 0x41710000); g.wr("q", q1 + 8, 0x41720000); g.wr("l", q1 + 0x10, 4); g.wr("l", q1 + 0x14, 3)
    return q1


def journey(log, lpi):
    """The hops of the last trapped store's MSI, in time order across both processes."""
    hops = []
    for line in log.splitlines():
        m = STAMP.match(line)
        if m:
            hops.append((int(m.group(2)) * 1_000_000 + int(m.group(3)), m.group(4), m.group(5)))
    hops.sort(key=lambda h: h[0])
    want = ["doorbell_vfio_mmio_write", "pci_msi", "smmu_translate", "its_translate", "gicr", "vfio_irq",
            "vfio_msi_interrupt", "gicv3_its_translation_write", "gicv3_cpuif_update"]
    start = max(i for i, h in enumerate(hops) if h[1] == "doorbell_vfio_mmio_write")
    out, i = [], start
    for w in want:
        while i < len(hops) and not (hops[i][1] == w and (w != "gicv3_cpuif_update" or f"irq {lpi} " in hops[i][2])):
            i += 1
        if i == len(hops):
            return out
        out.append(hops[i])
    return out


# ------------------------------------------------------------------------------------------------ the scenario
class Steps:
    def __init__(self):
        self.failed = 0

    def check(self, name, ok, detail=""):
        print(f"  {'PASS' if ok else 'FAIL'}  {name}{(': ' + detail) if detail else ''}")
        if not ok:
            self.failed += 1


def unexplained_warnings(log):
    known = ["vfio: Cannot reset device 0000:00:02.0, no available reset mechanism.", "icount sleep disabled and no active timers"]
    return [l for l in log.splitlines() if "qemu-system-aarch64:" in l and not any(k in l for k in known)]


def scenario():
    s = Steps()
    print("1. QEMU 7.2 under doorbell-exec, -device vfio-pci for host 0000:00:01.0 (mq-dma) and 0000:00:02.0 (edu)")
    g = Guest()
    try:
        s.check("QEMU realized both devices and answers qtest", True, f"{g.start_to_realized:.2f} s from launch")
        maps = re.findall(r"MAP_DMA iova (0x[0-9a-f]+) size (0x[0-9a-f]+): mapped in (\d+) us", g.log())
        s.check("QEMU mapped its guest RAM with MAP_DMA", any(int(sz, 16) >= 512 << 20 for _, sz, _ in maps),
                ", ".join(f"{int(sz, 16) >> 20} MiB at {iova} in {int(us) / 1000:.1f} ms" for iova, sz, us in maps))
        print("2. the guest enumerates its PCI bus through QEMU's ECAM")
        s.check("00:01.0 is 1234:db01, 00:02.0 is 1234:11e8", g.rd("l", cfg(MQ, 0)) == 0xdb011234 and g.rd("l", cfg(EDU, 0)) == 0x11e81234)
        caps, ptr = [], g.rd("b", cfg(MQ, 0x34))
        while ptr:
            h = g.rd("w", cfg(MQ, ptr)); caps.append((ptr, h & 0xff)); ptr = (h >> 8) & 0xfc
        s.check("mq-dma capabilities as VFIO presents them: PM, MSI-X, PCIe", caps == [(0x40, 1), (0x48, 0x11), (0x54, 0x10)], str(caps))
        g.wr("l", cfg(EDU, 0x10), 0xffffffff); edu_size = (~g.rd("l", cfg(EDU, 0x10)) & 0xffffffff) + 1
        s.check("BAR sizes: edu 1 MiB", edu_size == 1 << 20, hex(edu_size))
        bring_up(g)
        s.check("BARs programmed, edu identifies itself through QEMU's mmap of BAR0", g.rd("l", EDU_BAR) == 0x010000ed)
        g.wr("l", EDU_BAR + 4, 0x12345678)
        s.check("edu liveness register inverts", g.rd("l", EDU_BAR + 4) == 0xedcba987)
        print("3. DMA into QEMU's guest RAM through Doorbell's SMMUv3 (IOVA = guest physical address)")
        data = os.urandom(4096)
        g.mem(0x41610000, data)
        g.mem(0x41600000, desc(0x41610000, 0x41620000, 4096, 1) + desc(0x41610000, 0x80000000, 256, 2))
        q0 = MQ_BAR + 0x100
        g.wr("l", MQ_BAR + 8, 1); g.wr("q", q0, 0x41600000); g.wr("q", q0 + 8, 0x41601000); g.wr("l", q0 + 0x10, 4); g.wr("l", q0 + 0x14, 1)
        g.wr("l", q0 + 0x18, 2)  # the doorbell: a posted store, as on hardware; the driver polls the completion tail
        s.check("both descriptors completed (CQ_TAIL = 2)", g.poll(lambda: g.rd("l", q0 + 0x20) == 2))
        s.check("4096 bytes copied by the device, read back from guest RAM", g.read(0x41620000, 4096) == data)
        cpl = g.read(0x41601000, 32)
        s.check("descriptor to GPA 0x80000000 (never mapped by QEMU) completes with a write fault", int.from_bytes(cpl[24:28], "little") == 2)
        time.sleep(0.2)
        ev = [l for l in g.log().splitlines() if "SMMU event" in l]
        s.check("Doorbell's SMMU recorded the fault", any("input 0x80000000" in l for l in ev), ev[-1].split("serve: ")[-1] if ev else "no event")
        print("4. MSI-X into QEMU's ITS")
        its_setup(g, [(MQ << 3, 0x41510000, [(v, 8200 + v) for v in range(4)])])
        q1 = msix_queue1(g)
        g.wr("l", q1 + 0x18, 1)
        s.check("LPI 8201 pending in the guest's pending table", g.poll(lambda: pending(g, 8201)) == 1)
        time.sleep(0.2)
        hops = journey(g.log(), 8201)
        s.check("one MSI followed across both processes", len(hops) == 9, f"{len(hops)} of 9 hops")
        for t, ev_, text in hops:
            print(f"        {t - hops[0][0]:8d} us  {ev_:28s} {text[:90]}")
        print("5. FLR from the guest through QEMU's config space")
        g.wr("q", q0, 0x41600000)
        g.wr("w", cfg(MQ, 0x5C), g.rd("w", cfg(MQ, 0x5C)) | 0x8000)
        g.wr("w", cfg(MQ, 4), 6)
        s.check("mq-dma's queue registers are back at reset values", g.rd("q", q0) == 0 and g.rd("l", MQ_BAR + 8) == 0)
        warn = unexplained_warnings(g.log())
        s.check("QEMU printed no unexplained VFIO warning (docs/deviations.md explains the rest)", not warn, "; ".join(warn))
    finally:
        g.close()
    print("6. the same BAR accesses with x-no-mmap=on (pread/pwrite on the region)")
    g = Guest(no_mmap=True, trace=False)
    try:
        bring_up(g)
        s.check("edu identifies itself through pread", g.rd("l", EDU_BAR) == 0x010000ed)
        g.wr("l", EDU_BAR + 8, 10)
        g.poll(lambda: g.rd("l", EDU_BAR + 0x20) & 1 == 0)
        s.check("edu computes 10! through pwrite/pread", g.rd("l", EDU_BAR + 8) == 3628800)
    finally:
        g.close()
    print("7. INTx into QEMU's GICv2 (-machine virt,gic-version=2)")
    g = Guest(machine="virt,gic-version=2", trace=False)
    try:
        bring_up(g)
        g.wr("l", GICD, 1); g.wr("l", GICD + 0x104, 1 << 5)
        g.wr("l", EDU_BAR + 0x60, 1)
        s.check("edu's INTA (slot 2: SPI 5, INTID 37) pending in the distributor", g.poll(lambda: g.rd("l", GICD + 0x204) & 0x20) == 0x20)
        g.wr("l", EDU_BAR + 0x64, 1)
        s.check("acknowledged in the device: the level drops", g.poll(lambda: g.rd("l", GICD + 0x204) & 0x20 == 0))
    finally:
        g.close()
    print("PASS" if s.failed == 0 else f"FAIL ({s.failed} step(s))")
    return 0 if s.failed == 0 else 1


# ------------------------------------------------------------------------------------------------ measurements
def measure(args):
    load = open("/proc/loadavg").read().split()[:3]
    print(f"load average at start: {' '.join(load)} ({os.cpu_count()} CPUs)")
    # start-to-realized: Doorbell's devices through VFIO vs QEMU's own edu, same harness
    db, warm, own, mapt = [], [], [], []
    sdir = tempfile.mkdtemp(prefix="doorbell-serve.")
    sock = os.path.join(sdir, "vfio.sock")
    dll = os.path.join(ROOT, "src", "Doorbell.Cli", "bin", "Release", "net10.0", "Doorbell.Cli.dll")
    slog = open(os.path.join(sdir, "serve.log"), "w")
    srv = subprocess.Popen(["dotnet", dll, "serve", "--socket", sock], stdout=subprocess.DEVNULL, stderr=slog)
    while not os.path.exists(sock):
        time.sleep(0.05)
    for _ in range(args.runs):
        g = Guest(trace=False, mem=args.mem, server=sock)
        warm.append(g.start_to_realized)
        g.close()
    srv.terminate()
    srv.wait()
    slog.close()
    ram_maps = re.findall(r"MAP_DMA iova 0x40000000 size (0x[0-9a-f]+): mapped in (\d+) us \(probing the client's pages (\d+) us, pin \+ map (\d+) us\)",
                          open(os.path.join(sdir, "serve.log")).read())
    for _ in range(args.runs):
        g = Guest(trace=False, mem=args.mem)
        db.append(g.start_to_realized)
        time.sleep(0.1)
        mapt += [int(us) for _, sz, us in re.findall(r"MAP_DMA iova (0x[0-9a-f]+) size (0x[0-9a-f]+): mapped in (\d+) us", g.log()) if int(sz, 16) >= 256 << 20]
        g.close()
        g = Guest(devices=False, trace=False, mem=args.mem, extra=["-device", "edu,dma_mask=0xffffffffff"])
        own.append(g.start_to_realized)
        g.close()
    print(f"start-to-realized (launch -> first qtest answer), -m {args.mem}, medians of {args.runs}:"
          f" doorbell-exec starting doorbell serve + QEMU with vfio-pci x2 {statistics.median(db):.2f} s;"
          f" QEMU with vfio-pci x2 against a running doorbell serve {statistics.median(warm):.2f} s;"
          f" QEMU with its own edu {statistics.median(own):.2f} s (ratio {statistics.median(warm) / statistics.median(own):.1f}x)")
    if mapt:
        print(f"MAP_DMA of the {args.mem} guest RAM, fresh doorbell serve each run (first MAP_DMA of the process: JIT included):"
              f" median {statistics.median(mapt) / 1000:.1f} ms over {len(mapt)} run(s)")
    for k, (size, total, probe, pin) in enumerate(ram_maps):
        print(f"MAP_DMA of {int(size, 16) >> 20} MiB, QEMU #{k + 1} on one running doorbell serve: {int(total) / 1000:.1f} ms"
              f" (range check {int(probe) / 1000:.1f} ms, pin + SMMU map {int(pin) / 1000:.1f} ms)")
    # BAR read cost: pipelined bursts of edu register reads vs guest RAM reads (the qtest round trip cancels out)
    for no_mmap in (False, True):
        g = Guest(no_mmap=no_mmap, trace=False)
        bring_up(g)
        n = args.burst
        g.burst([f"readl 0x{EDU_BAR:x}"] * 64 + [f"readl 0x{0x41000000:x}"] * 64)
        bar, ram = [], []
        for _ in range(args.runs):
            t = time.perf_counter(); g.burst([f"readl 0x{EDU_BAR:x}"] * n); bar.append((time.perf_counter() - t) / n)
            t = time.perf_counter(); g.burst([f"readl 0x{0x41000000:x}"] * n); ram.append((time.perf_counter() - t) / n)
        b, r = statistics.median(bar), statistics.median(ram)
        print(f"guest BAR read ({'x-no-mmap=on: pread' if no_mmap else 'mmap: SIGSEGV trap'}): {b * 1e6:.1f} us per readl,"
              f" guest RAM readl {r * 1e6:.1f} us, BAR cost {(b - r) * 1e6:.1f} us")
        g.close()
    # device MSI-X -> guest LPI: per-hop medians over N MSIs, each raised by one descriptor on queue 1
    g = Guest()
    try:
        bring_up(g)
        its_setup(g, [(MQ << 3, 0x41510000, [(v, 8200 + v) for v in range(4)])])
        q1 = msix_queue1(g)
        for i in range(args.msis):
            g.wr("l", q1 + 0x18, (i + 1) % 4)
            n0 = i + 1
            g.poll(lambda: g.log().count("gicv3_its_translation_write") >= n0, tries=5000)
        time.sleep(0.2)
        log = g.log()
    finally:
        g.close()
    hops = []
    for line in log.splitlines():
        m = STAMP.match(line)
        if m:
            hops.append((int(m.group(2)) * 1_000_000 + int(m.group(3)), m.group(4)))
    hops.sort()
    names = ["pci_msi", "smmu_translate", "its_translate", "gicr", "vfio_irq", "vfio_msi_interrupt", "gicv3_its_translation_write"]
    per = {n: [] for n in names[1:]}
    total = []
    starts = [i for i, h in enumerate(hops) if h[1] == "pci_msi"]
    for k, si in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(hops)
        seg, prev, ok = hops[si:end], hops[si][0], True
        for n in names[1:]:
            t = next((h[0] for h in seg if h[1] == n and h[0] >= prev), None)
            if t is None:
                ok = False
                break
            per[n].append(t - prev)
            prev = t
        if ok:
            total.append(prev - hops[si][0])
    warm = total[args.msis // 5:] if len(total) > 5 else total
    print(f"device MSI-X -> QEMU's ITS (pci_msi -> gicv3_its_translation_write), {len(total)} MSIs, first {len(total) - len(warm)} as warm-up:"
          f" median {statistics.median(warm):.0f} us, min {min(warm)} us")
    for n in names[1:]:
        v = per[n][args.msis // 5:] if len(per[n]) > 5 else per[n]
        print(f"    -> {n:28s} median {statistics.median(v):7.0f} us")
    print(f"load average at end: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--burst", type=int, default=500)
    ap.add_argument("--msis", type=int, default=50)
    ap.add_argument("--mem", default="512M")
    a = ap.parse_args()
    sys.exit(measure(a) if a.measure else scenario())
