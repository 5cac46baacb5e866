"""frn_det.model_zoo, frn_det_tools.model_zoo and tools/eval_zoo.py: the catalog data file and
the packaged configs, the SHA-256 checks, the eval-only path, MODEL_ZOO.md rendered from the
catalog and the sweep-to-entries command. Everything runs on local files."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import frn_det.engine.cli
from frn_det import model_zoo
from frn_det.engine import argument_parser, build_config
from frn_det.model_zoo import CATALOG, ChecksumMismatchError, ModelZooError, ZooEntry
from frn_det_tools import eval_zoo
from frn_det_tools import model_zoo as zoo_tools

REPO = Path(__file__).resolve().parents[1]
SHAPES_FRN = "configs/Shapes/mask_rcnn_R_18_FPN_frn.yaml"
CATALOG_FILE = REPO / zoo_tools.CATALOG_PATH
MODEL_ZOO_MD = REPO / "MODEL_ZOO.md"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def weights(tmp_path) -> Path:
    path = tmp_path / "model_final.pth"
    path.write_bytes(b"not really a checkpoint")
    return path


def _entry(weights: Path, sha256: str | None, **fields) -> ZooEntry:
    return ZooEntry(
        name="shapes_frn",
        config=SHAPES_FRN,
        url=weights.as_uri(),
        sha256=sha256,
        box_ap=10.0,
        mask_ap=9.0,
        source=model_zoo.SOURCE_FRN_DET,
        **fields,
    )


@pytest.fixture
def captured_main(monkeypatch) -> list:
    """frn_det.engine.cli.main replaced by a recorder: the eval path, minus evaluating (and
    minus the launcher's check that the checkpoint fits the model: these are fake files)."""
    calls = []
    monkeypatch.setattr(frn_det.engine.cli, "main", lambda args: calls.append(args))
    monkeypatch.setattr(frn_det.engine.cli, "check_weights", lambda *args, **kwargs: None)
    return calls


def test_a_file_whose_sha256_differs_is_refused_naming_it_and_both_hashes_and_kept(
    weights, captured_main, capsys
):
    wrong = "0" * 64
    catalog = {"shapes_frn": _entry(weights, wrong)}
    actual = _sha256(weights.read_bytes())

    with pytest.raises(ChecksumMismatchError) as error:
        model_zoo.verify(catalog["shapes_frn"], weights)
    for part in (str(weights), wrong, actual):
        assert part in str(error.value)

    for argv in (["shapes_frn"], ["shapes_frn", "--weights", str(weights)]):
        with pytest.raises(SystemExit) as exit_:
            eval_zoo.main(argv, catalog=catalog)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "refusing" in err and str(weights) in err and wrong in err and actual in err
    assert weights.read_bytes() == b"not really a checkpoint"
    assert captured_main == []


def test_a_matching_file_is_evaluated_eval_only_with_the_catalog_config_and_its_weights(
    weights, captured_main, tmp_path
):
    entry = _entry(weights, _sha256(weights.read_bytes()), opts=("MODEL.FRN.IMPL", "reference"))
    out = tmp_path / "eval"
    status = eval_zoo.main(
        ["shapes_frn", "TEST.DETECTIONS_PER_IMAGE", "50", "--weights", str(weights)]
        + ["OUTPUT_DIR", str(out)],
        catalog={"shapes_frn": entry},
    )

    assert status == 0
    (args,) = captured_main
    assert args.eval_only
    assert Path(args.config_file).resolve() == (REPO / SHAPES_FRN).resolve()
    assert args.num_gpus == 1
    assert args.opts[-2:] == ["MODEL.WEIGHTS", str(weights)]
    options = dict(zip(args.opts[::2], args.opts[1::2], strict=True))
    assert options["MODEL.FRN.IMPL"] == "reference"
    assert options["TEST.DETECTIONS_PER_IMAGE"] == "50"
    assert options["OUTPUT_DIR"] == str(out)


def test_an_entry_without_a_recorded_hash_is_evaluated_and_its_hash_printed(
    weights, captured_main, capsys
):
    eval_zoo.main(["shapes_frn"], catalog={"shapes_frn": _entry(weights, None)})

    assert _sha256(weights.read_bytes()) in capsys.readouterr().out
    assert captured_main[0].opts[-1] == str(weights)
    assert "OUTPUT_DIR" in captured_main[0].opts


def test_weights_given_with_model_weights_or_a_missing_file_are_refused_by_name(
    weights, captured_main, capsys, tmp_path
):
    catalog = {"shapes_frn": _entry(weights, None)}
    missing = tmp_path / "nowhere.pth"
    for argv, expected in (
        (["shapes_frn", "MODEL.WEIGHTS", str(weights)], "--weights PATH"),
        (["shapes_frn", "--weights", str(missing)], str(missing)),
    ):
        with pytest.raises(SystemExit):
            eval_zoo.main(argv, catalog=catalog)
        assert expected in capsys.readouterr().err
    assert captured_main == []


def test_an_unpublished_checkpoint_is_refused_naming_weights_and_the_command_that_trains_it(
    weights,
):
    entry = dataclasses.replace(_entry(weights, None), url=None, reproduce="python train.py")

    with pytest.raises(ModelZooError, match="not published") as error:
        model_zoo.fetch(entry)
    assert "--weights PATH" in str(error.value) and "python train.py" in str(error.value)
    assert model_zoo.fetch(entry, weights) == weights


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_catalog_config_is_shipped_with_the_package_and_loads(name):
    entry = CATALOG[name]
    path = model_zoo.get_config_file(entry.config_path)
    assert path == (REPO / entry.config).resolve(), entry.config
    cfg = build_config(argument_parser().parse_args(["--config-file", str(path)]))
    assert cfg.MODEL.META_ARCHITECTURE
    if entry.source == model_zoo.SOURCE_DETECTRON2:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            from detectron2 import model_zoo as d2_model_zoo
        # Same path as detectron2's config, so its model-zoo name works here too, and the
        # URL detectron2's catalog serves, so the two cannot drift apart.
        assert entry.config == f"configs/{entry.detectron2_config}"
        assert entry.url == d2_model_zoo.get_checkpoint_url(entry.detectron2_config)
        assert entry.url.endswith(".pkl") and entry.sha256 is None
    else:
        assert entry.url is None or "://" in entry.url, entry.url


def test_a_packaged_config_is_found_by_its_path_under_configs_and_merged_with_frn_keys():
    cfg = model_zoo.get_config("Shapes/mask_rcnn_R_18_FPN_frn.yaml")

    assert cfg.MODEL.RESNETS.NORM == "FRN" and "FRN" in cfg.MODEL
    assert (
        model_zoo.get_config_file("configs/Base-Shapes.yaml")
        == (REPO / "configs" / "Base-Shapes.yaml").resolve()
    )
    lazy = model_zoo.get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ_frn.py")
    assert "model" in lazy and "train" in lazy


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("Shapes/mask_rcnn_R_18_FPN_fm.yaml", "did you mean 'Shapes/mask_rcnn_R_18_FPN_frn.yaml'"),
        ("/etc/passwd", "relative to frn-det's configs folder"),
        ("../pyproject.toml", "relative to frn-det's configs folder"),
    ],
)
def test_a_config_the_package_does_not_ship_is_refused_by_name(config, expected):
    with pytest.raises(ModelZooError, match=re.escape(expected)) as error:
        model_zoo.get_config_file(config)
    assert config.removeprefix("configs/") in str(error.value)


