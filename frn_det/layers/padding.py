"""Padding-aware normalization: each image's statistics over its own pixels only.

detectron2 pads the images of a batch to one canvas (``ImageList``). A norm that pools
H x W statistics (FRN, GN) then counts the padded zeros, and every layer's output in the
padded area (beta, tau, conv responses) reaches the valid region through the next conv's
border, so an image's features depend on the other images of its batch. Padding-aware
layers compute their statistics over each image's valid region at their own resolution
and write zeros in the padding, so every convolution reads at an image's border exactly
what it reads when the image is alone.

How the sizes reach the layers. detectron2's meta-architectures hand the backbone only the
padded tensor, and its ``ResNet``, ``FPN`` and ``Conv2d`` call their children with a tensor
alone, so an explicit argument would mean rewriting every forward between the
meta-architecture and the norms, stock code included. Instead the meta-architecture opens
a scope (``padding_scope``) around its forward, ``ImageList`` sizes are recorded in it as
soon as the batch is padded (``record_image_sizes``), and each padding-aware layer reads
the innermost scope of its thread (``valid_mask``). The scope is per thread, so
DataParallel replicas and concurrent models do not see each other's batches; under DDP
each process has its own.

A layer finds its resolution from its map's size: a map of H x W in a canvas of Hc x Wc is
at the stride s = 2**k with ceil(Hc / s) = H (detectron2's strided convs and pools give
ceil), and image i's valid region there is ceil(h_i / s) x ceil(w_i / s).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from detectron2.layers import FrozenBatchNorm2d
from detectron2.layers.batch_norm import LayerNorm
from fvcore.nn.distributed import differentiable_all_reduce
from torch import nn
from torch.nn import functional as F

__all__ = [
    "PaddingAwareBatchNorm2d",
    "PaddingAwareFrozenBatchNorm2d",
    "PaddingAwareGroupNorm",
    "PaddingAwareLayerNorm",
    "PaddingAwareSyncBatchNorm",
    "ZeroPadding",
    "convert_frozen_batchnorm",
    "image_sizes",
    "padding_scope",
    "record_image_sizes",
    "valid_extents",
    "valid_mask",
    "zero_padding",
]

_MAX_STRIDE_LOG2 = 12


@dataclasses.dataclass
class _Scope:
    sizes: tuple[tuple[int, int], ...] | None = None
    canvas: tuple[int, int] | None = None
    masks: dict[tuple, torch.Tensor | None] = dataclasses.field(default_factory=dict)


_local = threading.local()


def _stack() -> list[_Scope]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


@contextlib.contextmanager
def padding_scope() -> Iterator[None]:
    """A scope in which ``record_image_sizes`` declares the batch padding-aware layers see.

    Meta-architectures open one around ``forward``/``inference``; scopes nest, and the
    innermost one with sizes is read.
    """
    stack = _stack()
    stack.append(_Scope())
    try:
        yield
    finally:
        stack.pop()


def record_image_sizes(sizes: Sequence[tuple[int, int]], canvas: Sequence[int]) -> None:
    """Declare, for the innermost open scope, the images of the padded batch being run.

    Args:
        sizes: (h, w) of each image's valid region in the canvas, as ``ImageList.image_sizes``.
        canvas: (Hc, Wc), the padded batch tensor's spatial size.
    No scope open: nothing is recorded (the layers then treat a lone image as unpadded).
    """
    stack = _stack()
    if not stack:
        return
    scope = stack[-1]
    scope.sizes = tuple((int(h), int(w)) for h, w in sizes)
    scope.canvas = (int(canvas[0]), int(canvas[1]))
    scope.masks.clear()


@contextlib.contextmanager
def image_sizes(sizes: Sequence[tuple[int, int]], canvas: Sequence[int]) -> Iterator[None]:
    """Run padding-aware layers on a batch padded to ``canvas`` from images of ``sizes``.

    For code that calls a backbone itself::

        with image_sizes(images.image_sizes, images.tensor.shape[-2:]):
            features = backbone(images.tensor)
    """
    with padding_scope():
        record_image_sizes(sizes, canvas)
        yield


def _current() -> _Scope | None:
    for scope in reversed(_stack()):
        if scope.sizes is not None:
            return scope
    return None


def _stride_log2(canvas: int, size: int, layer: str, shape: tuple[int, ...]) -> int:
    for k in range(_MAX_STRIDE_LOG2 + 1):
        if math.ceil(canvas / 2**k) == size:
            return k
    raise ValueError(
        f"{layer}: a map of shape {tuple(shape)} is at no power-of-two stride of the padded "
        f"canvas ({canvas} px along this axis); padding-aware layers run on maps computed "
        "from the batch the meta-architecture padded (strides 1 to 4096)"
    )


def valid_extents(x: torch.Tensor, layer: object) -> list[tuple[int, int]] | None:
    """Each image's valid (rows, cols) at x's resolution, from the top-left corner, or None
    where nothing is padded. Arguments and errors as ``valid_mask``."""
    mask = valid_mask(x, layer)
    if mask is None:
        return None
    rows = mask[:, 0].any(dim=2).sum(dim=1).tolist()
    cols = mask[:, 0].any(dim=1).sum(dim=1).tolist()
    return list(zip(rows, cols, strict=True))


def valid_mask(x: torch.Tensor, layer: object) -> torch.Tensor | None:
    """Where each image of x's batch has pixels: bool (N, 1, H, W), or None if none padded.

    Args:
        x: (N, C, H, W) maps computed from the padded batch of the innermost scope.
        layer: the caller, named in errors.
    Raises:
        RuntimeError: a batch of more than one map and no recorded sizes (the padding is
            unknown), or a batch whose size differs from the recorded one.
    """
    scope = _current()
    n, _, height, width = x.shape
    name = type(layer).__name__
    if scope is None:
        if n > 1:
            raise RuntimeError(
                f"{name}: padding-aware normalization got a batch of {n} maps of "
                f"{height}x{width} but no image sizes, so it cannot tell pixels from padding. "
                "Run the model through a meta-architecture that records them "
                "(FRNGeneralizedRCNN, FRNRetinaNet; MODEL.META_ARCHITECTURE) or wrap the call "
                "in frn_det.layers.padding.image_sizes(image_list.image_sizes, "
                "image_list.tensor.shape[-2:])"
            )
        return None
    assert scope.sizes is not None and scope.canvas is not None
    if len(scope.sizes) != n:
        raise RuntimeError(
            f"{name}: a batch of {n} maps but {len(scope.sizes)} recorded image sizes; "
            "padding-aware layers run only on maps of the recorded batch (backbone, FPN, "
            "dense heads), not on per-region features"
        )
    key = (height, width, x.device)
    if key not in scope.masks:
        scope.masks[key] = _build_mask(scope, height, width, x.device, name, tuple(x.shape))
    return scope.masks[key]


def _build_mask(
    scope: _Scope, height: int, width: int, device: torch.device, name: str, shape: tuple
) -> torch.Tensor | None:
    assert scope.sizes is not None and scope.canvas is not None
    kh = _stride_log2(scope.canvas[0], height, name, shape)
    kw = _stride_log2(scope.canvas[1], width, name, shape)
    valid_h = [math.ceil(h / 2**kh) for h, _ in scope.sizes]
    valid_w = [math.ceil(w / 2**kw) for _, w in scope.sizes]
    if all(h >= height for h in valid_h) and all(w >= width for w in valid_w):
        return None
    rows = torch.arange(height, device=device) < torch.tensor(valid_h, device=device)[:, None]
    cols = torch.arange(width, device=device) < torch.tensor(valid_w, device=device)[:, None]
    return (rows[:, :, None] & cols[:, None, :]).unsqueeze(1)


def zero_padding(x: torch.Tensor, layer: object) -> torch.Tensor:
    """x (N, C, H, W) with zeros wherever the recorded batch is padded."""
    mask = valid_mask(x, layer)
    return x if mask is None else x * mask.to(x.dtype)


class ZeroPadding(nn.Module):
    """Writes zeros in the padding; stands in for "no norm" in padding-aware slots."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the same, zero where padded."""
        return zero_padding(x, self)


