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

Variances are biased (no Bessel correction, which is NaN over a single pixel) and their
square roots are taken of ``var + eps``: a 1x1 map has instance variance exactly 0, where
``sqrt(var)`` would have an infinite gradient, the NaN other B0 ports hit. Statistics are
taken in fp32 (fp64 for fp64 input) whatever the input dtype, as FRN's; the output has the
input's dtype.

In eager mode each layer runs a ``torch.autograd.Function`` with a hand-written backward
that keeps only the input and per-(sample, group) or per-channel statistics; tracing,
export and ``torch.compile`` see the plain formulas (``s0_formula``,
``b0_formula``), which compute the same function under torch's autograd.

The padding-aware forms (``PaddingAware*``, see ``frn_det.layers.padding``) take every
statistic over the valid pixels of a padded image batch only and write zeros in the
padding; the parameters and buffers are the same.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .frn import _is_being_captured, _stat_dtype
from .padding import valid_mask

__all__ = [
    "DEFAULT_GROUPS",
    "EvoNormB0",
    "EvoNormS0",
    "PaddingAwareEvoNormB0",
    "PaddingAwareEvoNormS0",
    "b0_formula",
    "s0_formula",
]

DEFAULT_GROUPS = 32
"""The paper's number of groups for S0."""


def _variance(x: torch.Tensor, dims: tuple[int, ...], mask: torch.Tensor | None) -> torch.Tensor:
    """Biased variance of x over ``dims`` (kept as size 1), over valid pixels if ``mask``.

    x is zero where ``mask`` (broadcastable to x, 1 on valid pixels) is 0. No Bessel
    correction and no square root here, so the gradient is 2 (x - mean) / count, finite
    also for a single element.
    """
    return _moments(x, dims, mask)[1]


def _moments(
    x: torch.Tensor, dims: tuple[int, ...], mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | int]:
    """(mean, biased variance, count) of x over ``dims`` (kept as size 1), as ``_variance``."""
    if mask is None:
        count = math.prod(x.shape[d] for d in dims)
        # var_mean warns of an empty input; the NaN statistics reach no output anyway
        if not torch.jit.is_tracing() and x.numel() == 0:
            mean = x.mean(dim=dims, keepdim=True)
            return mean, mean, count
        var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=True)
        return mean, var, count
    repeat = math.prod(x.shape[d] for d in dims if mask.shape[d] == 1)
    count = (mask.sum(dim=dims, keepdim=True) * repeat).clamp(min=1)
    mean = x.sum(dim=dims, keepdim=True) / count
    return mean, ((x - mean) * mask).square().sum(dim=dims, keepdim=True) / count, count


# ----------------------------------------------------------------------------------------
# The formulas under torch's autograd: what tracing, export and torch.compile see. Eager
# mode runs the autograd functions below them, which compute the same function and keep
# only the input and per-(sample, group/channel) statistics for backward (the formulas
# keep about five copies of the input).


def _channel(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype).view(1, -1, 1, 1)


