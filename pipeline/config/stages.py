"""Sections of the stages between detection and the store: source, tracker, association,
crops, aggregation, and the store itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import Field, field_validator

from ..errors import ConfigError
from .base import RedisUrl
from .base import Section as _Section

__all__ = [
    "AggregationConfig",
    "AssociationConfig",
    "CropConfig",
    "LiveSourceConfig",
    "MemoryStoreConfig",
    "RedisStoreConfig",
    "SourceConfig",
    "StoreConfig",
    "TrackerConfig",
]


class LiveSourceConfig(_Section):
    """Live sources (rtsp, rtsps, rtmp, http, https): timeouts, reconnects, the frame queue.

    A live source reconnects by itself with exponential backoff and jitter; it gives up
    (state ``failed``) only after ``max_outage_s`` without a frame (null: never).
    """

    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="tcp survives lossy networks and NAT")
    open_timeout_s: float = Field(5.0, gt=0, description="connecting and reading the stream header")
    read_timeout_s: float = Field(5.0, gt=0, description="no data for this long is a disconnect")
    probe_s: float = Field(0.5, gt=0, description="how long FFmpeg analyses the stream on open (less: faster open)")
    queue_frames: int = Field(4, ge=1, description="frames held between decoding and analysis; older ones are dropped")
    reconnect_s: float = Field(0.5, gt=0, description="first delay before reconnecting; doubles per failure")
    max_reconnect_s: float = Field(15.0, gt=0, description="cap of that delay")
    jitter: float = Field(0.2, ge=0, le=1, description="random share added to or taken from each delay")
    max_outage_s: float | None = Field(None, gt=0, description="give up after this long without a frame (null: never)")


class SourceConfig(_Section):
    """Decoding. ``fps`` caps the analysis rate: every frame is decoded, a subset handed on."""

    fps: float | None = Field(10.0, gt=0)
    live: LiveSourceConfig = LiveSourceConfig()


class TrackerConfig(_Section):
    """ByteTrack thresholds; see ``tracklens.trackers.ByteTrackConfig`` for their meaning."""

    type: Literal["bytetrack"] = "bytetrack"
    high_thresh: float = 0.45
    low_thresh: float = 0.1
    new_track_thresh: float = 0.45
    match_thresh: float = 0.8
    low_match_thresh: float = 0.5
    tentative_match_thresh: float = 0.7
    lost_track_buffer: int = Field(60, ge=0, description="frames at 30 fps")
    min_hits: int = Field(3, ge=1)
    top_aligned: bool = Field(
        True, description="compare boxes over their common height from the top, so a person keeps the id when the "
        "anchor changes between body box and face-derived box (false: plain IoU)"
    )


class AssociationConfig(_Section):
    """Face<->body matching. A face belongs to a body when at least ``min_inside`` of its area
    is inside the body box and its center lies in the top ``max_center_depth`` of the body."""

    min_inside: float = Field(0.7, gt=0, le=1)
    max_center_depth: float = Field(0.45, gt=0, le=1)
    body_from_face_width: float = Field(3.0, gt=1, description="derived body width / face width")
    body_from_face_height: float = Field(7.0, gt=1, description="derived body height / face height")


class CropConfig(_Section):
    """Crop selection and the per-track estimation budget."""

    min_face_px: int = Field(24, ge=4, description="faces smaller than this (height) are not sent")
    min_face_score: float = Field(0.6, ge=0, le=1, description="faces detected with less confidence are not read (they still track)")
    good_face_px: int = Field(96, ge=8, description="face height at which the size term saturates")
    face_margin: float = Field(0.4, ge=0, description="context added around the face, per side, x face size")
    first_after_s: float = Field(0.3, ge=0, description="collect this long after confirmation before the first request")
    confirm_after_s: float = Field(1.0, ge=0, description="the second request, to confirm the first, this long after it")
    refresh_s: float = Field(1.5, gt=0, description="after the second: at most one request per track per this many seconds")
    per_minute: float = Field(3.0, ge=0, description="after the first two: at most this many requests per tracked minute")
    better_crop_factor: float = Field(1.5, gt=1, description="a crop this many times better than the best asked about is asked about")
    expression_refresh_s: float = Field(30.0, gt=0, description="a settled track is asked again this often: expressions change")
    max_requests: int = Field(12, ge=1, description="requests per track at most, whatever else")
    max_body_px: int = Field(512, ge=64, description="body crops are downscaled to this longer side")
    require_face: bool = Field(True, description="only request estimates for crops with a readable face")


class AggregationConfig(_Section):
    """Per-track fusion over time (O(1) state)."""

    age_band_sigmas: float = Field(2.5, gt=0, description="outlier band half-width, in predicted sigmas")
    age_band_min_years: float = Field(6.0, gt=0)
    age_min_n: int = Field(2, ge=1)
    gender_logit_clip: float = Field(3.0, gt=0, description="|log-odds| cap per estimate")
    gender_min_logit: float = Field(2.0, gt=0, description="|summed log-odds| needed for a label")
    gender_min_n: int = Field(2, ge=1)
    expression_half_life_s: float = Field(4.0, gt=0)
    expression_min_n: int = Field(
        2, ge=1, description="readings needed for an expression label; the label is then the top of the time-decayed "
        "distribution, so it follows the latest readings and holds through the pauses between them"
    )
    expression_min_prob: float = Field(0.35, gt=0, le=1)
    confident_age_std: float = Field(4.0, gt=0, description="track stops asking once age std is below this")
    age_error_years: dict[str, float] = Field(
        {"mllm": 5.0, "specialist": 6.0},
        description="typical age error of each source (years): the fusion weight of an estimate without a spread of its own",
    )
    min_expression_face_px: int = Field(32, ge=0, description="expressions read from smaller faces are dropped")

    @field_validator("age_error_years")
    @classmethod
    def _every_source(cls, value: dict[str, float]) -> dict[str, float]:
        sources = {"mllm", "specialist"}
        if set(value) != sources or not all(v > 0 for v in value.values()):
            raise ValueError(f"needs a positive number of years for each of {', '.join(sorted(sources))}")
        return value


class MemoryStoreConfig(_Section):
    type: Literal["memory"] = "memory"


class RedisStoreConfig(_Section):
    """Redis as the system of record. While it is unreachable, writes are buffered in memory
    (one pending state per track, at most ``max_pending_tracks``) and retried with backoff."""

    type: Literal["redis"] = "redis"
    url: RedisUrl = "redis://127.0.0.1:6379/0"
    password_file: Path | None = Field(
        None, description="a file holding Redis's password, read on connecting (never in URLs, process lists or logs)"
    )
    prefix: str = Field("tl", min_length=1)
    ended_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="retention of ended tracks")
    events_maxlen: int = Field(100_000, ge=1)
    stats_ttl_s: int = Field(400 * 24 * 3600, ge=1, description="retention of the demographic counts per time bucket")
    estimates_kept: int = Field(100, ge=1, le=10_000, description="latest estimates kept per track (its history)")
    timeout_s: float = Field(3.0, gt=0, description="connect and read timeout of one call")
    max_pending_tracks: int = Field(100_000, ge=1, description="tracks buffered at most during an outage")
    retry_s: float = Field(0.25, gt=0, description="first retry delay after a failed write; doubles")
    max_retry_s: float = Field(5.0, gt=0)
    drain_s: float = Field(10.0, ge=0, description="how long the end of a run keeps trying to deliver")

    def connect_url(self) -> str:
        """The URL clients connect with: ``url``, with the password of ``password_file`` when
        one is set. Keep it in memory; show :func:`~tracklens.pipeline.urls.redact_url` of it."""
        if self.password_file is None:
            return self.url
        try:
            password = self.password_file.read_text().strip()
        except OSError as err:
            raise ConfigError(f"cannot read store.password_file {self.password_file}: {err.strerror}") from None
        parts = urlsplit(self.url)
        if parts.scheme == "unix":  # redis-py reads a socket's password from the query
            query = "&".join(q for q in (parts.query, f"password={quote(password, safe='')}") if q)
            return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
        host = parts.netloc.rsplit("@", 1)[-1]
        user = unquote(parts.username or "")
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


StoreConfig = Annotated[Union[MemoryStoreConfig, RedisStoreConfig], Field(discriminator="type")]


