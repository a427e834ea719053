#!/bin/sh
# Installs CRIU 4.2 or newer on Debian 12 (bookworm) or 13 (trixie), whose own CRIU is too old
# for ferry (3.17 fails on kernels >= 6.13; 4.1 cannot dump TCP sockets there). Shipped in the
# ferry package as ferry-install-criu; scripts/install-deps.sh runs it from the source tree.
#
# It adds Debian's trixie and sid suites to apt's sources, pinned low (100 and 50) so that
# nothing else upgrades from them by itself, then installs criu and iptables from trixie (in
# one step: criu's dependencies upgrade libxtables12, after which bookworm's iptables no longer
# installs) and criu from sid. This upgrades libc6 and a few libraries to trixie's versions.
# Idempotent: it does nothing when `criu --version` says 4.2+ and `criu check` passes.
#   ferry-install-criu           install (as root)
#   ferry-install-criu --check   only say whether the installed CRIU is good enough (exit 1 if not)
set -eu

SOURCES=/etc/apt/sources.list.d/ferry-newer.sources
PIN=/etc/apt/preferences.d/ferry-newer

criu_version() { criu --version 2>/dev/null | awk '/^Version:/ {print $2}'; }

version_ok() { # CRIU is installed and 4.2 or newer
  v=$(criu_version)
  [ -n "$v" ] || return 1
  maj=${v%%.*} rest=${v#*.}
  min=${rest%%.*}
  [ "$maj" -gt 4 ] || { [ "$maj" -eq 4 ] && [ "$min" -ge 2 ]; }
}

criu_ok() { version_ok && criu check >/dev/null 2>&1; }

if [ "${1:-}" = --check ]; then
  if criu_ok; then
    echo "ferry-install-criu: CRIU $(criu_version) is installed and 'criu check' passes"
    exit 0
  elif version_ok; then
    echo "ferry-install-criu: CRIU $(criu_version) is installed but 'criu check' fails (run 'criu check' as root to see why)" >&2
  else
    echo "ferry-install-criu: CRIU 4.2+ is not installed (found: ${v:-none}); run ferry-install-criu as root" >&2
  fi
  exit 1
elif [ $# -gt 0 ]; then
  echo "usage: ferry-install-criu [--check]" >&2
  exit 2
fi

if criu_ok; then
  echo "ferry-install-criu: nothing to do (CRIU $(criu_version), 'criu check' passes)"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "ferry-install-criu: run as root (it changes apt's sources and installs packages)" >&2; exit 1; }
. /etc/os-release
case ${VERSION_CODENAME:-} in
bookworm | trixie) ;;
*)
  echo "ferry-install-criu: this is ${PRETTY_NAME:-an unknown system}; it knows Debian 12 and 13 only." >&2
  echo "Install CRIU 4.2 or newer from your distribution or from https://criu.org, and iptables." >&2
  exit 1
  ;;
esac

export DEBIAN_FRONTEND=noninteractive
# sid's Release file may be past its Valid-Until on a mirror: accept it.
APT="apt-get -y -q -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"

if [ ! -f "$SOURCES" ]; then
  # The mirror this host already uses, else Debian's own.
  uri=$(awk '/^URIs:/ && /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || uri=http://deb.debian.org/debian
  cat >"$SOURCES" <<SRC
Types: deb
URIs: $uri
Suites: trixie sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat >"$PIN" <<'PINS'
Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release n=sid
Pin-Priority: 50
PINS
  echo "ferry-install-criu: added Debian trixie (pin 100) and sid (pin 50) to apt's sources ($SOURCES, $PIN)"
fi
$APT update >/dev/null
$APT install -t trixie criu iptables >/dev/null
$APT install -t sid criu >/dev/null
if ! criu_ok; then
  echo "ferry-install-criu: CRIU $(criu_version) is installed but 'criu check' fails:" >&2
  criu check >&2 || true
  exit 1
fi
echo "ferry-install-criu: installed CRIU $(criu_version) from Debian sid"
