"""EvoNorm-S0 and EvoNorm-B0 (Liu, Brock, Simonyan, Le 2020, arXiv 2004.02967).

Norm-activation layers found by architecture search, from the same line of work as FRN.
For a map x of shape (N, C, H, W), with gamma, beta and v learned per channel::

    S0: y = x * sigmoid(v * x) / sqrt(Var_{C/G, H, W}(x) + eps) * gamma + beta
    B0: y = x / max(sqrt(Var_{N, H, W}(x) + eps), v * x + sqrt(Var_{H, W}(x) + eps))
            * gamma + beta

S0 is per sample: its variance is over each group of C/G channels and all pixels of one
sample, so a sample's output never depends on its batch. B0 mixes the batch variance of
each channel (a running average of it at inference, updated like BatchNorm's) with each
sample's own variance per channel. Neither subtracts a mean from x.

Where stock detectron2 has no ReLU after the norm (``act=False``) the activation-like part
is left out and no ``v`` is created: S0 is ``x / sqrt(Var_{C/G,H,W}(x) + eps) * gamma +
beta``, B0 ``x / sqrt(Var_{N,H,W}(x) + eps) * gamma + beta``.

Variances are two-pass means of squared deviations (never ``torch.var`` with Bessel's
correction, which is NaN over a single pixel) and their square roots are taken of
``var + eps``: a 1x1 map has instance variance exactly 0, where ``sqrt(var)`` would have an
infinite gradient, the NaN other B0 ports hit. Statistics are taken in fp32 (fp64 for fp64
input) whatever the input dtype, as FRN's; the output has the input's dtype.

The padding-aware forms (``PaddingAware*``, see ``frn_det.layers.padding``) take every
statistic over the valid pixels of a padded image batch only and write zeros in the
padding; the parameters and buffers are the same.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .frn import _stat_dtype
from .padding import valid_mask

__all__ = [
    "DEFAULT_GROUPS",
    "EvoNormB0",
    "EvoNormS0",
    "PaddingAwareEvoNormB0",
    "PaddingAwareEvoNormS0",
]

DEFAULT_GROUPS = 32
"""The paper's number of groups for S0."""


def _variance(x: torch.Tensor, dims: tuple[int, ...], mask: torch.Tensor | None) -> torch.Tensor:
    """Biased variance of x over ``dims`` (kept as size 1), over valid pixels if ``mask``.

    x is zero where ``mask`` (broadcastable to x, 1 on valid pixels) is 0. Two passes, so
    the gradient is 2 (x - mean) / count, finite also for a single element.
    """
    if mask is None:
        mean = x.mean(dim=dims, keepdim=True)
        return (x - mean).square().mean(dim=dims, keepdim=True)
    repeat = math.prod(x.shape[d] for d in dims if mask.shape[d] == 1)
    count = (mask.sum(dim=dims, keepdim=True) * repeat).clamp(min=1)
    mean = x.sum(dim=dims, keepdim=True) / count
    return ((x - mean) * mask).square().sum(dim=dims, keepdim=True) / count


def _check_channels(cls: str, channels: object) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"{cls}: channels must be an integer >= 1, got {channels!r}")
    return channels


