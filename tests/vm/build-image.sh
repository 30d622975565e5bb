#!/usr/bin/env bash
# tests/vm/build-image.sh - the Debian 12 guest of the cgroup v2 tests, built from packages.
#
#   tests/vm/build-image.sh [--print-dir]
#
# Builds, once per content hash, artifacts/vm/<hash>/ holding
#   disk.img      ext4 root filesystem (sparse raw; the VM boots it as a read-only snapshot)
#   vmlinuz       Debian's kernel, initrd.img its initramfs (booted directly by qemu)
#   manifest.txt  the installed packages and versions; build.log the build's output
# The hash covers every input that shapes the image: this script, packages.txt, the files baked into
# the guest (guest/), the Debian release and the architecture. When artifacts/vm/<hash>/disk.img
# exists nothing is done. With --print-dir the directory is the last line printed.
#
# A second, machine-wide copy (SANDBOX_RUNC_VM_CACHE, default /var/cache/sandbox-runc/vm/<hash>; "none"
# turns it off) lets a fresh clone on the same machine (CI) take the image instead of building it again:
# hard links when on the same filesystem (the image is never written in place: qemu boots it as a
# snapshot), a sparse copy otherwise. Only the current hash is kept there too.
#
# How: debootstrap --variant=minbase, then apt-get install --no-install-recommends of packages.txt
# in a chroot (services are kept from starting there), the guest's systemd unit that runs the tests,
# then mkfs.ext4 -d (no loop device, no mount). Only Debian's repositories are used: the mirror is the
# one the host's apt uses (SANDBOX_RUNC_VM_MIRROR overrides it). Needs root, debootstrap, e2fsprogs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VMART=${SANDBOX_RUNC_VM_ARTIFACTS:-$ROOT/artifacts/vm}
CACHE=${SANDBOX_RUNC_VM_CACHE:-/var/cache/sandbox-runc/vm}
RELEASE=bookworm
ARCH=amd64
DISK_SIZE=6G

step() { printf '==> vm-image: %s\n' "$*"; }
die() { printf 'ERROR: vm-image: %s\n' "$*" >&2; exit 1; }

# The content hash: every input that shapes the image, named and in a fixed order.
image_hash() {
  {
    printf 'release=%s arch=%s disk=%s\n' "$RELEASE" "$ARCH" "$DISK_SIZE"
    local f
    for f in "$HERE/build-image.sh" "$HERE/packages.txt" $(find "$HERE/guest" -type f | LC_ALL=C sort); do
      printf '%s %s\n' "${f#"$HERE"/}" "$(sha256sum <"$f" | cut -d' ' -f1)"
    done
  } | sha256sum | cut -c1-16
}

packages() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HERE/packages.txt" | grep -v '^$'; }

# The Debian mirror the host's apt uses for $RELEASE (deb822 .sources or one-line sources.list).
host_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    uri=$(awk -v rel="$RELEASE" '
      /^[[:space:]]*$/ { if (u != "" && s ~ ("(^| )" rel "( |$)")) { print u; exit } u = ""; s = ""; next }
      /^URIs:/   { u = $2 }
      /^Suites:/ { $1 = ""; s = $0 }
      END        { if (u != "" && s ~ ("(^| )" rel "( |$)")) print u }' "$f" | head -n1)
    [[ -n $uri ]] && { printf '%s\n' "$uri"; return 0; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    uri=$(awk -v rel="$RELEASE" '$1 == "deb" && $0 !~ /\[/ && $3 == rel { print $2; exit }' "$f")
    [[ -n $uri ]] && { printf '%s\n' "$uri"; return 0; }
  done
  return 1
}

# Apt sources for the chroot: the host's entries for $RELEASE (its updates and security suites too).
write_guest_sources() {
  local rootfs=$1 mirror=$2 f
  rm -f "$rootfs/etc/apt/sources.list"
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] && grep -q "^Suites:.*\b$RELEASE\b" "$f" && cp "$f" "$rootfs/etc/apt/sources.list.d/"
  done
  if ! ls "$rootfs"/etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
    printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$RELEASE" "$mirror" "$RELEASE" \
      >"$rootfs/etc/apt/sources.list"
  fi
}

