# Benchmark sections for scripts/bench.sh (sourced; uses its helpers and variables).

section_start_stop() {
  echo "bench: start/stop"
  "$FERRY" create fb-ss --template "$TPL" >/dev/null
  : > "$W/ss.ferry"; : > "$W/ss.crun"; : > "$W/ss.runc"
  for _ in $(seq "$N"); do
    t0=$(now); "$FERRY" start fb-ss >/dev/null; "$FERRY" stop fb-ss >/dev/null; t1=$(now); ms "$t0" "$t1" >> "$W/ss.ferry"
    t0=$(now); (cd "$W/bundle" && runc run -d fb-runc </dev/null >/dev/null 2>&1 && runc delete -f fb-runc); t1=$(now); ms "$t0" "$t1" >> "$W/ss.runc"
  done
  "$FERRY" destroy fb-ss >/dev/null
  # crun in one mount namespace made for it (see crun_ns), timed inside it.
  (cd "$W/bundle" && crun_ns bash -c 'for _ in $(seq "$1"); do t0=$(date +%s%N); crun run -d fb-crun </dev/null >/dev/null || exit 1; crun delete -f fb-crun; echo $(( ($(date +%s%N) - t0) / 1000000 )); done' _ "$N") > "$W/ss.crun"
  [[ $(wc -l < "$W/ss.crun") -eq $N ]] || { echo "bench: crun failed" >&2; return 1; }
  {
    echo "## Start + stop (busybox rootfs, one idle init)"
    echo
    echo "| what | ferry ms | crun ms | runc ms | ferry/crun | ferry/runc |"
    echo "|---|---|---|---|---|---|"
  } >> "$OUT"
  row "\`start\`+\`stop\` vs \`run -d\`+\`delete -f\` ($N runs) | $(fmt "$W/ss.ferry") | $(fmt "$W/ss.crun") | $(fmt "$W/ss.runc") | $(ratio "$(med "$W/ss.ferry")" "$(med "$W/ss.crun")") | $(ratio "$(med "$W/ss.ferry")" "$(med "$W/ss.runc")")"
  echo >> "$OUT"
}

mem_avail_kib() { awk '/MemAvailable/ {print $2}' /proc/meminfo; }

# Memory charged to the memory cgroup of process PID, in KiB (v1 usage_in_bytes or v2 current).
cg_mem_kib() {
  local path
  path=$(awk -F: '$2 == "memory" {print $3}' "/proc/$1/cgroup")
  if [[ -n $path ]]; then echo $(( $(cat "/sys/fs/cgroup/memory$path/memory.usage_in_bytes") / 1024 ))
  else path=$(awk -F: '$1 == "0" {print $3}' "/proc/$1/cgroup"); echo $(( $(cat "/sys/fs/cgroup$path/memory.current") / 1024 )); fi
}
state_pid() { python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])'; }

