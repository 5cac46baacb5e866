"""The Makefile's environment step says a full disk plainly, before it installs anything."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_make_env_refuses_a_disk_without_room_before_creating_the_venv(tmp_path):
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["make", "-C", str(REPO), "env", f"VENV={venv}", "ENV_NEED_MB=1000000000"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert f"{venv} needs about 1000000000 MB" in done.stderr
    assert "MB are free on" in done.stderr
    assert not venv.exists()
