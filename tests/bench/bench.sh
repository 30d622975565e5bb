#!/usr/bin/env bash
# Benchmark sandbox-runc against Debian's runc, both measured in this same run.
# Run it through "./build.sh bench", which publishes, installs and registers the runtime and
# exports artifacts/rootfs first. A benchmark, not a test: it prints medians and ratios.
#
#   1. OCI lifecycle of a /bin/true container on a bundle made from artifacts/rootfs:
#      a) RT run --bundle B id            (run waits for the exit and deletes)
#      b) RT create; RT start; poll RT state until stopped; RT delete
#   2. docker run --rm sandbox-runc-test:latest true, --runtime=runc vs --runtime=sandbox-runc
#   3. RT --version, and the binary sizes
#   4. syscall vetting: a getpid loop (not trapped) and mount+umount of a tmpfs (trapped by
#      sandbox-runc) in a container with CAP_SYS_ADMIN; the supervisor's RSS and PSS
#   5. emulated /proc: open+read+close of /proc/uptime and /proc/meminfo through sandbox-runc's FUSE
#      server vs the host's procfs vs LXCFS (lxcfs is started for the run if installed), and the
#      throughput of 8 readers
#   6. phases: where one create/start/delete of sandbox-runc spends its time, from the runtime's own
#      trace (SANDBOX_RUNC_TRACE, see src/SandboxRunc/Diagnostics/PhaseTrace.cs): medians per phase
#      over BENCH_TRACE_N (15) lifecycles, the helpers' marks placed on create's timeline
#   7. density: BENCH_DENSITY_N (200) concurrent `docker run -d IMG sleep 600`, runc vs sandbox-runc:
#      total time to start them all (BENCH_DENSITY_PAR, 16, docker clients at once), our total PSS
#      (supervisors and emulation servers) and the shims' beside it, total time to remove them
#   8. dind: Docker-in-Docker in the system image (tests/sysimage): time from docker run -d to the inner
#      docker info answering, and an inner docker run --rm true; runc's side runs --privileged where it can
#
# Environment: BENCH_ONLY (sections to run, e.g. "vetting fuse phases density"; default all), BENCH_N (lifecycle iterations, 30), BENCH_DOCKER_N (15), BENCH_VERSION_N (50),
# SANDBOX_RUNC_BENCH_BIN (binary under test; default artifacts/sandbox-runc), RUNC_BIN
# (/usr/sbin/runc; another sandbox-runc build gives a before/after in one run), BENCH_OCI_TIMEOUT (30 s),
# BENCH_ROOTFS (artifacts/rootfs), BENCH_TRACE_N (15), BENCH_DENSITY_N (200), BENCH_DENSITY_PAR (16), BENCH_DIND_N (3), BENCH_DIND_RUN_N (5). Each iteration is timed with bash's
# $EPOCHREALTIME (no fork, unlike date +%s%N, so the timer adds nothing to either side).
# Runtimes alternate within each iteration, and which goes first alternates too, so drift on
# the machine hits both alike; iteration 0 is an untimed warm-up. Every OCI command runs under
# timeout(1) for both runtimes alike (about 0.7 ms each) so that a hang counts as a failure.
# A runtime that fails has its error printed and is skipped for the rest of that benchmark;
# the other benchmarks still run. With runc against itself, ratios stay within about +-10 %
# at N=30 on a busy 2-core machine: read small differences as noise.
set -euo pipefail
export LC_ALL=C

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
SRUNC=${SANDBOX_RUNC_BENCH_BIN:-$ROOT/artifacts/sandbox-runc}
RUNC=${RUNC_BIN:-/usr/sbin/runc}
N=${BENCH_N:-30}
DN=${BENCH_DOCKER_N:-15}
VN=${BENCH_VERSION_N:-50}
ROOTFS=${BENCH_ROOTFS:-$ROOT/artifacts/rootfs}
IMAGE=sandbox-runc-test:latest
DOCKER_RUNTIME=sandbox-runc
OCI_TIMEOUT=${BENCH_OCI_TIMEOUT:-30} # seconds; every OCI command runs under timeout(1)

[[ -x $SRUNC ]] || { echo "bench: $SRUNC not found; run ./build.sh bench" >&2; exit 1; }
[[ -x $RUNC ]] || { echo "bench: $RUNC not found (apt package runc)" >&2; exit 1; }
[[ -x $ROOTFS/bin/true ]] || { echo "bench: $ROOTFS has no /bin/true; run ./build.sh up" >&2; exit 1; }

