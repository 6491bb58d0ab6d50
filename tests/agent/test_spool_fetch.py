"""The agent's spool and its download of a job's files, against a real HTTP server on loopback
that answers as a collector does (``/v1/results``, ``/v1/blobs/SHA``)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgec.agent.api import Api
from edgec.agent.fetch import JobFailed, fetch_job
from edgec.agent.spool import Spool


class Collector:
    """A loopback HTTP server: stores posted results by uid, serves blobs (``served`` may differ
    from what their sha256 names, to play a corrupt copy)."""

    def __init__(self):
        self.results: dict[str, dict] = {}
        self.served: dict[str, bytes] = {}
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, body: bytes, kind="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                owner.requests.append("POST " + self.path)
                entry = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                duplicate = entry["uid"] in owner.results
                owner.results[entry["uid"]] = entry
                self._answer(201, json.dumps({"result_id": len(owner.results), "duplicate": duplicate}).encode())

            def do_GET(self):
                owner.requests.append("GET " + self.path)
                sha = self.path.rsplit("/", 1)[-1]
                if sha not in owner.served:
                    self._answer(404, b'{"detail": "no such blob"}')
                else:
                    self._answer(200, owner.served[sha], "application/octet-stream")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _closed_port_url() -> str:
    """A loopback address nothing listens on: the collector is away."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _entry(uid: str, job_id: int = 7) -> dict:
    return {"uid": uid, "job_id": job_id, "lease_id": "L", "device": "d", "instance": "i", "report": {"ok": True}}


def test_a_spooled_report_is_posted_once_and_then_removed(tmp_path):
    with Collector() as collector:
        spool = Spool(str(tmp_path / "spool"), Api(collector.url, "t", timeout=5), lambda: False, lambda s: None)
        spool.create()
        path = spool.write(_entry("a" * 32))
        assert json.loads(open(path).read())["uid"] == "a" * 32
        assert spool.deliver(path, _entry("a" * 32)) is True
    assert list(collector.results) == ["a" * 32] and collector.requests == ["POST /v1/results"]
    assert not list((tmp_path / "spool").iterdir())


def test_a_report_the_collector_missed_stays_in_the_spool_until_the_next_flush(tmp_path):
    away = Spool(str(tmp_path / "spool"), Api(_closed_port_url(), "t", timeout=2), lambda: True, lambda s: None)
    away.create()
    kept = away.write(_entry("b" * 32, job_id=8))
    assert away.deliver(kept, _entry("b" * 32, job_id=8)) is False  # stopping: kept for the next start
    assert away.flush() is False
    (tmp_path / "spool" / "broken.json").write_text("{not json")
    with Collector() as collector:
        back = Spool(str(tmp_path / "spool"), Api(collector.url, "t", timeout=5), lambda: False, lambda s: None)
        assert back.flush() is True
    assert collector.results["b" * 32]["job_id"] == 8
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["broken.json.bad"]


def test_fetch_verifies_each_file_and_refuses_bytes_that_do_not_match(tmp_path):
    good, bad = b"model bytes", b"other bytes"
    sha_good, sha_bad = hashlib.sha256(good).hexdigest(), hashlib.sha256(bad).hexdigest()
    with Collector() as collector:
        api = Api(collector.url, "t", timeout=5)
        collector.served = {sha_good: good, sha_bad: b"tampered"}
        job = {"files": {"model.tflite": sha_good}, "target": "model.tflite"}
        path = fetch_job(api, job, str(tmp_path / "ok"), lambda: False)
        assert open(path, "rb").read() == good
        job = {"files": {"model.tflite": sha_bad}, "target": "model.tflite"}
        (tmp_path / "corrupt").mkdir()
        with pytest.raises(JobFailed, match="refused to run model.tflite") as exc:
            fetch_job(api, job, str(tmp_path / "corrupt"), lambda: False)
        assert exc.value.retry is False and not (tmp_path / "corrupt" / "model.tflite").exists()
        assert collector.requests.count(f"GET /v1/blobs/{sha_bad}") == 2  # fetched once more before refusing
        with pytest.raises(JobFailed, match="does not accept") as exc:
            fetch_job(api, {"files": {"../escape": sha_good}, "target": "../escape"}, str(tmp_path / "x"),
                      lambda: False)
        assert exc.value.retry is False
        with pytest.raises(JobFailed, match="not among its files"):
            fetch_job(api, {"files": {"model.tflite": sha_good}, "target": "other.tflite"}, str(tmp_path / "y"),
                      lambda: False)


def test_a_download_the_network_interrupts_fails_the_job_for_a_retry_once_given_up(tmp_path):
    api = Api(_closed_port_url(), "t", timeout=2)
    sha = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(JobFailed, match="interrupted") as exc:
        fetch_job(api, {"files": {"m.tflite": sha}, "target": "m.tflite"}, str(tmp_path), lambda: True)
    assert exc.value.retry is True
