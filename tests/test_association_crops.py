"""Face<->body association and crop selection under the per-track budget."""

from __future__ import annotations

import numpy as np
import pytest
from tracklens.pipeline.association import associate
from tracklens.pipeline.config import AssociationConfig, CropConfig
from tracklens.pipeline.crops import CropSelector
from tracklens.pipeline.types import FACE, PERSON, Detections, Person

ACFG = AssociationConfig()


def _dets(boxes, conf, cls):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return Detections(boxes, np.full(len(boxes), conf, np.float32), np.full(len(boxes), cls))


def test_each_body_gets_the_face_in_its_head_region():
    bodies = _dets([[100, 100, 200, 400], [300, 100, 400, 400]], 0.8, PERSON)
    faces = _dets([[320, 110, 370, 160], [125, 110, 175, 160]], 0.9, FACE)
    people = associate(bodies, faces, 1280, 720, ACFG)
    assert len(people) == 2
    assert people[0].face.tolist() == [125, 110, 175, 160]
    assert people[1].face.tolist() == [320, 110, 370, 160]
    assert not any(p.derived_body for p in people)


def test_one_face_per_person_and_one_person_per_face():
    # two faces in one body: the higher one wins, the other becomes its own person
    bodies = _dets([[100, 100, 300, 500]], 0.8, PERSON)
    faces = _dets([[150, 110, 200, 160], [160, 200, 210, 250]], 0.9, FACE)
    people = associate(bodies, faces, 1280, 720, ACFG)
    assert len(people) == 2
    assert people[0].face.tolist() == [150, 110, 200, 160]
    assert people[1].derived_body and people[1].face.tolist() == [160, 200, 210, 250]


def test_a_face_at_the_feet_is_not_that_persons_face():
    bodies = _dets([[100, 100, 200, 400]], 0.8, PERSON)
    faces = _dets([[120, 340, 160, 380]], 0.9, FACE)
    people = associate(bodies, faces, 1280, 720, ACFG)
    assert people[0].face is None and people[1].derived_body


def test_a_face_without_a_body_is_a_person_with_a_derived_body_box():
    faces = _dets([[600, 100, 660, 170]], 0.9, FACE)
    (person,) = associate(Detections.empty(), faces, 1280, 720, ACFG)
    x0, y0, x1, y1 = person.box
    assert person.derived_body and person.confidence == pytest.approx(0.9)
    assert x0 < 600 and x1 > 660 and y0 < 100 and y1 > 170 + 200
    assert 0 <= x0 and x1 <= 1280 and y1 <= 720


def test_a_faint_body_with_a_clear_face_is_tracked_with_the_face_confidence():
    bodies = _dets([[100, 100, 200, 400]], 0.15, PERSON)
    faces = _dets([[125, 110, 175, 160]], 0.9, FACE)
    (person,) = associate(bodies, faces, 1280, 720, ACFG)
    assert person.confidence == pytest.approx(0.9)



def test_a_half_face_inside_a_face_is_not_a_second_person():
    """Regression (boxes from a real clip): CenterFace boxed a portrait's face and, less sure,
    a half of it inside (its NMS keeps a small box inside a big one). The half face won the
    body, the real face became a second person with a derived body, and that fragment took the
    id of the person crossing behind her. A face mostly inside a more confident face is dropped."""
    bodies = _dets([[557, 194, 870, 512]], 0.9, PERSON)
    boxes = np.array([[691, 248, 790, 370], [685, 260, 722, 347]], np.float32)
    faces = Detections(boxes, np.array([0.95, 0.37], np.float32), np.full(2, FACE))
    (person,) = associate(bodies, faces, 1280, 720, ACFG)
    assert person.face.tolist() == [691, 248, 790, 370] and not person.derived_body
    # two faces side by side (two people close together) both stay
    boxes = np.array([[600, 250, 660, 320], [665, 250, 725, 320]], np.float32)
    apart = Detections(boxes, np.array([0.9, 0.5], np.float32), np.full(2, FACE))
    assert len(associate(Detections.empty(), apart, 1280, 720, ACFG)) == 2

