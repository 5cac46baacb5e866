"""Config and model builders shared by the modeling tests (small, CPU-only)."""

from __future__ import annotations

import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from torch import nn

import frn_det.modeling  # noqa: F401  (registers the components)
from frn_det.config import add_frn_config
from frn_det.layers import FilterResponseNorm2d, get_norm_act
from frn_det.modeling import use_frn_components

# Every stock norm name a test builds a whole network with; SyncBN runs single-process
# because the registry builds detectron2's naive SyncBN on CPU (plain BN at world size 1).
STOCK_NORMS = ["BN", "GN", "FrozenBN", "SyncBN", ""]
ALL_NORMS = ["FRN", *STOCK_NORMS]


def zoo_cfg(config_path: str, overrides: list[object] | None = None) -> CfgNode:
    """A model-zoo config on CPU with frn-det's keys, ``overrides`` as ``merge_from_list``."""
    cfg = add_frn_config(get_cfg())
    cfg.merge_from_file(model_zoo.get_config_file(config_path))
    cfg.MODEL.DEVICE = "cpu"
    cfg.merge_from_list(overrides or [])
    return cfg


def small_cfg(norm: str = "FRN", depth: int = 18, retinanet: bool = False) -> CfgNode:
    """An frn-det Mask R-CNN (or RetinaNet) config with ``norm`` everywhere, sized for CPU.

    Narrow FPN and heads and few ROIs keep a training step around a second.
    """
    base = (
        "COCO-Detection/retinanet_R_50_FPN_3x.yaml"
        if retinanet
        else "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
    )
    cfg = zoo_cfg(base)
    cfg.merge_from_list(
        [
            "MODEL.WEIGHTS", "",
            "MODEL.BACKBONE.FREEZE_AT", 0,
            "MODEL.RESNETS.DEPTH", depth,
            "MODEL.RESNETS.RES2_OUT_CHANNELS", 64 if depth < 50 else 256,
            "MODEL.RESNETS.NORM", norm,
            "MODEL.FPN.NORM", norm,
            "MODEL.FPN.OUT_CHANNELS", 32,
            "MODEL.RETINANET.NORM", norm,
            "MODEL.RETINANET.NUM_CONVS", 2,
            "MODEL.RETINANET.NUM_CLASSES", 3,
            "MODEL.RPN.NORM", norm,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
            "MODEL.RPN.POST_NMS_TOPK_TEST", 32,
            "MODEL.ROI_HEADS.NUM_CLASSES", 3,
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 16,
            "MODEL.ROI_BOX_HEAD.NORM", norm,
            "MODEL.ROI_BOX_HEAD.NUM_CONV", 2,
            "MODEL.ROI_BOX_HEAD.CONV_DIM", 32,
            "MODEL.ROI_BOX_HEAD.NUM_FC", 1,
            "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
            "MODEL.ROI_MASK_HEAD.NORM", norm,
            "MODEL.ROI_MASK_HEAD.NUM_CONV", 2,
            "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
        ]
    )  # fmt: skip
    return use_frn_components(cfg)


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """state_dict key -> tensor shape."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def module_types(module: nn.Module) -> dict[str, type]:
    """Submodule name -> class, over the whole tree."""
    return {name: type(m) for name, m in module.named_modules()}


def frn_modules(module: nn.Module) -> dict[str, FilterResponseNorm2d]:
    """Every 2d FRN in ``module`` by name."""
    return {n: m for n, m in module.named_modules() if isinstance(m, FilterResponseNorm2d)}


def registry_sync_bn_type() -> type:
    """The class the registry builds for "SyncBN" here (naive SyncBN without CUDA)."""
    return type(get_norm_act("SyncBN", 8).norm)


def seeded_images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) standard-normal images, reproducible."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
