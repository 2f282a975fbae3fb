"""The console's side of the API without Ray (FastAPI's TestClient over a real redis-server):
the static files and their Content-Security-Policy, the settings, demographics per bucket, live
previews, track histories and a job's tracks.jsonl."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from tracklens.pipeline.service.control import StreamSpec
from tracklens.pipeline.store import TrackRecord
from tracklens.pipeline.summary import AgeSummary, EstimatePoint, GenderSummary, TrackSummary

fastapi = pytest.importorskip("fastapi")
from conftest import API_KEY  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

STATIC = Path(__file__).resolve().parents[1] / "serve" / "static"
DAY = 1_795_478_400  # a UTC midnight


@pytest.fixture()
def api(api_app):
    app, control, store, videos = api_app()
    return TestClient(app, headers={"Authorization": f"Bearer {API_KEY}"}), TestClient(app), control, store, videos


def _track(store, key: str, first_seen: float, state: str = "ended", gender: str | None = "female", age: float | None = 25.0,
           version: int = 1, estimates=()) -> TrackSummary:  # fmt: skip
    stream = key.split(":")[0]
    summary = TrackSummary(track=key, stream=stream, first_seen=first_seen, last_seen=first_seen + 3, frames=9, state=state,
                           age=AgeSummary(mean=age, n=2), gender=GenderSummary(label=gender, p_female=0.9 if gender else 0.5, n=2),
                           sources={"specialist": 2})  # fmt: skip
    store.put([TrackRecord(key, stream, version, summary, {}, ("start",), estimates=tuple(estimates))])
    return summary


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_the_console_is_served_without_the_key_under_a_strict_csp_and_its_data_needs_the_key(api):
    client, bare, *_ = api
    page = bare.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp and page.headers["x-content-type-options"] == "nosniff"
    markup = _Markup()
    markup.feed(page.text)
    # nothing inline: every script comes from a file of the console, no style element or attribute, no handler attribute
    assert [t for t, _ in markup.tags if t == "style"] == []
    assert all(a.get("src", "").startswith("/ui/") for t, a in markup.tags if t == "script")
    assert not [(t, k) for t, a in markup.tags for k in a if k == "style" or k.startswith("on")]
    referenced = {a.get("src") or a.get("href") for t, a in markup.tags if t in ("script", "link")}
    for path in referenced:
        r = bare.get(path)
        assert r.status_code == 200 and r.headers["content-security-policy"] == csp, path
    modules = {f"/ui/{m}" for f in STATIC.glob("*.js") for m in re.findall(r'from "\./([\w-]+\.js)"', f.read_text())}
    assert modules and all(bare.get(m).status_code == 200 for m in modules)
    assert bare.get("/ui/nothing.js").status_code == 401 and client.get("/ui/nothing.js").status_code == 404
    assert bare.get("/ui/..%2Fapi.py").status_code == 401 and client.get("/ui/..%2Fapi.py").status_code == 404
    for path in ("/v1/console", "/v1/streams/x/stats", "/v1/streams/x/preview.jpg", "/v1/tracks/x:0:1/estimates", "/v1/jobs/x/tracks.jsonl"):
        r = bare.get(path)
        assert r.status_code == 401 and "API key" in r.json()["error"], path
    assert client.get("/v1/console").json() == {"previews": True, "preview_fps": 2.0, "face_crops": False,
                                                "buckets": ["15m", "1h", "1d"], "file_roots": [str(api[4])],
                                                "schemes": ["rtsp", "rtsps", "rtmp", "http", "https"]}  # fmt: skip


def test_the_console_s_scripts_insert_values_as_text_only():
    """Markup from the API must never be parsed: no innerHTML and friends, no eval, no inline
    handlers in the scripts; links are built by one helper that only makes console routes."""
    scripts = {f.name: f.read_text() for f in STATIC.glob("*.js")}
    assert {"app.js", "api.js", "dom.js"} <= set(scripts)
    for name, text in scripts.items():
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "localStorage",
                       "setAttribute(\"on"):  # fmt: skip
            assert banned not in text, (name, banned)
    assert "sessionStorage" in scripts["api.js"] and "Authorization" in scripts["api.js"]


def test_demographics_are_counted_per_bucket_with_unknown_labels(api):
    client, _, control, store, _ = api
    control.add(StreamSpec(id="cam", kind="stream", url="rtsp://127.0.0.1:1/x"))
    _track(store, "cam:0:1", DAY + 60)
    _track(store, "cam:0:2", DAY + 1000, gender="male", age=64.0)
    _track(store, "cam:0:3", DAY + 3700, gender=None, age=None, state="active")
    stats = client.get("/v1/streams/cam/stats", params={"bucket": "15m", "from": DAY, "to": DAY + 4500}).json()
    assert stats["bucket_s"] == 900 and [b["start"] for b in stats["buckets"]] == [DAY + 900 * i for i in range(5)]
    assert [b["people"] for b in stats["buckets"]] == [1, 1, 0, 0, 1]
    assert stats["buckets"][1]["age"]["60+"] == 1 and stats["buckets"][1]["gender"]["male"] == 1
    assert stats["buckets"][4]["gender"]["unknown"] == 1 and stats["buckets"][4]["age"]["unknown"] == 1
    assert stats["total"]["people"] == 3 and stats["total"]["gender"] == {"female": 1, "male": 1, "unknown": 1}
    hourly = client.get("/v1/streams/cam/stats", params={"bucket": "1h", "from": DAY + 1800, "to": DAY + 7200}).json()
    assert [(b["start"], b["people"]) for b in hourly["buckets"]] == [(DAY, 2), (DAY + 3600, 1)]
    daily = client.get("/v1/streams/cam/stats", params={"bucket": "1d", "from": DAY, "to": DAY + 1}).json()
    assert daily["total"]["people"] == 3
    recent = client.get("/v1/streams/cam/stats").json()  # default: the 12 buckets before now
    assert recent["bucket"] == "1h" and len(recent["buckets"]) in (12, 13) and recent["total"]["people"] == 0


@pytest.mark.parametrize(
    "params, status, needle",
    [({"bucket": "5m"}, 422, "bucket"), ({"from": "nan"}, 422, "seconds since 1970"), ({"to": "inf"}, 422, "to:"),
     ({"from": 100, "to": 100}, 422, "before"), ({"bucket": "15m", "from": 0, "to": 1e9}, 422, "at most 2000"),
     ({"from": "yesterday"}, 422, "from"),
     # ranges whose buckets would not fit in memory (or in a C integer) are refused before any is made
     ({"bucket": "15m", "from": 0, "to": 9e9}, 422, "at most 2000"), ({"from": -1e300, "to": 1e300}, 422, "from:")],
)  # fmt: skip
def test_bad_demographics_requests_get_one_line_errors(api, params, status, needle):
    client, _, control, _, _ = api
    control.add(StreamSpec(id="cam", kind="stream", url="rtsp://127.0.0.1:1/x"))
    r = client.get("/v1/streams/cam/stats", params=params)
    assert r.status_code == status and needle in r.json()["error"] and len(r.content) < 300, r.text


def test_demographics_of_an_unknown_or_malformed_stream_are_404(api):
    client, *_ = api
    for stream in ("nope", "a:b", "x" * 100):
        r = client.get(f"/v1/streams/{stream}/stats")
        assert r.status_code == 404 and "no stream" in r.json()["error"] and len(r.content) < 200, stream


def test_a_preview_is_served_only_once_an_owner_rendered_it_while_watched(api):
    client, _, control, _, _ = api
    spec = control.add(StreamSpec(id="cam", kind="stream", url="rtsp://127.0.0.1:1/x"))
    assert not control.watched("cam")
    r = client.get("/v1/streams/cam/preview.jpg")
    assert r.status_code == 503 and r.headers["Retry-After"] == "1" and "no preview of stream 'cam' yet" in r.json()["error"]
    assert control.watched("cam")  # asking marked it watched: its owner renders previews now
    token = control.claim("cam", "ingest-a", lease_s=30)
    jpeg = b"\xff\xd8\xff\xe0 a jpeg"
    assert control.save_preview("cam", jpeg, 5.0, token)
    r = client.get("/v1/streams/cam/preview.jpg")
    assert r.status_code == 200 and r.content == jpeg and r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"] == "no-store"
    ttl = control.client.pttl(f"{control.prefix}:ctl:preview:cam")
    assert 0 < ttl <= 5000  # kept only as long as a viewer needs it
    assert not control.save_preview("cam", b"stale", 5.0, token - 1)  # a stale owner cannot write one
    assert client.get("/v1/streams/nope/preview.jpg").status_code == 404
    control.forget("cam", token)
    assert control.client.get(f"{control.prefix}:ctl:preview:cam") is None
    assert spec.generation


def test_previews_switched_off_are_refused_with_a_clear_message_and_nothing_is_marked(api_app):
    app, control, _, _ = api_app(previews=False)
    client = TestClient(app, headers={"Authorization": f"Bearer {API_KEY}"})
    control.add(StreamSpec(id="cam", kind="stream", url="rtsp://127.0.0.1:1/x"))
    r = client.get("/v1/streams/cam/preview.jpg")
    assert r.status_code == 404 and "previews are switched off" in r.json()["error"] and "ingest.previews" in r.json()["error"]
    assert not control.watched("cam") and client.get("/v1/console").json()["previews"] is False


def test_a_track_s_estimates_are_listed_oldest_first(api):
    client, _, _, store, _ = api
    points = [EstimatePoint(time=DAY + i, source=s, model=f"{s}-model", age=30.0 + i, p_female=0.7) for i, s in
              enumerate(("specialist", "mllm", "specialist"))]  # fmt: skip
    _track(store, "cam:0:1", DAY, state="active", estimates=points[:2])
    _track(store, "cam:0:1", DAY, state="active", version=2, estimates=points[2:])
    listed = client.get("/v1/tracks/cam:0:1/estimates").json()
    assert [(p["source"], p["age"], p["model"]) for p in listed] == [("specialist", 30.0, "specialist-model"),
                                                                     ("mllm", 31.0, "mllm-model"), ("specialist", 32.0, "specialist-model")]  # fmt: skip
    r = client.get("/v1/tracks/cam:0:9/estimates")
    assert r.status_code == 404 and "no track" in r.json()["error"]
    # a key that is not STREAM:EPOCH:ID (here: the estimates list's own Redis key) names no track
    for path in ("/v1/tracks/cam:0:1:estimates", "/v1/tracks/cam:0:1:estimates/estimates", "/v1/tracks/*/estimates"):
        r = client.get(path)
        assert r.status_code == 404 and "STREAM:EPOCH:ID" in r.json()["error"], (path, r.text)


def test_newest_and_active_tracks_of_a_stream(api):
    client, _, control, store, _ = api
    control.add(StreamSpec(id="cam", kind="stream", url="rtsp://127.0.0.1:1/x"))
    for i in range(1, 7):
        _track(store, f"cam:0:{i}", DAY + i, state="active" if i in (2, 5) else "ended")
    assert [t["track"] for t in client.get("/v1/streams/cam/tracks", params={"limit": 3}).json()] == ["cam:0:4", "cam:0:5", "cam:0:6"]
    assert [t["track"] for t in client.get("/v1/streams/cam/tracks", params={"state": "active"}).json()] == ["cam:0:2", "cam:0:5"]
    assert [t["track"] for t in client.get("/v1/streams/cam/tracks", params={"state": "ended", "limit": 2}).json()] == ["cam:0:4", "cam:0:6"]
    assert client.get("/v1/streams/cam/tracks", params={"limit": 0}).status_code == 422


def test_a_job_s_tracks_download_as_jsonl(api):
    client, _, control, store, videos = api
    (videos / "a.mp4").write_bytes(b"x")
    job = client.post("/v1/jobs", json={"path": str(videos / "a.mp4"), "name": "lobby"}).json()
    ended = [_track(store, f"lobby:0:{i}", float(i)) for i in (1, 2)]
    _track(store, "lobby:0:3", 3.0, state="active")
    r = client.get(f"/v1/jobs/{job['id']}/tracks.jsonl")
    assert r.status_code == 200 and r.headers["content-disposition"] == 'attachment; filename="lobby-tracks.jsonl"'
    assert [TrackSummary.model_validate(json.loads(line)) for line in r.text.splitlines()] == ended
    r = client.get("/v1/jobs/nope/tracks.jsonl")
    assert r.status_code == 404 and "no job" in r.json()["error"]
