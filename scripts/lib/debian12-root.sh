#!/usr/bin/env bash
# Debian 12 trees for packaging and the package tests, made once with debootstrap and kept under
# /var/cache/ferry-test (or FERRY_TEST_CACHE); made again only when this script (or the
# bookworm-security.sources beside it) changes: their hash is in the trees' names. Prints the tree's path; use it through a copy or read-only.
#   debian12-root.sh base    minbase, plus what a host has that the tests use: systemd (unit
#                            enablement), man-db, bash-completion
#   debian12-root.sh build   base, plus gcc, libc6-dev, libcrypt-dev and Debian 12's own Rust
#                            (rustc-web and cargo-web from bookworm-security): builds ferry
#                            against Debian 12's glibc (scripts/package.sh keeps its cargo
#                            target directory beside it, as TREE.target)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${FERRY_TEST_CACHE:-/var/cache/ferry-test}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
key=$(cat "$0" "$here/bookworm-security.sources" | sha256sum | cut -c1-12)
base=$cache/debian12-base-$key
build=$cache/debian12-build-$key
[[ $(id -u) -eq 0 ]] || { echo "debian12-root.sh: run as root (debootstrap)" >&2; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/debian12.lock"
flock 9

fail() { # LOG MESSAGE
  echo "debian12-root.sh: $2; the last lines of $1:" >&2
  tail -n 20 "$1" >&2
  exit 1
}

make_base() {
  [[ -d $base ]] && return
  command -v debootstrap >/dev/null || { echo "debian12-root.sh: debootstrap is missing: run scripts/install-deps.sh --test" >&2; exit 1; }
  echo "debian12-root.sh: debootstrap bookworm (minbase) into $base, once" >&2
  rm -rf "$base.tmp"
  debootstrap --variant=minbase --include=systemd,man-db,bash-completion bookworm "$base.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    fail "$cache/debootstrap.log" "debootstrap failed"
  rm -f "$base.tmp"/var/cache/apt/archives/*.deb
  mv "$base.tmp" "$base"
}

make_build() {
  [[ -d $build ]] && return
  make_base
  echo "debian12-root.sh: a build tree with Debian 12's Rust in $build, once" >&2
  rm -rf "$build.tmp"
  cp -a "$base" "$build.tmp"
  cp "$here/bookworm-security.sources" "$build.tmp/etc/apt/sources.list.d/debian-security.sources"
  "$here/in-root.sh" "$build.tmp" sh -ec 'apt-get -q update
    apt-get -y -q install --no-install-recommends gcc libc6-dev libcrypt-dev ca-certificates rustc-web cargo-web
    apt-get clean' >"$cache/build-tree.log" 2>&1 || fail "$cache/build-tree.log" "installing the build tools failed"
  mv "$build.tmp" "$build"
}

case ${1:-} in
base) make_base; tree=$base ;;
build) make_build; tree=$build ;;
*) echo "usage: debian12-root.sh base|build" >&2; exit 2 ;;
esac
touch "$tree"
# Trees made by other versions of this script (and their build directories) go once nothing
# used them for a day.
find "$cache" -maxdepth 1 -name 'debian12-*' ! -name "*-$key" ! -name "*-$key.*" -mtime +0 -exec rm -rf {} +
echo "$tree"
