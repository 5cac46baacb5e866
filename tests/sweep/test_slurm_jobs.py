"""tools/sweep.py --launcher slurm without a cluster: flags, the jobs' resources and sbatch
scripts (a stand-in sbatch), what summaries say about queued and ended jobs (a stand-in
squeue), the multi-node command and submitit's checkpoint protocol. Nothing trains."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

submitit = pytest.importorskip("submitit")

from frn_det.engine import argument_parser as train_net_argument_parser  # noqa: E402
from frn_det.engine import build_config  # noqa: E402
from frn_det.engine.cli import check_launch_args  # noqa: E402
from frn_det_tools.slurm import SweepJob, job_statuses  # noqa: E402
from frn_det_tools.summarize import summarize  # noqa: E402
from frn_det_tools.sweep import expand_grid, main, plan_schedule  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHAPES_TEMPLATE = os.fspath(REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_{norm}.yaml")
STEM = "mask_rcnn_R_18_FPN"

# Stand-ins for Slurm's commands: sbatch keeps each script and numbers the jobs, squeue
# prints what the test wrote into $FAKE_SLURM/queue, and accounting is off (as on a
# cluster without slurmdbd).
FAKE_COMMANDS = {
    "sbatch": """n=$(( $(cat "$FAKE_SLURM/count" 2>/dev/null || echo 0) + 1 ))
echo $n > "$FAKE_SLURM/count"
cp "$1" "$FAKE_SLURM/job$n.sh"
echo "Submitted batch job $n"
""",
    "srun": "exit 0\n",
    "squeue": 'echo "$@" >> "$FAKE_SLURM/squeue_calls"; cat "$FAKE_SLURM/queue" 2>/dev/null\n',
    "sacct": 'echo "Slurm accounting storage is disabled" >&2; exit 1\n',
    "sinfo": "printf 'debug\\ngpu\\n'\n",
}


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of stand-in Slurm commands, first on PATH; returns it ($FAKE_SLURM)."""
    bin_dir = tmp_path / "fake_slurm"
    bin_dir.mkdir()
    for name, body in FAKE_COMMANDS.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", os.fspath(bin_dir))
    return bin_dir


def _cell(table: str, norm: str) -> str:
    """The text of the summary table's first cell after ``norm`` (one images-per-GPU
    column), however the table pads its columns."""
    [row] = [line for line in table.splitlines() if re.match(rf"\|\s*{norm}\s*\|", line)]
    return row.split("|")[2].strip()


def _argv(out: Path, *extra: str) -> list[str]:
    argv = ["--configs", SHAPES_TEMPLATE, "--norms", "gn,frn", "--ims-per-gpu", "2"]
    return argv + ["--output", os.fspath(out), *extra, "MODEL.FRN.IMPL", "autograd"]


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 or err.startswith("usage:"), err
    return err.splitlines()[-1]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--partition", "gpu"],
            r"--partition describe\(s\) cluster jobs, but --launcher is local.*accepted with "
            r"--launcher slurm or submitit-local",
        ),
        (["--launcher", "slurm", "--nodes", "0"], r"--nodes: expected an integer >= 1.*got '0'"),
        (
            ["--launcher", "slurm", "--nodes", "2"],
            r"--nodes 2 does not divide the 1 process\(es\) of run mask_rcnn_R_18_FPN/gn/ipg2/"
            r"seed0; accepted: a --nodes that divides",
        ),
        (
            ["--launcher", "slurm", "--num-gpus", "4", "--gpus-per-node", "2"],
            r"--gpus-per-node 2 is fewer than the 4 processes .* accepted: 0 \(CPU processes\) "
            r"or >= 4",
        ),
        (["--launcher", "slurm", "--mem-gb", "-1"], r"--mem-gb: expected a number > 0.*'-1'"),
        (["--launcher", "slurm", "--timeout-min", "1.5"], r"--timeout-min: expected an integer"),
        (["--launcher", "slurm", "--partition", "a b"], r"--partition: expected a partition"),
        (
            ["--launcher", "submitit-local", "--account", "frn"],
            r"--account has/have no meaning for --launcher submitit-local.*accepted with "
            r"--launcher slurm",
        ),
        (["--launcher", "cluster"], r"--launcher: invalid choice: 'cluster' \(choose from"),
        (["--wait"], r"--wait describe\(s\) cluster jobs, but --launcher is local"),
    ],
)
def test_bad_job_flags_are_refused_before_anything_runs_naming_flag_value_and_accepted(
    tmp_path, capsys, flags, message
):
    err = _refused(_argv(tmp_path / "out", "--dry-run", *flags), capsys)
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_without_slurm_on_path_the_sweep_says_where_to_run_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", os.fspath(tmp_path))  # no sbatch, no srun
    err = _refused(_argv(tmp_path / "out", "--launcher", "slurm"), capsys)
    assert "--launcher slurm needs Slurm's sbatch and srun on PATH" in err
    assert not (tmp_path / "out").exists()


