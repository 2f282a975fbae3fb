"""Time stamps that jump back: the whole file is analysed, on a time line that goes forward.

Regression: two MPEG-TS files joined byte-wise (``cat a.ts b.ts``) restart their time stamps
half-way. The fps cap dropped every frame of the second half whose time the first half had
already passed, so the run ended with half the file analysed, no word and exit status 0.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli
from tracklens.pipeline.sources import FileSource


def write_ts(path, images, fps: int = 30):
    """An H.264 MPEG-TS file of RGB ``images``; its time stamps start where the muxer starts
    every file, so joined files restart them."""
    import av

    with av.open(str(path), mode="w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def join(path, *parts):
    """``cat PARTS > PATH``: files joined byte-wise, as users join recordings."""
    path.write_bytes(b"".join(p.read_bytes() for p in parts))
    return path


def _flat(level: int, frames: int) -> list[np.ndarray]:
    """``frames`` plain 160x96 pictures of one grey ``level``, to tell the halves apart."""
    return [np.full((96, 160, 3), level, np.uint8) for _ in range(frames)]


@pytest.fixture()
def joined_ts(tmp_path):
    """A dark half of 30 frames, then a bright half of 45, joined byte-wise."""
    first = write_ts(tmp_path / "a.ts", _flat(40, 30))
    second = write_ts(tmp_path / "b.ts", _flat(200, 45))
    return join(tmp_path / "ab.ts", first, second)


def test_every_frame_of_both_halves_is_handed_on_in_order(joined_ts):
    with FileSource(joined_ts, fps=None) as src:
        frames = list(src)
    assert len(frames) == 75
    assert src.timestamp_resets == 1 and src.error is None
    levels = [float(f.image.mean()) for f in frames]
    assert max(levels[:30]) < 100 < min(levels[30:])  # the first half, then the second
    times = np.array([f.pts for f in frames])
    assert (np.diff(times) > 0).all()
    # the second half goes on one frame after the first, at the file's own rate
    assert np.diff(times) == pytest.approx(1 / 30, abs=1e-3)


def test_the_fps_cap_thins_the_whole_file(joined_ts, caplog):
    with caplog.at_level("WARNING", logger="tracklens.pipeline.sources.file"):
        with FileSource(joined_ts, fps=10) as src:
            frames = list(src)
    assert len(frames) == 25  # 75 frames at 30 fps: 2.5 s at 10 fps
    assert sum(f.image.mean() > 100 for f in frames) == 15  # the second half's 45 frames
    (warning,) = caplog.records
    assert "ab.ts" in warning.getMessage() and "jump back at frame 30" in warning.getMessage()


def test_the_clock_mends_resets_and_keeps_forward_gaps():
    from tracklens.pipeline.sources.base import MonotonicClock

    clock = MonotonicClock(0.1)
    raw = [5.0, 5.1, 5.2, 0.0, 0.1, 9.0, 9.1, 9.1, None, 0.05]
    times = [clock.seconds(t) for t in raw]
    # reset at 0.0 goes on 0.1 s after 5.2; the forward gap to 9.0 is kept; a standing time
    # stamp (9.1 twice) and a frame without one step one period; 0.05 is a second reset
    assert times == pytest.approx([5.0, 5.1, 5.2, 5.3, 5.4, 14.3, 14.4, 14.5, 14.6, 14.7])
    assert clock.resets == 3 and clock.last_reset == (9.1, 0.05)


@pytest.mark.integration
def test_joined_recordings_are_analysed_to_the_end(tmp_path, sample_video):
    """End to end: the sample cut in two .ts files and joined; the person crosses in both
    halves, the run reads both (frames and track times), warns once and exits 0."""
    import av

    with av.open(str(sample_video)) as container:
        images = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    half = len(images) // 2
    first = write_ts(tmp_path / "a.ts", images[:half], fps=25)
    second = write_ts(tmp_path / "b.ts", images[half:], fps=25)
    joined = join(tmp_path / "ab.ts", first, second)
    seconds = len(images) / 25

    out = tmp_path / "out"
    result = run_cli("analyze", str(joined), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = next(line for line in result.stderr.splitlines() if "frames analysed" in line)
    assert int(summary.split()[0]) == round(seconds * 10)  # both halves at the 10 fps cap
    tracks = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert tracks and max(t["last_seen"] for t in tracks) > seconds / 2 + 1  # well into the second half
    warnings = [line for line in result.stderr.splitlines() if line.startswith("tracklens: warning:")]
    assert len(warnings) == 1 and "time stamps jump back" in warnings[0] and "ab.ts" in warnings[0]
