"""The folders a sweep lays out: one per run, ``OUT/<config stem>/<norm>/ipg<N>/seed<S>/``.

``OUT`` is the sweep's ``--output``, the config stem the config template's file name
without ``{norm}`` (``mask_rcnn_R_18_FPN``), ``<norm>`` the norm's file-name text (``frn``,
``frn_pa``), ``N`` the images per GPU and ``S`` the seed. In a run's folder, beside what
train_net writes (``config.yaml``, ``metrics.json``, ``last_checkpoint``,
``model_final.pth``), the sweep writes ``RUN.json`` (the plan), ``DONE.json`` (the final
results, once the run exited cleanly with a final model), ``FAILED.json`` (how a run that
crashed ended), ``train_net.log`` and, for a run submitted to Slurm, ``JOB.json``; an
archived run (``frn_det_tools.run_archive``) has ``CHECKPOINT.json`` instead of checkpoints
and ``MACHINE.json``.

The sweep, its summaries, the batch-dependence report, the model-zoo generator and the
visualization read and name run folders through this module.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from frn_det.checkpoint import LAST_CHECKPOINT
from frn_det.engine.trainer import METRICS_FILE

__all__ = [
    "CANONICAL_NORMS",
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "DONE_FILE",
    "FAILED_FILE",
    "FINAL_MODEL",
    "JOB_FILE",
    "MACHINE_FILE",
    "LAST_CHECKPOINT",
    "LOG_FILE",
    "METRICS_FILE",
    "RUN_DIR_GLOB",
    "RUN_FILE",
    "RunKey",
    "find_runs",
    "norm_order",
    "run_dir",
    "run_key",
    "sweep_output",
]

RUN_FILE = "RUN.json"
DONE_FILE = "DONE.json"
FAILED_FILE = "FAILED.json"
JOB_FILE = "JOB.json"
LOG_FILE = "train_net.log"
CONFIG_FILE = "config.yaml"
FINAL_MODEL = "model_final.pth"
CHECKPOINT_FILE = "CHECKPOINT.json"
"""In an archived run folder (frn_det_tools.run_archive), what stands for model_final.pth:
its SHA-256 and size."""
MACHINE_FILE = "MACHINE.json"
"""In an archived run folder, the machine that trained the run (CPU, torch and the CPU
kernels torch picked): float results differ from machine to machine."""
RUN_DIR_GLOB = "*/*/ipg*/seed*"
"""The run folders under a sweep's output, as a ``Path.glob`` pattern (``find_runs``
keeps those whose last two names parse)."""

# The order norms are listed in tables and plots; others follow alphabetically. A sweep's
# norm names are file-name text (the {norm} of configs/..._{norm}.yaml), not registry names:
# the config file sets the NORM keys, so the sweep needs no table from one to the other.
CANONICAL_NORMS = ("bn", "syncbn", "gn", "frn")

_IPG_RE = re.compile(r"^ipg(?P<ipg>\d+)$")
_SEED_RE = re.compile(r"^seed(?P<seed>-?\d+)$")


@dataclass(frozen=True)
class RunKey:
    """Where a run sits in the grid, as its folder names it."""

    config_stem: str
    norm: str
    ims_per_gpu: int
    seed: int

    @property
    def label(self) -> str:
        """``<norm> ipg<N> seed<S>``: the run among the runs of one config, for a person."""
        return f"{self.norm} ipg{self.ims_per_gpu} seed{self.seed}"


def run_dir(output: str | os.PathLike, stem: str, norm: str, ims_per_gpu: int, seed: int) -> Path:
    """``output/<config stem>/<norm>/ipg<N>/seed<S>``, the folder of one run."""
    return Path(output) / stem / norm / f"ipg{ims_per_gpu}" / f"seed{seed}"


def run_key(folder: str | os.PathLike) -> RunKey | None:
    """The grid position a run folder's path names (``run_dir`` read backwards), or None
    when its last four names are not ``<config stem>/<norm>/ipg<N>/seed<S>``."""
    return _parse(Path(folder).resolve())


def _parse(folder: Path) -> RunKey | None:
    ipg, seed = _IPG_RE.match(folder.parent.name), _SEED_RE.match(folder.name)
    if not (ipg and seed) or len(folder.parents) < 4:
        return None
    stem, norm = folder.parents[2].name, folder.parents[1].name
    return RunKey(stem, norm, int(ipg["ipg"]), int(seed["seed"]))


def sweep_output(folder: str | os.PathLike) -> Path:
    """The sweep output (``OUT``) that holds the run folder ``folder``.

    Raises:
        ValueError: ``folder`` is not laid out as ``OUT/<config stem>/<norm>/ipg<N>/seed<S>``.
    """
    if run_key(folder) is None:
        raise ValueError(
            f"{os.fspath(folder)!r} is not a sweep run folder: expected "
            "OUT/<config stem>/<norm>/ipg<N>/seed<S>"
        )
    return Path(folder).resolve().parents[3]


def norm_order(norm: str) -> tuple[int, str]:
    """Sort key listing norms as CANONICAL_NORMS does, others after them alphabetically."""
    lower = norm.lower()
    if lower in CANONICAL_NORMS:
        return CANONICAL_NORMS.index(lower), lower
    return len(CANONICAL_NORMS), lower


def find_runs(output: str | os.PathLike) -> list[tuple[RunKey, Path]]:
    """Every run folder under ``output`` (laid out by ``run_dir``) with its grid position,
    sorted by config stem, norm (``norm_order``), images per GPU and seed."""
    found = []
    for folder in Path(output).glob(RUN_DIR_GLOB):
        key = _parse(folder)
        if key is not None and folder.is_dir():
            found.append((key, folder))
    return sorted(
        found,
        key=lambda item: (
            item[0].config_stem,
            norm_order(item[0].norm),
            item[0].ims_per_gpu,
            item[0].seed,
        ),
    )
