"""What a config would run, without running it: batch, LR, iterations, LR drops, norms.

``tools/show_schedule.py`` prints ``schedule_rows`` as a Markdown table for YAML configs
(``tools/train_net.py``) and Python lazy configs (``tools/lazy_train_net.py``) alike, after
the same preparation as training (``--ims-per-gpu`` rescaling for ``--num-gpus``
processes; for YAML configs ``run_config.build_run_config``, train_net's own path, checks
included), so the numbers are the ones the run would use.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from detectron2.config import CfgNode
from omegaconf import DictConfig, OmegaConf
from tabulate import tabulate

from .batch import ims_per_gpu_arg
from .exits import exit_on_bad_input
from .lazy import apply_lazy_ims_per_gpu, load_lazy_config, norm_keys
from .run_config import build_run_config
from .validation import InputError

__all__ = [
    "COCO_TRAIN2017_IMAGES",
    "HEADER",
    "Schedule",
    "format_table",
    "schedule_of",
    "show_schedule_argument_parser",
    "show_schedule_main",
]

COCO_TRAIN2017_IMAGES = 118287
"""Images of coco_2017_train, for epochs (detectron2's new_baselines count 118000)."""

# YAML norm keys shown, in this order, when the model has them.
_YAML_NORMS = (
    ("RESNETS", "MODEL.RESNETS.NORM"),
    ("FPN", "MODEL.FPN.NORM"),
    ("RETINANET", "MODEL.RETINANET.NORM"),
    ("RPN", "MODEL.RPN.NORM"),
    ("BOX_HEAD", "MODEL.ROI_BOX_HEAD.NORM"),
    ("MASK_HEAD", "MODEL.ROI_MASK_HEAD.NORM"),
)


@dataclass(frozen=True)
class Schedule:
    """The resolved schedule of one config for ``num_gpus`` processes.

    ``steps`` are the iterations where the LR drops; ``warmup_iters`` the linear warm-up;
    ``epochs`` passes over coco_2017_train (None for other datasets); ``norms`` the value
    of each norm site that the model uses ("" = none).
    """

    config: str
    num_gpus: int
    batch: int
    ims_per_gpu: int
    base_lr: float
    max_iter: int
    steps: tuple[int, ...]
    warmup_iters: int
    momentum: float
    weight_decay: float
    epochs: float | None
    norms: dict[str, str]


def _epochs(max_iter: int, batch: int, train_sets: Sequence[str]) -> float | None:
    if tuple(train_sets) != ("coco_2017_train",):
        return None
    return max_iter * batch / COCO_TRAIN2017_IMAGES


def _yaml_norms(cfg: CfgNode) -> dict[str, str]:
    model = cfg.MODEL
    used = {"RESNETS", "FPN"}
    if model.META_ARCHITECTURE.endswith("RetinaNet"):
        used.add("RETINANET")
    else:
        used |= {"RPN", "BOX_HEAD"} | ({"MASK_HEAD"} if model.MASK_ON else set())
    norms = {}
    for name, key in _YAML_NORMS:
        node = cfg
        for part in key.split("."):
            node = node.get(part, None) if isinstance(node, CfgNode) else None
        if name in used and node is not None:
            norms[name] = node
    return norms


def _yaml_schedule(path: str, opts: Sequence[str], num_gpus: int, ims_per_gpu: int | None):
    cfg = build_run_config(path, opts, world_size=num_gpus, ims_per_gpu=ims_per_gpu)
    solver = cfg.SOLVER
    return Schedule(
        config=path,
        num_gpus=num_gpus,
        batch=solver.IMS_PER_BATCH,
        ims_per_gpu=solver.IMS_PER_BATCH // num_gpus,
        base_lr=solver.BASE_LR,
        max_iter=solver.MAX_ITER,
        steps=tuple(s for s in solver.STEPS if s < solver.MAX_ITER),
        warmup_iters=solver.WARMUP_ITERS,
        momentum=solver.MOMENTUM,
        weight_decay=solver.WEIGHT_DECAY,
        epochs=_epochs(solver.MAX_ITER, solver.IMS_PER_BATCH, cfg.DATASETS.TRAIN),
        norms=_yaml_norms(cfg),
    )


def _lazy_norm(value: object) -> str:
    if isinstance(value, DictConfig):
        inner = value.get("norm", None)
        return f"{inner} (slot_norm)" if isinstance(inner, str) else "<callable>"
    return value if isinstance(value, str) else "<callable>"


def _lazy_schedule(path: str, opts: Sequence[str], num_gpus: int, ims_per_gpu: int | None):
    cfg = load_lazy_config(path, opts)
    if ims_per_gpu is not None:
        cfg.train.ims_per_gpu = ims_per_gpu
    apply_lazy_ims_per_gpu(cfg, num_gpus)
    batch = cfg.dataloader.train.total_batch_size
    max_iter = cfg.train.max_iter
    scheduler = OmegaConf.select(cfg, "lr_multiplier.scheduler", default=None)
    milestones = scheduler.get("milestones", None) if scheduler is not None else None
    warmup = OmegaConf.select(cfg, "lr_multiplier.warmup_length", default=0.0) or 0.0
    names = OmegaConf.select(cfg, "dataloader.train.dataset.names", default=())
    names = (names,) if isinstance(names, str) else tuple(names)
    return Schedule(
        config=path,
        num_gpus=num_gpus,
        batch=batch,
        ims_per_gpu=batch // num_gpus,
        base_lr=float(cfg.optimizer.lr),
        max_iter=max_iter,
        steps=tuple(m for m in (milestones or ()) if m < max_iter),
        warmup_iters=round(warmup * max_iter),
        momentum=float(cfg.optimizer.get("momentum", 0.0)),
        weight_decay=float(cfg.optimizer.get("weight_decay", 0.0)),
        epochs=_epochs(max_iter, batch, names),
        norms={key.removeprefix("model."): _lazy_norm(value) for key, value in norm_keys(cfg)},
    )


def schedule_of(
    path: str | os.PathLike,
    opts: Sequence[str] = (),
    num_gpus: int = 1,
    ims_per_gpu: int | None = None,
) -> Schedule:
    """The schedule ``path`` (.yaml: train_net; .py: lazy_train_net) runs on ``num_gpus``
    processes, after ``opts`` (``KEY VALUE`` for YAML, ``key=value`` for lazy configs) and
    ``ims_per_gpu`` rescaling.

    Raises:
        InputError: the config or the options are bad (the messages of training).
    """
    path = os.fspath(path)
    if path.endswith(".py"):
        return _lazy_schedule(path, opts, num_gpus, ims_per_gpu)
    return _yaml_schedule(path, opts, num_gpus, ims_per_gpu)


def show_schedule_argument_parser() -> argparse.ArgumentParser:
    """``show_schedule.py CONFIG [CONFIG ...] [--num-gpus G] [--ims-per-gpu N] [--opts ...]``."""
    parser = argparse.ArgumentParser(
        description="Print the batch, LR, iterations, LR drops, warm-up and norms that "
        "train_net.py (YAML) or lazy_train_net.py (.py) would run; trains nothing."
    )
    parser.add_argument("configs", nargs="+", metavar="CONFIG")
    parser.add_argument("--num-gpus", type=int, default=8, help="processes (default 8)")
    parser.add_argument(
        "--ims-per-gpu", type=ims_per_gpu_arg, default=None, metavar="N",
        help="images per GPU, as train_net's --ims-per-gpu (rescales the schedule)",
    )  # fmt: skip
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[],
        help="config overrides for every CONFIG: KEY VALUE (YAML) or key=value (lazy)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def _row(s: Schedule) -> list[str]:
    norms = ", ".join(f"{k}={v or '-'}" for k, v in s.norms.items())
    epochs = f"{s.epochs:.1f}" if s.epochs is not None else "-"
    return [
        f"`{s.config}`",
        f"{s.batch} ({s.num_gpus}x{s.ims_per_gpu})",
        f"{s.base_lr:g}",
        str(s.max_iter),
        ", ".join(str(x) for x in s.steps) or "-",
        str(s.warmup_iters),
        f"{s.momentum:g}",
        f"{s.weight_decay:g}",
        epochs,
        norms,
    ]


HEADER = [
    "config", "batch (GPUs x images)", "LR", "iterations", "LR x0.1 at", "warm-up",
    "momentum", "weight decay", "COCO epochs", "norms",
]  # fmt: skip


def format_table(schedules: Sequence[Schedule]) -> str:
    """The schedules as a Markdown table, one row each."""
    rows = [_row(s) for s in schedules]
    return tabulate(rows, headers=HEADER, tablefmt="github", disable_numparse=True)


def show_schedule_main(argv: Sequence[str] | None = None) -> list[Schedule]:
    """``tools/show_schedule.py``: print the table (or JSON lines); bad input exits 2."""
    args = show_schedule_argument_parser().parse_args(None if argv is None else list(argv))
    with exit_on_bad_input():
        if args.num_gpus < 1:
            raise InputError(f"--num-gpus must be >= 1, got {args.num_gpus}")
        schedules = [
            schedule_of(path, args.opts, args.num_gpus, args.ims_per_gpu) for path in args.configs
        ]
    if args.json:
        for s in schedules:
            print(json.dumps(asdict(s)))
    else:
        print(format_table(schedules))
    return schedules
