"""The one table from normalization names to "norm-act slots".

A slot is what stock detectron2 puts after a convolution: a norm, then a ReLU or nothing.
Components ask for ``get_norm_act(name, channels, act=...)`` with ``act=True`` where
detectron2 applies a ReLU after the norm and ``act=False`` where it does not, and pass the
two halves to ``detectron2.layers.Conv2d(norm=..., activation=...)``. For detectron2's own
names the slot is exactly the stock module plus the stateless ``F.relu``, so parameter
names and checkpoints are unchanged; for a norm that fuses its activation (FRN+TLU) the
norm module does both and the activation half is None.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from detectron2.layers import NaiveSyncBatchNorm, get_norm
from torch import nn

from .frn import TLU, FilterResponseNorm1d, FilterResponseNorm2d

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
    """

    builder: Callable[..., nn.Module | None]
    fuses_activation: bool = False
    activation: Callable[[int], Activation] = lambda channels: F.relu
    fc_builder: Callable[..., nn.Module] | None = None


_REGISTRY: dict[str, NormEntry] = {}


def register_norm(
    name: str,
    builder: Callable[..., nn.Module | None],
    *,
    fuses_activation: bool = False,
    activation: Callable[[int], Activation] | None = None,
    fc_builder: Callable[..., nn.Module] | None = None,
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
    entry = NormEntry(builder, fuses_activation, activation or NormEntry.activation, fc_builder)
    _REGISTRY[name] = entry


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


def get_norm_act(
    norm: str | Callable[[int], nn.Module] | None,
    channels: int,
    act: bool = True,
    **options: object,
) -> NormAct:
    """The slot for a convolution with ``channels`` outputs.

    Args:
        norm: a registered name, None, or a callable ``channels -> module`` as detectron2's
            ``get_norm`` accepts (it is followed by ReLU like a stock norm).
        act: whether stock detectron2 applies a ReLU after this norm.
        options: passed to builders of norms that fuse their activation (FRN's ``eps``,
            ``learnable_eps``); stock norms take none.
    """
    entry = _entry_for(norm)
    if entry.fuses_activation:
        return NormAct(entry.builder(channels, act, **options), None)
    return NormAct(entry.builder(channels), entry.activation(channels) if act else None)


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


def get_activation(norm: str | Callable[[int], nn.Module] | None, channels: int) -> Activation:
    """The activation that replaces a bare ReLU (one with no norm before it) for ``norm``.

    ``F.relu`` for stock names; a per-channel TLU for FRN (after a residual addition).
    """
    return _entry_for(norm).activation(channels)


def _sync_batch_norm(channels: int) -> nn.Module:
    # torch's SyncBatchNorm raises on CPU tensors; detectron2's naive version all-reduces
    # through torch.distributed and so also works with the gloo backend.
    if torch.cuda.is_available():
        return nn.SyncBatchNorm(channels)
    return NaiveSyncBatchNorm(channels)


def _register_defaults() -> None:
    register_norm("", lambda channels: None)
    for name in ("BN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN"):
        register_norm(name, lambda channels, name=name: get_norm(name, channels))
    register_norm("SyncBN", _sync_batch_norm)
    register_norm(
        "FRN",
        lambda channels, act, **options: FilterResponseNorm2d(channels, tlu=act, **options),
        fuses_activation=True,
        activation=TLU,
        fc_builder=lambda channels, act, **options: FilterResponseNorm1d(
            channels, tlu=act, **options
        ),
    )


_register_defaults()
