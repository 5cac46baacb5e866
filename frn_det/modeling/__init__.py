"""detectron2 components whose norm sites are norm-act slots (FRN+TLU or any stock norm).

Importing this package registers them with detectron2's registries:

- BACKBONE_REGISTRY: build_frn_resnet_backbone, build_frn_resnet_fpn_backbone,
  build_frn_retinanet_resnet_fpn_backbone
- ROI_BOX_HEAD_REGISTRY: FRNConvFCHead; ROI_MASK_HEAD_REGISTRY: FRNMaskRCNNConvUpsampleHead
- META_ARCH_REGISTRY: FRNGeneralizedRCNN, FRNRetinaNet (they record image sizes for
  padding-aware layers); RPN_HEAD_REGISTRY: FRNRPNHead

``use_frn_components(cfg)`` swaps a config's stock component names for these.
"""

from .backbone import (
    FRNBasicBlock,
    FRNBasicStem,
    FRNBottleneckBlock,
    build_frn_resnet_backbone,
    build_frn_resnet_fpn_backbone,
    build_frn_retinanet_resnet_fpn_backbone,
)
from .box_head import FRNConvFCHead
from .components import FRN_COMPONENTS, use_frn_components
from .mask_head import FRNMaskRCNNConvUpsampleHead
from .meta_arch import FRNGeneralizedRCNN
from .retinanet import FRNRetinaNet, FRNRetinaNetHead
from .rpn import FRNRPNHead

__all__ = [
    "FRN_COMPONENTS",
    "FRNBasicBlock",
    "FRNBasicStem",
    "FRNBottleneckBlock",
    "FRNConvFCHead",
    "FRNGeneralizedRCNN",
    "FRNMaskRCNNConvUpsampleHead",
    "FRNRPNHead",
    "FRNRetinaNet",
    "FRNRetinaNetHead",
    "build_frn_resnet_backbone",
    "build_frn_resnet_fpn_backbone",
    "build_frn_retinanet_resnet_fpn_backbone",
    "use_frn_components",
]
