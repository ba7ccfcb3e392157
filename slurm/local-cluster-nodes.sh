# The multi-node part of slurm/local-cluster.sh (sourced by it for --nodes N with N >= 2; it
# uses that script's variables and helpers: DIR, PORT, CPUS, WAIT, CONF, pid_alive, stop_one, ...).
#
# Layout, for N nodes:
#   bridge   $NET-br (10.199.0.1/24) in the host's namespace: slurmctld and the clients (sbatch,
#            srun, squeue run outside the nodes) talk to the nodes through it
#   nodeK    network namespace $NET-nodeK, a veth pair $NET-vK <-> eth0 on the bridge, address
#            10.199.0.(10+K); a UTS namespace with host name nodeK, held by a `sleep` process
#            (holder.pid): every process of the node (slurmd, its slurmstepds, the tasks) is
#            started inside both, so that Open MPI sees N hosts (its shared-memory segment and
#            session-directory names contain the host name) and MPI_Get_processor_name says nodeK
#   slurmd   `slurmd -N nodeK`, spool, log and PID file in $DIR/node/nodeK/
# Everything created is written to $DIR/created (namespaces, links) and removed by `down`.
NET=${MOR_SLURM_NETNS:-mor}
SUBNET=${MOR_SLURM_SUBNET:-10.199.0}
LINK_RATE=${MOR_SLURM_LINK:-}
BRIDGE=$NET-br
ns_of() { echo "$NET-$1"; }                  # ns_of nodeK
addr_of() { echo "$SUBNET.$((10 + ${1#node}))"; }

# ---- can this machine make namespaces? (the multi-node tests report Skipped if not)
netns_probe() {
  local why="" ns=$NET-probe$$ br=$NET-prb$$ err
  if [ "$(id -u)" -ne 0 ]; then why="not root: network namespaces and a bridge need CAP_SYS_ADMIN and CAP_NET_ADMIN"
  elif ! command -v ip > /dev/null || ! command -v nsenter > /dev/null || ! command -v unshare > /dev/null; then
    why="ip (iproute2), nsenter or unshare (util-linux) missing"
  elif ! err=$(ip netns add "$ns" 2>&1); then why="ip netns add failed: $err"
  elif ! err=$(ip link add "$br" type bridge 2>&1); then why="ip link add type bridge failed: $err"
  elif ! err=$(ip netns exec "$ns" unshare --uts true 2>&1); then why="unshare --uts failed: $err"
  fi
  ip link del "$br" 2> /dev/null || true
  ip netns del "$ns" 2> /dev/null || true
  if [ -n "$why" ]; then echo "local-cluster: no multi-node cluster here: $why"; return 77; fi
  echo "local-cluster: network namespaces, bridges and UTS namespaces can be created here"
}

node_list() { local k; for k in $(seq 1 "$NODES"); do echo "node$k"; done; }
holder_pid() { pid_alive "$DIR/node/$1/holder.pid" sleep; }
nexec() {  # nexec NODE CMD...: CMD in the node's network and UTS namespaces
  local node=$1 pid; shift
  pid=$(holder_pid "$node") || die "$node is not running (no holder process: lost or never started?)"
  nsenter -t "$pid" --net --uts -- "$@"
}
created() { echo "$1 $2" >> "$DIR/created"; }

start_holder() {  # start_holder NODE: the node's UTS namespace (host name NODE) inside its network namespace
  local node=$1
  mkdir -p "$DIR/node/$node/spool" "$DIR/node/$node/tmp"
  # the holder: the node's UTS namespace lives as long as it does. sh writes its own PID,
  # then becomes `sleep` (exec keeps the PID)
  rm -f "$DIR/node/$node/holder.pid"
  ip netns exec "$(ns_of "$node")" unshare --uts -- sh -c 'echo $$ > "$0"; hostname "$1"; exec sleep infinity' \
    "$DIR/node/$node/holder.pid" "$node" < /dev/null > /dev/null 2>&1 9>&- &
  for _ in $(seq 50); do holder_pid "$node" > /dev/null && break; sleep 0.1; done
  holder_pid "$node" > /dev/null || die "the holder process of $node did not start"
  [ "$(nexec "$node" hostname)" = "$node" ] || die "$node: host name not set in its UTS namespace"
}
start_slurmd() {
  nexec "$1" /usr/sbin/slurmd -N "$1" -f "$CONF" 9>&- || die "slurmd of $1 did not start (log: $DIR/node/$1/slurmd.log)"
}