def test_an_unknown_partition_is_refused_with_the_clusters_partitions(
    tmp_path, capsys, fake_slurm
):
    err = _refused(_argv(tmp_path / "out", "--launcher", "slurm", "--partition", "a100"), capsys)
    assert "--partition a100: the cluster has no partition a100; accepted: debug, gpu" in err
    assert not (fake_slurm / "count").exists()


def test_the_dry_run_lists_every_job_with_its_resources(tmp_path, capsys):
    flags = ["--launcher", "slurm", "--num-gpus", "4", "--nodes", "2", "--cpus-per-task", "8"]
    flags += ["--mem-gb", "64", "--timeout-min", "90", "--partition", "gpu", "--account", "frn"]
    assert main(_argv(tmp_path / "out", "--dry-run", *flags)) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split()[1:]
        for line in out.split("job (run)")[1].splitlines()
        if line.startswith(STEM)
    }
    # nodes, processes a node, GPUs a node (one a process), CPUs, memory, time, action
    assert rows[f"{STEM}/gn/ipg2/seed0"] == (
        ["2", "2", "2", "8", "64", "GB", "1h30m", "submit:", "start"]
    )
    assert "2 job(s) to submit through submitit (slurm; partition gpu, account frn)" in out
    assert not (tmp_path / "out").exists(), "a dry run submits and writes nothing"


def test_each_run_is_a_job_with_its_resources_and_summaries_show_queued_and_ended_jobs(
    tmp_path, capsys, fake_slurm
):
    out = tmp_path / "out"
    flags = ["--launcher", "slurm", "--gpus-per-node", "0", "--cpus-per-task", "2"]
    flags += ["--timeout-min", "90", "--partition", "debug", "--qos", "high"]
    assert main(_argv(out, *flags)) == 0
    printed = capsys.readouterr().out
    assert "2 submitted, 0 already queued or running, 0 already done" in printed
    assert "squeue --jobs 1,2" in printed
    folders = {norm: out / STEM / norm / "ipg2" / "seed0" for norm in ("gn", "frn")}
    jobs = {norm: json.loads((f / "JOB.json").read_text()) for norm, f in folders.items()}
    assert (jobs["gn"]["job_id"], jobs["frn"]["job_id"]) == ("1", "2")
    assert jobs["gn"]["job_log"] == os.fspath(out / "submitit" / "1_0_log.out")
    assert (jobs["gn"]["nodes"], jobs["gn"]["gpus_per_node"], jobs["gn"]["cpus_per_task"]) == (
        1,
        0,
        2,
    )
    assert all((f / "RUN.json").is_file() for f in folders.values())

    script = (fake_slurm / "job1.sh").read_text()
    for line in (
        "#SBATCH --job-name=gn-ipg2-seed0-mask_rcnn_R_18_FPN",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --time=90",
        "#SBATCH --partition=debug",
        "#SBATCH --qos=high",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@90",
    ):
        assert line in script.splitlines(), (line, script)
    assert "gpus" not in script, "no GPU asked for with --gpus-per-node 0"

    # The pickled job trains this run with train_net's arguments, not resuming.
    delayed = submitit.helpers.DelayedSubmission.load(out / "submitit" / "1_submitted.pkl")
    job = delayed.function
    assert isinstance(job, SweepJob) and job.run.output_dir == folders["gn"]
    command = job.command(0, ["node1"], "1")
    assert command[1:3] == ["-m", "frn_det.train_net"] and "--resume" not in command
    assert command[3:] == job.run.train_net_args()

    # Summaries while the jobs wait and run; squeue is asked once for both.
    (fake_slurm / "queue").write_text("1|PENDING|Priority\n2|RUNNING|None\n")
    table = summarize(out, curves=False)["table"].read_text()
    assert _cell(table, "gn") == "pending: Slurm job 1 (Priority)"
    assert _cell(table, "frn") == "starting: Slurm job 2 running"
    assert (fake_slurm / "squeue_calls").read_text().count("\n") == 1
    runs = json.loads((out / "summary" / "summary.json").read_text())["runs"]
    states = {r["job"]["job_id"]: r["job"]["state"] for r in runs}
    assert states == {"1": "PENDING", "2": "RUNNING"}

    # Sweeping again while they are queued submits nothing.
    assert main(_argv(out, *flags)) == 0
    assert "0 submitted, 2 already queued or running" in capsys.readouterr().out
    assert (fake_slurm / "count").read_text().strip() == "2"

    # Both ended: gn after train_net failed (its FAILED.json, as the job writes it, and a
    # checkpoint), frn killed before it could write anything (out of memory, say).
    (fake_slurm / "queue").write_text("")
    gn = folders["gn"]
    (gn / "model_0000099.pth").write_bytes(b"ckpt")
    (gn / "last_checkpoint").write_text("model_0000099.pth")
    (gn / "metrics.json").write_text('{"iteration": 119, "total_loss": 1.5}\n')
    log = gn / "train_net.log"
    failed = {"returncode": 1, "reason": "exit 1", "iteration": 120, "log": os.fspath(log)}
    (gn / "FAILED.json").write_text(json.dumps(failed))
    table = summarize(out, curves=False)["table"].read_text()
    assert _cell(table, "gn") == f"failed (exit 1, iter 120/1200); Slurm job 1, log: {log}"
    job_log = out / "submitit" / "2_0_log.out"
    assert _cell(table, "frn") == (
        f"failed: Slurm job 2 ended (no longer queued) without a result; log: {job_log}"
    )

    # The next sweep submits both again, gn resuming from its checkpoint.
    assert main(_argv(out, *flags)) == 0
    printed = capsys.readouterr().out
    assert "resume from iter 100/1200 (after exit 1) as Slurm job 3" in printed
    assert "2 submitted" in printed
    resumed = submitit.helpers.DelayedSubmission.load(out / "submitit" / "3_submitted.pkl")
    assert resumed.function.resume and "--resume" in resumed.function.command(0, ["n"], "3")
    assert json.loads((gn / "JOB.json").read_text())["job_id"] == "3"
    assert not (gn / "FAILED.json").exists(), "resubmitted: unfinished, not failed"


