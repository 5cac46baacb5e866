"""frn-det's trainer: detectron2's DefaultTrainer with FRN-aware optimizer, COCO evaluation,
per-GPU batch scaling, CPU (gloo) multi-process training, deterministic evaluation, and
training that survives being killed (atomic checkpoints, ``--resume`` that repairs
metrics.json) and stops with a clear message when the loss diverges."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.data import (
    MetadataCatalog,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.detection_utils import check_metadata_consistency
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.events import (
    CommonMetricPrinter,
    EventWriter,
    JSONWriter,
    TensorboardXWriter,
)
from detectron2.utils.logger import setup_logger
from tabulate import tabulate
from torch import nn

from frn_det.checkpoint import SafeCheckpointer
from frn_det.evaluation import BackendCOCOEvaluator
from frn_det.file_io import fsync_file
from frn_det.layers import set_frn_impl
from frn_det.solver import build_optimizer

from .hooks import FRNStatsHook
from .launch import create_ddp_model, resolve_device
from .run_config import prepare_config
from .validation import AMP_PRECISIONS

__all__ = [
    "DIVERGED_LINE",
    "NonFiniteLossError",
    "StrictJSONWriter",
    "Trainer",
    "amp_precision",
    "deterministic_inference",
    "divergence_hint",
    "drop_boxes_without_area",
    "strict_json_value",
    "log_results",
    "results_table",
    "use_naive_sync_batchnorm",
]

logger = logging.getLogger(__name__)

EVALUATOR_TYPES = ("coco",)

YACS_DIVERGENCE_ADVICE = "Lower SOLVER.BASE_LR or lengthen SOLVER.WARMUP_ITERS and train again"
"""How the checkpointer of a diverged YAML-config run says what to change."""

METRICS_FILE = "metrics.json"
SUPERSEDED_METRICS_FILE = "metrics.superseded.json"
"""Where ``--resume`` moves the metrics.json lines of iterations it trains again."""


def amp_precision(cfg: CfgNode) -> torch.dtype:
    """The autocast dtype of SOLVER.AMP training: SOLVER.AMP.PRECISION, where "auto" is
    float16 on CUDA (detectron2's choice, with gradient scaling) and bfloat16 on the CPU
    (CPU autocast's fast type; its fp32 exponent range needs no gradient scaling)."""
    precision = cfg.SOLVER.AMP.PRECISION
    if precision not in AMP_PRECISIONS:
        raise ValueError(
            f"SOLVER.AMP.PRECISION is {precision!r}; accepted values are "
            f"{', '.join(repr(p) for p in AMP_PRECISIONS)}"
        )
    on_cpu = resolve_device(cfg.MODEL.DEVICE) == "cpu"
    if precision == "auto":
        return torch.bfloat16 if on_cpu else torch.float16
    if on_cpu and precision == "float16":
        raise ValueError(
            "SOLVER.AMP.PRECISION is 'float16' but MODEL.DEVICE is the CPU; frn-det's CPU "
            "mixed precision is 'bfloat16' (or 'auto')"
        )
    return getattr(torch, precision)


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


class NonFiniteLossError(FloatingPointError):
    """Training diverged: a loss term, or a value detectron2 checks in the forward pass
    (proposal boxes and scores), became NaN or Inf. Training stops before the optimizer
    step.

    Attributes:
        iteration: the iteration that hit the non-finite value.
        losses: the loss terms (this process's, not averaged over processes): those of
            ``iteration`` for a non-finite loss; those last logged before it when the
            forward pass itself failed (``reason``), which show how the losses grew.
        reason: what detectron2 reported when the forward pass failed; empty otherwise.
    """

    def __init__(
        self, iteration: int, losses: Mapping[str, float], hint: str = "", reason: str = ""
    ) -> None:
        self.iteration = iteration
        self.losses = dict(losses)
        self.reason = reason
        terms = ", ".join(f"{name}={value:.4g}" for name, value in self.losses.items())
        terms = f"{terms} (total {sum(self.losses.values()):.4g})" if terms else "none logged"
        if reason:
            message = (
                f"non-finite values at iteration {iteration} ({reason}); loss terms last "
                f"logged before it: {terms}"
            )
        else:
            message = f"non-finite loss at iteration {iteration}: {terms}"
        super().__init__(f"{message}. {hint}" if hint else message)


DIVERGED_LINE = re.compile(r"non-finite (?:loss|values) at iteration (?P<iteration>\d+)")
"""What a ``NonFiniteLossError``'s message says; a run's log holding it diverged at that
iteration (the sweep reads train_net.log with it)."""


def divergence_hint(checkpointer: SafeCheckpointer, change: str) -> str:
    """The end of a ``NonFiniteLossError``'s message: that no checkpoint holds non-finite
    weights (naming the newest one), then ``change``, the sentence naming the keys of the
    run's config system to change (SOLVER.BASE_LR for yacs, optimizer.lr for lazy configs)."""
    kept = "no checkpoint holds non-finite weights"
    if comm.is_main_process() and checkpointer.has_checkpoint():
        kept += f"; the newest is {checkpointer.get_checkpoint_file()}"
    return f"Training stopped before the optimizer step, so {kept}. {change}"


class _StopAtNonFiniteLoss:
    """Mixin for detectron2's training loops: check the losses of every iteration on every
    process, before the optimizer step.

    detectron2 checks only every ``gather_metric_period`` iterations, on the main process,
    the losses averaged over processes; the others would go on into the next collective.
    Raising before ``optimizer.step`` also keeps the weights of the last finite step.
    """

    def _write_metrics(
        self,
        loss_dict: Mapping[str, torch.Tensor],
        data_time: float,
        prefix: str = "",
        iter: int | None = None,  # detectron2's keyword name
    ) -> None:
        values = {name: float(loss.detach()) for name, loss in loss_dict.items()}
        if not all(math.isfinite(value) for value in values.values()):
            raise NonFiniteLossError(self.iter if iter is None else iter, values)
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)


class _SimpleLoop(_StopAtNonFiniteLoss, SimpleTrainer):
    """detectron2's SimpleTrainer, stopping at a non-finite loss."""


class _AMPLoop(_StopAtNonFiniteLoss, AMPTrainer):
    """detectron2's AMPTrainer (CUDA), stopping at a non-finite loss."""


class _CPUAMPLoop(_StopAtNonFiniteLoss, SimpleTrainer):
    """Mixed-precision training on the CPU: the forward pass under bfloat16 autocast.

    detectron2's AMPTrainer asserts CUDA. bfloat16 has fp32's exponent range, so unlike
    float16 it needs no gradient scaler; backward and the optimizer step run outside the
    autocast region, as torch recommends.
    """

    def __init__(self, model: nn.Module, data_loader: Any, optimizer: Any, precision: Any):
        super().__init__(model, data_loader, optimizer)
        self.precision = precision

    def run_step(self) -> None:
        if not self.model.training:
            raise RuntimeError("the CPU mixed-precision loop needs the model in training mode")
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast("cpu", dtype=self.precision):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        losses = sum(loss.float() for loss in loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


_NON_FINITE_NAMES = {math.inf: "Infinity", -math.inf: "-Infinity"}


def strict_json_value(value: Any) -> Any:
    """``value`` (nested dicts and lists) with every non-finite float replaced by the string
    Python's json module would have written bare: "NaN", "Infinity" or "-Infinity".

    Bare NaN is not JSON (strict parsers, jq and browsers refuse the whole line), while
    ``float(v)`` of the string gives the number back. COCO AP is NaN where a model
    predicts nothing.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else _NON_FINITE_NAMES[value]
    if isinstance(value, dict):
        return {key: strict_json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json_value(item) for item in value]
    return value


class _StrictJSONLines:
    """A text file of JSON lines, each line rewritten as strict JSON as it is written."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, text: str) -> int:
        lines = [
            json.dumps(strict_json_value(json.loads(line)), sort_keys=True, allow_nan=False)
            for line in text.splitlines()
        ]
        return self._handle.write("".join(f"{line}\n" for line in lines))

    def __getattr__(self, name: str) -> Any:  # flush, fileno, close
        return getattr(self._handle, name)


class StrictJSONWriter(JSONWriter):
    """detectron2's JSONWriter (metrics.json, one JSON object per line) writing only valid
    JSON: NaN and infinities become strings (``strict_json_value``). Files written before
    this, with bare NaN, still read with Python's ``json.loads``."""

    def __init__(self, json_file: str, window_size: int = 20) -> None:
        super().__init__(json_file, window_size)
        self._file_handle = _StrictJSONLines(self._file_handle)


def _has_area(annotation: Mapping[str, Any]) -> bool:
    if "bbox" not in annotation or "bbox_mode" not in annotation:
        return True
    x0, y0, x1, y1 = BoxMode.convert(
        list(annotation["bbox"]), annotation["bbox_mode"], BoxMode.XYXY_ABS
    )
    return x1 > x0 and y1 > y0


def drop_boxes_without_area(dataset_name: str, dicts: list[dict]) -> list[dict]:
    """``dicts`` (detectron2 dataset dicts) without the annotations whose box has zero
    width or height, logging per dataset how many there were and one example.

    detectron2 drops such boxes, and their masks, when it maps each image, without a word;
    a dataset that is mostly degenerate (a converter writing x1, y1 where w, h belong)
    would otherwise train on little and say nothing. The input is not modified.
    """
    dropped, total, example = 0, 0, None
    kept_dicts = []
    for record in dicts:
        annotations = record.get("annotations")
        if not annotations:
            kept_dicts.append(record)
            continue
        kept = [a for a in annotations if _has_area(a)]
        total += len(annotations)
        if len(kept) == len(annotations):
            kept_dicts.append(record)
            continue
        dropped += len(annotations) - len(kept)
        if example is None:
            bad = next(a for a in annotations if not _has_area(a))
            example = f"{record.get('file_name')}: bbox {list(bad['bbox'])}"
        kept_dicts.append({**record, "annotations": kept})
    if dropped:
        logger.warning(
            "Dataset %r: dropped %d of its %d annotations, whose box has zero width or height "
            "(e.g. %s).",
            dataset_name,
            dropped,
            total,
            example,
        )
    return kept_dicts


def repair_torn_metrics_line(path: str) -> None:
    """Make the JSON-lines file ``path`` end with a complete line, in place.

    detectron2's JSONWriter appends one line per write; a process killed during a write
    leaves part of a line, and the next run's first line would be glued to it. A last line
    that is valid JSON only lacks its newline and gets one; otherwise it is cut off and
    logged. Complete lines are never touched. Nothing happens if ``path`` does not exist.
    """
    if not os.path.isfile(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        try:
            json.loads(data[start:])
        except ValueError:
            logger.warning(
                "%s ends with an incomplete line (a run was killed while writing it); "
                "removed it: %r",
                path,
                data[start:][:200],
            )
            f.truncate(start)
        else:
            f.write(b"\n")
        fsync_file(f)


def _iteration(line: bytes) -> int:
    try:
        iteration = json.loads(line).get("iteration", -1)
    except (ValueError, AttributeError):
        return -1
    return iteration if isinstance(iteration, int) else -1


def set_aside_metrics_from(path: str, start_iter: int) -> int:
    """Move the lines of ``path`` (detectron2's metrics.json) from the first one whose
    ``iteration`` is >= ``start_iter`` to the end into metrics.superseded.json in the same
    folder; returns how many lines were moved.

    A resumed run trains the iterations after its checkpoint again, so metrics.json keeps
    one increasing series of iterations: those of the run that leads to the final model.
    The superseded lines, written by the killed run, are kept beside it. The lines are
    appended to the side file and fsynced before metrics.json is truncated, so a kill in
    between leaves them in both files rather than in neither.
    """
    if not os.path.isfile(path):
        return 0
    with open(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if _iteration(line) >= start_iter), None)
    if first is None:
        return 0
    offset = sum(len(line) for line in lines[:first])
    moved = lines[first:]
    side = os.path.join(os.path.dirname(path), SUPERSEDED_METRICS_FILE)
    with open(side, "ab") as f:
        f.writelines(moved)
        fsync_file(f)
    # Truncate in place: detectron2's JSONWriter already holds metrics.json open for
    # appending; replacing the file would send its lines to the unlinked old one.
    with open(path, "rb+") as f:
        f.truncate(offset)
        fsync_file(f)
    logger.info(
        "Resuming at iteration %d: moved %d lines of %s for iterations >= %d to %s.",
        start_iter,
        len(moved),
        path,
        start_iter,
        side,
    )
    return len(moved)


class SyncedPreciseBN(hooks.PreciseBN):
    """detectron2's PreciseBN hook, then each BN statistic averaged over the processes.

    fvcore's ``update_bn_stats`` weighs each batch by the process's own batch size (for a
    RoI head, its own RoI count), so with several processes each ends with statistics of
    its own, SyncBN included, and evaluates its shard of the test set with them. Averaging
    gives every process (and the checkpoint rank 0 writes) the same statistics.
    """

    def update_stats(self) -> None:
        super().update_stats()
        world_size = comm.get_world_size()
        if self._disabled or world_size == 1:
            return
        for bn in hooks.get_bn_modules(self._model):
            for stat in (bn.running_mean, bn.running_var):
                torch.distributed.all_reduce(stat)
                stat /= world_size


RUNNING_STATS_PREFIX = "running_stats/"


class RunningStatsEvaluation(hooks.HookBase):
    """After the last iteration, evaluate the model with its running BN statistics and put
    the results in the event storage as ``running_stats/<task>/<metric>`` (metrics.json,
    hence the sweep's results), before the precise-BN hook after it replaces them.

    TEST.PRECISE_BN.EVAL_RUNNING turns it on, so that a BN run reports both: what the
    statistics training kept say, and what recomputed ones say.
    """

    def __init__(self, evaluate: Any) -> None:
        self._evaluate = evaluate
        self._scalars: dict[str, float] = {}

    def after_train(self) -> None:
        # Stored with the final evaluation's record (detectron2 runs it in after_train, at
        # iteration max_iter), so metrics.json has both in one line.
        if self._scalars:
            self.trainer.storage.put_scalars(**self._scalars, smoothing_hint=False)

    def after_step(self) -> None:
        if self.trainer.iter + 1 != self.trainer.max_iter:
            return
        results = self._evaluate()
        comm.synchronize()
        if not results:
            return
        flat = flatten_results_dict(results)
        scalars = {}
        for key, value in flat.items():
            try:
                scalars[RUNNING_STATS_PREFIX + key] = float(value)
            except (TypeError, ValueError):
                continue
        self._scalars = scalars
        logger.info(
            "Evaluated with the running BN statistics (before precise BN): %s",
            {k: round(v, 3) for k, v in scalars.items() if k.endswith("/AP")},
        )


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` for frn-det experiments.

    Over detectron2's: it takes the prepared config of a run (``build_config``; a raw
    config is prepared by the same ``run_config.prepare_config``: per-GPU batch scaling,
    CPU fallback); MODEL.FRN.IMPL selects the FRN kernel before the model is built; the
    optimizer gives FRN parameters SOLVER.WEIGHT_DECAY_NORM (``frn_det.solver``); the
    model is wrapped in DistributedDataParallel on CPUs (gloo) as well as GPUs; COCO
    evaluation is built in and deterministic; ``train()`` returns the last evaluation.

    Crash safety: checkpoints are written by ``frn_det.checkpoint.SafeCheckpointer``
    (atomic files, ``last_checkpoint`` updated last, weights-only loading, strict shapes on
    ``--resume``). A run killed at any moment resumes with ``resume_or_load(resume=True)``
    from the newest complete checkpoint; metrics.json loses at most a torn last line, and
    lines of iterations the resumed run trains again move to metrics.superseded.json. A NaN
    or Inf loss raises ``NonFiniteLossError`` before the optimizer step, so no checkpoint
    (model_final.pth included) is written from the diverged model.
    """

    def __init__(self, cfg: CfgNode) -> None:
        """Build model, optimizer, data loader, scheduler, checkpointer and hooks from ``cfg``,
        the config ``frn_det.engine.build_config`` made (which ``prepare_config`` returns as
        it is) or a raw one (which it prepares, as train_net would).

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
        self._trainer = self._build_loop(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SafeCheckpointer(
            model,
            cfg.OUTPUT_DIR,
            divergence_advice=YACS_DIVERGENCE_ADVICE,
            trainer=weakref.proxy(self),
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @staticmethod
    def _build_loop(cfg: CfgNode, model: nn.Module, data_loader: Any, optimizer: Any) -> Any:
        """fp32, CUDA AMP (detectron2's, with gradient scaling) or CPU bfloat16 autocast;
        logs which."""
        if not cfg.SOLVER.AMP.ENABLED:
            logger.info("Training in float32 (SOLVER.AMP.ENABLED is False).")
            return _SimpleLoop(model, data_loader, optimizer)
        precision = amp_precision(cfg)
        on_cpu = cfg.MODEL.DEVICE == "cpu"
        logger.info(
            "Training with mixed precision: the forward pass under %s autocast on %s%s "
            "(SOLVER.AMP.PRECISION %r).",
            str(precision).removeprefix("torch."),
            "the CPU" if on_cpu else cfg.MODEL.DEVICE,
            "" if on_cpu else ", with gradient scaling",
            cfg.SOLVER.AMP.PRECISION,
        )
        if on_cpu:
            return _CPUAMPLoop(model, data_loader, optimizer, precision)
        return _AMPLoop(model, data_loader, optimizer, precision=precision)

    def train(self) -> dict[str, Any] | None:
        """Train; returns the results of the last evaluation (None if none ran).

        On processes other than the main one the evaluators return ``{}``.
        """
        super().train()
        return getattr(self, "_last_eval_results", None)

    def resume_or_load(self, resume: bool = True) -> None:
        """detectron2's: with ``resume`` and a checkpoint in OUTPUT_DIR, continue from it
        (all state; tensor shapes must match), else load MODEL.WEIGHTS (the model only;
        mismatched shapes are skipped with a warning). See ``SafeCheckpointer``.

        When resuming, the main process moves the metrics.json lines of the iterations that
        will be trained again to metrics.superseded.json (``set_aside_metrics_from``).
        """
        super().resume_or_load(resume=resume)
        if resume and self.start_iter > 0 and comm.is_main_process():
            set_aside_metrics_from(os.path.join(self.cfg.OUTPUT_DIR, METRICS_FILE), self.start_iter)

    def run_step(self) -> None:
        """One iteration; divergence (a NaN or Inf loss, or detectron2's FloatingPointError
        from the forward pass) raises ``NonFiniteLossError`` naming the iteration, the loss
        terms, the last good checkpoint and what to change."""
        try:
            super().run_step()
        except NonFiniteLossError as error:
            raise NonFiniteLossError(
                error.iteration, error.losses, self._divergence_hint()
            ) from None
        except FloatingPointError as error:
            # detectron2's own divergence checks: NaN/Inf proposals in the forward pass
            # (before any loss exists) and, on the main process, averaged losses.
            last = {
                name: value
                for name, (value, _) in self.storage.latest().items()
                if name.startswith("loss")
            }
            raise NonFiniteLossError(
                self.iter, last, self._divergence_hint(), reason=str(error).strip()
            ) from error

    def _divergence_hint(self) -> str:
        solver = self.cfg.SOLVER
        return divergence_hint(
            self.checkpointer,
            f"Lower SOLVER.BASE_LR (now {solver.BASE_LR:g}) or lengthen SOLVER.WARMUP_ITERS "
            f"(now {solver.WARMUP_ITERS}) and train again (--resume would restore the learning "
            "rates stored in the checkpoint)",
        )

    def build_hooks(self) -> list[hooks.HookBase]:
        """DefaultTrainer's hooks, with ``SyncedPreciseBN`` for TEST.PRECISE_BN (only after
        the last iteration with TEST.PRECISE_BN.FINAL_ONLY; preceded by
        ``RunningStatsEvaluation`` with TEST.PRECISE_BN.EVAL_RUNNING) and, before
        the ``PeriodicWriter``, ``FRNStatsHook``: FRN's tau and learned eps statistics
        (``frn/*`` in metrics.json and TensorBoard; nothing for models without FRN)."""
        built = super().build_hooks()
        precise = self.cfg.TEST.PRECISE_BN
        for i, hook in enumerate(built):
            if type(hook) is hooks.PreciseBN and not getattr(hook, "_disabled", False):
                period = 0 if precise.FINAL_ONLY else hook._period
                built[i] = SyncedPreciseBN(period, hook._model, hook._data_loader, hook._num_iter)
                if precise.EVAL_RUNNING:
                    built.insert(i, RunningStatsEvaluation(lambda: self.test(self.cfg, self.model)))
                break
        writer = next((i for i, h in enumerate(built) if isinstance(h, hooks.PeriodicWriter)), None)
        stats = FRNStatsHook(period=20)
        if writer is None:
            built.append(stats)
        else:
            built.insert(writer, stats)
        return built

    def build_writers(self) -> list[EventWriter]:
        """detectron2's writers (console, metrics.json, TensorBoard), metrics.json written
        as strict JSON (``StrictJSONWriter``), after repairing its torn last line
        (``repair_torn_metrics_line``) so that the lines appended next parse."""
        output_dir = self.cfg.OUTPUT_DIR
        metrics = os.path.join(output_dir, METRICS_FILE)
        repair_torn_metrics_line(metrics)
        os.makedirs(output_dir, exist_ok=True)
        return [
            CommonMetricPrinter(self.max_iter),
            StrictJSONWriter(metrics),
            TensorboardXWriter(output_dir),
        ]

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> Any:
        """detectron2's training loader, from dataset dicts loaded one dataset at a time so
        that annotations whose box has no area are dropped and counted per dataset in the
        log (``drop_boxes_without_area``)."""
        names = list(cfg.DATASETS.TRAIN)
        proposal_files = (
            list(cfg.DATASETS.PROPOSAL_FILES_TRAIN) if cfg.MODEL.LOAD_PROPOSALS else None
        )
        dataset: list[dict] = []
        for index, name in enumerate(names):
            dicts = get_detection_dataset_dicts(
                [name],
                filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
                min_keypoints=(
                    cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
                    if cfg.MODEL.KEYPOINT_ON
                    else 0
                ),
                proposal_files=[proposal_files[index]] if proposal_files else None,
            )
            if not isinstance(dicts, list):  # a torch Dataset: detectron2 takes it as is
                return super().build_train_loader(cfg)
            dataset += drop_boxes_without_area(name, dicts)
        if len(names) > 1 and dataset and "annotations" in dataset[0]:
            with contextlib.suppress(AttributeError):  # datasets without thing_classes
                check_metadata_consistency("thing_classes", names)
        return build_detection_train_loader(cfg, dataset=dataset)

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

        For "coco": ``frn_det.evaluation.BackendCOCOEvaluator`` (detectron2's COCOEvaluator with
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
            return BackendCOCOEvaluator(
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
