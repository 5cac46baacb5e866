"""Filter Response Normalization with its Thresholded Linear Unit (Singh & Krishnan, 2020).

For a map ``x`` of shape (N, C, H, W), per sample n and channel c::

    nu2 = mean_{H,W}(x^2);  y = gamma * x / sqrt(nu2 + eps) + beta;  z = max(y, tau)

No statistic crosses the batch axis and nothing is tracked between calls, so training and
evaluation compute the same function and one sample's output never depends on another's.

Every path computes this function; they differ in speed and in what they keep for backward.
``set_frn_impl`` (or the environment variable ``FRN_DET_IMPL``) chooses the one used to train:

- ``"reference"``: ``frn_reference``, the plain formula under torch's autograd. Keeps about
  three copies of the input for backward.
- ``"autograd"``: a ``torch.autograd.Function`` with a hand-written backward, in eager ops.
  Keeps only the input and one fp32 statistic per (sample, channel) for backward; the TLU
  mask is recomputed there.
- ``"compiled"``: the same function with its forward and backward kernels each compiled by
  ``torch.compile(dynamic=True)`` into fused loops. Sizes are marked unbacked, so detection's
  ever-changing image, RoI and batch sizes reuse one compiled kernel per variant (device,
  dtype, TLU or not, memory format, maps or per-element (N, C) features). Falls back to
  ``"autograd"`` with one warning where compilation is unavailable or fails.
- ``"auto"`` (default): ``"compiled"`` where a compiler toolchain is present (a C++ compiler
  on CPU, Triton on CUDA), else ``"autograd"``.

Under ``torch.jit.script``/``torch.jit.trace``, ``torch.compile`` and ``torch.export`` the layers
always emit ``frn_reference``, which those tools see through.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import shutil
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .padding import valid_mask

__all__ = [
    "FRN_IMPLS",
    "IMPL_ENV_VAR",
    "TLU",
    "FilterResponseNorm1d",
    "FilterResponseNorm2d",
    "PaddingAwareFilterResponseNorm2d",
    "PaddingAwareTLU",
    "filter_response_norm",
    "frn_impl",
    "frn_reference",
    "get_frn_impl",
    "set_frn_impl",
]

FRN_IMPLS = ("auto", "compiled", "autograd", "reference")
IMPL_ENV_VAR = "FRN_DET_IMPL"
LEARNED_EPS_INIT = 1e-4

_explicit_impl: str | None = None


def _validate_impl(value: object, switch: str) -> str:
    if value not in FRN_IMPLS:
        accepted = ", ".join(repr(v) for v in FRN_IMPLS)
        raise ValueError(
            f"{switch}: unknown FRN implementation {value!r}; accepted values are {accepted}"
        )
    return value  # type: ignore[return-value]


def set_frn_impl(impl: str | None) -> None:
    """Choose the kernel FRN layers train with, process-wide.

    Args:
        impl: one of ``FRN_IMPLS`` (see the module docstring), or None to go back to the
            environment variable ``FRN_DET_IMPL`` (default ``"auto"``).
    """
    global _explicit_impl
    _explicit_impl = None if impl is None else _validate_impl(impl, "set_frn_impl")


def get_frn_impl() -> str:
    """The implementation in force: ``set_frn_impl``'s, else ``FRN_DET_IMPL``'s, else "auto"."""
    if _explicit_impl is not None:
        return _explicit_impl
    return _validate_impl(
        os.environ.get(IMPL_ENV_VAR, "auto"), f"environment variable {IMPL_ENV_VAR}"
    )


@contextlib.contextmanager
def frn_impl(impl: str) -> Iterator[None]:
    """Use ``impl`` inside a ``with`` block, then restore the previous choice."""
    global _explicit_impl
    previous = _explicit_impl
    set_frn_impl(impl)
    try:
        yield
    finally:
        _explicit_impl = previous


def _check_channels(name: str, num_features: object) -> None:
    if (
        isinstance(num_features, bool)
        or not isinstance(num_features, numbers.Integral)
        or num_features < 1
    ):
        raise ValueError(
            f"{name}: num_features must be an integer >= 1 (channels), got {num_features!r}"
        )


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp32 at least: x^2 overflows fp16 once |x| > 256, and bf16 sums lose precision.
    return torch.promote_types(dtype, torch.float32)


def frn_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    tau: torch.Tensor | None,
    eps: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The plain FRN(+TLU) formula every other path is checked against.

    Args:
        x: (N, C, H, W), (N, C) or any (N, C, ...) in a float dtype; statistics are taken
            in fp32 (fp64 for fp64 input).
        weight, bias: (C,) gamma and beta.
        tau: (C,) TLU threshold, or None for FRN without TLU.
        eps: the effective epsilon, already made positive: a tensor of shape (), (1,) or (C,).
        mask: None, or (N, 1, H, W) (any (N, 1, ...) for other ranks) marking each sample's
            valid pixels: nu2 is then the mean over them and the output is 0 elsewhere
            (padding-aware FRN).
    Returns:
        a tensor of the shape and dtype of ``x``.
    """
    shape = [1, -1] + [1] * (x.dim() - 2)
    xf = x.to(_stat_dtype(x.dtype))
    if mask is not None:
        xf = xf * mask.to(xf.dtype)
        dims = list(range(2, x.dim()))
        count = mask.to(xf.dtype).sum(dim=dims, keepdim=True)
        nu2 = xf.square().sum(dim=dims, keepdim=True) / count
    elif x.dim() > 2:
        nu2 = xf.square().mean(dim=list(range(2, x.dim())), keepdim=True)
    else:
        # mean(dim=[]) would reduce every dim; for (N, C) features nu2 is x^2 itself.
        nu2 = xf.square()
    y = xf * torch.rsqrt(nu2 + eps.to(xf.dtype).reshape(shape))
    y = y * weight.to(xf.dtype).reshape(shape) + bias.to(xf.dtype).reshape(shape)
    if tau is not None:
        y = torch.maximum(y, tau.to(xf.dtype).reshape(shape))
    if mask is not None:
        y = y * mask.to(y.dtype)
    return y.to(x.dtype)


