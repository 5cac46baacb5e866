"""detectron2's bundled Panoptic-DeepLab with "FRN" in its three NORM keys: build, one
training step on hand-made targets, and inference to panoptic and instance outputs.

The project's package imports ``panopticapi.utils.rgb2id`` (in its dataset mapper, which
this test does not use); panopticapi is not on PyPI, so the test provides that one
function, written from its definition (id = R + 256 G + 256^2 B), for the import.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer

from .conftest import deeplab_resnet_options, frn_norms

SIDE = 64
META = "frn_integration_panoptic_meta"


@pytest.fixture
def panoptic_deeplab() -> Iterator[types.ModuleType]:
    """detectron2.projects.panoptic_deeplab, importable without panopticapi installed."""
    added = {}
    if "panopticapi" not in sys.modules:

        def rgb2id(color: np.ndarray) -> np.ndarray:
            color = np.asarray(color, dtype=np.int32)
            return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]

        package, utils = types.ModuleType("panopticapi"), types.ModuleType("panopticapi.utils")
        utils.rgb2id = rgb2id
        package.utils = utils
        added = {"panopticapi": package, "panopticapi.utils": utils}
        sys.modules.update(added)
    import detectron2.projects.panoptic_deeplab as project

    # The model reads its thing classes from the metadata of its first training set.
    MetadataCatalog.get(META).set(
        thing_dataset_id_to_contiguous_id={1: 1}, label_divisor=1000, thing_classes=["square"]
    )
    yield project
    MetadataCatalog.remove(META)
    for name in added:
        sys.modules.pop(name, None)


def _targets(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """One image with a square "thing" (class 1) on "stuff" (class 0), and the targets the
    project's mapper would make: semantic labels, a centre heatmap and offsets to it."""
    image = torch.from_numpy(rng.integers(0, 60, (3, SIDE, SIDE)).astype(np.float32))
    sem_seg = torch.zeros(SIDE, SIDE, dtype=torch.long)
    y0, x0 = (int(v) for v in rng.integers(8, 32, size=2))
    sem_seg[y0 : y0 + 20, x0 : x0 + 20] = 1
    image[:, sem_seg == 1] = 200.0
    cy, cx = y0 + 10, x0 + 10
    yy, xx = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    center = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0**2)).float()
    offset = torch.stack([(cy - yy).float(), (cx - xx).float()]) * (sem_seg == 1)
    ones = torch.ones(SIDE, SIDE)
    return {
        "image": image,
        "height": SIDE,
        "width": SIDE,
        "sem_seg": sem_seg,
        "sem_seg_weights": ones,
        "center": center,
        "center_weights": ones,
        "offset": offset,
        "offset_weights": (sem_seg == 1).float(),
    }


def test_panoptic_deeplab_with_frn_norms_trains_one_step_and_predicts(registered, panoptic_deeplab):
    cfg = get_cfg()
    panoptic_deeplab.add_panoptic_deeplab_config(cfg)
    # Panoptic-DeepLab's R-50 at an eighth of the width, heads narrowed to match.
    cfg.merge_from_list(
        [
            *deeplab_resnet_options(["res2", "res3", "res5"]),
            "MODEL.META_ARCHITECTURE", "PanopticDeepLab",
            "MODEL.SEM_SEG_HEAD.NAME", "PanopticDeepLabSemSegHead",
            "MODEL.SEM_SEG_HEAD.NORM", "FRN",
            "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["res2", "res3", "res5"],
            "MODEL.SEM_SEG_HEAD.PROJECT_FEATURES", ["res2", "res3"],
            "MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS", [8, 16],
            "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", 32,
            "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS", [2, 4, 6],
            "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
            "MODEL.SEM_SEG_HEAD.HEAD_CHANNELS", 16,
            "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 4,
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 2,
            "MODEL.SEM_SEG_HEAD.LOSS_TYPE", "hard_pixel_mining",
            "MODEL.INS_EMBED_HEAD.NORM", "FRN",
            "MODEL.INS_EMBED_HEAD.PROJECT_CHANNELS", [8, 16],
            "MODEL.INS_EMBED_HEAD.ASPP_CHANNELS", 32,
            "MODEL.INS_EMBED_HEAD.ASPP_DILATIONS", [2, 4, 6],
            "MODEL.INS_EMBED_HEAD.CONVS_DIM", 16,
            "MODEL.INS_EMBED_HEAD.HEAD_CHANNELS", 8,
            "MODEL.PANOPTIC_DEEPLAB.STUFF_AREA", 16,
            "MODEL.PANOPTIC_DEEPLAB.SIZE_DIVISIBILITY", SIDE,
            "DATASETS.TRAIN", (META,),
            "SOLVER.OPTIMIZER", "SGD",
            "SOLVER.BASE_LR", 0.01,
        ]
    )  # fmt: skip
    model = build_model(cfg)

    norms = frn_norms(model)
    assert "backbone.stem.conv1.norm" in norms
    assert "backbone.res5.2.conv3.norm" in norms
    assert any(name.startswith("sem_seg_head.") for name in norms)
    assert any(name.startswith("ins_embed_head.") for name in norms)
    assert not any(norm.tlu for norm in norms.values())

    rng = np.random.default_rng(0)
    batch = [_targets(rng), _targets(rng)]
    model.train()
    optimizer = build_optimizer(cfg, model)
    before = {name: norm.weight.detach().clone() for name, norm in norms.items()}
    losses = model(batch)
    assert {"loss_sem_seg", "loss_center", "loss_offset"} <= losses.keys()
    assert all(torch.isfinite(value) for value in losses.values())
    optimizer.zero_grad()
    sum(losses.values()).backward()
    for name, norm in norms.items():
        assert norm.weight.grad is not None and torch.isfinite(norm.weight.grad).all(), name
    optimizer.step()
    assert any(not torch.equal(norm.weight, before[name]) for name, norm in norms.items())

    model.eval()
    with torch.no_grad():
        outputs = model([{"image": b["image"], "height": SIDE, "width": SIDE} for b in batch])
    assert len(outputs) == 2
    for output in outputs:
        assert output["sem_seg"].shape == (2, SIDE, SIDE)
        panoptic, _ = output["panoptic_seg"]
        assert panoptic.shape == (SIDE, SIDE)
