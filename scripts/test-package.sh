#!/usr/bin/env bash
# The package tests, a step of scripts/test.sh of their own (root; they download from Debian's
# archive and crates.io):
#   1. scripts/package.sh builds the .deb, and lintian finds no error in it;
#   2. in a fresh Debian 12 root (a copy of the cached debootstrap tree, made the root of a
#      private mount namespace: scripts/lib/in-root.sh), apt installs ferry's dependencies from
#      Debian 12 and `apt-get install ./ferry_*.deb` installs it; there ferry --version names
#      this tree's version and commit and the format and protocol versions, ferry check runs and
#      says how to get CRIU 4.2+, the man pages render, bash completes ferry's commands and
#      options, the units are in place and enabled, the binary has no fault switch
#      (scripts/check-fault-switch.sh); `apt-get remove` leaves nothing but the
#      conffiles and the units' enablement, `apt-get purge` leaves nothing;
#   3. in another fresh copy, which has no Rust: scripts/install-deps.sh installs what building
#      ferry needs (Rust from Debian's archive) and runs again with nothing to do, and
#      `cargo build --locked -p ferry` builds a ferry that runs there.
# Each step prints when it started. FERRY_TEST_SKIP_SOURCE_BUILD=1 leaves step 3 out (it says so).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "test-package.sh: run as root" >&2; exit 1; }

fail() { echo "test-package: FAILED: $*" >&2; exit 1; }
t0=$SECONDS
step() { echo "-- $* (at $((SECONDS - t0)) s)"; }
work=$(mktemp -d /var/tmp/ferry-pkgtest.XXXXXX)
trap 'rm -rf "$work"' EXIT
cache=${FERRY_TEST_CACHE:-/var/cache/ferry-test}
mkdir -p "$cache/apt-archives/partial" "$cache/cargo/registry"
# One package test at a time: the roots share apt's archive cache, and apt locks it.
exec 8>"$cache/package-test.lock"
flock -n 8 || { echo "test-package: waiting for another package test to finish ($cache/package-test.lock)"; flock 8; }
# The roots download each package once: apt's archive cache and cargo's registry are shared.
in_root() { scripts/lib/in-root.sh --env DEBCONF_NOWARNINGS=yes --bind "$cache/apt-archives:/var/cache/apt/archives" "$@"; }

step "package"
deb=$(scripts/package.sh | tail -n 1)
[[ -f $deb ]] || fail "scripts/package.sh made no .deb"
version=$(dpkg-deb -f "$deb" Version)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
echo "$deb: $(du -k "$deb" | cut -f1) KiB, Depends: $(dpkg-deb -f "$deb" Depends)"

step "lintian"
command -v lintian >/dev/null || fail "lintian is not installed (scripts/install-deps.sh --test installs it)"
# lintian exits 1 for tags it reports (errors are checked below), above that when it failed.
lint_rc=0
lint=$(lintian --tag-display-limit 0 "$deb" 2>&1) || lint_rc=$?
[[ $lint_rc -le 1 ]] || fail "lintian failed (exit $lint_rc): $lint"
lint=$(grep -v "^running with root privileges" <<<"$lint" || true)
[[ -n $lint ]] && echo "$lint"
! grep -q '^E: ' <<<"$lint" || fail "lintian reports errors"

step "install into a fresh Debian 12 root"
base=$(scripts/lib/debian12-root.sh base)
root=$work/root
cp -a "$base" "$root"
cp "$deb" "$root/tmp/ferry.deb"
# What install, remove and purge may change besides the package's files: package managers' own
# state, caches, logs, the kernel filesystems.
snapshot() {
  (cd "$root" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run -o -path ./tmp \
    -o -path ./var/cache -o -path ./var/lib/apt -o -path ./var/lib/dpkg -o -path ./var/log \) -prune \
    -o -printf '%y %m %p %l\n' | sort)
}
deps="$(dpkg-deb -f "$deb" Depends), $(dpkg-deb -f "$deb" Recommends)"
in_root "$root" sh -ec "apt-get -q update >/dev/null; apt-get -y -q satisfy '$deps' >/dev/null"
snapshot >"$work/before"
in_root "$root" sh -ec 'apt-get -y -q install /tmp/ferry.deb' >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "apt-get install ./ferry.deb"; }
grep -q '^0 upgraded, 1 newly installed' "$work/install.log" || { cat "$work/install.log"; fail "installing ferry installed more than ferry, although its dependencies were there"; }
# The packaged ferry is a release build: the tests' fault switch is not in it.
scripts/check-fault-switch.sh absent "$root/usr/bin/ferry" || fail "the packaged ferry has the fault switch of the tests"

