# Migration benchmark (sourced by sections.sh; uses bench.sh's helpers and variables).
#
# 1. Frozen time of `ferry migrate` (from --json) for a container running an echo server with a
#    client holding one TCP connection to it, migrated A→B and back alternately $N times, next
#    to the bare `criu dump` + `criu restore` time of the same container (made and started by
#    ferry with the same config, then moved by the criu CLI alone, its host side set by hand),
#    and of a minimal container made by hand with the same rootfs, echo server and client,
#    moved between the same two hosts the same way.
# 2. Image transfer rate of a container holding $MEM_MB MiB of touched memory (image_bytes /
#    image_transfer_ms, no compression so the wire carries every byte) over both data channels
#    (`--data-channel ssh`, the image inside the ssh connection; `--data-channel tcp`, a direct
#    TCP connection), next to iperf3 between the two hosts' namespaces over the same veth path,
#    and raw ssh throughput (ssh's cipher is the ceiling of the ssh channel).

MIG_P=${MIG_P:-fybm}            # netns prefix: fybm-sw, fybm-a, fybm-b, fybm-cl
MIG_NET=198.18.4
MIG_CT_IP=$MIG_NET.101          # ferry's echo container
MIG_BH_IP=$MIG_NET.100          # the by-hand container
MIG_BH_PID=
MIG_SC_IP=$MIG_NET.102          # the same container as ferry's, moved by the bare CLI
MIG_SC_PID=
MIG_MOVED_PID=                  # set by mig_criu_move

mig_json() {  # FILE FIELD
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

mig_other() { [[ $1 == a ]] && echo b || echo a; }
mig_ip() { [[ $1 == a ]] && echo "$MIG_NET.1" || echo "$MIG_NET.2"; }

# mig_ferry SRC CTID COMPRESS OUT [ARGS...]: one `ferry migrate` from host SRC to the other host.
mig_ferry() {
  local src=$1 ct=$2 lvl=$3 out=$4 dst; dst=$(mig_other "$1"); shift 4
  on "$src" "$FERRY" migrate "$ct" "root@$(mig_ip "$dst")" --compress "$lvl" --json "$@" \
    --ssh-opts "$(sim_ssh_opts)" --remote-ferry "env $(sim_env "$dst") $FERRY" > "$out" 2> "$out.err" || {
    echo "bench: migration of $ct from $src failed:" >&2; cat "$out.err" >&2; return 1; }
}

# mig_iperf JSON SECS: one iperf3 run between the two host namespaces (server in b, client in
# a), the same veth path the image takes; prints Mbit/s.
mig_iperf() {
  nsenter --net="/run/netns/$MIG_P-b" iperf3 -s -1 -B "$MIG_NET.2" >/dev/null 2>&1 &
  local srv=$!; sleep 0.3
  nsenter --net="/run/netns/$MIG_P-a" iperf3 -c "$MIG_NET.2" -t "$2" -J > "$1"
  wait "$srv" 2>/dev/null || true
  python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e6,1))' "$1"
}

# mig_raw_ssh: raw ssh throughput over the same path, what any ssh-carried stream can reach:
# $MEM_MB MiB through `ssh 'cat >/dev/null'`, less the time of an empty ssh session; Mbit/s.
mig_raw_ssh() {
  local t0 t1 t2
  t0=$(now); nsenter --net="/run/netns/$MIG_P-a" ssh $(sim_ssh_opts) "root@$MIG_NET.2" true; t1=$(now)
  nsenter --net="/run/netns/$MIG_P-a" sh -c "dd if=/dev/zero bs=1M count=$MEM_MB status=none | ssh $(sim_ssh_opts) root@$MIG_NET.2 'cat >/dev/null'"
  t2=$(now)
  python3 -c "print(round($MEM_MB*1048576*8/(max(($t2-$t1)-($t1-$t0), 1)/1e9)/1e6,1))"
}

mig_client() {  # IP SECONDS OUT: a client in its own netns, in the background
  nsenter --net="/run/netns/$MIG_P-cl" python3 scripts/lib/tcp_client.py "$1" 8000 "$2" --json > "$3" 2>&1 &
}

