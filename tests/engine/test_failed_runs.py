"""train_net on bad input, round 2: no exit 0 on a wrong result, a one-paragraph message
naming the flag, key or file, the value and what is accepted, and the run folder left
byte-identical by every refused command."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from frn_det.engine import Trainer, argument_parser, setup
from frn_det.engine.cli import check_args, run
from frn_det.engine.validation import InputError

REPO = Path(__file__).resolve().parents[2]
SHAPES_CONFIG = REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_frn.yaml"


@pytest.fixture(autouse=True)
def _one_thread_no_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The same world size and device on every machine; the cores are shared.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def run_folder(tiny_args, tmp_path_factory) -> Path:
    """The folder of a tiny run trained 2 iterations: a checkpoint after each
    (model_0000000.pth, model_0000001.pth), model_final.pth, last_checkpoint naming it,
    config.yaml, metrics.json and log.txt."""
    folder = tmp_path_factory.mktemp("run")
    opts = ["SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()", "MODEL.DEVICE", "cpu"]
    torch.set_num_threads(1)
    trainer = Trainer(setup(tiny_args(folder, opts=opts, max_iter=2)))
    trainer.resume_or_load(resume=False)
    trainer.train()
    return folder


@pytest.fixture
def folder(run_folder: Path, tmp_path: Path) -> Path:
    """A copy of ``run_folder`` the test may break."""
    copy = tmp_path / "run"
    shutil.copytree(run_folder, copy)
    return copy


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        os.fspath(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture
def refused(capsys) -> Callable[..., str]:
    """``refused(argv, folder=None, status=2)``: run train_net with ``argv`` in this process,
    check that it exits with ``status`` before anything is written to ``folder`` (byte for
    byte), and return its message, the one line on stderr after "train_net.py: error: "."""

    def check(argv: list[str], folder: Path | None = None, status: int = 2) -> str:
        before = _snapshot(folder) if folder is not None else None
        with pytest.raises(SystemExit) as exited:
            run(argv)
        assert exited.value.code == status
        if folder is not None:
            assert _snapshot(folder) == before, "the run folder changed"
        err = capsys.readouterr().err
        assert "Traceback" not in err
        [line] = [line for line in err.splitlines() if ": error: " in line]
        return line.split(": error: ", 1)[1]

    return check


@pytest.fixture
def argv(tiny_args) -> Callable[..., list[str]]:
    """``argv(output_dir, *opts, flags=())``: the train_net command line of the tiny model
    on the tiny dataset, evaluated on frn_shapes_val, with KEY VALUE ``opts`` last."""

    def make(output_dir: Path, *opts: str, flags: tuple[str, ...] = ()) -> list[str]:
        options = ["DATASETS.TEST", "('frn_shapes_val',)", *opts]
        return [*flags, *_with_config(tiny_args(output_dir, opts=options))]

    return make


def _with_config(args) -> list[str]:
    return ["--config-file", args.config_file, *args.opts]


# --- wrong outcomes -------------------------------------------------------------------


def test_eval_only_of_a_checkpoint_of_other_shapes_is_refused_listing_them(folder, refused, argv):
    weights = folder / "model_final.pth"
    message = refused(
        argv(
            folder,
            "MODEL.WEIGHTS",
            os.fspath(weights),
            "MODEL.ROI_HEADS.NUM_CLASSES",
            "7",
            flags=("--eval-only",),
        ),
        folder,
    )
    assert message.startswith(
        f"MODEL.WEIGHTS {weights}: cannot evaluate checkpoint {weights} with this config: "
    )
    assert "tensors do not have the model's shapes:" in message
    assert (
        "roi_heads.box_predictor.cls_score.weight: (5, 128) in the checkpoint, (8, 128)" in message
    )
    assert "evaluate it with the config it was trained with" in message


def test_eval_only_without_weights_is_refused_instead_of_evaluating_a_random_model(
    tmp_path, refused, argv
):
    message = refused(argv(tmp_path / "out", flags=("--eval-only",)))
    assert message.startswith("--eval-only needs a checkpoint to evaluate: MODEL.WEIGHTS is empty")
    assert "randomly initialised model" in message and "MODEL.WEIGHTS path/to/" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--num-gpus", "-1"), "--num-gpus must be an integer >= 1 (processes per machine, "),
        (("--num-gpus", "0"), "--num-gpus must be an integer >= 1"),
        (("--num-machines", "0"), "--num-machines must be an integer >= 1"),
        (("--machine-rank", "1"), "--machine-rank must be between 0 and --num-machines - 1 (0"),
        (
            ("--num-machines", "2", "--dist-url", "auto"),
            "--dist-url auto picks a free port on this machine, so it needs --num-machines 1",
        ),
    ],
)
def test_a_launch_that_would_start_no_process_is_refused(tmp_path, refused, flags, expected, argv):
    message = refused(argv(tmp_path, flags=flags))
    assert message.startswith(expected)
    assert f"got {flags[1]}" in message


# --- nothing a user wrote is overwritten ----------------------------------------------


def test_a_resume_with_another_config_leaves_the_run_folder_and_its_config_yaml_as_they_were(
    folder, refused, argv
):
    message = refused(argv(folder, "MODEL.ROI_HEADS.NUM_CLASSES", "7", flags=("--resume",)), folder)
    assert message.startswith(
        f"--resume (from OUTPUT_DIR {folder}): cannot resume from checkpoint "
        f"{folder / 'model_final.pth'}: "
    )
    assert "resume with the config.yaml of its output folder" in message


# --- checkpoints that cannot be read ----------------------------------------------------


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_text("hello\n"), "is truncated or not a PyTorch checkpoint (not a zip"),
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
        (lambda p: p.mkdir(), "is a folder, not a checkpoint file"),
    ],
    ids=["text", "empty", "folder"],
)
def test_model_weights_that_are_not_a_checkpoint_are_named_before_anything_starts(
    tmp_path, refused, make, expected, argv
):
    weights = tmp_path / "weights.pth"
    make(weights)
    for flags in ((), ("--eval-only",)):
        message = refused(argv(tmp_path / "out", "MODEL.WEIGHTS", os.fspath(weights), flags=flags))
        assert message.startswith(f"MODEL.WEIGHTS {weights}: checkpoint {weights} ")
        assert expected in message
    assert not (tmp_path / "out").exists()


def _only_final(folder: Path) -> None:
    for path in folder.glob("model_0*.pth"):
        path.unlink()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x80\x04\x95binary", "does not hold a file name (it starts with b'\\x80\\x04"),
        (b"", "is empty; it should hold the file name of the newest checkpoint"),
        (b"model_0000042.pth", "names model_0000042.pth, which cannot be loaded: checkpoint "),
    ],
    ids=["binary", "empty", "missing-file"],
)
def test_a_last_checkpoint_that_names_no_usable_file_is_explained_with_what_is_beside_it(
    folder, refused, content, expected, argv
):
    _only_final(folder)
    (folder / "last_checkpoint").write_bytes(content)
    message = refused(argv(folder, flags=("--resume",)), folder)
    assert message.startswith(f"--resume (from OUTPUT_DIR {folder}): cannot resume: ")
    assert f"{folder / 'last_checkpoint'} " in message and expected in message
    assert f"no older checkpoint (<prefix>_NNNNNNN.pth) is in {folder}" in message
    assert f"Remove {folder / 'last_checkpoint'} to start from MODEL.WEIGHTS" in message


@pytest.fixture
def checkpointer_warnings() -> Iterator[list[str]]:
    """What frn_det.checkpoint logs at WARNING during the test."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    log = logging.getLogger("frn_det.checkpoint")
    handler = Collect(level=logging.WARNING)
    log.addHandler(handler)
    yield messages
    log.removeHandler(handler)


