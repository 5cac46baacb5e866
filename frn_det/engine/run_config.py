"""The config of a run: one path from the command line to the frozen config the trainer
takes, the same for every entry point (tools/train_net.py and its ``--eval-only``,
``python -m frn_det.train_net``, the sweep's plans, visualize, show_schedule).

``build_run_config`` (``build_config`` for a parsed train_net command line) goes, in order:

1. load: detectron2's defaults, frn-det's keys and the config file (``_BASE_`` inheritance);
2. merge: the ``KEY VALUE`` options, then ``--ims-per-gpu`` (which wins over them);
3. check the keys: frn-det's are there (``validation.check_frn_keys``);
4. rescale the schedule for SOLVER.IMS_PER_GPU images on each process
   (``batch.apply_ims_per_gpu``), leaving schedule values typed among the options as typed;
5. resolve the device: "cpu" where CUDA is asked for and absent (``launch.resolve_device``);
6. check the values: norms, components, ranges, the batch (``validation.check_config``);
7. freeze.

Steps 3 to 5 are ``prepare_config``, which ``Trainer`` also applies to the config it is
given, so that a raw config (``get_cfg()`` merged by hand) trains as train_net would train
it; a config from ``build_run_config`` comes back from it unchanged.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Collection, Sequence

import torch.distributed as dist
from detectron2.config import CfgNode
from detectron2.utils import comm

from .batch import RESCALED_KEYS, apply_ims_per_gpu
from .launch import resolve_device
from .validation import InputError, check_config, check_frn_keys, load_config

__all__ = [
    "build_config",
    "build_run_config",
    "prepare_config",
    "typed_schedule_keys",
    "world_size_of",
]


def world_size_of(args: argparse.Namespace) -> int:
    """The number of training processes of the run ``args`` (``--num-gpus`` x
    ``--num-machines``) describe; inside a launched process, its process group's size."""
    # Before launch (choosing the backend, checking the input) the command line is all
    # there is; inside a launched process the process group is the truth.
    if dist.is_available() and dist.is_initialized():
        return comm.get_world_size()
    return args.num_gpus * args.num_machines


def typed_schedule_keys(opts: Sequence[str]) -> list[str]:
    """The rescaled keys given among the ``KEY VALUE`` options ``opts``: per-GPU batch
    scaling keeps them as typed, unless SOLVER.REFERENCE_WORLD_BATCH is given too, which
    declares them a schedule written for that batch (how a sweep passes a shortened
    reference schedule)."""
    keys = list(opts)[::2]
    if "SOLVER.REFERENCE_WORLD_BATCH" in keys:
        return []
    return [key for key in RESCALED_KEYS if key in keys]


def prepare_config(cfg: CfgNode, world_size: int, keep: Collection[str] = ()) -> CfgNode:
    """The config a run on ``world_size`` processes actually uses; ``cfg`` is not modified.
    Idempotent: a prepared config is returned as it is.

    - frn-det's keys must be there (``check_frn_keys``);
    - the schedule is rescaled for SOLVER.IMS_PER_GPU images on each of ``world_size``
      processes (``apply_ims_per_gpu``), except the keys in ``keep``;
    - MODEL.DEVICE becomes "cpu" when it asks for CUDA on a machine without it (SOLVER.AMP
      then trains with bfloat16 autocast, see ``trainer.amp_precision``).

    Raises:
        InputError: frn-det's keys are missing, or a value the rescaling refuses
            (SOLVER.IMS_PER_GPU, SOLVER.STEPS, SOLVER.REFERENCE_WORLD_BATCH, ...).
    """
    check_frn_keys(cfg)
    try:
        cfg = apply_ims_per_gpu(cfg, world_size, keep)
    except ValueError as error:
        # apply_ims_per_gpu's errors are all about config values (IMS_PER_GPU, STEPS, ...).
        raise InputError(str(error)) from error
    device = resolve_device(cfg.MODEL.DEVICE)
    if device == cfg.MODEL.DEVICE:
        return cfg
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.DEVICE = device
    if frozen:
        cfg.freeze()
    return cfg


def build_run_config(
    config_file: str | os.PathLike | None,
    opts: Sequence[str] = (),
    *,
    world_size: int,
    ims_per_gpu: int | None = None,
    train: bool = True,
    on_merged: Callable[[CfgNode], None] | None = None,
) -> CfgNode:
    """The frozen config of a run on ``world_size`` processes: the steps of this module's
    docstring, in that order. Sets up no logging and checks no dataset.

    Args:
        config_file: the YAML config (None: detectron2's defaults and frn-det's keys).
        opts: ``KEY VALUE`` options; schedule values among them are used as typed
            (``typed_schedule_keys``).
        world_size: the number of training processes.
        ims_per_gpu: ``--ims-per-gpu``; sets SOLVER.IMS_PER_GPU over ``opts``.
        train: whether the run trains (not ``--eval-only``; see ``check_values``).
        on_merged: called with the merged config before it is prepared (``setup`` points
            the logs at its OUTPUT_DIR there, so that log.txt records what preparing does).

    Raises:
        InputError: for bad input in the config (``load_config``, ``prepare_config``,
            ``check_config``).
    """
    cfg = load_config(config_file, list(opts))
    if ims_per_gpu is not None:
        cfg.SOLVER.IMS_PER_GPU = ims_per_gpu
    if on_merged is not None:
        on_merged(cfg)
    cfg = prepare_config(cfg, world_size, keep=typed_schedule_keys(opts))
    check_config(cfg, world_size, train=train)
    cfg.freeze()
    return cfg


def build_config(
    args: argparse.Namespace, *, on_merged: Callable[[CfgNode], None] | None = None
) -> CfgNode:
    """``build_run_config`` for a parsed train_net command line (``cli.argument_parser``):
    ``--config-file``, the trailing ``KEY VALUE`` options, ``--ims-per-gpu``, the world size
    of ``--num-gpus`` x ``--num-machines`` and ``--eval-only``.

    Schedule values typed among the ``KEY VALUE`` options (SOLVER.MAX_ITER 10) are used as
    typed: ``--ims-per-gpu`` rescales only the others, unless SOLVER.REFERENCE_WORLD_BATCH
    is typed too (then the typed schedule is the one written for that batch).

    Raises:
        InputError: for bad input in the config; datasets are not checked (see
            ``cli.check_args``).
    """
    return build_run_config(
        args.config_file,
        args.opts or [],
        world_size=world_size_of(args),
        ims_per_gpu=getattr(args, "ims_per_gpu", None),
        train=not getattr(args, "eval_only", False),
        on_merged=on_merged,
    )
