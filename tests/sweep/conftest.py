"""Fixtures for the sweep tests: fake run folders, a runner that trains nothing, and a tiny
shapes dataset for the one real run through tools/train_net.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from frn_det.data.shapes import generate_shapes_dataset
from frn_det.engine.trainer import NonFiniteLossError
from frn_det_tools.run_folders import run_dir

REPO = Path(__file__).resolve().parents[2]
SHAPES_TEMPLATE = os.fspath(REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_{norm}.yaml")
STEM = "mask_rcnn_R_18_FPN"


def _option(command: Sequence[str], key: str) -> str:
    return command[list(command).index(key) + 1]


def _metrics_line(**values: Any) -> str:
    return json.dumps(values) + "\n"


class FakeRunner:
    """A sweep runner that trains nothing: it records each command and writes what
    train_net would (metrics.json lines, last_checkpoint, model_final.pth), with a final
    box AP of 30 + SEED.

    ``crash_at``: OUTPUT_DIR -> iteration at which that run "crashes" (exit 1) after a
    checkpoint at iteration 100 and a torn metrics line. ``diverge_at``: OUTPUT_DIR ->
    iteration at which that run stops on a non-finite loss (exit 1), its log ending as
    train_net's does (``diverged_log_line``).
    """

    def __init__(
        self, crash_at: dict[Path, int] | None = None, diverge_at: dict[Path, int] | None = None
    ) -> None:
        self.crash_at = dict(crash_at or {})
        self.diverge_at = dict(diverge_at or {})
        self.commands: list[list[str]] = []

    def __call__(self, command: Sequence[str], log_path: Path) -> int:
        self.commands.append(list(command))
        out = Path(_option(command, "OUTPUT_DIR"))
        seed = int(_option(command, "SEED"))
        log_path.write_text("fake train_net\n")
        # The sweep records each run's scaled schedule before starting it.
        max_iter = json.loads((out / "RUN.json").read_text())["schedule"]["max_iter"]
        with (out / "metrics.json").open("a") as f:
            start = 100 if "--resume" in command else 0
            crash = self.crash_at.pop(out, None)
            diverge = self.diverge_at.pop(out, None)
            for it in range(start + 19, (crash or diverge or max_iter), 20):
                f.write(_metrics_line(iteration=it, total_loss=2.0 - it / 1000))
            if diverge is not None:
                log_path.write_text(f"fake train_net\n{diverged_log_line(diverge)}\n")
                return 1
            if crash is not None:
                (out / "model_0000099.pth").write_bytes(b"ckpt")
                (out / "last_checkpoint").write_text("model_0000099.pth")
                # Killed mid-write: a resumed run's first line will run into this one.
                f.write('{"iteration": ' + str(crash) + ', "total_lo')
                return 1
            f.write(_metrics_line(iteration=max_iter, **{"bbox/AP": 30.0 + seed}))
        (out / "model_final.pth").write_bytes(b"final")
        (out / "last_checkpoint").write_text("model_final.pth")
        return 0


def diverged_log_line(iteration: int) -> str:
    """The line train_net prints when a run diverges at ``iteration``: the message of the
    error the trainer raises, as ``frn_det.engine.exits.exit_with`` prints it."""
    error = NonFiniteLossError(iteration, {"loss_cls": float("nan")}, hint="Lower the LR.")
    return f"train_net.py: error: {error}"


@pytest.fixture
def fake_runner() -> type[FakeRunner]:
    """The FakeRunner class, to build one per sweep."""
    return FakeRunner


@pytest.fixture
def fake_run() -> Callable[..., Path]:
    """``fake_run(output, norm, ipg, seed, status, box=, mask=, iteration=, max_iter=400,
    num_gpus=1, stem=STEM, returncode=1, diverged=False)``: write a run folder as the sweep
    leaves it in ``status`` "done", "unfinished", "failed" or "new" (a failed one with
    ``diverged`` stopped on a non-finite loss at ``iteration``); returns the folder."""

    def make(
        output: Path,
        norm: str,
        ipg: int,
        seed: int,
        status: str,
        box: float | None = None,
        mask: float | None = None,
        iteration: int = 0,
        max_iter: int = 400,
        num_gpus: int = 1,
        stem: str = STEM,
        returncode: int = 1,
        diverged: bool = False,
    ) -> Path:
        folder = run_dir(output, stem, norm, ipg, seed)
        folder.mkdir(parents=True)
        plan = {
            "config_stem": stem,
            "norm": norm,
            "ims_per_gpu": ipg,
            "num_gpus": num_gpus,
            "seed": seed,
            "schedule": {"ims_per_batch": ipg * num_gpus, "base_lr": 0.02, "max_iter": max_iter},
        }
        (folder / "RUN.json").write_text(json.dumps(plan))
        results = {}
        if box is not None:
            results["bbox/AP"] = box
        if mask is not None:
            results["segm/AP"] = mask
        with (folder / "metrics.json").open("w") as f:
            # detectron2 writes metrics every 20 iterations by default; every 10 here.
            last = max_iter if status == "done" else iteration
            for it in range(9, last, 10):
                f.write(_metrics_line(iteration=it, total_loss=3.0 - it / max_iter))
            if status == "done":
                f.write(_metrics_line(iteration=max_iter, **results))
        if status == "done":
            (folder / "model_final.pth").write_bytes(b"final")
            done = {**plan, "max_iter": max_iter, "results": results}
            (folder / "DONE.json").write_text(json.dumps(done))
        if status == "failed":
            (folder / "FAILED.json").write_text(json.dumps({"returncode": returncode}))
            if diverged:
                (folder / "train_net.log").write_text(diverged_log_line(iteration) + "\n")
        return folder

    return make


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shapes dataset of 4 train and 2 val images (a DETECTRON2_DATASETS root)."""
    root = tmp_path_factory.mktemp("datasets")
    generate_shapes_dataset(root, num_train=4, num_val=2, seed=0)
    return root


# 4 iterations of 2 images at 64 px with a checkpoint every 2, the model narrowed: seconds
# of training a run, so the job machinery is what the test spends its time on.
JOB_TINY_OPTS = [
    "MODEL.FRN.IMPL", "autograd",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
    # Every detection kept: 4 iterations' model scores low, and AP is then a number.
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "DATALOADER.NUM_WORKERS", "0",
    "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MAX_SIZE_TRAIN", "64",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "64",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.REFERENCE_WORLD_BATCH", "2",
    "SOLVER.MAX_ITER", "4",
    "SOLVER.CHECKPOINT_PERIOD", "2",
    "SOLVER.STEPS", "()",
    "SOLVER.WARMUP_ITERS", "1",
]  # fmt: skip


@pytest.fixture
def job_tiny_opts() -> list[str]:
    """JOB_TINY_OPTS: the config options of the Slurm launcher's end-to-end sweeps."""
    return list(JOB_TINY_OPTS)
