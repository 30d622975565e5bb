#!/usr/bin/env bash
# build.sh - build, set up, test and benchmark SandboxRunc.
#
#   ./build.sh publish   native-AOT publish to artifacts/sandbox-runc
#   ./build.sh up        install prerequisites, publish, install + register the runtime with
#                        dockerd, build the test image, export its rootfs, run a demo container
#   ./build.sh test      same set-up as up (no demo), then dotnet test on this host, then the cgroup v2
#                        tests in a Debian 12 VM (tests/vm/; SANDBOX_RUNC_TEST_VM=0 leaves them out);
#                        last line is "N passed, N failed, N skipped" over what ran
#   ./build.sh test-v2   same set-up, then only the cgroup v2 VM tests (tests/vm/run.sh)
#   ./build.sh bench     same set-up as up (no demo), then tests/bench/bench.sh
#
# Must run as root on Debian 12. Idempotent: repeated runs skip apt when nothing is missing.
# Noisy output (apt, dotnet restore/build, docker build) goes to artifacts/logs/.
#
# Environment knobs:
#   SANDBOX_RUNC_BIN     (up/bench only, for trying the scripts before the runtime works)
#                        use this binary as the "sandbox-runc" docker runtime instead of the
#                        published one; a warning is printed. Ignored by "test".
#   SANDBOX_RUNC_TEST_TIMEOUT       seconds allowed for the whole dotnet test (default 2100). The suite
#                                   takes 5-6 min on a 2-core machine, busy or not; this leaves room for a
#                                   slower one and a few tests failing at their hang bounds, and with the
#                                   set-up (up to ~15 min on a fresh machine) keeps CI under 60 min.
#   SANDBOX_RUNC_TEST_HANG_TIMEOUT  seconds one test may run before the whole run is aborted (300). Tests
#                                   bound their own waits well below it (TestSupport/Eventually.cs:
#                                   Patience, 60 and 120 s; at most 200 s for a whole scenario), so that
#                                   a hang fails its own test with a message instead.
#   SANDBOX_RUNC_TEST_BUDGET        seconds the whole `test` may take (3300): the VM part gets what the set-up and
#                                   the host tests left of it, at most 3000 s (SANDBOX_RUNC_VM_TIMEOUT overrides)
#   SANDBOX_RUNC_VM_*               the VM part's knobs (accelerator, timeout, drivers, filter):
#                                   see tests/vm/run.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$PWD
ART=$ROOT/artifacts
LOGS=$ART/logs
RUNTIME_NAME=sandbox-runc
INSTALL_PATH=/usr/local/bin/sandbox-runc
TEST_IMAGE=sandbox-runc-test:latest
DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_LOG=/var/log/sandbox-runc-dockerd.log
APT_PACKAGES=(
  docker.io containerd runc tini iptables busybox-static libseccomp2 libseccomp-dev
  iproute2 python3 ca-certificates procps git tar gcc libc6-dev zlib1g-dev podman
  qemu-system-x86 debootstrap e2fsprogs
)
export DEBIAN_FRONTEND=noninteractive
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

# The binary docker is told to use (set by install_runtime).
RUNTIME_PATH=$INSTALL_PATH

step() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# run_logged LOG CMD...: run CMD with all output to LOG; on failure show the log's tail.
run_logged() {
  local log=$1; shift
  if ! "$@" >"$log" 2>&1; then
    printf 'ERROR: %s failed; last lines of %s:\n' "$*" "$log" >&2
    tail -n 40 "$log" >&2
    return 1
  fi
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (dockerd, namespaces, /usr/local/bin)"
}

# ---------------------------------------------------------------------------------------------
# apt
# ---------------------------------------------------------------------------------------------
install_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) != "install ok installed" ]]; then
      missing+=("$p")
    fi
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    step "apt: all ${#APT_PACKAGES[@]} packages already installed"
    return 0
  fi
  step "apt: installing ${missing[*]} (log: artifacts/logs/apt.log)"
  local t0=$SECONDS
  : >"$LOGS/apt.log"
  run_logged "$LOGS/apt-update.log" apt-get update
  run_logged "$LOGS/apt.log" apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
  step "apt: done in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------------------------
