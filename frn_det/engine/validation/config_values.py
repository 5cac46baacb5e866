"""The values of a prepared config, checked before anything is built: frn-det's keys
present, every NORM key a registered norm, every component registered, values in their
accepted ranges and sets, and a total batch the processes can share.

``check_config`` runs them all; each raises ``InputError`` naming the key, the value
received and what is accepted, with the closest valid name where there is one.
"""

from __future__ import annotations

import itertools
import math
import numbers
import re
from collections.abc import Sequence

from detectron2.config import CfgNode
from detectron2.modeling import (
    ANCHOR_GENERATOR_REGISTRY,
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    PROPOSAL_GENERATOR_REGISTRY,
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_KEYPOINT_HEAD_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
    RPN_HEAD_REGISTRY,
)

from frn_det.evaluation import COCOEVAL_BACKENDS
from frn_det.layers import norm_entry, registered_norms
from frn_det.layers.frn import FRN_IMPLS
from frn_det.modeling.box_head import AFTER_FC_CHOICES

from .config_file import ADD_FRN_CONFIG_HINT, config_paths, frn_config_keys
from .errors import InputError, closest

__all__ = [
    "AMP_PRECISIONS",
    "LR_SCHEDULERS",
    "RESNET_DEPTHS",
    "check_batch",
    "check_components",
    "check_config",
    "check_frn_keys",
    "check_norms",
    "check_values",
]

AMP_PRECISIONS = ("auto", "float16", "bfloat16")
"""SOLVER.AMP.PRECISION's values (see ``frn_det.engine.trainer.amp_precision``)."""


def _frn_leaf_keys() -> list[str]:
    keys = frn_config_keys()
    return sorted(k for k in keys if not any(o.startswith(f"{k}.") for o in keys))


def check_frn_keys(cfg: CfgNode) -> None:
    """Raise ``InputError`` unless ``cfg`` has the keys ``add_frn_config`` adds.

    frn-det's components read MODEL.FRN and its trainer SOLVER.IMS_PER_GPU; a config made
    by detectron2's ``get_cfg()`` alone fails later with a bare ``AttributeError``.
    """
    missing = [key for key in _frn_leaf_keys() if not _has_key(cfg, key)]
    if not missing:
        return
    # The norms asked for whose registry entries read their options from the config (FRN's
    # from MODEL.FRN): the reason the keys are needed.
    registered = set(registered_norms())
    reading = [
        (key, value)
        for key, value in _norm_keys(cfg)
        if value in registered and norm_entry(value).config_options is not None
    ]
    why = ""
    if reading:
        said = " and ".join(f"{key} is {value!r}" for key, value in reading)
        norms = "a norm" if len({value for _, value in reading}) == 1 else "norms"
        why = f" ({said}, {norms} whose options are read from the config)"
    raise InputError(
        f"this config lacks frn-det's keys {', '.join(missing)}{why}: {ADD_FRN_CONFIG_HINT}"
    )


def _has_key(cfg: CfgNode, key: str) -> bool:
    node: object = cfg
    for part in key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            return False
        node = node[part]
    return True


def _norm_keys(cfg: CfgNode) -> list[tuple[str, str]]:
    # Every NORM leaf (MODEL.RESNETS.NORM, MODEL.FPN.NORM, the heads', projects' own, ...).
    return [
        (path, value)
        for path, value in config_paths(cfg)
        if path.rsplit(".", 1)[-1] == "NORM" and isinstance(value, str)
    ]


def check_norms(cfg: CfgNode) -> None:
    """Raise ``InputError`` if a NORM key of ``cfg`` names no registered norm.

    Every leaf key named NORM is checked, used by the model or not: a name that is not in
    ``frn_det.layers.registered_norms()`` is a mistake wherever it is.
    """
    accepted = registered_norms()
    for key, value in _norm_keys(cfg):
        if value not in accepted:
            names = ", ".join(repr(name) for name in accepted)
            suggestion = closest(value, [n for n in accepted if n])
            hint = f"; did you mean {suggestion!r}?" if suggestion else "."
            raise InputError(
                f"{key} is {value!r}, which is not a registered norm{hint} Registered norms: "
                f"{names} (frn_det.layers.register_norm adds one)"
            )


