"""``make bench``: decode alone, each detector alone and whole pipelines on one video, one run.

All see the same analysed frames (the fps cap applies to each), so their frames/s are directly
comparable; absolute numbers on a shared machine are noisy, ratios measured side by side less
so. "Alone" scans every frame whole (the person detector with its tiles); inside the pipeline
the scan schedules (tiled person scans and whole-frame face scans every 0.3 s, windows around
people and faces in between) need the tracker's state, so each pipeline's time per stage is
reported beside them: decode, person detection, face detection, estimation and the rest
(association, tracking, crops, fusion, store). Two pipelines run: today's defaults and the one
before (dlib HOG faces, person tiles on every frame), with the tracks each found.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .config import load_config
from .models import ModelCache
from .runner import StageSet, StreamAnalyzer, analyze
from .sample import make_sample_video
from .sources import open_source
from .store import MemoryTrackStore

__all__ = ["mllm_bench", "run_bench"]


def _decode_only(video: Path, fps: float | None) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open_source(video, fps=fps) as source:
        n = sum(1 for _ in source)
    return n, time.perf_counter() - t0


def _detect_only(video: Path, fps: float | None, detector, batch: int) -> tuple[int, float]:
    """One detector on every analysed frame, whole frames (no schedule), in batches."""
    with open_source(video, fps=fps) as source:
        images = [f.image for f in source]
    t0 = time.perf_counter()
    for i in range(0, len(images), batch):
        detector.detect(images[i : i + batch])
    return len(images), time.perf_counter() - t0


#: Pipelines measured side by side: today's defaults, and the configuration before the face
#: detector and the person scan schedule changed (dlib HOG faces, tiles on every frame).
VARIANTS: dict[str, dict] = {
    "default": {},
    "before: dlib HOG faces, person tiles every frame": {
        "detection.face": {"type": "dlib_hog"},
        "detection.person_schedule.full_scan_interval_s": 0,
    },
}


def _pipeline(video: Path, overrides: dict, models: ModelCache) -> dict:
    config = load_config(None, overrides)
    stages = StageSet.build(config, models)
    with open_source(video, fps=config.source.fps) as source:  # warm-up: first-call allocations are not measured
        first = next(iter(source)).image
    stages.person.detect([first])
    stages.face.detect([first])
    source = open_source(video, fps=config.source.fps)
    store = MemoryTrackStore()
    analyzer = StreamAnalyzer(config, stages, store, source.analysis_fps)
    analyze(source, analyzer)
    stats = analyzer.stats
    source.close()
    stages.close()
    s = stats.seconds
    seconds = {k: round(s[k], 3) for k in ("decode", "person", "face", "estimate")} | {"other": round(stats.overhead_s, 3)}
    tracks = [(t.track, t.frames, t.gender.label, t.expression.label, None if t.age.mean is None else round(t.age.mean))
              for t in store.tracks(analyzer.stream)]  # fmt: skip
    return {
        "fps": stats.frames_analysed / s["total"],
        "frames": stats.frames_analysed,
        "seconds": seconds | {"total": round(s["total"], 3)},
        "share": {k: round(v / s["total"], 3) for k, v in seconds.items()},
        "tracks": tracks,
    }


def mllm_bench(model_dir: Path, batch_sizes=(1, 8, 32), crops: int = 64) -> dict[str, dict[int, float]]:
    """Crops/s of the MLLM estimator on the tiny offline VLM, per answer mode and batch size.

    The tiny model's own compute is negligible, so these numbers measure the estimator's
    per-request overhead (processor, padding, trie walks, cache copies), not a real VLM.
    """
    from skimage import data

    from .config import MllmEstimatorConfig, TransformersBackendConfig
    from .estimators.mllm import MllmEstimator
    from .estimators.mllm.tiny import build_tiny_vlm
    from .types import Crop

    if not (model_dir / "config.json").exists():
        build_tiny_vlm(model_dir)
    photo = data.astronaut()
    face = np.ascontiguousarray(photo[40:230, 140:310])
    box = np.array([30, 30, 140, 160], np.float32)
    batch = [Crop(f"b:0:{i}", 0.0, face, box, photo, 1.0, face_px=130.0) for i in range(crops)]
    results: dict[str, dict[int, float]] = {}
    for mode in ("constrained", "scored"):
        backend = TransformersBackendConfig(model=str(model_dir), local_files_only=True, device="cpu")
        results[mode] = {}
        for size in batch_sizes:
            estimator = MllmEstimator(MllmEstimatorConfig(backend=backend, mode=mode, batch_size=size))
            t0 = time.perf_counter()
            estimator.estimate(batch)
            results[mode][size] = crops / (time.perf_counter() - t0)
    return results


def run_bench(out_dir: Path, video: str | None = None) -> dict:
    """Decode alone, each detector alone, and whole pipelines side by side on one video, one run;
    written to ``out_dir/latest.json`` (and a time-stamped copy)."""
    config = load_config()
    path = Path(video) if video else out_dir.parent / "sample.mp4"
    if not path.exists():
        make_sample_video(path)
    fps = config.source.fps
    models = ModelCache()
    stages = StageSet.build(config, models)
    with open_source(path, fps=fps) as source:  # warm-up
        first = next(iter(source)).image
    stages.person.detect([first])
    stages.face.detect([first])
    n_dec, t_dec = _decode_only(path, fps)
    n_per, t_per = _detect_only(path, fps, stages.person, config.detection.batch_frames)
    n_face, t_face = _detect_only(path, fps, stages.face, config.detection.batch_frames)
    stages.close()
    pipelines = {name: _pipeline(path, overrides, models) for name, overrides in VARIANTS.items()}
    default, before = pipelines["default"], pipelines[list(VARIANTS)[1]]
    result = {
        "video": str(path),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "analysis_fps_cap": fps,
        "frames": default["frames"],
        "fps": {
            "decode alone": n_dec / t_dec,
            f"person detection alone ({config.detection.person.type}, tiles every frame)": n_per / t_per,
            f"face detection alone ({config.detection.face.type}, whole frames)": n_face / t_face,
            **{f"pipeline, {name}": p["fps"] for name, p in pipelines.items()},
        },
        "pipelines": pipelines,
        "speedup_vs_before": default["fps"] / before["fps"],
    }
    if importlib.util.find_spec("torch") and importlib.util.find_spec("transformers"):
        result["mllm_tiny_crops_per_s"] = mllm_bench(out_dir.parent / "tiny-vlm")
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"bench-{stamp}.json", "latest.json"):
        (out_dir / name).write_text(json.dumps(result, indent=2) + "\n")
    _print(path, result)
    print(f"wrote {out_dir / 'latest.json'}")
    return result


def _print(path: Path, result: dict) -> None:
    print(f"video {path} ({result['frames']} analysed frames at <= {result['analysis_fps_cap']} fps)")
    width = max(len(k) for k in result["fps"]) + 2
    print(f"{'stage':<{width}}{'frames/s':>10}")
    for name, value in result["fps"].items():
        print(f"{name:<{width}}{value:>10.1f}")
    print("share of each pipeline's time: " + "; ".join(
        f"{name}: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in p["share"].items()) for name, p in result["pipelines"].items()))  # fmt: skip
    print(f"speed-up of the default pipeline over the one before: {result['speedup_vs_before']:.2f}x")
    for name, p in result["pipelines"].items():
        print(f"tracks, {name}: {p['tracks']}")
    if "mllm_tiny_crops_per_s" in result:
        table = result["mllm_tiny_crops_per_s"]
        sizes = list(next(iter(table.values())))
        print("MLLM estimator, tiny offline VLM, crops/s: " + "  ".join(
            f"{mode}: " + ", ".join(f"batch {b} {table[mode][b]:.1f}" for b in sizes) for mode in table))  # fmt: skip
