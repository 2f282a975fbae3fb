"""ByteTrack: multi-object tracking by associating every detection box.

Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection Box" (ECCV 2022).
Each frame runs two associations against Kalman-predicted track boxes: first the high-confidence
detections against all confirmed tracks (tracked and recently lost), then the low-confidence
detections against the tracked ones still unmatched, which recovers people who are partly
occluded and therefore scored low. Tentative tracks become confirmed after ``min_hits``
consecutive matches and only then receive a public id, so ids are dense and never reused.

Everything is per instance: one process may hold a tracker per stream without any shared
counter, and :meth:`ByteTrackTracker.snapshot` / :meth:`ByteTrackTracker.restore` move the whole
state through plain JSON-compatible data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .kalman import BoxKalmanFilter, cxcywh_to_xyxy, xyxy_to_cxcywh
from .matching import assign, iou_matrix, top_aligned_iou

__all__ = ["ByteTrackConfig", "ByteTrackTracker", "TrackerOutput"]

_TENTATIVE, _TRACKED, _LOST = "tentative", "tracked", "lost"
_SNAPSHOT_VERSION = 1


@dataclass(frozen=True)
class ByteTrackConfig:
    """ByteTrack thresholds.

    Args:
        high_thresh: detections scoring at least this take part in the first association.
        low_thresh: detections between this and ``high_thresh`` take part only in the second
            association (recovering occluded people); lower ones are ignored.
        new_track_thresh: an unmatched high detection must score this to start a track.
        match_thresh: largest ``1 - IoU`` (score-fused) accepted in the first association.
        low_match_thresh: largest ``1 - IoU`` accepted in the second association.
        tentative_match_thresh: largest ``1 - IoU`` accepted for tentative tracks.
        lost_track_buffer: frames, counted at 30 fps, that a lost track is kept for re-matching;
            scaled by the real frame rate. Increasing it bridges longer occlusions but raises
            the chance of handing an old id to a new person.
        min_hits: consecutive matches before a track is confirmed and gets an id.
        fuse_score: multiply IoU by detection score in the first association.
        top_aligned: compare a track's box and a detection over their common height from the
            top (:func:`~.matching.top_aligned_iou`) instead of by plain IoU. A person's box
            changes its bottom when the anchor does (the person detector's body box, or a box
            derived from the face when that detector misses them) or when the legs leave the
            view; the head stays at the top. Boxes of equal height compare exactly as by IoU.
    """

    high_thresh: float = 0.5
    low_thresh: float = 0.1
    new_track_thresh: float = 0.6
    match_thresh: float = 0.8
    low_match_thresh: float = 0.5
    tentative_match_thresh: float = 0.7
    lost_track_buffer: int = 30
    min_hits: int = 2
    fuse_score: bool = True
    top_aligned: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_thresh <= self.high_thresh <= 1.0:
            raise ValueError("need 0 <= low_thresh <= high_thresh <= 1")
        if self.min_hits < 1 or self.lost_track_buffer < 0:
            raise ValueError("min_hits must be >= 1 and lost_track_buffer >= 0")


@dataclass(frozen=True)
class TrackerOutput:
    """Confirmed tracks matched in the current frame.

    Attributes:
        track_ids: ``(K,)`` int64 public ids, unique within one tracker instance.
        boxes: ``(K, 4)`` float32 xyxy detection boxes (not the Kalman estimate).
        scores: ``(K,)`` float32 detection confidences.
        det_index: ``(K,)`` int64 index of each box in the detections passed to ``update``.
    """

    track_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    det_index: np.ndarray

    def __len__(self) -> int:
        return len(self.track_ids)


@dataclass
class _Track:
    uid: int
    track_id: int | None
    state: str
    mean: np.ndarray
    cov: np.ndarray
    score: float
    hits: int
    start_frame: int
    last_frame: int
    det_index: int = -1

    def box(self) -> np.ndarray:
        return cxcywh_to_xyxy(self.mean[None, :4])[0]


@dataclass
class ByteTrackTracker:
    """One stream's ByteTrack state. Call :meth:`update` once per analysed frame, in order.

    Args:
        config: thresholds, see :class:`ByteTrackConfig`.
        frame_rate: analysed frames per second, which scales the lost-track buffer.
    """

    config: ByteTrackConfig = field(default_factory=ByteTrackConfig)
    frame_rate: float = 30.0
    frame_id: int = 0
    _next_id: int = 1
    _next_uid: int = 1
    _tracks: list[_Track] = field(default_factory=list)
    _kf: BoxKalmanFilter = field(default_factory=BoxKalmanFilter)

    @property
    def max_time_lost(self) -> int:
        """Lost-track buffer in analysed frames."""
        return max(1, int(round(self.frame_rate / 30.0 * self.config.lost_track_buffer)))

    @property
    def active_ids(self) -> list[int]:
        """Ids of confirmed tracks that are tracked or lost (not yet removed)."""
        return [t.track_id for t in self._tracks if t.track_id is not None]

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> TrackerOutput:
        """Advance one frame with ``(N, 4)`` xyxy boxes and ``(N,)`` scores in ``[0, 1]``."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(boxes) != len(scores):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise ValueError("boxes and scores must be finite")
        self.frame_id += 1
        cfg = self.config
        self._predict()
        for t in self._tracks:
            t.det_index = -1

        high = np.flatnonzero(scores >= cfg.high_thresh)
        low = np.flatnonzero((scores >= cfg.low_thresh) & (scores < cfg.high_thresh))

        confirmed = [t for t in self._tracks if t.state in (_TRACKED, _LOST)]
        rest_high = self._associate(confirmed, high, boxes, scores, cfg.match_thresh, cfg.fuse_score)
        still_tracked = [t for t in confirmed if t.state == _TRACKED and t.det_index < 0]
        self._associate(still_tracked, low, boxes, scores, cfg.low_match_thresh, False)
        for t in still_tracked:
            if t.det_index < 0:
                t.state = _LOST

        tentative = [t for t in self._tracks if t.state == _TENTATIVE]
        rest_high = self._associate(tentative, rest_high, boxes, scores, cfg.tentative_match_thresh, cfg.fuse_score)
        dropped = {t.uid for t in tentative if t.det_index < 0}

        for i in rest_high:
            if scores[i] >= cfg.new_track_thresh:
                self._start(boxes[i], scores[i], int(i))

        horizon = self.max_time_lost
        self._tracks = [
            t
            for t in self._tracks
            if t.uid not in dropped and not (t.state == _LOST and self.frame_id - t.last_frame > horizon)
        ]
        out = [t for t in self._tracks if t.track_id is not None and t.det_index >= 0]
        idx = np.array([t.det_index for t in out], dtype=np.int64)
        return TrackerOutput(
            track_ids=np.array([t.track_id for t in out], dtype=np.int64),
            boxes=boxes[idx].astype(np.float32).reshape(-1, 4),
            scores=scores[idx].astype(np.float32),
            det_index=idx,
        )

    def _predict(self) -> None:
        if not self._tracks:
            return
        mean = np.stack([t.mean for t in self._tracks])
        cov = np.stack([t.cov for t in self._tracks])
        lost = np.array([t.state != _TRACKED for t in self._tracks])
        # A track without fresh evidence keeps its size: extrapolating size velocity
        # blows lost boxes up or shrinks them to nothing within a second.
        mean[lost, 6:8] = 0.0
        mean, cov = self._kf.predict(mean, cov)
        for t, m, c in zip(self._tracks, mean, cov):
            t.mean, t.cov = m, c

    def _associate(
        self,
        tracks: list[_Track],
        det_idx: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        max_cost: float,
        fuse_score: bool,
    ) -> np.ndarray:
        """Match ``tracks`` to detections ``det_idx``; update the matched; return unmatched detections."""
        if not tracks or len(det_idx) == 0:
            return det_idx
        similarity = top_aligned_iou if self.config.top_aligned else iou_matrix
        iou = similarity(np.stack([t.box() for t in tracks]), boxes[det_idx])
        if fuse_score:
            iou = iou * scores[det_idx][None, :]
        pairs, _, unmatched = assign(1.0 - iou, max_cost)
        if len(pairs):
            matched = [tracks[r] for r in pairs[:, 0]]
            d = det_idx[pairs[:, 1]]
            mean, cov = self._kf.update(
                np.stack([t.mean for t in matched]), np.stack([t.cov for t in matched]), xyxy_to_cxcywh(boxes[d])
            )
            for t, m, c, i in zip(matched, mean, cov, d):
                t.mean, t.cov, t.det_index = m, c, int(i)
                t.score = float(scores[i])
                t.last_frame = self.frame_id
                t.hits += 1
                if t.state == _LOST:
                    t.state = _TRACKED
                elif t.state == _TENTATIVE and t.hits >= self.config.min_hits:
                    self._confirm(t)
        return det_idx[unmatched]

    def _start(self, box: np.ndarray, score: float, det_index: int) -> None:
        mean, cov = self._kf.initiate(xyxy_to_cxcywh(box[None]))
        track = _Track(
            uid=self._next_uid,
            track_id=None,
            state=_TENTATIVE,
            mean=mean[0],
            cov=cov[0],
            score=float(score),
            hits=1,
            start_frame=self.frame_id,
            last_frame=self.frame_id,
            det_index=det_index,
        )
        self._next_uid += 1
        if self.config.min_hits <= 1:
            self._confirm(track)
        self._tracks.append(track)

    def _confirm(self, track: _Track) -> None:
        track.state = _TRACKED
        track.track_id = self._next_id
        self._next_id += 1

    def snapshot(self) -> dict[str, Any]:
        """The full state as JSON-compatible plain data (see :meth:`restore`)."""
        return {
            "version": _SNAPSHOT_VERSION,
            "config": asdict(self.config),
            "frame_rate": self.frame_rate,
            "frame_id": self.frame_id,
            "next_id": self._next_id,
            "next_uid": self._next_uid,
            "tracks": [
                {
                    "uid": t.uid,
                    "track_id": t.track_id,
                    "state": t.state,
                    "mean": t.mean.tolist(),
                    "cov": t.cov.tolist(),
                    "score": t.score,
                    "hits": t.hits,
                    "start_frame": t.start_frame,
                    "last_frame": t.last_frame,
                }
                for t in self._tracks
            ],
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> ByteTrackTracker:
        """Rebuild a tracker from :meth:`snapshot` output; it continues the same ids."""
        if snapshot.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"unsupported tracker snapshot version {snapshot.get('version')!r}")
        tracker = cls(
            config=ByteTrackConfig(**snapshot["config"]),
            frame_rate=float(snapshot["frame_rate"]),
            frame_id=int(snapshot["frame_id"]),
            _next_id=int(snapshot["next_id"]),
            _next_uid=int(snapshot["next_uid"]),
        )
        tracker._tracks = [
            _Track(
                uid=int(t["uid"]),
                track_id=None if t["track_id"] is None else int(t["track_id"]),
                state=str(t["state"]),
                mean=np.asarray(t["mean"], dtype=np.float64),
                cov=np.asarray(t["cov"], dtype=np.float64),
                score=float(t["score"]),
                hits=int(t["hits"]),
                start_frame=int(t["start_frame"]),
                last_frame=int(t["last_frame"]),
            )
            for t in snapshot["tracks"]
        ]
        return tracker