def test_the_catalog_file_is_in_its_canonical_form_and_is_what_the_package_reads():
    text = CATALOG_FILE.read_text(encoding="utf-8")

    assert model_zoo.catalog_json(model_zoo.load_catalog(CATALOG_FILE).values()) == text
    assert model_zoo.load_catalog(CATALOG_FILE) == CATALOG


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"sha256": "ABC"}, "sha256 must be 64 lower-case hex digits or null, got 'ABC'"),
        ({"checkpoint": "x"}, "unknown fields ['checkpoint']"),
        ({"opts": ["SOLVER.MAX_ITER"]}, "opts must be KEY VALUE strings"),
        ({"source": "elsewhere"}, "source must be one of detectron2, frn-det, got 'elsewhere'"),
        ({"config": "Shapes/x.yaml"}, "config must be a path configs/"),
    ],
)
def test_a_bad_catalog_entry_is_refused_naming_the_file_entry_and_field(tmp_path, change, expected):
    (entry, *_) = json.loads(CATALOG_FILE.read_text(encoding="utf-8"))
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps([{**entry, **change}]))

    with pytest.raises(ModelZooError) as error:
        model_zoo.load_catalog(path)
    assert str(path) in str(error.value) and entry["name"] in str(error.value)
    assert expected in str(error.value)


