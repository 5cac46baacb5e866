"""Loading checkpoints: weights-only for frn-det's own, detectron2's model-zoo .pkl format,
clear errors for broken files, and mismatched shapes listed (fatal only when resuming)."""

from __future__ import annotations

import logging
import pickle
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from frn_det.checkpoint import (
    CheckpointError,
    CheckpointShapeError,
    CorruptCheckpointError,
    SafeCheckpointer,
    norm_specific_keys,
)
from frn_det.engine import Trainer, build_config, setup


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # The machine's cores are shared; two threads fighting other processes run slower.
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def warnings_of_the_checkpointer() -> Iterator[list[str]]:
    """The messages frn_det.checkpoint logs at WARNING while the test runs (its handler sits
    on that logger: engine.setup stops the "frn_det" logger from propagating)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("frn_det.checkpoint")
    handler = Collect(level=logging.WARNING)
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


OPTS = ["SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()", "MODEL.DEVICE", "cpu"]


@pytest.fixture(scope="module")
def trained(tiny_args, tmp_path_factory):
    """A tiny Mask R-CNN trained 2 iterations, a checkpoint after each; its args and folder."""
    output_dir = tmp_path_factory.mktemp("loading")
    args = tiny_args(output_dir, opts=OPTS, max_iter=2)
    torch.set_num_threads(1)
    trainer = Trainer(setup(args))
    trainer.resume_or_load(resume=False)
    trainer.train()
    return {"args": args, "dir": output_dir, "trainer": trainer}


def test_our_checkpoints_load_weights_only_with_optimizer_scheduler_and_iteration(trained):
    checkpoint = torch.load(trained["dir"] / "model_0000000.pth", weights_only=True)
    assert checkpoint["iteration"] == 0
    state = checkpoint["trainer"]
    assert state["iteration"] == 0
    assert state["_trainer"]["optimizer"]["state"]  # SGD momentum buffers
    assert state["hooks"]["LRScheduler"]["last_epoch"] == 1


def test_resuming_restores_the_iteration_the_optimizer_and_the_scheduler(
    trained, tiny_args, tmp_path
):
    shutil.copy(trained["dir"] / "model_0000000.pth", tmp_path)
    (tmp_path / "last_checkpoint").write_text("model_0000000.pth")
    trainer = Trainer(build_config(tiny_args(tmp_path, opts=OPTS, max_iter=2)))
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 1
    assert trainer.scheduler.last_epoch == 1
    saved = torch.load(tmp_path / "model_0000000.pth", weights_only=True)
    momentum = saved["trainer"]["_trainer"]["optimizer"]["state"]
    restored = trainer.optimizer.state_dict()["state"]
    assert restored.keys() == momentum.keys()
    for key in momentum:
        torch.testing.assert_close(
            restored[key]["momentum_buffer"], momentum[key]["momentum_buffer"]
        )


def test_a_detectron2_model_zoo_pkl_of_numpy_arrays_loads(trained, tmp_path):
    source = trained["trainer"].model
    zoo = {k: v.detach().numpy().copy() for k, v in source.state_dict().items()}
    path = tmp_path / "model_zoo.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": zoo, "__author__": "frn-det tests"}, f)
    model = Trainer.build_model(build_config(trained["args"]))
    SafeCheckpointer(model).load(str(path))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key], msg=key)


def test_a_pth_holding_numpy_arrays_loads_weights_only(tmp_path):
    source, model = nn.Linear(3, 2), nn.Linear(3, 2)
    path = tmp_path / "numpy.pth"
    torch.save({"model": {k: v.detach().numpy() for k, v in source.state_dict().items()}}, path)
    SafeCheckpointer(model).load(str(path))
    torch.testing.assert_close(model.weight, source.weight)


class Payload:
    """Stands for any pickled object: weights-only loading must not rebuild it."""


def test_a_checkpoint_holding_pickled_objects_is_refused_naming_the_file_and_global(tmp_path):
    path = tmp_path / "object.pth"
    torch.save({"model": nn.Linear(3, 2).state_dict(), "extra": Payload()}, path)
    with pytest.raises(CheckpointError) as raised:
        SafeCheckpointer(nn.Linear(3, 2)).load(str(path))
    assert str(raised.value).startswith(
        f"checkpoint {path} holds the global test_checkpoint_loading.Payload, which "
        "torch.load(weights_only=True) refuses to rebuild"
    )


def test_a_truncated_checkpoint_is_named_and_called_truncated(trained, tmp_path):
    path = tmp_path / "model_0000099.pth"
    path.write_bytes((trained["dir"] / "model_0000000.pth").read_bytes()[:5000])
    with pytest.raises(CorruptCheckpointError) as raised:
        SafeCheckpointer(nn.Linear(3, 2)).load(str(path))
    assert str(raised.value).startswith(
        f"checkpoint {path} is truncated or not a PyTorch checkpoint (zip archive error: "
        "no end-of-archive record in its 5000 bytes; "
    )


def test_a_foreign_file_is_named_and_called_not_a_checkpoint(tmp_path):
    path = tmp_path / "model_final.pth"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(CorruptCheckpointError) as raised:
        SafeCheckpointer(nn.Linear(3, 2)).load(str(path))
    assert str(raised.value).startswith(
        f"checkpoint {path} is truncated or not a PyTorch checkpoint (not a zip archive: it "
        "starts with b'<html>404 Not Fo'; "
    )


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.pth", b"", "is empty (0 bytes); it was never written completely"),
        ("cut.pkl", pickle.dumps({"model": {}, "__author__": "x"})[:-3], "is truncated or not "),
    ],
)
def test_empty_and_truncated_pkl_files_are_named(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match=re.escape(f"checkpoint {path} {expected}")):
        SafeCheckpointer(nn.Linear(3, 2)).load(str(path))


def test_a_missing_checkpoint_is_named(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(
        CorruptCheckpointError, match=re.escape(f"checkpoint {path} does not exist")
    ):
        SafeCheckpointer(nn.Linear(3, 2)).load(str(path))


def _net(classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, classes))


def _saved(folder: Path, classes: int, iteration: int = 9) -> Path:
    name = f"model_{iteration:07d}"
    checkpointer = SafeCheckpointer(_net(classes), str(folder), save_to_disk=True)
    checkpointer.save(name, iteration=iteration)
    return folder / f"{name}.pth"


def test_resuming_from_a_checkpoint_of_other_shapes_raises_listing_every_key(tmp_path):
    _saved(tmp_path, classes=3)
    with pytest.raises(CheckpointShapeError) as raised:
        SafeCheckpointer(_net(5), str(tmp_path)).resume_or_load("", resume=True)
    assert str(raised.value).splitlines()[:3] == [
        f"cannot resume from checkpoint {tmp_path / 'model_0000009.pth'}: 2 tensors do not "
        "have the model's shapes:",
        "  2.weight: (3, 8) in the checkpoint, (5, 8) in the model",
        "  2.bias: (3,) in the checkpoint, (5,) in the model",
    ]


def test_initialising_from_weights_of_other_shapes_warns_listing_every_key_and_loads_the_rest(
    tmp_path, warnings_of_the_checkpointer
):
    path = _saved(tmp_path, classes=3)
    model = _net(5)
    SafeCheckpointer(model).resume_or_load(str(path), resume=False)
    (warning,) = warnings_of_the_checkpointer
    assert warning.splitlines() == [
        f"Checkpoint {path}: 2 tensors do not have the model's shapes and were not loaded "
        "(expected when fine-tuning on another number of classes):",
        "  2.weight: (3, 8) in the checkpoint, (5, 8) in the model",
        "  2.bias: (3,) in the checkpoint, (5,) in the model",
    ]
    saved = torch.load(path, weights_only=True)["model"]
    torch.testing.assert_close(model[0].weight, saved["0.weight"])


def test_resuming_falls_back_to_the_newest_older_checkpoint_when_the_last_is_corrupt(
    tmp_path, warnings_of_the_checkpointer
):
    good = _saved(tmp_path, classes=3, iteration=4)
    _saved(tmp_path, classes=3, iteration=1)
    last = _saved(tmp_path, classes=3, iteration=9)
    last.write_bytes(last.read_bytes()[:1000])  # e.g. written by a non-atomic writer
    model = _net(3)
    extra = SafeCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 4
    first, resumed = warnings_of_the_checkpointer
    assert first.startswith(
        f"Cannot resume from it: {tmp_path / 'last_checkpoint'} names {last.name}, which "
        f"cannot be loaded: checkpoint {last} is truncated"
    )
    assert first.endswith(
        "Complete checkpoints beside it, newest first: model_0000004.pth, model_0000001.pth."
    )
    assert resumed == f"Resumed from {good} instead."
    torch.testing.assert_close(
        model[0].weight, torch.load(good, weights_only=True)["model"]["0.weight"]
    )


class _ConvNorm(nn.Module):
    """conv -> norm, the way detectron2's Conv2d names its norm (``<conv>.norm``)."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = norm


