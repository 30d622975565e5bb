#!/usr/bin/env bash
# tests/vm/guest-test.sh - runs INSIDE the cgroup v2 VM (started at boot by sandbox-vm-test.service,
# read from the host's read-only share at /repo). Installs the runtime as a user would, loads the test
# image, then runs the xunit tests of category CgroupV2 once per dockerd cgroup driver (the default,
# systemd on Debian 12, then cgroupfs), each into /results/v2-<driver>.trx. Writes /results/summary.txt
# and, last, /results/done. The host powers nothing off: the VM does, when this returns.
set -uo pipefail

# bash reads a script as it runs it: run from a private copy, so that the host changing the shared
# file meanwhile changes nothing here.
if [[ ${BASH_SOURCE[0]} != /run/sandbox-vm-test.sh ]]; then
  cp "${BASH_SOURCE[0]}" /run/sandbox-vm-test.sh && exec bash /run/sandbox-vm-test.sh "$@"
fi

REPO=/repo
RESULTS=/results
IN=$REPO/artifacts/vm/run/in
WORK=/var/lib/sandbox-runc-test
RUNTIME=/usr/local/bin/sandbox-runc
# The tests run from a local copy of what they need of the repository (the assemblies, the fixtures,
# SandboxRunc.sln that marks the root): a rebuild on the host during the run cannot reach them.
LOCAL_REPO=$WORK/repo
TEST_DLL_DIR=tests/SandboxRunc.Tests/bin/Release/net10.0
TEST_DLL=$LOCAL_REPO/$TEST_DLL_DIR/SandboxRunc.Tests.dll
T0=$SECONDS

# Settings from the host (in/env): DRIVERS, FILTER, LATER_FILTER, DEADLINE, RESERVE, HANG_TIMEOUT,
# IMAGE, TIMEOUT_SCALE, SYSIMAGE_DIR.
DRIVERS="systemd cgroupfs"
FILTER="(Category=CgroupV2|Category=StockHost|Category=SystemContainers)&Category!=Nesting"
# The system image's build (tests/sysimage/) in the repository share, relative to it; empty: not needed.
SYSIMAGE_DIR=
# The drivers after the first run only the tests whose result depends on dockerd's cgroup driver
# (category CgroupDriver: where the cgroup is, its limits, freezer, stats, device program, removal);
# the host sets it to FILTER itself when every driver is to run everything (SANDBOX_RUNC_VM_FULL=1).
LATER_FILTER="Category=CgroupDriver"
# When the guest must be done (epoch seconds, the guest's clock comes from the host's), and the
# seconds kept for each driver still to come once one starts. 0: no deadline (a run by hand).
DEADLINE=0
RESERVE=600
HANG_TIMEOUT=240
IMAGE=sandbox-runc-test:latest
# The tests that never go through dockerd (bundles driven by the runtime's own command line) do not
# depend on its cgroup driver: they run with the first driver only.
DOCKERD_ONLY='FullyQualifiedName!~SandboxRunc.Tests.Integration.&FullyQualifiedName!~SandboxRunc.Tests.CgroupV2.CgroupOciTests'
# shellcheck disable=SC1091
[[ -f $IN/env ]] && . "$IN/env"

log() { printf '[guest %4ds] %s\n' $((SECONDS - T0)) "$*"; }
note() { log "$*"; printf '%s\n' "$*" >>"$RESULTS/summary.txt"; }
fail_setup() { note "SETUP-FAILED: $*"; touch "$RESULTS/done"; exit 1; }

docker_ok() { docker info >/dev/null 2>&1; }
wait_docker() {
  local i
  for ((i = 0; i < 240; i++)); do docker_ok && return 0; sleep 0.5; done
  return 1
}

# Sets dockerd's cgroup driver in daemon.json (every other key kept) and restarts it.
use_driver() {
  local driver=$1
  python3 - "$driver" <<'EOF'
import json, os, sys
path = "/etc/docker/daemon.json"
try:
    with open(path) as f:
        cfg = json.load(f)
except FileNotFoundError:
    cfg = {}
opts = [o for o in cfg.get("exec-opts", []) if not o.startswith("native.cgroupdriver=")]
if sys.argv[1] == "cgroupfs":
    opts.append("native.cgroupdriver=cgroupfs")
if opts:
    cfg["exec-opts"] = opts
else:
    cfg.pop("exec-opts", None)
with open(path + ".tmp", "w") as f:
    json.dump(cfg, f, indent=2)
os.replace(path + ".tmp", path)
EOF
  systemctl restart docker || return 1
  wait_docker
}

