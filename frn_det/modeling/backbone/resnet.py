"""ResNet whose every norm site is a norm-act slot, so FRN+TLU can take a norm+ReLU's place.

The blocks mirror detectron2's ``BasicStem``, ``BasicBlock`` and ``BottleneckBlock`` with
one change: where stock code writes ``conv -> norm`` then ``F.relu_``, these ask the
norm-act registry for the slot and give both halves to ``Conv2d(norm=..., activation=...)``.
For detectron2's norms the slot is the stock module plus ``F.relu``, so module names,
state_dict keys and the computed function are detectron2's; for FRN the norm fuses its
TLU, the last conv of the residual branch and the projection shortcut get FRN without TLU,
and a per-channel TLU replaces the ReLU after the residual addition.

The network itself is detectron2's ``ResNet`` (stage naming, ``out_features``, ``freeze``).
"""

from __future__ import annotations

from collections.abc import Mapping

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import ResNet
from torch import nn

from ...layers import padding
from ...layers.norm_act import NormSpec, get_activation, get_norm_act
from .._slots import norm_options

__all__ = [
    "FRNBasicBlock",
    "FRNBasicStem",
    "FRNBottleneckBlock",
    "build_frn_resnet_backbone",
]

_BLOCKS_PER_STAGE = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


def _zero_init_scale(conv: Conv2d, norm: NormSpec) -> None:
    # Start the residual branch at zero so the block begins as the identity ("Accurate,
    # Large Minibatch SGD", Sec. 5.1); detectron2 leaves this commented out in its blocks.
    scale = getattr(conv.norm, "weight", None)
    if scale is None:
        raise ValueError(
            f"MODEL.RESNETS.ZERO_INIT_LAST_NORM needs a norm with a scale (weight) on the "
            f"last conv of each block; norm {norm!r} builds {conv.norm!r}"
        )
    nn.init.zeros_(scale)


class FRNBasicStem(CNNBlockBase):
    """conv 7x7/2 -> norm-act slot -> max-pool 3x3/2: detectron2's ``BasicStem`` via a slot.

    (N, in_channels, H, W) -> (N, out_channels, H/4, W/4). With a padding-aware slot
    (``norm_options["padding_aware"]``) the max-pool sees the padding as it sees the map's
    own border (-inf), and its output is zero in the padding.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 64,
        norm: NormSpec = "BN",
        norm_options: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, 4)
        options = dict(norm_options or {})
        self.padding_aware = bool(options.get("padding_aware", False))
        slot = get_norm_act(norm, out_channels, act=True, **options)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False,
            norm=slot.norm,
            activation=slot.activation,
        )
        weight_init.c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, ceil(H/4), ceil(W/4))."""
        x = self.conv1(x)
        mask = padding.valid_mask(x, self) if self.padding_aware else None
        if mask is None:
            return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        x = F.max_pool2d(x.masked_fill(~mask, float("-inf")), kernel_size=3, stride=2, padding=1)
        # windows wholly in the padding hold -inf; -inf * 0 is NaN, so select, not multiply.
        # Every window of a valid output pixel holds a valid input pixel, so where nothing is
        # padded after the pool (an image 1-3 px short of the canvas) there is no -inf.
        pooled_mask = padding.valid_mask(x, self)
        return x if pooled_mask is None else x.masked_fill(~pooled_mask, 0.0)


class _ResidualBlock(CNNBlockBase):
    """The shortcut and the post-addition activation shared by both block types."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        norm: NormSpec,
        options: Mapping[str, object],
    ) -> None:
        super().__init__(in_channels, out_channels, stride)
        if in_channels != out_channels:
            # Stock applies no ReLU to the projection, so the slot has no activation.
            self.shortcut = Conv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=stride,
                bias=False,
                norm=get_norm_act(norm, out_channels, act=False, **options).norm,
            )
        else:
            self.shortcut = None
        # Replaces stock's F.relu_ after ``out += shortcut``; a module (TLU) for FRN, so it
        # is registered, saved and frozen with the block.
        self.activation = get_activation(
            norm, out_channels, padding_aware=bool(options.get("padding_aware", False))
        )

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H/stride, W/stride)."""
        out = self._residual(x)
        out = out + (self.shortcut(x) if self.shortcut is not None else x)
        return self.activation(out)


