#!/usr/bin/env bash
# A SLURM cluster on this machine, for the end-to-end tests and for trying the job templates
# in slurm/ (Debian 12: slurm-wlm 22.05, munge, PMIx): one node by default, or N nodes, each
# in its own network namespace (--nodes N, below).
#
#   slurm/local-cluster.sh up [--nodes N]   install the packages if missing, write the config, start
#                                           munged + slurmctld + slurmd(s), wait until every node is idle
#   slurm/local-cluster.sh down [--force] [--nodes N]   stop the daemons this script started (PID
#                                           files); with N > 1 also remove the namespaces and the bridge
#   slurm/local-cluster.sh status [--nodes N]   say whether it runs (exit 0 running, 3 not running)
#   slurm/local-cluster.sh env [--nodes N]      print `export SLURM_CONF=...` (eval "$(slurm/local-cluster.sh env)")
#   slurm/local-cluster.sh exec NODE CMD...     (N > 1) run CMD inside NODE's namespaces (network + host name)
#   slurm/local-cluster.sh kill-node NODE       (N > 1) SIGKILL every process of NODE's namespace, slurmd
#                                               included: the node is lost, as if its power went off
#   slurm/local-cluster.sh revive-node NODE     (N > 1) start a lost node again (it rejoins, idle)
#   slurm/local-cluster.sh link RATE|off        (N > 1) shape every node's link now (tc units: 10gbit)
#   slurm/local-cluster.sh probe                exit 0 if network namespaces and a bridge can be made
#                                               here, else 77 with the reason (the multi-node tests skip)
#
# Everything lives under $MOR_SLURM_DIR (default /tmp/mor-slurm): slurm.conf, its own
# munge key and socket, state, spool, logs, PID files. Nothing is written to /etc, no
# system daemon is touched, so clients need SLURM_CONF=$MOR_SLURM_DIR/slurm.conf.
#
# `up` on a cluster that already runs (same directory) only counts one more user;
# `down` stops the daemons when the last user leaves (`down --force`: at once). Both
# hold a lock, so concurrent test runs share one cluster instead of fighting over it.
#
# Environment: MOR_SLURM_DIR, MOR_SLURM_PORT (slurmctld port, slurmd uses +1; default
# 6817), MOR_SLURM_CPUS (CPUs advertised, default 8 so that 4 tasks fit on 2 cores),
# MOR_SLURM_INSTALL=0 (never run apt-get), MOR_SLURM_TIMEOUT (seconds to wait for idle, 60).
#
# Several nodes (--nodes N, N >= 2): node1..nodeN, each a network namespace ($MOR_SLURM_NETNS-nodeK,
# default mor-nodeK) with its own host name (a UTS namespace held by a small `sleep` process)
# and address 10.199.0.(10+K) on a bridge (mor-br, 10.199.0.1, where slurmctld and the clients
# live), one `slurmd -N nodeK` per namespace with its own spool, log and PID file. Its own
# directory and port, so that it runs beside the single-node cluster: MOR_SLURM_NODES_DIR (default
# /tmp/mor-slurm-nodes), MOR_SLURM_NODES_PORT (6837), MOR_SLURM_NETNS (name prefix, mor),
# MOR_SLURM_SUBNET (first three octets, 10.199.0), MOR_SLURM_LINK (e.g. 10gbit: a tc token bucket
# on both ends of every node's link; empty: unshaped). Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN).
# Why each setting is there: the comment next to it; docs/SLURM.md describes the local cluster.
set -euo pipefail

CMD=${1:-}
[ $# -eq 0 ] || shift
NODES=1 FORCE="" REST=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=${2:-}; shift 2 || { echo "local-cluster: --nodes needs a number" >&2; exit 2; } ;;
    --nodes=*) NODES=${1#--nodes=}; shift ;;
    --force) FORCE=--force; shift ;;
    *) REST=("$@"); break ;;
  esac