def _frn(tlu: bool = True) -> _ConvNorm:
    from frn_det.layers import FilterResponseNorm2d

    return _ConvNorm(FilterResponseNorm2d(4, tlu=tlu))


def _save(model: nn.Module, path: Path) -> str:
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def test_a_bn_checkpoint_gives_an_frn_model_its_convs_but_not_bns_scale_and_bias(tmp_path):
    bn = _ConvNorm(nn.BatchNorm2d(4))
    with torch.no_grad():
        bn.norm.weight.fill_(7.0)
        bn.norm.bias.fill_(3.0)
    frn = _frn()
    SafeCheckpointer(frn).load(_save(bn, tmp_path / "bn.pth"))
    assert torch.equal(frn.conv.weight, bn.conv.weight)
    assert torch.equal(frn.norm.weight, torch.ones(4))
    assert torch.equal(frn.norm.bias, torch.zeros(4))


def test_frns_tau_and_learned_eps_are_its_own_parameters():
    assert norm_specific_keys(_frn()) == {"norm.tau": "FRN"}
    from frn_det.layers import FilterResponseNorm2d

    with_eps = _ConvNorm(FilterResponseNorm2d(4, learnable_eps=True))
    assert norm_specific_keys(with_eps) == {"norm.learned_eps": "FRN", "norm.tau": "FRN"}
    assert norm_specific_keys(_ConvNorm(nn.BatchNorm2d(4))) == {}