net_up() {
  local k node ns veth err
  : > "$DIR/created"
  ip link del "$BRIDGE" 2> /dev/null || true   # a leftover of ours (same name) from a killed run
  ip link add "$BRIDGE" type bridge || die "cannot create the bridge $BRIDGE"
  created link "$BRIDGE"
  ip addr add "$SUBNET.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  for node in $(node_list); do
    k=${node#node} ns=$(ns_of "$node") veth=$NET-v$k
    ip netns del "$ns" 2> /dev/null || true
    ip netns add "$ns" || die "cannot create the network namespace $ns"
    created netns "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns" || die "cannot create the veth pair $veth"
    created link "$veth"
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$ns" addr add "$(addr_of "$node")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    start_holder "$node"
  done
  echo "unshaped" > "$DIR/link"
  if [ -n "$LINK_RATE" ]; then shape_links; fi
}

# A token bucket on both ends of every node's link: the host side shapes what flows into the
# node, eth0 inside the namespace what flows out. The bucket holds 2 ms of traffic (at least
# 64 KiB): less starves the link at high rates (the kernel refills it only on timer ticks).
shape_links() {
  local bits burst node err
  bits=$(rate_bits "$LINK_RATE") || { echo "unshaped: cannot parse MOR_SLURM_LINK=$LINK_RATE" > "$DIR/link"; say "cannot parse MOR_SLURM_LINK=$LINK_RATE: links unshaped"; return 0; }
  burst=$((bits / 8 / 500)); [ "$burst" -ge 65536 ] || burst=65536
  for node in $(node_list); do
    if ! err=$(tc qdisc replace dev "$NET-v${node#node}" root tbf rate "$LINK_RATE" burst "$burst" latency 50ms 2>&1) ||
       ! err=$(ip netns exec "$(ns_of "$node")" tc qdisc replace dev eth0 root tbf rate "$LINK_RATE" burst "$burst" latency 50ms 2>&1); then
      echo "unshaped: tc tbf refused: $err" > "$DIR/link"
      say "tc refused the token bucket ($err): links unshaped"
      return 0
    fi
  done
  echo "$LINK_RATE" > "$DIR/link"
}
rate_bits() {  # 10gbit -> 10000000000 (tc's units: kbit, mbit, gbit, bit)
  local v=$1 n u
  n=${v%%[!0-9]*} u=${v#"$n"}
  [ -n "$n" ] || return 1
  case "$u" in gbit) echo $((n * 1000000000)) ;; mbit) echo $((n * 1000000)) ;; kbit) echo $((n * 1000)) ;; bit|'') echo "$n" ;; *) return 1 ;; esac
}

net_down() {
  local kind name pid
  [ -f "$DIR/created" ] || return 0
  # processes still inside our namespaces (tasks of a killed job, the holders): by PID, then the namespaces
  while read -r kind name; do
    [ "$kind" = netns ] || continue
    for pid in $(ip netns pids "$name" 2> /dev/null); do kill -KILL "$pid" 2> /dev/null || true; done
  done < "$DIR/created"
  tac "$DIR/created" | while read -r kind name; do
    case "$kind" in
      netns) ip netns del "$name" 2> /dev/null && say "removed namespace $name" || true ;;
      link) ip link del "$name" 2> /dev/null && say "removed link $name" || true ;;
    esac
  done
  rm -f "$DIR/created"
}

