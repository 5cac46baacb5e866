"""Training and evaluation: per-GPU batch scaling, the Trainer, CPU/GPU launch, the CLI.

Importing it registers frn-det's components and datasets (``frn_det.modeling``,
``frn_det.data``) with detectron2.
"""

from .batch import apply_ims_per_gpu, check_ims_per_gpu
from .cli import (
    argument_parser,
    backend_for_args,
    build_config,
    check_args,
    exit_on_bad_input,
    main,
    setup,
)
from .launch import create_ddp_model, distributed_backend, launch, resolve_device
from .trainer import (
    Trainer,
    deterministic_inference,
    log_results,
    prepare_config,
    results_table,
    use_naive_sync_batchnorm,
)

__all__ = [
    "Trainer",
    "apply_ims_per_gpu",
    "argument_parser",
    "backend_for_args",
    "build_config",
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
