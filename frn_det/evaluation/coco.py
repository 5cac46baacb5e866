"""COCO evaluation with a choice of backend: faster-coco-eval or pycocotools' COCOeval.

Without detectron2's compiled ops, detectron2's ``COCOEvaluator`` runs pycocotools'
pure-Python COCOeval, which takes minutes on COCO val. faster-coco-eval (PyPI) computes
the same numbers in C++. ``BackendCOCOEvaluator`` uses it when it is installed and keeps
pycocotools' COCOeval, the official implementation, one switch away:

- ``BackendCOCOEvaluator(..., backend=...)``, which the trainer fills from
  ``cfg.TEST.COCOEVAL_BACKEND``;
- the environment variable ``FRN_DET_COCOEVAL``, read when the backend is ``"auto"``.

Each takes ``"auto"`` (faster-coco-eval when importable, else pycocotools),
``"faster"`` or ``"pycocotools"``. An explicit choice in code or config wins over the
environment variable; ``"auto"`` lets the environment decide.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from detectron2.evaluation import COCOEvaluator, coco_evaluation
from pycocotools.cocoeval import COCOeval

COCOEVAL_BACKENDS: tuple[str, ...] = ("auto", "faster", "pycocotools")
COCOEVAL_ENV = "FRN_DET_COCOEVAL"
FASTER_INSTALL_HINT = "pip install faster-coco-eval==1.8.0"

logger = logging.getLogger(__name__)


def _faster_coco_eval() -> Any:
    """The ``faster_coco_eval`` module; raises ImportError when it is not installed."""
    return importlib.import_module("faster_coco_eval")


def faster_coco_eval_available() -> bool:
    """Whether faster-coco-eval can be imported in this environment."""
    try:
        _faster_coco_eval()
    except ImportError:
        return False
    return True


# How errors name the argument / config key, as opposed to the environment variable.
_ARGUMENT = "the COCO evaluation backend (BackendCOCOEvaluator backend=, TEST.COCOEVAL_BACKEND)"


def _check_backend(value: str, switch: str) -> str:
    if value not in COCOEVAL_BACKENDS:
        raise ValueError(
            f"{switch} is {value!r}; expected one of "
            f"{', '.join(repr(b) for b in COCOEVAL_BACKENDS)}"
        )
    return value


def resolve_cocoeval_backend(backend: str = "auto") -> str:
    """The backend that will run: ``"faster"`` or ``"pycocotools"``.

    ``backend`` is the choice made in code or config (``BackendCOCOEvaluator``'s ``backend``,
    ``cfg.TEST.COCOEVAL_BACKEND``). When it is ``"auto"``, ``$FRN_DET_COCOEVAL`` decides if it
    is set and not empty; ``"auto"`` from both means faster-coco-eval when it is
    importable, else pycocotools.

    Raises:
        ValueError: ``backend`` or ``$FRN_DET_COCOEVAL`` is not one of ``COCOEVAL_BACKENDS``.
        ImportError: ``"faster"`` was asked for and faster-coco-eval is not installed.
    """
    choice = _check_backend(backend, _ARGUMENT)
    switch = _ARGUMENT
    env = os.environ.get(COCOEVAL_ENV, "")
    if choice == "auto" and env:
        choice = _check_backend(env, COCOEVAL_ENV)
        switch = COCOEVAL_ENV
    if choice == "auto":
        return "faster" if faster_coco_eval_available() else "pycocotools"
    if choice == "faster":
        try:
            _faster_coco_eval()
        except ImportError as e:
            raise ImportError(
                f"{switch} is 'faster', but faster-coco-eval is not installed; install it "
                f"with `{FASTER_INSTALL_HINT}`, or choose 'auto' or 'pycocotools'"
            ) from e
    return choice


def to_faster_coco(coco_gt: Any) -> Any:
    """A ``faster_coco_eval.COCO`` over the same dataset dict as ``coco_gt`` (a
    pycocotools ``COCO``); ``coco_gt`` itself when it already is one.

    faster-coco-eval's COCOeval reads fields pycocotools' COCO lacks (``cat_img_map``), so
    it is given its own index. The annotation dicts are shared, not copied.
    """
    faster = _faster_coco_eval()
    if isinstance(coco_gt, faster.COCO):
        return coco_gt
    return faster.COCO(coco_gt.dataset, print_function=logger.debug)


def evaluate_predictions_on_coco(
    coco_gt: Any,
    coco_results: list[dict[str, Any]],
    iou_type: str,
    *,
    backend: str = "auto",
    kpt_oks_sigmas: Sequence[float] | None = None,
    img_ids: Sequence[int] | None = None,
    max_dets_per_image: Sequence[int] | None = None,
) -> Any:
    """Run COCO evaluation of ``coco_results`` against ``coco_gt`` with one backend.

    The arguments mean what they mean to detectron2's ``_evaluate_predictions_on_coco``:
    ``coco_gt`` is a pycocotools ``COCO`` (the faster backend also takes its own);
    ``coco_results`` a non-empty list in COCO's result format, modified in place as
    pycocotools does, except with ``iou_type="segm"``, where their ``bbox`` is dropped
    from a copy so that mask area, not box area, decides small / medium / large;
    ``iou_type`` one of "bbox", "segm", "keypoints"; ``max_dets_per_image`` COCO's
    ``[1, 10, N]``.

    Returns the evaluated, accumulated and summarized COCOeval object: both backends fill
    ``stats`` (the 12 COCO numbers, 10 for keypoints) and ``eval["precision"]`` of shape
    (iou thresholds, recall thresholds, categories, area ranges, max dets) the same way.
    """
    if resolve_cocoeval_backend(backend) == "pycocotools":
        return coco_evaluation._evaluate_predictions_on_coco(
            coco_gt,
            coco_results,
            iou_type,
            kpt_oks_sigmas=kpt_oks_sigmas,
            cocoeval_fn=COCOeval,
            img_ids=img_ids,
            max_dets_per_image=max_dets_per_image,
        )
    return _evaluate_with_faster(
        to_faster_coco(coco_gt),
        coco_results,
        iou_type,
        kpt_oks_sigmas=kpt_oks_sigmas,
        img_ids=img_ids,
        max_dets_per_image=max_dets_per_image,
    )


def _evaluate_with_faster(
    coco_gt: Any,
    coco_results: list[dict[str, Any]],
    iou_type: str,
    *,
    kpt_oks_sigmas: Sequence[float] | None,
    img_ids: Sequence[int] | None,
    max_dets_per_image: Sequence[int] | None,
) -> Any:
    if not coco_results:
        raise ValueError("coco_results is empty; COCOeval cannot evaluate no detections")
    faster = _faster_coco_eval()
    if iou_type == "segm":
        coco_results = [{k: v for k, v in r.items() if k != "bbox"} for r in coco_results]
    coco_dt = coco_gt.loadRes(coco_results)
    coco_eval = faster.COCOeval_faster(
        coco_gt,
        coco_dt,
        iou_type,
        kpt_oks_sigmas=list(kpt_oks_sigmas) if kpt_oks_sigmas else None,
        print_function=logger.info,
    )
    # faster-coco-eval evaluates keypoints only on categories that have annotations;
    # pycocotools on all of them, which keeps per-category results aligned with the
    # dataset's classes.
    coco_eval.params.catIds = sorted(coco_gt.getCatIds())
    if iou_type == "keypoints":
        _check_keypoint_counts(coco_gt, coco_results, coco_eval.params.kpt_oks_sigmas)
    elif max_dets_per_image is not None:
        # Unlike pycocotools' summarize(), faster-coco-eval's reports AP and AR at the
        # last maxDets whatever it is, so a custom limit needs no special class.
        coco_eval.params.maxDets = list(max_dets_per_image)
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


def _check_keypoint_counts(
    coco_gt: Any, coco_results: list[dict[str, Any]], sigmas: np.ndarray
) -> None:
    num_dt = len(coco_results[0]["keypoints"]) // 3
    num_gt = len(next(iter(coco_gt.anns.values()))["keypoints"]) // 3
    if not num_dt == num_gt == len(sigmas):
        raise ValueError(
            f"predictions have {num_dt} keypoints, the ground truth {num_gt} and "
            f"the OKS sigmas (TEST.KEYPOINT_OKS_SIGMAS) {len(sigmas)}; the three must agree"
        )


@contextlib.contextmanager
def _replaced(module: Any, name: str, value: Any) -> Iterator[None]:
    """Set ``module.name`` to ``value`` for the duration of the block."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


