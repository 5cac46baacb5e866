"""Per-GPU batch size as a first-class knob: rescale a schedule written for one total batch.

A detectron2 schedule (BASE_LR, MAX_ITER, STEPS, ...) is written for one total batch,
SOLVER.REFERENCE_WORLD_BATCH (16 in the model zoo). FRN's point is small per-GPU batches,
so experiments fix the images per GPU instead and let the total batch follow the world
size. The learning rate then follows the linear scaling rule (Goyal et al., "ImageNet in
1 hour") and every iteration count scales inversely, so the number of epochs seen stays
the same: going from 16 to 4 images divides the LR by 4 and multiplies iterations by 4.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import numbers
from collections.abc import Collection

from detectron2.config import CfgNode

__all__ = ["RESCALED_KEYS", "apply_ims_per_gpu", "check_ims_per_gpu", "ims_per_gpu_arg"]

logger = logging.getLogger(__name__)

RESCALED_KEYS = (
    "SOLVER.BASE_LR",
    "SOLVER.BASE_LR_END",
    "SOLVER.MAX_ITER",
    "SOLVER.STEPS",
    "SOLVER.WARMUP_ITERS",
    "SOLVER.CHECKPOINT_PERIOD",
    "TEST.EVAL_PERIOD",
)
"""The keys ``apply_ims_per_gpu`` rescales (besides setting IMS_PER_BATCH)."""


def check_ims_per_gpu(value: object) -> int:
    """Return ``value`` if it is a valid number of images per GPU (an int >= 1).

    Raises:
        ValueError: naming the value when it is not an integer or is smaller than 1.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"images per GPU (SOLVER.IMS_PER_GPU / --ims-per-gpu) must be an integer >= 1, "
            f"got {type(value).__name__} {value!r}"
        )
    if value < 1:
        raise ValueError(
            f"images per GPU (SOLVER.IMS_PER_GPU / --ims-per-gpu) must be an integer >= 1, "
            f"got {value!r}"
        )
    return int(value)


def ims_per_gpu_arg(text: str) -> int:
    """argparse ``type`` of the command lines' ``--ims-per-gpu``: an integer >= 1."""
    try:
        return check_ims_per_gpu(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 1 (images per GPU), got {text!r}"
        ) from None


def _round(x: float) -> int:
    # Round half up: Python's round() sends 2.5 to 2 and 3.5 to 4, which would make the
    # scaled schedule depend on the parity of the result rather than on the numbers.
    return int(math.floor(x + 0.5))


def _scale_steps(
    steps: tuple[int, ...], max_iter: int, scale: float, new_max_iter: int | None
) -> tuple[int, ...]:
    if any(a >= b for a, b in itertools.pairwise(steps)):
        raise ValueError(
            f"SOLVER.STEPS must be strictly increasing to be rescaled, got {tuple(steps)}"
        )
    new_steps: list[int] = []
    for step in steps:
        new = max(_round(step / scale), 1)
        if new_steps:
            # Rounding a short schedule up to a bigger batch can merge two steps; keep each
            # LR drop as its own milestone, as the scheduler requires.
            new = max(new, new_steps[-1] + 1)
        if new_max_iter is not None and step < max_iter and new >= new_max_iter:
            raise ValueError(
                f"SOLVER.STEPS {tuple(steps)} with SOLVER.MAX_ITER {max_iter} is too short a "
                f"schedule to rescale by a total-batch factor of {scale:g}: the steps would "
                f"reach MAX_ITER {new_max_iter}; lengthen the schedule or use a smaller batch"
            )
        new_steps.append(new)
    return tuple(new_steps)


def _scale_period(period: int, scale: float) -> int:
    # 0 disables a periodic hook (EVAL_PERIOD); otherwise a period never drops to 0, which
    # detectron2's hooks would take as "disabled" or divide by.
    return 0 if period == 0 else max(_round(period / scale), 1)


