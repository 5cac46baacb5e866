"""What every frn-det component needs from a config and from a norm-act slot."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from torch import nn

from ..layers.norm_act import Activation, NormSpec, norm_config_options

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


def require_frn_config(cfg: CfgNode) -> None:
    """Raise a KeyError naming the fix when ``cfg`` lacks frn-det's keys (add_frn_config)."""
    if "FRN" not in cfg.MODEL or "PADDING_AWARE_NORM" not in cfg.MODEL:
        raise KeyError(
            "cfg.MODEL.FRN is missing: frn-det components read their FRN options from it; "
            "call frn_det.config.add_frn_config(cfg) before merging a config file"
        )


def norm_options(
    cfg: CfgNode, norm: NormSpec = None, *, fc: bool = False, regions: bool = False
) -> dict[str, object]:
    """The keyword options of a component's ``get_norm_act`` calls for ``norm``.

    What the config gives ``norm`` (its registry entry's ``config_options``: MODEL.FRN's
    eps and learned eps for FRN, nothing for stock norms) plus where the slot runs:
    ``regions=True`` for per-region features (RoI heads); otherwise maps of the padded
    batch, padding-aware when MODEL.PADDING_AWARE_NORM is True. ``fc=True`` for the slots
    after fully connected layers. Names the fix when add_frn_config was not called.
    """
    require_frn_config(cfg)
    options = norm_config_options(norm, cfg, fc=fc)
    if regions:
        options["regions"] = True
    elif not fc:
        options["padding_aware"] = bool(cfg.MODEL.PADDING_AWARE_NORM)
        if options["padding_aware"]:
            _check_records_image_sizes(cfg.MODEL.META_ARCHITECTURE)
    return options


def _check_records_image_sizes(name: str) -> None:
    # Padding-aware layers need the batch's image sizes, which only meta-architectures
    # with the RecordsImageSizes mixin record; any other would fail at its first batch.
    from detectron2.modeling import META_ARCH_REGISTRY

    from .meta_arch import RecordsImageSizes

    arch = META_ARCH_REGISTRY.get(name) if name in META_ARCH_REGISTRY else None
    if arch is None or not issubclass(arch, RecordsImageSizes):
        raise ValueError(
            f"MODEL.PADDING_AWARE_NORM is True but MODEL.META_ARCHITECTURE {name!r} does not "
            "record the images' sizes that padding-aware layers need; use FRNGeneralizedRCNN "
            "or FRNRetinaNet (frn_det.use_frn_components(cfg) swaps them in), or a "
            "meta-architecture with frn_det.modeling.meta_arch.RecordsImageSizes"
        )
