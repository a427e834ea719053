#!/usr/bin/env bash
# Builds the Debian package ferry_VERSION_ARCH.deb (dpkg-deb, with the control file and
# maintainer scripts in scripts/deb/) from a release build of this tree:
#   /usr/bin/ferry                         stripped; its man pages and completions come from
#                                          `ferry __generate`, i.e. from the CLI definition
#   /usr/sbin/ferry-install-criu           scripts/install-criu.sh (CRIU 4.2+ on Debian 12/13)
#   /lib/systemd/system/                   every unit in scripts/systemd (ExecStart on /usr/bin/ferry)
#   /etc/ferry/ferry.toml, samples/*.toml  scripts/host/ferry.toml and scripts/host/samples/, when
#                                          the tree has them (conffiles)
#   /usr/share/man/man8/, completions for bash, zsh and fish, /usr/share/doc/ferry/
#
#   scripts/package.sh [OUTDIR]            default OUTDIR: target/debian; prints the .deb's path
# Runs as root (the build happens in a Debian 12 tree, see below); needs debootstrap, dpkg-dev
# and binutils (scripts/install-deps.sh --test), not Rust. FERRY_GIT_COMMIT names the commit when the tree
# has no .git; DEBFULLNAME and DEBEMAIL the maintainer.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-target/debian}")
[[ $(id -u) -eq 0 ]] || { echo "package.sh: run as root (ferry is built in a Debian 12 tree, in a namespace of its own)" >&2; exit 1; }
for tool in dpkg-deb dpkg-shlibdeps strip; do
  command -v "$tool" >/dev/null || { echo "package.sh: $tool is missing: run scripts/install-deps.sh --test" >&2; exit 1; }
done

version=$(awk -F'"' '/^\[workspace.package\]/ {ws=1} ws && /^version/ {print $2; exit}' Cargo.toml)
arch=$(dpkg --print-architecture)
maintainer="${DEBFULLNAME:-ferry maintainers} <${DEBEMAIL:-ferry@packages.debian.invalid}>"
# One date for every file and the changelog: the commit's, so that a rebuild is identical.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
day=$(date -u -d "@$SOURCE_DATE_EPOCH" +%F)
first=$(git log --format=%cd --date=format:%Y 2>/dev/null | tail -n 1 || true)
last=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
years=${first:-$last}
[[ $years == "$last" ]] || years+="-$last"

