"""Evaluation: metric code against hand-computed cases and scikit-learn, faces found (padded when
they fill the photo) with the real detectors, the predictions file, and `tracklens eval`."""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import numpy as np
import pytest
from conftest import mllm_yaml, run_cli
from tracklens.pipeline.errors import InputError
from tracklens.pipeline.evaluation import (
    Sample,
    format_predictions,
    format_report,
    load_manifest,
    prediction_rows,
    score,
)
from tracklens.pipeline.types import EXPRESSIONS, Estimate


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
    happy, sad = EXPRESSIONS.index("happy"), EXPRESSIONS.index("sad")
    counts = np.array(r["expression_confusion"]["counts"])
    assert counts.sum() == 2 and counts[happy, happy] == counts[sad, sad] == 1
    # a: p 0.8 and female, in (0.7, 0.8]; b: p 0.7 and male, in (0.6, 0.7]: ECE = (0.2 + 0.7) / 2
    cal = r["gender_calibration"]
    assert cal["n"] == 2 and cal["ece"] == pytest.approx(0.45)
    assert [b["n"] for b in cal["bins"]] == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0]
    text = format_report({"mllm": r})
    assert "gender ECE (10 bins)    0.450" in text
    lines = text.splitlines()
    start = lines.index("expression confusion (rows: truth, columns: prediction; truths without pairs left out)")
    assert lines[start + 1 :] == [
        "         | mllm",
        "truth    | neu hap sad sur fea dis ang",
        "happy    |   .   1   .   .   .   .   .",
        "sad      |   .   .   1   .   .   .   .",
    ]


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
    rows = build_crops(samples, None, CropConfig())
    assert rows[0].crop is not None and rows[0].invalid is None and rows[0].face == "face_given"
    assert all(r.crop is None and r.face is None for r in rows[1:])
    assert "image not found" in rows[1].invalid and "not an image file" in rows[2].invalid
    assert rows[3].invalid.startswith("face_box [-20.0, 40.0, 100.0, 190.0] is not inside the 512x512 image")
    assert rows[4].invalid.startswith("body_box") and "512x512" in rows[4].invalid

    class Ages:
        source, model_id = "specialist", "fixed"

        def estimate(self, batch):
            return [Estimate(c.track, 0.0, "specialist", "fixed", age=40.0, face_px=c.face_px) for c in batch]

    (report,) = evaluate(samples, rows, {"fixed": Ages()}).reports.values()
    assert report["rows"] == 5 and report["n"] == 1 and report["age"]["mae"] == pytest.approx(2.0)
    assert [r["row"] for r in report["invalid_rows"]] == [f"{path}:{n}" for n in (2, 3, 4, 5)]


class _Answers:
    """A stand-in estimator: the answer for each crop comes from ``by_row`` (manifest index,
    read from the crop's ``eval:{index}`` key)."""

    source, model_id = "mllm", "fixed"

    def __init__(self, by_row: dict[int, dict]) -> None:
        self.by_row = by_row

    def estimate(self, batch):
        base = {"time": 0.0, "source": "mllm", "model": "fixed"}
        answers = []
        for crop in batch:
            answer = {**base, "face_px": crop.face_px, **self.by_row[int(crop.track.split(":")[1])]}
            answers.append(Estimate(crop.track, **answer))
        return answers


