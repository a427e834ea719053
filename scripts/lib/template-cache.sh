#!/usr/bin/env bash
# Templates the tests need beyond busybox, made once per machine and kept under
# /var/cache/ferry-test/templates (FERRY_TEST_CACHE overrides): a template is made again only
# when scripts/make-template.sh or its arguments change (its name carries their hash).
#   source scripts/lib/template-cache.sh; dir=$(cached_template debian redis-server)

cached_template() {
  local cache=${FERRY_TEST_CACHE:-/var/cache/ferry-test}/templates
  local root script key dir tmp
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  script=$root/scripts/make-template.sh
  key=$( { sha256sum < "$script"; printf '%s\n' "$@"; } | sha256sum | cut -c1-16)
  dir=$cache/$1-$key
  if [[ ! -f $dir/.ferry-template-complete ]]; then
    mkdir -p "$cache"
    # Older versions of this template (the same arguments, made by an older script) go: each
    # is a few hundred MB. Another kind, or the same kind with other packages, stays.
    local old
    for old in "$cache"/*/.ferry-template-args; do
      [[ -f $old && $(<"$old") == "$*" && $(dirname "$old") != "$dir" ]] && rm -rf "$(dirname "$old")"
    done
    tmp=$(mktemp -d "$cache/.make.XXXXXX")
    if ! "$script" "$1" "$tmp/t" "${@:2}" >"$tmp/log" 2>&1; then
      echo "template-cache: scripts/make-template.sh $* failed; its output:" >&2
      tail -n 30 "$tmp/log" >&2
      rm -rf "$tmp"
      return 1
    fi
    rm -rf "$dir"
    mv "$tmp/t" "$dir"
    rm -rf "$tmp"
    touch "$dir/.ferry-template-complete"
  fi
  # What it was made with, for the clean-up above (templates made before it was written too).
  [[ -f $dir/.ferry-template-args ]] || printf '%s' "$*" >"$dir/.ferry-template-args"
  echo "$dir"
}