section_memory_per_ct() {
  echo "bench: memory per idle container ($NCT containers)"
  local before after i
  : > "$W/mem.ferry"; : > "$W/mem.crun"; : > "$W/mem.runc"
  sync; echo 3 > /proc/sys/vm/drop_caches
  before=$(mem_avail_kib)
  for i in $(seq "$NCT"); do "$FERRY" create "fb-m$i" --template "$TPL" >/dev/null; "$FERRY" start "fb-m$i" >/dev/null; done
  sleep 2; after=$(mem_avail_kib)
  local ferry_kib=$(( (before - after) / NCT ))
  for i in $(seq "$NCT"); do cg_mem_kib "$(state_pid < "$FERRY_RUN_DIR/fb-m$i/state.json")" >> "$W/mem.ferry"; done
  for i in $(seq "$NCT"); do "$FERRY" stop "fb-m$i" --timeout 1 >/dev/null; "$FERRY" destroy "fb-m$i" >/dev/null; done
  # One bundle per container, all naming the same rootfs by its absolute path (runc refuses a
  # symlinked rootfs).
  python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["root"]["path"]=sys.argv[2]; json.dump(c, open(sys.argv[3], "w"))' \
    "$W/bundle/config.json" "$W/bundle/rootfs" "$W/shared-config.json"
  for i in $(seq "$NCT"); do mkdir -p "$W/cb$i"; cp "$W/shared-config.json" "$W/cb$i/config.json"; done
  sync; echo 3 > /proc/sys/vm/drop_caches
  before=$(mem_avail_kib)
  crun_ns bash -c 'for i in $(seq "$1"); do (cd "$2/cb$i" && crun run -d "fb-c$i" </dev/null >/dev/null) || exit 1; done' _ "$NCT" "$W"
  sleep 2; after=$(mem_avail_kib)
  local crun_kib=$(( (before - after) / NCT ))
  for i in $(seq "$NCT"); do cg_mem_kib "$(crun_ns crun state "fb-c$i" | state_pid)" >> "$W/mem.crun"; done
  crun_ns bash -c 'for i in $(seq "$1"); do crun delete -f "fb-c$i" >/dev/null 2>&1; done' _ "$NCT"
  sync; echo 3 > /proc/sys/vm/drop_caches
  before=$(mem_avail_kib)
  for i in $(seq "$NCT"); do (cd "$W/cb$i" && runc run -d "fb-r$i" </dev/null >/dev/null); done
  sleep 2; after=$(mem_avail_kib)
  local runc_kib=$(( (before - after) / NCT ))
  for i in $(seq "$NCT"); do cg_mem_kib "$(runc state "fb-r$i" | state_pid)" >> "$W/mem.runc"; done
  for i in $(seq "$NCT"); do runc delete -f "fb-r$i" >/dev/null 2>&1; done
  local mf mc mr; mf=$(med "$W/mem.ferry"); mc=$(med "$W/mem.crun"); mr=$(med "$W/mem.runc")
  {
    echo "## Memory per idle container ($NCT running of each)"
    echo
    echo "| what | ferry KiB | crun KiB | runc KiB | ferry/crun | ferry/runc |"
    echo "|---|---|---|---|---|---|"
    echo "| charged to the container's memory cgroup (each of the $NCT) | $(fmt "$W/mem.ferry") | $(fmt "$W/mem.crun") | $(fmt "$W/mem.runc") | $(ratio "$mf" "$mc") | $(ratio "$mf" "$mr") |"
    echo "| host MemAvailable drop / $NCT (caches dropped first; one measurement) | $ferry_kib | $crun_kib | $runc_kib | $(ratio "$ferry_kib" "$crun_kib") | $(ratio "$ferry_kib" "$runc_kib") |"
    echo
    echo "Each container is a busybox shell as init plus a \`sleep\`. The MemAvailable figure also counts"
    echo "what the rest of this shared machine did meanwhile, so it is only a rough check (it can even"
    echo "come out negative). ferry gives each container a private copy of the template (page cache"
    echo "and dentries on the host, charged to whoever copied it); crun and runc share one rootfs here."
    echo
  } >> "$OUT"
}

# A container made by hand with the raw tools (as in shared/reference/migration-by-hand.sh),
# for the bare criu CLI figures: the same rootfs and init as the others.
byhand_start() {
  local rfs=$W/byhand/rootfs
  rm -rf "$W/byhand"; mkdir -p "$W/byhand"; cp -a "$TPL" "$rfs"
  cat > "$W/byhand/init.sh" <<INIT
#!/bin/sh
mount --make-rprivate /
mount --bind $rfs $rfs
mount -t proc proc $rfs/proc
mount -t tmpfs tmpfs $rfs/dev
mknod -m 666 $rfs/dev/null c 1 3
cd $rfs; pivot_root . oldroot 2>/dev/null || { mkdir -p oldroot; pivot_root . oldroot; }; /bin/busybox umount -l /oldroot
exec /bin/busybox setsid /bin/sh -c 'exec </dev/null >/dev/null 2>&1 10<&- 251>&-; trap "exit 0" TERM; while :; do sleep 1 & wait \$!; done'
INIT
  chmod +x "$W/byhand/init.sh"
  mkdir -p "$rfs/oldroot"
  unshare -p -f -u -i -n -m "$W/byhand/init.sh" </dev/null >/dev/null 2>&1 &
  local u=$!
  for _ in $(seq 100); do BYHAND_PID=$(pgrep -P "$u" || true); [[ -n $BYHAND_PID ]] && break; sleep 0.05; done
  sleep 0.2
}