def test_predictions_file_shows_every_row_with_its_reason(tmp_path, astronaut):
    """One row per person per estimator: the labels, the answer as given (also when it does not
    count), valid and why not, and how the face was found; CSV and JSONL hold the same rows."""
    from PIL import Image
    from tracklens.pipeline.config import CropConfig
    from tracklens.pipeline.evaluation import PREDICTION_COLUMNS, build_crops, evaluate

    Image.fromarray(astronaut).save(tmp_path / "a.png")
    face = [170, 40, 290, 190]
    rows = [
        {"image": "a.png", "face_box": face, "age": 42, "gender": "female", "expression": "happy"},
        {"image": "a.png", "face_box": [200, 100, 210, 110], "age": 42},  # 10 px: too small to read
        {"image": "nope.png", "age": 30},
        {"image": "a.png", "age": 42},  # no face box and no detector: no face
        {"image": "a.png", "face_box": face, "age": 30, "gender": "male"},
        {"image": "a.png", "face_box": face, "age": 40, "expression": "sad"},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = load_manifest(path)
    prepared = build_crops(samples, None, CropConfig())
    assert [r.face for r in prepared] == ["face_given", "face_unreadable", None, "no_face", "face_given", "face_given"]
    assert prepared[1].crop.face is None and prepared[3].crop.face is None
    answers = _Answers({
        0: {"age": 40.0, "p_female": 0.9, "expression": _onehot("happy")},
        1: {"valid": False, "reason": "no face in crop"},
        3: {"valid": False, "reason": "refusal"},
        4: {"age": 130.0, "p_female": 0.2},
        5: {"age": 35.0, "p_female": 0.4, "expression": _onehot("sad"), "face_px": 20.0,
            "source": "specialist", "primary_failure": "backend error: timed out"},  # a routed fallback
    })  # fmt: skip
    result = evaluate(samples, prepared, {"fixed": answers}, min_face_px=32)
    report = result.reports["fixed"]
    outcomes = {"face_given": 3, "face_detected": 0, "face_detected_padded": 0, "face_unreadable": 1, "no_face": 1}
    assert report["face_outcomes"] == outcomes
    assert report["n"] == 5 and len(report["invalid_rows"]) == 1
    assert report["answered_by"] == {"mllm": 4, "specialist": 1}
    assert report["primary_failures"] == {"backend error": 1}
    text = format_report(result.reports)
    assert "no face found           1" in text
    assert "answered by             mllm 4, specialist 1" in text
    assert "primary failed, why     backend error 1" in text

    got = prediction_rows(samples, prepared, result.estimates, min_face_px=32)
    assert len(got) == 6 and all(tuple(r) == PREDICTION_COLUMNS for r in got)
    assert [r["row"] for r in got] == [f"{path}:{n}" for n in range(1, 7)]
    assert got[0] | {"image": None} == {
        "row": f"{path}:1", "image": None, "true_age": 42.0, "true_gender": "female", "true_expression": "happy",
        "estimator": "fixed", "age": 40.0, "p_female": 0.9, "gender": "female", "expression": "happy", "expression_p": 1.0,
        "source": "mllm", "model": "fixed", "valid": True, "reason": None, "primary_failure": None, "face": "face_given",
        "face_box": [170.0, 40.0, 290.0, 190.0], "face_score": 1.0,
    }  # fmt: skip
    assert (got[1]["valid"], got[1]["reason"], got[1]["face"]) == (False, "no face in crop", "face_unreadable")
    assert got[1]["face_box"] == [200.0, 100.0, 210.0, 110.0]  # the box that was given, though unreadable
    assert got[2]["valid"] is False and got[2]["reason"].startswith("invalid row: image not found")
    assert got[2]["face"] is None
    assert got[2]["source"] is None and got[2]["age"] is None
    assert (got[3]["valid"], got[3]["reason"], got[3]["face"], got[3]["face_box"]) == (False, "refusal", "no_face", None)
    assert got[4]["valid"] is False and got[4]["reason"] == "rejected: age 130.0 outside 0-100" and got[4]["age"] == 130.0
    assert got[5]["valid"] is True and got[5]["reason"].startswith("expression not scored: expression from a 20 px face")
    assert (got[5]["expression"], got[5]["gender"]) == ("sad", "male")
    assert (got[5]["source"], got[5]["primary_failure"]) == ("specialist", "backend error: timed out")

    table = list(csv.DictReader(format_predictions(got, ".csv").splitlines()))
    assert len(table) == 6 and tuple(table[0]) == PREDICTION_COLUMNS
    assert (table[0]["valid"], table[0]["face_box"], table[0]["age"]) == ("true", "170 40 290 190", "40.0")
    assert table[0]["reason"] == "" and table[2]["source"] == ""
    assert table[0]["primary_failure"] == "" and table[5]["primary_failure"] == "backend error: timed out"
    assert (table[3]["valid"], table[3]["face"], table[3]["face_box"]) == ("false", "no_face", "")
    assert [json.loads(line) for line in format_predictions(got, ".jsonl").splitlines()] == got


#: ``(x0, y0, x1, y1)`` of a crop of the 512x512 astronaut that the detector misses unpadded,
#: its face filling the whole crop (checked with each real detector).
_FACE_FILLS_THE_IMAGE = {
    "centerface": (196, 90, 260, 158),  # eyebrows to mouth, 64x68
    "dlib_hog": (186, 70, 260, 168),  # forehead to chin, 74x98
    "haar": (196, 90, 260, 158),
}


def _face_config(kind: str):
    from tracklens.pipeline import config

    if kind == "default":
        return config.load_config(None).detection.face
    classes = {"centerface": config.CenterfaceFaceDetectorConfig, "dlib_hog": config.DlibFaceDetectorConfig,
               "haar": config.HaarFaceDetectorConfig}  # fmt: skip
    return classes[kind]()


@pytest.fixture()
def face_detector(request, models):
    """The real face detector named by the test's parameter (``default``: the config's)."""
    from tracklens.pipeline.detectors import build_detector

    detector = build_detector(_face_config(request.param), models)
    yield detector
    getattr(detector, "close", lambda: None)()


def _one_row(tmp_path, image: np.ndarray, name: str, **labels) -> list[Sample]:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(image)).save(tmp_path / name)
    path = tmp_path / f"{Path(name).stem}.jsonl"
    path.write_text(json.dumps({"image": name, **labels}) + "\n")
    return load_manifest(path)


