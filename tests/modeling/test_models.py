"""Whole detectors built from frn-det components train and infer with every norm."""

from __future__ import annotations

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from frn_det.layers import FilterResponseNorm2d

from .helpers import ALL_NORMS, small_cfg

SIZE = 128


def batch(with_targets: bool = True) -> list[dict]:
    """Two 128x128 images, each with one box (and its mask) of a different class."""
    gen = torch.Generator().manual_seed(0)
    inputs = []
    for i, (x0, y0, x1, y1) in enumerate([(16, 24, 80, 96), (40, 8, 120, 64)]):
        item = {"image": torch.rand(3, SIZE, SIZE, generator=gen) * 255}
        if with_targets:
            instances = Instances((SIZE, SIZE))
            instances.gt_boxes = Boxes(torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32))
            instances.gt_classes = torch.tensor([i])
            masks = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
            masks[:, y0:y1, x0:x1] = True
            instances.gt_masks = BitMasks(masks)
            item["instances"] = instances
        inputs.append(item)
    return inputs


def train_step(model) -> dict[str, torch.Tensor]:
    model.train()
    with EventStorage():  # detectron2's training losses log to the current storage
        losses = model(batch())
    sum(losses.values()).backward()
    return losses


@pytest.mark.parametrize("norm", ALL_NORMS)
def test_mask_rcnn_trains_one_step_with_every_norm(norm):
    model = build_model(small_cfg(norm))
    losses = train_step(model)
    assert {"loss_rpn_cls", "loss_cls", "loss_box_reg", "loss_mask"} <= losses.keys()
    assert all(torch.isfinite(v) for v in losses.values())
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


@pytest.mark.parametrize("norm", ["FRN", "GN", "BN"])
def test_retinanet_trains_one_step_with_every_norm(norm):
    model = build_model(small_cfg(norm, retinanet=True))
    losses = train_step(model)
    assert losses.keys() == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


@pytest.mark.parametrize("retinanet", [False, True])
def test_frn_detector_infers_in_eval_mode(retinanet):
    model = build_model(small_cfg("FRN", retinanet=retinanet)).eval()
    assert any(isinstance(m, FilterResponseNorm2d) for m in model.modules())
    with torch.no_grad():
        outputs = model(batch(with_targets=False))
    assert len(outputs) == 2
    for out in outputs:
        instances = out["instances"]
        assert instances.image_size == (SIZE, SIZE)
        assert instances.has("pred_boxes") and instances.has("scores")
        if not retinanet:
            assert instances.has("pred_masks")
