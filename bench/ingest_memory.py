"""Memory of an ingest process, without Ray: where it goes, and whether it comes back when
streams go.

Everything real but Ray: a redis-server, a live 720p camera from GStreamer's RTSP server
(``tests/rtsp_server.py``, as in ``bench/service.py``), an :class:`IngestNode` in this process
with the service's detectors (SSDLite, CenterFace, one thread each) and the specialist
estimator answering on its own threads. The process's RSS (with its anonymous part, glibc's
heap figures from ``mallinfo2`` and the thread count) is recorded at each step:

1. ``start``: imports done; ``detectors``: detectors built; ``estimator``: the specialist
   built (in the service it lives in another replica);
2. ``1 stream``: one stream live for ``--seconds``; ``3 streams``: three live for ``--seconds``;
3. ``deleted``: all deleted and their workers dropped by the node;
4. ``cycle k``: ``--cycles`` rounds of adding three streams, ``--seconds / 2`` live, deleting.

Beside RSS: how many workers, perceptions, track books and live sources are still alive after
the node dropped them (weak references), how many threads run, and per step the most frames
one detector call took and the most calls that ran at once (what onnxruntime's arenas grow
to). ``--speed`` also runs the whole pipeline three times on a 20 s sample video with the
service's detection settings (frames/s).

Usage: ``.venv/bin/python bench/ingest_memory.py [--seconds 30] [--cycles 3] [--speed]
[--out bench/results/ingest_memory.json]``
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
import weakref
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from servers import RedisServer, RtspCamera  # noqa: E402


class _Mallinfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (all arenas together)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")  # fmt: skip
    ]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def sample(step: str, **extra) -> dict:
    """RSS (MB), its anonymous part, glibc heap in use / free (MB), threads."""
    gc.collect()
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    row = {
        "step": step,
        "rss_mb": round(_status_kb("VmRSS") / 1024, 1),
        "rss_anon_mb": round(_status_kb("RssAnon") / 1024, 1),
        "heap_used_mb": round((info.uordblks + info.hblkhd) / 2**20, 1),
        "heap_free_mb": round(info.fordblks / 2**20, 1),
        "threads": _status_kb("Threads"),
        **extra,
    }
    print(f"  {row}", flush=True)
    return row


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not within {timeout_s:g} s")


class _Specialist:
    """``submit``: the specialist, answering on its own thread (as the router does)."""

    def __init__(self, estimator) -> None:
        self.estimator, self.lock = estimator, threading.Lock()

    def __call__(self, crops, done) -> None:
        def answer() -> None:
            with self.lock:  # one batch at a time, as one pool replica
                estimates = self.estimator.estimate(crops)
            done(crops, estimates)

        threading.Thread(target=answer, daemon=True).start()


class _Counted:
    """A detector, passed through, counting the largest call (frames) and the most calls at once:
    onnxruntime's arena grows to what the largest calls running together need."""

    def __init__(self, detector) -> None:
        self.inner, self.lock = detector, threading.Lock()
        self.running = self.most_at_once = self.most_frames = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _call(self, method, images, *args):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.most_frames = max(self.most_frames, len(images))
        try:
            return method(images, *args)
        finally:
            with self.lock:
                self.running -= 1

    def detect(self, images):
        return self._call(self.inner.detect, images)

    def detect_windows(self, images, windows):
        return self._call(self.inner.detect_windows, images, windows)

    def figures(self) -> dict:
        with self.lock:
            out = {"most_frames_per_call": self.most_frames, "most_calls_at_once": self.most_at_once}
            self.most_frames = self.most_at_once = 0
        return out


class _Watch:
    """Weak references to every worker the node started, and to their per-stream parts."""

    def __init__(self, node) -> None:
        self.node, self.refs = node, []
        self.seen: set[int] = set()

    def poll(self) -> None:
        for worker in list(self.node.workers.values()):
            if id(worker) not in self.seen and worker.driver is not None:
                self.seen.add(id(worker))
                parts = [worker, worker.driver, worker.driver.perception, worker.driver.book, worker._source]
                self.refs.append([weakref.ref(p) for p in parts if p is not None])

    def alive(self) -> int:
        gc.collect()
        return sum(1 for refs in self.refs for r in refs if r() is not None)


