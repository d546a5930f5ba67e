"""The control plane's settings: one object, read once at start-up.

Sources, strongest first: values passed in (``tidal up``'s flags), ``TIDAL_*`` environment
variables (``TIDAL_DATA_DIR``, ``TIDAL_PORT``, ``TIDAL_DB``, ...), a YAML file
(``config_file``, or ``TIDAL_CONFIG``), the defaults below. Nothing else in
:mod:`tidal.control` reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from tidal.control.credentials import default_data_dir
from tidal.control.errors import SettingsError

__all__ = ["ControlSettings", "load_settings"]


class ControlSettings(BaseSettings):
    """What ``tidal up`` runs with.

    ``data_dir`` holds the SQLite store (``tidal.db``), ``server.json`` (URL and admin
    token for local clients) and, unless ``checkpoint_root`` says otherwise, each job's
    directory (``jobs/<id>/``: checkpoints and worker logs). ``db`` is a database URL
    (default: SQLite in ``data_dir``; ``postgresql+psycopg://user:pw@host/db`` for
    PostgreSQL). ``ray_address`` joins an existing Ray cluster; without it Tidal starts a
    local one with ``devices`` devices of ``device_type``. ``policy`` names the scheduling
    policy.
    """

    model_config = SettingsConfigDict(env_prefix="TIDAL_", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: default_data_dir(os.environ))
    host: str = "127.0.0.1"
    port: int = Field(8470, ge=0, le=65535)
    db: str | None = None
    ray_address: str | None = None
    devices: int | None = Field(None, ge=0)
    device_type: str = "gpu"
    policy: str = "tiered"
    checkpoint_root: Path | None = None
    stop_grace: float = Field(60.0, gt=0, description="seconds a stop may take before a kill")
    ship_workdir: bool | None = Field(
        None,
        description="ship each job's working directory to its nodes with Ray's runtime_env "
        "(default: only when joining a cluster with ray_address)",
    )
    worker_threads: int = Field(1, ge=1, description="intra-op threads of every worker")
    log_level: str = "info"
    config: Path | None = Field(None, description="YAML file of settings (TIDAL_CONFIG)")

    @model_validator(mode="after")
    def _absolute_dirs(self) -> ControlSettings:
        self.data_dir = self.data_dir.expanduser().absolute()
        if self.checkpoint_root is not None:
            self.checkpoint_root = self.checkpoint_root.expanduser().absolute()
        return self

    @property
    def ships_workdir(self) -> bool:
        return self.ray_address is not None if self.ship_workdir is None else self.ship_workdir

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.data_dir / 'tidal.db'}"

    @property
    def jobs_root(self) -> Path:
        """Where each job's directory lives: ``checkpoint_root``, else ``data_dir/jobs``."""
        return self.checkpoint_root or self.data_dir / "jobs"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = _config_file(init_settings(), env_settings())
        if config is not None:
            if not config.is_file():
                raise SettingsError(f"settings file {str(config)!r} does not exist")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config))
        return tuple(sources)


def _config_file(*sources: dict[str, Any]) -> Path | None:
    for values in sources:
        value = values.get("config")
        if value:
            return Path(value).expanduser()
    return None


def load_settings(**values: Any) -> ControlSettings:
    """Settings from ``values`` (``None`` values are left to the other sources), the
    environment and the settings file; :class:`SettingsError` names a bad value."""
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return ControlSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