def zero_padding_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook: zero ``module``'s output in the padding (norms without their own form)."""
    return zero_padding(output, module)


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


class PaddingAwareGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` whose statistics are each image's (group, valid pixels) moments.

    Each image's valid region (a top-left rectangle: detectron2 pads at the bottom and
    right) is normalised on its own by torch's group norm and the padding is zero, so the
    result is exactly what the image gets alone. (N, C, H, W) -> (N, C, H, W); parameters
    and their names are ``nn.GroupNorm``'s.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extents = valid_extents(x, self)
        if extents is None:
            return super().forward(x)
        h, w = x.shape[-2:]
        out = []
        for i, (vh, vw) in enumerate(extents):
            alone = super().forward(x[i : i + 1, :, :vh, :vw])
            out.append(F.pad(alone, (0, w - vw, 0, h - vh)))
        return torch.cat(out)


class PaddingAwareBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics are over the batch's valid pixels only.

    In training the mean and variance are over every valid pixel of every image (and, in
    ``PaddingAwareSyncBatchNorm``, of every process), and the running statistics are
    updated from them; in evaluation the running statistics normalise as usual. Either way
    the padding is zero. (N, C, H, W) -> (N, C, H, W); parameter and buffer names are
    ``nn.BatchNorm2d``'s, so checkpoints and PreciseBN work unchanged.
    """

    def _all_reduce(self, stats: torch.Tensor) -> torch.Tensor:
        return stats

    def _synchronised(self) -> bool:
        return False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = valid_mask(x, self)
        batch_stats = self.training or not self.track_running_stats
        if not batch_stats or (mask is None and not self._synchronised()):
            y = super().forward(x)
            return y if mask is None else y * mask.to(y.dtype)
        acc = _acc(x.dtype)
        c = x.shape[1]
        xf = x.to(acc)
        m = (
            torch.ones_like(xf[:, :1]) if mask is None else mask.to(acc)
        )
        # sums, not means: processes with different numbers of valid pixels (or none)
        # then combine exactly; the x-dependent zero keeps a gradient path for empty inputs.
        count = m.sum().reshape(1) + xf.sum() * 0
        sums = (xf * m).sum(dim=(0, 2, 3)), (xf.square() * m).sum(dim=(0, 2, 3))
        stats = torch.cat([*sums, count])
        stats = self._all_reduce(stats)
        total = stats[-1].detach()
        mean, meansqr = torch.split(stats[:-1] / total.clamp(min=1), c)
        var = (meansqr - mean.square()).clamp(min=0)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), total)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight.to(acc)
        shift = -mean * scale
        if self.affine:
            shift = shift + self.bias.to(acc)
        y = (xf * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)) * m
        return y.to(x.dtype)

    def _update_running_stats(
        self, mean: torch.Tensor, var: torch.Tensor, total: torch.Tensor
    ) -> None:
        if total.item() == 0:
            return
        self.num_batches_tracked.add_(1)
        # momentum None: a cumulative moving average, as nn.BatchNorm2d
        factor = self.momentum
        if factor is None:
            factor = 1.0 / float(self.num_batches_tracked)
        unbiased = var * (total / (total - 1).clamp(min=1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


class PaddingAwareSyncBatchNorm(PaddingAwareBatchNorm2d):
    """``PaddingAwareBatchNorm2d`` with statistics summed over every process (SyncBN).

    Sums of x, x^2 and the valid-pixel count are all-reduced, so each process weighs by
    its valid pixels and one without images (or with only padding) is harmless. Works on
    NCCL and gloo; a single process computes exactly ``PaddingAwareBatchNorm2d``.
    """

    def _synchronised(self) -> bool:
        return self.training and dist.is_available() and dist.is_initialized() and (
            dist.get_world_size() > 1
        )

    def _all_reduce(self, stats: torch.Tensor) -> torch.Tensor:
        if not self._synchronised():
            return stats
        return differentiable_all_reduce(stats)


class PaddingAwareFrozenBatchNorm2d(FrozenBatchNorm2d):
    """detectron2's ``FrozenBatchNorm2d`` with zeros in the padding (it has no statistics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return zero_padding(super().forward(x), self)


class PaddingAwareLayerNorm(LayerNorm):
    """detectron2's channel ``LayerNorm`` (per pixel) with zeros in the padding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return zero_padding(super().forward(x), self)


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every plain ``FrozenBatchNorm2d`` under ``module`` by the padding-aware one.

    ``CNNBlockBase.freeze`` turns BN into plain ``FrozenBatchNorm2d``; this keeps a frozen
    padding-aware network padding-aware. Buffers are copied; returns the (new) module.
    """
    if type(module) is FrozenBatchNorm2d:
        converted = PaddingAwareFrozenBatchNorm2d(module.num_features, module.eps)
        converted.load_state_dict(module.state_dict())
        return converted
    for name, child in module.named_children():
        new = convert_frozen_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module
