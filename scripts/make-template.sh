#!/usr/bin/env bash
# Makes a container template (a root file tree) for `ferry create --template DIR`.
#   scripts/make-template.sh busybox DIR   a small busybox-static tree (what the tests use)
#   scripts/make-template.sh debian DIR [PACKAGE...]
#                                          a Debian bookworm minbase tree (debootstrap), with
#                                          PACKAGEs (and what they depend on) installed
#   scripts/make-template.sh debian-systemd DIR
#                                          a system container: Debian bookworm booted by
#                                          systemd, with dbus, cron, an ssh server and
#                                          redis-server as services (docs/runtime.md, "System
#                                          containers")
set -euo pipefail
usage() { echo "usage: $0 busybox DIR | debian DIR [PACKAGE...] | debian-systemd DIR" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
kind=$1 dir=$2
shift 2
[[ $kind == debian || $# -eq 0 ]] || usage

debian_tree() {
  local dir=$1; shift
  command -v debootstrap >/dev/null || { apt-get install -y -q debootstrap >/dev/null; }
  local include=()
  [[ $# -gt 0 ]] && include=("--include=$(IFS=,; echo "$*")")
  debootstrap --variant=minbase "${include[@]}" bookworm "$dir" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  # Services installed into a template are the container's to start, not debootstrap's.
  rm -f "$dir/usr/sbin/policy-rc.d"
}

# What a distribution's container image does to a systemd tree, and what ferry's system
# containers need (docs/runtime.md, "System containers"; docs/checkpoint.md for the services
# running as root).
systemd_container() {
  local dir=$1 sd=$1/etc/systemd/system
  # Each container makes its own identity at its first boot: machine id (ferry writes one),
  # ssh host keys (generated before sshd starts).
  : > "$dir/etc/machine-id"
  rm -f "$dir/var/lib/dbus/machine-id" "$dir"/etc/ssh/ssh_host_*
  mkdir -p "$sd/ssh.service.d"
  cat > "$sd/ssh.service.d/ferry-host-keys.conf" <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
  # Units for hardware and kernel settings a container does not have, and apt's network
  # jobs: masked, so nothing is left failed (systemctl is-system-running says running).
  local unit
  for unit in getty@tty1.service e2scrub_reap.service e2scrub_all.timer e2scrub_all.service \
      fstrim.timer apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
      systemd-pstore.service; do
    rm -f "$sd"/*.wants/"$unit"
    ln -sf /dev/null "$sd/$unit"
  done
  # CRIU runs as root without CAP_SYS_RESOURCE on some hosts (PLATFORM: no CAP_SYS_RESOURCE in
  # the bounding set), and then cannot read the resource limits of a process whose user and
  # group ids are not all root's: long-running services run as root in this template.
  # User-namespace containers lift this (docs/checkpoint.md).
  mkdir -p "$sd/redis-server.service.d" "$dir/etc/dbus-1"
  # Its unit asks for a user namespace of its own, which a container without CAP_SYS_ADMIN
  # cannot make (systemd 252 fails the unit for it rather than going on without).
  cat > "$sd/redis-server.service.d/ferry-container.conf" <<'UNIT'
[Service]
User=root
Group=root
PrivateUsers=no
UNIT
  # Its files become root's (its unit leaves it no capability to read another user's).
  chroot "$dir" chown -R root:root /etc/redis /var/lib/redis /var/log/redis
  cat > "$dir/etc/dbus-1/system-local.conf" <<'CONF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <!-- ferry: run as root, so CRIU can checkpoint it on hosts without CAP_SYS_RESOURCE -->
  <user>root</user>
</busconfig>
CONF
  echo localhost > "$dir/etc/hostname"
  printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$dir/etc/hosts"
  chroot "$dir" apt-get clean
  rm -rf "$dir"/var/lib/apt/lists/*
}

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
  debian_tree "$dir" "$@"
  ;;
debian-systemd)
  debian_tree "$dir" systemd-sysv dbus cron openssh-server redis-server procps iproute2 less
  systemd_container "$dir"
  ;;
*) usage ;;
esac
echo "template ready: $dir"
