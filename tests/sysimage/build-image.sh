#!/usr/bin/env bash
# tests/sysimage/build-image.sh - the Debian 12 system-container image (docker.io, containerd, runc,
# systemd-sysv) that the SystemContainers tests run with --runtime=sandbox-runc.
#
#   tests/sysimage/build-image.sh [--tag-only | --import-from DIR]
#
# Builds, once per content hash, artifacts/sysimage/<hash>/rootfs.tar and loads it into the docker
# daemon the CLI talks to (DOCKER_HOST honoured) as sandbox-runc-system:<hash> and
# sandbox-runc-system:latest (CMD /sbin/init, STOPSIGNAL SIGRTMIN+3, on the imported
# sandbox-runc-system-base:<hash>). Nothing is built or loaded when
# the image of this hash is already there. The hash covers every input that shapes the image: this
# script, packages.txt, the files under files/, the Debian release and the architecture.
# --tag-only prints the image tag for this hash and exits (for the tests' fixture).
# --import-from DIR loads the image of this hash from DIR/rootfs.tar (a read-only copy of a build, as the
# cgroup v2 VM gets the host's through a share) and builds nothing; DIR may be read-only.
#
# A machine-wide copy (SANDBOX_RUNC_SYSIMAGE_CACHE, default /var/cache/sandbox-runc/sysimage/<hash>;
# "none" turns it off) lets a fresh clone on the same machine (CI) take the tarball instead of
# building it again. Only the current hash is kept, there and under artifacts/.
#
# How: debootstrap --variant=minbase, then apt-get install --no-install-recommends of packages.txt in a
# chroot (services kept from starting; /usr/share/doc, man and locales excluded by a dpkg filter), the
# files under files/, apt lists and caches removed. Only Debian's repositories are used: the mirror is
# the one the host's apt uses (SANDBOX_RUNC_SYSIMAGE_MIRROR overrides it). Needs root and debootstrap.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ART=${SANDBOX_RUNC_SYSIMAGE_ARTIFACTS:-$ROOT/artifacts/sysimage}
CACHE=${SANDBOX_RUNC_SYSIMAGE_CACHE:-/var/cache/sandbox-runc/sysimage}
RELEASE=bookworm
ARCH=amd64
REPO=sandbox-runc-system

step() { printf '==> sysimage: %s\n' "$*"; }
die() { printf 'ERROR: sysimage: %s\n' "$*" >&2; exit 1; }

