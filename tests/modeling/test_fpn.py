"""FPN backbones on the slot-built ResNet: FPN norms are FRN without TLU, stock otherwise."""

from __future__ import annotations

import pytest
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling.backbone.fpn import (
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
)

from frn_det.layers import FilterResponseNorm2d
from frn_det.modeling import (
    build_frn_resnet_fpn_backbone,
    build_frn_retinanet_resnet_fpn_backbone,
)

from .helpers import ALL_NORMS, seeded_images, shapes, small_cfg

RGB = ShapeSpec(channels=3)
BUILDERS = {
    "fpn": (build_frn_resnet_fpn_backbone, build_resnet_fpn_backbone),
    "retinanet_fpn": (build_frn_retinanet_resnet_fpn_backbone, build_retinanet_resnet_fpn_backbone),
}
LEVELS = {
    "fpn": {"p2": 16, "p3": 8, "p4": 4, "p5": 2, "p6": 1},
    "retinanet_fpn": {"p3": 8, "p4": 4, "p5": 2, "p6": 1, "p7": 1},
}


def fpn_convs(backbone) -> dict[str, Conv2d]:
    return {n: m for n, m in backbone.named_modules() if isinstance(m, Conv2d) and "fpn_" in n}


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("norm", ALL_NORMS)
def test_fpn_backbone_builds_runs_forward_and_backward_with_every_norm(norm, kind):
    backbone = BUILDERS[kind][0](small_cfg(norm, retinanet=kind != "fpn"), RGB).train()
    out = backbone(seeded_images(2))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        name: (2, 32, size, size) for name, size in LEVELS[kind].items()
    }
    sum(v.square().mean() for v in out.values()).backward()
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_frn_fpn_convs_get_frn_without_tlu_and_no_bias(kind):
    convs = fpn_convs(BUILDERS[kind][0](small_cfg("FRN", retinanet=kind != "fpn"), RGB))
    assert len(convs) == (8 if kind == "fpn" else 6)
    for name, conv in convs.items():
        assert isinstance(conv.norm, FilterResponseNorm2d), name
        assert not conv.norm.tlu, name  # stock has no ReLU after FPN convs
        assert conv.activation is None and conv.bias is None, name


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("norm", ["", "GN"])
def test_stock_fpn_norms_build_detectron2s_fpn(norm, kind):
    cfg = small_cfg(norm, retinanet=kind != "fpn")
    frn, stock = (build(cfg, RGB) for build in BUILDERS[kind])
    assert shapes(frn) == shapes(stock)
    # "" keeps the conv biases, as stock decides them by ``norm == ""``.
    assert all((conv.bias is not None) == (norm == "") for conv in fpn_convs(frn).values())
