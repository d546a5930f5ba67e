"""A schemathesis run over the API's OpenAPI schema, against the real server on loopback:
positive and negative data, every phase (examples, coverage, fuzzing, stateful), every
check but two that contradict the API's documented contract:

- ``use_after_free``: ``DELETE /api/v1/jobs/{id}`` cancels a job; the job and its history
  stay readable (``tidal show`` of a cancelled job), so a GET after the DELETE is a 200.
- ``positive_data_acceptance``: a job spec has rules between fields that JSON Schema
  cannot state (``min_devices <= world``, some device count in range divides ``world``);
  a spec the schema alone allows may still be refused, with a 422 naming the field.

It must find no 5xx, no response that breaks the schema, and no malformed request taken.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidal.control.api import create_app
from tidal.control.credentials import ensure_admin_token
from tidal.control.server import ApiServer
from tidal.control.service import Service

_ST = Path(sys.executable).with_name("st")
_SEED = os.environ.get("TIDAL_SCHEMATHESIS_SEED", "20261207")


@pytest.fixture
def served(service: Service, tmp_path: Path) -> Iterator[tuple[str, str]]:
    token = ensure_admin_token(service, tmp_path)
    service.store.upsert_node("n0", "gpu", 8, True, 1.0)
    # Log requests may ask to wait up to a minute for output; here they wait 0.2 s.
    server = ApiServer(create_app(service, log_wait_max=0.2))
    try:
        yield server.start(), token
    finally:
        server.stop()


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    served: tuple[str, str], tmp_path: Path
) -> None:
    url, token = served
    command = [
        str(_ST),
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--exclude-checks",
        "use_after_free,positive_data_acceptance",
        "--max-examples",
        "25",
        "--seed",
        _SEED,
        "--generation-database",
        "none",
        "--continue-on-failure",
        "--request-timeout",
        "20",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=500, cwd=tmp_path, check=False
    )
    report = done.stdout[-20_000:] + done.stderr[-5_000:]
    assert done.returncode == 0, report
    assert "Operations:       14 selected / 14 total" in done.stdout, report
    assert "failures" not in done.stdout.splitlines()[-1], report
