"""``tools/eval_zoo.py``: evaluate a model-zoo checkpoint (MODEL_ZOO.md) with one command.

Looks the name up in the catalog (``frn_det.model_zoo``), fetches the checkpoint
(downloads are cached; ``--weights`` takes a local copy), refuses a file whose SHA-256
differs from the one the catalog records, then runs train_net ``--eval-only`` with the
entry's packaged config and MODEL.WEIGHTS.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence

from frn_det.model_zoo import (
    CATALOG,
    ModelZooError,
    ZooEntry,
    eval_only_args,
    fetch,
    lookup,
    verify,
)
from frn_det_tools.markdown import markdown_table
from frn_det_tools.model_zoo import format_ap

__all__ = ["argument_parser", "main", "run_train_net"]


def run_train_net(argv: Sequence[str]) -> None:
    """Run ``tools/train_net.py argv`` in this process (and the processes it launches):
    ``frn_det.engine.cli.main`` under frn-det's launch, as the script does."""
    from frn_det.engine import cli

    cli.run(argv)


def _catalog_table(catalog: Mapping[str, ZooEntry]) -> str:
    headers = ["name", "source", "config", "box AP", "mask AP", "SHA-256"]
    rows = [
        [e.name, e.source, e.config, format_ap(e.box_ap), format_ap(e.mask_ap), e.sha256 or "-"]
        for e in catalog.values()
    ]
    return markdown_table(rows, headers)


def argument_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/eval_zoo.py``."""
    parser = argparse.ArgumentParser(
        prog="eval_zoo.py",
        description=(
            "Evaluate a model-zoo checkpoint (MODEL_ZOO.md) with its config: fetch it "
            "(downloads are cached), check its SHA-256 where the catalog records one, then "
            "run tools/train_net.py --eval-only. KEY VALUE pairs go to the config."
        ),
        usage="%(prog)s [-h] [--list] [--weights PATH] [--num-gpus N] [--dist-url URL] "
        "NAME [KEY VALUE ...]",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="a name from --list")
    parser.add_argument("--list", action="store_true", help="list the catalog and exit")
    parser.add_argument(
        "--weights", metavar="PATH", help="a local copy of the checkpoint instead of its URL"
    )
    parser.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs) to evaluate on")
    parser.add_argument(
        "--dist-url",
        default=None,
        help="torch.distributed init URL for --num-gpus > 1 (default: a free local port)",
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    catalog: Mapping[str, ZooEntry] | None = None,
    evaluate: Callable[[Sequence[str]], None] | None = None,
) -> int:
    """``tools/eval_zoo.py``: fetch, verify and evaluate a catalog entry; returns the exit
    status. ``evaluate`` runs the train_net arguments (default ``run_train_net``)."""
    catalog = CATALOG if catalog is None else catalog
    parser = argument_parser()
    # KEY VALUE pairs may come before or after the flags (``NAME --num-gpus 8 KEY VALUE``,
    # ``NAME KEY VALUE --weights F``), which argparse's REMAINDER would swallow as options.
    args, opts = parser.parse_known_args(argv)
    flags = [item for item in opts if item.startswith("--")]
    if flags:
        parser.error(f"unrecognized arguments: {' '.join(flags)}")
    if args.list:
        print(_catalog_table(catalog))
        return 0
    if args.name is None:
        parser.error(f"NAME is required; available: {', '.join(sorted(catalog)) or 'none'}")
    if args.num_gpus < 1:
        parser.error(f"--num-gpus must be an integer >= 1, got {args.num_gpus}")
    try:
        entry = lookup(args.name, catalog)
        path = fetch(entry, args.weights)
        actual = verify(entry, path)
        dist_url = args.dist_url or ("auto" if args.num_gpus > 1 else None)
        train_net_args = eval_only_args(
            entry, path, num_gpus=args.num_gpus, dist_url=dist_url, opts=opts
        )
    except ModelZooError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if entry.sha256 is None:
        print(
            f"{entry.name}: the catalog records no SHA-256 to check (detectron2's file names "
            f"carry a commit suffix, not a hash); {os.fspath(path)} has SHA-256 {actual}"
        )
    else:
        print(f"{entry.name}: SHA-256 {actual} matches the catalog")
    print("tools/train_net.py " + shlex.join(train_net_args))
    (evaluate or run_train_net)(train_net_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