# The by-hand container: fresh pid/mnt/uts/ipc/net namespaces started inside host a's netns,
# a routed veth (venet style) and an echo server, as in shared/reference/migration-by-hand.sh.
mig_byhand_start() {
  local d=$1 rfs=$1/rootfs
  mkdir -p "$d"; cp -a "$TPL" "$rfs"; mkdir -p "$rfs/oldroot"
  cat > "$d/init.sh" <<INIT
#!/bin/sh
mount --make-rprivate /
mount --bind $rfs $rfs
mount -t proc proc $rfs/proc
mount -t tmpfs tmpfs $rfs/dev
mknod -m 666 $rfs/dev/null c 1 3
cd $rfs; pivot_root . oldroot; /bin/busybox umount -l /oldroot
exec /bin/busybox setsid /bin/sh -c 'exec </dev/null >/dev/null 2>&1 10<&- 251>&-; while [ ! -e /tmp/go ]; do sleep 0.05; done; ip link set lo up; exec nc -ll -p 8000 -e /bin/cat'
INIT
  chmod +x "$d/init.sh"
  nsenter --net="/run/netns/$MIG_P-a" unshare -p -f -u -i -n -m "$d/init.sh" </dev/null >/dev/null 2>&1 &
  local u=$! _
  for _ in $(seq 100); do MIG_BH_PID=$(pgrep -P "$u" || true); [[ -n $MIG_BH_PID ]] && break; sleep 0.05; done
  [[ -n $MIG_BH_PID ]] || { echo "bench: the by-hand container did not start" >&2; return 1; }
  ip -n "$MIG_P-a" link add vbh100 type veth peer name eth0 netns "/proc/$MIG_BH_PID/ns/net"
  nsenter -t "$MIG_BH_PID" -n sh -c "ip addr add $MIG_BH_IP/32 dev eth0; ip link set eth0 up; ip route add default dev eth0"
  mig_byhand_plumb a
  touch "$rfs/tmp/go"
  sleep 0.3
}

# Host side of the by-hand container's network on host H: veth up, proxy ARP, /32 route.
mig_byhand_plumb() {
  local ns=$MIG_P-$1
  ip -n "$ns" link set vbh100 up
  nsenter --net="/run/netns/$ns" sysctl -qw net.ipv4.conf.vbh100.proxy_arp=1
  ip -n "$ns" route replace "$MIG_BH_IP/32" dev vbh100
  ip -n "$ns" neigh replace proxy "$MIG_BH_IP" dev eth0
}

# mig_criu_move STEM SRC IMG PID ROOT INNER OUTER WHAT: the timed part of one bare move of the
# tree of PID from host SRC to the other one: criu dump there, criu restore on the other host
# (same image directory: no copy), its veth INNER joined to the host's OUTER. Sets
# MIG_MOVED_PID to the restored tree's pid; appends dump ms, restore ms and both to
# STEM.{dump,restore,both}.
mig_criu_move() {
  local stem=$1 src=$2 img=$3 pid=$4 root=$5 inner=$6 outer=$7 what=$8 dst t0 t1 t2; dst=$(mig_other "$src")
  rm -rf "$img" "$img.pid"; mkdir -p "$img"
  t0=$(now)
  nsenter --net="/run/netns/$MIG_P-$src" criu dump -t "$pid" -D "$img" --tcp-established -o dump.log ||
    { echo "bench: bare criu dump of $what failed:" >&2; grep -E 'Error' "$img/dump.log" >&2; return 1; }
  t1=$(now)
  nsenter --net="/run/netns/$MIG_P-$dst" criu restore -D "$img" --root "$root" --tcp-established -d \
    -o restore.log --pidfile "$img.pid" --external "veth[$inner]:$outer" ||
    { echo "bench: bare criu restore of $what failed:" >&2; grep -E 'Error' "$img/restore.log" >&2; return 1; }
  t2=$(now)
  MIG_MOVED_PID=$(cat "$img.pid")
  ms "$t0" "$t1" >> "$stem.dump"; ms "$t1" "$t2" >> "$stem.restore"
  python3 -c "print(($t2-$t0)//1000000)" >> "$stem.both"
}

