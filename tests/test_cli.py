"""The command line as a user meets it: bad inputs and the whole run on the sample video."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import assert_one_line_error, mllm_yaml, progress_frames, read_until, run_cli, start_analyze, write_video


@pytest.fixture()
def home_copy(tmp_path, models) -> Path:
    """A private copy of the real model cache that a test may damage."""
    for item in ("age-v1", "gender-v1", "fer-expression", "ssdlite-person", "face-landmarks-5"):
        models.path(item)
    home = tmp_path / "home"
    shutil.copytree(models.root / "models", home / "models")
    shutil.copy(models.manifest_path, home / "manifest.json")
    return home


def test_corrupt_model_file(tmp_path, home_copy):
    (home_copy / "models" / "age-v1.onnx").write_bytes(b"\x00" * 1000)
    video = write_video(tmp_path / "v.mp4")
    result = run_cli("analyze", str(video), "--out", str(tmp_path), "--no-progress", home=home_copy)
    assert_one_line_error(result, "age-v1.onnx", "corrupt", "tracklens models pull --force")


def test_unreadable_model_file_with_a_matching_hash(tmp_path, home_copy):
    """A file that passes its checksum but is not a model (a bad manifest) still fails cleanly."""
    bad = home_copy / "models" / "fer-expression.onnx"
    bad.write_bytes(b"this is not an onnx graph")
    manifest = json.loads((home_copy / "manifest.json").read_text())
    import hashlib

    manifest["fer-expression"]["sha256"] = hashlib.sha256(bad.read_bytes()).hexdigest()
    (home_copy / "manifest.json").write_text(json.dumps(manifest))
    video = write_video(tmp_path / "v.mp4")
    result = run_cli("analyze", str(video), "--out", str(tmp_path), "--no-progress", home=home_copy)
    assert_one_line_error(result, "fer-expression.onnx", "cannot load")


def test_models_list(home_copy):
    result = run_cli("models", "list", home=home_copy)
    assert result.returncode == 0
    assert "age-v1" in result.stdout and "CC0-1.0" in result.stdout and "cached" in result.stdout


def test_analyze_sample_end_to_end(tmp_path, sample_video, redis_url):
    """The acceptance run: the astronaut is one female, happy track with an age, in every output."""
    out = tmp_path / "out"
    annotated = tmp_path / "annotated.mp4"
    result = run_cli(
        "analyze", str(sample_video), "--out", str(out), "--annotate", str(annotated), "--redis-url", redis_url,
        "--stream", "e2e", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tracks = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    labelled = [t for t in tracks if t["age"]["mean"] is not None]
    assert len(labelled) == 1, tracks
    (t,) = labelled
    assert t["gender"]["label"] == "female" and t["expression"]["label"] == "happy"
    assert 20 <= t["age"]["mean"] <= 50 and t["state"] == "ended" and t["sources"]["specialist"] >= 2
    assert set(t["expression"]["probs"]) == {"neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"}
    assert t["track"] in result.stdout and "female" in result.stdout

    from tracklens.pipeline.sources import probe
    from tracklens.pipeline.store import RedisTrackStore

    store = RedisTrackStore(redis_url)
    assert store.get(t["track"]).model_dump() == t
    assert [e["event"] for e in store.events("e2e") if e["track"] == t["track"]][-1] == "end"
    info = probe(annotated)
    assert (info["width"], info["height"]) == (1280, 720) and info["frames"] == 40


def test_analyze_with_the_mllm_estimator(tmp_path, sample_video, tiny_whole):
    """The pipeline runs with the MLLM as its estimator; every estimate says it came from it."""
    config = mllm_yaml(tmp_path / "mllm.yaml", tiny_whole)
    out = tmp_path / "out"
    result = run_cli("analyze", str(sample_video), "--config", str(config), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    tracks = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert tracks and all(set(t["sources"]) <= {"mllm"} for t in tracks)
    assert sum(t["sources"].get("mllm", 0) for t in tracks) >= 2
    assert any(t["age"]["n"] >= 2 for t in tracks)


def test_a_file_that_breaks_off_keeps_its_tracks_and_says_so(tmp_path, sample_video):
    """Cut after its first half, with its index up front: the first half's tracks are written,
    the error names the file and the shortfall, and the exit status is 1."""
    import av

    whole = tmp_path / "whole.mp4"
    with av.open(str(sample_video)) as src, av.open(str(whole), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    data = whole.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 3 // 4])
    out = tmp_path / "out"
    result = run_cli("analyze", str(tmp_path / "cut.mp4"), "--out", str(out), "--no-progress")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    *_, summary, error = [line for line in result.stderr.splitlines() if line.strip()]
    assert "frames analysed" in summary
    assert error.startswith("tracklens: error: ") and "cut.mp4" in error and "truncated" in error
    assert "tracks up to that point were kept" in error
    tracks = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert len(tracks) == 1 and tracks[0]["gender"]["label"] == "female"


def test_ctrl_c_keeps_what_was_analysed(tmp_path, sample_video):
    """An interrupted run still ends its tracks and writes tracks.jsonl, then exits 130."""
    import signal

    out = tmp_path / "out"
    proc = start_analyze(str(sample_video), "--out", str(out))
    seen = read_until(proc, lambda text: progress_frames(text) >= 9)  # the progress bar passed 8 frames
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, seen + stderr
    assert "Traceback" not in stderr and "interrupted; the tracks up to that point were kept" in stderr
    tracks = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert len(tracks) == 1 and tracks[0]["state"] == "ended" and tracks[0]["last_seen"] < 3.9
