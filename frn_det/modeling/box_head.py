"""A Fast R-CNN box head whose conv and fully connected layers end in norm-act slots."""

from __future__ import annotations

from collections.abc import Mapping

import fvcore.nn.weight_init as weight_init
import numpy as np
from detectron2.config import CfgNode, configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import ROI_BOX_HEAD_REGISTRY
from detectron2.modeling.roi_heads import FastRCNNConvFCHead
from torch import nn

from ..layers.norm_act import NormAct, NormSpec, get_activation, get_fc_norm_act, get_norm_act
from ._slots import activation_module, norm_options

__all__ = ["AFTER_FC_CHOICES", "FRNConvFCHead"]

AFTER_FC_CHOICES = ("TLU", "FRN")


@ROI_BOX_HEAD_REGISTRY.register()
class FRNConvFCHead(FastRCNNConvFCHead):
    """``FastRCNNConvFCHead`` built from norm-act slots of ROI_BOX_HEAD.NORM.

    Each 3x3 conv is followed by the conv slot (stock: norm + ReLU), built for per-region
    features (SyncBN weighs each process by its RoIs). After each fc, ``after_fc`` decides:
    "TLU" puts the norm's bare activation where stock has its ReLU module ``fc_relu{k}``
    (a per-channel TLU for FRN, the ReLU itself for stock norms); "FRN" puts the fc slot,
    for FRN an (N, C) FRN+TLU with learned eps as ``fc_norm{k}``. For detectron2's norms the
    modules and their names are stock's either way.
    Input (R, C, H, W) region features; output (R, fc_dims[-1]), or (R, C', H, W) when
    there are no fc layers. ``forward`` and ``output_shape`` are the stock head's.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        conv_dims: list[int],
        fc_dims: list[int],
        conv_norm: NormSpec = "",
        norm_options: Mapping[str, object] | None = None,
        fc_norm_options: Mapping[str, object] | None = None,
        after_fc: str = "TLU",
    ) -> None:
        # The stock __init__ would build the stock layers; only its base is wanted here.
        nn.Sequential.__init__(self)
        if not conv_dims and not fc_dims:
            raise ValueError("FRNConvFCHead needs at least one conv or fc layer, got none")
        if after_fc not in AFTER_FC_CHOICES:
            raise ValueError(
                f"MODEL.FRN.AFTER_FC must be one of {', '.join(map(repr, AFTER_FC_CHOICES))}, "
                f"got {after_fc!r}"
            )
        options = dict(norm_options or {})
        fc_options = dict(fc_norm_options or {})
        self._output_size = (input_shape.channels, input_shape.height, input_shape.width)

        self.conv_norm_relus = []
        for k, conv_dim in enumerate(conv_dims):
            slot = get_norm_act(conv_norm, conv_dim, act=True, **options)
            conv = Conv2d(
                self._output_size[0],
                conv_dim,
                kernel_size=3,
                padding=1,
                bias=slot.norm is None,
                norm=slot.norm,
                activation=activation_module(slot.activation),
            )
            self.add_module(f"conv{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            self._output_size = (conv_dim, self._output_size[1], self._output_size[2])

        self.fcs = []
        for k, fc_dim in enumerate(fc_dims):
            if k == 0:
                self.add_module("flatten", nn.Flatten())
            fc = nn.Linear(int(np.prod(self._output_size)), fc_dim)
            self.add_module(f"fc{k + 1}", fc)
            if after_fc == "TLU":
                slot = NormAct(None, get_activation(conv_norm, fc_dim))
            else:
                slot = get_fc_norm_act(conv_norm, fc_dim, act=True, **fc_options)
            if slot.norm is not None:
                self.add_module(f"fc_norm{k + 1}", slot.norm)
            if slot.activation is not None:
                self.add_module(f"fc_relu{k + 1}", activation_module(slot.activation))
            self.fcs.append(fc)
            self._output_size = fc_dim

        for layer in self.conv_norm_relus:
            weight_init.c2_msra_fill(layer)
        for layer in self.fcs:
            weight_init.c2_xavier_fill(layer)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: ShapeSpec) -> dict[str, object]:
        """The stock head's arguments plus the norm's options for its conv and fc slots."""
        ret = super().from_config(cfg, input_shape)
        ret.update(
            norm_options=norm_options(cfg, ret["conv_norm"], regions=True),
            fc_norm_options=norm_options(cfg, ret["conv_norm"], fc=True),
            after_fc=cfg.MODEL.FRN.AFTER_FC,
        )
        return ret