section_checkpoint() {
  echo "bench: checkpoint/restore"
  : > "$W/ck.ferry"; : > "$W/rs.ferry"; : > "$W/ck.runc"; : > "$W/rs.runc"; : > "$W/ck.criu"; : > "$W/rs.criu"
  "$FERRY" create fb-ck --template "$TPL" >/dev/null; "$FERRY" start fb-ck >/dev/null
  (cd "$W/bundle" && runc run -d fb-runck </dev/null >/dev/null 2>&1)
  byhand_start
  local i
  for i in $(seq "$N"); do
    t0=$(now); "$FERRY" checkpoint fb-ck --dumpfile "$W/ck.img" >/dev/null; t1=$(now)
    "$FERRY" restore fb-ck --dumpfile "$W/ck.img" >/dev/null; t2=$(now); rm -f "$W/ck.img"
    ms "$t0" "$t1" >> "$W/ck.ferry"; ms "$t1" "$t2" >> "$W/rs.ferry"
    rm -rf "$W/rck"; t0=$(now); runc checkpoint --image-path "$W/rck" fb-runck; t1=$(now)
    (cd "$W/bundle" && runc restore -d --image-path "$W/rck" fb-runck </dev/null >/dev/null 2>&1); t2=$(now)
    ms "$t0" "$t1" >> "$W/ck.runc"; ms "$t1" "$t2" >> "$W/rs.runc"
    rm -rf "$W/cck"; mkdir "$W/cck"; rm -f "$W/byhand.pid"
    t0=$(now); criu dump -t "$BYHAND_PID" -D "$W/cck" -o dump.log; t1=$(now)
    criu restore -D "$W/cck" --root "$W/byhand/rootfs" -d -o restore.log --pidfile "$W/byhand.pid"; t2=$(now)
    BYHAND_PID=$(cat "$W/byhand.pid")
    ms "$t0" "$t1" >> "$W/ck.criu"; ms "$t1" "$t2" >> "$W/rs.criu"
  done
  "$FERRY" stop fb-ck >/dev/null; "$FERRY" destroy fb-ck >/dev/null; runc delete -f fb-runck
  kill -9 "$BYHAND_PID" 2>/dev/null; BYHAND_PID=; umount -l "$W/byhand/rootfs" 2>/dev/null || true
  local cf rf cr rr cc rc
  cf=$(med "$W/ck.ferry"); rf=$(med "$W/rs.ferry"); cr=$(med "$W/ck.runc"); rr=$(med "$W/rs.runc"); cc=$(med "$W/ck.criu"); rc=$(med "$W/rs.criu")
  {
    echo "## Checkpoint and restore (busybox rootfs, one idle init; $N runs)"
    echo
    echo "ferry writes its own image file (compressed, checksummed) and recreates cgroups and mounts;"
    echo "runc and the bare criu CLI leave a directory of CRIU images."
    echo
    echo "| step | ferry ms | runc ms | bare criu ms | ferry/runc | ferry/criu |"
    echo "|---|---|---|---|---|---|"
    echo "| checkpoint | $(fmt "$W/ck.ferry") | $(fmt "$W/ck.runc") | $(fmt "$W/ck.criu") | $(ratio "$cf" "$cr") | $(ratio "$cf" "$cc") |"
    echo "| restore | $(fmt "$W/rs.ferry") | $(fmt "$W/rs.runc") | $(fmt "$W/rs.criu") | $(ratio "$rf" "$rr") | $(ratio "$rf" "$rc") |"
    echo "| both | $(python3 -c "print($cf+$rf)") | $(python3 -c "print($cr+$rr)") | $(python3 -c "print($cc+$rc)") | $(ratio "$(python3 -c "print($cf+$rf)")" "$(python3 -c "print($cr+$rr)")") | $(ratio "$(python3 -c "print($cf+$rf)")" "$(python3 -c "print($cc+$rc)")") |"
    echo
  } >> "$OUT"
}

