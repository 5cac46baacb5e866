"""frn_det_tools.run_folders: a run's folder names its grid position, and reading the
folder back gives that position, its sweep output and its place in the listing."""

from __future__ import annotations

import pytest

from frn_det_tools.run_folders import RunKey, find_runs, run_dir, run_key, sweep_output


def test_a_run_folder_reads_back_as_the_grid_position_it_was_made_from(tmp_path):
    folder = run_dir(tmp_path / "out", "mask_rcnn_R_18_FPN", "frn_pa", 4, -1)
    assert folder == tmp_path / "out" / "mask_rcnn_R_18_FPN" / "frn_pa" / "ipg4" / "seed-1"
    key = run_key(folder)
    assert key == RunKey("mask_rcnn_R_18_FPN", "frn_pa", 4, -1)
    assert key.label == "frn_pa ipg4 seed-1"
    assert sweep_output(folder) == (tmp_path / "out").resolve()


@pytest.mark.parametrize("tail", ["frn/ipg4", "frn/ipgX/seed0", "frn/ipg4/s0"])
def test_a_folder_not_laid_out_by_the_sweep_has_no_grid_position(tmp_path, tail):
    assert run_key(tmp_path / tail) is None
    with pytest.raises(ValueError, match=r"OUT/<config stem>/<norm>/ipg<N>/seed<S>"):
        sweep_output(tmp_path / tail)


def test_runs_are_found_in_norm_then_batch_then_seed_order(tmp_path):
    for stem, norm, ipg, seed in [
        ("cfg", "frn", 2, 1),
        ("cfg", "zeta", 1, 0),
        ("cfg", "bn", 8, 0),
        ("cfg", "frn", 2, 0),
        ("cfg", "bn", 1, 0),
    ]:
        run_dir(tmp_path, stem, norm, ipg, seed).mkdir(parents=True)
    (tmp_path / "cfg" / "bn" / "ipg1" / "notes").mkdir()
    (tmp_path / "cfg" / "bn" / "ipg2").mkdir()
    (tmp_path / "cfg" / "bn" / "ipg2" / "seed0").write_text("a file, not a run folder")
    found = find_runs(tmp_path)
    assert [key.label for key, _ in found] == [
        "bn ipg1 seed0",
        "bn ipg8 seed0",
        "frn ipg2 seed0",
        "frn ipg2 seed1",
        "zeta ipg1 seed0",
    ]
    assert all(folder == run_dir(tmp_path, *vars(key).values()) for key, folder in found)
