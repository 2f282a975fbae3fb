"""``tracklens eval``: run estimators on labelled people and report the papers' metrics.

Each estimator sees exactly the same crops (face with margin, body) built the way the
pipeline builds them. Reported per estimator: MAE, CS@5 and MAPE for age, gender accuracy,
expression accuracy and macro-F1, the share of valid answers (format compliance), refusals,
answers rejected by the consistency rules, crops per second, and the same metrics per age
band and per gender (a bias check).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..config import CropConfig
from ..crops import cut_crop
from ..estimators.consistency import enforce
from ..types import EXPRESSIONS, Crop, Estimate, Person
from .manifest import Sample
from .metrics import accuracy, age_metrics, macro_f1

__all__ = ["AGE_BANDS", "build_crops", "evaluate", "format_report", "score"]

AGE_BANDS: tuple[tuple[float, float, str], ...] = (
    (0, 18, "0-17"), (18, 30, "18-29"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 200, "60+"),
)  # fmt: skip


def _load_rgb(path: Path) -> np.ndarray:
    """The image as RGB uint8; raises ``ValueError`` with a reason when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ValueError(f"image not found: {path}") from None
    except UnidentifiedImageError:
        raise ValueError(f"not an image file: {path}") from None
    except (OSError, SyntaxError) as err:  # PIL raises SyntaxError for some broken headers
        raise ValueError(f"image cannot be read: {path} ({err})") from None


def _outside(box: np.ndarray | None, width: int, height: int) -> bool:
    return box is not None and bool((box[:2] < -0.5).any() or box[2] > width + 0.5 or box[3] > height + 0.5)


def build_crops(samples: list[Sample], face_detector, crop_cfg: CropConfig) -> list[Crop | str]:
    """One crop per sample, or the reason it has none (an invalid row).

    A missing face box is detected (largest face), a missing body box is the whole image.
    Invalid rows: the image cannot be read, or a given box is not inside the image.
    """
    out: list[Crop | str] = []
    for i, sample in enumerate(samples):
        try:
            image = _load_rgb(sample.image)
        except ValueError as err:
            out.append(str(err))
            continue
        h, w = image.shape[:2]
        bad = [name for name, box in (("face_box", sample.face_box), ("body_box", sample.body_box)) if _outside(box, w, h)]
        if bad:
            box = sample.face_box if bad[0] == "face_box" else sample.body_box
            out.append(f"{bad[0]} {[round(float(v), 1) for v in box]} is not inside the {w}x{h} image")
            continue
        face = sample.face_box
        if face is None and face_detector is not None:
            found = face_detector.detect([image])[0]
            if len(found):
                areas = np.prod(found.xyxy[:, 2:] - found.xyxy[:, :2], axis=1)
                face = found.xyxy[int(np.argmax(areas))]
        body = sample.body_box if sample.body_box is not None else np.array([0, 0, w, h], np.float32)
        person = Person(body, 1.0, face, 1.0 if face is not None else 0.0, False)
        out.append(cut_crop(image, 0.0, f"eval:{i}", person, 1.0, crop_cfg))
    return out


def _predictions(estimates: list[Estimate], min_face_px: float):
    ages, genders, expressions, reasons = [], [], [], Counter()
    refusals = rejected = 0
    for est in estimates:
        kept, violations = enforce(est, min_face_px)
        if not est.valid:
            reasons[(est.reason or "invalid").split(":")[0]] += 1
            refusals += est.reason == "refusal" or bool(est.extra.get("refusal"))
        elif violations:
            rejected += 1
        kept = kept if est.valid else None
        ages.append(None if kept is None or kept.age is None else kept.age)
        genders.append(None if kept is None or kept.p_female is None else ("female" if kept.p_female >= 0.5 else "male"))
        expressions.append(None if kept is None or kept.expression is None else EXPRESSIONS[int(np.argmax(kept.expression))])
    return ages, genders, expressions, reasons, refusals, rejected


def _metrics(samples: list[Sample], ages, genders, expressions) -> dict:
    return {
        "age": age_metrics(ages, [s.age for s in samples]),
        "gender": accuracy(genders, [s.gender for s in samples]),
        "expression": {
            **accuracy(expressions, [s.expression for s in samples]),
            **macro_f1(expressions, [s.expression for s in samples]),
        },
    }


