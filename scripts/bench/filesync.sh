# File sync benchmark (sourced by sections.sh): ferry's sync against `rsync -a` over the same ssh
# link between two simulated hosts, on a tree of $SYNC_FILES files and $SYNC_MB MiB: a first
# pass into an empty directory, then a pass after 1% of the files changed.

make_tree() {  # DIR FILES MB
  python3 - "$1" "$2" "$3" <<'PY'
import os, random, sys
d, n, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(7)
per = mb * 1048576 // n
for i in range(n):
    sub = os.path.join(d, f"d{i % 100:02d}", f"e{i % 7}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:05d}"), "wb") as f:
        f.write(random.randbytes(per))
PY
}

change_tree() {  # DIR PERCENT SEED: rewrite a small part in the middle of that share of files
  python3 - "$1" "$2" "$3" <<'PY'
import os, random, sys
d, pct = sys.argv[1], float(sys.argv[2])
files = sorted(os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs)
random.seed(int(sys.argv[3]))
for p in random.sample(files, max(1, int(len(files) * pct / 100))):
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.seek(size // 2)
        f.write(random.randbytes(min(512, max(1, size // 8))))
PY
}

rsync_wire() {  # rsync --stats output: bytes sent + received
  awk '/Total bytes sent/ {gsub(",","",$4); s=$4} /Total bytes received/ {gsub(",","",$4); r=$4} END {print s+r}' "$1"
}

bench_file_sync() {
  local sw=$W/sync; mkdir -p "$sw"
  sim_init fybs "$sw/sim"
  sim_host a 198.18.2.1
  sim_host b 198.18.2.2
  sim_sshd b
  make_tree "$sw/src" "$SYNC_FILES" "$SYNC_MB"
  local ssh_opts; ssh_opts=$(sim_ssh_opts)
  local i k
  for k in f1 r1 f2 r2 fb1 rb1 fb2 rb2; do : > "$sw/$k"; done
  # Each run: both tools into an empty directory, then 1% of the files change, then both again.
  for i in $(seq "$SYNC_RUNS"); do
    rm -rf "$sw/dst-ferry" "$sw/dst-rsync"
    t0=$(now); on a "$FERRY" sync "$sw/src" "root@198.18.2.2:$sw/dst-ferry" --ssh-opts "$ssh_opts" --remote-ferry "$FERRY" --json > "$sw/f1.json"; t1=$(now)
    ms "$t0" "$t1" >> "$sw/f1"; mig_json "$sw/f1.json" bytes_on_wire >> "$sw/fb1"
    t0=$(now); on a rsync -a --stats -e "ssh $ssh_opts" "$sw/src/" "root@198.18.2.2:$sw/dst-rsync/" > "$sw/r1.txt"; t1=$(now)
    ms "$t0" "$t1" >> "$sw/r1"; rsync_wire "$sw/r1.txt" >> "$sw/rb1"
    change_tree "$sw/src" 1 "$((10 + i))"
    t0=$(now); on a "$FERRY" sync "$sw/src" "root@198.18.2.2:$sw/dst-ferry" --ssh-opts "$ssh_opts" --remote-ferry "$FERRY" --json > "$sw/f2.json"; t1=$(now)
    ms "$t0" "$t1" >> "$sw/f2"; mig_json "$sw/f2.json" bytes_on_wire >> "$sw/fb2"
    t0=$(now); on a rsync -a --stats -e "ssh $ssh_opts" "$sw/src/" "root@198.18.2.2:$sw/dst-rsync/" > "$sw/r2.txt"; t1=$(now)
    ms "$t0" "$t1" >> "$sw/r2"; rsync_wire "$sw/r2.txt" >> "$sw/rb2"
    diff -r "$sw/src" "$sw/dst-ferry" >/dev/null || { echo "bench: ferry sync result differs from the source" >&2; return 1; }
  done
  {
    echo "## File sync over ssh ($SYNC_FILES files, $SYNC_MB MiB; $SYNC_RUNS runs)"
    echo
    echo "\`ferry sync\` against \`rsync -a\` over the same ssh link between two simulated hosts. Bytes"
    echo "on the wire: ferry's own count of its stream; rsync's \`--stats\` bytes sent + received."
    echo
    echo "| pass | ferry ms | rsync -a ms | ferry/rsync time | ferry bytes on wire | rsync bytes on wire | ferry/rsync bytes |"
    echo "|---|---|---|---|---|---|---|"
    echo "| 1 (empty destination) | $(fmt "$sw/f1") | $(fmt "$sw/r1") | $(ratio "$(med "$sw/f1")" "$(med "$sw/r1")") | $(med "$sw/fb1") | $(med "$sw/rb1") | $(ratio "$(med "$sw/fb1")" "$(med "$sw/rb1")") |"
    echo "| 2 (1% of files changed) | $(fmt "$sw/f2") | $(fmt "$sw/r2") | $(ratio "$(med "$sw/f2")" "$(med "$sw/r2")") | $(med "$sw/fb2") | $(med "$sw/rb2") | $(ratio "$(med "$sw/fb2")" "$(med "$sw/rb2")") |"
    echo
    echo "Goal (issue 7): no slower and no more bytes than rsync."
    echo
  } >> "$OUT"
  sim_cleanup
  rm -rf "$sw"
}
