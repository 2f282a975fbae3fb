"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1.

The server is a small FastAPI app speaking the chat completions API, answering with the
project's tiny VLM; other model names make it misbehave the ways real endpoints do.
"""

from __future__ import annotations

import base64
import io
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("torch", reason="the server answers with the tiny VLM ([mllm] extra)")
fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from tracklens.pipeline.config import MllmEstimatorConfig, OpenAIBackendConfig, TransformersBackendConfig
from tracklens.pipeline.estimators import build_estimator
from tracklens.pipeline.estimators.mllm.base import MllmRequest
from tracklens.pipeline.types import Crop

REFUSAL = "I'm sorry, but I can't help with identifying people in images."


#: Request fields a vLLM chat completions server takes (a subset: what tracklens may send).
_FIELDS = {"model", "messages", "temperature", "max_tokens", "max_completion_tokens", "response_format", "structured_outputs",
           "logprobs", "top_logprobs", "seed", "n", "stream", "top_p", "stop"}  # fmt: skip


def _app(tiny_path):
    """A chat completions server in the shape of vLLM's: unknown request fields (the removed
    ``guided_*`` ones included) are refused with 400; ``response_format`` json_schema and
    ``structured_outputs`` choice are enforced (the tiny VLM answers inside the answer trie);
    ``logprobs``/``top_logprobs`` come from the tiny VLM's own forward passes. The model
    ``ignores-constraints`` answers as a server that drops them would."""
    from mllm_reference import PlainModel
    from PIL import Image
    from tracklens.pipeline.estimators.mllm.schema import JSON_SCHEMA, all_answers
    from tracklens.pipeline.estimators.mllm.transformers_backend import TransformersBackend, render_prompt
    from tracklens.pipeline.estimators.mllm.trie import encoder_in_context

    backend = TransformersBackend(TransformersBackendConfig(model=str(tiny_path), local_files_only=True, device="cpu"))
    context = render_prompt(backend.processor, [{"role": "user", "content": [{"type": "text", "text": "?"}]}])
    forms = encoder_in_context(lambda t: backend.tokenizer(t, add_special_tokens=False)["input_ids"], context)
    app = fastapi.FastAPI()
    state = {"calls": {}, "in_flight": 0, "max_in_flight": 0, "images": [], "bodies": [], "lock": threading.Lock()}

    def reply(content=None, refusal=None, logprobs=None):
        message = {"role": "assistant", "content": content}
        if refusal is not None:
            message["refusal"] = refusal
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": logprobs}
        return {"id": "x", "object": "chat.completion", "choices": [choice]}

    def check(body: dict) -> bool:
        """Whether the body asks for the answer to be enforced; 400 for what vLLM would refuse."""
        unknown = set(body) - _FIELDS
        if unknown:
            raise fastapi.HTTPException(400, f"unknown fields: {sorted(unknown)}")
        if "response_format" in body:
            rf = body["response_format"]
            if rf.get("type") != "json_schema" or rf.get("json_schema", {}).get("schema") != JSON_SCHEMA:
                raise fastapi.HTTPException(400, "response_format: only the answer's json_schema is served here")
            return True
        if "structured_outputs" in body:
            if body["structured_outputs"] != {"choice": all_answers()}:
                raise fastapi.HTTPException(400, "structured_outputs: expected a choice over the canonical answers")
            return True
        return False

    def token_logprobs(request: MllmRequest, text: str, k: int) -> list[dict]:
        (ids,) = [f for f in forms(text.strip()) if backend.tokenizer.decode(f) == text] or [forms(text.strip())[0]]
        plain = PlainModel(backend, request)
        out = []
        for i, token in enumerate(ids):
            lp = plain.after(ids[:i])
            top = lp.topk(min(k, lp.shape[-1]))
            out.append({"token": backend.tokenizer.decode([token]), "logprob": float(lp[token]),
                        "top_logprobs": [{"token": backend.tokenizer.decode([t]), "logprob": float(v)}
                                         for v, t in zip(top.values.tolist(), top.indices.tolist())]})  # fmt: skip
        return out

    @app.post("/tokenize")
    def tokenize(body: dict):  # vLLM's, at the server's root
        ids = backend.tokenizer(body["prompt"], add_special_tokens=False)["input_ids"]
        return {"tokens": ids, "count": len(ids), "max_model_len": 4096}

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        model = body["model"]
        with state["lock"]:
            state["calls"][model] = state["calls"].get(model, 0) + 1
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
            state["bodies"].append(body)
        try:
            enforced = check(body)
            if model == "broken":
                raise fastapi.HTTPException(500, "model worker crashed")
            if model == "flaky" and state["calls"][model] % 2 == 1:
                raise fastapi.HTTPException(503, "warming up")
            if model == "slow":
                time.sleep(1.5)
            if model == "busy":
                time.sleep(0.3)
            if model == "refuser":
                return reply(REFUSAL)
            if model == "refusal-field":
                return reply(None, REFUSAL)
            messages, images = [], []
            for message in body["messages"]:
                content = []
                for part in message["content"]:
                    if part["type"] == "image_url":
                        data = part["image_url"]["url"].split(",", 1)[1]
                        images.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")))
                        content.append({"type": "image"})
                    else:
                        content.append(part)
                messages.append({"role": message["role"], "content": content})
            if not images:  # a text-only probe: the tiny VLM needs an image; one grey square stands in
                images.append(np.full((32, 32, 3), 128, np.uint8))
                messages[-1]["content"].insert(0, {"type": "image"})
            state["images"].append(len(images))
            request = MllmRequest(messages, images)
            if model == "ignores-constraints":
                return reply("banana")
            (text,) = backend.generate([request], constrained=enforced)
            logprobs = {"content": token_logprobs(request, text, body["top_logprobs"])} if body.get("logprobs") else None
            return reply(text, logprobs=logprobs)
        finally:
            with state["lock"]:
                state["in_flight"] -= 1

    return app, state, backend


@pytest.fixture(scope="module")
def server(tiny_whole):
    app, state, backend = _app(tiny_whole)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    else:
        pytest.fail("test server did not start")
    state["backend"] = backend
    yield f"http://127.0.0.1:{port}/v1", state
    srv.should_exit = True
    thread.join(timeout=10)


def _crops(astronaut, n=3):
    face = np.ascontiguousarray(astronaut[40:230, 140:310])
    return [Crop(f"s:0:{i}", 0.0, face, np.array([30, 30, 140, 160], np.float32), astronaut, 0.9, face_px=130.0) for i in range(n)]


def _estimator(url, model, mode="constrained", **backend):
    cfg = OpenAIBackendConfig(base_url=url, model=model, api_key_env=None, **backend)
    return build_estimator(MllmEstimatorConfig(backend=cfg, mode=mode), None)


def test_constrained_answers_over_http_are_valid(server, astronaut):
    url, state = server
    estimates = _estimator(url, "tiny").estimate(_crops(astronaut))
    assert all(e.valid and e.model == "tiny" and e.prompt == "person-v1" for e in estimates)
    assert all(0 <= e.age <= 100 for e in estimates)
    assert state["images"][-1] == 2  # face and body both sent


def test_refusals_are_counted_not_guessed(server, astronaut):
    url, _ = server
    for model in ("refuser", "refusal-field"):
        estimates = _estimator(url, model, mode="free").estimate(_crops(astronaut, 2))
        assert all(not e.valid and e.reason == "refusal" and e.age is None for e in estimates)


def test_timeout_is_retried_then_reported(server, astronaut):
    url, state = server
    before = state["calls"].get("slow", 0)
    (e,) = _estimator(url, "slow", timeout_s=0.4, max_retries=1, backoff_s=0.01, check_on_start=False).estimate(_crops(astronaut, 1))
    assert not e.valid and e.reason == "backend error: timed out after 0.4 s (2 attempts)"
    assert state["calls"]["slow"] - before == 2


def test_server_error_is_retried_with_backoff_then_reported(server, astronaut):
    url, state = server
    start = time.perf_counter()
    (e,) = _estimator(url, "broken", max_retries=2, backoff_s=0.1, check_on_start=False).estimate(_crops(astronaut, 1))
    assert not e.valid and e.reason == "backend error: HTTP 500 (3 attempts)"
    assert time.perf_counter() - start >= 0.1 + 0.2  # backoff doubled between attempts
    assert state["calls"]["broken"] == 3


def test_a_transient_error_recovers_on_retry(server, astronaut):
    url, state = server
    (e,) = _estimator(url, "flaky", max_retries=1, backoff_s=0.01, check_on_start=False).estimate(_crops(astronaut, 1))
    assert e.valid and state["calls"]["flaky"] == 2  # a 503, then the answer


def test_concurrency_is_limited(server, astronaut):
    url, state = server
    for _ in range(100):  # requests abandoned by the timeout test may still be sleeping
        if state["in_flight"] == 0:
            break
        time.sleep(0.05)
    state["max_in_flight"] = 0
    _estimator(url, "busy", max_concurrency=2, check_on_start=False).estimate(_crops(astronaut, 6))
    assert state["max_in_flight"] == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_endpoint_unreachable_at_start_is_a_clear_error_before_any_work():
    """Regression: it used to give a run with no estimate at all, exit 0 and no warning."""
    from tracklens.pipeline.errors import ModelError

    port = _closed_port()
    with pytest.raises(ModelError, match=rf"cannot reach the MLLM endpoint http://127.0.0.1:{port}/v1 .*Connection refused"):
        _estimator(f"http://127.0.0.1:{port}/v1", "tiny")


def test_an_endpoint_that_goes_away_later_gives_invalid_estimates_not_a_crash(astronaut):
    port = _closed_port()
    estimator = _estimator(f"http://127.0.0.1:{port}/v1", "tiny", max_retries=0, check_on_start=False)
    (e,) = estimator.estimate(_crops(astronaut, 1))
    assert not e.valid and e.reason.startswith("backend error: connection failed")


def test_constrained_requests_ask_the_server_to_enforce_the_answer_never_with_guided_fields(server, astronaut):
    """Regression: constrained mode was free text unless ``json_schema: true`` was set, and
    vLLM 0.12 removed the ``guided_*`` fields (newer servers ignore them and answer
    unconstrained with HTTP 200): every constrained request carries response_format, or
    structured_outputs with a choice over the canonical answers."""
    url, state = server
    for constraint, field in (("json_schema", "response_format"), ("choice", "structured_outputs")):
        state["bodies"].clear()
        estimates = _estimator(url, "tiny", constraint=constraint).estimate(_crops(astronaut, 2))
        assert all(e.valid for e in estimates), [e.reason for e in estimates]
        assert len(state["bodies"]) == 3 and all(field in b and not any(k.startswith("guided") for k in b) for b in state["bodies"])


def test_a_server_that_ignores_the_constraint_is_an_error_at_start(server):
    """A server that drops ``response_format`` answers the probe ('reply banana') in plain
    text: that is an error before any work, not a silent run of free-text answers."""
    from tracklens.pipeline.errors import ModelError

    url, _ = server
    for mode in ("constrained", "scored"):
        with pytest.raises(ModelError, match=r"ignores response_format \(json_schema\).*'banana'"):
            _estimator(url, "ignores-constraints", mode=mode)
    _estimator(url, "ignores-constraints", mode="free")  # free text asks for no constraint: no probe


def test_scored_mode_reads_the_server_s_logprobs(server, astronaut):
    """Field distributions from ``top_logprobs``: normalised, and, for gender (one token per
    value in this tokenizer), equal to the model's own two-way probability at that position
    after the generated answer's prefix (PNG images: the server sees the same pixels)."""
    from mllm_reference import PlainModel

    url, state = server
    estimator = _estimator(url, "tiny", mode="scored", top_logprobs=1000, image_format="png")
    crops = _crops(astronaut, 2)
    crops[1] = Crop("s:0:9", 0.0, None, None, astronaut[::2, ::2].copy(), 0.9)  # body only: another prompt
    estimates = estimator.estimate(crops)
    assert all(e.valid and 0 <= e.p_female <= 1 and e.mode == "scored" for e in estimates), [e.reason for e in estimates]
    backend = state["backend"]
    tokenizer = backend.tokenizer
    male, female = (tokenizer(w, add_special_tokens=False)["input_ids"] for w in ("male", "female"))
    assert len(male) == len(female) == 1  # what makes gender exact here
    for crop, estimate in zip(crops, estimates):
        plain = PlainModel(backend, estimator._request(crop))
        node, path = backend.trie.root, []
        while not any(child.determined("gender") for child in node.children.values()):  # greedy, as the server answered
            lp = plain.after(path)
            token = max(node.children, key=lambda t: float(lp[t]))
            path, node = path + [token], node.children[token]
        lp = plain.after(path)
        exact = float(lp[female[0]].exp() / (lp[female[0]].exp() + lp[male[0]].exp()))
        assert estimate.p_female == pytest.approx(exact, abs=1e-4)
