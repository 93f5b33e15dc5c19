#!/usr/bin/env bash
# A real single-node SLURM on this machine, for the tests (tests/test_launch_slurm.py) and CI: the Debian packages,
# a slurm.conf for this host, and munged, slurmctld and slurmd started directly (no systemd in containers).
#
#   sudo bash launch/local_slurm.sh start    # install if missing, configure, start, wait until the node is idle
#   sudo bash launch/local_slurm.sh status   # sinfo and scontrol ping
#   sudo bash launch/local_slurm.sh stop     # stop the daemons this script started (by their PID files)
#
# `start` is idempotent: with the controller and the node already up it only checks them. It never overwrites a
# slurm.conf it did not write (a real cluster's). Logs: /var/log/slurm/{slurmctld,slurmd}.log.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARKER="# written by pivot_jax launch/local_slurm.sh"
LOGS=/var/log/slurm
HOST="$(hostname -s)"
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid

die() { echo "local_slurm.sh: $*" >&2; exit 1; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
      && command -v munged >/dev/null; then
    return
  fi
  echo "installing slurmctld slurmd slurm-client munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh image often has no package lists yet: update once, only when the first attempt fails.
  apt-get install -y slurmctld slurmd slurm-client munge \
    || { apt-get update && apt-get install -y slurmctld slurmd slurm-client munge; } \
    || die "apt-get could not install slurmctld slurmd slurm-client munge"
}

write_conf() {
  if [[ -f "$CONF" ]] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script (a real cluster's?): refusing to replace it"
  fi
  local cpus mem_mb
  cpus="$(nproc)"
  # RealMemory above what slurmd measures drains the node ("Low RealMemory"): MemTotal less 5% (at least 512 MB).
  mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
  mem_mb=$(( mem_mb - (mem_mb / 20 > 512 ? mem_mb / 20 : 512) ))
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOGS"
  cat > "$CONF" <<EOF
$MARKER: one node, one partition, for tests and CI
ClusterName=pivot
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# No cgroups in a container: processes tracked by their parentage, tasks not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
# A node that comes back (the daemons restarted) returns to service by itself, and a dead one shows soon.
ReturnToService=2
SlurmdTimeout=30
SlurmctldTimeout=30
# Time for the trainer to save after SIGTERM when a job is cancelled or runs out of time.
KillWait=60
# No accounting database here (sacct has nothing): finished jobs stay in the controller's memory 10 minutes,
# where scontrol reads their exit code, and every completion is appended to jobcomp.log.
MinJobAge=600
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  echo "wrote $CONF: node $HOST, $cpus CPUs, ${mem_mb} MB, partition local"
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return
  fi
  [[ -f /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  # What systemd's RuntimeDirectory and the package's tmpfiles would have made.
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  runuser -u munge -- munged
  for _ in $(seq 20); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
    sleep 0.5
  done
  die "munged did not start: see /var/log/munge/munged.log"
}

node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1; }

wait_idle() {
  local state=""
  for _ in $(seq 60); do
    state="$(node_state)"
    case "$state" in
      idle|mixed|allocated|completing) return ;;
      drain*|down*|fail*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
  done
  tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
  die "node $HOST is not idle after 60 s (state: ${state:-unknown}); logs above"
}

up() { scontrol ping 2>/dev/null | grep -q "is UP" && alive "$SLURMD_PID"; }

start() {
  [[ "$(id -u)" == 0 ]] || die "start needs root (it installs packages and starts daemons)"
  install_packages
  if up; then
    echo "SLURM already up on $HOST: checking it"
  else
    write_conf
    start_munge
    mkdir -p /var/spool/slurmctld /var/spool/slurmd "$LOGS"
    alive "$CTLD_PID" || slurmctld
    for _ in $(seq 30); do scontrol ping 2>/dev/null | grep -q "is UP" && break; sleep 0.5; done
    scontrol ping | grep -q "is UP" || { tail -n 20 "$LOGS/slurmctld.log" >&2; die "slurmctld did not come up"; }
    alive "$SLURMD_PID" || slurmd
  fi
  wait_idle
  scontrol ping
  sinfo
}

stop() {
  local pidfile pid
  for pidfile in "$SLURMD_PID" "$CTLD_PID" "$MUNGE_PID"; do
    alive "$pidfile" || continue
    pid="$(cat "$pidfile")"
    kill "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    echo "stopped $(basename "$pidfile" .pid) (pid $pid)"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) scontrol ping && sinfo ;;
  *) die "usage: bash launch/local_slurm.sh start|status|stop" ;;
esac
