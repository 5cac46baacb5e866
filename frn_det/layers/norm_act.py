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
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from detectron2.layers import NaiveSyncBatchNorm, get_norm
from torch import nn

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
    """

    builder: Callable[..., nn.Module | None]
    fuses_activation: bool = False
    activation: Callable[[int], Activation] = lambda channels: F.relu
    fc_builder: Callable[..., nn.Module] | None = None
    padding_aware: Callable[..., nn.Module | None] | None = None
    padding_aware_activation: Callable[[int], Activation] | None = None
    region_builder: Callable[..., nn.Module | None] | None = None


_REGISTRY: dict[str, NormEntry] = {}


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
    overwrite: bool = False,
) -> None:
    """Make ``name`` usable wherever a NORM config key or ``get_norm_act`` takes a name.

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
    ):
        if (value is not None or argument == "builder") and not callable(value):
            raise TypeError(
                f"register_norm({name!r}): {argument} must be callable ({expected}), "
                f"got {type(value).__name__} {value!r}"
            )
    entry = NormEntry(
        builder,
        fuses_activation,
        activation or NormEntry.activation,
        fc_builder,
        padding_aware,
        padding_aware_activation,
        region_builder,
    )
    _REGISTRY[name] = entry
    _warned_zeroing_only.discard(name)


def unregister_norm(name: str) -> None:
    """Remove a name registered with ``register_norm``."""
    _lookup(name)
    del _REGISTRY[name]


def registered_norms() -> list[str]:
    """Every name ``get_norm_act`` accepts, in registration order ("" means no norm)."""
    return list(_REGISTRY)


def _lookup(name: str) -> NormEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        accepted = ", ".join(repr(n) for n in _REGISTRY)
        raise KeyError(
            f"unknown norm {name!r}; registered norms are: {accepted} "
            "(frn_det.layers.register_norm adds one)"
        ) from None


def _entry_for(norm: str | Callable[[int], nn.Module] | None) -> NormEntry:
    if norm is None:
        return _REGISTRY[""]
    if callable(norm) and not isinstance(norm, str):
        return NormEntry(norm)
    return _lookup(norm)


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
    norm: str | Callable[[int], nn.Module] | None,
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
            ``learnable_eps``); stock norms take none.
    """
    if padding_aware and regions:
        raise ValueError("a slot is either padding_aware (padded maps) or regions (RoIs), not both")
    entry = _entry_for(norm)
    if padding_aware:
        return _padding_aware_slot(entry, norm, channels, act, options)
    if entry.fuses_activation:
        builder = entry.region_builder if regions and entry.region_builder else entry.builder
        return NormAct(builder(channels, act, **options), None)
    builder = entry.region_builder if regions and entry.region_builder else entry.builder
    return NormAct(builder(channels), entry.activation(channels) if act else None)


def get_fc_norm_act(
    norm: str | Callable[[int], nn.Module] | None,
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
        return NormAct(None, entry.activation(channels) if act else None)
    return NormAct(entry.fc_builder(channels, act, **options), None)


def get_activation(
    norm: str | Callable[[int], nn.Module] | None, channels: int, *, padding_aware: bool = False
) -> Activation:
    """The activation that replaces a bare ReLU (one with no norm before it) for ``norm``.

    ``F.relu`` for stock names; a per-channel TLU for FRN (after a residual addition). With
    ``padding_aware`` its output is zero in the padding (a TLU's max(0, tau) is not).
    """
    entry = _entry_for(norm)
    if not padding_aware:
        return entry.activation(channels)
    if entry.padding_aware_activation is not None:
        return entry.padding_aware_activation(channels)
    return _zeroing_activation(entry.activation(channels))


def _sync_batch_norm(channels: int) -> nn.Module:
    # torch's SyncBatchNorm raises on CPU tensors; detectron2's naive version all-reduces
    # through torch.distributed and so also works with the gloo backend.
    if torch.cuda.is_available():
        return nn.SyncBatchNorm(channels)
    return NaiveSyncBatchNorm(channels)


def _register_defaults() -> None:
    # The padding-aware form of each stock name: the same parameters and buffers (so
    # checkpoints load either way), statistics over valid pixels, zeros in the padding.
    padding_aware = {
        "": lambda channels: padding.ZeroPadding(),
        "BN": padding.PaddingAwareBatchNorm2d,
        "FrozenBN": padding.PaddingAwareFrozenBatchNorm2d,
        "GN": lambda channels: padding.PaddingAwareGroupNorm(32, channels),
        "nnSyncBN": padding.PaddingAwareSyncBatchNorm,
        "naiveSyncBN": padding.PaddingAwareSyncBatchNorm,
        "naiveSyncBN_N": padding.PaddingAwareSyncBatchNorm,
        "LN": padding.PaddingAwareLayerNorm,
    }
    register_norm("", lambda channels: None, padding_aware=padding_aware[""])
    for name in ("BN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN"):
        register_norm(
            name,
            lambda channels, name=name: get_norm(name, channels),
            padding_aware=padding_aware[name],
        )
    register_norm(
        "SyncBN",
        _sync_batch_norm,
        padding_aware=padding.PaddingAwareSyncBatchNorm,
        # Per-region features: the RoIs per process differ (the mask head sees only
        # foreground RoIs, possibly none), so each process is weighted by its count and
        # an empty one is harmless, as detectron2's new_baselines do in their heads.
        region_builder=lambda channels: NaiveSyncBatchNorm(channels, stats_mode="N"),
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
    )
    # EvoNorm fuses its activation-like term (act=True) or leaves it out (act=False); the
    # options components pass are FRN's (MODEL.FRN.EPS, learnable eps), not EvoNorm's, so
    # EvoNorm keeps its own eps. A bare ReLU (after a residual addition) stays a ReLU.
    for name, plain, aware in (
        ("EvoNormS0", EvoNormS0, PaddingAwareEvoNormS0),
        ("EvoNormB0", EvoNormB0, PaddingAwareEvoNormB0),
    ):
        register_norm(
            name,
            lambda channels, act, cls=plain, **frn_options: cls(channels, act=act),
            fuses_activation=True,
            padding_aware=lambda channels, act, cls=aware, **frn_options: cls(channels, act=act),
        )


_register_defaults()
