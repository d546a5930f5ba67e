"""The control plane in one process: store, Ray, the reconcile loop and the REST API.

:class:`ControlPlane` is what ``tidal up`` runs (and ``tidal demo``, the end-to-end tests
and the benchmarks): it opens the store (migrations applied), joins Ray (``ray_address``)
or starts the embedded instance, builds the loop on the shared job book and the Ray
executor, re-adopts what was running, and serves the API. :meth:`ControlPlane.close` is a
clean shutdown: running jobs are stopped at a consistent cut (they resume on the next
start) and an embedded Ray instance is stopped; a control plane that is killed instead
leaves its jobs running, to be adopted again.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from tidal.control.credentials import ensure_admin_token, write_credentials
from tidal.control.executor import JobLaunch, RayExecutor
from tidal.control.fleet import FleetWatcher
from tidal.control.loop import LoopSettings, Reconciler, WallClock
from tidal.control.ray_cluster import EmbeddedRay
from tidal.control.server import ApiServer
from tidal.control.service import Service
from tidal.control.settings import ControlSettings
from tidal.control.store import Store, open_store
from tidal.core import JobState, Stop, make_policy
from tidal.core.book import JobBook

logger = logging.getLogger(__name__)

__all__ = ["ControlPlane"]


class ControlPlane:
    """See the module docstring. ``start`` returns the API's URL."""

    def __init__(self, settings: ControlSettings, loop: LoopSettings | None = None) -> None:
        self.settings = settings
        self.loop_settings = loop or LoopSettings(stop_grace=settings.stop_grace)
        self.store: Store | None = None
        self.embedded: EmbeddedRay | None = None
        self.reconciler: Reconciler | None = None
        self.service: Service | None = None
        self.api: ApiServer | None = None
        self.token = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def jobs_root(self) -> Path:
        return self.settings.jobs_root

    def start(self, *, serve: bool = True) -> str:
        import ray

        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.jobs_root.mkdir(parents=True, exist_ok=True)
        self.store = open_store(settings.db_url)
        address = settings.ray_address
        if address is None:
            self.embedded = EmbeddedRay(settings.data_dir, settings.devices, settings.device_type)
            address = self.embedded.ensure().address
        ray.init(
            address=address,
            namespace="tidal",
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
        clock = WallClock()
        self.service = Service(self.store, self.jobs_root)
        book = JobBook()
        fleet = FleetWatcher(ray.nodes)
        launches: dict[str, JobLaunch] = {}
        executor = RayExecutor(
            book,
            fleet,
            launches.__getitem__,
            self.jobs_root,
            clock,
            ship_workdir=settings.ships_workdir,
            threads=settings.worker_threads,
            default_stop_cost=self.loop_settings.default_stop_cost,
            default_restart_cost=self.loop_settings.default_restart_cost,
        )
        self.reconciler = Reconciler(
            store=self.store,
            policy=make_policy(settings.policy),
            book=book,
            executor=executor,
            fleet=fleet,
            launches=launches,
            clock=clock,
            settings=self.loop_settings,
        )
        self.service.on_change(self.reconciler.notify)
        self.reconciler.load()
        self._thread = threading.Thread(
            target=self.reconciler.run, args=(self._stop,), name="tidal-loop", daemon=True
        )
        self._thread.start()
        url = ""
        if serve:
            from tidal.control.api import create_app

            self.api = ApiServer(create_app(self.service), settings.host, settings.port)
            url = self.api.url
            self.token = ensure_admin_token(self.service, settings.data_dir)
            write_credentials(settings.data_dir, url, self.token)
        return url

    def serve_forever(self) -> None:
        """Serve the API in this thread until Ctrl-C or SIGTERM."""
        if self.api is None:
            raise RuntimeError("start(serve=True) first")
        self.api.run()

    def serve_in_background(self) -> str:
        if self.api is None:
            raise RuntimeError("start(serve=True) first")
        return self.api.start()

    def close(self, stop_jobs: bool = True, timeout: float | None = None) -> None:
        """A clean shutdown: stop jobs at a consistent cut (they resume on the next start),
        stop the loop, the API and an embedded Ray instance."""
        if self.api is not None:
            self.api.stop()
            self.api = None
        reconciler = self.reconciler
        if reconciler is not None and stop_jobs:
            self._stop_jobs(reconciler, timeout or self.loop_settings.stop_grace + 10.0)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        try:
            import ray

            ray.shutdown()
        except Exception:
            logger.debug("ray.shutdown failed", exc_info=True)
        if self.embedded is not None and stop_jobs:
            self.embedded.stop()
        if self.store is not None:
            self.store.close()
            self.store = None

    def _stop_jobs(self, reconciler: Reconciler, timeout: float) -> None:
        """Ask every job holding devices to stop at a consistent cut, through the loop."""
        reconciler.pause_rounds = True
        deadline = time.monotonic() + timeout
        now = reconciler.clock.now()
        stops = [
            Stop(
                r.id,
                r.placement,
                True,
                "control plane shutting down",
                r.generation,
                now + self.loop_settings.stop_grace,
            )
            for r in reconciler.book
            if r.state in (JobState.STARTING, JobState.RUNNING)
        ]
        if stops:
            logger.info("stopping %d jobs at a consistent cut before shutting down", len(stops))
            reconciler.request(stops)
        while time.monotonic() < deadline:
            if not any(r.state.holds_devices for r in reconciler.book):
                return
            time.sleep(0.2)
        logger.warning("some jobs did not stop in time; they stay as they are")
