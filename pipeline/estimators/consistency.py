"""Hard constraints on estimates: answers that break them are hallucinations, not evidence.

Following FaceInsight's point that facial attributes obey logical constraints, an estimate
with an age outside 0-100, probabilities outside [0, 1] or not summing to 1 is rejected
whole; an expression read from a face too small to show one is removed from the estimate
(age and gender stay). Both are counted by the caller.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ..types import Estimate

__all__ = ["enforce"]

_PROB_TOL = 1e-3


def _hard_violation(est: Estimate) -> str | None:
    if not est.valid:
        return est.reason or "invalid"
    if est.age is not None and not (math.isfinite(est.age) and 0.0 <= est.age <= 100.0):
        return f"age {est.age} outside 0-100"
    if est.age_std is not None and not (math.isfinite(est.age_std) and est.age_std > 0):
        return f"age spread {est.age_std} not positive"
    if est.p_female is not None and not (math.isfinite(est.p_female) and 0.0 <= est.p_female <= 1.0):
        return f"p_female {est.p_female} outside [0, 1]"
    if est.expression is not None:
        if not all(math.isfinite(p) and p >= 0 for p in est.expression) or abs(sum(est.expression) - 1.0) > _PROB_TOL:
            return "expression probabilities do not sum to 1"
    if est.age is None and est.p_female is None and est.expression is None:
        return "no field answered"
    return None


def enforce(est: Estimate, min_expression_face_px: float) -> tuple[Estimate | None, list[str]]:
    """``(estimate to fuse or None, violations found)``."""
    reason = _hard_violation(est)
    if reason is not None:
        return None, [reason]
    if est.expression is not None and est.face_px < min_expression_face_px:
        kept = replace(est, expression=None)
        issue = f"expression from a {est.face_px:.0f} px face (< {min_expression_face_px} px)"
        if kept.age is None and kept.p_female is None:
            return None, [issue]
        return kept, [issue]
    return est, []