def s0_formula(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    v: torch.Tensor | None,
    groups: int,
    eps: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """EvoNorm-S0 of x (N, C, H, W); v None for the act=False form; mask (N, 1, H, W) of
    valid pixels or None. Returns x's shape and dtype; statistics in fp32 or wider."""
    n, c, h, w = x.shape
    acc = _stat_dtype(x.dtype)
    xf = x.to(acc)
    if mask is not None:
        mask = mask.to(acc)
        xf = xf * mask
    grouped = xf.reshape(n, groups, c // groups, h, w)
    var = _variance(grouped, (2, 3, 4), None if mask is None else mask.unsqueeze(1))
    y = (grouped * torch.rsqrt(var + eps)).reshape(n, c, h, w)
    if v is not None:
        y = y * torch.sigmoid(xf * _channel(v, acc))
    y = y * _channel(weight, acc) + _channel(bias, acc)
    return (y if mask is None else y * mask).to(x.dtype)


def b0_formula(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    v: torch.Tensor | None,
    running_var: torch.Tensor | None,
    eps: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """EvoNorm-B0 of x (N, C, H, W) with the batch variance (``running_var`` None: training)
    or ``running_var`` (C,) (evaluation); v and mask as ``s0_formula``."""
    acc = _stat_dtype(x.dtype)
    xf = x.to(acc)
    if mask is not None:
        mask = mask.to(acc)
        xf = xf * mask
    var = _variance(xf, (0, 2, 3), mask) if running_var is None else _channel(running_var, acc)
    denominator = torch.sqrt(var + eps)
    if v is not None:
        instance = torch.sqrt(_variance(xf, (2, 3), mask) + eps)
        denominator = torch.maximum(denominator, xf * _channel(v, acc) + instance)
    y = xf / denominator * _channel(weight, acc) + _channel(bias, acc)
    return (y if mask is None else y * mask).to(x.dtype)


def _sum_nhw(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=(0, 2, 3))


class _S0Function(torch.autograd.Function):
    """``s0_formula`` saving x and r = rsqrt(var + eps), mean per (sample, group).

    With u = x sigmoid(v x) (x for act=False), y = u r, z = gamma y + beta and gy = gamma gz:
    dx = r gy du/dx - (r^3 / M) (x - mean) sum_group(gy u), du/dx = s + v x s (1 - s),
    dv = sum r gy x^2 s (1 - s); M is the group's (valid) element count.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, v, groups: int, eps: float, mask):
        n, c, h, w = x.shape
        acc = _stat_dtype(x.dtype)
        xf = x.to(acc)
        if mask is not None:
            xf = xf * mask
        grouped = xf.reshape(n, groups, c // groups, h * w)
        gmask = None if mask is None else mask.reshape(n, 1, 1, h * w)
        mean, var, count = _moments(grouped, (2, 3), gmask)
        r = torch.rsqrt(var + eps)
        y = (grouped * r).view(n, c, h, w)
        if v is not None:
            y = y.mul_(torch.sigmoid(xf * _channel(v, acc)))
        z = torch.addcmul(_channel(bias, acc), y, _channel(weight, acc))
        if mask is not None:
            z = z.mul_(mask)
        ctx.groups, ctx.count = groups, count
        ctx.save_for_backward(x, weight, v, mask, mean, r)
        return z.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gz):
        x, weight, v, mask, mean, r = ctx.saved_tensors
        n, c, h, w = x.shape
        acc = r.dtype
        grouped = (n, ctx.groups, c // ctx.groups, h * w)
        per_channel = (1, ctx.groups, c // ctx.groups, 1)

        def sum_per_channel(t: torch.Tensor) -> torch.Tensor:
            return t.sum(dim=(0, 3)).view(c)

        xf = x.to(acc).reshape(grouped)
        gz = gz.to(acc).reshape(grouped)
        if mask is not None:
            gmask = mask.reshape(n, 1, 1, h * w)
            xf = xf * gmask
            gz = gz * gmask
        gy = gz * weight.to(acc).view(per_channel)
        dv = du = None
        if v is not None:
            vg = v.to(acc).view(per_channel)
            s = torch.sigmoid(xf * vg)
            u = xf * s
            ds = s * (1 - s)  # d sigmoid / d (v x)
            dv = sum_per_channel(gy * r * xf.square() * ds).to(v.dtype)
            du = torch.addcmul(s, ds, xf * vg)
        else:
            u = xf
        dweight = sum_per_channel(gz * u * r).to(weight.dtype)
        dbias = sum_per_channel(gz).to(weight.dtype)
        dx = None
        if ctx.needs_input_grad[0]:
            through_r = (gy * u).sum(dim=(2, 3), keepdim=True) * r.pow(3) / ctx.count
            centred = xf - mean
            if mask is not None:
                centred = centred.mul_(gmask)
            dx = gy * r if du is None else (gy * r).mul_(du)
            dx = dx.sub_(centred.mul_(through_r))
            if mask is not None:
                dx = dx.mul_(gmask)
            dx = dx.view(n, c, h, w).to(x.dtype)
        return dx, dweight, dbias, dv, None, None, None


class _B0Function(torch.autograd.Function):
    """``b0_formula`` saving x and per-channel/per-(sample, channel) statistics.

    With d = max(a, b), a = sqrt(var + eps) (batch or running), b = v x + q,
    q = sqrt(Var_{H,W}(x) + eps), y = x / d and gy = gamma gz: gd = -gy x / d^2 goes to a
    where a > b, to b where b > a (half each at ties, as torch.maximum); a passes it to the
    batch variance (training only), b to v (x gd) and to x directly (v gd) and through q.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, v, var, batch_stats: bool, mean, count, eps: float, mask):
        acc = _stat_dtype(x.dtype)
        xf = x.to(acc)
        if mask is not None:
            xf = xf * mask
        a = torch.sqrt(_channel(var, acc) + eps)
        imean = q = icount = None
        denominator = a
        if v is not None:
            imean, ivar, icount = _moments(xf, (2, 3), mask)
            q = torch.sqrt(ivar + eps)
            denominator = torch.maximum(a, torch.addcmul(q, xf, _channel(v, acc)))
        z = torch.addcmul(_channel(bias, acc), xf / denominator, _channel(weight, acc))
        if mask is not None:
            z = z.mul_(mask)
        ctx.batch_stats, ctx.count, ctx.icount = batch_stats, count, icount
        ctx.save_for_backward(x, weight, v, mask, a, mean, imean, q)
        return z.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gz):
        x, weight, v, mask, a, mean, imean, q = ctx.saved_tensors
        acc = a.dtype
        xf = x.to(acc)
        gz = gz.to(acc)
        if mask is not None:
            xf = xf * mask
            gz = gz * mask
        gy = gz * _channel(weight, acc)
        if v is not None:
            b = torch.addcmul(q, xf, _channel(v, acc))
            d = torch.maximum(a, b)
            to_a = (a - b).sign_().add_(1).mul_(0.5)  # 1, 1/2 at ties, 0
        else:
            d, to_a = a, None
        y = xf / d
        dweight = _sum_nhw(gz * y)
        dbias = _sum_nhw(gz)
        gd = -gy * y / d
        dv = dx = None
        if v is not None:
            gb = gd * (1 - to_a)
            dv = _sum_nhw(gb * xf)
            gd = gd * to_a
        if ctx.needs_input_grad[0]:
            dx = gy / d
            if v is not None:
                dx = dx.addcmul_(gb, _channel(v, acc))
                # dq/dx = (x - imean) / (M_i q), M_i the valid pixels of (sample, channel)
                dq = gb.sum(dim=(2, 3), keepdim=True) / (q * ctx.icount)
                centred = xf - imean if mask is None else (xf - imean) * mask
                dx = dx.addcmul_(centred, dq)
            if ctx.batch_stats:
                da = _sum_nhw(gd).view(1, -1, 1, 1) / (a * ctx.count)
                centred = xf - mean if mask is None else (xf - mean) * mask
                dx = dx.addcmul_(centred, da)
            if mask is not None:
                dx = dx.mul_(mask)
            dx = dx.to(x.dtype)
        return (
            dx,
            dweight.to(weight.dtype),
            dbias.to(weight.dtype),
            None if dv is None else dv.to(v.dtype),
            None,
            None,
            None,
            None,
            None,
            None,
        )


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
        mask = self._valid_mask(x)
        if mask is not None:
            mask = mask.to(_stat_dtype(x.dtype))
        args = (x, self.weight, self.bias, self.v, self.groups, self.eps, mask)
        if _is_being_captured() or x.device.type == "meta":
            return s0_formula(*args)
        return _S0Function.apply(*args)


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
        mask = self._valid_mask(x)
        if mask is not None:
            mask = mask.to(acc)
        captured = _is_being_captured() or x.device.type == "meta"
        mean = count = None
        if self.training:
            with torch.no_grad():
                xf = x.to(acc) if mask is None else x.to(acc) * mask
                mean, var, count = _moments(xf, (0, 2, 3), mask)
                self._update_running_var(var.view(-1), x.shape[0], count)
        else:
            var = self.running_var
        if captured:
            running_var = None if self.training else self.running_var
            return b0_formula(x, self.weight, self.bias, self.v, running_var, self.eps, mask)
        return _B0Function.apply(
            x, self.weight, self.bias, self.v, var.view(-1), self.training, mean, count,
            self.eps, mask,
        )  # fmt: skip

    def _update_running_var(self, var: torch.Tensor, batch: int, count: torch.Tensor | int) -> None:
        if batch == 0:
            return
        # Bessel's correction, as BatchNorm's running_var; a single pixel keeps var (0).
        if isinstance(count, int):
            unbiased = var * (count / max(count - 1, 1))
        else:
            count = count.view(())
            unbiased = var * (count / (count - 1).clamp(min=1))
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