# publish
# ---------------------------------------------------------------------------------------------
publish() {
  command -v dotnet >/dev/null || die "dotnet SDK not found on PATH"
  local rev tmp t0=$SECONDS
  rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  step "publish: native-AOT sandbox-runc ($rev) (log: artifacts/logs/publish.log)"
  mkdir -p "$ART"
  tmp=$(mktemp -d "$ART/.publish.XXXXXX")
  if ! run_logged "$LOGS/publish.log" dotnet publish src/SandboxRunc/SandboxRunc.csproj \
      -c Release -r linux-x64 -o "$tmp" "-p:SourceRevisionId=$rev"; then
    rm -rf "$tmp"
    return 1
  fi
  [[ -x $tmp/sandbox-runc ]] || { rm -rf "$tmp"; die "publish produced no $tmp/sandbox-runc"; }
  mv -f "$tmp/sandbox-runc" "$ART/sandbox-runc"
  rm -rf "$tmp"
  step "publish: artifacts/sandbox-runc ($(stat -c %s "$ART/sandbox-runc") bytes) in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------------------------
# runtime install + docker registration
# ---------------------------------------------------------------------------------------------
install_runtime() {
  local allow_override=$1
  if [[ -n ${SANDBOX_RUNC_BIN:-} && $allow_override == yes ]]; then
    [[ -x $SANDBOX_RUNC_BIN ]] || die "SANDBOX_RUNC_BIN=$SANDBOX_RUNC_BIN is not executable"
    RUNTIME_PATH=$(readlink -f "$SANDBOX_RUNC_BIN")
    warn "SANDBOX_RUNC_BIN is set: docker runtime '$RUNTIME_NAME' will run $RUNTIME_PATH," \
      "NOT the published sandbox-runc (for trying the scripts only)"
    return 0
  fi
  RUNTIME_PATH=$INSTALL_PATH
  step "install: $INSTALL_PATH"
  # Copy then rename, so a running copy of the old binary never makes this fail (ETXTBSY).
  install -m 0755 "$ART/sandbox-runc" "$INSTALL_PATH.new"
  mv -f "$INSTALL_PATH.new" "$INSTALL_PATH"
}

docker_ok() { docker info >/dev/null 2>&1; }

dockerd_pid() {
  local pid=""
  if [[ -s /var/run/docker.pid ]]; then
    pid=$(cat /var/run/docker.pid)
    kill -0 "$pid" 2>/dev/null || pid=""
  fi
  [[ -n $pid ]] || pid=$(pgrep -xo dockerd || true)
  printf '%s' "$pid"
}

# True when dockerd lists the runtime with the path we registered (after a SIGHUP the old entry
# stays listed until the reload is done).
runtime_registered() {
  docker info --format '{{json .Runtimes}}' 2>/dev/null | python3 -c '
import json, sys
rt = json.load(sys.stdin).get(sys.argv[1]) or {}
sys.exit(0 if rt.get("path") == sys.argv[2] else 1)' "$RUNTIME_NAME" "$RUNTIME_PATH" 2>/dev/null
}

wait_for() { # wait_for SECONDS CMD...
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

setup_docker() {
  command -v docker >/dev/null || die "docker CLI not found (apt package docker.io)"
  step "docker: register runtime '$RUNTIME_NAME' -> $RUNTIME_PATH in $DAEMON_JSON (sandbox-runc install)"
  # sandbox-runc install merges the entry into daemon.json (every other key kept, atomic replace)
  # and sends dockerd SIGHUP when the file changed. The published binary does it, so that
  # SANDBOX_RUNC_BIN (--path) works even with a binary that has no install command.
  local pid out
  pid=$(dockerd_pid)
  if [[ -z $pid ]]; then
    out=$("$ART/sandbox-runc" install --docker-config "$DAEMON_JSON" --path "$RUNTIME_PATH" --no-reload)
    printf '%s\n' "$out" | { grep -v -e '--no-reload' || true; } | sed 's/^/    /'
    step "docker: starting dockerd (log: $DOCKERD_LOG)"
    command -v dockerd >/dev/null || die "dockerd not found (apt package docker.io)"
    setsid nohup dockerd </dev/null >"$DOCKERD_LOG" 2>&1 &
    disown || true
  else
    # A dockerd that is still starting (e.g. one apt's postinst just launched) could die of a
    # SIGHUP that comes before its handler is installed: wait until it answers first.
    if ! wait_for 60 docker_ok; then
      printf 'ERROR: dockerd (pid %s) runs but docker info fails after 60 s:\n' "$pid" >&2
      docker info 2>&1 | tail -n 5 >&2
      return 1
    fi
    out=$("$ART/sandbox-runc" install --docker-config "$DAEMON_JSON" --path "$RUNTIME_PATH")
    printf '%s\n' "$out" | sed 's/^/    /'
    # Unchanged file but dockerd runs an older configuration (or has no pid file): reload anyway.
    if [[ $out != *"sent SIGHUP"* ]] && ! runtime_registered; then
      step "docker: dockerd (pid $pid) does not list the runtime yet; reloading it with SIGHUP"
      kill -HUP "$pid"
    fi
  fi
  if ! wait_for 60 docker_ok; then
    printf 'ERROR: docker info still failing after 60 s\n' >&2
    [[ -f $DOCKERD_LOG ]] && tail -n 30 "$DOCKERD_LOG" >&2
    return 1
  fi
  if ! wait_for 15 runtime_registered; then
    printf 'ERROR: dockerd does not list runtime %s: %s\n' "$RUNTIME_NAME" \
      "$(docker info --format '{{json .Runtimes}}' 2>&1)" >&2
    return 1
  fi
  step "docker: runtimes $(docker info --format '{{json .Runtimes}}' |
    python3 -c 'import json,sys; print(", ".join(sorted(json.load(sys.stdin))))')"
}

# ---------------------------------------------------------------------------------------------
# test image + rootfs
# ---------------------------------------------------------------------------------------------
build_image() {
  local ctx=$ART/image-ctx busybox t0=$SECONDS a
  busybox=$(command -v busybox || true)
  [[ -n $busybox ]] || busybox=/bin/busybox
  [[ -x $busybox ]] || die "busybox not found (apt package busybox-static)"
  if ! file_is_static "$busybox"; then
    die "$busybox is not statically linked (install busybox-static)"
  fi
  step "image: building $TEST_IMAGE from Dockerfile.test (log: artifacts/logs/image.log)"
  rm -rf "$ctx"
  mkdir -p "$ctx/bin" "$ctx/tests/image" "$ctx/skel/tmp" "$ctx/skel/root" "$ctx/skel/home" \
    "$ctx/home/tester"
  cp "$busybox" "$ctx/bin/busybox"
  for a in $("$busybox" --list); do
    [[ $a == busybox ]] || ln -s busybox "$ctx/bin/$a"
  done
  cp tests/image/passwd tests/image/group "$ctx/tests/image/"
  chmod 0644 "$ctx/tests/image/passwd" "$ctx/tests/image/group"
  chmod 1777 "$ctx/skel/tmp"
  chmod 0700 "$ctx/skel/root"
  chmod 0755 "$ctx/skel/home" "$ctx/home/tester"
  cp Dockerfile.test "$ctx/Dockerfile.test"
  run_logged "$LOGS/image.log" docker build -t "$TEST_IMAGE" -f "$ctx/Dockerfile.test" "$ctx"
  step "image: done in $((SECONDS - t0)) s"
}

# Static iff the ELF has no PT_INTERP (program interpreter); avoids needing file(1).
file_is_static() {
  python3 - "$1" <<'EOF'
import struct, sys
with open(sys.argv[1], "rb") as f:
    data = f.read()
if data[:4] != b"\x7fELF" or data[4] != 2:
    sys.exit(1)
phoff, = struct.unpack_from("<Q", data, 0x20)
phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
for i in range(phnum):
    if struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3:  # PT_INTERP
        sys.exit(1)
EOF
}

# The system-container image of the SystemContainers tests (Docker-in-Docker, containerd, systemd): built from
# Debian packages once per content hash (tests/sysimage/build-image.sh: ~3 min cold; a cached tarball, also kept in
# /var/cache/sandbox-runc/sysimage for clean clones, only needs a docker import, a few seconds).
build_system_image() {
  local t0=$SECONDS
  step "image: sandbox-runc-system (tests/sysimage/build-image.sh; log: artifacts/logs/sysimage.log)"
  run_logged "$LOGS/sysimage.log" bash tests/sysimage/build-image.sh
  step "image: $(tail -n 1 "$LOGS/sysimage.log" | sed 's/^==> sysimage: //') ($((SECONDS - t0)) s)"
}

export_rootfs() {
  local rootfs=$ART/rootfs cid
  step "rootfs: exporting $TEST_IMAGE to artifacts/rootfs"
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  cid=$(docker create "$TEST_IMAGE")
  if ! docker export "$cid" | tar -x -C "$rootfs"; then
    docker rm -f "$cid" >/dev/null 2>&1 || true
    die "docker export failed"
  fi
  docker rm -f "$cid" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------
demo() {
  # docker create does not call the runtime, so this works even when the runtime does not.
  local cid rt
  cid=$(docker create --runtime="$RUNTIME_NAME" "$TEST_IMAGE" true)
  rt=$(docker inspect --format '{{.HostConfig.Runtime}}' "$cid")
  docker rm -f "$cid" >/dev/null
  step "demo: docker inspect --format '{{.HostConfig.Runtime}}' of a container created with" \
    "--runtime=$RUNTIME_NAME reports: $rt"
  step "demo: docker run --rm --runtime=$RUNTIME_NAME $TEST_IMAGE sh -c '...'"
  local out rc=0
  out=$(timeout 120 docker run --rm --runtime="$RUNTIME_NAME" "$TEST_IMAGE" \
    sh -c 'echo hello from sandbox-runc; cat /proc/self/uid_map' 2>&1) || rc=$?
  printf '%s\n' "$out" | sed 's/^/    /'
  if [[ $rc -ne 0 ]]; then
    printf 'ERROR: demo container under runtime %s failed (exit %d)\n' "$RUNTIME_NAME" "$rc" >&2
    return 1
  fi
  step "demo: ok"
}

setup() { # setup ALLOW_OVERRIDE
  need_root
  mkdir -p "$LOGS"
  local t0=$SECONDS
  install_packages
  publish
  install_runtime "$1"
  setup_docker
  build_image
  build_system_image
  export_rootfs
  step "setup: done in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------------------------
# test
# ---------------------------------------------------------------------------------------------
# Sum the <Counters> of every TRX file given; prints "passed failed skipped total".
trx_counts() {
  python3 - "$@" <<'EOF'
import sys
import xml.etree.ElementTree as ET
passed = failed = skipped = total = 0
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        print(f"warning: cannot read {path}: {e}", file=sys.stderr)
        continue
    for c in root.iter():
        if c.tag.rsplit("}", 1)[-1] != "Counters":
            continue
        n = lambda k: int(c.get(k, "0") or 0)
        total += n("total")
        passed += n("passed")
        failed += n("failed") + n("error") + n("timeout") + n("aborted")
        # Checked with a [Fact(Skip=...)]: VSTest counts a skipped test in total but not in
        # executed, and leaves notExecuted at 0; take whichever is larger.
        skipped += max(n("notExecuted"), n("total") - n("executed"))
print(passed, failed, skipped, total)
EOF
}

# trx_failures FILE...: every failed test in the TRX files, a block each: its name and the first lines
# of its message. Printed just before the counts, so that the tail of a CI log always names what failed.
trx_failures() {
  python3 - "$@" <<'EOF'
import sys
import xml.etree.ElementTree as ET
shown = 0
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        continue
    for r in root.iter():
        if r.tag.rsplit("}", 1)[-1] != "UnitTestResult" or r.get("outcome") not in ("Failed", "Error", "Timeout", "Aborted"):
            continue
        shown += 1
        if shown > 20:
            continue
        msg = ""
        for m in r.iter():
            if m.tag.rsplit("}", 1)[-1] == "Message" and m.text:
                msg = m.text
                break
        print(f"FAILED {r.get('testName')} ({r.get('duration', '?')})")
        for line in msg.strip().splitlines()[:12]:
            print(f"    {line[:400]}")
if shown > 20:
    print(f"... and {shown - 20} more failed tests")
EOF
}

# test_setup: the set-up (as a child process, so that set -e keeps working inside it) and the build
# of the test assemblies. Prints why and returns 1 when either fails.
test_setup() {
  if [[ -n ${SANDBOX_RUNC_BIN:-} ]]; then
    warn "ignoring SANDBOX_RUNC_BIN=$SANDBOX_RUNC_BIN: tests always use artifacts/sandbox-runc"
    unset SANDBOX_RUNC_BIN
  fi
  if ! bash "$ROOT/build.sh" _setup; then
    echo "set-up failed: no test ran"
    return 1
  fi
  step "test: restore + build SandboxRunc.sln (log: artifacts/logs/test-build.log)"
  if ! run_logged "$LOGS/test-build.log" \
      bash -c 'dotnet restore SandboxRunc.sln && dotnet build SandboxRunc.sln -c Release --no-restore'; then
    echo "test build failed: no test ran"
    return 1
  fi
}

# run_host_tests DIR: dotnet test on this host, TRX into DIR. Returns dotnet test's exit code.
run_host_tests() {
  local results=$1 rc=0 timeout_s=${SANDBOX_RUNC_TEST_TIMEOUT:-2100} t0=$SECONDS
  step "test: dotnet test SandboxRunc.sln -c Release (timeout ${timeout_s} s)"
  SANDBOX_RUNC_BIN=$ART/sandbox-runc \
  SANDBOX_RUNC_ROOTFS=$ART/rootfs \
  SANDBOX_RUNC_TEST_IMAGE=$TEST_IMAGE \
  TESTCONTAINERS_RYUK_DISABLED=true \
    timeout --kill-after=30 "$timeout_s" \
    dotnet test SandboxRunc.sln -c Release --no-build \
      --results-directory "$results" \
      --logger "trx" --logger "console;verbosity=normal" \
      --blame-hang-timeout "${SANDBOX_RUNC_TEST_HANG_TIMEOUT:-300}s" --blame-hang-dump-type none </dev/null || rc=$?
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    echo "dotnet test timed out after $timeout_s s (counts below are from what was written)"
  elif [[ $rc -ne 0 ]] && ! find "$results" -name '*.trx' -type f | grep -q .; then
    echo "dotnet test exited with $rc and wrote no TRX file"
  elif [[ $rc -ne 0 ]]; then
    echo "dotnet test exited with $rc (a failed test, a test host crash or a test hanging over" \
      "${SANDBOX_RUNC_TEST_HANG_TIMEOUT:-300} s; see above)"
  fi
  step "test: host tests took $((SECONDS - t0)) s"
  return $rc
}

# run_vm_tests DIR: the cgroup v2 VM (tests/vm/run.sh), TRX into DIR; a VM that cannot be built or
# booted is written there as failed tests by run.sh itself.
run_vm_tests() {
  local results=$1 rc=0 t0=$SECONDS
  step "test: cgroup v2 tests in a Debian 12 VM (tests/vm/run.sh)"
  bash "$ROOT/tests/vm/run.sh" "$results" </dev/null || rc=$?
  if ! find "$results" -name '*.trx' -type f | grep -q .; then
    echo "the VM run wrote no TRX file (exit $rc)"
    [[ $rc -ne 0 ]] || rc=1
  fi
  step "test: VM tests took $((SECONDS - t0)) s"
  return $rc
}

# counts DIR: "passed failed skipped" over every TRX file under DIR (0 0 0 without any).
counts() {
  local trx=()
  mapfile -t trx < <(find "$1" -name '*.trx' -type f 2>/dev/null)
  if [[ ${#trx[@]} -gt 0 ]]; then
    trx_counts "${trx[@]}" | { read -r p f s _; echo "$p $f $s"; }
  else
    echo "0 0 0"
  fi
}

# cmd_test WHAT: WHAT is "all" (host, then VM) or "v2" (VM only). Whatever happens, the counts line
# is printed last; a part that ran no test and wrote no TRX counts as one failure.
cmd_test() {
  local what=$1 results=$ART/test-results hrc=0 vrc=0 p f s hp=0 hf=0 hs=0 vp=0 vf=0 vs=0
  if ! test_setup; then
    echo "0 passed, 1 failed, 0 skipped"
    return 1
  fi
  rm -rf "$results"
  mkdir -p "$results/host" "$results/vm"
  if [[ $what == all ]]; then
    run_host_tests "$results/host" || hrc=$?
    read -r hp hf hs < <(counts "$results/host")
    if [[ $hrc -ne 0 && $hf -eq 0 ]]; then hf=1; fi
    if [[ $hf -gt 0 ]]; then
      local failed_trx=()
      mapfile -t failed_trx < <(find "$results/host" -name '*.trx' -type f)
      [[ ${#failed_trx[@]} -eq 0 ]] || trx_failures "${failed_trx[@]}"
    fi
    echo "host: $hp passed, $hf failed, $hs skipped"
  fi
  if [[ $what == all && ${SANDBOX_RUNC_TEST_VM:-1} == 0 ]]; then
    echo "vm (cgroup v2): not run (SANDBOX_RUNC_TEST_VM=0)"
    echo "$hp passed, $hf failed, $hs skipped"
    [[ $hrc -eq 0 && $hf -eq 0 ]]
    return
  fi
  # The VM part gets what is left of the whole run's budget (SANDBOX_RUNC_TEST_BUDGET, 3300 s from the start of
  # ./build.sh test, so that CI ends within its 60 minutes), at most 3000 s, unless SANDBOX_RUNC_VM_TIMEOUT says.
  local left=$(( ${SANDBOX_RUNC_TEST_BUDGET:-3300} - SECONDS ))
  (( left <= 3000 )) || left=3000
  if [[ -z ${SANDBOX_RUNC_VM_TIMEOUT:-} ]]; then
    export SANDBOX_RUNC_VM_TIMEOUT=$left
  fi
  step "test: the VM part may take ${SANDBOX_RUNC_VM_TIMEOUT} s (${SECONDS} s of the run's ${SANDBOX_RUNC_TEST_BUDGET:-3300} s gone)"
  run_vm_tests "$results/vm" || vrc=$?
  read -r vp vf vs < <(counts "$results/vm")
  if [[ $vrc -ne 0 && $vf -eq 0 ]]; then vf=1; fi
  if [[ $vf -gt 0 ]]; then
    local vm_trx=()
    mapfile -t vm_trx < <(find "$results/vm" -name '*.trx' -type f)
    [[ ${#vm_trx[@]} -eq 0 ]] || trx_failures "${vm_trx[@]}"
  fi
  local trx
  for trx in "$results"/vm/*.trx; do
    [[ -f $trx ]] || continue
    read -r p f s < <(counts_file "$trx")
    echo "vm $(basename "$trx" .trx): $p passed, $f failed, $s skipped"
  done
  echo "vm (cgroup v2): $vp passed, $vf failed, $vs skipped"
  echo "$((hp + vp)) passed, $((hf + vf)) failed, $((hs + vs)) skipped"
  [[ $hrc -eq 0 && $vrc -eq 0 && $((hf + vf)) -eq 0 ]]
}

counts_file() { trx_counts "$1" | { read -r p f s _; echo "$p $f $s"; }; }

# ---------------------------------------------------------------------------------------------
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

main() {
  local cmd=${1:-}
  case $cmd in
    publish) mkdir -p "$LOGS"; publish ;;
    up) setup yes; demo ;;
    test) cmd_test all ;;
    test-v2) cmd_test v2 ;;
    bench)
      setup yes
      # LXCFS is only a comparison point for the /proc emulation benchmark; its service is not started.
      if ! command -v lxcfs >/dev/null; then
        step "bench: installing lxcfs (comparison point)"
        run_logged "$LOGS/apt.log" apt-get install -y --no-install-recommends lxcfs || warn "lxcfs not installed: no LXCFS column"
        pkill -x lxcfs 2>/dev/null || true
      fi
      SANDBOX_RUNC_BENCH_BIN=$RUNTIME_PATH exec bash tests/bench/bench.sh ;;
    _setup) setup no ;; # internal: used by "test"
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
