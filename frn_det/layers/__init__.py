"""FRN and EvoNorm layers, their padding-aware forms (``padding``) and the norm-act registry."""

from . import padding
from .evonorm import EvoNormB0, EvoNormS0, PaddingAwareEvoNormB0, PaddingAwareEvoNormS0
from .frn import (
    TLU,
    FilterResponseNorm1d,
    FilterResponseNorm2d,
    PaddingAwareFilterResponseNorm2d,
    PaddingAwareTLU,
    frn_impl,
    frn_reference,
    get_frn_impl,
    set_frn_impl,
)
from .norm_act import (
    NormAct,
    get_activation,
    get_fc_norm_act,
    get_norm_act,
    register_norm,
    registered_norms,
    unregister_norm,
)

__all__ = [
    "TLU",
    "EvoNormB0",
    "EvoNormS0",
    "FilterResponseNorm1d",
    "FilterResponseNorm2d",
    "NormAct",
    "PaddingAwareEvoNormB0",
    "PaddingAwareEvoNormS0",
    "PaddingAwareFilterResponseNorm2d",
    "PaddingAwareTLU",
    "frn_impl",
    "frn_reference",
    "get_frn_impl",
    "get_activation",
    "get_fc_norm_act",
    "get_norm_act",
    "padding",
    "register_norm",
    "registered_norms",
    "set_frn_impl",
    "unregister_norm",
]
