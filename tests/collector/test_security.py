"""The collector's guard: the token on every endpoint, the token file, body caps (413), bad
requests answered with a 4xx while the server keeps serving, and a schema-driven fuzz run
(schemathesis against the served OpenAPI document) that finds no 5xx."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys

import httpx
import pytest

from tests.helpers.cli import REPO
from tests.helpers.fleet import Server, upload_and_queue

PATH_VALUES = {"sha256": "0" * 64, "job_id": "1", "result_id": "1", "device": "d"}


def _operations(server) -> list[tuple[str, str]]:
    with server.client() as c:
        doc = c.get("/openapi.json").json()
    ops = []
    for path, methods in doc["paths"].items():
        for method in methods:
            ops.append((method.upper(), path.format(**PATH_VALUES)))
    return ops


def test_every_endpoint_needs_the_token(serve):
    server = serve()
    ops = _operations(server)
    assert len(ops) >= 14, ops
    wrong = [{}, {"Authorization": "Bearer " + "x" * 43}, {"Authorization": "Basic dXNlcjpwYXNz"},
             {"Authorization": "Bearer"}, {"Authorization": server.token},
             {"Authorization": "Bearer " + server.token[:-1]}]
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for method, path in ops + [("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/nope"),
                                   ("DELETE", "/v1/jobs/1")]:
            for headers in wrong:
                r = c.request(method, path, headers=headers, json={} if method in ("POST", "PUT") else None)
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert r.headers["www-authenticate"].startswith("Bearer")
        # the token opens them; the scheme name is case-insensitive
        assert c.get("/openapi.json", headers={"Authorization": "bearer " + server.token}).status_code == 200
        assert c.get("/nope", headers=server.auth).status_code == 404


def test_token_file_is_private_and_shown_once(tmp_path):
    first = Server(tmp_path / "s").start()
    try:
        assert stat.S_IMODE(first.token_file.stat().st_mode) == 0o600
        token = first.token
        assert len(token) >= 40 and f"): {token}" in first.first_output
    finally:
        first.stop()
    left = tmp_path / "s" / "blobs" / "tmp" / "0123.part"  # as a server killed mid-upload leaves it
    left.parent.mkdir(parents=True, exist_ok=True)  # created at start (0700)
    left.write_bytes(b"partial")
    second = Server(tmp_path / "s").start()
    try:
        assert second.token == token and token not in second.first_output
        assert f"token: in {second.token_file}" in second.first_output
        assert not left.exists()
    finally:
        second.stop()
    os.chmod(first.token_file, 0o644)
    proc = subprocess.run([sys.executable, "-m", "edgec", "serve", "--port", "0", "--db", str(tmp_path / "s" / "c.db")],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "accessible by group or others (mode 0644)" in proc.stderr
    assert "chmod 600" in proc.stderr and "Traceback" not in proc.stderr


def test_oversized_bodies_get_413_and_the_server_keeps_serving(serve, builds):
    server = serve("--max-body-mb", "0.01", "--max-upload-mb", "0.05")  # 10,485 and 52,428 bytes
    big_json = {"device": "d", "instance": "0" * 32, "schema_version": 1, "detected": {"pad": "x" * 20_000}}
    with server.client() as c:
        r = c.post("/v1/devices/register", json=big_json)
        assert r.status_code == 413 and "--max-body-mb" in r.json()["detail"]
        # without a Content-Length (chunked): counted as it arrives
        chunked = c.post("/v1/devices/register", content=iter([json.dumps(big_json).encode()[i:i + 4096]
                                                                for i in range(0, 20_100, 4096)]),
                         headers={"Content-Type": "application/json"})
        assert chunked.status_code == 413
        # uploads have their own, larger cap
        small = os.urandom(30_000)
        sha = hashlib.sha256(small).hexdigest()
        assert c.put(f"/v1/blobs/{sha}", content=small).status_code == 201
        large = os.urandom(60_000)
        sha = hashlib.sha256(large).hexdigest()
        r = c.put(f"/v1/blobs/{sha}", content=large)
        assert r.status_code == 413 and "--max-upload-mb" in r.json()["detail"]
        r = c.put(f"/v1/blobs/{sha}", content=iter([large[i:i + 8192] for i in range(0, len(large), 8192)]))
        assert r.status_code == 413
        assert c.head(f"/v1/blobs/{sha}").status_code == 404
        assert not list((server.dir / "blobs" / "tmp").glob("*"))  # no partial upload left behind
        assert c.get("/v1/health").status_code == 200


def test_bad_requests_get_a_clear_4xx(serve, builds):
    server = serve()
    with server.client() as c:
        checks = [
            (c.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}), 422, "JSON"),
            (c.post("/v1/jobs", json=[1, 2]), 422, "valid dictionary"),
            (c.post("/v1/devices/register", json={"device": "d", "instance": "0" * 32, "schema_version": 2}), 422,
             "report schema 2"),
            (c.post("/v1/devices/register", json={"device": "d", "instance": "0" * 32, "schema_version": 1,
                                                  "surprise": 1}), 422, "Extra inputs"),
            (c.put("/v1/blobs/" + "0" * 64, content=b"not those bytes"), 422, "has sha256"),
            (c.put("/v1/blobs/" + "0" * 64, content=b""), 422, "empty body"),
            (c.get("/v1/blobs/" + "0" * 64), 404, "no file"),
            (c.get("/v1/blobs/..%2F..%2Fetc%2Fpasswd"), 404, "Not Found"),
            (c.get("/v1/blobs/" + "0" * 63 + "%00"), 422, "pattern"),
            (c.get("/v1/blobs/../../etc/passwd"), 404, "Not Found"),
            (c.get(f"/v1/jobs/{2**63}"), 422, "less than or equal"),
            (c.get("/v1/jobs/1"), 404, "no job 1"),
            (c.get("/v1/jobs", params={"state": "sleeping"}), 422, "queued"),
            (c.post("/v1/devices/nobody/lease", json={"instance": "0" * 32}), 404, "not registered"),
            (c.post("/v1/devices/a%2Fb/lease", json={"instance": "0" * 32}), 404, "Not Found"),
            (c.post("/v1/devices/-rf/lease", json={"instance": "0" * 32}), 422, "pattern"),
            (c.post("/v1/jobs/1/cancel"), 404, "no job 1"),
            (c.delete("/v1/jobs/1"), 405, "Method Not Allowed"),
        ]
        for response, status, text in checks:
            assert response.status_code == status and text in response.text, (response.request.url, response.text)
        assert c.get("/v1/health").status_code == 200
    assert "Traceback" not in server.log.read_text()


@pytest.mark.slow
def test_schema_driven_fuzz_finds_no_server_error(serve, builds, capsys):
    """schemathesis generates valid and invalid requests for every operation of the served OpenAPI
    document; no answer may be a 5xx, and every answer must be one the document declares."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        response_schema_conformance,
        status_code_conformance,
    )

    server = serve("--max-poll-seconds", "0.2")
    with server.client() as c:  # something to find: a device, a job, a file
        upload_and_queue(c, builds["int8"])
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", headers=server.auth)
    calls: list[tuple[str, int]] = []
    examples = int(os.environ.get("EDGEC_FUZZ_EXAMPLES", "12"))
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 14
    with httpx.Client(timeout=30) as session:
        for operation in operations:
            for mode in modes:
                @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case):
                    response = case.call(base_url=server.url, headers=server.auth)
                    calls.append((case.operation.label, response.status_code))
                    case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                             response_schema_conformance])

                run()
        assert session.get(server.url + "/v1/health", headers=server.auth).status_code == 200
    assert not [c for c in calls if c[1] >= 500]
    assert "Traceback" not in server.log.read_text()
    statuses = sorted({code for _, code in calls})
    with capsys.disabled():
        print(f"\n[fuzz] {len(calls)} requests over {len(operations)} operations (positive and negative "
              f"examples): statuses {statuses}, no 5xx")