cat >"$root/tmp/checks.sh" <<'CHECKS'
set -u
version=$1 commit=$2
fail() { echo "FAILED in the Debian 12 root: $*" >&2; exit 1; }
[ "$(command -v ferry)" = /usr/bin/ferry ] || fail "ferry is not /usr/bin/ferry"
v=$(ferry --version) || fail "ferry --version"
[ "$(echo "$v" | head -n 1)" = "ferry $version (commit $commit)" ] || fail "ferry --version says: $v"
echo "$v" | grep -q '^image format: writes [0-9]*\.[0-9]*, reads ' || fail "no image format versions in: $v"
echo "$v" | grep -q '^migration protocol: speaks [0-9]*\.[0-9]*' || fail "no protocol version in: $v"
c=$(ferry check 2>&1) || fail "ferry check: $c"
echo "$c" | grep -q '^CRIU version' || fail "ferry check has no CRIU line: $c"
echo "$c" | grep -q 'run ferry-install-criu as root' || fail "ferry check does not say how to get CRIU 4.2+: $c"
ferry-install-criu --check >/dev/null 2>&1 && fail "ferry-install-criu --check accepts Debian 12's CRIU $(criu --version)"
for page in ferry ferry-migrate ferry-snapshot-create ferry-install-criu; do
  out=$(LANG=C MANWIDTH=100 man -P cat "$page" 2>&1) || fail "man $page: $out"
  echo "$out" | grep -q '^NAME' || fail "man $page has no NAME section: $out"
done
LANG=C man -P cat ferry | grep -q 'ferry-migrate(8)' || fail "ferry(8) does not list ferry-migrate(8)"
LANG=C man -P cat ferry-migrate | grep -q -- '--remote-ferry' || fail "ferry-migrate(8) lacks --remote-ferry"
complete_ferry() { # the words of a command line; prints bash's completions of its last word
  bash -c '. /usr/share/bash-completion/bash_completion
    _completion_loader ferry
    func=$(complete -p ferry | sed -n "s/.*-F \([^ ]*\).*/\1/p")
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    "$func" ferry "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
    printf "%s\n" "${COMPREPLY[@]}"' bash "$@"
}
complete_ferry ferry mig | grep -qx 'migrate' || fail "bash does not complete 'ferry mig' to migrate: $(complete_ferry ferry mig)"
complete_ferry ferry migrate --remote | grep -qx -- '--remote-ferry' || fail "bash does not complete 'ferry migrate --remote'"
complete_ferry ferry "" | grep -q 'migrate-receive' && fail "bash offers the hidden migrate-receive"
for unit in /lib/systemd/system/ferry-*; do
  grep -Eq '^ExecStart=[-@:+!]*/usr/bin/ferry( |$)' "$unit" || grep -q '^\[Timer\]' "$unit" || fail "$unit does not run /usr/bin/ferry"
  grep -q '/usr/local/' "$unit" && fail "$unit still names /usr/local"
  grep -q '^\[Install\]' "$unit" || continue
  [ "$(systemctl is-enabled "$(basename "$unit")" 2>&1)" = enabled ] || fail "$unit is not enabled: $(systemctl is-enabled "$(basename "$unit")" 2>&1)"
done
if [ -f /var/lib/dpkg/info/ferry.conffiles ]; then
  while read -r f; do [ -f "$f" ] || fail "conffile $f is missing"; done </var/lib/dpkg/info/ferry.conffiles
