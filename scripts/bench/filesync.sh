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

# ratio4 A B: A/B with four decimals (the bytes differ by well under 1% in pass 1)
ratio4() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.4f}' if b else 'n/a')" "$1" "$2"; }

rsync_wire() {  # rsync --stats output: bytes sent + received
  awk '/Total bytes sent/ {gsub(",","",$4); s=$4} /Total bytes received/ {gsub(",","",$4); r=$4} END {print s+r}' "$1"
}

bench_file_sync() {
  local sw=$W/sync; mkdir -p "$sw"
  sim_init fybs "$sw/sim"
  sim_host a 198.18.2.1
  sim_host b 198.18.2.2
  sim_sshd b
  # The trees live on a filesystem of their own, made for this section: when many inodes were
  # freed on a filesystem shortly before (by an earlier section, another job on the machine),
  # ext4 creates files far slower for minutes, whichever tool runs then.
  truncate -s 4G "$sw/fs.img"
  mkfs.ext4 -q -F -N 200000 -E lazy_itable_init=0,lazy_journal_init=0 "$sw/fs.img"
  local fs=$sw/fs; mkdir "$fs"; mount -o loop "$sw/fs.img" "$fs"
  make_tree "$fs/src" "$SYNC_FILES" "$SYNC_MB"
  local ssh_opts; ssh_opts=$(sim_ssh_opts)
  local i k
  for k in f1 r1 f2 r2 fb1 rb1 fb2 rb2; do : > "$sw/$k"; done
  # Each run: both tools into an empty directory, then 1% of the files change, then both again.
  # Fair to both: every run writes into new directories (removing the last run's trees would
  # leave ext4 skipping thousands of just-freed inodes on every create for the next minute,
  # which slowed whichever tool came first), and the tools take turns going first.
  for i in $(seq "$SYNC_RUNS"); do
    local order=(ferry rsync); [[ $((i % 2)) -eq 0 ]] && order=(rsync ferry)
    local p t
    for p in 1 2; do
      [[ $p -eq 2 ]] && change_tree "$fs/src" 1 "$((10 + i))"
      for t in "${order[@]}"; do
        # Neither tool pays for writing back what the one before it wrote.
        sync -f "$fs"; sync -f "$sw"
        if [[ $t == ferry ]]; then
          t0=$(now); on a "$FERRY" sync "$fs/src" "root@198.18.2.2:$fs/dst-ferry-$i" --ssh-opts "$ssh_opts" --remote-ferry "$FERRY" --json > "$sw/f.json"; t1=$(now)
          ms "$t0" "$t1" >> "$sw/f$p"; mig_json "$sw/f.json" bytes_on_wire >> "$sw/fb$p"
        else
          t0=$(now); on a rsync -a --stats -e "ssh $ssh_opts" "$fs/src/" "root@198.18.2.2:$fs/dst-rsync-$i/" > "$sw/r.txt"; t1=$(now)
          ms "$t0" "$t1" >> "$sw/r$p"; rsync_wire "$sw/r.txt" >> "$sw/rb$p"
        fi
      done
    done
    diff -r "$fs/src" "$fs/dst-ferry-$i" >/dev/null || { echo "bench: ferry sync result differs from the source" >&2; return 1; }
  done
  {
    echo "## File sync over ssh ($SYNC_FILES files, $SYNC_MB MiB; $SYNC_RUNS runs)"
    echo
    echo "\`ferry sync\` against \`rsync -a\` over the same ssh link between two simulated hosts. Bytes"
    echo "on the wire: ferry's own count of its stream; rsync's \`--stats\` bytes sent + received."
    echo "Both trees sit on an ext4 filesystem made for this section (a loop device), each run"
    echo "writes into new directories, the two tools take turns going first, and everything is"
    echo "flushed to disk before each timed command. ferry does more than \`rsync -a\`: it also reads"
    echo "and copies xattrs, keeps hardlinks and deletes what the source lacks (as"
    echo "\`rsync -aXH --delete\` would). Both check each file they write (blake3; rsync's whole-file"
    echo "checksum). Neither tool flushes to disk itself (\`ferry sync\` does not fsync; migrations"
    echo "do, once per pass)."
    echo
    echo "| pass | ferry ms | rsync -a ms | ferry/rsync time | ferry bytes on wire | rsync bytes on wire | ferry/rsync bytes |"
    echo "|---|---|---|---|---|---|---|"
    echo "| 1 (empty destination) | $(fmt "$sw/f1") | $(fmt "$sw/r1") | $(ratio "$(med "$sw/f1")" "$(med "$sw/r1")") | $(med "$sw/fb1") | $(med "$sw/rb1") | $(ratio4 "$(med "$sw/fb1")" "$(med "$sw/rb1")") |"
    echo "| 2 (1% of files changed) | $(fmt "$sw/f2") | $(fmt "$sw/r2") | $(ratio "$(med "$sw/f2")" "$(med "$sw/r2")") | $(med "$sw/fb2") | $(med "$sw/rb2") | $(ratio4 "$(med "$sw/fb2")" "$(med "$sw/rb2")") |"
    echo
    echo "Goal (issue 7): no slower and no more bytes than rsync."
    echo
  } >> "$OUT"
  sim_cleanup
  umount "$fs"
  rm -rf "$sw"
}