def _markdown_cells(text: str, column: str) -> dict[str, str]:
    # The ``column`` cell of every table row of MODEL_ZOO.md whose header has it.
    found, columns = {}, None
    for line in text.splitlines():
        if not line.startswith("|"):
            columns = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "name":
            columns = cells
        elif columns and not cells[0].startswith("---") and column in columns:
            found[cells[0]] = cells[columns.index(column)]
    return found


def _markdown_aps(text: str) -> dict[str, tuple[str, str]]:
    box, mask = _markdown_cells(text, "box AP"), _markdown_cells(text, "mask AP")
    return {name: (box[name], mask[name]) for name in box}


def test_model_zoo_md_lists_every_catalog_entry_with_the_same_ap():
    listed = _markdown_aps(MODEL_ZOO_MD.read_text(encoding="utf-8"))

    assert set(listed) == set(CATALOG)
    for name, entry in CATALOG.items():
        box, mask = listed[name]
        assert box == ("-" if entry.box_ap is None else f"{entry.box_ap:g}"), name
        assert mask == ("-" if entry.mask_ap is None else f"{entry.mask_ap:g}"), name


def test_model_zoo_md_is_what_the_catalog_renders():
    text = MODEL_ZOO_MD.read_text(encoding="utf-8")

    assert zoo_tools.render_markdown(model_zoo.load_catalog(CATALOG_FILE)) == text
    argv = ["markdown", "--check", "--catalog", str(CATALOG_FILE), "--markdown", str(MODEL_ZOO_MD)]
    assert zoo_tools.main(argv) == 0


def test_model_zoo_md_says_in_one_column_which_checkpoints_are_not_published():
    cells = _markdown_cells(MODEL_ZOO_MD.read_text(encoding="utf-8"), "checkpoint")

    assert set(cells) == set(CATALOG)
    for name, entry in CATALOG.items():
        if entry.url is None:
            assert cells[name] == "not published", name
        else:
            assert cells[name].endswith(f"({entry.url})"), name
    assert not [cell for cell in cells.values() if "output/" in cell]


