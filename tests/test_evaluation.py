"""Evaluation: metric code against hand-computed cases and scikit-learn, and `tracklens eval`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import mllm_yaml
from tracklens.pipeline.errors import InputError
from tracklens.pipeline.evaluation import Sample, accuracy, age_metrics, load_manifest, macro_f1, score
from tracklens.pipeline.types import EXPRESSIONS, Estimate


def test_age_metrics_by_hand():
    m = age_metrics([30, 40, None, 25], [32, 30, 50, None])
    assert m["n"] == 2
    assert m["mae"] == pytest.approx(6.0)
    assert m["cs5"] == pytest.approx(0.5)
    assert m["mape"] == pytest.approx(100 * (2 / 32 + 10 / 30) / 2)


def test_classification_metrics_by_hand():
    pred = ["happy", "happy", "sad", "neutral", None]
    true = ["happy", "sad", "sad", "happy", "anger"]
    assert accuracy(pred, true) == {"accuracy": 0.5, "n": 4}
    # happy: tp1 fp1 fn1 -> 0.5; sad: tp1 fp0 fn1 -> 2/3; neutral: tp0 fp1 -> 0
    assert macro_f1(pred, true)["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)


def test_metrics_agree_with_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    true_age = rng.uniform(1, 90, 200)
    pred_age = true_age + rng.normal(0, 6, 200)
    m = age_metrics(pred_age, true_age)
    assert m["mae"] == pytest.approx(sk.mean_absolute_error(true_age, pred_age))
    assert m["mape"] == pytest.approx(100 * sk.mean_absolute_percentage_error(true_age, pred_age))
    labels_true = rng.choice(EXPRESSIONS, 300).tolist()
    labels_pred = [t if rng.random() < 0.6 else rng.choice(EXPRESSIONS) for t in labels_true]
    assert accuracy(labels_pred, labels_true)["accuracy"] == pytest.approx(sk.accuracy_score(labels_true, labels_pred))
    assert macro_f1(labels_pred, labels_true)["macro_f1"] == pytest.approx(
        sk.f1_score(labels_true, labels_pred, average="macro")
    )


def _onehot(name):
    return tuple(1.0 if n == name else 0.0 for n in EXPRESSIONS)


def test_report_on_fixed_predictions():
    samples = [
        Sample(Path("a"), age=25, gender="female", expression="happy"),
        Sample(Path("b"), age=35, gender="male", expression="sad"),
        Sample(Path("c"), age=70, gender="female", expression="neutral"),
        Sample(Path("d"), age=40, gender="male"),
    ]
    base = {"track": "t", "time": 0.0, "source": "mllm", "model": "m", "prompt": "p1", "face_px": 100.0}
    estimates = [
        Estimate(**base, age=28.0, p_female=0.8, expression=_onehot("happy")),
        Estimate(**base, age=45.0, p_female=0.7, expression=_onehot("sad")),
        Estimate(**base, valid=False, reason="refusal"),
        Estimate(**base, age=130.0, p_female=0.1),  # rejected by the consistency rules
    ]
    r = score(samples, estimates, seconds=2.0)
    assert r["age"] == {"mae": pytest.approx(6.5), "cs5": 0.5, "mape": pytest.approx(100 * (3 / 25 + 10 / 35) / 2), "n": 2}
    assert r["gender"] == {"accuracy": 0.5, "n": 2}
    assert r["expression"]["accuracy"] == 1.0 and r["expression"]["n"] == 2
    assert r["valid_share"] == 0.75 and r["refusals"] == 1 and r["rejected"] == 1
    assert r["crops_per_s"] == 2.0 and r["prompt"] == "p1"
    assert r["by_age_band"]["18-29"]["age"]["mae"] == pytest.approx(3.0)
    assert r["by_age_band"]["30-44"]["age"]["mae"] == pytest.approx(10.0)
    assert r["by_age_band"]["60+"]["age"]["n"] == 0
    # b (male) was called female; c refused and d was rejected, so each group has one pair
    assert r["by_gender"]["male"]["gender"] == {"accuracy": 0.0, "n": 1}
    assert r["by_gender"]["female"]["gender"] == {"accuracy": 1.0, "n": 1}


def test_manifest_errors_name_the_line(tmp_path):
    (tmp_path / "img.png").write_bytes(b"")
    bad = tmp_path / "m.csv"
    bad.write_text("image,age,gender\nimg.png,30,female\nimg.png,30,robot\n")
    with pytest.raises(InputError, match=r"m\.csv:3: gender must be one of male, female, got 'robot'"):
        load_manifest(bad)


def test_unreadable_images_and_boxes_outside_are_invalid_rows_with_their_reason(tmp_path, astronaut):
    """A row whose image cannot be read or whose box is not inside the image is not a crash:
    it is an invalid row, reported with its line and reason, and the valid rows still count."""
    from PIL import Image
    from tracklens.pipeline.config import CropConfig
    from tracklens.pipeline.evaluation import build_crops, evaluate

    Image.fromarray(astronaut).save(tmp_path / "a.png")
    (tmp_path / "text.png").write_text("not an image")
    rows = [
        {"image": "a.png", "face_box": [170, 40, 290, 190], "age": 42},
        {"image": "nope.png", "age": 30},
        {"image": "text.png", "age": 30},
        {"image": "a.png", "face_box": [-20, 40, 100, 190], "age": 42},
        {"image": "a.png", "body_box": [0, 0, 600, 512], "age": 42},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = load_manifest(path)
    crops = build_crops(samples, None, CropConfig())
    assert not isinstance(crops[0], str)
    assert "image not found" in crops[1] and "not an image file" in crops[2]
    assert crops[3].startswith("face_box [-20.0, 40.0, 100.0, 190.0] is not inside the 512x512 image")
    assert crops[4].startswith("body_box") and "512x512" in crops[4]

    class Ages:
        source, model_id = "specialist", "fixed"

        def estimate(self, batch):
            return [Estimate(c.track, 0.0, "specialist", "fixed", age=40.0, face_px=c.face_px) for c in batch]

    (report,) = evaluate(samples, crops, {"fixed": Ages()}).values()
    assert report["rows"] == 5 and report["n"] == 1 and report["age"]["mae"] == pytest.approx(2.0)
    assert [r["row"] for r in report["invalid_rows"]] == [f"{path}:{n}" for n in (2, 3, 4, 5)]


@pytest.fixture()
def photo_manifest(tmp_path, astronaut) -> Path:
    """Real photos: the astronaut (Eileen Collins, about 42 in the portrait) in several
    framings, and scikit-image's cameraman (a man; age and expression left unlabelled)."""
    from PIL import Image
    from skimage import data

    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(tmp_path / "astronaut_flipped.png")
    Image.fromarray(astronaut).resize((384, 384)).save(tmp_path / "astronaut_small.png")
    Image.fromarray(np.stack([data.camera()] * 3, -1)).save(tmp_path / "cameraman.png")
    rows = [
        {"image": "astronaut.png", "age": 42, "gender": "female", "expression": "happy"},
        {"image": "astronaut_flipped.png", "age": 42, "gender": "female", "expression": "happy"},
        {"image": "astronaut_small.png", "face_box": [134, 62, 200, 128], "age": 42, "gender": "female", "expression": "happy"},
        {"image": "cameraman.png", "gender": "male"},
    ]
    path = tmp_path / "people.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_cli_prints_both_estimators_side_by_side(tmp_path, photo_manifest, models, tiny_whole):
    config = mllm_yaml(tmp_path / "eval.yaml", tiny_whole, routed=True)
    out = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "tracklens.pipeline.cli", "eval", str(photo_manifest), "--estimator", "both",
         "--config", str(config), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header == ["metric", "specialist", "mllm"]
    assert "age MAE (years)" in result.stdout and "gender acc., female" in result.stdout
    report = json.loads(out.read_text())["estimators"]
    spec, mllm = report["specialist"], report["mllm"]
    assert spec["n"] == mllm["n"] == 4
    assert mllm["valid_share"] == 1.0 and mllm["prompt"] == "person-v1"
    assert spec["by_gender"]["female"]["gender"]["accuracy"] == 1.0
    assert spec["expression"]["accuracy"] == 1.0 and spec["age"]["n"] == 3
    assert spec["age"]["mae"] < 15
