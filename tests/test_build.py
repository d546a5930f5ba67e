"""The guard against running compiled modules older than their sources."""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from tidal import _build


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the installed package: one compiled module, its source beside it."""
    core = tmp_path / "core"
    core.mkdir()
    (core / "fleet.py").write_text("# source\n")
    (core / f"fleet{EXTENSION_SUFFIXES[0]}").write_bytes(b"\0")
    monkeypatch.setattr(_build, "_ROOT", tmp_path)
    monkeypatch.delenv("TIDAL_IGNORE_STALE_BUILD", raising=False)
    return core


def _age(path: Path, seconds_ago: float) -> None:
    when = path.stat().st_mtime - seconds_ago
    os.utime(path, (when, when))


def test_a_module_built_after_its_source_is_fresh(package: Path) -> None:
    _age(package / "fleet.py", 60.0)
    assert _build.compiled_modules() == ["tidal.core.fleet"]
    assert _build.stale_modules() == []


def test_a_source_edited_after_the_build_is_stale(package: Path) -> None:
    _age(package / f"fleet{EXTENSION_SUFFIXES[0]}", 60.0)
    assert _build.stale_modules() == ["tidal.core.fleet"]
    with pytest.warns(_build.StaleBuildWarning, match=r"tidal\.core\.fleet: source changed"):
        _build.warn_if_stale()


def test_the_warning_can_be_silenced(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _age(package / f"fleet{EXTENSION_SUFFIXES[0]}", 60.0)
    monkeypatch.setenv("TIDAL_IGNORE_STALE_BUILD", "1")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _build.warn_if_stale()  # raises if it warns


def test_the_installed_build_is_not_stale() -> None:
    # What the suite runs is what the sources say (make rebuilds after an edit).
    assert _build.stale_modules() == []


def test_version_says_how_tidal_was_built() -> None:
    from typer.testing import CliRunner

    from tidal import __version__
    from tidal.cli import app

    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0
    expected = "compiled" if _build.compiled_modules() else "pure Python"
    assert result.output.strip() == f"{__version__} ({expected})"
