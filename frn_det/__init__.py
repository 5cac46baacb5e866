"""frn-det: Filter Response Normalization (FRN + TLU) for detectron2.

Importing the package registers its norms and components with detectron2's registries.
"""

from ._detectron2 import require_detectron2

require_detectron2()

from . import data, modeling  # noqa: E402,F401  (registers datasets and components)
from .config import add_frn_config  # noqa: E402
from .integration import register_with_detectron2, unregister_from_detectron2  # noqa: E402
from .layers import (  # noqa: E402
    TLU,
    FilterResponseNorm1d,
    FilterResponseNorm2d,
    NormSpec,
    get_norm_act,
    register_norm,
    registered_norms,
)
from .modeling import use_frn_components  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "TLU",
    "add_frn_config",
    "use_frn_components",
    "FilterResponseNorm1d",
    "FilterResponseNorm2d",
    "NormSpec",
    "get_norm_act",
    "register_norm",
    "register_with_detectron2",
    "registered_norms",
    "unregister_from_detectron2",
]
