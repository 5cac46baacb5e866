"""detectron2's FPN on the slot-built ResNet, with FPN norms taken from the norm-act registry.

FPN's lateral and output convs have a norm and no activation, so they get the slot's norm
half (FRN without TLU). detectron2's ``FPN`` accepts a callable norm; for "" it receives ""
so that its convs keep their biases exactly as stock.
"""

from __future__ import annotations

import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7

from ...layers import padding
from ...layers.norm_act import NormSpec, get_norm_act
from .._slots import norm_options
from .resnet import build_frn_resnet_backbone

__all__ = [
    "PaddingAwareLastLevelP6P7",
    "build_frn_resnet_fpn_backbone",
    "build_frn_retinanet_resnet_fpn_backbone",
    "fpn_norm",
]


def fpn_norm(cfg: CfgNode) -> NormSpec:
    """The ``norm`` argument for detectron2's ``FPN``: "" or ``channels -> norm module``."""
    name = cfg.MODEL.FPN.NORM
    if name == "":
        # FPN decides its conv biases by ``norm == ""``; a callable would drop them.
        return ""
    options = norm_options(cfg, name)
    return lambda channels: get_norm_act(name, channels, act=False, **options).norm


class PaddingAwareLastLevelP6P7(LastLevelP6P7):
    """RetinaNet's P6/P7 (stock convs and names) with P6 and P7 zero in the padding.

    Their biases make the padding non-zero, and P7's 3x3 conv reads P6's padding at the
    border. (N, C, H, W) res5 or P5 -> [P6, P7].
    """

    def forward(self, c5):
        p6 = padding.zero_padding(self.p6(c5), self)
        p7 = padding.zero_padding(self.p7(F.relu(p6)), self)
        return [p6, p7]


def _padding_aware(fpn: FPN, cfg: CfgNode) -> FPN:
    """Zero the padding after FPN convs that have no norm (FPN.NORM ""): their biases."""
    if cfg.MODEL.PADDING_AWARE_NORM and cfg.MODEL.FPN.NORM == "":
        for conv in list(fpn.lateral_convs) + list(fpn.output_convs):
            conv.norm = padding.ZeroPadding()
    return fpn


@BACKBONE_REGISTRY.register()
def build_frn_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """``build_resnet_fpn_backbone`` (P2-P6, max-pooled P6) on ``build_frn_resnet_backbone``."""
    fpn = FPN(
        bottom_up=build_frn_resnet_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=fpn_norm(cfg),
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
    return _padding_aware(fpn, cfg)


@BACKBONE_REGISTRY.register()
def build_frn_retinanet_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """``build_retinanet_resnet_fpn_backbone`` (P3-P7 from res5) on the slot-built ResNet.

    P6/P7 stay stock (biased convs, ReLU between them, no norm).
    """
    bottom_up = build_frn_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    top_block = PaddingAwareLastLevelP6P7 if cfg.MODEL.PADDING_AWARE_NORM else LastLevelP6P7
    fpn = FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=fpn_norm(cfg),
        top_block=top_block(bottom_up.output_shape()["res5"].channels, out_channels),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
    return _padding_aware(fpn, cfg)
