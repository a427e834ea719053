#!/usr/bin/env bash
# Install ferry's host files: the systemd units (ferry-boot.service: start containers at
# boot, stop or suspend them at shutdown; the snapshot timer; the metrics timer for
# node_exporter's textfile collector), an example host config (only when none exists), the
# sample configs for --applyconfig, and root's user ID range for unprivileged containers in
# /etc/subuid and /etc/subgid (when root has none).
#
#   scripts/install-host.sh [--root DIR] [--ferry PATH] [--no-enable]
#
# --root DIR installs below DIR (a package build, a test) and enables nothing; --ferry is the
# installed ferry binary the units run (default: /usr/local/bin/ferry). Run again to update:
# the units and samples are replaced, an existing /etc/ferry/ferry.toml is kept.
set -euo pipefail
cd "$(dirname "$0")"
root="" ferry=/usr/local/bin/ferry enable=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --root) root=$2; shift 2 ;;
    --ferry) ferry=$2; shift 2 ;;
    --no-enable) enable=0; shift ;;
    *) echo "install-host.sh: unknown option $1 (see the comment at its top)" >&2; exit 2 ;;
  esac
done
[[ $ferry == /* ]] || { echo "install-host.sh: --ferry needs an absolute path" >&2; exit 2; }

units=$root/etc/systemd/system
conf=$root/etc/ferry
install -d -m 755 "$units" "$conf" "$conf/samples"
for u in systemd/ferry-boot.service systemd/ferry-snapshots.service systemd/ferry-snapshots.timer \
         systemd/ferry-metrics.service systemd/ferry-metrics.timer; do
  sed "s#/usr/local/bin/ferry#$ferry#g" "$u" > "$units/$(basename "$u").tmp"
  chmod 644 "$units/$(basename "$u").tmp"
  mv "$units/$(basename "$u").tmp" "$units/$(basename "$u")"
done
[[ -e $conf/ferry.toml ]] || install -m 644 host/ferry.toml "$conf/ferry.toml"
install -m 644 host/samples/*.toml "$conf/samples/"

# Unprivileged containers take their user ID ranges from root's entry in /etc/subuid and
# /etc/subgid (the host setting userns_pool = "auto"): reserve ferry's default pool there when
# root has none, unless another entry already uses part of it (then say so).
pool_first=1000000 pool_count=1000000000
for f in "$root/etc/subuid" "$root/etc/subgid"; do
  [[ -e $f ]] || { install -d -m 755 "$(dirname "$f")"; : > "$f"; chmod 644 "$f"; }
  if grep -qE '^(root|0):' "$f"; then
    continue
  fi
  if awk -F: -v a="$pool_first" -v n="$pool_count" 'NF >= 3 && $2 < a + n && a < $2 + $3 { found = 1 } END { exit !found }' "$f"; then
    echo "install-host.sh: $f gives part of $pool_first:$pool_count to another user; set userns_pool in $conf/ferry.toml to a free range" >&2
    continue
  fi
  echo "root:$pool_first:$pool_count" >> "$f"
  echo "reserved $pool_first:$pool_count for root (ferry's unprivileged containers) in $f"
done

if [[ -z $root && $enable -eq 1 && -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable ferry-boot.service ferry-snapshots.timer ferry-metrics.timer
  echo "ferry-boot.service, ferry-snapshots.timer and ferry-metrics.timer enabled"
else
  echo "installed below ${root:-/}; enable with: systemctl enable ferry-boot.service ferry-snapshots.timer ferry-metrics.timer"
fi