section_big_memory() {
  echo "bench: ${MEM_MB} MiB of touched memory"
  "$FERRY" create fb-big --template "$TPL" >/dev/null
  cp "$W/touch_mem" "$FERRY_DATA_DIR/private/fb-big/bin/touch_mem"
  "$FERRY" start fb-big >/dev/null
  "$FERRY" exec fb-big -- sh -c "touch_mem $MEM_MB </dev/null >/dev/null 2>&1 &"
  sleep $(( MEM_MB / 128 + 2 ))
  local kind i t0 t1 mb=$(( MEM_MB ))
  : > "$W/bd.dir"; : > "$W/bd.0"; : > "$W/bd.1"; : > "$W/bds.0"; : > "$W/bds.1"
  for i in $(seq 5); do
    rm -rf "$W/bigdir"
    t0=$(now); "$FERRY" checkpoint fb-big --keep-running --images-dir "$W/bigdir" >/dev/null; t1=$(now); ms "$t0" "$t1" >> "$W/bd.dir"
    for kind in 0 1; do
      t0=$(now); "$FERRY" checkpoint fb-big --keep-running --compress "$kind" --dumpfile "$W/big.img" >/dev/null; t1=$(now)
      ms "$t0" "$t1" >> "$W/bd.$kind"; stat -c %s "$W/big.img" >> "$W/bds.$kind"; rm -f "$W/big.img"
    done
  done
  mbs() { python3 -c "print(round($mb*1.048576/($1/1000),1))"; }
  local d0 d1 dd; dd=$(med "$W/bd.dir"); d0=$(med "$W/bd.0"); d1=$(med "$W/bd.1")
  {
    echo "## Dumping ${MEM_MB} MiB of touched memory (\`ferry checkpoint --keep-running\`; 5 runs)"
    echo
    echo "The plain CRIU image directory (\`--images-dir\`) is the baseline: the same CRIU dump with no"
    echo "ferry image file around it. MB/s counts the ${MEM_MB} MiB of touched memory."
    echo
    echo "| output | ms | MB/s | image MiB | ms vs CRIU directory |"
    echo "|---|---|---|---|---|"
    echo "| plain CRIU image directory | $(fmt "$W/bd.dir") | $(mbs "$dd") | $(du -sm "$W/bigdir" | cut -f1) | 1.00 |"
    echo "| ferry image file, uncompressed | $(fmt "$W/bd.0") | $(mbs "$d0") | $(python3 -c "print(round($(med "$W/bds.0")/1048576,1))") | $(ratio "$d0" "$dd") |"
    echo "| ferry image file, zstd level 1 | $(fmt "$W/bd.1") | $(mbs "$d1") | $(python3 -c "print(round($(med "$W/bds.1")/1048576,1))") | $(ratio "$d1" "$dd") |"
    echo
  } >> "$OUT"
  rm -f "$W"/big*.img
  "$FERRY" stop fb-big >/dev/null; "$FERRY" destroy fb-big >/dev/null
}

section_image_format() {
  echo "bench: image format"
  [[ -d $W/bigdir ]] || { echo "bench: no image directory from the big-memory section" >&2; return 1; }
  local dirmb; dirmb=$(du -sm "$W/bigdir" | cut -f1)
  : > "$W/if.ferry"; : > "$W/if.tar"; : > "$W/ifs.ferry"; : > "$W/ifs.tar"; : > "$W/rv.ferry"
  local i
  for i in $(seq "$N"); do
    # write_bench times its own write and read + verify (same zstd level 1, all cores).
    sync; write_bench "$W/bigdir" --out "$W/if.img" | tail -n 1 > "$W/wb$i.json"
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(round(r["write_secs"]*1000)); print(round(r["verify_secs"]*1000), file=sys.stderr)' "$W/wb$i.json" >> "$W/if.ferry" 2>> "$W/rv.ferry"
    stat -c %s "$W/if.img" >> "$W/ifs.ferry"; rm -f "$W/if.img"
    sync; t0=$(now); tar -cf - -C "$W/bigdir" . | zstd -q -1 -T0 > "$W/if.tar.zst"; t1=$(now); ms "$t0" "$t1" >> "$W/if.tar"; stat -c %s "$W/if.tar.zst" >> "$W/ifs.tar"
    rm -f "$W/if.tar.zst"
  done
  local fm tm; fm=$(med "$W/if.ferry"); tm=$(med "$W/if.tar")
  {
    echo "## Image format: writing a CRIU image directory (${dirmb} MiB, ${MEM_MB} MiB touched)"
    echo
    echo "| what | ferry writer | tar \\| zstd -1 -T0 | ferry/tar |"
    echo "|---|---|---|---|"
    echo "| time ms | $(fmt "$W/if.ferry") | $(fmt "$W/if.tar") | $(ratio "$fm" "$tm") |"
    echo "| size bytes | $(med "$W/ifs.ferry") | $(med "$W/ifs.tar") | $(ratio "$(med "$W/ifs.ferry")" "$(med "$W/ifs.tar")") |"
    echo "| read + verify ms (ferry; tar has no checksums to verify) | $(fmt "$W/rv.ferry") | | |"
    echo "| read + verify MB/s (ferry) | $(python3 -c "print(round($dirmb*1.048576/($(med "$W/rv.ferry")/1000),1))") | | |"
    echo
  } >> "$OUT"
  rm -f "$W/if.img" "$W/if.tar.zst"
}

