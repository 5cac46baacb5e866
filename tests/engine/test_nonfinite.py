"""Divergence: a NaN or Inf loss stops training with the iteration, the loss terms and what
to change, and never leaves a checkpoint written from the diverged model."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from frn_det.checkpoint import NonFiniteCheckpointError, SafeCheckpointer
from frn_det.engine import Trainer, setup
from frn_det.engine.trainer import DIVERGED_LINE, YACS_DIVERGENCE_ADVICE, NonFiniteLossError


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # The machine's cores are shared; two threads fighting other processes run slower.
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _trainer(tiny_args, output_dir, *opts: str, max_iter: int = 6) -> Trainer:
    args = tiny_args(
        output_dir, opts=["DATASETS.TEST", "()", *opts, "MODEL.DEVICE", "cpu"], max_iter=max_iter
    )
    trainer = Trainer(setup(args))
    trainer.resume_or_load(resume=False)
    return trainer


def _finite(path) -> bool:
    model = torch.load(path, weights_only=True)["model"]
    return all(bool(torch.isfinite(v).all()) for v in model.values() if v.is_floating_point())


def test_a_nan_loss_stops_training_with_the_iteration_the_loss_terms_and_the_hint(
    tiny_args, tmp_path
):
    trainer = _trainer(tiny_args, tmp_path, "SOLVER.CHECKPOINT_PERIOD", "2")
    model = trainer.model
    forward = model.forward

    def nan_mask_loss_from_iteration_3(batched_inputs):
        losses = forward(batched_inputs)
        if trainer.iter >= 3:
            losses["loss_mask"] = losses["loss_mask"] * float("nan")
        return losses

    model.forward = nan_mask_loss_from_iteration_3
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.train()

    error = raised.value
    assert error.iteration == 3
    assert math.isnan(error.losses["loss_mask"]) and math.isfinite(error.losses["loss_cls"])
    message = str(error)
    assert message.startswith("non-finite loss at iteration 3: loss_cls=")
    assert DIVERGED_LINE.search(message)["iteration"] == "3"  # what the sweep reads
    assert "loss_mask=nan" in message and "(total nan)" in message
    assert f"the newest is {tmp_path / 'model_0000001.pth'}" in message
    assert "Lower SOLVER.BASE_LR (now 0.01) or lengthen SOLVER.WARMUP_ITERS (now 2)" in message
    # The checkpoint after iteration 1 is the last one; none after the failure.
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000001.pth"]
    assert _finite(tmp_path / "model_0000001.pth")


def test_a_huge_learning_rate_stops_training_and_writes_no_final_model(tiny_args, tmp_path):
    trainer = _trainer(
        tiny_args, tmp_path, "SOLVER.BASE_LR", "1e6", "SOLVER.CHECKPOINT_PERIOD", "1"
    )
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.train()

    message = str(raised.value)
    assert f"at iteration {raised.value.iteration}" in message
    assert DIVERGED_LINE.search(message)["iteration"] == str(raised.value.iteration)
    assert "Lower SOLVER.BASE_LR (now 1e+06) or lengthen SOLVER.WARMUP_ITERS" in message
    assert not (tmp_path / "model_final.pth").exists()
    saved = sorted(tmp_path.glob("model_*.pth"))
    assert len(saved) == raised.value.iteration  # one per finished iteration, then none
    assert all(_finite(path) for path in saved)


def test_a_model_holding_nan_is_not_saved_over_the_last_good_checkpoint(tmp_path):
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    checkpointer = SafeCheckpointer(
        net, str(tmp_path), save_to_disk=True, divergence_advice=YACS_DIVERGENCE_ADVICE
    )
    checkpointer.save("model_0000001")
    with torch.no_grad():
        net[1].weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteCheckpointError) as raised:
        checkpointer.save("model_final")
    assert str(raised.value) == (
        f"refusing to save checkpoint {tmp_path / 'model_final.pth'}: 1 model tensors hold "
        f"NaN or Inf (1.weight), so training diverged; the last good checkpoint "
        f"{tmp_path / 'model_0000001.pth'} is kept. Lower SOLVER.BASE_LR or lengthen "
        "SOLVER.WARMUP_ITERS and train again"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"


def test_a_refusal_to_save_a_diverged_model_names_the_keys_its_caller_gives(tmp_path):
    net = nn.Sequential(nn.Linear(3, 4))
    change = "Lower optimizer.lr (now 0.1) or lengthen lr_multiplier.warmup_length and train again"
    checkpointer = SafeCheckpointer(
        net, str(tmp_path), save_to_disk=True, divergence_advice=change
    )
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteCheckpointError) as raised:
        checkpointer.save("model_final")
    assert str(raised.value).endswith(f"so training diverged; none was saved. {change}")
    assert "SOLVER" not in str(raised.value)