in_chroot() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }

MOUNTED=()
mount_chroot() {
  local d
  for d in proc sys dev dev/pts; do
    mkdir -p "$ROOTFS/$d"
  done
  mount -t proc proc "$ROOTFS/proc" && MOUNTED+=("$ROOTFS/proc")
  mount -t sysfs sysfs "$ROOTFS/sys" && MOUNTED+=("$ROOTFS/sys")
  mount --bind /dev "$ROOTFS/dev" && MOUNTED+=("$ROOTFS/dev")
  mount -t devpts -o newinstance,ptmxmode=0666 devpts "$ROOTFS/dev/pts" && MOUNTED+=("$ROOTFS/dev/pts")
}
umount_chroot() {
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
    umount -l "${MOUNTED[$i]}" 2>/dev/null || true
  done
  MOUNTED=()
}

# Files baked into the guest besides the packages.
configure_guest() {
  echo sandbox-vm >"$ROOTFS/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 sandbox-vm\n::1 localhost\n' >"$ROOTFS/etc/hosts"
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$ROOTFS/etc/fstab"
  install -m 0755 "$HERE/guest/sandbox-vm-entry" "$ROOTFS/usr/local/sbin/sandbox-vm-entry"
  install -m 0644 "$HERE/guest/sandbox-vm-test.service" "$ROOTFS/etc/systemd/system/sandbox-vm-test.service"
  mkdir -p "$ROOTFS/etc/systemd/system/multi-user.target.wants" "$ROOTFS/etc/systemd/journald.conf.d"
  ln -sf ../sandbox-vm-test.service "$ROOTFS/etc/systemd/system/multi-user.target.wants/sandbox-vm-test.service"
  # A journal in memory only; no timers, gettys or checks that would only slow an emulated boot.
  printf '[Journal]\nStorage=volatile\n' >"$ROOTFS/etc/systemd/journald.conf.d/volatile.conf"
  local unit
  for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
      man-db.timer dpkg-db-backup.timer logrotate.timer getty@tty1.service serial-getty@ttyS0.service \
      systemd-networkd-wait-online.service; do
    ln -sf /dev/null "$ROOTFS/etc/systemd/system/$unit"
  done
  # No password for root on the serial console (debugging by hand; the VM has no network).
  in_chroot passwd -d root >/dev/null
}

