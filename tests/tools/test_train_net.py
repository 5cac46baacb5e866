"""tools/train_net.py: detectron2's command line plus --ims-per-gpu, launched per device."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import detectron2
import pytest
import torch

import frn_det.engine.cli
import frn_det.engine.exits
from frn_det.engine import argument_parser, build_config

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "train_net.py"
# detectron2's own: 16 images, BASE_LR 0.02, MAX_ITER 90000, STEPS (60000, 80000).
BASE_RCNN = Path(detectron2.__file__).parent / "model_zoo" / "configs" / "Base-RCNN-FPN.yaml"
SHAPES_CONFIG = REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_frn.yaml"


@pytest.fixture
def train_net(monkeypatch):
    """tools/train_net.py as a module, with the engine's ``launch`` recording its call."""
    spec = importlib.util.spec_from_file_location("frn_train_net_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    monkeypatch.setattr(frn_det.engine.exits, "launch", lambda *a, **kw: calls.append((a, kw)))
    module.calls = calls
    return module


def test_the_script_runs_from_a_checkout_and_documents_ims_per_gpu():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--config-file", "--eval-only", "--resume", "--num-gpus", "--num-machines"):
        assert flag in done.stdout
    assert "--machine-rank" in done.stdout and "--dist-url" in done.stdout
    assert "--ims-per-gpu N" in done.stdout


def test_the_script_launches_engine_main_on_every_process_over_gloo_without_cuda(
    train_net, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train_net.cli(
        ["--config-file", str(SHAPES_CONFIG), "--num-gpus", "2", "--dist-url", "auto"]
        + ["--ims-per-gpu", "3", "SEED", "7"]
    )
    [(positional, keywords)] = train_net.calls
    main, num_gpus = positional
    # engine.main, reporting the failures it explains in one paragraph.
    assert main is frn_det.engine.cli._main_explaining_failures and num_gpus == 2
    assert keywords["backend"] == "gloo"
    assert keywords["dist_url"] == "auto"
    assert (keywords["num_machines"], keywords["machine_rank"]) == (1, 0)
    [args] = keywords["args"]
    assert args.ims_per_gpu == 3 and args.opts == ["SEED", "7"]


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "two"])
def test_an_invalid_ims_per_gpu_is_a_usage_error_naming_the_value(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        argument_parser().parse_args(["--ims-per-gpu", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--ims-per-gpu" in err and repr(value) in err and "integer >= 1" in err


def test_ims_per_gpu_sets_the_per_gpu_batch_and_scales_the_schedule(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = argument_parser().parse_args(
        ["--config-file", str(BASE_RCNN), "--num-gpus", "2", "--ims-per-gpu", "2"]
    )
    cfg = build_config(args)
    assert cfg.SOLVER.IMS_PER_GPU == 2
    assert cfg.SOLVER.IMS_PER_BATCH == 4
    assert pytest.approx(0.02 / 4) == cfg.SOLVER.BASE_LR
    assert cfg.SOLVER.MAX_ITER == 90000 * 4
    assert cfg.SOLVER.STEPS == (240000, 320000)
    assert cfg.is_frozen()


def test_the_flag_takes_precedence_over_a_config_option():
    args = argument_parser().parse_args(["--ims-per-gpu", "4", "SOLVER.IMS_PER_GPU", "1"])
    assert build_config(args).SOLVER.IMS_PER_BATCH == 4


def test_without_the_flag_the_config_batch_is_kept():
    args = argument_parser().parse_args(["--config-file", str(BASE_RCNN), "--num-gpus", "8"])
    cfg = build_config(args)
    assert (cfg.SOLVER.IMS_PER_GPU, cfg.SOLVER.IMS_PER_BATCH) == (0, 16)
