"""FRN's learned thresholds and epsilons as training scalars (TensorBoard, metrics.json).

FRN learns, besides gamma and beta, the TLU threshold ``tau`` of every channel and, where
``learnable_eps`` is on, one ``learned_eps`` per layer (``eps = eps0 + |learned_eps|``).
A tau that drifts far above 0 clips most of a channel's responses; an eps that grows
towards the mean squared response (the paper's concern for 1x1 features) flattens the
normalization. ``FRNStatsHook`` puts their summary statistics into detectron2's
EventStorage, from which detectron2's writers send them to TensorBoard and metrics.json.

Layers are found by parameter name (``tau``, ``learned_eps``), not by class: FRN+TLU, a
bare TLU and any norm-act registered under another name with those parameters count.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from detectron2.engine import HookBase
from torch import nn

__all__ = ["FRNStatsHook", "frn_parameter_stats"]

PREFIX = "frn"


def _group(module_name: str) -> str:
    # "backbone.bottom_up.res2.0.conv1.norm" -> "backbone"; DistributedDataParallel adds
    # "module." in front.
    name = module_name.removeprefix("module.")
    return name.split(".", 1)[0] or "model"


def frn_parameter_stats(model: nn.Module) -> dict[str, float]:
    """Summary statistics of every TLU threshold and learned FRN eps in ``model``.

    Keys (empty dict for a model without either):

    - ``frn/tau_mean``, ``frn/tau_min``, ``frn/tau_max``: over all channels of all layers
      with a ``tau`` parameter, and ``frn/tau_mean/<top-level module>`` (``backbone``,
      ``roi_heads``, ...);
    - ``frn/eps_mean``, ``frn/eps_min``, ``frn/eps_max``: the effective eps
      (``eps0 + |learned_eps|``) of the layers that learn it, and
      ``frn/eps_mean/<top-level module>``.
    """
    taus: dict[str, list[torch.Tensor]] = defaultdict(list)
    epsilons: dict[str, list[torch.Tensor]] = defaultdict(list)
    with torch.no_grad():
        for name, module in model.named_modules():
            own = dict(module.named_parameters(recurse=False))
            if "tau" in own:
                taus[_group(name)].append(own["tau"].detach().float().flatten().cpu())
            if "learned_eps" in own:
                eps0 = float(getattr(module, "eps", 0.0))
                learned = own["learned_eps"].detach().float().abs().flatten().cpu()
                epsilons[_group(name)].append(eps0 + learned)
    stats: dict[str, float] = {}
    for kind, groups in (("tau", taus), ("eps", epsilons)):
        if not groups:
            continue
        every = torch.cat([t for values in groups.values() for t in values])
        stats[f"{PREFIX}/{kind}_mean"] = every.mean().item()
        stats[f"{PREFIX}/{kind}_min"] = every.min().item()
        stats[f"{PREFIX}/{kind}_max"] = every.max().item()
        for group, values in sorted(groups.items()):
            stats[f"{PREFIX}/{kind}_mean/{group}"] = torch.cat(values).mean().item()
    return stats


class FRNStatsHook(HookBase):
    """Every ``period`` iterations (and after the last), put ``frn_parameter_stats`` of the
    trainer's model into its EventStorage.

    Register it before detectron2's ``PeriodicWriter`` (the last of DefaultTrainer's
    hooks) with the writer's period (20 in DefaultTrainer), so that the values of an
    iteration are written with it rather than one period late::

        hooks = super().build_hooks()
        hooks.insert(len(hooks) - 1, FRNStatsHook(period=20))
    """

    def __init__(self, period: int = 20) -> None:
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"FRNStatsHook period must be an integer >= 1, got {period!r}")
        self.period = period

    def after_step(self) -> None:
        """Record the statistics at this iteration when it is due."""
        done = self.trainer.iter + 1
        if done % self.period and done != self.trainer.max_iter:
            return
        stats = frn_parameter_stats(self.trainer.model)
        if stats:
            self.trainer.storage.put_scalars(**stats, smoothing_hint=False)
