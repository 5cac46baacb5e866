"""Python (lazy) configs with frn-det: the components they name and what trains them.

detectron2's strongest baselines (``new_baselines/``) are lazy configs: Python files whose
``model`` is a tree of ``LazyCall`` nodes, instantiated as written. frn-det's components
fit in them by ``_target_``:

- ``frn_det_components(model)`` retargets a stock Mask R-CNN FPN tree
  (``detectron2/model_zoo/configs/common/models/mask_rcnn_fpn.py``) to frn-det's
  slot-built stem, blocks, box head and mask head. Every argument keeps its name, so the
  norm keys stay where detectron2 has them (``model.backbone.bottom_up.stem.norm``,
  ``...stages.norm``, ``model.roi_heads.box_head.conv_norm``, ``...mask_head.conv_norm``)
  and for detectron2's norms the model is detectron2's, parameter names included.
- ``make_stages`` (ResNet stages of ``FRNBasicBlock`` / ``FRNBottleneckBlock``) and
  ``slot_norm`` (a ``channels -> norm`` factory for stock components whose norm has no
  activation after it, such as ``FPN``) are the targets those nodes use.
- ``frn_det_optimizer(optimizer)`` makes every registered norm's parameters norm
  parameters for ``weight_decay_norm`` (``frn_det.solver.get_optimizer_params``).

``run`` (``tools/lazy_train_net.py``) trains such a config with what ``tools/train_net.py``
gives yacs configs: ``--ims-per-gpu`` (``apply_lazy_ims_per_gpu``), gloo processes on
CPU machines, ``SafeCheckpointer``'s crash-safe checkpoints and ``--resume`` that repairs
metrics.json, a stop at the first non-finite loss, and bad input (``load_lazy_config``,
``check_lazy_config``) explained in one paragraph before any process trains.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.config import LazyCall as L
from detectron2.engine import default_argument_parser, default_setup, hooks
from detectron2.engine.defaults import default_writers
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.modeling.backbone import ResNet
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

# Imported for their registrations: the embedded datasets.
import frn_det.data  # noqa: F401
from frn_det.checkpoint import SafeCheckpointer
from frn_det.evaluation import BackendCOCOEvaluator
from frn_det.layers import get_norm_act, registered_norms, set_frn_impl
from frn_det.modeling import (
    FRNBasicBlock,
    FRNBasicStem,
    FRNBottleneckBlock,
    FRNConvFCHead,
    FRNGeneralizedRCNN,
    FRNMaskRCNNConvUpsampleHead,
)
from frn_det.solver import get_optimizer_params

from .batch import apply_ims_per_gpu, ims_per_gpu_arg
from .exits import (
    exit_on_bad_input,
    launch_exiting_as_explained,
    run_explaining_failures,
    stops_in_one_line,
)
from .launch import create_ddp_model, distributed_backend, resolve_device
from .run_config import world_size_of
from .trainer import (
    METRICS_FILE,
    NonFiniteLossError,
    Trainer,
    deterministic_inference,
    divergence_hint,
    log_results,
    repair_torn_metrics_line,
    set_aside_metrics_from,
    use_naive_sync_batchnorm,
)
from .validation import InputError, check_batch, check_datasets, closest

__all__ = [
    "DETECTRON2_NORMS",
    "TRAIN_DEFAULTS",
    "apply_lazy_ims_per_gpu",
    "build_lazy_model",
    "check_lazy_config",
    "do_test",
    "do_train",
    "frn_det_components",
    "frn_det_optimizer",
    "lazy_train_net_argument_parser",
    "lazy_train_net_main",
    "load_lazy_config",
    "make_stages",
    "norm_keys",
    "prepare_lazy_config",
    "run",
    "slot_norm",
]

logger = logging.getLogger(__name__)

# fmt: off
DETECTRON2_NORMS = (
    "", "BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN",
)
# fmt: on
"""The names ``detectron2.layers.get_norm`` itself accepts: all a stock component takes."""

TRAIN_DEFAULTS: dict[str, Any] = {
    "ims_per_gpu": 0,
    "reference_world_batch": 0,
    "frn_impl": "auto",
    "padding_aware_norm": False,
    "amp": {"precision": "auto"},
}
"""frn-det's keys under a lazy config's ``train`` (``load_lazy_config`` adds missing ones):

