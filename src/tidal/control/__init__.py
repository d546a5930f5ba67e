"""The control plane: settings, store, service facade, REST API.

Heavy parts (SQLAlchemy, FastAPI) are imported when first used, so the CLI client can
import the light modules (:mod:`tidal.control.models`, :mod:`tidal.control.credentials`)
quickly. The reconcile loop, fleet discovery and the Ray executor plug in through
:meth:`Service.on_change` and the :class:`Store` methods named in docs/service.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidal.control.api import create_app
    from tidal.control.credentials import (
        Credentials,
        default_data_dir,
        ensure_admin_token,
        read_credentials,
        write_credentials,
    )
    from tidal.control.errors import (
        AuthError,
        ConflictError,
        ControlError,
        ForbiddenError,
        JobIdTakenError,
        NotFoundError,
        SettingsError,
        StaleChangeError,
        StoreError,
    )
    from tidal.control.models import JobSubmission
    from tidal.control.records import (
        CheckpointSettings,
        EventRecord,
        Holding,
        JobRecord,
        NodeRecord,
        TenantRecord,
    )
    from tidal.control.server import ApiServer
    from tidal.control.service import Hook, Notice, Service
    from tidal.control.settings import ControlSettings, load_settings
    from tidal.control.store import Store, open_store

_WHERE = {
    "create_app": "api",
    "Credentials": "credentials",
    "default_data_dir": "credentials",
    "ensure_admin_token": "credentials",
    "read_credentials": "credentials",
    "write_credentials": "credentials",
    "AuthError": "errors",
    "ConflictError": "errors",
    "ControlError": "errors",
    "ForbiddenError": "errors",
    "JobIdTakenError": "errors",
    "NotFoundError": "errors",
    "SettingsError": "errors",
    "StaleChangeError": "errors",
    "StoreError": "errors",
    "JobSubmission": "models",
    "CheckpointSettings": "records",
    "EventRecord": "records",
    "Holding": "records",
    "JobRecord": "records",
    "NodeRecord": "records",
    "TenantRecord": "records",
    "ApiServer": "server",
    "Hook": "service",
    "Notice": "service",
    "Service": "service",
    "ControlSettings": "settings",
    "load_settings": "settings",
    "Store": "store",
    "open_store": "store",
}

__all__ = [
    "ApiServer",
    "AuthError",
    "CheckpointSettings",
    "ConflictError",
    "ControlError",
    "ControlSettings",
    "Credentials",
    "EventRecord",
    "ForbiddenError",
    "Holding",
    "Hook",
    "JobIdTakenError",
    "JobRecord",
    "JobSubmission",
    "NodeRecord",
    "NotFoundError",
    "Notice",
    "Service",
    "SettingsError",
    "StaleChangeError",
    "Store",
    "StoreError",
    "TenantRecord",
    "create_app",
    "default_data_dir",
    "ensure_admin_token",
    "load_settings",
    "open_store",
    "read_credentials",
    "write_credentials",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tidal.control' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tidal.control.{module}"), name)