@pytest.mark.integration
@pytest.mark.parametrize("face_detector", list(_FACE_FILLS_THE_IMAGE), indirect=True)
def test_a_face_filling_the_photo_is_found_after_padding(tmp_path, astronaut, face_detector, request):
    """Face-crop photos: detectors miss a face that fills the whole image (no context around
    it); with a gray border the face is found, its box mapped back and clipped to the image."""
    from tracklens.pipeline.config import CropConfig
    from tracklens.pipeline.evaluation import build_crops

    x0, y0, x1, y1 = _FACE_FILLS_THE_IMAGE[request.node.callspec.params["face_detector"]]
    image = np.ascontiguousarray(astronaut[y0:y1, x0:x1])
    assert len(face_detector.detect([image])[0]) == 0, "this crop no longer defeats the detector unpadded"
    (row,) = build_crops(_one_row(tmp_path, image, "face.png", age=42), face_detector, CropConfig())
    h, w = image.shape[:2]
    box = row.found.box
    assert row.face == "face_detected_padded" and row.found.padded
    assert (box >= 0).all() and box[2] <= w and box[3] <= h
    assert (box[2] - box[0]) * (box[3] - box[1]) >= 0.6 * w * h
    assert row.crop.face is not None and row.crop.face_px == pytest.approx(box[3] - box[1])


@pytest.mark.integration
@pytest.mark.parametrize("face_detector", ["default", "centerface", "dlib_hog", "haar"], indirect=True)
def test_the_tightly_cropped_face_is_always_found(tmp_path, astronaut, face_detector):
    """The astronaut cropped to her face box (176, 60, 270, 178): found plainly by the detectors
    of today, and by the padded scan whenever the plain scan misses it; never "no face"."""
    from tracklens.pipeline.config import CropConfig
    from tracklens.pipeline.evaluation import build_crops

    image = np.ascontiguousarray(astronaut[60:178, 176:270])
    (row,) = build_crops(_one_row(tmp_path, image, "face.png", age=42), face_detector, CropConfig())
    plain = face_detector.detect([image])[0]
    assert row.face == ("face_detected" if len(plain) else "face_detected_padded")
    box, (h, w) = row.found.box, image.shape[:2]
    assert (box[2] - box[0]) * (box[3] - box[1]) >= 0.5 * w * h
    assert row.crop.face is not None


