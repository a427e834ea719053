# Simulated hosts on one machine, for the demo and the benchmarks (sourced, not run).
# Each host is a network namespace joined by a veth to a bridge in a "switch" namespace, with an
# address from 198.18.0.0/15 (reserved for benchmarking; nothing is ever routed elsewhere), its
# own ferry data dir, run dir and cgroup parent. Commands run in a host with `nsenter --net`
# only, so every host shares the machine's mount namespace (ferry's mounts stay visible).
#
#   sim_init PREFIX WORKDIR      sim_host NAME IP      sim_client NAME IP
#   sim_sshd NAME                (an sshd in that host, key-only, for root)
#   on NAME CMD...               (run CMD in that host with its ferry environment)
#   sim_cleanup

SIM_PREFIX=${SIM_PREFIX:-fyd}
SIM_HOSTS=()

sim_init() {
  SIM_PREFIX=$1 SIM_DIR=$2
  mkdir -p "$SIM_DIR"
  # The simulated hosts' own (empty) host config: never the machine's /etc/ferry.
  : > "$SIM_DIR/ferry.toml"
  ip netns add "$SIM_PREFIX-sw"
  ip -n "$SIM_PREFIX-sw" link set lo up
  ip -n "$SIM_PREFIX-sw" link add br0 type bridge
  ip -n "$SIM_PREFIX-sw" link set br0 up
  ssh-keygen -q -t ed25519 -N '' -f "$SIM_DIR/id_ed25519" -C ferry-sim >/dev/null
}

# sim_node NAME IP: a namespace plugged into the switch.
sim_node() {
  local name=$1 ip=$2 ns="$SIM_PREFIX-$1"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "$ns-p" type veth peer name eth0 netns "$ns"
  ip link set "$ns-p" netns "$SIM_PREFIX-sw"
  ip -n "$SIM_PREFIX-sw" link set "$ns-p" master br0 up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  SIM_HOSTS+=("$name")
}

sim_host() {
  local name=$1 ip=$2
  sim_node "$name" "$ip"
  ip netns exec "$SIM_PREFIX-$name" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.proxy_arp=0
  mkdir -p "$SIM_DIR/$name/data" "$SIM_DIR/$name/run"
}

sim_client() { sim_node "$1" "$2"; }

# The environment that makes a ferry command act as host NAME.
sim_env() {
  echo "FERRY_DATA_DIR=$SIM_DIR/$1/data FERRY_RUN_DIR=$SIM_DIR/$1/run FERRY_CGROUP_PARENT=$SIM_PREFIX-$1 FERRY_HOST_CONFIG=$SIM_DIR/ferry.toml"
}

on() {
  local name=$1; shift
  # shellcheck disable=SC2046
  nsenter --net="/run/netns/$SIM_PREFIX-$name" env $(sim_env "$name") "$@"
}

sim_sshd() {
  local name=$1 d="$SIM_DIR/$1/sshd"
  mkdir -p "$d" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$d/host_key" >/dev/null
  cp "$SIM_DIR/id_ed25519.pub" "$d/authorized_keys"
  cat > "$d/sshd_config" <<CFG
Port 22
HostKey $d/host_key
AuthorizedKeysFile $d/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $d/sshd.pid
AcceptEnv FERRY_*
CFG
  nsenter --net="/run/netns/$SIM_PREFIX-$name" /usr/sbin/sshd -f "$d/sshd_config"
}

# ssh options a source host uses to reach the others.
sim_ssh_opts() {
  echo "-i $SIM_DIR/id_ed25519 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
}

sim_cleanup() {
  set +e
  local h
  for h in "${SIM_HOSTS[@]}"; do
    [[ -f $SIM_DIR/$h/sshd/sshd.pid ]] && kill "$(cat "$SIM_DIR/$h/sshd/sshd.pid")" 2>/dev/null
    ip netns del "$SIM_PREFIX-$h" 2>/dev/null
    # Each host's cgroup parent (FERRY_CGROUP_PARENT, see sim_env), once its containers are
    # gone: only empty directories are removed.
    local d
    for d in /sys/fs/cgroup/*/"$SIM_PREFIX-$h" /sys/fs/cgroup/"$SIM_PREFIX-$h"; do
      [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
  done
  ip netns del "$SIM_PREFIX-sw" 2>/dev/null
  SIM_HOSTS=()
}
