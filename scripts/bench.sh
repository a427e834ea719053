#!/usr/bin/env bash
# ferry's benchmarks, each figure next to its peer measured in the same run, written to
# docs/BENCHMARKS.md. Usage: sudo scripts/bench.sh [--quick] [--baseline REV]
#   --quick   fewer repetitions and smaller data (under 3 minutes); the full run stays under 20.
#   --baseline REV   also builds REV (e.g. the previous main) in a temporary worktree and runs
#             every section with it and with this checkout, one after the other in the same
#             run; prints each figure's ratio checkout/baseline (figures beyond
#             BENCH_TOLERANCE, default 1.1, marked) and writes them to target/bench-baseline.md
#             instead of docs/BENCHMARKS.md (with BENCH_DOCS=1 also to docs/BENCHMARKS.md:
#             this checkout's figures and peers, then the comparison). REV's build goes to a
#             target dir removed at the end, or to BENCH_BASELINE_TARGET_DIR, kept for the next run.
#   BENCH_SECTIONS="checkpoint migration" runs only those sections (see the list at the end).
# Peers: crun and runc (Debian 12), the bare criu CLI, tar|zstd, rsync over ssh, iperf3.
# Everything runs on simulated hosts (network namespaces, 198.18.0.0/15) and is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0; BASELINE=
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1 ;;
    --baseline) BASELINE=${2:?bench: --baseline needs a revision}; shift ;;
    *) echo "bench: unknown argument $1 (usage: scripts/bench.sh [--quick] [--baseline REV])" >&2; exit 2 ;;
  esac
  shift
done
[[ $(id -u) -eq 0 ]] || { echo "bench: run as root" >&2; exit 1; }
if [[ -n $BASELINE ]]; then
  BASE_REV=$(git rev-parse --verify --quiet "$BASELINE^{commit}") || { echo "bench: --baseline $BASELINE: no such commit here" >&2; exit 2; }
fi

