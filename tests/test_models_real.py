"""The real pretrained detectors and specialist on a real photo (scikit-image's astronaut)."""

from __future__ import annotations

import numpy as np
import pytest
from tracklens.pipeline.config import DlibFaceDetectorConfig, SpecialistEstimatorConfig, SsdliteDetectorConfig
from tracklens.pipeline.detectors import build_detector
from tracklens.pipeline.detectors.ssdlite import tile_windows
from tracklens.pipeline.estimators import build_estimator
from tracklens.pipeline.types import EXPRESSIONS, Crop


@pytest.fixture(scope="module")
def face_box(astronaut, models):
    faces = build_detector(DlibFaceDetectorConfig(), models).detect([astronaut])[0]
    assert len(faces) == 1
    return faces.xyxy[0]


def test_person_detector_finds_the_astronaut(astronaut, models):
    det = build_detector(SsdliteDetectorConfig(tile_grid=1), models).detect([astronaut])[0]
    assert len(det) >= 1 and det.confidence.max() > 0.6
    x0, y0, x1, y1 = det.xyxy[det.confidence.argmax()]
    assert x1 - x0 > 200 and y1 - y0 > 250  # her whole upper body


def test_tiles_cover_the_frame_with_overlap():
    wins = tile_windows(1280, 720, 2, 0.2)
    assert wins[0] == (0, 0, 1280, 720) and len(wins) == 5
    covered = np.zeros((720, 1280), bool)
    for x0, y0, x1, y1 in wins[1:]:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert wins[1][2] > wins[2][0]  # neighbours overlap


def test_batched_detection_equals_one_by_one(astronaut, models):
    det = build_detector(SsdliteDetectorConfig(), models)
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    batch = det.detect([astronaut, flipped])
    single = [det.detect([astronaut])[0], det.detect([flipped])[0]]
    for a, b in zip(batch, single):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)


def test_face_detector_finds_her_face(face_box):
    x0, y0, x1, y1 = face_box
    assert 150 < (x0 + x1) / 2 < 300 and 80 < (y0 + y1) / 2 < 200


def _crop(image, box, key="s:0:1", quality=1.0):
    return Crop(key, 0.0, image, np.asarray(box, np.float32), image, quality, face_px=float(box[3] - box[1]))


def test_specialist_reads_a_smiling_woman(astronaut, face_box, models):
    est = build_estimator(SpecialistEstimatorConfig(), models)
    (e,) = est.estimate([_crop(astronaut, face_box)])
    assert e.valid and e.source == "specialist"
    assert e.p_female > 0.7
    assert EXPRESSIONS[int(np.argmax(e.expression))] == "happy"
    assert 20 <= e.age <= 50 and e.age_std > 0
    assert sum(e.expression) == pytest.approx(1.0, abs=1e-5)


def test_specialist_is_list_in_list_out_in_order(astronaut, face_box, models):
    est = build_estimator(SpecialistEstimatorConfig(batch_size=2), models)
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    x0, y0, x1, y1 = face_box
    fbox = np.array([512 - x1, y0, 512 - x0, y1], np.float32)
    no_face = Crop("s:0:3", 0.0, None, None, astronaut, 0.1)
    crops = [_crop(astronaut, face_box, "s:0:1"), no_face, _crop(flipped, fbox, "s:0:2"), _crop(astronaut, face_box, "s:0:4")]
    out = est.estimate(crops)
    assert [e.track for e in out] == ["s:0:1", "s:0:3", "s:0:2", "s:0:4"]
    assert not out[1].valid and out[1].reason == "no face in crop"
    assert out[0].age == pytest.approx(out[3].age, abs=1e-4)  # same crop, different batch position
    (alone,) = est.estimate([crops[2]])
    assert out[2].age == pytest.approx(alone.age, abs=1e-3)


def test_expression_is_left_out_on_faces_too_small_to_read(astronaut, face_box, models):
    est = build_estimator(SpecialistEstimatorConfig(min_expression_face_px=500), models)
    (e,) = est.estimate([_crop(astronaut, face_box)])
    assert e.expression is None and e.age is not None
