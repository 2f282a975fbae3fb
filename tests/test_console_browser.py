"""The web console in a real browser: headless Chromium (Debian's ``chromium`` package, no
browser download) driven by Playwright, against the real service (Ray Serve, one instance for
the module), a real RTSP camera and a real redis-server, as a new user would use it: the key
first, then a stream added through the form, live, its people with labels, its live preview
with boxes drawn, its demographics, a job, and the stream deleted. Every wait is bounded and
says what it waited for; nothing asserts wall time. Screenshots of each page land in
``out/console-screenshots/`` (or ``$TRACKLENS_SCREENSHOTS``)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import RedisServer, RtspCamera
from previews import annotation_pixels, decode_jpeg, grab_frame

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
if CHROMIUM is None:
    pytest.skip("the browser tests need Debian's chromium (apt-get install chromium; make system installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (the [test] extra)")
ray = pytest.importorskip("ray")

KEY = "console-test-key"
INJECTION = "<img src=x onerror=alert(1)>"
SHOTS = Path(os.environ.get("TRACKLENS_SCREENSHOTS", Path(__file__).resolve().parents[1] / "out" / "console-screenshots"))
WAIT_MS = 90_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _poll(what: str, predicate, timeout_s: float = 90.0, step_s: float = 0.25, page=None):
    """``predicate()`` until truthy (returned), at most ``timeout_s``; fails saying ``what``.
    With ``page`` the pauses are the page's own (Playwright's sync API handles a page's events,
    e.g. routed requests, only while one of its calls runs)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        if page is None:
            time.sleep(step_s)
        else:
            page.wait_for_timeout(step_s * 1000)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")


@pytest.fixture(scope="module")
def service(tmp_path_factory, models):
    """The service as ``tracklens serve`` runs it (one ingest replica, the specialist, an API
    key), its own redis-server and a 640x360 camera with one person."""
    import ray.serve
    from ray.serve.config import HTTPOptions
    from ray.serve.schema import LoggingConfig
    from tracklens.pipeline.config import ServeConfig
    from tracklens.pipeline.sample import make_sample_video
    from tracklens.serve.app import build_app, local_resources

    work = tmp_path_factory.mktemp("console")
    (work / "redis-data").mkdir()
    redis_server = RedisServer(work / "redis-data").start()
    camera = RtspCamera(work / "cam").start()
    videos = work / "videos"
    videos.mkdir()
    make_sample_video(videos / "walk.mp4", seconds=2.0, width=640, height=360, person_px=150)
    (work / "key").write_text(KEY + "\n")
    port = _free_port()
    config = ServeConfig.model_validate(
        {"store": {"url": redis_server.url, "prefix": "con"},
         "ingest": {"replicas": 1, "max_streams": 4, "lease_s": 3.0, "renew_s": 0.5, "status_s": 0.5, "end_grace_s": 5.0,
                    "num_cpus": 0.25, "preview_fps": 4.0},
         "api": {"port": port, "api_key_file": str(work / "key"), "file_roots": [str(videos)]}}
    )  # fmt: skip
    # a Ray of its own (never one `ray start` left on the machine), offering the node roles
    ray.init(address="local", include_dashboard=False, num_cpus=4, resources=local_resources(config), logging_level="WARNING",
             log_to_driver=False)  # fmt: skip
    try:
        quiet = LoggingConfig(log_level="WARNING", enable_access_log=False)
        ray.serve.start(http_options=HTTPOptions(host="127.0.0.1", port=port), logging_config=quiet)
        ray.serve.run(build_app(config), name="tracklens", route_prefix="/", logging_config=quiet)
        base = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        yield {"base": base, "client": client, "camera": camera, "videos": videos, "config": config}
        client.close()
        ray.serve.shutdown()
    finally:
        ray.shutdown()
        camera.stop()
        redis_server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


class Tab:
    """One browser tab (its own context: its own sessionStorage) that records what it sent,
    every dialog (an ``alert`` from injected markup would be one) and every console error (a
    Content-Security-Policy violation is one)."""

    def __init__(self, browser, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 860})
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.base = base
        self.requests: list[tuple[str, str | None]] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append((r.url, r.headers.get("authorization"))))
        self.page.on("dialog", self._dialog)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.accept() if dialog.type == "confirm" else dialog.dismiss()

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.base}/{route}")

    def go(self, route: str) -> None:
        self.page.evaluate("(hash) => { location.hash = hash; }", route)

    def log_in(self, key: str = KEY) -> None:
        self.open()
        self.page.fill("#key-input", key)
        self.page.click("#key-form button[type=submit]")
        self.page.wait_for_selector("#add-stream")

    def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture()
def tab(browser, service):
    t = Tab(browser, service["base"])
    yield t
    t.close()
    csp = [e for e in t.errors if "Content Security Policy" in e]
    assert not csp, f"the console broke its own Content-Security-Policy: {csp}"


def _text(page, selector: str) -> str:
    return page.locator(selector).first.text_content() or ""


