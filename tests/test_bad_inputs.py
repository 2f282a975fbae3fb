"""Bad input of every kind, as a user gives it: one line naming the problem, exit status 2,
no traceback, and nothing already on disk touched.

Each case runs the real command line in a subprocess inside a workspace that holds a good
video, an earlier run's outputs and whatever the case adds; afterwards every file in the
workspace must be byte for byte what it was (an error found before the work writes nothing,
so it cannot damage an earlier result).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli, write_video


@dataclass(frozen=True)
class Case:
    """``args`` may use ``{ws}`` (the workspace) and ``{good}`` (a good video in it)."""

    args: tuple[str, ...]
    needles: tuple[str, ...]
    files: dict[str, str | bytes] = field(default_factory=dict)  # extra workspace files
    env: dict[str, str] = field(default_factory=dict)
    home: str | None = None  # "damaged-manifest:<json text>" for a model cache with that manifest
    absent: tuple[str, ...] = ()  # text that must not appear (secrets)


def _yaml(text: str) -> dict[str, str]:
    return {"c.yaml": text}


ANALYZE = "analyze"
CASES: dict[str, Case] = {
    # the video
    "missing video": Case((ANALYZE, "{ws}/nope.mp4"), ("video file not found", "nope.mp4")),
    "empty video": Case((ANALYZE, "{ws}/empty.mp4"), ("empty",), {"empty.mp4": b""}),
    "text renamed mp4": Case((ANALYZE, "{ws}/notes.mp4"), ("notes.mp4", "as a video"), {"notes.mp4": "not a video\n" * 50}),
    "truncated mp4": Case((ANALYZE, "{ws}/cut.mp4"), ("cut.mp4", "truncated"), {"cut.mp4": "CUT"}),
    "folder as video": Case((ANALYZE, "{ws}/prev"), ("not a regular file", "prev")),
    "camera unreachable": Case((ANALYZE, "rtsp://admin:s3cret@127.0.0.1:1/live"), ("cannot open the live stream rtsp://***@127.0.0.1:1/live",
                               "Connection refused"), absent=("s3cret", "admin")),  # fmt: skip
    "unknown scheme": Case((ANALYZE, "ftp://example.com/v.mp4"), ("unknown scheme ftp://",)),
    "file uri missing": Case((ANALYZE, "file://{ws}/gone.mp4"), ("video file not found", "gone.mp4")),
    # flags
    "fps zero": Case((ANALYZE, "{good}", "--fps", "0"), ("--fps", "greater than 0")),
    "fps negative": Case((ANALYZE, "{good}", "--fps", "-1"), ("--fps", "greater than 0")),
    "fps nan": Case((ANALYZE, "{good}", "--fps", "nan"), ("--fps", "finite")),
    "fps not a number": Case((ANALYZE, "{good}", "--fps", "abc"), ("--fps", "invalid float value", "--help")),
    "stream empty": Case((ANALYZE, "{good}", "--stream", ""), ("--stream", "1-64 letters")),
    "stream with colon": Case((ANALYZE, "{good}", "--stream", "cam:1"), ("--stream", "'cam:1'")),
    "no video argument": Case((ANALYZE,), ("required: video",)),
    "unknown command": Case(("analyse", "{good}"), ("invalid choice", "analyse")),
    "unknown flag": Case((ANALYZE, "{good}", "--frobnicate"), ("unrecognized arguments", "--frobnicate")),
    # the store
    "redis unreachable": Case((ANALYZE, "{good}", "--redis-url", "redis://127.0.0.1:1/0"), ("cannot reach Redis", "127.0.0.1:1")),
    "redis password not shown": Case((ANALYZE, "{good}", "--redis-url", "redis://:hunter2@127.0.0.1:1/0"), ("cannot reach Redis", "***@"),
                                     absent=("hunter2",)),  # fmt: skip
    "redis db not a number": Case((ANALYZE, "{good}", "--redis-url", "redis://127.0.0.1:6379/cache"), ("--redis-url", "'cache'", "not a number")),
    "redis wrong scheme": Case((ANALYZE, "{good}", "--redis-url", "http://127.0.0.1:6379"), ("--redis-url", "redis://")),
    "redis url from env": Case((ANALYZE, "{good}"), ("TRACKLENS_REDIS_URL", "not a number"), env={"TRACKLENS_REDIS_URL": "redis://h/x"}),
    # outputs
    "out is a file": Case((ANALYZE, "{good}", "--out", "{good}"), ("--out", "is a file, not a folder")),
    "out not writable": Case((ANALYZE, "{good}", "--out", "/proc/tracklens-out"), ("--out", "not writable")),
    "annotate is the input": Case((ANALYZE, "{good}", "--annotate", "{ws}/./good.mp4"), ("--annotate", "is the input video")),
    "annotate unknown extension": Case((ANALYZE, "{good}", "--annotate", "{ws}/a.gif"), ("--annotate", "'.gif'", ".mp4")),
    "annotate is a folder": Case((ANALYZE, "{good}", "--annotate", "{ws}/prev"), ("--annotate", "is a folder")),
    "annotate not writable": Case((ANALYZE, "{good}", "--annotate", "/proc/tracklens/a.mp4"), ("--annotate", "not writable")),
    # the config
    "config missing": Case((ANALYZE, "{good}", "--config", "{ws}/none.yaml"), ("config file not found", "none.yaml")),
    "config is a folder": Case((ANALYZE, "{good}", "--config", "{ws}/prev"), ("is a folder",)),
    "config not yaml": Case((ANALYZE, "{good}", "--config", "{ws}/c.yaml"), ("not valid YAML at line", "c.yaml"), _yaml("tracker:\n  min_hits: [1\n")),
    "config binary": Case((ANALYZE, "{good}", "--config", "{ws}/c.yaml"), ("not text",), {"c.yaml": b"\xff\xfe\x00\x01" * 20}),
    "config a list": Case((ANALYZE, "{good}", "--config", "{ws}/c.yaml"), ("mapping at the top level",), _yaml("- a\n- b\n")),
    "config unknown key": Case((ANALYZE, "{good}", "--config", "{ws}/c.yaml"), ("trackr", "Extra inputs"), _yaml("trackr: {}\n")),
    "config wrong type": Case((ANALYZE, "{good}", "--config", "{ws}/c.yaml"), ("tracker.min_hits",), _yaml("tracker:\n  min_hits: zero\n")),
    "config out of range": Case((ANALYZE, "{good}", "--config", "{ws}/c.yaml"), ("source.fps", "greater than 0"), _yaml("source: {fps: -5}\n")),
    "config unknown detector": Case((ANALYZE, "{good}", "--config", "{ws}/c.yaml"), ("detection.face", "retinaface"),
                                    _yaml("detection:\n  face: {type: retinaface}\n")),  # fmt: skip
    "config unknown model": Case((ANALYZE, "{good}", "--config", "{ws}/c.yaml"), ("unknown model 'yolov8'", "known models"),
                                 _yaml("detection:\n  person: {type: ssdlite, model: yolov8}\n")),  # fmt: skip
    "config stream id": Case((ANALYZE, "{good}", "--config", "{ws}/c.yaml"), ("stream", "'a b'"), _yaml("stream: a b\n")),
    "config unknown prompt": Case((ANALYZE, "{good}", "--config", "{ws}/c.yaml"), ("unknown prompt 'person-v9'",),
                                  _yaml("estimator:\n  type: mllm\n  prompt: person-v9\n  backend: {type: openai, base_url: 'http://127.0.0.1:1/v1', model: m}\n")),  # fmt: skip
    "mllm endpoint unreachable": Case((ANALYZE, "{good}", "--config", "{ws}/c.yaml"), ("cannot reach the MLLM endpoint", "127.0.0.1:1"),
                                      _yaml("estimator:\n  type: mllm\n  mode: constrained\n  backend: {type: openai, base_url: 'http://127.0.0.1:1/v1', model: m}\n")),  # fmt: skip
    "mllm model missing": Case((ANALYZE, "{good}", "--config", "{ws}/c.yaml"), ("cannot load MLLM", "no-such-vlm"),
                               _yaml("estimator:\n  type: mllm\n  backend: {type: transformers, model: '{ws}/no-such-vlm', local_files_only: true}\n")),  # fmt: skip
    # the model cache
    "manifest not json": Case((ANALYZE, "{good}"), ("manifest.json is damaged", "models pull --force"), home="{"),
    "manifest a list": Case(("models", "list"), ("manifest.json is damaged", "models pull --force"), home="[1, 2]"),
    "manifest entry without file": Case(("models", "list"), ("entry 'age-v1'", "models pull --force"), home='{"age-v1": {"sha256": "ab"}}'),
    "model name unknown": Case(("models", "pull", "no-such-model"), ("unknown model 'no-such-model'", "age-v1")),
    "tiny vlm into a file": Case(("models", "tiny-vlm", "{good}"), ("good.mp4", "is a file")),
    # eval
    "manifest missing": Case(("eval", "{ws}/none.csv", "--estimator", "specialist"), ("manifest not found", "none.csv")),
    "manifest wrong extension": Case(("eval", "{ws}/m.txt", "--estimator", "specialist"), (".csv or .jsonl",), {"m.txt": "image\n"}),
    "eval age not a number": Case(("eval", "{ws}/m.csv", "--estimator", "specialist"), ("m.csv:3", "age 'abc'"),
                                  {"m.csv": "image,age\na.png,30\na.png,abc\n"}),  # fmt: skip
    "eval box not numbers": Case(("eval", "{ws}/m.csv", "--estimator", "specialist"), ("m.csv:2", "face_box 'a b c d'"),
                                 {"m.csv": "image,face_box\na.png,a b c d\n"}),  # fmt: skip
    "eval box backwards": Case(("eval", "{ws}/m.jsonl", "--estimator", "specialist"), ("m.jsonl:1", "x1 > x0"),
                               {"m.jsonl": json.dumps({"image": "a.png", "body_box": [50, 0, 10, 20]}) + "\n"}),  # fmt: skip
    "eval bad json line": Case(("eval", "{ws}/m.jsonl", "--estimator", "specialist"), ("m.jsonl:2", "not valid JSON"),
                               {"m.jsonl": '{"image": "a.png"}\n{"image": \n'}),  # fmt: skip
    "eval unknown expression": Case(("eval", "{ws}/m.csv", "--estimator", "specialist"), ("m.csv:2", "expression", "'joy'"),
                                    {"m.csv": "image,expression\na.png,joy\n"}),  # fmt: skip
    "eval no image column": Case(("eval", "{ws}/m.csv", "--estimator", "specialist"), ("m.csv:1", "image column"), {"m.csv": "path,age\na,3\n"}),
    "eval no readable row": Case(("eval", "{ws}/m.csv", "--estimator", "specialist", "--out", "{ws}/r.json"), ("no row", "not an image file"),
                                 {"m.csv": "image,age\nnotes.png,30\n", "notes.png": "text"}),  # fmt: skip
    "eval out is a folder": Case(("eval", "{ws}/m.csv", "--out", "{ws}/prev"), ("--out", "ending in .json"), {"m.csv": "image\na.png\n"}),
    "eval without an mllm": Case(("eval", "{ws}/m.csv", "--estimator", "mllm", "--out", "{ws}/r.json"), ("--estimator mllm needs an MLLM",),
                                 {"m.csv": "image\na.png\n"}),  # fmt: skip
    "eval predictions unknown extension": Case(("eval", "{ws}/m.csv", "--estimator", "specialist", "--predictions", "{ws}/p.txt"),
                                              ("--predictions", "'.txt'", ".csv or .jsonl"), {"m.csv": "image\na.png\n"}),  # fmt: skip
    "eval predictions is the manifest": Case(("eval", "{ws}/m.csv", "--estimator", "specialist", "--out", "{ws}/r.json",
                                              "--predictions", "{ws}/./m.csv"), ("--predictions", "is the manifest"),
                                             {"m.csv": "image,age\na.png,42\n"}),  # fmt: skip
    "eval predictions not writable": Case(("eval", "{ws}/m.csv", "--estimator", "specialist", "--predictions", "/proc/tracklens/p.csv"),
                                          ("--predictions", "not writable"), {"m.csv": "image\na.png\n"}),  # fmt: skip
    "eval predictions is a folder": Case(("eval", "{ws}/m.csv", "--estimator", "specialist", "--predictions", "{ws}/prev"),
                                         ("--predictions", "is a folder", "predictions.csv"), {"m.csv": "image\na.png\n"}),  # fmt: skip
    # the demo video writer
    "sample unknown extension": Case(("sample", "{ws}/s.txt"), ("'.txt'", ".mp4")),
    "sample zero seconds": Case(("sample", "{ws}/s.mp4", "--seconds", "0"), ("--seconds",)),
}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def good_video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("media") / "good.mp4", frames=30)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_one_line_and_changes_nothing(name, tmp_path, good_video, astronaut):
    case = CASES[name]
    ws = tmp_path / "ws"
    (ws / "prev").mkdir(parents=True)
    shutil.copy(good_video, ws / "good.mp4")
    (ws / "prev" / "tracks.jsonl").write_text('{"track": "video:0:1", "from": "an earlier run"}\n')
    shutil.copy(good_video, ws / "prev" / "annotated.mp4")
    from PIL import Image

    Image.fromarray(astronaut).save(ws / "a.png")
    for rel, content in case.files.items():
        if content == "CUT":
            data = write_video(tmp_path / "whole.mp4", frames=60).read_bytes()
            content = data[: len(data) // 2]
        elif isinstance(content, str):
            content = content.replace("{ws}", str(ws)).encode()
        (ws / rel).write_bytes(content)
    home = None
    if case.home is not None:
        home = tmp_path / "home"
        home.mkdir()
        (home / "manifest.json").write_text(case.home)
    before = _snapshot(ws)
    args = [a.replace("{ws}", str(ws)).replace("{good}", str(ws / "good.mp4")) for a in case.args]
    env = {k: v.replace("{ws}", str(ws)) for k, v in case.env.items()}
    result = run_cli(*args, home=home, cwd=ws, env=env, timeout=300)
    line = assert_one_line_error(result, *case.needles)
    for secret in case.absent:
        assert secret not in result.stderr + result.stdout, line
    assert _snapshot(ws) == before


def test_the_battery_is_broad():
    """The issue asks for at least 40 bad inputs across analyze, eval, models and the config."""
    commands = {c.args[0] if c.args else "" for c in CASES.values()}
    assert len(CASES) >= 40 and {"analyze", "eval", "models"} <= commands
    assert sum("--config" in c.args for c in CASES.values()) >= 10
