"""COCO evaluation for frn-det: detectron2's COCOEvaluator with faster-coco-eval as its
COCOeval when installed, and pycocotools' official COCOeval on request (see ``coco``).
"""

from .coco import (
    COCOEVAL_BACKENDS,
    COCOEVAL_ENV,
    BackendCOCOEvaluator,
    evaluate_predictions_on_coco,
    faster_coco_eval_available,
    resolve_cocoeval_backend,
    to_faster_coco,
)

__all__ = [
    "COCOEVAL_BACKENDS",
    "COCOEVAL_ENV",
    "BackendCOCOEvaluator",
    "evaluate_predictions_on_coco",
    "faster_coco_eval_available",
    "resolve_cocoeval_backend",
    "to_faster_coco",
]
