"""Training and evaluation: the config of a run, per-GPU batch scaling, the Trainer,
CPU/GPU launch, the CLI.

A run's config takes one path, ``run_config.build_config`` (load, merge, check, rescale,
resolve the device, freeze), then goes to the ``Trainer``; ``validation`` holds the checks,
``exits`` how the command lines end on bad input or a stopped run.

Importing it registers frn-det's components and datasets (``frn_det.modeling``,
``frn_det.data``) with detectron2.
"""

from .batch import apply_ims_per_gpu, check_ims_per_gpu
from .cli import argument_parser, backend_for_args, check_args, main, setup
from .exits import exit_on_bad_input
from .launch import create_ddp_model, distributed_backend, launch, resolve_device
from .run_config import build_config, build_run_config, prepare_config
from .trainer import (
    Trainer,
    deterministic_inference,
    log_results,
    results_table,
    use_naive_sync_batchnorm,
)

__all__ = [
    "Trainer",
    "apply_ims_per_gpu",
    "argument_parser",
    "backend_for_args",
    "build_config",
    "build_run_config",
    "check_args",
    "check_ims_per_gpu",
    "create_ddp_model",
    "deterministic_inference",
    "distributed_backend",
    "exit_on_bad_input",
    "launch",
    "log_results",
    "main",
    "prepare_config",
    "resolve_device",
    "results_table",
    "setup",
    "use_naive_sync_batchnorm",
]
