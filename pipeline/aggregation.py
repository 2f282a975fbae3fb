"""Per-track fusion of estimates over time, in O(1) state (running sums, no sample lists).

- age: precision-weighted mean (weight = crop quality / sigma^2, sigma from the estimate's
  own spread); from the second estimate on, each value is clipped into a band around the
  current mean, so one outlier moves the mean by at most ``band * w / (W + w)``;
- gender: sum of per-estimate log-odds, each clipped to ``+-gender_logit_clip`` and scaled by
  quality, so no single crop can decide a track;
- expression: exponentially time-decayed probability mass (half-life in seconds), so the
  label follows the person's current expression; it needs ``expression_min_n`` readings and
  then holds through pauses between readings (a settled track is asked about every 30 s).

Labels stay None until the evidence passes the thresholds in :class:`AggregationConfig`.
Estimates that break hard constraints (``estimators/consistency.py``) are counted in
``rejected`` and kept out of the sums.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from .config import AggregationConfig
from .estimators.consistency import enforce
from .types import EXPRESSIONS, Estimate

__all__ = ["TrackAggregate", "fuse", "is_confident", "summarize", "uncertain_fields"]


@dataclass(frozen=True)
class TrackAggregate:
    age_w: float = 0.0
    age_wx: float = 0.0
    age_wxx: float = 0.0
    age_n: int = 0
    gender_logit: float = 0.0
    gender_n: int = 0
    expr_mass: tuple[float, ...] = (0.0,) * len(EXPRESSIONS)
    expr_w: float = 0.0
    expr_t: float | None = None
    expr_n: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    rejected: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrackAggregate:
        return cls(**{**data, "expr_mass": tuple(data["expr_mass"])})


def fuse(agg: TrackAggregate, est: Estimate, cfg: AggregationConfig) -> TrackAggregate:
    """Fold one estimate into the aggregate; returns a new aggregate (the input is unchanged).

    An age without a spread of its own is weighed by its source's typical error
    (``cfg.age_error_years[est.source]``), so MLLM and specialist answers count by how good
    each source is.
    """
    est, violations = enforce(est, cfg.min_expression_face_px)
    if est is None:
        return replace(agg, rejected=agg.rejected + 1)
    agg = replace(agg, rejected=agg.rejected + len(violations))
    q = max(est.quality, 1e-3)
    updates: dict = {"sources": {**agg.sources, est.source: agg.sources.get(est.source, 0) + 1}}
    if est.age is not None:
        sigma = max(est.age_std or cfg.age_error_years[est.source], 1.0)
        w = q / sigma**2
        x = est.age
        if agg.age_n:
            mean = agg.age_wx / agg.age_w
            band = max(cfg.age_band_min_years, cfg.age_band_sigmas * sigma)
            x = min(max(x, mean - band), mean + band)
        updates.update(age_w=agg.age_w + w, age_wx=agg.age_wx + w * x, age_wxx=agg.age_wxx + w * x * x, age_n=agg.age_n + 1)
    if est.p_female is not None:
        p = min(max(est.p_female, 1e-9), 1 - 1e-9)
        logit = max(-cfg.gender_logit_clip, min(cfg.gender_logit_clip, math.log(p / (1 - p))))
        updates.update(gender_logit=agg.gender_logit + q * logit, gender_n=agg.gender_n + 1)
    if est.expression is not None:
        decay = 1.0
        if agg.expr_t is not None:
            dt = max(0.0, est.time - agg.expr_t)
            decay = 0.5 ** (dt / cfg.expression_half_life_s)
        mass = tuple(m * decay + q * p for m, p in zip(agg.expr_mass, est.expression))
        updates.update(
            expr_mass=mass,
            expr_w=agg.expr_w * decay + q,
            expr_t=est.time if agg.expr_t is None else max(agg.expr_t, est.time),
            expr_n=agg.expr_n + 1,
        )
    return replace(agg, **updates)


def _age(agg: TrackAggregate) -> tuple[float | None, float | None, float | None]:
    """Mean, spread of the fused observations, and standard error of the mean.

    The summary's ``std`` is the larger of the model-based standard error and the observed
    scatter over sqrt(n): models that claim precision but disagree are not believed.
    """
    if not agg.age_n:
        return None, None, None
    mean = agg.age_wx / agg.age_w
    var = max(agg.age_wxx / agg.age_w - mean * mean, 0.0)
    return mean, math.sqrt(var), 1.0 / math.sqrt(agg.age_w)


def summarize(agg: TrackAggregate, cfg: AggregationConfig) -> dict:
    """The ``age``, ``gender``, ``expression`` and ``sources`` parts of a track summary."""
    mean, spread, stderr = _age(agg)
    age_ok = agg.age_n >= cfg.age_min_n
    p_female = 1.0 / (1.0 + math.exp(-agg.gender_logit)) if agg.gender_n else None
    gender_label = None
    if agg.gender_n >= cfg.gender_min_n and abs(agg.gender_logit) >= cfg.gender_min_logit:
        gender_label = "female" if agg.gender_logit > 0 else "male"
    probs = None
    expr_label = None
    if agg.expr_n:
        probs = {name: m / agg.expr_w for name, m in zip(EXPRESSIONS, agg.expr_mass)}
        top = max(probs, key=probs.get)
        if agg.expr_n >= cfg.expression_min_n and probs[top] >= cfg.expression_min_prob:
            expr_label = top
    return {
        "age": {
            "mean": round(mean, 2) if age_ok else None,
            "std": round(max(stderr, spread / math.sqrt(agg.age_n)), 2) if age_ok else None,
            "n": agg.age_n,
        },
        "gender": {"label": gender_label, "p_female": None if p_female is None else round(p_female, 4), "n": agg.gender_n},
        "expression": {
            "label": expr_label,
            "probs": None if probs is None else {k: round(v, 4) for k, v in probs.items()},
            "n": agg.expr_n,
        },
        "sources": dict(agg.sources),
    }


def uncertain_fields(agg: TrackAggregate, cfg: AggregationConfig) -> frozenset[str]:
    """The fields that still need evidence: ``age`` (too few estimates, or its standard error
    above ``confident_age_std``), ``gender`` and ``expression`` (no label yet: too little or
    too flat evidence). Empty: the track is settled."""
    parts = summarize(agg, cfg)
    _, _, stderr = _age(agg)
    fields = set()
    if parts["age"]["mean"] is None or stderr is None or stderr > cfg.confident_age_std:
        fields.add("age")
    if parts["gender"]["label"] is None:
        fields.add("gender")
    if parts["expression"]["label"] is None:
        fields.add("expression")
    return frozenset(fields)


def is_confident(agg: TrackAggregate, cfg: AggregationConfig) -> bool:
    """Enough evidence on every field: age precise, gender and expression labelled."""
    return not uncertain_fields(agg, cfg)
