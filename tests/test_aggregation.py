"""Aggregation as pure functions: fusion rules and their properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from tracklens.pipeline.aggregation import TrackAggregate, fuse, is_confident, summarize
from tracklens.pipeline.config import AggregationConfig
from tracklens.pipeline.estimators.consistency import enforce
from tracklens.pipeline.types import EXPRESSIONS, Estimate

CFG = AggregationConfig()


def _est(age=None, std=5.0, p=None, expr=None, t=0.0, q=1.0, source="specialist", face_px=100.0, **kw) -> Estimate:
    return Estimate("s:0:1", t, source, "m", age=age, age_std=std, p_female=p, expression=expr, quality=q,
                    face_px=face_px, **kw)  # fmt: skip


def _fold(estimates, cfg=CFG) -> TrackAggregate:
    agg = TrackAggregate()
    for e in estimates:
        agg = fuse(agg, e, cfg)
    return agg


def _onehot(name: str, mass: float = 0.9) -> tuple[float, ...]:
    rest = (1 - mass) / (len(EXPRESSIONS) - 1)
    return tuple(mass if n == name else rest for n in EXPRESSIONS)


def test_age_is_the_precision_weighted_mean():
    agg = _fold([_est(age=30, std=2.0), _est(age=34, std=4.0)])
    w1, w2 = 1 / 4, 1 / 16
    assert summarize(agg, CFG)["age"]["mean"] == pytest.approx((30 * w1 + 34 * w2) / (w1 + w2), abs=0.01)


def test_order_of_equal_weight_estimates_does_not_matter():
    ages, ps = [31.0, 35.0, 29.0, 33.0], [0.8, 0.7, 0.95, 0.6]
    exprs = [_onehot("happy"), _onehot("neutral"), _onehot("happy"), _onehot("sad")]
    results = set()
    for order in itertools.permutations(range(4)):
        agg = _fold([_est(age=ages[i], p=ps[i], expr=exprs[i]) for i in order])
        s = summarize(agg, CFG)
        results.add((s["age"]["mean"], s["gender"]["p_female"], tuple(s["expression"]["probs"].values())))
    assert len(results) == 1


def test_an_outlier_moves_the_mean_by_a_bounded_amount():
    base = _fold([_est(age=30, std=4.0) for _ in range(4)])
    mean0 = base.age_wx / base.age_w
    for outlier in (80.0, 100.0, 0.0):
        agg = fuse(base, _est(age=outlier, std=4.0), CFG)
        band = max(CFG.age_band_min_years, CFG.age_band_sigmas * 4.0)
        w = 1 / 16
        bound = band * w / (base.age_w + w)
        assert abs(agg.age_wx / agg.age_w - mean0) <= bound + 1e-9
    unclipped = (mean0 * base.age_w + 100.0 / 16) / (base.age_w + 1 / 16)
    clipped = fuse(base, _est(age=100.0, std=4.0), CFG)
    assert abs(clipped.age_wx / clipped.age_w - mean0) < abs(unclipped - mean0) / 3


def test_gender_needs_enough_evidence_and_one_crop_cannot_decide():
    one = _fold([_est(p=0.999)])
    assert summarize(one, CFG)["gender"]["label"] is None
    assert one.gender_logit == pytest.approx(CFG.gender_logit_clip)
    two = _fold([_est(p=0.9), _est(p=0.85)])
    assert summarize(two, CFG)["gender"]["label"] == "female"
    men = _fold([_est(p=0.1), _est(p=0.2), _est(p=0.6)])
    assert summarize(men, CFG)["gender"]["label"] == "male"
    torn = _fold([_est(p=0.9), _est(p=0.1)])
    assert summarize(torn, CFG)["gender"]["label"] is None


def test_expression_follows_time_and_sums_to_one():
    early = [_est(expr=_onehot("sad"), t=t) for t in (0.0, 0.5, 1.0)]
    late = [_est(expr=_onehot("happy"), t=t) for t in (20.0, 20.5)]
    s = summarize(_fold(early + late), CFG)["expression"]
    assert s["label"] == "happy"
    assert math.isclose(sum(s["probs"].values()), 1.0, abs_tol=1e-3)
    s_early = summarize(_fold(early), CFG)["expression"]
    assert s_early["label"] == "sad"


def test_a_settled_expression_holds_through_the_pauses_between_sparse_readings():
    """Regression: a settled track is asked about every ~20-30 s; with the label gated on the
    decayed evidence, small-face readings (quality ~0.36, as in a 120-s crossing) each came in
    alone and the label went null for good although every reading said happy."""
    first = [_est(expr=_onehot("happy", 0.99), t=t, q=0.36) for t in (0.2, 1.2)]
    sparse = [_est(expr=_onehot("happy", 0.99), t=t, q=0.36) for t in (20.2, 40.2, 60.2, 80.2, 100.2)]
    for k in range(len(sparse) + 1):
        assert summarize(_fold(first + sparse[:k]), CFG)["expression"]["label"] == "happy", k
    # it still follows the person: one later reading of another expression takes over
    changed = summarize(_fold(first + sparse + [_est(expr=_onehot("surprise", 0.99), t=120.2, q=0.36)]), CFG)["expression"]
    assert changed["label"] == "surprise"


def test_labels_stay_null_until_enough_evidence():
    s = summarize(TrackAggregate(), CFG)
    assert s["age"]["mean"] is None and s["gender"]["label"] is None and s["expression"]["label"] is None
    s = summarize(_fold([_est(age=30, p=0.9, expr=_onehot("happy", 0.5), q=0.5)]), CFG)
    assert s["age"]["mean"] is None and s["gender"]["label"] is None and s["expression"]["label"] is None


@pytest.mark.parametrize(
    "bad, reason",
    [
        (dict(age=130.0), "outside 0-100"),
        (dict(age=-1.0), "outside 0-100"),
        (dict(p=1.5), "p_female"),
        (dict(expr=(0.5,) * 7), "sum to 1"),
        (dict(age=30.0, valid=False, reason="refused"), "refused"),
        (dict(), "no field"),
    ],
)
def test_estimates_that_break_hard_constraints_are_counted_not_fused(bad, reason):
    est = _est(**bad)
    kept, violations = enforce(est, CFG.min_expression_face_px)
    assert kept is None and reason in violations[0]
    agg = fuse(_fold([_est(age=30, p=0.9)]), est, CFG)
    assert agg.rejected == 1 and agg.age_n == 1 and agg.gender_n == 1


def test_an_expression_from_a_tiny_face_is_dropped_and_counted_but_age_and_gender_stay():
    agg = fuse(TrackAggregate(), _est(age=30, p=0.9, expr=_onehot("happy"), face_px=12), CFG)
    assert agg.rejected == 1 and agg.expr_n == 0 and agg.age_n == 1 and agg.gender_n == 1
    only_expr = fuse(TrackAggregate(), _est(expr=_onehot("happy"), face_px=12), CFG)
    assert only_expr.rejected == 1 and only_expr.sources == {}


def test_confidence_and_sources():
    estimates = [_est(age=30 + (i % 3), std=3.0, p=0.95, expr=_onehot("happy"), t=i * 0.5) for i in range(3)]
    estimates.append(_est(age=31, std=3.0, p=0.9, expr=_onehot("happy"), t=2.0, source="mllm"))
    agg = _fold(estimates)
    assert is_confident(agg, CFG)
    assert summarize(agg, CFG)["sources"] == {"specialist": 3, "mllm": 1}
    assert not is_confident(_fold(estimates[:1]), CFG)


def test_state_round_trips_through_plain_data():
    agg = _fold([_est(age=30, p=0.9, expr=_onehot("happy"), t=1.0)])
    again = TrackAggregate.from_dict(agg.to_dict())
    assert again == agg
    np.testing.assert_allclose(again.expr_mass, agg.expr_mass)