class BackendCOCOEvaluator(COCOEvaluator):
    """detectron2's ``COCOEvaluator`` with a choice of COCOeval implementation (its backend).

    Everything but the COCOeval run is detectron2's: result conversion, category id
    unmapping, the files written to ``output_dir``, proposal recall and the results dict
    (``{"bbox": {"AP": ..., "AP-<class>": ...}, "segm": {...}}``). ``backend`` is
    ``"auto"``, ``"faster"`` or ``"pycocotools"`` (see ``resolve_cocoeval_backend``); it
    replaces detectron2's ``use_fast_impl``, whose compiled COCOeval this install lacks.

    Example (the trainer's ``build_evaluator``)::

        BackendCOCOEvaluator(dataset_name, tasks=("bbox", "segm"), output_dir=output_folder,
                             kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS,
                             backend=cfg.TEST.COCOEVAL_BACKEND)
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Sequence[str] | None = None,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        backend: str = "auto",
        max_dets_per_image: int | None = None,
        kpt_oks_sigmas: Sequence[float] = (),
        allow_cached_coco: bool = True,
    ) -> None:
        # Resolved first so that a bad name or a missing package fails before the
        # annotation file is loaded.
        self.backend = resolve_cocoeval_backend(backend)
        super().__init__(
            dataset_name,
            tasks=tasks,
            distributed=distributed,
            output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
            use_fast_impl=False,
            kpt_oks_sigmas=kpt_oks_sigmas,
            allow_cached_coco=allow_cached_coco,
        )
        # detectron2 reads this flag for its "Evaluating predictions with unofficial /
        # official COCO API" log line (and its own COCOeval choice, replaced here).
        self._use_fast_impl = self.backend == "faster"
        self._faster_coco_api: Any = None
        self._logger.info(f"COCO evaluation backend: {self.backend}")

    def _eval_predictions(
        self, predictions: list[dict[str, Any]], img_ids: Sequence[int] | None = None
    ) -> None:
        if self.backend == "pycocotools":
            super()._eval_predictions(predictions, img_ids=img_ids)
            return
        # detectron2 hard-wires its choice of COCOeval inside _eval_predictions; the
        # module-level function it calls is the one seam that lets the rest of that method
        # (and its output files and logs) stay detectron2's. The swap lasts for this call
        # and is undone on error; detectron2 evaluates in a single thread, so nothing else
        # calls the function meanwhile.
        with _replaced(coco_evaluation, "_evaluate_predictions_on_coco", self._run_faster):
            super()._eval_predictions(predictions, img_ids=img_ids)

    def _run_faster(
        self,
        coco_gt: Any,
        coco_results: list[dict[str, Any]],
        iou_type: str,
        kpt_oks_sigmas: Sequence[float] | None = None,
        cocoeval_fn: Any = None,
        img_ids: Sequence[int] | None = None,
        max_dets_per_image: Sequence[int] | None = None,
    ) -> Any:
        """Stands in for detectron2's ``_evaluate_predictions_on_coco``; ``cocoeval_fn``
        (detectron2's pick between its own implementations) is superseded by the backend."""
        if self._faster_coco_api is None:
            # Indexed once per evaluator, so its bbox and segm tasks share the index.
            self._faster_coco_api = to_faster_coco(coco_gt)
        return _evaluate_with_faster(
            self._faster_coco_api,
            coco_results,
            iou_type,
            kpt_oks_sigmas=kpt_oks_sigmas,
            img_ids=img_ids,
            max_dets_per_image=max_dets_per_image,
        )
