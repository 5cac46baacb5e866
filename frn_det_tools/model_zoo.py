"""Keeping frn-det's model zoo: catalog entries from sweep run folders, written into the
catalog's data file (frn_det/model_zoo/catalog.json), and MODEL_ZOO.md rendered from it.

The catalog and the functions that use it (lookup, fetch, verify, the packaged configs)
are the library's, in ``frn_det.model_zoo``; ``tools/eval_zoo.py`` evaluates an entry
(``frn_det_tools.eval_zoo``). Two kinds of entries:

- detectron2's released baselines whose configs this repository carries under the same
  path (``configs/Misc/mask_rcnn_R_50_FPN_3x_gn.yaml``), typed into catalog.json with the
  URL of detectron2's own catalog (``detectron2.model_zoo``; a test checks they agree) and
  the AP detectron2 published. detectron2 names its files with a short commit suffix
  (``model_final_dc5d9e.pkl``), not a hash, so no SHA-256 is recorded for them.
- frn-det's own checkpoints, trained by ``tools/sweep.py``. Their entries are written from
  the sweep's run folders (DONE.json, model_final.pth, or for a run restored from an
  archive, ``frn_det_tools.run_archive``, the CHECKPOINT.json that kept its hash), never
  by hand, with the SHA-256 of the file and the command that trains it; without
  ``--url-prefix`` (the files are not published) they have no URL, and MODEL_ZOO.md says
  so.

Commands, run from the repository root (``--catalog`` and ``--markdown`` name the files
otherwise)::

    python -m frn_det_tools.model_zoo rows OUT [OUT ...] [--url-prefix URL] [--write]
    python -m frn_det_tools.model_zoo markdown [--check | --write]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from frn_det.file_io import atomic_write_text
from frn_det.model_zoo import (
    SOURCE_DETECTRON2,
    SOURCE_FRN_DET,
    ModelZooError,
    ZooEntry,
    build_catalog,
    catalog_json,
    configs_root,
    get_config_file,
    load_catalog,
    merge_entries,
    sha256_of,
)
from frn_det_tools.markdown import markdown_table
from frn_det_tools.run_folders import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    DONE_FILE,
    FINAL_MODEL,
    find_runs,
    run_key,
    sweep_output,
)

__all__ = [
    "CATALOG_PATH",
    "MARKDOWN_PATH",
    "entries_from_sweeps",
    "entry_from_run",
    "format_ap",
    "main",
    "markdown_rows",
    "render_markdown",
]

CATALOG_PATH = Path("frn_det") / "model_zoo" / "catalog.json"
"""The catalog's data file in a checkout, relative to the repository root."""
MARKDOWN_PATH = Path("MODEL_ZOO.md")
"""MODEL_ZOO.md, relative to the repository root."""


