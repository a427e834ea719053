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

# What tests leave behind: network namespaces, mounts, cgroups and processes named like the
# tests' own. What was there before this run (another run on the machine, killed midway) is
# noted now and not counted against this one.
test_state() {
  ip netns list | awk '/^fy/ {print "network namespace: " $1}'
  awk '$5 ~ /ferry-t/ {print "mount: " $5}' /proc/self/mountinfo
  # v1 hierarchies, a pure v2 mount and every cgroup2 mount (a hybrid host's unified one).
  find /sys/fs/cgroup /sys/fs/cgroup/unified $(findmnt -rn -t cgroup2 -o TARGET 2>/dev/null) -maxdepth 3 -type d -name 'ferry-t*' 2>/dev/null |
    sed 's/^/cgroup: /' || true
  # Tests' directories are /tmp/ferry-t<unique>...; /var/cache/ferry-test is the machine's cache.
  pgrep -af '/tmp/ferry-t[0-9A-Za-z-]*/' | sed 's/^/process: /' || true
}
before_run=$(mktemp)
trap 'rm -f "$before_run"' EXIT
test_state | sort -u >"$before_run"
if [[ -s $before_run ]]; then
  echo "scripts/test.sh: already on this machine before the tests (not counted as this run's leftovers):"
  sed 's/^/  /' "$before_run"
fi

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
# A system container (systemd boots it; tests/system.rs).
FERRY_TEST_TEMPLATE_DEBIAN_SYSTEMD=$(cached_template debian-systemd)
export FERRY_TEST_TEMPLATE_DEBIAN_SYSTEMD

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
# machine kind while other work loaded it, 117-169 s since they run unprivileged containers
# (with another suite running beside them) (budget: five minutes for the whole pass).
echo "== tests in cgroup mode v2"
v2_limits='package(ferry) & binary(limits_cli)'
v2_rest='(package(ferry) & kind(test) & !binary(limits_cli) & !binary(sync_cli) & !binary(net_plumbing))
  | (package(ferry-runtime) & (binary(bpf_devices) | (binary(criu_rpc) & test(/froz|freez|host_check/))))'
v2_start=$SECONDS
FERRY_CGROUP_MODE=v2 cargo nextest run --workspace --locked "${features[@]}" --profile "$profile" --no-fail-fast --success-output immediate -E "$v2_limits" || status=$?
FERRY_CGROUP_MODE=v2 cargo nextest run --workspace --locked "${features[@]}" --profile "$profile" --no-fail-fast -E "$v2_rest" || status=$?
echo "cgroup mode v2 pass: $((SECONDS - v2_start)) s"

# The third pass: the container tests again with the other kind of container. New containers
# are unprivileged by default (a user namespace of their own, the host setting `userns = on`),
# so the passes above ran every container test on unprivileged containers; this one runs them
# on privileged ones: FERRY_TEST_USERNS=0 writes `userns = "off"` into each test host's config
# (FERRY_TEST_USERNS=1 makes them unprivileged, for a host whose default is off). Left out, as
# they make no container of the default kind: the tests of tests/userns.rs and those that ask
# for each kind themselves (redis as its own user, ranges across hosts, a service as another
# user), file sync (sync_cli) and network plumbing without containers (net_plumbing); and the
# other packages, whose tests make no ferry container. Its tests took 110-145 s on this
# machine kind while other work loaded it (budget: five minutes for the whole pass).
echo "== tests with privileged containers"
kind_rest='package(ferry) & kind(test) & !binary(sync_cli) & !binary(net_plumbing) & !binary(userns)
  & !test(redis_as_its_own_user) & !test(an_unprivileged_container_gets_each_hosts_range) & !test(a_process_of_another_user)'
kind_start=$SECONDS
FERRY_TEST_USERNS=0 cargo nextest run --workspace --locked "${features[@]}" --profile "$profile" --no-fail-fast -E "$kind_rest" || status=$?
echo "privileged pass: $((SECONDS - kind_start)) s"

echo "== leftovers"
left=0
leftovers=$(test_state | sort -u | comm -13 "$before_run" -)
if [[ -n $leftovers ]]; then echo "left behind:"; echo "$leftovers"; left=1; else echo "nothing left behind"; fi

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
