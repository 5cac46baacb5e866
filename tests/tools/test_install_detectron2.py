"""tools/install_detectron2.py: source order, wheel filtering, idempotence, failures.

The network-free parts run against a small fake wheel built in the test.
"""

import importlib.util
import sys
import zipfile
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "install_detectron2.py"
spec = importlib.util.spec_from_file_location("install_detectron2", TOOL)
installer = importlib.util.module_from_spec(spec)
sys.modules["install_detectron2"] = installer
spec.loader.exec_module(installer)


def fake_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("detectron2/__init__.py", "__version__ = 'fake'\n")
        archive.writestr("detectron2/layers/__init__.py", "")
        archive.writestr("detectron2/_C.cpython-310-x86_64-linux-gnu.so", b"\x7fELF")
        archive.writestr("detectron2/model_zoo/configs/Base-RCNN-FPN.yaml", "MODEL: {}\n")
        archive.writestr("tools/train_net.py", "print('not ours')\n")
        archive.writestr("sal_detectron2-0.7.2.dist-info/METADATA", "Name: sal-detectron2\n")
    return path


def test_an_importable_detectron2_wins_over_everything():
    source = installer.choose_source({"DETECTRON2_SOURCE": "/src/d2"}, "/site/detectron2")
    assert source == installer.Source("importable", "/site/detectron2")


def test_detectron2_source_comes_before_the_wheel():
    source = installer.choose_source({"DETECTRON2_SOURCE": " git+https://x/d2.git "}, None)
    assert source == installer.Source("custom", "git+https://x/d2.git")


def test_the_pypi_wheel_is_the_fallback():
    for environ in ({}, {"DETECTRON2_SOURCE": "  "}):
        source = installer.choose_source(environ, None)
        assert source == installer.Source("wheel", "sal-detectron2==0.7.2")


def test_only_the_detectron2_package_without_compiled_ops_is_extracted(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    target = installer.extract_package(fake_wheel(tmp_path / "w.whl"), site)
    installed = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    assert installed == [
        "detectron2/__init__.py",
        "detectron2/layers/__init__.py",
        "detectron2/model_zoo/configs/Base-RCNN-FPN.yaml",
    ]
    assert target == site / "detectron2"
    assert sorted(p.name for p in site.iterdir()) == ["detectron2"]  # no staging left


def test_a_wheel_without_detectron2_is_refused(tmp_path):
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("other/__init__.py", "")
    with pytest.raises(installer.InstallError, match="not a detectron2 wheel"):
        installer.extract_package(wheel, tmp_path)
    assert not (tmp_path / "detectron2").exists()


def test_wheel_install_reports_the_source_and_missing_compiled_ops(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl")
    message = installer.install(
        {}, tmp_path, tmp_path / "cache", find_importable=lambda: None, fetch_wheel=lambda _: wheel
    )
    assert "sal-detectron2==0.7.2" in message
    assert "compiled ops (_C) are absent" in message
    assert (tmp_path / "detectron2" / "__init__.py").exists()


def test_install_is_idempotent_once_detectron2_is_importable(tmp_path):
    def no_fetch(_):
        raise AssertionError("nothing should be downloaded")

    message = installer.install(
        {}, tmp_path, tmp_path, find_importable=lambda: "/site/detectron2", fetch_wheel=no_fetch
    )
    assert "already importable" in message


def test_custom_source_is_passed_to_pip(tmp_path):
    requested = []
    message = installer.install(
        {"DETECTRON2_SOURCE": "/clones/detectron2"},
        tmp_path,
        tmp_path,
        find_importable=lambda: None,
        install_requirement=requested.append,
    )
    assert requested == ["/clones/detectron2"]
    assert "DETECTRON2_SOURCE=/clones/detectron2" in message


def test_a_wheel_with_the_wrong_hash_is_refused(tmp_path):
    wheel = fake_wheel(tmp_path / installer.WHEEL_FILENAME)
    with pytest.raises(installer.InstallError, match="has SHA-256 .* expected"):
        installer.download_wheel(tmp_path)
    assert wheel.exists()  # the user's file is reported, not deleted


def test_failure_exits_non_zero_with_the_reason(tmp_path, monkeypatch, capsys):
    def failing_install(*args, **kwargs):
        raise installer.InstallError("could not download sal-detectron2==0.7.2 from PyPI")

    monkeypatch.setattr(installer, "install", failing_install)
    assert installer.main(["--cache-dir", str(tmp_path)]) == 1
    assert "could not download" in capsys.readouterr().err


def test_an_existing_unimportable_folder_is_not_overwritten(tmp_path):
    (tmp_path / "detectron2").mkdir()
    (tmp_path / "detectron2" / "keep.txt").write_text("user data")
    with pytest.raises(installer.InstallError, match="already exists"):
        installer.extract_package(fake_wheel(tmp_path / "w.whl"), tmp_path)
    assert (tmp_path / "detectron2" / "keep.txt").read_text() == "user data"
