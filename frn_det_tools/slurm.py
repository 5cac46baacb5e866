"""Sweeps on a Slurm cluster: every run of a grid its own Slurm job, submitted through submitit.

``tools/sweep.py`` starts its runs with a launcher (``--launcher``):

- ``local`` (the default): ``sweep.run_sweep``, the runs one after the other on this machine;
- ``slurm``: one Slurm job per run that has not finished, its resources from the flags
  (``--nodes``, ``--gpus-per-node``, ``--cpus-per-task``, ``--mem-gb``, ``--timeout-min``,
  ``--partition``, ``--account``, ``--qos``, ``--constraint``); the command returns once
  they are submitted (``--wait`` follows them to their end);
- ``submitit-local``: the same jobs through submitit's local executor, on this machine and
  all at once: the Slurm path (job records, requeueing, resuming) without a cluster.

A job (``SweepJob``, pickled by submitit into ``--slurm-folder``) starts one task per node;
each runs ``python -m frn_det.train_net`` with the run's arguments, on several nodes with
``--num-machines``, ``--machine-rank`` (the node's rank) and a ``tcp://`` rendezvous on the
job's first node, from the Slurm environment. The run's processes (``--num-gpus``,
``--norm-gpus`` or total batch / images per GPU) are split evenly over ``--nodes``, so the
world size, and with it the schedule the sweep planned, does not depend on the split.

The first task keeps the run folder's books as the local sweep does: DONE.json when
train_net exits cleanly with a final model, else FAILED.json with the exit status and the
path of train_net.log. Slurm signals a job 90 s before its time limit (and submitit on
preemption); submitit then calls ``SweepJob.__submitit_checkpoint__``, which stops
train_net and hands back the same run with ``--resume``, and the job is requeued: it goes
on from the run's newest checkpoint (``SOLVER.CHECKPOINT_PERIOD`` bounds what is trained
again).

Each submitted run gets ``JOB.json`` (job id, resources, submitit's log). A sweep run again
skips finished runs and runs whose job is still queued or running, and submits the others
again (resuming from their checkpoints); ``tools/summarize.py`` asks ``squeue`` (then
``sacct``) about the jobs, so its table says which runs are pending, running, or ended
without a result, and where their logs are.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from frn_det_tools.run_folders import (
    DONE_FILE,
    FAILED_FILE,
    JOB_FILE,
    LAST_CHECKPOINT,
    LOG_FILE,
    RUN_FILE,
)
from frn_det_tools.sweep import (
    TRAIN_NET,
    Run,
    RunState,
    Schedule,
    SweepError,
    _action,
    _check_same_plan,
    _duration,
    _finish,
    _plan_record,
    _read_json,
    _write_json,
    plan_schedule,
    read_state,
)

__all__ = [
    "CLUSTER_LAUNCHERS",
    "LAUNCHERS",
    "ClusterOptions",
    "JobShape",
    "JobStatus",
    "RunFailedError",
    "SweepJob",
    "add_cluster_arguments",
    "check_launch",
    "cluster_options",
    "follow_jobs",
    "job_statuses",
    "jobs_table",
    "multi_machine_args",
    "rendezvous_url",
    "run_on_cluster",
    "submit_sweep",
]

LAUNCHERS = ("local", "slurm", "submitit-local")
CLUSTER_LAUNCHERS = LAUNCHERS[1:]
# A day: a 3x COCO schedule on 8 GPUs; a longer run is requeued and resumes.
DEFAULT_TIMEOUT_MIN = 24 * 60
DEFAULT_MAX_REQUEUES = 3
# The seconds train_net gets to stop on SIGTERM before it is killed (at a requeue).
STOP_GRACE_S = 30.0
# Slurm states of a job that is queued or has not ended yet.
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "STOPPED",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "SPECIAL_EXIT",
        "RESV_DEL_HOLD",
    }
)
# A job's first node hosts the rendezvous on a port derived from the job id, so every node
# finds it without talking first; a requeued job keeps its id, hence its port.
_PORT_BASE, _PORT_RANGE = 20000, 40000
_SLURM_NAME_RE = re.compile(r"^[^\s,]+(,[^\s,]+)*$")
# The job flags' defaults; the command line leaves them out unless given (SUPPRESS), so
# a value given can be told from none.
_CLUSTER_DEFAULTS: dict[str, Any] = {
    "nodes": 1,
    "gpus_per_node": None,
    "cpus_per_task": None,
    "mem_gb": None,
    "timeout_min": DEFAULT_TIMEOUT_MIN,
    "partition": None,
    "account": None,
    "qos": None,
    "constraint": None,
    "max_requeues": DEFAULT_MAX_REQUEUES,
    "slurm_folder": None,
    "wait": False,
}
# Flags submitit's local executor has no use for: jobs run on this one machine.
_SLURM_ONLY = ("nodes", "cpus_per_task", "mem_gb", "partition", "account", "qos", "constraint")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low} ({what}), got {text!r}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a number > 0 (GB of memory a node), got {text!r}"
        )
    return value


def _slurm_name(what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not _SLURM_NAME_RE.match(text):
            raise argparse.ArgumentTypeError(
                f"expected a {what} name (or a comma-separated list) without spaces, got {text!r}"
            )
        return text

    return parse


def _constraint(text: str) -> str:
    if not text.strip() or "\n" in text:
        raise argparse.ArgumentTypeError(
            f"expected a Slurm constraint (features, e.g. 'a100|h100'), got {text!r}"
        )
    return text


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--launcher`` and the job flags of the cluster launchers to ``tools/sweep.py``."""
    parser.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="local",
        help="local: the runs one after the other on this machine; slurm: each run its own "
        "Slurm job through submitit (requeued and resumed at its time limit or on "
        "preemption); submitit-local: those jobs on this machine through submitit's local "
        "executor, all at once (the Slurm path without a cluster)",
    )
    group = parser.add_argument_group(
        "Slurm jobs (--launcher slurm; submitit-local takes --gpus-per-node, --timeout-min, "
        "--max-requeues, --slurm-folder and --wait)"
    )
    group.add_argument(
        "--nodes",
        type=_int_at_least(1, "nodes a run"),
        default=argparse.SUPPRESS,
        help="nodes per run; a run's processes are split evenly over them (default 1)",
    )
    group.add_argument(
        "--gpus-per-node",
        type=_int_at_least(0, "GPUs a node"),
        default=argparse.SUPPRESS,
        help="GPUs each job asks for on each node (default: the run's processes per node, "
        "one GPU each); 0 on nodes without GPUs (CPU processes over gloo)",
    )
    group.add_argument(
        "--cpus-per-task",
        type=_int_at_least(1, "CPUs a node"),
        default=argparse.SUPPRESS,
        help="CPUs a node's task gets, for all its processes and their data loaders "
        "(default: the cluster's, often 1; e.g. processes x (DATALOADER.NUM_WORKERS + 1))",
    )
    group.add_argument(
        "--mem-gb",
        type=_positive_float,
        default=argparse.SUPPRESS,
        help="memory a node, in GB (default: the cluster's)",
    )
    group.add_argument(
        "--timeout-min",
        type=_int_at_least(1, "minutes"),
        default=argparse.SUPPRESS,
        help=f"time limit of a job in minutes (default {DEFAULT_TIMEOUT_MIN}); a run that "
        "needs longer is requeued and resumes from its newest checkpoint",
    )
    for flag, what in (("partition", "partition(s)"), ("account", "account"), ("qos", "QOS")):
        group.add_argument(
            f"--{flag}",
            type=_slurm_name(what),
            default=argparse.SUPPRESS,
            help=f"the jobs' Slurm {what} (default: the cluster's)",
        )
    group.add_argument(
        "--constraint",
        type=_constraint,
        default=argparse.SUPPRESS,
        help="node features the jobs need, e.g. 'a100' (default: none)",
    )
    group.add_argument(
        "--max-requeues",
        type=_int_at_least(0, "requeues"),
        default=argparse.SUPPRESS,
        help=f"times a job that reaches its time limit is requeued (default "
        f"{DEFAULT_MAX_REQUEUES}); requeues after preemption are not counted",
    )
    group.add_argument(
        "--slurm-folder",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="where submitit keeps the jobs' pickles, scripts and logs (default: "
        "OUTPUT/submitit); on a cluster, a folder every node reads",
    )
    group.add_argument(
        "--wait",
        action="store_true",
        default=argparse.SUPPRESS,
        help="after submitting, follow the jobs until they end (exit status 1 if a run "
        "failed); without it the command returns once they are submitted",
    )


