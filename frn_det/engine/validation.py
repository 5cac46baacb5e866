"""Checks that turn bad input into one clear error before training starts.

detectron2 finds most mistakes late and deep: a misspelled config key is a bare
``KeyError``, an unknown norm name fails while the model is built, a batch that the
processes cannot share is an ``assert`` inside the data loader, and a missing or truncated
annotation file fails after the model is built (or, for the test set, after training).
Here every such mistake raises ``InputError`` at config/setup time, naming the thing, the
value received and what is accepted, with the closest valid name where there is one.

- ``load_config``: detectron2's defaults + frn-det's keys + a YAML file + KEY VALUE options,
  with errors for a missing file, invalid YAML, unknown keys and values of the wrong type
  (an integer where a float is expected is taken as that float: SOLVER.BASE_LR 1).
- ``check_config``: frn-det's keys present, every NORM key a registered norm, values in
  their accepted ranges and sets (``check_values``), and a batch the processes can share.
- ``check_datasets``: every dataset a run reads is registered and, for COCO-format ones,
  its annotation file and image folder are usable and hold every image the file lists.
- ``explain_config_error``: the same explanations for errors raised by a user's own
  ``cfg.merge_from_file`` / ``merge_from_list`` (e.g. without ``add_frn_config``).
"""

from __future__ import annotations

import ast
import difflib
import functools
import itertools
import json
import math
import mmap
import numbers
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.config.compat import guess_version
from detectron2.data import DatasetCatalog, MetadataCatalog
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

from frn_det.config import add_frn_config
from frn_det.data import SHAPES_SPLITS
from frn_det.evaluation import COCOEVAL_BACKENDS
from frn_det.layers import registered_norms
from frn_det.layers.frn import FRN_IMPLS
from frn_det.modeling.box_head import AFTER_FC_CHOICES

__all__ = [
    "AMP_PRECISIONS",
    "DATASETS_DOC",
    "InputError",
    "check_batch",
    "check_components",
    "check_config",
    "check_datasets",
    "check_frn_keys",
    "check_norms",
    "check_values",
    "closest",
    "explain_config_error",
    "load_config",
]

DATASETS_DOC = "datasets.md"

AMP_PRECISIONS = ("auto", "float16", "bfloat16")
"""SOLVER.AMP.PRECISION's values (see ``frn_det.engine.trainer.amp_precision``)."""

# Annotation files up to this size are parsed in full. COCO's train2017 json (448 MB) takes
# seconds and gigabytes to parse, which detectron2 pays again when it loads the dataset, so
# bigger files get a byte-level check instead: an object, complete at both ends (a
# truncated download is the usual failure), mentioning the required keys.
PARSE_LIMIT_BYTES = 64 * 1024 * 1024

_NON_EXISTENT_KEY = re.compile(r"^Non-existent (?:config )?key: (?P<key>\S+)$")
_ODD_OPTIONS = re.compile(
    r"^Override list has odd length: (?P<options>.*); it must be a list of pairs$", re.DOTALL
)
_TYPE_MISMATCH = re.compile(
    r"^Type mismatch \(<class '(?P<want>\w+)'> vs\. <class '(?P<got>\w+)'>\) with values "
    r"\((?P<default>.*) vs\. (?P<value>.*)\) for config key: (?P<key>\S+)$",
    re.DOTALL,
)


class InputError(ValueError):
    """Bad input found before training: a config file, config key or value, or dataset.

    The message is the whole explanation (what, the value received, what is accepted), so
    a command line prints it as it is, without a traceback.
    """


