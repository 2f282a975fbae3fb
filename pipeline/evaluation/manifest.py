"""Labelled people for evaluation: a CSV or JSONL manifest.

One person per row: ``image`` (path, relative to the manifest), optional ``face_box`` and
``body_box`` (``x0 y0 x1 y1`` in pixels, or a JSON list), and any of ``age`` (years),
``gender`` (``male``/``female``) and ``expression`` (one of the seven classes), and optionally
``identity`` (who the person is: ``tracklens finetune`` keeps one identity's rows on one side
of its train/validation split; ``eval`` ignores it).

A row that cannot be parsed (a field that is not a number, an unknown label) is an error
naming the file and line. Whether the image can be read and the boxes lie inside it is
checked when the crops are built: such rows become invalid rows with their reason.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..types import EXPRESSIONS
from ..urls import quoted

__all__ = ["Sample", "load_manifest"]

_FIELDS = {"image", "face_box", "body_box", "age", "gender", "expression", "identity"}
#: Longest identity kept (a name or an id; longer ones are an error, not cut).
_MAX_IDENTITY = 200


@dataclass(frozen=True)
class Sample:
    """One labelled person; ``where`` is ``file:line`` of its manifest row."""

    image: Path
    face_box: np.ndarray | None = None
    body_box: np.ndarray | None = None
    age: float | None = None
    gender: str | None = None
    expression: str | None = None
    identity: str | None = None
    where: str = ""


def _box(value, name: str, where: str) -> np.ndarray | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    given = value
    try:
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else value.replace(",", " ").split()
        box = np.asarray([float(v) for v in value], np.float64)
    except (TypeError, ValueError, json.JSONDecodeError):
        raise InputError(f"{where}: {name} {quoted(given)} is not four numbers x0 y0 x1 y1") from None
    if box.shape != (4,) or not np.isfinite(box).all():
        raise InputError(f"{where}: {name} {quoted(given)} is not four numbers x0 y0 x1 y1")
    if not (box[2] > box[0] and box[3] > box[1]):
        raise InputError(f"{where}: {name} needs x0 y0 x1 y1 with x1 > x0 and y1 > y0, got {quoted(given)}")
    return box.astype(np.float32)


def _age(value, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        age = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: age {quoted(value)} is not a number of years") from None
    if not (math.isfinite(age) and 0 <= age <= 120):
        raise InputError(f"{where}: age {quoted(value)} is not a plausible age in years (0-120)")
    return age


def _label(value, name: str, allowed: tuple[str, ...], where: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or value not in allowed:
        raise InputError(f"{where}: {name} must be one of {', '.join(allowed)}, got {quoted(value)}")
    return value


def _identity(value, where: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{where}: identity must be a name or a number, got {quoted(value)}")
    text = str(value).strip()
    if len(text) > _MAX_IDENTITY or not text.isprintable():
        raise InputError(f"{where}: identity must be printable and at most {_MAX_IDENTITY} characters, got {quoted(text)}")
    return text


def _sample(row: dict, root: Path, where: str) -> Sample:
    if not isinstance(row, dict):
        raise InputError(f"{where}: a row must be a JSON object with an image field")
    unknown = sorted(set(row) - _FIELDS - {None})
    if unknown:
        raise InputError(f"{where}: unknown field {quoted(unknown[0])}; fields are {', '.join(sorted(_FIELDS))}")
    if None in row:  # csv.DictReader puts extra cells under None
        raise InputError(f"{where}: more cells than the header has columns")
    image = row.get("image")
    if not isinstance(image, str) or not image.strip():
        raise InputError(f"{where}: no image path")
    return Sample(
        image=(root / image.strip()),
        face_box=_box(row.get("face_box"), "face_box", where),
        body_box=_box(row.get("body_box"), "body_box", where),
        age=_age(row.get("age"), where),
        gender=_label(row.get("gender"), "gender", ("male", "female"), where),
        expression=_label(row.get("expression"), "expression", EXPRESSIONS, where),
        identity=_identity(row.get("identity"), where),
        where=where,
    )


def _rows(path: Path) -> list[tuple[str, dict]]:
    rows: list[tuple[str, dict]] = []
    try:
        if path.suffix.lower() == ".csv":
            # utf-8-sig: spreadsheet programs start a UTF-8 CSV with a byte order mark, which
            # would otherwise stick to the first column's name and hide the header
            with open(path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                if not reader.fieldnames or "image" not in reader.fieldnames:
                    raise InputError(f"{path}:1: the header needs an image column (image,face_box,body_box,age,gender,expression"
                                         ",identity)")
                for n, row in enumerate(reader, start=2):
                    rows.append((f"{path}:{n}", row))
        elif path.suffix.lower() in (".jsonl", ".ndjson"):
            for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
                if line.strip():
                    try:
                        rows.append((f"{path}:{n}", json.loads(line)))
                    except json.JSONDecodeError as err:
                        raise InputError(f"{path}:{n}: not valid JSON ({err.msg})") from None
        else:
            raise InputError(f"manifest {path} must be .csv or .jsonl")
    except UnicodeDecodeError:
        raise InputError(f"manifest {path} is not UTF-8 text") from None
    except csv.Error as err:
        raise InputError(f"{path}: not valid CSV ({err})") from None
    except OSError as err:
        raise InputError(f"cannot read manifest {path}: {err.strerror or err}") from None
    return rows


def load_manifest(path: str | Path, skipped: list[str] | None = None) -> list[Sample]:
    """Rows of a ``.csv`` (with a header) or ``.jsonl`` manifest; errors name the line.

    ``skipped``: when given, a row that cannot be parsed (a bad label, a bad box) is left out
    and its error (``file:line: what is wrong``) appended here, instead of failing the whole
    manifest. A file that is not a manifest at all still fails.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}" if not path.exists() else f"manifest {path} is not a file")
    samples = []
    for where, row in _rows(path):
        try:
            samples.append(_sample(row, path.parent, where))
        except InputError as err:
            if skipped is None:
                raise
            skipped.append(str(err))
    if not samples:
        raise InputError(f"manifest {path} lists no people" + (f" that can be read; the first: {skipped[0]}" if skipped else ""))
    return samples