image_hash() {
  {
    printf 'release=%s arch=%s\n' "$RELEASE" "$ARCH"
    local f
    for f in "$HERE/build-image.sh" "$HERE/packages.txt" $(find "$HERE/files" -type f | LC_ALL=C sort); do
      printf '%s %s %s\n' "${f#"$HERE"/}" "$(stat -c %a "$f")" "$(sha256sum <"$f" | cut -d' ' -f1)"
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

in_chroot() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }

MOUNTED=()
mount_chroot() {
  mount -t proc proc "$ROOTFS/proc" && MOUNTED+=("$ROOTFS/proc")
  mount --bind /dev "$ROOTFS/dev" && MOUNTED+=("$ROOTFS/dev")
}
umount_chroot() {
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
  MOUNTED=()
}

build() {
  local dir=$1 tmp=$1.tmp mirror t0=$SECONDS log
  mirror=${SANDBOX_RUNC_SYSIMAGE_MIRROR:-$(host_mirror || true)}
  [[ -n $mirror ]] || die "no Debian mirror for $RELEASE in the host's apt sources (set SANDBOX_RUNC_SYSIMAGE_MIRROR)"
  command -v debootstrap >/dev/null || die "debootstrap not found (apt package debootstrap)"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  ROOTFS=$tmp/rootfs
  trap 'umount_chroot; rm -rf "$tmp"' EXIT
  log=$tmp/build.log
  step "debootstrap --variant=minbase $RELEASE (log: $log)"
  debootstrap --variant=minbase --arch="$ARCH" "$RELEASE" "$ROOTFS" "$mirror" >>"$log" 2>&1 ||
    { tail -n 30 "$log" >&2; die "debootstrap failed"; }
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$RELEASE" "$mirror" "$RELEASE" \
    >"$ROOTFS/etc/apt/sources.list"
  # No docs, man pages or locales; nothing starts inside the chroot.
  printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-exclude=/usr/share/man/*' \
    'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/locale/*' 'path-include=/usr/share/locale/locale.alias' \
    'path-exclude=/usr/share/lintian/*' >"$ROOTFS/etc/dpkg/dpkg.cfg.d/01-sandbox-nodoc"
  rm -rf "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/*
  printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
  chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
  mount_chroot
  local pkgs
  mapfile -t pkgs < <(packages)
  step "apt-get install ${pkgs[*]} in the chroot (after $((SECONDS - t0)) s)"
  in_chroot apt-get -o Acquire::Check-Valid-Until=false update >>"$log" 2>&1 ||
    { tail -n 30 "$log" >&2; die "apt-get update in the chroot failed"; }
  in_chroot apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "${pkgs[@]}" >>"$log" 2>&1 ||
    { tail -n 30 "$log" >&2; die "apt-get install in the chroot failed"; }
  in_chroot dpkg-query -W -f='${Package} ${Version}\n' >"$tmp/manifest.txt"
  in_chroot apt-get clean >>"$log" 2>&1
  umount_chroot
  rm -f "$ROOTFS/usr/sbin/policy-rc.d"
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/debconf/*-old \
    "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/* "$ROOTFS"/etc/machine-id
  : >"$ROOTFS/etc/machine-id"
  # The image's own configuration (files/ mirrors the root: modes kept, owner root).
  (cd "$HERE/files" && find . -type f) | while read -r f; do
    install -D -m "$(stat -c %a "$HERE/files/$f")" "$HERE/files/$f" "$ROOTFS/${f#./}"
  done
  step "tar (after $((SECONDS - t0)) s)"
  tar --numeric-owner --xattrs -C "$ROOTFS" -cf "$tmp/rootfs.tar" . >>"$log" 2>&1 ||
    { tail -n 30 "$log" >&2; die "tar of the rootfs failed"; }
  rm -rf "$ROOTFS"
  printf 'built %s in %d s; rootfs.tar %s\n' "$(date -u +%FT%TZ)" $((SECONDS - t0)) \
    "$(du -h "$tmp/rootfs.tar" | cut -f1)" | tee -a "$log" >"$tmp/build-info.txt"
  trap - EXIT
  rm -rf "$dir"
  mv "$tmp" "$dir"
  step "$(cat "$dir/build-info.txt")"
}

complete() { [[ -f $1/rootfs.tar && -f $1/build-info.txt ]]; }

# copy_dir FROM TO: hard links if possible, else a copy; TO appears whole or not at all.
copy_dir() {
  local from=$1 to=$2
  rm -rf "$to.tmp"
  mkdir -p "$(dirname "$to")"
  cp -al "$from" "$to.tmp" 2>/dev/null || { rm -rf "$to.tmp"; cp -a "$from" "$to.tmp"; } || return 1
  rm -rf "$to"
  mv "$to.tmp" "$to"
}

keep_only() {
  local old
  for old in "$1"/*/; do
    old=${old%/}
    [[ $old == "$2" || ! -f $old/rootfs.tar ]] || rm -rf "$old"
  done
}

# docker import cannot set a stop signal: the tarball becomes a base image, a two-line build adds the rest.
load_image() {
  local dir=$1 tag=$2 base
  if docker image inspect "$tag" >/dev/null 2>&1; then
    step "docker image $tag already loaded"
  else
    base=$REPO-base:${tag##*:}
    step "docker import $base; docker build $tag"
    docker image inspect "$base" >/dev/null 2>&1 || docker import "$dir/rootfs.tar" "$base" >/dev/null
    local err
    err=$(printf 'FROM %s\nCMD ["/sbin/init"]\nSTOPSIGNAL SIGRTMIN+3\n' "$base" |
      DOCKER_BUILDKIT=0 docker build -q -t "$tag" - 2>&1 >/dev/null) || die "docker build of $tag failed: $err"
  fi
  docker tag "$tag" "$REPO:latest"
}

main() {
  local hash dir
  hash=$(image_hash)
  if [[ ${1:-} == --tag-only ]]; then printf '%s:%s\n' "$REPO" "$hash"; return 0; fi
  if [[ ${1:-} == --import-from ]]; then
    complete "${2:-}" || die "--import-from ${2:-}: no rootfs.tar and build-info.txt there"
    load_image "$2" "$REPO:$hash"
    return 0
  fi
  [[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot)"
  dir=$ART/$hash
  mkdir -p "$ART"
  exec 9>"$ART/.build.lock"
  flock 9
  if complete "$dir"; then
    step "cached: artifacts/sysimage/$hash ($(cat "$dir/build-info.txt"))"
  elif [[ $CACHE != none ]] && complete "$CACHE/$hash" && copy_dir "$CACHE/$hash" "$dir"; then
    step "taken from $CACHE/$hash ($(cat "$dir/build-info.txt"))"
  else
    step "building artifacts/sysimage/$hash (no image for this content hash yet)"
    build "$dir"
    keep_only "$ART" "$dir"
  fi
  if [[ $CACHE != none ]] && ! complete "$CACHE/$hash"; then
    if copy_dir "$dir" "$CACHE/$hash"; then
      keep_only "$CACHE" "$CACHE/$hash"
    else
      printf 'WARNING: sysimage: could not keep a copy in %s\n' "$CACHE" >&2
    fi
  fi
  load_image "$dir" "$REPO:$hash"
}

main "$@"