# ----------------------------------------------------------------------------------------
# Kernels of the "autograd" and "compiled" paths. They take x viewed as (N, C, L), L = H*W
# (L = 1 for fully connected features), run without autograd, and are written so that they
# are reasonable eager code (few temporaries, in-place where it saves a pass) and also
# compile into one reduction loop plus one elementwise loop each. Padding-aware FRN passes
# ``mask`` (N, 1, L), 1 on valid pixels and 0 on padding, in x's dtype, and ``count``
# (N, 1), the valid pixels per sample: FRN is then that of x * mask with mean_L over the
# valid pixels, and its output is 0 on the padding. Both are None otherwise.


def _statistic(
    x: torch.Tensor,
    eps: torch.Tensor,
    mask: torch.Tensor | None = None,
    count: torch.Tensor | None = None,
) -> torch.Tensor:
    """r = rsqrt(mean_L(x^2) + eps) (N, C) of x (N, C, L), in fp32 or wider."""
    acc = _stat_dtype(x.dtype)
    if mask is not None:
        x = x * mask
    # vector_norm casts per element while reducing: no fp32 copy of x, no x^2 temporary.
    norm = torch.linalg.vector_norm(x, dim=2, dtype=acc)
    return torch.rsqrt(norm.square() / (x.shape[2] if count is None else count) + eps.to(acc))


