"""``make bench``: decode alone, detection alone and the whole pipeline on one video, one run.

All see the same analysed frames (the fps cap applies to each), so their frames/s are directly
comparable; absolute numbers on a shared machine are noisy, ratios less so. "Detection alone"
scans every frame whole for faces; inside the pipeline the face scan schedule (whole frames
every 0.3 s, windows around people and tracked faces in between) needs the tracker's state,
so the pipeline's own detection time is reported beside it.
"""

from __future__ import annotations

import importlib.util
import json
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


def _detect_only(video: Path, fps: float | None, stages: StageSet, batch: int) -> tuple[int, float]:
    with open_source(video, fps=fps) as source:
        images = [f.image for f in source]
    t0 = time.perf_counter()
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        stages.person.detect(chunk)
        stages.face.detect(chunk)
    return len(images), time.perf_counter() - t0


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
    config = load_config()
    path = Path(video) if video else out_dir.parent / "sample.mp4"
    if not path.exists():
        make_sample_video(path)
    fps = config.source.fps
    stages = StageSet.build(config, ModelCache())
    with open_source(path, fps=fps) as source:  # warm-up: first-call allocations are not measured
        first = next(iter(source)).image
    stages.person.detect([first])
    stages.face.detect([first])

    n_dec, t_dec = _decode_only(path, fps)
    n_det, t_det = _detect_only(path, fps, stages, config.detection.batch_frames)
    source = open_source(path, fps=fps)
    store = MemoryTrackStore()
    analyzer = StreamAnalyzer(config, stages, store, source.analysis_fps)
    stats = analyze(source, analyzer)
    source.close()
    s = stats.seconds
    result = {
        "video": str(path),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "analysis_fps_cap": fps,
        "frames": stats.frames_analysed,
        "fps": {
            "decode alone": n_dec / t_dec,
            "detect alone (full scans)": n_det / t_det,
            "detect in pipeline": stats.frames_analysed / s["detect"],
            "whole pipeline": stats.frames_analysed / s["total"],
        },
        "pipeline_seconds": {k: round(v, 3) for k, v in s.items()} | {"overhead": round(stats.overhead_s, 3)},
        "overhead_share": stats.overhead_s / s["total"],
        "tracks": len(store.tracks(analyzer.stream)),
        "estimates": stats.estimates,
    }
    if importlib.util.find_spec("torch") and importlib.util.find_spec("transformers"):
        result["mllm_tiny_crops_per_s"] = mllm_bench(out_dir.parent / "tiny-vlm")
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"bench-{stamp}.json", "latest.json"):
        (out_dir / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"video {path} ({stats.frames_analysed} analysed frames at <= {fps} fps)")
    print(f"{'stage':<28}{'frames/s':>10}")
    for name, value in result["fps"].items():
        print(f"{name:<28}{value:>10.1f}")
    sec = result["pipeline_seconds"]
    print(
        f"pipeline time: decode {sec['decode']:.2f} s, detect {sec['detect']:.2f} s, estimate {sec['estimate']:.2f} s, "
        f"overhead {sec['overhead']:.2f} s = {100 * result['overhead_share']:.1f}% of {sec['total']:.2f} s"
    )
    if "mllm_tiny_crops_per_s" in result:
        table = result["mllm_tiny_crops_per_s"]
        sizes = list(next(iter(table.values())))
        print("MLLM estimator, tiny offline VLM, crops/s: " + "  ".join(
            f"{mode}: " + ", ".join(f"batch {b} {table[mode][b]:.1f}" for b in sizes) for mode in table))  # fmt: skip
    print(f"wrote {out_dir / 'latest.json'}")
    return result
