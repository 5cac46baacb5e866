"""What every frn-det component needs from a config and from a norm-act slot."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from torch import nn

from ..config import frn_options
from ..layers.norm_act import Activation

Norm = str | Callable[[int], nn.Module]
"""What a NORM argument accepts: a registered name or detectron2's ``channels -> module``."""

# Stock heads put ``nn.ReLU()`` modules (not ``F.relu``) in their Sequentials and Conv2d
# slots; turning the registry's functional ReLU back into that module keeps the module
# tree, its repr and TorchScript behaviour identical to detectron2's.
_MODULE_FORMS: dict[Activation, type[nn.Module]] = {F.relu: nn.ReLU}


class FunctionalActivation(nn.Module):
    """Wraps a stateless activation function so it can sit in an ``nn.Sequential``."""

    def __init__(self, fn: Activation) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def activation_module(activation: Activation | None) -> nn.Module | None:
    """The module form of a slot's activation half (None stays None)."""
    if activation is None or isinstance(activation, nn.Module):
        return activation
    if activation in _MODULE_FORMS:
        return _MODULE_FORMS[activation]()
    return FunctionalActivation(activation)


def norm_options(cfg: CfgNode, fc: bool = False) -> dict[str, object]:
    """``frn_options(cfg, fc)``, with an error that names the fix when MODEL.FRN is missing."""
    if "FRN" not in cfg.MODEL:
        raise KeyError(
            "cfg.MODEL.FRN is missing: frn-det components read their FRN options from it; "
            "call frn_det.config.add_frn_config(cfg) before merging a config file"
        )
    return frn_options(cfg, fc=fc)
