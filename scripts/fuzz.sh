#!/usr/bin/env bash
# Fuzzing Doorbell's outside surfaces (docs/robustness.md).
#   scripts/fuzz.sh smoke [SECONDS] [SEED]     the bounded run CI does: every target, structure-aware, new seed unless given
#   scripts/fuzz.sh campaign SECONDS [WEIGHTS] the structure-aware run on both cores (one process per core, different seeds,
#                                              niced, from a snapshot of the build; WEIGHTS e.g. qtest=3,serve=1)
#   scripts/fuzz.sh coverage [SECONDS]         line/branch coverage of Doorbell.dll reached by each in-process target
#   scripts/fuzz.sh afl TARGET [SECONDS]       coverage-guided: AFL++ on a SharpFuzz-instrumented Doorbell.dll, one main
#                                              and one secondary instance (both cores); findings in fuzz/afl/TARGET/
#   scripts/fuzz.sh replay TARGET FILE...      replay inputs (e.g. a finding) through the target's oracles
# Findings (crash, hang, oracle violation) land in fuzz/findings/TARGET/; copy each into fuzz/regressions/TARGET/ once it
# is fixed, where the test suite replays it forever.
set -uo pipefail
cd "$(dirname "$0")/.."
dll=fuzz/Doorbell.Fuzz/bin/Release/net10.0/Doorbell.Fuzz.dll
build() { dotnet build -c Release fuzz/Doorbell.Fuzz -v quiet -nologo >/dev/null || { echo "fuzz: build failed" >&2; exit 2; }; }
cmd=${1:-smoke}; shift || true
case "$cmd" in
  smoke)
    [ -f "$dll" ] || build
    seconds=${1:-120}; seed=${2:-$(( (RANDOM << 15) | RANDOM ))}
    dotnet "$dll" smoke --seconds "$seconds" --seed "$seed" --findings fuzz/findings
    rc=$?
    if [ $rc -gt 1 ] && [ -f fuzz/findings/last-input.bin ]; then
      echo "fuzz smoke: the process died (exit $rc) on fuzz/findings/last-input.bin (seed $seed)"
    fi
    exit $rc ;;
  campaign)
    # Runs from a snapshot of the build (so that rebuilding meanwhile cannot pull assemblies from under it), one process
    # per core with different seeds, the budget weighted towards the fast targets (every target still runs), niced.
    # Prints the load before and after, each process's lines, and the per-target totals over both processes.
    build
    seconds=${1:?campaign needs SECONDS}
    weights=${2:-qtest=3,structures=3,smmuv2=2,vfio=2,dtb=1,board-yaml=1,serve=1}
    base=${CAMPAIGN_SEED:-$RANDOM}
    snap=$(mktemp -d /tmp/doorbell-fuzz-campaign.XXXXXX)
    cp -r fuzz/Doorbell.Fuzz/bin/Release/net10.0/. "$snap/"
    mkdir -p fuzz/findings
    echo "campaign: $(git rev-parse --short HEAD 2>/dev/null) $seconds s per core, seeds $base/$((base + 1)), weights $weights"
    echo "campaign: load at start: $(uptime)"
    for i in 0 1; do
      nice -n "${CAMPAIGN_NICE:-15}" dotnet "$snap/Doorbell.Fuzz.dll" smoke --seconds "$seconds" --seed $((base + i)) --weights "$weights" \
        --corpus fuzz/corpus --findings "fuzz/findings/core$i" > "fuzz/findings/campaign-core$i.log" 2>&1 &
    done
    wait
    echo "campaign: load at end: $(uptime)"
    cat fuzz/findings/campaign-core*.log
    awk '$2 ~ /^[0-9]+$/ && $3 == "inputs" { inputs[$1] += $2; ops[$1] += $4; secs[$1] += $7; if ($NF != "ok") bad[$1] = 1 }
         END { for (t in ops) { printf "campaign total: %-11s %10d inputs %12d operations %8.0f s %s\n", t, inputs[t], ops[t], secs[t], (t in bad) ? "FINDINGS" : "ok"; all += ops[t] }
               printf "campaign total: %d operations\n", all }' fuzz/findings/campaign-core*.log
    rm -rf "$snap"
    ! grep -q "finding(s)" fuzz/findings/campaign-core*.log ;;
  coverage)
    # Line/branch coverage of Doorbell.dll reached by each in-process target in SECONDS (coverlet's collector on the
    # fuzz/Doorbell.Fuzz.Coverage run), for the whole assembly and the namespaces the target aims at.
    seconds=${1:-60}; seed=${2:-1}
    dotnet build -c Release fuzz/Doorbell.Fuzz.Coverage -v quiet -nologo >/dev/null || { echo "fuzz: coverage build failed" >&2; exit 2; }
    declare -A ns=(
      [qtest]="Doorbell.Qtest Doorbell.Smmu.V3 Doorbell.Gic Doorbell.Pci Doorbell.Devices"
      [dtb]="Doorbell.Platform.DeviceTree"
      [board-yaml]="Doorbell.Platform"
      [vfio]="Doorbell.Host.Vfio Doorbell.Host.Iommu Doorbell.Host.SmmuV3"
      [structures]="Doorbell.Smmu.V3 Doorbell.Gic.Its Doorbell.Iommu Doorbell.Vmsa"
      [smmuv2]="Doorbell.Smmu.V2 Doorbell.Iommu Doorbell.Vmsa"
      [serve]="Doorbell.Server Doorbell.Host.Vfio"
    )
    rc=0
    for t in ${COVERAGE_TARGETS:-qtest dtb board-yaml vfio structures smmuv2 serve}; do
      out=$(mktemp -d /tmp/doorbell-fuzz-coverage.XXXXXX)
      DOORBELL_FUZZ_COVERAGE_TARGET=$t DOORBELL_FUZZ_COVERAGE_SECONDS=$seconds DOORBELL_FUZZ_COVERAGE_SEED=$seed \
        dotnet test fuzz/Doorbell.Fuzz.Coverage -c Release --no-build --collect "XPlat Code Coverage" --results-directory "$out" \
        -- DataCollectionRunSettings.DataCollectors.DataCollector.Configuration.Format=cobertura \
           'DataCollectionRunSettings.DataCollectors.DataCollector.Configuration.Include=[Doorbell]*' >"$out/test.log" 2>&1 || { echo "coverage $t: the run failed (see $out/test.log)"; rc=1; continue; }
      xml=$(find "$out" -name coverage.cobertura.xml | head -1)
      grep -h "operations in" "/tmp/doorbell-fuzz-coverage-$t.log" 2>/dev/null | sed "s/^ */coverage $t: /"
      dotnet "$dll" coverage-report "$t" "$xml" ${ns[$t]} || rc=1
      rm -rf "$out"
    done
    exit $rc ;;
  afl)
    target=${1:?afl needs a target}; seconds=${2:-3600}
    command -v afl-fuzz >/dev/null || { apt-get update -qq && apt-get install -y -qq afl++ >/dev/null; } || { echo "fuzz: afl++ not installable" >&2; exit 2; }
    [ -x .tools/sharpfuzz ] || dotnet tool install --tool-path .tools SharpFuzz.CommandLine --version 2.3.0 >/dev/null
    out=fuzz/afl/build; rm -rf "$out"
    dotnet publish -c Release fuzz/Doorbell.Fuzz -o "$out" -v quiet -nologo >/dev/null || exit 2
    .tools/sharpfuzz "$out/Doorbell.dll" >/dev/null || exit 2
    dict=(); [ -f "fuzz/dict/$target.dict" ] && dict=(-x "fuzz/dict/$target.dict")
    export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
    mkdir -p "fuzz/afl/$target"
    timeout "$seconds" afl-fuzz -M main -i "fuzz/corpus/$target" -o "fuzz/afl/$target" -t 10000 -m none "${dict[@]}" -- dotnet "$out/Doorbell.Fuzz.dll" afl "$target" > "fuzz/afl/$target-main.log" 2>&1 &
    timeout "$seconds" afl-fuzz -S second -i "fuzz/corpus/$target" -o "fuzz/afl/$target" -t 10000 -m none "${dict[@]}" -- dotnet "$out/Doorbell.Fuzz.dll" afl "$target" > "fuzz/afl/$target-second.log" 2>&1 &
    wait
    for i in main second; do
      echo "afl $target/$i: $(grep -E '^(execs_done|corpus_count|bitmap_cvg|saved_crashes|saved_hangs)' "fuzz/afl/$target/$i/fuzzer_stats" 2>/dev/null | awk -F' *: *' '{printf "%s=%s ", $1, $2}')"
    done
    ls "fuzz/afl/$target"/*/crashes/id* "fuzz/afl/$target"/*/hangs/id* 2>/dev/null | sed 's/^/finding: /' ;;
  replay)
    [ -f "$dll" ] || build
    dotnet "$dll" run "$@" ;;
  *) echo "usage: scripts/fuzz.sh smoke [SECONDS] [SEED] | campaign SECONDS [WEIGHTS] | coverage [SECONDS] | afl TARGET [SECONDS] | replay TARGET FILE..." >&2; exit 1 ;;
esac
