#!/usr/bin/env python3
"""Which source files a benchmark's operation runs code in — the journeys of docs/design.md, measured, not read.

Runs one [Benchmark] of bench/Doorbell.Benchmarks with the --cpu-time runner under `perf record`, with the JIT told
not to inline (DOTNET_JitNoInline=1, no tiering), so every method the operation calls is a symbol of its own, even a
one-line getter. Setup is skipped (perf's --delay). Each sampled method of the Doorbell assembly is mapped to the
file that declares its type, and the files are printed with their sample counts and methods.

  python3 bench/journey/walk.py [Class.Method] [--seconds N] [--min-samples K]

Default: EndToEndBenchmarks.MsixToEventFdRead (an MSI-X through the SMMU and ITS to a VFIO eventfd). Needs perf
(linux-perf) and a Release build of bench/Doorbell.Benchmarks. Sampling can miss a method that runs for a few
nanoseconds per operation only if the run is too short: the default 20 s gives every method on the path hundreds
of samples (a no-inline getter costs ~1-2 ns per call).
"""
import os, re, shutil, subprocess, sys, collections, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DLL = os.path.join(ROOT, "bench/Doorbell.Benchmarks/bin/Release/net10.0/Doorbell.Benchmarks.dll")
SRC = os.path.join(ROOT, "src/Doorbell")

def type_files():
    """Type name (namespace-less, outermost) -> source file, from the declarations under src/Doorbell."""
    decl = re.compile(r"^\s*(?:\[[^\]]*\]\s*)*(?:(?:public|internal|private|protected|sealed|static|abstract|readonly|partial|file|unsafe|ref|record)\s+)*(?:class|struct|record|interface|enum)\s+([A-Za-z_][A-Za-z0-9_]*)")
    out = {}
    for d, _, files in os.walk(SRC):
        if "/obj" in d or "/bin" in d: continue
        for f in files:
            if not f.endswith(".cs"): continue
            p = os.path.join(d, f)
            for line in open(p, encoding="utf-8"):
                m = decl.match(line)
                if m: out.setdefault(m.group(1), os.path.relpath(p, ROOT))
    return out

def main():
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print(__doc__.strip()); return 0
    if shutil.which("perf") is None:
        print("walk.py: perf is not installed (Debian: apt-get install linux-perf)"); return 2
    seconds, min_samples = 20, 20
    try:
        if "--seconds" in args:
            i = args.index("--seconds"); seconds = int(args[i + 1]); del args[i:i + 2]
        if "--min-samples" in args:
            i = args.index("--min-samples"); min_samples = int(args[i + 1]); del args[i:i + 2]
    except (IndexError, ValueError):
        print("walk.py: --seconds and --min-samples take a whole number"); return 2
    if len(args) > 1 or (args and args[0].startswith("-")):
        print(f"walk.py: unexpected argument {args[-1]!r} (see --help)"); return 2
    case = args[0] if args else "EndToEndBenchmarks.MsixToEventFdRead"
    if not os.path.exists(DLL):
        print(f"walk.py: {DLL} is missing: dotnet build bench/Doorbell.Benchmarks -c Release"); return 2
    env = dict(os.environ, DOTNET_JitNoInline="1", DOTNET_TieredCompilation="0", DOTNET_PerfMapEnabled="1",
               DOTNET_EnableWriteXorExecute="0")
    # calibrate: the runner makes batches of 2000 calls; size the run to last about `seconds` after setup
    cal = subprocess.run(["dotnet", DLL, "--cpu-time", *case.split(), "--batches", "20"], env=env, capture_output=True, text=True)
    m = re.search(r"median ([0-9.]+)", cal.stdout)
    if not m:
        print(f"walk.py: {case} did not run: {(cal.stdout + cal.stderr).strip().splitlines()[-1:]}"); return 1
    batches = max(50, int(seconds * 1e9 / (float(m.group(1)) * 2000)))
    data = tempfile.mktemp(suffix=".perf")
    cmd = ["perf", "record", "-q", "-F", "15000", "-e", "cpu-clock", "-D", "4000", "-o", data,
           "dotnet", DLL, "--cpu-time", *case.split(), "--batches", str(batches)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"walk.py: perf record failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"); return 1
    rep = subprocess.run(["perf", "report", "-i", data, "--sort", "sym", "--stdio", "-F", "sample,sym"],
                         capture_output=True, text=True).stdout
    os.unlink(data)
    files = type_files()
    per_file = collections.defaultdict(lambda: [0, {}])
    sym = re.compile(r"^\s*(\d+)\s+\[\.\]\s+.*?\[Doorbell\]\s+([A-Za-z0-9_.`+<>\[\],]+?)::([^(]+)\(")
    for line in rep.splitlines():
        m = sym.match(line)
        if not m: continue
        n, full, method = int(m.group(1)), m.group(2), m.group(3)
        typ = re.sub(r"`\d+.*$", "", full.split("+")[0]).split(".")[-1]
        f = files.get(typ, f"(no declaration found: {full})")
        per_file[f][0] += n
        per_file[f][1][f"{full.split('.')[-1]}::{method}"] = per_file[f][1].get(f"{full.split('.')[-1]}::{method}", 0) + n
    kept = sorted(((f, v) for f, v in per_file.items() if v[0] >= min_samples), key=lambda x: -x[1][0])
    print(f"{case}: {len(kept)} files of src/Doorbell run code (methods not inlined; files with at least {min_samples} samples)")
    for f, (n, methods) in kept:
        top = ", ".join(f"{k} {v}" for k, v in sorted(methods.items(), key=lambda x: -x[1])[:6])
        print(f"  {n:7d}  {f}\n           {top}")
    dropped = [(f, v[0]) for f, v in per_file.items() if v[0] < min_samples]
    if dropped: print("below the threshold (setup residue or sampling noise): " + ", ".join(f"{f} {n}" for f, n in sorted(dropped, key=lambda x: -x[1])))
    return 0

if __name__ == "__main__":
    sys.exit(main())