def closest(value: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``value`` (ignoring case), or None when none is close.

    Case is ignored because the usual slip is "frn" for "FRN" or "model.fpn.norm" for
    "MODEL.FPN.NORM", which a case-sensitive difflib ratio scores as unrelated.
    """
    by_lower: dict[str, str] = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    matches = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[matches[0]] if matches else None


def _paths(node: CfgNode, prefix: str = "") -> Iterator[tuple[str, object]]:
    # Nodes as well as leaves: an unknown key may be a misspelled section ("MODEL.RESNET").
    for key, value in node.items():
        path = f"{prefix}{key}"
        yield path, value
        if isinstance(value, CfgNode):
            yield from _paths(value, f"{path}.")


def _config_keys(cfg: CfgNode) -> list[str]:
    return [path for path, _ in _paths(cfg)]


@functools.cache
def _frn_keys() -> frozenset[str]:
    # What add_frn_config adds to detectron2's defaults, nodes included (MODEL.FRN).
    return frozenset(_config_keys(add_frn_config(get_cfg()))) - frozenset(_config_keys(get_cfg()))


def _frn_leaf_keys() -> list[str]:
    return sorted(k for k in _frn_keys() if not any(o.startswith(f"{k}.") for o in _frn_keys()))


def _add_frn_config_hint() -> str:
    return (
        "call frn_det.add_frn_config(cfg) on detectron2's get_cfg() before merge_from_file "
        "(frn_det.engine.validation.load_config does both)"
    )


def explain_config_error(
    error: BaseException, cfg: CfgNode | None = None, source: str = "the config"
) -> InputError | None:
    """An ``InputError`` explaining what detectron2/yacs raised while merging into ``cfg``,
    or None when ``error`` is not one of those.

    Recognised: an unknown key (``KeyError: Non-existent config key`` from a file,
    ``AssertionError: Non-existent key`` from KEY VALUE options), a key of frn-det's config
    used without ``add_frn_config``, a value of the wrong type, KEY VALUE options that do
    not come in pairs, and renamed keys.

    Args:
        error: what ``merge_from_file`` / ``merge_from_list`` raised.
        cfg: the config merged into; its keys are the candidates for "did you mean"
            (detectron2's defaults plus frn-det's when None).
        source: where the input came from, for the message ("config file X").
    """
    text = str(error.args[0]) if error.args else ""
    if isinstance(error, KeyError | AssertionError):
        match = _NON_EXISTENT_KEY.match(text)
        if match:
            key = match["key"]
            if key in _frn_keys():
                return InputError(
                    f"{key} (in {source}) is one of frn-det's config keys, which this config "
                    f"lacks: {_add_frn_config_hint()}"
                )
            known = _config_keys(cfg if cfg is not None else add_frn_config(get_cfg()))
            suggestion = closest(key, known)
            hint = (
                f"; did you mean {suggestion}?"
                if suggestion
                else " in detectron2's or frn-det's config (detectron2/config/defaults.py, "
                "frn_det/config.py)"
            )
            return InputError(f"config key {key} (in {source}) does not exist{hint}")
        match = _ODD_OPTIONS.match(text)
        if match:
            return InputError(
                "the KEY VALUE config options must come in pairs (a key, then its value), "
                f"got an odd number: {match['options']}"
            )
        if isinstance(error, KeyError) and "was renamed to" in text:
            return InputError(f"{text} (in {source})")
    if isinstance(error, ValueError):
        match = _TYPE_MISMATCH.match(text)
        if match:
            return InputError(
                f"config key {match['key']} (in {source}) takes a value of type "
                f"{match['want']} (its default is {match['default']}), got {match['got']} "
                f"{match['value']}"
            )
    return None


def load_config(
    config_file: str | os.PathLike | None, opts: Sequence[str] = (), cfg: CfgNode | None = None
) -> CfgNode:
    """detectron2's defaults (or ``cfg``) with frn-det's keys, merged with ``config_file``
    (``_BASE_`` inheritance) and the ``KEY VALUE`` list ``opts``. ``cfg`` is modified.

    Raises:
        InputError: the file (or a ``_BASE_`` it names) does not exist or is not YAML; a
            key does not exist (with the closest valid key); a value has the wrong type;
            ``opts`` does not come in pairs.
    """
    cfg = add_frn_config(cfg if cfg is not None else get_cfg())
    if config_file:
        path = os.fspath(config_file)
        if not os.path.exists(path):
            raise InputError(f"config file {path} (--config-file) does not exist")
        if not os.path.isfile(path):
            raise InputError(f"config file {path} (--config-file) is not a file")
        _merge(cfg, lambda: _merge_file(cfg, path), f"config file {path}")
    options = _floats_for_float_options(cfg, list(opts))
    _merge(cfg, lambda: cfg.merge_from_list(options), "the KEY VALUE options")
    return cfg


def _as_float(value: object) -> float | None:
    """``value`` as the float it means where a float key is given an int (1000) or, from
    YAML, a str in exponent notation without a dot ("1e-3", which YAML 1.1 reads as a
    str); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _floats_for_float_leaves(loaded: CfgNode, defaults: CfgNode) -> None:
    # In place, recursively: yacs refuses an int for a float key (SOLVER.BASE_LR: 1).
    for key, value in loaded.items():
        default = defaults.get(key) if isinstance(defaults, CfgNode) else None
        if isinstance(value, CfgNode):
            _floats_for_float_leaves(value, default)
        elif isinstance(default, float) and not isinstance(value, float):
            number = _as_float(value)
            if number is not None:
                loaded[key] = number


def _merge_file(cfg: CfgNode, path: str) -> None:
    """``cfg.merge_from_file(path)``, taking ints (and "1e-3") as floats for float keys."""
    loaded = type(cfg)(cfg.load_yaml_with_base(path, allow_unsafe=True))
    version = loaded.get("VERSION", None)
    if (version if version is not None else guess_version(loaded, path)) != cfg.VERSION:
        # detectron2 upgrades a config of an older version while merging it.
        cfg.merge_from_file(path)
        return
    _floats_for_float_leaves(loaded, cfg)
    cfg.merge_from_other_cfg(loaded)


def _floats_for_float_options(cfg: CfgNode, opts: list[object]) -> list[object]:
    """``opts`` (KEY VALUE ...) with an integer value of a float key written as a float."""
    options = list(opts)
    for index in range(0, len(options) - 1, 2):
        key, value = options[index], options[index + 1]
        node: object = cfg
        for part in str(key).split("."):
            node = node.get(part) if isinstance(node, CfgNode) else None
        if not isinstance(node, float):
            continue
        try:
            parsed = ast.literal_eval(value) if isinstance(value, str) else value
        except (ValueError, SyntaxError):
            continue
        number = None if isinstance(parsed, float) else _as_float(parsed)
        if number is not None:
            options[index + 1] = repr(number)
    return options


def _merge(cfg: CfgNode, merge: Callable[[], None], source: str) -> None:
    try:
        merge()
    except FileNotFoundError as error:
        # Only a _BASE_ can be missing here: the file itself was checked first.
        raise InputError(
            f"config file {error.filename}, named as _BASE_ by {source} or a file it "
            "inherits from, does not exist (_BASE_ paths are relative to the file naming them)"
        ) from error
    except yaml.YAMLError as error:
        raise InputError(f"{source} is not valid YAML: {' '.join(str(error).split())}") from error
    except (KeyError, AssertionError, ValueError) as error:
        explained = explain_config_error(error, cfg, source)
        if explained is None:
            raise
        raise explained from error


def check_frn_keys(cfg: CfgNode) -> None:
    """Raise ``InputError`` unless ``cfg`` has the keys ``add_frn_config`` adds.

    frn-det's components read MODEL.FRN and its trainer SOLVER.IMS_PER_GPU; a config made
    by detectron2's ``get_cfg()`` alone fails later with a bare ``AttributeError``.
    """
    missing = [key for key in _frn_leaf_keys() if not _has_key(cfg, key)]
    if not missing:
        return
    uses_frn = [key for key, value in _norm_keys(cfg) if value == "FRN"]
    why = ""
    if uses_frn:
        verb = "is" if len(uses_frn) == 1 else "are"
        why = f" ({' and '.join(uses_frn)} {verb} 'FRN', whose options are read from MODEL.FRN)"
    raise InputError(
        f"this config lacks frn-det's keys {', '.join(missing)}{why}: {_add_frn_config_hint()}"
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
        for path, value in _paths(cfg)
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


def _datasets_root_hint() -> str:
    root = os.environ.get("DETECTRON2_DATASETS")
    where = (
        f"DETECTRON2_DATASETS is {root}"
        if root
        else f"DETECTRON2_DATASETS is not set, so detectron2's datasets are read from "
        f"./datasets in {os.getcwd()}"
    )
    return f"{where}; see {DATASETS_DOC} for where datasets go and how to register your own"


def check_datasets(cfg: CfgNode, train: bool = True) -> None:
    """Raise ``InputError`` unless the datasets a run reads can be read.

    DATASETS.TRAIN must name at least one dataset when ``train``, DATASETS.TEST when not
    (``--eval-only``). Checks DATASETS.TEST, and DATASETS.TRAIN when ``train``: each must be
    registered with detectron2's DatasetCatalog. For COCO-format ones (metadata
    ``json_file``) the json must exist and be a COCO object with "images" (not empty) and
    "categories", and for
    training datasets "annotations" (test sets such as COCO test-dev have none); the
    metadata's ``image_root``, if any, must be a folder holding every image the json lists
    (checked for files parsed in full, see PARSE_LIMIT_BYTES). frn-det's
    embedded datasets (``frn_shapes_*``) are skipped: their files are generated, and
    checked, on first load.
    """
    if train and not cfg.DATASETS.TRAIN:
        raise InputError(
            "DATASETS.TRAIN is (), so there is nothing to train on; name registered datasets, "
            f"e.g. DATASETS.TRAIN \"('frn_shapes_train',)\" ({DATASETS_DOC} lists them)"
        )
    if not train and not cfg.DATASETS.TEST:
        raise InputError(
            "DATASETS.TEST is (), so --eval-only would evaluate nothing; name registered "
            f"datasets, e.g. DATASETS.TEST \"('frn_shapes_val',)\" ({DATASETS_DOC} lists them)"
        )
    fields = ["DATASETS.TRAIN", "DATASETS.TEST"] if train else ["DATASETS.TEST"]
    for field in fields:
        for name in cfg.DATASETS[field.split(".")[1]]:
            _check_dataset(name, field, needs_annotations=field == "DATASETS.TRAIN")


def _check_dataset(name: str, field: str, needs_annotations: bool) -> None:
    if name not in DatasetCatalog:
        suggestion = closest(name, DatasetCatalog.list())
        hint = f"; did you mean {suggestion!r}?" if suggestion else "."
        raise InputError(
            f"dataset {name!r} ({field}) is not registered with detectron2's DatasetCatalog"
            f"{hint} Register it before the run starts (e.g. with "
            f"detectron2.data.datasets.register_coco_instances); {_datasets_root_hint()}"
        )
    if name in SHAPES_SPLITS:
        return
    metadata = MetadataCatalog.get(name)
    json_file = metadata.get("json_file")
    if json_file is None:
        return
    problem, coco = _coco_json_problem(Path(json_file), needs_annotations)
    if problem:
        raise InputError(
            f"dataset {name!r} ({field}): its annotation file {json_file} {problem}. "
            + _datasets_root_hint()
        )
    image_root = metadata.get("image_root")
    if image_root is None:
        return
    if not os.path.exists(image_root):
        problem = "does not exist"
    elif not os.path.isdir(image_root):
        problem = "is not a folder"
    elif not any(os.scandir(image_root)):
        problem = "is empty"
    if problem:
        raise InputError(
            f"dataset {name!r} ({field}): its image folder {image_root} {problem}. "
            + _datasets_root_hint()
        )
    missing = _missing_images(coco, image_root) if coco is not None else []
    if missing:
        listed = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise InputError(
            f"dataset {name!r} ({field}): {len(missing)} of the {len(coco['images'])} images "
            f"its annotation file {json_file} lists are not in its image folder {image_root} "
            f"({listed}); an incomplete download or extraction? " + _datasets_root_hint()
        )


def _missing_images(coco: dict, image_root: str) -> list[str]:
    # One listing per folder rather than a stat per image: COCO val lists 5000 images.
    present: dict[str, set[str]] = {}
    missing = []
    for image in coco["images"]:
        file_name = image.get("file_name") if isinstance(image, dict) else None
        if not isinstance(file_name, str):
            missing.append(repr(file_name))
            continue
        folder, base = os.path.split(os.path.join(image_root, file_name))
        if folder not in present:
            try:
                present[folder] = set(os.listdir(folder))
            except OSError:
                present[folder] = set()
        if base not in present[folder]:
            missing.append(file_name)
    return missing


def _coco_json_problem(path: Path, needs_annotations: bool) -> tuple[str, dict | None]:
    """What is wrong with the COCO json at ``path`` ("" when nothing is), and its content
    when it was parsed and is fine (None for a file too large to parse here)."""
    required = (
        ("images", "annotations", "categories") if needs_annotations else ("images", "categories")
    )
    described = "a COCO file is an object with 'images', 'annotations' and 'categories'"
    if not path.exists():
        return "does not exist", None
    if not path.is_file():
        return "is not a file", None
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)", None
    if size > PARSE_LIMIT_BYTES:
        return _large_json_problem(path, required, described), None
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except UnicodeDecodeError:
        return "is not text (UTF-8 JSON)", None
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        return f"is not valid JSON ({error.msg} at {where})", None
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}; {described}", None
    missing = [key for key in required if key not in data]
    if missing:
        return f"has no {' or '.join(repr(k) for k in missing)}; {described}", None
    wrong = [key for key in required if not isinstance(data[key], list)]
    if wrong:
        listed = " and ".join(repr(k) for k in wrong)
        return f"has {listed} that is not a list; {described}", None
    if not data["images"]:
        return "lists no images", None
    return "", data


def _large_json_problem(path: Path, required: Sequence[str], described: str) -> str:
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        head = data[:4096].lstrip()
        tail = data[max(0, len(data) - 4096) :].rstrip()
        if not head.startswith(b"{"):
            return f"does not start with '{{'; {described}"
        if not tail.endswith(b"}"):
            return "does not end with '}': it looks truncated (an interrupted download?)"
        missing = [key for key in required if data.find(f'"{key}"'.encode()) < 0]
    if missing:
        return f"has no {' or '.join(repr(k) for k in missing)}; {described}"
    return ""