def test_a_new_user_adds_a_stream_watches_it_live_with_boxes_sees_its_people_and_deletes_it(tab, service):
    client, camera, page = service["client"], service["camera"], tab.page
    tab.open()
    page.wait_for_selector("#key-form")
    assert page.locator("#add-stream").count() == 0  # nothing but the key prompt without the key
    tab.shot("01-key")
    page.fill("#key-input", "not-the-key")
    page.click("#key-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#key-error').textContent.includes('refused')")
    assert "API key" in _text(page, "#key-error")  # the API's own 401 message
    page.fill("#key-input", KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#add-stream")

    page.fill("#stream-url", camera.url())
    page.fill("#stream-name", "door")
    page.click("#add-stream button[type=submit]")
    row = page.locator('#streams tr[data-stream="door"]')
    row.locator("td.state", has_text="live").wait_for()
    assert client.get("/v1/streams/door").json()["status"]["state"] == "live"  # the page shows what the API says
    _poll("the streams table showing an fps figure", lambda: float(row.locator("td.fps").text_content() or 0) > 0)
    tab.shot("02-streams")

    tab.go("#/streams/door/people")
    labelled = page.locator("#people tbody tr").filter(has=page.locator("td.age", has_text=re.compile(r"\d")))
    labelled.first.wait_for()
    cells = labelled.first.locator("td")
    assert re.search(r"\d", cells.nth(5).text_content())  # age
    assert re.search(r"(female|male|undecided) \(", cells.nth(6).text_content())  # gender with its probability
    assert "specialist" in cells.nth(8).text_content()  # estimates by source
    tab.shot("03-people")
    key = labelled.first.get_attribute("data-track")
    assert key in {t["track"] for t in client.get("/v1/streams/door/tracks").json()}
    labelled.first.locator("td a").click()
    page.wait_for_selector("#estimates tbody tr")
    page.wait_for_selector('#track-charts svg circle[data-source="specialist"]')  # its age and p(female) over time
    assert _text(page, "#estimates tbody tr td:nth-child(2)") == "specialist"
    tab.shot("04-track")

    tab.go("#/streams/door")
    width, height = camera_size = (640, 360)

    previews: list[tuple[bytes, str]] = []  # what the page was sent: passed through, and kept

    def keep(route):
        response = route.fetch()
        if response.status == 200:
            previews.append((response.body(), response.headers["content-type"]))
        route.fulfill(response=response)

    page.route("**/preview.jpg", keep)

    def annotated_preview():
        count = len(previews)
        _poll("the live page asking for another preview", lambda: len(previews) > count, page=page)
        jpeg, content_type = previews[-1]
        assert jpeg[:3] == b"\xff\xd8\xff" and content_type == "image/jpeg", (jpeg[:16], content_type)
        preview = decode_jpeg(jpeg)
        raw = grab_frame(camera.url(), (preview.shape[1], preview.shape[0]))
        drawn = annotation_pixels(preview, raw)
        return (jpeg, preview, drawn) if drawn > 300 else None

    jpeg, preview, drawn = _poll("a preview with a box drawn over the camera's picture", annotated_preview, page=page)
    assert preview.shape[1] * height == preview.shape[0] * width, (preview.shape, camera_size)  # the stream's aspect ratio
    assert preview.shape[1] == min(width, service["config"].ingest.preview_width_px)
    page.wait_for_function("() => Number(document.querySelector('#preview').dataset.frames) >= 2")
    assert page.eval_on_selector("#preview", "c => [c.width, c.height]") == [preview.shape[1], preview.shape[0]]
    shown = page.eval_on_selector("#preview", "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)")
    assert np.asarray(shown, np.uint8).reshape(preview.shape[0], preview.shape[1], 4)[:, :, :3].std() > 5  # a picture, not blank
    page.locator("#in-view li[data-track] a", has_text=re.compile(r"^#\d+")).first.wait_for()
    tab.shot("05-live")
    print(f"\npreview: {preview.shape[1]}x{preview.shape[0]} JPEG, {len(jpeg)} bytes, {drawn} pixels of box colour drawn")

    tab.go("#/demographics/door")
    page.wait_for_function("() => /^[1-9]\\d* people/.test(document.querySelector('#stats-total').textContent)")
    assert page.locator('#stats-charts svg[data-dimension="gender"] rect[data-category]').count() >= 1
    tab.shot("06-demographics")

    tab.go("#/streams")
    page.locator('#streams tr[data-stream="door"] button.delete').click()
    page.locator('#streams tr[data-stream="door"]').wait_for(state="detached")
    assert any(d.startswith("confirm:") for d in tab.dialogs)
    assert client.get("/v1/streams/door").status_code == 404

    # the key: in this tab's sessionStorage only, sent as a bearer header, never in a URL
    assert page.evaluate("() => sessionStorage.getItem('tracklens.key')") == KEY
    assert page.evaluate("() => localStorage.length") == 0
    api_calls = [(url, auth) for url, auth in tab.requests if "/v1/" in url]
    assert all(auth in (f"Bearer {KEY}", "Bearer not-the-key") for _, auth in api_calls), api_calls
    assert len([a for _, a in api_calls if a == f"Bearer {KEY}"]) > 10
    assert not [url for url, _ in tab.requests if KEY in url or "not-the-key" in url]
    assert tab.dialogs == ["confirm: Delete the stream door? Its tracks are ended and kept for their retention."]


def test_a_job_runs_from_the_jobs_page_to_its_tracks(tab, service):
    page = tab.page
    tab.log_in()
    tab.go("#/jobs")
    page.fill("#job-path", str(service["videos"] / "walk.mp4"))
    page.click("#add-job button[type=submit]")
    row = page.locator("#jobs tbody tr[data-job]").first
    row.locator("td.state", has_text="done").wait_for()
    assert int(row.locator("td.tracks").text_content()) >= 1
    assert row.locator("button.download").count() == 1
    row.locator("td a").first.click()
    page.wait_for_selector("#job-tracks tbody tr")
    tab.shot("07-job")


def test_an_invalid_url_shows_the_api_s_own_message_in_place(tab, service):
    page = tab.page
    tab.log_in()
    bad = "rtsp://127.0.0.1:99999/cam"
    expected = service["client"].post("/v1/streams", json={"url": bad, "options": {"check": True}})
    assert expected.status_code == 422
    page.fill("#stream-url", bad)
    page.click("#add-stream button[type=submit]")
    page.wait_for_function("() => document.querySelector('#add-error').textContent.length > 0")
    assert _text(page, "#add-error") == expected.json()["error"]
    assert page.input_value("#stream-url") == bad  # kept for the user to correct
    tab.shot("08-invalid-url")


def test_markup_from_the_api_is_shown_as_text_and_never_runs(tab, service):
    """A name that is markup (refused by the API, whose message quotes it), a URL whose path is
    markup and a job file named as markup: each shows as its characters; no element is made of
    it and no script runs (an ``alert`` would be a dialog)."""
    client, camera, videos, page = service["client"], service["camera"], service["videos"], tab.page
    tab.log_in()
    page.fill("#stream-url", camera.url())
    page.fill("#stream-name", INJECTION)
    page.click("#add-stream button[type=submit]")
    page.wait_for_function("() => document.querySelector('#add-error').textContent.length > 0")
    assert INJECTION in _text(page, "#add-error")

    marked = f"rtsp://127.0.0.1:{camera.port}/<img/src=x/onerror=alert(1)>"
    page.fill("#stream-url", marked)
    page.fill("#stream-name", "")
    page.uncheck("#stream-check")
    page.click("#add-stream button[type=submit]")
    cell = page.locator("#streams td.url", has_text="onerror")
    cell.wait_for()
    assert cell.text_content() == marked
    tab.shot("09-markup-url-as-text")
    shutil.copy(videos / "walk.mp4", videos / f"{INJECTION}.mp4")
    tab.go("#/jobs")
    page.fill("#job-path", str(videos / f"{INJECTION}.mp4"))
    page.click("#add-job button[type=submit]")
    path_cell = page.locator("#jobs td.path", has_text="onerror")
    path_cell.wait_for()
    assert path_cell.text_content() == str(videos / f"{INJECTION}.mp4")
    tab.shot("10-markup-path-as-text")
    assert page.locator("main img").count() == 0 and tab.dialogs == []
    for stream in client.get("/v1/streams").json():
        if "onerror" in stream["url"]:
            assert client.delete(f"/v1/streams/{stream['id']}").status_code in (200, 202, 204)


@pytest.fixture()
def previews_off(redis_url, tmp_path):
    """The API alone (no Ray, no key) with previews switched off, on uvicorn in a thread,
    stopped by itself: what the console shows for a service with ``ingest.previews: false``."""
    import uvicorn
    from tracklens.pipeline.config import ServeConfig
    from tracklens.pipeline.service.control import ControlPlane, StreamSpec
    from tracklens.pipeline.store import build_store
    from tracklens.serve.api import make_api

    config = ServeConfig.model_validate({"store": {"url": redis_url, "prefix": f"t{uuid.uuid4().hex[:6]}"}, "ingest": {"previews": False}})
    control, store = ControlPlane.from_config(config.store), build_store(config.store)
    control.add(StreamSpec(id="door", kind="stream", url="rtsp://127.0.0.1:9/cam"))
    app = make_api(config, control, store, None, lambda: {"estimators": "specialist only", "auth": False})
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _poll("uvicorn to start", lambda: server.started, timeout_s=30, step_s=0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
    store.close()
    control.close()


def test_with_previews_switched_off_and_no_key_the_live_page_says_so(browser, previews_off):
    tab = Tab(browser, previews_off)
    try:
        tab.open("#/streams/door")  # no key on this service: no prompt
        tab.page.wait_for_selector("#preview-off")
        assert "switched off" in _text(tab.page, "#preview-off") and "ingest.previews: false" in _text(tab.page, "#preview-off")
        assert tab.page.locator("#preview").count() == 0 and tab.page.locator("#key-form").count() == 0
        assert not [url for url, _ in tab.requests if "preview.jpg" in url]  # nothing asks for one
        tab.shot("11-previews-off")
    finally:
        tab.close()
