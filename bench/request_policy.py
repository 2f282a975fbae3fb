"""Estimate requests per tracked minute and the fused labels, under the request policy before
issue 17 (one request every 1.5 s while a track lives, at most 12) and under today's defaults
(first, confirm, then only while a field is unsure, for a markedly better crop, or every 30 s
for expressions; at most 2 + 3 per tracked minute), side by side in one run, through the same
pipeline ``tracklens analyze`` runs (the specialist answers; the MLLM is asked the same way).

Scenes: the demo video (one person crossing in 8 s) and a long one (one person crossing in
120 s, so the per-minute budget shows). Rows of ``--out`` (a JSON list): scene, policy, track,
tracked_s, requests, requests_per_track_minute, age, gender, expression.

    python bench/request_policy.py --out bench/results/request_policy.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

#: The defaults before issue 17, as crops settings: every 1.5 s after the first, no stop when sure.
BEFORE = {"confirm_after_s": 1.5, "refresh_s": 1.5, "per_minute": 40.0, "expression_refresh_s": 1.5, "max_requests": 12}
POLICIES = {"before (every 1.5 s, at most 12)": BEFORE, "after (defaults)": {}}


def run(video: Path, crops: dict, out: Path) -> list:
    from tracklens.pipeline.config import PipelineConfig
    from tracklens.pipeline.jobs import Analysis

    config = PipelineConfig.model_validate({"crops": crops})
    result = Analysis(video, config, out).run()
    return result.summaries


def row(scene: str, policy: str, track) -> dict:
    seconds = track.last_seen - track.first_seen
    requests = sum(track.sources.values())
    return {
        "scene": scene, "policy": policy, "track": track.track, "tracked_s": round(seconds, 2), "requests": requests,
        "requests_per_track_minute": round(requests / (seconds / 60), 2) if seconds > 0 else None,
        "age": None if track.age.mean is None else f"{track.age.mean:.0f} ± {track.age.std:.0f}",
        "gender": track.gender.label, "expression": track.expression.label,
    }  # fmt: skip


def main() -> None:
    from tracklens.pipeline.sample import make_sample_video

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", default="samples/astronaut.mp4", help="the demo video (made when missing)")
    parser.add_argument("--long-seconds", type=float, default=120.0)
    parser.add_argument("--out", default="bench/results/request_policy.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        demo = Path(args.demo)
        if not demo.is_file():
            demo = make_sample_video(tmp / "demo.mp4")
        long = make_sample_video(tmp / "long.mp4", seconds=args.long_seconds, width=960, height=540, person_px=200)
        for scene, video in (("demo (8 s)", demo), (f"one person, {args.long_seconds:g} s", long)):
            for k, (policy, crops) in enumerate(POLICIES.items()):
                for track in run(video, crops, tmp / f"{scene[:4]}-{k}"):
                    rows.append(row(scene, policy, track))
                    print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