@dataclass(frozen=True)
class JobShape:
    """How one run's processes sit in its job: ``nodes`` x ``processes_per_node``, and the
    GPUs the job asks for on each node (0: none, CPU processes)."""

    nodes: int
    processes_per_node: int
    gpus_per_node: int


@dataclass(frozen=True)
class ClusterOptions:
    """The job flags of a cluster launcher (``slurm`` or ``submitit-local``), checked."""

    launcher: str
    folder: Path
    nodes: int = 1
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = DEFAULT_TIMEOUT_MIN
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    max_requeues: int = DEFAULT_MAX_REQUEUES
    wait: bool = False

    @property
    def cluster(self) -> str:
        """submitit's name of the executor: "slurm" or "local"."""
        return "slurm" if self.launcher == "slurm" else "local"

    def shape(self, run: Run) -> JobShape:
        """The job of ``run``: its processes over ``nodes``, one GPU each unless
        ``gpus_per_node`` says otherwise.

        Raises:
            SweepError: when the nodes do not divide the run's processes, or a node would
                have fewer GPUs than processes.
        """
        if run.num_gpus % self.nodes:
            raise SweepError(
                f"--nodes {self.nodes} does not divide the {run.num_gpus} process(es) of run "
                f"{_where(run)}; accepted: a --nodes that divides every run's processes "
                "(--num-gpus, --norm-gpus, or total batch / images per GPU)"
            )
        per_node = run.num_gpus // self.nodes
        gpus = per_node if self.gpus_per_node is None else self.gpus_per_node
        if 0 < gpus < per_node:
            raise SweepError(
                f"--gpus-per-node {gpus} is fewer than the {per_node} processes a node of run "
                f"{_where(run)} starts; accepted: 0 (CPU processes) or >= {per_node}"
            )
        return JobShape(self.nodes, per_node, gpus)

    def check(self, runs: Sequence[Run]) -> None:
        """Raise ``SweepError`` unless every run fits a job (``shape``)."""
        for run in runs:
            self.shape(run)

    def parameters(self, run: Run) -> dict[str, Any]:
        """``submitit.AutoExecutor.update_parameters`` keywords of ``run``'s job."""
        shape = self.shape(run)
        params: dict[str, Any] = {
            # squeue's NAME column is narrow: the point of the grid first.
            "name": f"{run.norm}-ipg{run.ims_per_gpu}-seed{run.seed}-{run.config_stem}",
            "timeout_min": self.timeout_min,
            "nodes": shape.nodes,
            "tasks_per_node": 1,
            "stderr_to_stdout": True,
        }
        if shape.gpus_per_node:
            params["gpus_per_node"] = shape.gpus_per_node
        if self.cpus_per_task is not None:
            params["cpus_per_task"] = self.cpus_per_task
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.cluster == "slurm":
            for key in ("partition", "account", "qos", "constraint"):
                if getattr(self, key) is not None:
                    params[f"slurm_{key}"] = getattr(self, key)
            # Requeueing is how a job outlives its time limit; some clusters make it opt-in.
            params["slurm_additional_parameters"] = {"requeue": True}
        return params

    def warnings(self, runs: Sequence[Run]) -> list[str]:
        """Things about the jobs of ``runs`` that are legal but likely not what was meant."""
        found = []
        if self.cluster == "slurm" and self.cpus_per_task is None:
            found.append(
                "no --cpus-per-task: each node's task gets the cluster's default CPUs (often "
                "1) for all its training processes and data loaders"
            )
        idle = [
            f"{_where(run)} ({self.shape(run).processes_per_node})"
            for run in runs
            if self.gpus_per_node and self.shape(run).processes_per_node < self.gpus_per_node
        ]
        if idle:
            found.append(
                f"--gpus-per-node {self.gpus_per_node} asks for more GPUs than these runs start "
                f"processes a node, the others stay idle: {', '.join(idle)}; without "
                "--gpus-per-node each job asks for one GPU a process"
            )
        return found


