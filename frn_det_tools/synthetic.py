"""A synthetic COCO-style ground truth and detector output, for timing and cross-checking
COCO evaluation backends without downloading COCO.

The ground truth imitates COCO val2017's shape: images of a few hundred pixels a side,
about 7 objects per image over 80 categories with a long-tailed frequency, object sizes
spread over COCO's small / medium / large ranges, about 1% crowd regions, and category ids
with gaps (as COCO's 1..90 has). The detections imitate a detector's: a few boxes jittered
from each object (sometimes with the wrong class), false positives with lower scores (half
of them in classes present in the image), and at most ``dets_per_image`` per image, the
top-scoring ones, as detectron2 keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

IOU_TYPES: tuple[str, ...] = ("bbox", "segm")

# Fraction of the box's width / height cut off each corner of an object's octagon.
_CORNER_CUT = 0.25
_DETS_PER_OBJECT_PROBS = (0.1, 0.5, 0.3, 0.1)  # 0, 1, 2 or 3 detections per object
_CROWD_FRACTION = 0.01
_WRONG_CLASS_FRACTION = 0.1
_FP_IN_IMAGE_CLASS_FRACTION = 0.5


@dataclass
class SyntheticCOCO:
    """A COCO ground-truth dataset dict and a list of results in COCO's result format."""

    ground_truth: dict[str, Any]
    results: list[dict[str, Any]]

    @property
    def num_objects(self) -> int:
        """How many ground-truth annotations the dataset holds."""
        return len(self.ground_truth["annotations"])


