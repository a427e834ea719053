#!/usr/bin/env bash
# Whether a ferry binary has the fault switch of the tests (FERRY_TEST_FAULT, compiled only with
# the cargo feature fault-injection: ferry_migrate::migration::fault).
#   scripts/check-fault-switch.sh absent BINARY    fails when BINARY holds the switch's variable,
#                                                  any fault's name or the code that reads them
#   scripts/check-fault-switch.sh present BINARY   fails when it does not (the check's own control)
# The fault names come from migrate/src/migration/fault.rs, so a new fault is checked too.
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:?absent or present}; bin=${2:?binary}
[[ -f $bin ]] || { echo "check-fault-switch: no binary $bin" >&2; exit 1; }
mapfile -t names < <(grep -oE '^ +\(Fault::[A-Za-z]+, "[a-z-]+"\)' migrate/src/migration/fault.rs | grep -oE '"[a-z-]+"' | tr -d '"')
[[ ${#names[@]} -ge 9 ]] || { echo "check-fault-switch: found only ${#names[@]} fault names in fault.rs" >&2; exit 1; }
found=()
for s in FERRY_TEST_FAULT "${names[@]}" "migration::fault::injection"; do
  grep -qaF -- "$s" "$bin" && found+=("$s")
done
case $want in
  absent)
    if [[ ${#found[@]} -gt 0 ]]; then echo "check-fault-switch: $bin has the fault switch: ${found[*]}" >&2; exit 1; fi
    echo "$bin: no fault switch (looked for FERRY_TEST_FAULT and ${#names[@]} fault names)" ;;
  present)
    if [[ ${#found[@]} -lt $(( ${#names[@]} + 1 )) ]]; then echo "check-fault-switch: $bin lacks part of the fault switch (found: ${found[*]:-nothing})" >&2; exit 1; fi
    echo "$bin: has the fault switch (built with the feature fault-injection)" ;;
  *) echo "check-fault-switch: absent or present, not $want" >&2; exit 1 ;;
esac
