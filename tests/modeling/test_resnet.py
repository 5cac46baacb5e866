"""The slot-built ResNet: every norm works, FRN sits where stock has norm+ReLU, options apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import build_resnet_backbone
from torch import nn

from frn_det.layers import TLU, FilterResponseNorm2d
from frn_det.modeling import FRNBasicBlock, FRNBottleneckBlock, build_frn_resnet_backbone

from .helpers import ALL_NORMS, frn_modules, seeded_images, zoo_cfg

RGB = ShapeSpec(channels=3)
BASE = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"


def resnet_cfg(norm: str, depth: int = 18, *overrides: object):
    return zoo_cfg(
        BASE,
        [
            "MODEL.RESNETS.DEPTH", depth,
            "MODEL.RESNETS.RES2_OUT_CHANNELS", 64 if depth < 50 else 256,
            "MODEL.RESNETS.NORM", norm,
            "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
            "MODEL.BACKBONE.FREEZE_AT", 0,
            *overrides,
        ],
    )  # fmt: skip


def blocks(resnet: nn.Module) -> list[nn.Module]:
    return [block for stage in resnet.stages for block in stage]


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("norm", ALL_NORMS)
def test_resnet_builds_runs_forward_and_backward_with_every_norm(norm, depth):
    resnet = build_frn_resnet_backbone(resnet_cfg(norm, depth), RGB).train()
    out = resnet(seeded_images(2))
    width = 64 if depth < 50 else 256
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (2, width, 16, 16),
        "res3": (2, width * 2, 8, 8),
        "res4": (2, width * 4, 4, 4),
        "res5": (2, width * 8, 2, 2),
    }
    sum(v.square().mean() for v in out.values()).backward()
    trainable = [(n, p) for n, p in resnet.named_parameters() if p.requires_grad]
    assert trainable
    assert [n for n, p in trainable if p.grad is None] == []


@pytest.mark.parametrize("depth", [18, 50])
def test_frn_tlu_sits_exactly_where_stock_applies_relu_after_a_norm(depth):
    resnet = build_frn_resnet_backbone(resnet_cfg("FRN", depth), RGB)
    last = "conv2" if depth < 50 else "conv3"
    with_relu = {"stem.conv1"}
    without_relu = set()
    for stage_name, stage in zip(resnet.stage_names, resnet.stages, strict=True):
        for i, block in enumerate(stage):
            prefix = f"{stage_name}.{i}"
            with_relu |= {f"{prefix}.conv1"} | ({f"{prefix}.conv2"} if depth >= 50 else set())
            without_relu.add(f"{prefix}.{last}")
            if block.shortcut is not None:
                without_relu.add(f"{prefix}.shortcut")
            # The ReLU after ``out += shortcut`` becomes a per-channel TLU.
            assert isinstance(block.activation, TLU), prefix
            assert block.activation.tau.shape == (block.out_channels,)

    convs = {n: m for n, m in resnet.named_modules() if isinstance(m, Conv2d)}
    assert convs.keys() == with_relu | without_relu
    for name, conv in convs.items():
        assert isinstance(conv.norm, FilterResponseNorm2d), name
        assert conv.norm.tlu == (name in with_relu), name
        assert conv.activation is None, name  # the TLU is fused into the norm


@pytest.mark.parametrize(
    "norm, depth", [("BN", 18), ("GN", 18), ("FrozenBN", 18), ("", 18), ("GN", 50)]
)
def test_stock_norm_resnet_computes_detectron2s_function(norm, depth):
    cfg = resnet_cfg(norm, depth)
    torch.manual_seed(0)
    stock = build_resnet_backbone(cfg, RGB).eval()
    frn = build_frn_resnet_backbone(cfg, RGB).eval()
    frn.load_state_dict(stock.state_dict())
    x = seeded_images(2)
    with torch.no_grad():
        expected, got = stock(x), frn(x)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-5)
    # Stock norms keep the stateless ReLU: nothing is added to the state_dict.
    assert all(b.activation is F.relu for b in blocks(frn))


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_convs_follow_the_config_like_stock(depth):
    # ResNeXt groups, stride in the 1x1 and a dilated res5 for R-50; stock layout for R-18.
    extra = (
        [
            "MODEL.RESNETS.NUM_GROUPS", 32,
            "MODEL.RESNETS.WIDTH_PER_GROUP", 4,
            "MODEL.RESNETS.STRIDE_IN_1X1", False,
            "MODEL.RESNETS.RES5_DILATION", 2,
        ]
        if depth >= 50
        else []
    )  # fmt: skip
    stock_cfg = resnet_cfg("BN", depth, *extra)
    frn_cfg = resnet_cfg("FRN", depth, *extra)
    with torch.device("meta"):
        stock = build_resnet_backbone(stock_cfg, RGB)
        frn = build_frn_resnet_backbone(frn_cfg, RGB)

    def layout(model):
        return {
            n: (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                m.groups, m.bias is None)
            for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d)
        }  # fmt: skip

    assert layout(frn) == layout(stock)
    assert frn.output_shape() == stock.output_shape()


def test_frn_options_from_the_config_reach_every_frn_layer():
    cfg = resnet_cfg("FRN", 18, "MODEL.FRN.EPS", 1e-4, "MODEL.FRN.LEARNABLE_EPS", True)
    norms = frn_modules(build_frn_resnet_backbone(cfg, RGB))
    assert norms
    assert all(m.eps == 1e-4 and m.learned_eps is not None for m in norms.values())


@pytest.mark.parametrize("norm", ["FRN", "GN"])
@pytest.mark.parametrize("depth", [18, 50])
def test_zero_init_last_norm_makes_every_block_start_as_its_shortcut(norm, depth):
    cfg = resnet_cfg(norm, depth, "MODEL.RESNETS.ZERO_INIT_LAST_NORM", True)
    resnet = build_frn_resnet_backbone(cfg, RGB)
    x = resnet.stem(seeded_images(2))
    with torch.no_grad():
        for block in blocks(resnet):
            last = block.conv2 if isinstance(block, FRNBasicBlock) else block.conv3
            assert torch.count_nonzero(last.norm.weight) == 0
            shortcut = block.shortcut(x) if block.shortcut is not None else x
            out = block(x)
            torch.testing.assert_close(out, block.activation(shortcut))
            x = out


def test_zero_init_last_norm_without_a_norm_is_an_error_naming_the_key():
    cfg = resnet_cfg("", 18, "MODEL.RESNETS.ZERO_INIT_LAST_NORM", True)
    with pytest.raises(ValueError, match="ZERO_INIT_LAST_NORM"):
        build_frn_resnet_backbone(cfg, RGB)


def test_deformable_conv_is_rejected_with_an_error_naming_the_key():
    cfg = resnet_cfg("FRN", 50, "MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, True, True, True])
    with pytest.raises(NotImplementedError, match="DEFORM_ON_PER_STAGE"):
        build_frn_resnet_backbone(cfg, RGB)


@pytest.mark.parametrize(
    "key, value",
    [("RES2_OUT_CHANNELS", 256), ("RES5_DILATION", 2), ("NUM_GROUPS", 32)],
)
def test_r18_rejects_what_stock_rejects(key, value):
    cfg = resnet_cfg("FRN", 18, f"MODEL.RESNETS.{key}", value)
    with pytest.raises(ValueError, match=key):
        build_frn_resnet_backbone(cfg, RGB)


def _stage_of(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("norm", ["FRN", "GN"])
def test_freeze_at_stops_learning_but_keeps_the_function_of_batch_free_norms(norm):
    resnet = build_frn_resnet_backbone(resnet_cfg(norm, 18), RGB).train()
    norm_types = {n: type(m) for n, m in resnet.named_modules()}
    x = seeded_images(2)
    with torch.no_grad():
        before = resnet(x)
    resnet.freeze(2)  # what MODEL.BACKBONE.FREEZE_AT=2 does at build time
    with torch.no_grad():
        after = resnet(x)
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
    assert {n: type(m) for n, m in resnet.named_modules()} == norm_types
    frozen = {n for n, p in resnet.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in resnet.named_parameters() if _stage_of(n) in ("stem", "res2")}
    # FRN's TLUs (fused and after the addition) are among the frozen parameters.
    if norm == "FRN":
        assert "res2.0.activation.tau" in frozen and "res2.0.conv1.norm.tau" in frozen
        assert "res3.0.activation.tau" not in frozen


def test_freeze_at_from_the_config_turns_bn_into_frozen_bn_like_stock():
    cfg = resnet_cfg("BN", 18, "MODEL.BACKBONE.FREEZE_AT", 2)
    stock = build_resnet_backbone(cfg, RGB)
    frn = build_frn_resnet_backbone(cfg, RGB)
    kinds = {_stage_of(n): type(m) for n, m in frn.named_modules() if n.endswith(".norm")}
    assert kinds == {
        "stem": FrozenBatchNorm2d,
        "res2": FrozenBatchNorm2d,
        "res3": nn.BatchNorm2d,
        "res4": nn.BatchNorm2d,
        "res5": nn.BatchNorm2d,
    }
    assert {n: type(m) for n, m in frn.named_modules() if n.endswith(".norm")} == {
        n: type(m) for n, m in stock.named_modules() if n.endswith(".norm")
    }
    assert [n for n, p in frn.named_parameters() if not p.requires_grad] == [
        n for n, p in stock.named_parameters() if not p.requires_grad
    ]


def test_blocks_are_detectron2_cnn_blocks_usable_in_make_stage():
    from detectron2.modeling.backbone import ResNet

    stage = ResNet.make_stage(
        FRNBottleneckBlock,
        2,
        in_channels=16,
        out_channels=32,
        bottleneck_channels=8,
        stride_per_block=[2, 1],
        norm="FRN",
    )
    out = nn.Sequential(*stage)(torch.randn(1, 16, 8, 8))
    assert out.shape == (1, 32, 4, 4)
