"""Filter Response Normalization with its Thresholded Linear Unit (Singh & Krishnan, 2020).

For a map ``x`` of shape (N, C, H, W), per sample n and channel c::

    nu2 = mean_{H,W}(x^2);  y = gamma * x / sqrt(nu2 + eps) + beta;  z = max(y, tau)

No statistic crosses the batch axis and nothing is tracked between calls, so training and
evaluation compute the same function and one sample's output never depends on another's.
"""

from __future__ import annotations

import torch
from torch import nn


def frn_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    tau: torch.Tensor | None,
    eps: torch.Tensor,
) -> torch.Tensor:
    """The plain FRN(+TLU) formula, every other path is checked against.

    Args:
        x: (N, C, H, W) in any float dtype; statistics are taken in fp32.
        weight, bias: (C,) gamma and beta.
        tau: (C,) TLU threshold, or None for FRN without TLU.
        eps: the effective epsilon, a scalar tensor or (C,), already made positive.
    Returns:
        (N, C, H, W) in the dtype of ``x``.
    """
    shape = (1, -1, 1, 1)
    xf = x.float()
    nu2 = xf.square().mean(dim=(2, 3), keepdim=True)
    y = xf * torch.rsqrt(nu2 + eps.float().reshape(-1, 1, 1) if eps.dim() else nu2 + eps.float())
    y = y * weight.float().reshape(shape) + bias.float().reshape(shape)
    if tau is not None:
        y = torch.maximum(y, tau.float().reshape(shape))
    return y.to(x.dtype)
