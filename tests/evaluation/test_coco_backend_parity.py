"""faster-coco-eval gives pycocotools' numbers: on raw COCOeval and through the evaluator."""

import copy
import json
import math
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import coco_evaluation
from detectron2.structures import Boxes, BoxMode, Instances, polygons_to_bitmask
from pycocotools.coco import COCO

from frn_det.data import register_shapes_datasets
from frn_det.evaluation import (
    BackendCOCOEvaluator,
    evaluate_predictions_on_coco,
    faster_coco_eval_available,
)
from frn_det_tools.synthetic import SyntheticCOCO, make_synthetic_coco

TOL = 1e-4
TINY_DATASET = "frn_eval_tiny_synthetic"
needs_faster = pytest.mark.skipif(
    not faster_coco_eval_available(), reason="faster-coco-eval is not installed"
)


def _per_category_ap(coco_eval) -> np.ndarray:
    """detectron2's per-class AP: IoU 0.5:0.95, all areas, the last maxDets; NaN if no GT."""
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]
    out = []
    for k in range(precision.shape[2]):
        p = precision[:, :, k]
        out.append(p[p > -1].mean() if (p > -1).any() else np.nan)
    return np.asarray(out)


def _evaluate(data, iou_type: str, backend: str, **kwargs):
    # Each backend gets its own copies: pycocotools rewrites GT masks in place.
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(data.ground_truth)
    coco_gt.createIndex()
    results = copy.deepcopy(data.results)
    return evaluate_predictions_on_coco(coco_gt, results, iou_type, backend=backend, **kwargs)


@needs_faster
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_faster_backend_equals_pycocotools_on_every_stat_and_category(iou_type):
    data = make_synthetic_coco(50, iou_type=iou_type, seed=1)
    ref = _evaluate(data, iou_type, "pycocotools")
    fast = _evaluate(data, iou_type, "faster")
    assert type(fast).__module__.startswith("faster_coco_eval")
    assert len(ref.stats) == len(fast.stats) == 12
    assert 0.05 < ref.stats[0] < 0.95  # a set on which AP can go wrong in either direction
    np.testing.assert_allclose(fast.stats, ref.stats, rtol=0, atol=TOL)
    np.testing.assert_allclose(_per_category_ap(fast), _per_category_ap(ref), rtol=0, atol=TOL)
    np.testing.assert_allclose(fast.eval["precision"], ref.eval["precision"], rtol=0, atol=TOL)


@needs_faster
def test_a_custom_detection_limit_gives_the_same_stats_on_both_backends():
    # detectron2 switches pycocotools to its own COCOevalMaxDets when the limit is not 100.
    data = make_synthetic_coco(30, dets_per_image=60, seed=2)
    ref = _evaluate(data, "bbox", "pycocotools", max_dets_per_image=[1, 10, 20])
    fast = _evaluate(data, "bbox", "faster", max_dets_per_image=[1, 10, 20])
    assert list(fast.params.maxDets) == [1, 10, 20]
    np.testing.assert_allclose(fast.stats, ref.stats, rtol=0, atol=TOL)