write_conf_nodes() {
  local host node; host=$(hostname -s)
  {
    cat <<EOF
# Written by mor-dist slurm/local-cluster.sh --nodes $NODES: $NODES nodes in network namespaces, everything under $DIR.
ClusterName=mornodes
# slurmctld runs in the host's namespace, reachable from the nodes on the bridge
SlurmctldHost=$host($SUBNET.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# own munge socket (a file: reachable from every network namespace); requeue waits cred_expire+1 s
AuthInfo=socket=$SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
# per node (%n = node name): each slurmd has its own spool (PMIx sockets), log and PID file
SlurmdSpoolDir=$DIR/node/%n/spool
SlurmdPidFile=$DIR/node/%n/slurmd.pid
SlurmdLogFile=$DIR/node/%n/slurmd.log
# and its own TmpFS: the PMIx plugin makes a directory spmix_appdir_<uid>_<job>.<step> there,
# which two nodes of one step would otherwise both try to create in the same /tmp
TmpFS=$DIR/node/%n/tmp
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
EnforcePartLimits=ALL
JobRequeue=1
ReturnToService=2
KillWait=10
MinJobAge=600
InactiveLimit=0
# a lost node is marked DOWN (and its jobs requeued or failed) within ~10-20 s, not 5 min
SlurmdTimeout=10
SlurmctldTimeout=60
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmdParameters=config_overrides
EOF
    for node in $(node_list); do
      echo "NodeName=$node NodeAddr=$(addr_of "$node") NodeHostname=$node CPUs=$CPUS State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"
  } > "$CONF"
}

nodes_running() {
  local node
  pid_alive "$MUNGE_DIR/munged.pid" munged > /dev/null && pid_alive "$DIR/slurmctld.pid" slurmctld > /dev/null || return 1
  for node in $(node_list); do
    holder_pid "$node" > /dev/null && pid_alive "$DIR/node/$node/slurmd.pid" slurmd > /dev/null || return 1
  done
}

nodes_up() {
  local t0=$SECONDS n node
  mkdir -p "$DIR" 2> /dev/null || die "cannot create the state directory $DIR (MOR_SLURM_NODES_DIR)"
  exec 9> "$DIR/lock"; flock -w 300 9 || die "could not lock $DIR/lock within 300 s (another up/down runs?)"
  if [ -f "$DIR/nodes" ] && [ "$(cat "$DIR/nodes")" != "$NODES" ] && nodes_running_any; then
    die "a $(cat "$DIR/nodes")-node cluster already runs under $DIR: down --force --nodes $(cat "$DIR/nodes") first"
  fi
  if nodes_running && [ "$(SLURM_CONF=$CONF sinfo -h -t idle,mixed,allocated,completing -o %D 2> /dev/null | awk '{s+=$1} END {print s+0}')" -eq "$NODES" ]; then
    n=$(( $(cat "$DIR/users" 2> /dev/null || echo 1) + 1 ))
    echo "$n" > "$DIR/users"
    say "already running under $DIR (now $n users); export SLURM_CONF=$CONF"
    return 0
  fi
  local probe; probe=$(netns_probe) || { echo "$probe" >&2; exit 77; }
  if need_install; then
    if [ "${MOR_SLURM_INSTALL:-1}" = 0 ]; then die "SLURM packages missing and MOR_SLURM_INSTALL=0"; fi
    install_packages
  fi
  stop_nodes_daemons > /dev/null
  net_down > /dev/null
  rm -rf "$DIR/node" "$DIR/state"
  mkdir -p "$DIR/state" "$DIR/log"
  echo "$NODES" > "$DIR/nodes"
  net_up
  write_conf_nodes
  export SLURM_CONF=$CONF
  start_munged
  /usr/sbin/slurmctld -c -f "$CONF" 9>&- || die "slurmctld did not start (log: $DIR/log/slurmctld.log)"
  for node in $(node_list); do start_slurmd "$node"; done
  local t_wait=$SECONDS idle=0 st
  while [ $((SECONDS - t_wait)) -lt "$WAIT" ]; do
    idle=0
    while read -r node st; do
      case "$st" in
        idle|mixed|allocated) idle=$((idle + 1)) ;;
        drain*|down*|fail*) scontrol update NodeName="$node" State=RESUME > /dev/null 2>&1 || true ;;
      esac
    done < <(sinfo -h -N -o '%N %T' 2> /dev/null || true)
    [ "$idle" -lt "$NODES" ] || break
    pid_alive "$DIR/slurmctld.pid" slurmctld > /dev/null || { tail -5 "$DIR/log/slurmctld.log" >&2; die "slurmctld exited"; }
    for node in $(node_list); do
      pid_alive "$DIR/node/$node/slurmd.pid" slurmd > /dev/null || { tail -5 "$DIR/node/$node/slurmd.log" >&2; die "slurmd of $node exited"; }
    done
    sleep 0.2
  done
  if [ "$idle" -lt "$NODES" ]; then
    sinfo -N >&2 || true
    tail -5 "$DIR/log/slurmctld.log" >&2
    die "only $idle of $NODES nodes idle after ${WAIT}s; logs in $DIR/log and $DIR/node/*/slurmd.log"
  fi
  echo 1 > "$DIR/users"
  say "up in $((SECONDS - t0))s: $NODES nodes ($(node_list | while read -r n; do printf '%s=%s ' "$n" "$(addr_of "$n")"; done)| link $(cat "$DIR/link")), $CPUS CPUs each, slurmctld on $SUBNET.1:$PORT, state in $DIR"
  say "export SLURM_CONF=$CONF"
}
nodes_running_any() {
  pid_alive "$DIR/slurmctld.pid" slurmctld > /dev/null || ls "$DIR"/node/*/holder.pid > /dev/null 2>&1
}

stop_nodes_daemons() {
  local f node
  for f in "$DIR"/node/*/slurmd.pid; do [ -e "$f" ] && stop_one "$f" slurmd; done
  stop_one "$DIR/slurmctld.pid" slurmctld
  for f in "$DIR"/node/*/holder.pid; do [ -e "$f" ] && stop_one "$f" sleep > /dev/null; done
  return 0
}

nodes_down() {
  [ -d "$DIR" ] || { say "nothing to stop ($DIR does not exist)"; return 0; }
  exec 9> "$DIR/lock"; flock -w 300 9 || die "could not lock $DIR/lock within 300 s (another up/down runs?)"
  [ -f "$DIR/nodes" ] && NODES=$(cat "$DIR/nodes")
  local n; n=$(cat "$DIR/users" 2> /dev/null || echo 1)
  if [ "${1:-}" != --force ] && [ "$n" -gt 1 ] && nodes_running; then
    echo $((n - 1)) > "$DIR/users"
    say "still used by $((n - 1)) other user(s): left running (down --force stops it now)"
    return 0
  fi
  stop_nodes_daemons
  stop_one "$MUNGE_DIR/munged.pid" munged
  net_down
  rm -f "$DIR/users"
}

nodes_status() {
  [ -f "$DIR/nodes" ] && NODES=$(cat "$DIR/nodes")
  if nodes_running; then
    echo "running: $NODES nodes, link $(cat "$DIR/link" 2> /dev/null); $(cat "$DIR/users" 2> /dev/null || echo 1) user(s); SLURM_CONF=$CONF"
    SLURM_CONF=$CONF sinfo -N 2> /dev/null || true
    return 0
  fi
  echo "not running (dir $DIR)"
  return 3
}

nodes_exec() {
  [ $# -ge 2 ] || { echo "usage: $0 exec NODE CMD..." >&2; exit 2; }
  nexec "$@"
}

# A node lost for good: SIGKILL to every process in its network namespace (slurmd, slurmstepd,
# the tasks, the holder), the way a node whose power fails stops without a word. The namespace
# and its link stay (down removes them); nothing answers there any more.
nodes_kill() {
  [ $# -eq 1 ] || { echo "usage: $0 kill-node NODE" >&2; exit 2; }
  local node=$1 ns pids
  ns=$(ns_of "$node")
  ip netns list | grep -qw "^$ns" || die "no namespace $ns (is $node a node of the cluster under $DIR?)"
  pids=$(ip netns pids "$ns" | tr '\n' ' ')
  [ -n "$pids" ] || die "$node ($ns) has no processes left"
  local what; what=$(for p in $pids; do printf '%s(%s) ' "$p" "$(cat "/proc/$p/comm" 2> /dev/null)"; done)
  # shellcheck disable=SC2086
  kill -KILL $pids 2> /dev/null || true
  for _ in $(seq 100); do [ -z "$(ip netns pids "$ns")" ] && break; sleep 0.1; done
  say "killed every process of $node ($ns): $what"
  [ -z "$(ip netns pids "$ns")" ] || die "processes of $node still alive: $(ip netns pids "$ns" | tr '\n' ' ')"
}

# A lost node back: a new holder and slurmd in its (kept) namespace; slurmctld takes it back when
# it registers (ReturnToService=2), so it is idle again within seconds.
nodes_revive() {
  [ $# -eq 1 ] || { echo "usage: $0 revive-node NODE" >&2; exit 2; }
  local node=$1 st=""
  [ -f "$DIR/nodes" ] && NODES=$(cat "$DIR/nodes")
  ip netns list | grep -qw "^$(ns_of "$node")" || die "no namespace $(ns_of "$node")"
  export SLURM_CONF=$CONF
  holder_pid "$node" > /dev/null || start_holder "$node"
  pid_alive "$DIR/node/$node/slurmd.pid" slurmd > /dev/null || start_slurmd "$node"
  for _ in $(seq 150); do
    st=$(sinfo -h -n "$node" -o %T 2> /dev/null || true)
    case "$st" in idle|mixed|allocated) say "$node is back ($st)"; return 0 ;; esac
    sleep 0.2
  done
  die "$node did not come back within 30 s (state '$st'; log $DIR/node/$node/slurmd.log)"
}

# The link speed of every node, now: RATE (tc units: 10gbit, 1gbit, 500mbit) or `off`.
nodes_link() {
  [ $# -eq 1 ] || { echo "usage: $0 link RATE|off" >&2; exit 2; }
  [ -f "$DIR/nodes" ] && NODES=$(cat "$DIR/nodes")
  local node
  if [ "$1" = off ]; then
    for node in $(node_list); do
      tc qdisc del dev "$NET-v${node#node}" root 2> /dev/null || true
      ip netns exec "$(ns_of "$node")" tc qdisc del dev eth0 root 2> /dev/null || true
    done
    echo unshaped > "$DIR/link"
  else
    LINK_RATE=$1 shape_links
  fi
  say "link: $(cat "$DIR/link")"
  case "$(cat "$DIR/link")" in unshaped:*) return 1 ;; esac
}