class FRNBasicBlock(_ResidualBlock):
    """Two 3x3 convs (ResNet-18/34) built from norm-act slots; see the module docstring."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        norm: NormSpec = "BN",
        norm_options: Mapping[str, object] | None = None,
        zero_init_last_norm: bool = False,
    ) -> None:
        options = dict(norm_options or {})
        super().__init__(in_channels, out_channels, stride, norm, options)
        slot1 = get_norm_act(norm, out_channels, act=True, **options)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=stride,
            padding=1,
            bias=False,
            norm=slot1.norm,
            activation=slot1.activation,
        )
        self.conv2 = Conv2d(
            out_channels,
            out_channels,
            kernel_size=3,
            stride=1,
            padding=1,
            bias=False,
            norm=get_norm_act(norm, out_channels, act=False, **options).norm,
        )
        for layer in (self.conv1, self.conv2, self.shortcut):
            if layer is not None:
                weight_init.c2_msra_fill(layer)
        if zero_init_last_norm:
            _zero_init_scale(self.conv2, norm)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class FRNBottleneckBlock(_ResidualBlock):
    """1x1 -> 3x3 -> 1x1 convs (ResNet-50/101/152) built from norm-act slots.

    Arguments as detectron2's ``BottleneckBlock`` (``bottleneck_channels``, ``num_groups``,
    ``stride_in_1x1``, ``dilation``), plus the slot's ``norm_options`` and
    ``zero_init_last_norm``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: NormSpec = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        norm_options: Mapping[str, object] | None = None,
        zero_init_last_norm: bool = False,
    ) -> None:
        options = dict(norm_options or {})
        super().__init__(in_channels, out_channels, stride, norm, options)
        # MSRA's original models stride in the first 1x1; fb.torch/Caffe2 in the 3x3.
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        slot1 = get_norm_act(norm, bottleneck_channels, act=True, **options)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=slot1.norm,
            activation=slot1.activation,
        )
        slot2 = get_norm_act(norm, bottleneck_channels, act=True, **options)
        self.conv2 = Conv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            norm=slot2.norm,
            activation=slot2.activation,
        )
        self.conv3 = Conv2d(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=get_norm_act(norm, out_channels, act=False, **options).norm,
        )
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                weight_init.c2_msra_fill(layer)
        if zero_init_last_norm:
            _zero_init_scale(self.conv3, norm)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


def _check_resnet_config(cfg: CfgNode) -> None:
    """Reject what stock rejects (R18/R34 limits) and what these blocks do not build."""
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in _BLOCKS_PER_STAGE:
        raise ValueError(
            f"MODEL.RESNETS.DEPTH must be one of {sorted(_BLOCKS_PER_STAGE)}, got {r.DEPTH}"
        )
    if any(r.DEFORM_ON_PER_STAGE):
        raise NotImplementedError(
            "frn-det's ResNet has no deformable-conv block; MODEL.RESNETS.DEFORM_ON_PER_STAGE "
            f"must be all False, got {list(r.DEFORM_ON_PER_STAGE)}"
        )
    if r.RES5_DILATION not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {r.RES5_DILATION}")
    if r.DEPTH in (18, 34):
        for key, value, accepted in (
            ("RES2_OUT_CHANNELS", r.RES2_OUT_CHANNELS, 64),
            ("RES5_DILATION", r.RES5_DILATION, 1),
            ("NUM_GROUPS", r.NUM_GROUPS, 1),
        ):
            if value != accepted:
                raise ValueError(
                    f"MODEL.RESNETS.{key} must be {accepted} for R{r.DEPTH} "
                    f"(BasicBlock), got {value}"
                )


@BACKBONE_REGISTRY.register()
def build_frn_resnet_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> ResNet:
    """detectron2's ``ResNet`` from the same MODEL.RESNETS keys as ``build_resnet_backbone``.

    Norm sites are norm-act slots of MODEL.RESNETS.NORM with its options from the config;
    MODEL.RESNETS.ZERO_INIT_LAST_NORM zero-initialises each block's last scale.
    """
    _check_resnet_config(cfg)
    r = cfg.MODEL.RESNETS
    norm = r.NORM
    options = norm_options(cfg, norm)
    stem = FRNBasicStem(
        in_channels=input_shape.channels,
        out_channels=r.STEM_OUT_CHANNELS,
        norm=norm,
        norm_options=options,
    )
    in_channels = r.STEM_OUT_CHANNELS
    out_channels = r.RES2_OUT_CHANNELS
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stages = []
    for idx, num_blocks in enumerate(_BLOCKS_PER_STAGE[r.DEPTH]):
        is_res5 = idx == 3
        # As stock: res5 keeps res4's resolution when dilated (the DC5 convention).
        dilation = r.RES5_DILATION if is_res5 else 1
        first_stride = 1 if idx == 0 or dilation == 2 else 2
        stage_kwargs: dict[str, object] = {
            "num_blocks": num_blocks,
            "stride_per_block": [first_stride] + [1] * (num_blocks - 1),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "norm": norm,
            "norm_options": options,
            "zero_init_last_norm": r.ZERO_INIT_LAST_NORM,
        }
        if r.DEPTH in (18, 34):
            stage_kwargs["block_class"] = FRNBasicBlock
        else:
            stage_kwargs.update(
                block_class=FRNBottleneckBlock,
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=r.STRIDE_IN_1X1,
                dilation=dilation,
                num_groups=r.NUM_GROUPS,
            )
        stages.append(ResNet.make_stage(**stage_kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    freeze_at = cfg.MODEL.BACKBONE.FREEZE_AT
    resnet = ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=freeze_at)
    if options.get("padding_aware"):
        # freeze() turned the frozen stages' BN into plain FrozenBatchNorm2d
        padding.convert_frozen_batchnorm(resnet)
    return resnet
