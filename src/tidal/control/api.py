"""The REST API: ``create_app(service)`` returns the FastAPI application.

Versioned under ``/api/v1``; OpenAPI at ``/openapi.json``, browsable at ``/docs``. Every
route but ``/api/v1/health`` needs ``Authorization: Bearer TOKEN``. Errors the service
raises on purpose come back as ``{"detail": "..."}`` with 401 (no or unknown token), 403
(needs an admin), 404 (no such job, or another tenant's), 409 (conflicts with the current
state); bad input is a 422 whose ``detail[].loc`` names the field, a body that is not
JSON a 400, a body over :data:`MAX_BODY_BYTES` a 413 (every body the schema allows is
smaller).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

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
MAX_BODY_BYTES: Final = 16 * 1024 * 1024

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


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's, except that a 405 lists every method the path allows: each method is
    its own route, and Starlette names only those of the first route that matched."""
    if not isinstance(exc, HTTPException):
        raise exc
    if exc.status_code == 405:
        allowed = _methods_at(request.app, request.url.path)
        if allowed:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
    return await http_exception_handler(request, exc)


def _methods_at(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI schema documents for ``path``."""
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(app.state, "methods", None)
    if table is None:
        table = []
        for template, operations in app.openapi()["paths"].items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            table.append((re.compile(f"^{pattern}$"), [m.upper() for m in operations]))
        app.state.methods = table
    return sorted({m for pattern, methods in table if pattern.match(path) for m in methods})


def create_app(service: Service, *, log_wait_max: float = 60.0) -> FastAPI:
    """The API over ``service`` (kept in ``app.state.service``). ``log_wait_max`` bounds
    how long a request for a job's output waits for new lines."""
    app = FastAPI(
        title="Tidal",
        version=__version__,
        summary="Preemptible, migratable, elastic deep-learning jobs and their scheduler.",
        max_body_size=MAX_BODY_BYTES,
    )
    app.state.service = service
    app.state.log_wait_max = log_wait_max
    app.add_exception_handler(ControlError, _control_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.include_router(_api_admin.health_router, prefix=API_PREFIX)
    app.include_router(_api_jobs.router, prefix=API_PREFIX)
    app.include_router(_api_admin.router, prefix=API_PREFIX)
    return app
