"""Annotated output video: boxes, track ids and the current age/gender/expression labels."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import OutputError
from .outputs import partial_path
from .summary import TrackSummary
from .types import FrameResult
from .video_io import VideoWriter

__all__ = ["Annotator", "label_of"]


def label_of(track_id: int, summary: TrackSummary | None) -> str:
    """``#3 F 31y happy``: id, then whatever labels the track has so far."""
    parts = [f"#{track_id}"]
    if summary is not None:
        if summary.gender.label:
            parts.append("F" if summary.gender.label == "female" else "M")
        if summary.age.mean is not None:
            parts.append(f"{summary.age.mean:.0f}y")
        if summary.expression.label:
            parts.append(summary.expression.label)
    return " ".join(parts)


class Annotator:
    """Draws each analysed frame with supervision and writes it at the analysis rate.

    Frames and boxes arrive in upright pixels (sources turn pictures stored sideways), so the
    video is written upright, with no rotation flag for players to apply.

    The video is written to ``NAME.partial.EXT`` and renamed to ``path`` by :meth:`close`,
    which finalises the container (call it on every exit path): an older file at ``path`` is
    replaced only by a playable one.

    Args:
        path: output video file (mp4, mkv, mov, m4v).
        fps: analysis frame rate (the rate of the frames it receives).
        lookup: track key -> current summary (or None).

    Raises:
        OutputError: the file cannot be written (also from ``__call__`` and ``close``).
    """

    def __init__(self, path: str | Path, fps: float, lookup: Callable[[str], TrackSummary | None]) -> None:
        import supervision as sv

        self._sv = sv
        self.path = Path(path)
        self._partial = partial_path(self.path)
        self.frames = 0
        self._writer = self._guard(lambda: VideoWriter(self._partial, fps))
        self._lookup = lookup
        self._boxes = sv.BoxAnnotator(thickness=2, color_lookup=sv.ColorLookup.TRACK)
        self._faces = sv.BoxAnnotator(thickness=1, color=sv.Color.WHITE, color_lookup=sv.ColorLookup.INDEX)
        self._labels = sv.LabelAnnotator(text_scale=0.6, text_padding=4, color_lookup=sv.ColorLookup.TRACK)

    def __call__(self, result: FrameResult) -> None:
        sv = self._sv
        scene = result.frame.image.copy()
        people = result.people
        if people:
            ids = np.array([p.track_id for p in people])
            bodies = sv.Detections(
                xyxy=np.array([p.box for p in people], np.float32), tracker_id=ids, class_id=np.zeros(len(ids), int)
            )
            faces = [p.face for p in people if p.face is not None]
            scene = self._boxes.annotate(scene, bodies)
            if faces:
                scene = self._faces.annotate(scene, sv.Detections(xyxy=np.array(faces, np.float32)))
            labels = [label_of(p.track_id, self._lookup(p.key)) for p in people]
            scene = self._labels.annotate(scene, bodies, labels=labels)
        self._guard(lambda: self._writer.write(scene))
        self.frames += 1

    def close(self) -> Path:
        """Finish the container and move it to ``path``; returns ``path``. A container that
        cannot be finished is unplayable: it is removed, not left behind."""
        try:
            self._guard(self._writer.close)
        except OutputError:
            self._partial.unlink(missing_ok=True)
            raise
        self._guard(lambda: os.replace(self._partial, self.path))
        return self.path

    def _guard(self, action):
        import av

        try:
            return action()
        except (OSError, av.FFmpegError) as err:
            why = getattr(err, "strerror", None) or str(err)
            raise OutputError(f"cannot write the annotated video {self.path}: {why}") from None
