"""What ``tools/train_net.py`` runs: detectron2's command line, plus ``--ims-per-gpu``.

Usage (the conventions of detectron2's ``tools/train_net.py``)::

    train_net.py --config-file CFG [--num-gpus G] [--ims-per-gpu N] [KEY VALUE ...]
    train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth

On a machine without CUDA, MODEL.DEVICE becomes "cpu" and the ``--num-gpus`` processes
talk over gloo instead of NCCL.

Bad input (a missing config file, an unknown key or norm, a batch the processes cannot
share, a missing or malformed dataset) raises ``validation.InputError`` while the config is
built, before any process trains; ``exit_on_bad_input`` turns it into a one-paragraph
message and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import torch.distributed as dist
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

# Imported for their registrations: FRN-aware components and the embedded datasets.
import frn_det.data  # noqa: F401
import frn_det.modeling  # noqa: F401
from frn_det.checkpoint import FRNCheckpointer
from frn_det.data.shapes import ShapesDatasetError

from .batch import check_ims_per_gpu
from .launch import distributed_backend, launch
from .trainer import Trainer, log_results, prepare_config
from .validation import InputError, check_config, check_datasets, explain_config_error, load_config

__all__ = [
    "argument_parser",
    "backend_for_args",
    "build_config",
    "check_args",
    "exit_on_bad_input",
    "main",
    "setup",
]


def _ims_per_gpu_arg(text: str) -> int:
    try:
        return check_ims_per_gpu(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 1 (images per GPU), got {text!r}"
        ) from None


def argument_parser() -> argparse.ArgumentParser:
    """``detectron2.engine.default_argument_parser`` plus ``--ims-per-gpu N``."""
    parser = default_argument_parser()
    parser.add_argument(
        "--ims-per-gpu",
        type=_ims_per_gpu_arg,
        default=None,
        metavar="N",
        help="images per GPU (process); sets SOLVER.IMS_PER_GPU, which rescales "
        "IMS_PER_BATCH to N x num-gpus x num-machines and BASE_LR, MAX_ITER, STEPS, "
        "WARMUP_ITERS, CHECKPOINT_PERIOD, TEST.EVAL_PERIOD from SOLVER.REFERENCE_WORLD_BATCH. "
        "Takes precedence over a SOLVER.IMS_PER_GPU given among the KEY VALUE options.",
    )
    return parser


def _world_size(args: argparse.Namespace) -> int:
    # Inside a launched process the process group is the truth; before launch (choosing the
    # backend) the command line is all there is.
    if dist.is_available() and dist.is_initialized():
        return comm.get_world_size()
    return args.num_gpus * args.num_machines


def _merged_config(args: argparse.Namespace) -> CfgNode:
    cfg = load_config(args.config_file, args.opts or [])
    if getattr(args, "ims_per_gpu", None) is not None:
        cfg.SOLVER.IMS_PER_GPU = args.ims_per_gpu
    return cfg


def _prepared_config(merged: CfgNode, args: argparse.Namespace) -> CfgNode:
    world_size = _world_size(args)
    try:
        cfg = prepare_config(merged, world_size)
    except ValueError as error:
        # apply_ims_per_gpu's errors are all about config values (IMS_PER_GPU, STEPS, ...).
        raise InputError(str(error)) from error
    check_config(cfg, world_size)
    cfg.freeze()
    return cfg


def build_config(args: argparse.Namespace) -> CfgNode:
    """The frozen config of a run: detectron2's defaults, frn-det's keys, ``--config-file``,
    the trailing ``KEY VALUE`` options and ``--ims-per-gpu``, prepared for the world size
    (``prepare_config``: per-GPU batch scaling, CPU fallback). Sets up no logging.

    Raises:
        InputError: for bad input in the config (``validation.load_config`` and
            ``validation.check_config``); datasets are not checked (see ``check_args``).
    """
    return _prepared_config(_merged_config(args), args)


def check_args(args: argparse.Namespace) -> CfgNode:
    """``build_config`` plus ``validation.check_datasets`` (the test datasets, and the
    training ones unless ``--eval-only``): everything ``setup`` would refuse, checked once in
    the launching process, before any training process starts. Returns the config.

    Raises:
        InputError: naming the bad config file, key, value or dataset.
    """
    cfg = build_config(args)
    check_datasets(cfg, train=not args.eval_only)
    return cfg


@contextlib.contextmanager
def exit_on_bad_input(prog: str | None = None) -> Iterator[None]:
    """Within the block, bad input ends the program with its explanation and exit status 2
    (argparse's status for a bad command line) instead of a traceback.

    Bad input is an ``InputError``, a ``ShapesDatasetError`` (the embedded dataset cannot
    be written or is damaged on disk), or a config merge error that
    ``validation.explain_config_error`` recognises (for scripts that call detectron2's
    ``merge_from_file`` themselves). Anything else propagates unchanged.

    Args:
        prog: the program name that starts the message (default: ``sys.argv[0]``'s name).
    """
    try:
        yield
    except (InputError, ShapesDatasetError) as error:
        _exit_with(str(error), prog)
    except (KeyError, AssertionError, ValueError) as error:
        explained = explain_config_error(error)
        if explained is None:
            raise
        _exit_with(str(explained), prog)


def _exit_with(message: str, prog: str | None) -> None:
    # One paragraph: the messages are single lines, but a wrapped library error may not be.
    message = " ".join(message.split())
    print(f"{prog or os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def backend_for_args(args: argparse.Namespace) -> str:
    """The torch.distributed backend for the run ``args`` describe: "nccl" or "gloo"."""
    return distributed_backend(build_config(args).MODEL.DEVICE)


def setup(args: argparse.Namespace) -> CfgNode:
    """``build_config`` with logging: frn-det's logger first, so that the per-GPU rescaling
    and the device choice are logged to the console and OUTPUT_DIR/log.txt, then detectron2's
    ``default_setup`` (its logger, config.yaml, seeds).

    Raises:
        InputError: as ``check_args``, before ``default_setup`` writes config.yaml.
    """
    merged = _merged_config(args)
    setup_logger(merged.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="frn_det")
    cfg = _prepared_config(merged, args)
    check_datasets(cfg, train=not args.eval_only)
    default_setup(cfg, args)
    return cfg


def main(args: argparse.Namespace) -> dict[str, Any] | None:
    """Train (and evaluate at the end), or with ``--eval-only`` evaluate MODEL.WEIGHTS.

    Runs in every process. Returns the evaluation results (``{}`` on processes other than
    the main one; None when nothing was evaluated) and logs a box/mask AP table.
    """
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        FRNCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if comm.is_main_process() and cfg.TEST.EXPECTED_RESULTS:
            verify_results(cfg, results)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    log_results(results)
    return results


def run(argv: Sequence[str] | None = None) -> None:
    """``tools/train_net.py``: parse ``argv`` (default: sys.argv[1:]), check the input in this
    process, then run ``main`` in every training process. Bad input exits with status 2."""
    args = argument_parser().parse_args(None if argv is None else list(argv))
    print("Command Line Args:", args)
    with exit_on_bad_input():
        check_args(args)
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            backend=backend_for_args(args),
        )
