"""Sweeps: a grid of configs x norms x images per GPU x seeds, one train_net process per run.

The picture frn-det exists for is AP against images per GPU, one line per norm. A sweep
trains every point of that grid with ``tools/train_net.py`` (a subprocess per run, so a
crash or a leak in one run cannot touch the next) and its per-GPU batch scaling
(``--ims-per-gpu``): the total batch is ``N x processes`` and the learning rate and
iteration counts follow it (``frn_det.engine.batch``).

How a norm is chosen: one config file per norm, from a template with a ``{norm}``
placeholder, e.g. ``configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml`` with norms
``bn,syncbn,gn,frn``. The configs already follow that naming, and a config per norm can
carry what a norm needs beyond the NORM keys (FRN's longer warm-up, pretrained weights of
the matching norm for COCO), which overriding NORM keys from the command line would lose.

Each run has its own folder, ``OUTPUT/<config stem>/<norm>/ipg<N>/seed<S>/``
(``frn_det_tools.run_folders``), where the config stem is the template's file name without
``{norm}`` (``mask_rcnn_R_18_FPN``). In it, next to detectron2's files (``metrics.json``,
``last_checkpoint``, ``model_final.pth``):

- ``RUN.json``: the plan (train_net arguments, schedule), written when the sweep starts;
- ``DONE.json``: written atomically once the run has exited cleanly with a final model,
  holding its final evaluation; a run with it is skipped by later sweeps;
- ``FAILED.json``: the exit status of a run that crashed; the next sweep retries it,
  unless its log says it diverged (a non-finite loss): a diverged run is a result of its
  settings and is kept (``--retry-diverged`` trains it again). The sweep exits 1 when some
  run failed, 3 (``EXIT_DIVERGED_RUNS``) when the only runs that did not finish diverged;
- ``train_net.log``: what train_net printed.

A run with a checkpoint but no DONE.json is resumed (``--resume``) from that checkpoint.

``--launcher slurm`` submits each run as its own Slurm job instead, with the same folders
and files (``frn_det_tools.slurm``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from detectron2.config import get_cfg
from tabulate import tabulate

from frn_det.config import add_frn_config
from frn_det.engine import argument_parser as train_net_argument_parser
from frn_det.engine import build_config, check_ims_per_gpu
from frn_det.engine.batch import RESCALED_KEYS
from frn_det.engine.trainer import DIVERGED_LINE, strict_json_value
from frn_det.engine.validation import InputError, check_config_options
from frn_det.file_io import atomic_write_json
from frn_det_tools.run_folders import (
    CANONICAL_NORMS,
    CONFIG_FILE,
    DONE_FILE,
    FAILED_FILE,
    FINAL_MODEL,
    LAST_CHECKPOINT,
    LOG_FILE,
    METRICS_FILE,
    RUN_DIR_GLOB,
    RUN_FILE,
    run_dir,
)

__all__ = [
    "EXIT_DIVERGED_RUNS",
    "EXIT_FAILED_RUNS",
    "Run",
    "RunState",
    "Schedule",
    "SweepError",
    "config_stem",
    "diverged_at",
    "dry_run_table",
    "expand_grid",
    "final_results",
    "grid_warnings",
    "main",
    "metrics_by_iteration",
    "plan_schedule",
    "read_metrics",
    "read_state",
    "run_sweep",
    "subprocess_runner",
]


EXIT_FAILED_RUNS = 1
"""Exit status of a sweep in which some run failed (other than by diverging)."""
EXIT_DIVERGED_RUNS = 3
"""Exit status of a sweep whose only unfinished runs diverged (kept as results)."""

NORM_PLACEHOLDER = "{norm}"
# A norm name ending in this runs its config with MODEL.PADDING_AWARE_NORM True: frn_pa
# is configs/..._frn.yaml, padding-aware.
PADDING_AWARE_SUFFIX = "_pa"
# fixed_images: the paper's protocol, the images of a run fixed, so LR, iterations and
# steps scale with the total batch (images per GPU x processes). fixed_batch: the same
# total batch, schedule and images at each step for every point; only how they are split
# into processes of N images changes.
DESIGNS = ("fixed_images", "fixed_batch")
# The sweep sets these per run; an override among the KEY VALUE options would silently
# break the folder layout or the grid.
RESERVED_KEYS = ("SEED", "OUTPUT_DIR", "SOLVER.IMS_PER_GPU")
# A run's command starts train_net as a module, so it works from an installed frn-det too.
TRAIN_NET = ("-m", "frn_det.train_net")

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
# detectron2 flattens evaluation results to "task/metric" (or "dataset/task/metric" with
# several test datasets) in metrics.json.
_EVAL_KEY_RE = re.compile(r"(^|/)(bbox|segm|keypoints|sem_seg|panoptic_seg)/")
_CHECKPOINT_RE = re.compile(r"^model_(?P<iter>\d+)\.pth$")

Runner = Callable[[Sequence[str], Path], int]


class SweepError(ValueError):
    """A grid that cannot be run as given (bad template, value, or clashing folders)."""


@dataclass(frozen=True)
class Run:
    """One point of the grid, repeated once: what to train and where."""

    config: Path
    config_stem: str
    norm: str
    ims_per_gpu: int
    seed: int
    num_gpus: int
    output_dir: Path
    opts: tuple[str, ...] = ()
    design: str = "fixed_images"
    padding_aware: bool = False

    def train_net_args(self, resume: bool = False) -> list[str]:
        """The arguments of ``tools/train_net.py`` for this run (without the script)."""
        args = ["--config-file", os.fspath(self.config), "--num-gpus", str(self.num_gpus)]
        args += ["--ims-per-gpu", str(self.ims_per_gpu)]
        if self.num_gpus > 1:
            # detectron2's default URL is a port derived from the user id: two sweeps (or a
            # sweep and a test) of one user would collide on it.
            args += ["--dist-url", "auto"]
        if resume:
            args.append("--resume")
        args += [*self.opts, "SEED", str(self.seed), "OUTPUT_DIR", os.fspath(self.output_dir)]
        return args


@dataclass(frozen=True)
class Schedule:
    """The schedule a run trains with, after per-GPU batch scaling."""

    ims_per_batch: int
    base_lr: float
    max_iter: int

    @property
    def images(self) -> int:
        """Images processed by the whole run: iterations x total batch."""
        return self.max_iter * self.ims_per_batch


@dataclass
class RunState:
    """What a run folder says about its run.

    ``status`` is "done" (DONE.json), "failed" (FAILED.json, not retried yet),
    "unfinished" (trained some iterations, or has a checkpoint) or "new" (nothing yet).
    ``diverged_at`` is, for a failed run whose train_net.log says it stopped on a
    non-finite loss (``DIVERGED_LINE``), the iteration it diverged at; None otherwise.
    ``iteration`` counts the iterations metrics.json has recorded, ``checkpoint_iter`` those
    the last checkpoint holds (None without one), ``max_iter`` comes from RUN.json or
    DONE.json (None if neither). ``results`` holds the final evaluation (flat detectron2
    keys such as "bbox/AP") for done runs, and for others the latest evaluation at or after
    ``max_iter``, if metrics.json has one.
    """

    status: str
    iteration: int = 0
    checkpoint_iter: int | None = None
    max_iter: int | None = None
    final_model: bool = False
    results: dict[str, float] = field(default_factory=dict)
    done: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    skipped_lines: int = 0
    diverged_at: int | None = None

    @property
    def diverged(self) -> bool:
        """Whether the run failed by diverging (a result, not a crash)."""
        return self.diverged_at is not None

    def settled(self, retry_diverged: bool = False) -> bool:
        """Whether a sweep leaves the run as it is: done, or diverged and not retried."""
        return self.status == "done" or (self.diverged and not retry_diverged)

    def describe(self) -> str:
        """A short human description: "done", "unfinished (iter 120/400)", "failed (...)"."""
        total = "?" if self.max_iter is None else str(self.max_iter)
        progress = f"iter {self.iteration}/{total}"
        if self.status == "done":
            return "done"
        if self.diverged:
            return f"diverged at iter {self.diverged_at} ({progress})"
        if self.status == "failed":
            return f"failed (exit {self.failed.get('returncode', '?')}, {progress})"
        if self.status == "new":
            return f"not started ({progress})"
        return f"unfinished ({progress})"


def config_stem(template: str) -> str:
    """The folder name of a config template: its file name without ``{norm}``, the
    extension, and separators left dangling (``mask_rcnn_R_18_FPN_{norm}.yaml`` ->
    ``mask_rcnn_R_18_FPN``)."""
    name = Path(template).name
    for suffix in (".yaml", ".yml", ".py"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = name.replace(NORM_PLACEHOLDER, "")
    name = re.sub(r"[_-]{2,}", "_", name).strip("_-.")
    return name or "config"


def _check_name(kind: str, value: str) -> str:
    if not _NAME_RE.match(value):
        raise SweepError(
            f"{kind} {value!r} cannot name a folder; use letters, digits, '_', '-' and '.'"
        )
    return value


def _check_opts(opts: Sequence[str]) -> tuple[str, ...]:
    check_config_options(opts, error=SweepError)
    for key in opts[::2]:
        if key in RESERVED_KEYS:
            raise SweepError(
                f"config option {key} is set by the sweep for every run; use --seed / "
                f"--repeats for SEED, --output for OUTPUT_DIR, --ims-per-gpu for "
                f"SOLVER.IMS_PER_GPU (reserved: {', '.join(RESERVED_KEYS)})"
            )
    return tuple(opts)


def expand_grid(
    templates: Sequence[str],
    norms: Sequence[str],
    ims_per_gpu: Sequence[int],
    output: str | os.PathLike,
    *,
    repeats: int = 1,
    seed: int = 0,
    num_gpus: int = 1,
    norm_num_gpus: Mapping[str, int] | None = None,
    opts: Sequence[str] = (),
    total_batch: int | None = None,
) -> list[Run]:
    """Every run of the grid templates x norms x images per GPU x repeats, in that order.

    Args:
        templates: config paths with a ``{norm}`` placeholder, one config file per norm.
        norms: the names substituted for ``{norm}`` (``bn``, ``syncbn``, ``gn``, ``frn``);
            a name ending in ``_pa`` (``frn_pa``) is its config with
            MODEL.PADDING_AWARE_NORM True.
        ims_per_gpu: images per GPU (process), each an int >= 1.
        output: the sweep's root folder.
        repeats: runs per point; repeat ``r`` uses SEED ``seed + r``, so every point of
            the grid sees the same seeds (norms are compared on equal random draws).
        num_gpus: processes per run (``--num-gpus``), unless ``norm_num_gpus`` says otherwise
            for a norm (SyncBN only differs from BN with >= 2 processes).
        total_batch: None for the fixed-images design (each point's total batch is its
            images per GPU x processes, its schedule rescaled from the reference batch);
            an int T for the fixed-batch design: each point trains T/N processes of N images,
            all with the same total batch T, schedule and images at each step (aspect-ratio
            grouping off, so a step's images do not depend on the split), in folders
            ``<config stem>_fixed_batch<T>``. ``num_gpus``/``norm_num_gpus`` must then be
            left alone: the split sets the processes.
        opts: KEY VALUE config options passed to every run (not SEED, OUTPUT_DIR or
            SOLVER.IMS_PER_GPU, which the sweep sets). Schedule values among them
            (SOLVER.MAX_ITER, STEPS, ...) are a schedule at the config's
            SOLVER.REFERENCE_WORLD_BATCH and are rescaled for each point as the config's
            own are: the sweep passes that batch with them (train_net keeps typed values
            as typed unless the batch they were written for is typed too).
    Raises:
        SweepError: naming the template, norm, value or folder that is not accepted.
    """
    if not templates:
        raise SweepError(
            "no config template given; e.g. configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml"
        )
    if not norms:
        raise SweepError("no norm given; e.g. bn,syncbn,gn,frn")
    if not ims_per_gpu:
        raise SweepError("no images per GPU given; e.g. 1,2,4,8")
    for kind, values in (("norm", norms), ("images per GPU", ims_per_gpu)):
        if len(set(values)) != len(values):
            raise SweepError(f"{kind} values repeat: {list(values)}")
    norms = [_check_name("norm", n) for n in norms]
    try:
        sizes = [check_ims_per_gpu(n) for n in ims_per_gpu]
    except ValueError as error:
        raise SweepError(str(error)) from None
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise SweepError(f"repeats must be an integer >= 1, got {repeats!r}")
    norm_num_gpus = dict(norm_num_gpus or {})
    unknown = sorted(set(norm_num_gpus) - set(norms))
    if unknown:
        raise SweepError(
            f"process counts given for norms not in the sweep: {unknown}; norms: {list(norms)}"
        )
    for norm, count in {"all norms": num_gpus, **norm_num_gpus}.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise SweepError(
                f"number of processes for {norm} must be an integer >= 1, got {count!r}"
            )
    opts = _check_opts(opts)
    design = "fixed_images" if total_batch is None else "fixed_batch"
    if total_batch is not None:
        if isinstance(total_batch, bool) or not isinstance(total_batch, int) or total_batch < 1:
            raise SweepError(f"total batch must be an integer >= 1, got {total_batch!r}")
        if num_gpus != 1 or norm_num_gpus:
            raise SweepError(
                f"with a total batch ({total_batch}) each run's processes are total batch / "
                "images per GPU; leave out --num-gpus and --norm-gpus"
            )
        uneven = [n for n in sizes if total_batch % n]
        if uneven:
            raise SweepError(
                f"images per GPU {uneven} do not divide the total batch {total_batch}; "
                f"accepted: divisors of {total_batch}"
            )
        opts = ("DATALOADER.ASPECT_RATIO_GROUPING", "False", *opts)

    stems: dict[str, str] = {}
    runs = []
    for template in templates:
        if NORM_PLACEHOLDER not in template:
            raise SweepError(
                f"config template {template!r} has no {NORM_PLACEHOLDER} placeholder; a sweep "
                "takes one config per norm, e.g. configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml"
            )
        stem = _check_name("config stem", config_stem(template))
        if total_batch is not None:
            stem = f"{stem}_fixed_batch{total_batch}"
        if stem in stems:
            raise SweepError(
                f"config templates {stems[stem]!r} and {template!r} would share the run "
                f"folders {stem}/; give them different file names or sweep them separately"
            )
        stems[stem] = template
        for norm in norms:
            padding_aware = norm.endswith(PADDING_AWARE_SUFFIX)
            config_norm = norm.removesuffix(PADDING_AWARE_SUFFIX) if padding_aware else norm
            config = Path(template.replace(NORM_PLACEHOLDER, config_norm)).resolve()
            if not config.is_file():
                raise SweepError(
                    f"config file {os.fspath(config)!r} (template {template!r}, norm {norm!r}) "
                    "does not exist"
                )
            run_opts = _with_reference_batch(config, opts)
            if padding_aware:
                run_opts = ("MODEL.PADDING_AWARE_NORM", "True", *run_opts)
            for size in sizes:
                for repeat in range(repeats):
                    runs.append(
                        Run(
                            config=config,
                            config_stem=stem,
                            norm=norm,
                            ims_per_gpu=size,
                            seed=seed + repeat,
                            num_gpus=(
                                total_batch // size
                                if total_batch is not None
                                else norm_num_gpus.get(norm, num_gpus)
                            ),
                            output_dir=run_dir(
                                Path(output).resolve(), stem, norm, size, seed + repeat
                            ),
                            opts=run_opts,
                            design=design,
                            padding_aware=padding_aware,
                        )
                    )
    return runs


def _with_reference_batch(config: Path, opts: tuple[str, ...]) -> tuple[str, ...]:
    keys = opts[::2]
    if "SOLVER.REFERENCE_WORLD_BATCH" in keys or not set(keys) & set(RESCALED_KEYS):
        return opts
    cfg = add_frn_config(get_cfg())
    try:
        cfg.merge_from_file(os.fspath(config))
    except Exception as error:  # the run itself would fail on it, with train_net's message
        raise SweepError(f"config file {os.fspath(config)!r} does not load: {error}") from None
    return (*opts, "SOLVER.REFERENCE_WORLD_BATCH", str(cfg.SOLVER.REFERENCE_WORLD_BATCH))


def grid_warnings(runs: Sequence[Run]) -> list[str]:
    """Things about a grid that are legal but likely not what was meant."""
    warnings = []
    lone = sorted({r.norm for r in runs if r.norm.lower() == "syncbn" and r.num_gpus < 2})
    for norm in lone:
        warnings.append(
            f"{norm} runs with 1 process: SyncBN then normalizes over one process's images, "
            f"like BN; give it >= 2 (--norm-gpus {norm}=2)"
        )
    gpus = {r.norm: r.num_gpus for r in runs}
    if len(set(gpus.values())) > 1:
        counts = ", ".join(f"{norm} {n}" for norm, n in gpus.items())
        warnings.append(
            f"process counts differ between norms ({counts}): at equal images per GPU the "
            "total batch, and so BASE_LR and MAX_ITER, differ too"
        )
    return warnings


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    # Planning builds every run's config; the CPU fallback and batch warnings they log are
    # logged again by the run itself, where they belong, instead of once per grid point.
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def plan_schedule(run: Run) -> Schedule:
    """The schedule train_net will use for ``run``: its config built exactly as train_net
    builds it (``frn_det.engine.build_config``), per-GPU batch scaling included."""
    args = train_net_argument_parser().parse_args(run.train_net_args())
    with _quiet("frn_det"):
        cfg = build_config(args)
    return Schedule(
        ims_per_batch=int(cfg.SOLVER.IMS_PER_BATCH),
        base_lr=float(cfg.SOLVER.BASE_LR),
        max_iter=int(cfg.SOLVER.MAX_ITER),
    )


def read_metrics(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """The records of a detectron2 ``metrics.json`` (JSON lines) and how many lines were
    skipped as unreadable.

    A run killed while writing leaves a torn last line, and a resumed run appends after it,
    so a torn line can also sit in the middle; both are skipped. A missing file has no
    records.
    """
    path = Path(path)
    if not path.is_file():
        return [], 0
    records, skipped = [], 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if isinstance(record, dict) and isinstance(record.get("iteration"), int):
                records.append(record)
            else:
                skipped += 1
    return records, skipped


def metrics_by_iteration(records: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """Records merged per iteration, in iteration order; a later record overrides an
    earlier one (a resumed run trains again the iterations after its checkpoint)."""
    merged: dict[int, dict[str, Any]] = {}
    for record in records:
        merged.setdefault(record["iteration"], {}).update(record)
    return dict(sorted(merged.items()))


def final_results(
    by_iteration: Mapping[int, Mapping[str, Any]], min_iteration: int = 0
) -> dict[str, float]:
    """The evaluation results (keys like "bbox/AP", "segm/AP") of the last iteration that
    has any, if it is >= ``min_iteration``; else {}."""
    for iteration in sorted(by_iteration, reverse=True):
        if iteration < min_iteration:
            break
        found = {k: v for k, v in by_iteration[iteration].items() if _EVAL_KEY_RE.search(k)}
        if found:
            return found
    return {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    # Atomic: a reader (or a sweep started after a kill) sees the old file or the new one,
    # never half of one, which is what makes DONE.json a safe "skip me" marker.
    atomic_write_json(path, strict_json_value(data))


def _checkpoint_iter(folder: Path, max_iter: int | None) -> int | None:
    # detectron2's checkpointer names the file after the last finished iteration's index
    # (model_0000099.pth holds 100 iterations) and records it in last_checkpoint.
    try:
        name = (folder / LAST_CHECKPOINT).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if name == FINAL_MODEL:
        return max_iter
    match = _CHECKPOINT_RE.match(name)
    return int(match["iter"]) + 1 if match else None


def _config_max_iter(folder: Path) -> int | None:
    # A folder train_net wrote without the sweep still has the config it trained with,
    # already rescaled for its batch.
    try:
        cfg = yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        return int(cfg["SOLVER"]["MAX_ITER"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def diverged_at(log: str | os.PathLike, tail_bytes: int = 1 << 16) -> int | None:
    """The iteration a run's log (train_net.log) says training diverged at: the last
    ``DIVERGED_LINE`` in its last ``tail_bytes``; None without one or without the log."""
    try:
        with open(log, "rb") as f:
            f.seek(max(os.fstat(f.fileno()).st_size - tail_bytes, 0))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    found = DIVERGED_LINE.findall(text)
    return int(found[-1]) if found else None


def read_state(folder: str | os.PathLike) -> RunState:
    """What ``folder`` (one run's output folder) says about its run; see ``RunState``."""
    folder = Path(folder)
    plan = _read_json(folder / RUN_FILE)
    done = _read_json(folder / DONE_FILE)
    failed = _read_json(folder / FAILED_FILE)
    max_iter = done.get("max_iter", plan.get("schedule", {}).get("max_iter"))
    if max_iter is None:
        max_iter = _config_max_iter(folder)
    records, skipped = read_metrics(folder / METRICS_FILE)
    by_iteration = metrics_by_iteration(records)
    trained = [i for i, r in by_iteration.items() if "total_loss" in r]
    iteration = max(trained) + 1 if trained else 0
    checkpoint = _checkpoint_iter(folder, max_iter)
    final_model = (folder / FINAL_MODEL).is_file()
    if done:
        status = "done"
        results = dict(done.get("results", {}))
        iteration = max(iteration, max_iter or 0)
    else:
        # Only an evaluation at the end of training counts as the run's result.
        results = final_results(by_iteration, (max_iter or 1) - 1) if max_iter else {}
        if failed:
            status = "failed"
        elif iteration or checkpoint or final_model:
            status = "unfinished"
        else:
            status = "new"
    return RunState(
        status=status,
        iteration=iteration,
        checkpoint_iter=checkpoint,
        max_iter=max_iter,
        final_model=final_model,
        results=results,
        done=done,
        failed=failed,
        plan=plan,
        skipped_lines=skipped,
        diverged_at=diverged_at(folder / LOG_FILE) if failed and not done else None,
    )


def _plan_record(run: Run, schedule: Schedule) -> dict[str, Any]:
    return {
        "config": os.fspath(run.config),
        "config_stem": run.config_stem,
        "norm": run.norm,
        "ims_per_gpu": run.ims_per_gpu,
        "num_gpus": run.num_gpus,
        "seed": run.seed,
        "design": run.design,
        "padding_aware": run.padding_aware,
        "train_net_args": run.train_net_args(),
        "schedule": {
            "ims_per_batch": schedule.ims_per_batch,
            "base_lr": schedule.base_lr,
            "max_iter": schedule.max_iter,
        },
    }


def _check_same_plan(runs: Sequence[Run], states: Sequence[RunState]) -> None:
    clashes = [
        f"  {run.output_dir}: was {state.plan['train_net_args']}, now {run.train_net_args()}"
        for run, state in zip(runs, states, strict=True)
        if "train_net_args" in state.plan and state.plan["train_net_args"] != run.train_net_args()
    ]
    if clashes:
        raise SweepError(
            "these run folders hold runs started with other train_net arguments; resuming or "
            "skipping them would mix settings (use another --output, or delete them):\n"
            + "\n".join(clashes)
        )


def _rates(done_files: Iterable[Path]) -> dict[tuple, list[float]]:
    # Seconds per image of every finished run (its DONE.json), keyed from the most to the
    # least specific match, so an estimate uses the closest kind of run that has a timing.
    rates: dict[tuple, list[float]] = {}
    for done_file in done_files:
        done = _read_json(done_file)
        images, seconds = done.get("images_trained"), done.get("seconds")
        if not images or not seconds:
            continue
        rate = seconds / images
        stem, norm, gpus = done.get("config_stem"), done.get("norm"), done.get("num_gpus")
        for key in ((stem, norm, gpus), (stem, norm), (stem,)):
            rates.setdefault(key, []).append(rate)
    return rates


def _estimate(run: Run, images: int, rates: Mapping[tuple, list[float]]) -> float | None:
    for key in (
        (run.config_stem, run.norm, run.num_gpus),
        (run.config_stem, run.norm),
        (run.config_stem,),
    ):
        if key in rates:
            return images * statistics.median(rates[key])
    return None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _action(state: RunState, schedule: Schedule, retry_diverged: bool = False) -> str:
    if state.status == "done":
        return "skip (done)"
    if state.settled(retry_diverged):
        return f"keep (diverged at iter {state.diverged_at})"
    if state.checkpoint_iter:
        start = f"resume from iter {state.checkpoint_iter}/{schedule.max_iter}"
        return f"{start} (after exit {state.failed['returncode']})" if state.failed else start
    if state.failed:
        return f"restart (after exit {state.failed.get('returncode', '?')})"
    return "start"


def dry_run_table(
    runs: Sequence[Run], output: str | os.PathLike, retry_diverged: bool = False
) -> str:
    """The runs of a grid as a table: folder, processes, IMS_PER_BATCH, BASE_LR, MAX_ITER,
    images processed (iterations x batch), estimated time left and what a sweep would do
    (``run_sweep`` with ``retry_diverged``), with totals. Times are estimated from finished
    runs' DONE.json under ``output``.

    Raises:
        SweepError: when a run folder holds a run started with other arguments.
    """
    output = Path(output).resolve()
    _check_same_plan(runs, [read_state(run.output_dir) for run in runs])
    rates = _rates(output.glob(f"{RUN_DIR_GLOB}/{DONE_FILE}"))
    rows = []
    total_images = 0
    total_seconds = 0.0
    unknown = 0
    counts = {"skip": 0, "keep": 0, "resume": 0, "start": 0, "restart": 0}
    for run in runs:
        schedule = plan_schedule(run)
        state = read_state(run.output_dir)
        action = _action(state, schedule, retry_diverged)
        counts[action.split()[0]] += 1
        left_iters = (
            0 if state.settled(retry_diverged) else schedule.max_iter - (state.checkpoint_iter or 0)
        )
        left = _estimate(run, max(left_iters, 0) * schedule.ims_per_batch, rates)
        if left is None and left_iters > 0:
            unknown += 1
        total_seconds += left or 0.0
        total_images += schedule.images
        rows.append(
            [
                os.path.relpath(run.output_dir, output),
                run.num_gpus,
                schedule.ims_per_batch,
                f"{schedule.base_lr:.6g}",
                schedule.max_iter,
                schedule.images,
                _duration(left) if left_iters > 0 else "-",
                action,
            ]
        )
    headers = [
        "run",
        "procs",
        "IMS_PER_BATCH",
        "BASE_LR",
        "MAX_ITER",
        "images",
        "est. left",
        "action",
    ]
    table = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    if unknown and not total_seconds:
        estimate = "? (no finished run of these configs under the output folder to time from)"
    else:
        estimate = _duration(total_seconds)
        if unknown:
            estimate += f" + {unknown} run(s) without a timing to estimate from"
    summary = (
        f"{len(runs)} runs: {counts['skip']} done, {counts['keep']} diverged (kept), "
        f"{counts['resume']} to resume, "
        f"{counts['restart']} to restart, {counts['start']} to start; "
        f"{total_images:,} images in all (iterations x IMS_PER_BATCH); est. time left: {estimate}"
    )
    return f"{table}\n\n{summary}"


class _Progress:
    """Follows a run's metrics.json while the run trains and echoes a progress line for the
    newest training record: at most one every ``every`` seconds (0: each record), and the
    last one when the run ends if it was not shown yet.

    detectron2 appends a JSON line every 20 iterations; only complete lines are read, so a
    line being written is read at the next poll. Lines already in the file are not shown:
    a new run starts reading at its end, a resumed one (``start_iter`` > 0) where the
    lines of iterations it trains again begin, which ``--resume`` moves to
    metrics.superseded.json. Should the file shrink below that it is read again from its
    start; records before ``start_iter`` are ignored.
    """

    def __init__(
        self,
        path: Path,
        start_iter: int,
        line: Callable[[Mapping[str, Any]], str],
        echo: Callable[[str], None],
        every: float,
        poll: float,
    ) -> None:
        self.path, self.start_iter, self.line, self.echo = path, start_iter, line, echo
        self.every, self.poll = every, poll
        self._offset = _kept_bytes(path, start_iter)
        self._pending: Mapping[str, Any] | None = None
        self._last_echo = -math.inf
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()
        if self._pending is not None:
            self.echo(self.line(self._pending))

    def _follow(self) -> None:
        while not self._stop.wait(self.poll):
            self._read()
            now = time.monotonic()
            if self._pending is not None and now - self._last_echo >= self.every:
                self.echo(self.line(self._pending))
                self._pending, self._last_echo = None, now

    def _read(self) -> None:
        try:
            size = self.path.stat().st_size
            if size < self._offset:
                self._offset = 0
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self._offset += end
        for raw in data[:end].splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if (
                isinstance(record, dict)
                and isinstance(record.get("iteration"), int)
                and "total_loss" in record
                and record["iteration"] >= self.start_iter
            ):
                self._pending = record


def _seconds_left(
    later: Sequence[tuple[Run, int]], rates: Mapping[tuple, list[float]], rate: float | None
) -> float | None:
    # The time the runs still to come will take: images left x seconds per image of the
    # closest kind of finished run, else ``rate`` (the current run's); None if neither.
    total = 0.0
    for run, images in later:
        estimate = _estimate(run, images, rates) if images else 0.0
        if estimate is None:
            if rate is None:
                return None
            estimate = images * rate
        total += estimate
    return total


def _kept_bytes(path: Path, start_iter: int) -> int:
    # The bytes of metrics.json a run starting at ``start_iter`` keeps: all of them for a
    # new run (it appends), for a resumed one the complete lines before the first of an
    # iteration >= start_iter (train_net truncates the file there, a torn line included).
    try:
        data = path.read_bytes()
    except OSError:
        return 0
    if not start_iter:
        return len(data)
    kept = 0
    for line in data.splitlines(keepends=True):
        try:
            record = json.loads(line)
        except ValueError:
            break
        iteration = record.get("iteration") if isinstance(record, dict) else None
        if not line.endswith(b"\n") or not isinstance(iteration, int) or iteration >= start_iter:
            break
        kept += len(line)
    return kept


def _progress_line(
    record: Mapping[str, Any],
    *,
    where: str,
    schedule: Schedule,
    started: float,
    start_iter: int,
    later: Sequence[tuple[Run, int]],
    rates: Mapping[tuple, list[float]],
) -> str:
    # "iter 140/1200 (12%), total_loss 1.234, 0.62 s/iter, ETA 10m57s (sweep ~1h05m)"
    done = record["iteration"] + 1
    per_iter = record.get("time")
    if not isinstance(per_iter, (int, float)):
        # Without detectron2's timing: the wall clock, start-up included (an overestimate).
        per_iter = (time.monotonic() - started) / (done - start_iter) if done > start_iter else None
    eta = record.get("eta_seconds")
    if not isinstance(eta, (int, float)) and per_iter is not None:
        eta = max(schedule.max_iter - done, 0) * per_iter
    parts = [f"iter {done}/{schedule.max_iter} ({100 * done / max(schedule.max_iter, 1):.0f}%)"]
    with contextlib.suppress(TypeError, ValueError):
        # float(): metrics.json writes a non-finite loss as a string ("NaN", "Infinity").
        parts.append(f"total_loss {float(record['total_loss']):.3f}")
    if per_iter is not None:
        parts.append(f"{per_iter:.2f} s/iter")
    rest = _seconds_left(
        later, rates, None if per_iter is None else per_iter / schedule.ims_per_batch
    )
    sweep = "" if rest is None or eta is None else f" (sweep ~{_duration(eta + rest)})"
    parts.append(f"ETA {_duration(eta)}{sweep}")
    return f"{where}: " + ", ".join(parts)


def subprocess_runner(command: Sequence[str], log_path: Path) -> int:
    """Run ``command``, appending its output to ``log_path``; return its exit status."""
    with log_path.open("ab") as log:
        return subprocess.run(list(command), stdout=log, stderr=subprocess.STDOUT).returncode


def _finish(
    run: Run, schedule: Schedule, state: RunState, seconds: float, trained: int
) -> dict[str, Any]:
    done = {
        **_plan_record(run, schedule),
        "max_iter": schedule.max_iter,
        "results": state.results,
        "seconds": seconds,
        "images_trained": trained * schedule.ims_per_batch,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json(run.output_dir / DONE_FILE, done)
    (run.output_dir / FAILED_FILE).unlink(missing_ok=True)
    return done


def run_sweep(
    runs: Sequence[Run],
    runner: Runner = subprocess_runner,
    *,
    python: str = sys.executable,
    train_net: Sequence[str] = TRAIN_NET,
    echo: Callable[[str], None] = print,
    progress_seconds: float = 30.0,
    poll_seconds: float = 2.0,
    retry_diverged: bool = False,
) -> dict[str, list[Path]]:
    """Train every run of ``runs`` that has not finished, one after the other.

    A run with DONE.json is skipped; one with a checkpoint is resumed (``--resume``); one
    that trained to the end without DONE.json (killed during the final bookkeeping) only
    gets its DONE.json. A run that fails gets FAILED.json and the sweep goes on. A failed
    run is trained again by the next sweep, except one that diverged (its log says so,
    ``RunState.diverged``): that is a result of its settings, kept as it is unless
    ``retry_diverged``.

    While a run trains, its metrics.json is followed and a line with the iteration, the
    total loss, seconds per iteration and the ETA of the run and of the whole sweep is
    echoed at most every ``progress_seconds`` (0: every record detectron2 writes, by
    default every 20 iterations). The sweep's ETA adds the runs still to train, timed from
    finished runs of the closest kind (as ``dry_run_table`` does) or, lacking one, at the
    current run's seconds per image.

    Args:
        runs: from ``expand_grid``.
        runner: ``runner(command, log_path) -> exit status``; tests pass one that trains
            nothing.
        python, train_net: the interpreter and its arguments before the run's own
            (default ``-m frn_det.train_net``: tools/train_net.py's command line).
        echo: where progress lines go (called from a second thread while a run trains).
        progress_seconds: the least time between two progress lines of a run.
        poll_seconds: how often metrics.json is read while a run trains.
    Returns:
        The run folders by outcome: "done" (trained now), "skipped" (done before),
        "diverged" (now or before, kept), "failed" (any other failure).
    Raises:
        SweepError: when a run folder holds a run started with other arguments.
    """
    states = [read_state(run.output_dir) for run in runs]
    _check_same_plan(runs, states)
    schedules = [plan_schedule(run) for run in runs]
    # Every planned run gets its RUN.json first, so a summary made while the sweep runs
    # shows the points still to come instead of leaving them out.
    for run, schedule in zip(runs, schedules, strict=True):
        run.output_dir.mkdir(parents=True, exist_ok=True)
        if not (run.output_dir / RUN_FILE).is_file():
            _write_json(run.output_dir / RUN_FILE, _plan_record(run, schedule))

    # Images each run has left to train, for the sweep's ETA.
    left = [
        0
        if state.settled(retry_diverged)
        else max(sched.max_iter - (state.checkpoint_iter or 0), 0) * sched.ims_per_batch
        for state, sched in zip(states, schedules, strict=True)
    ]

    outcome: dict[str, list[Path]] = {"done": [], "skipped": [], "diverged": [], "failed": []}
    for index, (run, schedule) in enumerate(zip(runs, schedules, strict=True), start=1):
        state = read_state(run.output_dir)
        where = f"[{index}/{len(runs)}] {run.output_dir}"
        if state.status == "done":
            echo(f"{where}: done, skipped")
            outcome["skipped"].append(run.output_dir)
            continue
        if state.settled(retry_diverged):
            echo(f"{where}: diverged at iteration {state.diverged_at} before, kept "
                 "(--retry-diverged trains it again)")  # fmt: skip
            outcome["diverged"].append(run.output_dir)
            continue
        if state.final_model and state.results:
            echo(f"{where}: trained and evaluated; recording {DONE_FILE}")
            _finish(run, schedule, state, 0.0, 0)
            outcome["done"].append(run.output_dir)
            continue
        resume = state.checkpoint_iter is not None
        start_iter = state.checkpoint_iter or 0
        command = [python, *train_net, *run.train_net_args(resume=resume)]
        echo(f"{where}: {_action(state, schedule, retry_diverged)}; log: "
             f"{run.output_dir / LOG_FILE}")  # fmt: skip
        # While the run retrains it is unfinished, not failed; a new failure writes it again.
        (run.output_dir / FAILED_FILE).unlink(missing_ok=True)
        started = time.monotonic()
        line = functools.partial(
            _progress_line,
            where=f"[{index}/{len(runs)}] {run.config_stem}/{run.norm}/ipg{run.ims_per_gpu}/"
            f"seed{run.seed}",
            schedule=schedule,
            started=started,
            start_iter=start_iter,
            later=list(zip(runs[index:], left[index:], strict=True)),
            rates=_rates(r.output_dir / DONE_FILE for r in runs),
        )
        follow = _Progress(
            run.output_dir / METRICS_FILE, start_iter, line, echo, progress_seconds, poll_seconds
        )
        with follow:
            returncode = runner(command, run.output_dir / LOG_FILE)
        seconds = time.monotonic() - started
        state = read_state(run.output_dir)
        if returncode == 0 and state.final_model:
            done = _finish(run, schedule, state, seconds, schedule.max_iter - start_iter)
            # float(): metrics.json writes a NaN AP (nothing predicted) as the string "NaN".
            shown = ", ".join(
                f"{k} {float(v):.2f}" for k, v in done["results"].items() if k.endswith("/AP")
            )
            echo(f"{where}: done in {_duration(seconds)}" + (f"; {shown}" if shown else ""))
            outcome["done"].append(run.output_dir)
            continue
        reason = f"exit {returncode}" if returncode else f"exit 0 without {FINAL_MODEL}"
        diverged = diverged_at(run.output_dir / LOG_FILE) if returncode else None
        if diverged is not None:
            reason += f": diverged at iteration {diverged}"
        _write_json(
            run.output_dir / FAILED_FILE,
            {
                "returncode": returncode,
                "reason": reason,
                "iteration": state.iteration,
                "seconds": seconds,
            },
        )
        echo(
            f"{where}: FAILED ({reason}, iter {state.iteration}/{schedule.max_iter}); "
            f"see {run.output_dir / LOG_FILE}"
        )
        outcome["failed" if diverged is None else "diverged"].append(run.output_dir)
    return outcome


def _comma_list(kind: str, convert: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind}, got {text!r}"
            )
        try:
            return [convert(item) for item in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind}, got {text!r}"
            ) from None

    return parse


def _norm_gpus(text: str) -> dict[str, int]:
    result = {}
    for item in text.split(","):
        norm, sep, count = item.partition("=")
        if not sep or not norm.strip() or not count.strip().isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(
                f"expected NORM=PROCESSES[,NORM=PROCESSES...] with PROCESSES >= 1 "
                f"(e.g. syncbn=2), got {text!r}"
            )
        result[norm.strip()] = int(count)
    return result


def argument_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/sweep.py``."""
    parser = argparse.ArgumentParser(
        prog="sweep.py",
        description=(
            "Train a grid of configs x norms x images per GPU (x repeats) with "
            "tools/train_net.py, one process per run, into OUTPUT/<config stem>/<norm>/"
            "ipg<N>/seed<S>/. Finished runs (DONE.json) are skipped, interrupted ones resumed, "
            "diverged ones kept. "
            "Lists are comma-separated. Trailing KEY VALUE pairs go to every run's config."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--configs",
        required=True,
        type=_comma_list("config templates", str),
        metavar="TEMPLATE[,TEMPLATE]",
        help="config files with a {norm} placeholder, one file per norm "
        "(e.g. configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml)",
    )
    parser.add_argument(
        "--norms",
        default=list(CANONICAL_NORMS),
        type=_comma_list("norm names", str),
        metavar="NORM[,NORM]",
        help="names substituted for {norm}; NAME_pa runs NAME's config with "
        "MODEL.PADDING_AWARE_NORM True (e.g. gn,gn_pa,frn,frn_pa)",
    )
    parser.add_argument(
        "--ims-per-gpu",
        required=True,
        type=_comma_list("integers >= 1", int),
        metavar="N[,N]",
        help="images per GPU (process); BASE_LR and iterations scale with the total batch "
        "from SOLVER.REFERENCE_WORLD_BATCH",
    )
    parser.add_argument(
        "--total-batch",
        type=int,
        default=None,
        metavar="T",
        help="the fixed-batch design: every point trains with total batch T (T/N processes "
        "of N images), the same schedule and the same images at each step, in folders "
        "<config>_fixed_batch<T>; without it, the fixed-images design (the paper's "
        "protocol): LR and iterations scale with each point's total batch",
    )
    parser.add_argument("--output", default="output/sweep", help="the sweep's root folder")
    parser.add_argument(
        "--num-gpus", type=int, default=1, help="processes per run (--num-gpus of train_net)"
    )
    parser.add_argument(
        "--norm-gpus",
        type=_norm_gpus,
        default={},
        metavar="NORM=N[,NORM=N]",
        help="processes per run for some norms, e.g. syncbn=2 (SyncBN needs >= 2 to "
        "differ from BN)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per point, with SEED = --seed + repeat"
    )
    parser.add_argument("--seed", type=int, default=0, help="SEED of the first repeat")
    parser.add_argument(
        "--progress-every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="while a run trains, print its iteration, loss and ETA (and the sweep's) at most "
        "this often; 0 prints every metrics.json record (every 20 iterations)",
    )
    parser.add_argument(
        "--retry-diverged",
        action="store_true",
        help="train again the runs that diverged (their log says so); without it a diverged "
        "run is kept as a result, while runs that failed otherwise are always trained again "
        "(local sweeps; --launcher slurm submits every failed run again)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs with their schedule and estimated cost; train nothing",
    )
    # frn_det_tools.slurm (--launcher slurm) imports this module, hence not at the top.
    from frn_det_tools.slurm import add_cluster_arguments

    add_cluster_arguments(parser)
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config options for every run"
    )
    return parser


def main(argv: Sequence[str] | None = None, runner: Runner = subprocess_runner) -> int:
    """Run ``tools/sweep.py`` with ``argv``; returns the exit status: 0 when every run
    finished, ``EXIT_FAILED_RUNS`` (1) when some run failed, ``EXIT_DIVERGED_RUNS`` (3) when
    the only runs that did not finish diverged, 2 for bad input."""
    from frn_det_tools import slurm  # not at the top: see argument_parser

    parser = argument_parser()
    args = parser.parse_args(argv)
    try:
        cluster = slurm.cluster_options(args)
        runs = expand_grid(
            args.configs,
            args.norms,
            args.ims_per_gpu,
            args.output,
            repeats=args.repeats,
            seed=args.seed,
            num_gpus=args.num_gpus,
            norm_num_gpus=args.norm_gpus,
            opts=args.opts,
            total_batch=args.total_batch,
        )
        for warning in grid_warnings(runs) + slurm.check_launch(cluster, runs, args.dry_run):
            print(f"warning: {warning}", file=sys.stderr)
        if args.dry_run:
            print(dry_run_table(runs, args.output, args.retry_diverged))
            if cluster is not None:
                print(f"\n{slurm.jobs_table(runs, cluster)}")
            return 0
        if cluster is not None:
            return slurm.run_on_cluster(
                runs, cluster, args.output, progress_seconds=args.progress_every
            )
        outcome = run_sweep(
            runs, runner, progress_seconds=args.progress_every, retry_diverged=args.retry_diverged
        )
    except (SweepError, InputError) as error:
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(error).split())}\n")
    print(
        f"{len(outcome['done'])} trained, {len(outcome['skipped'])} already done, "
        f"{len(outcome['diverged'])} diverged, {len(outcome['failed'])} failed. Summary: "
        f"python tools/summarize.py {args.output}"
    )
    if outcome["failed"]:
        return EXIT_FAILED_RUNS
    return EXIT_DIVERGED_RUNS if outcome["diverged"] else 0
