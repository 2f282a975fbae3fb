"""Age/gender chips from CenterFace and YuNet boxes against chips from dlib's own detector box.

The specialist aligns its chips with dlib's 5-point shape predictor, which was trained from dlib
HOG's boxes and moves its points with the box it starts from. This script

1. draws real faces (``tests/chip_faces.py``: scikit-image's 100 LFW faces 4 times each, the
   astronaut and Grace Hopper 24 times each; face 40-170 px, turned up to 8 degrees, mirrored or
   not) and keeps those that dlib HOG (upsample 1) finds once and the other detector finds too;
2. fits ``DLIB_BOX_FROM_POINTS`` (``pipeline/estimators/specialist.py``) on half of the faces
   (even LFW people and Grace Hopper): where dlib's detector box lies in the frame of the points
   the shape predictor gives from that box (medians), and prints it next to the numbers in code;
3. on the other half (odd LFW people and the astronaut), compares the chips the pipeline makes
   (``cut_crop`` -> the specialist) from each detector's box with the chips from dlib's box:
   the largest distance between the 5 points the chips are aligned on, in pixels of the 64 px
   age chip, and the answers' differences (age in years, ``p_female``), for

   - ``before``: every box used as given (one shape-predictor pass, the chips before settling);
   - ``after``: every box settled (``settle_face_shape``), dlib's own included, as now;
   - ``after_vs_dlib_chain``: settled chips against dlib's box used as given (dlib's own
     detector + shape predictor, the chips the models were trained on);
   - ``floor``: dlib's box used as given against the same box moved by up to half a HOG cell
     (1/20 of its side) in x and y, as dlib's detector itself places a face's box: how much of
     ``after_vs_dlib_chain`` any box could remove.

Usage: ``.venv/bin/python bench/chip_alignment.py [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from chip_faces import face_set
from tracklens.pipeline.config import (
    CenterfaceFaceDetectorConfig,
    CropConfig,
    DlibFaceDetectorConfig,
    SpecialistEstimatorConfig,
    YunetFaceDetectorConfig,
)
from tracklens.pipeline.crops import cut_crop
from tracklens.pipeline.detectors import build_detector
from tracklens.pipeline.estimators.specialist import DLIB_BOX_FROM_POINTS, OnnxSpecialistEstimator, point_frame
from tracklens.pipeline.models import ModelCache
from tracklens.pipeline.types import Person

OTHERS = (
    ("centerface", CenterfaceFaceDetectorConfig(threads=1)),
    ("yunet", YunetFaceDetectorConfig(parallel_frames=1)),
)


def fitting_half(source: str) -> bool:
    return source == "hopper" or (source.startswith("lfw") and int(source[3:]) % 2 == 0)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(rb - lt, 0, None)))
    return inter / (float(np.prod(a[2:] - a[:2])) + float(np.prod(b[2:] - b[:2])) - inter)


def crop(image: np.ndarray, box: np.ndarray):
    """The pipeline's crop of a face detected at ``box`` (confidence high enough to be read)."""
    return cut_crop(image, 0.0, "bench:0:1", Person(box, 1.0, box, 0.9, False), 1.0, CropConfig())


def read(est: OnnxSpecialistEstimator, image: np.ndarray, box: np.ndarray):
    """``(points (5, 2) in image pixels, age, p_female)`` of the face in ``box``."""
    c = crop(image, box)
    origin = box[:2] - c.face_box[:2]
    (e,) = est.estimate([c])
    return est.face_points(c) + origin, e.age, e.p_female


def chip_px(reference: np.ndarray, points: np.ndarray) -> float:
    """Largest distance between matching points, in pixels of the 64 px age chip aligned on
    ``reference`` (the chip spans ``rect.width()`` image pixels)."""
    import dlib

    shape = dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1), [dlib.point(int(x), int(y)) for x, y in reference])
    width = dlib.get_face_chip_details(shape, 64, 0.2).rect.width()
    return float(np.linalg.norm(points - reference, axis=1).max() * 64 / width)


def summary(rows: list[tuple[float, float, float]]) -> dict:
    a = np.array(rows, np.float64).reshape(-1, 3)
    out = {"faces": len(a)}
    for j, name in enumerate(("chip_px", "age_years", "p_female")):
        out[name] = {"median": round(float(np.median(a[:, j])), 4), "p90": round(float(np.percentile(a[:, j], 90)), 4),
                     "max": round(float(a[:, j].max()), 4)}  # fmt: skip
    out["share_chip_px_le_1"] = round(float((a[:, 0] <= 1.0).mean()), 3)
    out["share_age_le_1"] = round(float((a[:, 1] <= 1.0).mean()), 3)
    out["share_p_female_le_0.02"] = round(float((a[:, 2] <= 0.02).mean()), 3)
    return out