done
case "$NODES" in ''|*[!0-9]*|0) echo "local-cluster: --nodes wants a positive number, got '$NODES'" >&2; exit 2 ;; esac
# exec and kill-node only make sense on the multi-node cluster
case "$CMD" in exec|kill-node|revive-node|link) [ "$NODES" -gt 1 ] || NODES=2 ;; esac
if [ "$NODES" -gt 1 ]; then
  DIR=${MOR_SLURM_NODES_DIR:-/tmp/mor-slurm-nodes}
  PORT=${MOR_SLURM_NODES_PORT:-6837}
  # 2 CPUs per node (this machine's cores): `srun -N 2 -n 4` then places 2 tasks on each node
  # (with more, SLURM packs 3 on the first); more tasks than that need --overcommit
  CPUS=${MOR_SLURM_CPUS:-2}
else
  DIR=${MOR_SLURM_DIR:-/tmp/mor-slurm}
  PORT=${MOR_SLURM_PORT:-6817}
  CPUS=${MOR_SLURM_CPUS:-8}
fi
WAIT=${MOR_SLURM_TIMEOUT:-60}
CONF=$DIR/slurm.conf
MUNGE_DIR=$DIR/munge
SOCKET=$MUNGE_DIR/munge.socket
PMIX_LIB=/usr/lib/x86_64-linux-gnu/pmix2/lib/libpmix.so

say() { echo "local-cluster: $*"; }
die() { echo "local-cluster: error: $*" >&2; exit 1; }