def score(samples: list[Sample], estimates: list[Estimate], seconds: float, min_face_px: float = 32) -> dict:
    """The report of one estimator: overall metrics, compliance, speed, and per-group metrics."""
    if len(samples) != len(estimates):
        raise ValueError(f"{len(samples)} samples but {len(estimates)} estimates")
    ages, genders, expressions, reasons, refusals, rejected = _predictions(estimates, min_face_px)
    valid = sum(e.valid for e in estimates)
    report = {
        "n": len(samples),
        **_metrics(samples, ages, genders, expressions),
        "valid_share": valid / len(samples) if samples else None,
        "refusals": refusals,
        "invalid_reasons": dict(reasons),
        "rejected": rejected,
        "crops_per_s": len(samples) / seconds if seconds > 0 else None,
        "model": estimates[0].model if estimates else None,
        "prompt": estimates[0].prompt if estimates else None,
        "by_age_band": {},
        "by_gender": {},
    }
    for lo, hi, name in AGE_BANDS:
        idx = [i for i, s in enumerate(samples) if s.age is not None and lo <= s.age < hi]
        if idx:
            report["by_age_band"][name] = _metrics([samples[i] for i in idx], *([v[i] for i in idx] for v in (ages, genders, expressions)))
    for gender in ("female", "male"):
        idx = [i for i, s in enumerate(samples) if s.gender == gender]
        if idx:
            report["by_gender"][gender] = _metrics([samples[i] for i in idx], *([v[i] for i in idx] for v in (ages, genders, expressions)))
    return report


def evaluate(samples: list[Sample], crops: list[Crop | str], estimators: dict, min_face_px: float = 32) -> dict:
    """Run every estimator on the same crops of the valid rows; ``{name: report}``.

    Each report also counts the manifest's rows and lists its invalid rows with their reason
    (rows whose image cannot be read or whose boxes are not inside the image).
    """
    valid = [i for i, c in enumerate(crops) if not isinstance(c, str)]
    invalid = [{"row": samples[i].where or str(samples[i].image), "reason": c} for i, c in enumerate(crops) if isinstance(c, str)]
    reports = {}
    for name, estimator in estimators.items():
        start = time.perf_counter()
        estimates = estimator.estimate([crops[i] for i in valid]) if valid else []
        report = score([samples[i] for i in valid], estimates, time.perf_counter() - start, min_face_px)
        reports[name] = {"rows": len(samples), "invalid_rows": invalid, **report}
    return reports


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_report(reports: dict[str, dict]) -> str:
    """A side-by-side table of the overall metrics, then the per-group MAE and accuracies."""
    rows = [
        ("age MAE (years)", lambda r: _fmt(r["age"]["mae"], ".2f")),
        ("age CS@5", lambda r: _fmt(r["age"]["cs5"], ".3f")),
        ("age MAPE (%)", lambda r: _fmt(r["age"]["mape"], ".1f")),
        ("gender accuracy", lambda r: _fmt(r["gender"]["accuracy"], ".3f")),
        ("expression accuracy", lambda r: _fmt(r["expression"]["accuracy"], ".3f")),
        ("expression macro-F1", lambda r: _fmt(r["expression"]["macro_f1"], ".3f")),
        ("valid answers", lambda r: _fmt(r["valid_share"], ".1%")),
        ("refusals", lambda r: str(r["refusals"])),
        ("rejected (consistency)", lambda r: str(r["rejected"])),
        ("crops/s", lambda r: _fmt(r["crops_per_s"], ".1f")),
        ("invalid rows", lambda r: str(len(r.get("invalid_rows", [])))),
    ]
    names = list(reports)
    table = [("metric", *names)] + [(label, *(fn(reports[n]) for n in names)) for label, fn in rows]
    groups = sorted({g for r in reports.values() for g in r["by_age_band"]}, key=[b[2] for b in AGE_BANDS].index)
    for group in groups:
        table.append((f"MAE, age {group}", *(_fmt(reports[n]["by_age_band"].get(group, {}).get("age", {}).get("mae"), ".2f") for n in names)))
    for gender in ("female", "male"):
        if any(gender in reports[n]["by_gender"] for n in names):
            table.append((f"gender acc., {gender}", *(_fmt(reports[n]["by_gender"].get(gender, {}).get("gender", {}).get("accuracy"), ".3f") for n in names)))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