WORK=$(mktemp -d /tmp/sandbox-runc-bench.XXXXXX)
BUNDLE=$WORK/bundle
RESULTS=$WORK/results # lines: label|unit|sandbox-runc value|runc value|goal
: >"$RESULTS"

# Runtime table: name -> binary, state dir (--root).
declare -A BIN=([sandbox-runc]=$SRUNC [runc]=$RUNC)
declare -A STATE=([sandbox-runc]=/tmp/bench-sandbox-runc [runc]=/tmp/bench-runc)
RUNTIMES=(sandbox-runc runc)

cleanup_containers() {
  local rt id
  for rt in "${RUNTIMES[@]}"; do
    [[ -d ${STATE[$rt]} ]] || continue
    for id in "${STATE[$rt]}"/*/; do
      [[ -d $id ]] || continue
      id=${id%/}
      "${BIN[$rt]}" --root "${STATE[$rt]}" delete --force "${id##*/}" >/dev/null 2>&1 || true
    done
  done
}
cleanup() {
  cleanup_containers
  rm -rf "$WORK"
}
trap cleanup EXIT

now_us() { REPLY=${EPOCHREALTIME//[!0-9]/}; }

# order I: the runtimes in the order to run them in iteration I; the first one alternates, so
# neither side always runs right after the other (caches, CPU frequency, background work).
order() {
  if (($1 % 2)); then echo "${RUNTIMES[1]} ${RUNTIMES[0]}"; else echo "${RUNTIMES[0]} ${RUNTIMES[1]}"; fi
}

# median FILE: median of the microsecond values in FILE, in ms with 2 decimals; "-" if empty.
median_ms() {
  python3 - "$1" <<'EOF'
import statistics, sys
try:
    v = [int(x) for x in open(sys.argv[1]).read().split()]
except OSError:
    v = []
print(f"{statistics.median(v) / 1000:.2f}" if v else "-")
EOF
}

# report_failure NAME WHAT ERRFILE
report_failure() {
  printf '  %s: %s failed:\n' "$1" "$2"
  sed -n '1,8p' "$3" | sed 's/^/      /'
}

make_bundle() {
  mkdir -p "$BUNDLE"
  (cd "$BUNDLE" && "$RUNC" spec)
  python3 - "$BUNDLE/config.json" "$ROOTFS" <<'EOF'
import json, sys
path, rootfs = sys.argv[1:3]
with open(path) as f:
    c = json.load(f)
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
c["root"] = {"path": rootfs, "readonly": True}
with open(path, "w") as f:
    json.dump(c, f, indent=2)
EOF
}

# --- 1a: RT run --------------------------------------------------------------------------------
bench_oci_run() {
  echo "== 1a. OCI 'run --bundle' of /bin/true, $N iterations each"
  local i rt t0 id err=$WORK/err
  declare -A dead=()
  for rt in "${RUNTIMES[@]}"; do : >"$WORK/run-$rt"; mkdir -p "${STATE[$rt]}"; done
  for ((i = 0; i <= N; i++)); do # iteration 0 is a warm-up
    for rt in $(order "$i"); do
      [[ -z ${dead[$rt]:-} ]] || continue
      id=bench-run-$i
      now_us; t0=$REPLY
      if ! timeout "$OCI_TIMEOUT" "${BIN[$rt]}" --root "${STATE[$rt]}" run --bundle "$BUNDLE" "$id" \
          </dev/null >/dev/null 2>"$err"; then
        report_failure "$rt" "run" "$err"
        dead[$rt]=1
        "${BIN[$rt]}" --root "${STATE[$rt]}" delete --force "$id" >/dev/null 2>&1 || true
        continue
      fi
      now_us
      ((i == 0)) || echo $((REPLY - t0)) >>"$WORK/run-$rt"
    done
  done
  printf 'OCI run (true)|ms|%s|%s|<= 0.80\n' "$(median_ms "$WORK/run-sandbox-runc")" \
    "$(median_ms "$WORK/run-runc")" >>"$RESULTS"
}

# --- 1b: create / start / state / delete -------------------------------------------------------
# lifecycle RT ID: create, start, poll state until stopped, delete. Errors go to $WORK/err.
lifecycle() {
  local rt=$1 id=$2 b s k
  b=${BIN[$rt]}
  s=${STATE[$rt]}
  local t="timeout $OCI_TIMEOUT"
  $t "$b" --root "$s" create --bundle "$BUNDLE" "$id" </dev/null >/dev/null 2>"$WORK/err" || return 1
  $t "$b" --root "$s" start "$id" </dev/null >/dev/null 2>>"$WORK/err" || return 1
  for ((k = 0; k < 2000; k++)); do
    if $t "$b" --root "$s" state "$id" 2>>"$WORK/err" | grep -q '"status": *"stopped"'; then
      $t "$b" --root "$s" delete "$id" >/dev/null 2>>"$WORK/err" || return 1
      return 0
    fi
  done
  echo "container $id never reached status stopped" >>"$WORK/err"
  return 1
}

bench_oci_lifecycle() {
  echo "== 1b. OCI create + start + state (until stopped) + delete of /bin/true, $N iterations each"
  local i rt t0 id
  declare -A dead=()
  for rt in "${RUNTIMES[@]}"; do : >"$WORK/life-$rt"; done
  for ((i = 0; i <= N; i++)); do
    for rt in $(order "$i"); do
      [[ -z ${dead[$rt]:-} ]] || continue
      id=bench-life-$i
      now_us; t0=$REPLY
      if ! lifecycle "$rt" "$id"; then
        report_failure "$rt" "create/start/state/delete" "$WORK/err"
        dead[$rt]=1
        "${BIN[$rt]}" --root "${STATE[$rt]}" delete --force "$id" >/dev/null 2>&1 || true
        continue
      fi
      now_us
      ((i == 0)) || echo $((REPLY - t0)) >>"$WORK/life-$rt"
    done
  done
  printf 'OCI create/start/state/delete|ms|%s|%s|<= 0.80\n' \
    "$(median_ms "$WORK/life-sandbox-runc")" "$(median_ms "$WORK/life-runc")" >>"$RESULTS"
}

# --- 2: docker run -----------------------------------------------------------------------------
bench_docker() {
  echo "== 2. docker run --rm $IMAGE true, $DN iterations each, interleaved"
  if ! docker info >/dev/null 2>&1; then
    echo "  docker is not reachable; skipped"
    return 0
  fi
  local i rt t0 dockerrt
  declare -A dead=()
  for rt in "${RUNTIMES[@]}"; do : >"$WORK/docker-$rt"; done
  for ((i = 0; i <= DN; i++)); do
    for rt in $(order "$i"); do
      [[ -z ${dead[$rt]:-} ]] || continue
      dockerrt=$rt
      [[ $rt == sandbox-runc ]] && dockerrt=$DOCKER_RUNTIME
      now_us; t0=$REPLY
      if ! timeout 120 docker run --rm --runtime="$dockerrt" "$IMAGE" true \
          </dev/null >/dev/null 2>"$WORK/err"; then
        report_failure "$rt" "docker run --runtime=$dockerrt" "$WORK/err"
        dead[$rt]=1
        continue
      fi
      now_us
      ((i == 0)) || echo $((REPLY - t0)) >>"$WORK/docker-$rt"
    done
  done
  printf 'docker run --rm (true)|ms|%s|%s|<= 1.05\n' "$(median_ms "$WORK/docker-sandbox-runc")" \
    "$(median_ms "$WORK/docker-runc")" >>"$RESULTS"
}

# --- 3: CLI start + size -----------------------------------------------------------------------
bench_cli() {
  echo "== 3. '--version', $VN runs each; binary sizes"
  local i rt t0
  declare -A dead=()
  for rt in "${RUNTIMES[@]}"; do
    : >"$WORK/version-$rt"
    printf '  %s: %s\n' "$rt" "$("${BIN[$rt]}" --version 2>&1 | head -n 1)"
  done
  for ((i = 0; i <= VN; i++)); do
    for rt in $(order "$i"); do
      [[ -z ${dead[$rt]:-} ]] || continue
      # Only the untimed warm-up runs under timeout(1): it costs ~0.7 ms, a lot next to ~3 ms.
      local t=""
      ((i > 0)) || t="timeout 10"
      now_us; t0=$REPLY
      if ! $t "${BIN[$rt]}" --version </dev/null >/dev/null 2>"$WORK/err"; then
        report_failure "$rt" "--version" "$WORK/err"
        dead[$rt]=1
        continue
      fi
      now_us
      ((i == 0)) || echo $((REPLY - t0)) >>"$WORK/version-$rt"
    done
  done
  printf -- '--version|ms|%s|%s|\n' "$(median_ms "$WORK/version-sandbox-runc")" \
    "$(median_ms "$WORK/version-runc")" >>"$RESULTS"
  printf 'binary size|KiB|%s|%s|\n' "$(($(stat -Lc %s "$SRUNC") / 1024))" \
    "$(($(stat -Lc %s "$RUNC") / 1024))" >>"$RESULTS"
}

# --- 4: syscall vetting ------------------------------------------------------------------------
# probe_bundle ARGS...: a bundle like $BUNDLE running the static probe (bind-mounted at /probe) with
# CAP_SYS_ADMIN (mount needs it under both runtimes), printing to stdout.
probe_bundle() {
  local dir=$WORK/probe-bundle
  mkdir -p "$dir"
  python3 - "$BUNDLE/config.json" "$dir/config.json" "$WORK/syscalls" "$@" <<'EOF2'
import json, sys
src, dst, probe, *args = sys.argv[1:]
c = json.load(open(src))
c["process"]["args"] = ["/probe", *args]
caps = c["process"]["capabilities"]
for k in ("bounding", "effective", "permitted"):
    caps[k] = sorted(set(caps.get(k, [])) | {"CAP_SYS_ADMIN"})
c["mounts"].append({"destination": "/probe", "type": "bind", "source": probe, "options": ["bind", "ro"]})
json.dump(c, open(dst, "w"), indent=2)
EOF2
  echo "$dir"
}

# probe_median RT KEY RUNS ARGS...: median of KEY=value over RUNS runs of the probe under RT.
probe_median() {
  local rt=$1 key=$2 runs=$3 i dir out
  shift 3
  dir=$(probe_bundle "$@")
  : >"$WORK/probe-$rt"
  for ((i = 0; i < runs; i++)); do
    if ! out=$(timeout "$OCI_TIMEOUT" "${BIN[$rt]}" --root "${STATE[$rt]}" run --bundle "$dir" "probe-$i" </dev/null 2>"$WORK/err"); then
      report_failure "$rt" "probe $*" "$WORK/err" >&2
      "${BIN[$rt]}" --root "${STATE[$rt]}" delete --force "probe-$i" >/dev/null 2>&1 || true
      echo "-"
      return 0
    fi
    sed -n "s/^$key=//p" <<<"$out" >>"$WORK/probe-$rt"
  done
  python3 -c 'import statistics,sys; v=[float(x) for x in open(sys.argv[1]).read().split()]; print(f"{statistics.median(v):.2f}" if v else "-")' "$WORK/probe-$rt"
}

bench_vetting() {
  echo "== 4. syscall vetting: getpid loop (untrapped), mount+umount of a tmpfs (trapped), supervisor memory"
  if ! cc -static -O2 -o "$WORK/syscalls" tests/bench/syscalls.c 2>"$WORK/err"; then
    report_failure cc "static build of tests/bench/syscalls.c" "$WORK/err"
    return 0
  fi
  local rt
  declare -A getpid=() mnt=()
  for rt in "${RUNTIMES[@]}"; do
    getpid[$rt]=$(probe_median "$rt" ns_per_call 5 getpid 20000000)
    mnt[$rt]=$(probe_median "$rt" us_per_pair 5 mount 2000 /tmp)
  done
  printf 'getpid loop (untrapped)|ns/call|%s|%s|<= 1.02\n' "${getpid[sandbox-runc]}" "${getpid[runc]}" >>"$RESULTS"
  printf 'mount+umount tmpfs (trapped)|us/pair|%s|%s|<= 2.00\n' "${mnt[sandbox-runc]}" "${mnt[runc]}" >>"$RESULTS"

  # The supervisor's memory: RSS counts the executable's pages it touched (shared by all supervisors
  # and CLI calls); PSS divides shared pages among their users: the better per-container cost.
  local i pid rss pss
  : >"$WORK/rss"; : >"$WORK/pss"
  sed -i 's#"/bin/true"#"/bin/sleep", "30"#' "$BUNDLE/config.json"
  for i in 1 2 3; do
    timeout "$OCI_TIMEOUT" "$SRUNC" --root "${STATE[sandbox-runc]}" run -d --bundle "$BUNDLE" "rss-$i" </dev/null >/dev/null 2>"$WORK/err" \
      || { report_failure sandbox-runc "run -d" "$WORK/err"; break; }
  done
  sleep 1
  # Per container: the supervisor plus its child serving the FUSE emulation (sandbox-runc emulate).
  local child
  for i in 1 2 3; do
    pid=$(cat "${STATE[sandbox-runc]}/rss-$i/supervisor.pid" 2>/dev/null) || continue
    rss=0; pss=0
    for child in $pid $(pgrep -P "$pid"); do
      rss=$((rss + $(awk '/^VmRSS:/ {print $2}' "/proc/$child/status")))
      pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$child/smaps_rollup")))
    done
    echo "$rss" >>"$WORK/rss"; echo "$pss" >>"$WORK/pss"
  done
  for i in 1 2 3; do "$SRUNC" --root "${STATE[sandbox-runc]}" delete --force "rss-$i" >/dev/null 2>&1 || true; done
  sed -i 's#"/bin/sleep", "30"#"/bin/true"#' "$BUNDLE/config.json"
  local kib='import statistics,sys; v=[int(x) for x in open(sys.argv[1]).read().split()]; print(f"{statistics.median(v)/1024:.1f}" if v else "-")'
  printf 'supervisor+emulation RSS per container|MiB|%s|-|<= 8 MiB\n' "$(python3 -c "$kib" "$WORK/rss")" >>"$RESULTS"
  printf 'supervisor+emulation PSS per container|MiB|%s|-|\n' "$(python3 -c "$kib" "$WORK/pss")" >>"$RESULTS"
}

# --- 5: emulated /proc through FUSE ------------------------------------------------------------
# open+read+close of /proc/uptime and /proc/meminfo: sandbox-runc's FUSE server (files of a running
# container, read from the host where the runtime mounts them), the host's procfs, and LXCFS (Debian's
# lxcfs, mounted for this run only); then 8 readers at once. The "runc" column holds the reference
# named in the row (runc itself has no emulation).
bench_fuse() {
  echo "== 5. emulated /proc: open+read+close latency and 8-reader throughput (sandbox-runc FUSE vs host procfs vs LXCFS)"
  if ! cc -O2 -pthread -o "$WORK/fuseread" tests/bench/fuseread.c 2>"$WORK/err"; then
    report_failure cc "tests/bench/fuseread.c" "$WORK/err"
    return 0
  fi
  local lx="" lxpid="" emu key
  if command -v lxcfs >/dev/null; then
    lx=$WORK/lxcfs
    mkdir -p "$lx"
    lxcfs -f "$lx" >"$WORK/lxcfs.log" 2>&1 &
    lxpid=$!
    for _ in $(seq 50); do [[ -r $lx/proc/uptime ]] && break; sleep 0.1; done
    [[ -r $lx/proc/uptime ]] || { echo "  lxcfs did not come up: $(tail -n 2 "$WORK/lxcfs.log")"; lx=""; }
  else
    echo "  lxcfs not installed (apt package lxcfs): no LXCFS column"
  fi
  sed -i 's#"/bin/true"#"/bin/sleep", "3600"#' "$BUNDLE/config.json"
  if timeout "$OCI_TIMEOUT" "$SRUNC" --root "${STATE[sandbox-runc]}" run -d --bundle "$BUNDLE" fuse-bench </dev/null >/dev/null 2>"$WORK/err"; then
    key=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:16])' "${STATE[sandbox-runc]}/fuse-bench")
    emu=/run/sandbox-runc/mnt/$key/emu
  else
    report_failure sandbox-runc "run -d" "$WORK/err"
  fi
  sed -i 's#"/bin/sleep", "3600"#"/bin/true"#' "$BUNDLE/config.json"

  # field LINE NAME: the value of NAME=... in a fuseread line
  field() { sed -n "s/.* $2=\([0-9.]*\).*/\1/p" <<<"$1"; }
  local file mode ours host lxv
  for file in uptime meminfo; do
    for mode in once eof; do
      ours=$( [[ -n ${emu:-} ]] && "$WORK/fuseread" "$emu/proc/$file" 20000 1 "$mode" 2>&1 || true)
      host=$("$WORK/fuseread" "/proc/$file" 20000 1 "$mode" 2>&1 || true)
      lxv=$( [[ -n $lx ]] && "$WORK/fuseread" "$lx/proc/$file" 20000 1 "$mode" 2>&1 || true)
      local o h l
      o=$(field "$ours" median_ns); h=$(field "$host" median_ns); l=$(field "$lxv" median_ns)
      printf '/proc/%s open+read%s+close vs LXCFS|us|%s|%s|%s\n' "$file" "$([[ $mode == eof ]] && echo ' to EOF')" \
        "$(python3 -c "print(f'{$o/1000:.1f}')" 2>/dev/null || echo -)" "$(python3 -c "print(f'{$l/1000:.1f}')" 2>/dev/null || echo -)" \
        "$([[ $file == uptime && $mode == once ]] && echo '<= 40 us')" >>"$RESULTS"
      printf '/proc/%s open+read%s+close vs host procfs|us|%s|%s|\n' "$file" "$([[ $mode == eof ]] && echo ' to EOF')" \
        "$(python3 -c "print(f'{$o/1000:.1f}')" 2>/dev/null || echo -)" "$(python3 -c "print(f'{$h/1000:.1f}')" 2>/dev/null || echo -)" >>"$RESULTS"
    done
  done
  ours=$( [[ -n ${emu:-} ]] && "$WORK/fuseread" "$emu/proc/uptime" 5000 8 once 2>&1 || true)
  lxv=$( [[ -n $lx ]] && "$WORK/fuseread" "$lx/proc/uptime" 5000 8 once 2>&1 || true)
  printf '/proc/uptime, 8 readers, vs LXCFS|ops/s|%s|%s|>= 3x (ratio >= 3)\n' "$(field "$ours" ops_per_s)" "$(field "$lxv" ops_per_s)" >>"$RESULTS"
  "$SRUNC" --root "${STATE[sandbox-runc]}" delete --force fuse-bench >/dev/null 2>&1 || true
  if [[ -n $lxpid ]]; then kill "$lxpid" 2>/dev/null; wait "$lxpid" 2>/dev/null || true; umount -l "$lx" 2>/dev/null || true; fi
}

