"""Make frn-det's norm names valid NORM values for stock detectron2 and its projects.

detectron2 builds every norm through ``detectron2.layers.get_norm(norm, channels)``, whose
table of names is fixed inside the function, and most modules bind that function at import
(``from detectron2.layers import get_norm`` in the ResNet, FPN, RegNet, box and mask heads,
RetinaNet, the semantic segmentation heads, ASPP, and the PointRend, DeepLab and
Panoptic-DeepLab projects). ``register_with_detectron2()`` replaces it, without editing
detectron2, in ``detectron2.layers``, ``detectron2.layers.batch_norm`` and every imported
module that holds it; modules imported later get the new one from ``detectron2.layers``::

    import frn_det

    frn_det.register_with_detectron2()
    cfg.MODEL.RESNETS.NORM = "FRN"  # stock build_resnet_backbone now accepts it
    cfg.MODEL.FPN.NORM = "FRN"

The replacement hands detectron2's own names (and callables, and None) to the original
function, so stock configs build exactly what they built before; any other name in
frn-det's registry (``frn_det.registered_norms()``, ``frn_det.register_norm``) is built by
the registry.

**What "FRN" means in a stock component.** Stock components apply their own ReLU after
the module ``get_norm`` returns (or nothing, where no activation follows), so a fused
norm+activation cannot be used there: ``get_norm("FRN", C)`` gives FRN *without* TLU, and a
stock ResNet, FPN or head computes FRN+ReLU where detectron2 has norm+ReLU. The paper's
ablations find FRN+ReLU worse than FRN+TLU (as are BN+TLU and GN+TLU); to get FRN+TLU use
frn-det's FRN-aware components (``frn_det.use_frn_components(cfg)`` or the configs in
``configs/``), which ask the registry for norm-act slots. In Python (lazy) configs a layer
can also be passed directly, e.g. ``norm=functools.partial(FilterResponseNorm2d, tlu=False)``,
which needs no registration because detectron2 accepts callables.

Limitations: every module-level name bound to detectron2's function is rebound, aliases
included (``from detectron2.layers import get_norm as gn``), but a reference kept anywhere
else (a default argument, a closure, a class attribute, another library's wrapper around
it) keeps the stock behaviour. Options given to ``register_with_detectron2`` are
process-wide, not per config.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable
from typing import Any

import detectron2.layers
import detectron2.layers.batch_norm
from torch import nn

from .layers.norm_act import NormSpec, get_norm_act, registered_norms

__all__ = ["Detectron2Registration", "register_with_detectron2", "unregister_from_detectron2"]

# Captured once, at import: the function every module holds before anything is replaced.
_STOCK_GET_NORM: Callable[[NormSpec, int], nn.Module | None] = detectron2.layers.batch_norm.get_norm

_lock = threading.RLock()
# None while not registered; else the keyword options given to the registry's builders.
_options: dict[str, Any] | None = None


def get_norm(norm: NormSpec, out_channels: int) -> nn.Module | None:
    """``detectron2.layers.get_norm`` that also builds the names of frn-det's registry.

    Installed in detectron2's modules by ``register_with_detectron2``. detectron2's own
    names, callables and None go to detectron2's function unchanged; other registered
    names are built by ``frn_det.get_norm_act(norm, out_channels, act=False)``, i.e. with
    no activation fused in: "FRN" gives ``FilterResponseNorm2d(out_channels, tlu=False)``.

    Args:
        norm: a norm name, a callable ``channels -> module``, or None.
        out_channels: number of channels C of the (N, C, H, W) maps it normalizes.
    Returns:
        the norm module, or None for "" and None.
    """
    try:
        return _STOCK_GET_NORM(norm, out_channels)
    except KeyError:
        # Stock get_norm raises a bare KeyError(norm) for names outside its table.
        if not isinstance(norm, str) or norm not in registered_norms():
            accepted = ", ".join(repr(n) for n in registered_norms())
            raise KeyError(
                f"unknown norm {norm!r} for detectron2.layers.get_norm; accepted names are "
                f"{accepted} (detectron2's own and frn-det's registry)"
            ) from None
    return get_norm_act(norm, out_channels, act=False, **(_options or {})).norm


get_norm.__wrapped__ = _STOCK_GET_NORM  # type: ignore[attr-defined]


def _replace_everywhere(old: Callable, new: Callable) -> None:
    """Point every module-level name bound to ``old`` at ``new``, in all imported modules."""
    this_module = sys.modules[__name__]
    for module in list(sys.modules.values()):
        if not isinstance(module, types.ModuleType) or module is this_module:
            continue
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            if value is old:
                setattr(module, attr, new)


class Detectron2Registration:
    """What ``register_with_detectron2`` returns: undoes that call with ``remove()`` or at
    the end of a ``with`` block.

    The call that installed frn-det's ``get_norm`` uninstalls it; a later call made while
    registered only restores the options that were in force before it. ``remove()`` is
    idempotent and does nothing once ``unregister_from_detectron2`` has run.
    """

    def __init__(self, installed: bool, previous_options: dict[str, Any] | None) -> None:
        self._installed = installed
        self._previous_options = previous_options
        self._removed = False

    def remove(self) -> None:
        """Undo the ``register_with_detectron2`` call that returned this handle."""
        global _options
        with _lock:
            if self._removed or _options is None:
                self._removed = True
                return
            self._removed = True
            if self._installed:
                unregister_from_detectron2()
            else:
                _options = self._previous_options

    def __enter__(self) -> Detectron2Registration:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def register_with_detectron2(**options: Any) -> Detectron2Registration:
    """Make every name of frn-det's norm registry a valid NORM value for detectron2.

    Replaces ``detectron2.layers.get_norm`` (see this module's docstring) so that stock
    detectron2 components and projects that call it (PointRend, DeepLab,
    Panoptic-DeepLab, your own) accept "FRN" in MODEL.RESNETS.NORM, MODEL.FPN.NORM,
    MODEL.ROI_BOX_HEAD.NORM, MODEL.ROI_MASK_HEAD.NORM, MODEL.SEM_SEG_HEAD.NORM, ...

    There "FRN" is FRN without TLU followed by the component's own ReLU: FRN+ReLU, which
    the paper's ablations find worse than FRN+TLU. FRN+TLU needs frn-det's FRN-aware
    components (``frn_det.use_frn_components(cfg)``). detectron2's own names build exactly
    the stock modules.

    Safe to call more than once: later calls only replace the options. Undo with
    ``unregister_from_detectron2()``, the returned handle's ``remove()``, or a ``with``
    block::

        with frn_det.register_with_detectron2(learnable_eps=True):
            model = build_model(cfg)

    Args:
        options: keyword options for the builders of every name the registry builds here,
            as ``frn_det.get_norm_act`` takes them: FRN's ``eps`` and ``learnable_eps``
            (``frn_det.layers.norm_config_options("FRN", cfg)`` reads them from MODEL.FRN).
            Stock names take none; a norm whose builder does not take one raises TypeError.
    Returns:
        a handle that undoes this call.
    """
    global _options
    with _lock:
        previous = _options
        if previous is None:
            _replace_everywhere(_STOCK_GET_NORM, get_norm)
        _options = dict(options)
        return Detectron2Registration(installed=previous is None, previous_options=previous)


def unregister_from_detectron2() -> None:
    """Put detectron2's own ``get_norm`` back everywhere, including in modules imported
    while registered; frn-det's names are rejected by it again. Does nothing when not
    registered."""
    global _options
    with _lock:
        if _options is None:
            return
        _replace_everywhere(get_norm, _STOCK_GET_NORM)
        _options = None
