"""frn_det_tools.lr_search: extending the searched set at an edge, and writing each norm's
choice into its leaf without touching a leaf it cannot append to."""

from __future__ import annotations

import pytest

from frn_det_tools.lr_search import edge_extensions, main, write_leaf_learning_rates

STEM = "mask_rcnn_R_18_FPN_fixed_batch8"


def _rows(aps):
    return [{"norm": norm, "base_lr": lr, "box_AP": ap} for (norm, lr), ap in aps.items()]


def test_a_choice_at_an_edge_adds_one_step_beyond_it_for_the_search():
    inside = _rows({("bn", 0.02): 1.0, ("bn", 0.04): 3.0, ("bn", 0.08): 2.0})
    assert edge_extensions(inside) == []
    top = _rows({("bn", 0.02): 1.0, ("bn", 0.04): 3.0, ("gn", 0.04): 1.0, ("gn", 0.08): 5.0})
    assert edge_extensions(top) == [pytest.approx(0.16)]
    both = _rows({("bn", 0.02): 4.0, ("bn", 0.08): 1.0, ("gn", 0.02): 1.0, ("gn", 0.08): 2.0})
    assert edge_extensions(both) == [pytest.approx(0.16), pytest.approx(0.01)]


def _leaves(tmp_path, norms, extra=""):
    for norm in norms:
        (tmp_path / f"leaf_{norm}.yaml").write_text(f'_BASE_: "b.yaml"\nMODEL:\n  X: 1\n{extra}')
    return str(tmp_path / "leaf_{norm}.yaml")


def test_each_leaf_gets_its_norms_choice_once_and_an_alias_takes_its_norms(tmp_path):
    pattern = _leaves(tmp_path, ["bn", "syncbn", "gn"])
    written = write_leaf_learning_rates(pattern, {"bn": 0.04, "gn": 0.08}, {"syncbn": "bn"})
    assert sorted(written) == ["bn", "gn", "syncbn"]
    text = (tmp_path / "leaf_syncbn.yaml").read_text()
    assert text.endswith(
        "SOLVER:\n  BASE_LR: 0.04  # the search's choice (docs/batch_dependence)\n"
    )
    assert "BASE_LR: 0.08 " in (tmp_path / "leaf_gn.yaml").read_text()
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert write_leaf_learning_rates(pattern, {"bn": 0.04, "gn": 0.08}, {"syncbn": "bn"}) == {}
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before


def test_a_leaf_with_a_solver_section_is_refused_before_any_leaf_is_written(tmp_path):
    pattern = _leaves(tmp_path, ["bn"])
    (tmp_path / "leaf_gn.yaml").write_text("SOLVER:\n  MAX_ITER: 10\n")
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=r"leaf_gn\.yaml.*SOLVER section"):
        write_leaf_learning_rates(pattern, {"bn": 0.04, "gn": 0.02})
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
    with pytest.raises(FileNotFoundError, match="leaf for 'frn'"):
        write_leaf_learning_rates(pattern, {"frn": 0.04})
    with pytest.raises(ValueError, match="--same-as"):
        write_leaf_learning_rates(pattern, {"bn": 0.04}, {"syncbn": "gn"})


def test_the_command_line_extends_writes_and_refuses(fake_run, tmp_path, capsys):
    search = tmp_path / "search"
    for lr, ap in (("0.02", 10.0), ("0.04", 12.0)):
        fake_run(search / f"lr{lr}", "bn", 8, 0, "done", box=ap, stem=STEM)
    assert main([str(search), "--extend"]) == 0
    assert capsys.readouterr().out.strip() == "0.08"
    pattern = _leaves(tmp_path, ["bn", "syncbn"])
    assert main([str(search), "--write-leaves", pattern, "--same-as", "syncbn=bn"]) == 0
    assert "chosen BASE_LR: bn 0.04, syncbn 0.04" in capsys.readouterr().out
    assert main([str(tmp_path / "nothing"), "--extend"]) == 2
    assert "no finished runs" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(search), "--write-leaves", pattern, "--same-as", "syncbn"])
    assert "expected ALIAS=NORM" in capsys.readouterr().err


def test_a_diverged_run_is_a_result_and_an_unfinished_search_chooses_nothing(
    fake_run, tmp_path, capsys
):
    search = tmp_path / "search"
    for lr, ap in (("0.02", 10.0), ("0.04", 12.0)):
        fake_run(search / f"lr{lr}", "bn", 8, 0, "done", box=ap, stem=STEM)
    fake_run(search / "lr0.08", "bn", 8, 0, "failed", iteration=90, stem=STEM, diverged=True)
    # 0.08 was searched (it diverged), so 0.04 is inside the set: nothing to add.
    assert main([str(search), "--extend"]) == 0
    assert capsys.readouterr().out.strip() == ""
    pattern = _leaves(tmp_path, ["bn"])
    assert main([str(search), "--write-leaves", pattern]) == 0
    assert "chosen BASE_LR: bn 0.04" in capsys.readouterr().out

    crashed = fake_run(search / "lr0.16", "bn", 8, 0, "failed", iteration=90, stem=STEM)
    unfinished = fake_run(search / "lr0.16", "gn", 8, 0, "unfinished", iteration=90, stem=STEM)
    before = (tmp_path / "leaf_bn.yaml").read_text()
    for step in (["--extend"], ["--write-leaves", pattern]):
        assert main([str(search), *step]) == 2
        out = capsys.readouterr().out
        assert "not finished" in out and str(crashed) in out and str(unfinished) in out
    assert (tmp_path / "leaf_bn.yaml").read_text() == before
