"""Labelled people for evaluation: a CSV or JSONL manifest.

One person per row: ``image`` (path, relative to the manifest), optional ``face_box`` and
``body_box`` (``x0 y0 x1 y1`` in pixels, or a JSON list), and any of ``age`` (years),
``gender`` (``male``/``female``) and ``expression`` (one of the seven classes).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..types import EXPRESSIONS

__all__ = ["Sample", "load_manifest"]


@dataclass(frozen=True)
class Sample:
    image: Path
    face_box: np.ndarray | None = None
    body_box: np.ndarray | None = None
    age: float | None = None
    gender: str | None = None
    expression: str | None = None


def _box(value, where: str) -> np.ndarray | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        value = json.loads(value) if value.strip().startswith("[") else value.replace(",", " ").split()
    box = np.asarray([float(v) for v in value], np.float32)
    if box.shape != (4,) or not (box[2] > box[0] and box[3] > box[1]):
        raise InputError(f"{where}: a box needs x0 y0 x1 y1 with x1 > x0 and y1 > y0, got {value!r}")
    return box


def _sample(row: dict, root: Path, where: str) -> Sample:
    if not row.get("image"):
        raise InputError(f"{where}: no image path")
    image = (root / str(row["image"])).resolve()
    if not image.is_file():
        raise InputError(f"{where}: image not found: {image}")
    age = row.get("age")
    age = None if age in (None, "") else float(age)
    if age is not None and not 0 <= age <= 120:
        raise InputError(f"{where}: age {age} is not a plausible age in years")
    gender = row.get("gender") or None
    if gender is not None and gender not in ("male", "female"):
        raise InputError(f"{where}: gender must be male or female, got {gender!r}")
    expression = row.get("expression") or None
    if expression is not None and expression not in EXPRESSIONS:
        raise InputError(f"{where}: expression must be one of {', '.join(EXPRESSIONS)}, got {expression!r}")
    return Sample(image, _box(row.get("face_box"), where), _box(row.get("body_box"), where), age, gender, expression)


def load_manifest(path: str | Path) -> list[Sample]:
    """Rows of a ``.csv`` (with a header) or ``.jsonl`` manifest; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    rows: list[tuple[str, dict]] = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                rows.append((f"{path}:{n}", row))
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise InputError(f"{path}:{n}: not valid JSON ({err.msg})") from None
    else:
        raise InputError(f"manifest {path} must be .csv or .jsonl")
    samples = [_sample(row, path.parent, where) for where, row in rows]
    if not samples:
        raise InputError(f"manifest {path} lists no people")
    return samples
