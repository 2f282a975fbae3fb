"""ByteTrack unit behaviour: occlusion, id hygiene, independence, snapshot/restore."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic import make_sequence
from tracklens.trackers import ByteTrackConfig, ByteTrackTracker


def _box(x: float, y: float = 100.0, w: float = 40.0, h: float = 100.0) -> np.ndarray:
    return np.array([[x, y, x + w, y + h]])


def _walk(tracker: ByteTrackTracker, xs, score: float = 0.9):
    return [tracker.update(_box(x), np.array([score])) for x in xs]


def test_track_is_confirmed_after_min_hits_and_keeps_its_id():
    tracker = ByteTrackTracker(ByteTrackConfig(min_hits=3), frame_rate=10)
    outs = _walk(tracker, [10, 15, 20, 25, 30])
    assert [len(o) for o in outs] == [0, 0, 1, 1, 1]
    assert {int(o.track_ids[0]) for o in outs[2:]} == {1}


def test_id_survives_a_short_occlusion():
    tracker = ByteTrackTracker(ByteTrackConfig(min_hits=2, lost_track_buffer=30), frame_rate=10)
    before = _walk(tracker, range(0, 50, 5))
    for _ in range(6):  # 0.6 s with no detection at all
        tracker.update(np.zeros((0, 4)), np.zeros(0))
    after = _walk(tracker, range(80, 120, 5))
    assert before[-1].track_ids.tolist() == after[-1].track_ids.tolist() == [1]


def test_low_score_boxes_keep_a_track_alive():
    """The second association: a partly occluded person scored 0.3 still extends the track."""
    tracker = ByteTrackTracker(ByteTrackConfig(min_hits=2), frame_rate=10)
    _walk(tracker, range(0, 30, 5))
    low = _walk(tracker, range(30, 60, 5), score=0.3)
    assert all(o.track_ids.tolist() == [1] for o in low)


def test_lost_track_is_dropped_after_the_buffer_and_its_id_is_not_reused():
    tracker = ByteTrackTracker(ByteTrackConfig(min_hits=2, lost_track_buffer=30), frame_rate=10)
    _walk(tracker, range(0, 30, 5))
    for _ in range(tracker.max_time_lost + 2):
        tracker.update(np.zeros((0, 4)), np.zeros(0))
    assert tracker.active_ids == []
    outs = _walk(tracker, [0, 5, 10])
    assert outs[-1].track_ids.tolist() == [2]


def test_lost_buffer_scales_with_frame_rate():
    cfg = ByteTrackConfig(lost_track_buffer=30)
    assert ByteTrackTracker(cfg, frame_rate=30).max_time_lost == 30
    assert ByteTrackTracker(cfg, frame_rate=10).max_time_lost == 10


def test_many_trackers_in_one_process_do_not_share_ids():
    a = ByteTrackTracker(ByteTrackConfig(min_hits=1))
    b = ByteTrackTracker(ByteTrackConfig(min_hits=1))
    a.update(np.concatenate([_box(0), _box(200)]), np.array([0.9, 0.9]))
    out_b = b.update(_box(0), np.array([0.9]))
    out_a = a.update(np.concatenate([_box(2), _box(202), _box(400)]), np.array([0.9, 0.9, 0.9]))
    assert out_b.track_ids.tolist() == [1]
    assert sorted(out_a.track_ids.tolist()) == [1, 2, 3]


def test_det_index_points_at_the_matched_detection():
    tracker = ByteTrackTracker(ByteTrackConfig(min_hits=1))
    boxes = np.concatenate([_box(0), _box(300), _box(600)])
    tracker.update(boxes, np.array([0.9, 0.9, 0.9]))
    out = tracker.update(boxes[::-1] + 2, np.array([0.9, 0.9, 0.9]))
    for det, box in zip(out.det_index, out.boxes):
        np.testing.assert_allclose(box, (boxes[::-1] + 2)[det])


def test_snapshot_restore_continues_exactly():
    seq = make_sequence(5)
    cfg = ByteTrackConfig(min_hits=2, lost_track_buffer=60)
    whole = ByteTrackTracker(cfg, frame_rate=10)
    first = ByteTrackTracker(cfg, frame_rate=10)
    half = len(seq.dets) // 2
    expected = [whole.update(b, s).track_ids.tolist() for b, s in seq.dets]
    for b, s in seq.dets[:half]:
        first.update(b, s)
    snap = json.loads(json.dumps(first.snapshot()))  # plain data survives JSON
    resumed = ByteTrackTracker.restore(snap)
    got = [resumed.update(b, s).track_ids.tolist() for b, s in seq.dets[half:]]
    assert got == expected[half:]
    assert any(got), "the second half must have tracks for this test to mean anything"


def test_bad_input_is_rejected():
    tracker = ByteTrackTracker()
    with pytest.raises(ValueError, match="boxes but"):
        tracker.update(np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        tracker.update(np.array([[0, 0, np.nan, 1]]), np.array([0.9]))
    with pytest.raises(ValueError):
        ByteTrackConfig(low_thresh=0.6, high_thresh=0.5)
    with pytest.raises(ValueError, match="snapshot version"):
        ByteTrackTracker.restore({"version": 99})


def test_top_aligned_iou_ignores_how_far_down_a_box_reaches():
    from tracklens.trackers.matching import iou_matrix, top_aligned_iou

    body = np.array([[100.0, 50.0, 200.0, 250.0]])
    derived = np.array([[100.0, 50.0, 200.0, 450.0]])  # the same head and width, a guessed bottom
    legs = np.array([[100.0, 250.0, 200.0, 450.0]])  # the lower half of the derived box, no head
    moved = body + [10.0, 5.0, 10.0, 5.0]
    assert top_aligned_iou(body, derived)[0, 0] == pytest.approx(1.0)
    assert iou_matrix(body, derived)[0, 0] == pytest.approx(0.5)
    assert top_aligned_iou(derived, legs)[0, 0] == 0.0 < iou_matrix(derived, legs)[0, 0]
    assert top_aligned_iou(body, moved)[0, 0] == pytest.approx(iou_matrix(body, moved)[0, 0])  # equal heights: IoU
    assert top_aligned_iou(body, np.zeros((0, 4))).shape == (1, 0)


@pytest.mark.parametrize("top_aligned", [True, False])
def test_a_person_keeps_the_id_when_the_anchor_flips_back_to_the_body_beside_a_crossing_person(top_aligned):
    """Regression (boxes from a real clip: two portraits crossing, the person detector missing
    one of them for 2.5 s): while missed she was tracked on the tall box derived from her face;
    when the detector found her again, her body box overlapped her own track only 0.5 (IoU)
    and a box on her lower body (no head) overlapped it 0.35, so the assignment gave her body
    to the other person's track next to her, the lower box to hers, and after the crossing the
    other person came out with a new id. Compared from the top, her body box is hers."""
    config = ByteTrackConfig(high_thresh=0.45, new_track_thresh=0.45, min_hits=3, top_aligned=top_aligned)
    tracker = ByteTrackTracker(config, frame_rate=10.0)
    for k in range(28, 40):  # both tracked on face-derived boxes, walking towards each other
        her = [619 + 10 * (38 - k), 180, 922 + 10 * (38 - k), 720]
        other = [521 - 11 * (38 - k), 206, 672 - 11 * (38 - k), 697]
        out = tracker.update(np.array([her, other], float), np.array([0.94, 0.89]))
    her_id, other_id = (int(out.track_ids[list(out.det_index).index(i)]) for i in (0, 1))
    body, lower_body = [545, 213, 893, 559], [603, 329, 907, 516]
    out = tracker.update(np.array([lower_body, body], float), np.array([0.77, 0.91]))
    got = dict(zip(out.det_index.tolist(), out.track_ids.tolist()))
    if top_aligned:
        assert got.get(1) == her_id and other_id not in got.values()
    else:  # what plain IoU did
        assert got.get(1) == other_id
