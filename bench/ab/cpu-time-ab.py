#!/usr/bin/env python3
"""Side-by-side in-process benchmark comparison that holds on a loaded machine.

Runs the same [Benchmark] methods from two builds of bench/Doorbell.Benchmarks (e.g. a worktree at an older commit
and the current tree) with the `--cpu-time` runner (thread CPU time per operation, so preemption by other processes
does not count), alternating A B A B ... for several rounds, and prints for each case the median over rounds of each
build's per-run median, and the B/A ratio.

  python3 bench/ab/cpu-time-ab.py A/Doorbell.Benchmarks.dll B/Doorbell.Benchmarks.dll CASES.txt [--rounds 3] [--stat min]

--stat min compares each build's fastest run (min over rounds of the per-run minimum): on a heavily loaded machine
interference only ever adds time, so the minimum is the steadier figure there.

CASES.txt: one `Class.Method [Param=Value ...]` per line (# comments allowed). A case missing from a build is
reported as such.
"""
import re, statistics, subprocess, sys

STAT = "median"

def run(dll, case):
    p = subprocess.run(["dotnet", dll, "--cpu-time", *case.split(), "--batches", "200"],
                       capture_output=True, text=True, timeout=600)
    m = re.search(r"median ([0-9.]+)" if STAT == "median" else r"min ([0-9.]+)", p.stdout)
    return float(m.group(1)) if m else None

def main():
    args = sys.argv[1:]
    global STAT
    rounds = 3
    if "--stat" in args:
        i = args.index("--stat"); STAT = args[i + 1]; del args[i:i + 2]
        if STAT not in ("min", "median"): print("--stat: min or median"); return 2
    if "--rounds" in args:
        i = args.index("--rounds"); rounds = int(args[i + 1]); del args[i:i + 2]
    if len(args) != 3:
        print(__doc__); return 2
    a, b, cases_file = args
    cases = [l.strip() for l in open(cases_file) if l.strip() and not l.startswith("#")]
    print(f"{'case':<62} {'A ns':>9} {'B ns':>9} {'B/A':>6}")
    for case in cases:
        ra, rb = [], []
        for _ in range(rounds):
            ra.append(run(a, case)); rb.append(run(b, case))
        ra = [x for x in ra if x is not None]; rb = [x for x in rb if x is not None]
        if not ra or not rb:
            print(f"{case:<62} {'-' if not ra else f'{statistics.median(ra):9.2f}':>9} {'-' if not rb else f'{statistics.median(rb):9.2f}':>9}   (missing in a build)")
            continue
        agg = min if STAT == "min" else statistics.median
        ma, mb = agg(ra), agg(rb)
        print(f"{case:<62} {ma:9.2f} {mb:9.2f} {mb / ma:6.2f}", flush=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