fi
for f in README.Debian copyright changelog.gz; do [ -f "/usr/share/doc/ferry/$f" ] || fail "no /usr/share/doc/ferry/$f"; done
grep -q 'ferry-install-criu' /usr/share/doc/ferry/README.Debian || fail "README.Debian does not name ferry-install-criu"
echo "ferry works in the Debian 12 root: $(echo "$v" | head -n 1)"
CHECKS
in_root "$root" sh /tmp/checks.sh "$version" "$commit"
conffiles=$(in_root "$root" cat /var/lib/dpkg/info/ferry.conffiles 2>/dev/null || true)
units=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed -n 's#^\./lib/systemd/system/##p')

step "remove and purge"
in_root "$root" sh -ec 'rm /tmp/ferry.deb /tmp/checks.sh; apt-get -y -q remove ferry >/dev/null'
snapshot >"$work/removed"
# Debian keeps a removed package's configuration: its conffiles (and their directory), and
# whether its units were enabled (the symlinks and deb-systemd-helper's record of them).
kept='^$'
for f in $conffiles; do
  kept+="|^f [0-7]+ \\.$f \$"
  d=$(dirname "$f")
  while [[ $d != /etc ]]; do kept+="|^d [0-7]+ \\.$d \$"; d=$(dirname "$d"); done
done
for u in $units; do kept+="|^l [0-7]+ \\./etc/systemd/system/[^/]+\\.wants/$u |^[fd] [0-7]+ \\./var/lib/systemd/deb-systemd-helper-enabled/.*$u"; done
kept+='|^d [0-7]+ \./etc/systemd/system/[^/]+\.wants |^d [0-7]+ \./var/lib/systemd/deb-systemd-helper-enabled'
extra=$(comm -13 "$work/before" "$work/removed" | grep -Ev "$kept" || true)
[[ -z $extra ]] || fail "apt-get remove ferry left behind more than its configuration:
$extra"
comm -23 "$work/before" "$work/removed" | grep -q . && fail "apt-get remove ferry removed what was there before it: $(comm -23 "$work/before" "$work/removed")"
in_root "$root" sh -ec 'apt-get -y -q purge ferry >/dev/null'
snapshot >"$work/purged"
diff -u "$work/before" "$work/purged" >"$work/purge.diff" || { cat "$work/purge.diff"; fail "apt-get purge ferry did not leave the root as it was before the installation"; }
echo "remove kept $(comm -13 "$work/before" "$work/removed" | wc -l) entries of configuration; purge left the root as it was"
rm -rf "$root"

if [[ ${FERRY_TEST_SKIP_SOURCE_BUILD:-} == 1 ]]; then
  echo "-- skipped: install-deps.sh and a build in a fresh Debian 12 root (FERRY_TEST_SKIP_SOURCE_BUILD=1)"
  exit 0
fi
step "install-deps.sh and a build from source in a fresh Debian 12 root without Rust"
cp -a "$base" "$root"
mkdir -p "$root/src/ferry"
# The tree as git sees it (committed or not, ignored files left out), without .git: a tarball.
git ls-files -z --cached --others --exclude-standard | tar -c --null -T - | tar -x -C "$root/src/ferry"
cat >"$root/tmp/build.sh" <<'BUILD'
set -eu
cd /src/ferry
if command -v cargo || command -v rustc; then echo "FAILED: the fresh root has Rust already" >&2; exit 1; fi
t=$(date +%s)
scripts/install-deps.sh
echo "install-deps.sh took $(( $(date +%s) - t )) s"
again=$(scripts/install-deps.sh)
case $again in *"nothing to do"*) echo "$again" ;; *) echo "FAILED: a second install-deps.sh changed things: $again" >&2; exit 1 ;; esac
echo "building with $(cargo --version)"
t=$(date +%s)
cargo build --locked -p ferry 2>&1 | tail -n 1
echo "cargo build --locked -p ferry (debug) took $(( $(date +%s) - t )) s"
target/debug/ferry --version | head -n 1
BUILD
in_root --bind "$cache/cargo/registry:/root/.cargo/registry" "$root" sh /tmp/build.sh ||
  fail "install-deps.sh or the build failed in the fresh Debian 12 root"
v=$(in_root "$root" /src/ferry/target/debug/ferry --version | head -n 1)
[[ $v == "ferry $version (commit unknown)" ]] || fail "a build without .git says: $v"

echo "test-package: all package tests passed ($((SECONDS - t0)) s)"
