"""An RPN head whose shared 3x3 conv(s) may end in a norm-act slot (MODEL.RPN.NORM)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from detectron2.config import CfgNode, configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import RPN_HEAD_REGISTRY
from detectron2.modeling.proposal_generator.rpn import StandardRPNHead

from ..layers.norm_act import NormSpec, get_norm_act
from ._slots import activation_module, norm_options, require_frn_config

__all__ = ["FRNRPNHead"]


@RPN_HEAD_REGISTRY.register()
class FRNRPNHead(StandardRPNHead):
    """``StandardRPNHead`` with conv -> slot of ``norm`` where stock has conv -> ReLU.

    ``norm=""`` builds exactly the stock head. The conv keeps its bias under a norm because
    the stock initialisation sets every conv bias. One norm module serves all FPN levels.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        box_dim: int = 4,
        conv_dims: Sequence[int] = (-1,),
        norm: NormSpec = "",
        norm_options: Mapping[str, object] | None = None,
    ) -> None:
        # Read by _get_rpn_conv, which the stock __init__ calls; plain attributes may be
        # set on a Module before its __init__.
        self._norm = norm
        self._norm_options = dict(norm_options or {})
        super().__init__(
            in_channels=in_channels, num_anchors=num_anchors, box_dim=box_dim, conv_dims=conv_dims
        )

    def _get_rpn_conv(self, in_channels: int, out_channels: int) -> Conv2d:
        slot = get_norm_act(self._norm, out_channels, act=True, **self._norm_options)
        return Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=1,
            padding=1,
            norm=slot.norm,
            activation=activation_module(slot.activation),
        )

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: list[ShapeSpec]) -> dict[str, object]:
        """The stock head's arguments plus MODEL.RPN.NORM and its options."""
        require_frn_config(cfg)  # first: it names the fix when MODEL.RPN.NORM is missing
        ret = super().from_config(cfg, input_shape)
        norm = cfg.MODEL.RPN.NORM
        ret.update(norm=norm, norm_options=norm_options(cfg, norm))
        return ret
