"""frn-det's trainer: detectron2's DefaultTrainer with FRN-aware optimizer, COCO evaluation,
per-GPU batch scaling, CPU (gloo) multi-process training and deterministic evaluation."""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.evaluation import DatasetEvaluator
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from tabulate import tabulate
from torch import nn

from frn_det.evaluation import FRNCOCOEvaluator
from frn_det.layers import set_frn_impl
from frn_det.solver import build_optimizer

from .batch import apply_ims_per_gpu
from .launch import create_ddp_model, resolve_device

__all__ = [
    "Trainer",
    "deterministic_inference",
    "log_results",
    "prepare_config",
    "results_table",
    "use_naive_sync_batchnorm",
]

logger = logging.getLogger(__name__)

EVALUATOR_TYPES = ("coco",)


def prepare_config(cfg: CfgNode, world_size: int) -> CfgNode:
    """The config a run actually uses; ``cfg`` is not modified. Idempotent.

    - the schedule rescaled for SOLVER.IMS_PER_GPU images on each of ``world_size``
      processes (``apply_ims_per_gpu``);
    - MODEL.DEVICE "cpu" when it asks for CUDA on a machine without it; AMP is then turned
      off, since detectron2's AMPTrainer needs CUDA.
    """
    cfg = apply_ims_per_gpu(cfg, world_size)
    device = resolve_device(cfg.MODEL.DEVICE)
    amp_off = device == "cpu" and cfg.SOLVER.AMP.ENABLED
    if device == cfg.MODEL.DEVICE and not amp_off:
        return cfg
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.DEVICE = device
    if amp_off:
        logger.warning("SOLVER.AMP.ENABLED needs CUDA; training in fp32 on the CPU instead.")
        cfg.SOLVER.AMP.ENABLED = False
    if frozen:
        cfg.freeze()
    return cfg


@contextlib.contextmanager
def deterministic_inference() -> Iterator[None]:
    """Within the block, cuDNN picks deterministic kernels and does not benchmark.

    With ``cudnn.benchmark`` (CUDNN_BENCHMARK during training) the convolution algorithm is
    chosen by timing, so the evaluation at the end of training and a later ``--eval-only``
    of the checkpoint it wrote could differ in the last bits and hence in AP. On the CPU
    inference is deterministic already for a given number of threads per process (oneDNN's
    reductions depend on it: ``--num-gpus 2`` runs each process on half the cores).
    """
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


