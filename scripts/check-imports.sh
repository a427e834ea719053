#!/usr/bin/env bash
# No file imports another that imports it back, directly or in a loop (one job per file, and
# an order to read them in). Checks every crate of the workspace (scripts/lib/check_imports.py
# says what counts as an import); first shows on a made-up crate that a loop is found.
set -euo pipefail
cd "$(dirname "$0")/.."
check=scripts/lib/check_imports.py

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/demo/src/m"
touch "$tmp/demo/Cargo.toml"
printf 'mod a;\nmod m;\n' >"$tmp/demo/src/lib.rs"
printf 'use crate::m::c::C;\npub struct A;\n' >"$tmp/demo/src/a.rs"
printf 'pub mod b;\npub mod c;\npub use b::B;\n' >"$tmp/demo/src/m/mod.rs"
printf 'pub struct B;\nfn f() -> crate::a::A { crate::a::A }\n' >"$tmp/demo/src/m/b.rs"
printf 'use super::{b::B, super::Nothing};\npub struct C(B);\n' >"$tmp/demo/src/m/c.rs"
if out=$(python3 "$check" "$tmp/demo"); then
  echo "scripts/check-imports.sh: the check missed the loop a -> m/c -> m/b -> a in a made-up crate" >&2
  exit 1
fi
grep -q 'import loop: .*src/a.rs, .*src/m/b.rs, .*src/m/c.rs' <<<"$out" || { echo "scripts/check-imports.sh: the check reported the made-up loop wrongly:" >&2; echo "$out" >&2; exit 1; }

if ! python3 "$check" .; then
  echo "scripts/check-imports.sh: files import each other (above); move what both need into a file of its own" >&2
  exit 1
fi
echo "no import loops between files"
