"""Perception with the default detectors on real photos: small faces are found and attached to
tracked people, no face is invented on badges or patches, unreadable faces track but are not read."""

from __future__ import annotations

import numpy as np
import pytest
from face_scenes import ASTRONAUT_FACE, wall
from tracklens.pipeline.config import PipelineConfig
from tracklens.pipeline.perception import Perception
from tracklens.pipeline.types import Frame

pytestmark = pytest.mark.integration


def _iou(a, b) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(rb - lt, 0, None)))
    return inter / (float(np.prod(a[2:] - a[:2])) + float(np.prod(b[2:] - b[:2])) - inter)


@pytest.fixture(scope="module")
def stages(models):
    from tracklens.pipeline.detectors import build_detector

    config = PipelineConfig()
    return build_detector(config.detection.person, models), build_detector(config.detection.face, models)


def _run(frames: list[Frame], stages, config: PipelineConfig = PipelineConfig()):
    perception = Perception(config, *stages, stream="cam", epoch=0, analysis_fps=10.0)
    results, crops = [], []
    for i in range(0, len(frames), 8):
        batch = perception.process(frames[i : i + 8])
        results += batch.results
        crops += batch.crops
    end = perception.finish()
    return results, crops + end.crops


def test_no_face_is_reported_on_the_badges_or_patches_of_the_demo_sample(sample_video, stages):
    """The astronaut wears a mission patch and a name badge; dlib's HOG detector found faces on
    them. Every face the default detector reports, on every analysed frame (full scans) and on
    every tracked person, is her face."""
    from tracklens.pipeline.sample import sample_positions
    from tracklens.pipeline.sources import open_source

    scale = 300 / 512
    positions = sample_positions(seconds=4.0)
    with open_source(sample_video, fps=10.0) as source:
        frames = list(source)
    truth = {f.index: np.array(ASTRONAUT_FACE) * scale + np.tile(positions[f.index], 2) for f in frames}
    person_detector, face_detector = stages
    raw = face_detector.detect([f.image for f in frames])
    assert all(len(d) == 1 for d in raw), [len(d) for d in raw]
    assert all(_iou(d.xyxy[0], truth[f.index]) > 0.5 for d, f in zip(raw, frames))
    results, _ = _run(frames, stages)
    attached = [(r.frame.index, p.face) for r in results for p in r.people if p.face is not None]
    assert len(attached) >= 0.9 * len(frames)
    assert all(_iou(face, truth[i]) > 0.5 for i, face in attached)


def test_faces_from_15_px_are_found_and_attached_to_tracked_people(stages):
    """Four people walking along a wall, their faces 15, 20, 30 and 60 px tall (the whole photo
    of the astronaut, scaled): each is one track with its face attached in nearly every frame;
    the two faces under ``crops.min_face_px`` track the person but are never sent for
    estimation."""
    import cv2
    from skimage import data

    photo = data.astronaut()
    face_h = ASTRONAUT_FACE[3] - ASTRONAUT_FACE[1]
    sizes = (15, 20, 30, 60)
    background = wall()
    frames, truths = [], []
    for i in range(30):
        image = background.copy()
        truth = []
        for row, size in enumerate(sizes):
            scale = size / face_h
            side = round(512 * scale)
            x, y = 60 + 7 * i + 200 * row, (40, 150, 290, 440)[row]
            image[y : y + side, x : x + side] = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
            truth.append(np.array(ASTRONAUT_FACE) * (side / 512) + [x, y, x, y])
        frames.append(Frame("cam", i, i / 10.0, 0.0, image))
        truths.append(truth)
    results, crops = _run(frames, stages)
    by_track: dict[str, list[tuple[int, np.ndarray | None]]] = {}
    for r in results:
        for p in r.people:
            by_track.setdefault(p.key, []).append((r.frame.index, p.face))
    assert len(by_track) == len(sizes), {k: len(v) for k, v in by_track.items()}
    owner = {}
    for key, seen in by_track.items():
        assert len(seen) >= 20, (key, len(seen))  # tracked from soon after the start (3 hits confirm) to the end
        faces = [(i, f) for i, f in seen if f is not None]
        assert len(faces) >= 0.9 * len(seen), (key, len(faces), len(seen))
        row = int(np.argmax([_iou(faces[0][1], t) for t in truths[faces[0][0]]]))
        assert all(_iou(f, truths[i][row]) > 0.3 for i, f in faces), key
        owner[sizes[row]] = key
    assert sorted(owner) == list(sizes)
    read = {c.track for c in crops if c.face is not None}
    assert read == {owner[30], owner[60]}  # 15 and 20 px faces are below min_face_px: tracked, not read


def test_a_face_that_cannot_be_read_anchors_a_track_but_gets_no_estimate(stages):
    """A low-confidence face (as a back of a head gives) keeps its person tracked, and no crop
    of it is ever sent; the same faces read once the score rule allows them."""
    import cv2
    from skimage import data

    photo = cv2.resize(data.astronaut(), (260, 260), interpolation=cv2.INTER_AREA)
    background = wall()
    frames = []
    for i in range(20):
        image = background.copy()
        image[200:460, 100 + 8 * i : 360 + 8 * i] = photo
        frames.append(Frame("cam", i, i / 10.0, 0.0, image))
    strict = PipelineConfig.model_validate({"crops": {"min_face_score": 0.99}})
    results, crops = _run(frames, stages, strict)
    assert {p.key for r in results for p in r.people} == {"cam:0:1"}
    assert crops == [] or all(c.face is None for c in crops)
    _, crops = _run(frames, stages)
    assert crops and all(c.face is not None for c in crops)
