"""Markdown tables for the tools' reports (MODEL_ZOO.md, sweep summaries, benchmarks, the
CUDA check's SUMMARY.md), laid out by tabulate."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tabulate import tabulate

__all__ = ["markdown_table"]

_ALIGN = {"l": "left", "r": "right"}


def markdown_table(
    rows: Iterable[Sequence[object]], headers: Sequence[str], align: str | None = None
) -> str:
    """``rows`` under ``headers`` as a GitHub-flavoured Markdown table, cells as given
    (formatted by the caller: nothing is parsed as a number or reformatted).

    ``align`` has one letter per column, ``l`` (left) or ``r`` (right, for numbers), and
    marks the separator line (``:---``, ``---:``); without it no alignment is marked.

    Raises:
        ValueError: ``align`` has a letter other than l and r, or not one per column.
    """
    rows = [[str(cell) for cell in row] for row in rows]
    if align is None:
        return tabulate(rows, headers=list(headers), tablefmt="github", disable_numparse=True)
    if len(align) != len(headers) or set(align) - set(_ALIGN):
        raise ValueError(
            f"align must have one letter l or r per column ({len(headers)}), got {align!r}"
        )
    colalign = [_ALIGN[a] for a in align]
    return tabulate(
        rows, headers=list(headers), tablefmt="pipe", disable_numparse=True, colalign=colalign
    )
