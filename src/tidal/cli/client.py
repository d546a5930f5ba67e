"""The CLI's connection to the REST API: where the server is, which token to use, and
errors turned into messages.

The server's URL and token come from ``TIDAL_API`` / ``TIDAL_TOKEN``, else from what
``tidal up`` wrote in its data directory (``server.json`` in ``TIDAL_DATA_DIR``, by
default ``$XDG_DATA_HOME/tidal`` or ``~/.local/share/tidal``). Read once, here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tidal.control.credentials import default_data_dir, read_credentials

__all__ = ["ApiClient", "ClientError", "ClientSettings", "connect", "describe_422"]

API_PREFIX = "/api/v1"


class ClientError(Exception):
    """A request the CLI could not make or the server refused; the message says why.
    ``status`` is the HTTP status (0 when the server could not be reached)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ClientSettings:
    url: str | None
    token: str | None
    data_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ClientSettings:
        data_dir = environ.get("TIDAL_DATA_DIR", "").strip()
        return cls(
            url=environ.get("TIDAL_API", "").strip() or None,
            token=environ.get("TIDAL_TOKEN", "").strip() or None,
            data_dir=Path(data_dir).expanduser() if data_dir else default_data_dir(environ),
        )

    def resolve(self) -> tuple[str, str]:
        """The server's URL and the token to use."""
        url, token = self.url, self.token
        if url is None or token is None:
            saved = read_credentials(self.data_dir)
            if saved is not None:
                url = url or saved.url
                token = token or saved.token
        if url is None:
            raise ClientError(
                f"no Tidal server known: set TIDAL_API (and TIDAL_TOKEN), or start one with "
                f"`tidal up` (it writes {self.data_dir / 'server.json'})"
            )
        if token is None:
            raise ClientError("no token: set TIDAL_TOKEN (`tidal tenant add NAME` prints one)")
        return url.rstrip("/").removesuffix(API_PREFIX), token


def describe_422(body: Any) -> str:
    """pydantic's 422 body as ``field: message`` lines."""
    details = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(details, list):
        return str(body)
    lines = []
    for err in details:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        message = str(err.get("msg", err)).removeprefix("Value error, ")
        lines.append(f"{'.'.join(loc) or 'body'}: {message}")
    return "; ".join(lines)


class ApiClient:
    """Requests to ``/api/v1`` with the caller's token."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url
        self._http = httpx.Client(
            base_url=url + API_PREFIX,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ClientError(
                f"cannot reach the Tidal API at {self.url} ({exc.__class__.__name__}: {exc}); "
                "is `tidal up` running?"
            ) from None
        if reply.is_success:
            return reply.json()
        try:
            body = reply.json()
        except ValueError:
            body = reply.text
        if reply.status_code == 422:
            message = describe_422(body)
        elif isinstance(body, dict) and isinstance(body.get("detail"), str):
            message = body["detail"]
        else:
            message = str(body)[:500]
        if reply.status_code == 401:
            message = f"the server refused the token ({message}); check TIDAL_TOKEN"
        raise ClientError(message, reply.status_code)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def connect(environ: Mapping[str, str] | None = None) -> ApiClient:
    """A client for the server the environment (or ``tidal up``'s file) names."""
    url, token = ClientSettings.from_env(os.environ if environ is None else environ).resolve()
    return ApiClient(url, token)
