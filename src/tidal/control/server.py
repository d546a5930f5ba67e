"""Serve the REST API with uvicorn, in the foreground or on a thread.

The socket is bound before uvicorn starts, so ``port=0`` picks a free port and
:attr:`ApiServer.url` is known at once. The default host is loopback.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Final

import uvicorn
from fastapi import FastAPI

from tidal.control.errors import ControlError

__all__ = ["ApiServer"]

logger = logging.getLogger(__name__)

_START_TIMEOUT_S: Final = 30.0


class ApiServer:
    """uvicorn serving ``app`` on ``host:port`` (``port=0``: any free port)."""

    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        access_log: bool = False,
        log_level: str = "warning",
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on the accepted connections
        # only when it sees that, and without it every small reply waits out delayed ACKs
        # (40 ms on Linux).
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            raise ControlError(f"cannot listen on {host}:{port}: {exc}") from None
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level=log_level,
            access_log=access_log,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        """Serve in this thread until stopped (Ctrl-C, SIGTERM, or :meth:`stop`)."""
        logger.info("API listening on %s", self.url)
        self._server.run(sockets=[self._socket])

    def start(self) -> str:
        """Serve on a background thread; returns the URL once the server accepts."""
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            daemon=True,
            name="tidal-api",
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ControlError(f"API server on {self.url} did not start")
            time.sleep(0.01)
        logger.info("API listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        """Stop serving and wait for the thread (if any) to end."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._socket.close()