def run_streams(node, control, watch: _Watch, names: list[str], url: str, seconds: float) -> dict:
    """Add ``names``, keep them live ``seconds``; frames analysed and CPU ms per frame."""
    from tracklens.pipeline.service.control import StreamSpec

    for name in names:
        control.add(StreamSpec(id=name, kind="stream", url=url))

    def live() -> bool:
        watch.poll()
        return all((s := control.status(n)) is not None and s.frames_analysed >= 10 for n in names)

    _wait(live, 60.0, f"streams {names} live")
    for detector in node.detectors:
        detector.figures()  # from here on
    f0, c0, t0 = sum(control.status(n).frames_analysed for n in names), time.process_time(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        watch.poll()
        time.sleep(1.0)
    frames = sum(control.status(n).frames_analysed for n in names) - f0
    elapsed, cpu = time.monotonic() - t0, time.process_time() - c0
    person, face = (d.figures() for d in node.detectors)
    return {
        "fps_per_stream": round(frames / elapsed / len(names), 2),
        "cpu_ms_per_frame": round(1000 * cpu / max(frames, 1), 1),
        "person_calls": person,
        "face_calls": face,
    }


def delete_streams(node, control, names: list[str]) -> None:
    for name in names:
        control.remove(name)
    _wait(lambda: not any(n in node.workers for n in names), 90.0, f"streams {names} dropped")
    time.sleep(2.0)  # the decode threads' last frames, estimates in flight


def speed(models, video: Path) -> dict:
    """The whole pipeline on ``video`` with the service's detection settings (frames/s)."""
    from tracklens.pipeline.bench import _pipeline

    detection = {"person": {"type": "ssdlite", "threads": 1}, "face": {"type": "centerface", "threads": 1}}
    runs = [_pipeline(video, {f"detection.{k}": v for k, v in detection.items()}, models) for _ in range(3)]
    return {"fps": [round(r["fps"], 2) for r in runs], "person_s": [r["seconds"]["person"] for r in runs],
            "face_s": [r["seconds"]["face"] for r in runs], "frames": runs[0]["frames"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each step keeps its streams live")
    parser.add_argument("--cycles", type=int, default=3, help="add/delete rounds of three streams")
    parser.add_argument("--speed", action="store_true", help="also the pipeline's frames/s on a sample video")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "ingest_memory.json"))
    args = parser.parse_args()

    from tracklens.pipeline.config import ServeConfig, SpecialistEstimatorConfig
    from tracklens.pipeline.detectors import build_detector
    from tracklens.pipeline.estimators import build_estimator
    from tracklens.pipeline.models import ModelCache
    from tracklens.pipeline.service.control import ControlPlane, Owner
    from tracklens.pipeline.service.ingest import IngestNode
    from tracklens.pipeline.store import build_store

    work = Path(tempfile.mkdtemp(prefix="tracklens-memory-"))
    (work / "redis").mkdir()
    result: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": args.seconds, "cycles": args.cycles,
                    "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"), "steps": []}  # fmt: skip
    steps = result["steps"]
    redis = camera = node = control = store = None
    try:
        redis = RedisServer(work / "redis").start()
        camera = RtspCamera(work / "cam", width=1280, height=720, person_px=300, bitrate_kbps=4000).start()
        steps.append(sample("start"))
        models = ModelCache()
        config = ServeConfig.model_validate(
            {"store": {"url": redis.url, "prefix": f"mem{uuid.uuid4().hex[:6]}"}, "ingest": {"end_grace_s": 5.0}}
        )
        person = _Counted(build_detector(config.detection.person, models))
        face = _Counted(build_detector(config.detection.face, models))
        detectors = (person, face)
        steps.append(sample("detectors"))
        estimator = build_estimator(SpecialistEstimatorConfig(), models)  # in the service: another replica
        steps.append(sample("estimator"))
        control, store = ControlPlane(redis.url, config.store.prefix), build_store(config.store)
        node = IngestNode(config, detectors, store, control, _Specialist(estimator), Owner.here("bench"), "specialist only").start()
        watch = _Watch(node)
        url = camera.url()
        print("1 stream:", flush=True)
        rate = run_streams(node, control, watch, ["s0"], url, args.seconds)
        steps.append(sample("1 stream", **rate))
        print("3 streams:", flush=True)
        rate = run_streams(node, control, watch, ["s1", "s2"], url, args.seconds)
        steps.append(sample("3 streams", **rate))
        delete_streams(node, control, ["s0", "s1", "s2"])
        steps.append(sample("deleted", alive_objects=watch.alive()))
        for k in range(args.cycles):
            names = [f"c{k}-{i}" for i in range(3)]
            rate = run_streams(node, control, watch, names, url, args.seconds / 2)
            steps.append(sample(f"cycle {k + 1}: 3 streams", **rate))
            delete_streams(node, control, names)
            steps.append(sample(f"cycle {k + 1}: deleted", alive_objects=watch.alive()))
        node.shutdown()
        node = None
        if args.speed:
            from tracklens.pipeline.sample import make_sample_video

            print("speed (whole pipeline, sample video, service detection settings):", flush=True)
            result["speed"] = speed(models, make_sample_video(work / "sample.mp4", seconds=20.0))
            print(f"  {result['speed']}", flush=True)
    finally:
        if node is not None:
            node.shutdown()
        if store is not None:
            store.close()
        if control is not None:
            control.close()
        if camera is not None:
            camera.stop()
        if redis is not None:
            redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