def _textured(h=720, w=1280, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _person(face_h: float, conf=0.9) -> Person:
    face = np.array([600, 100, 600 + face_h, 100 + face_h], np.float32)
    body = np.array([550, 80, 650 + face_h, 600], np.float32)
    return Person(body, conf, face, conf, False)


def _run(sel, seconds: float, sizes=lambda t: 80, needs=None, fps: int = 10) -> list[tuple[float, str]]:
    """Offer one person every frame; ``needs(t)`` (when given) is what the track book says
    after each request. Returns the requests' times and reasons."""
    image, requests = _textured(), []
    for i in range(int(seconds * fps)):
        t = i / fps
        for crop in sel.offer(image, t, [("s:0:1", _person(sizes(t)))]):
            requests.append((round(t, 1), crop.reason))
            if needs is not None:
                sel.set_needs("s:0:1", needs(t))
    return requests


def test_the_policy_asks_early_confirms_once_then_only_while_unsure_within_its_budget():
    """Regression: a person crossing a 10 s clip was asked about ~6 times (one request per
    1.5 s, up to 12) although the fused answer had settled after the second."""
    cfg = CropConfig(first_after_s=0.3, confirm_after_s=1.0, refresh_s=1.5, per_minute=3.0)
    unsure = _run(CropSelector(cfg), 60.0)  # the book never settles: at most 2 + 3 per minute
    assert unsure == [(0.3, "first"), (1.3, "confirm"), (20.0, "uncertain:age,expression,gender"),
                      (40.0, "uncertain:age,expression,gender")]  # fmt: skip
    settled = _run(CropSelector(cfg), 60.0, needs=lambda t: frozenset())
    assert settled == [(0.3, "first"), (1.3, "confirm"), (31.3, "expression refresh")]
    gender_only = _run(CropSelector(cfg), 30.0, needs=lambda t: frozenset({"gender"}) if t < 25 else frozenset())
    assert gender_only == [(0.3, "first"), (1.3, "confirm"), (20.0, "uncertain:gender")]
    long = _run(CropSelector(cfg), 600.0, fps=2)
    assert len(long) <= 2 + 3 * 10


def test_a_markedly_better_crop_is_asked_about_even_when_settled():
    cfg = CropConfig(first_after_s=0.3, confirm_after_s=1.0, refresh_s=1.5, per_minute=6.0)
    grows = _run(CropSelector(cfg), 20.0, sizes=lambda t: 40 if t < 12 else 120, needs=lambda t: frozenset())
    assert grows == [(0.3, "first"), (1.3, "confirm"), (12.0, "better crop")]


def test_the_best_crop_since_the_last_request_is_sent():
    sel = CropSelector(CropConfig(first_after_s=0.15, refresh_s=1.0))
    image = _textured()
    sizes = [40, 120, 60]
    out = []
    for i, size in enumerate(sizes):
        out += sel.offer(image, i * 0.1, [("s:0:1", _person(size))])
    assert len(out) == 1 and out[0].face_px == pytest.approx(120)


def test_settled_tracks_wait_and_tiny_faces_are_never_sent():
    sel = CropSelector(CropConfig(first_after_s=0.0, confirm_after_s=0.0, min_face_px=24))
    image = _textured()
    assert sel.offer(image, 0.0, [("s:0:1", _person(12))]) == []
    assert len(sel.offer(image, 0.0, [("s:0:2", _person(60))])) == 1
    assert len(sel.offer(image, 0.1, [("s:0:2", _person(60))])) == 1  # the confirmation
    sel.set_needs("s:0:2", frozenset())
    assert sel.offer(image, 5.0, [("s:0:2", _person(60))]) == []


def test_a_track_that_ends_before_its_first_request_still_gets_its_best_crop():
    sel = CropSelector(CropConfig(first_after_s=10.0))
    image = _textured()
    sel.offer(image, 0.0, [("s:0:1", _person(50))])
    sel.offer(image, 0.1, [("s:0:1", _person(90))])
    crop = sel.finish("s:0:1")
    assert crop is not None and crop.face_px == pytest.approx(90)
    assert sel.finish("s:0:1") is None


def test_face_box_is_relative_to_the_face_crop():
    sel = CropSelector(CropConfig(first_after_s=0.0, face_margin=0.5))
    image = _textured()
    (crop,) = sel.offer(image, 0.0, [("s:0:1", _person(60))])
    x0, y0, x1, y1 = crop.face_box
    assert (x1 - x0, y1 - y0) == (60, 60)
    assert crop.face.shape[:2] == (120, 120)
    np.testing.assert_array_equal(crop.face[int(y0) : int(y1), int(x0) : int(x1)], image[100:160, 600:660])