def cluster_options(args: argparse.Namespace) -> ClusterOptions | None:
    """The cluster launcher's options from ``tools/sweep.py``'s arguments; None for
    ``--launcher local``.

    Raises:
        SweepError: for job flags the launcher has no use for (naming them and the
            launchers that take them) or a --slurm-folder that cannot be a folder.
    """
    given = [name for name in _CLUSTER_DEFAULTS if getattr(args, name, None) is not None]
    if args.launcher == "local":
        if given:
            flags = ", ".join(_flag(name) for name in given)
            raise SweepError(
                f"{flags} describe(s) cluster jobs, but --launcher is local (the default: runs "
                f"one after the other on this machine); accepted with --launcher "
                f"{' or '.join(CLUSTER_LAUNCHERS)}"
            )
        return None
    if args.launcher == "submitit-local":
        unused = [name for name in given if name in _SLURM_ONLY]
        if unused:
            flags = ", ".join(_flag(name) for name in unused)
            raise SweepError(
                f"{flags} has/have no meaning for --launcher submitit-local (its jobs run on "
                "this machine, one node); accepted with --launcher slurm"
            )
    values = {
        name: default if getattr(args, name, None) is None else getattr(args, name)
        for name, default in _CLUSTER_DEFAULTS.items()
    }
    folder = Path(values.pop("slurm_folder") or Path(args.output) / "submitit").resolve()
    if folder.exists() and not folder.is_dir():
        raise SweepError(
            f"--slurm-folder {os.fspath(folder)!r} is a file; accepted: a folder (created "
            "when missing) every node of the cluster can read and write"
        )
    return ClusterOptions(launcher=args.launcher, folder=folder, **values)


def _where(run: Run) -> str:
    return f"{run.config_stem}/{run.norm}/ipg{run.ims_per_gpu}/seed{run.seed}"


