"""Labelled people an MLLM can learn from in minutes: drawn images whose content fixes the
labels, for trying ``tracklens finetune`` end to end and for its tests.

Each image is a 160x240 portrait: a face (an oval with eyes and a mouth) over a body.

- **age**: the background's colour, one per age band (green about 10 years, yellow 28,
  purple 47, cyan 70; each +-3 years). Brightness alone would not do: a vision tower's layer
  norms take most of a uniform shift out;
- **gender**: a broad coloured band across the body, red for female, blue for male;
- **expression**: the mouth, a smile for ``happy``, a straight line for ``neutral``.

Every identity keeps its age band, gender and face placement over its rows, and changes
expression and noise; the manifest has an ``identity`` column so a split keeps each one on one
side. These are not faces a real model would recognise: a model fine-tuned on them learns the
drawing's code, which is the point (a task whose answer is known, to prove training works).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["AGE_BANDS", "write_people"]

#: (background colour, age at the band's centre)
AGE_BANDS: tuple[tuple[tuple[int, int, int], int], ...] = (
    ((60, 160, 60), 10), ((200, 190, 60), 28), ((150, 70, 170), 47), ((60, 170, 190), 70),
)  # fmt: skip
_SIZE = (160, 240)  # width, height
_FACE = (56, 16, 104, 64)  # x0 y0 x1 y1 before the identity's shift


def _draw(rng: np.random.Generator, colour: tuple[int, int, int], female: bool, happy: bool, shift: tuple[int, int]) -> tuple[np.ndarray, list[float]]:
    import cv2

    w, h = _SIZE
    image = np.clip(rng.normal(colour, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    dx, dy = shift
    x0, y0, x1, y1 = _FACE[0] + dx, _FACE[1] + dy, _FACE[2] + dx, _FACE[3] + dy
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    cv2.rectangle(image, (x0 - 8, y1), (x1 + 8, h - 10), (90, 110, 120), -1)  # body
    bar = (220, 40, 40) if female else (40, 60, 220)
    cv2.rectangle(image, (x0 - 8, y1 + 20), (x1 + 8, y1 + 110), bar, -1)
    cv2.ellipse(image, (cx, cy), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, (225, 190, 160), -1)  # face
    for ex in (cx - 9, cx + 9):
        cv2.circle(image, (ex, cy - 6), 3, (30, 30, 30), -1)
    if happy:
        cv2.ellipse(image, (cx, cy + 6), (11, 8), 0, 20, 160, (120, 20, 20), 2)
    else:
        cv2.line(image, (cx - 11, cy + 12), (cx + 11, cy + 12), (120, 20, 20), 2)
    return image, [float(x0), float(y0), float(x1), float(y1)]


def write_people(out: str | Path, rows: int = 96, seed: int = 0, per_identity: int = 4) -> Path:
    """Write ``rows`` labelled images and ``out/manifest.csv`` (image, face_box, age, gender,
    expression, identity); returns the manifest's path."""
    import cv2

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    identities = -(-rows // per_identity)
    for who in range(identities):
        colour, age = AGE_BANDS[int(rng.integers(len(AGE_BANDS)))]
        female = bool(rng.integers(2))
        shift = (int(rng.integers(-8, 9)), int(rng.integers(-6, 7)))
        for k in range(min(per_identity, rows - who * per_identity)):
            happy = bool(rng.integers(2))
            image, face = _draw(rng, colour, female, happy, shift)
            name = f"images/{who:04d}-{k}.png"
            cv2.imwrite(str(out / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            lines.append({
                "image": name, "face_box": " ".join(f"{v:g}" for v in face),
                "age": age + int(rng.integers(-3, 4)), "gender": "female" if female else "male",
                "expression": "happy" if happy else "neutral", "identity": f"person-{who:04d}",
            })  # fmt: skip
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "face_box", "age", "gender", "expression", "identity"])
        writer.writeheader()
        writer.writerows(lines)
    return manifest