# One bare move of the by-hand container from SRC to the other host, then its network
# plumbing there.
mig_byhand_move() {
  local stem=$1 src=$2 img=$3 dst; dst=$(mig_other "$src")
  mig_criu_move "$stem" "$src" "$img" "$MIG_BH_PID" "$W/mig/bh/rootfs" eth0 vbh100 "the by-hand container" || return 1
  MIG_BH_PID=$MIG_MOVED_PID
  ip -n "$MIG_P-$src" neigh del proxy "$MIG_BH_IP" dev eth0 2>/dev/null || true
  mig_byhand_plumb "$dst"
  nsenter --net="/run/netns/$MIG_P-$dst" arping -q -c1 -U -I eth0 -s "$MIG_BH_IP" "$MIG_BH_IP" >/dev/null 2>&1 &
}

# The kind of both migrating containers: privileged where ferry has unprivileged ones (the
# bare criu CLI cannot move an unprivileged container's /dev, which binds the host's nodes,
# without ferry's external mounts; the userns section compares the two kinds).
mig_kind() {
  if "$FERRY" create --help 2>/dev/null | grep -q -- '--userns'; then echo "--userns off"; fi
}

# The same container as ferry's, for the bare CLI: created and started by ferry on host a
# (venet address, echo server), then only ever moved by criu (ferry's own state of it goes
# stale and is only used to destroy it at the end).
mig_same_start() {
  # shellcheck disable=SC2046 # mig_kind: zero or two words
  on a "$FERRY" create fb-bare --template "$TPL" --ipadd "$MIG_SC_IP" $(mig_kind) >/dev/null
  on a "$FERRY" start fb-bare >/dev/null
  on a "$FERRY" exec fb-bare -- sh -c 'nc -ll -p 8000 -e /bin/cat </dev/null >/dev/null 2>&1 &'
  MIG_SC_PID=$(on a "$FERRY" status fb-bare --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
  MIG_SC_IF=$(ip -n "$MIG_P-a" -o link show | grep -o 'fvfb-bare[^:@]*' | head -1)
  MIG_SC_MAC=$(ip -n "$MIG_P-a" -o link show dev "$MIG_SC_IF" | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2)
  MIG_SC_ROOT=$W/mig/sim/a/data/root/fb-bare
  [[ -n $MIG_SC_PID && -n $MIG_SC_IF && -n $MIG_SC_MAC ]] || { echo "bench: the container for the bare moves did not start" >&2; return 1; }
  sleep 0.3
}

# One bare move of that container from SRC to the other host, then the host side ferry
# would make there, by hand: the venet host end's MAC and flags, the /32 route and the proxy
# ARP entry.
mig_same_move() {
  local stem=$1 src=$2 img=$3 dst; dst=$(mig_other "$src")
  mig_criu_move "$stem" "$src" "$img" "$MIG_SC_PID" "$MIG_SC_ROOT" venet0 "$MIG_SC_IF" "ferry's container" || return 1
  MIG_SC_PID=$MIG_MOVED_PID
  ip -n "$MIG_P-$src" route del "$MIG_SC_IP/32" 2>/dev/null || true
  ip -n "$MIG_P-$src" neigh del proxy "$MIG_SC_IP" dev eth0 2>/dev/null || true
  ip -n "$MIG_P-$dst" link set dev "$MIG_SC_IF" address "$MIG_SC_MAC" arp off multicast off up
  ip -n "$MIG_P-$dst" route replace "$MIG_SC_IP/32" dev "$MIG_SC_IF"
  ip -n "$MIG_P-$dst" neigh replace proxy "$MIG_SC_IP" dev eth0
  nsenter --net="/run/netns/$MIG_P-$dst" arping -q -c1 -U -I eth0 -s "$MIG_SC_IP" "$MIG_SC_IP" >/dev/null 2>&1 &
}

# N bare moves back and forth, A→B first, with a client on IP during each: MOVE is
# mig_same_move or mig_byhand_move. Leaves STEM.{dump,restore,both,pause}.
mig_bare_runs() {  # STEM IP MOVE IMG WHAT
  local stem=$1 ip=$2 move=$3 img=$4 what=$5 i src=a cl
  : > "$stem.dump"; : > "$stem.restore"; : > "$stem.both"; : > "$stem.pause"
  for i in $(seq "$N"); do
    mig_client "$ip" 2.5 "$stem-c$i.json"; cl=$!
    sleep 1
    "$move" "$stem" "$src" "$img"
    wait "$cl" || { echo "bench: the client's connection to $what broke: $(cat "$stem-c$i.json")" >&2; return 1; }
    mig_json "$stem-c$i.json" longest_pause_ms >> "$stem.pause"
    src=$(mig_other "$src")
  done
}

mig_cleanup() {
  set +e
  [[ -n ${MIG_BH_PID:-} ]] && kill -9 "$MIG_BH_PID" 2>/dev/null
  MIG_BH_PID=
  [[ -n ${MIG_SC_PID:-} ]] && kill -9 "$MIG_SC_PID" 2>/dev/null
  MIG_SC_PID=
  local h ct
  for h in a b; do
    [[ -e /run/netns/$MIG_P-$h ]] || continue
    for ct in $(on "$h" "$FERRY" list -a -H -o ctid 2>/dev/null); do
      on "$h" "$FERRY" stop "$ct" --timeout 1 >/dev/null 2>&1; on "$h" "$FERRY" destroy "$ct" --force >/dev/null 2>&1
    done
  done
  [[ ${SIM_PREFIX:-} == "$MIG_P" ]] && sim_cleanup
  for h in a b; do bench_rm_cgroup "$MIG_P-$h"; done
}

bench_migration() {
  # A fresh directory: with --baseline the section runs twice in one run.
  local mw=$W/mig; rm -rf "$mw"; mkdir -p "$mw"
  sim_init "$MIG_P" "$mw/sim"
  sim_host a "$MIG_NET.1"
  sim_host b "$MIG_NET.2"
  sim_client cl "$MIG_NET.3"
  sim_sshd a; sim_sshd b
  local i src

  # --- ferry: echo container, live migrations back and forth ------------------------------
  # shellcheck disable=SC2046 # mig_kind: zero or two words
  on a "$FERRY" create fb-mig --template "$TPL" --ipadd "$MIG_CT_IP" $(mig_kind) >/dev/null
  on a "$FERRY" start fb-mig >/dev/null
  on a "$FERRY" exec fb-mig -- sh -c 'nc -ll -p 8000 -e /bin/cat </dev/null >/dev/null 2>&1 &'
  sleep 0.5
  # A first migration, not counted, sizes the client's run so it spans a whole migration.
  mig_ferry a fb-mig 1 "$mw/warm.json"
  # (A pause is counted whole even when it outlasts the client's run: it waits for the echo.)
  local cdur; cdur=$(python3 -c "print(round(1.5 + $(mig_json "$mw/warm.json" total_ms)/1000, 1))")
  : > "$mw/f.frozen"; : > "$mw/f.fsync"; : > "$mw/f.dump"; : > "$mw/f.xfer"; : > "$mw/f.restore"; : > "$mw/f.announce"; : > "$mw/f.total"; : > "$mw/f.pause"
  src=b
  for i in $(seq "$N"); do
    mig_client "$MIG_CT_IP" "$cdur" "$mw/fc$i.json"; local cl=$!
    sleep 1
    mig_ferry "$src" fb-mig 1 "$mw/f$i.json"
    wait "$cl" || { echo "bench: the client's connection to ferry's container broke: $(cat "$mw/fc$i.json")" >&2; return 1; }
    mig_json "$mw/f$i.json" frozen_ms >> "$mw/f.frozen"; mig_json "$mw/f$i.json" dump_ms >> "$mw/f.dump"
    mig_json "$mw/f$i.json" image_transfer_ms >> "$mw/f.xfer"; mig_json "$mw/f$i.json" restore_ms >> "$mw/f.restore"
    mig_json "$mw/f$i.json" announce_ms >> "$mw/f.announce"; mig_json "$mw/f$i.json" total_ms >> "$mw/f.total"
    python3 -c 'import json,sys; print((json.load(open(sys.argv[1]))["final_sync"] or {}).get("ms", 0))' "$mw/f$i.json" >> "$mw/f.fsync"
    mig_json "$mw/fc$i.json" longest_pause_ms >> "$mw/f.pause"
    src=$(mig_other "$src")
  done
  on "$src" "$FERRY" destroy fb-mig --force >/dev/null

  # --- bare criu: the same container, dump on one host, restore on the other ---------------
  mig_same_start
  mig_bare_runs "$mw/s" "$MIG_SC_IP" mig_same_move "$mw/simg" "the bare-moved container"
  kill -9 "$MIG_SC_PID" 2>/dev/null; MIG_SC_PID=
  on a "$FERRY" destroy fb-bare --force >/dev/null

  # --- bare criu: the by-hand echo container, dump on one host, restore on the other -------
  mig_byhand_start "$mw/bh"
  mig_bare_runs "$mw/b" "$MIG_BH_IP" mig_byhand_move "$mw/bimg" "the by-hand container"
  kill -9 "$MIG_BH_PID" 2>/dev/null; MIG_BH_PID=

  # --- image transfer of a container with touched memory ------------------------------------
  on a "$FERRY" create fb-migbig --template "$TPL" >/dev/null
  cp "$W/touch_mem" "$mw/sim/a/data/private/fb-migbig/bin/touch_mem"
  on a "$FERRY" start fb-migbig >/dev/null
  on a "$FERRY" exec fb-migbig -- sh -c "touch_mem $MEM_MB </dev/null >/dev/null 2>&1 &"
  sleep $(( MEM_MB / 128 + 2 ))
  # Both channels in turn, each migration going the other way than the one before, and one
  # iperf3 and one raw ssh run after each pair: the machine is shared, so its load changes
  # during a run; interleaved, the peers see the same load as ferry.
  local ch secs=3; [[ $QUICK -eq 1 ]] && secs=1
  for ch in ssh tcp; do : > "$mw/x$ch.rate"; : > "$mw/x$ch.frozen"; : > "$mw/x$ch.bytes"; done
  : > "$mw/iperf"; : > "$mw/ssh"
  src=a
  for i in $(seq "$N"); do
    for ch in ssh tcp; do
      mig_ferry "$src" fb-migbig 0 "$mw/x$ch$i.json" --data-channel "$ch"
      python3 - "$mw/x$ch$i.json" >> "$mw/x$ch.rate" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(round(r["image_bytes"] * 8 / (max(r["image_transfer_ms"], 1) / 1000) / 1e6, 1))
PY
      mig_json "$mw/x$ch$i.json" frozen_ms >> "$mw/x$ch.frozen"; mig_json "$mw/x$ch$i.json" image_bytes >> "$mw/x$ch.bytes"
      src=$(mig_other "$src")
    done
    mig_iperf "$mw/iperf$i.json" "$secs" >> "$mw/iperf"
    mig_raw_ssh >> "$mw/ssh"
  done
  on "$src" "$FERRY" destroy fb-migbig --force >/dev/null

  local cipher
  cipher=$(nsenter --net="/run/netns/$MIG_P-a" ssh -v $(sim_ssh_opts) -o LogLevel=DEBUG1 "root@$MIG_NET.2" true 2>&1 |
    awk '/kex: server->client cipher:/ {print $5; exit}')

  mig_cleanup
  local fz bb rssh rtcp ip sh
  fz=$(med "$mw/f.frozen"); bb=$(med "$mw/s.both"); rssh=$(med "$mw/xssh.rate"); rtcp=$(med "$mw/xtcp.rate")
  ip=$(med "$mw/iperf"); sh=$(med "$mw/ssh")
  {
    echo "## Live migration between two simulated hosts ($N migrations, alternately A→B and B→A)"
    echo
    echo "An echo server (busybox \`nc -ll -e /bin/cat\`) in the container, and a client in a third"
    echo "namespace doing a round trip every 20 ms on one TCP connection during each migration."
    echo "The peer (\"bare\") is the same container, made and started by ferry with the same config,"
    echo "rootfs and echo server, then moved between the same two hosts by the criu CLI alone:"
    echo "\`criu dump --tcp-established\` on one host, \`criu restore --tcp-established\` on the other,"
    echo "reading the same image directory (no copy, no compression, no checksums), then the host"
    echo "side ferry would make (venet end's MAC and flags, route, proxy ARP) set by hand, untimed."
    echo "The bare times are the two CLI runs whole (CRIU's start-up included). A minimal container"
    echo "made by hand (\"minimal\": only /, /proc and /dev mounted, one process) is moved the same"
    echo "way, for scale. ferry's frozen time spans freeze → dump → final sync → image through"
    echo "ssh → restore → network on the destination → resumed (the dump's start-up, before the"
    echo "freeze, is not in it; its dump row is from the freeze)."
    echo
    echo "| what | ferry ms | bare, same container ms | ferry/bare | bare, minimal container ms |"
    echo "|---|---|---|---|---|"
    echo "| frozen (ferry) vs dump + restore (bare) | $(fmt "$mw/f.frozen") | $(fmt "$mw/s.both") | $(ratio "$fz" "$bb") | $(fmt "$mw/b.both") |"
    echo "| dump | $(fmt "$mw/f.dump") | $(fmt "$mw/s.dump") | $(ratio "$(med "$mw/f.dump")" "$(med "$mw/s.dump")") | $(fmt "$mw/b.dump") |"
    echo "| restore | $(fmt "$mw/f.restore") | $(fmt "$mw/s.restore") | $(ratio "$(med "$mw/f.restore")" "$(med "$mw/s.restore")") | $(fmt "$mw/b.restore") |"
    echo "| final file sync, while frozen (ferry only) | $(fmt "$mw/f.fsync") | | | |"
    echo "| image transfer (ferry only) | $(fmt "$mw/f.xfer") | | | |"
    echo "| announce, after the container runs again (ferry only) | $(fmt "$mw/f.announce") | | | |"
    echo "| whole \`ferry migrate\` (incl. preflight, file sync, cleanup) | $(fmt "$mw/f.total") | | | |"
    echo "| client's longest pause | $(fmt "$mw/f.pause") | $(fmt "$mw/s.pause") | $(ratio "$(med "$mw/f.pause")" "$(med "$mw/s.pause")") | $(fmt "$mw/b.pause") |"
    echo
    echo "Goal (issue 7): frozen within 1.3x of bare dump + restore of the same container."
    echo
    echo "## Migration image transfer ($MEM_MB MiB of touched memory, \`--compress 0\`; $N migrations per channel)"
    echo
    echo "Rate = image_bytes / image_transfer_ms from \`ferry migrate --json\`, over each data channel:"
    echo "\`--data-channel ssh\` (the image in ferry's frames inside the ssh connection) and"
    echo "\`--data-channel tcp\` (a direct TCP connection, token-authenticated, unencrypted), alternating"
    echo "in one run. iperf3: server in host B's namespace bound to $MIG_NET.2, client in host A's,"
    echo "${secs} s. ssh: \`dd\` of $MEM_MB MiB into \`ssh root@B 'cat >/dev/null'\` with the same options"
    echo "(cipher ${cipher:-default}), less the time of an empty ssh session. One iperf3 and one ssh run"
    echo "follow each pair of migrations ($N each), so that all see the same load of the shared machine."
    echo
    echo "| what | Mbit/s | of iperf3 | of raw ssh |"
    echo "|---|---|---|---|"
    echo "| ferry, \`--data-channel tcp\` (image $(python3 -c "print(round($(med "$mw/xtcp.bytes")/1048576,1))") MiB) | $(fmt "$mw/xtcp.rate") | $(ratio "$rtcp" "$ip") | |"
    echo "| ferry, \`--data-channel ssh\` (image $(python3 -c "print(round($(med "$mw/xssh.bytes")/1048576,1))") MiB) | $(fmt "$mw/xssh.rate") | $(ratio "$rssh" "$ip") | $(ratio "$rssh" "$sh") |"
    echo "| iperf3, same veth path | $(fmt "$mw/iperf") | 1.00 | |"
    echo "| raw ssh, same path | $(fmt "$mw/ssh") | $(ratio "$sh" "$ip") | 1.00 |"
    echo "| frozen time, \`tcp\` / \`ssh\`, ms | $(fmt "$mw/xtcp.frozen") / $(fmt "$mw/xssh.frozen") | | |"
    echo
    echo "Goal (issue 7): at least 70% of iperf3. Through ssh, raw ssh is the ceiling that applies;"
    echo "the tcp channel is for trusted migration networks only (no encryption)."
    echo
  } >> "$OUT"
}
