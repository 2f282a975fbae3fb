"""ByteTrack scored by TrackEval's own HOTA, CLEAR (MOTA) and Identity (IDF1) code."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import Sequence, make_sequence
from tracklens.trackers import ByteTrackConfig, ByteTrackTracker, iou_matrix

trackeval = pytest.importorskip("trackeval", reason="installed by `make test` (pip install --no-deps trackeval)")


def _run(seq: Sequence, fps: float = 10.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The tracker with the pipeline's shipped defaults, at the default analysis rate."""
    from tracklens.pipeline.config import TrackerConfig

    tracker = ByteTrackTracker(ByteTrackConfig(**TrackerConfig().model_dump(exclude={"type"})), frame_rate=fps)
    out = []
    for boxes, scores in seq.dets:
        res = tracker.update(boxes, scores)
        out.append((res.track_ids.copy(), res.boxes.astype(np.float64)))
    return out


def _trackeval_data(seq: Sequence, hyp: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    gt_map = {g: i for i, g in enumerate(sorted({int(i) for ids, _ in seq.gt for i in ids}))}
    tr_map = {g: i for i, g in enumerate(sorted({int(i) for ids, _ in hyp for i in ids}))}
    data = {"gt_ids": [], "tracker_ids": [], "similarity_scores": [], "num_timesteps": len(seq.gt)}
    for (gids, gboxes), (tids, tboxes) in zip(seq.gt, hyp):
        data["gt_ids"].append(np.array([gt_map[int(i)] for i in gids], dtype=int))
        data["tracker_ids"].append(np.array([tr_map[int(i)] for i in tids], dtype=int))
        data["similarity_scores"].append(iou_matrix(gboxes, tboxes))
    data["num_gt_ids"], data["num_tracker_ids"] = len(gt_map), len(tr_map)
    data["num_gt_dets"] = sum(len(g) for g in data["gt_ids"])
    data["num_tracker_dets"] = sum(len(t) for t in data["tracker_ids"])
    return data


def _score(seq: Sequence, hyp) -> dict[str, float]:
    from trackeval.metrics import CLEAR, HOTA, Identity

    data = _trackeval_data(seq, hyp)
    hota = HOTA().eval_sequence(data)
    clear = CLEAR({"THRESHOLD": 0.5, "PRINT_CONFIG": False}).eval_sequence(data)
    ident = Identity({"THRESHOLD": 0.5, "PRINT_CONFIG": False}).eval_sequence(data)
    return {"HOTA": float(np.mean(hota["HOTA"])), "MOTA": float(clear["MOTA"]), "IDF1": float(ident["IDF1"]),
            "IDSW": int(clear["IDSW"])}  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_bytetrack_scores_on_synthetic_ground_truth(seed):
    seq = make_sequence(seed)
    scores = _score(seq, _run(seq))
    assert scores["IDF1"] >= 0.9, scores
    assert scores["MOTA"] >= 0.8, scores
    assert scores["HOTA"] >= 0.7, scores


def test_metrics_punish_a_tracker_that_swaps_ids():
    """The harness must be able to fail: relabelling every 10 frames drives IDF1 well down."""
    seq = make_sequence(0)
    hyp = _run(seq)
    swapped = [(ids + 1000 * (t // 10), boxes) for t, (ids, boxes) in enumerate(hyp)]
    assert _score(seq, swapped)["IDF1"] < 0.6 < _score(seq, hyp)["IDF1"]


def test_no_id_reuse_on_synthetic_sequences():
    for seed in range(4):
        seq = make_sequence(seed, people=8, occlusions=4)
        hyp = _run(seq)
        last_frame: dict[int, int] = {}
        first_frame: dict[int, int] = {}
        for t, (ids, _) in enumerate(hyp):
            for i in ids:
                first_frame.setdefault(int(i), t)
                last_frame[int(i)] = t
        # each id maps to one gt person over its whole life: majority overlap
        owners: dict[int, set[int]] = {}
        for (gids, gboxes), (tids, tboxes) in zip(seq.gt, hyp):
            iou = iou_matrix(tboxes, gboxes)
            for k, tid in enumerate(tids):
                if iou.shape[1] and iou[k].max() > 0.5:
                    owners.setdefault(int(tid), set()).add(int(gids[iou[k].argmax()]))
        reused = {tid: o for tid, o in owners.items() if len(o) > 1}
        assert not reused, f"seed {seed}: ids that followed more than one person: {reused}"