def _assert_same_results(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for task in a:
        assert a[task].keys() == b[task].keys(), task
        for metric, value in a[task].items():
            other = b[task][metric]
            if math.isnan(value):
                assert math.isnan(other), (task, metric)
            else:
                assert other == pytest.approx(value, abs=TOL), (task, metric)


def _run_evaluator(dataset_name: str, backend: str, inputs: list, outputs: list) -> dict:
    evaluator = BackendCOCOEvaluator(
        dataset_name, tasks=("bbox", "segm"), distributed=False, backend=backend
    )
    assert evaluator.backend == backend
    evaluator.reset()
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """A registered 8-image synthetic dataset and a model's outputs on it."""
    folder = tmp_path_factory.mktemp("tiny_coco")
    data = make_synthetic_coco(8, num_categories=5, dets_per_image=20, iou_type="segm", seed=3)
    json_file = Path(folder, "instances.json")
    json_file.write_text(json.dumps(data.ground_truth))
    register_coco_instances(TINY_DATASET, {}, str(json_file), str(folder))
    DatasetCatalog.get(TINY_DATASET)  # sets thing_classes and the category id map
    to_contiguous = MetadataCatalog.get(TINY_DATASET).thing_dataset_id_to_contiguous_id

    inputs, outputs = [], []
    for image in data.ground_truth["images"]:
        dets = [r for r in data.results if r["image_id"] == image["id"]]
        h, w = image["height"], image["width"]
        instances = Instances((h, w))
        boxes = np.array([r["bbox"] for r in dets], dtype=np.float64).reshape(-1, 4)
        boxes = BoxMode.convert(boxes, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        instances.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
        instances.scores = torch.tensor([r["score"] for r in dets], dtype=torch.float32)
        instances.pred_classes = torch.tensor([to_contiguous[r["category_id"]] for r in dets])
        masks = mask_util.decode([r["segmentation"] for r in dets]).reshape(h, w, -1)
        instances.pred_masks = torch.from_numpy(masks.transpose(2, 0, 1).astype(bool))
        inputs.append({"image_id": image["id"], "height": h, "width": w})
        outputs.append({"instances": instances})
    yield inputs, outputs
    DatasetCatalog.remove(TINY_DATASET)
    MetadataCatalog.remove(TINY_DATASET)


@needs_faster
def test_evaluator_gives_the_same_results_dict_with_either_backend(tiny_dataset):
    inputs, outputs = tiny_dataset
    ref = _run_evaluator(TINY_DATASET, "pycocotools", inputs, outputs)
    fast = _run_evaluator(TINY_DATASET, "faster", inputs, outputs)
    assert set(ref) == {"bbox", "segm"}
    assert 0.0 < ref["segm"]["AP"] < 100.0
    assert len([k for k in ref["bbox"] if k.startswith("AP-")]) == 5
    _assert_same_results(ref, fast)


def test_pycocotools_backend_evaluates_without_faster_coco_eval(tiny_dataset, without_faster):
    inputs, outputs = tiny_dataset
    results = _run_evaluator(TINY_DATASET, "pycocotools", inputs, outputs)
    assert math.isfinite(results["bbox"]["AP"])


@needs_faster
def test_faster_backend_leaves_detectron2s_evaluation_function_in_place(tiny_dataset):
    original = coco_evaluation._evaluate_predictions_on_coco
    _run_evaluator(TINY_DATASET, "faster", *tiny_dataset)
    assert coco_evaluation._evaluate_predictions_on_coco is original


@pytest.fixture
def shapes_val(tmp_path):
    """frn_shapes_val generated under tmp_path (8 images); the default registration is
    restored afterwards."""
    register_shapes_datasets(root=tmp_path, num_train=8, num_val=8)
    yield DatasetCatalog.get("frn_shapes_val")
    register_shapes_datasets()


@needs_faster
def test_backends_agree_on_the_embedded_shapes_dataset(shapes_val):
    # A model that finds every shape a few pixels off, plus one false positive per image.
    rng = np.random.default_rng(0)
    inputs, outputs = [], []
    for record in shapes_val:
        h, w = record["height"], record["width"]
        boxes, masks, classes = [], [], []
        for ann in record["annotations"]:
            dx, dy = rng.integers(-3, 4, size=2)
            x, y, bw, bh = BoxMode.convert(ann["bbox"], ann["bbox_mode"], BoxMode.XYWH_ABS)
            boxes.append([x + dx, y + dy, x + dx + bw, y + dy + bh])
            shifted = [np.asarray(p, dtype=np.float64) for p in ann["segmentation"]]
            for p in shifted:
                p[0::2] += dx
                p[1::2] += dy
            masks.append(polygons_to_bitmask(shifted, h, w))
            classes.append(ann["category_id"])
        boxes.append([0.0, 0.0, w / 3, h / 3])
        masks.append(np.zeros((h, w), dtype=bool))
        masks[-1][: h // 3, : w // 3] = True
        classes.append(0)
        instances = Instances((h, w))
        instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        instances.scores = torch.as_tensor(rng.uniform(0.2, 1.0, len(boxes)), dtype=torch.float32)
        instances.pred_classes = torch.tensor(classes)
        instances.pred_masks = torch.from_numpy(np.stack(masks))
        inputs.append({"image_id": record["image_id"], "height": h, "width": w})
        outputs.append({"instances": instances})

    ref = _run_evaluator("frn_shapes_val", "pycocotools", inputs, outputs)
    fast = _run_evaluator("frn_shapes_val", "faster", inputs, outputs)
    assert ref["bbox"]["AP50"] > 50.0
    _assert_same_results(ref, fast)


def _keypoint_data(seed: int = 0) -> SyntheticCOCO:
    """30 images of 0-3 people with 17 keypoints, two noisy detections each, and a second
    category without annotations (pycocotools still counts it)."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for image_id in range(1, 31):
        images.append({"id": image_id, "width": 640, "height": 480})
        for _ in range(rng.integers(0, 4)):
            x, y, w, h = rng.uniform(0, 400), rng.uniform(0, 300), *rng.uniform(20, 150, 2)
            kx, ky = rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17)
            visible = rng.integers(0, 3, 17)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": 0.7 * w * h,
                    "iscrowd": 0,
                    "keypoints": np.stack([kx, ky, visible], 1).ravel().tolist(),
                    "num_keypoints": int((visible > 0).sum()),
                }
            )
            for _ in range(2):
                noisy = [kx + rng.normal(0, 5, 17), ky + rng.normal(0, 5, 17), np.ones(17)]
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": 1,
                        "keypoints": np.stack(noisy, 1).ravel().tolist(),
                        "score": float(rng.uniform()),
                    }
                )
    categories = [{"id": 1, "name": "person"}, {"id": 2, "name": "other"}]
    ground_truth = {"images": images, "annotations": anns, "categories": categories}
    return SyntheticCOCO(ground_truth=ground_truth, results=results)


@needs_faster
def test_faster_backend_equals_pycocotools_on_keypoints():
    data = _keypoint_data()
    ref = _evaluate(data, "keypoints", "pycocotools")
    fast = _evaluate(data, "keypoints", "faster")
    assert fast.eval["precision"].shape == ref.eval["precision"].shape
    np.testing.assert_allclose(fast.stats, ref.stats, rtol=0, atol=TOL)


@needs_faster
def test_keypoint_sigmas_of_the_wrong_length_are_refused_with_the_three_counts():
    data = _keypoint_data()
    with pytest.raises(
        ValueError, match=r"17 keypoints.*17 and the OKS sigmas \(TEST.KEYPOINT_OKS_SIGMAS\) 5"
    ):
        _evaluate(data, "keypoints", "faster", kpt_oks_sigmas=[0.1] * 5)
