"""Hostile requests against the HTTP API (FastAPI's TestClient over a real redis-server): each
was once accepted, echoed or answered with a 500; each now gets one short JSON error."""

from __future__ import annotations

import json
import os
import uuid

import pytest

fastapi = pytest.importorskip("fastapi")
from conftest import API_KEY  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture()
def api(api_app):
    app, control, _, videos = api_app()
    return TestClient(app, headers={"Authorization": f"Bearer {API_KEY}"}), TestClient(app), control, videos


@pytest.fixture(scope="module")
def redis_port(redis_url) -> int:
    return int(redis_url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture(scope="module")
def camera_port():
    """A TCP port that accepts connections: a stand-in camera for the reachability check."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def _short_error(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert len(response.content) < 400 and "\r" not in error and "\n" not in error, error
    return error


def test_a_url_with_crlf_aimed_at_the_service_s_redis_is_refused_before_any_connection(api, redis_port, redis_url):
    """Regression: ``rtsp://127.0.0.1:<redis>/a\\r\\nSET k v\\r\\nX: y`` was accepted (201), and the
    RTSP client then sent its request lines to Redis, which ran ``SET k v``."""
    import redis

    client, _, control, _ = api
    key = f"injected-{uuid.uuid4().hex[:8]}"
    for url in (f"rtsp://127.0.0.1:{redis_port}/a\r\nSET {key} v\r\nX: y",
                f"rtsp://127.0.0.1:{redis_port}/a\nSET {key} v",
                f"rtsp://127.0.0.1:{redis_port}/a%0d%0aSET%20{key}%20v",
                f"rtsp://u\r\nSET {key} v\r\n:p@127.0.0.1:{redis_port}/a"):  # fmt: skip
        for check in (True, False):
            r = client.post("/v1/streams", json={"url": url, "options": {"check": check}})
            assert "control character" in _short_error(r, 422)
    assert control.specs() == {}
    assert redis.Redis.from_url(redis_url).exists(key) == 0


def test_schemes_are_compared_in_any_case_and_stored_in_lower_case(api, camera_port):
    """Regression: ``RTSP://`` was admitted as given, and then failed forever with "Protocol
    not found" while holding an ingest slot."""
    client, _, control, _ = api
    r = client.post("/v1/streams", json={"url": f"RTSP://127.0.0.1:{camera_port}/Cam", "name": "upper"})
    assert r.status_code == 201, r.text
    assert control.spec("upper").url == f"rtsp://127.0.0.1:{camera_port}/Cam"
    for url, needle in ((f"rtsp://127.0.0.1:{camera_port}0000/cam", "not a number in 1-65535"), ("rtsp://127.0.0.1:0/cam", "port 0"),
                        ("rtsp://bad host/cam", "whitespace"), ("FTP://127.0.0.1/cam", "ftp:// is not allowed")):  # fmt: skip
        assert needle in _short_error(client.post("/v1/streams", json={"url": url, "options": {"check": False}}), 422)


def test_bodies_over_the_limit_are_refused_unread_and_errors_never_echo_the_input(api):
    """Regression: a 20 MB JSON body was read whole (also without the key), echoed back in
    the error, and with ``check: false`` stored, so every listing returned 20 MB."""
    client, bare, control, _ = api
    huge = json.dumps({"url": "rtsp://127.0.0.1:1/" + "a" * 200_000, "options": {"check": False}})
    for who in (client, bare):
        r = who.post("/v1/streams", content=huge, headers={"content-type": "application/json"})
        assert _short_error(r, 413 if who is client else 401)
    chunks = (b"x" * 16_384 for _ in range(100))  # no Content-Length: refused once it passes the limit
    r = client.post("/v1/streams", content=chunks, headers={"content-type": "application/json"})
    assert "larger than 65536 bytes" in _short_error(r, 413)
    long_url = "rtsp://127.0.0.1:1/" + "a" * 5000  # fits the body, not the URL limit
    r = client.post("/v1/streams", json={"url": long_url, "options": {"check": False}})
    assert "at most 2048" in _short_error(r, 422)
    r = client.post("/v1/streams", json={"url": "rtsp://127.0.0.1:1/a", "name": "n" * 5000, "options": {"check": False}})
    assert "name" in _short_error(r, 422)
    r = client.post("/v1/streams", json={"url": "rtsp://127.0.0.1:1/a", "x" * 5000: 1})
    _short_error(r, 422)
    assert control.specs() == {}


def test_the_key_is_checked_before_the_body_and_guards_the_api_docs(api):
    """Regression: ``/docs``, ``/redoc`` and ``/openapi.json`` answered without the key, and
    malformed JSON without a key got 422 (parsed before the key was checked)."""
    client, bare, _, _ = api
    r = bare.post("/v1/streams", content=b"{not json", headers={"content-type": "application/json"})
    assert "API key" in _short_error(r, 401) and r.headers["www-authenticate"] == "Bearer"
    for path in ("/docs", "/redoc", "/openapi.json", "/no/such/route"):
        assert "API key" in _short_error(bare.get(path), 401), path
        assert client.get(path).status_code == (404 if path == "/no/such/route" else 200), path
    assert bare.get("/healthz").status_code == 200


def test_credentials_in_the_query_string_are_never_shown(api, camera_port):
    """Regression: only the user-info part was redacted; ``?password=...`` was echoed in errors
    and listings."""
    client, _, control, _ = api
    r = client.post("/v1/streams", json={"url": f"rtsp://127.0.0.1:{camera_port}/cam?password=hunter2&channel=1", "name": "q"})
    assert r.status_code == 201 and "hunter2" not in r.text and "password=***" in r.json()["url"]
    assert "hunter2" not in client.get("/v1/streams").text
    assert "hunter2" in control.spec("q").url  # kept for the ingest
    r = client.post("/v1/streams", json={"url": "rtsp://127.0.0.1:1/cam?token=hunter2"})
    assert "hunter2" not in _short_error(r, 422)
    r = client.post("/v1/streams", json={"url": f"rtsp://admin:hunter2#x@127.0.0.1:{camera_port}/cam"})
    assert "hunter2" not in _short_error(r, 422)


def test_a_stream_aimed_at_the_service_s_own_redis_or_api_is_refused(api, redis_port):
    """Regression: a well-formed URL aimed at the service's own Redis was admitted, and its
    worker then sent RTSP or HTTP request lines there (refused only for want of the password)."""
    client, _, control, _ = api
    for url in (f"rtsp://127.0.0.1:{redis_port}/cam", f"http://localhost:{redis_port}/x", "http://127.0.0.1:8000/v1/streams"):
        assert "own endpoints" in _short_error(client.post("/v1/streams", json={"url": url, "options": {"check": False}}), 422)
    assert control.specs() == {}


def test_job_paths_with_control_characters_or_loops_get_422(api):
    """Regression: a NUL byte in a job path gave a bare 500."""
    client, _, _, videos = api
    os.symlink(videos / "loop-b", videos / "loop-a")
    os.symlink(videos / "loop-a", videos / "loop-b")
    for path, needle in ((f"{videos}/a\x00.mp4", "control character"), (f"file://{videos}/a%00.mp4", "control character"),
                         (f"{videos}/loop-a", "cannot be resolved"), (f"{videos}/{'x' * 300}.mp4", "cannot be resolved"),
                         ("/" + "a" * 5000, "at most 4096")):  # fmt: skip
        r = client.post("/v1/jobs", json={"path": path})
        assert needle in _short_error(r, 422), path


def test_bad_event_ids_get_422_instead_of_a_cut_stream(api, camera_port):
    """Regression: ``since=abc`` or ``-1`` started a 200 event stream that Redis then cut."""
    client, _, control, _ = api
    client.post("/v1/streams", json={"url": f"rtsp://127.0.0.1:{camera_port}/cam", "name": "ev"})
    for since in ("abc", "-1", "1-2-3", "9" * 30, "0\r\n"):
        assert "not an event id" in _short_error(client.get("/v1/streams/ev/events", params={"since": since}), 422), since
    r = client.get("/v1/streams/ev/events", headers={"Last-Event-ID": "nope"})
    assert "Last-Event-ID" in _short_error(r, 422)


def test_jobs_are_listed_and_cancelled(api):
    client, _, control, videos = api
    (videos / "a.mp4").write_bytes(b"x")
    first = client.post("/v1/jobs", json={"path": str(videos / "a.mp4"), "name": "one"}).json()
    client.post("/v1/jobs", json={"path": str(videos / "a.mp4"), "name": "two"})
    assert [j["id"] for j in client.get("/v1/jobs").json()] == ["one", "two"]
    r = client.delete("/v1/jobs/one")
    assert r.status_code == 202 and r.json()["id"] == first["id"]
    assert control.spec("one") is None and control.job("one") is not None  # asked to stop, still on record
    assert "already ended" in _short_error(client.delete("/v1/jobs/one"), 409)
    assert "no job" in _short_error(client.delete("/v1/jobs/nope"), 404)
    r = client.post("/v1/jobs", json={"path": str(videos / "a.mp4"), "name": "one"})
    assert "exists" in _short_error(r, 409)  # a job's name stays taken while it is on record
    # Regression: a job cancelled before any ingest replica claimed it stayed "pending" forever
    # (no result, no expiry, its name taken for good). Nobody runs this one: it ends at once.
    job = client.get("/v1/jobs/one").json()
    assert job["state"] == "cancelled" and job["result"]["state"] == "cancelled"
    assert 0 < control.client.pttl(f"{control.prefix}:ctl:job:one") <= 7 * 24 * 3600 * 1000
    assert "already ended (cancelled)" in _short_error(client.delete("/v1/jobs/one"), 409)
    for path in (f"file://127.0.0.2{videos}/a.mp4", f"file://cam{videos}/a.mp4"):
        assert "names no host" in _short_error(client.post("/v1/jobs", json={"path": path}), 422)
