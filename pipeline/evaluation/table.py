"""The printed form of ``tracklens eval``'s reports: one table, estimators side by side."""

from __future__ import annotations

from .harness import AGE_BANDS, CALIBRATION_BINS

__all__ = ["format_confusion", "format_counts", "format_report"]

_OUTCOME_ROWS = (
    ("faces given", "face_given"),
    ("faces detected", "face_detected"),
    ("faces detected, padded", "face_detected_padded"),
    ("faces unreadable", "face_unreadable"),
    ("no face found", "no_face"),
)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_counts(counts: dict[str, int]) -> str:
    """``{"mllm": 4, "specialist": 2}`` -> ``mllm 4, specialist 2``; ``-`` when empty."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def format_report(reports: dict[str, dict]) -> str:
    """A side-by-side table of the overall metrics, how the faces were found, the per-group
    MAE and accuracies, then the expression confusion matrices (:func:`format_confusion`)."""
    rows = [
        ("age MAE (years)", lambda r: _fmt(r["age"]["mae"], ".2f")),
        ("age CS@5", lambda r: _fmt(r["age"]["cs5"], ".3f")),
        ("age MAPE (%)", lambda r: _fmt(r["age"]["mape"], ".1f")),
        ("gender accuracy", lambda r: _fmt(r["gender"]["accuracy"], ".3f")),
        (f"gender ECE ({CALIBRATION_BINS} bins)", lambda r: _fmt(r["gender_calibration"]["ece"], ".3f")),
        ("expression accuracy", lambda r: _fmt(r["expression"]["accuracy"], ".3f")),
        ("expression macro-F1", lambda r: _fmt(r["expression"]["macro_f1"], ".3f")),
        ("valid answers", lambda r: _fmt(r["valid_share"], ".1%")),
        ("refusals", lambda r: str(r["refusals"])),
        ("rejected (consistency)", lambda r: str(r["rejected"])),
        ("answered by", lambda r: format_counts(r["answered_by"])),
        ("primary failed, why", lambda r: format_counts(r["primary_failures"])),
        ("crops/s", lambda r: _fmt(r["crops_per_s"], ".1f")),
        ("invalid rows", lambda r: str(len(r.get("invalid_rows", [])))),
    ]
    rows += [(label, lambda r, key=key: str(r.get("face_outcomes", {}).get(key, 0))) for label, key in _OUTCOME_ROWS]
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
    return "\n".join(lines) + "\n\n" + format_confusion(reports)


def format_confusion(reports: dict[str, dict]) -> str:
    """The expression confusion matrices side by side: a row per true expression that has
    pairs, a column per predicted expression (first three letters), ``.`` for zero."""
    names = list(reports)
    matrices = {n: reports[n]["expression_confusion"] for n in names}
    if not any(m["n"] for m in matrices.values()):
        return "expression confusion: no row has both a labelled and a predicted expression"
    labels = matrices[names[0]]["labels"]
    cell = max(3, *(len(str(c)) for m in matrices.values() for row in m["counts"] for c in row))
    block = len(labels) * (cell + 1) - 1
    width = max(len("truth"), *(len(label) for label in labels))
    head = [" " * width + "".join(f" | {n[:block]:<{block}}" for n in names)]
    head.append(f"{'truth':<{width}}" + f" | {' '.join(f'{label[:3]:>{cell}}' for label in labels)}" * len(names))
    body = []
    for i, label in enumerate(labels):
        if not any(sum(m["counts"][i]) for m in matrices.values()):
            continue
        cells = [" ".join(f"{(str(c) if c else '.'):>{cell}}" for c in m["counts"][i]) for m in matrices.values()]
        body.append(f"{label:<{width}}" + "".join(f" | {c}" for c in cells))
    title = "expression confusion (rows: truth, columns: prediction; truths without pairs left out)"
    return "\n".join(line.rstrip() for line in [title, *head, *body])
