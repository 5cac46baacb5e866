"""train.padding_aware_norm / padding_aware(model): the lazy form of MODEL.PADDING_AWARE_NORM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from frn_det.engine.lazy import load_lazy_config, padding_aware
from frn_det.layers import PaddingAwareFilterResponseNorm2d, PaddingAwareTLU, padding
from frn_det.modeling import FRNGeneralizedRCNN

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "new_baselines"


def _load(name: str):
    return LazyConfig.load(str(CONFIGS / name))


def _types(model: torch.nn.Module, prefix: str) -> set[type]:
    return {type(m) for n, m in model.named_modules() if n.startswith(prefix)}


def test_padding_aware_frn_lazy_model_has_padding_aware_slots_and_records_sizes():
    cfg = _load("mask_rcnn_R_50_FPN_100ep_LSJ_frn.py")
    padding_aware(cfg.model)
    padding_aware(cfg.model)  # idempotent
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert isinstance(model, FRNGeneralizedRCNN)
    backbone = _types(model, "backbone.")
    assert {PaddingAwareFilterResponseNorm2d, PaddingAwareTLU} <= backbone
    fpn = {type(m.norm) for n, m in model.backbone.named_children() if n.startswith("fpn_")}
    assert fpn == {PaddingAwareFilterResponseNorm2d}
    # per-region features stay plain
    assert PaddingAwareFilterResponseNorm2d not in _types(model, "roi_heads.")


def test_padding_aware_gn_lazy_model_and_the_train_key():
    path = CONFIGS / "mask_rcnn_R_50_FPN_100ep_LSJ_gn.py"
    cfg = load_lazy_config(path, ["train.padding_aware_norm=True"])
    assert cfg.train.padding_aware_norm is True
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert padding.PaddingAwareGroupNorm in _types(model, "backbone.")


def test_a_stock_stem_cannot_be_made_padding_aware():
    cfg = _load("mask_rcnn_R_50_FPN_100ep_LSJ_frn.py")
    cfg.model.backbone.bottom_up.stem._target_ = "detectron2.modeling.backbone.BasicStem"
    with pytest.raises(ValueError, match="bottom_up.stem is .*BasicStem.*frn_det_components"):
        padding_aware(cfg.model)
