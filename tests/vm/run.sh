#!/usr/bin/env bash
# tests/vm/run.sh - the cgroup v2 tests in a Debian 12 VM (qemu), from the host.
#
#   tests/vm/run.sh RESULTS_DIR
#
# Needs, already built on the host: artifacts/sandbox-runc, the test assemblies
# (tests/SandboxRunc.Tests/bin/Release/net10.0/) and the docker image sandbox-runc-test:latest; when the
# filter takes the SystemContainers tests, also the system image's tarball (tests/sysimage/build-image.sh,
# run here when it is missing), which the guest imports from the repository share. Then:
#  1. tests/vm/build-image.sh: the guest image, cached by content hash under artifacts/vm/<hash>/;
#  2. artifacts/vm/run/in/: the test image (docker save) and the guest's settings (env);
#  3. boots qemu-system-x86_64 with the disk as a read-only snapshot (writes go to a temporary overlay),
#     no network, and three 9p shares: the repository (read-only; the guest runs tests/vm/guest-test.sh
#     from it), the host's .NET install (read-only) and artifacts/vm/run/results (read-write);
#  4. waits for the guest to power off, then copies its TRX files (v2-systemd.trx, v2-cgroupfs.trx) to
#     RESULTS_DIR. Whatever kept a driver's tests from running (no image, no boot, a hang, no TRX) is
#     written there as a failed test in vm-harness.trx, with the reason: never a silent skip.
# Serial console: artifacts/logs/vm-<accel>.log.
#
# Accelerator: KVM when it works, TCG otherwise. Without a verdict for this host (artifacts/vm/accel,
# keyed by kernel and qemu version), the run first boots with KVM and a short deadline for the guest's
# "booted" marker; if that fails (qemu exits, or the deadline passes) the verdict "tcg" is kept and the
# run boots again with TCG.
#
# Environment knobs:
#   SANDBOX_RUNC_VM_ACCEL        auto (default), kvm or tcg
#   SANDBOX_RUNC_VM_TIMEOUT      seconds for the whole VM run, image build and boot included (default
#                                1500); the guest paces its drivers to end before it, the VM is killed at it
#   SANDBOX_RUNC_VM_RESERVE      seconds kept for each driver after the first (default 540)
#   SANDBOX_RUNC_VM_FULL         1: every driver runs the whole filter; by default the drivers after the
#                                first run only its tests of category CgroupDriver
#   SANDBOX_RUNC_VM_KVM_PROBE    seconds a KVM boot may take to reach the guest's marker (default 60)
#   SANDBOX_RUNC_VM_DRIVERS      dockerd cgroup drivers to test, in order (default "systemd cgroupfs")
#   SANDBOX_RUNC_VM_FILTER       dotnet test filter (default "(Category=CgroupV2|Category=StockHost|
#                                Category=SystemContainers)&Category!=Nesting": the two-level nesting test,
#                                6.5 min under TCG here, only when asked)
#   SANDBOX_RUNC_VM_MEMORY       guest memory in MiB (default 4096); SANDBOX_RUNC_VM_CPUS (default 2)
#   SANDBOX_RUNC_VM_IMAGE_TAR    a `docker save` tar of the test image to use instead of asking the
#                                host's dockerd (which may be down, or another engine's)
#   SANDBOX_RUNC_VM_SCRIPT       a bash script the guest runs per driver instead of the tests (to look at
#                                something on a v2 host); its output is copied to RESULTS_DIR/script-<driver>.txt
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ART=$ROOT/artifacts
VMART=$ART/vm
RUN=$VMART/run
LOGS=$ART/logs
IMAGE=sandbox-runc-test:latest
TEST_DLL=$ROOT/tests/SandboxRunc.Tests/bin/Release/net10.0/SandboxRunc.Tests.dll
DRIVERS=${SANDBOX_RUNC_VM_DRIVERS:-systemd cgroupfs}
FILTER=${SANDBOX_RUNC_VM_FILTER:-(Category=CgroupV2|Category=StockHost|Category=SystemContainers)&Category!=Nesting}
# The drivers after the first: only the tests whose result depends on the driver, unless asked for all.
if [[ ${SANDBOX_RUNC_VM_FULL:-0} == 1 ]]; then LATER_FILTER=$FILTER
else LATER_FILTER="($FILTER)&Category=CgroupDriver"; fi
TIMEOUT=${SANDBOX_RUNC_VM_TIMEOUT:-1500}
RESERVE=${SANDBOX_RUNC_VM_RESERVE:-540}
KVM_PROBE=${SANDBOX_RUNC_VM_KVM_PROBE:-60}
MEMORY=${SANDBOX_RUNC_VM_MEMORY:-4096}
CPUS=${SANDBOX_RUNC_VM_CPUS:-2}
BOOTED=SANDBOX-VM-BOOTED
T0=$SECONDS

