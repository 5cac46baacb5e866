"""What ``tools/train_net.py`` runs: detectron2's command line, plus ``--ims-per-gpu``.

Usage (the conventions of detectron2's ``tools/train_net.py``)::

    train_net.py --config-file CFG [--num-gpus G] [--ims-per-gpu N] [KEY VALUE ...]
    train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth

On a machine without CUDA, MODEL.DEVICE becomes "cpu" and the ``--num-gpus`` processes
talk over gloo instead of NCCL.

Bad input (a missing config file, an unknown key or norm, a value out of range, a batch
the processes cannot share, a missing or malformed dataset, an unusable OUTPUT_DIR, a
checkpoint that cannot be read or does not fit the model) raises ``validation.InputError``
in the launching process, before any process starts or anything is written;
``exit_on_bad_input`` turns it into a one-paragraph message and exit status 2. A run that
fails later for a reason it explains (a non-finite loss) exits with status 1 and that
explanation, without a traceback (``frn_det.engine.exits``).

The config of a run is built by ``frn_det.engine.run_config.build_config``, the one path
every entry point takes; ``setup`` adds logging, ``main`` hands the config to the Trainer.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

# Imported for their registrations: FRN-aware components and the embedded datasets.
import frn_det.data  # noqa: F401
import frn_det.modeling  # noqa: F401
from frn_det.checkpoint import CheckpointError, SafeCheckpointer

from .batch import ims_per_gpu_arg
from .exits import (
    exit_on_bad_input,
    launch_exiting_as_explained,
    run_explaining_failures,
    stops_in_one_line,
)
from .launch import distributed_backend
from .run_config import build_config
from .trainer import Trainer, log_results
from .validation import InputError, check_datasets

__all__ = [
    "argument_parser",
    "backend_for_args",
    "check_args",
    "check_launch_args",
    "check_output_dir",
    "check_weights",
    "main",
    "run",
    "save_config",
    "setup",
]


def argument_parser() -> argparse.ArgumentParser:
    """train_net's command line: ``detectron2.engine.default_argument_parser`` plus
    ``--ims-per-gpu N``."""
    parser = default_argument_parser()
    parser.add_argument(
        "--ims-per-gpu",
        type=ims_per_gpu_arg,
        default=None,
        metavar="N",
        help="images per GPU (process); sets SOLVER.IMS_PER_GPU, which rescales "
        "IMS_PER_BATCH to N x num-gpus x num-machines and BASE_LR, MAX_ITER, STEPS, "
        "WARMUP_ITERS, CHECKPOINT_PERIOD, TEST.EVAL_PERIOD from SOLVER.REFERENCE_WORLD_BATCH. "
        "Takes precedence over a SOLVER.IMS_PER_GPU given among the KEY VALUE options.",
    )
    return parser


def check_launch_args(args: argparse.Namespace) -> None:
    """Raise ``InputError`` unless ``--num-gpus``, ``--num-machines`` and ``--machine-rank``
    describe at least one process (detectron2's launch starts none for ``--num-gpus -1``,
    and divides by zero for 0), and ``--dist-url`` can reach every machine."""
    for flag, value in (("--num-gpus", args.num_gpus), ("--num-machines", args.num_machines)):
        if value < 1:
            raise InputError(
                f"{flag} must be an integer >= 1 (processes per machine, machines), got {value}"
            )
    if not 0 <= args.machine_rank < args.num_machines:
        raise InputError(
            f"--machine-rank must be between 0 and --num-machines - 1 "
            f"({args.num_machines - 1}), got {args.machine_rank}"
        )
    if args.dist_url == "auto" and args.num_machines > 1:
        raise InputError(
            f"--dist-url auto picks a free port on this machine, so it needs --num-machines 1, "
            f"got {args.num_machines}; give every machine the same tcp://HOST:PORT of machine 0"
        )


def check_output_dir(cfg: CfgNode) -> None:
    """Raise ``InputError`` unless OUTPUT_DIR is a folder this process can write to, or can
    be created. Nothing is created."""
    output_dir = cfg.OUTPUT_DIR
    if not output_dir or "://" in output_dir:
        return
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise InputError(
            f"OUTPUT_DIR {output_dir} is a file, not a folder; give a folder for the run's "
            "checkpoints, logs and results (it is created when missing)"
        )
    existing = os.path.abspath(output_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(
            f"OUTPUT_DIR {output_dir} cannot be created: {existing} is a file, not a folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        what = (
            "is"
            if existing == os.path.abspath(output_dir)
            else f"would be created in {existing}, which is"
        )
        raise InputError(
            f"OUTPUT_DIR {output_dir} {what} not writable (permissions or a read-only file "
            "system); give a folder you can write to"
        )


def _has_last_checkpoint(cfg: CfgNode) -> bool:
    return bool(cfg.OUTPUT_DIR) and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))


def check_weights(cfg: CfgNode, eval_only: bool, resume: bool) -> None:
    """Raise ``InputError`` unless the checkpoint the run starts from loads into the model
    the config builds: with ``resume`` and a ``last_checkpoint`` in OUTPUT_DIR, that
    checkpoint (strictly: same shapes); else the local file MODEL.WEIGHTS (for
    ``eval_only`` strictly: every tensor of the model, with its shape; for training only
    readable, since fine-tuning skips tensors of other shapes). ``eval_only`` without
    either is refused: it would evaluate a randomly initialised model.

    The model is built on the meta device (no memory, no initialisation), so the check
    costs about one read of the checkpoint. Remote weights (URLs, detectron2://) are
    not fetched here.
    """
    resuming = resume and _has_last_checkpoint(cfg)
    weights = cfg.MODEL.WEIGHTS
    if not resuming and not weights:
        if eval_only:
            hint = (
                f" (--resume finds no last_checkpoint in OUTPUT_DIR {cfg.OUTPUT_DIR})"
                if resume
                else ""
            )
            raise InputError(
                "--eval-only needs a checkpoint to evaluate: MODEL.WEIGHTS is empty"
                f"{hint}, so a randomly initialised model would be evaluated; give "
                "MODEL.WEIGHTS path/to/model_final.pth"
            )
        return
    if not resuming and "://" in weights:
        return
    meta = cfg.clone()
    meta.defrost()
    meta.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        model = Trainer.build_model(meta)
    checkpointer = SafeCheckpointer(model, cfg.OUTPUT_DIR, save_to_disk=False)
    # Loading into meta tensors copies nothing, as torch warns for every tensor.
    source = (
        f"--resume (from OUTPUT_DIR {cfg.OUTPUT_DIR})" if resuming else f"MODEL.WEIGHTS {weights}"
    )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".* to a meta parameter in the current")
            checkpointer.resume_or_load(weights, resume=resuming, strict=eval_only)
    except CheckpointError as error:
        raise InputError(f"{source}: {error}") from error


def check_args(args: argparse.Namespace) -> CfgNode:
    """Everything ``main`` would refuse, checked once in the launching process before any
    training process starts and before anything is written: the launch flags
    (``check_launch_args``), the config (``build_config``), the datasets
    (``validation.check_datasets``: the test datasets, and the training ones unless
    ``--eval-only``), OUTPUT_DIR (``check_output_dir``) and the checkpoint the run starts
    from (``check_weights``). Returns the config.

    Raises:
        InputError: naming the bad flag, config file, key, value, dataset or checkpoint.
    """
    check_launch_args(args)
    cfg = build_config(args)
    datasets = "DATASETS.TEST" if args.eval_only else "DATASETS.TRAIN"
    if not args.config_file and not cfg.DATASETS[datasets.split(".")[1]]:
        raise InputError(
            f"no --config-file given, and detectron2's defaults name no dataset ({datasets} "
            "is ()); give the config of an experiment, e.g. --config-file "
            "configs/Shapes/mask_rcnn_R_18_FPN_frn.yaml"
        )
    check_datasets(cfg, train=not args.eval_only)
    check_output_dir(cfg)
    check_weights(cfg, eval_only=args.eval_only, resume=args.resume)
    return cfg


def backend_for_args(args: argparse.Namespace) -> str:
    """The torch.distributed backend for the run ``args`` describe: "nccl" or "gloo"."""
    return distributed_backend(build_config(args).MODEL.DEVICE)


def _log_setup(cfg: CfgNode, args: argparse.Namespace) -> None:
    # What detectron2's default_setup logs, without its terminal colours (they would end up
    # in log.txt) and without writing config.yaml (see save_config).
    log = logging.getLogger("detectron2")
    log.info("Rank of current process: %d. World size: %d", comm.get_rank(), comm.get_world_size())
    log.info("Environment info:\n%s", collect_env_info())
    log.info("Command line arguments: %s", args)
    if args.config_file:
        with open(args.config_file, encoding="utf-8") as f:
            log.info("Contents of args.config_file=%s:\n%s", args.config_file, f.read())
    log.info("Running with full config:\n%s", cfg.dump())


def setup(args: argparse.Namespace, *, write_config: bool = True) -> CfgNode:
    """``build_config`` with logging: frn-det's, detectron2's and fvcore's loggers to the
    console and OUTPUT_DIR/log.txt (plain text), the config logged, seeds set from SEED
    (plus the rank), cuDNN benchmarking from CUDNN_BENCHMARK when training, and, if
    ``write_config``, OUTPUT_DIR/config.yaml written (``save_config``).

    Raises:
        InputError: as ``build_config`` and ``validation.check_datasets``, before
            anything is written.
    """
    rank = comm.get_rank()

    def log_to_output_dir(merged: CfgNode) -> None:
        # Before preparing, so that log.txt records what preparing decides (the CPU
        # fallback, the rescaled schedule).
        setup_logger(merged.OUTPUT_DIR, distributed_rank=rank, name="frn_det")

    cfg = build_config(args, on_merged=log_to_output_dir)
    check_datasets(cfg, train=not args.eval_only)
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank, name="fvcore")
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank)
    _log_setup(cfg, args)
    if write_config:
        save_config(cfg)
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    if not args.eval_only:
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    return cfg


def save_config(cfg: CfgNode) -> None:
    """Write ``cfg`` to OUTPUT_DIR/config.yaml on the main process (what ``--config-file``
    takes to run it again)."""
    if not (comm.is_main_process() and cfg.OUTPUT_DIR):
        return
    path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(cfg.dump())
    logging.getLogger("detectron2").info("Full config saved to %s", path)


def main(args: argparse.Namespace) -> dict[str, Any] | None:
    """train_net's work in each process: train (and evaluate at the end), or with
    ``--eval-only`` evaluate MODEL.WEIGHTS (strictly: the checkpoint must fit the model the
    config builds).

    Runs in every process. Returns the evaluation results (``{}`` on processes other than
    the main one; None when nothing was evaluated) and logs a box/mask AP table.
    OUTPUT_DIR/config.yaml is written once the checkpoint the run starts from has loaded, so
    a ``--resume`` that fails leaves the run's config.yaml as it was.
    """
    cfg = setup(args, write_config=False)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        SafeCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume, strict=True
        )
        save_config(cfg)
        results = Trainer.test(cfg, model)
        if comm.is_main_process() and cfg.TEST.EXPECTED_RESULTS:
            verify_results(cfg, results)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        save_config(cfg)
        with stops_in_one_line():
            results = trainer.train()
    log_results(results)
    return results


def _main_explaining_failures(args: argparse.Namespace) -> None:
    """``main`` in one launched process, its explained failures ending the process with
    their message and status (``exits.run_explaining_failures``)."""
    run_explaining_failures(main, args)


@contextlib.contextmanager
def _launcher_logging() -> Iterator[None]:
    # The launcher's checks prepare the config as each process will, and each process logs
    # what that decided (the CPU fallback, the rescaled schedule) to the console and its
    # log.txt; here, where frn-det's logger has no handler, Python would print its
    # warnings a second time.
    log = logging.getLogger("frn_det")
    quiet = logging.NullHandler()
    log.addHandler(quiet)
    try:
        yield
    finally:
        log.removeHandler(quiet)


def run(argv: Sequence[str] | None = None) -> None:
    """``tools/train_net.py``: parse ``argv`` (default: sys.argv[1:]), check the input in this
    process, then run ``main`` in every training process. Bad input exits with status 2, a
    run stopped by a non-finite loss with status 1, each with a one-paragraph message."""
    args = argument_parser().parse_args(None if argv is None else list(argv))
    print("Command Line Args:", args)
    with exit_on_bad_input():
        with _launcher_logging():
            cfg = check_args(args)
        launch_exiting_as_explained(
            _main_explaining_failures, args, distributed_backend(cfg.MODEL.DEVICE)
        )
