"""The MLLM estimator on a tiny LLaVA built offline: prompts, constrained and scored answers."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the MLLM path needs the [mllm] extra (make test installs it)")

from mllm_reference import PlainModel, reference_scores
from tracklens.pipeline.config import MllmEstimatorConfig, TransformersBackendConfig
from tracklens.pipeline.estimators import build_estimator
from tracklens.pipeline.estimators.mllm.prompts import load_prompt
from tracklens.pipeline.estimators.mllm.schema import answer_text, parse_answer
from tracklens.pipeline.types import Crop


def _estimator(path, mode: str, batch_size: int = 8):
    backend = TransformersBackendConfig(model=str(path), local_files_only=True, device="cpu")
    return build_estimator(MllmEstimatorConfig(backend=backend, mode=mode, batch_size=batch_size), None)


def _crops(astronaut, n: int) -> list[Crop]:
    """Real photo crops, varied: shifted, flipped, face-only, body-only."""
    crops = []
    for i in range(n):
        dx = (i * 7) % 40
        face = np.ascontiguousarray(astronaut[40 + dx : 230 + dx, 140:310][:, :: (-1) ** i])
        body = np.ascontiguousarray(astronaut[:, dx:])
        kind = i % 4
        crops.append(
            Crop(f"s:0:{i}", i * 0.1, None if kind == 3 else face, None if kind == 3 else np.array([30, 30, 140, 160], np.float32),
                 None if kind == 2 else body, 0.9, face_px=0.0 if kind == 3 else 130.0)  # fmt: skip
        )
    return crops


def test_tiny_vlm_round_trips_through_save_and_load(tiny_whole, astronaut, tmp_path):
    """Loaded, saved again and reloaded: same weights, same greedy answers."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_whole, local_files_only=True)
    model.save_pretrained(tmp_path / "again")
    AutoProcessor.from_pretrained(tiny_whole, local_files_only=True).save_pretrained(tmp_path / "again")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "again", local_files_only=True)
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    crops = _crops(astronaut, 4)
    first = [e.raw for e in _estimator(tiny_whole, "constrained").estimate(crops)]
    again = [e.raw for e in _estimator(tmp_path / "again", "constrained").estimate(crops)]
    assert first == again


def test_constrained_mode_gives_only_schema_valid_answers(tiny_whole, tiny_split, astronaut):
    crops = _crops(astronaut, 64)
    for path in (tiny_whole, tiny_split):
        estimates = _estimator(path, "constrained", batch_size=16).estimate(crops)
        assert len(estimates) == 64 and [e.track for e in estimates] == [c.track for c in crops]
        assert all(e.valid for e in estimates), [e.reason for e in estimates if not e.valid]
        assert all(parse_answer(e.raw).valid for e in estimates)
        assert all(e.source == "mllm" and e.prompt == "person-v1" and e.model == str(path) for e in estimates)


def test_free_mode_on_an_untrained_model_is_counted_off_format_not_guessed(tiny_whole, astronaut):
    estimates = _estimator(tiny_whole, "free").estimate(_crops(astronaut, 4))
    assert not any(e.valid for e in estimates)
    assert all(e.reason.startswith("off-format") and e.age is None for e in estimates)


def test_scored_distributions_sum_to_one(tiny_whole, tiny_split, astronaut):
    for path in (tiny_whole, tiny_split):
        est = _estimator(path, "scored", batch_size=4)
        backend = est.backend
        crops = _crops(astronaut, 6)
        answers = backend.score([est._request(c) for c in crops])
        for a in answers:
            assert a.age.shape == (101,) and a.age.sum() == pytest.approx(1.0, abs=1e-5)
            assert 0.0 <= a.p_female <= 1.0
            assert a.expression.sum() == pytest.approx(1.0, abs=1e-5)
        estimates = est.estimate(crops)
        assert all(e.valid and 0 <= e.age <= 100 and e.age_std > 0 for e in estimates)
        assert [e.expression is None for e in estimates] == [c.face is None for c in crops]


@pytest.mark.parametrize("which", ["tiny_whole", "tiny_split"])
def test_scored_distributions_equal_plain_forward_passes(which, request, astronaut):
    """Split digits make ages 1-3 tokens long (10 vs 100 differ only at the third)."""
    est = _estimator(request.getfixturevalue(which), "scored", batch_size=3)
    crops = _crops(astronaut, 3)
    answers = est.backend.score([est._request(c) for c in crops])  # batched, left-padded, one cache
    for crop, answer in zip(crops, answers):
        reference = reference_scores(est.backend, est._request(crop))
        np.testing.assert_allclose(answer.age, reference["age"], atol=1e-4)
        assert answer.p_female == pytest.approx(reference["p_female"], abs=1e-4)
        np.testing.assert_allclose(answer.expression, reference["expression"], atol=1e-4)


def test_split_tokenizer_really_splits_ages(tiny_split):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_split)
    assert len(tok.tokenize(" 100")) >= 3 and len(tok.tokenize(" 7")) <= 2


