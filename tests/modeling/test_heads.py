"""Box, mask, RPN and RetinaNet heads: FRN+TLU where stock has norm+ReLU, stock otherwise."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from detectron2.layers import CycleBatchNormList, ShapeSpec
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.modeling.proposal_generator.rpn import StandardRPNHead
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, MaskRCNNConvUpsampleHead
from torch import nn

from frn_det.layers import TLU, FilterResponseNorm1d, FilterResponseNorm2d
from frn_det.modeling import (
    FRNConvFCHead,
    FRNMaskRCNNConvUpsampleHead,
    FRNRetinaNetHead,
    FRNRPNHead,
)

from .helpers import ALL_NORMS, module_types, shapes, small_cfg

C = 32  # small_cfg's FPN width
STOCK_PARITY_NORMS = ["", "GN", "BN", "FrozenBN"]


def box_head(cls, cfg):
    return cls(cfg, ShapeSpec(channels=C, height=7, width=7))


def mask_head(cls, cfg):
    return cls(cfg, ShapeSpec(channels=C, height=14, width=14))


def rpn_head(cls, cfg):
    return cls(cfg, [ShapeSpec(channels=C, stride=s) for s in (4, 8, 16, 32, 64)])


def retinanet_head(cls, cfg):
    return cls(cfg, [ShapeSpec(channels=C, stride=s) for s in (8, 16, 32, 64, 128)])


def regions(n: int, size: int) -> torch.Tensor:
    return torch.randn(n, C, size, size, generator=torch.Generator().manual_seed(0))


def levels(sizes: tuple[int, ...]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(2, C, s, s, generator=gen) for s in sizes]


def run_mask_head(head, x):
    return head.layers(x)


def run_dense_head(head, x):
    first, second = head(x)
    return [*first, *second]


# name -> (frn-det class, stock class, builder, input maker, forward, expected output shapes)
HEADS: dict[str, tuple] = {
    "box": (FRNConvFCHead, FastRCNNConvFCHead, box_head, lambda: regions(6, 7), None, [(6, 64)]),
    "mask": (
        FRNMaskRCNNConvUpsampleHead,
        MaskRCNNConvUpsampleHead,
        mask_head,
        lambda: regions(4, 14),
        run_mask_head,
        [(4, 3, 28, 28)],
    ),
    "rpn": (
        FRNRPNHead,
        StandardRPNHead,
        rpn_head,
        lambda: levels((16, 8, 4, 2, 1)),
        run_dense_head,
        [(2, 3, s, s) for s in (16, 8, 4, 2, 1)] + [(2, 12, s, s) for s in (16, 8, 4, 2, 1)],
    ),
    "retinanet": (
        FRNRetinaNetHead,
        RetinaNetHead,
        retinanet_head,
        lambda: levels((8, 4, 2, 1, 1)),
        run_dense_head,
        [(2, 27, s, s) for s in (8, 4, 2, 1, 1)] + [(2, 36, s, s) for s in (8, 4, 2, 1, 1)],
    ),
}


def forward(name: str, head: nn.Module, x) -> list[torch.Tensor]:
    run: Callable | None = HEADS[name][4]
    out = run(head, x) if run is not None else head(x)
    return out if isinstance(out, list) else [out]


def cfg_for(name: str, norm: str):
    return small_cfg(norm, retinanet=name == "retinanet")


@pytest.mark.parametrize("norm", ALL_NORMS)
@pytest.mark.parametrize("name", list(HEADS))
def test_head_builds_runs_forward_and_backward_with_every_norm(name, norm):
    frn_cls, _, build, make_input, _, expected = HEADS[name]
    head = build(frn_cls, cfg_for(name, norm)).train()
    out = forward(name, head, make_input())
    assert [tuple(o.shape) for o in out] == expected
    sum(o.square().mean() for o in out).backward()
    assert [n for n, p in head.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize(
    "name, norm",
    # Stock's RPN head has no norm: only MODEL.RPN.NORM="" has a stock counterpart.
    [(name, norm) for name in HEADS for norm in STOCK_PARITY_NORMS if name != "rpn" or not norm],
)
def test_stock_norm_head_is_detectron2s_head_module_for_module(name, norm):
    frn_cls, stock_cls, build, make_input, _, _ = HEADS[name]
    cfg = cfg_for(name, norm)
    stock, frn = build(stock_cls, cfg).eval(), build(frn_cls, cfg).eval()
    stock_types, frn_types = module_types(stock), module_types(frn)
    assert (stock_types.pop(""), frn_types.pop("")) == (stock_cls, frn_cls)
    assert frn_types == stock_types
    assert shapes(frn) == shapes(stock)
    frn.load_state_dict(stock.state_dict())
    x = make_input()
    with torch.no_grad():
        for got, expected in zip(forward(name, frn, x), forward(name, stock, x), strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_frn_box_head_has_frn_tlu_after_convs_and_a_tlu_after_each_fc_by_default():
    cfg = small_cfg("FRN")
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    assert cfg.MODEL.FRN.AFTER_FC == "TLU"
    head = box_head(FRNConvFCHead, cfg)
    for conv in head.conv_norm_relus:
        assert isinstance(conv.norm, FilterResponseNorm2d) and conv.norm.tlu
        assert conv.activation is None and conv.bias is None
    children = [name for name, _ in head.named_children()]
    # where stock has its ReLU modules: a per-channel TLU, no norm over (N, C) features
    assert children == ["conv1", "conv2", "flatten", "fc1", "fc_relu1", "fc2", "fc_relu2"]
    for activation in (head.fc_relu1, head.fc_relu2):
        assert type(activation) is TLU and activation.num_features == cfg.MODEL.ROI_BOX_HEAD.FC_DIM


def test_frn_box_head_with_after_fc_frn_has_learned_eps_frn_tlu_after_fcs():
    cfg = small_cfg("FRN")
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.FRN.AFTER_FC = "FRN"
    head = box_head(FRNConvFCHead, cfg)
    children = [name for name, _ in head.named_children()]
    assert children == ["conv1", "conv2", "flatten", "fc1", "fc_norm1", "fc2", "fc_norm2"]
    for norm in (head.fc_norm1, head.fc_norm2):
        # (N, C) features: eps must be learned or x_hat collapses to sign(x).
        assert isinstance(norm, FilterResponseNorm1d)
        assert norm.tlu and norm.learned_eps is not None


def test_after_fc_of_a_stock_norm_is_the_stock_relu_either_way():
    for after_fc in ("TLU", "FRN"):
        cfg = small_cfg("GN")
        cfg.MODEL.FRN.AFTER_FC = after_fc
        head = box_head(FRNConvFCHead, cfg)
        assert isinstance(head.fc_relu1, nn.ReLU) and not hasattr(head, "fc_norm1")


def test_an_unknown_after_fc_is_refused_with_the_accepted_values():
    cfg = small_cfg("FRN")
    cfg.MODEL.FRN.AFTER_FC = "frn1d"
    accepted = r"MODEL.FRN.AFTER_FC must be one of 'TLU', 'FRN', got 'frn1d'"
    with pytest.raises(ValueError, match=accepted):
        box_head(FRNConvFCHead, cfg)


def test_box_head_fc_frn_follows_fc_learnable_eps_and_conv_frn_follows_eps():
    cfg = small_cfg("FRN")
    cfg.MODEL.FRN.AFTER_FC = "FRN"
    cfg.MODEL.FRN.FC_LEARNABLE_EPS = False
    cfg.MODEL.FRN.EPS = 1e-3
    head = box_head(FRNConvFCHead, cfg)
    assert head.fc_norm1.learned_eps is None
    assert head.conv1.norm.eps == 1e-3 and head.fc_norm1.eps == 1e-3


def test_frn_mask_head_has_frn_tlu_after_each_conv_and_stock_deconv_relu():
    head = mask_head(FRNMaskRCNNConvUpsampleHead, small_cfg("FRN"))
    assert len(head.conv_norm_relus) == 2
    for conv in head.conv_norm_relus:
        assert isinstance(conv.norm, FilterResponseNorm2d) and conv.norm.tlu
        assert conv.activation is None and conv.bias is None
    assert isinstance(head.deconv_relu, nn.ReLU)


@pytest.mark.parametrize("conv_dims", [[-1], [-1, 16]])
def test_frn_rpn_head_conv_gets_frn_tlu_in_place_of_relu(conv_dims):
    cfg = small_cfg("FRN")
    cfg.MODEL.RPN.CONV_DIMS = conv_dims
    head = rpn_head(FRNRPNHead, cfg)
    convs = [head.conv] if len(conv_dims) == 1 else list(head.conv)
    assert len(convs) == len(conv_dims)
    for conv in convs:
        assert isinstance(conv.norm, FilterResponseNorm2d) and conv.norm.tlu
        assert conv.activation is None


def test_stock_norm_rpn_head_gets_the_stock_norm_then_relu():
    head = rpn_head(FRNRPNHead, small_cfg("GN"))
    assert isinstance(head.conv.norm, nn.GroupNorm)
    assert isinstance(head.conv.activation, nn.ReLU)


def test_frn_retinanet_subnets_are_convs_each_followed_by_frn_tlu():
    head = retinanet_head(FRNRetinaNetHead, small_cfg("FRN", retinanet=True))
    for subnet in (head.cls_subnet, head.bbox_subnet):
        kinds = [type(m) for m in subnet]
        assert kinds == [nn.Conv2d, FilterResponseNorm2d] * 2
        assert all(m.tlu for m in subnet if isinstance(m, FilterResponseNorm2d))


@pytest.mark.parametrize("norm", ["BN", "SyncBN"])
def test_retinanet_bn_heads_keep_stock_per_level_statistics(norm):
    head = retinanet_head(FRNRetinaNetHead, small_cfg(norm, retinanet=True))
    per_level = [m for m in head.cls_subnet if isinstance(m, CycleBatchNormList)]
    assert len(per_level) == 2
    assert all(len(m) == 5 for m in per_level)
