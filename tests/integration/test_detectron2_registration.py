"""register_with_detectron2: frn-det's names in detectron2's get_norm, stock names unchanged."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from functools import partial

import detectron2.layers
import detectron2.layers.aspp
import detectron2.layers.batch_norm
import detectron2.layers.blocks
import detectron2.modeling.backbone.fpn
import detectron2.modeling.backbone.regnet
import detectron2.modeling.backbone.resnet
import detectron2.modeling.meta_arch.retinanet
import detectron2.modeling.meta_arch.semantic_seg
import detectron2.modeling.roi_heads.box_head
import detectron2.modeling.roi_heads.mask_head
import detectron2.projects.deeplab.resnet
import detectron2.projects.deeplab.semantic_seg
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone
from torch import nn

from frn_det import integration
from frn_det.integration import register_with_detectron2, unregister_from_detectron2
from frn_det.layers import FilterResponseNorm2d, register_norm, unregister_norm


# Both functions are looked up when used: registration rebinds every module-level name that
# holds detectron2's function, a constant of this module included.
def _stock() -> Callable:
    return integration._STOCK_GET_NORM


def _patched() -> Callable:
    return integration.get_norm


# Modules that bind get_norm at import, from detectron2 and its bundled DeepLab project.
BINDERS = [
    detectron2.layers,
    detectron2.layers.batch_norm,
    detectron2.layers.aspp,
    detectron2.layers.blocks,
    detectron2.modeling.backbone.resnet,
    detectron2.modeling.backbone.fpn,
    detectron2.modeling.backbone.regnet,
    detectron2.modeling.roi_heads.box_head,
    detectron2.modeling.roi_heads.mask_head,
    detectron2.modeling.meta_arch.retinanet,
    detectron2.modeling.meta_arch.semantic_seg,
    detectron2.projects.deeplab.resnet,
    detectron2.projects.deeplab.semantic_seg,
]

STOCK_NAMES = ["BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN"]


def _holders(function: Callable) -> set[str]:
    """Names of the imported modules that hold ``function`` at module level."""
    return {
        name
        for name, module in list(sys.modules.items())
        if isinstance(module, types.ModuleType)
        and any(value is function for value in list(getattr(module, "__dict__", {}).values()))
    }


def _fingerprint(module: nn.Module | None) -> tuple:
    """Class, repr and state (names, dtypes, values) of a module built by get_norm."""
    if module is None:
        return (None,)
    state = tuple((k, v.dtype, v.tolist()) for k, v in module.state_dict().items())
    return type(module), repr(module), state


def _stock_specs() -> list:
    return [*STOCK_NAMES, "", None, partial(nn.GroupNorm, 4)]


def test_frn_is_rejected_by_stock_get_norm_before_registration_and_after_unregistration():
    with pytest.raises(KeyError):
        detectron2.layers.get_norm("FRN", 8)
    handle = register_with_detectron2()
    assert isinstance(detectron2.layers.get_norm("FRN", 8), FilterResponseNorm2d)
    handle.remove()
    for module in BINDERS:
        assert module.get_norm is _stock(), module.__name__
    with pytest.raises(KeyError):
        detectron2.layers.get_norm("FRN", 8)


def test_registration_replaces_get_norm_in_every_module_that_imported_it():
    assert detectron2.layers.get_norm is _stock()
    with register_with_detectron2():
        for module in BINDERS:
            assert module.get_norm is _patched(), module.__name__
        # Only frn-det's own reference to the original is left.
        assert _holders(_stock()) == {"frn_det.integration"}
    assert {m.__name__ for m in BINDERS} <= _holders(_stock())
    assert _holders(_patched()) == {"frn_det.integration"}


def test_a_module_imported_while_registered_gets_the_patched_get_norm_and_is_restored():
    name = "frn_det_test_late_import"
    with register_with_detectron2():
        module = types.ModuleType(name)
        sys.modules[name] = module
        try:
            exec("from detectron2.layers import get_norm", module.__dict__)
            assert isinstance(module.get_norm("FRN", 4), FilterResponseNorm2d)
            unregister_from_detectron2()
            assert module.get_norm is _stock()
        finally:
            del sys.modules[name]


@pytest.mark.parametrize("spec", _stock_specs(), ids=repr)
def test_stock_names_build_the_same_modules_while_registered_and_after(spec):
    def build() -> tuple:
        torch.manual_seed(0)
        return _fingerprint(detectron2.layers.get_norm(spec, 64))  # GN: 32 groups

    stock = build()
    with register_with_detectron2():
        assert build() == stock
    assert build() == stock


def test_a_stock_gn_backbone_is_unchanged_by_registration():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = cfg.MODEL.FPN.NORM = "GN"
    cfg.MODEL.RESNETS.OUT_FEATURES = cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32

    def build() -> tuple[str, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
        return str(model), model.state_dict()

    text, state = build()
    with register_with_detectron2():
        registered_text, registered_state = build()
    assert registered_text == text
    assert registered_state.keys() == state.keys()
    assert all(torch.equal(registered_state[k], state[k]) for k in state)


def test_register_twice_is_harmless():
    first = register_with_detectron2()
    second = register_with_detectron2()
    # One layer of patching, not a wrapper around a wrapper.
    assert detectron2.layers.get_norm is _patched()
    assert _patched().__wrapped__ is _stock()
    assert isinstance(detectron2.layers.get_norm("FRN", 8), FilterResponseNorm2d)
    second.remove()
    assert detectron2.layers.get_norm is _patched()  # the first registration still holds
    first.remove()
    assert detectron2.layers.get_norm is _stock()
    first.remove()
    unregister_from_detectron2()
    assert detectron2.layers.get_norm is _stock()


def test_frn_in_a_stock_component_is_frn_without_tlu_followed_by_the_stock_relu(registered):
    stem = BasicStem(3, 8, norm="FRN")
    assert isinstance(stem.conv1.norm, FilterResponseNorm2d)
    assert not stem.conv1.norm.tlu
    x = torch.randn(2, 3, 32, 32)
    conv = stem.conv1
    frn_relu = F.relu(conv.norm(F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)))
    expected = F.max_pool2d(frn_relu, kernel_size=3, stride=2, padding=1)
    torch.testing.assert_close(stem(x), expected)


def test_options_reach_frn_and_a_nested_registration_restores_them():
    with register_with_detectron2(eps=1e-5, learnable_eps=True):
        norm = detectron2.layers.get_norm("FRN", 8)
        assert norm.eps == 1e-5 and norm.learned_eps is not None
        with register_with_detectron2():
            assert detectron2.layers.get_norm("FRN", 8).learned_eps is None
        assert detectron2.layers.get_norm("FRN", 8).learned_eps is not None
    assert detectron2.layers.get_norm is _stock()


def test_a_user_registered_norm_is_usable_in_stock_components(registered):
    register_norm("GN4", lambda channels: nn.GroupNorm(4, channels))
    try:
        stem = BasicStem(3, 8, norm="GN4")
        assert isinstance(stem.conv1.norm, nn.GroupNorm) and stem.conv1.norm.num_groups == 4
    finally:
        unregister_norm("GN4")


def test_an_unknown_name_is_refused_with_the_accepted_names(registered):
    with pytest.raises(KeyError, match="'nope'.*'GN'.*'FRN'"):
        detectron2.layers.get_norm("nope", 8)
