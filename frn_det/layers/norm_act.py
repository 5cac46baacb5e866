"""The one table from normalization names to "norm-act slots".

A slot is what stock detectron2 puts after a convolution: a norm, then a ReLU or nothing.
Components ask for ``get_norm_act(name, channels, act=...)`` with ``act=True`` where
detectron2 applies a ReLU after the norm and ``act=False`` where it does not, and pass the
two halves to ``detectron2.layers.Conv2d(norm=..., activation=...)``. For detectron2's own
names the slot is exactly the stock module plus the stateless ``F.relu``, so parameter
names and checkpoints are unchanged; for a norm that fuses its activation (FRN+TLU) the
norm module does both and the activation half is None.

Two variants of a slot exist beside the plain one. ``padding_aware=True`` asks for the
entry's padding-aware form (statistics over each image's valid pixels, zeros in the
padding; see ``frn_det.layers.padding``); an entry that declares none gets its plain
modules with their output zeroed in the padding, and a warning naming it. ``regions=True``
asks for the form used on per-region features (RoI heads), whose count differs between
processes and may be zero: SyncBN weighs each process by its RoIs there.

The entry of a name is also what the rest of frn-det knows about that norm: which module
classes are norms (the optimizer gives their parameters SOLVER.WEIGHT_DECAY_NORM), which of
their parameters are the norm's own (the checkpoint loader), and which keyword options a
config gives its builders (FRN's come from MODEL.FRN). Registering a name is all it takes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm, get_norm
from detectron2.layers.batch_norm import LayerNorm
from torch import nn

from ..config import frn_options
from . import padding
from .evonorm import EvoNormB0, EvoNormS0, PaddingAwareEvoNormB0, PaddingAwareEvoNormS0
from .frn import (
    TLU,
    FilterResponseNorm1d,
    FilterResponseNorm2d,
    PaddingAwareFilterResponseNorm2d,
    PaddingAwareTLU,
)

logger = logging.getLogger(__name__)

Activation = Callable[[torch.Tensor], torch.Tensor]

NormSpec = str | Callable[[int], nn.Module | None] | None
"""What a norm argument accepts: a registered name, detectron2's ``channels -> module``
callable, or None (no norm, as "")."""

ConfigOptions = Callable[[CfgNode, bool], Mapping[str, object]]
"""``config_options(cfg, fc)``: a norm's builder options from a config (``fc``: for the
(N, C) form after fully connected layers)."""


class NormAct(NamedTuple):
    """A norm-act slot: ``norm`` (module or None) then ``activation`` (callable or None)."""

    norm: nn.Module | None
    activation: Activation | None


@dataclasses.dataclass(frozen=True)
class NormEntry:
    """How one registered name builds its modules.

    builder: ``builder(channels)`` returns the norm, or ``builder(channels, act, **options)``
        when ``fuses_activation`` is True (the norm then applies its own activation when
        ``act`` is True; ``options`` are the keyword options given to ``get_norm_act``,
        e.g. FRN's ``eps`` and ``learnable_eps`` from the config).
    activation: ``activation(channels)`` returns the activation used where stock
        detectron2 applies a ReLU with no norm before it (after a residual addition, after
        a fully connected layer that has no norm). Stateless ``F.relu`` for stock names.
    fc_builder: ``fc_builder(channels, act, **options)`` for (N, C) features of fully
        connected layers, or None where the norm has no such form (stock norms have none).
    padding_aware: the padding-aware form of ``builder`` (same signature), or None where
        the norm declares none (its output is then only zeroed in the padding).
    padding_aware_activation: the padding-aware form of ``activation``; None means
        ``activation`` itself, which must then map 0 to 0 (ReLU does).
    region_builder: the form of ``builder`` for per-region features (RoI heads), or None
        for ``builder`` itself.
    norm_types: the module classes (subclasses included) that are this norm wherever they
        are built, e.g. by hand in a model; the classes of the modules its builders return
        are added as they are built (``norm_module_types``).
    specific_parameters: names of the parameters and buffers of its modules that a
        checkpoint of another norm lacks (FRN's ``tau`` and ``learned_eps``); a norm that
        declares some takes nothing from such a checkpoint (see ``frn_det.checkpoint``).
    config_options: ``config_options(cfg, fc)`` gives the keyword options its builders
        take from a config (FRN's read MODEL.FRN); None: a config gives it none.
    """

    builder: Callable[..., nn.Module | None]
    fuses_activation: bool = False
    activation: Callable[[int], Activation] = lambda channels: F.relu
    fc_builder: Callable[..., nn.Module] | None = None
    padding_aware: Callable[..., nn.Module | None] | None = None
    padding_aware_activation: Callable[[int], Activation] | None = None
    region_builder: Callable[..., nn.Module | None] | None = None
    norm_types: tuple[type[nn.Module], ...] = ()
    specific_parameters: tuple[str, ...] = ()
    config_options: ConfigOptions | None = None


_REGISTRY: dict[str, NormEntry] = {}
# name -> classes of the modules its builders have returned, beyond its declared norm_types.
_BUILT_TYPES: dict[str, set[type[nn.Module]]] = {}


def register_norm(
    name: str,
    builder: Callable[..., nn.Module | None],
    *,
    fuses_activation: bool = False,
    activation: Callable[[int], Activation] | None = None,
    fc_builder: Callable[..., nn.Module] | None = None,
    padding_aware: Callable[..., nn.Module | None] | None = None,
    padding_aware_activation: Callable[[int], Activation] | None = None,
    region_builder: Callable[..., nn.Module | None] | None = None,
    norm_types: tuple[type[nn.Module], ...] = (),
    specific_parameters: tuple[str, ...] = (),
    config_options: ConfigOptions | None = None,
    overwrite: bool = False,
) -> None:
    """Make ``name`` a norm everywhere: in NORM config keys and ``get_norm_act``, for the
    optimizer (SOLVER.WEIGHT_DECAY_NORM), the checkpoint loader and config options.

    See ``NormEntry`` for the meaning of each argument. Registering a name twice is an
    error unless ``overwrite`` is True.
    """
    if not isinstance(name, str):
        raise TypeError(f"norm name must be a str, got {type(name).__name__} {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"norm {name!r} is already registered; pass overwrite=True to replace it")
    for argument, value, expected in (
        ("builder", builder, "channels -> nn.Module"),
        ("activation", activation, "channels -> activation"),
        ("fc_builder", fc_builder, "(channels, act, **options) -> nn.Module"),
        ("padding_aware", padding_aware, "the builder's padding-aware form"),
        ("padding_aware_activation", padding_aware_activation, "channels -> activation"),
        ("region_builder", region_builder, "the builder's form for RoI features"),
        ("config_options", config_options, "(cfg, fc) -> keyword options"),
    ):
        if (value is not None or argument == "builder") and not callable(value):
            raise TypeError(
                f"register_norm({name!r}): {argument} must be callable ({expected}), "
                f"got {type(value).__name__} {value!r}"
            )
    norm_types = tuple(norm_types)
    for cls in norm_types:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(
                f"register_norm({name!r}): norm_types must hold nn.Module subclasses, "
                f"got {type(cls).__name__} {cls!r}"
            )
    if isinstance(specific_parameters, str):
        raise TypeError(
            f"register_norm({name!r}): specific_parameters must be a tuple of names, got the "
            f"str {specific_parameters!r}; write ({specific_parameters!r},)"
        )
    specific_parameters = tuple(specific_parameters)
    for leaf in specific_parameters:
        if not isinstance(leaf, str) or not leaf or "." in leaf:
            raise ValueError(
                f"register_norm({name!r}): specific_parameters must be names of a module's "
                f"own parameters or buffers (such as 'tau', without dots), got {leaf!r}"
            )
    entry = NormEntry(
        builder,
        fuses_activation,
        activation or NormEntry.activation,
        fc_builder,
        padding_aware,
        padding_aware_activation,
        region_builder,
        norm_types,
        specific_parameters,
        config_options,
    )
    _REGISTRY[name] = entry
    _BUILT_TYPES[name] = set()
    _warned_zeroing_only.discard(name)


def unregister_norm(name: str) -> None:
    """Remove a name registered with ``register_norm``."""
    _lookup(name)
    del _REGISTRY[name]
    del _BUILT_TYPES[name]


def registered_norms() -> list[str]:
    """Every name ``get_norm_act`` accepts, in registration order ("" means no norm)."""
    return list(_REGISTRY)


def norm_entry(name: str) -> NormEntry:
    """The entry ``register_norm`` made for ``name`` (KeyError listing the names if none)."""
    return _lookup(name)


def norm_module_types() -> tuple[type[nn.Module], ...]:
    """Every module class that is a registered norm: the declared ``norm_types`` of each
    name and the classes of the modules its builders have returned, in registration order.

    The optimizer gives their parameters SOLVER.WEIGHT_DECAY_NORM (``frn_det.solver``).
    """
    types: dict[type[nn.Module], None] = {}
    for name, entry in _REGISTRY.items():
        types.update(dict.fromkeys(entry.norm_types))
        types.update(dict.fromkeys(_BUILT_TYPES[name]))
    return tuple(types)


def norm_names_of(module: nn.Module) -> list[str]:
    """The registered names ``module`` is a module of (an instance of one of their
    ``norm_types`` or of a class their builders have returned), in registration order."""
    return [
        name
        for name, entry in _REGISTRY.items()
        if isinstance(module, (*entry.norm_types, *_BUILT_TYPES[name]))
    ]


def norm_config_options(norm: NormSpec, cfg: CfgNode, fc: bool = False) -> dict[str, object]:
    """The keyword options a config gives ``norm``'s builders: its entry's
    ``config_options(cfg, fc)`` ({} for a norm that declares none, and for callables).

    ``fc=True`` for the (N, C) form after fully connected layers (``get_fc_norm_act``).
    """
    entry = _entry_for(norm)
    if entry.config_options is None:
        return {}
    return dict(entry.config_options(cfg, fc))


def _lookup(name: str) -> NormEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        accepted = ", ".join(repr(n) for n in _REGISTRY)
        raise KeyError(
            f"unknown norm {name!r}; registered norms are: {accepted} "
            "(frn_det.layers.register_norm adds one)"
        ) from None


def _entry_for(norm: NormSpec) -> NormEntry:
    if norm is None:
        return _REGISTRY[""]
    if callable(norm) and not isinstance(norm, str):
        return NormEntry(norm)
    return _lookup(norm)


def _built(norm: NormSpec, slot: NormAct) -> NormAct:
    """``slot``, after noting the classes of its modules as ``norm``'s (registered names)."""
    if isinstance(norm, str) and norm in _BUILT_TYPES:
        for part in slot:
            if isinstance(part, nn.Module):
                _BUILT_TYPES[norm].add(type(part))
    return slot


_warned_zeroing_only: set[str] = set()


def _warn_zeroing_only(norm: object) -> None:
    name = norm if isinstance(norm, str) else repr(norm)
    if name not in _warned_zeroing_only:
        _warned_zeroing_only.add(name)
        logger.warning(
            f"norm {name!r} declares no padding-aware form (register_norm(..., "
            "padding_aware=...)): its output is zeroed in the padding, but its statistics "
            "still include the padded pixels, so an image's features still depend on its batch"
        )


def _zeroing_activation(activation: Activation) -> Activation:
    """``activation`` followed by zeros in the padding (for activations that move 0)."""
    if activation is F.relu:
        return activation
    if isinstance(activation, nn.Module):
        activation.register_forward_hook(padding.zero_padding_hook)
        return activation

    def zeroed(x: torch.Tensor) -> torch.Tensor:
        return padding.zero_padding(activation(x), zeroed)

    return zeroed


def _padding_aware_slot(
    entry: NormEntry, norm: object, channels: int, act: bool, options: dict
) -> NormAct:
    if entry.padding_aware is None:
        _warn_zeroing_only(norm)
        module = entry.builder(channels, act, **options) if entry.fuses_activation else (
            entry.builder(channels)
        )
        if module is None:
            module = padding.ZeroPadding()
        else:
            module.register_forward_hook(padding.zero_padding_hook)
        activation = None
        if act and not entry.fuses_activation:
            activation = _zeroing_activation(entry.activation(channels))
        return NormAct(module, activation)
    if entry.fuses_activation:
        return NormAct(entry.padding_aware(channels, act, **options), None)
    activation = None
    if act:
        build = entry.padding_aware_activation or entry.activation
        activation = build(channels)
    return NormAct(entry.padding_aware(channels), activation)


def get_norm_act(
    norm: NormSpec,
    channels: int,
    act: bool = True,
    *,
    padding_aware: bool = False,
    regions: bool = False,
    **options: object,
) -> NormAct:
    """The slot for a convolution with ``channels`` outputs.

    Args:
        norm: a registered name, None, or a callable ``channels -> module`` as detectron2's
            ``get_norm`` accepts (it is followed by ReLU like a stock norm).
        act: whether stock detectron2 applies a ReLU after this norm.
        padding_aware: the slot's padding-aware form, for maps of a padded batch (backbone,
            FPN, dense heads); see the module docstring.
        regions: the slot's form for per-region features (RoI heads).
        options: passed to builders of norms that fuse their activation (FRN's ``eps``,
            ``learnable_eps``; ``norm_config_options`` reads them from a config); stock
            norms take none.
    """
    if padding_aware and regions:
        raise ValueError("a slot is either padding_aware (padded maps) or regions (RoIs), not both")
    entry = _entry_for(norm)
    if padding_aware:
        return _built(norm, _padding_aware_slot(entry, norm, channels, act, options))
    builder = entry.region_builder if regions and entry.region_builder else entry.builder
    if entry.fuses_activation:
        return _built(norm, NormAct(builder(channels, act, **options), None))
    return _built(norm, NormAct(builder(channels), entry.activation(channels) if act else None))


def get_fc_norm_act(
    norm: NormSpec,
    channels: int,
    act: bool = True,
    **options: object,
) -> NormAct:
    """The slot after a fully connected layer with ``channels`` outputs.

    Stock detectron2 puts no norm there, only a ReLU; norms with an (N, C) form
    (FRN with learned eps) fill it.
    """
    entry = _entry_for(norm)
    if entry.fc_builder is None:
        return _built(norm, NormAct(None, entry.activation(channels) if act else None))
    return _built(norm, NormAct(entry.fc_builder(channels, act, **options), None))


def get_activation(norm: NormSpec, channels: int, *, padding_aware: bool = False) -> Activation:
    """The activation that replaces a bare ReLU (one with no norm before it) for ``norm``.

    ``F.relu`` for stock names; a per-channel TLU for FRN (after a residual addition). With
    ``padding_aware`` its output is zero in the padding (a TLU's max(0, tau) is not).
    """
    entry = _entry_for(norm)
    if not padding_aware:
        activation = entry.activation(channels)
    elif entry.padding_aware_activation is not None:
        activation = entry.padding_aware_activation(channels)
    else:
        activation = _zeroing_activation(entry.activation(channels))
    return _built(norm, NormAct(None, activation)).activation


def _sync_batch_norm(channels: int) -> nn.Module:
    # torch's SyncBatchNorm raises on CPU tensors; detectron2's naive version all-reduces
    # through torch.distributed and so also works with the gloo backend.
    if torch.cuda.is_available():
        return nn.SyncBatchNorm(channels)
    return NaiveSyncBatchNorm(channels)


def _register_defaults() -> None:
    # The padding-aware form of each stock name: the same parameters and buffers (so
    # checkpoints load either way), statistics over valid pixels, zeros in the padding.
    # Padding-aware classes subclass the stock ones, so norm_types cover both.
    stock = {
        "": (lambda channels: padding.ZeroPadding(), ()),
        "BN": (padding.PaddingAwareBatchNorm2d, (nn.BatchNorm2d,)),
        "FrozenBN": (padding.PaddingAwareFrozenBatchNorm2d, (FrozenBatchNorm2d,)),
        "GN": (lambda channels: padding.PaddingAwareGroupNorm(32, channels), (nn.GroupNorm,)),
        "nnSyncBN": (padding.PaddingAwareSyncBatchNorm, (nn.SyncBatchNorm,)),
        "naiveSyncBN": (padding.PaddingAwareSyncBatchNorm, (NaiveSyncBatchNorm,)),
        "naiveSyncBN_N": (padding.PaddingAwareSyncBatchNorm, (NaiveSyncBatchNorm,)),
        # detectron2's channels-first LN is a plain nn.Module, not a torch norm class.
        "LN": (padding.PaddingAwareLayerNorm, (LayerNorm,)),
    }
    register_norm("", lambda channels: None, padding_aware=stock[""][0])
    for name in ("BN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN"):
        aware, norm_types = stock[name]
        register_norm(
            name,
            lambda channels, name=name: get_norm(name, channels),
            padding_aware=aware,
            norm_types=norm_types,
        )
    register_norm(
        "SyncBN",
        _sync_batch_norm,
        padding_aware=padding.PaddingAwareSyncBatchNorm,
        # Per-region features: the RoIs per process differ (the mask head sees only
        # foreground RoIs, possibly none), so each process is weighted by its count and
        # an empty one is harmless, as detectron2's new_baselines do in their heads.
        region_builder=lambda channels: NaiveSyncBatchNorm(channels, stats_mode="N"),
        norm_types=(nn.SyncBatchNorm, NaiveSyncBatchNorm),
    )
    register_norm(
        "FRN",
        lambda channels, act, **options: FilterResponseNorm2d(channels, tlu=act, **options),
        fuses_activation=True,
        activation=TLU,
        fc_builder=lambda channels, act, **options: FilterResponseNorm1d(
            channels, tlu=act, **options
        ),
        padding_aware=lambda channels, act, **options: PaddingAwareFilterResponseNorm2d(
            channels, tlu=act, **options
        ),
        padding_aware_activation=PaddingAwareTLU,
        # TLU: the per-channel threshold after a residual addition.
        norm_types=(FilterResponseNorm2d, FilterResponseNorm1d, TLU),
        # A BN or GN checkpoint has none of these; its weight and bias are not FRN's.
        specific_parameters=("tau", "learned_eps"),
        config_options=frn_options,
    )
    # EvoNorm fuses its activation-like term (act=True) or leaves it out (act=False). A
    # config gives it no options (MODEL.FRN's are FRN's), so it keeps its own eps unless
    # one is passed to get_norm_act. A bare ReLU (after a residual addition) stays a ReLU.
    for name, plain, aware in (
        ("EvoNormS0", EvoNormS0, PaddingAwareEvoNormS0),
        ("EvoNormB0", EvoNormB0, PaddingAwareEvoNormB0),
    ):
        register_norm(
            name,
            lambda channels, act, cls=plain, **options: cls(channels, act=act, **options),
            fuses_activation=True,
            padding_aware=lambda channels, act, cls=aware, **options: cls(
                channels, act=act, **options
            ),
            norm_types=(plain,),
        )


_register_defaults()