step() { printf '==> vm: %s\n' "$*"; }

RESULTS_DIR=${1:-}
[[ -n $RESULTS_DIR ]] || { echo "usage: $0 RESULTS_DIR" >&2; exit 2; }
mkdir -p "$RESULTS_DIR" "$LOGS" "$VMART"
RESULTS_DIR=$(cd "$RESULTS_DIR" && pwd)

xml_escape() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g'; }

# harness_fail NAME REASON...: one failed test in vm-harness.trx (the file is rewritten with all so far).
HARNESS_FAILS=()
harness_fail() {
  local name=$1; shift
  HARNESS_FAILS+=("$name"$'\t'"$*")
  printf 'FAILED vm: %s: %s\n' "$name" "$*" >&2
  local f=$RESULTS_DIR/vm-harness.trx n=${#HARNESS_FAILS[@]} entry tname reason
  {
    printf '<?xml version="1.0" encoding="utf-8"?>\n'
    printf '<TestRun id="%s" name="cgroup v2 VM harness" xmlns="http://microsoft.com/schemas/VisualStudio/TeamTest/2010">\n' "$(cat /proc/sys/kernel/random/uuid)"
    printf '  <Results>\n'
    for entry in "${HARNESS_FAILS[@]}"; do
      tname=$(printf '%s' "${entry%%$'\t'*}" | xml_escape)
      reason=$(printf '%s' "${entry#*$'\t'}" | xml_escape)
      printf '    <UnitTestResult testName="CgroupV2VM.%s" outcome="Failed"><Output><ErrorInfo><Message>%s</Message></ErrorInfo></Output></UnitTestResult>\n' "$tname" "$reason"
    done
    printf '  </Results>\n'
    printf '  <ResultSummary outcome="Failed">\n'
    printf '    <Counters total="%d" executed="%d" passed="0" failed="%d" error="0" timeout="0" aborted="0" inconclusive="0" notExecuted="0" />\n' "$n" "$n" "$n"
    printf '  </ResultSummary>\n</TestRun>\n'
  } >"$f"
}

# Every driver fails with the same reason (nothing ran).
fail_all() {
  local d
  for d in $DRIVERS; do harness_fail "$d" "$*"; done
  exit 1
}

# ---------------------------------------------------------------------------------------------
# prerequisites and inputs
# ---------------------------------------------------------------------------------------------
command -v qemu-system-x86_64 >/dev/null || fail_all "qemu-system-x86_64 not found (apt package qemu-system-x86)"
[[ -x $ART/sandbox-runc ]] || fail_all "artifacts/sandbox-runc is missing (./build.sh publish)"
[[ -f $TEST_DLL ]] || fail_all "the test assembly is missing: $TEST_DLL (dotnet build -c Release)"
DOTNET_DIR=$(dirname "$(readlink -f "$(command -v dotnet)")" 2>/dev/null)
[[ -x $DOTNET_DIR/dotnet && -d $DOTNET_DIR/sdk ]] || fail_all "no .NET SDK install to share with the guest (dotnet on PATH: ${DOTNET_DIR:-none})"

exec 8>"$VMART/.run.lock"
flock -n 8 || { step "another VM run holds $VMART/.run.lock; waiting"; flock 8; }

t=$SECONDS
IMAGE_DIR=$(bash "$HERE/build-image.sh" --print-dir 2>"$LOGS/vm-image.err" | tee "$LOGS/vm-image.log" | tail -n1)
if [[ ! -f $IMAGE_DIR/disk.img ]]; then
  fail_all "the VM image could not be built: $(tail -n 5 "$LOGS/vm-image.err" | tr '\n' ' ')"
fi
grep '^==>' "$LOGS/vm-image.log" | sed 's/^/    /'
step "image ready in $((SECONDS - t)) s: ${IMAGE_DIR#"$ROOT"/}"

# The system image (Debian with docker.io, containerd, systemd) for the SystemContainers tests: its tarball,
# which the guest imports from the read-only repository share (artifacts/sysimage/<hash>/rootfs.tar).
SYSIMAGE_DIR=
if [[ $FILTER == *SystemContainers* ]]; then
  t=$SECONDS
  sys_hash=$(bash "$ROOT/tests/sysimage/build-image.sh" --tag-only) && sys_hash=${sys_hash##*:}
  sys_dir=$ART/sysimage/${sys_hash:-none}
  if [[ ! -f $sys_dir/rootfs.tar ]]; then
    bash "$ROOT/tests/sysimage/build-image.sh" >"$LOGS/vm-sysimage.log" 2>&1
  fi
  [[ -f $sys_dir/rootfs.tar && -f $sys_dir/build-info.txt ]] ||
    fail_all "the system image for the SystemContainers tests could not be built: $(tail -n 5 "$LOGS/vm-sysimage.log" 2>/dev/null | tr '\n' ' ')"
  SYSIMAGE_DIR=${sys_dir#"$ROOT"/}
  step "system image ready in $((SECONDS - t)) s: $SYSIMAGE_DIR ($(cut -d';' -f2 "$sys_dir/build-info.txt"))"
fi

rm -rf "$RUN"
mkdir -p "$RUN/in" "$RUN/results" "$RUN/tmp"
t=$SECONDS
if [[ -n ${SANDBOX_RUNC_VM_IMAGE_TAR:-} ]]; then
  cp "$SANDBOX_RUNC_VM_IMAGE_TAR" "$RUN/in/test-image.tar" ||
    fail_all "cannot copy SANDBOX_RUNC_VM_IMAGE_TAR ($SANDBOX_RUNC_VM_IMAGE_TAR)"
else
  docker save -o "$RUN/in/test-image.tar" "$IMAGE" 2>"$LOGS/vm-save.log" ||
    fail_all "docker save $IMAGE failed: $(tail -n 3 "$LOGS/vm-save.log" | tr '\n' ' ')"
fi
{
  printf 'DRIVERS=%q\nFILTER=%q\nIMAGE=%q\n' "$DRIVERS" "$FILTER" "$IMAGE"
  # The guest's deadline (its clock is set from the host's): the run's, less the time to power off and
  # collect. The guest gives each driver what is left but RESERVE s per driver still to come.
  printf 'DEADLINE=%d\nRESERVE=%d\nHANG_TIMEOUT=%d\n' $(($(date +%s) + TIMEOUT - (SECONDS - T0) - 30)) "$RESERVE" 600
  printf 'LATER_FILTER=%q\nSYSIMAGE_DIR=%q\n' "$LATER_FILTER" "$SYSIMAGE_DIR"
  [[ -z ${SANDBOX_RUNC_TEST_TIMEOUT_SCALE:-} ]] || printf 'TIMEOUT_SCALE=%q\n' "$SANDBOX_RUNC_TEST_TIMEOUT_SCALE"
} >"$RUN/in/env"
if [[ -n ${SANDBOX_RUNC_VM_SCRIPT:-} ]]; then
  cp "$SANDBOX_RUNC_VM_SCRIPT" "$RUN/in/script.sh" || fail_all "cannot copy SANDBOX_RUNC_VM_SCRIPT ($SANDBOX_RUNC_VM_SCRIPT)"
fi
step "inputs staged in $((SECONDS - t)) s (test image $(du -h "$RUN/in/test-image.tar" | cut -f1))"

# ---------------------------------------------------------------------------------------------
# boot
# ---------------------------------------------------------------------------------------------
QEMU_PID=
kill_qemu() {
  [[ -n $QEMU_PID ]] || return 0
  kill "$QEMU_PID" 2>/dev/null
  local i
  for ((i = 0; i < 20; i++)); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$QEMU_PID" 2>/dev/null
  wait "$QEMU_PID" 2>/dev/null
  QEMU_PID=
}
trap kill_qemu EXIT

# start_qemu ACCEL LOG: boots in the background, sets QEMU_PID.
start_qemu() {
  local accel=$1 log=$2 cpu
  if [[ $accel == kvm ]]; then cpu=(-accel kvm -cpu host); else cpu=(-accel tcg,thread=multi -cpu max); fi
  : >"$log"
  # The snapshot's overlay lives in TMPDIR; keep it in artifacts/, not in the host's /var/tmp.
  TMPDIR=$RUN/tmp setsid qemu-system-x86_64 -nodefaults -no-user-config -no-reboot \
    "${cpu[@]}" -machine q35 -m "$MEMORY" -smp "$CPUS" \
    -display none -monitor none -serial "file:$log" -nic none \
    -kernel "$IMAGE_DIR/vmlinuz" -initrd "$IMAGE_DIR/initrd.img" \
    -append "console=ttyS0,115200 root=/dev/vda rw panic=-1 mitigations=off systemd.unified_cgroup_hierarchy=1" \
    -drive "file=$IMAGE_DIR/disk.img,format=raw,if=virtio,snapshot=on,cache=unsafe" \
    -device virtio-rng-pci \
    -virtfs "local,path=$ROOT,mount_tag=repo,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$DOTNET_DIR,mount_tag=dotnet,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$RUN/results,mount_tag=results,security_model=none" \
    </dev/null >"$log.qemu" 2>&1 &
  QEMU_PID=$!
}

# wait_marker SECONDS LOG: 0 when the guest's marker shows up, 1 when qemu exits or time runs out.
wait_marker() {
  local deadline=$((SECONDS + $1)) log=$2
  while ((SECONDS < deadline)); do
    grep -q "$BOOTED" "$log" 2>/dev/null && return 0
    kill -0 "$QEMU_PID" 2>/dev/null || return 1
    sleep 1
  done
  return 1
}

host_key="$(uname -r) $(qemu-system-x86_64 --version | head -n1)"
verdict_file=$VMART/accel
accel=${SANDBOX_RUNC_VM_ACCEL:-auto}
if [[ $accel == auto ]]; then
  if [[ -f $verdict_file && $(sed -n 2p "$verdict_file") == "$host_key" ]]; then
    accel=$(sed -n 1p "$verdict_file")
    step "accelerator: $accel (verdict kept in artifacts/vm/accel: $(sed -n 3p "$verdict_file"))"
  elif [[ -r /dev/kvm && -w /dev/kvm ]]; then
    accel=probe
  else
    accel=tcg
    printf 'tcg\n%s\nno usable /dev/kvm\n' "$host_key" >"$verdict_file"
    step "accelerator: tcg (no usable /dev/kvm)"
  fi
fi

booted=no
if [[ $accel == probe || $accel == kvm ]]; then
  log=$LOGS/vm-kvm.log
  step "boot: trying KVM (deadline $KVM_PROBE s for the guest's marker; serial: ${log#"$ROOT"/})"
  t=$SECONDS
  start_qemu kvm "$log"
  if wait_marker "$KVM_PROBE" "$log"; then
    booted=kvm
    printf 'kvm\n%s\nthe guest booted under KVM in %d s\n' "$host_key" $((SECONDS - t)) >"$verdict_file"
    step "boot: KVM works (marker after $((SECONDS - t)) s)"
  else
    why="no marker within $KVM_PROBE s"
    kill -0 "$QEMU_PID" 2>/dev/null || why="qemu exited: $(tail -n 2 "$log.qemu" | tr '\n' ' ')"
    kill_qemu
    printf 'tcg\n%s\nKVM failed: %s\n' "$host_key" "$why" >"$verdict_file"
    step "boot: KVM does not work here ($why); using TCG from now on"
    [[ $accel == kvm ]] && fail_all "KVM was asked for (SANDBOX_RUNC_VM_ACCEL=kvm) and does not boot: $why"
  fi
fi
if [[ $booted == no ]]; then
  log=$LOGS/vm-tcg.log
  step "boot: TCG (serial: ${log#"$ROOT"/})"
  t=$SECONDS
  start_qemu tcg "$log"
  wait_marker 300 "$log" ||
    fail_all "the VM did not boot under TCG within 300 s: $(tail -n 3 "$log" | tr -d '\r' | tr '\n' ' ') $(tail -n 2 "$log.qemu" | tr '\n' ' ')"
  booted=tcg
  step "boot: guest up after $((SECONDS - t)) s"
fi

# ---------------------------------------------------------------------------------------------
# wait for the guest, then collect
# ---------------------------------------------------------------------------------------------
deadline=$((T0 + TIMEOUT))
shown=0
while kill -0 "$QEMU_PID" 2>/dev/null && ((SECONDS < deadline)); do
  # Echo the guest's own progress lines (not the test output) as they come.
  n=$(grep -c '^\[guest' "$log" 2>/dev/null)
  if ((n > shown)); then
    grep '^\[guest' "$log" | tail -n $((n - shown)) | tr -d '\r' | sed 's/^/    /'
    shown=$n
  fi
  sleep 2
done
timed_out=no
if kill -0 "$QEMU_PID" 2>/dev/null; then
  timed_out=yes
  kill_qemu
fi
grep '^\[guest' "$log" | tail -n +$((shown + 1)) | tr -d '\r' | sed 's/^/    /'
QEMU_PID=

# trx_check FILE: "TOTAL FAILED OUTCOME FIRST-RUN-ERROR" of a TRX file (VSTest's own errors are RunInfos).
trx_check() {
  python3 - "$1" <<'EOF'
import sys, xml.etree.ElementTree as ET
ns = "{http://microsoft.com/schemas/VisualStudio/TeamTest/2010}"
try:
    root = ET.parse(sys.argv[1]).getroot()
except (ET.ParseError, OSError) as e:
    print(0, 0, "Error", f"unreadable TRX: {e}"); sys.exit()
summary = root.find(f"{ns}ResultSummary")
outcome = summary.get("outcome", "?") if summary is not None else "?"
# VSTest reports a session timeout or a blame-hang abort only as a run message.
if any("abort" in (t.text or "").lower() for t in root.iter(f"{ns}Text")):
    outcome = "Aborted"
c = root.find(f"{ns}ResultSummary/{ns}Counters")
n = lambda k: int(c.get(k, "0") or 0) if c is not None else 0
errors = [" ".join((t.text or "").split())[:300] for t in root.iter(f"{ns}Text")
          if "Catastrophic" in (t.text or "") or "error" in (t.text or "").lower()]
print(n("total"), n("failed") + n("error") + n("timeout") + n("aborted"), outcome, errors[0] if errors else "")
EOF
}

ran=0
for d in $DRIVERS; do
  if [[ -f $RUN/results/v2-$d.trx ]]; then
    cp "$RUN/results/v2-$d.trx" "$RESULTS_DIR/"
    read -r total failed outcome error < <(trx_check "$RUN/results/v2-$d.trx")
    exit_code=$(sed -n "s/^DRIVER-DONE $d: dotnet test exit \([0-9]*\).*/\1/p" "$RUN/results/summary.txt" 2>/dev/null)
    if [[ $total -eq 0 ]]; then
      harness_fail "$d" "dotnet test ran no test under the $d driver${error:+: $error}"
    elif [[ $outcome == Aborted ]]; then
      harness_fail "$d" "the test run under the $d driver was aborted after $total tests (VSTest's session" \
        "timeout, a test host crash or a hang; see ${log#"$ROOT"/})"
      ran=$((ran + 1))
    elif [[ ${exit_code:-0} -ne 0 && $failed -eq 0 ]]; then
      harness_fail "$d" "dotnet test exited with $exit_code and no failed test under the $d driver" \
        "(a test host crash, or a test hanging over the hang timeout; see ${log#"$ROOT"/})"
    else
      ran=$((ran + 1))
    fi
  elif [[ -n ${SANDBOX_RUNC_VM_SCRIPT:-} ]] && grep -q "^SCRIPT-DONE $d:" "$RUN/results/summary.txt" 2>/dev/null; then
    step "$d: ran SANDBOX_RUNC_VM_SCRIPT instead of the tests ($(grep -h "^SCRIPT-DONE $d:" "$RUN/results/summary.txt")): see script-$d.txt"
    ran=$((ran + 1))
  else
    reason=$(grep -h "FAILED $d:" "$RUN/results/summary.txt" 2>/dev/null | head -n1)
    [[ -n $reason ]] || reason=$(grep -h "SETUP-FAILED" "$RUN/results/summary.txt" 2>/dev/null | head -n1)
    if [[ -z $reason ]]; then
      if [[ $timed_out == yes ]]; then reason="the VM run was killed after $TIMEOUT s (SANDBOX_RUNC_VM_TIMEOUT)"
      else reason="the guest ended without results (see ${log#"$ROOT"/})"; fi
    fi
    harness_fail "$d" "$reason"
  fi
done
cp "$RUN"/results/script-*.txt "$RESULTS_DIR/" 2>/dev/null
[[ -f $RUN/results/summary.txt ]] && cp "$RUN/results/summary.txt" "$RESULTS_DIR/vm-summary.txt"
step "done in $((SECONDS - T0)) s ($booted; $ran of $(wc -w <<<"$DRIVERS") drivers ran their tests)"
[[ $ran -eq $(wc -w <<<"$DRIVERS") ]]
