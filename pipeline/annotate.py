"""Annotation: boxes, face boxes, track ids and the current age/gender/expression labels, with
the sources that said so; drawn by one :class:`FrameDrawer` into the annotated video
(``--annotate``) and into the service's live previews (:mod:`.preview`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import OutputError
from .outputs import partial_path
from .summary import TrackSummary
from .types import FrameResult, TrackedPerson
from .video_io import VideoWriter

__all__ = ["Annotator", "FrameDrawer", "label_of"]


def label_of(track_id: int, summary: TrackSummary | None) -> str:
    """``#3 F 31y happy (specialist)``: id, then whatever labels the track has so far, then the
    sources its estimates came from (most estimates first; ``mllm+specialist`` for both)."""
    parts = [f"#{track_id}"]
    if summary is not None:
        if summary.gender.label:
            parts.append("F" if summary.gender.label == "female" else "M")
        if summary.age.mean is not None:
            parts.append(f"{summary.age.mean:.0f}y")
        if summary.expression.label:
            parts.append(summary.expression.label)
        sources = [name for name, n in sorted(summary.sources.items(), key=lambda kv: (-kv[1], kv[0])) if n > 0]
        if sources:
            parts.append(f"({'+'.join(sources)})")
    return " ".join(parts)


class FrameDrawer:
    """Draws the tracked people of a frame with supervision: each person's box in the colour of
    its track id, the face box in white, the label of :func:`label_of` above the box.

    Args:
        lookup: track key -> current summary (or None).
        text_scale: size of the labels (a smaller preview takes smaller text).
    """

    def __init__(self, lookup: Callable[[str], TrackSummary | None], text_scale: float = 0.6) -> None:
        import supervision as sv

        self._sv = sv
        self._lookup = lookup
        self._boxes = sv.BoxAnnotator(thickness=2, color_lookup=sv.ColorLookup.TRACK)
        self._faces = sv.BoxAnnotator(thickness=1, color=sv.Color.WHITE, color_lookup=sv.ColorLookup.INDEX)
        self._labels = sv.LabelAnnotator(text_scale=text_scale, text_padding=4, color_lookup=sv.ColorLookup.TRACK)

    def draw(self, image: np.ndarray, people: list[TrackedPerson], scale: float = 1.0) -> np.ndarray:
        """A copy of ``image`` (RGB, ``(H, W, 3)`` uint8) with ``people`` drawn on it; their
        boxes are in source pixels, multiplied by ``scale`` when ``image`` is a resized frame."""
        sv = self._sv
        if not people:
            return image.copy()
        scene = np.ascontiguousarray(image[:, :, ::-1])  # supervision draws in OpenCV's BGR order
        ids = np.array([p.track_id for p in people])
        boxes = np.array([p.box for p in people], np.float32) * scale
        bodies = sv.Detections(xyxy=boxes, tracker_id=ids, class_id=np.zeros(len(ids), int))
        faces = [p.face for p in people if p.face is not None]
        scene = self._boxes.annotate(scene, bodies)
        if faces:
            scene = self._faces.annotate(scene, sv.Detections(xyxy=np.array(faces, np.float32) * scale))
        labels = [label_of(p.track_id, self._lookup(p.key)) for p in people]
        scene = self._labels.annotate(scene, bodies, labels=labels)
        return np.ascontiguousarray(scene[:, :, ::-1])


class Annotator:
    """Draws each analysed frame (:class:`FrameDrawer`) and writes it at the analysis rate.

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
        self.path = Path(path)
        self._partial = partial_path(self.path)
        self.frames = 0
        self._drawer = FrameDrawer(lookup)
        self._writer = self._guard(lambda: VideoWriter(self._partial, fps))

    def __call__(self, result: FrameResult) -> None:
        scene = self._drawer.draw(result.frame.image, result.people)
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
