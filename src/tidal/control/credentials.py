"""Where ``tidal up`` tells clients on the same machine how to reach it.

The server writes ``{"url": ..., "token": ...}`` (an admin token) to
``<data_dir>/server.json``, readable by its owner only (mode 0600); the CLI reads it when
``TIDAL_API`` / ``TIDAL_TOKEN`` are not set. The default data directory is
``$XDG_DATA_HOME/tidal``, else ``~/.local/share/tidal``.

Stdlib only at import: the CLI client imports this module.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from tidal.control.errors import AuthError, NotFoundError

if TYPE_CHECKING:
    from tidal.control.service import Service

__all__ = [
    "CREDENTIALS_FILE",
    "Credentials",
    "default_data_dir",
    "ensure_admin_token",
    "read_credentials",
    "write_credentials",
]

logger = logging.getLogger(__name__)

CREDENTIALS_FILE: Final = "server.json"
ADMIN_TENANT: Final = "admin"


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/tidal``, else ``$HOME/.local/share/tidal``."""
    xdg = environ.get("XDG_DATA_HOME", "").strip()
    if xdg:
        return Path(xdg) / "tidal"
    home = environ.get("HOME", "").strip()
    return (Path(home) if home else Path.home()) / ".local" / "share" / "tidal"


@dataclass(frozen=True, slots=True)
class Credentials:
    url: str
    token: str


def read_credentials(data_dir: Path) -> Credentials | None:
    """What ``tidal up`` wrote in ``data_dir``, or ``None`` if nothing (readable) is there."""
    path = data_dir / CREDENTIALS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    url, token = raw.get("url"), raw.get("token")
    if not isinstance(url, str) or not isinstance(token, str):
        return None
    return Credentials(url, token)


def write_credentials(data_dir: Path, url: str, token: str) -> Path:
    """Write ``{url, token}`` to ``data_dir/server.json`` with mode 0600 (atomically)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CREDENTIALS_FILE
    tmp = path.with_name(f".{CREDENTIALS_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"url": url, "token": token}, handle)
            handle.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def ensure_admin_token(service: Service, data_dir: Path) -> str:
    """An admin token for ``data_dir``'s credentials file: the one already there if it is
    still valid, else a new one (creating the ``admin`` tenant on the first start)."""
    existing = read_credentials(data_dir)
    if existing is not None:
        try:
            if service.authenticate(existing.token).is_admin:
                return existing.token
        except AuthError:
            pass
    try:
        service.store.get_tenant(ADMIN_TENANT)
    except NotFoundError:
        logger.info("first start: creating tenant %r", ADMIN_TENANT)
        return service.add_tenant(None, ADMIN_TENANT, admin=True)
    logger.info("issuing a new admin token")
    return service.issue_token(None, ADMIN_TENANT)
