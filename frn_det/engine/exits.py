"""How frn-det's command lines end when they cannot go on: bad input with exit status 2,
a run stopped for a reason it explains (a diverged loss) with status 1, each as one
paragraph instead of a traceback, in the launching process and in every launched one.

tools/train_net.py (``frn_det.engine.cli``), tools/lazy_train_net.py
(``frn_det.engine.lazy``) and the other tools share these.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from torch.multiprocessing import ProcessExitedException

from frn_det.checkpoint import CheckpointError, NonFiniteCheckpointError
from frn_det.data.shapes import ShapesDatasetError

from .launch import launch
from .trainer import NonFiniteLossError
from .validation import InputError, explain_config_error

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED_RUN",
    "EXPLAINED_STOPS",
    "OneLineStop",
    "exit_on_bad_input",
    "exit_with",
    "launch_exiting_as_explained",
    "run_explaining_failures",
    "stops_in_one_line",
]

EXIT_BAD_INPUT = 2
"""Exit status for bad input (argparse's for a bad command line)."""
EXIT_FAILED_RUN = 1
"""Exit status for a run that started and stopped for a reason it explains (divergence)."""

EXPLAINED_STOPS = (NonFiniteLossError, NonFiniteCheckpointError)
"""The errors that stop a run with an explanation (what happened, what to change)."""


def exit_with(message: str, prog: str | None, status: int) -> NoReturn:
    """Print ``PROG: error: MESSAGE`` (one paragraph) to stderr and exit with ``status``.

    Args:
        message: the explanation; its line breaks and runs of spaces become single spaces.
        prog: the program name that starts the message (default: ``sys.argv[0]``'s name).
        status: the exit status (``EXIT_BAD_INPUT``, ``EXIT_FAILED_RUN``).
    """
    # One paragraph: the messages are single lines, but a wrapped library error may not be.
    message = " ".join(message.split())
    print(f"{prog or os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


@contextlib.contextmanager
def exit_on_bad_input(prog: str | None = None) -> Iterator[None]:
    """Within the block, bad input ends the program with its explanation and exit status 2
    (argparse's status for a bad command line) instead of a traceback.

    Bad input is an ``InputError``, a ``ShapesDatasetError`` (the embedded dataset cannot
    be written or is damaged on disk), a ``CheckpointError`` (a checkpoint that cannot be
    read, or does not fit the model where it must), or a config merge error that
    ``validation.explain_config_error`` recognises (for scripts that call detectron2's
    ``merge_from_file`` themselves). Anything else propagates unchanged.

    Args:
        prog: the program name that starts the message (default: ``sys.argv[0]``'s name).
    """
    try:
        yield
    except (InputError, ShapesDatasetError, CheckpointError) as error:
        exit_with(str(error), prog, EXIT_BAD_INPUT)
    except (KeyError, AssertionError, ValueError) as error:
        explained = explain_config_error(error)
        if explained is None:
            raise
        exit_with(str(explained), prog, EXIT_BAD_INPUT)


class OneLineStop(logging.Filter):
    """On detectron2's training loop logger: its "Exception during training" record of an
    explained stop (``EXPLAINED_STOPS``) becomes one line without the traceback (the error
    already names the iteration, the loss terms and what to change)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, EXPLAINED_STOPS):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "Training stopped: %s",
                (error,),
                None,
                None,
            )
        return True


@contextlib.contextmanager
def stops_in_one_line() -> Iterator[None]:
    """Within the block, detectron2's training loop logs an explained stop in one line
    (``OneLineStop``)."""
    loop_logger = logging.getLogger("detectron2.engine.train_loop")
    one_line = OneLineStop()
    loop_logger.addFilter(one_line)
    try:
        yield
    finally:
        loop_logger.removeFilter(one_line)


def run_explaining_failures(main: Callable[[argparse.Namespace], Any], args: Any) -> None:
    """``main(args)`` in one process; its explained failures end the process with their
    message and status (2 for bad input, 1 for a run that stopped) instead of a traceback,
    which in launched processes torch would print once per process."""
    with exit_on_bad_input():
        try:
            main(args)
        except EXPLAINED_STOPS as error:
            exit_with(str(error), None, EXIT_FAILED_RUN)


def launch_exiting_as_explained(
    main_func: Callable[[argparse.Namespace], Any], args: argparse.Namespace, backend: str
) -> None:
    """``launch(main_func, ...)`` with the launch flags of ``args``; a launched process that
    explained its failure (bad input: status 2, a stopped run: 1) ends this one with its
    status instead of torch's ProcessExitedException traceback."""
    try:
        launch(
            main_func,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            backend=backend,
        )
    except ProcessExitedException as error:
        if error.exit_code in (EXIT_BAD_INPUT, EXIT_FAILED_RUN):
            raise SystemExit(error.exit_code) from None
        raise