def _check_eps(cls: str, eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < math.inf:
        raise ValueError(f"{cls}: eps must be a finite number > 0, got {eps!r}")
    return float(eps)


def _largest_divisor_up_to(channels: int, limit: int) -> int:
    return max(g for g in range(1, min(channels, limit) + 1) if channels % g == 0)


class _EvoNorm(nn.Module):
    """Parameters, argument and input checks shared by S0 and B0."""

    def __init__(self, channels: int, eps: float, act: bool) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = _check_channels(name, channels)
        self.eps = _check_eps(name, eps)
        self.act = bool(act)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        # Without the activation-like term v has no role; an unused parameter would get
        # no gradient (and trip DDP's unused-parameter check).
        self.v = nn.Parameter(torch.ones(channels)) if act else None

    def _check_input(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing():  # the tracer turns sizes into tensors
            return
        if x.dim() != 4 or x.shape[1] != self.num_features:
            got = ", ".join(str(s) for s in x.shape)
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) expects input of shape "
                f"(N, {self.num_features}, H, W), got ({got})"
            )

    def _valid_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """(N, 1, H, W) 1/0 of valid pixels, or None: every pixel counts (plain forms)."""
        return None

    def _affine(self, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        y = y * self.weight.to(y.dtype).view(shape) + self.bias.to(y.dtype).view(shape)
        return y if mask is None else y * mask


class EvoNormS0(_EvoNorm):
    """EvoNorm-S0 for (N, C, H, W) maps: per-sample group variance, swish-like gating.

    ``act=True``: ``x * sigmoid(v x) / sqrt(Var_{C/G,H,W}(x) + eps) * gamma + beta``, where
    stock has a norm followed by ReLU; ``act=False``: the same without ``sigmoid(v x)``
    (and without ``v``). gamma = v = 1, beta = 0 at init.

    Args:
        channels: C.
        groups: G, which must divide C; None (default) takes the paper's 32 where it
            divides C and otherwise the largest divisor of C below 32 (C = 16 gives 16
            groups, C = 48 gives 24): every C builds, like the paper's 32 at C >= 32.
        eps: added to the variance (1e-5, BatchNorm's).
        act: whether the activation-like factor is applied.
    """

    def __init__(
        self, channels: int, groups: int | None = None, eps: float = 1e-5, act: bool = True
    ) -> None:
        super().__init__(channels, eps, act)
        if groups is None:
            groups = _largest_divisor_up_to(channels, DEFAULT_GROUPS)
        elif (
            isinstance(groups, bool)
            or not isinstance(groups, int)
            or not 1 <= groups <= channels
            or channels % groups
        ):
            raise ValueError(
                f"EvoNormS0: groups must be a divisor of channels ({channels}), got "
                f"{groups!r}; None takes the largest divisor of {channels} up to "
                f"{DEFAULT_GROUPS} ({_largest_divisor_up_to(channels, DEFAULT_GROUPS)})"
            )
        self.groups = groups

    def extra_repr(self) -> str:
        return f"{self.num_features}, groups={self.groups}, eps={self.eps}, act={self.act}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W), any float dtype; returns the same shape and dtype."""
        self._check_input(x)
        n, c, h, w = x.shape
        acc = _stat_dtype(x.dtype)
        xf = x.to(acc)
        mask = self._valid_mask(x)
        if mask is not None:
            mask = mask.to(acc)
            xf = xf * mask
        grouped = xf.reshape(n, self.groups, c // self.groups, h, w)
        var = _variance(grouped, (2, 3, 4), None if mask is None else mask.unsqueeze(1))
        y = (grouped * torch.rsqrt(var + self.eps)).reshape(n, c, h, w)
        if self.v is not None:
            y = y * torch.sigmoid(xf * self.v.to(acc).view(1, -1, 1, 1))
        return self._affine(y, mask).to(x.dtype)


class EvoNormB0(_EvoNorm):
    """EvoNorm-B0 for (N, C, H, W) maps: batch and instance variance, running statistics.

    ``act=True``: ``x / max(sqrt(Var_{N,H,W}(x) + eps), v x + sqrt(Var_{H,W}(x) + eps)) *
    gamma + beta``; ``act=False``: ``x / sqrt(Var_{N,H,W}(x) + eps) * gamma + beta``
    (no ``v``). In training Var_{N,H,W} is the batch's (biased), and ``running_var`` moves
    towards its unbiased form by ``momentum`` per call, as BatchNorm's does; in evaluation
    ``running_var`` replaces it. An empty batch (a mask head without foreground RoIs)
    leaves ``running_var`` alone. gamma = v = running_var = 1, beta = 0 at init.

    Args:
        channels: C.
        eps: added to both variances (1e-5, BatchNorm's).
        momentum: weight of the new batch in ``running_var``, in (0, 1] (0.1, BatchNorm's).
        act: whether the instance-variance (v) term is used.
    """

    def __init__(
        self, channels: int, eps: float = 1e-5, momentum: float = 0.1, act: bool = True
    ) -> None:
        super().__init__(channels, eps, act)
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, int | float)
            or not (0 < momentum <= 1)
        ):
            raise ValueError(f"EvoNormB0: momentum must be a number in (0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self.register_buffer("running_var", torch.ones(channels))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, act={self.act}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W), any float dtype; returns the same shape and dtype."""
        self._check_input(x)
        acc = _stat_dtype(x.dtype)
        shape = (1, -1, 1, 1)
        xf = x.to(acc)
        mask = self._valid_mask(x)
        if mask is not None:
            mask = mask.to(acc)
            xf = xf * mask
        if self.training:
            var = _variance(xf, (0, 2, 3), mask)
            self._update_running_var(var.detach().view(-1), xf, mask)
        else:
            var = self.running_var.to(acc).view(shape)
        denominator = torch.sqrt(var + self.eps)
        if self.v is not None:
            instance = torch.sqrt(_variance(xf, (2, 3), mask) + self.eps)
            denominator = torch.maximum(denominator, xf * self.v.to(acc).view(shape) + instance)
        return self._affine(xf / denominator, mask).to(x.dtype)

    def _update_running_var(
        self, var: torch.Tensor, xf: torch.Tensor, mask: torch.Tensor | None
    ) -> None:
        if xf.shape[0] == 0:
            return
        # Bessel's correction, as BatchNorm's running_var; a single pixel keeps var (0).
        if mask is None:
            count = xf.shape[0] * xf.shape[2] * xf.shape[3]
            unbiased = var * (count / max(count - 1, 1))
        else:
            count = mask.sum()
            unbiased = var * (count / (count - 1).clamp(min=1))
        with torch.no_grad():
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)


class PaddingAwareEvoNormS0(EvoNormS0):
    """``EvoNormS0`` whose group variance is each image's over its valid pixels.

    Inside a padded batch (``frn_det.layers.padding``) the output is zero in the padding,
    so an image's output is the one it gets alone; elsewhere it is ``EvoNormS0``. Same
    parameters and (N, C, H, W) shapes.
    """

    def _valid_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        return valid_mask(x, self)


class PaddingAwareEvoNormB0(EvoNormB0):
    """``EvoNormB0`` whose statistics count only the valid pixels of a padded batch.

    In training the batch variance is over the valid pixels of every image (and updates
    ``running_var``), the instance variance over each image's own; in evaluation
    ``running_var`` stands for the batch variance. The padding is zero either way. Same
    parameters, buffer and (N, C, H, W) shapes as ``EvoNormB0``.
    """

    def _valid_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        return valid_mask(x, self)