def rendezvous_url(hostnames: Sequence[str], job_id: str) -> str:
    """The ``--dist-url`` of a job on several nodes: its first node, at a port derived from
    the job id (every node derives the same one), or MASTER_PORT when that is set."""
    port = os.environ.get("MASTER_PORT")
    if port is None:
        port = str(_PORT_BASE + zlib.crc32(job_id.encode()) % _PORT_RANGE)
    return f"tcp://{hostnames[0]}:{port}"


def multi_machine_args(
    args: Sequence[str], nodes: int, machine_rank: int, dist_url: str
) -> list[str]:
    """``Run.train_net_args`` (``--num-gpus`` counting the run's processes) for machine
    ``machine_rank`` of ``nodes``: ``--num-gpus`` per machine, ``--num-machines``,
    ``--machine-rank`` and ``--dist-url``. Unchanged for one node (``--dist-url auto``
    then picks a free port)."""
    args = list(args)
    if nodes == 1:
        return args
    at = args.index("--num-gpus")
    args[at + 1] = str(int(args[at + 1]) // nodes)
    if "--dist-url" in args:
        url = args.index("--dist-url")
        del args[url : url + 2]
    # Before the trailing KEY VALUE options, which argparse takes all that follows for.
    flags = ["--num-machines", str(nodes), "--machine-rank", str(machine_rank)]
    args[at + 2 : at + 2] = [*flags, "--dist-url", dist_url]
    return args


class RunFailedError(RuntimeError):
    """train_net did not finish a run (the job then ends as failed)."""


def _preemption_signal() -> signal.Signals:
    import submitit

    return signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]


def _start_train_net(command: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    # Its own process group, so the job can stop train_net and the processes it spawns
    # together; deaf to the signal Slurm sends before the time limit, which is the job's
    # to act on (train_net would die of it at once, wherever it is).
    ignored = _preemption_signal()

    def ignore_preemption() -> None:
        signal.signal(ignored, signal.SIG_IGN)

    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=ignore_preemption,
        )


def _ask_to_stop(child: subprocess.Popen[bytes]) -> None:
    # SIGCONT too: a suspended job's processes act on SIGTERM only once they run again.
    for sig in (signal.SIGTERM, signal.SIGCONT):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            break