def test_a_job_on_several_nodes_meets_on_its_first_node_with_the_planned_world_size(
    tmp_path, monkeypatch
):
    [run] = expand_grid([SHAPES_TEMPLATE], ["gn"], [2], tmp_path, num_gpus=16)
    job = SweepJob(run, plan_schedule(run), nodes=2)
    # What a job's tasks see on the second of two nodes, as submitit reads it from Slurm.
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NODEID", "1")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    env = submitit.JobEnvironment()
    second = job.command(env.node, env.hostnames, env.job_id)
    first = job.command(0, env.hostnames, env.job_id)
    args = second[3:]
    at = args.index("--num-gpus")
    assert args[at : at + 8] == [
        "--num-gpus", "8", "--num-machines", "2", "--machine-rank", "1",
        "--dist-url", first[first.index("--dist-url") + 1],
    ]  # fmt: skip
    assert first[first.index("--dist-url") + 1].startswith("tcp://gpu07:")
    assert first[first.index("--machine-rank") + 1] == "0"
    parsed = train_net_argument_parser().parse_args(args)
    check_launch_args(parsed)
    # 8 processes on each of 2 nodes: the world size, so the batch, the sweep planned.
    assert build_config(parsed).SOLVER.IMS_PER_BATCH == job.schedule.ims_per_batch == 32


@pytest.fixture
def local_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment submitit's local executor gives a job's only task."""
    for name, value in {
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_JOB_ID": "7",
        "SUBMITIT_LOCAL_NODEID": "0",
        "SUBMITIT_LOCAL_GLOBALID": "0",
        "SUBMITIT_LOCAL_LOCALID": "0",
    }.items():
        monkeypatch.setenv(name, value)


def _shell_job(tmp_path: Path, script: str) -> SweepJob:
    # A job whose "train_net" is a shell script (sh -c SCRIPT, the run's arguments after).
    [run] = expand_grid([SHAPES_TEMPLATE], ["gn"], [2], tmp_path)
    run.output_dir.mkdir(parents=True)
    return SweepJob(run, plan_schedule(run), python="/bin/sh", train_net=("-c", script))


def test_a_signal_before_the_time_limit_stops_train_net_and_requeues_the_run_with_resume(
    tmp_path, local_task
):
    job = _shell_job(tmp_path, "exec sleep 60")
    requeued = []

    def as_submitit_does(signum, frame):
        # submitit's handler on the first task, once train_net runs: checkpoint, requeue,
        # end the process.
        if job._child is None:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            return
        requeued.append(job.checkpoint())
        raise SystemExit(144)

    previous = signal.signal(signal.SIGALRM, as_submitit_does)
    started = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        with pytest.raises(SystemExit):
            job()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # train_net stopped (not waited on forever inside the handler), nothing recorded as
    # failed, and the requeued job resumes.
    assert time.monotonic() - started < 20
    assert job._child is None
    [delayed] = requeued
    assert delayed.function.resume and "--resume" in delayed.function.command(0, ["n"], "7")
    assert not (job.run.output_dir / "FAILED.json").exists()


def test_train_net_ignores_the_time_limit_signal_and_a_failure_is_recorded_with_its_log(
    tmp_path, local_task
):
    # Slurm signals every process of a job; the job, not train_net, acts on it.
    job = _shell_job(tmp_path, "kill -USR2 $$; echo 'Traceback: boom'; exit 3")
    with pytest.raises(RuntimeError, match=r"gn/ipg2/seed0: exit 3; see .*train_net.log"):
        job()
    folder = job.run.output_dir
    failed = json.loads((folder / "FAILED.json").read_text())
    assert failed["returncode"] == 3 and failed["log"] == os.fspath(folder / "train_net.log")
    assert "Traceback: boom" in (folder / "train_net.log").read_text()


def test_local_jobs_are_told_from_their_controller_process(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    record = {"launcher": "submitit-local", "job_id": os.getpid()}
    (folder / "JOB.json").write_text(json.dumps(record))
    [status] = job_statuses([folder]).values()
    assert status.name == f"local job {os.getpid()}" and status.active
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    (folder / "JOB.json").write_text(json.dumps({**record, "job_id": ended.pid}))
    assert not job_statuses([folder])[folder].active