def compare(est, image, a, b, settle_a: bool, settle_b: bool) -> tuple[float, float, float]:
    est.settle_steps = 8 if settle_a else 0
    pa, age_a, pf_a = read(est, image, a)
    est.settle_steps = 8 if settle_b else 0
    pb, age_b, pf_b = read(est, image, b)
    return chip_px(pa, pb), abs(age_a - age_b), abs(pf_a - pf_b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "chip_alignment.json")
    args = parser.parse_args()
    models = ModelCache()
    est = OnnxSpecialistEstimator(SpecialistEstimatorConfig(threads=1), models)
    dlib_hog = build_detector(DlibFaceDetectorConfig(upsample=1, threads=1), models)
    others = {name: build_detector(cfg, models) for name, cfg in OTHERS}
    faces = face_set()
    found = []  # (face, dlib box, {detector: box})
    for face in faces:
        d = dlib_hog.detect([face.image])[0]
        if len(d) != 1:
            continue
        boxes = {}
        for name, det in others.items():
            o = det.detect([face.image])[0]
            best = max(range(len(o)), key=lambda i: iou(d.xyxy[0], o.xyxy[i]), default=None)
            if best is not None and iou(d.xyxy[0], o.xyxy[best]) >= 0.3:
                boxes[name] = o.xyxy[best]
        found.append((face, d.xyxy[0], boxes))
    print(f"{len(faces)} face images, dlib found {len(found)}; " + ", ".join(
        f"{n} too: {sum(n in b for _, _, b in found)}" for n in others))  # fmt: skip

    # 2. the fit: dlib's box in the frame of the points the predictor gives from it
    est.settle_steps = 0
    frames = []
    for face, box, _ in found:
        if not fitting_half(face.source):
            continue
        c = crop(face.image, box)
        points = est.face_points(c) + (box[:2] - c.face_box[:2])
        centre, u, v, s = point_frame(points)
        d = (box[:2] + box[2:]) / 2 - centre
        frames.append((d @ u / s, d @ v / s, float(np.mean(box[2:] - box[:2])) / s))
    frames = np.array(frames)
    fit = [round(float(x), 4) for x in np.median(frames, axis=0)]
    print(f"fit on {len(frames)} faces: DLIB_BOX_FROM_POINTS = {tuple(fit)} (in code: {DLIB_BOX_FROM_POINTS}); "
          f"spread (std) {np.round(frames.std(axis=0), 3).tolist()}")  # fmt: skip

    # 3. the comparison on the held-out half
    rng = np.random.default_rng(1)
    result = {"faces_drawn": len(faces), "dlib_found": len(found),
              "fit": {"faces": len(frames), "median": fit, "mean": np.round(frames.mean(axis=0), 4).tolist(),
                      "std": np.round(frames.std(axis=0), 4).tolist(), "in_code": list(DLIB_BOX_FROM_POINTS)},
              "detectors": {}}  # fmt: skip
    held_out = [f for f in found if not fitting_half(f[0].source)]
    floor = []
    for face, box, _ in held_out:
        side = float(np.mean(box[2:] - box[:2]))
        moved = box + np.tile(np.round(rng.uniform(-side / 20, side / 20, 2)), 2)
        floor.append(compare(est, face.image, box, moved, False, False))
    for name in others:
        rows = {"before": [], "after": [], "after_vs_dlib_chain": []}
        for face, box, boxes in held_out:
            if name not in boxes:
                continue
            rows["before"].append(compare(est, face.image, box, boxes[name], False, False))
            rows["after"].append(compare(est, face.image, box, boxes[name], True, True))
            rows["after_vs_dlib_chain"].append(compare(est, face.image, box, boxes[name], False, True))
        result["detectors"][name] = {k: summary(v) for k, v in rows.items()}
    result["floor"] = summary(floor)
    for name, by in result["detectors"].items():
        for kind, s in {**by, "floor": result["floor"]}.items():
            chip, age, female = s["chip_px"], s["age_years"], s["p_female"]
            print(f"{name:10s} {kind:20s} faces {s['faces']:3d}  "
                  f"chip px median {chip['median']:.2f} p90 {chip['p90']:.2f}  age median {age['median']:.2f} p90 {age['p90']:.2f} <=1y {s['share_age_le_1']:.2f}  "
                  f"p_female median {female['median']:.4f} p90 {female['p90']:.3f} "
                  f"<=0.02 {s['share_p_female_le_0.02']:.2f}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
