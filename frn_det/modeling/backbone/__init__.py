"""Backbones whose norm sites are norm-act slots; importing registers them."""

from .fpn import build_frn_resnet_fpn_backbone, build_frn_retinanet_resnet_fpn_backbone, fpn_norm
from .resnet import FRNBasicBlock, FRNBasicStem, FRNBottleneckBlock, build_frn_resnet_backbone

__all__ = [
    "FRNBasicBlock",
    "FRNBasicStem",
    "FRNBottleneckBlock",
    "build_frn_resnet_backbone",
    "build_frn_resnet_fpn_backbone",
    "build_frn_retinanet_resnet_fpn_backbone",
    "fpn_norm",
]
