"""tools/sweep.py --launcher submitit-local: a tiny 2-run sweep as submitit jobs, end to end,
one of them signalled as Slurm signals a job before its time limit once it has a checkpoint:
it is requeued and resumes from that checkpoint, and both runs finish."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

submitit = pytest.importorskip("submitit")

from frn_det_tools.summarize import summarize  # noqa: E402
from frn_det_tools.sweep import main  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHAPES_TEMPLATE = os.fspath(REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_{norm}.yaml")
STEM = "mask_rcnn_R_18_FPN"



def _cell(table: str, norm: str) -> str:
    """The text of the summary table's first cell after ``norm`` (one images-per-GPU
    column), however the table pads its columns."""
    [row] = [line for line in table.splitlines() if re.match(rf"\|\s*{norm}\s*\|", line)]
    return row.split("|")[2].strip()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive_with(text: str) -> list[str]:
    # Command lines of the live (not zombie) processes that mention ``text``.
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state not in ("Z", "X"):
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.fixture
def local_jobs(tmp_path: Path) -> Iterator[Path]:
    """The sweep's output folder; afterwards every job controller the test left running
    (its own children) is interrupted, which ends the job and its train_net."""
    out = tmp_path / "out"
    yield out
    for job_file in out.glob("*/*/ipg*/seed*/JOB.json"):
        pid = int(json.loads(job_file.read_text())["job_id"])
        if pid in _children(os.getpid()):
            os.kill(pid, signal.SIGINT)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds jobs through /proc")
def test_a_sweep_of_submitit_jobs_finishes_and_a_signalled_job_resumes_from_its_checkpoint(
    tiny_shapes, monkeypatch, capsys, local_jobs, job_tiny_opts
):
    monkeypatch.setenv("DETECTRON2_DATASETS", os.fspath(tiny_shapes))
    out = local_jobs
    argv = ["--configs", SHAPES_TEMPLATE, "--norms", "gn,frn", "--ims-per-gpu", "2"]
    argv += ["--output", os.fspath(out), "--launcher", "submitit-local", "--wait", *job_tiny_opts]
    victim = out / STEM / "frn" / "ipg2" / "seed0"
    signalled: dict[str, object] = {}

    def signal_after_first_checkpoint() -> None:
        # What Slurm does 90 s before a job's time limit: the preemption signal to the
        # job's task (the controller's child), here once the run has saved a checkpoint.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if (victim / "last_checkpoint").is_file() and (victim / "JOB.json").is_file():
                controller = int(json.loads((victim / "JOB.json").read_text())["job_id"])
                signalled["tasks"] = tasks = _children(controller)
                for task in tasks:
                    os.kill(task, signal.SIGUSR2)
                return
            time.sleep(0.1)

    interrupter = threading.Thread(target=signal_after_first_checkpoint, daemon=True)
    interrupter.start()
    status = main(argv)
    interrupter.join(timeout=1)
    printed = capsys.readouterr().out
    assert len(signalled.get("tasks", [])) == 1, (signalled, printed)
    assert status == 0, printed
    assert "2 done, 0 failed" in printed

    for norm in ("gn", "frn"):
        done = json.loads((out / STEM / norm / "ipg2" / "seed0" / "DONE.json").read_text())
        assert {"bbox/AP", "segm/AP"} <= done["results"].keys(), done
    # The signalled run: stopped, requeued by submitit, started again with --resume, and
    # trained on from its checkpoint instead of from the start.
    job = json.loads((victim / "JOB.json").read_text())
    job_log = Path(job["job_log"]).read_text()
    assert "Calling checkpoint method" in job_log and "Requeued job" in job_log, job_log
    train_net_log = (victim / "train_net.log").read_text()
    starts = re.findall(r"Command Line Args: Namespace\(.*?resume=(\w+)", train_net_log)
    assert starts == ["False", "True"], starts
    log = (victim / "log.txt").read_text()
    resumed_at = [int(i) for i in re.findall(r"Starting training from iteration (\d+)", log)]
    assert resumed_at[0] == 0 and len(resumed_at) == 2 and 2 <= resumed_at[1] <= 4, resumed_at
    done = json.loads((victim / "DONE.json").read_text())
    assert done["images_trained"] == (4 - resumed_at[1]) * 2
    assert not (victim / "FAILED.json").exists()

    # Nothing of the jobs is left running (a controller ends a moment after its task).
    deadline = time.monotonic() + 30
    while _alive_with(os.fspath(out)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive_with(os.fspath(out)) == []

    # A second sweep submits nothing; the summary has both runs' AP.
    assert main(argv) == 0
    assert "0 submitted, 0 already queued or running, 2 already done" in capsys.readouterr().out
    table = summarize(out, curves=False)["table"].read_text()
    for norm in ("gn", "frn"):
        assert re.fullmatch(r"\d+\.\d / \d+\.\d", _cell(table, norm)), table
