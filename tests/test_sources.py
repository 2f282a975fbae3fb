"""File sources: containers, codecs, the fps cap, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_video
from tracklens.pipeline.errors import InputError
from tracklens.pipeline.sources import FileSource, FpsCap, open_source, probe


@pytest.mark.parametrize("suffix, codec", [(".mp4", "libx264"), (".mkv", "libx264"), (".avi", "mpeg4"), (".mkv", "libvpx-vp9")])
def test_decodes_containers_and_codecs(tmp_path, suffix, codec):
    path = write_video(tmp_path / f"v{suffix}", frames=30, fps=30, codec=codec)
    with open_source(path, stream="cam1", fps=None) as src:
        frames = list(src)
    assert len(frames) == 30
    assert frames[0].stream == "cam1" and frames[0].size == (160, 120)
    assert frames[0].image.dtype == np.uint8 and frames[0].image.shape == (120, 160, 3)
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and pts[-1] == pytest.approx(29 / 30, abs=0.02)


def test_fps_cap_decodes_everything_and_hands_on_a_subset(tmp_path):
    path = write_video(tmp_path / "v.mp4", frames=60, fps=30)
    with FileSource(path, fps=10) as src:
        frames = list(src)
        assert src.decoded == 60
        assert src.analysis_fps == 10
    assert [f.index for f in frames] == list(range(0, 60, 3))
    assert np.diff([f.pts for f in frames]) == pytest.approx(0.1, abs=1e-3)


def test_a_source_skipping_to_a_saved_frame_hands_on_the_same_frames_as_a_full_run(tmp_path):
    """A job taken over goes on after its snapshot's frame: the frames after it are those a
    full run hands on (same indices, same times: the fps cap and the clock saw every frame),
    and a stopped source ends quietly (no "truncated" error, no "nothing decoded" error)."""
    path = write_video(tmp_path / "v.mp4", frames=60, fps=30)
    with FileSource(path, fps=10) as src:
        full = [(f.index, round(f.pts, 6)) for f in src]
    with FileSource(path, fps=10, skip_through=30) as src:
        rest = [(f.index, round(f.pts, 6)) for f in src]
        assert src.decoded == 60 and src.error is None
    assert rest == [f for f in full if f[0] > 30] and rest
    with FileSource(path, fps=10) as src:
        src.stop()  # a job cancelled while it opened (or skipped): nothing more is decoded
        assert list(src) == [] and src.decoded == 0 and src.error is None


def test_fps_cap_thins_rates_that_are_not_multiples():
    cap = FpsCap(10)
    kept = [i for i in range(250) if cap.keep(i / 25)]  # 10 s at 25 fps
    assert len(kept) == 100
    gaps = np.diff(kept) / 25
    assert gaps.min() >= 0.08 - 1e-9 and gaps.max() <= 0.12 + 1e-9


def test_probe_reports_the_stream(tmp_path):
    info = probe(write_video(tmp_path / "v.mp4", frames=30, fps=30))
    assert (info["width"], info["height"], info["fps"], info["codec"]) == (160, 120, 30.0, "h264")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        FileSource(tmp_path / "nope.mp4")


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        FileSource(tmp_path / "empty.mp4")


def test_text_file_renamed_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are my meeting notes, not a video\n" * 20)
    with pytest.raises(InputError, match="cannot read .* as a video"):
        FileSource(path)


def test_truncated_mp4_without_its_index(tmp_path):
    path = write_video(tmp_path / "v.mp4", frames=60)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the moov atom is at the end: gone
    with pytest.raises(InputError, match="truncated"):
        FileSource(cut)


def test_stream_that_breaks_off_keeps_what_was_decoded(tmp_path):
    """A .ts stream cut mid-way decodes up to the cut and says so instead of raising."""
    path = write_video(tmp_path / "v.ts", frames=90)
    data = path.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2] + b"\x00garbage" * 500)
    with FileSource(cut, fps=None) as src:
        frames = list(src)
    assert 0 < len(frames) < 90


def _faststart_video(path, frames=90):
    """An mp4 with its index (moov) up front, as streaming-friendly encoders write it."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(frames):
            img = np.random.default_rng(i).integers(0, 255, (120, 160, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_truncated_mp4_with_its_index_up_front_is_reported(tmp_path):
    """Such a file opens and decodes, then just stops: FFmpeg raises nothing, so the source
    compares what it decoded with what the header declares."""
    data = _faststart_video(tmp_path / "v.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with FileSource(cut, fps=None) as src:
        frames = list(src)
    assert 0 < len(frames) < 90
    assert "of the 90 frames its header declares" in src.error
    with FileSource(tmp_path / "v.mp4", fps=None) as whole:
        assert len(list(whole)) == 90 and whole.error is None
