"""The MLLM path on every family users load, each a tiny random checkpoint with the family's
real model, processor and tokenizer classes and its chat format, built in the test session.

Regression: the backend was only ever run on the project's own LLaVA. On Qwen2.5-VL its scored
mode passed 1-D positions and so skipped the model's 3-D M-RoPE index (image tokens and the text
after them at the wrong rotary positions); answers were tokenized out of context (wrong after
``ASSISTANT:`` for SentencePiece tokenizers); processors that hold a video processor did not
load without torchvision. Scored distributions must equal ordinary forward passes over
prompt + answer prefix (``mllm_reference``) to 1e-4 in fp32.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the MLLM path needs the [mllm] extra (make test installs it)")

from mllm_reference import reference_constrained, reference_scores  # noqa: E402
from tracklens.pipeline.config import MllmEstimatorConfig, TransformersBackendConfig  # noqa: E402
from tracklens.pipeline.estimators import build_estimator  # noqa: E402
from tracklens.pipeline.estimators.mllm.prompts import load_prompt  # noqa: E402
from tracklens.pipeline.estimators.mllm.schema import parse_answer  # noqa: E402
from tracklens.pipeline.estimators.mllm.tiny_families import FAMILIES, build_family  # noqa: E402
from tracklens.pipeline.types import Crop  # noqa: E402


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {family: build_family(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def estimators(family_dirs):
    made = {}

    def get(family: str, mode: str):
        if (family, mode) not in made:
            backend = TransformersBackendConfig(model=str(family_dirs[family]), local_files_only=True, device="cpu")
            made[family, mode] = build_estimator(MllmEstimatorConfig(backend=backend, mode=mode, batch_size=4), None)
        return made[family, mode]

    return get


def _crops(astronaut) -> list[Crop]:
    """Face + body, face only, body only, and a second face + body: different prompt lengths
    (left padding) and different chosen answers in one batch."""
    face, body = astronaut[40:230, 140:310], astronaut[:, 20:400]
    box = np.array([30, 30, 140, 160], np.float32)
    return [Crop("s:0:1", 0.0, face, box, body, 0.9, face_px=130.0), Crop("s:0:2", 0.1, face[:, ::-1].copy(), box, None, 0.9, face_px=130.0),
            Crop("s:0:3", 0.2, None, None, body, 0.9), Crop("s:0:4", 0.3, face[20:].copy(), box, body[::2, ::2].copy(), 0.9, face_px=110.0)]  # fmt: skip


@pytest.mark.parametrize("family", list(FAMILIES))
def test_scored_readout_equals_plain_forward_passes(family, estimators, astronaut):
    est = estimators(family, "scored")
    crops = _crops(astronaut)
    requests = [est._request(c) for c in crops]
    answers = est.backend.score(requests)  # one batch: left-padded, one cache, tree feeds
    for request, answer in zip(requests, answers):
        reference = reference_scores(est.backend, request)
        np.testing.assert_allclose(answer.age, reference["age"], atol=1e-4)
        assert answer.p_female == pytest.approx(reference["p_female"], abs=1e-4)
        np.testing.assert_allclose(answer.expression, reference["expression"], atol=1e-4)
        assert answer.age.sum() == pytest.approx(1.0, abs=1e-5) and answer.expression.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_constrained_answers_are_valid_and_equal_plain_greedy_decoding(family, estimators, astronaut):
    est = estimators(family, "constrained")
    crops = _crops(astronaut)
    estimates = est.estimate(crops)
    assert all(e.valid for e in estimates), [e.reason for e in estimates]
    for crop, estimate in zip(crops, estimates):
        assert estimate.raw.strip() == reference_constrained(est.backend, est._request(crop)).strip()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_free_answers_parse_or_are_counted_off_format(family, estimators, astronaut):
    estimates = estimators(family, "free").estimate(_crops(astronaut)[:2])
    for e in estimates:
        assert e.valid == parse_answer(e.raw).valid
        assert e.valid or (e.reason.startswith(("off-format", "refusal")) and e.age is None)


def test_answers_are_tokenized_as_written_after_the_generation_prompt(estimators):
    """LLaVA-1.5's template ends in ``ASSISTANT:``; its SentencePiece-style tokenizer writes a
    word after a space as another token (``▁{``) than glued to what precedes it, so the trie
    must hold the tokens the model writes there, not those of the answer alone."""
    backend = estimators("llava", "constrained").backend
    tokenizer = backend.tokenizer
    alone = tokenizer('{"age": 30', add_special_tokens=False)["input_ids"]
    spaced = tokenizer(' {"age": 30', add_special_tokens=False)["input_ids"]
    assert alone != spaced  # the tokenizer really depends on the space before
    first = set(backend.trie.root.children)
    context = tokenizer("ASSISTANT:", add_special_tokens=False)["input_ids"]
    in_context = tokenizer('ASSISTANT: {"age": 30', add_special_tokens=False)["input_ids"][len(context)]
    assert in_context in first
    assert tokenizer.convert_ids_to_tokens(in_context).startswith("▁")


def test_processors_with_a_video_part_load_without_torchvision(family_dirs):
    """transformers builds video processors only with torchvision, absent on these machines
    (and unloadable next to a CPU torch): Qwen-VL, LLaVA-OneVision and SmolVLM processors still
    load, for images."""
    from tracklens.pipeline.estimators.mllm.loading import load_processor
    from transformers import AutoProcessor

    try:
        import torchvision  # noqa: F401

        pytest.skip("torchvision is installed here: AutoProcessor builds the video processor")
    except Exception:
        pass
    for family in ("qwen2_5_vl", "qwen3_vl", "llava_onevision", "smolvlm"):
        with pytest.raises(Exception):
            AutoProcessor.from_pretrained(family_dirs[family], local_files_only=True)
        processor = load_processor(str(family_dirs[family]), local_files_only=True)
        assert not hasattr(processor, "video_processor") and processor.chat_template, family


def test_a_template_without_a_system_role_gets_the_system_text_in_the_first_user_turn():
    from jinja2.exceptions import TemplateError
    from tracklens.pipeline.estimators.mllm.transformers_backend import render_prompt

    class NoSystem:
        """A processor whose template raises on a system turn, as Mistral-style ones do."""

        chat_template = "x"

        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            if messages[0]["role"] == "system":
                raise TemplateError("Conversation roles must alternate user/assistant/user/assistant/...")
            return "|".join(p.get("text", "<image>") for p in messages[0]["content"])

    text = render_prompt(NoSystem(), load_prompt("person-v1").messages(True, False))
    assert text.startswith("<image>|You estimate the apparent age") and "\n\nThe image is the person's face." in text


@pytest.mark.parametrize("mode", ["scored", "constrained"])
def test_bad_crops_fail_alone_and_the_rest_are_answered(mode, estimators, astronaut):
    """An empty crop, and an image the processor refuses (Qwen-VL's resize refuses aspect
    ratios over 200), give ``valid=False`` with the reason for that crop only; the batch's
    other crops are answered."""
    est = estimators("qwen2_5_vl", mode)
    good = _crops(astronaut)
    strip = np.ascontiguousarray(astronaut[:1, :300])  # 1 x 300 px
    bad = [Crop("s:0:8", 0.0, np.zeros((0, 40, 3), np.uint8), None, good[0].body, 0.9, face_px=0.0),
           Crop("s:0:9", 0.0, None, None, strip, 0.9)]  # fmt: skip
    estimates = est.estimate([good[0], bad[0], good[1], bad[1], good[2]])
    assert [e.valid for e in estimates] == [True, False, True, False, True], [e.reason for e in estimates]
    assert estimates[1].reason == "empty face image in crop"
    assert estimates[3].reason.startswith("backend error: the processor cannot take this request")


def test_a_batch_out_of_device_memory_is_split_and_only_what_cannot_fit_fails(estimators, astronaut, monkeypatch, caplog):
    """A CUDA out-of-memory (raised here by the prefill for any batch of more than one crop,
    and for a face + body crop even alone: no GPU on the test machines) splits the batch in
    halves until it fits; a crop that does not fit alone fails alone."""
    est = estimators("qwen2_5_vl", "scored")
    engine = est.backend.engine
    real_prefill = engine.prefill

    def prefill(inputs):
        two_images = inputs.get("image_grid_thw") is not None and len(inputs["image_grid_thw"]) > 1
        if inputs["input_ids"].shape[0] > 1 or two_images:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return real_prefill(inputs)

    monkeypatch.setattr(engine, "prefill", prefill)
    crops = _crops(astronaut)  # face+body, face, body, face+body
    estimates = est.estimate(crops)
    assert [e.valid for e in estimates] == [False, True, True, False]
    assert estimates[0].reason == "backend error: out of device memory for a single request"
    assert "ran out of device memory; retrying in halves" in caplog.text
    est.check_health()  # an out-of-memory is not a broken device


def test_the_cli_family_list_matches_the_builders():
    from tracklens.pipeline.cli import _VLM_FAMILIES

    assert set(_VLM_FAMILIES) == set(FAMILIES)


def test_the_image_budget_caps_qwen_vl_image_tokens_and_never_raises_the_checkpoint_s_own(family_dirs, astronaut):
    """Regression (review): ``max_image_pixels`` was passed where transformers 5.25 no longer
    reads it (the pixel limits live in ``size``), so it did nothing; where it was read, it
    replaced the checkpoint's own limit, which could raise it."""
    from tracklens.pipeline.estimators.mllm.base import MllmRequest
    from tracklens.pipeline.estimators.mllm.transformers_backend import TransformersBackend

    body = np.ascontiguousarray(astronaut[:448, :448])

    def tokens(cap):
        config = TransformersBackendConfig(model=str(family_dirs["qwen2_5_vl"]), local_files_only=True, device="cpu",
                                           warmup=False, max_image_pixels=cap)  # fmt: skip
        backend = TransformersBackend(config)
        inputs = backend._inputs([MllmRequest(load_prompt("person-v1").messages(False, True), [body])])
        return int(inputs["image_grid_thw"].prod())

    own = tokens(None)  # the checkpoint's limit: 16 merged patches of 28 px (tiny_families)
    assert tokens(28 * 28 * 4) < own and tokens(10**9) == own


def test_a_model_whose_layers_cannot_take_tree_feeds_says_so_and_still_answers_free_text(family_dirs, astronaut, monkeypatch):
    """Regression (review): families whose layers are not all attention over the cache (Qwen3.5's
    linear attention, LFM2) or that attend by cross-attention (Mllama) crashed at start with an
    obscure IndexError, even in free mode."""
    from tracklens.pipeline.errors import ModelError
    from tracklens.pipeline.estimators.mllm.context import Engine

    monkeypatch.setattr(Engine, "problem", staticmethod(lambda model: "its layers include linear_attention"))
    backend = TransformersBackendConfig(model=str(family_dirs["qwen2_5_vl"]), local_files_only=True, device="cpu")
    for mode in ("constrained", "scored"):
        with pytest.raises(ModelError, match=f"cannot answer in {mode} mode: its layers include linear_attention; use mode free"):
            build_estimator(MllmEstimatorConfig(backend=backend, mode=mode), None)
    free = build_estimator(MllmEstimatorConfig(backend=backend, mode="free"), None)
    (estimate,) = free.estimate(_crops(astronaut)[:1])
    assert estimate.valid or estimate.reason.startswith(("off-format", "refusal"))


def test_engine_problems_name_the_layers_it_cannot_feed(family_dirs):
    from tracklens.pipeline.estimators.mllm.context import Engine
    from tracklens.pipeline.estimators.mllm.loading import load_model

    model = load_model(str(family_dirs["gemma3"]), "auto", torch.device("cpu"), True)
    assert Engine.problem(model) is None  # sliding and full attention: fine
    model.config.get_text_config().layer_types = ["linear_attention", "full_attention"]
    assert Engine.problem(model) == "its layers include linear_attention"
    model.config.get_text_config().layer_types = ["full_attention", "full_attention"]
    model.config._attn_implementation = "flash_attention_2"
    assert "takes no tree-shaped mask" in Engine.problem(model)


def test_a_device_failure_fails_the_batch_and_marks_the_pool_unhealthy(family_dirs, astronaut, monkeypatch):
    """A CUDA error other than out-of-memory (a device-side assert: raised here, no GPU on the
    test machines) is not retried: the batch fails (the service's router then asks the
    specialist) and the health check fails, so Ray Serve replaces the MLLM replica."""
    backend = TransformersBackendConfig(model=str(family_dirs["qwen2_5_vl"]), local_files_only=True, device="cpu")
    est = build_estimator(MllmEstimatorConfig(backend=backend, mode="scored"), None)
    est.check_health()

    def broken(inputs):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(est.backend.engine, "prefill", broken)
    with pytest.raises(RuntimeError, match="device-side assert"):
        est.estimate(_crops(astronaut)[:2])
    with pytest.raises(RuntimeError, match="can no longer run on its device"):
        est.check_health()