def use_naive_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``torch.nn.SyncBatchNorm`` in CPU ``module`` by detectron2's
    ``NaiveSyncBatchNorm`` with the same state, in place; returns ``module``.

    torch's SyncBatchNorm raises on CPU tensors as soon as more than one process trains.
    frn-det's norm registry already builds the naive one for "SyncBN" on CPU machines, but
    stock detectron2 components call ``detectron2.layers.get_norm`` directly, and on a GPU
    machine told MODEL.DEVICE "cpu" the registry picks torch's. Parameter and buffer names
    are the same, so checkpoints load either way.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            naive = NaiveSyncBatchNorm(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            naive.load_state_dict(child.state_dict())
            naive.train(child.training)
            for param, source in zip(naive.parameters(), child.parameters(), strict=True):
                param.requires_grad_(source.requires_grad)
            setattr(module, name, naive)
        else:
            use_naive_sync_batchnorm(child)
    return module


def _per_dataset(results: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    # DefaultTrainer.test drops the dataset level when there is a single test dataset.
    tasks = ("bbox", "segm", "keypoints", "sem_seg", "panoptic_seg")
    if any(key in tasks for key in results):
        return {"": results}
    return results


def results_table(results: Mapping[str, Any]) -> str:
    """A short table of COCO box and mask AP per test dataset ("-" where not evaluated).

    Args:
        results: what ``Trainer.test`` returns: ``{dataset: {task: {metric: value}}}`` or,
            for a single dataset, ``{task: {metric: value}}``.
    """
    rows = []
    for dataset, tasks in _per_dataset(results).items():
        row = [dataset or "test"]
        for task in ("bbox", "segm"):
            for metric in ("AP", "AP50"):
                value = tasks.get(task, {}).get(metric)
                row.append("-" if value is None else f"{value:.2f}")
        rows.append(row)
    headers = ["dataset", "box AP", "box AP50", "mask AP", "mask AP50"]
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` for frn-det experiments.

    Over detectron2's: the config is prepared by ``prepare_config`` (per-GPU batch scaling,
    CPU fallback); MODEL.FRN.IMPL selects the FRN kernel before the model is built; the
    optimizer gives FRN parameters SOLVER.WEIGHT_DECAY_NORM (``frn_det.solver``); the
    model is wrapped in DistributedDataParallel on CPUs (gloo) as well as GPUs; COCO
    evaluation is built in and deterministic; ``train()`` returns the last evaluation.
    """

    def __init__(self, cfg: CfgNode) -> None:
        """Build model, optimizer, data loader, scheduler, checkpointer and hooks from ``cfg``.

        DefaultTrainer's constructor is not reused because it wraps the model with
        ``device_ids=[local_rank]``, which DistributedDataParallel refuses for CPU models.
        """
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = prepare_config(cfg, comm.get_world_size())
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        loop = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = loop(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def train(self) -> dict[str, Any] | None:
        """Train; returns the results of the last evaluation (None if none ran).

        On processes other than the main one the evaluators return ``{}``.
        """
        super().train()
        return getattr(self, "_last_eval_results", None)

    @classmethod
    def build_model(cls, cfg: CfgNode) -> nn.Module:
        """detectron2's ``build_model``, after selecting the FRN kernel from MODEL.FRN.IMPL.

        On the CPU, torch's SyncBatchNorm becomes ``NaiveSyncBatchNorm`` (see
        ``use_naive_sync_batchnorm``), which synchronises over gloo.
        """
        # The config, not the FRN_DET_IMPL environment variable, decides: config.yaml in the
        # output folder then records the kernel a run trained with.
        set_frn_impl(cfg.MODEL.FRN.IMPL)
        logger.info("FRN kernel: %s (MODEL.FRN.IMPL)", cfg.MODEL.FRN.IMPL)
        model = super().build_model(cfg)
        if torch.device(cfg.MODEL.DEVICE).type == "cpu":
            use_naive_sync_batchnorm(model)
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        """SGD with FRN parameters counted as norm parameters (``frn_det.solver``)."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None
    ) -> DatasetEvaluator:
        """The evaluator for ``dataset_name``'s ``evaluator_type`` metadata ("coco").

        For "coco": ``frn_det.evaluation.FRNCOCOEvaluator`` (detectron2's COCOEvaluator with
        the COCOeval implementation chosen by TEST.COCOEVAL_BACKEND). It covers boxes, plus
        masks when MODEL.MASK_ON and keypoints when MODEL.KEYPOINT_ON, even where a weak model
        predicts none (then AP is NaN), so a results table always has the same columns.
        """
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
        if evaluator_type == "coco":
            tasks = ["bbox"]
            if cfg.MODEL.MASK_ON:
                tasks.append("segm")
            if cfg.MODEL.KEYPOINT_ON:
                tasks.append("keypoints")
            return FRNCOCOEvaluator(
                dataset_name,
                tasks=tuple(tasks),
                output_dir=output_folder,
                kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS,
                backend=cfg.TEST.COCOEVAL_BACKEND,
            )
        raise NotImplementedError(
            f"no evaluator for dataset {dataset_name!r} with evaluator_type "
            f"{evaluator_type!r}; frn-det evaluates {EVALUATOR_TYPES} "
            "(register the dataset with detectron2.data.datasets.register_coco_instances)"
        )

    @classmethod
    def test(
        cls,
        cfg: CfgNode,
        model: nn.Module,
        evaluators: list[DatasetEvaluator] | DatasetEvaluator | None = None,
    ) -> dict[str, Any]:
        """``DefaultTrainer.test`` under ``deterministic_inference``.

        The evaluation at the end of training and ``--eval-only`` of the checkpoint it wrote
        then report the same AP.
        """
        with deterministic_inference():
            return super().test(cfg, model, evaluators)


def log_results(results: Mapping[str, Any] | None) -> None:
    """Log ``results_table(results)`` on the main process (nothing for empty results)."""
    if comm.is_main_process() and results:
        logging.getLogger("detectron2").info("Results:\n%s", results_table(results))