# ---- processes: trust a PID file only if the process is alive (not a zombie)
# ---- and has the expected command name (PIDs wrap quickly)
pid_alive() {  # pid_alive PIDFILE COMM -> prints the pid, status 0 if it runs
  local f=$1 comm=$2 pid stat
  [ -s "$f" ] || return 1
  pid=$(tr -dc 0-9 < "$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  # /proc/PID/stat: "pid (comm) S ..." (comm may contain spaces: cut at the last ')')
  local name=${stat#*(}; name=${name%)*}
  local state=${stat##*) }; state=${state%% *}
  [ "$name" = "$comm" ] || return 1
  case "$state" in Z|X|x) return 1 ;; esac
  echo "$pid"
}
running() {  # all three daemons alive?
  pid_alive "$MUNGE_DIR/munged.pid" munged > /dev/null &&
    pid_alive "$DIR/slurmctld.pid" slurmctld > /dev/null &&
    pid_alive "$DIR/slurmd.pid" slurmd > /dev/null
}
stop_one() {  # stop_one PIDFILE COMM: SIGTERM, wait up to 10 s, then SIGKILL
  local f=$1 comm=$2 pid
  pid=$(pid_alive "$f" "$comm") || { rm -f "$f"; return 0; }
  kill -TERM "$pid" 2> /dev/null || true
  for _ in $(seq 100); do pid_alive "$f" "$comm" > /dev/null || break; sleep 0.1; done
  if pid_alive "$f" "$comm" > /dev/null; then
    say "$comm ($pid) ignored SIGTERM, sending SIGKILL"
    kill -KILL "$pid" 2> /dev/null || true
    for _ in $(seq 50); do pid_alive "$f" "$comm" > /dev/null || break; sleep 0.1; done
  fi
  rm -f "$f"
  say "stopped $comm ($pid)"
}

# ---- packages: no daemon may start behind our back during the install
need_install() {
  local b
  for b in slurmctld slurmd srun sbatch scontrol sinfo munged munge mungekey; do
    command -v "$b" > /dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || return 0
  done
  [ -e "$PMIX_LIB" ] || return 0
  [ -e /usr/lib/x86_64-linux-gnu/slurm-wlm/mpi_pmix.so ] || return 0
  return 1
}
install_packages() {
  [ "$(id -u)" -eq 0 ] || die "the SLURM packages are missing and installing them needs root"
  command -v apt-get > /dev/null || die "the SLURM packages are missing and there is no apt-get"
  local guard=/usr/sbin/policy-rc.d made_guard=0
  if [ ! -e "$guard" ]; then
    printf '#!/bin/sh\n# written by mor-dist slurm/local-cluster.sh during apt-get install\nexit 101\n' > "$guard"
    chmod 755 "$guard"; made_guard=1
  fi
  say "installing slurm-wlm munge libpmix-dev (apt-get)"
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends \
        slurm-wlm munge libpmix-dev
  } > "$DIR/install.log" 2>&1 || rc=$?
  [ "$made_guard" -eq 1 ] && rm -f "$guard"
  [ "$rc" -eq 0 ] || { tail -20 "$DIR/install.log" >&2; die "apt-get failed (log: $DIR/install.log)"; }
}

write_conf() {
  local host; host=$(hostname -s)
  cat > "$CONF" <<EOF
# Written by mor-dist slurm/local-cluster.sh: one node, everything under $DIR.
ClusterName=mor
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# own munge socket; a requeued job waits cred_expire+1 s instead of 121 s
AuthInfo=socket=$SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Debian's Open MPI has only the PMIx client
MpiDefault=pmix
# no cgroups
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# start jobs within ~2 s
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
# an impossible request fails at once instead of pending forever
EnforcePartLimits=ALL
JobRequeue=1
ReturnToService=2
# SIGTERM -> SIGKILL grace when a job step is killed (default 30 s)
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=60
SlurmctldTimeout=60
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# advertise $CPUS CPUs on the real cores so that 4-task jobs fit
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
}

start_munged() {  # our own munged: own key, socket, PID and log
  if pid_alive "$MUNGE_DIR/munged.pid" munged > /dev/null; then return 0; fi
  mkdir -p "$MUNGE_DIR"
  chown munge:munge "$MUNGE_DIR"; chmod 0755 "$MUNGE_DIR"
  if [ ! -s "$MUNGE_DIR/munge.key" ]; then
    mungekey --create --keyfile="$MUNGE_DIR/munge.key" > /dev/null 2>&1 ||
      dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1 count=1024 2> /dev/null
  fi
  chown munge:munge "$MUNGE_DIR/munge.key"; chmod 0600 "$MUNGE_DIR/munge.key"
  rm -f "$SOCKET" "$SOCKET.lock"   # stale after a SIGKILL
  local args=(--socket="$SOCKET" --key-file="$MUNGE_DIR/munge.key" --pid-file="$MUNGE_DIR/munged.pid"
              --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed")
  # 9>&-: the daemons must not inherit (and hold forever) the lock of this script
  if ! runuser -u munge -- /usr/sbin/munged "${args[@]}" 2> "$MUNGE_DIR/start.err" 9>&-; then
    say "munged refused to start ($(head -c 300 "$MUNGE_DIR/start.err")); retrying with --force"
    runuser -u munge -- /usr/sbin/munged --force "${args[@]}" 9>&- || die "munged did not start (log: $MUNGE_DIR/munged.log)"
  fi
  for _ in $(seq 50); do munge -S "$SOCKET" -n 2> /dev/null | unmunge -S "$SOCKET" > /dev/null 2>&1 && return 0; sleep 0.1; done
  die "munge -n | unmunge fails on $SOCKET (log: $MUNGE_DIR/munged.log)"
}

cmd_up() {
  local t0=$SECONDS
  mkdir -p "$DIR" 2> /dev/null || die "cannot create the state directory $DIR (MOR_SLURM_DIR)"
  exec 9> "$DIR/lock"; flock -w 300 9 || die "could not lock $DIR/lock within 300 s (another up/down runs?)"
  if running && sinfo_idle_or_busy; then
    local n=$(( $(cat "$DIR/users" 2> /dev/null || echo 1) + 1 ))
    echo "$n" > "$DIR/users"
    say "already running under $DIR (now $n users); export SLURM_CONF=$CONF"
    return 0
  fi
  if need_install; then
    if [ "${MOR_SLURM_INSTALL:-1}" = 0 ]; then die "SLURM packages missing and MOR_SLURM_INSTALL=0"; fi
    install_packages
  fi
  # half-started leftovers from an earlier run of ours (e.g. after a SIGKILL): stop them
  stop_one "$DIR/slurmd.pid" slurmd > /dev/null; stop_one "$DIR/slurmctld.pid" slurmctld > /dev/null
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
  write_conf
  export SLURM_CONF=$CONF
  start_munged
  # -c: clear saved jobs (a fresh cluster for every `up`); -i: ignore stale state errors
  /usr/sbin/slurmctld -c -f "$CONF" 9>&- || die "slurmctld did not start (log: $DIR/log/slurmctld.log)"
  /usr/sbin/slurmd -f "$CONF" 9>&- || die "slurmd did not start (log: $DIR/log/slurmd.log)"
  local host t_wait=$SECONDS st=""; host=$(hostname -s)
  while [ $((SECONDS - t_wait)) -lt "$WAIT" ]; do
    st=$(sinfo -h -n "$host" -o %T 2> /dev/null | head -1 || true)
    case "$st" in
      idle|mixed|allocated) break ;;
      drain*|down*|fail*)  # a node that registered with a mismatch; let it back in once
        scontrol update NodeName="$host" State=RESUME > /dev/null 2>&1 || true ;;
    esac
    pid_alive "$DIR/slurmctld.pid" slurmctld > /dev/null || { tail -5 "$DIR/log/slurmctld.log" >&2; die "slurmctld exited"; }
    pid_alive "$DIR/slurmd.pid" slurmd > /dev/null || { tail -5 "$DIR/log/slurmd.log" >&2; die "slurmd exited"; }
    sleep 0.2
  done
  case "$st" in
    idle|mixed|allocated) ;;
    *) tail -5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2
       die "node $host not idle after ${WAIT}s (state '${st:-unreachable}'); logs in $DIR/log" ;;
  esac
  echo 1 > "$DIR/users"
  say "up in $((SECONDS - t0))s: node $host $st, $CPUS CPUs, MPI pmix, state in $DIR"
  say "export SLURM_CONF=$CONF"
}
sinfo_idle_or_busy() {
  local st; st=$(SLURM_CONF=$CONF sinfo -h -n "$(hostname -s)" -o %T 2> /dev/null | head -1 || true)
  case "$st" in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac
}