# --- 6: phase trace ----------------------------------------------------------------------------
bench_phases() {
  local n=${BENCH_TRACE_N:-15} i id t0 trace=$WORK/trace
  echo "== 6. phases of create/start/state/delete (sandbox-runc's own trace), $n lifecycles"
  : >"$trace"; : >"$WORK/walls"
  for ((i = 0; i <= n; i++)); do
    id=bench-trace-$i
    local cmd ok=1
    for cmd in create start delete; do
      now_us; t0=$REPLY
      case $cmd in
        create) SANDBOX_RUNC_TRACE=$trace timeout "$OCI_TIMEOUT" "$SRUNC" --root "${STATE[sandbox-runc]}" create --bundle "$BUNDLE" "$id" </dev/null >/dev/null 2>"$WORK/err" || ok=0 ;;
        start) SANDBOX_RUNC_TRACE=$trace timeout "$OCI_TIMEOUT" "$SRUNC" --root "${STATE[sandbox-runc]}" start "$id" </dev/null >/dev/null 2>"$WORK/err" || ok=0 ;;
        delete) SANDBOX_RUNC_TRACE=$trace timeout "$OCI_TIMEOUT" "$SRUNC" --root "${STATE[sandbox-runc]}" delete "$id" </dev/null >/dev/null 2>"$WORK/err" || ok=0 ;;
      esac
      now_us
      # the container's /bin/true ends at once: waited for outside the timed commands
      if [[ $cmd == start ]]; then
        local t1=$REPLY
        for _ in $(seq 200); do "$SRUNC" --root "${STATE[sandbox-runc]}" state "$id" 2>/dev/null | grep -q '"stopped"' && break; done
        REPLY=$t1
      fi
      ((ok)) || { report_failure sandbox-runc "$cmd (traced)" "$WORK/err"; "$SRUNC" --root "${STATE[sandbox-runc]}" delete --force "$id" >/dev/null 2>&1; return 0; }
      ((i == 0)) || echo "$id $cmd $((REPLY - t0))" >>"$WORK/walls"
    done
  done
  python3 tests/bench/phases.py "$trace" "$WORK/walls" | tee "$WORK/phases.txt"
}

