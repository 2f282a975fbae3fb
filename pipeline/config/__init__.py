"""Typed configuration: one pydantic model per section, loaded from YAML.

The defaults below are the embedded defaults: ``tracklens analyze`` runs with them when no
``--config`` is given; ``configs/default.yaml`` spells the same values out for editing.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from ..errors import ConfigError
from ..urls import excerpt, quoted, redact_url
from .base import MissingTypeError, RedisUrl, Section, StreamId, check_redis_url, check_stream_id, over_defaults
from .detection import (
    CenterfaceFaceDetectorConfig,
    DetectionConfig,
    DlibFaceDetectorConfig,
    FaceScheduleConfig,
    HaarFaceDetectorConfig,
    PersonScheduleConfig,
    SsdliteDetectorConfig,
    YunetFaceDetectorConfig,
)
from .estimators import (
    EstimatorConfig,
    MllmEstimatorConfig,
    OpenAIBackendConfig,
    RoutedEstimatorConfig,
    SpecialistEstimatorConfig,
    TransformersBackendConfig,
)
from .finetune import FinetuneConfig, LoraConfig
from .service import ApiConfig, IngestConfig, MllmPoolConfig, PoolConfig, RouterConfig
from .stages import (
    AggregationConfig,
    AssociationConfig,
    CropConfig,
    LiveSourceConfig,
    MemoryStoreConfig,
    RedisStoreConfig,
    SourceConfig,
    StoreConfig,
    TrackerConfig,
)

__all__ = [
    "AggregationConfig",
    "ApiConfig",
    "AssociationConfig",
    "CenterfaceFaceDetectorConfig",
    "CropConfig",
    "DetectionConfig",
    "DlibFaceDetectorConfig",
    "EstimatorConfig",
    "FaceScheduleConfig",
    "FinetuneConfig",
    "FinetuneRunConfig",
    "HaarFaceDetectorConfig",
    "IngestConfig",
    "LiveSourceConfig",
    "LoraConfig",
    "MemoryStoreConfig",
    "MllmEstimatorConfig",
    "OpenAIBackendConfig",
    "PersonScheduleConfig",
    "PipelineConfig",
    "MllmPoolConfig",
    "PoolConfig",
    "PoolsConfig",
    "RedisStoreConfig",
    "RedisUrl",
    "RoutedEstimatorConfig",
    "RouterConfig",
    "Section",
    "ServeConfig",
    "SourceConfig",
    "SpecialistEstimatorConfig",
    "SsdliteDetectorConfig",
    "StoreConfig",
    "StreamId",
    "TrackerConfig",
    "TransformersBackendConfig",
    "YunetFaceDetectorConfig",
    "check_redis_url",
    "check_stream_id",
    "load_config",
    "load_serve_config",
]

_Section = Section


class PipelineConfig(_Section):
    """Everything ``tracklens analyze`` needs."""

    stream: StreamId = "video"
    source: SourceConfig = SourceConfig()
    detection: DetectionConfig = DetectionConfig()
    tracker: TrackerConfig = TrackerConfig()
    association: AssociationConfig = AssociationConfig()
    crops: CropConfig = CropConfig()
    estimator: EstimatorConfig = SpecialistEstimatorConfig()
    aggregation: AggregationConfig = AggregationConfig()
    store: StoreConfig = MemoryStoreConfig()


class FinetuneRunConfig(PipelineConfig):
    """Everything ``tracklens finetune`` needs: the pipeline's crops and face detector (the
    crops are cut as analysis cuts them), the MLLM to start from (``estimator``: an ``mllm``
    with the transformers backend) and how to train it (``finetune``)."""

    finetune: FinetuneConfig = FinetuneConfig()


class PoolsConfig(_Section):
    """The estimator replica pools of the service."""

    mllm: MllmPoolConfig = MllmPoolConfig(resources={"mllm": 0.01})
    specialist: PoolConfig = PoolConfig(max_ongoing_requests=64, max_queued_requests=-1, resources={"specialist": 0.01})


class ServeConfig(PipelineConfig):
    """Everything ``tracklens serve`` needs: the pipeline's sections (per stream) and the
    service's. The estimator is the specialist alone, or ``routed``: its primary runs in the
    MLLM pool, its fallback in the specialist pool. The store is Redis."""

    estimator: SpecialistEstimatorConfig | RoutedEstimatorConfig = Field(SpecialistEstimatorConfig(), discriminator="type")
    # One thread per model call: streams run side by side in their ingest processes, and threads
    # inside each call only add overhead then (60 -> 52 ms of CPU per 720p frame, measured).
    detection: DetectionConfig = DetectionConfig(
        person=SsdliteDetectorConfig(threads=1), face=CenterfaceFaceDetectorConfig(threads=1)
    )
    store: RedisStoreConfig = RedisStoreConfig()
    ingest: IngestConfig = IngestConfig()
    router: RouterConfig = RouterConfig()
    pools: PoolsConfig = PoolsConfig()
    api: ApiConfig = ApiConfig()


def load_serve_config(
    path: str | Path | None = None, overrides: dict[str, object] | None = None, flags: dict[str, str] | None = None
) -> ServeConfig:
    """:func:`load_config` for the service (``configs/serve.yaml``)."""
    return load_config(path, overrides, flags, model=ServeConfig)


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, object] | None = None,
    flags: dict[str, str] | None = None,
    model: type[PipelineConfig] = PipelineConfig,
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
        return model.model_validate(over_defaults(model, data))
    except MissingTypeError as err:
        raise ConfigError(f"invalid config{f' {path}' if path else ''}: {err}") from None
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
    where = ".".join(excerpt(part) for part in loc)  # keys come from the user's file too
    if first["type"] == "union_tag_invalid":  # pydantic's message quotes the whole value
        where += ".type"
        msg = f"{quoted(first['ctx']['tag'])} is not one of {first['ctx']['expected_tags']}"
    for dotted, flag in flags.items():
        if _within(dotted.split("."), loc):
            value = overrides.get(dotted)
            shown = quoted(redact_url(value) if isinstance(value, str) else value)
            return f"invalid {flag} {shown}: {msg}{more}"
    return f"invalid config{f' {path}' if path else ''}: {where}: {msg}{more}"


def _within(key: list[str], loc: list[str]) -> bool:
    """Whether an error at ``loc`` concerns ``key``; ``loc`` may hold union tags in between
    (``store.redis.url`` for the key ``store.url``)."""
    if not loc or loc[0] != key[0]:
        return False
    rest = iter(loc[1:])
    return all(any(part == item for item in rest) for part in key[1:])