def _forward_kernel(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    tau: torch.Tensor | None,
    eps: torch.Tensor,
    mask: torch.Tensor | None = None,
    count: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FRN(+TLU) of x (N, C, L); returns z (N, C, L) in x's dtype and r (N, C) in fp32+.

    r = rsqrt(mean_L(x^2) + eps) is the only statistic backward needs.
    """
    acc = _stat_dtype(x.dtype)
    r = _statistic(x, eps, mask, count)
    if mask is not None:
        x = x * mask
    z = torch.addcmul(bias.to(acc).view(1, -1, 1), x, (r * weight.to(acc)).unsqueeze(2))
    if tau is not None:
        z = z.clamp_min_(tau.to(acc).view(1, -1, 1))
    if mask is not None:
        z = z.mul_(mask)
    return z.to(x.dtype), r


def _backward_kernel(
    gz: torch.Tensor,
    x: torch.Tensor,
    r: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    tau: torch.Tensor | None,
    need_dx: bool,
    need_dtau: bool,
    mask: torch.Tensor | None = None,
    count: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Gradients of FRN(+TLU) from gz and x (N, C, L) and r (N, C).

    With xh = x*r, y = g*xh + b, z = max(y, tau) and S = sum_L(gy*xh)*g:
    gy = gz*[y > tau] (half at ties, as torch.maximum), dx = r*(g*gy - xh*S/L),
    dgamma = sum gy*xh, dbeta = sum gy, dtau = sum (gz - gy), deps = -r^2*S/2 per (n, c).

    Returns:
        dx (N, C, L) in x's dtype or None, dgamma (C,), dbeta (C,), dtau (C,) or None, and
        deps (N, C) to be summed to the shape of eps.
    """
    acc = r.dtype
    w = weight.to(acc)
    rw = (r * w).unsqueeze(2)
    gz = gz.to(acc)
    length = x.shape[2] if count is None else count
    if mask is not None:
        # the output is z * mask of FRN(x * mask): padding neither receives nor sends gradient
        x = x * mask
        gz = gz * mask
    if tau is not None:
        # mask = (sign(y - tau) + 1)/2 is exactly 1, 1/2 or 0: torch.maximum's tie rule.
        mask = torch.addcmul(bias.to(acc).view(1, -1, 1), x, rw)
        mask = mask.sub_(tau.to(acc).view(1, -1, 1)).sign_().add_(1.0).mul_(0.5)
        gy = mask.mul_(gz)
    else:
        gy = gz
    sum_gy = gy.sum(dim=2)
    a = r * (gy * x).sum(dim=2)  # sum_L(gy * xh)
    s = a * w
    deps = -0.5 * r.square() * s
    dtau = (gz.sum(dim=2) - sum_gy).sum(dim=0) if tau is not None and need_dtau else None
    dx = None
    if need_dx:
        dx = torch.mul(gy, rw).addcmul_(x, (r.square() * s / length).unsqueeze(2), value=-1.0)
        dx = dx.to(x.dtype)
    return dx, a.sum(dim=0), sum_gy.sum(dim=0), dtau, deps


# ----------------------------------------------------------------------------------------
# Compilation: one compiled kernel per variant, each from its own copy of the code object,
# because dynamo keeps its cache (and its limit of 8 recompiles) per code object.

_compiled: dict[tuple, Callable] = {}
_compile_broken: set[str] = set()
_toolchain: dict[str, bool] = {}


def _has_toolchain(device_type: str) -> bool:
    if device_type not in _toolchain:
        if device_type == "cpu":
            compilers = (os.environ.get("CXX", ""), "c++", "g++", "clang++")
            found = any(c and shutil.which(c) for c in compilers)
        elif device_type == "cuda":
            from torch.utils._triton import has_triton

            found = has_triton()
        else:
            found = False
        _toolchain[device_type] = found
    return _toolchain[device_type]


def _compiled_kernel(kernel: Callable, key: tuple) -> Callable:
    full_key = (kernel.__name__,) + key
    if full_key not in _compiled:
        code = kernel.__code__.replace()
        fresh = types.FunctionType(code, kernel.__globals__, kernel.__name__)
        _compiled[full_key] = torch.compile(fresh, dynamic=True)
    return _compiled[full_key]


def _mark_sizes_unbacked(*tensors: torch.Tensor) -> None:
    # Unbacked sizes carry no guards, so no size (not 1, not inductor's 4096-element
    # reduction threshold) triggers a recompile. Channels stay backed (one value per layer),
    # and so does L = 1: (N, C) features get their own kernel, vectorised over channels.
    for t in tensors:
        for dim in range(t.dim()):
            if dim == 0 or dim == 2 and t.shape[2] != 1:
                torch._dynamo.decorators.mark_unbacked(t, dim)


def _run_kernel(compiled: bool, kernel: Callable, key: tuple, *args) -> tuple:
    """Run ``kernel(*args)``, compiled for ``key`` when ``compiled`` and not known broken."""
    device_type = args[0].device.type
    # autocast would re-cast inside the kernels (and be one more thing dynamo guards on).
    with torch.autocast(device_type, enabled=False):
        if not compiled or device_type in _compile_broken:
            return kernel(*args)
        # Detached aliases: dynamo would otherwise guard on requires_grad and, for views, on
        # the shape of the tensor they view (the caller's 4-D or 2-D input).
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        _mark_sizes_unbacked(*[a for a in args if isinstance(a, torch.Tensor) and a.dim() >= 2])
        try:
            return _compiled_kernel(kernel, (device_type,) + key)(*args)
        except Exception as err:  # a missing/broken toolchain shows only at first use
            _compile_broken.add(device_type)
            warnings.warn(
                f"FRN: torch.compile failed on {device_type} ({type(err).__name__}: {err}); "
                "using the eager autograd path instead",
                RuntimeWarning,
                stacklevel=3,
            )
            return kernel(*args)


def _variant(x: torch.Tensor, tau: torch.Tensor | None, mask: torch.Tensor | None) -> tuple:
    """What a compiled kernel is specialised to: dtype, TLU, channels_last, H*W == 1, mask."""
    return (x.dtype, tau is not None, not x.is_contiguous(), x.shape[2] == 1, mask is not None)


class _FilterResponseNormFunction(torch.autograd.Function):
    """FRN(+TLU) on x (N, C, L) that saves only x and r = rsqrt(nu2 + eps) (N, C).

    With L = 1 (fully connected features) r is as large as x itself, so it is not saved
    but recomputed from x and eps in backward: one elementwise pass instead of a second
    copy of the input.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, tau, eps, mask, count, compiled: bool):
        variant = _variant(x, tau, mask)
        z, r = _run_kernel(
            compiled, _forward_kernel, variant, x, weight, bias, tau, eps, mask, count
        )
        ctx.compiled = compiled
        ctx.eps_shape = eps.shape
        ctx.recompute = x.shape[2] == 1
        saved = eps.detach() if ctx.recompute else r
        ctx.save_for_backward(x, saved, weight, bias, tau, mask, count)
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gz):
        x, r, weight, bias, tau, mask, count = ctx.saved_tensors
        if ctx.recompute:
            r = _statistic(x, r, mask, count)
        need_x, need_w, need_b, need_tau, need_eps = ctx.needs_input_grad[:5]
        # the compiled kernel is specialised to x's layout; autograd may hand any strides.
        gz = gz if gz.stride() == x.stride() else torch.empty_like(x).copy_(gz)
        flags = (need_x, need_tau)
        dx, dw, db, dtau, deps = _run_kernel(
            ctx.compiled,
            _backward_kernel,
            _variant(x, tau, mask) + flags,
            gz,
            x,
            r,
            weight,
            bias,
            tau,
            *flags,
            mask,
            count,
        )
        dw = dw.to(weight.dtype) if need_w else None
        db = db.to(bias.dtype) if need_b else None
        dtau = dtau.to(tau.dtype) if dtau is not None else None
        deps = deps.sum_to_size(ctx.eps_shape) if need_eps else None
        return dx, dw, db, dtau, deps, None, None, None


def _as_ncl(x: torch.Tensor) -> torch.Tensor:
    """x (N, C, ...) as an (N, C, L) view, L = H*W (1 for (N, C)).

    The result is contiguous or, for channels_last input, contiguous as (N, L, C); other
    layouts are copied once, so each compiled kernel sees one of two stride patterns.
    """
    x3 = x.unsqueeze(2) if x.dim() == 2 else x.flatten(2)
    if x3.shape[2] == 1:
        return x3.squeeze(2).contiguous().unsqueeze(2)
    if x3.is_contiguous() or x3.transpose(1, 2).is_contiguous():
        return x3
    return x3.contiguous()


def _is_being_captured() -> bool:
    return (
        torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or getattr(torch.compiler, "is_exporting", lambda: False)()
    )


def filter_response_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    tau: torch.Tensor | None,
    eps: torch.Tensor,
    impl: str | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """FRN(+TLU) of x with the implementation ``impl`` (default: ``get_frn_impl()``).

    Args:
        x: (N, C, H, W), (N, C) or (N, C, ...), any float dtype (statistics in fp32).
        weight, bias: (C,) gamma and beta; tau: (C,) or None for no TLU.
        eps: effective epsilon, positive: a tensor of shape (), (1,) or (C,).
        impl: one of ``FRN_IMPLS``; every choice computes the same function.
        mask: None, or bool (N, 1, H, W) marking valid pixels (padding-aware FRN: statistics
            over them, zeros elsewhere; see ``frn_reference``). Each sample needs at least
            one valid pixel.
    Returns:
        a tensor of the shape and dtype of ``x``; channels_last input gives channels_last
        output.
    """
    impl = get_frn_impl() if impl is None else _validate_impl(impl, "filter_response_norm(impl=)")
    if impl == "reference" or _is_being_captured() or x.device.type == "meta":
        return frn_reference(x, weight, bias, tau, eps, mask)
    compiled = impl != "autograd" and _has_toolchain(x.device.type)
    if impl == "compiled" and not compiled and x.device.type not in _compile_broken:
        _compile_broken.add(x.device.type)
        warnings.warn(
            f"FRN: no compiler toolchain for torch.compile on {x.device.type}; "
            "using the eager autograd path instead",
            RuntimeWarning,
            stacklevel=2,
        )
    x3 = _as_ncl(x)
    mask3 = count = None
    if mask is not None:
        mask3 = mask.reshape(x.shape[0], 1, -1).to(x.dtype)
        count = mask3.sum(dim=2, dtype=_stat_dtype(x.dtype))
    params = (weight, bias, eps) if tau is None else (weight, bias, eps, tau)
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        z = _FilterResponseNormFunction.apply(x3, weight, bias, tau, eps, mask3, count, compiled)
    else:
        variant = _variant(x3, tau, mask3)
        z, _ = _run_kernel(
            compiled, _forward_kernel, variant, x3, weight, bias, tau, eps, mask3, count
        )
    return z.view(x.shape)


# ----------------------------------------------------------------------------------------
# Modules


class _FilterResponseNorm(nn.Module):
    """Parameters, checks and dispatch shared by the 2d and 1d forms."""

    expected_dims = 4
    expected_shape = "(N, {C}, H, W)"

    def __init__(self, num_features: int, eps: float, learnable_eps: bool, tlu: bool) -> None:
        super().__init__()
        _check_channels(type(self).__name__, num_features)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (
            math.isfinite(eps) and eps > 0
        ):
            raise ValueError(
                f"{type(self).__name__}({num_features}): eps must be a finite number > 0 "
                f"(the paper's is 1e-6), got {eps!r}"
            )
        self.num_features = num_features
        self.eps = float(eps)
        self.tlu = bool(tlu)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.tau = nn.Parameter(torch.zeros(num_features)) if tlu else None
        # one scalar shared by all channels, stored with shape (1,)
        self.learned_eps = (
            nn.Parameter(torch.full((1,), LEARNED_EPS_INIT)) if learnable_eps else None
        )
        self._name = f"{type(self).__name__}({num_features})"
        self._expected_dims = self.expected_dims
        self._expected = self.expected_shape.format(C=num_features)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, "
            f"learnable_eps={self.learned_eps is not None}, tlu={self.tlu}"
        )

    def effective_eps(self, x: torch.Tensor) -> torch.Tensor:
        """eps0 + |eps_l| (or eps0), shape (1,), on x's device in the statistics' dtype.

        That is fp32 for half, bfloat16 and fp32 input and fp64 for fp64 input, so a
        float64 model computes the formula in float64 throughout.
        """
        acc = _stat_dtype(x.dtype)
        eps0 = torch.full((1,), self.eps, dtype=acc, device=x.device)
        if self.learned_eps is None:
            return eps0
        return eps0 + self.learned_eps.to(acc).abs()

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self._expected_dims or x.shape[1] != self.num_features:
            got = ", ".join([str(s) for s in x.shape])
            raise ValueError(f"{self._name} expects input of shape {self._expected}, got ({got})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) for the 2d form, (N, C) for the 1d form; same shape out."""
        if not torch.jit.is_tracing():  # the tracer turns sizes into tensors; jit warns
            self._check_input(x)
        eps = self.effective_eps(x)
        if torch.jit.is_scripting():
            return frn_reference(x, self.weight, self.bias, self.tau, eps)
        return self._forward_fast(x, eps)

    @torch.jit.unused
    def _forward_fast(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return filter_response_norm(x, self.weight, self.bias, self.tau, eps)


class FilterResponseNorm2d(_FilterResponseNorm):
    """FRN (+TLU) for (N, C, H, W) maps.

    With ``tlu=True`` it replaces a norm+ReLU pair; with ``tlu=False`` a norm that has no
    activation after it. ``learnable_eps`` adds a learned scalar |eps_l| (init 1e-4) to
    ``eps``, which matters where H*W is small.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-6,
        learnable_eps: bool = False,
        tlu: bool = True,
    ) -> None:
        super().__init__(num_features, eps, learnable_eps, tlu)


class FilterResponseNorm1d(_FilterResponseNorm):
    """FRN (+TLU) for (N, C) features of fully connected layers.

    There nu2 = x^2, so without a learned eps x_hat ~= sign(x) and the gradient to x
    vanishes; the learned scalar |eps_l| (init 1e-4) is therefore on by default.
    """

    expected_dims = 2
    expected_shape = "(N, {C})"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-6,
        learnable_eps: bool = True,
        tlu: bool = True,
    ) -> None:
        super().__init__(num_features, eps, learnable_eps, tlu)


class PaddingAwareFilterResponseNorm2d(FilterResponseNorm2d):
    """``FilterResponseNorm2d`` whose nu2 is each image's mean over its valid pixels.

    Inside a padded batch (``frn_det.layers.padding``) the output is zero on the padding, so
    an image's output is the one it gets alone; outside one, or where nothing is padded, it
    is exactly ``FilterResponseNorm2d``. Same parameters, kernels and (N, C, H, W) shapes.
    """

    @torch.jit.unused
    def _forward_fast(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mask = valid_mask(x, self)
        return filter_response_norm(x, self.weight, self.bias, self.tau, eps, mask=mask)


class _TLUFunction(torch.autograd.Function):
    """max(x, tau) (times a 0/1 mask, if given) that keeps only its output for backward.

    ``torch.maximum`` keeps its input, the pre-activation sum after a residual addition, an
    extra feature map per block. The output is kept anyway as the next convolution's input,
    so saving it costs nothing. From the output alone a tie x == tau cannot be told from
    x < tau: the gradient of a tie goes to tau, as a ReLU gives none to x at 0.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        z = torch.maximum(x, tau)
        if mask is not None:
            z = z.mul_(mask)
        ctx.save_for_backward(z, tau, mask)
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, tau, mask = ctx.saved_tensors
        if mask is not None:
            grad = grad * mask
        grad_x = grad * (z > tau)
        if mask is not None:
            grad_x = grad_x.mul_(mask)
        grad_tau = None
        if ctx.needs_input_grad[1]:
            reduce = [d for d in range(grad.dim()) if tau.shape[d] == 1]
            grad_tau = (grad - grad_x).sum(dim=reduce, keepdim=True)
        return grad_x, grad_tau, None


class TLU(nn.Module):
    """Per-channel thresholded linear unit max(x, tau), tau init 0, for (N, C, ...) input.

    Replaces the ReLU after a residual addition in FRN networks. In training it keeps only
    its output for backward (see ``_TLUFunction``); traced, scripted, exported and compiled
    models see the plain ``torch.maximum``.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        _check_channels(type(self).__name__, num_features)
        self.num_features = num_features
        self.tau = nn.Parameter(torch.zeros(num_features))

    def extra_repr(self) -> str:
        return f"{self.num_features}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, ...); returns max(x, tau) of the same shape and dtype."""
        if not torch.jit.is_tracing() and (x.dim() < 2 or x.shape[1] != self.num_features):
            got = ", ".join([str(s) for s in x.shape])
            raise ValueError(
                f"TLU({self.num_features}) expects input of shape (N, {self.num_features}, ...), "
                f"got ({got})"
            )
        tau = self.tau.reshape([1, -1] + [1] * (x.dim() - 2)).to(x.dtype)
        if torch.jit.is_scripting():
            return torch.maximum(x, tau)
        return self._lean_maximum(x, tau)

    @torch.jit.unused
    def _lean_maximum(self, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return self._masked_maximum(x, tau, None)

    @torch.jit.unused
    def _masked_maximum(
        self, x: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        if _is_being_captured() or not torch.is_grad_enabled():
            z = torch.maximum(x, tau)
            return z if mask is None else z * mask
        return _TLUFunction.apply(x, tau, mask)


class PaddingAwareTLU(TLU):
    """``TLU`` whose output is zero on the padding of a padded batch (max(0, tau) is not).

    Used after the residual additions of padding-aware FRN networks; the same parameter
    (tau) and (N, C, ...) shapes as ``TLU``.
    """

    @torch.jit.unused
    def _lean_maximum(self, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        mask = valid_mask(x, self)
        return self._masked_maximum(x, tau, None if mask is None else mask.to(x.dtype))
