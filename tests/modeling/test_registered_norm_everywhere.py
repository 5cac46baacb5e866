"""A name registered with register_norm is a norm everywhere, with no code beyond its entry:
the optimizer gives its parameters SOLVER.WEIGHT_DECAY_NORM, the checkpoint loader knows
which of its parameters are its own, and its config options come from its entry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn

from frn_det.checkpoint import SafeCheckpointer, norm_specific_keys
from frn_det.layers import (
    norm_config_options,
    norm_module_types,
    register_norm,
    registered_norms,
    unregister_norm,
)
from frn_det.solver import build_optimizer

from .helpers import small_cfg

GAIN = 0.25  # MODEL.TOY.GAIN in the tests' config; the layer's own default is 1


class ToyNormAct(nn.Module):
    """A fused norm-act with a parameter no other norm has: ``gain``.

    (N, C, H, W) -> (N, C, H, W): ``relu(x * gamma * gain + beta)`` (no ReLU with act=False).
    """

    def __init__(self, channels: int, act: bool, gain: float = 1.0) -> None:
        super().__init__()
        self.act = act
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.gain = nn.Parameter(torch.full((channels,), gain))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * (self.weight * self.gain).view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return F.relu(y) if self.act else y


def _toy_options(cfg: CfgNode, fc: bool) -> dict[str, object]:
    return {"gain": cfg.MODEL.TOY.GAIN}


def _register_toy() -> str:
    """Register "Toy": its entry is all there is, nothing anywhere else knows it."""
    register_norm(
        "Toy",
        lambda channels, act, **options: ToyNormAct(channels, act, **options),
        fuses_activation=True,
        specific_parameters=("gain",),
        config_options=_toy_options,
    )
    return "Toy"


@pytest.fixture
def toy() -> Iterator[str]:
    """"Toy", registered for the test only."""
    name = _register_toy()
    try:
        yield name
    finally:
        unregister_norm(name)


def _cfg(norm: str) -> CfgNode:
    cfg = small_cfg(norm)
    cfg.MODEL.TOY = CfgNode({"GAIN": GAIN})
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    return cfg


@pytest.fixture
def toy_model(toy: str) -> nn.Module:
    """A small Mask R-CNN whose every NORM key (backbone, FPN, RPN, RoI heads) is "Toy"."""
    torch.manual_seed(0)
    return build_model(_cfg(toy))


def _toy_layers(model: nn.Module) -> dict[str, ToyNormAct]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ToyNormAct)}


def test_its_options_come_from_its_entry(toy, toy_model):
    cfg = _cfg(toy)
    assert norm_config_options(toy, cfg) == {"gain": GAIN}
    layers = _toy_layers(toy_model)
    # the backbone's blocks and stem, the FPN, the RPN head and both RoI heads
    prefixes = ("backbone.bottom_up.stem", "backbone.bottom_up.res", "backbone.fpn_", "proposal_")
    for prefix in (*prefixes, "roi_heads.box_head", "roi_heads.mask_head"):
        assert any(name.startswith(prefix) for name in layers), prefix
    for name, layer in layers.items():
        assert torch.equal(layer.gain, torch.full_like(layer.gain, GAIN)), name
    # MODEL.FRN's options stay FRN's: ToyNormAct would refuse an eps
    assert norm_config_options("FRN", cfg) == {"eps": 1e-6, "learnable_eps": False}


def test_its_parameters_get_weight_decay_norm(toy, toy_model):
    optimizer = build_optimizer(_cfg(toy), toy_model)
    decay = {p: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    layers = _toy_layers(toy_model)
    for name, layer in layers.items():
        for leaf, parameter in layer.named_parameters():
            assert decay[parameter] == 0.0, f"{name}.{leaf}"
    conv = toy_model.backbone.bottom_up.stem.conv1
    assert decay[conv.weight] == pytest.approx(1e-4)
    assert ToyNormAct in norm_module_types()


def test_the_checkpoint_loader_counts_its_own_parameter_as_specific_to_it(toy, toy_model):
    specific = norm_specific_keys(toy_model)
    layers = _toy_layers(toy_model)
    assert {key for key, norm in specific.items() if norm == toy} == {
        f"{name}.gain" for name in layers
    }
    assert not any(key.endswith((".weight", ".bias")) for key in specific)


def test_a_stock_checkpoint_fills_its_convs_and_reports_its_own_parameter_as_expected(
    toy, toy_model, tmp_path, checkpoint_log
):
    torch.manual_seed(1)
    stock = build_model(_cfg("BN"))  # the same network with BN: a stock detectron2 model
    with torch.no_grad():
        for module in stock.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(7.0)
                module.bias.fill_(3.0)
    path = tmp_path / "bn.pth"
    torch.save({"model": stock.state_dict()}, path)
    SafeCheckpointer(toy_model).load(str(path))

    conv = "backbone.bottom_up.res2.0.conv1"
    torch.testing.assert_close(
        toy_model.get_submodule(conv).weight, stock.get_submodule(conv).weight
    )
    # BN's scale and bias share ToyNormAct's names but are not its own: not loaded
    for name, layer in _toy_layers(toy_model).items():
        assert torch.equal(layer.weight, torch.ones_like(layer.weight)), name
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias)), name

    messages = [record.getMessage() for record in checkpoint_log]
    (report,) = [m for m in messages if "trained with another norm than Toy" in m]
    layers = len(_toy_layers(toy_model))
    assert f"Not in it, as expected: {layers} parameters specific to Toy (gain)." in report
    # that line explains every tensor of the Toy layers: fvcore lists none as missing (or
    # BN's statistics as unused)
    listed = [m for m in messages if "not found in the checkpoint" in m or "not used by" in m]
    assert not listed


def test_unregistering_leaves_no_trace():
    name = _register_toy()
    try:
        build_model(_cfg(name))
        assert ToyNormAct in norm_module_types()
    finally:
        unregister_norm(name)
    assert name not in registered_norms()
    assert ToyNormAct not in norm_module_types()