def _stop(child: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> None:
    if child.poll() is None:
        _ask_to_stop(child)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(grace)
    # Whatever of the group outlived its leader (spawned workers); the group id stays
    # taken while any member lives, so this reaches no one else.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


@dataclass
class SweepJob:
    """What a job of the sweep runs on each of its nodes: one run of the grid, through
    ``python -m frn_det.train_net``. Pickled by submitit at submission; the first task
    (global rank 0) records the outcome in the run folder."""

    run: Run
    schedule: Schedule
    nodes: int = 1
    python: str = sys.executable
    train_net: tuple[str, ...] = TRAIN_NET
    resume: bool = False
    _child: subprocess.Popen[bytes] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def command(self, node: int, hostnames: Sequence[str], job_id: str) -> list[str]:
        """train_net's command on node ``node`` of the job (``--resume`` when this job was
        requeued, or the run folder has a checkpoint)."""
        folder = self.run.output_dir
        resume = self.resume or (folder / LAST_CHECKPOINT).is_file()
        args = self.run.train_net_args(resume=resume)
        if self.nodes > 1:
            args = multi_machine_args(args, self.nodes, node, rendezvous_url(hostnames, job_id))
        return [self.python, *self.train_net, *args]

    def __call__(self) -> dict[str, Any]:
        """Train the run; returns DONE.json's record (an empty dict on nodes other than
        the first). Raises ``RunFailedError`` after recording FAILED.json."""
        import submitit

        env = submitit.JobEnvironment()
        folder = self.run.output_dir
        first = env.global_rank == 0
        log = folder / (LOG_FILE if env.node == 0 else f"train_net.node{env.node}.log")
        command = self.command(env.node, env.hostnames, env.job_id)
        start_iter = (read_state(folder).checkpoint_iter or 0) if "--resume" in command else 0
        if first:
            # The run trains again: unfinished until it ends, not failed.
            (folder / FAILED_FILE).unlink(missing_ok=True)
        where = f"{_where(self.run)} on {socket.gethostname()}, job {env.job_id}"
        print(f"frn-det: {where}, node {env.node}/{env.num_nodes}; log: {log}", flush=True)
        print("frn-det: " + subprocess.list2cmdline(command), flush=True)
        started = time.monotonic()
        child = None
        try:
            child = self._child = _start_train_net(command, log)
            try:
                returncode = child.wait()
            finally:
                _stop(child)
                self._child = None
        except Exception as error:  # submitit's "not requeued" (too many time-outs), ...
            if first:
                stopped = None if child is None else child.returncode
                self._record_failure(stopped, f"stopped: {error}", started, env.job_id)
            raise
        if not first:
            if returncode:
                raise RunFailedError(f"train_net on node {env.node} exited with {returncode}")
            return {}
        state = read_state(folder)
        if returncode == 0 and state.final_model:
            done = _finish(
                self.run,
                self.schedule,
                state,
                time.monotonic() - started,
                self.schedule.max_iter - start_iter,
            )
            print(f"frn-det: done; {folder / DONE_FILE}", flush=True)
            return done
        reason = _exit_reason(returncode)
        self._record_failure(returncode, reason, started, env.job_id)
        raise RunFailedError(f"{_where(self.run)}: {reason}; see {log}")

    def __submitit_checkpoint__(self) -> Any:
        """submitit's checkpoint protocol, called on the first task when the job is about
        to reach its time limit or is preempted: stop train_net (its newest checkpoint is
        on disk) and return this run with ``--resume`` for the requeued job."""
        from submitit.helpers import DelayedSubmission

        if self._child is not None:
            # Only asked here: this runs in a signal handler that interrupted __call__'s
            # wait for train_net, whose lock a second wait would block on; __call__ waits
            # for it once submitit has requeued the job and ends this process.
            print("frn-det: stopping train_net to requeue the job", flush=True)
            _ask_to_stop(self._child)
        return DelayedSubmission(dataclasses.replace(self, resume=True))

    def checkpoint(self) -> Any:
        """``__submitit_checkpoint__``: submitit's signal handler takes a job for
        checkpointable (requeues it at its time limit) when it has this method."""
        return self.__submitit_checkpoint__()

    def _record_failure(
        self, returncode: int | None, reason: str, started: float, job_id: str
    ) -> None:
        folder = self.run.output_dir
        job = _read_json(folder / JOB_FILE)
        _write_json(
            folder / FAILED_FILE,
            {
                "returncode": returncode,
                "reason": reason,
                "iteration": read_state(folder).iteration,
                "seconds": time.monotonic() - started,
                "log": os.fspath(folder / LOG_FILE),
                "job_id": job_id,
                "job_log": job.get("job_log"),
            },
        )


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        return f"exit {returncode}, killed by {signal.Signals(-returncode).name}"
    return f"exit {returncode}" if returncode else "exit 0 without model_final.pth"


@dataclass(frozen=True)
class JobStatus:
    """What the scheduler says about the job of a run folder (its JOB.json).

    ``state`` is the scheduler's ("PENDING", "RUNNING", "COMPLETED", "TIMEOUT", ...),
    "ENDED" for a job it no longer knows, or None when it could not be asked (``note``
    says why); ``reason`` is why a pending job waits.
    """

    launcher: str
    job_id: str
    state: str | None
    reason: str = ""
    note: str = ""
    log: str = ""

    @property
    def active(self) -> bool:
        """Queued or running (also when unknown: it was submitted and may still be)."""
        return self.state is None or self.state in ACTIVE_STATES

    @property
    def name(self) -> str:
        """ "Slurm job 123", or "local job 4567" (submitit's local executor)."""
        return f"{'Slurm' if self.launcher == 'slurm' else 'local'} job {self.job_id}"

    def describe(self, run: RunState) -> str:
        """How a run that has not finished stands, with its job: "pending: Slurm job 12
        (Priority)", "unfinished (iter 120/400); Slurm job 12 running", "failed (exit 1,
        iter 3/400); Slurm job 12, log: .../train_net.log", "failed: Slurm job 12 ended
        (OUT_OF_MEMORY) without a result; log: ..." or "submitted, Slurm job 12 (squeue
        not found)"."""
        if self.state is None:
            known = "" if run.status == "new" else f"; {run.describe()}"
            return f"submitted, {self.name} ({self.note}){known}"
        if self.active:
            reason = f" ({self.reason})" if self.reason else ""
            if run.status == "new" and self.state == "PENDING":
                return f"pending: {self.name}{reason}"
            if run.status == "new":
                return f"starting: {self.name} {self.state.lower()}{reason}"
            return f"{run.describe()}; {self.name} {self.state.lower()}{reason}"
        if run.status == "failed":
            return f"{run.describe()}; {self.name}, log: {run.failed.get('log') or self.log}"
        ended = "no longer queued" if self.state == "ENDED" else self.state
        return f"failed: {self.name} ended ({ended}) without a result; log: {self.log}"

    def to_json(self) -> dict[str, Any]:
        """The status as summary.json holds it."""
        return {
            "launcher": self.launcher,
            "job_id": self.job_id,
            "state": self.state,
            "reason": self.reason,
            "active": self.active,
            "log": self.log,
            "note": self.note,
        }


def _run_query(command: Sequence[str]) -> tuple[str, str] | str:
    # (stdout, stderr) of a scheduler command, or why it could not be run.
    exe = shutil.which(command[0])
    if exe is None:
        return f"{command[0]} not found"
    try:
        done = subprocess.run(
            [exe, *command[1:]], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{command[0]} failed: {error}"
    if done.returncode and "Invalid job id" not in done.stderr:
        message = " ".join(done.stderr.split()) or f"exit {done.returncode}"
        return f"{command[0]} failed: {message}"
    return done.stdout, done.stderr


def _slurm_states(ids: Sequence[str]) -> tuple[dict[str, tuple[str, str]], str]:
    # {job id: (state, reason)} from squeue (which remembers ended jobs for a few minutes),
    # then sacct for the others where accounting is on; jobs neither knows have ended.
    found = _run_query(["squeue", "-h", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(ids)])
    if isinstance(found, str):
        return {}, found
    states: dict[str, tuple[str, str]] = {}
    for line in found[0].splitlines():
        job_id, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if job_id in ids and state:
            states[job_id] = (state, "" if reason in ("None", "") else reason)
    missing = [i for i in ids if i not in states]
    if missing:
        known = _run_query(
            ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(missing)]
        )
        if not isinstance(known, str):
            for line in known[0].splitlines():
                job_id, _, state = line.strip().partition("|")
                if job_id in missing and state:
                    # "CANCELLED by 0": the state is the first word.
                    states[job_id] = (state.split()[0], "")
        for job_id in missing:
            states.setdefault(job_id, ("ENDED", ""))
    return states, ""


def _local_state(job_id: str) -> str:
    # submitit's local job id is the pid of its controller on this machine; a zombie has
    # ended (its parent has not collected it yet).
    try:
        stat = Path(f"/proc/{int(job_id)}/stat").read_text()
        return "ENDED" if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X") else "RUNNING"
    except (OSError, ValueError, IndexError):
        pass
    try:
        os.kill(int(job_id), 0)
    except (OSError, ValueError):
        return "ENDED"
    return "RUNNING"


def job_statuses(folders: Iterable[str | os.PathLike]) -> dict[Path, JobStatus]:
    """The status of each run folder's job (JOB.json), by folder; folders without one are
    left out. Slurm is asked once for all of them (``squeue``, then ``sacct``)."""
    records = {}
    for folder in map(Path, folders):
        record = _read_json(folder / JOB_FILE)
        if record.get("job_id"):
            records[folder] = record
    slurm_ids = [str(r["job_id"]) for r in records.values() if r.get("launcher") == "slurm"]
    states, note = _slurm_states(slurm_ids) if slurm_ids else ({}, "")
    statuses = {}
    for folder, record in records.items():
        job_id, launcher = str(record["job_id"]), str(record.get("launcher", "slurm"))
        if launcher == "slurm":
            state, reason = states.get(job_id, (None, ""))
        else:
            state, reason = _local_state(job_id), ""
        unknown = note if state is None else ""
        statuses[folder] = JobStatus(
            launcher, job_id, state, reason, unknown, record.get("job_log", "")
        )
    return statuses


def _action_on_cluster(state: RunState, schedule: Schedule, job: JobStatus | None) -> str:
    if state.status != "done" and job is not None and job.active:
        return f"skip ({job.name} {(job.state or 'submitted').lower()})"
    if state.status != "done" and state.final_model and state.results:
        return f"record {DONE_FILE} (trained and evaluated)"
    action = _action(state, schedule)
    return action if action.startswith("skip") else f"submit: {action}"


def jobs_table(runs: Sequence[Run], options: ClusterOptions) -> str:
    """The jobs a sweep would submit for ``runs``, with their resources and what it would
    do with each (``--dry-run``), and the flags every job shares."""
    jobs = job_statuses(run.output_dir for run in runs)
    rows = []
    for run in runs:
        shape = options.shape(run)
        state = read_state(run.output_dir)
        rows.append(
            [
                _where(run),
                shape.nodes,
                shape.processes_per_node,
                shape.gpus_per_node,
                options.cpus_per_task or "default",
                f"{options.mem_gb:g} GB" if options.mem_gb else "default",
                _duration(options.timeout_min * 60),
                _action_on_cluster(state, plan_schedule(run), jobs.get(run.output_dir)),
            ]
        )
    headers = ["job (run)", "nodes", "procs/node", "GPUs/node", "CPUs/node", "mem/node",
               "time limit", "action"]  # fmt: skip
    table = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    where = ", ".join(
        f"{key} {getattr(options, key)}"
        for key in ("partition", "account", "qos", "constraint")
        if getattr(options, key) is not None
    )
    submitted = sum(row[-1].startswith("submit") for row in rows)
    lines = [
        table,
        "",
        f"{submitted} job(s) to submit through submitit ({options.launcher}"
        + (f"; {where}" if where else "")
        + f"), one task a node running python {' '.join(TRAIN_NET)}; requeued with --resume "
        f"at the time limit (up to {options.max_requeues} times) and on preemption; "
        f"submitit folder {options.folder}",
    ]
    return "\n".join(lines)


def submit_sweep(
    runs: Sequence[Run],
    options: ClusterOptions,
    *,
    python: str = sys.executable,
    train_net: Sequence[str] = TRAIN_NET,
    echo: Callable[[str], None] = print,
) -> dict[str, list[Path]]:
    """Submit a job for every run of ``runs`` that has not finished and has no job queued
    or running; write each one's RUN.json and JOB.json.

    Returns:
        The run folders by outcome: "submitted", "queued" (a job of theirs is queued or
        running), "skipped" (done), "done" (trained to the end before, DONE.json recorded
        now).
    Raises:
        SweepError: when a run folder holds a run started with other arguments, or a run
            does not fit a job (``ClusterOptions.shape``).
    """
    import submitit
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    states = [read_state(run.output_dir) for run in runs]
    _check_same_plan(runs, states)
    options.check(runs)
    schedules = [plan_schedule(run) for run in runs]
    # As the local sweep: every planned run has its RUN.json, so a summary shows it.
    for run, schedule in zip(runs, schedules, strict=True):
        run.output_dir.mkdir(parents=True, exist_ok=True)
        if not (run.output_dir / RUN_FILE).is_file():
            _write_json(run.output_dir / RUN_FILE, _plan_record(run, schedule))
    executor = submitit.AutoExecutor(
        folder=options.folder,
        cluster=options.cluster,
        slurm_max_num_timeout=options.max_requeues,
        local_max_num_timeout=options.max_requeues,
    )
    # Asked before the folders are read: a job that ends in between has its result then.
    jobs = job_statuses(run.output_dir for run in runs)
    outcome: dict[str, list[Path]] = {"submitted": [], "queued": [], "skipped": [], "done": []}
    for index, (run, schedule) in enumerate(zip(runs, schedules, strict=True), start=1):
        folder = run.output_dir
        state = read_state(folder)
        where = f"[{index}/{len(runs)}] {folder}"
        job = jobs.get(folder)
        action = _action_on_cluster(state, schedule, job)
        if state.status == "done":
            echo(f"{where}: done, skipped")
            outcome["skipped"].append(folder)
            continue
        if job is not None and job.active:
            echo(f"{where}: {action}; not submitted again")
            outcome["queued"].append(folder)
            continue
        if state.final_model and state.results:
            echo(f"{where}: trained and evaluated; recording {DONE_FILE}")
            _finish(run, schedule, state, 0.0, 0)
            outcome["done"].append(folder)
            continue
        shape = options.shape(run)
        resume = state.checkpoint_iter is not None
        executor.update_parameters(**options.parameters(run))
        try:
            submitted = executor.submit(
                SweepJob(run, schedule, shape.nodes, python, tuple(train_net), resume)
            )
        except (FailedJobError, FailedSubmissionError) as error:
            # sbatch's own words: an account or QOS it does not know, a time over the limit.
            raise SweepError(
                f"the cluster refused the job of run {_where(run)}: {error}; "
                f"{len(outcome['submitted'])} job(s) submitted before it"
            ) from None
        (folder / FAILED_FILE).unlink(missing_ok=True)
        record = {
            "launcher": options.launcher,
            "job_id": str(submitted.job_id),
            "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "job_log": os.fspath(submitted.paths.stdout),
            "submitit_folder": os.fspath(options.folder),
            **dataclasses.asdict(shape),
            "cpus_per_task": options.cpus_per_task,
            "mem_gb": options.mem_gb,
            "timeout_min": options.timeout_min,
            "partition": options.partition,
            "account": options.account,
            "qos": options.qos,
            "constraint": options.constraint,
            "resume": resume,
        }
        _write_json(folder / JOB_FILE, record)
        status = JobStatus(options.launcher, record["job_id"], "PENDING")
        gpus = f"{shape.gpus_per_node} GPU(s)" if shape.gpus_per_node else "no GPU"
        echo(
            f"{where}: {action.removeprefix('submit: ')} as {status.name} ({shape.nodes} "
            f"node(s) x {shape.processes_per_node} process(es), {gpus} a node, "
            f"{_duration(options.timeout_min * 60)}); log: {folder / LOG_FILE}, job log: "
            f"{record['job_log']}"
        )
        outcome["submitted"].append(folder)
    return outcome


def follow_jobs(
    runs: Sequence[Run],
    *,
    echo: Callable[[str], None] = print,
    progress_seconds: float = 30.0,
    poll_seconds: float = 10.0,
) -> dict[str, list[Path]]:
    """Wait until the jobs of ``runs`` (their JOB.json) have ended, echoing a line when a
    run finishes or fails and, at most every ``progress_seconds``, where each stands.

    Returns:
        The run folders by outcome: "done" and "failed" (ended without DONE.json).
    """
    index = {run.output_dir: i for i, run in enumerate(runs, start=1)}
    waiting = {run.output_dir: run for run in runs}
    outcome: dict[str, list[Path]] = {"done": [], "failed": []}
    shown: dict[Path, tuple[str, float]] = {}
    while waiting:
        time.sleep(poll_seconds)
        jobs = job_statuses(waiting)
        now = time.monotonic()
        for folder, run in list(waiting.items()):
            state = read_state(folder)
            where = f"[{index[folder]}/{len(runs)}] {_where(run)}"
            job = jobs.get(folder)
            if state.status == "done":
                shown_ap = ", ".join(
                    f"{k} {float(v):.2f}" for k, v in state.results.items() if k.endswith("/AP")
                )
                echo(f"{where}: done" + (f"; {shown_ap}" if shown_ap else ""))
                outcome["done"].append(folder)
                del waiting[folder]
            elif job is None or not job.active:
                text = job.describe(state) if job else state.describe()
                echo(f"{where}: FAILED: {text}")
                outcome["failed"].append(folder)
                del waiting[folder]
            else:
                text = job.describe(state)
                last, at = shown.get(folder, ("", -progress_seconds))
                if text != last and now - at >= progress_seconds:
                    echo(f"{where}: {text}")
                    shown[folder] = (text, now)
    return outcome


def run_on_cluster(
    runs: Sequence[Run],
    options: ClusterOptions,
    output: str | os.PathLike,
    *,
    echo: Callable[[str], None] = print,
    progress_seconds: float = 30.0,
    poll_seconds: float | None = None,
) -> int:
    """``tools/sweep.py --launcher slurm|submitit-local``: submit (``submit_sweep``), then
    with ``--wait`` follow the jobs (``follow_jobs``); returns the exit status (1 when a
    run failed while followed)."""
    outcome = submit_sweep(runs, options, echo=echo)
    followed = [run for run in runs if run.output_dir in outcome["submitted"] + outcome["queued"]]
    summary = (
        f"{len(outcome['submitted'])} submitted, {len(outcome['queued'])} already queued or "
        f"running, {len(outcome['skipped']) + len(outcome['done'])} already done."
    )
    if options.wait and followed:
        echo(summary + " Waiting for them to end.")
        # squeue is shared by every user of a cluster: ask it twice a minute at most.
        poll = poll_seconds or (30.0 if options.cluster == "slurm" else 2.0)
        ended = follow_jobs(
            followed, echo=echo, progress_seconds=progress_seconds, poll_seconds=poll
        )
        echo(
            f"{len(ended['done'])} done, {len(ended['failed'])} failed. Summary: python "
            f"tools/summarize.py {output}"
        )
        return 1 if ended["failed"] else 0
    ids = {_read_json(run.output_dir / JOB_FILE).get("job_id", "") for run in followed}
    ids = sorted(ids - {""}, key=lambda i: (len(i), i))
    follow = f"squeue --jobs {','.join(ids)}; " if ids and options.cluster == "slurm" else ""
    echo(
        f"{summary} Follow them: {follow}python tools/summarize.py {output} (pending, running "
        "and failed runs with their logs); run this command again to submit the runs that "
        "failed (they resume from their checkpoints)."
    )
    return 0


def _check_available(options: ClusterOptions) -> None:
    # Before anything is written: the executor needs submitit here, and Slurm's commands.
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SweepError(
            f"--launcher {options.launcher} needs submitit (pip install submitit), which is "
            "not installed; accepted without it: --launcher local"
        ) from None
    if options.cluster == "slurm":
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise SweepError(
                f"--launcher slurm needs Slurm's {' and '.join(missing)} on PATH, not found "
                "on this machine; run the sweep where jobs are submitted (a login node), or "
                "use --launcher local or submitit-local (this machine)"
            )
        if options.partition is not None:
            known = _run_query(["sinfo", "-h", "-o", "%R"])
            names = set() if isinstance(known, str) else set(known[0].split())
            unknown = [p for p in options.partition.split(",") if names and p not in names]
            if unknown:
                raise SweepError(
                    f"--partition {options.partition}: the cluster has no partition "
                    f"{', '.join(unknown)}; accepted: {', '.join(sorted(names))}"
                )


def check_launch(
    options: ClusterOptions | None, runs: Sequence[Run], dry_run: bool = False
) -> list[str]:
    """Raise ``SweepError`` unless ``runs`` can be submitted with ``options`` (every run
    fits a job; submitit and, for Slurm, sbatch and srun are here unless ``dry_run``);
    returns warnings about the job flags (``ClusterOptions.warnings``). Nothing to check
    for the local launcher (``options`` None)."""
    if options is None:
        return []
    options.check(runs)
    if not dry_run:
        _check_available(options)
    return options.warnings(runs)