main() {
  mkdir -p "$RESULTS" "$WORK"
  : >"$RESULTS/summary.txt"
  log "kernel $(uname -r); /sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup); $(systemctl --version | head -n1)"
  log "controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null); AppArmor: $(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)"
  [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]] || fail_setup "/sys/fs/cgroup is not cgroup v2 (unified)"
  [[ -x $REPO/artifacts/sandbox-runc ]] || fail_setup "no artifacts/sandbox-runc in the shared repository"
  [[ -f $REPO/$TEST_DLL_DIR/SandboxRunc.Tests.dll ]] || fail_setup "no test assembly $TEST_DLL_DIR/SandboxRunc.Tests.dll in the shared repository"
  [[ -x /usr/share/dotnet/dotnet ]] || fail_setup "no .NET at /usr/share/dotnet (the host's share)"

  install -m 0755 "$REPO/artifacts/sandbox-runc" "$RUNTIME"
  rm -rf "$LOCAL_REPO" && mkdir -p "$LOCAL_REPO"
  (cd "$REPO" && tar -c SandboxRunc.sln spec-fixtures "$TEST_DLL_DIR" tests/sysimage $(find tests/SandboxRunc.Tests -name '*.c') \
    $(ls artifacts/escape-probe-* artifacts/toctou 2>/dev/null)) | tar -x -C "$LOCAL_REPO" ||
    fail_setup "copying the test assemblies from the share failed"
  log "runtime: $("$RUNTIME" --version | head -n1)"
  wait_docker || fail_setup "dockerd did not come up: $(systemctl status docker --no-pager 2>&1 | tail -n 5)"
  # As the README tells users: register the runtime in daemon.json (dockerd is reloaded by it).
  "$RUNTIME" install --path "$RUNTIME" 2>&1 | sed 's/^/    /'
  docker load -i "$IN/test-image.tar" >/dev/null || fail_setup "docker load of the test image failed"
  if [[ -n $SYSIMAGE_DIR ]]; then
    local t2=$SECONDS out
    out=$(bash "$LOCAL_REPO/tests/sysimage/build-image.sh" --import-from "$REPO/$SYSIMAGE_DIR" 2>&1) ||
      fail_setup "importing the system image from $SYSIMAGE_DIR failed: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    log "system image $(bash "$LOCAL_REPO/tests/sysimage/build-image.sh" --tag-only) imported in $((SECONDS - t2)) s"
  fi
  # The bundle tests need the image's root filesystem on a local filesystem (9p cannot be ID-mapped).
  rm -rf "$WORK/rootfs" && mkdir -p "$WORK/rootfs"
  local cid
  cid=$(docker create "$IMAGE") && docker export "$cid" | tar -x -C "$WORK/rootfs" && docker rm -f "$cid" >/dev/null ||
    fail_setup "exporting the test image's root filesystem failed"
  log "set-up done"

  export HOME=/root DOTNET_ROOT=/usr/share/dotnet DOTNET_CLI_HOME=/tmp/dotnet-home
  export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
  export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 DOTNET_CLI_WORKLOAD_UPDATE_NOTIFY_DISABLE=1
  export SANDBOX_RUNC_BIN=$RUNTIME SANDBOX_RUNC_ROOTFS=$WORK/rootfs SANDBOX_RUNC_TEST_IMAGE=$IMAGE
  export TESTCONTAINERS_RYUK_DISABLED=true
  # Under emulation (TCG: systemd-detect-virt says "qemu", not "kvm") one docker run can take tens of
  # seconds: the tests' hang detectors get a larger factor (they assert nothing about speed).
  local virt
  virt=$(systemd-detect-virt 2>/dev/null || true)
  export SANDBOX_RUNC_TEST_TIMEOUT_SCALE=${TIMEOUT_SCALE:-$([[ $virt == qemu ]] && echo 8 || echo 2)}
  # and none beyond 2/3 of VSTest's hang timeout: a hung command fails its own test, saying what it was doing,
  # rather than VSTest aborting the run (and every test after it) as a crash.
  export SANDBOX_RUNC_TEST_HANG_CAP=$((HANG_TIMEOUT * 2 / 3))
  log "virtualization: ${virt:-none}; test hang detectors scaled by $SANDBOX_RUNC_TEST_TIMEOUT_SCALE, at most $SANDBOX_RUNC_TEST_HANG_CAP s"
  local driver got rc t1 filter=$FILTER budget later
  later=$(wc -w <<<"$DRIVERS")
  for driver in $DRIVERS; do
    t1=$SECONDS
    later=$((later - 1))
    # This driver's share of the time left: all of it but what the drivers still to come keep, less
    # the time to collect and power off. VSTest's session timeout comes 150 s before the end of it
    # (aborting a run and writing its TRX took over 100 s under TCG on a loaded host); timeout(1)
    # kills at the end.
    budget=86400
    ((DEADLINE == 0)) || budget=$((DEADLINE - $(date +%s) - later * RESERVE - 30))
    if ((budget < 300)); then
      note "DRIVER-FAILED $driver: no time left for it within the VM's budget (SANDBOX_RUNC_VM_TIMEOUT)"
      filter="($LATER_FILTER)&$DOCKERD_ONLY"
      continue
    fi
    if ! use_driver "$driver"; then
      note "DRIVER-FAILED $driver: dockerd did not restart: $(journalctl -u docker --no-pager -n 5 2>&1)"
      continue
    fi
    got=$(docker info --format '{{.CgroupDriver}} {{.CgroupVersion}}')
    if [[ $got != "$driver 2" ]]; then
      note "DRIVER-FAILED $driver: dockerd reports cgroup driver and version \"$got\""
      continue
    fi
    if [[ -f $IN/script.sh ]]; then
      log "driver $driver: running the host's script (SANDBOX_RUNC_VM_SCRIPT) instead of the tests"
      (cd /tmp && timeout --kill-after=10 "$budget" bash "$IN/script.sh" "$driver" >"$RESULTS/script-$driver.txt" 2>&1 </dev/null)
      note "SCRIPT-DONE $driver: exit $? after $((SECONDS - t1)) s"
      continue
    fi
    # Again, after the restart of dockerd.
    ((DEADLINE == 0)) || budget=$((DEADLINE - $(date +%s) - later * RESERVE - 30))
    log "driver $driver: dockerd $(docker version --format '{{.Server.Version}}'), cgroup driver $got; dotnet test --filter $filter (at most $budget s)"
    mkdir -p /tmp/results
    # VSTest's own session timeout aborts the run and still writes the TRX with what ran; timeout(1)
    # is only the backstop (a killed dotnet test writes nothing).
    (cd /tmp && timeout --kill-after=10 "$budget" /usr/share/dotnet/dotnet test "$TEST_DLL" \
      --filter "$filter" --results-directory /tmp/results \
      --logger "trx;LogFileName=v2-$driver.trx" --logger "console;verbosity=normal" \
      --blame-hang-timeout "${HANG_TIMEOUT}s" --blame-hang-dump-type none \
      -- RunConfiguration.TestSessionTimeout=$(((budget - 150) * 1000)) </dev/null)
    rc=$?
    if [[ -f /tmp/results/v2-$driver.trx ]]; then
      cp "/tmp/results/v2-$driver.trx" "$RESULTS/"
      note "DRIVER-DONE $driver: dotnet test exit $rc after $((SECONDS - t1)) s"
    else
      note "DRIVER-FAILED $driver: dotnet test exit $rc after $((SECONDS - t1)) s and wrote no TRX$([[ $rc -eq 124 ]] && echo " (killed after $budget s)")"
    fi
    # What the run left behind, for the lead: containers, scopes, cgroups.
    log "left after $driver: containers $(docker ps -aq | wc -l), scopes: $(systemctl list-units --type=scope --all --no-legend --plain | grep -c -e docker- -e sandbox-runc)"
    docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1
    filter="($LATER_FILTER)&$DOCKERD_ONLY"
  done
  note "GUEST-TOTAL $((SECONDS - T0)) s"
  sync
  touch "$RESULTS/done"
}

main "$@"
