"""The control plane's settings: flags over TIDAL_* environment over a YAML file over
defaults, read once into one object."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidal.control.credentials import default_data_dir
from tidal.control.errors import SettingsError
from tidal.control.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("TIDAL_DATA_DIR", "TIDAL_PORT", "TIDAL_DB", "TIDAL_CONFIG", "TIDAL_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.data_dir == tmp_path / "home" / ".local" / "share" / "tidal"
    assert settings.host == "127.0.0.1" and settings.port == 8470
    assert settings.db_url == f"sqlite:///{settings.data_dir / 'tidal.db'}"
    assert settings.jobs_root == settings.data_dir / "jobs"
    assert default_data_dir({"XDG_DATA_HOME": "/x", "HOME": "/h"}) == Path("/x/tidal")


def test_flags_over_environment_over_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "tidal.yaml"
    config.write_text("port: 9001\ndb: postgresql://file/db\npolicy: fifo\ndevices: 4\n")
    monkeypatch.setenv("TIDAL_CONFIG", str(config))
    monkeypatch.setenv("TIDAL_PORT", "9002")
    monkeypatch.setenv("TIDAL_DATA_DIR", str(tmp_path / "d"))
    settings = load_settings(policy="tiered", checkpoint_root=None)
    assert settings.port == 9002  # environment over file
    assert settings.policy == "tiered"  # flag over file
    assert settings.devices == 4 and settings.db_url == "postgresql://file/db"  # file
    assert settings.data_dir == tmp_path / "d" and settings.jobs_root == tmp_path / "d" / "jobs"
    assert load_settings(port=9003).port == 9003  # flag over environment


def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIDAL_PORT", "http")
    with pytest.raises(SettingsError, match="port"):
        load_settings()
    monkeypatch.delenv("TIDAL_PORT")
    with pytest.raises(SettingsError, match="devices"):
        load_settings(devices=-1)
    with pytest.raises(SettingsError, match=r"missing\.yaml"):
        load_settings(config=tmp_path / "missing.yaml")