- ``ims_per_gpu``: images per GPU (process); 0 keeps ``dataloader.train.total_batch_size``.
  Otherwise the total batch becomes ims_per_gpu x processes and the LR, iterations, LR
  milestones, checkpoint and eval periods are rescaled (``apply_lazy_ims_per_gpu``).
- ``reference_world_batch``: the total batch the schedule is written for; 0 means the
  config's ``total_batch_size``.
- ``frn_impl``: the FRN kernel (``MODEL.FRN.IMPL`` of yacs configs).
- ``padding_aware_norm``: ``padding_aware(model)`` at load time, after the overrides
  (``MODEL.PADDING_AWARE_NORM`` of yacs configs).
- ``amp.precision``: autocast dtype when ``amp.enabled`` ("auto": float16 on CUDA, bfloat16
  on the CPU; ``SOLVER.AMP.PRECISION``).
"""


# ---------------------------------------------------------------------------------------
# What the configs name


def make_stages(depth: int, norm: Any = "BN", stride_in_1x1: bool = False, **kwargs: Any) -> list:
    """``ResNet.make_default_stages`` built from frn-det's slot blocks.

    ``FRNBottleneckBlock`` for depth >= 50, ``FRNBasicBlock`` below (which has no 1x1 conv,
    so ``stride_in_1x1`` is then not used). ``norm`` is a registered name ("FRN", "GN", ...)
    or a ``channels -> module`` callable; other keyword arguments go to every block
    (``norm_options``, ``zero_init_last_norm``, ``num_groups``, ...). Returns the stages as
    ``ResNet(stages=...)`` takes them.
    """
    if depth >= 50:
        return ResNet.make_default_stages(
            depth, FRNBottleneckBlock, norm=norm, stride_in_1x1=stride_in_1x1, **kwargs
        )
    return ResNet.make_default_stages(depth, FRNBasicBlock, norm=norm, **kwargs)


def slot_norm(norm: str, **options: Any) -> Callable[[int], nn.Module | None]:
    """A ``channels -> module`` norm for a stock component's ``norm`` argument at a site with
    no activation after the norm (``FPN``'s lateral and output convs).

    It is the norm half of the registry's slot with ``act=False``: FRN without TLU for
    "FRN". ``options`` are the norm's builder options, those its registry entry takes
    (``norm_entry(norm).config_options`` reads them from a yacs config; for FRN ``eps``,
    ``learnable_eps``). In a lazy config: ``model.backbone.norm = L(slot_norm)(norm="FRN")``.
    """
    if norm not in registered_norms():
        accepted = ", ".join(repr(n) for n in registered_norms())
        raise KeyError(f"slot_norm: unknown norm {norm!r}; registered norms are {accepted}")
    return functools.partial(_slot_norm_module, norm, dict(options))


def _slot_norm_module(norm: str, options: dict[str, Any], channels: int) -> nn.Module | None:
    return get_norm_act(norm, channels, act=False, **options).norm


# stock target -> frn-det's, by config path in detectron2's Mask R-CNN FPN tree.
_COMPONENTS: dict[str, Callable[..., Any]] = {
    "backbone.bottom_up.stem": FRNBasicStem,
    "backbone.bottom_up.stages": make_stages,
    "roi_heads.box_head": FRNConvFCHead,
    "roi_heads.mask_head": FRNMaskRCNNConvUpsampleHead,
}


def frn_det_components(model: DictConfig) -> DictConfig:
    """Retarget a stock lazy Mask R-CNN FPN ``model`` node to frn-det's components, in place.

    The stem, the ResNet stages, the box head and the mask head (those present) get
    frn-det's slot-built counterparts, which take the same arguments and, for detectron2's
    norms, build the same modules with the same names. Everything else stays stock (the
    FPN takes a ``slot_norm`` for FRN; the RPN head has no norm). Returns ``model``.
    """
    for path, target in _COMPONENTS.items():
        node = OmegaConf.select(model, path, default=None)
        if node is not None:
            node._target_ = target
    return model


def padding_aware(model: DictConfig) -> DictConfig:
    """``MODEL.PADDING_AWARE_NORM`` for a lazy Mask R-CNN FPN ``model`` node, in place.

    The meta-architecture becomes ``FRNGeneralizedRCNN`` (it records the batch's image
    sizes), frn-det's stem and stages get ``norm_options["padding_aware"]``, and the FPN's
    norm becomes the padding-aware ``slot_norm``. Call it after ``frn_det_components``; the
    RoI heads see per-region features and stay as they are. Returns ``model``.

    Raises:
        ValueError: a part that cannot be made padding-aware (a stock stem or stages, an
            FPN without a norm, a meta-architecture other than GeneralizedRCNN's).
    """
    target = _target_name(model._target_)
    if target.endswith("GeneralizedRCNN"):
        model._target_ = FRNGeneralizedRCNN
    else:
        raise ValueError(
            f"padding_aware: model._target_ {target} does not record image sizes; "
            "padding-aware lazy models are built as FRNGeneralizedRCNN"
        )
    for path, frn_target in (
        ("backbone.bottom_up.stem", FRNBasicStem),
        ("backbone.bottom_up.stages", make_stages),
    ):
        node = OmegaConf.select(model, path, default=None)
        if node is None:
            continue
        if _target_name(node._target_) != _target_name(frn_target):
            raise ValueError(
                f"padding_aware: model.{path} is {_target_name(node._target_)}, whose norms "
                "cannot be padding-aware; call frn_det_components(model) first"
            )
        node.norm_options = {**(node.get("norm_options") or {}), "padding_aware": True}
    fpn_norm = model.backbone.get("norm")
    if isinstance(fpn_norm, str) and fpn_norm:
        model.backbone.norm = L(slot_norm)(norm=fpn_norm, padding_aware=True)
    elif isinstance(fpn_norm, DictConfig) and _target_name(fpn_norm._target_) == _target_name(
        slot_norm
    ):
        fpn_norm.padding_aware = True
    else:
        raise ValueError(
            f"padding_aware: model.backbone.norm {fpn_norm!r} cannot be made padding-aware; "
            "give the FPN a registered norm name or L(slot_norm)(norm=...)"
        )
    return model


def frn_det_counterpart(stock_config: str) -> tuple[DictConfig, ...]:
    """The sections of detectron2's lazy config ``stock_config`` (a model-zoo path such as
    "new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py") made frn-det's, norms untouched:
    ``frn_det_components`` for the model, ``frn_det_optimizer`` for the optimizer, and
    ``BackendCOCOEvaluator`` (detectron2's COCOEvaluator with frn-det's COCOeval choice: without
    detectron2's compiled ops its own evaluator runs pycocotools' pure-Python COCOeval; the
    same AP). Returns ``(dataloader, lr_multiplier, train, optimizer, model)``."""
    stock = model_zoo.get_config(stock_config)
    stock.dataloader.evaluator._target_ = BackendCOCOEvaluator
    return (
        stock.dataloader,
        stock.lr_multiplier,
        stock.train,
        frn_det_optimizer(stock.optimizer),
        frn_det_components(stock.model),
    )


def scale_schedule(train: DictConfig, lr_multiplier: DictConfig, epochs: tuple[int, int]) -> None:
    """Turn a new_baselines schedule of ``epochs[0]`` epochs into one of ``epochs[1]``, in
    place, as detectron2's own 50/200/400-epoch files change its 100-epoch one:
    ``train.max_iter`` and the LR milestones scale (rounded down), the scheduler's
    ``num_updates`` follows ``max_iter``; warm-up, a fraction of the run, is left as it is."""
    old, new = epochs
    train.max_iter = train.max_iter * new // old
    scheduler = lr_multiplier.scheduler
    scheduler.milestones = [milestone * new // old for milestone in scheduler.milestones]
    scheduler.num_updates = train.max_iter


def frn_det_optimizer(optimizer: DictConfig) -> DictConfig:
    """Make ``optimizer.params`` frn-det's parameter groups, in place; returns ``optimizer``.

    detectron2's ``get_default_optimizer_params`` gives ``weight_decay_norm`` to torch's
    norm classes only; ``frn_det.solver.get_optimizer_params`` takes the same arguments and
    counts the parameters of every registered norm's modules (FRN's gamma, beta, tau and
    eps, TLU's tau) as norm parameters too.
    """
    optimizer.params._target_ = get_optimizer_params
    return optimizer


# ---------------------------------------------------------------------------------------
# Bad input


def load_lazy_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    """``LazyConfig.load(path)`` with ``key=value`` ``overrides`` and frn-det's ``train`` keys.

    Raises:
        InputError: the file does not exist, is not .py/.yaml or fails to load; an override
            is not ``key=value`` (yacs' ``KEY VALUE`` form) or names a key the config lacks
            (with the closest key; a new key needs hydra's ``+key=value``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"config file {path} (--config-file) does not exist or is not a file")
    if os.path.splitext(path)[1] not in (".py", ".yaml", ".yml"):
        raise InputError(f"config file {path} is not a lazy config (.py, .yaml or .yml)")
    try:
        cfg = LazyConfig.load(path)
    except Exception as error:  # a config is a program: any failure of it is bad input
        raise InputError(
            f"config file {path} failed to load: {type(error).__name__}: {error}"
        ) from error
    if "train" not in cfg:
        raise InputError(f"config file {path} has no 'train' section; lazy training needs one")
    # frn-det's train keys first, so that overrides can set them like any other key
    for key, value in TRAIN_DEFAULTS.items():
        if key not in cfg.train:
            cfg.train[key] = value
        elif isinstance(value, dict):
            for sub, default in value.items():
                cfg.train[key].setdefault(sub, default)
    _check_overrides(cfg, overrides, path)
    try:
        cfg = LazyConfig.apply_overrides(cfg, list(overrides))
    except Exception as error:
        raise InputError(f"the key=value overrides {list(overrides)} failed: {error}") from error
    if cfg.train.padding_aware_norm:
        try:
            padding_aware(cfg.model)
        except ValueError as error:
            raise InputError(f"train.padding_aware_norm=True in {path}: {error}") from None
    return cfg


def _config_paths(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, DictConfig):
        for key in node:
            path = f"{prefix}{key}"
            yield path
            yield from _config_paths(node._get_node(key), f"{path}.")
    elif isinstance(node, ListConfig):
        for index in range(len(node)):
            path = f"{prefix}{index}"
            yield path
            yield from _config_paths(node._get_node(index), f"{path}.")


_MISSING = object()


def _check_overrides(cfg: DictConfig, overrides: Sequence[str], path: str) -> None:
    known: list[str] | None = None
    for override in overrides:
        if "=" not in override:
            raise InputError(
                f"lazy config overrides are key=value (e.g. optimizer.lr=0.01, "
                f"model.backbone.bottom_up.stages.norm=GN), got {override!r}; the KEY VALUE "
                "form is for YAML configs (tools/train_net.py)"
            )
        key = override.split("=", 1)[0].strip()
        if key.startswith(("+", "~")):
            continue  # hydra's explicit "add this key" / "delete this key"
        if OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False) is not _MISSING:
            continue
        known = known if known is not None else list(_config_paths(cfg))
        suggestion = closest(key, known)
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        if key.rsplit(".", 1)[-1].endswith("norm"):
            keys = ", ".join(k for k, _ in norm_keys(cfg))
            hint += f" The norm keys of this config are: {keys}."
        raise InputError(
            f"config key {key} (in the key=value overrides) does not exist in {path} "
            f"(+{key}=... would add it){hint}"
        )


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', target)}"


def norm_keys(cfg: DictConfig) -> list[tuple[str, Any]]:
    """``(key, value)`` for every argument named ``norm`` or ``*_norm`` under ``cfg.model``
    (e.g. ``model.backbone.bottom_up.stem.norm``, ``model.roi_heads.box_head.conv_norm``)."""
    found: list[tuple[str, Any]] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, DictConfig):
            for key in node:
                child = node._get_node(key)
                path = f"{prefix}.{key}"
                if key == "norm" or str(key).endswith("_norm"):
                    found.append((path, child if isinstance(child, DictConfig) else child._value()))
                else:
                    walk(child, path)
        elif isinstance(node, ListConfig):
            for index in range(len(node)):
                walk(node._get_node(index), f"{prefix}.{index}")

    if "model" in cfg:
        walk(cfg._get_node("model"), "model")
    return found


def _check_norms(cfg: DictConfig) -> None:
    accepted = registered_norms()
    for key, value in norm_keys(cfg):
        if not isinstance(value, str):
            continue  # a callable, None, or a LazyCall node such as L(slot_norm)(norm=...)
        parent = OmegaConf.select(cfg, key.rsplit(".", 1)[0])
        target = _target_name(parent.get("_target_", "")) if isinstance(parent, DictConfig) else ""
        if value not in accepted:
            suggestion = closest(value, [n for n in accepted if n])
            hint = f"; did you mean {suggestion!r}?" if suggestion else "."
            names = ", ".join(repr(n) for n in accepted)
            raise InputError(
                f"{key} is {value!r}, which is not a registered norm{hint} Registered norms: "
                f"{names} (frn_det.layers.register_norm adds one)"
            )
        if value not in DETECTRON2_NORMS and not target.startswith("frn_det."):
            raise InputError(
                f"{key} is {value!r}, but its component {target} is detectron2's, which "
                f"builds only detectron2's norms ({', '.join(repr(n) for n in DETECTRON2_NORMS)}); "
                f"give it L(frn_det.engine.lazy.slot_norm)(norm={value!r}) where no activation "
                "follows the norm (FPN), or use frn-det's component "
                "(frn_det.engine.lazy.frn_det_components)"
            )


def _check_crop_dependencies(cfg: DictConfig) -> None:
    # detectron2 crops polygon masks with shapely, imported only when the first crop runs.
    mapper = OmegaConf.select(cfg, "dataloader.train.mapper", default=None)
    if mapper is None or not mapper.get("use_instance_mask", False):
        return
    crops = [
        _target_name(aug.get("_target_", ""))
        for aug in mapper.get("augmentations", [])
        if isinstance(aug, DictConfig) and "Crop" in _target_name(aug.get("_target_", ""))
    ]
    if not crops or importlib.util.find_spec("shapely") is not None:
        return
    raise InputError(
        f"dataloader.train.mapper.augmentations crop ({', '.join(crops)}) the polygon masks "
        "of use_instance_mask, which needs the shapely package, not installed here "
        "(pip install shapely)"
    )


def _dataset_names(node: Any) -> tuple[str, ...]:
    names = OmegaConf.select(node, "dataset.names", default=None) if node is not None else None
    if names is None:
        return ()
    return (names,) if isinstance(names, str) else tuple(names)


def _yacs_view(cfg: DictConfig) -> CfgNode:
    """The yacs keys frn-det's schedule, batch, dataset and training-loop code reads, taken
    from a lazy config, so that code serves lazy configs unchanged."""
    train, loader = cfg.train, cfg.dataloader.train
    scheduler = OmegaConf.select(cfg, "lr_multiplier.scheduler", default=None)
    milestones = scheduler.get("milestones", None) if scheduler is not None else None
    batch = loader.total_batch_size
    view = CfgNode()
    view.MODEL = CfgNode({"DEVICE": resolve_device(train.get("device", "cuda"))})
    view.SOLVER = CfgNode(
        {
            "IMS_PER_GPU": train.ims_per_gpu,
            "REFERENCE_WORLD_BATCH": train.reference_world_batch or batch,
            "IMS_PER_BATCH": batch,
            "BASE_LR": float(cfg.optimizer.lr),
            "BASE_LR_END": 0.0,
            "MAX_ITER": train.max_iter,
            "STEPS": tuple(milestones or ()),
            # Warm-up is a fraction of training in lr_multiplier: it rescales by itself.
            "WARMUP_ITERS": 0,
            "CHECKPOINT_PERIOD": train.checkpointer.period,
            "AMP": CfgNode({"ENABLED": bool(train.amp.enabled), "PRECISION": train.amp.precision}),
        }
    )
    view.TEST = CfgNode({"EVAL_PERIOD": train.eval_period})
    view.DATASETS = CfgNode(
        {
            "TRAIN": _dataset_names(loader),
            "TEST": _dataset_names(cfg.dataloader.get("test")),
        }
    )
    return view


def apply_lazy_ims_per_gpu(cfg: DictConfig, world_size: int) -> DictConfig:
    """Rescale ``cfg`` in place for ``train.ims_per_gpu`` images on each of ``world_size``
    processes, as ``frn_det.engine.batch.apply_ims_per_gpu`` does for yacs configs (the
    same rounding and checks): total batch B = ims_per_gpu x world_size, ``optimizer.lr``
    x B/R, ``train.max_iter``, ``lr_multiplier.scheduler.milestones`` and ``num_updates``,
    ``train.checkpointer.period`` and ``train.eval_period`` x R/B, where R is
    ``train.reference_world_batch`` (0: the written total batch), which becomes B. The
    warm-up (a fraction of training in ``WarmupParamScheduler``) follows. A no-op when
    ``ims_per_gpu`` is 0. Returns ``cfg``.

    Raises:
        InputError: for values ``apply_ims_per_gpu`` rejects.
    """
    view = _yacs_view(cfg)
    try:
        scaled = apply_ims_per_gpu(view, world_size)
    except ValueError as error:
        raise InputError(str(error).replace("SOLVER.STEPS", "lr_multiplier milestones")) from error
    if scaled is view:
        return cfg
    solver = scaled.SOLVER
    old_max_iter = cfg.train.max_iter
    cfg.dataloader.train.total_batch_size = solver.IMS_PER_BATCH
    cfg.optimizer.lr = solver.BASE_LR
    cfg.train.max_iter = solver.MAX_ITER
    cfg.train.checkpointer.period = solver.CHECKPOINT_PERIOD
    cfg.train.eval_period = scaled.TEST.EVAL_PERIOD
    cfg.train.reference_world_batch = solver.REFERENCE_WORLD_BATCH
    scheduler = OmegaConf.select(cfg, "lr_multiplier.scheduler", default=None)
    if scheduler is not None and "milestones" in scheduler:
        scheduler.milestones = list(solver.STEPS)
    if scheduler is not None and scheduler.get("num_updates", None) == old_max_iter:
        scheduler.num_updates = solver.MAX_ITER
    return cfg


def check_lazy_config(cfg: DictConfig, world_size: int, train: bool = True) -> None:
    """Raise ``InputError`` for what would fail later: a norm key naming no registered norm
    (or a name a stock component cannot build); with ``train``, a total batch the
    ``world_size`` processes cannot share and a crop of polygon masks without shapely; and
    unreadable datasets (``validation.check_datasets``; the training ones with ``train``)."""
    _check_norms(cfg)
    view = _yacs_view(cfg)
    if train:
        _check_crop_dependencies(cfg)
        try:
            check_batch(view, world_size)
        except InputError as error:
            raise InputError(
                str(error)
                .replace("SOLVER.IMS_PER_BATCH", "dataloader.train.total_batch_size")
                .replace("SOLVER.IMS_PER_GPU", "train.ims_per_gpu")
            ) from None
    check_datasets(view, train=train)


def prepare_lazy_config(cfg: DictConfig, world_size: int, train: bool = True) -> DictConfig:
    """The config a run uses: ``train.device`` resolved ("cpu" without CUDA), the schedule
    rescaled (``apply_lazy_ims_per_gpu``), then ``check_lazy_config``. In place."""
    cfg.train.device = resolve_device(cfg.train.get("device", "cuda"))
    apply_lazy_ims_per_gpu(cfg, world_size)
    check_lazy_config(cfg, world_size, train=train)
    return cfg


# ---------------------------------------------------------------------------------------
# Training


def build_lazy_model(cfg: DictConfig) -> nn.Module:
    """``instantiate(cfg.model)`` on ``cfg.train.device``, with the FRN kernel of
    ``train.frn_impl`` and, on the CPU, torch's SyncBatchNorm replaced by detectron2's
    naive one (it synchronises over gloo; ``use_naive_sync_batchnorm``).

    This is where a model-wide option of a lazy config is applied to the built model:
    every entry point (training, evaluation) builds its model here.
    """
    set_frn_impl(cfg.train.frn_impl)
    model = instantiate(cfg.model)
    device = cfg.train.device
    if torch.device(device).type == "cpu":
        use_naive_sync_batchnorm(model)
    return model.to(device)


def do_test(cfg: DictConfig, model: nn.Module) -> dict[str, Any]:
    """Evaluate ``model`` on ``cfg.dataloader.test`` with ``cfg.dataloader.evaluator``,
    deterministically (``deterministic_inference``); {} when the config has no test."""
    if "evaluator" not in cfg.dataloader or "test" not in cfg.dataloader:
        return {}
    with deterministic_inference():
        results = inference_on_dataset(
            model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
        )
    if comm.is_main_process() and results:
        print_csv_format(results)
    return results


def _keys_to_change(cfg: DictConfig) -> str:
    # What a diverged lazy run should change, in the lazy config's own keys.
    warmup = OmegaConf.select(cfg, "lr_multiplier.warmup_length", default=None)
    warmup_text = f" (now {warmup:g} of training)" if warmup is not None else ""
    return (
        f"Lower optimizer.lr (now {cfg.optimizer.lr:g}) or lengthen "
        f"lr_multiplier.warmup_length{warmup_text} and train again"
    )


def do_train(cfg: DictConfig, resume: bool = False) -> dict[str, Any] | None:
    """Train ``cfg`` (prepared by ``prepare_lazy_config``) in this process; returns the last
    evaluation's results.

    As detectron2's ``tools/lazyconfig_train_net.py``, with: ``SafeCheckpointer`` (atomic
    checkpoints; ``resume`` continues from the newest complete one), metrics.json repaired
    and superseded lines set aside on resume, DistributedDataParallel on CPUs too, CPU
    bfloat16 autocast for ``train.amp.enabled``, and ``NonFiniteLossError`` at the first
    NaN/Inf loss, before the optimizer step.
    """
    model = build_lazy_model(cfg)
    # detectron2's convention (optimizer.params.model names the model), without leaving the
    # model in the config, which would then be saved with it.
    cfg.optimizer.params.model = model
    try:
        optimizer = instantiate(cfg.optimizer)
    finally:
        del cfg.optimizer.params["model"]
    data_loader = instantiate(cfg.dataloader.train)

    ddp = dict(cfg.train.get("ddp", {}))
    if cfg.train.device == "cpu" and ddp.pop("fp16_compression", False):
        logger.info("train.ddp.fp16_compression is for NCCL gradients; not used on the CPU.")
    model = create_ddp_model(model, **ddp)
    # frn-det's loops (fp32, CUDA AMP, CPU bfloat16) read only these yacs keys.
    loop = Trainer._build_loop(_yacs_view(cfg), model, data_loader, optimizer)
    output_dir = cfg.train.output_dir
    checkpointer = SafeCheckpointer(
        model, output_dir, divergence_advice=_keys_to_change(cfg), trainer=loop
    )
    metrics = os.path.join(output_dir, METRICS_FILE)
    if comm.is_main_process():
        repair_torn_metrics_line(metrics)
    last_results: dict[str, Any] = {}

    def evaluate() -> dict[str, Any]:
        last_results.clear()
        last_results.update(do_test(cfg, model))
        return last_results

    loop.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, evaluate),
            hooks.PeriodicWriter(
                default_writers(output_dir, cfg.train.max_iter), period=cfg.train.log_period
            )
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = loop.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    if start_iter > 0 and comm.is_main_process():
        set_aside_metrics_from(metrics, start_iter)

    try:
        loop.train(start_iter, cfg.train.max_iter)
    except NonFiniteLossError as error:
        raise NonFiniteLossError(
            error.iteration, error.losses, divergence_hint(checkpointer, _keys_to_change(cfg))
        ) from None
    except FloatingPointError as error:
        raise NonFiniteLossError(
            loop.iter,
            {},
            divergence_hint(checkpointer, _keys_to_change(cfg)),
            reason=str(error).strip(),
        ) from error
    return last_results or None


