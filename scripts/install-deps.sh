#!/usr/bin/env bash
# Installs what ferry and its tests need on a Debian 12 (bookworm) host. Idempotent: every step
# checks first and says what it changed. CRIU comes from Debian testing/unstable because
# bookworm's 3.17 cannot dump on kernels >= 6.13 (see docs/ARCHITECTURE.md, "Host requirements").
set -euo pipefail

[[ $(id -u) -eq 0 ]] || { echo "install-deps: run as root (it installs Debian packages)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -y -q -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false
     -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
changed=()
updated=0
apt_update() { if [[ $updated -eq 0 ]]; then "${APT[@]}" update >/dev/null; updated=1; fi; }

# Packages from the distribution itself.
PKGS=(busybox-static iproute2 iputils-arping openssh-client openssh-server e2fsprogs xfsprogs
      btrfs-progs python3 rsync procps kmod util-linux zstd tar gzip gcc libc6-dev libcrypt-dev debootstrap)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  apt_update
  "${APT[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
  changed+=("installed ${missing[*]}")
fi

criu_ok() {
  command -v criu >/dev/null || return 1
  local v; v=$(criu --version 2>/dev/null | awk '/^Version:/ {print $2}')
  [[ -n $v ]] || return 1
  local maj=${v%%.*} rest=${v#*.}; local min=${rest%%.*}
  (( maj > 4 || (maj == 4 && min >= 2) )) || return 1
  criu check >/dev/null 2>&1
}

if ! criu_ok; then
  src=/etc/apt/sources.list.d/ferry-newer.sources
  if [[ ! -f $src ]]; then
    uri=$(awk '/^URIs:/ && /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [[ -n $uri ]] || uri=http://deb.debian.org/debian
    cat > "$src" <<SRC
Types: deb
URIs: $uri
Suites: trixie sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    cat > /etc/apt/preferences.d/ferry-newer <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release n=sid
Pin-Priority: 50
PIN
    changed+=("added Debian trixie (pin 100) and sid (pin 50) to apt sources for CRIU")
    updated=0
  fi
  apt_update
  # iptables in the same step: CRIU's dependencies upgrade libxtables12.
  "${APT[@]}" install -t trixie criu iptables >/dev/null
  "${APT[@]}" install -t sid criu >/dev/null
  changed+=("installed CRIU $(criu --version | awk '/^Version:/ {print $2}') from Debian sid")
fi
if ! command -v iptables >/dev/null; then
  apt_update
  "${APT[@]}" install -t trixie iptables >/dev/null || "${APT[@]}" install iptables >/dev/null
  changed+=("installed iptables")
fi
criu_ok || { echo "install-deps: CRIU 4.2+ is installed but 'criu check' fails:" >&2; criu check >&2 || true; exit 1; }

# Rust test runner (the machine image normally has it).
if ! command -v cargo-nextest >/dev/null && ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest >/dev/null
  changed+=("installed cargo-nextest")
fi

if [[ ${#changed[@]} -eq 0 ]]; then
  echo "install-deps: nothing to do (CRIU $(criu --version | awk '/^Version:/ {print $2}'), all packages present)"
else
  printf 'install-deps: %s\n' "${changed[@]}"
fi