@pytest.mark.integration
@pytest.mark.parametrize("face_detector", ["centerface"], indirect=True)
def test_no_face_is_an_outcome_not_a_guess(tmp_path, face_detector, models):
    """A photo without a person (scikit-image's rocket): nothing found plain or padded, so the
    crop has no face, the specialist says so, and the outcome is counted and written."""
    from skimage import data
    from tracklens.pipeline.config import CropConfig, SpecialistEstimatorConfig
    from tracklens.pipeline.estimators import build_estimator
    from tracklens.pipeline.evaluation import build_crops, evaluate

    samples = _one_row(tmp_path, data.rocket(), "rocket.png", age=30, gender="male")
    rows = build_crops(samples, face_detector, CropConfig())
    assert rows[0].face == "no_face" and rows[0].found is None and rows[0].crop.face is None
    result = evaluate(samples, rows, {"specialist": build_estimator(SpecialistEstimatorConfig(), models)})
    report = result.reports["specialist"]
    assert report["face_outcomes"]["no_face"] == 1 and report["valid_share"] == 0.0
    assert report["age"]["n"] == 0 and report["gender"]["n"] == 0
    (row,) = prediction_rows(samples, rows, result.estimates)
    assert (row["face"], row["valid"], row["reason"], row["age"]) == ("no_face", False, "no face in crop", None)


@pytest.fixture()
def photo_manifest(tmp_path, astronaut) -> Path:
    """Real photos: the astronaut (Eileen Collins, about 42 in the portrait) in several
    framings, one of them her face alone filling the photo (found only after padding),
    scikit-image's cameraman (a man; age and expression left unlabelled), and its rocket (no
    person: no face can be found)."""
    from PIL import Image
    from skimage import data

    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(tmp_path / "astronaut_flipped.png")
    Image.fromarray(astronaut).resize((384, 384)).save(tmp_path / "astronaut_small.png")
    x0, y0, x1, y1 = _FACE_FILLS_THE_IMAGE["centerface"]
    Image.fromarray(np.ascontiguousarray(astronaut[y0:y1, x0:x1])).save(tmp_path / "astronaut_face.png")
    Image.fromarray(np.stack([data.camera()] * 3, -1)).save(tmp_path / "cameraman.png")
    Image.fromarray(data.rocket()).save(tmp_path / "rocket.png")
    rows = [
        {"image": "astronaut.png", "age": 42, "gender": "female", "expression": "happy"},
        {"image": "astronaut_flipped.png", "age": 42, "gender": "female", "expression": "happy"},
        {"image": "astronaut_small.png", "face_box": [134, 62, 200, 128], "age": 42, "gender": "female", "expression": "happy"},
        {"image": "astronaut_face.png", "age": 42, "gender": "female", "expression": "happy"},
        {"image": "cameraman.png", "gender": "male"},
        {"image": "rocket.png"},
    ]
    path = tmp_path / "people.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.integration
