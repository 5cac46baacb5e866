"""Which frn-det component stands in for which stock detectron2 component in a config."""

from __future__ import annotations

from detectron2.config import CfgNode

__all__ = ["FRN_COMPONENTS", "use_frn_components"]

# config key -> {stock registered name: frn-det registered name}. Each frn-det component
# builds stock's modules for stock norms, so the swap changes nothing but FRN support.
FRN_COMPONENTS: dict[str, dict[str, str]] = {
    "MODEL.META_ARCHITECTURE": {
        "GeneralizedRCNN": "FRNGeneralizedRCNN",
        "RetinaNet": "FRNRetinaNet",
    },
    "MODEL.BACKBONE.NAME": {
        "build_resnet_backbone": "build_frn_resnet_backbone",
        "build_resnet_fpn_backbone": "build_frn_resnet_fpn_backbone",
        "build_retinanet_resnet_fpn_backbone": "build_frn_retinanet_resnet_fpn_backbone",
    },
    "MODEL.RPN.HEAD_NAME": {"StandardRPNHead": "FRNRPNHead"},
    "MODEL.ROI_BOX_HEAD.NAME": {"FastRCNNConvFCHead": "FRNConvFCHead"},
    "MODEL.ROI_MASK_HEAD.NAME": {"MaskRCNNConvUpsampleHead": "FRNMaskRCNNConvUpsampleHead"},
}


def use_frn_components(cfg: CfgNode) -> CfgNode:
    """Rename the stock components in ``cfg`` to their frn-det counterparts, in place.

    Names without a counterpart (and names already swapped) are left as they are, so the
    call is idempotent. ``cfg`` must be mutable. Returns ``cfg``.
    """
    for key, renames in FRN_COMPONENTS.items():
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        current = node[leaf]
        if current in renames:
            setattr(node, leaf, renames[current])
    return cfg