def check_batch(cfg: CfgNode, world_size: int) -> None:
    """Raise ``InputError`` unless ``world_size`` processes can share SOLVER.IMS_PER_BATCH.

    detectron2 splits the total batch evenly over the processes and only asserts it deep in
    the data loader. With SOLVER.IMS_PER_GPU > 0 the total batch is IMS_PER_GPU x world
    size (``apply_ims_per_gpu``) and always divides; with IMS_PER_GPU = 0 the batch as
    written must be a positive multiple of the world size, and, if SOLVER.REFERENCE_WORLD_SIZE
    is set (detectron2's own rescaling), a multiple of that.

    Args:
        cfg: the prepared config (after ``prepare_config``).
        world_size: the number of training processes, num_gpus x num_machines.
    """
    batch = cfg.SOLVER.IMS_PER_BATCH
    fix = (
        f"set SOLVER.IMS_PER_BATCH to a multiple of {world_size}, or give the images per GPU "
        f"instead (--ims-per-gpu N or SOLVER.IMS_PER_GPU N, a total batch of N x {world_size})"
    )
    if batch < 1:
        raise InputError(f"SOLVER.IMS_PER_BATCH must be >= 1, got {batch}; {fix}")
    if batch < world_size:
        raise InputError(
            f"SOLVER.IMS_PER_BATCH is {batch}, fewer images than the {world_size} training "
            f"processes (num_gpus x num_machines), so some would get none; {fix}"
        )
    if batch % world_size:
        below, above = batch // world_size * world_size, -(-batch // world_size) * world_size
        raise InputError(
            f"SOLVER.IMS_PER_BATCH is {batch}, which {world_size} training processes "
            f"(num_gpus x num_machines) cannot share equally (e.g. {below} or {above} can); "
            f"{fix}"
        )
    reference = cfg.SOLVER.get("REFERENCE_WORLD_SIZE", 0)
    if reference and batch % reference:
        raise InputError(
            f"SOLVER.IMS_PER_BATCH ({batch}) must be a multiple of SOLVER.REFERENCE_WORLD_SIZE "
            f"({reference}), which detectron2 rescales it from; set REFERENCE_WORLD_SIZE to 0 "
            "or use --ims-per-gpu"
        )


def _one_of(key: str, value: object, accepted: Sequence[str]) -> None:
    if value in accepted:
        return
    listed = ", ".join(repr(a) for a in accepted)
    suggestion = closest(value, accepted) if isinstance(value, str) else None
    hint = f"; did you mean {suggestion!r}?" if suggestion else ""
    raise InputError(f"{key} is {value!r}, which is not one of {listed}{hint}")


def _number(key: str, value: object, minimum: float, inclusive: bool, meaning: str) -> None:
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if real and math.isfinite(value) and (value >= minimum if inclusive else value > minimum):
        return
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
    shown = f"{type(value).__name__} {value!r}" if not real else repr(value)
    raise InputError(f"{key} must be a finite number {bound} ({meaning}), got {shown}")


