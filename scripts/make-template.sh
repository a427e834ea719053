#!/usr/bin/env bash
# Makes a container template (a root file tree) for `ferry create --template DIR`.
#   scripts/make-template.sh busybox DIR   a small busybox-static tree (what the tests use)
#   scripts/make-template.sh debian DIR [PACKAGE...]
#                                          a Debian bookworm minbase tree (debootstrap), with
#                                          PACKAGEs (and what they depend on) installed
set -euo pipefail
usage() { echo "usage: $0 busybox DIR | debian DIR [PACKAGE...]" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
kind=$1 dir=$2
shift 2
[[ $kind == debian || $# -eq 0 ]] || usage

case $kind in
busybox)
  bb=$(command -v busybox || true)
  [[ -n $bb ]] && file -L "$bb" 2>/dev/null | grep -q 'statically linked' || bb=/bin/busybox
  [[ -x $bb ]] || { echo "make-template: busybox-static is missing: run scripts/install-deps.sh" >&2; exit 1; }
  mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,var/log,var/run,home}
  chmod 1777 "$dir/tmp"
  cp "$bb" "$dir/bin/busybox"
  # One link per applet, in the directory busybox itself names for it.
  "$dir/bin/busybox" --list-full | while read -r applet; do
    [[ -e $dir/$applet || -L $dir/$applet ]] || ln -s /bin/busybox "$dir/$applet"
  done
  cat > "$dir/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
  cat > "$dir/etc/group" <<'G'
root:x:0:
nogroup:x:65534:
G
  printf 'root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n' > "$dir/etc/shadow"
  chmod 640 "$dir/etc/shadow"
  echo localhost > "$dir/etc/hostname"
  printf '127.0.0.1 localhost\n::1 localhost\n' > "$dir/etc/hosts"
  : > "$dir/etc/resolv.conf"
  # No /sbin/init on purpose: busybox init would start gettys; ferry's keep-alive init is used.
  rm -f "$dir/sbin/init" "$dir/linuxrc"
  ;;
debian)
  command -v debootstrap >/dev/null || { apt-get install -y -q debootstrap >/dev/null; }
  include=()
  [[ $# -gt 0 ]] && include=("--include=$(IFS=,; echo "$*")")
  debootstrap --variant=minbase "${include[@]}" bookworm "$dir" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  # Services installed into a template are the container's to start, not debootstrap's.
  rm -f "$dir/usr/sbin/policy-rc.d"
  ;;
*) usage ;;
esac
echo "template ready: $dir"
