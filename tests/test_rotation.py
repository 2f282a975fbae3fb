"""Phone videos: a picture stored sideways, with a display matrix that turns it upright.

Regression: the display matrix was ignored, so a portrait phone video of a person was
analysed lying on its side (0 tracks, exit status 0), probe() reported the sideways size and
the annotated video came out sideways.
"""

from __future__ import annotations

import numpy as np
import pytest
from tracklens.pipeline.sources import FileSource, probe

# The display matrix a phone writes for a portrait video (FFmpeg's AV_PKT_DATA_DISPLAYMATRIX,
# the mp4/mov ``tkhd`` matrix: a=0, b=1, c=-1, d=0 in 16.16 fixed point, w=1 in 2.30): players
# show the stored picture turned 90 degrees clockwise.
PHONE_PORTRAIT = (0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)

# (container, how the display matrix is set, counter-clockwise quarter turns from the upright
# picture to the stored one, what probe() says turns it back). ``set_display_rotation`` takes
# counter-clockwise degrees, so the picture is stored turned the other way.
CASES = [
    pytest.param(".mov", PHONE_PORTRAIT, 1, 270, id="phone-portrait-matrix"),
    pytest.param(".mp4", 90, -1, 90, id="rotation-90"),
    pytest.param(".mp4", -90, 1, 270, id="rotation-minus-90"),
    pytest.param(".mp4", 180, 2, 180, id="rotation-180"),
    pytest.param(".mkv", 270, 1, 270, id="rotation-270"),
]


def write_rotated(path, frames, display, stored_turns: int, fps: int = 25):
    """Encode upright RGB ``frames`` as a camera does: each picture stored turned by
    ``stored_turns`` counter-clockwise quarter turns, with a display matrix (``display``: the
    rotation in degrees for PyAV's ``set_display_rotation``, or nine raw matrix entries) that
    makes players show it upright."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.pix_fmt = "yuv420p"
        stream.height, stream.width = np.rot90(frames[0], stored_turns).shape[:2]
        if isinstance(display, tuple):
            stream.set_display_matrix(display)
        elif display is not None:
            stream.set_display_rotation(display)
        for image in frames:
            stored = np.ascontiguousarray(np.rot90(image, stored_turns))
            for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _marked_portrait(width: int = 96, height: int = 160) -> np.ndarray:
    """A dark portrait picture with a white block in its top-left corner only."""
    image = np.full((height, width, 3), 50, np.uint8)
    image[:32, :24] = 255
    return image


def _corners(image: np.ndarray) -> list[float]:
    """Mean brightness of the four 16x16 corners: top-left, top-right, bottom-left, bottom-right."""
    ends = (slice(0, 16), slice(-16, None))
    return [float(image[rows, cols].mean()) for rows in ends for cols in ends]


@pytest.mark.parametrize("suffix, display, stored_turns, rotation_deg", CASES)
def test_frames_and_probe_are_upright(tmp_path, suffix, display, stored_turns, rotation_deg):
    upright = _marked_portrait()
    path = write_rotated(tmp_path / f"phone{suffix}", [upright] * 5, display, stored_turns)
    with FileSource(path, fps=None) as src:
        frames = list(src)
    assert len(frames) == 5
    for frame in frames:
        assert frame.size == (96, 160) and frame.image.flags.c_contiguous
        top_left, *others = _corners(frame.image)
        assert top_left > 200 and max(others) < 100, _corners(frame.image)
    info = probe(path)
    assert (info["width"], info["height"]) == (96, 160)
    assert info["rotation_deg"] == rotation_deg


def test_a_video_without_a_display_matrix_is_left_as_it_is(tmp_path):
    upright = _marked_portrait()
    path = write_rotated(tmp_path / "plain.mp4", [upright] * 3, None, 0)
    assert probe(path)["rotation_deg"] == 0
    with FileSource(path, fps=None) as src:
        (first, *_) = list(src)
    assert first.size == (96, 160) and _corners(first.image)[0] > 200


# The person scene: the astronaut photo walking across a brick wall, filmed in portrait.
WIDTH, HEIGHT, PERSON_PX, FPS, SECONDS = 720, 1280, 300, 25, 3.0


def _person_scene() -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Upright portrait frames of the astronaut crossing a wall, and her top-left corner
    ``(x, y)`` in each."""
    import cv2
    from skimage import data

    person = cv2.resize(data.astronaut(), (PERSON_PX, PERSON_PX), interpolation=cv2.INTER_AREA)
    wall = np.tile(data.brick(), (3, 2))[:HEIGHT, :WIDTH]
    background = np.repeat(wall[..., None], 3, axis=2)
    count = int(FPS * SECONDS)
    frames, corners = [], []
    for i in range(count):
        x = int(20 + (WIDTH - PERSON_PX - 40) * i / (count - 1))
        y = 500
        frame = background.copy()
        frame[y : y + PERSON_PX, x : x + PERSON_PX] = person
        frames.append(frame)
        corners.append((x, y))
    return frames, corners