cmd_down() {
  [ -d "$DIR" ] || { say "nothing to stop ($DIR does not exist)"; return 0; }
  exec 9> "$DIR/lock"; flock -w 300 9 || die "could not lock $DIR/lock within 300 s (another up/down runs?)"
  local n; n=$(cat "$DIR/users" 2> /dev/null || echo 1)
  if [ "${1:-}" != --force ] && [ "$n" -gt 1 ] && running; then
    echo $((n - 1)) > "$DIR/users"
    say "still used by $((n - 1)) other user(s): left running (down --force stops it now)"
    return 0
  fi
  stop_one "$DIR/slurmd.pid" slurmd
  stop_one "$DIR/slurmctld.pid" slurmctld
  stop_one "$MUNGE_DIR/munged.pid" munged
  rm -f "$DIR/users"
}

cmd_status() {
  local m c d
  m=$(pid_alive "$MUNGE_DIR/munged.pid" munged) || m=-
  c=$(pid_alive "$DIR/slurmctld.pid" slurmctld) || c=-
  d=$(pid_alive "$DIR/slurmd.pid" slurmd) || d=-
  if [ "$m" != - ] && [ "$c" != - ] && [ "$d" != - ]; then
    echo "running: munged $m, slurmctld $c, slurmd $d; $(cat "$DIR/users" 2> /dev/null || echo 1) user(s); SLURM_CONF=$CONF"
    SLURM_CONF=$CONF sinfo 2> /dev/null || true
    return 0
  fi
  echo "not running (munged $m, slurmctld $c, slurmd $d; dir $DIR)"
  return 3
}

if [ "$NODES" -gt 1 ]; then
  source "$(dirname "${BASH_SOURCE[0]}")/local-cluster-nodes.sh"
  case "$CMD" in
    up) nodes_up ;;
    down) nodes_down "$FORCE" ;;
    status) nodes_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    exec) nodes_exec "${REST[@]}" ;;
    kill-node) nodes_kill "${REST[@]}" ;;
    revive-node) nodes_revive "${REST[@]}" ;;
    link) nodes_link "${REST[@]}" ;;
    probe) netns_probe ;;
    *) echo "usage: $0 up|down [--force]|status|env|exec NODE CMD...|kill-node NODE|revive-node NODE|link RATE|off|probe --nodes N" >&2; exit 2 ;;
  esac
  exit
fi
case "$CMD" in
  up) cmd_up ;;
  down) cmd_down "$FORCE" ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  probe) source "$(dirname "${BASH_SOURCE[0]}")/local-cluster-nodes.sh"; netns_probe ;;
  *) echo "usage: $0 up|down [--force]|status|env [--nodes N]" >&2; exit 2 ;;
esac