def test_an_unknown_name_lists_the_available_names(capsys):
    with pytest.raises(SystemExit) as exit_:
        eval_zoo.main(["mask_rcnn_R_50_FPN_3x_g"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "'mask_rcnn_R_50_FPN_3x_g'" in err and "did you mean 'mask_rcnn_R_50_FPN_3x_gn'" in err
    for name in CATALOG:
        assert name in err


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A sweep folder with one finished run (DONE.json, model_final.pth) and one that is
    still training."""
    out = tmp_path / "sweep"
    run = out / "mask_rcnn_R_18_FPN" / "frn" / "ipg2" / "seed0"
    run.mkdir(parents=True)
    (run / "model_final.pth").write_bytes(b"\x80weights" * 1000)
    (run / "config.yaml").write_text(
        "DATASETS:\n  TRAIN: [frn_shapes_train]\n  TEST: [frn_shapes_val]\nMODEL:\n  DEVICE: cpu\n"
    )
    config = REPO / SHAPES_FRN
    args = ["--config-file", str(config), "--num-gpus", "1", "--ims-per-gpu", "2"]
    args += ["MODEL.FRN.IMPL", "autograd", "SEED", "0", "OUTPUT_DIR", str(run)]
    done = {
        "config": str(config),
        "config_stem": "mask_rcnn_R_18_FPN",
        "norm": "frn",
        "ims_per_gpu": 2,
        "num_gpus": 1,
        "seed": 0,
        "train_net_args": args,
        "schedule": {"ims_per_batch": 2, "base_lr": 0.0025, "max_iter": 400},
        "max_iter": 400,
        "results": {"bbox/AP": 51.234, "segm/AP": 47.5, "bbox/AP50": 80.0},
        "seconds": 725.4,
        "images_trained": 800,
    }
    (run / "DONE.json").write_text(json.dumps(done))
    (out / "mask_rcnn_R_18_FPN" / "bn" / "ipg2" / "seed0").mkdir(parents=True)
    return out


def test_sweep_rows_print_a_row_with_the_sha256_of_model_final(sweep, capsys):
    expected = _sha256((sweep / "mask_rcnn_R_18_FPN/frn/ipg2/seed0/model_final.pth").read_bytes())

    assert zoo_tools.main(["rows", str(sweep)]) == 0
    out, err = capsys.readouterr()
    (row,) = [line for line in out.splitlines() if line.startswith("| ")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "mask_rcnn_R_18_FPN_frn_ipg2_seed0"
    assert f"`{expected}`" in cells and "not published" in cells
    assert "frn_shapes_train -> frn_shapes_val" in cells and "2 x 1" in cells
    assert "51.23" in cells and "47.5" in cells and "12m05s (cpu)" in cells
    assert "bn/ipg2/seed0: not finished" in err


def test_an_entry_from_a_sweep_records_the_command_that_trains_it_again(sweep):
    (entry,), _ = zoo_tools.entries_from_sweeps([sweep])
    command = shlex.split(entry.reproduce)

    assert command[:2] == ["python", "tools/sweep.py"]
    options = dict(zip(command[2:14:2], command[3:14:2], strict=True))
    assert options == {
        "--configs": "configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml",
        "--norms": "frn",
        "--ims-per-gpu": "2",
        "--num-gpus": "1",
        "--seed": "0",
        "--output": str(sweep.resolve()),
    }
    assert command[14:] == ["MODEL.FRN.IMPL", "autograd"]
    assert entry.config == SHAPES_FRN
    assert entry.opts == ("MODEL.FRN.IMPL", "autograd")
    # Without --url-prefix the file is not published: no URL, rather than its local path.
    assert entry.url is None


BD_GN = "configs/Shapes/batch_dependence/mask_rcnn_R_18_FPN_gn.yaml"


def _fixed_batch_run(out: Path, checkout: Path, norm: str, ipg: int) -> Path:
    """A finished fixed-batch run (total batch 8) of the batch-dependence gn leaf, as a sweep
    in ``checkout`` (a copy of the repository's configs) leaves it."""
    stem = "mask_rcnn_R_18_FPN_fixed_batch8"
    run = out / stem / norm / f"ipg{ipg}" / "seed1"
    run.mkdir(parents=True)
    (run / "model_final.pth").write_bytes(b"\x80weights")
    (run / "config.yaml").write_text("MODEL:\n  DEVICE: cpu\n")
    config = checkout / BD_GN
    args = ["--config-file", str(config), "--num-gpus", str(8 // ipg), "--ims-per-gpu", str(ipg)]
    if norm.endswith("_pa"):
        args += ["MODEL.PADDING_AWARE_NORM", "True"]
    args += ["DATALOADER.ASPECT_RATIO_GROUPING", "False", "SEED", "1", "OUTPUT_DIR", str(run)]
    done = {
        "config": str(config), "config_stem": stem, "design": "fixed_batch", "norm": norm,
        "padding_aware": norm.endswith("_pa"), "ims_per_gpu": ipg, "num_gpus": 8 // ipg,
        "seed": 1, "train_net_args": args, "max_iter": 1250, "results": {"bbox/AP": 60.0},
        "schedule": {"ims_per_batch": 8, "base_lr": 0.04, "max_iter": 1250},
    }  # fmt: skip
    (run / "DONE.json").write_text(json.dumps(done))
    return run


def _checkout(tmp_path: Path) -> Path:
    checkout = tmp_path / "worktree"
    shutil.copytree(REPO / "configs", checkout / "configs")
    return checkout


def test_fixed_batch_runs_of_another_checkout_are_named_by_design_and_norm(tmp_path):
    checkout = _checkout(tmp_path)
    out = tmp_path / "grid"
    _fixed_batch_run(out, checkout, "gn", 2)
    _fixed_batch_run(out, checkout, "gn_pa", 2)
    with pytest.raises(ModelZooError, match="--trained-in"):
        zoo_tools.entries_from_sweeps([out])
    entries, _ = zoo_tools.entries_from_sweeps([out], trained_in=checkout)
    by_name = {e.name: e for e in entries}
    assert sorted(by_name) == [
        "mask_rcnn_R_18_FPN_fixed_batch8_gn_ipg2_seed1",
        "mask_rcnn_R_18_FPN_fixed_batch8_gn_pa_ipg2_seed1",
    ]
    pa = by_name["mask_rcnn_R_18_FPN_fixed_batch8_gn_pa_ipg2_seed1"]
    assert pa.config == BD_GN and (pa.ims_per_gpu, pa.num_gpus) == (2, 4)
    # The entry keeps what builds the model; the command leaves to the sweep what it adds.
    assert pa.opts[:2] == ("MODEL.PADDING_AWARE_NORM", "True")
    command = shlex.split(pa.reproduce)
    options = dict(zip(command[2:14:2], command[3:14:2], strict=True))
    assert options == {
        "--configs": "configs/Shapes/batch_dependence/mask_rcnn_R_18_FPN_{norm}.yaml",
        "--norms": "gn_pa", "--ims-per-gpu": "2", "--total-batch": "8", "--seed": "1",
        "--output": str(out.resolve()),
    }  # fmt: skip
    assert command[14:] == []


def test_a_run_whose_config_differs_from_the_packaged_one_is_refused(tmp_path):
    checkout = _checkout(tmp_path)
    out = tmp_path / "grid"
    _fixed_batch_run(out, checkout, "gn", 8)
    leaf = checkout / BD_GN
    leaf.write_text(leaf.read_text() + "SOLVER:\n  BASE_LR: 0.5\n")
    with pytest.raises(ModelZooError, match=r"differs from the packaged configs/Shapes/batch"):
        zoo_tools.entries_from_sweeps([out], trained_in=checkout)


NEW_RUN = "mask_rcnn_R_18_FPN_frn_ipg2_seed0"


def test_rows_write_adds_the_entry_to_the_catalog_file_as_a_few_lines_and_markdown_agrees(
    sweep, tmp_path, capsys
):
    # The committed catalog without the sweep's entry, so that it is added.
    others = [entry for name, entry in CATALOG.items() if name != NEW_RUN]
    catalog = tmp_path / "catalog.json"
    catalog.write_text(model_zoo.catalog_json(others), encoding="utf-8")
    before = catalog.read_text(encoding="utf-8")
    markdown = tmp_path / "MODEL_ZOO.md"
    argv = ["rows", str(sweep), "--write", "--url-prefix", "https://example.org/zoo/"]
    argv += ["--catalog", str(catalog), "--markdown", str(markdown)]
    for _ in range(2):  # a second write replaces the entry instead of adding it again
        assert zoo_tools.main(argv) == 0
    capsys.readouterr()

    written = model_zoo.load_catalog(catalog)
    assert list(written) == [e.name for e in others] + [NEW_RUN]
    assert all(written[e.name] == e for e in others)
    entry = written[NEW_RUN]
    assert entry.url == f"https://example.org/zoo/{NEW_RUN}.pth"
    assert entry.sha256 == model_zoo.sha256_of(
        sweep / "mask_rcnn_R_18_FPN/frn/ipg2/seed0/model_final.pth"
    )
    # Diff-friendly: the entry's lines are added, and at most the closing brace before them
    # changes (it gains a comma).
    after = catalog.read_text(encoding="utf-8")
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    removed = [line for line in diff if line.startswith("- ")]
    added = [line for line in diff if line.startswith("+ ")]
    entry_lines = len(model_zoo.catalog_json([written[NEW_RUN]]).splitlines()) - 2  # no [ ]
    assert removed in ([], ["-   }"]) and len(added) == entry_lines + len(removed)
    assert model_zoo.catalog_json(written.values()) == after
    text = markdown.read_text(encoding="utf-8")
    assert zoo_tools.render_markdown(written) == text
    assert _markdown_aps(text)[NEW_RUN] == ("51.23", "47.5")
    assert _markdown_cells(text, "checkpoint")[NEW_RUN] == (
        f"[{NEW_RUN}.pth](https://example.org/zoo/{NEW_RUN}.pth)"
    )
    assert entry.reproduce in text


def test_rows_write_replaces_the_entry_of_the_same_name_in_place(sweep, tmp_path, capsys):
    catalog = tmp_path / "catalog.json"
    shutil.copy(CATALOG_FILE, catalog)
    argv = ["rows", str(sweep), "--write", "--catalog", str(catalog)]
    assert zoo_tools.main([*argv, "--markdown", str(tmp_path / "MODEL_ZOO.md")]) == 0
    capsys.readouterr()

    written = model_zoo.load_catalog(catalog)
    assert list(written) == list(CATALOG)
    assert all(written[name] == e for name, e in CATALOG.items() if name != NEW_RUN)
    assert written[NEW_RUN] == zoo_tools.entries_from_sweeps([sweep])[0][0]
    assert written[NEW_RUN] != CATALOG[NEW_RUN]


def test_rows_write_without_the_catalog_file_is_refused_naming_it(sweep, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "catalog.json"
    with pytest.raises(SystemExit) as exit_:
        zoo_tools.main(["rows", str(sweep), "--write", "--catalog", str(missing)])
    assert exit_.value.code == 2
    assert str(missing) in capsys.readouterr().err


def test_the_script_lists_the_catalog_from_a_checkout():
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "eval_zoo.py"), "--list"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    for name in CATALOG:
        assert re.search(rf"^\| {re.escape(name)} +\|", done.stdout, re.M)


def test_an_archived_run_is_listed_with_the_sha256_its_archive_kept(sweep, tmp_path):
    from frn_det_tools.run_archive import restore, save

    (listed,), _ = zoo_tools.entries_from_sweeps([sweep])
    save(sweep, tmp_path / "archive")
    fresh = tmp_path / "fresh"
    restore(tmp_path / "archive", fresh)
    run = fresh / "mask_rcnn_R_18_FPN/frn/ipg2/seed0"
    assert not (run / "model_final.pth").exists()
    (entry,), _ = zoo_tools.entries_from_sweeps([fresh])
    assert entry.sha256 == listed.sha256
    assert dataclasses.replace(entry, reproduce=listed.reproduce) == listed
    (run / "CHECKPOINT.json").write_text(json.dumps({"sha256": "not a hash"}))
    with pytest.raises(ModelZooError, match="gives sha256 'not a hash'; expected 64"):
        zoo_tools.entries_from_sweeps([fresh])
    (run / "CHECKPOINT.json").unlink()
    with pytest.raises(ModelZooError, match=r"no DONE.json and model_final.pth \(or, archived"):
        zoo_tools.entries_from_sweeps([fresh])
