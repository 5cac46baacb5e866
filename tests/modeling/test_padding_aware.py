"""MODEL.PADDING_AWARE_NORM: an image's FPN features are the same alone and batched.

Each case runs a whole detector through its meta-architecture (which pads the batch and
records the image sizes) on image A alone and on A batched with a larger image B, and
compares A's FPN features over A's valid region. With the key False the same comparison
is the control: the features differ through the shared padded canvas.
"""

from __future__ import annotations

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from .helpers import shapes, small_cfg

A_SIZE, B_SIZE = (96, 136), (160, 160)  # A is not a multiple of 32: padded even alone


def _inputs(sizes, with_targets: bool) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    items = []
    for h, w in sizes:
        item = {"image": torch.rand(3, h, w, generator=gen) * 255}
        if with_targets:
            instances = Instances((h, w))
            instances.gt_boxes = Boxes(torch.tensor([[8.0, 8.0, w / 2, h / 2]]))
            instances.gt_classes = torch.tensor([1])
            item["instances"] = instances
        items.append(item)
    return items


def _features(model, sizes, train: bool) -> dict[str, torch.Tensor]:
    """The backbone's outputs for the first image, while the model runs on ``sizes``."""
    captured = {}
    handle = model.backbone.register_forward_hook(lambda m, i, out: captured.update(out))
    model.train(train)
    try:
        with torch.no_grad(), EventStorage():
            model(_inputs(sizes, with_targets=train))
    finally:
        handle.remove()
    return {k: v[:1] for k, v in captured.items()}


def _relative_change(model, train: bool) -> dict[str, float]:
    alone = _features(model, [A_SIZE], train)
    batched = _features(model, [A_SIZE, B_SIZE], train)
    change = {}
    for level, x in alone.items():
        h, w = x.shape[-2:]
        y = batched[level][..., :h, :w]
        change[level] = ((x - y).norm() / x.norm()).item()
    return change


def _model(norm: str, padding_aware: bool, retinanet: bool = False, mode_norm: str = ""):
    cfg = small_cfg(norm, retinanet=retinanet)
    cfg.MODEL.PADDING_AWARE_NORM = padding_aware
    cfg.MODEL.MASK_ON = False
    torch.manual_seed(0)
    model = build_model(cfg)
    if mode_norm == "BN":
        # BN with running statistics of its own (as after training): eval mode uses them.
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model


CASES = [
    ("FRN", True),
    ("FRN", False),
    ("GN", True),
    ("GN", False),
    ("BN", False),  # BN in eval mode only: training-mode BN depends on the batch by design
]


@pytest.mark.parametrize("norm, train", CASES)
def test_padding_aware_features_are_the_same_alone_and_batched(norm, train):
    model = _model(norm, padding_aware=True, mode_norm=norm)
    change = _relative_change(model, train)
    assert set(change) == {"p2", "p3", "p4", "p5", "p6"}
    assert max(change.values()) < 1e-5, change


@pytest.mark.parametrize("norm, train", CASES)
def test_without_the_key_batching_changes_the_features_the_control(norm, train):
    model = _model(norm, padding_aware=False, mode_norm=norm)
    change = _relative_change(model, train)
    assert min(change.values()) > 1e-3, change


@pytest.mark.parametrize("norm", ["FRN", "GN"])
def test_padding_aware_retinanet_features_p3_to_p7_are_the_same_alone_and_batched(norm):
    model = _model(norm, padding_aware=True, retinanet=True)
    for train in (True, False):
        change = _relative_change(model, train)
        assert set(change) == {"p3", "p4", "p5", "p6", "p7"}
        assert max(change.values()) < 1e-5, (train, change)


@pytest.mark.parametrize("size", [(190, 222), (94, 126)])
def test_an_image_padded_at_the_stem_but_not_after_its_max_pool_runs_alone_and_batched(size):
    # 190 x 222 on a 192 x 224 canvas: padded at stride 2 (95 of 96 rows), not at stride 4
    model = _model("FRN", padding_aware=True)
    alone = _features(model, [size], train=False)
    batched = _features(model, [size, B_SIZE], train=False)
    for level, x in alone.items():
        h, w = x.shape[-2:]
        assert torch.isfinite(x).all()
        assert ((batched[level][..., :h, :w] - x).norm() / x.norm()).item() < 1e-5, level


def test_padding_aware_models_have_the_plain_models_parameters():
    for norm in ("FRN", "GN", "BN", "SyncBN", "FrozenBN"):
        aware, plain = _model(norm, True), _model(norm, False)
        assert shapes(aware) == shapes(plain), norm


def test_padding_aware_frn_model_is_batch_independent_under_bfloat16_autocast():
    model = _model("FRN", padding_aware=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        change = _relative_change(model, train=False)
    plain = _model("FRN", padding_aware=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        control = _relative_change(plain, train=False)
    # bf16 convs round differently per canvas size; the padding leak is far larger.
    assert max(change.values()) < 0.05, change
    assert min(control.values()) > 4 * max(change.values()), (change, control)


def test_padding_aware_norms_with_a_meta_architecture_that_records_no_sizes_are_refused():
    cfg = small_cfg("FRN")
    cfg.MODEL.PADDING_AWARE_NORM = True
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    with pytest.raises(ValueError, match="META_ARCHITECTURE 'GeneralizedRCNN' does not record"):
        build_model(cfg)


def test_padding_aware_training_step_gives_finite_losses_and_gradients():
    model = _model("FRN", padding_aware=True)
    model.train()
    with EventStorage():
        losses = model(_inputs([A_SIZE, B_SIZE], with_targets=True))
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
