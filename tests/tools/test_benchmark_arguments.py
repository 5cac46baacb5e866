"""The benchmark tools refuse bad flags before measuring anything: exit 2, naming the flag."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"frn_{name}_script", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("tool", "argv", "message"),
    [
        ("benchmark_norm", ["--repeats", "0"], "--repeats must be >= 1, got 0"),
        ("benchmark_norm", ["--threads", "0"], "--threads must be >= 1, got 0"),
        ("benchmark_norm", ["--device", "tpu"], "--device must be cpu, cuda or cuda:N, got 'tpu'"),
        ("benchmark_norm", ["--json", "/no/such/dir/b.json"], "folder /no/such/dir does not exist"),
        ("benchmark_model", ["--iters", "0"], "--iters must be >= 1, got 0"),
        ("benchmark_model", ["--size", "0"], "--size must be >= 1, got 0"),
        ("benchmark_model", ["--batch", "0"], "--batch must be >= 1, got 0"),
        ("benchmark_model", ["--config", "nope/{norm}.yaml"], "nope/bn.yaml (norm BN) does not"),
        ("benchmark_eval", ["--images", "0"], "--images must be >= 1, got 0"),
        ("benchmark_eval", ["--dets-per-image", "0"], "--dets-per-image must be >= 1, got 0"),
    ],
)
def test_a_bad_flag_is_refused_before_the_benchmark_runs(tool, argv, message, capsys):
    module = _tool(tool)
    entry = module.parse_args if tool == "benchmark_model" else module.main
    with pytest.raises(SystemExit) as stop:
        entry(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
