"""A Mask R-CNN mask head whose convs end in norm-act slots."""

from __future__ import annotations

from collections.abc import Mapping

import fvcore.nn.weight_init as weight_init
from detectron2.config import CfgNode, configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec
from detectron2.modeling import ROI_MASK_HEAD_REGISTRY
from detectron2.modeling.roi_heads.mask_head import BaseMaskRCNNHead, MaskRCNNConvUpsampleHead
from torch import nn

from ..layers.norm_act import NormSpec, get_norm_act
from ._slots import activation_module, norm_options

__all__ = ["FRNMaskRCNNConvUpsampleHead"]


@ROI_MASK_HEAD_REGISTRY.register()
class FRNMaskRCNNConvUpsampleHead(MaskRCNNConvUpsampleHead):
    """``MaskRCNNConvUpsampleHead`` whose 3x3 convs end in slots of ROI_MASK_HEAD.NORM.

    The slots are built for per-region features: a process may have no foreground RoI, and
    SyncBN then weighs each process by its RoIs.

    (R, C, 14, 14) region features -> (R, num_classes, 28, 28) mask logits. The deconv keeps
    stock's bare ReLU: it has no norm before it and its own bias sets the threshold, so
    there is nothing for a TLU to replace. Losses and inference are the stock head's.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: list[int],
        conv_norm: NormSpec = "",
        norm_options: Mapping[str, object] | None = None,
        **kwargs: object,
    ) -> None:
        # Skip the stock __init__ (it builds the stock layers) but keep its base's
        # loss_weight / vis_period handling.
        BaseMaskRCNNHead.__init__(self, **kwargs)
        if not conv_dims:
            raise ValueError("conv_dims of FRNMaskRCNNConvUpsampleHead must be non-empty")
        options = dict(norm_options or {})

        self.conv_norm_relus = []
        cur_channels = input_shape.channels
        for k, conv_dim in enumerate(conv_dims[:-1]):
            slot = get_norm_act(conv_norm, conv_dim, act=True, **options)
            conv = Conv2d(
                cur_channels,
                conv_dim,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=slot.norm is None,
                norm=slot.norm,
                activation=activation_module(slot.activation),
            )
            self.add_module(f"mask_fcn{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            cur_channels = conv_dim

        self.deconv = ConvTranspose2d(
            cur_channels, conv_dims[-1], kernel_size=2, stride=2, padding=0
        )
        self.add_module("deconv_relu", nn.ReLU())
        cur_channels = conv_dims[-1]

        self.predictor = Conv2d(cur_channels, num_classes, kernel_size=1, stride=1, padding=0)

        for layer in self.conv_norm_relus + [self.deconv]:
            weight_init.c2_msra_fill(layer)
        # As stock: a small normal init for the mask logits.
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: ShapeSpec) -> dict[str, object]:
        """The stock head's arguments plus the norm's options for its conv slots."""
        ret = super().from_config(cfg, input_shape)
        ret["norm_options"] = norm_options(cfg, ret["conv_norm"], regions=True)
        return ret
