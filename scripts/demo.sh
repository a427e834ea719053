#!/usr/bin/env bash
# ferry's main job, on simulated hosts: two hosts and a client (network namespaces on one
# machine, addresses from 198.18.0.0/15), an sshd on the destination with a key made here.
# Creates and starts containers, shows list, exec and set, checkpoints and restores one, takes
# a snapshot, then live-migrates a container running an echo server while a client keeps one
# TCP connection busy, and prints the migration's timing table and the client's longest pause.
# Cleans up at exit.
# Usage: sudo scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "demo: run as root (containers need namespaces and cgroups)" >&2; exit 1; }

scripts/install-deps.sh
echo "== building ferry"
cargo build --release --locked 2>&1 | tail -n 1
FERRY=$PWD/target/release/ferry

# shellcheck source=lib/simhosts.sh
source scripts/lib/simhosts.sh
W=$(mktemp -d /tmp/ferry-demo.XXXX)
cleanup() {
  set +e
  for h in a b; do
    for ct in $(on "$h" "$FERRY" list -a -H -o ctid 2>/dev/null); do
      on "$h" "$FERRY" stop "$ct" --timeout 2 >/dev/null 2>&1
      on "$h" "$FERRY" destroy "$ct" --force >/dev/null 2>&1
    done
  done
  sim_cleanup
  rm -rf "$W"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; }

step "simulated hosts: a (198.18.0.1), b (198.18.0.2, sshd), client (198.18.0.3)"
sim_init fydemo "$W"
sim_host a 198.18.0.1
sim_host b 198.18.0.2
sim_client cl 198.18.0.3
sim_sshd b

step "a busybox template"
scripts/make-template.sh busybox "$W/tpl"

step "three containers on host a"
for i in 101 102 103; do
  show "ferry create $i --template tpl --hostname web$i --ipadd 198.18.0.$i"
  on a "$FERRY" create "$i" --template "$W/tpl" --hostname "web$i" --ipadd "198.18.0.$i"
  on a "$FERRY" start "$i"
done
show "ferry list -o ctid,status,pid,hostname,ip,numproc,memory"
on a "$FERRY" list -o ctid,status,pid,hostname,ip,numproc,memory

step "exec and set"
show "ferry exec 101 -- ps"
on a "$FERRY" exec 101 -- ps
show "ferry set 102 --ram 128M --cpulimit 50 --numproc 64 --save"
on a "$FERRY" set 102 --ram 128M --cpulimit 50 --numproc 64 --save
show "for CT in \$(ferry list -H -o ctid); do ferry exec \$CT -- hostname; done"
for CT in $(on a "$FERRY" list -H -o ctid); do on a "$FERRY" exec "$CT" -- hostname; done

step "checkpoint and restore 103"
show "ferry checkpoint 103 --dumpfile 103.img"
on a "$FERRY" checkpoint 103 --dumpfile "$W/103.img"
show "ferry image inspect 103.img"
on a "$FERRY" image inspect "$W/103.img" > "$W/inspect.txt"
head -n 30 "$W/inspect.txt"
show "ferry restore 103 --dumpfile 103.img"
on a "$FERRY" restore 103 --dumpfile "$W/103.img"
on a "$FERRY" list -o ctid,status,pid

step "a stateful snapshot of 102"
show "ferry snapshot create 102 --name demo"
on a "$FERRY" snapshot create 102 --name demo
show "ferry snapshot list 102"
on a "$FERRY" snapshot list 102

step "live migration of 101 from a to b while a client keeps one TCP connection busy"
on a "$FERRY" exec 101 -- sh -c 'nc -ll -p 8000 -e /bin/cat </dev/null >/dev/null 2>&1 &'
sleep 0.5
nsenter --net=/run/netns/fydemo-cl python3 scripts/lib/tcp_client.py 198.18.0.101 8000 8 > "$W/client.out" 2>&1 &
CLIENT=$!
sleep 3
show "ferry migrate 101 root@198.18.0.2 --times"
on a "$FERRY" migrate 101 root@198.18.0.2 --times \
  --ssh-opts "$(sim_ssh_opts)" --remote-ferry "env $(sim_env b) $FERRY"
wait "$CLIENT" || true
cat "$W/client.out"
echo "client's neighbour entry for 198.18.0.101: $(ip -n fydemo-cl neigh show 198.18.0.101)"
echo "host b's eth0: $(ip -n fydemo-b -br link show eth0)"
show "host a: ferry list -a";  on a "$FERRY" list -a -o ctid,status,ip
show "host b: ferry list";     on b "$FERRY" list -o ctid,status,pid,ip,numproc

step "done"