def test_a_last_checkpoint_naming_a_missing_file_resumes_from_the_newest_older_one(
    folder, checkpointer_warnings, argv
):
    (folder / "last_checkpoint").write_text("model_0000042.pth")
    check_args(argument_parser().parse_args(argv(folder, flags=("--resume",))))
    assert checkpointer_warnings == [
        f"Cannot resume from it: {folder / 'last_checkpoint'} names model_0000042.pth, which "
        f"cannot be loaded: checkpoint {folder / 'model_0000042.pth'} does not exist. Complete "
        "checkpoints beside it, newest first: model_0000001.pth, model_0000000.pth.",
        f"Resumed from {folder / 'model_0000001.pth'} instead.",
    ]


# --- output folders -------------------------------------------------------------------


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, refused, argv):
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    message = refused(argv(path))
    assert message.startswith(f"OUTPUT_DIR {path} is a file, not a folder")
    assert path.read_text() == "mine\n"


def test_an_output_dir_that_cannot_be_written_is_refused(tmp_path, monkeypatch, argv):
    # Root may write anywhere, so the permission answer is what the check is given.
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode: False if Path(path) == tmp_path else real_access(path, mode),
    )
    with pytest.raises(InputError) as raised:
        check_args(argument_parser().parse_args(argv(tmp_path / "out")))
    assert str(raised.value).startswith(
        f"OUTPUT_DIR {tmp_path / 'out'} would be created in {tmp_path}, which is not writable"
    )


