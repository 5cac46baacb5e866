"""The learning-rate search before the batch-dependence grid, as steps a script can run:
which LRs to add when a norm's best sits at an edge of the searched set, and writing each
norm's choice into its config leaf.

    python -m frn_det_tools.lr_search ROOT --extend
        prints the LRs to add (one step beyond an edge some norm chose), nothing if none
    python -m frn_det_tools.lr_search ROOT --write-leaves 'configs/.../leaf_{norm}.yaml' \
        --same-as syncbn=bn
        appends each norm's chosen SOLVER.BASE_LR to its leaf

ROOT holds one sweep per LR as lr<BASE_LR>/ (``frn_det_tools.batch_dependence``'s
``lr_search_rows`` reads it; the choice is ``chosen_learning_rates``: the highest final box
AP, a tie to the smaller LR). A run that diverged is a result (its LR is too high for that
norm; it also makes that LR a searched one, so a choice just below it is not an edge); a
run still to train, or one that failed otherwise, stops both steps with exit status 2.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from frn_det.file_io import atomic_write_text
from frn_det_tools.batch_dependence import (
    chosen_learning_rates,
    lr_search_rows,
    unfinished_search_runs,
)

__all__ = ["edge_extensions", "main", "write_leaf_learning_rates"]

LEAF_NOTE = "the search's choice (docs/batch_dependence)"


def edge_extensions(rows: Sequence[Mapping[str, Any]], factor: float = 2.0) -> list[float]:
    """The LRs to add to the search: ``factor`` x the largest searched LR if some norm chose
    it, the smallest / ``factor`` if some norm chose that; empty when every choice is inside."""
    lrs = sorted({r["base_lr"] for r in rows})
    if len(lrs) < 2:
        return []
    chosen = set(chosen_learning_rates(rows).values())
    extra = []
    if lrs[-1] in chosen:
        extra.append(lrs[-1] * factor)
    if lrs[0] in chosen:
        extra.append(lrs[0] / factor)
    return extra


def write_leaf_learning_rates(
    pattern: str, chosen: Mapping[str, float], same_as: Mapping[str, str] | None = None
) -> dict[str, Path]:
    """Append ``SOLVER: BASE_LR: <lr>`` to the leaf ``pattern.format(norm=norm)`` of each
    norm in ``chosen`` and of each alias in ``same_as`` (alias -> the norm whose LR it takes).
    A leaf already holding that BASE_LR is left as it is (a restart).

    Raises:
        ValueError: naming the leaf, before any is written, when it has a SOLVER section
            (one with a different BASE_LR, or other keys a second section would drop), or
            when an alias names a norm the search did not choose for.
        FileNotFoundError: naming a leaf that does not exist.
    """
    same_as = dict(same_as or {})
    missing = {alias: norm for alias, norm in same_as.items() if norm not in chosen}
    if missing:
        raise ValueError(f"--same-as {missing}: the search chose for {sorted(chosen)} only")
    wanted = {**chosen, **{alias: chosen[norm] for alias, norm in same_as.items()}}
    plans = {}
    for norm, lr in wanted.items():
        path = Path(pattern.format(norm=norm))
        if not path.is_file():
            raise FileNotFoundError(f"leaf for {norm!r}: {os.fspath(path)!r} does not exist")
        text = path.read_text()
        line = f"  BASE_LR: {lr:g}  # {LEAF_NOTE}"
        if f"SOLVER:\n{line}\n" in text:
            continue  # written by an earlier run of this step
        if any(raw.startswith("SOLVER:") for raw in text.splitlines()):
            raise ValueError(
                f"leaf {os.fspath(path)!r} has a SOLVER section already; BASE_LR {lr:g} for "
                f"{norm!r} would need it edited by hand"
            )
        plans[norm] = (path, text + ("" if text.endswith("\n") else "\n") + f"SOLVER:\n{line}\n")
    for path, text in plans.values():
        atomic_write_text(path, text)
    return {norm: path for norm, (path, _) in plans.items()}


def argument_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m frn_det_tools.lr_search``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the search's folder, one sweep per LR as lr<BASE_LR>/")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--extend", action="store_true",
                        help="print the LRs to add when a choice sits at an edge")  # fmt: skip
    action.add_argument("--write-leaves", metavar="PATTERN",
                        help="leaf config path with {norm}; appends each norm's "
                        "chosen BASE_LR")  # fmt: skip
    parser.add_argument("--same-as", action="append", default=[], metavar="ALIAS=NORM",
                        help="with --write-leaves: ALIAS's leaf takes NORM's choice (e.g. "
                        "syncbn=bn where the search's layout makes them one model)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; exit status 2 with one line on bad input or an unfinished search
    (nothing written)."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    same_as = {}
    for item in args.same_as:
        alias, sep, norm = item.partition("=")
        if not sep or not alias or not norm:
            parser.error(f"--same-as {item!r}: expected ALIAS=NORM, e.g. syncbn=bn")
        same_as[alias] = norm
    unfinished = unfinished_search_runs(args.root)
    if unfinished:
        print(f"lr_search: the search under {args.root!r} is not finished (train these "
              f"again with their sweep): {'; '.join(unfinished)}")  # fmt: skip
        return 2
    rows = lr_search_rows(args.root)
    if not rows:
        print(f"lr_search: no finished runs under {args.root!r} (lr<BASE_LR>/<sweep>)")
        return 2
    if args.extend:
        print(" ".join(f"{lr:g}" for lr in edge_extensions(rows)))
        return 0
    chosen = chosen_learning_rates(rows)
    try:
        written = write_leaf_learning_rates(args.write_leaves, chosen, same_as)
    except (ValueError, FileNotFoundError) as error:
        print(f"lr_search: {error}")
        return 2
    choice = {**chosen, **{a: chosen[n] for a, n in same_as.items()}}
    print("chosen BASE_LR: " + ", ".join(f"{n} {lr:g}" for n, lr in choice.items()))
    for norm, path in written.items():
        print(f"wrote {path} ({norm})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