build() {
  local dir=$1 tmp=$1.tmp mirror t0=$SECONDS
  mirror=${SANDBOX_RUNC_VM_MIRROR:-$(host_mirror || true)}
  [[ -n $mirror ]] || die "no Debian mirror for $RELEASE in the host's apt sources (set SANDBOX_RUNC_VM_MIRROR)"
  command -v debootstrap >/dev/null || die "debootstrap not found (apt package debootstrap)"
  command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 not found (apt package e2fsprogs)"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  ROOTFS=$tmp/rootfs
  trap 'umount_chroot; rm -rf "$tmp"' EXIT
  local log=$tmp/build.log
  step "debootstrap --variant=minbase $RELEASE (log: $log)"
  debootstrap --variant=minbase --arch="$ARCH" "$RELEASE" "$ROOTFS" "$mirror" >>"$log" 2>&1 ||
    { tail -n 30 "$log" >&2; die "debootstrap failed"; }
  write_guest_sources "$ROOTFS" "$mirror"
  # Nothing starts inside the chroot; units are still enabled as on a real install.
  printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
  chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
  mount_chroot
  local pkgs
  mapfile -t pkgs < <(packages)
  step "apt-get install ${#pkgs[@]} packages in the chroot (after $((SECONDS - t0)) s)"
  in_chroot apt-get -o Acquire::Check-Valid-Until=false update >>"$log" 2>&1 ||
    { tail -n 30 "$log" >&2; die "apt-get update in the chroot failed"; }
  in_chroot apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "${pkgs[@]}" >>"$log" 2>&1 ||
    { tail -n 30 "$log" >&2; die "apt-get install in the chroot failed"; }
  configure_guest
  in_chroot dpkg-query -W -f='${Package} ${Version}\n' >"$tmp/manifest.txt"
  in_chroot apt-get clean >>"$log" 2>&1
  umount_chroot
  rm -f "$ROOTFS/usr/sbin/policy-rc.d"
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/log/*.log
  local kernel initrd
  kernel=$(ls "$ROOTFS"/boot/vmlinuz-* 2>/dev/null | sort -V | tail -n1)
  initrd=$(ls "$ROOTFS"/boot/initrd.img-* 2>/dev/null | sort -V | tail -n1)
  [[ -n $kernel && -n $initrd ]] || die "the chroot has no kernel or initramfs in /boot"
  cp "$kernel" "$tmp/vmlinuz"
  cp "$initrd" "$tmp/initrd.img"
  step "mkfs.ext4 -d rootfs ($DISK_SIZE sparse) (after $((SECONDS - t0)) s)"
  mkfs.ext4 -q -F -L sandbox-vm -d "$ROOTFS" "$tmp/disk.img" "$DISK_SIZE" >>"$log" 2>&1 ||
    { tail -n 30 "$log" >&2; die "mkfs.ext4 -d failed"; }
  rm -rf "$ROOTFS"
  printf 'built %s in %d s; kernel %s; disk %s allocated of %s\n' "$(date -u +%FT%TZ)" $((SECONDS - t0)) \
    "$(basename "$kernel")" "$(du -h "$tmp/disk.img" | cut -f1)" "$DISK_SIZE" | tee -a "$log" >"$tmp/build-info.txt"
  trap - EXIT
  rm -rf "$dir"
  mv "$tmp" "$dir"
  step "$(cat "$dir/build-info.txt")"
}

complete() { [[ -f $1/disk.img && -f $1/vmlinuz && -f $1/initrd.img && -f $1/build-info.txt ]]; }

# copy_image FROM TO: hard links if possible, else a sparse copy; TO appears whole or not at all.
copy_image() {
  local from=$1 to=$2
  rm -rf "$to.tmp"
  mkdir -p "$(dirname "$to")"
  cp -al "$from" "$to.tmp" 2>/dev/null || { rm -rf "$to.tmp"; cp -a --sparse=always "$from" "$to.tmp"; } || return 1
  rm -rf "$to"
  mv "$to.tmp" "$to"
}

# keep_only DIR HASHDIR: removes the images of other hashes under DIR.
keep_only() {
  local old
  for old in "$1"/*/; do
    old=${old%/}
    [[ $old == "$2" || ! -f $old/disk.img ]] || rm -rf "$old"
  done
}

main() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot)"
  local hash dir print_dir=no
  [[ ${1:-} == --print-dir ]] && print_dir=yes
  hash=$(image_hash)
  dir=$VMART/$hash
  mkdir -p "$VMART"
  exec 9>"$VMART/.build.lock"
  flock 9
  if complete "$dir"; then
    step "cached: artifacts/vm/$hash ($(cat "$dir/build-info.txt"))"
  elif [[ $CACHE != none ]] && complete "$CACHE/$hash" && copy_image "$CACHE/$hash" "$dir"; then
    step "taken from $CACHE/$hash ($(cat "$dir/build-info.txt"))"
  else
    step "building artifacts/vm/$hash (no image for this content hash yet)"
    build "$dir"
    # Images of older hashes are of no further use: keep only this one.
    keep_only "$VMART" "$dir"
  fi
  if [[ $CACHE != none ]] && ! complete "$CACHE/$hash"; then
    if copy_image "$dir" "$CACHE/$hash"; then
      keep_only "$CACHE" "$CACHE/$hash"
    else
      printf 'WARNING: vm-image: could not keep a copy in %s\n' "$CACHE" >&2
    fi
  fi
  [[ $print_dir == no ]] || printf '%s\n' "$dir"
}

main "$@"
