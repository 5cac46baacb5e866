"""EvoNorm in whole detectors: every frn-det component, training, inference, the optimizer."""

from __future__ import annotations

import pytest
import torch
from detectron2.modeling import build_model

from frn_det.layers import EvoNormB0, EvoNormS0
from frn_det.solver import get_optimizer_params

from .helpers import shapes, small_cfg
from .test_models import SIZE, batch, train_step
from .test_padding_aware import _model, _relative_change

NORMS = {"EvoNormS0": EvoNormS0, "EvoNormB0": EvoNormB0}


def _evonorms(module: torch.nn.Module, cls: type) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in module.named_modules() if isinstance(m, cls)}


@pytest.mark.parametrize("retinanet", [False, True], ids=["mask_rcnn", "retinanet"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_detector_with_evonorm_everywhere_trains_one_step_and_infers(norm, retinanet):
    torch.manual_seed(0)
    model = build_model(small_cfg(norm, retinanet=retinanet))
    layers = _evonorms(model, NORMS[norm])
    sites = ["backbone.bottom_up", "backbone.fpn_lateral", "backbone.fpn_output"]
    sites += ["head.cls_subnet"] if retinanet else ["rpn_head", "box_head", "mask_head"]
    for site in sites:
        assert any(name.startswith(site) or f".{site}" in name for name in layers), site
    # the activation-like term where stock has a ReLU, the bare norm where it has none
    assert {m.act for m in layers.values()} == {True, False}
    assert all(not m.act for n, m in layers.items() if "fpn_" in n or ".shortcut" in n)

    losses = train_step(model)
    assert losses and all(torch.isfinite(v) for v in losses.values()), losses
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    model.eval()
    with torch.no_grad():
        outputs = model(batch(with_targets=False))
    assert len(outputs) == 2
    for out in outputs:
        instances = out["instances"]
        assert instances.image_size == (SIZE, SIZE)
        assert torch.isfinite(instances.scores).all()
        assert instances.has("pred_boxes") and (retinanet or instances.has("pred_masks"))


def test_b0_running_variance_moves_in_training_and_is_used_in_eval():
    model = build_model(small_cfg("EvoNormB0"))
    stem = model.backbone.bottom_up.stem.conv1.norm
    train_step(model)
    assert not torch.equal(stem.running_var, torch.ones_like(stem.running_var))
    before = stem.running_var.clone()
    model.eval()
    with torch.no_grad():
        model(batch(with_targets=False))
    assert torch.equal(stem.running_var, before)


@pytest.mark.parametrize("norm", list(NORMS))
def test_optimizer_gives_evonorm_parameters_weight_decay_norm(norm):
    model = build_model(small_cfg(norm))
    groups = get_optimizer_params(model, base_lr=0.1, weight_decay=1e-4, weight_decay_norm=0.0)
    decay = {p: g["weight_decay"] for g in groups for p in g["params"]}
    layers = _evonorms(model, NORMS[norm])
    params = [p for m in layers.values() for p in m.parameters()]
    assert {n for m in layers.values() for n, _ in m.named_parameters()} == {"weight", "bias", "v"}
    assert {decay[p] for p in params} == {0.0}
    assert decay[model.backbone.bottom_up.stem.conv1.weight] == 1e-4


@pytest.mark.parametrize(
    ("norm", "train"), [("EvoNormS0", True), ("EvoNormS0", False), ("EvoNormB0", False)]
)
def test_padding_aware_evonorm_features_are_the_same_alone_and_batched(norm, train):
    # B0 in eval mode only: its training statistics depend on the batch by design.
    model = _model(norm, padding_aware=True)
    if norm == "EvoNormB0":
        for m in _evonorms(model, EvoNormB0).values():
            m.running_var.uniform_(0.5, 2.0)
    change = _relative_change(model, train)
    assert set(change) == {"p2", "p3", "p4", "p5", "p6"}
    assert max(change.values()) < 1e-5, change
    plain = _model(norm, padding_aware=False)
    control = _relative_change(plain, train)
    assert min(control.values()) > 1e-3, control
    assert shapes(model) == shapes(plain)  # checkpoints load either way
