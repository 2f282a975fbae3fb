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
from tracklens.pipeline.errors import ConfigError
from tracklens.pipeline.estimators import build_estimator
from tracklens.pipeline.estimators.mllm.base import MllmRequest
from tracklens.pipeline.types import Crop

REFUSAL = "I'm sorry, but I can't help with identifying people in images."


def _app(tiny_path):
    from PIL import Image
    from tracklens.pipeline.estimators.mllm.transformers_backend import TransformersBackend

    backend = TransformersBackend(TransformersBackendConfig(model=str(tiny_path), local_files_only=True, device="cpu"))
    app = fastapi.FastAPI()
    state = {"calls": {}, "in_flight": 0, "max_in_flight": 0, "images": [], "lock": threading.Lock()}

    def reply(content=None, refusal=None):
        message = {"role": "assistant", "content": content}
        if refusal is not None:
            message["refusal"] = refusal
        return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        model = body["model"]
        with state["lock"]:
            state["calls"][model] = state["calls"].get(model, 0) + 1
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        try:
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
            state["images"].append(len(images))
            constrained = body.get("response_format", {}).get("type") == "json_schema"
            (text,) = backend.generate([MllmRequest(messages, images)], constrained=constrained)
            return reply(text)
        finally:
            with state["lock"]:
                state["in_flight"] -= 1

    return app, state


@pytest.fixture(scope="module")
def server(tiny_whole):
    app, state = _app(tiny_whole)
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
    estimates = _estimator(url, "tiny", json_schema=True).estimate(_crops(astronaut))
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
    (e,) = _estimator(url, "slow", timeout_s=0.4, max_retries=1, backoff_s=0.01).estimate(_crops(astronaut, 1))
    assert not e.valid and e.reason == "backend error: timed out after 0.4 s (2 attempts)"
    assert state["calls"]["slow"] - before == 2


def test_server_error_is_retried_with_backoff_then_reported(server, astronaut):
    url, state = server
    start = time.perf_counter()
    (e,) = _estimator(url, "broken", max_retries=2, backoff_s=0.1).estimate(_crops(astronaut, 1))
    assert not e.valid and e.reason == "backend error: HTTP 500 (3 attempts)"
    assert time.perf_counter() - start >= 0.1 + 0.2  # backoff doubled between attempts
    assert state["calls"]["broken"] == 3


def test_a_transient_error_recovers_on_retry(server, astronaut):
    url, state = server
    (e,) = _estimator(url, "flaky", max_retries=1, backoff_s=0.01, json_schema=True).estimate(_crops(astronaut, 1))
    assert e.valid and state["calls"]["flaky"] == 2  # a 503, then the answer


def test_concurrency_is_limited(server, astronaut):
    url, state = server
    for _ in range(100):  # requests abandoned by the timeout test may still be sleeping
        if state["in_flight"] == 0:
            break
        time.sleep(0.05)
    state["max_in_flight"] = 0
    _estimator(url, "busy", max_concurrency=2).estimate(_crops(astronaut, 6))
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


def test_scored_mode_needs_the_transformers_backend():
    with pytest.raises(ConfigError, match="scored"):
        _estimator("http://127.0.0.1:9/v1", "tiny", mode="scored")
