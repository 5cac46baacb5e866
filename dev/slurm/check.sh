#!/usr/bin/env bash
# make slurm-check: the sweep on a real single-node Slurm (tests/sweep/test_slurm_cluster.py).
# Installs Debian's slurm-wlm and munge when missing (apt-get, as root), starts the cluster
# in a new folder under /tmp (dev/slurm/start.sh), runs the test, and stops the cluster; its
# folder (configs, daemon logs) is removed when the test passes and kept when it fails.
#
#   bash dev/slurm/check.sh [PYTEST ARGS...]    # PYTHON=... for another interpreter
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v munged >/dev/null; then
    echo "slurm-check: installing slurm-wlm and munge" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge
fi

dir=$(mktemp -d /tmp/frn-slurm.XXXXXX)
status=1
finish() {
    if [ "$status" = 0 ]; then
        bash dev/slurm/stop.sh "$dir" --remove
    else
        bash dev/slurm/stop.sh "$dir"
        echo "slurm-check: failed; the cluster's configs and logs are in $dir" >&2
    fi
}
trap finish EXIT
eval "$(bash dev/slurm/start.sh "$dir")"
sinfo
set +e
FRN_DET_SLURM_CHECK=1 "$python" -m pytest -q -p no:cacheprovider \
    tests/sweep/test_slurm_cluster.py "$@"
status=$?
exit $status