HOSTILE = [float("nan"), float("inf"), float("-inf"), "\ud800", "x\udfff", 2**64, -(2**63) - 1, 10**400]


def _paths(value, prefix=()):
    """Every place in a JSON value (the value itself, each member and item, recursively)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


def _put(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _put(value[head], rest, new)}
    return [*value[:head], _put(value[head], rest, new), *value[head + 1:]]


def test_hostile_values_fuzz_finds_no_server_error(serve, builds, capsys):
    """Every operation of the served OpenAPI document, with schemathesis' valid requests made hostile:
    one value of the body (or one key) replaced by NaN, an infinity, an unpaired surrogate or an
    integer past 64 bits, and the same in a query or path parameter. No answer may be a 5xx and
    the connection keeps serving."""
    schemathesis = pytest.importorskip("schemathesis")
    import urllib.parse

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    server = serve("--max-poll-seconds", "0.2")
    with server.client() as c:
        upload_and_queue(c, builds["int8"])
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", headers=server.auth)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 19
    examples = int(os.environ.get("EDGEC_FUZZ_EXAMPLES", "12"))
    calls: list[tuple[str, int, str]] = []

    def quote(value) -> str:
        text = value if isinstance(value, str) else json.dumps(value, allow_nan=True)
        return urllib.parse.quote(text, safe="", errors="surrogatepass")

    with httpx.Client(timeout=30, headers=server.auth) as session:
        for operation in operations:
            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE), data=st.data())
            def run(case, data):
                body = case.body if isinstance(case.body, dict | list) else None
                query = dict(case.query or {})
                path_params = dict(case.path_parameters or {})
                hostile = data.draw(st.sampled_from(HOSTILE))
                where = data.draw(st.sampled_from(["body", "key", "query", "path"]))
                if where in ("body", "key") and body is not None:
                    places = list(_paths(body))
                    place = data.draw(st.sampled_from(places))
                    if where == "key":
                        parent = place if isinstance(_get(body, place), dict) else ()
                        body = _put(body, parent, {**(_get(body, parent) or {}), "\ud800k": hostile}) \
                            if isinstance(_get(body, parent), dict) else body
                    else:
                        body = _put(body, place, hostile)
                elif where == "query" and query:
                    query[data.draw(st.sampled_from(sorted(query)))] = hostile
                elif path_params:
                    path_params[data.draw(st.sampled_from(sorted(path_params)))] = hostile
                op = case.operation
                path = op.path
                for name, value in path_params.items():
                    path = path.replace("{" + name + "}", quote(value))
                url = server.url + path
                if query:
                    url += "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items())
                content = json.dumps(body, allow_nan=True).encode() if body is not None else None
                response = session.request(op.method.upper(), url, content=content,
                                           headers={"Content-Type": "application/json"} if content else {})
                calls.append((op.label, response.status_code, where))
                assert response.status_code < 500, (op.label, where, hostile, response.text[:300])

            run()
        assert session.get(server.url + "/v1/health").status_code == 200
    assert {label for label, _, _ in calls} == {op.label for op in operations}
    assert "Traceback" not in server.log.read_text()
    statuses = sorted({code for _, code, _ in calls})
    with capsys.disabled():
        print(f"\n[fuzz, hostile values] {len(calls)} requests over {len(operations)} operations (NaN, infinities, "
              f"unpaired surrogates, integers past 64 bits in bodies, keys, queries, paths): statuses {statuses}, "
              "no 5xx")


def _get(value, path):
    for part in path:
        value = value[part]
    return value
