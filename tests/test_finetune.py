"""``tracklens finetune``: the tiny offline LLaVA learns drawn people whose labels its pixels
fix, through the same crops, prompt and answers as ``eval``; the trained adapter drops into
``eval`` unchanged; a stopped run resumes to the same weights; bad input is one line."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import assert_one_line_error, run_cli

torch = pytest.importorskip("torch", reason="fine-tuning needs the [finetune] extra (make test installs it)")
pytest.importorskip("peft", reason="LoRA needs the [finetune] extra (make test installs it)")


def _config(path: Path, model: Path, method: str = "lora", **finetune) -> Path:
    section = {
        "method": method, "learning_rate": 2.0e-3 if method == "lora" else 3.0e-4, "max_steps": 250, "batch_size": 8,
        "warmup_ratio": 0.05, "checkpoint_every": 50, "val_share": 0.25,
        **({"lora": {"rank": 16, "alpha": 32, "dropout": 0.0}} if method == "lora" else {}), **finetune,
    }  # fmt: skip
    document = {
        "estimator": {"type": "mllm", "mode": "scored", "batch_size": 16,
                      "backend": {"type": "transformers", "model": str(model), "local_files_only": True, "device": "cpu"}},
        "finetune": section,
    }  # fmt: skip
    path.write_text(json.dumps(document))  # YAML is a superset of JSON
    return path


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("people")
    result = run_cli("sample-people", str(out), "--rows", "160")
    assert result.returncode == 0, result.stderr
    return out / "manifest.csv"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_whole, people) -> tuple[Path, subprocess.CompletedProcess]:
    where = tmp_path_factory.mktemp("lora")
    config = _config(where / "ft.yaml", tiny_whole)
    result = run_cli("finetune", str(people), "--config", str(config), "--out", str(where / "run"), "--merge", "--no-progress")
    assert result.returncode == 0, result.stderr
    return where / "run", result


def _mllm(report: dict) -> dict:
    return report["estimators"]["mllm"]


def test_lora_learns_the_labels_and_keeps_the_whole_run(lora_run, people):
    run, result = lora_run
    report = json.loads((run / "report.json").read_text())
    before, after = _mllm(report["before"]), _mllm(report["after"])
    assert after["age"]["mae"] <= 0.5 * before["age"]["mae"], (before["age"], after["age"])
    assert after["gender"]["accuracy"] >= 0.9 > before["gender"]["accuracy"] or before["gender"]["accuracy"] >= 0.9
    assert after["gender"]["accuracy"] >= 0.9, after["gender"]
    assert after["expression"]["accuracy"] > before["expression"]["accuracy"], (before["expression"], after["expression"])
    assert after["valid_share"] == 1.0
    # the run's record: exact config, the manifest's hash, the split, per-step log, adapter, merged model
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["manifests"]["train"]["sha256"] == hashlib.sha256(people.read_bytes()).hexdigest()
    assert recorded["split"] == "identity" and recorded["train_rows"] + recorded["val_rows"] == 160
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 251))
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "merged" / "config.json").is_file()
    assert (run / "checkpoints" / "step-00000250" / "trainable.pt").is_file()
    assert "age MAE" in result.stderr and "gender accuracy" in result.stdout
    trained = yaml.safe_load((run / "eval.yaml").read_text())["estimator"]["backend"]
    assert trained["adapter"] == str((run / "adapter").resolve()) and trained["model_id"].endswith("+finetune:run")


def test_the_split_keeps_each_identity_on_one_side(lora_run, people):
    run, _ = lora_run
    import csv

    with open(people, newline="") as fh:
        identity = {str((people.parent / row["image"]).resolve()): row["identity"] for row in csv.DictReader(fh)}
    val = [json.loads(line) for line in (run / "val.jsonl").read_text().splitlines()]
    held = {identity[row["image"]] for row in val}
    assert held and all(row["identity"] == identity[row["image"]] for row in val)
    train = set(identity.values()) - held
    assert train and len(val) == sum(1 for who in identity.values() if who in held)


def test_eval_with_the_written_config_reproduces_the_after_numbers(lora_run, tmp_path):
    run, _ = lora_run
    out = tmp_path / "eval.json"
    result = run_cli("eval", str(run / "val.jsonl"), "--estimator", "mllm", "--config", str(run / "eval.yaml"),
                     "--out", str(out), "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    again, after = _mllm(json.loads(out.read_text())), _mllm(json.loads((run / "report.json").read_text())["after"])
    assert again["age"]["mae"] == pytest.approx(after["age"]["mae"], abs=1e-6)
    assert again["gender"]["accuracy"] == after["gender"]["accuracy"]
    assert again["expression"]["accuracy"] == after["expression"]["accuracy"]


@pytest.mark.parametrize("mode", ["constrained", "scored"])
def test_the_adapter_and_the_merged_model_answer_alike(lora_run, tiny_whole, astronaut, mode):
    from tracklens.pipeline.config import MllmEstimatorConfig
    from tracklens.pipeline.estimators.mllm import MllmEstimator
    from tracklens.pipeline.types import Crop

    run, _ = lora_run
    backend = {"type": "transformers", "local_files_only": True, "device": "cpu", "warmup": False}
    adapted = MllmEstimator(MllmEstimatorConfig(mode=mode, backend={**backend, "model": str(tiny_whole),
                                                                     "adapter": str(run / "adapter")}))  # fmt: skip
    merged = MllmEstimator(MllmEstimatorConfig(mode=mode, backend={**backend, "model": str(run / "merged")}))
    base = MllmEstimator(MllmEstimatorConfig(mode=mode, backend={**backend, "model": str(tiny_whole)}))
    rng = np.random.default_rng(0)
    crops = []
    for i, (y, x) in enumerate(rng.integers(0, 300, size=(6, 2))):
        face = astronaut[y : y + 96, x : x + 96].copy()
        crops.append(Crop(f"s:0:{i}", 0.1 * i, face, np.array([8, 8, 88, 88], np.float32), None, 0.9, face_px=80.0))
    try:
        a, m, b = adapted.estimate(crops), merged.estimate(crops), base.estimate(crops)
    finally:
        for estimator in (adapted, merged, base):
            estimator.close()
    assert a[0].model != b[0].model and all(e.valid for e in a + m)
    for x, y in zip(a, m):
        if mode == "constrained":
            assert (x.age, x.p_female, x.expression) == (y.age, y.p_female, y.expression)
        else:
            assert x.age == pytest.approx(y.age, abs=0.05) and x.p_female == pytest.approx(y.p_female, abs=1e-3)
            np.testing.assert_allclose(x.expression, y.expression, atol=1e-3)
    # and the adapter is not a no-op
    if mode == "scored":
        assert max(abs(x.age - z.age) for x, z in zip(a, b)) > 1.0


def _face_crops(astronaut, n: int) -> list:
    from tracklens.pipeline.types import Crop

    rng = np.random.default_rng(0)
    crops = []
    for i, (y, x) in enumerate(rng.integers(0, 300, size=(n, 2))):
        face = astronaut[y : y + 96, x : x + 96].copy()
        crops.append(Crop(f"s:0:{i}", 0.1 * i, face, np.array([8, 8, 88, 88], np.float32), None, 0.9, face_px=80.0))
    return crops


def test_the_adapter_loaded_through_the_config_answers_as_the_trained_model_in_memory(tmp_path, tiny_whole, astronaut):
    from tracklens.pipeline.config import FinetuneConfig, MllmEstimatorConfig, TransformersBackendConfig
    from tracklens.pipeline.estimators.mllm import MllmEstimator
    from tracklens.pipeline.estimators.mllm.loading import load_model, load_processor
    from tracklens.pipeline.estimators.mllm.prompts import load_prompt
    from tracklens.pipeline.estimators.mllm.transformers_backend import TransformersBackend, image_options
    from tracklens.pipeline.finetune.data import Encoder, Example
    from tracklens.pipeline.finetune.train import Trainer, prepare_model

    base = TransformersBackendConfig(model=str(tiny_whole), local_files_only=True, device="cpu", warmup=False)
    processor = load_processor(str(tiny_whole), True)
    model = load_model(str(tiny_whole), "float32", torch.device("cpu"), True)
    cfg = FinetuneConfig(max_steps=4, batch_size=4, learning_rate=5e-3, lora={"dropout": 0.0})
    torch.manual_seed(0)
    trained = prepare_model(model, cfg)
    encoder = Encoder(processor, load_prompt("person-v1"), [processor.tokenizer.eos_token_id], image_options(processor, base))
    crops = _face_crops(astronaut, 8)
    examples = [Example(c, 20 + 7 * i, ("female", "male")[i % 2], ("happy", "neutral")[i % 2]) for i, c in enumerate(crops)]
    trainer = Trainer(model, encoder, len(examples), lambda i: examples[i], cfg, tmp_path, "test")
    for _ in range(cfg.max_steps):
        trainer.train_step()
    model.eval()
    trained.save_pretrained(tmp_path / "adapter")
    with_adapter = base.model_copy(update={"adapter": str(tmp_path / "adapter")})
    for mode in ("constrained", "scored"):
        memory = MllmEstimator(MllmEstimatorConfig(mode=mode, backend=base), backend=TransformersBackend(base, loaded=(model, processor)))
        disk = MllmEstimator(MllmEstimatorConfig(mode=mode, backend=with_adapter))
        try:
            a, b = memory.estimate(crops), disk.estimate(crops)
        finally:
            disk.close()
        assert all(e.valid for e in a + b)
        for x, y in zip(a, b):
            if mode == "constrained":
                assert (x.age, x.p_female, x.expression) == (y.age, y.p_female, y.expression)
            else:
                assert x.age == pytest.approx(y.age, abs=1e-4) and x.p_female == pytest.approx(y.p_female, abs=1e-6)
                np.testing.assert_allclose(x.expression, y.expression, atol=1e-6)
    # and four steps did change the answers: the comparison is not between two untrained models
    untrained = MllmEstimator(MllmEstimatorConfig(mode="scored", backend=base))
    try:
        before = untrained.estimate(crops)
    finally:
        untrained.close()
    assert max(abs(x.p_female - y.p_female) for x, y in zip(before, b)) > 1e-3


def test_full_fine_tuning_learns_too(tmp_path, tiny_whole, people):
    config = _config(tmp_path / "full.yaml", tiny_whole, method="full", max_steps=200)
    result = run_cli("finetune", str(people), "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    before, after = _mllm(report["before"]), _mllm(report["after"])
    assert after["age"]["mae"] <= 0.5 * before["age"]["mae"] and after["gender"]["accuracy"] >= 0.9, after
    assert (tmp_path / "run" / "model" / "config.json").is_file() and not (tmp_path / "run" / "adapter").exists()
    trained = (tmp_path / "run" / "eval.yaml").read_text()
    assert str((tmp_path / "run" / "model").resolve()) in trained


# -- a stopped run ---------------------------------------------------------------------------


def _start(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TRACKLENS_REDIS_URL"}
    return subprocess.Popen([sys.executable, "-m", "tracklens.pipeline.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def _steps(run: Path) -> list[int]:
    log = run / "train_log.jsonl"
    return [json.loads(line)["step"] for line in log.read_text().splitlines()] if log.is_file() else []


def _adapter(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def test_sigterm_checkpoints_and_resume_ends_where_an_unstopped_run_does(tmp_path, tiny_whole, people):
    config = _config(tmp_path / "ft.yaml", tiny_whole, max_steps=24, checkpoint_every=2, batch_size=4, val_share=0.1)
    args = ["finetune", str(people), "--config", str(config), "--no-progress"]
    whole = run_cli(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr

    stopped = tmp_path / "stopped"
    proc = _start(*args, "--out", str(stopped))
    try:
        for _ in range(6000):  # bounded: the run does 24 steps in seconds
            if len(_steps(stopped)) >= 5 or proc.poll() is not None:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "--resume" in err
    kept = sorted(p.name for p in (stopped / "checkpoints").iterdir())
    assert kept and kept[-1] == f"step-{max(_steps(stopped)):08d}", (kept, _steps(stopped))
    assert not (stopped / "report.json").exists() and (stopped / "before.json").is_file()
    # the newest checkpoint torn (as a power loss could leave it): the one before it is used
    assert len(kept) == 2, kept
    newest = stopped / "checkpoints" / kept[-1] / "trainable.pt"
    newest.write_bytes(newest.read_bytes()[:100])

    resumed = run_cli(*args, "--out", str(stopped), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {int(kept[0].split('-')[1])} of 24" in resumed.stderr, resumed.stderr
    assert kept[-1] in resumed.stderr and "trying the checkpoint before it" in resumed.stderr
    assert _steps(stopped) == list(range(1, 25))
    a, b = _adapter(tmp_path / "whole"), _adapter(stopped)
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    again = run_cli(*args, "--out", str(stopped), "--resume")
    assert again.returncode == 0 and "finished" in again.stderr


# -- what each row trains ----------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["tiny_whole", "tiny_split"])
def test_a_missing_label_trains_no_value_tokens_of_that_field(request, fixture, astronaut):
    from tracklens.pipeline.estimators.mllm.loading import load_processor
    from tracklens.pipeline.estimators.mllm.prompts import load_prompt
    from tracklens.pipeline.finetune.data import IGNORE, Encoder, Example
    from tracklens.pipeline.types import Crop

    processor = load_processor(str(request.getfixturevalue(fixture)), True)
    end = processor.tokenizer.eos_token_id
    encoder = Encoder(processor, load_prompt("person-v1"), [end], {}, stand_in_age=30)
    crop = Crop("s:0:1", 0.0, astronaut[:96, :96].copy(), np.array([8, 8, 88, 88], np.float32), None, 0.9, face_px=80.0)
    full = Example(crop, 47, "male", "happy")
    cases = {"age": Example(crop, None, "male", "happy"), "gender": Example(crop, 47, None, "happy"),
             "expression": Example(crop, 47, "male", None)}  # fmt: skip
    batch = encoder.batch([full, *cases.values()])
    tokenizer = processor.tokenizer

    def trained(row: int) -> str:
        labels = batch.labels[row]
        return tokenizer.decode([int(t) for t in labels if t != IGNORE and t != end])

    def untrained(row: int) -> str:
        ids = batch.inputs["input_ids"][row, -batch.labels.shape[1] :]
        return tokenizer.decode([int(t) for t, label in zip(ids, batch.labels[row]) if label == IGNORE and t != tokenizer.pad_token_id])

    assert '"age": 47' in trained(0) and "male" in trained(0) and "happy" in trained(0)
    assert untrained(0).strip() == "" and int(batch.labels[0, -1]) == end
    assert "47" not in trained(1) and "30" not in trained(1) and '"age":' in trained(1) and "male" in trained(1)
    assert "30" in untrained(1)
    assert "male" not in trained(2) and "female" in untrained(2) and "happy" in trained(2)
    assert "happy" not in trained(3) and "neutral" not in trained(3) and "neutral" in untrained(3) and "47" in trained(3)
    # the labels are the very tokens after the prompt: input and label columns agree
    tail = batch.inputs["input_ids"][:, -batch.labels.shape[1] :]
    keep = batch.labels != IGNORE
    assert torch.equal(tail[keep], batch.labels[keep])


def test_lora_targets_the_language_model_and_projector_and_the_vision_tower_only_when_asked(tiny_whole):
    from tracklens.pipeline.config import FinetuneConfig
    from tracklens.pipeline.errors import ConfigError
    from tracklens.pipeline.estimators.mllm.loading import load_model
    from tracklens.pipeline.finetune.train import lora_targets

    model = load_model(str(tiny_whole), "float32", torch.device("cpu"), True)
    plain = lora_targets(model, FinetuneConfig())
    vision = lora_targets(model, FinetuneConfig(tune_vision=True))
    assert any("multi_modal_projector" in n for n in plain)
    assert any(n.endswith("q_proj") and "language_model" in n for n in plain)
    assert not any("vision_tower" in n for n in plain) and any("vision_tower" in n for n in vision)
    assert set(plain) < set(vision)
    language = lora_targets(model, FinetuneConfig(lora={"projector": False}))
    assert set(language) == {n for n in plain if "multi_modal_projector" not in n} and len(language) < len(plain)
    with pytest.raises(ConfigError, match="target_modules"):
        lora_targets(model, FinetuneConfig(lora={"target_modules": ["no_such_layer"]}))


def test_split_rows_by_identity_and_by_rows():
    from tracklens.pipeline.evaluation.manifest import Sample
    from tracklens.pipeline.finetune import split_rows

    samples = [Sample(image=f"{i}.png", where=f"m.csv:{i}", identity=f"p{i // 3}") for i in range(60)]
    train, val, how = split_rows(samples, 0.25, seed=0)
    assert how == "identity" and sorted(train + val) == list(range(60))
    assert not {samples[i].identity for i in train} & {samples[i].identity for i in val}
    assert 0.1 < len(val) / 60 < 0.45
    # stable as rows are added: the held-out identities stay held out
    more = samples + [Sample(image=f"x{i}.png", where=f"m.csv:{60 + i}", identity=f"q{i}") for i in range(30)]
    _, val2, _ = split_rows(more, 0.25, seed=0)
    assert {samples[i].identity for i in val} <= {more[i].identity for i in val2}
    plain = [Sample(image=f"{i}.png", where=f"m.csv:{i}") for i in range(20)]
    train, val, how = split_rows(plain, 0.25, seed=3)
    assert how == "rows" and len(val) == 5 and sorted(train + val) == list(range(20))


# -- bad input ---------------------------------------------------------------------------------


def test_bad_runs_are_one_line_and_leave_nothing_half_written(tmp_path, tiny_whole, people):
    specialist = tmp_path / "specialist.yaml"
    specialist.write_text("estimator: {type: specialist}\n")
    result = run_cli("finetune", str(people), "--config", str(specialist), "--out", str(tmp_path / "a"))
    assert_one_line_error(result, "mllm")
    assert not (tmp_path / "a").exists()

    config = _config(tmp_path / "ft.yaml", tiny_whole)
    missing = _config(tmp_path / "missing.yaml", tmp_path / "no-such-model")
    result = run_cli("finetune", str(people), "--config", str(missing), "--out", str(tmp_path / "b"))
    assert_one_line_error(result, "no-such-model")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    result = run_cli("finetune", str(people), "--config", str(config), "--out", str(busy))
    assert_one_line_error(result, "not empty")
    assert (busy / "notes.txt").read_text() == "mine"

    result = run_cli("finetune", str(people), "--config", str(config), "--out", str(tmp_path / "c"), "--resume")
    assert_one_line_error(result, "--resume", "no fine-tuning run")

    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace('"max_steps": 250', '"max_steps": -3'))
    assert_one_line_error(run_cli("finetune", str(people), "--config", str(bad), "--out", str(tmp_path / "d")), "max_steps")

    result = run_cli("finetune", str(tmp_path / "nope.csv"), "--config", str(config), "--out", str(tmp_path / "e"))
    assert_one_line_error(result, "nope.csv")


def test_rows_with_bad_labels_are_named_and_skipped(tmp_path, tiny_whole, people):
    lines = people.read_text().splitlines()
    header, rows = lines[0], lines[1:41]
    fields = rows[2].split(",")
    fields[header.split(",").index("age")] = "old"
    rows[2] = ",".join(fields)
    rows[5] = rows[5].replace("female", "robot").replace(",male,", ",robot,")
    manifest = people.parent / "some-bad.csv"
    manifest.write_text("\n".join([header, *rows]) + "\n")
    config = _config(tmp_path / "ft.yaml", tiny_whole, max_steps=2, val_share=0.2)
    result = run_cli("finetune", str(manifest), "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("tracklens: warning:")]
    assert any("some-bad.csv:4" in w and "age" in w for w in warnings), warnings
    assert any("some-bad.csv:7" in w and "gender" in w for w in warnings), warnings
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["train_rows"] + recorded["val_rows"] == 38 and len(recorded["left_out"]) == 2


def test_a_config_naming_a_missing_adapter_is_one_line(tmp_path, tiny_whole, people):
    config = tmp_path / "eval.yaml"
    config.write_text(f"estimator: {{type: mllm, backend: {{type: transformers, model: '{tiny_whole}', local_files_only: true, "
                      f"device: cpu, adapter: '{tmp_path / 'no-adapter'}'}}}}\n")  # fmt: skip
    result = run_cli("eval", str(people), "--estimator", "mllm", "--config", str(config), "--out", str(tmp_path / "e.json"))
    assert_one_line_error(result, "adapter")
    assert not (tmp_path / "e.json").exists()
