"""The REST API: ``create_app(service)`` returns the FastAPI application.

Versioned under ``/api/v1``; OpenAPI at ``/openapi.json``, browsable at ``/docs``. Every
route but ``/api/v1/health`` needs ``Authorization: Bearer TOKEN``. Errors the service
raises on purpose come back as ``{"detail": "..."}`` with 401 (no or unknown token), 403
(needs an admin), 404 (no such job, or another tenant's), 409 (conflicts with the current
state); bad input is a 422 whose ``detail[].loc`` names the field, a body that is not
JSON a 400, a body over :data:`MAX_BODY_BYTES` a 413.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tidal import __version__
from tidal.control import _api_admin, _api_jobs
from tidal.control.errors import (
    AuthError,
    ConflictError,
    ControlError,
    ForbiddenError,
    NotFoundError,
    StoreError,
)
from tidal.control.service import Service

__all__ = ["API_PREFIX", "MAX_BODY_BYTES", "create_app"]

logger = logging.getLogger(__name__)

API_PREFIX: Final = "/api/v1"
MAX_BODY_BYTES: Final = 1024 * 1024

_STATUS: Final[tuple[tuple[type[ControlError], int], ...]] = (
    (AuthError, 401),
    (ForbiddenError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (StoreError, 503),
)


def _control_error(_request: Request, exc: Exception) -> JSONResponse:
    code = next((c for cls, c in _STATUS if isinstance(exc, cls)), 400)
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    if code >= 500:
        logger.error("request failed: %s", exc)
    return JSONResponse({"detail": str(exc)}, status_code=code, headers=headers)


_ECHO_CHARS: Final = 200


def _printable(value: Any) -> Any:
    """``value`` with every string cut to a readable length and made encodable: a 422
    echoes the bad input, which may be huge or hold lone surrogates (JSON allows
    ``"\\ud800"``; UTF-8 does not)."""
    if isinstance(value, str):
        if len(value) > _ECHO_CHARS:
            value = value[:_ECHO_CHARS] + "..."
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": _printable(jsonable_encoder(errors))}, status_code=422)


def create_app(service: Service) -> FastAPI:
    """The API over ``service`` (kept in ``app.state.service``)."""
    app = FastAPI(
        title="Tidal",
        version=__version__,
        summary="Preemptible, migratable, elastic deep-learning jobs and their scheduler.",
        max_body_size=MAX_BODY_BYTES,
    )
    app.state.service = service
    app.add_exception_handler(ControlError, _control_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.include_router(_api_admin.health_router, prefix=API_PREFIX)
    app.include_router(_api_jobs.router, prefix=API_PREFIX)
    app.include_router(_api_admin.router, prefix=API_PREFIX)
    return app
