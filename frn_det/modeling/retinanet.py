"""RetinaNet whose head subnets end in norm-act slots of MODEL.RETINANET.NORM."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import CycleBatchNormList, ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.meta_arch.retinanet import RetinaNet, RetinaNetHead
from torch import nn

from ..layers.norm_act import NormAct, NormSpec, get_norm_act
from ._slots import activation_module, norm_options
from .meta_arch import RecordsImageSizes

__all__ = ["FRNRetinaNet", "FRNRetinaNetHead"]

logger = logging.getLogger(__name__)

# The names for which stock RetinaNetHead keeps one set of BN statistics per FPN level
# (shared affine); every other norm is shared across levels, as stock.
_PER_LEVEL_BN_NORMS = ("BN", "SyncBN")


class FRNRetinaNetHead(RetinaNetHead):
    """``RetinaNetHead`` whose subnets are ``[conv, *slot]`` repeated, slot = norm + act.

    For "" and detectron2's norms the Sequentials hold exactly stock's modules at stock's
    indices (``cls_subnet.0`` conv, ``.1`` norm, ``.2`` ReLU, ...); with FRN each conv is
    followed by one FRN+TLU module. BN/SyncBN get stock's per-level ``CycleBatchNormList``
    (of the registry's BN class, so SyncBN works where the registry makes it work).
    ``forward`` is the stock head's: list of (N, C, Hi, Wi) -> logits and box deltas.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: list[ShapeSpec],
        num_classes: int,
        num_anchors: int,
        conv_dims: list[int],
        norm: NormSpec = "",
        prior_prob: float = 0.01,
        norm_options: Mapping[str, object] | None = None,
    ) -> None:
        # The stock __init__ would call detectron2's get_norm, which knows no FRN.
        nn.Module.__init__(self)
        self._num_features = len(input_shape)
        options = dict(norm_options or {})
        in_dims = [input_shape[0].channels] + list(conv_dims[:-1])
        self.cls_subnet = nn.Sequential(*self._subnet_layers(in_dims, conv_dims, norm, options))
        self.bbox_subnet = nn.Sequential(*self._subnet_layers(in_dims, conv_dims, norm, options))
        self.cls_score = nn.Conv2d(
            conv_dims[-1], num_anchors * num_classes, kernel_size=3, stride=1, padding=1
        )
        self.bbox_pred = nn.Conv2d(
            conv_dims[-1], num_anchors * 4, kernel_size=3, stride=1, padding=1
        )

        for modules in (self.cls_subnet, self.bbox_subnet, self.cls_score, self.bbox_pred):
            for layer in modules.modules():
                if isinstance(layer, nn.Conv2d):
                    torch.nn.init.normal_(layer.weight, mean=0, std=0.01)
                    torch.nn.init.constant_(layer.bias, 0)
        # Focal loss starts stable when every anchor's score begins at the prior.
        torch.nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    def _slot(self, norm: NormSpec, channels: int, options: dict[str, object]) -> NormAct:
        slot = get_norm_act(norm, channels, act=True, **options)
        if isinstance(norm, str) and norm in _PER_LEVEL_BN_NORMS:
            per_level = CycleBatchNormList(
                length=self._num_features, bn_class=type(slot.norm), num_features=channels
            )
            return slot._replace(norm=per_level)
        if isinstance(slot.norm, nn.modules.batchnorm._BatchNorm):
            logger.warning(
                f"Shared BatchNorm (type={type(slot.norm)}) may not work well in RetinaNetHead."
            )
        return slot

    def _subnet_layers(
        self,
        in_dims: list[int],
        out_dims: list[int],
        norm: NormSpec,
        options: dict[str, object],
    ) -> list[nn.Module]:
        layers: list[nn.Module] = []
        for in_channels, out_channels in zip(in_dims, out_dims, strict=True):
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1))
            slot = self._slot(norm, out_channels, options)
            if slot.norm is not None:
                layers.append(slot.norm)
            activation = activation_module(slot.activation)
            if activation is not None:
                layers.append(activation)
        return layers

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: list[ShapeSpec]) -> dict[str, object]:
        """The stock head's arguments plus the norm's options for its slots."""
        ret = super().from_config(cfg, input_shape)
        ret["norm_options"] = norm_options(cfg, ret["norm"])
        return ret


@META_ARCH_REGISTRY.register()
class FRNRetinaNet(RecordsImageSizes, RetinaNet):
    """detectron2's ``RetinaNet`` with ``FRNRetinaNetHead``, recording its batch's image
    sizes for padding-aware layers (``frn_det.modeling.meta_arch``); the rest is stock."""

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, object]:
        """Stock arguments, with the head rebuilt from MODEL.RETINANET.NORM by the registry."""
        # Stock from_config builds a RetinaNetHead through detectron2's get_norm, which
        # rejects FRN; let it build a norm-free one and replace it.
        stock_cfg = cfg.clone()
        stock_cfg.defrost()
        stock_cfg.MODEL.RETINANET.NORM = ""
        ret = super().from_config(stock_cfg)
        backbone_shape = ret["backbone"].output_shape()
        feature_shapes = [backbone_shape[f] for f in cfg.MODEL.RETINANET.IN_FEATURES]
        ret["head"] = FRNRetinaNetHead(cfg, feature_shapes)
        return ret
