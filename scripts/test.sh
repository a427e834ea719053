#!/usr/bin/env bash
# The one test command: installs what is missing, builds, lints, runs the unit tests and the
# root integration tests with cargo nextest (built with the feature fault-injection, which no
# shipped build has: a build without it is checked to lack the switch), checks that no test
# left host state behind, then builds the Debian package and tests it in fresh Debian 12 roots
# (scripts/test-package.sh; FERRY_TEST_SKIP_PACKAGE=1 leaves that step out). Exits non-zero on
# any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "scripts/test.sh: run as root (the integration tests create namespaces, cgroups and mounts)" >&2; exit 1; }

scripts/install-deps.sh --test

# A template every integration test copies; made once per run.
export FERRY_TEST_TEMPLATE=${FERRY_TEST_TEMPLATE:-$PWD/target/test-template}
if [[ ! -x $FERRY_TEST_TEMPLATE/bin/busybox ]]; then
  rm -rf "$FERRY_TEST_TEMPLATE"
  scripts/make-template.sh busybox "$FERRY_TEST_TEMPLATE" >/dev/null
fi
# Debian templates for the tests of real services (redis), cached on the machine and made
# again only when scripts/make-template.sh changes (the first run takes a few minutes).
# shellcheck source=lib/template-cache.sh
source scripts/lib/template-cache.sh
FERRY_TEST_TEMPLATE_DEBIAN_REDIS=$(cached_template debian redis-server)
export FERRY_TEST_TEMPLATE_DEBIAN_REDIS

# The tests drive a ferry with the fault switch (FERRY_TEST_FAULT); no shipped build has it.
features=(--features fault-injection)

echo "== format"
cargo fmt --all --check >/dev/null || { echo "scripts/test.sh: cargo fmt --all --check finds unformatted code; run cargo fmt --all" >&2; exit 1; }
echo "== import loops between files"
scripts/check-imports.sh
echo "== no fault switch in a build without the feature (as release builds, the package, the demo and the benchmarks are)"
cargo build --locked -p ferry --bin ferry 2>&1 | tail -n 1
scripts/check-fault-switch.sh absent target/debug/ferry
cargo clippy --locked -p ferry-migrate --lib -- -D warnings
echo "== build"
cargo build --workspace --all-targets --locked "${features[@]}" 2>&1 | tail -n 3
scripts/check-fault-switch.sh present target/debug/ferry
echo "== clippy"
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings
echo "== tests"
profile=default
[[ -n ${CI:-} ]] && profile=ci
status=0
cargo nextest run --workspace --locked "${features[@]}" --profile "$profile" --no-fail-fast || status=$?

# The second pass: the integration tests again with FERRY_CGROUP_MODE=v2, so containers get
# their cgroups on the cgroup2 hierarchy (on a hybrid host /sys/fs/cgroup/unified, which has
# no resource controllers): life cycle, exec, the eBPF device allowlist, the freezer, CRIU
# checkpoint/restore, snapshots and live migration between simulated hosts all in v2 mode.
# It runs the tests whose behaviour depends on the cgroup mode: the `ferry` package's
# container tests, the runtime's device-program test and the CRIU tests that freeze through a
# cgroup (or print the host table). Left out, because they would only repeat the first pass:
# unit tests, the image format, the wire protocol and ssh transport, file sync (sync_cli,
# migrate's sync), network plumbing without containers (net_plumbing), storage backends
# (res_storage), the v1 limit measurements (res_cgroup_v1) and the CRIU tests that use no
# cgroup.
# Limits tests whose controller the v2 hierarchy lacks skip with a line naming the limit and
# the controller; they run first, with their output shown. Its tests took 85-90 s on this
# machine kind while other work loaded it (budget: five minutes for the whole pass).
echo "== tests in cgroup mode v2"
v2_limits='package(ferry) & binary(limits_cli)'
v2_rest='(package(ferry) & kind(test) & !binary(limits_cli) & !binary(sync_cli) & !binary(net_plumbing))
  | (package(ferry-runtime) & (binary(bpf_devices) | (binary(criu_rpc) & test(/froz|freez|host_check/))))'
v2_start=$SECONDS
FERRY_CGROUP_MODE=v2 cargo nextest run --workspace --locked "${features[@]}" --profile "$profile" --no-fail-fast --success-output immediate -E "$v2_limits" || status=$?
FERRY_CGROUP_MODE=v2 cargo nextest run --workspace --locked "${features[@]}" --profile "$profile" --no-fail-fast -E "$v2_rest" || status=$?
echo "cgroup mode v2 pass: $((SECONDS - v2_start)) s"

echo "== leftovers"
left=0
if ip netns list | grep -q 'fy'; then echo "left behind: network namespaces: $(ip netns list | grep fy | tr '\n' ' ')"; left=1; fi
if grep -q 'ferry-t' /proc/self/mountinfo; then echo "left behind: mounts:"; grep 'ferry-t' /proc/self/mountinfo | awk '{print $5}'; left=1; fi
# v1 hierarchies, a pure v2 mount and every cgroup2 mount (a hybrid host's unified one).
cgs=$(find /sys/fs/cgroup /sys/fs/cgroup/unified $(findmnt -rn -t cgroup2 -o TARGET 2>/dev/null) -maxdepth 3 -type d -name 'ferry-t*' 2>/dev/null | sort -u || true)
if [[ -n $cgs ]]; then echo "left behind: cgroups:"; echo "$cgs"; left=1; fi
# Tests' directories are /tmp/ferry-t<unique>...; /var/cache/ferry-test is the machine's cache.
if pgrep -f '/tmp/ferry-t[0-9A-Za-z-]*/' >/dev/null; then echo "left behind: processes:"; pgrep -af '/tmp/ferry-t[0-9A-Za-z-]*/'; left=1; fi
[[ $left -eq 0 ]] && echo "nothing left behind"

echo "== package"
package=0
if [[ ${FERRY_TEST_SKIP_PACKAGE:-} == 1 ]]; then
  echo "skipped (FERRY_TEST_SKIP_PACKAGE=1)"
else
  start=$SECONDS
  scripts/test-package.sh || package=$?
  echo "package tests: $((SECONDS - start)) s"
fi
if [[ $status -ne 0 || $left -ne 0 || $package -ne 0 ]]; then
  echo "scripts/test.sh: FAILED (tests: exit $status, leftovers: $left, package: exit $package)"
  exit 1
fi
echo "scripts/test.sh: all tests passed"
