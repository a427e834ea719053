#!/usr/bin/env bash
# Runs a command with a Debian tree as its root: the tree becomes the root of a private mount
# namespace (bind-mounted onto itself, then pivot_root), in a pid namespace of its own so that
# nothing it starts outlives it, with /proc, /sys (read-only), /dev/pts, a minimal /dev (a tmpfs
# with null, zero, full, random, urandom, tty, ptmx) and a tmpfs on /run. It shares the host's
# network (apt and cargo download from Debian's archive and crates.io), its resolv.conf, and
# its TLS trust anchors for cargo (at /run/host-ca-certificates.crt: an egress proxy the host
# trusts is trusted there too). Nothing is left mounted when the command ends: the namespaces die with it.
#   scripts/lib/in-root.sh [--read-only] [--bind SRC:DST]... [--ro-bind SRC:DST]... [--env NAME=VALUE]... ROOT CMD...
# --read-only leaves the tree as it is (a shared cached tree): / is read-only, /tmp a tmpfs.
set -euo pipefail

if [[ ${1:-} != --inside ]]; then
  [[ $(id -u) -eq 0 ]] || { echo "in-root.sh: run as root (it makes namespaces and mounts)" >&2; exit 1; }
  exec unshare --mount --pid --fork --kill-child --propagation private -- "$0" --inside "$@"
fi
shift
binds=() ro_binds=() envs=() read_only=0
while [[ $# -gt 0 ]]; do
  case $1 in
  --read-only) read_only=1; shift ;;
  --bind) binds+=("$2"); shift 2 ;;
  --ro-bind) ro_binds+=("$2"); shift 2 ;;
  --env) envs+=("$2"); shift 2 ;;
  *) break ;;
  esac
done
[[ $# -ge 2 ]] || { echo "usage: in-root.sh [--read-only] [--bind SRC:DST]... [--ro-bind SRC:DST]... [--env N=V]... ROOT CMD..." >&2; exit 2; }
root=$(realpath "$1")
shift
[[ -x $root/bin/sh ]] || { echo "in-root.sh: $root is not a root file tree (no /bin/sh)" >&2; exit 1; }

mount --bind "$root" "$root"
bind() { # SRC DST [ro]
  mkdir -p "$root$2"
  mount --bind "$1" "$root$2"
  [[ ${3:-} == ro ]] && mount -o remount,bind,ro "$root$2"
  return 0
}
for b in "${binds[@]}"; do bind "${b%%:*}" "${b#*:}"; done
for b in "${ro_binds[@]}"; do bind "${b%%:*}" "${b#*:}" ro; done
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o mode=0755,nosuid,noexec,size=1m dev "$root/dev"
for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read -r name major minor <<<"$node"
  mknod -m 666 "$root/dev/$name" c "$major" "$minor"
done
mkdir -m 755 "$root/dev/pts"
mkdir -m 1777 "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
for i in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${i%%:*}" "$root/dev/${i#*:}"; done
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
[[ $read_only -eq 1 ]] && mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
# The host's resolver configuration (resolving the host's symlink), on a plain file of the tree.
if [[ -L $root/etc/resolv.conf || ! -e $root/etc/resolv.conf ]]; then
  rm -f "$root/etc/resolv.conf"
  : >"$root/etc/resolv.conf"
fi
mount --bind "$(realpath /etc/resolv.conf)" "$root/etc/resolv.conf"
mount -o remount,bind,ro "$root/etc/resolv.conf"
host_ca=/etc/ssl/certs/ca-certificates.crt
if [[ -f $host_ca ]]; then
  : >"$root/run/host-ca-certificates.crt"
  mount --bind "$host_ca" "$root/run/host-ca-certificates.crt"
  mount -o remount,bind,ro "$root/run/host-ca-certificates.crt"
  envs=(CARGO_HTTP_CAINFO=/run/host-ca-certificates.crt "${envs[@]}")
fi
[[ $read_only -eq 1 ]] && mount -o remount,bind,ro "$root"

cd "$root"
# The old root is stacked on the new one, then detached: nothing of the host stays visible.
pivot_root . .
umount -l .
cd /
exec /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive "${envs[@]}" "$@"
