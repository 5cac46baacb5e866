"""Keep a sweep's results where a checkout keeps them: its finished runs' records without
their checkpoints, in a folder under version control, and put them back.

A machine's ``output/`` does not outlive it, and an experiment that takes longer than one
machine (docs/batch_dependence) would lose its finished runs with it. ``save`` copies, for
every settled run (done, or diverged: see ``RunState.settled``) under a sweep's output,
the small files that say what it trained and what it scored (``RECORD_FILES``: the plan,
DONE.json or FAILED.json, config.yaml, metrics.json, the end of train_net.log:
``LOG_TAIL_BYTES``) into the same layout
under the archive, plus ``CHECKPOINT.json``: the SHA-256 and size of its model_final.pth,
which is not copied (RUN.json's command trains it again; on the same machine a seed and
layout train deterministically, so the hash says whether it did), and ``MACHINE.json``:
the machine that trained it (``machine_record``). A sweep output is a machine's own (it
does not outlive the machine), so a run folder there without a MACHINE.json of its own
(one an earlier restore brought) is taken to have trained on the machine that saves it;
the same code, config and seed give other AP on another machine (docs/batch_dependence),
so the archive says where each run came from. ``restore``
copies them back into a sweep's output, so that the sweep skips those runs and the reports
read them as they were.

Neither overwrites anything: a run already in the destination is left alone when it holds
the same records and refused, by name and file, when it holds others (a run folder there
that is unfinished is also left alone, so a restore never replaces training in progress).
Each run is written to a temporary folder beside its place and renamed into it, so a
killed command leaves whole runs or none.

    python -m frn_det_tools.run_archive save output/batch_dependence_v2/grid \\
        docs/batch_dependence/runs/grid
    python -m frn_det_tools.run_archive restore docs/batch_dependence/runs/grid \\
        output/batch_dependence_v2/grid
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from frn_det.model_zoo import sha256_of
from frn_det_tools.run_folders import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    DONE_FILE,
    FAILED_FILE,
    FINAL_MODEL,
    LOG_FILE,
    MACHINE_FILE,
    METRICS_FILE,
    RUN_FILE,
    find_runs,
)
from frn_det_tools.sweep import read_state

__all__ = [
    "CHECKPOINT_FILE",
    "RECORD_FILES",
    "LOG_TAIL_BYTES",
    "ArchiveError",
    "Outcome",
    "checkpoint_record",
    "machine_record",
    "main",
    "restore",
    "save",
]

RECORD_FILES = (RUN_FILE, DONE_FILE, FAILED_FILE, CONFIG_FILE, METRICS_FILE, LOG_FILE)
"""The files of a run folder that are archived (those it has); never its checkpoints."""
LOG_TAIL_BYTES = 1 << 16
"""train_net.log is archived as its last whole lines within this many bytes: its end (the
final evaluation, or the error a run stopped on, which ``diverged_at`` reads there), not
each evaluation's tables, which metrics.json holds."""


class ArchiveError(ValueError):
    """A run whose records differ between the two places, or a folder that is not a
    sweep's output; raised before anything is written."""


@dataclass
class Outcome:
    """What ``save`` or ``restore`` did, as run folders relative to the source root."""

    copied: list[str] = field(default_factory=list)
    same: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    """Not settled (``save``), or a folder in the destination holding an unfinished run
    (``restore``)."""


def checkpoint_record(folder: str | os.PathLike) -> dict[str, object] | None:
    """``{"file", "sha256", "bytes"}`` of a run folder's model_final.pth; None without one."""
    path = Path(folder) / FINAL_MODEL
    if not path.is_file():
        return None
    return {"file": FINAL_MODEL, "sha256": sha256_of(path), "bytes": path.stat().st_size}


def _cpu_info() -> dict[str, str]:
    fields = {"model name": "cpu", "cpu family": "family", "model": "model"}
    fields["stepping"] = "stepping"
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                name = fields.get(key.strip())
                if name and name not in found:
                    found[name] = value.strip()
    except OSError:
        pass
    return found