@pytest.fixture(scope="module")
def person_videos(tmp_path_factory):
    """The same portrait scene stored upright and stored sideways as a phone does."""
    folder = tmp_path_factory.mktemp("phone")
    frames, corners = _person_scene()
    plain = write_rotated(folder / "upright.mp4", frames, None, 0)
    phone = write_rotated(folder / "phone.mov", frames, PHONE_PORTRAIT, 1)
    return plain, phone, corners


def _analyse(video, tmp_path, models, annotate=None):
    """One in-process analysis as ``tracklens analyze`` runs it; returns the job, its result and
    every analysed frame's result."""
    from tracklens.pipeline.config import PipelineConfig
    from tracklens.pipeline.jobs import Analysis

    seen = []
    job = Analysis(video, PipelineConfig(), tmp_path / "out", annotate=annotate, models=models)
    result = job.run(on_frame=seen.append)
    return job, result, seen


@pytest.mark.integration
def test_a_portrait_phone_video_is_analysed_upright(tmp_path, person_videos, models):
    """The person is found in the sideways-stored file as in the upright one, with the same
    labels; her boxes are in upright pixels where she is, and the annotated video is upright
    with no display matrix."""
    import av

    plain, phone, corners = person_videos
    _, upright_result, _ = _analyse(plain, tmp_path / "plain", models)
    job, result, seen = _analyse(phone, tmp_path / "phone", models, annotate=tmp_path / "annotated.mp4")

    assert len(upright_result.summaries) >= 1
    assert len(result.summaries) == len(upright_result.summaries) == result.tracks
    # her face read sideways gave no gender label at all: the labels must match the upright run's
    labels = [t.gender.label for t in upright_result.summaries]
    assert None not in labels and [t.gender.label for t in result.summaries] == labels
    assert result.state == "done" and result.error is None and result.output_error is None
    info = probe(phone)
    assert (info["width"], info["height"]) == (WIDTH, HEIGHT)
    assert all(r.frame.size == (WIDTH, HEIGHT) for r in seen)
    boxed = [r for r in seen if r.people]
    assert len(boxed) >= len(seen) // 2
    for r in boxed:
        x, y = corners[r.frame.index]
        x1, y1, x2, y2 = max(r.people, key=lambda p: (p.box[2] - p.box[0]) * (p.box[3] - p.box[1])).box
        # the box's centre lies on the photo, in upright coordinates
        centre = ((x1 + x2) / 2, (y1 + y2) / 2)
        assert x <= centre[0] <= x + PERSON_PX and y <= centre[1] <= y + PERSON_PX, (r.frame.index, (x, y), centre)

    assert result.annotated is not None
    info = probe(result.annotated)
    assert (info["width"], info["height"], info["rotation_deg"]) == (WIDTH, HEIGHT, 0)
    with av.open(str(result.annotated)) as container:
        first = next(container.decode(video=0))
        assert first.rotation == 0 and (first.width, first.height) == (WIDTH, HEIGHT)