def category_ids(num_categories: int) -> list[int]:
    """``num_categories`` increasing ids with a gap after every 8, so that code mapping
    COCO's sparse ids to contiguous ones is exercised (80 categories span 1..89)."""
    return [1 + i + i // 8 for i in range(num_categories)]


def make_synthetic_coco(
    num_images: int = 5000,
    *,
    objects_per_image: float = 7.0,
    num_categories: int = 80,
    dets_per_image: int = 100,
    iou_type: str = "bbox",
    seed: int = 0,
) -> SyntheticCOCO:
    """Build a ground truth of ``num_images`` images and a detector's results on it.

    Every annotation has an octagon polygon inscribed in its box and the octagon's area, so
    the same ground truth serves box and mask evaluation. Results always carry ``bbox`` and
    ``score``; with ``iou_type="segm"`` they also carry a compressed-RLE ``segmentation``
    with a utf-8 string ``counts``, as detectron2's ``instances_to_coco_json`` writes them.
    The same arguments give the same data.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type={iou_type!r} is not supported; expected one of {IOU_TYPES}")
    if num_images < 1 or num_categories < 1 or dets_per_image < 1:
        raise ValueError(
            f"num_images={num_images}, num_categories={num_categories} and "
            f"dets_per_image={dets_per_image} must all be at least 1"
        )
    rng = np.random.default_rng(seed)
    cat_ids = np.asarray(category_ids(num_categories))
    # COCO's class frequencies are long-tailed (person is ~30% of objects).
    weights = 1.0 / (np.arange(num_categories) + 3.0)
    weights /= weights.sum()

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for image_id in range(1, num_images + 1):
        width = int(rng.integers(400, 641))
        height = int(rng.integers(300, 641))
        images.append(
            {
                "id": image_id,
                "file_name": f"{image_id:012d}.jpg",
                "width": width,
                "height": height,
            }
        )

        num_objects = int(rng.poisson(objects_per_image))
        gt_boxes = _random_boxes(rng, num_objects, width, height)
        gt_classes = rng.choice(cat_ids, size=num_objects, p=weights)
        crowd = rng.random(num_objects) < _CROWD_FRACTION
        for box, cls, is_crowd in zip(gt_boxes, gt_classes, crowd, strict=True):
            annotations.append(
                {
                    # COCO's ids start at 1; faster-coco-eval reads id 0 as "unmatched".
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls),
                    "bbox": [float(v) for v in box],
                    "segmentation": [_octagon(box)],
                    "area": float(box[2] * box[3] * (1 - 2 * _CORNER_CUT**2)),
                    "iscrowd": int(is_crowd),
                }
            )

        boxes, classes, scores = _detections(
            rng, gt_boxes, gt_classes, cat_ids, width, height, dets_per_image
        )
        masks: list[dict[str, Any]] = []
        if iou_type == "segm" and len(boxes):
            masks = mask_util.frPyObjects([_octagon(b) for b in boxes], height, width)
            for rle in masks:
                rle["counts"] = rle["counts"].decode("utf-8")
        for k in range(len(boxes)):
            result = {
                "image_id": image_id,
                "category_id": int(classes[k]),
                "bbox": [float(v) for v in boxes[k]],
                "score": float(scores[k]),
            }
            if masks:
                result["segmentation"] = masks[k]
            results.append(result)

    categories = [{"id": int(c), "name": f"class_{c}"} for c in cat_ids]
    ground_truth = {
        "info": {"description": f"frn-det synthetic COCO (seed {seed})"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    return SyntheticCOCO(ground_truth=ground_truth, results=results)


def _random_boxes(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    """(n, 4) XYWH boxes inside the image, sqrt(area) log-uniform from 6 px to 0.9 of the
    shorter side so COCO's small, medium and large ranges all get objects."""
    side = np.exp(rng.uniform(np.log(6.0), np.log(0.9 * min(width, height)), n))
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    w = np.minimum(side * np.sqrt(aspect), width - 1.0)
    h = np.minimum(side / np.sqrt(aspect), height - 1.0)
    x = rng.uniform(0.0, width - w)
    y = rng.uniform(0.0, height - h)
    return np.stack([x, y, w, h], axis=1)


def _detections(
    rng: np.random.Generator,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    cat_ids: np.ndarray,
    width: int,
    height: int,
    dets_per_image: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """XYWH boxes (N, 4), category ids (N,) and scores (N,) of one image's detections."""
    copies = rng.choice(len(_DETS_PER_OBJECT_PROBS), size=len(gt_boxes), p=_DETS_PER_OBJECT_PROBS)
    source = np.repeat(np.arange(len(gt_boxes)), copies)
    # Each detection gets its own localisation error; the score follows it (plus noise),
    # so well-placed boxes tend to rank first, as with a trained detector.
    error = rng.uniform(0.02, 0.3, len(source))
    base = gt_boxes[source]
    jitter = rng.normal(size=(len(source), 4)) * error[:, None] * base[:, [2, 3, 2, 3]]
    tp_boxes = base + jitter
    tp_scores = 1.0 / (1.0 + np.exp(-(2.5 - 12.0 * error + rng.normal(0.0, 1.0, len(source)))))
    tp_classes = gt_classes[source].copy()
    wrong = rng.random(len(source)) < _WRONG_CLASS_FRACTION
    tp_classes[wrong] = rng.choice(cat_ids, size=int(wrong.sum()))

    num_fp = max(dets_per_image - len(source), 0)
    fp_boxes = _random_boxes(rng, num_fp, width, height)
    fp_scores = rng.beta(1.0, 4.0, num_fp)
    fp_classes = rng.choice(cat_ids, size=num_fp)
    if len(gt_classes):
        # A detector's false positives crowd the classes in the picture, so some
        # (image, class) pairs get more than 10 detections and AR@10 < AR@100, as on COCO.
        in_image = rng.random(num_fp) < _FP_IN_IMAGE_CLASS_FRACTION
        fp_classes[in_image] = rng.choice(gt_classes, size=int(in_image.sum()))

    boxes = np.concatenate([tp_boxes, fp_boxes])
    scores = np.concatenate([tp_scores, fp_scores])
    classes = np.concatenate([tp_classes, fp_classes])
    boxes = _clip(boxes, width, height)
    keep = np.argsort(-scores, kind="stable")[:dets_per_image]
    return boxes[keep], classes[keep], scores[keep]


def _clip(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """XYWH boxes clipped to the image, at least 1 px wide and high."""
    x0 = np.clip(boxes[:, 0], 0.0, width - 1.0)
    y0 = np.clip(boxes[:, 1], 0.0, height - 1.0)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2], x0 + 1.0, float(width))
    y1 = np.clip(boxes[:, 1] + boxes[:, 3], y0 + 1.0, float(height))
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


def _octagon(box: np.ndarray) -> list[float]:
    """The polygon [x0, y0, x1, y1, ...] of the box with its corners cut off."""
    x, y, w, h = (float(v) for v in box)
    cx, cy = _CORNER_CUT * w, _CORNER_CUT * h
    points = [
        (x + cx, y),
        (x + w - cx, y),
        (x + w, y + cy),
        (x + w, y + h - cy),
        (x + w - cx, y + h),
        (x + cx, y + h),
        (x, y + h - cy),
        (x, y + cy),
    ]
    return [c for point in points for c in point]
