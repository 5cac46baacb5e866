"""frn_det.solver: FRN parameters are norm parameters for SOLVER.WEIGHT_DECAY_NORM."""

from __future__ import annotations

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.layers.batch_norm import LayerNorm as D2LayerNorm
from torch import nn

from frn_det.config import add_frn_config
from frn_det.layers import (
    TLU,
    FilterResponseNorm1d,
    FilterResponseNorm2d,
    register_norm,
    unregister_norm,
)
from frn_det.solver import build_optimizer, get_optimizer_params


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.frn = FilterResponseNorm2d(8, learnable_eps=True)
        self.conv2 = nn.Conv2d(8, 8, 1, bias=False)
        self.frn_plain = FilterResponseNorm2d(8, tlu=False)
        self.tlu = TLU(8)
        self.fc = nn.Linear(8, 4)
        self.fc_frn = FilterResponseNorm1d(4)
        self.bn = nn.BatchNorm2d(8)
        self.gn = nn.GroupNorm(2, 8)
        self.d2_ln = D2LayerNorm(8)


def _cfg(**solver):
    cfg = add_frn_config(get_cfg())
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def _decay_of(optimizer):
    return {p: group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}


def _norm_params(net):
    return [
        p
        for m in (net.frn, net.frn_plain, net.tlu, net.fc_frn, net.bn, net.gn, net.d2_ln)
        for p in m.parameters()
    ]


def test_frn_gamma_beta_tau_and_learned_eps_get_weight_decay_norm():
    net = _Net()
    assert len(list(net.frn.parameters())) == 4  # gamma, beta, tau, learned eps
    decay = _decay_of(build_optimizer(_cfg(), net))
    for module in (net.frn, net.frn_plain, net.tlu, net.fc_frn):
        for name, p in module.named_parameters():
            assert decay[p] == 0.0, name


def test_conv_and_linear_weights_get_weight_decay():
    net = _Net()
    decay = _decay_of(build_optimizer(_cfg(), net))
    for module in (net.conv, net.conv2, net.fc):
        for name, p in module.named_parameters():
            assert decay[p] == pytest.approx(1e-4), name


def test_torch_and_detectron2_norms_get_weight_decay_norm_too():
    net = _Net()
    decay = _decay_of(build_optimizer(_cfg(WEIGHT_DECAY_NORM=3e-5), net))
    for p in _norm_params(net):
        assert decay[p] == pytest.approx(3e-5)
    # What SyncBN resolves to on CPU; it subclasses BatchNorm2d.
    groups = get_optimizer_params(NaiveSyncBatchNorm(4), weight_decay=1.0, weight_decay_norm=0.5)
    assert [g["weight_decay"] for g in groups] == [0.5]


def test_every_trainable_parameter_is_in_exactly_one_group():
    net = _Net()
    net.conv2.weight.requires_grad_(False)
    optimizer = build_optimizer(_cfg(), net)
    listed = [p for group in optimizer.param_groups for p in group["params"]]
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert len(listed) == len(set(listed)) == len(trainable)
    assert set(listed) == set(trainable)


def test_groups_are_merged_by_hyperparameters():
    optimizer = build_optimizer(_cfg(), _Net())
    assert len(optimizer.param_groups) == 2  # decayed and norm


def test_bias_overrides_apply_after_the_norm_rule():
    net = _Net()
    cfg = _cfg(BIAS_LR_FACTOR=2.0, WEIGHT_DECAY_BIAS=0.0)
    optimizer = build_optimizer(cfg, net)
    lr = {p: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay = _decay_of(optimizer)
    assert lr[net.conv.bias] == pytest.approx(0.2) and decay[net.conv.bias] == 0.0
    assert lr[net.frn.bias] == pytest.approx(0.2)  # FRN's beta is named bias
    assert lr[net.conv.weight] == pytest.approx(0.1)


def test_sgd_settings_come_from_the_config():
    cfg = _cfg(MOMENTUM=0.8, NESTEROV=True)
    optimizer = build_optimizer(cfg, _Net())
    assert isinstance(optimizer, torch.optim.SGD)
    for group in optimizer.param_groups:
        assert group["momentum"] == 0.8 and group["nesterov"] is True
        assert group["lr"] == pytest.approx(0.1)


def test_gradient_clipping_is_applied_when_enabled():
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1e-3
    net = nn.Linear(4, 1)
    optimizer = build_optimizer(cfg, net)
    net(torch.full((2, 4), 100.0)).sum().backward()
    optimizer.step()
    assert net.weight.grad.norm() <= 1e-3 * 1.0001


def test_conflicting_bias_overrides_are_refused():
    with pytest.raises(ValueError, match="bias"):
        get_optimizer_params(_Net(), base_lr=0.1, weight_decay_bias=0.0, overrides={"bias": {}})


def test_the_classes_of_a_newly_registered_norm_get_weight_decay_norm():
    class Scale(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(channels))

    net = nn.Sequential(nn.Conv2d(3, 4, 1), Scale(4))
    assert _decay_of(build_optimizer(_cfg(), net))[net[1].scale] == pytest.approx(1e-4)
    register_norm("scale", Scale, norm_types=(Scale,))
    try:
        decay = _decay_of(build_optimizer(_cfg(), net))
    finally:
        unregister_norm("scale")
    assert decay[net[1].scale] == 0.0 and decay[net[0].weight] == pytest.approx(1e-4)
