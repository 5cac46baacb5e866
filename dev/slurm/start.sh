#!/usr/bin/env bash
# Start a single-node Slurm on this machine (as root, without systemd): munged, slurmctld
# and slurmd from Debian's munge and slurm-wlm packages, every config, key, socket, state
# and log file in one folder. Stop it with dev/slurm/stop.sh FOLDER.
#
#   eval "$(bash dev/slurm/start.sh /tmp/frn-slurm)"   # sets SLURM_CONF for sbatch, squeue, ...
#
# FOLDER (default: a new folder under /tmp) must not hold a running cluster. Prints the
# export line for SLURM_CONF on stdout, everything else on stderr. The node has this
# machine's CPUs and memory and no GPUs (jobs ask for --gpus-per-node 0); daemons listen
# on free ports and talk over 127.0.0.1 only.
set -euo pipefail

say() { echo "slurm: $*" >&2; }

for tool in munged slurmctld slurmd sinfo; do
    if ! command -v "$tool" >/dev/null; then
        say "$tool not found; install Debian's packages first: apt-get install -y slurm-wlm munge"
        exit 2
    fi
done
if [ "$(id -u)" != 0 ]; then
    say "slurmd must run as root (it starts jobs as their users); run this as root"
    exit 2
fi

dir=${1:-$(mktemp -d /tmp/frn-slurm.XXXXXX)}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    say "a cluster already runs from $dir (stop it with dev/slurm/stop.sh $dir)"
    exit 2
fi
# munged refuses keys, sockets and logs in folders others can write to.
chmod 711 "$dir"
mkdir -p "$dir/munge" "$dir/state" "$dir/spool/$(hostname -s)"
# Clients reach munged's socket through this folder; only root reads the key.
chmod 711 "$dir/munge"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
ctld_port=$(free_port)
slurmd_port=$(free_port)
while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done

host=$(hostname -s)
cpus=$(nproc)
# Slurm refuses a job asking for more memory than the node declares; leave 1 GiB to the rest.
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))

dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
if ! munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed"; then
    say "munged did not start; its log:"
    tail -n 20 "$dir/munge/munged.log" >&2 || true
    exit 1
fi

cat > "$dir/slurm.conf" <<EOF
# A single-node Slurm for frn-det's sweep check (dev/slurm/start.sh); see docs/slurm.md.
ClusterName=frndet
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd and no cgroup delegation here: track a job's processes by their parents.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# Schedule often: a requeued job may start again as soon as its two minutes are over.
SchedulerParameters=sched_interval=10,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=10
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
# slurmd loads a cgroup plugin even when neither tracking nor tasks use cgroups.
cat > "$dir/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
EOF
echo "export SLURM_CONF=$dir/slurm.conf" > "$dir/env.sh"
export SLURM_CONF="$dir/slurm.conf"

daemon() {
    local name=$1
    shift
    if ! "$@"; then
        say "$name did not start; its log:"
        tail -n 20 "$dir/$name.log" >&2 || true
        exit 1
    fi
}
daemon slurmctld slurmctld -f "$SLURM_CONF"
daemon slurmd slurmd -f "$SLURM_CONF" -N "$host"

# Ready once the node has registered and is idle.
for _ in $(seq 60); do
    if sinfo -h -N -o '%T' 2>/dev/null | grep -qx idle; then
        say "up: node $host ($cpus CPUs, ${mem_mb} MB), partition debug, in $dir"
        echo "export SLURM_CONF=$dir/slurm.conf"
        exit 0
    fi
    sleep 1
done
say "the node did not become idle in 60 s; logs: $dir/slurmctld.log, $dir/slurmd.log"
sinfo -N >&2 || true
tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
exit 1