def test_eval_cli_prints_both_estimators_side_by_side(tmp_path, photo_manifest, models, tiny_whole):
    config = mllm_yaml(tmp_path / "eval.yaml", tiny_whole, routed=True)
    with open(config, "a") as fh:  # the face detector the rows below were checked with
        fh.write("detection:\n  face: {type: centerface}\n")
    out, predictions = tmp_path / "report.json", tmp_path / "predictions.jsonl"
    result = run_cli("eval", str(photo_manifest), "--estimator", "both", "--config", str(config), "--out", str(out),
                     "--predictions", str(predictions))  # fmt: skip
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header == ["metric", "specialist", "mllm"]
    for row in ("age MAE (years)", "gender acc., female", "gender ECE (10 bins)", "faces detected, padded  1",
                "no face found           1", "expression confusion (rows: truth, columns: prediction"):  # fmt: skip
        assert row in result.stdout, row
    assert "no face found in 1 row; there the estimators saw only the body" in result.stderr
    document = json.loads(out.read_text())
    assert document["predictions"] == str(predictions)
    spec, mllm = document["estimators"]["specialist"], document["estimators"]["mllm"]
    assert spec["n"] == mllm["n"] == 6
    outcomes = {"face_given": 1, "face_detected": 3, "face_detected_padded": 1, "face_unreadable": 0, "no_face": 1}
    assert spec["face_outcomes"] == mllm["face_outcomes"] == outcomes
    assert mllm["valid_share"] == 1.0 and mllm["prompt"] == "person-v1"
    assert spec["by_gender"]["female"]["gender"]["accuracy"] == 1.0
    assert spec["expression"]["accuracy"] == 1.0 and spec["age"]["n"] == 4
    assert spec["age"]["mae"] < 15
    happy = EXPRESSIONS.index("happy")
    assert spec["expression_confusion"]["counts"][happy][happy] == 4
    assert spec["gender_calibration"]["n"] == 5 and 0 <= spec["gender_calibration"]["ece"] <= 1

    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(rows) == 12 and [r["estimator"] for r in rows[:2]] == ["specialist", "mllm"]
    by = {(Path(r["image"]).name, r["estimator"]): r for r in rows}
    assert by["astronaut_face.png", "specialist"]["face"] == "face_detected_padded"
    assert by["astronaut_face.png", "specialist"]["valid"] is True
    rocket = by["rocket.png", "specialist"]
    assert (rocket["face"], rocket["valid"], rocket["reason"]) == ("no_face", False, "no face in crop")
    assert rocket["face_box"] is None
    assert by["rocket.png", "mllm"]["face"] == "no_face" and by["rocket.png", "mllm"]["source"] == "mllm"
    assert by["astronaut_small.png", "mllm"]["face"] == "face_given"
    assert all(r["model"] for r in rows) and {r["source"] for r in rows} == {"specialist", "mllm"}


@pytest.mark.integration
def test_eval_of_a_routed_estimator_says_why_its_primary_did_not_answer(tmp_path, photo_manifest, models):
    """An MLLM endpoint that went away: every answer is the specialist's, and the table, the
    JSON and the predictions file say so and why."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "routed.yaml"
    config.write_text(
        "estimator:\n  type: routed\n  primary:\n    type: mllm\n    mode: constrained\n    backend: {type: openai, "
        f"base_url: 'http://127.0.0.1:{port}/v1', model: m, api_key_env: null, max_retries: 0, check_on_start: false}}\n"
        "detection:\n  face: {type: centerface}\n"
    )
    out, predictions = tmp_path / "report.json", tmp_path / "predictions.csv"
    result = run_cli("eval", str(photo_manifest), "--estimator", "routed", "--config", str(config), "--out", str(out),
                     "--predictions", str(predictions))  # fmt: skip
    assert result.returncode == 0, result.stderr
    routed = json.loads(out.read_text())["estimators"]["routed"]
    assert routed["answered_by"] == {"specialist": 6}
    assert routed["primary_failures"] == {"backend error": 6}
    assert "answered by             specialist 6" in result.stdout
    assert "primary failed, why     backend error 6" in result.stdout
    assert "warning: routed: the primary did not answer 6 of 6 crops (backend error 6)" in result.stderr
    rows = list(csv.DictReader(predictions.read_text().splitlines()))
    assert len(rows) == 6 and {r["source"] for r in rows} == {"specialist"}
    assert all(r["primary_failure"].startswith("backend error: connection failed") for r in rows)
