"""The HTTP API without Ray: FastAPI's TestClient over a real Redis (control plane and store)."""

from __future__ import annotations

import json
import socket

import pytest
from tracklens.pipeline.config import ServeConfig
from tracklens.pipeline.service.control import ControlPlane, StreamSpec, StreamStatus
from tracklens.pipeline.store import TrackRecord
from tracklens.pipeline.summary import AgeSummary, TrackSummary

fastapi = pytest.importorskip("fastapi")
from conftest import API_KEY  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture()
def api(api_app):
    """The app with a client that sends the key; at most 2 streams (one replica x 2)."""
    app, control, store, videos = api_app(max_streams=2)
    return TestClient(app, headers={"Authorization": f"Bearer {API_KEY}"}), control, store, videos


def _owner_publishes(control: ControlPlane, stream_id: str, **fields) -> None:
    """What an ingest replica does: claim the stream, publish its status under that claim."""
    spec = control.spec(stream_id)
    token = control.claim(stream_id, "ingest-a", lease_s=30)
    assert control.publish(StreamStatus(id=stream_id, generation=spec.generation, **fields), 30, token)


@pytest.fixture(scope="module")
def listening():
    """A TCP port that accepts connections (a stand-in camera for the reachability check)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def test_streams_are_added_listed_shown_and_deleted(api, listening):
    client, control, _, _ = api
    r = client.post("/v1/streams", json={"url": f"rtsp://admin:pw@127.0.0.1:{listening}/cam", "name": "door"})
    assert r.status_code == 201 and r.json()["id"] == "door"
    assert r.json()["url"] == f"rtsp://***@127.0.0.1:{listening}/cam" and r.json()["status"]["state"] == "pending"
    assert control.spec("door").url == f"rtsp://admin:pw@127.0.0.1:{listening}/cam"  # kept whole for the ingest
    generated = client.post("/v1/streams", json={"url": f"rtsp://127.0.0.1:{listening}/cam2"}).json()["id"]
    assert generated.startswith("s-")
    _owner_publishes(control, "door", state="live", fps=9.5, reconnects=2, last_error="the stream ended")
    listed = client.get("/v1/streams").json()
    assert [s["id"] for s in listed] == ["door", generated]
    assert listed[0]["status"]["state"] == "live" and listed[0]["status"]["reconnects"] == 2
    assert "admin" not in json.dumps(listed)
    assert client.get("/v1/streams/door").json()["status"]["fps"] == 9.5
    assert client.delete("/v1/streams/door").status_code == 204
    assert control.spec("door") is None and client.get("/v1/streams/door").status_code == 404


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"url": "ftp://cam/live"}, 422, "ftp:// is not allowed"),
        ({"url": "file:///etc/passwd"}, 422, "submit files as jobs"),
        ({"url": "rtsp://127.0.0.1:1/cam"}, 422, "cannot reach 127.0.0.1:1"),
        ({"url": "rtsp://127.0.0.1:1/cam", "name": "a:b"}, 422, "name:"),
        ({"url": "rtsp://127.0.0.1:1/cam", "color": "red"}, 422, "color"),
        ({"name": "x"}, 422, "url"),
        ({"url": "rtsp://127.0.0.1:1/cam", "options": {"fps": -2}}, 422, "options.fps"),
    ],
)
def test_bad_stream_requests_get_a_clear_json_error(api, body, status, needle):
    client, control, _, _ = api
    r = client.post("/v1/streams", json=body)
    assert r.status_code == status and needle in r.json()["error"], r.json()
    assert control.specs() == {}


def test_malformed_json_unknown_ids_and_taken_names(api, listening):
    client, _, _, _ = api
    r = client.post("/v1/streams", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    for path in ("/v1/streams/nope", "/v1/streams/nope/tracks", "/v1/tracks/nope:0:1", "/v1/jobs/nope", "/v1/streams/nope/events"):
        r = client.get(path)
        assert r.status_code == 404 and "nope" in r.json()["error"], path
    assert client.delete("/v1/streams/nope").status_code == 404
    url = f"rtsp://127.0.0.1:{listening}/cam"
    assert client.post("/v1/streams", json={"url": url, "name": "same"}).status_code == 201
    r = client.post("/v1/streams", json={"url": url, "name": "same"})
    assert r.status_code == 409 and "'same' exists" in r.json()["error"]


def test_past_the_ingest_capacity_new_streams_get_503_with_retry_after(api, listening):
    client, _, _, _ = api
    url = f"rtsp://127.0.0.1:{listening}/cam"
    for _ in range(2):  # one ingest replica x max_streams 2
        assert client.post("/v1/streams", json={"url": url}).status_code == 201
    r = client.post("/v1/streams", json={"url": url})
    assert r.status_code == 503 and r.headers["Retry-After"] == "10" and "capacity" in r.json()["error"]


def test_every_endpoint_but_healthz_needs_the_key(api):
    client, _, _, _ = api
    bare = TestClient(client.app)
    for method, path in (("get", "/v1/streams"), ("post", "/v1/streams"), ("get", "/v1/tracks/x:0:1"), ("get", "/metrics"),
                         ("post", "/v1/jobs"), ("delete", "/v1/streams/x")):  # fmt: skip
        r = getattr(bare, method)(path)
        assert r.status_code == 401 and "API key" in r.json()["error"], path
    assert bare.get("/v1/streams", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = bare.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "estimators": "specialist only"}


def _write_track(store, key: str, state: str, last_seen: float, version: int = 1) -> TrackSummary:
    stream = key.split(":")[0]
    summary = TrackSummary(track=key, stream=stream, first_seen=1.0, last_seen=last_seen, frames=10, state=state,
                           age=AgeSummary(mean=30.0, std=3.0, n=2), sources={"specialist": 2})  # fmt: skip
    store.put([TrackRecord(key, stream, version, summary, {}, ("start",) if state == "active" else ("start", "end"))])
    return summary


def test_tracks_by_stream_state_and_time_and_one_by_key(api):
    client, control, store, _ = api
    control.add(StreamSpec(id="cam", kind="stream", url="rtsp://127.0.0.1:1/x"))
    a = _write_track(store, "cam:0:1", "ended", last_seen=5.0)
    b = _write_track(store, "cam:0:2", "active", last_seen=9.0)
    assert client.get("/v1/streams/cam/tracks").json() == [a.model_dump(), b.model_dump()]
    assert [t["track"] for t in client.get("/v1/streams/cam/tracks?state=active").json()] == ["cam:0:2"]
    assert [t["track"] for t in client.get("/v1/streams/cam/tracks?since=6").json()] == ["cam:0:2"]
    assert client.get("/v1/streams/cam/tracks?state=gone").status_code == 422
    assert client.get("/v1/tracks/cam:0:1").json() == a.model_dump()


def test_events_are_served_as_server_sent_events(api):
    client, control, store, _ = api
    control.add(StreamSpec(id="cam", kind="stream", url="rtsp://127.0.0.1:1/x"))
    _write_track(store, "cam:0:1", "active", 2.0, version=1)
    _write_track(store, "cam:0:1", "ended", 3.0, version=2)
    with client.stream("GET", "/v1/streams/cam/events?since=0") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in response.iter_lines():
            lines.append(line)
            if len([x for x in lines if x.startswith("data:")]) == 3:
                break
    events = [json.loads(x[5:]) for x in lines if x.startswith("data:")]
    assert [(e["track"], e["event"]) for e in events] == [("cam:0:1", "start"), ("cam:0:1", "start"), ("cam:0:1", "end")]
    assert [x.split(": ")[1] for x in lines if x.startswith("event:")] == ["start", "start", "end"]


def test_jobs_are_admitted_only_inside_the_roots_and_show_their_progress(api, tmp_path):
    client, control, _, videos = api
    (videos / "a.mp4").write_bytes(b"x")
    (tmp_path / "outside.mp4").write_bytes(b"x")
    r = client.post("/v1/jobs", json={"path": str(tmp_path / "outside.mp4")})
    assert r.status_code == 422 and "outside the folders" in r.json()["error"]
    r = client.post("/v1/jobs", json={"path": str(videos / ".." / "outside.mp4")})
    assert r.status_code == 422
    job = client.post("/v1/jobs", json={"path": str(videos / "a.mp4")}).json()
    assert job["id"].startswith("j-") and job["state"] == "pending" and job["result"] is None
    _owner_publishes(control, job["id"], kind="job", state="running", frames_analysed=20, frames_expected=80, progress=0.25)
    assert client.get(f"/v1/jobs/{job['id']}").json()["progress"] == 0.25


def test_metrics_and_an_unreachable_store(api, redis_url):
    client, control, _, _ = api
    control.count({"routed:mllm": 3, "routed:specialist": 5})
    control.observe_latencies([0.4, 1.5, 7.0])
    text = client.get("/metrics").text
    assert 'tracklens_crops_routed_total{source="mllm"} 3.0' in text
    assert 'tracklens_estimate_latency_seconds_bucket{le="0.5"} 1.0' in text
    assert 'tracklens_estimate_latency_seconds_bucket{le="+Inf"} 3.0' in text
    from tracklens.pipeline.store import build_store
    from tracklens.serve.api import make_api

    config = ServeConfig.model_validate({"store": {"url": "redis://127.0.0.1:1/0"}})
    down = TestClient(make_api(config, ControlPlane("redis://127.0.0.1:1/0"), None, None, dict))
    r = down.get("/v1/streams")
    assert r.status_code == 503 and r.headers["Retry-After"] == "10" and "cannot reach Redis" in r.json()["error"]
    assert down.get("/healthz").status_code == 503
    assert build_store  # the store of a down Redis is never built: the API answers from the control plane first