# ---------------------------------------------------------------------------------------
# Command line


def lazy_train_net_argument_parser() -> argparse.ArgumentParser:
    """detectron2's ``default_argument_parser`` (overrides as ``key=value``) plus
    ``--ims-per-gpu N``."""
    parser = default_argument_parser()
    parser.add_argument(
        "--ims-per-gpu",
        type=ims_per_gpu_arg,
        default=None,
        metavar="N",
        help="images per GPU (process); sets train.ims_per_gpu, which makes the total batch "
        "N x num-gpus x num-machines and rescales optimizer.lr, train.max_iter, the LR "
        "milestones and the checkpoint/eval periods from train.reference_world_batch",
    )
    return parser


def build_config(args: argparse.Namespace) -> DictConfig:
    """The prepared config of a run: ``--config-file``, the overrides, ``--ims-per-gpu``,
    the device, the rescaled schedule; checked (``InputError`` for bad input)."""
    cfg = load_lazy_config(args.config_file, args.opts or [])
    if args.ims_per_gpu is not None:
        cfg.train.ims_per_gpu = args.ims_per_gpu
    return prepare_lazy_config(cfg, world_size_of(args), train=not args.eval_only)


def lazy_train_net_main(args: argparse.Namespace) -> dict[str, Any] | None:
    """Train (evaluating at the end), or with ``--eval-only`` evaluate
    ``train.init_checkpoint``. Runs in every process; returns the evaluation results."""
    cfg = build_config(args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="frn_det")
    default_setup(cfg, args)
    if args.eval_only:
        model = build_lazy_model(cfg)
        SafeCheckpointer(model, cfg.train.output_dir).load(cfg.train.init_checkpoint)
        results = do_test(cfg, model)
    else:
        with stops_in_one_line():
            results = do_train(cfg, resume=args.resume)
    log_results(results)
    return results


def _main_explaining_failures(args: argparse.Namespace) -> None:
    # As train_net's: explained failures end the process with their message and status
    # instead of a traceback per process.
    run_explaining_failures(lazy_train_net_main, args)


def run(argv: Sequence[str] | None = None) -> None:
    """``tools/lazy_train_net.py``: parse ``argv``, check the input in this process, then run
    ``lazy_train_net_main`` in every training process (gloo on CPUs, NCCL on GPUs). Bad
    input exits with status 2, a run stopped by a non-finite loss with status 1, each with
    a one-paragraph message."""
    args = lazy_train_net_argument_parser().parse_args(None if argv is None else list(argv))
    with exit_on_bad_input():
        cfg = build_config(args)
        launch_exiting_as_explained(
            _main_explaining_failures, args, distributed_backend(cfg.train.device)
        )
