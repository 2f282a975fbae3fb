"""Scan planning, faces and people: when to scan the whole frame and which windows to scan otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from tracklens.pipeline.config import FaceScheduleConfig
from tracklens.pipeline.detectors.schedule import FaceScanPlanner, merge_overlapping
from tracklens.pipeline.types import PERSON, Detections

NO_FACES = np.zeros((0, 4), np.float32)


def _persons(*boxes):
    b = np.array(boxes, np.float32).reshape(-1, 4)
    return Detections(b, np.full(len(b), 0.8), np.full(len(b), PERSON))


def test_full_scans_follow_the_interval():
    planner = FaceScanPlanner(FaceScheduleConfig(full_scan_interval_s=0.3))
    full = [planner.regions(i / 10, _persons(), NO_FACES, 640, 480) is None for i in range(10)]
    assert full == [True, False, False, True, False, False, True, False, False, True]
    every = FaceScanPlanner(FaceScheduleConfig(full_scan_interval_s=0))
    assert all(every.regions(i / 10, _persons(), NO_FACES, 640, 480) is None for i in range(5))


def test_windows_cover_heads_and_tracked_faces_inside_the_frame():
    planner = FaceScanPlanner(FaceScheduleConfig(full_scan_interval_s=10, roi_margin=1.0, min_roi_px=96))
    planner.regions(0.0, _persons(), NO_FACES, 640, 480)  # the full scan
    regions = planner.regions(0.1, _persons([100, 100, 200, 400]), np.array([[600, 10, 630, 40]], np.float32), 640, 480)
    head, face = regions
    assert head.tolist() == [100, 100, 200, 220]  # top 40% of the person box
    assert face[2] == 640 and face[1] == 0  # window around the face, clipped to the frame
    assert face[2] - face[0] >= 48 and face[3] - face[1] >= 48
    small = planner.regions_around(np.array([[300, 300, 310, 310]], np.float32), 640, 480)[0]
    assert small.tolist() == [257, 257, 353, 353]  # at least min_roi_px


def test_overlapping_windows_are_scanned_once():
    boxes = np.array([[0, 0, 100, 100], [10, 10, 110, 110], [300, 300, 400, 400]], np.float32)
    merged = merge_overlapping(boxes)
    assert sorted(merged.tolist()) == [[0, 0, 110, 110], [300, 300, 400, 400]]
    assert merge_overlapping(np.zeros((0, 4))).shape == (0, 4)


def test_person_scans_are_tiled_on_schedule_and_only_around_tracked_people_in_between():
    from tracklens.pipeline.config import PersonScheduleConfig
    from tracklens.pipeline.detectors.schedule import PersonScanPlanner

    planner = PersonScanPlanner(PersonScheduleConfig(full_scan_interval_s=0.3, window_margin=0.5, min_window_px=100, max_windows=2))
    small = np.array([[100, 100, 140, 200]], np.float32)  # 100 px of a 720 px frame
    big = np.array([[600, 50, 900, 700]], np.float32)
    assert planner.windows(0.0, small, 1280, 720) is None  # the first frame: a tiled scan
    (window,) = planner.windows(0.1, small, 1280, 720)
    assert np.allclose(window, [20, 50, 220, 250])  # square, 2x the box's larger side, centred on it
    assert planner.windows(0.2, np.zeros((0, 4)), 1280, 720).shape == (0, 4)  # nobody tracked: nothing to scan
    both = planner.windows(0.25, np.concatenate([small, big]), 1280, 720)
    assert any(np.allclose(w, [0, 0, 1280, 720]) for w in both) and len(both) == 2  # a big person: the full frame
    assert planner.windows(0.3, small, 1280, 720) is None  # on schedule again
    crowd = np.array([[x, 100, x + 30, 200] for x in (100, 300, 500)], np.float32)
    assert planner.windows(0.4, crowd, 1280, 720) is None  # more small people than windows: tiles


@pytest.mark.integration
def test_a_window_around_a_person_finds_what_the_tiled_scan_finds(models):
    """scikit-image's cameraman (a real standing man) on the wall: a window around him finds
    the box the tiled scan finds, and, scaled up by the window, still finds him when he is too
    small for the tiles; an empty window list scans nothing."""
    import cv2
    from face_scenes import rgb, wall
    from skimage import data
    from tracklens.pipeline.config import SsdliteDetectorConfig
    from tracklens.pipeline.detectors import build_detector

    detector = build_detector(SsdliteDetectorConfig(), models)
    frames = []
    for side in (300, 200):
        image = wall()
        image[100 : 100 + side, 500 : 500 + side] = cv2.resize(rgb(data.camera()), (side, side), interpolation=cv2.INTER_AREA)
        frames.append(image)
    windows = [np.array([[400, 0, 900, 500]], np.float32), np.array([[400, 0, 800, 400]], np.float32)]  # ~2x his size
    tiled = detector.detect(frames)
    found = detector.detect_windows(frames, windows)
    big_tiled, big_window = tiled[0][int(np.argmax(tiled[0].confidence))], found[0][int(np.argmax(found[0].confidence))]
    lt = np.maximum(big_tiled.xyxy[0, :2], big_window.xyxy[0, :2])
    rb = np.minimum(big_tiled.xyxy[0, 2:], big_window.xyxy[0, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None))
    union = sum(np.prod(d.xyxy[0, 2:] - d.xyxy[0, :2]) for d in (big_tiled, big_window)) - inter
    assert inter / union > 0.8
    small = found[1][int(np.argmax(found[1].confidence))]
    assert small.confidence[0] > 2 * tiled[1].confidence.max(initial=0.05)  # closer, the window sees him better
    assert small.xyxy[0, 0] < 520 and small.xyxy[0, 3] > 250
    assert [len(d) for d in detector.detect_windows(frames[:1], [np.zeros((0, 4))])] == [0]
