"""For stock norms, frn-det's components build detectron2's model: same keys, shapes, norms.

Each case builds a model-zoo config with detectron2's own components, swaps the component
names with ``use_frn_components`` and builds again. A released detectron2 checkpoint for
that config therefore loads into the frn-det model with nothing missing or unexpected.
"""

from __future__ import annotations

import pytest
import torch
from detectron2.layers import CycleBatchNormList, FrozenBatchNorm2d, NaiveSyncBatchNorm
from detectron2.modeling import build_model
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock
from detectron2.modeling.meta_arch import GeneralizedRCNN
from detectron2.modeling.meta_arch.retinanet import RetinaNet, RetinaNetHead
from detectron2.modeling.proposal_generator.rpn import StandardRPNHead
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, MaskRCNNConvUpsampleHead
from torch import nn

from frn_det.modeling import (
    FRNBasicBlock,
    FRNBasicStem,
    FRNBottleneckBlock,
    FRNConvFCHead,
    FRNGeneralizedRCNN,
    FRNMaskRCNNConvUpsampleHead,
    FRNRetinaNet,
    FRNRetinaNetHead,
    FRNRPNHead,
    use_frn_components,
)

from .helpers import module_types, registry_sync_bn_type, shapes, zoo_cfg

R18 = ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64]

# case -> (model-zoo config, overrides, norm classes the stock model must contain, which
# shows the case exercises those norm sites).
CASES = {
    "mask_rcnn_R_50_FPN_3x": (
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
        [],
        {FrozenBatchNorm2d},
    ),
    "mask_rcnn_R_50_FPN_3x_gn": ("Misc/mask_rcnn_R_50_FPN_3x_gn.yaml", [], {nn.GroupNorm}),
    "mask_rcnn_R_50_FPN_3x_syncbn": (
        "Misc/mask_rcnn_R_50_FPN_3x_syncbn.yaml",
        [],
        {nn.SyncBatchNorm, FrozenBatchNorm2d},
    ),
    "scratch_mask_rcnn_R_50_FPN_3x_gn": (
        "Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml",
        [],
        {nn.GroupNorm},
    ),
    "faster_rcnn_R_50_FPN_3x": (
        "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
        [],
        {FrozenBatchNorm2d},
    ),
    "retinanet_R_50_FPN_3x": (
        "COCO-Detection/retinanet_R_50_FPN_3x.yaml",
        [],
        {FrozenBatchNorm2d},
    ),
    "mask_rcnn_R_101_FPN_3x": (
        "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml",
        [],
        {FrozenBatchNorm2d},
    ),
    # Grouped 3x3 convs and stride in the 1x1 (ResNeXt), dilated res5 (DC5).
    "faster_rcnn_X_101_32x8d_FPN_3x": (
        "COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x.yaml",
        [],
        {FrozenBatchNorm2d},
    ),
    "faster_rcnn_R_50_DC5_3x": (
        "COCO-Detection/faster_rcnn_R_50_DC5_3x.yaml",
        [],
        {FrozenBatchNorm2d},
    ),
    "mask_rcnn_R_18_FPN_frozenbn": (
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
        R18,
        {FrozenBatchNorm2d},
    ),
    "mask_rcnn_R_18_FPN_gn": ("Misc/mask_rcnn_R_50_FPN_3x_gn.yaml", R18, {nn.GroupNorm}),
    "mask_rcnn_R_18_FPN_syncbn": (
        "Misc/mask_rcnn_R_50_FPN_3x_syncbn.yaml",
        R18,
        {nn.SyncBatchNorm},
    ),
    "retinanet_R_50_FPN_gn": (
        "COCO-Detection/retinanet_R_50_FPN_3x.yaml",
        ["MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN", "MODEL.RETINANET.NORM", "GN"],
        {nn.GroupNorm},
    ),
    # Stock keeps per-level BN statistics in the RetinaNet head for BN and SyncBN.
    "retinanet_R_18_FPN_bn": (
        "COCO-Detection/retinanet_R_50_FPN_3x.yaml",
        [*R18, "MODEL.RESNETS.NORM", "BN", "MODEL.RETINANET.NORM", "BN"],
        {nn.BatchNorm2d, CycleBatchNormList},
    ),
    "retinanet_R_18_FPN_syncbn_head": (
        "COCO-Detection/retinanet_R_50_FPN_3x.yaml",
        [*R18, "MODEL.RETINANET.NORM", "SyncBN"],
        {nn.SyncBatchNorm, CycleBatchNormList},
    ),
}

# Stock class -> the frn-det class that replaces it. The registry builds detectron2's
# naive SyncBN on machines without CUDA, where torch's SyncBatchNorm cannot run.
REPLACED = {
    GeneralizedRCNN: FRNGeneralizedRCNN,
    BasicStem: FRNBasicStem,
    BasicBlock: FRNBasicBlock,
    BottleneckBlock: FRNBottleneckBlock,
    FastRCNNConvFCHead: FRNConvFCHead,
    MaskRCNNConvUpsampleHead: FRNMaskRCNNConvUpsampleHead,
    StandardRPNHead: FRNRPNHead,
    RetinaNet: FRNRetinaNet,
    RetinaNetHead: FRNRetinaNetHead,
    nn.SyncBatchNorm: registry_sync_bn_type(),
}
# In the RoI heads SyncBN weighs each process by its RoIs (detectron2's new_baselines
# choice), on every device: the same parameters and buffers as torch's SyncBatchNorm.
REPLACED_IN_ROI_HEADS = {**REPLACED, nn.SyncBatchNorm: NaiveSyncBatchNorm}


def _replacement(name: str, stock_type: type) -> type:
    table = REPLACED_IN_ROI_HEADS if name.startswith("roi_heads.") else REPLACED
    return table.get(stock_type, stock_type)


@pytest.mark.parametrize("case", list(CASES))
def test_stock_config_builds_the_same_state_dict_and_norm_modules_as_detectron2(case):
    config_path, overrides, norm_types = CASES[case]
    # Structure only: on the meta device the weight initialisers cost nothing.
    cfg = zoo_cfg(config_path, [*overrides, "MODEL.DEVICE", "meta"])
    with torch.device("meta"):
        stock = build_model(cfg)
        frn = build_model(use_frn_components(cfg))
    assert shapes(frn) == shapes(stock)

    stock_types, frn_types = module_types(stock), module_types(frn)
    assert norm_types <= set(stock_types.values())
    assert frn_types.keys() == stock_types.keys()
    mismatched = {
        name: (stock_types[name].__name__, frn_types[name].__name__)
        for name in stock_types
        if _replacement(name, stock_types[name]) is not frn_types[name]
    }
    assert mismatched == {}
    for name, module in frn.named_modules():
        if name.startswith("roi_heads.") and isinstance(module, NaiveSyncBatchNorm):
            assert module._stats_mode == "N", name

    # The checkpoint of the stock model loads strictly (keys, shapes; nothing left over).
    result = frn.load_state_dict(stock.state_dict(), strict=True)
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
