"""Device choice and multi-process launch that work on CPU-only machines as well as on GPUs.

detectron2's ``launch`` picks NCCL whenever CUDA is available and then pins each process
to a GPU, and its ``create_ddp_model`` passes ``device_ids=[local_rank]``, which
DistributedDataParallel rejects for a CPU model. FRN-vs-BN comparisons at small batches
are meant to run anywhere, so here the backend follows the device the model runs on: NCCL
for CUDA (delegating to detectron2's launch), gloo for CPU (one process per "GPU" slot).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.engine.defaults import create_ddp_model as d2_create_ddp_model
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.utils import comm
from torch import nn

__all__ = [
    "BACKENDS",
    "create_ddp_model",
    "distributed_backend",
    "launch",
    "resolve_device",
]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "nccl", "gloo")


def resolve_device(device: str) -> str:
    """The device to run on: ``device``, or "cpu" when it asks for CUDA and CUDA is absent.

    detectron2's default MODEL.DEVICE is "cuda", so a config cannot tell "the user asked for
    a GPU" from "nobody said"; on a machine without CUDA the only runnable choice is the CPU.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is %r but CUDA is not available; using 'cpu'.", device)
        return "cpu"
    return device


def distributed_backend(device: str) -> str:
    """The torch.distributed backend for a model on ``device``: "nccl" for CUDA, else "gloo"."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def create_ddp_model(model: nn.Module, **kwargs: Any) -> nn.Module:
    """``detectron2.engine.create_ddp_model`` that also wraps a CPU model.

    DistributedDataParallel takes ``device_ids`` only for a single-GPU module; for a CPU
    module it must be None. Returns ``model`` unchanged in a single process.
    """
    if comm.get_world_size() > 1 and "device_ids" not in kwargs:
        on_cuda = next(model.parameters()).device.type == "cuda"
        kwargs["device_ids"] = [comm.get_local_rank()] if on_cuda else None
    return d2_create_ddp_model(model, **kwargs)


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: Sequence[Any] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
    backend: str = "auto",
) -> None:
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes on each machine.

    The arguments are those of ``detectron2.engine.launch``, plus ``backend``:
    "nccl" (one process per GPU; detectron2's launch), "gloo" (CPU processes, also on a
    machine that has GPUs) or "auto" (NCCL when CUDA is available, else gloo).
    ``num_gpus_per_machine`` counts processes; on CPU it need not match any hardware.
    ``main_func`` must be picklable (a module-level function): processes are spawned.
    """
    if backend not in BACKENDS:
        accepted = ", ".join(repr(b) for b in BACKENDS)
        raise ValueError(f"unknown distributed backend {backend!r}; accepted: {accepted}")
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        d2_launch(
            main_func,
            num_gpus_per_machine,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=tuple(args),
            timeout=timeout,
        )
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError(
                f"dist_url='auto' picks a free port on this machine, so it needs "
                f"num_machines=1, got {num_machines}; give a tcp:// URL"
            )
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if dist_url is None:
        raise ValueError("dist_url is required for multi-process runs, e.g. 'auto' or tcp://")
    mp.start_processes(
        _gloo_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
        start_method="spawn",
    )


def _gloo_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_processes_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: Sequence[Any],
    timeout: timedelta,
) -> None:
    # Processes on one machine share its cores; without this each would start as many
    # threads as there are cores and they would thrash. OMP_NUM_THREADS, when set, wins.
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, torch.get_num_threads() // num_processes_per_machine))
    dist.init_process_group(
        backend="gloo",
        init_method=dist_url,
        world_size=world_size,
        rank=machine_rank * num_processes_per_machine + local_rank,
        timeout=timeout,
    )
    try:
        comm.create_local_process_group(num_processes_per_machine)
        comm.synchronize()
        main_func(*args)
    finally:
        dist.destroy_process_group()