scripts/install-deps.sh
need=(); for p in runc crun iperf3 rsync gcc libc6-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p"); done
if [[ ${#need[@]} -gt 0 ]]; then
  apt-get -y -q -o Acquire::Check-Valid-Until=false update >/dev/null
  apt-get -y -q install --no-install-recommends "${need[@]}" >/dev/null
fi
# What is measured as "this checkout": HEAD, and whether the tree had changes, when it was built.
CUR_DESC=$(git rev-parse --short HEAD)
[[ -z $(git status --porcelain --untracked-files=no) ]] || CUR_DESC+=", with changes"
cargo build --release --locked -p ferry -p ferry-dump-format --examples --bins 2>&1 | tail -n 1
FERRY=$ROOT/target/release/ferry
BASE_PATH=$PATH
export PATH=$ROOT/target/release:$ROOT/target/release/examples:$PATH
if [[ -n $BASELINE ]]; then
  # The baseline in a worktree of its own (detached, removed at exit) and a target dir of
  # its own: the checkout's build stays as it is.
  BASE_WT=$(mktemp -d /tmp/ferry-bench-baseline.XXXX)
  BASE_TARGET=${BENCH_BASELINE_TARGET_DIR:-$BASE_WT/target}
  git worktree add --detach --quiet "$BASE_WT/src" "$BASE_REV"
  echo "bench: building the baseline $BASELINE ($(git rev-parse --short "$BASE_REV")) in $BASE_WT/src"
  (cd "$BASE_WT/src" && cargo build --release --locked --target-dir "$BASE_TARGET" -p ferry -p ferry-dump-format --examples --bins 2>&1 | tail -n 1)
  BASE_FERRY=$BASE_TARGET/release/ferry
fi
remove_baseline() {
  [[ -n ${BASE_WT:-} ]] || return 0
  git -C "$ROOT" worktree remove --force "$BASE_WT/src" 2>/dev/null
  rm -rf "$BASE_WT"
}

if [[ $QUICK -eq 1 ]]; then N=5; NCT=20; SYNC_MB=40; SYNC_FILES=2000; SYNC_RUNS=2; MEM_MB=64; else N=10; NCT=100; SYNC_MB=200; SYNC_FILES=10000; SYNC_RUNS=5; MEM_MB=256; fi

# crun_ns CMD...: CMD where crun works. This machine mounts cgroup v1 plus a cgroup2 hierarchy
# holding a controller (hybrid mode), which crun 1.8 refuses; in a private mount namespace
# without /sys/fs/cgroup/unified it sees plain v1 and uses cgroups like runc and ferry.
crun_ns() {
  if [[ ! -f /sys/fs/cgroup/cgroup.controllers && -n $(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null) ]]; then
    unshare -m --propagation private bash -c 'umount -l /sys/fs/cgroup/unified; "$@"' _ "$@"
  else
    "$@"
  fi
}
W=$(mktemp -d /tmp/ferry-bench.XXXX)
# shellcheck source=lib/simhosts.sh
source scripts/lib/simhosts.sh
: > "$W/ferry.toml"
export FERRY_DATA_DIR=$W/host/data FERRY_RUN_DIR=$W/host/run FERRY_CGROUP_PARENT=ferry-bench FERRY_HOST_CONFIG=$W/ferry.toml
# Removes a cgroup parent (and anything left under it) from every hierarchy.
bench_rm_cgroup() {
  local d
  for d in /sys/fs/cgroup/*/"$1" /sys/fs/cgroup/"$1"; do
    [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}
# Every section runs in a subshell (so one failing section does not stop the others), hence
# cleanup works from names and files, not from variables a section set.
SIM_PREFIXES=(fybs "${MIG_P:-fybm}")
cleanup() {
  set +e
  for ct in $("$FERRY" list -a -H -o ctid 2>/dev/null); do "$FERRY" stop "$ct" --timeout 1 >/dev/null 2>&1; "$FERRY" destroy "$ct" --force >/dev/null 2>&1; done
  # ferry containers left on simulated hosts, then the hosts themselves
  local p h d ns
  for p in "${SIM_PREFIXES[@]}"; do
    for d in "$W"/*/sim/*/data; do
      [[ -d $d ]] || continue
      h=$(basename "$(dirname "$d")"); ns=/run/netns/$p-$h
      [[ -e $ns ]] || continue
      for ct in $(nsenter --net="$ns" env FERRY_DATA_DIR="$d" FERRY_RUN_DIR="${d%/data}/run" FERRY_CGROUP_PARENT="$p-$h" "$FERRY" list -a -H -o ctid 2>/dev/null); do
        nsenter --net="$ns" env FERRY_DATA_DIR="$d" FERRY_RUN_DIR="${d%/data}/run" FERRY_CGROUP_PARENT="$p-$h" "$FERRY" destroy "$ct" --force >/dev/null 2>&1
      done
    done
    for ns in $(ip netns list | awk '{print $1}' | grep "^$p-"); do
      ip netns pids "$ns" | xargs -r kill -9 2>/dev/null
      ip netns del "$ns"
    done
    for h in a b; do bench_rm_cgroup "$p-$h"; done
  done
  for b in $(crun list -q 2>/dev/null | grep '^fb-'); do crun_ns crun delete -f "$b"; done
  for b in $(runc list -q 2>/dev/null | grep '^fb-'); do runc delete -f "$b"; done
  # anything still running from a root under the work dir (the by-hand containers)
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [[ $(readlink "/proc/$pid/root" 2>/dev/null) == "$W"/* ]] && kill -9 "$pid" 2>/dev/null
  done
  sleep 0.2
  grep -F " $W" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  bench_rm_cgroup ferry-bench
  [[ -s ${OUT:-} ]] && cp "$OUT" /tmp/ferry-bench-last.md   # kept for a look after a failed run
  rm -rf "$W"
  remove_baseline
}
trap cleanup EXIT
trap "exit 130" INT TERM

ms() { echo $(( ($2 - $1) / 1000000 )); }
now() { date +%s%N; }
summary() { python3 scripts/bench/stats.py "$1"; }   # median min max n
OUT=$W/results.md
row() { echo "| $* |" >> "$OUT"; }
# ratio A B: A/B with two decimals
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }
fmt() { read -r med min max n < <(summary "$1"); echo "$med ($min–$max)"; }
med() { summary "$1" | awk '{print $1}'; }

# --- set-up -------------------------------------------------------------------------------
TPL=$W/tpl; scripts/make-template.sh busybox "$TPL" >/dev/null
gcc -O2 -static -o "$W/touch_mem" scripts/bench/touch_mem.c
mkdir -p "$W/bundle"; cp -a "$TPL" "$W/bundle/rootfs"
(cd "$W/bundle" && runc spec && python3 - <<'PY'
import json
c = json.load(open('config.json'))
c['process']['terminal'] = False
c['process']['args'] = ['/bin/sh', '-c', 'trap "exit 0" TERM; while :; do sleep 1 & wait $!; done']
c['root']['readonly'] = False
json.dump(c, open('config.json', 'w'), indent=1)
PY
)

{
  echo "# ferry benchmarks"
  echo
  echo "Written by \`scripts/bench.sh$([[ $QUICK -eq 1 ]] && echo ' --quick')\` on $(date -u +%Y-%m-%d). Each figure is the median of its runs"
  echo "with (min–max); each sits next to its peer measured in the same run, and the ratio is"
  echo "ferry / peer (below 1 = ferry faster or smaller). Absolute times vary between machines;"
  echo "the ratios are what we track."
  echo
  echo "## Machine"
  echo
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; RAM $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "- kernel $(uname -r); CRIU $(criu --version | awk '/^Version:/ {print $2}'); $(runc --version | head -1); $(crun --version | head -1)"
  echo "- cgroups: $([[ -f /sys/fs/cgroup/cgroup.controllers ]] && echo v2 || echo v1/hybrid)$([[ ! -f /sys/fs/cgroup/cgroup.controllers && -n $(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null) ]] && echo "; crun 1.8 refuses this hybrid layout, so it runs in a mount namespace without the cgroup2 mount (it then uses v1 cgroups like runc and ferry)")"
  echo "- load: the machine is shared; load average at the start $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
} > "$OUT"

. scripts/bench/sections.sh

. scripts/bench/migration.sh
. scripts/bench/filesync.sh
FAILED=()
# run_section SEC LABEL: one section, timed; a failure is noted, the run goes on.
run_section() {
  local t0 rc
  t0=$(now)
  set +e; ( set -e; "section_$1" ); rc=$?; set -e
  echo "bench: $1${2:+ ($2)} took $(( ($(now) - t0) / 1000000000 )) s$([[ $rc -ne 0 ]] && echo " and FAILED (exit $rc)")"
  [[ $rc -eq 0 ]] || FAILED+=("$1${2:+ ($2)}")
}
SECTIONS=${BENCH_SECTIONS:-start_stop userns memory_per_ct checkpoint big_memory image_format migration file_sync}
if [[ -z $BASELINE ]]; then
  for sec in $SECTIONS; do run_section "$sec"; done
else
  # Each section with the baseline, then with the checkout, into results of their own: the
  # two measurements of a figure are minutes apart at most, under the same load.
  CUR_FERRY=$FERRY CUR_PATH=$PATH CUR_OUT=$OUT BASE_OUT=$W/results-baseline.md
  cp "$OUT" "$BASE_OUT"
  for sec in $SECTIONS; do
    FERRY=$BASE_FERRY PATH=$BASE_TARGET/release:$BASE_TARGET/release/examples:$BASE_PATH OUT=$BASE_OUT run_section "$sec" baseline
    FERRY=$CUR_FERRY PATH=$CUR_PATH OUT=$CUR_OUT run_section "$sec" checkout
  done
fi
if [[ ${#FAILED[@]} -gt 0 ]]; then
  printf '\n**Sections that failed in this run:** %s\n' "${FAILED[*]}" >> "$OUT"
fi
if [[ -n $BASELINE ]]; then
  mkdir -p target
  {
    echo "# ferry benchmarks: this checkout ($CUR_DESC) against $BASELINE ($(git rev-parse --short "$BASE_REV"))"
    echo
    echo "\`scripts/bench.sh$([[ $QUICK -eq 1 ]] && echo ' --quick') --baseline $BASELINE\` on $(date -u +%Y-%m-%d), sections: $SECTIONS."
    echo "Each figure's median with this checkout over its median with the baseline, both measured in"
    echo "this run; peers' figures (crun, runc, criu, rsync...) were measured twice too, and their"
    echo "ratios show how much the machine moved between the two."
    echo
    python3 scripts/bench/compare.py "$BASE_OUT" "$OUT" "${BENCH_TOLERANCE:-1.1}"
  } > target/bench-baseline.md
  cat target/bench-baseline.md
  echo "bench: wrote target/bench-baseline.md"
  if [[ ${BENCH_DOCS:-0} == 1 ]]; then
    # This checkout's figures with their peers, then the comparison, as the record of the run.
    { cat "$OUT"; echo; echo "## Against the baseline"; echo; sed '1d' target/bench-baseline.md; } > docs/BENCHMARKS.md
    echo "bench: wrote docs/BENCHMARKS.md"
  fi
else
  cp "$OUT" docs/BENCHMARKS.md
  echo "bench: wrote docs/BENCHMARKS.md"
fi