section_migration() {
  echo "bench: migration"
  bench_migration
}

section_file_sync() {
  echo "bench: file sync"
  bench_file_sync
}

# Unprivileged (--userns on) next to privileged (--userns off) ferry containers, the same
# template and init, runs interleaved so that both see the same load. The goal is at most 1.2x.
section_userns() {
  echo "bench: unprivileged vs privileged"
  if ! "$FERRY" create --help 2>/dev/null | grep -q -- '--userns'; then
    echo "bench: userns: this ferry has no unprivileged containers (a baseline before them); nothing to measure"
    return 0
  fi
  local k i
  for k in un pr; do : > "$W/ss.$k"; : > "$W/ck.$k"; : > "$W/rs.$k"; done
  "$FERRY" create fb-un --template "$TPL" --userns on >/dev/null
  "$FERRY" create fb-pr --template "$TPL" --userns off >/dev/null
  for _ in $(seq "$N"); do
    for k in un pr; do
      t0=$(now); "$FERRY" start "fb-$k" >/dev/null; "$FERRY" stop "fb-$k" >/dev/null; t1=$(now); ms "$t0" "$t1" >> "$W/ss.$k"
    done
  done
  for k in un pr; do "$FERRY" start "fb-$k" >/dev/null; done
  for i in $(seq "$N"); do
    for k in un pr; do
      t0=$(now); "$FERRY" checkpoint "fb-$k" --dumpfile "$W/ck-$k.img" >/dev/null; t1=$(now)
      "$FERRY" restore "fb-$k" --dumpfile "$W/ck-$k.img" >/dev/null; t2=$(now); rm -f "$W/ck-$k.img"
      ms "$t0" "$t1" >> "$W/ck.$k"; ms "$t1" "$t2" >> "$W/rs.$k"
    done
  done
  for k in un pr; do "$FERRY" stop "fb-$k" >/dev/null; "$FERRY" destroy "fb-$k" >/dev/null; done
  local su sp cu cp ru rp
  su=$(med "$W/ss.un"); sp=$(med "$W/ss.pr"); cu=$(med "$W/ck.un"); cp=$(med "$W/ck.pr"); ru=$(med "$W/rs.un"); rp=$(med "$W/rs.pr")
  {
    echo "## Unprivileged next to privileged containers (busybox rootfs, one idle init; $N runs each, interleaved)"
    echo
    echo "An unprivileged container (\`--userns on\`) runs in a user namespace of its own with an idmapped"
    echo "root; a privileged one (\`--userns off\`) does not. The goal is at most 1.2 for each ratio."
    echo
    echo "| what | unprivileged ms | privileged ms | unprivileged/privileged |"
    echo "|---|---|---|---|"
    echo "| \`start\`+\`stop\` | $(fmt "$W/ss.un") | $(fmt "$W/ss.pr") | $(ratio "$su" "$sp") |"
    echo "| checkpoint | $(fmt "$W/ck.un") | $(fmt "$W/ck.pr") | $(ratio "$cu" "$cp") |"
    echo "| restore | $(fmt "$W/rs.un") | $(fmt "$W/rs.pr") | $(ratio "$ru" "$rp") |"
    echo "| checkpoint+restore | $(python3 -c "print($cu+$ru)") | $(python3 -c "print($cp+$rp)") | $(ratio "$(python3 -c "print($cu+$ru)")" "$(python3 -c "print($cp+$rp)")") |"
    echo
  } >> "$OUT"
}