def apply_ims_per_gpu(cfg: CfgNode, world_size: int, keep: Collection[str] = ()) -> CfgNode:
    """Rescale ``cfg``'s schedule for SOLVER.IMS_PER_GPU images on each of ``world_size`` GPUs.

    With ``N = SOLVER.IMS_PER_GPU`` and ``R = SOLVER.REFERENCE_WORLD_BATCH`` (the total batch
    the schedule was written for), the new total batch is ``B = N * world_size`` and
    ``scale = B / R``:

    - SOLVER.IMS_PER_BATCH = B;
    - SOLVER.BASE_LR and SOLVER.BASE_LR_END are multiplied by ``scale`` (linear rule);
    - SOLVER.MAX_ITER, STEPS, WARMUP_ITERS, CHECKPOINT_PERIOD and TEST.EVAL_PERIOD are
      divided by ``scale`` and rounded half up, so the number of epochs stays the same.
      MAX_ITER and the periods stay >= 1 (an EVAL_PERIOD of 0, "never", stays 0); STEPS stay
      strictly increasing and those that were below MAX_ITER stay below it.
    - SOLVER.REFERENCE_WORLD_BATCH = B, so the returned config describes a schedule written
      for the batch it now has. Applying the function again with the same world size is
      therefore a no-op (no double scaling, also for a config.yaml dumped after scaling),
      and applying it with another world size rescales from the current schedule.

    SOLVER.IMS_PER_GPU = 0 means "keep IMS_PER_BATCH as written": ``cfg`` is returned as is.

    Args:
        cfg: a config with frn-det's keys (``frn_det.config.add_frn_config``). Not modified.
        world_size: the number of training processes (GPUs), num_gpus * num_machines.
        keep: keys of ``RESCALED_KEYS`` to leave as they are (values a user typed on the
            command line: an explicit value wins over the rescaling).
    Returns:
        A new config (frozen if ``cfg`` was), or ``cfg`` itself when IMS_PER_GPU is 0.
    Raises:
        ValueError: for a negative or non-integer IMS_PER_GPU, a world size < 1, a
            REFERENCE_WORLD_BATCH < 1, SOLVER.REFERENCE_WORLD_SIZE also set (detectron2's own
            rescaling would apply on top), or STEPS that cannot be rescaled.
    """
    ims_per_gpu = cfg.SOLVER.IMS_PER_GPU
    if not isinstance(ims_per_gpu, bool) and ims_per_gpu == 0:
        return cfg
    try:
        ims_per_gpu = check_ims_per_gpu(ims_per_gpu)
    except ValueError:
        raise ValueError(
            "SOLVER.IMS_PER_GPU must be 0 (keep SOLVER.IMS_PER_BATCH) or an integer >= 1, "
            f"got {type(ims_per_gpu).__name__} {ims_per_gpu!r}"
        ) from None
    if isinstance(world_size, bool) or not isinstance(world_size, numbers.Integral):
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    unknown = sorted(set(keep) - set(RESCALED_KEYS))
    if unknown:
        raise ValueError(f"keep: {unknown} are not rescaled keys; those are {RESCALED_KEYS}")
    reference = cfg.SOLVER.REFERENCE_WORLD_BATCH
    if isinstance(reference, bool) or not isinstance(reference, numbers.Integral) or reference < 1:
        raise ValueError(
            f"SOLVER.REFERENCE_WORLD_BATCH must be an integer >= 1 (the total batch the "
            f"schedule was written for), got {reference!r}"
        )
    if cfg.SOLVER.get("REFERENCE_WORLD_SIZE", 0):
        raise ValueError(
            f"SOLVER.IMS_PER_GPU ({ims_per_gpu}) and SOLVER.REFERENCE_WORLD_SIZE "
            f"({cfg.SOLVER.REFERENCE_WORLD_SIZE}) both rescale the schedule and would apply "
            "one on top of the other; set SOLVER.REFERENCE_WORLD_SIZE to 0"
        )

    batch = ims_per_gpu * world_size
    written_batch = cfg.SOLVER.IMS_PER_BATCH
    if batch == reference == written_batch:
        return cfg
    if written_batch != reference:
        logger.warning(
            "SOLVER.IMS_PER_BATCH is %d but SOLVER.REFERENCE_WORLD_BATCH is %d; the schedule "
            "is rescaled from REFERENCE_WORLD_BATCH, the batch it is taken to be written for.",
            written_batch,
            reference,
        )
    scale = batch / reference
    solver = cfg.SOLVER
    max_iter = max(_round(solver.MAX_ITER / scale), 1)
    steps = tuple(solver.STEPS)
    if "SOLVER.STEPS" not in keep:
        # Against an explicit MAX_ITER the steps' relation to it is the user's to choose.
        checked_max_iter = None if "SOLVER.MAX_ITER" in keep else max_iter
        steps = _scale_steps(steps, solver.MAX_ITER, scale, checked_max_iter)
    rescaled = {
        "SOLVER.BASE_LR": solver.BASE_LR * scale,
        "SOLVER.BASE_LR_END": solver.BASE_LR_END * scale,
        "SOLVER.MAX_ITER": max_iter,
        "SOLVER.STEPS": steps,
        "SOLVER.WARMUP_ITERS": _round(solver.WARMUP_ITERS / scale),
        "SOLVER.CHECKPOINT_PERIOD": _scale_period(solver.CHECKPOINT_PERIOD, scale),
        "TEST.EVAL_PERIOD": _scale_period(cfg.TEST.EVAL_PERIOD, scale),
    }

    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    changes = []
    for key, value in rescaled.items():
        section, name = key.split(".")
        before = cfg[section][name]
        if key in keep or value == before:
            continue
        cfg[section][name] = value
        changes.append(f"{key} {_show(before)} -> {_show(value)}")
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.SOLVER.REFERENCE_WORLD_BATCH = batch
    if frozen:
        cfg.freeze()
    kept = [f"{key}={_show(cfg[key.split('.')[0]][key.split('.')[1]])}" for key in keep]
    logger.info(
        "Rescaled the schedule from a total batch of %d to %d (%d images/GPU x %d GPUs): %s.%s",
        reference,
        batch,
        ims_per_gpu,
        world_size,
        "; ".join(changes) or "nothing changed",
        f" Kept as given on the command line: {', '.join(sorted(kept))}." if kept else "",
    )
    return cfg


def _show(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
