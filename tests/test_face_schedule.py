"""Face scan planning: when to scan the whole frame and which windows to scan otherwise."""

from __future__ import annotations

import numpy as np
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
