"""The REST API over HTTP (uvicorn on 127.0.0.1): authentication, tenant isolation, input
validation that names the field, and the job routes end to end."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tidal.control.logs import log_dir
from tidal.core import JobState, Placement, transition

from .conftest import Api

JOB = {"name": "lm", "tier": "basic", "world": 4, "min_devices": 1, "command": ["python", "t.py"]}


def routes(api: Api) -> list[tuple[str, str]]:
    schema = httpx.get(f"{api.url}/openapi.json").json()
    found = []
    for path, methods in schema["paths"].items():
        for method in methods:
            concrete = path.replace("{job_id}", "j-00000000").replace("{name}", "n0")
            found.append((method.upper(), concrete))
    return found


def test_every_route_but_health_refuses_requests_without_a_valid_token(api: Api) -> None:
    checked = 0
    with httpx.Client(base_url=api.url) as client:
        for method, path in routes(api):
            if path.endswith("/health"):
                assert client.request(method, path).status_code == 200
                continue
            for headers in (
                {},
                {"Authorization": "Bearer tidal_000000000000_" + "a" * 43},
                {"Authorization": "Basic dXNlcjpwdw=="},
                {"Authorization": "Bearer " + api.admin_token + "x"},
            ):
                reply = client.request(method, path, headers=headers, json=JOB)
                assert reply.status_code == 401, (method, path, headers, reply.text)
                assert reply.headers["www-authenticate"] == "Bearer"
                checked += 1
    assert checked >= 4 * 10


def test_the_server_listens_on_loopback_and_serves_its_docs(api: Api) -> None:
    assert api.url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{api.url}/docs").status_code == 200
    schema = httpx.get(f"{api.url}/openapi.json").json()
    assert "/api/v1/jobs" in schema["paths"] and "HTTPBearer" in str(schema["components"])


def test_submit_list_show_cancel(api: Api) -> None:
    with api.client(api.tenant("alice")) as alice:
        created = alice.post("/jobs", json={**JOB, "env": {"SEED": "7"}, "workdir": "/tmp"})
        assert created.status_code == 201, created.text
        job = created.json()
        assert job["id"].startswith("j-") and job["state"] == "pending" and job["tenant"] == "alice"
        shown = alice.get(f"/jobs/{job['id']}").json()
        for key in ("id", "name", "tier", "state", "world", "devices", "step", "events"):
            assert key in shown
        assert shown["env"] == {"SEED": "7"} and shown["command"] == JOB["command"]
        assert shown["events"][0]["state"] == "pending" and shown["events"][0]["reason"]
        page = alice.get("/jobs").json()
        assert [j["id"] for j in page["jobs"]] == [job["id"]] and page["next"] is None
        asked = alice.delete(f"/jobs/{job['id']}")
        # The reconcile loop (none here) is the one writer of state: the job is marked.
        assert asked.status_code == 200 and asked.json()["state"] == "pending"
        assert asked.json()["cancel_requested"] is True
        events = alice.get(f"/jobs/{job['id']}/events").json()
        assert [e["state"] for e in events] == ["pending", "pending"]
        assert events[1]["previous"] == "pending"
        assert events[1]["reason"] == "cancel requested by alice"


def test_paging_walks_every_job_once(api: Api) -> None:
    with api.client(api.tenant("alice")) as alice:
        ids = [alice.post("/jobs", json=JOB).json()["id"] for _ in range(12)]
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 5}
            if cursor:
                params["before"] = cursor
            page = alice.get("/jobs", params=params).json()
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next"]
            if cursor is None:
                break
    assert seen == ids[::-1]


def test_tenants_cannot_see_or_touch_each_others_jobs(api: Api) -> None:
    alice_token, bob_token = api.tenant("alice"), api.tenant("bob")
    with api.client(alice_token) as alice, api.client(bob_token) as bob:
        job_id = alice.post("/jobs", json=JOB).json()["id"]
        for method, path in [
            ("GET", f"/jobs/{job_id}"),
            ("GET", f"/jobs/{job_id}/events"),
            ("GET", f"/jobs/{job_id}/logs"),
            ("DELETE", f"/jobs/{job_id}"),
        ]:
            reply = bob.request(method, path)
            assert reply.status_code == 404, (method, path, reply.text)
            assert job_id in reply.json()["detail"]
        assert bob.get("/jobs").json()["jobs"] == []
        assert bob.get("/jobs", params={"tenant": "alice"}).json()["jobs"] == []
        assert alice.get(f"/jobs/{job_id}").json()["state"] == "pending"
        for method, path in [("GET", "/tenants"), ("POST", "/nodes/n0/drain")]:
            assert bob.request(method, path).status_code == 403
        assert bob.post("/tenants", json={"name": "eve"}).status_code == 403
    with api.client(api.admin_token) as admin:
        assert [j["id"] for j in admin.get("/jobs").json()["jobs"]] == [job_id]
        assert admin.get("/jobs", params={"tenant": "bob"}).json()["jobs"] == []
        assert admin.get(f"/jobs/{job_id}").json()["tenant"] == "alice"
        assert admin.post("/tenants", json={"name": "alice"}).status_code == 409
        names = [t["name"] for t in admin.get("/tenants").json()]
        assert names == ["admin", "alice", "bob"]


def _loc(reply: httpx.Response) -> list[list[Any]]:
    assert reply.status_code == 422, reply.text
    return [e["loc"] for e in reply.json()["detail"]]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"world": 0}, ["body", "world"]),
        ({"min_devices": 5}, ["body", "min_devices"]),
        ({"tier": "gold"}, ["body", "tier"]),
        ({"world": 6, "min_devices": 4, "max_devices": 5}, ["body", "max_devices"]),
        ({"world": 8, "tier": "premium", "max_devices": 4}, ["body", "max_devices"]),
        ({"name": "n" * 200_000}, ["body", "name"]),
        ({"command": ["x" * 2_000_000]}, ["body", "command", 0]),
        ({"env": {"K": "v" * 100_000}}, ["body", "env", "K"]),
        ({"command": ["x"] * 100_000}, ["body", "command"]),
        ({"workdir": "w" * 10_000}, ["body", "workdir"]),
        ({"command": ["nul\x00byte"]}, ["body", "command", 0]),
        ({"world": "four"}, ["body", "world"]),
        ({"unknown": 1}, ["body", "unknown"]),
    ],
)
def test_malformed_specs_get_a_422_naming_the_field(
    api: Api, change: dict[str, Any], field: list[Any]
) -> None:
    with api.client(api.admin_token) as admin:
        reply = admin.post("/jobs", json={**JOB, **change})
        assert field in _loc(reply)
        assert admin.get("/jobs").json()["jobs"] == []


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [
        (b'{"world": 4, "command": ["\xff\xfe"]}', 400, None),
        (b'{"world": 4, "command": ["\\ud800"]}', 422, ["body", "command", 0]),
        (b'{"world": 4, "command": ["x"], "name": "\\udfff"}', 422, ["body", "name"]),
        (b'{"world": 4, "command": ["x"], "env": {"\\ud800": "x"}}', 422, None),
        (b'{"world": 4, "command": ["' + b"x" * (17 << 20) + b'"]}', 413, None),
        (b"[" * 50_000, 400, None),
        (b'{"world": 1' + b"0" * 5000 + b', "command": ["x"]}', 400, None),
        (b'{"world": 4, "command": ', 422, None),
        (b"", 422, ["body"]),
        (b"null", 422, ["body"]),
    ],
)
def test_bodies_that_are_not_valid_json_text_get_a_4xx(
    api: Api, raw: bytes, status: int, field: list[Any] | None
) -> None:
    with api.client(api.admin_token) as admin:
        reply = admin.post("/jobs", content=raw, headers={"content-type": "application/json"})
        assert reply.status_code == status, reply.text
        if field is not None:
            assert field in _loc(reply)


def test_bad_query_and_path_values_get_a_4xx(api: Api) -> None:
    with api.client(api.admin_token) as admin:
        assert ["query", "limit"] in _loc(admin.get("/jobs", params={"limit": 0}))
        assert ["query", "limit"] in _loc(admin.get("/jobs", params={"limit": 10_000}))
        assert ["query", "state", 0] in _loc(admin.get("/jobs", params={"state": "sleeping"}))
        assert ["query", "before"] in _loc(admin.get("/jobs?before=%FF%FE"))
        assert ["query", "cursor"] in _loc(admin.get("/jobs/j-00000000/logs?cursor=x"))
        assert admin.get("/jobs/%FF%FE").status_code == 404
        assert admin.get("/jobs/" + "j" * 100).status_code == 422
        assert admin.post("/nodes/%ED%A0%80/drain").status_code == 404


def test_logs_follow_until_the_job_ends(api: Api) -> None:
    token = api.tenant("alice")
    service = api.service
    with api.client(token) as alice:
        job_id = alice.post("/jobs", json=JOB).json()["id"]
        logs = log_dir(service.checkpoint_root, job_id)
        logs.mkdir(parents=True)
        (logs / "worker-0.log").write_text("epoch 1\n")
        (logs / "worker-1.log").write_text("epoch 1 (w1)\n")
        first = alice.get(f"/jobs/{job_id}/logs").json()
        assert first["lines"] == ["[w0] epoch 1", "[w1] epoch 1 (w1)"]
        assert first["done"] is False and first["state"] == "pending"

        def later() -> None:
            time.sleep(0.5)
            with (logs / "worker-0.log").open("a") as handle:
                handle.write("epoch 2\nbye")
            job = service.store.get_job(job_id)
            started = service.store.record_change(
                transition(
                    job_id, job.state, JobState.STARTING, 1.0, "p", 1, Placement.of({"a": 4})
                )
            )
            service.store.record_change(
                transition(job_id, started.state, JobState.SUCCEEDED, 2.0, "exit 0", 2)
            )

        writer = threading.Thread(target=later)
        writer.start()
        began = time.monotonic()
        waited = alice.get(f"/jobs/{job_id}/logs", params={"cursor": first["cursor"], "wait": 20})
        assert time.monotonic() - began < 15
        writer.join()
        lines = waited.json()["lines"]
        cursor = waited.json()["cursor"]
        while True:
            rest = alice.get(f"/jobs/{job_id}/logs", params={"cursor": cursor, "wait": 5}).json()
            lines += rest["lines"]
            cursor = rest["cursor"]
            if rest["done"]:
                break
        assert lines == ["[w0] epoch 2", "[w0] bye"]
        assert rest["state"] == "succeeded"


def test_nodes_show_holdings_as_the_caller_may_see_them(api: Api) -> None:
    store = api.service.store
    store.upsert_node("n0", "gpu", 8, True, 1.0)
    alice_token, bob_token = api.tenant("alice"), api.tenant("bob")
    with api.client(alice_token) as alice, api.client(bob_token) as bob:
        mine = alice.post("/jobs", json=JOB).json()["id"]
        theirs = bob.post("/jobs", json=JOB).json()["id"]
        for job_id, count in ((mine, 3), (theirs, 2)):
            store.record_change(
                transition(
                    job_id,
                    JobState.PENDING,
                    JobState.STARTING,
                    1.0,
                    "p",
                    1,
                    Placement.of({"n0": count}),
                )
            )
        (node,) = alice.get("/nodes").json()
        assert node["free"] == 3 and node["devices"] == 8
        assert node["held"] == [
            {"job": mine, "tenant": "alice", "devices": 3},
            {"job": None, "tenant": None, "devices": 2},
        ]
    with api.client(api.admin_token) as admin:
        (node,) = admin.get("/nodes").json()
        assert {h["tenant"] for h in node["held"]} == {"alice", "bob"}
        drained = admin.post("/nodes/n0/drain")
        assert drained.status_code == 200 and drained.json()["drained"] is True
        assert admin.post("/nodes/n0/undrain").json()["drained"] is False
        assert admin.post("/nodes/nx/drain").status_code == 404


def test_me_and_new_tokens(api: Api) -> None:
    token = api.tenant("alice")
    with api.client(token) as alice:
        assert alice.get("/me").json()["name"] == "alice"
    with api.client(api.admin_token) as admin:
        issued = admin.post("/tenants/alice/tokens")
        assert issued.status_code == 201
        assert admin.post("/tenants/nobody/tokens").status_code == 404
        assert admin.get("/me").json()["admin"] is True
    with api.client(issued.json()["token"]) as again:
        assert again.get("/me").json()["name"] == "alice"


def test_a_wrong_method_is_a_405_naming_every_allowed_method(api: Api) -> None:
    with api.client(api.admin_token) as admin:
        for path, allowed in [
            ("/jobs", "GET, POST"),
            ("/jobs/j-00000000", "DELETE, GET"),
            ("/tenants", "GET, POST"),
            ("/nodes/n0/drain", "POST"),
        ]:
            reply = admin.request("PUT", path)
            assert reply.status_code == 405 and reply.headers["allow"] == allowed, path


def test_concurrent_clients_all_get_their_jobs(api: Api) -> None:
    tokens = [api.tenant(f"t{k}") for k in range(4)]
    created: list[list[str]] = [[] for _ in tokens]
    failures: list[str] = []

    def work(k: int) -> None:
        with api.client(tokens[k]) as client:
            for _ in range(15):
                reply = client.post("/jobs", json=JOB)
                if reply.status_code != 201:
                    failures.append(reply.text)
                    continue
                created[k].append(reply.json()["id"])
                if client.get("/jobs", params={"limit": 5}).status_code != 200:
                    failures.append("list")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(tokens))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    every = [i for ids in created for i in ids]
    assert len(every) == len(set(every)) == 60
    for k, token in enumerate(tokens):
        with api.client(token) as client:
            listed = client.get("/jobs", params={"limit": 100}).json()["jobs"]
        assert sorted(j["id"] for j in listed) == sorted(created[k])
