"""Device and distributed-backend choice: CPU and gloo where there is no CUDA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from frn_det.engine import (
    argument_parser,
    backend_for_args,
    build_config,
    create_ddp_model,
    distributed_backend,
    launch,
    resolve_device,
)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_cuda_device_falls_back_to_cpu_without_cuda(no_cuda, device):
    assert resolve_device(device) == "cpu"


def test_an_explicit_cpu_device_is_kept(no_cuda):
    assert resolve_device("cpu") == "cpu"


def test_cuda_is_kept_where_cuda_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda") == "cuda"


@pytest.mark.parametrize(
    ("device", "backend"), [("cpu", "gloo"), ("cuda", "nccl"), ("cuda:3", "nccl")]
)
def test_the_backend_follows_the_device(device, backend):
    assert distributed_backend(device) == backend


def test_the_command_line_on_a_cpu_machine_runs_on_cpu_over_gloo(no_cuda):
    args = argument_parser().parse_args(["--num-gpus", "2"])
    assert build_config(args).MODEL.DEVICE == "cpu"
    assert backend_for_args(args) == "gloo"


def test_a_cpu_config_uses_gloo_even_where_cuda_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    args = argument_parser().parse_args(["MODEL.DEVICE", "cpu"])
    assert backend_for_args(args) == "gloo"


def test_a_single_process_model_is_not_wrapped():
    model = nn.Linear(2, 2)
    assert create_ddp_model(model) is model


def _record(calls, *values):
    calls.append(values)


def test_one_process_runs_main_in_this_process():
    calls = []
    launch(_record, 1, args=(calls, "x"), backend="gloo")
    assert calls == [("x",)]


def test_an_unknown_backend_is_refused_with_the_accepted_ones():
    with pytest.raises(ValueError, match=r"'mpi'.*'auto', 'nccl', 'gloo'"):
        launch(_record, 1, args=([],), backend="mpi")


def test_auto_dist_url_needs_a_single_machine():
    with pytest.raises(ValueError, match="num_machines=1, got 2"):
        launch(_record, 2, num_machines=2, dist_url="auto", args=([],), backend="gloo")