@pytest.mark.parametrize("which", ["tiny_whole", "tiny_split"])
def test_batched_scores_equal_one_by_one(which, request, astronaut):
    """Left-padded prompts and, with split digits, rows whose chosen ages differ in token
    length (fed right-padded and masked before the gender slot) score as they do alone."""
    est = _estimator(request.getfixturevalue(which), "scored", batch_size=8)
    crops = _crops(astronaut, 6)
    batched = est.estimate(crops)
    for crop, b in zip(crops, batched):
        (alone,) = est.estimate([crop])
        assert alone.age == pytest.approx(b.age, abs=1e-3)
        assert alone.p_female == pytest.approx(b.p_female, abs=1e-4)
        if b.expression is not None:
            np.testing.assert_allclose(alone.expression, b.expression, atol=1e-4)


def test_prompt_is_versioned_and_offers_the_seven_options():
    prompt = load_prompt("person-v1")
    assert prompt.version == "person-v1"
    text = prompt.messages(True, True)[1]["content"][-1]["text"]
    for letter, name in zip("ABCDEFG", ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")):
        assert f"({letter}) {name}" in text
    assert [p["type"] for p in prompt.messages(True, False)[1]["content"]] == ["image", "text"]
    assert "whole person" in prompt.messages(False, True)[1]["content"][-1]["text"]


@pytest.mark.parametrize(
    "text, ok, reason",
    [
        ('{"age": 34, "gender": "female", "expression": "happy"}', True, None),
        ('```json\n{"age": 7, "gender": "male", "expression": "neutral"}\n```', True, None),
        ("Sure! " + answer_text(60, "male", "anger"), True, None),
        ("I'm sorry, but I can't help with identifying people.", False, "refusal"),
        ("I cannot determine that from the image.", False, "refusal"),
        ("She looks about thirty and happy.", False, "off-format: no JSON"),
        ('{"age": 130, "gender": "female", "expression": "happy"}', False, "off-format: age 130"),
        ('{"age": 33.5, "gender": "female", "expression": "happy"}', False, "off-format: age 33.5"),
        ('{"age": true, "gender": "female", "expression": "happy"}', False, "off-format: age True"),
        ('{"age": 30, "gender": "woman", "expression": "happy"}', False, "off-format: gender"),
        ('{"age": 30, "gender": "female", "expression": "joyful"}', False, "off-format: expression"),
        ('{"age": 30, "gender": "female"}', False, "off-format: expected keys"),
        ('{"age": 30, "gender": "female", "expression": "happy"', False, "off-format"),
    ],
)
def test_free_text_parser_is_strict(text, ok, reason):
    parsed = parse_answer(text)
    assert parsed.valid is ok
    if reason:
        assert parsed.reason.startswith(reason)
        assert parsed.age is None


def test_models_tiny_vlm_command_saves_a_loadable_model(tmp_path):
    import subprocess
    import sys

    from transformers import AutoModelForImageTextToText, AutoProcessor

    result = subprocess.run(
        [sys.executable, "-m", "tracklens.pipeline.cli", "models", "tiny-vlm", str(tmp_path / "tiny"), "--digits", "split"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "tiny", local_files_only=True)
    processor = AutoProcessor.from_pretrained(tmp_path / "tiny", local_files_only=True)
    assert type(model).__name__ == "LlavaForConditionalGeneration" and type(processor).__name__ == "LlavaProcessor"
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


@torch.inference_mode()
def test_tree_feeds_over_one_cache_equal_plain_forwards(tiny_split, astronaut):
    """Siblings and a chain fed in one forward after the prompts' shared cache (rows of
    different prompt lengths), then a token after a committed path with uncommitted siblings
    left in the cache as holes: each logit equals an ordinary forward over prompt + path."""
    est = _estimator(tiny_split, "scored")
    backend = est.backend
    requests = [est._request(c) for c in _crops(astronaut, 3)[1:]]  # face+body, face only: ragged prompts
    state = backend.engine.prefill(backend._inputs(requests))
    a, b, c, d, e = 40, 41, 42, 43, 44
    tree = [[a, b, c, d], [b, a, d, c]]
    parents = [[-1, -1, 0, 2], [-1, -1, 1, 2]]  # row 0: a, b, a>c, a>c>d; row 1: b, a, a>d, a>d>c
    first = backend.engine.feed(state, torch.tensor(tree), parents)
    backend.engine.commit(state, [[0, 2], [1, 2]], 4)  # a>c and a>d become context
    second = backend.engine.feed(state, torch.tensor([[e], [e]]), [[-1], [-1]])
    paths = [[[a], [b], [a, c], [a, c, d]], [[b], [a], [a, d], [a, d, c]]]
    for row, request in enumerate(requests):
        plain = PlainModel(backend, request)
        for i, path in enumerate(paths[row]):
            torch.testing.assert_close(first[row, i].log_softmax(-1), plain.after(path), atol=1e-4, rtol=1e-4)
        committed = [a, c] if row == 0 else [a, d]
        torch.testing.assert_close(second[row, 0].log_softmax(-1), plain.after(committed + [e]), atol=1e-4, rtol=1e-4)
