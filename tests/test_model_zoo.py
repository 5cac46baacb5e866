"""frn_det_tools.model_zoo and tools/eval_zoo.py: the catalog, its SHA-256 checks, the eval-only
path, MODEL_ZOO.md and the sweep-to-rows command. Everything runs on local files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import frn_det.engine.cli
from frn_det.engine import argument_parser, build_config
from frn_det_tools import model_zoo
from frn_det_tools.model_zoo import CATALOG, ChecksumMismatchError, ZooEntry

REPO = Path(__file__).resolve().parents[1]
SHAPES_FRN = "configs/Shapes/mask_rcnn_R_18_FPN_frn.yaml"
RUFF = Path(sys.executable).parent / "ruff"


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
            model_zoo.eval_main(argv, catalog=catalog)
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
    status = model_zoo.eval_main(
        ["shapes_frn", "TEST.DETECTIONS_PER_IMAGE", "50", "--weights", str(weights)]
        + ["OUTPUT_DIR", str(out)],
        catalog={"shapes_frn": entry},
    )

    assert status == 0
    (args,) = captured_main
    assert args.eval_only
    assert Path(args.config_file) == REPO / SHAPES_FRN
    assert args.num_gpus == 1
    assert args.opts[-2:] == ["MODEL.WEIGHTS", str(weights)]
    options = dict(zip(args.opts[::2], args.opts[1::2], strict=True))
    assert options["MODEL.FRN.IMPL"] == "reference"
    assert options["TEST.DETECTIONS_PER_IMAGE"] == "50"
    assert options["OUTPUT_DIR"] == str(out)


def test_an_entry_without_a_recorded_hash_is_evaluated_and_its_hash_printed(
    weights, captured_main, capsys
):
    model_zoo.eval_main(["shapes_frn"], catalog={"shapes_frn": _entry(weights, None)})

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
            model_zoo.eval_main(argv, catalog=catalog)
        assert expected in capsys.readouterr().err
    assert captured_main == []


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_catalog_config_exists_under_configs_and_loads(name):
    entry = CATALOG[name]
    path = REPO / entry.config
    assert entry.config.startswith("configs/") and path.is_file(), entry.config
    cfg = build_config(argument_parser().parse_args(["--config-file", str(path)]))
    assert cfg.MODEL.META_ARCHITECTURE
    if entry.source == model_zoo.SOURCE_DETECTRON2:
        # Same path as detectron2's config, so its model-zoo name works here too.
        assert entry.config == f"configs/{entry.detectron2_config}"
        assert entry.url.endswith(".pkl") and entry.sha256 is None


def _markdown_aps(text: str) -> dict[str, tuple[str, str]]:
    # Every table row of MODEL_ZOO.md under a header that has "box AP" and "mask AP".
    found, columns = {}, None
    for line in text.splitlines():
        if not line.startswith("|"):
            columns = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "name":
            columns = cells
        elif columns and not cells[0].startswith("---") and "box AP" in columns:
            found[cells[0]] = (cells[columns.index("box AP")], cells[columns.index("mask AP")])
    return found


def test_model_zoo_md_lists_every_catalog_entry_with_the_same_ap():
    listed = _markdown_aps((REPO / "MODEL_ZOO.md").read_text(encoding="utf-8"))

    assert set(listed) == set(CATALOG)
    for name, entry in CATALOG.items():
        box, mask = listed[name]
        assert box == ("-" if entry.box_ap is None else f"{entry.box_ap:g}"), name
        assert mask == ("-" if entry.mask_ap is None else f"{entry.mask_ap:g}"), name


def test_model_zoo_md_is_what_the_catalog_renders():
    assert model_zoo.main(["markdown", "--check"]) == 0


def test_an_unknown_name_lists_the_available_names(capsys):
    with pytest.raises(SystemExit) as exit_:
        model_zoo.eval_main(["mask_rcnn_R_50_FPN_3x_g"])
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

    assert model_zoo.main(["rows", str(sweep)]) == 0
    out, err = capsys.readouterr()
    (row,) = [line for line in out.splitlines() if line.startswith("| ")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "mask_rcnn_R_18_FPN_frn_ipg2_seed0"
    assert f"`{expected}`" in cells
    assert "frn_shapes_train -> frn_shapes_val" in cells and "2 x 1" in cells
    assert "51.23" in cells and "47.5" in cells and "12m05s (cpu)" in cells
    assert "bn/ipg2/seed0: not finished" in err


def test_an_entry_from_a_sweep_records_the_command_that_trains_it_again(sweep):
    (entry,), _ = model_zoo.entries_from_sweeps([sweep])
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
    assert entry.opts == ("MODEL.FRN.IMPL", "autograd")
    assert entry.url == str(sweep.resolve() / "mask_rcnn_R_18_FPN/frn/ipg2/seed0/model_final.pth")


def test_rows_write_fills_the_catalog_and_markdown_which_stay_ruff_clean_and_agree(
    sweep, tmp_path, capsys, monkeypatch
):
    source = tmp_path / "model_zoo_copy.py"
    shutil.copy(model_zoo.__file__, source)
    markdown = tmp_path / "MODEL_ZOO.md"
    for _ in range(2):  # a second write replaces the entry instead of adding it again
        argv = ["rows", str(sweep), "--write", "--url-prefix", "https://example.org/zoo/"]
        assert model_zoo.main(argv, source=source, markdown_path=markdown) == 0
    capsys.readouterr()

    spec = importlib.util.spec_from_file_location("model_zoo_copy", source)
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, copy)  # dataclasses look their module up
    spec.loader.exec_module(copy)
    # The committed catalog's entries stay; the one of the same name is replaced, once.
    names = [e.name for e in copy.FRN_DET_CHECKPOINTS]
    assert sorted(set(names)) == sorted(names)
    assert set(names) == {e.name for e in model_zoo.FRN_DET_CHECKPOINTS} | {
        "mask_rcnn_R_18_FPN_frn_ipg2_seed0"
    }
    (entry,) = [
        e for e in copy.FRN_DET_CHECKPOINTS if e.name == "mask_rcnn_R_18_FPN_frn_ipg2_seed0"
    ]
    assert len(re.findall(r"^FRN_DET_CHECKPOINTS", source.read_text(encoding="utf-8"), re.M)) == 1
    assert entry.name == "mask_rcnn_R_18_FPN_frn_ipg2_seed0"
    assert entry.url == "https://example.org/zoo/mask_rcnn_R_18_FPN_frn_ipg2_seed0.pth"
    assert entry.sha256 == model_zoo.sha256_of(
        sweep / "mask_rcnn_R_18_FPN/frn/ipg2/seed0/model_final.pth"
    )
    assert copy.render_markdown() == markdown.read_text(encoding="utf-8")
    listed = _markdown_aps(markdown.read_text(encoding="utf-8"))
    assert listed[entry.name] == ("51.23", "47.5")
    assert entry.reproduce in markdown.read_text(encoding="utf-8")
    config = ["--config", str(REPO / "pyproject.toml")]
    for check in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [str(RUFF), *check, *config, str(source)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_script_lists_the_catalog_from_a_checkout():
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "eval_zoo.py"), "--list"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    for name in CATALOG:
        assert re.search(rf"^\| {re.escape(name)} \|", done.stdout, re.M)