# --- 7: density ---------------------------------------------------------------------------------
# pss_of PIDS...: total PSS in KiB
pss_of() {
  local p t=0
  for p in "$@"; do t=$((t + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0))); done
  echo "$t"
}

bench_density() {
  local n=${BENCH_DENSITY_N:-200} par=${BENCH_DENSITY_PAR:-16} rt dockerrt t0 prefix ids
  echo "== 7. density: $n concurrent 'docker run -d $IMAGE sleep 600' ($par clients at once), runc then sandbox-runc"
  if ! docker info >/dev/null 2>&1; then
    echo "  docker is not reachable; skipped"
    return 0
  fi
  declare -A up=() down=()
  local ours="-" shims_ours="-" shims_runc="-"
  for rt in runc sandbox-runc; do
    dockerrt=$rt
    [[ $rt == sandbox-runc ]] && dockerrt=$DOCKER_RUNTIME
    prefix=bench-density-$rt-$$
    now_us; t0=$REPLY
    if ! seq "$n" | xargs -P "$par" -I{} timeout 300 docker run -d --network=none --name "$prefix-{}" --runtime="$dockerrt" "$IMAGE" sleep 600 \
        >"$WORK/density-ids" 2>"$WORK/err"; then
      report_failure "$rt" "docker run -d (density)" "$WORK/err"
    fi
    now_us
    up[$rt]=$(((REPLY - t0) / 1000))
    ids=$(docker ps -q --no-trunc --filter "name=$prefix-" | sort)
    echo "  $rt: $(wc -w <<<"$ids") of $n running after $((up[$rt] / 1000)).$(((up[$rt] % 1000) / 100)) s"
    # The shims of these containers: containerd-shim-runc-v2 processes whose -id is one of them.
    local shim_pids
    shim_pids=$(for p in $(pgrep -f containerd-shim-runc-v2); do
      tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qE -- "-id ($(tr '\n' '|' <<<"$ids" | sed 's/|$//'))( |$)" && echo "$p"; done)
    if [[ $rt == runc ]]; then
      shims_runc=$(pss_of $shim_pids)
    else
      shims_ours=$(pss_of $shim_pids)
      local helpers
      helpers=$(for p in $(pgrep -f 'sandbox-runc --root .* (supervise|emulate) '); do
        grep -qF "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | awk '{print $NF}')" <<<"$ids" && echo "$p"; done)
      echo "  sandbox-runc helpers: $(wc -w <<<"$helpers") processes"
      ours=$(pss_of $helpers)
    fi
    now_us; t0=$REPLY
    docker ps -aq --filter "name=$prefix-" | xargs -r -n 10 -P "$par" timeout 300 docker rm -f >/dev/null 2>>"$WORK/err" || true
    now_us
    down[$rt]=$(((REPLY - t0) / 1000))
  done
  printf 'density: %s x docker run -d, all up|s|%s|%s|<= 1.10\n' "$n" \
    "$(python3 -c "print(f'{${up[sandbox-runc]:-0}/1000:.1f}')")" "$(python3 -c "print(f'{${up[runc]:-0}/1000:.1f}')")" >>"$RESULTS"
  printf 'density: %s x docker rm -f|s|%s|%s|\n' "$n" \
    "$(python3 -c "print(f'{${down[sandbox-runc]:-0}/1000:.1f}')")" "$(python3 -c "print(f'{${down[runc]:-0}/1000:.1f}')")" >>"$RESULTS"
  printf 'density: total PSS, our helpers vs the shims docker runs beside them|MiB|%s|%s|< shims\n' \
    "$(python3 -c "print(f'{$ours/1024:.0f}')" 2>/dev/null || echo -)" "$(python3 -c "print(f'{$shims_ours/1024:.0f}')" 2>/dev/null || echo -)" >>"$RESULTS"
  printf 'density: total PSS of the shims, under sandbox-runc vs under runc|MiB|%s|%s|\n' \
    "$(python3 -c "print(f'{$shims_ours/1024:.0f}')" 2>/dev/null || echo -)" "$(python3 -c "print(f'{$shims_runc/1024:.0f}')" 2>/dev/null || echo -)" >>"$RESULTS"
}