# --- the run itself ---------------------------------------------------------------------


def test_a_diverging_run_ends_in_one_paragraph_and_a_plain_log(tiny_args, tmp_path):
    """One real train_net process on a CPU machine, with detectron2's default MODEL.DEVICE
    ("cuda") and a learning rate that diverges within a few iterations."""
    output_dir = tmp_path / "out"
    args = tiny_args(
        output_dir,
        opts=["DATASETS.TEST", "()", "SOLVER.BASE_LR", "1e6", "SOLVER.WARMUP_ITERS", "0"],
        max_iter=8,
    )
    done = subprocess.run(
        [sys.executable, os.fspath(REPO / "tools" / "train_net.py"), *_with_config(args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    [error] = [line for line in done.stderr.splitlines() if line.startswith("train_net.py: err")]
    assert error.startswith("train_net.py: error: non-finite ")
    assert "Lower SOLVER.BASE_LR (now 1e+06)" in error
    assert output.count("CUDA is not available") == 1
    log = (output_dir / "log.txt").read_text()
    assert "\x1b[" not in log  # no terminal colours in the file
    assert log.count("CUDA is not available") == 1
    assert "Training in float32 (SOLVER.AMP.ENABLED is False)." in log
    assert "ERROR: Training stopped: non-finite " in log and "Traceback" not in log
    for line in (output_dir / "metrics.json").read_text().splitlines():
        json.loads(line, parse_constant=_refuse)  # strict JSON: no bare NaN or Infinity


def _refuse(constant: str) -> None:
    raise AssertionError(f"metrics.json holds a bare {constant}, which is not JSON")


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_eval_only_of_the_checkpoint_a_run_wrote_passes_the_launchers_check(
    run_folder, tmp_path, argv, suffix
):
    weights = run_folder / "model_final.pth"
    if suffix == ".pkl":  # detectron2's model-zoo format: a pickled dict of numpy arrays
        state = torch.load(weights, weights_only=True)["model"]
        weights = tmp_path / "model_final.pkl"
        with open(weights, "wb") as f:
            zoo = {k: v.numpy() for k, v in state.items()}
            pickle.dump({"model": zoo, "__author__": "frn-det tests"}, f)
    args = argument_parser().parse_args(
        argv(tmp_path / "eval", "MODEL.WEIGHTS", os.fspath(weights), flags=("--eval-only",))
    )
    checked = check_args(args).MODEL.WEIGHTS
    assert checked == os.fspath(weights)
    assert not (tmp_path / "eval").exists()


def test_a_pkl_that_holds_no_state_dict_is_named_as_such(tmp_path, argv, refused):
    weights = tmp_path / "model.pkl"
    with open(weights, "wb") as f:
        pickle.dump({"model": {"layer": {"weight": [1.0]}}}, f)  # no __author__: Caffe2 blobs
    message = refused(argv(tmp_path / "out", "MODEL.WEIGHTS", os.fspath(weights)))
    assert message.startswith(
        f"MODEL.WEIGHTS {weights}: checkpoint {weights} does not hold a state dict of tensors "
        "or numpy arrays under 'model' (Unsupported type found in checkpoint! model: "
    )