def machine_record() -> dict[str, object]:
    """This machine, as far as it decides float results: the CPU (model name, family /
    model / stepping from /proc/cpuinfo where there is one, else platform's processor),
    the cores torch sees, torch's version and the CPU kernels it dispatches to (AVX2,
    AVX512, ...)."""
    import platform

    import torch

    cpu = _cpu_info()
    return {
        "cpu": cpu.get("cpu") or platform.processor() or platform.machine(),
        "cpu_family_model_stepping": "/".join(
            cpu.get(k, "?") for k in ("family", "model", "stepping")
        ),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _json_bytes(data: object) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def _records(folder: Path, with_checkpoint: bool) -> dict[str, bytes]:
    present = [name for name in RECORD_FILES if (folder / name).is_file()]
    files = {name: (folder / name).read_bytes() for name in present}
    if len(files.get(LOG_FILE, b"")) > LOG_TAIL_BYTES:
        tail = files[LOG_FILE][-LOG_TAIL_BYTES:]
        files[LOG_FILE] = tail[tail.find(b"\n") + 1 :]  # whole lines only
    # A restored run has its CHECKPOINT.json but not the checkpoint it describes.
    record = checkpoint_record(folder) if with_checkpoint else None
    if record is not None:
        files[CHECKPOINT_FILE] = _json_bytes(record)
    elif (folder / CHECKPOINT_FILE).is_file():
        files[CHECKPOINT_FILE] = (folder / CHECKPOINT_FILE).read_bytes()
    if (folder / MACHINE_FILE).is_file():
        files[MACHINE_FILE] = (folder / MACHINE_FILE).read_bytes()
    elif with_checkpoint:
        files[MACHINE_FILE] = _json_bytes(machine_record())
    return files


def _differs(files: dict[str, bytes], theirs: dict[str, bytes]) -> list[str]:
    return sorted(name for name in files.keys() | theirs.keys()
                  if files.get(name) != theirs.get(name))  # fmt: skip


def _write_run(files: dict[str, bytes], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for name, data in files.items():
            (scratch / name).write_bytes(data)
        scratch.rename(dest)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _check_root(root: Path, what: str) -> None:
    if not root.is_dir():
        raise ArchiveError(f"{what} {os.fspath(root)!r} is not a folder")


def _transfer(source: Path, dest: Path, saving: bool) -> Outcome:
    _check_root(source, "sweep output" if saving else "archive")
    runs = find_runs(source)
    if not runs:
        raise ArchiveError(
            f"no run folders under {os.fspath(source)!r} (expected "
            "<config stem>/<norm>/ipg<N>/seed<S>/)"
        )
    outcome, plan = Outcome(), []
    for _, folder in runs:
        name = folder.relative_to(source).as_posix()
        if saving and not read_state(folder).settled():
            outcome.left.append(name)
            continue
        there = dest / name
        files = _records(folder, with_checkpoint=saving)
        # A destination folder with nothing of a run's records (e.g. emptied) is free.
        held = there.is_dir() and any(there.iterdir())
        if not held:
            plan.append((files, there, name))
            continue
        # Both sides as an archive holds them: a run folder of the machine that trained it
        # (checkpoint, whole log) is the same run as its archived records.
        differ = _differs(files, _records(there, with_checkpoint=not saving))
        if not differ:
            outcome.same.append(name)
        elif not saving and not read_state(there).settled():
            outcome.left.append(name)
        else:
            raise ArchiveError(
                f"run {name}: {os.fspath(there)!r} already holds other records "
                f"({', '.join(differ)} differ); nothing was written. Move one of the two "
                "away to keep both"
            )
    for files, there, name in plan:
        if there.is_dir():
            there.rmdir()
        _write_run(files, there)
        outcome.copied.append(name)
    return outcome


def save(output: str | os.PathLike, archive: str | os.PathLike) -> Outcome:
    """Copy the records of every settled run under the sweep output ``output`` into
    ``archive`` (same layout), with each one's CHECKPOINT.json.

    Raises:
        ArchiveError: ``output`` holds no run folders, or a run's archived records differ
            from its records in ``output`` (then nothing is written).
    """
    return _transfer(Path(output), Path(archive), saving=True)


def restore(archive: str | os.PathLike, output: str | os.PathLike) -> Outcome:
    """Copy every archived run back into the sweep output ``output`` where it has no
    folder (or an empty one); a folder holding an unfinished run is left alone.

    Raises:
        ArchiveError: ``archive`` holds no runs, or a settled run in ``output`` holds other
            records than the archive's (then nothing is written).
    """
    return _transfer(Path(archive), Path(output), saving=False)


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    put = sub.add_parser("save", help="copy settled runs' records from a sweep output")
    put.add_argument("output", help="the sweep's --output")
    put.add_argument("archive", help="the folder to keep them in (e.g. under docs/)")
    back = sub.add_parser("restore", help="copy archived runs back into a sweep output")
    back.add_argument("archive", help="a folder written by save")
    back.add_argument("output", help="the sweep's --output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    try:
        if args.action == "save":
            outcome = save(args.output, args.archive)
        else:
            outcome = restore(args.archive, args.output)
    except ArchiveError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    verb = "saved" if args.action == "save" else "restored"
    print(f"{verb} {len(outcome.copied)} run(s), {len(outcome.same)} already there")
    for name in outcome.copied:
        print(f"  {verb}: {name}")
    why = "not settled" if args.action == "save" else "unfinished there, left alone"
    for name in outcome.left:
        print(f"  {why}: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
