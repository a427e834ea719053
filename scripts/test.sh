#!/usr/bin/env bash
# The one test command: installs what is missing, builds, lints, runs the unit tests and the
# root integration tests with cargo nextest, checks that no test left host state behind, then
# builds the Debian package and tests it in fresh Debian 12 roots (scripts/test-package.sh;
# FERRY_TEST_SKIP_PACKAGE=1 leaves that step out). Exits non-zero on any failure.
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

echo "== format"
cargo fmt --all --check >/dev/null || { echo "scripts/test.sh: cargo fmt --all --check finds unformatted code; run cargo fmt --all" >&2; exit 1; }
echo "== build"
cargo build --workspace --all-targets --locked 2>&1 | tail -n 3
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
profile=default
[[ -n ${CI:-} ]] && profile=ci
status=0
cargo nextest run --workspace --locked --profile "$profile" --no-fail-fast || status=$?

echo "== leftovers"
left=0
if ip netns list | grep -q 'fy'; then echo "left behind: network namespaces: $(ip netns list | grep fy | tr '\n' ' ')"; left=1; fi
if grep -q 'ferry-t' /proc/self/mountinfo; then echo "left behind: mounts:"; grep 'ferry-t' /proc/self/mountinfo | awk '{print $5}'; left=1; fi
cgs=$(find /sys/fs/cgroup -maxdepth 3 -type d -name 'ferry-t*' 2>/dev/null || true)
if [[ -n $cgs ]]; then echo "left behind: cgroups:"; echo "$cgs"; left=1; fi
if pgrep -f 'ferry-t[0-9a-z-]*/' >/dev/null; then echo "left behind: processes:"; pgrep -af 'ferry-t[0-9a-z-]*/'; left=1; fi
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
