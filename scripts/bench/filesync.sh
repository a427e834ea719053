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

change_tree() {  # DIR PERCENT: rewrite a small part in the middle of that share of files
  python3 - "$1" "$2" <<'PY'
import os, random, sys
d, pct = sys.argv[1], float(sys.argv[2])
files = sorted(os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs)
random.seed(11)
for p in random.sample(files, max(1, int(len(files) * pct / 100))):
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.seek(size // 2)
        f.write(random.randbytes(min(512, max(1, size // 8))))
PY
}

bench_file_sync() {
  local sw=$W/sync; mkdir -p "$sw"
  sim_init fybs "$sw/sim"
  sim_host a 198.18.2.1
  sim_host b 198.18.2.2
  sim_sshd b
  make_tree "$sw/src" "$SYNC_FILES" "$SYNC_MB"
  local ssh_opts; ssh_opts=$(sim_ssh_opts)
  local f1 r1 f2 r2 fb1 rb1 fb2 rb2
  # ferry: pass 1
  t0=$(now); on a "$FERRY" sync "$sw/src" "root@198.18.2.2:$sw/dst-ferry" --ssh-opts "$ssh_opts" --remote-ferry "$FERRY" --json > "$sw/f1.json"; t1=$(now); f1=$(ms "$t0" "$t1")
  fb1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_on_wire"])' "$sw/f1.json")
  # rsync: pass 1 (bytes on the wire from --stats: sent + received)
  t0=$(now); on a rsync -a --stats -e "ssh $ssh_opts" "$sw/src/" "root@198.18.2.2:$sw/dst-rsync/" > "$sw/r1.txt"; t1=$(now); r1=$(ms "$t0" "$t1")
  rb1=$(awk '/Total bytes sent/ {gsub(",","",$4); s=$4} /Total bytes received/ {gsub(",","",$4); r=$4} END {print s+r}' "$sw/r1.txt")
  change_tree "$sw/src" 1
  t0=$(now); on a "$FERRY" sync "$sw/src" "root@198.18.2.2:$sw/dst-ferry" --ssh-opts "$ssh_opts" --remote-ferry "$FERRY" --json > "$sw/f2.json"; t1=$(now); f2=$(ms "$t0" "$t1")
  fb2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_on_wire"])' "$sw/f2.json")
  t0=$(now); on a rsync -a --stats -e "ssh $ssh_opts" "$sw/src/" "root@198.18.2.2:$sw/dst-rsync/" > "$sw/r2.txt"; t1=$(now); r2=$(ms "$t0" "$t1")
  rb2=$(awk '/Total bytes sent/ {gsub(",","",$4); s=$4} /Total bytes received/ {gsub(",","",$4); r=$4} END {print s+r}' "$sw/r2.txt")
  diff -r "$sw/src" "$sw/dst-ferry" >/dev/null || echo "bench: WARNING: ferry sync result differs from the source"
  {
    echo "## File sync over ssh ($SYNC_FILES files, $SYNC_MB MiB; one run each)"
    echo
    echo "| pass | ferry ms | rsync -a ms | ferry/rsync time | ferry bytes on wire | rsync bytes on wire | ferry/rsync bytes |"
    echo "|---|---|---|---|---|---|---|"
    echo "| 1 (empty destination) | $f1 | $r1 | $(ratio "$f1" "$r1") | $fb1 | $rb1 | $(ratio "$fb1" "$rb1") |"
    echo "| 2 (1% of files changed) | $f2 | $r2 | $(ratio "$f2" "$r2") | $fb2 | $rb2 | $(ratio "$fb2" "$rb2") |"
    echo
  } >> "$OUT"
  sim_cleanup
  rm -rf "$sw"
}