def check_values(cfg: CfgNode, train: bool = True) -> None:
    """Raise ``InputError`` for a value of frn-det's keys (and the solver's) that would
    fail or mislead only later: FRN's eps, its kernel, the AMP dtype, the COCO evaluation
    backend, a negative learning rate, momentum or weight decay, Nesterov without momentum,
    LR steps out of order, and, when ``train``, a schedule of no iterations.

    Args:
        cfg: the prepared config (MODEL.DEVICE already resolved by ``prepare_config``).
        train: whether the run trains (not ``--eval-only``).
    """
    frn = cfg.MODEL.FRN
    # eps <= 0 divides by sqrt(0) (or of a negative number) wherever a channel is all zero,
    # and the run stops at iteration 0 with a "non-finite loss" that blames the LR.
    _number("MODEL.FRN.EPS", frn.EPS, 0.0, False, "FRN's epsilon; the paper's is 1e-6")
    _one_of("MODEL.FRN.IMPL", frn.IMPL, FRN_IMPLS)
    _one_of("MODEL.FRN.AFTER_FC", frn.AFTER_FC, AFTER_FC_CHOICES)
    _one_of("SOLVER.AMP.PRECISION", cfg.SOLVER.AMP.PRECISION, AMP_PRECISIONS)
    if (
        cfg.SOLVER.AMP.ENABLED
        and cfg.SOLVER.AMP.PRECISION == "float16"
        and cfg.MODEL.DEVICE.startswith("cpu")
    ):
        raise InputError(
            "SOLVER.AMP.PRECISION is 'float16' but the model runs on the CPU (MODEL.DEVICE "
            f"{cfg.MODEL.DEVICE!r}); frn-det's CPU mixed precision is 'bfloat16' (or 'auto')"
        )
    _one_of("TEST.COCOEVAL_BACKEND", cfg.TEST.COCOEVAL_BACKEND, COCOEVAL_BACKENDS)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", cfg.MODEL.DEVICE):
        raise InputError(
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r}; frn-det trains on 'cpu', 'cuda' or "
            "'cuda:N' (on a machine without CUDA, 'cuda' runs on the CPU)"
        )
    solver = cfg.SOLVER
    _number("SOLVER.BASE_LR", solver.BASE_LR, 0.0, True, "the learning rate")
    # torch.optim.SGD refuses these only once the trainer is built, in every process.
    _number("SOLVER.MOMENTUM", solver.MOMENTUM, 0.0, True, "SGD's momentum")
    _number("SOLVER.WEIGHT_DECAY", solver.WEIGHT_DECAY, 0.0, True, "SGD's weight decay")
    if solver.WEIGHT_DECAY_NORM is not None:
        _number("SOLVER.WEIGHT_DECAY_NORM", solver.WEIGHT_DECAY_NORM, 0.0, True, "norms' decay")
    if solver.NESTEROV and solver.MOMENTUM == 0:
        raise InputError(
            "SOLVER.NESTEROV is True but SOLVER.MOMENTUM is 0; Nesterov momentum needs a "
            "momentum > 0 (e.g. 0.9), or set SOLVER.NESTEROV False"
        )
    steps = tuple(solver.STEPS)
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in steps) or any(
        a >= b for a, b in itertools.pairwise(steps)
    ):
        raise InputError(
            f"SOLVER.STEPS must be strictly increasing iterations >= 1 (where the LR drops by "
            f"SOLVER.GAMMA), got {steps}"
        )
    for key, value, minimum, meaning in (
        ("SOLVER.CHECKPOINT_PERIOD", solver.CHECKPOINT_PERIOD, 1, "iterations between checkpoints"),
        ("SOLVER.WARMUP_ITERS", solver.WARMUP_ITERS, 0, "iterations of LR warm-up"),
        (
            "TEST.EVAL_PERIOD",
            cfg.TEST.EVAL_PERIOD,
            0,
            "iterations between evaluations; 0: at the end only",
        ),
        ("DATALOADER.NUM_WORKERS", cfg.DATALOADER.NUM_WORKERS, 0, "data loading processes"),
        ("MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS.NUM_CLASSES, 1, "object classes"),
        ("MODEL.RETINANET.NUM_CLASSES", cfg.MODEL.RETINANET.NUM_CLASSES, 1, "object classes"),
    ):
        if value < minimum:
            raise InputError(f"{key} must be an integer >= {minimum} ({meaning}), got {value}")
    for key in ("MIN_SIZE_TRAIN", "MIN_SIZE_TEST", "MAX_SIZE_TRAIN", "MAX_SIZE_TEST"):
        value = cfg.INPUT[key]
        sizes = tuple(value) if isinstance(value, tuple | list) else (value,)
        if key == "MIN_SIZE_TEST" and value == 0:
            continue  # detectron2's "no resizing at test time"
        if not sizes or any(size < 1 for size in sizes):
            raise InputError(f"INPUT.{key} must be image sizes in pixels >= 1, got {value!r}")
    if train and cfg.SOLVER.MAX_ITER < 1:
        raise InputError(
            f"SOLVER.MAX_ITER is {cfg.SOLVER.MAX_ITER}, so nothing would be trained and the "
            "initial model would be saved and evaluated as if trained; give at least 1 "
            "iteration, or evaluate with --eval-only"
        )


LR_SCHEDULERS = ("WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepWithFixedGammaLR")
"""SOLVER.LR_SCHEDULER_NAME's values (``detectron2.solver.build_lr_scheduler``)."""

RESNET_DEPTHS = (18, 34, 50, 101, 152)

# The meta-architectures that build a proposal generator and ROI heads from the config.
_RCNN_ARCHITECTURES = frozenset({"GeneralizedRCNN", "FRNGeneralizedRCNN", "PanopticFPN"})


def _registered(key: str, name: object, registry: object) -> None:
    if isinstance(name, str) and name in registry:
        return
    names = sorted(n for n, _ in registry)
    suggestion = closest(name, names) if isinstance(name, str) else None
    hint = f"did you mean {suggestion!r}? " if suggestion else ""
    raise InputError(
        f"{key} is {name!r}, which names no registered component; {hint}Registered: "
        f"{', '.join(names)} (a project's components register when its package is imported, "
        "before the config is built)"
    )


def check_components(cfg: CfgNode) -> None:
    """Raise ``InputError`` if a component the model is built from names nothing registered
    (detectron2 raises a KeyError in every process once the model is built), with the
    closest registered name; also the ResNet depth and the LR scheduler."""
    model = cfg.MODEL
    _registered("MODEL.META_ARCHITECTURE", model.META_ARCHITECTURE, META_ARCH_REGISTRY)
    _registered("MODEL.BACKBONE.NAME", model.BACKBONE.NAME, BACKBONE_REGISTRY)
    _registered(
        "MODEL.ANCHOR_GENERATOR.NAME", model.ANCHOR_GENERATOR.NAME, ANCHOR_GENERATOR_REGISTRY
    )
    arch = model.META_ARCHITECTURE
    uses_proposals = arch in _RCNN_ARCHITECTURES or arch == "ProposalNetwork"
    if uses_proposals and model.PROPOSAL_GENERATOR.NAME != "PrecomputedProposals":
        _registered(
            "MODEL.PROPOSAL_GENERATOR.NAME",
            model.PROPOSAL_GENERATOR.NAME,
            PROPOSAL_GENERATOR_REGISTRY,
        )
        _registered("MODEL.RPN.HEAD_NAME", model.RPN.HEAD_NAME, RPN_HEAD_REGISTRY)
    if arch in _RCNN_ARCHITECTURES:
        _registered("MODEL.ROI_HEADS.NAME", model.ROI_HEADS.NAME, ROI_HEADS_REGISTRY)
        if model.ROI_HEADS.NAME != "Res5ROIHeads":  # which uses res5 as its box head
            _registered("MODEL.ROI_BOX_HEAD.NAME", model.ROI_BOX_HEAD.NAME, ROI_BOX_HEAD_REGISTRY)
        if model.MASK_ON:
            _registered(
                "MODEL.ROI_MASK_HEAD.NAME", model.ROI_MASK_HEAD.NAME, ROI_MASK_HEAD_REGISTRY
            )
        if model.KEYPOINT_ON:
            _registered(
                "MODEL.ROI_KEYPOINT_HEAD.NAME",
                model.ROI_KEYPOINT_HEAD.NAME,
                ROI_KEYPOINT_HEAD_REGISTRY,
            )
    if "resnet" in model.BACKBONE.NAME and model.RESNETS.DEPTH not in RESNET_DEPTHS:
        raise InputError(
            f"MODEL.RESNETS.DEPTH is {model.RESNETS.DEPTH!r}, which is not one of "
            f"{', '.join(str(d) for d in RESNET_DEPTHS)}"
        )
    _one_of("SOLVER.LR_SCHEDULER_NAME", cfg.SOLVER.LR_SCHEDULER_NAME, LR_SCHEDULERS)


def check_config(cfg: CfgNode, world_size: int, train: bool = True) -> None:
    """``check_frn_keys``, ``check_norms``, ``check_components``, ``check_values`` and
    ``check_batch`` on a prepared config (``train``: whether the run trains, see
    ``check_values``)."""
    check_frn_keys(cfg)
    check_norms(cfg)
    check_components(cfg)
    check_values(cfg, train=train)
    check_batch(cfg, world_size)