# The release build runs in a Debian 12 tree with Debian 12's own Rust, against its glibc
# 2.36: a binary linked on a newer glibc (this host's, once CRIU came from trixie) would not
# start on Debian 12. Its target directory and the crates are kept beside the tree (under
# /var/cache/ferry-test), so that a build in a fresh clone compiles only ferry's own crates.
# No debug info: the packaged binary is stripped.
commit=${FERRY_GIT_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
tree=$(scripts/lib/debian12-root.sh build)
target=$tree.target
cargo_home=${FERRY_TEST_CACHE:-/var/cache/ferry-test}/cargo
mkdir -p "$target" "$cargo_home"
scripts/lib/in-root.sh --read-only --ro-bind "$PWD:/src" --bind "$target:/target" --bind "$cargo_home:/cargo" \
  --env CARGO_HOME=/cargo --env CARGO_TARGET_DIR=/target --env FERRY_GIT_COMMIT="$commit" --env CARGO_PROFILE_RELEASE_DEBUG=false \
  "$tree" sh -ec 'cd /src
    # sh here has no pipefail: the status is cargo'"'"'s own, so a failed build stops here
    # instead of packaging the binary an earlier build left in the target dir.
    cargo build --release --locked -p ferry >/target/build.log 2>&1 || { tail -n 40 /target/build.log; exit 1; }
    tail -n 1 /target/build.log
    # The crates linked into the binary, for the copyright file.
    cargo tree --locked -p ferry -e normal --prefix none --format "{p} {l}" | grep -v "(/" | sed "s/ (\*)\$//" | sort -u >/target/bundled-crates'
bin=$target/release/ferry

stage=$out/stage
rm -rf "$stage" "$out/generated"
mkdir -p "$stage/DEBIAN" "$out"
inst() { install -D -m "$1" "$2" "$stage/$3"; }

inst 755 "$bin" usr/bin/ferry
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/ferry"
inst 755 scripts/install-criu.sh usr/sbin/ferry-install-criu

# Man pages and completions from the CLI definition; a clean environment, so that no
# FERRY_* variable of this shell shows up as a default in them.
env -i PATH=/usr/bin:/bin "$bin" __generate "$out/generated" --date "$day"
for page in "$out"/generated/man/*.8 scripts/deb/ferry-install-criu.8; do
  inst 644 "$page" "usr/share/man/man8/$(basename "$page")"
  gzip -9n "$stage/usr/share/man/man8/$(basename "$page")"
done
inst 644 "$out/generated/completions/ferry.bash" usr/share/bash-completion/completions/ferry
inst 644 "$out/generated/completions/_ferry" usr/share/zsh/vendor-completions/_ferry
inst 644 "$out/generated/completions/ferry.fish" usr/share/fish/vendor_completions.d/ferry.fish

# systemd units: all of scripts/systemd. Those with an [Install] section are enabled on
# installation, timers started (scripts/deb/postinst).
installable=() timers=()
for unit in scripts/systemd/*; do
  name=$(basename "$unit")
  inst 644 "$unit" "lib/systemd/system/$name"
  sed -i 's#/usr/local/s\?bin/ferry#/usr/bin/ferry#g' "$stage/lib/systemd/system/$name"
  if grep -q '^\[Install\]' "$unit"; then installable+=("$name"); fi
  if [[ $name == *.timer ]]; then timers+=("$name"); fi
done

# The host's configuration: the commented default host config and the sample configs for
# --applyconfig, conffiles (an admin's edits survive upgrades and removal).
conffiles=()
if [[ -f scripts/host/ferry.toml ]]; then
  inst 644 scripts/host/ferry.toml etc/ferry/ferry.toml
  conffiles+=(/etc/ferry/ferry.toml)
fi
for sample in scripts/host/samples/*.toml; do
  [[ -f $sample ]] || continue
  inst 644 "$sample" "etc/ferry/samples/$(basename "$sample")"
  conffiles+=("/etc/ferry/samples/$(basename "$sample")")
done
if [[ ${#conffiles[@]} -gt 0 ]]; then printf '%s\n' "${conffiles[@]}" >"$stage/DEBIAN/conffiles"; fi

doc=usr/share/doc/ferry
inst 644 README.md "$doc/README.md"
for f in docs/*.md; do inst 644 "$f" "$doc/$(basename "$f")"; done
inst 644 scripts/deb/README.Debian "$doc/README.Debian"
{
  echo "ferry ($version) unstable; urgency=medium"
  echo
  echo "  * ferry $version, built from commit $commit."
  echo
  echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$stage/$doc/changelog.gz"
{
  cat <<'HEAD'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ferry
Comment: The ferry binary is statically linked with the Rust crates below (name, version,
 license, as their authors declare it).
HEAD
  sed 's/^/ /' "$target/bundled-crates"
  cat <<'BODY'

Files: *
Copyright: YEARS the ferry authors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this file except in compliance with the License. You may obtain a copy of
 the License at https://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
 WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
 License for the specific language governing permissions and limitations under
 the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0 can be
 found in "/usr/share/common-licenses/Apache-2.0".
BODY
} | sed "s/^Copyright: YEARS/Copyright: $years/" >"$stage/$doc/copyright"
chmod 644 "$stage/$doc/copyright" "$stage/$doc/changelog.gz"

# Shared-library dependencies, as Debian computes them (dpkg-shlibdeps wants a debian/control).
shlib_dir=$out/shlibdeps
rm -rf "$shlib_dir" && mkdir -p "$shlib_dir/debian"
printf 'Source: ferry\n\nPackage: ferry\nArchitecture: any\n' >"$shlib_dir/debian/control"
shlibs=$(cd "$shlib_dir" && dpkg-shlibdeps -O "$stage/usr/bin/ferry" 2>"$out/shlibdeps.log" | sed -n 's/^shlibs:Depends=//p') ||
  { cat "$out/shlibdeps.log" >&2; exit 1; }
rm -f "$out/shlibdeps.log"
rm -rf "$shlib_dir"
# The package is for Debian 12: its glibc is 2.36.
libc_min=$(sed -n 's/.*libc6 (>= \([^)]*\)).*/\1/p' <<<"$shlibs")
if [[ -n $libc_min ]] && dpkg --compare-versions "$libc_min" gt 2.36; then
  echo "package.sh: this build of ferry needs glibc $libc_min, newer than Debian 12's 2.36: build it on Debian 12" >&2
  exit 1
fi

for script in postinst prerm postrm; do
  sed -e "s/@INSTALLABLE_UNITS@/${installable[*]}/" -e "s/@TIMERS@/${timers[*]}/" "scripts/deb/$script" >"$stage/DEBIAN/$script"
  chmod 755 "$stage/DEBIAN/$script"
done
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@MAINTAINER@/$maintainer/" \
    -e "s/@SIZE@/$size/" -e "s/@SHLIBS@/$shlibs/" scripts/deb/control >"$stage/DEBIAN/control"
(cd "$stage" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 644 "$stage"/DEBIAN/{control,md5sums}
if [[ -f $stage/DEBIAN/conffiles ]]; then chmod 644 "$stage/DEBIAN/conffiles"; fi

find "$stage" -type d -exec chmod 755 {} +
find "$stage" -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb=$out/ferry_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
rm -rf "$stage" "$out/generated"
echo "$deb"