def format_ap(value: float | None) -> str:
    """An AP as MODEL_ZOO.md shows it: one decimal when that is exact, else two; "-"
    for none."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.1f}" if round(value, 1) == value else f"{value:.2f}"


# ---------------------------------------------------------------------------------------
# Sweep run folders -> catalog entries


def _cwd_relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return os.fspath(path.resolve())


def _catalog_config(
    config: str | os.PathLike, trained_in: str | os.PathLike | None = None
) -> str | None:
    # A run's config as the catalog names it (configs/...): a packaged config, the same
    # file of a checkout's configs/ when the package is installed from elsewhere, or one of
    # the checkout the run trained in (``trained_in``, e.g. a worktree kept for an
    # experiment), which must then be byte for byte the packaged one.
    path = Path(config).resolve()
    roots = [configs_root(), (Path.cwd() / "configs").resolve()]
    if trained_in is not None:
        roots.append((Path(trained_in) / "configs").resolve())
    for root in roots:
        if path.is_relative_to(root):
            relative = path.relative_to(root).as_posix()
            packaged = Path(get_config_file(relative))
            elsewhere = root == roots[-1] and trained_in is not None
            if (
                elsewhere
                and packaged.resolve() != path
                and (not path.is_file() or path.read_bytes() != packaged.read_bytes())
            ):
                raise ModelZooError(
                    f"config {os.fspath(path)!r} differs from the packaged "
                    f"configs/{relative}; the catalog's config would not train that "
                    "model (commit the run's config first)"
                )
            return f"configs/{relative}"
    return None


def _format_seconds(seconds: float) -> str:
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _train_time(done: Mapping[str, Any], device: str) -> str | None:
    seconds = done.get("seconds")
    if not seconds:
        return None
    schedule = done.get("schedule", {})
    full = schedule.get("max_iter", 0) * schedule.get("ims_per_batch", 0)
    # The sweep times only the session that finished a run: a resumed run trained part of
    # its images earlier, in time nobody recorded.
    if done.get("images_trained", full) < full:
        return f">= {_format_seconds(seconds)} ({device}; resumed, earlier sessions not timed)"
    return f"{_format_seconds(seconds)} ({device})"


def _ap(results: Mapping[str, Any], metric: str) -> float | None:
    from frn_det_tools.summarize import metric_value

    value = metric_value(results, metric)
    if value is None or math.isnan(value):
        return None
    return round(value, 2)


def _template(config: str, norm: str, stem: str) -> str:
    from frn_det_tools.sweep import config_stem

    folder, _, file_name = config.rpartition("/")
    at = file_name.rfind(norm)
    template = file_name[:at] + "{norm}" + file_name[at + len(norm) :] if at >= 0 else ""
    if not template or config_stem(template) != stem:
        raise ModelZooError(
            f"config {config!r} of norm {norm!r} does not name its norm the way the sweep's "
            f"templates do (config stem {stem!r}); cannot write its sweep command"
        )
    return f"{folder}/{template}" if folder else template


def _run_opts(train_net_args: Sequence[str]) -> tuple[str, ...]:
    from frn_det.engine import argument_parser

    opts = list(argument_parser().parse_args(list(train_net_args)).opts or [])
    # The sweep sets these per run from its own arguments.
    return _without_options(opts, "SEED", "OUTPUT_DIR", "SOLVER.IMS_PER_GPU")


def _without_options(opts: Sequence[str], *keys: str) -> tuple[str, ...]:
    kept: list[str] = []
    for key, value in zip(opts[::2], opts[1::2], strict=True):
        if key not in keys:
            kept += [key, value]
    return tuple(kept)


def _archived_sha256(path: Path) -> str:
    # An archived run (frn_det_tools.run_archive) keeps its checkpoint's hash, not the file.
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        digest = record["sha256"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        message = f"cannot read the sha256 of {os.fspath(path)!r}: {error!r}"
        raise ModelZooError(message) from error
    hex_digits = set("0123456789abcdef")
    if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= hex_digits):
        raise ModelZooError(
            f"{os.fspath(path)!r} gives sha256 {digest!r}; expected 64 lowercase hex digits"
        )
    return digest


def entry_from_run(
    folder: str | os.PathLike,
    url_prefix: str | None = None,
    trained_in: str | os.PathLike | None = None,
) -> ZooEntry:
    """The catalog entry of one finished sweep run (a folder with DONE.json and
    model_final.pth, laid out ``OUT/<config stem>/<norm>/ipg<N>/seed<S>/``), or of one
    archived by ``frn_det_tools.run_archive`` (CHECKPOINT.json gives the file's SHA-256).

    Its URL is ``url_prefix + NAME.pth`` when the file is published there, else None (not
    published: the entry's ``reproduce`` command trains it again). Its config is named by
    its path in the repository (``configs/...``), which the package ships; a run trained in
    another checkout (``trained_in``) is accepted where its config is the packaged one.
    A fixed-batch run (``--total-batch``) is named ``<config stem>_fixed_batch<T>_<norm>
    _ipg<N>_seed<S>``, so padding-aware norms and the two designs never share a name.

    Raises:
        ModelZooError: naming the folder and what it lacks, or the config that is not one
            of frn-det's.
    """
    folder = Path(folder)
    done_file, model = folder / DONE_FILE, folder / FINAL_MODEL
    if run_key(folder) is None:
        raise ModelZooError(
            f"{os.fspath(folder)!r} is not a sweep run folder: expected "
            "OUT/<config stem>/<norm>/ipg<N>/seed<S>/, which names the sweep that trained it"
        )
    archived = folder / CHECKPOINT_FILE
    if not done_file.is_file() or not (model.is_file() or archived.is_file()):
        raise ModelZooError(
            f"run folder {os.fspath(folder)!r} has no {DONE_FILE} and {FINAL_MODEL} (or, "
            f"archived, {CHECKPOINT_FILE}); only runs the sweep finished can be listed"
        )
    try:
        done = json.loads(done_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelZooError(f"cannot read {os.fspath(done_file)!r}: {error}") from error
    config = _catalog_config(done["config"], trained_in)
    if config is None:
        where = f"{configs_root()} or ./configs"
        if trained_in is not None:
            where += f" or {os.fspath(Path(trained_in) / 'configs')}"
        raise ModelZooError(
            f"run {os.fspath(folder)!r} trained config {done['config']!r}, which is not one "
            f"of frn-det's configs (under {where}); the catalog lists the configs the "
            "package ships (--trained-in CHECKOUT names the checkout a sweep ran in)"
        )
    try:
        run_cfg = yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        run_cfg = {}
    datasets = run_cfg.get("DATASETS", {})
    data = " -> ".join(", ".join(datasets.get(k) or ["?"]) for k in ("TRAIN", "TEST"))
    device = run_cfg.get("MODEL", {}).get("DEVICE", "device not recorded")
    from frn_det_tools.sweep import PADDING_AWARE_SUFFIX

    norm, stem = done["norm"], done["config_stem"]
    opts = _run_opts(done["train_net_args"])  # what builds the model: kept in the entry
    sweep_opts, config_norm = opts, norm  # what the sweep's command needs on top of its own
    if done.get("padding_aware"):
        # The sweep runs NAME_pa as NAME's config with this option, and adds it itself.
        config_norm = norm.removesuffix(PADDING_AWARE_SUFFIX)
        sweep_opts = _without_options(sweep_opts, "MODEL.PADDING_AWARE_NORM")
    if done.get("design") == "fixed_batch":
        total = int(done["schedule"]["ims_per_batch"])
        name = f"{stem}_{norm}_ipg{done['ims_per_gpu']}_seed{done['seed']}"
        stem = stem.removesuffix(f"_fixed_batch{total}")
        split = ["--total-batch", str(total)]
        # The sweep sets this for the design.
        sweep_opts = _without_options(sweep_opts, "DATALOADER.ASPECT_RATIO_GROUPING")
    else:
        name = f"{Path(config).stem}_ipg{done['ims_per_gpu']}_seed{done['seed']}"
        split = ["--num-gpus", str(done["num_gpus"])]
    sweep_root = sweep_output(folder)
    command = [
        "python",
        "tools/sweep.py",
        "--configs",
        _template(config, config_norm, stem),
        "--norms",
        norm,
        "--ims-per-gpu",
        str(done["ims_per_gpu"]),
        *split,
        "--seed",
        str(done["seed"]),
        "--output",
        _cwd_relative(sweep_root),
        *sweep_opts,
    ]
    return ZooEntry(
        name=name,
        config=config,
        url=url_prefix + name + ".pth" if url_prefix else None,
        sha256=sha256_of(model) if model.is_file() else _archived_sha256(archived),
        box_ap=_ap(done.get("results", {}), "bbox/AP"),
        mask_ap=_ap(done.get("results", {}), "segm/AP"),
        source=SOURCE_FRN_DET,
        data=data,
        ims_per_gpu=int(done["ims_per_gpu"]),
        num_gpus=int(done["num_gpus"]),
        train_time=_train_time(done, device),
        opts=opts,
        reproduce=shlex.join(command),
    )


def entries_from_sweeps(
    outputs: Sequence[str | os.PathLike],
    url_prefix: str | None = None,
    trained_in: str | os.PathLike | None = None,
) -> tuple[list[ZooEntry], list[str]]:
    """The catalog entries of every finished run under ``outputs`` (sweep roots or run
    folders), and a note for each run skipped because it has not finished.

    Raises:
        ModelZooError: for a folder that does not exist, or two runs with one name.
    """
    entries: dict[str, tuple[ZooEntry, Path]] = {}
    skipped = []
    for output in outputs:
        root = Path(output)
        if not root.is_dir():
            raise ModelZooError(f"sweep output {os.fspath(root)!r} is not a folder")
        folders = [root] if (root / DONE_FILE).is_file() else [f for _, f in find_runs(root)]
        for folder in folders:
            if not (folder / DONE_FILE).is_file():
                skipped.append(f"{os.fspath(folder)}: not finished (no {DONE_FILE}), skipped")
                continue
            entry = entry_from_run(folder, url_prefix, trained_in)
            if entry.name in entries:
                raise ModelZooError(
                    f"runs {os.fspath(entries[entry.name][1])!r} and {os.fspath(folder)!r} "
                    f"would both be listed as {entry.name!r}; pass one sweep at a time"
                )
            entries[entry.name] = (entry, folder)
    return [entry for entry, _ in entries.values()], skipped


# ---------------------------------------------------------------------------------------
# The catalog -> MODEL_ZOO.md

_NOT_PUBLISHED = "not published"


def _checkpoint_cell(entry: ZooEntry) -> str:
    if entry.url is None:
        return _NOT_PUBLISHED
    return f"[{entry.url.rsplit('/', 1)[-1]}]({entry.url})"


_FRN_HEADERS = ("name", "config", "data", "images/GPU x GPUs", "box AP", "mask AP")
_FRN_HEADERS += ("training time", "checkpoint", "SHA-256 of the checkpoint")


def _frn_table(entries: Iterable[ZooEntry]) -> str:
    rows = []
    for e in entries:
        batch = f"{e.ims_per_gpu} x {e.num_gpus}" if e.ims_per_gpu and e.num_gpus else "-"
        rows.append([
            e.name, f"[{e.config}]({e.config})", e.data, batch, format_ap(e.box_ap),
            format_ap(e.mask_ap), e.train_time or "-", _checkpoint_cell(e),
            f"`{e.sha256 or '-'}`",
        ])  # fmt: skip
    return markdown_table(rows, _FRN_HEADERS)


def markdown_rows(entries: Iterable[ZooEntry]) -> list[str]:
    """The rows of MODEL_ZOO.md's frn-det table for ``entries``, as a table of only them
    lays them out (header and separator left out)."""
    return _frn_table(entries).splitlines()[2:]


_INTRO = """\
# frn-det model zoo

<!-- Generated from the catalog, frn_det/model_zoo/catalog.json, by
`python -m frn_det_tools.model_zoo markdown --write`; edit the catalog, not this file.
tests/test_model_zoo.py checks that the two agree. -->

Every checkpoint listed here is evaluated by one command:

```bash
python tools/eval_zoo.py NAME [--num-gpus N] [--weights PATH] [KEY VALUE ...]
python tools/eval_zoo.py --list        # the names
```

It fetches the checkpoint (detectron2's PathManager: `detectron2://` and `https://` URLs are
downloaded once into iopath's cache; `--weights PATH` takes a local copy instead), checks
its SHA-256 where the catalog records one, refusing a file that does not match (the file is
left in place), and runs `tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS
FILE` with the listed config, as the package ships it (`frn_det.model_zoo.get_config_file`).
Results go to `output/eval_zoo/NAME` unless `OUTPUT_DIR` is given. COCO entries need COCO
2017 under `$DETECTRON2_DATASETS` (detectron2's layout).
"""

_D2_SECTION = """\
## detectron2 baselines evaluated with this repository's configs

detectron2's released checkpoints whose configs this repository carries under detectron2's
own path, key for key (`tests/configs` checks it); for these norms frn-det's components
build exactly detectron2's modules, so the checkpoints load unchanged. URLs are those of
detectron2's catalog (`detectron2.model_zoo.get_checkpoint_url`; `tests/test_model_zoo.py`
checks it). Box and mask AP are the numbers detectron2 published (COCO 2017 val, trained on
8 GPUs x 2 images), not measured here. detectron2's file names end in a short commit id, not
a hash, so no SHA-256 is recorded for them; `eval_zoo.py` prints the SHA-256 of the file it
evaluated.

"""
_D2_HEADERS = ("name", "config", "detectron2 model-zoo config", "box AP", "mask AP")
_D2_HEADERS += ("images/GPU x GPUs", "checkpoint", "SHA-256")

_FRN_SECTION = """\
## frn-det checkpoints

Trained here by `tools/sweep.py` (one run per norm x images per GPU x seed). The entries
are written from the sweep's run folders, never by hand: name, config, data (train -> test
set), batch, box and mask AP from the run's DONE.json, training time as the sweep recorded
it, and the SHA-256 of its model_final.pth. Fill or update them with:

```bash
python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' \\
    --norms bn,syncbn,gn,frn --norm-gpus syncbn=2 --ims-per-gpu 1,2,4,8 --output output/zoo
python -m frn_det_tools.model_zoo rows output/zoo --write
```

`rows OUT` alone prints the rows and catalog entries without writing; `--url-prefix URL`
records `URL/NAME.pth` as the download location once the files are published. A checkpoint
"not published" cannot be downloaded: the SHA-256 identifies the file its run wrote, which
`--weights PATH` evaluates where that file is; its command below trains it again, but a
checkpoint trained again is not the same file: evaluate that one with
`tools/train_net.py --eval-only`.
"""

_FRN_EMPTY = (
    "None yet: the sweep grid has not been run, and no numbers are reported until it has.\n"
)


def render_markdown(catalog: Mapping[str, ZooEntry]) -> str:
    """MODEL_ZOO.md for ``catalog``."""
    d2 = [e for e in catalog.values() if e.source == SOURCE_DETECTRON2]
    ours = [e for e in catalog.values() if e.source == SOURCE_FRN_DET]
    d2_rows = [
        [
            e.name,
            f"[{e.config}]({e.config})",
            f"{e.detectron2_config}",
            format_ap(e.box_ap),
            format_ap(e.mask_ap),
            f"{e.ims_per_gpu} x {e.num_gpus}",
            _checkpoint_cell(e),
            e.sha256 or "not recorded",
        ]  # fmt: skip
        for e in d2
    ]
    parts = [_INTRO, _D2_SECTION + markdown_table(d2_rows, _D2_HEADERS) + "\n", _FRN_SECTION]
    if ours:
        parts.append(_frn_table(ours) + "\n")
        parts.append(
            "### Reproducing them\n\n"
            + "\n".join(f"- `{e.name}`: `{e.reproduce}`" for e in ours if e.reproduce)
            + "\n"
        )
    else:
        parts.append(_FRN_EMPTY)
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------
# Command line


def _add_file_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--catalog",
        type=Path,
        default=CATALOG_PATH,
        metavar="PATH",
        help="the catalog's data file (default: %(default)s, from the repository root)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=MARKDOWN_PATH,
        metavar="PATH",
        help="MODEL_ZOO.md (default: %(default)s, from the repository root)",
    )


def argument_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m frn_det_tools.model_zoo``."""
    parser = argparse.ArgumentParser(
        prog="python -m frn_det_tools.model_zoo",
        description="Keep frn-det's model-zoo catalog (catalog.json) and MODEL_ZOO.md in step.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rows = sub.add_parser(
        "rows",
        help="catalog entries and MODEL_ZOO.md rows of the finished runs of sweeps",
        description=(
            "Print the catalog entries and MODEL_ZOO.md rows of every finished run (DONE.json "
            "and model_final.pth) under the sweep folders: SHA-256 of model_final.pth, AP from "
            "DONE.json, images per GPU, training time and the command that trains it."
        ),
    )
    rows.add_argument("outputs", nargs="+", metavar="OUT", help="sweep roots or run folders")
    rows.add_argument(
        "--url-prefix",
        metavar="URL",
        help="where the checkpoints are published; the URL of each is URL/NAME.pth",
    )
    rows.add_argument(
        "--trained-in",
        metavar="CHECKOUT",
        help="the checkout the sweeps ran in, when not this one (e.g. a worktree kept for "
        "an experiment): its configs must be the packaged ones",
    )
    rows.add_argument(
        "--write",
        action="store_true",
        help="also add them to the catalog (replacing entries of the same name) and "
        "regenerate MODEL_ZOO.md",
    )
    _add_file_args(rows)
    markdown = sub.add_parser("markdown", help="MODEL_ZOO.md from the catalog")
    mode = markdown.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if MODEL_ZOO.md differs")
    mode.add_argument("--write", action="store_true", help="write MODEL_ZOO.md")
    _add_file_args(markdown)
    return parser


def _load(parser: argparse.ArgumentParser, path: Path) -> dict[str, ZooEntry]:
    if not path.is_file():
        parser.exit(
            2,
            f"{parser.prog}: error: catalog {os.fspath(path)!r} is not a file; run from the "
            "repository root or pass --catalog PATH\n",
        )
    try:
        return load_catalog(path)
    except ModelZooError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m frn_det_tools.model_zoo``; returns the exit status."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    if args.command == "markdown":
        text = render_markdown(_load(parser, args.catalog))
        if args.write:
            atomic_write_text(args.markdown, text)
            print(f"wrote {args.markdown}")
            return 0
        if args.check:
            current = args.markdown.read_text(encoding="utf-8") if args.markdown.is_file() else ""
            if current != text:
                print(
                    f"{args.markdown} differs from the catalog {args.catalog}; run "
                    "python -m frn_det_tools.model_zoo markdown --write",
                    file=sys.stderr,
                )
                return 1
            return 0
        print(text, end="")
        return 0
    catalog = _load(parser, args.catalog) if args.write else None
    try:
        entries, skipped = entries_from_sweeps(args.outputs, args.url_prefix, args.trained_in)
    except ModelZooError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    for note in skipped:
        print(f"note: {note}", file=sys.stderr)
    if not entries:
        print("no finished run found; nothing to list", file=sys.stderr)
        return 1
    print("\n".join(markdown_rows(entries)))
    print()
    print(catalog_json(entries), end="")
    if catalog is not None:
        merged = merge_entries(list(catalog.values()), entries)
        atomic_write_text(args.catalog, catalog_json(merged))
        atomic_write_text(args.markdown, render_markdown(build_catalog(merged)))
        print(f"wrote {len(entries)} entries to {args.catalog} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
