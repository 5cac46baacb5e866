"""Python (lazy) configs pass the FRN layer itself as a stock component's norm; no registration."""

from __future__ import annotations

from functools import partial

import detectron2.layers
import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from frn_det import integration
from frn_det.layers import FilterResponseNorm2d

from .conftest import frn_norms

# A stock component applies its own ReLU after the norm, so the layer goes in without TLU.
FRN_NO_TLU = partial(FilterResponseNorm2d, tlu=False)


def test_a_lazy_config_builds_stock_resnet_fpn_with_the_frn_layer_without_registration():
    assert detectron2.layers.get_norm is integration._STOCK_GET_NORM
    features = ["res2", "res3", "res4", "res5"]
    cfg = L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm=FRN_NO_TLU),
            stages=L(ResNet.make_default_stages)(depth=18, norm=FRN_NO_TLU),
            out_features=features,
        ),
        in_features=features,
        out_channels=32,
        norm=FRN_NO_TLU,
        top_block=L(LastLevelMaxPool)(),
    )
    model = instantiate(cfg)

    norms = frn_norms(model)
    # stem 1 + 8 BasicBlocks x 2 + 3 projection shortcuts + FPN 4 lateral + 4 output
    assert len(norms) == 1 + 16 + 3 + 8
    assert not any(norm.tlu for norm in norms.values())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._NormBase) for m in model.modules())

    outputs = model(torch.randn(2, 3, 64, 64))
    assert sorted(outputs) == ["p2", "p3", "p4", "p5", "p6"]
    assert outputs["p2"].shape == (2, 32, 16, 16)
    sum(o.square().mean() for o in outputs.values()).backward()
    assert all(norm.weight.grad is not None for norm in norms.values())
