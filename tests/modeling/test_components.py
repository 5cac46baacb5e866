"""Registration by import and the config helper that swaps stock names for frn-det's."""

from __future__ import annotations

import pytest
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    ROI_BOX_HEAD_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
    RPN_HEAD_REGISTRY,
    build_backbone,
)

from frn_det.modeling import FRN_COMPONENTS, use_frn_components

from .helpers import zoo_cfg

REGISTRY_OF_KEY = {
    "MODEL.META_ARCHITECTURE": META_ARCH_REGISTRY,
    "MODEL.BACKBONE.NAME": BACKBONE_REGISTRY,
    "MODEL.RPN.HEAD_NAME": RPN_HEAD_REGISTRY,
    "MODEL.ROI_BOX_HEAD.NAME": ROI_BOX_HEAD_REGISTRY,
    "MODEL.ROI_MASK_HEAD.NAME": ROI_MASK_HEAD_REGISTRY,
}


def test_importing_frn_det_modeling_registers_every_component_under_its_name():
    assert FRN_COMPONENTS.keys() == REGISTRY_OF_KEY.keys()
    for key, renames in FRN_COMPONENTS.items():
        for stock_name, frn_name in renames.items():
            assert stock_name in REGISTRY_OF_KEY[key], stock_name
            assert frn_name in REGISTRY_OF_KEY[key], frn_name


def test_expected_registered_names():
    assert {
        "build_frn_resnet_backbone",
        "build_frn_resnet_fpn_backbone",
        "build_frn_retinanet_resnet_fpn_backbone",
    } <= {name for name, _ in BACKBONE_REGISTRY}
    assert "FRNConvFCHead" in ROI_BOX_HEAD_REGISTRY
    assert "FRNMaskRCNNConvUpsampleHead" in ROI_MASK_HEAD_REGISTRY
    assert "FRNRetinaNet" in META_ARCH_REGISTRY
    assert "FRNGeneralizedRCNN" in META_ARCH_REGISTRY
    assert "FRNRPNHead" in RPN_HEAD_REGISTRY


@pytest.mark.parametrize(
    "config_path, expected",
    [
        (
            "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
            {
                "META_ARCHITECTURE": "FRNGeneralizedRCNN",
                "BACKBONE.NAME": "build_frn_resnet_fpn_backbone",
                "RPN.HEAD_NAME": "FRNRPNHead",
                "ROI_BOX_HEAD.NAME": "FRNConvFCHead",
                "ROI_MASK_HEAD.NAME": "FRNMaskRCNNConvUpsampleHead",
            },
        ),
        (
            "COCO-Detection/retinanet_R_50_FPN_3x.yaml",
            {
                "META_ARCHITECTURE": "FRNRetinaNet",
                "BACKBONE.NAME": "build_frn_retinanet_resnet_fpn_backbone",
            },
        ),
        (
            "COCO-Detection/faster_rcnn_R_50_DC5_3x.yaml",
            {"BACKBONE.NAME": "build_frn_resnet_backbone", "ROI_BOX_HEAD.NAME": "FRNConvFCHead"},
        ),
    ],
)
def test_use_frn_components_swaps_stock_names_and_is_idempotent(config_path, expected):
    cfg = use_frn_components(zoo_cfg(config_path))
    for key, value in expected.items():
        node = cfg.MODEL
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    assert use_frn_components(cfg.clone()) == cfg


def test_use_frn_components_leaves_names_without_a_counterpart_alone():
    cfg = zoo_cfg("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    cfg.MODEL.BACKBONE.NAME = "my_backbone"
    cfg.MODEL.ROI_MASK_HEAD.NAME = "PointRendMaskHead"
    use_frn_components(cfg)
    assert cfg.MODEL.BACKBONE.NAME == "my_backbone"
    assert cfg.MODEL.ROI_MASK_HEAD.NAME == "PointRendMaskHead"
    assert cfg.MODEL.ROI_BOX_HEAD.NAME == "FRNConvFCHead"


def test_building_without_add_frn_config_names_the_fix():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_frn_resnet_fpn_backbone"
    with pytest.raises(KeyError, match="add_frn_config"):
        build_backbone(cfg, ShapeSpec(channels=3))
