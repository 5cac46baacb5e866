#!/usr/bin/env bash
# Stop the single-node Slurm that dev/slurm/start.sh FOLDER started: its jobs, slurmd,
# slurmctld and munged, each by the pid file in FOLDER (nothing else is signalled).
#
#   bash dev/slurm/stop.sh /tmp/frn-slurm [--remove]    # --remove also deletes FOLDER
set -uo pipefail

say() { echo "slurm: $*" >&2; }

dir=${1:?usage: dev/slurm/stop.sh FOLDER [--remove]}
if [ ! -f "$dir/slurm.conf" ]; then
    say "$dir holds no cluster of dev/slurm/start.sh (no slurm.conf)"
    exit 2
fi
export SLURM_CONF="$dir/slurm.conf"

# Jobs first, so slurmd can still end them and report it.
if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 30); do
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
        sleep 1
    done
fi

stop() {
    local name=$1 pidfile=$2 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name ($pid) did not stop on SIGTERM; SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
        fi
        say "stopped $name ($pid)"
    fi
    rm -f "$pidfile"
}

stop slurmd "$dir/slurmd.pid"
stop slurmctld "$dir/slurmctld.pid"
stop munged "$dir/munge/munged.pid"

if [ "${2:-}" = "--remove" ]; then
    rm -rf "$dir"
    say "removed $dir"
fi