def test_a_bn_checkpoint_in_an_frn_model_reports_tau_as_expected_not_as_missing(
    tmp_path, checkpoint_log
):
    path = _save(_ConvNorm(nn.BatchNorm2d(4)), tmp_path / "bn.pth")
    SafeCheckpointer(_frn()).load(path)
    messages = [record.getMessage() for record in checkpoint_log]
    assert (
        f"Checkpoint {path} was trained with another norm than FRN: the model's 1 FRN layers "
        "keep their initial values. Not loaded: its 5 tensors at those layers (e.g. "
        "norm.weight). Not in it, as expected: 1 parameters specific to FRN (tau)."
    ) in messages
    assert not [m for m in messages if "not found in the checkpoint" in m]


def test_an_frn_checkpoint_loads_every_frn_parameter(tmp_path):
    source = _frn()
    with torch.no_grad():
        for parameter in source.norm.parameters():
            parameter.add_(0.5)
    target = _frn()
    SafeCheckpointer(target).load(_save(source, tmp_path / "frn.pth"))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_an_frn_checkpoint_without_tlu_loads_its_scale_and_bias(tmp_path):
    # No tau to recognise it by, and no BN statistics either: it is taken as FRN's own.
    source = _frn(tlu=False)
    with torch.no_grad():
        source.norm.weight.fill_(2.0)
    target = _frn(tlu=False)
    SafeCheckpointer(target).load(_save(source, tmp_path / "frn_no_tlu.pth"))
    assert torch.equal(target.norm.weight, torch.full((4,), 2.0))
