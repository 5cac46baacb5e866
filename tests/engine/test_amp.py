"""SOLVER.AMP with FRN: bfloat16 autocast on the CPU, float16 with gradient scaling on CUDA."""

from __future__ import annotations

import math

import pytest
import torch
from detectron2.config import get_cfg

from frn_det.config import add_frn_config
from frn_det.engine import Trainer, setup
from frn_det.engine.trainer import amp_precision
from frn_det.layers import FilterResponseNorm2d


def _cfg(device: str, precision: str = "auto"):
    cfg = add_frn_config(get_cfg())
    cfg.MODEL.DEVICE = device
    cfg.SOLVER.AMP.PRECISION = precision
    return cfg


def test_auto_precision_is_bfloat16_on_the_cpu_and_float16_on_cuda(monkeypatch):
    assert amp_precision(_cfg("cpu")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert amp_precision(_cfg("cuda")) is torch.float16
    assert amp_precision(_cfg("cuda", "bfloat16")) is torch.bfloat16


def test_an_unknown_precision_is_refused_with_the_accepted_values():
    with pytest.raises(ValueError, match=r"SOLVER.AMP.PRECISION is 'fp8'.*'auto', 'float16'"):
        amp_precision(_cfg("cpu", "fp8"))


def test_float16_on_the_cpu_is_refused_pointing_to_bfloat16():
    with pytest.raises(ValueError, match="CPU mixed precision is 'bfloat16'"):
        amp_precision(_cfg("cpu", "float16"))


def _first_losses(tiny_args, output_dir, amp: bool, frn_inputs: list) -> list[float]:
    cfg = setup(
        tiny_args(output_dir, max_iter=4, opts=["SOLVER.AMP.ENABLED", str(amp), "SEED", "7"])
    )
    trainer = Trainer(cfg)
    frn = next(m for m in trainer.model.modules() if isinstance(m, FilterResponseNorm2d))
    # Only training steps run under autocast; the evaluation at the end runs in fp32.
    frn.register_forward_hook(
        lambda m, args, out: frn_inputs.append((args[0].dtype, out)) if m.training else None
    )
    trainer.resume_or_load(resume=False)
    trainer.train()
    return [value for value, _ in trainer.storage.history("total_loss").values()]


def test_bfloat16_training_with_frn_is_finite_and_close_to_fp32(tiny_args, tmp_path):
    amp_inputs: list = []
    amp_losses = _first_losses(tiny_args, tmp_path / "amp", True, amp_inputs)
    fp32_losses = _first_losses(tiny_args, tmp_path / "fp32", False, [])
    # The FRN layer really ran under autocast: bf16 in, finite bf16 out.
    assert {dtype for dtype, _ in amp_inputs} == {torch.bfloat16}
    assert all(torch.isfinite(out).all() and out.dtype == torch.bfloat16 for _, out in amp_inputs)
    assert amp_losses and all(math.isfinite(v) for v in amp_losses)
    # Same seed, same images: the first step's loss differs only by bf16 rounding.
    assert amp_losses[0] == pytest.approx(fp32_losses[0], rel=0.05)
