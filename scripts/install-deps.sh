#!/usr/bin/env bash
# Installs what building and running ferry needs on a Debian 12 (bookworm) host, from Debian's
# own archive: the tools ferry calls, CRIU 4.2+ (scripts/install-criu.sh: bookworm's 3.17 cannot
# dump on kernels >= 6.13), and a Rust toolchain new enough for Cargo.lock when there is none.
#   scripts/install-deps.sh          build and run ferry (and scripts/demo.sh)
#   scripts/install-deps.sh --test   also what scripts/test.sh needs: cargo-nextest,
#                                    debootstrap, lintian and dpkg-dev for the package tests,
#                                    prometheus for promtool (ferry metrics is checked with it),
#                                    python3-venv and python3-pip (tests/ansible.rs installs
#                                    ansible-core from PyPI into a venv of its own)
# Idempotent: every step checks first and says what it changed.
set -euo pipefail
cd "$(dirname "$0")/.."

tests=0
case ${1:-} in
--test) tests=1 ;;
"") ;;
*) echo "usage: scripts/install-deps.sh [--test]" >&2; exit 2 ;;
esac
[[ $(id -u) -eq 0 ]] || { echo "install-deps: run as root (it installs Debian packages)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -y -q -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false
     -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
changed=()
updated=0
apt_update() { if [[ $updated -eq 0 ]]; then "${APT[@]}" update >/dev/null; updated=1; fi; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Packages from the distribution itself. gcc and libc6-dev come before CRIU: its step upgrades
# libc6 from trixie, and apt then upgrades libc6-dev along with it.
PKGS=(busybox-static iproute2 iputils-arping openssh-client openssh-server e2fsprogs xfsprogs
      btrfs-progs python3 rsync procps kmod util-linux zstd tar gzip gcc libc6-dev libcrypt-dev
      ca-certificates)
[[ $tests -eq 1 ]] && PKGS+=(debootstrap lintian dpkg-dev prometheus python3-venv python3-pip)
missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  apt_update
  "${APT[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
  changed+=("installed ${missing[*]}")
fi

# CRIU 4.2+ (and iptables with it); prints one line either way.
criu_said=$(sh scripts/install-criu.sh)
if [[ $criu_said != *"nothing to do"* ]]; then
  while IFS= read -r line; do changed+=("${line#ferry-install-criu: }"); done <<<"$criu_said"
fi
updated=0 # install-criu.sh may have added suites
if ! command -v iptables >/dev/null; then
  apt_update
  "${APT[@]}" install -t trixie iptables >/dev/null || "${APT[@]}" install iptables >/dev/null
  changed+=("installed iptables")
fi

# Rust: the workspace's rust-version is the oldest toolchain that builds Cargo.lock.
rust_min=$(awk -F'"' '/^rust-version/ {print $2; exit}' Cargo.toml)
rust_version() { rustc --version 2>/dev/null | awk '{print $2}'; }
rust_package() { dpkg-query -W -f='${Package} ${Version}\n' rustc-web rustc 2>/dev/null | awk 'NF == 2 {print; exit}' || true; }
rust_ok() { command -v cargo >/dev/null && [[ -n $(rust_version) ]] && dpkg --compare-versions "$(rust_version)" ge "$rust_min"; }
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
new_enough() { local c; c=$(candidate "$1"); [[ -n $c && $c != "(none)" ]] && dpkg --compare-versions "$c" ge "$rust_min"; }
rust_from_debian() {
  # Debian 12 builds its browsers with rustc-web/cargo-web, kept current in bookworm-security;
  # its rustc/cargo (1.63) and trixie's (1.85) are too old, sid's are new enough.
  apt_update
  if new_enough rustc-web && new_enough cargo-web; then
    "${APT[@]}" install --no-install-recommends rustc-web cargo-web >/dev/null
  elif new_enough rustc && new_enough cargo; then
    "${APT[@]}" install --no-install-recommends rustc cargo >/dev/null
  elif grep -q 'n=sid,' <<<"$(apt-cache policy)"; then
    "${APT[@]}" install --no-install-recommends -t sid rustc cargo >/dev/null
  else
    return 1
  fi
}
add_bookworm_security() {
  local f=/etc/apt/sources.list.d/debian-security.sources
  cp scripts/lib/bookworm-security.sources "$f"
  changed+=("added Debian 12's security suite to apt's sources ($f)")
  updated=0
}
if ! rust_ok; then
  if [[ -x $HOME/.cargo/bin/cargo ]] && ! command -v cargo >/dev/null; then
    echo "install-deps: a Rust toolchain is in $HOME/.cargo/bin but not on PATH: add it (export PATH=\$HOME/.cargo/bin:\$PATH)" >&2
    exit 1
  fi
  if command -v rustup >/dev/null; then
    echo "install-deps: rustc $(rust_version) is older than $rust_min, the oldest that builds ferry: run 'rustup update stable'" >&2
    exit 1
  fi
  # A fresh Debian 12 (debootstrap) lacks the security suite, where Debian keeps its Rust
  # current. (Not /etc/os-release: CRIU's step moves base-files to trixie's, which says 13.)
  apt_update
  suites=$(apt-cache policy)
  if grep -q 'n=bookworm,' <<<"$suites" && ! grep -q 'n=bookworm-security,' <<<"$suites"; then
    add_bookworm_security
  fi
  rust_from_debian || true
  if ! rust_ok; then
    echo "install-deps: ferry needs Rust $rust_min or newer (found: $(rust_version || true)), and Debian's archive offered none here." >&2
    echo "  Debian 12: add the security suite (Suites: bookworm-security, URIs: http://deb.debian.org/debian-security)" >&2
    echo "             to apt's sources, then: apt-get install rustc-web cargo-web" >&2
    echo "  elsewhere: install rustup (https://rustup.rs), then: rustup toolchain install stable" >&2
    exit 1
  fi
  changed+=("installed Rust $(rust_version) from Debian's archive ($(rust_package))")
fi

# Rust test runner (the machine image normally has it): only for the tests.
if [[ $tests -eq 1 ]] && ! command -v cargo-nextest >/dev/null && ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest >/dev/null
  changed+=("installed cargo-nextest")
fi

if [[ ${#changed[@]} -eq 0 ]]; then
  echo "install-deps: nothing to do (CRIU $(criu --version | awk '/^Version:/ {print $2}'), Rust $(rust_version), all packages present)"
else
  printf 'install-deps: %s\n' "${changed[@]}"
fi
