"""The optimizer builder: detectron2's SGD recipe, with every registered norm's parameters
counted as norm parameters.

detectron2's ``get_default_optimizer_params`` gives SOLVER.WEIGHT_DECAY_NORM only to
parameters of a fixed tuple of torch norm classes. FRN's gamma, beta, tau and learned eps
would fall through to SOLVER.WEIGHT_DECAY like a convolution's weights, and weight decay on
them pulls gamma and tau towards 0 and changes what the WEIGHT_DECAY_NORM knob means
between a BN and an FRN experiment. Here the norm classes are torch's plus those the
norm-act registry knows (``frn_det.layers.norm_module_types``): a name registered with
``register_norm`` gets WEIGHT_DECAY_NORM with no change here.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups
from torch import nn

from frn_det.layers import norm_module_types as registered_norm_module_types

__all__ = ["TORCH_NORM_TYPES", "build_optimizer", "get_optimizer_params", "norm_module_types"]

TORCH_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,  # detectron2's NaiveSyncBatchNorm subclasses BatchNorm2d
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
"""torch's norm classes (detectron2's grouping's), norms whether or not a name builds them."""


def norm_module_types() -> tuple[type[nn.Module], ...]:
    """Module classes whose parameters get SOLVER.WEIGHT_DECAY_NORM: ``TORCH_NORM_TYPES``
    and every class the norm-act registry knows as a norm, asked at each call."""
    return tuple(dict.fromkeys(TORCH_NORM_TYPES + registered_norm_module_types()))


def get_optimizer_params(
    model: nn.Module,
    base_lr: float | None = None,
    weight_decay: float | None = None,
    weight_decay_norm: float | None = None,
    bias_lr_factor: float | None = 1.0,
    weight_decay_bias: float | None = None,
    overrides: dict[str, dict[str, float]] | None = None,
    norm_types: tuple[type[nn.Module], ...] | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups, as ``detectron2.solver.get_default_optimizer_params``.

    Differences: parameters owned by an instance of one of ``norm_types`` (every
    registered norm's by default: FRN, TLU, EvoNorm, yours) get ``weight_decay_norm``; the
    arguments are otherwise the same as detectron2's (without ``lr_factor_func``, which
    its yacs configs never set).

    Args:
        model: the model; parameters with ``requires_grad=False`` are left out, and a
            parameter shared between modules appears once.
        base_lr, weight_decay: defaults of every group; None leaves the optimizer's own.
        weight_decay_norm: weight decay of norm parameters; None treats them like others.
        bias_lr_factor: LR multiplier of parameters named ``bias`` (needs ``base_lr``).
        weight_decay_bias: weight decay of parameters named ``bias``; None: no override.
        overrides: ``{param_name: {"lr": ..., "weight_decay": ...}}`` by a parameter's own
            name (``bias``, ``tau``, ...), applied last.
        norm_types: classes whose parameters are norm parameters; None:
            ``norm_module_types()`` (torch's and the registry's).
    Returns:
        Parameter groups merged by hyperparameters (``reduce_param_groups``), ready for
        ``torch.optim.SGD``.
    """
    overrides = dict(overrides or {})
    defaults: dict[str, float] = {}
    if base_lr is not None:
        defaults["lr"] = base_lr
    if weight_decay is not None:
        defaults["weight_decay"] = weight_decay
    bias_overrides: dict[str, float] = {}
    if bias_lr_factor is not None and bias_lr_factor != 1.0:
        if base_lr is None:
            raise ValueError(f"bias_lr_factor={bias_lr_factor} needs base_lr, got None")
        bias_overrides["lr"] = base_lr * bias_lr_factor
    if weight_decay_bias is not None:
        bias_overrides["weight_decay"] = weight_decay_bias
    if bias_overrides:
        if "bias" in overrides:
            raise ValueError(
                f"overrides for 'bias' ({overrides['bias']}) conflict with bias_lr_factor / "
                "weight_decay_bias; give one or the other"
            )
        overrides["bias"] = bias_overrides

    if norm_types is None:
        norm_types = norm_module_types()
    params: list[dict[str, Any]] = []
    seen: set[nn.Parameter] = set()
    for module in model.modules():
        is_norm = isinstance(module, norm_types)
        for name, value in module.named_parameters(recurse=False):
            if not value.requires_grad or value in seen:
                continue
            seen.add(value)
            hyperparams = copy.copy(defaults)
            if is_norm and weight_decay_norm is not None:
                hyperparams["weight_decay"] = weight_decay_norm
            hyperparams.update(overrides.get(name, {}))
            params.append({"params": [value], **hyperparams})
    return reduce_param_groups(params)


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """SGD from SOLVER.* as ``detectron2.solver.build_optimizer``, with every registered
    norm's parameters in the WEIGHT_DECAY_NORM group.

    Reads BASE_LR, MOMENTUM, NESTEROV, WEIGHT_DECAY, WEIGHT_DECAY_NORM, BIAS_LR_FACTOR,
    WEIGHT_DECAY_BIAS and CLIP_GRADIENTS (``maybe_add_gradient_clipping``). The LR schedule
    (BASE_LR_END, STEPS, warm-up) is the scheduler's: ``detectron2.solver.build_lr_scheduler``.
    """
    solver = cfg.SOLVER
    params = get_optimizer_params(
        model,
        base_lr=solver.BASE_LR,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        bias_lr_factor=solver.BIAS_LR_FACTOR,
        weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
    )
    optimizer = torch.optim.SGD(
        params,
        lr=solver.BASE_LR,
        momentum=solver.MOMENTUM,
        nesterov=solver.NESTEROV,
        weight_decay=solver.WEIGHT_DECAY,
        foreach=True,
    )
    return maybe_add_gradient_clipping(cfg, optimizer)