# --- 8: Docker-in-Docker -----------------------------------------------------------------------
# dind_up RT NAME OPTIONS...: docker run -d of the system image running dockerd, then wait until the inner
# `docker info` answers; prints the microseconds it took, or fails.
dind_up() {
  local rt=$1 name=$2 t0 end
  shift 2
  now_us; t0=$REPLY
  timeout 120 docker run -d --name "$name" --runtime="$rt" --network=none "$@" "$SYSIMAGE" dockerd \
    </dev/null >/dev/null 2>"$WORK/err" || return 1
  end=$((SECONDS + 120))
  until docker exec "$name" docker info >/dev/null 2>&1; do
    ((SECONDS < end)) || { echo "the inner dockerd did not answer within 120 s" >"$WORK/err"; return 1; }
    sleep 0.05
  done
  now_us
  echo $((REPLY - t0))
}

# The system image of tests/sysimage (docker.io inside), as `./build.sh` loaded it; BENCH_DIND_N (3) starts per
# runtime, and BENCH_DIND_RUN_N (5) inner `docker run --rm true` in each. runc's side is `--privileged` (plus an
# anonymous volume at /var/lib/docker, as the runtime's engine storage is for ours), where runc can run it.
bench_dind() {
  local n=${BENCH_DIND_N:-3} rn=${BENCH_DIND_RUN_N:-5} i j rt us name t0
  SYSIMAGE=$(docker images --format '{{.Repository}}:{{.Tag}}' sandbox-runc-system 2>/dev/null | head -1)
  echo "== 8. Docker-in-Docker ($SYSIMAGE): $n starts until the inner docker info answers, $rn inner docker run --rm true in each"
  if [[ -z $SYSIMAGE ]]; then
    echo "  no sandbox-runc-system image loaded (./build.sh setup builds it); skipped"
    return 0
  fi
  declare -A dead=()
  for rt in "${RUNTIMES[@]}"; do : >"$WORK/dind-up-$rt"; : >"$WORK/dind-run-$rt"; done
  for ((i = 1; i <= n; i++)); do
    for rt in $(order "$i"); do
      [[ -z ${dead[$rt]:-} ]] || continue
      name=bench-dind-$rt-$i
      local opts=()
      [[ $rt == runc ]] && opts=(--privileged -v /var/lib/docker)
      local dockerrt=$rt
      [[ $rt == sandbox-runc ]] && dockerrt=$DOCKER_RUNTIME
      if ! us=$(dind_up "$dockerrt" "$name" "${opts[@]}"); then
        report_failure "$rt" "DinD (docker run -d --runtime=$dockerrt ${opts[*]} ... dockerd)" "$WORK/err"
        docker rm -f -v "$name" >/dev/null 2>&1
        dead[$rt]=1
        continue
      fi
      echo "$us" >>"$WORK/dind-up-$rt"
      if docker save "$IMAGE" | docker exec -i "$name" docker load >/dev/null 2>"$WORK/err"; then
        for ((j = 0; j <= rn; j++)); do
          now_us; t0=$REPLY
          docker exec "$name" docker run --rm --network=none "$IMAGE" true >/dev/null 2>"$WORK/err" \
            || { report_failure "$rt" "inner docker run" "$WORK/err"; break; }
          now_us
          ((j == 0)) || echo $((REPLY - t0)) >>"$WORK/dind-run-$rt"
        done
      else
        report_failure "$rt" "docker save | docker exec -i docker load" "$WORK/err"
      fi
      docker rm -f -v "$name" >/dev/null 2>&1
    done
  done
  printf 'DinD: docker run -d until the inner docker info answers|ms|%s|%s|\n' "$(median_ms "$WORK/dind-up-sandbox-runc")" \
    "$(median_ms "$WORK/dind-up-runc")" >>"$RESULTS"
  printf 'DinD: inner docker run --rm true|ms|%s|%s|\n' "$(median_ms "$WORK/dind-run-sandbox-runc")" \
    "$(median_ms "$WORK/dind-run-runc")" >>"$RESULTS"
}

print_table() {
  echo
  echo "== Results (medians; ratio = sandbox-runc / runc)"
  python3 - "$RESULTS" <<'EOF'
import sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1]) if l.strip()]
def ratio(a, b):
    try:
        return f"{float(a) / float(b):.2f}"
    except (ValueError, ZeroDivisionError):
        return "-"
hdr = ("benchmark", "unit", "sandbox-runc", "runc", "ratio", "goal")
table = [hdr] + [(l, u, s, r, ratio(s, r), g) for l, u, s, r, g in rows]
w = [max(len(row[i]) for row in table) for i in range(len(hdr))]
for row in table:
    print("  " + "  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(row)).rstrip())
EOF
}

echo "sandbox-runc: $SRUNC"
echo "runc:         $RUNC"
if [[ $SRUNC != "$ROOT/artifacts/sandbox-runc" && $SRUNC != /usr/local/bin/sandbox-runc ]]; then
  echo "WARNING: the binary under test is not the published sandbox-runc"
fi
cleanup_containers
make_bundle
for section in ${BENCH_ONLY:-oci_run oci_lifecycle docker cli vetting fuse phases density dind}; do
  "bench_$section"
done
print_table
