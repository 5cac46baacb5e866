"""Fixtures for the detectron2 integration tests: tiny datasets, one training step, evaluation.

Every test leaves detectron2's ``get_norm`` as it found it: stock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data.datasets import load_coco_json
from detectron2.evaluation import DatasetEvaluator, inference_on_dataset
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage
from PIL import Image
from torch import nn

from frn_det.data import shapes_annotation_file, shapes_image_root
from frn_det.data.shapes import generate_shapes_dataset
from frn_det.integration import register_with_detectron2, unregister_from_detectron2
from frn_det.layers import FilterResponseNorm2d
from frn_det.layers.frn import frn_impl

SHAPES_TRAIN = "frn_integration_shapes_train"
SHAPES_VAL = "frn_integration_shapes_val"
SEMSEG_TRAIN = "frn_integration_semseg_train"
SEMSEG_VAL = "frn_integration_semseg_val"
SEMSEG_CLASSES = ["background", "square", "disk"]
SEMSEG_SIDE = 64


@pytest.fixture(autouse=True, scope="package")
def _small_cpu_settings() -> Iterator[None]:
    # "auto" would compile FRN kernels on first use (tens of seconds on a small CPU); the
    # eager kernel computes the same function. One thread: on a shared 2-core machine
    # OpenMP threads waiting on each other make small convolutions much slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with frn_impl("autograd"):
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _stock_get_norm_afterwards() -> Iterator[None]:
    # A failing test must not leave the rest of the suite with a patched detectron2.
    yield
    unregister_from_detectron2()


@pytest.fixture
def registered() -> Iterator[None]:
    """frn-det's names registered with detectron2 for the duration of one test."""
    with register_with_detectron2():
        yield


@pytest.fixture(scope="package")
def shapes_datasets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(train, val) names of a 4 + 2 image shapes dataset in COCO format.

    Registered under names of their own, so frn_shapes_train/val stay where other tests
    put them.
    """
    root = tmp_path_factory.mktemp("datasets")
    generate_shapes_dataset(root, num_train=4, num_val=2, seed=0)
    for name, split in ((SHAPES_TRAIN, "train"), (SHAPES_VAL, "val")):
        json_file = str(shapes_annotation_file(split, root))
        image_root = str(shapes_image_root(split, root))
        DatasetCatalog.register(
            name, lambda j=json_file, i=image_root, n=name: load_coco_json(j, i, n)
        )
        MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root)
    yield SHAPES_TRAIN, SHAPES_VAL
    for name in (SHAPES_TRAIN, SHAPES_VAL):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _write_semseg_split(folder: Path, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` 64x64 images, each with one square and one disk on a textured background,
    and their label PNGs (0 background, 1 square, 2 disk, 255 ignored border pixels)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SEMSEG_SIDE, :SEMSEG_SIDE]
    records = []
    for index in range(count):
        image = rng.integers(0, 60, (SEMSEG_SIDE, SEMSEG_SIDE, 3), dtype=np.uint8)
        label = np.zeros((SEMSEG_SIDE, SEMSEG_SIDE), dtype=np.uint8)
        x0, y0 = rng.integers(4, 24, size=2)
        label[y0 : y0 + 20, x0 : x0 + 20] = 1
        cx, cy = rng.integers(40, 54, size=2)
        label[(yy - cy) ** 2 + (xx - cx) ** 2 <= 81] = 2
        image[label == 1] = (200, 40, 40)
        image[label == 2] = (40, 200, 40)
        label[0, :] = 255
        image_file, label_file = folder / f"{index}.png", folder / f"{index}_label.png"
        Image.fromarray(image).save(image_file)
        Image.fromarray(label).save(label_file)
        records.append(
            {
                "file_name": str(image_file),
                "sem_seg_file_name": str(label_file),
                "height": SEMSEG_SIDE,
                "width": SEMSEG_SIDE,
                "image_id": index,
            }
        )
    return records


@pytest.fixture(scope="package")
def semseg_datasets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(train, val) names of a 4 + 2 image semantic segmentation dataset on disk (detectron2's
    SemSegEvaluator reads the ground truth from files)."""
    root = tmp_path_factory.mktemp("semseg")
    for name, count, seed in ((SEMSEG_TRAIN, 4, 0), (SEMSEG_VAL, 2, 1)):
        records = _write_semseg_split(root / name, count, seed)
        DatasetCatalog.register(name, lambda records=records: records)
        MetadataCatalog.get(name).set(
            stuff_classes=SEMSEG_CLASSES, ignore_label=255, evaluator_type="sem_seg"
        )
    yield SEMSEG_TRAIN, SEMSEG_VAL
    for name in (SEMSEG_TRAIN, SEMSEG_VAL):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def deeplab_resnet_options(out_features: list[str]) -> list[Any]:
    """KEY VALUE options for DeepLab's R-50 backbone (the only depth its builder takes) at
    an eighth of the width, with "FRN" as its norm, on the CPU."""
    return [
        "MODEL.DEVICE", "cpu",
        "MODEL.BACKBONE.NAME", "build_resnet_deeplab_backbone",
        "MODEL.BACKBONE.FREEZE_AT", 0,
        "MODEL.RESNETS.DEPTH", 50,
        "MODEL.RESNETS.NORM", "FRN",
        "MODEL.RESNETS.STEM_TYPE", "deeplab",
        "MODEL.RESNETS.STEM_OUT_CHANNELS", 16,
        "MODEL.RESNETS.WIDTH_PER_GROUP", 8,
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
        "MODEL.RESNETS.STRIDE_IN_1X1", False,
        "MODEL.RESNETS.RES5_DILATION", 2,
        "MODEL.RESNETS.OUT_FEATURES", out_features,
    ]  # fmt: skip


def frn_norms(model: nn.Module) -> dict[str, FilterResponseNorm2d]:
    """Every FilterResponseNorm2d of ``model`` by its qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, FilterResponseNorm2d)}


@pytest.fixture
def train_one_step() -> Callable[[CfgNode, nn.Module], dict[str, float]]:
    """``train_one_step(cfg, model)``: one SGD step on cfg.DATASETS.TRAIN; returns the losses.

    Checks that every loss is finite and that every FRN parameter got a finite gradient.
    """

    def step(cfg: CfgNode, model: nn.Module) -> dict[str, float]:
        torch.manual_seed(0)
        batch = next(iter(build_detection_train_loader(cfg)))
        optimizer = build_optimizer(cfg, model)
        model.train()
        with EventStorage(0):
            loss_dict = model(batch)
        total = sum(loss_dict.values())
        optimizer.zero_grad()
        total.backward()
        for name, norm in frn_norms(model).items():
            for param_name, param in norm.named_parameters():
                grad = param.grad
                assert grad is not None and torch.isfinite(grad).all(), f"{name}.{param_name}"
        optimizer.step()
        losses = {k: v.detach().item() for k, v in loss_dict.items()}
        assert all(math.isfinite(v) for v in losses.values()), losses
        return losses

    return step


@pytest.fixture
def evaluate() -> Callable[[CfgNode, nn.Module, DatasetEvaluator], dict[str, Any]]:
    """``evaluate(cfg, model, evaluator)``: inference on cfg.DATASETS.TEST[0] through
    detectron2's ``inference_on_dataset``; returns the evaluator's results."""

    def run(cfg: CfgNode, model: nn.Module, evaluator: DatasetEvaluator) -> dict[str, Any]:
        loader = build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])
        return inference_on_dataset(model, loader, evaluator)

    return run
