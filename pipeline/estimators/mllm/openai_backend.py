"""MLLM backend over an OpenAI-compatible chat completions endpoint (images as data URLs).

Constrained and scored modes make the server enforce the answer: OpenAI ``response_format``
with the answer's JSON schema (vLLM and hosted APIs honour it), or, for a vLLM server,
``structured_outputs`` with a ``choice`` over the 1,414 canonical answers. Never the
``guided_*`` fields: vLLM 0.12 removed them, and newer servers ignore them and answer
unconstrained with HTTP 200. Since a server may also ignore ``response_format``, one probe at
start asks for a reply that only an enforcing server gives in the schema: an ignored constraint
is an error, not a silent downgrade to free text. Scored mode adds ``logprobs`` and
``top_logprobs`` and reads the fields from them (:mod:`.logprobs` says what is exact there).

Requests run concurrently up to ``max_concurrency``; each has a timeout and is retried with
exponential backoff on timeouts, connection errors, 429 and 5xx. A request that still fails
comes back as a :class:`BackendFailure` in its slot, so one bad request never sinks a batch.
Refusals arrive as text (or in the ``refusal`` field of structured outputs) and are left to
the strict parser to count.
"""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from ...config import OpenAIBackendConfig
from ...env import secret
from ...errors import ModelError
from ...urls import redact_url
from .base import BackendFailure, MllmBackend, MllmRequest, ScoredAnswer
from .logprobs import read_scored_answer
from .schema import JSON_SCHEMA, all_answers, parse_answer

__all__ = ["OpenAIBackend"]

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_CHOICES = all_answers()


class OpenAIBackend(MllmBackend):
    """See the module docstring."""

    def __init__(self, config: OpenAIBackendConfig) -> None:
        self.config = config
        self.model_id = config.model
        headers = {}
        key = secret(config.api_key_env) if config.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(base_url=config.base_url.rstrip("/"), headers=headers, timeout=config.timeout_s)
        self._pool = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix="openai")
        self._numbers: bool | None = None

    def _check_endpoint(self) -> None:
        """Fail before any work when the endpoint cannot answer at all: unreachable, or the
        key refused. ``GET /models`` is part of the API; a server without it (404) is fine.

        Raises:
            ModelError: one line naming the endpoint and the fix.
        """
        url = redact_url(self.config.base_url)
        try:
            response = self._client.get("/models", timeout=min(self.config.timeout_s, 10.0))
        except httpx.TimeoutException:
            raise ModelError(f"the MLLM endpoint {url} did not answer within {min(self.config.timeout_s, 10.0):g} s") from None
        except httpx.TransportError as err:
            raise ModelError(
                f"cannot reach the MLLM endpoint {url} ({err or type(err).__name__}); start the server or fix backend.base_url"
            ) from None
        if response.status_code in (401, 403):
            key = f"${self.config.api_key_env}" if self.config.api_key_env else "an API key (backend.api_key_env)"
            raise ModelError(f"the MLLM endpoint {url} refused the request (HTTP {response.status_code}); check {key}")

    def start(self) -> None:
        if self.config.check_on_start:
            self._check_endpoint()

    def check_mode(self, mode: str) -> None:
        """Before any work in ``mode``: for constrained and scored modes (with
        ``check_on_start``), that the server enforces the constraint."""
        if mode != "free" and self.config.check_on_start:
            self.verify_constraint()
        if mode == "scored":
            self._whole_numbers()

    def verify_constraint(self) -> None:
        """Check that the server enforces the answer: ask, under the constraint, for a reply
        that is not an answer at all; a server that ignores the constraint complies.

        Raises:
            ModelError: the server answered outside the schema, or could not be asked.
        """
        url = redact_url(self.config.base_url)
        probe = [{"role": "user", "content": [{"type": "text", "text": "Reply with the single word banana and nothing else."}]}]
        answer = self._complete(MllmRequest(probe, []), constrained=True)
        if isinstance(answer, BackendFailure):
            raise ModelError(f"the MLLM endpoint {url} failed the constraint probe: {answer.reason}")
        if not parse_answer(answer).valid:
            field = "response_format (json_schema)" if self.config.constraint == "json_schema" else "structured_outputs (choice)"
            raise ModelError(
                f"the MLLM endpoint {url} ignores {field}: asked under the answer's schema to reply 'banana', it replied "
                f"{answer[:40]!r}; use a server that enforces it (vLLM, a hosted API with structured outputs), another "
                "backend.constraint, or mode free"
            )

    def generate(self, requests: list[MllmRequest], constrained: bool) -> list[str | BackendFailure]:
        """One answer text (or failure) per request, same order."""
        return list(self._pool.map(lambda r: self._complete(r, constrained), requests))

    def score(self, requests: list[MllmRequest]) -> list[ScoredAnswer | BackendFailure]:
        """Field distributions read from the server's log-probabilities (see :mod:`.logprobs`)."""
        return list(self._pool.map(self._score_one, requests))

    def _whole_numbers(self) -> bool:
        """Whether the server's tokenizer writes ``42`` as one token (``number_tokens``; auto:
        asked once from vLLM's ``/tokenize``). Reading ages from log-probabilities depends on it.

        Raises:
            ModelError: auto, and the server cannot tell.
        """
        if self._numbers is None:
            if self.config.number_tokens != "auto":
                self._numbers = self.config.number_tokens == "whole"
            else:
                root = self.config.base_url.rstrip("/").removesuffix("/v1")
                try:
                    response = self._client.post(f"{root}/tokenize", json={"model": self.config.model, "prompt": "42"})
                    count = response.json()["count"] if response.status_code == 200 else None
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    count = None
                if not isinstance(count, int) or count < 1:
                    raise ModelError(
                        f"the MLLM endpoint {redact_url(self.config.base_url)} cannot say how its tokenizer writes numbers "
                        "(no vLLM /tokenize); set backend.number_tokens to whole or digits for scored mode"
                    )
                self._numbers = count == 1
        return self._numbers

    def _score_one(self, request: MllmRequest) -> ScoredAnswer | BackendFailure:
        message = self._complete(request, constrained=True, logprobs=True)
        if isinstance(message, BackendFailure):
            return message
        text, tokens = message
        if not tokens:
            return BackendFailure("the server returned no logprobs (does it support logprobs/top_logprobs?)")
        answer = read_scored_answer(tokens, whole_numbers=self._whole_numbers())
        if answer is None:
            return BackendFailure(f"no complete answer to read logprobs from in {text[:60]!r}")
        return answer

    def _body(self, request: MllmRequest, constrained: bool, logprobs: bool = False) -> dict:
        images = iter(request.images)
        messages = []
        for message in request.messages:
            content = []
            for part in message["content"]:
                if part["type"] == "image":
                    content.append({"type": "image_url", "image_url": {"url": self._data_url(next(images))}})
                else:
                    content.append({"type": "text", "text": part["text"]})
            messages.append({"role": message["role"], "content": content})
        body = {"model": self.config.model, "messages": messages, "temperature": 0, "max_tokens": self.config.max_tokens}
        if constrained and self.config.constraint == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "person", "schema": JSON_SCHEMA, "strict": True}}
        elif constrained:
            body["structured_outputs"] = {"choice": _CHOICES}
        if logprobs:
            body["logprobs"], body["top_logprobs"] = True, self.config.top_logprobs
        return body

    def _data_url(self, image: np.ndarray) -> str:
        from PIL import Image

        buf = io.BytesIO()
        fmt = self.config.image_format
        Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG" if fmt == "jpeg" else "PNG", quality=90)
        return f"data:image/{fmt};base64,{base64.b64encode(buf.getvalue()).decode()}"

    def _complete(self, request: MllmRequest, constrained: bool, logprobs: bool = False):
        """The reply text (with ``logprobs``: ``(text, logprobs.content)``), or a failure."""
        body = self._body(request, constrained, logprobs)
        delay = self.config.backoff_s
        last = "no attempt"
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                response = self._client.post("/chat/completions", json=body)
            except httpx.TimeoutException:
                last = f"timed out after {self.config.timeout_s:g} s"
                continue
            except httpx.TransportError as err:
                last = f"connection failed: {err}"
                continue
            if response.status_code in _RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                return BackendFailure(f"HTTP {response.status_code}: {response.text[:200]}")
            try:
                choice = response.json()["choices"][0]
                message = choice["message"]
            except (ValueError, KeyError, IndexError, TypeError):
                return BackendFailure("malformed response: no choices[0].message")
            text = str(message.get("refusal") or message.get("content") or "")
            if choice.get("finish_reason") == "length":
                return BackendFailure(f"the answer was cut off at max_tokens={self.config.max_tokens}: {text[:40]!r}")
            if logprobs:
                return text, ((choice.get("logprobs") or {}).get("content") or [])
            return text
        return BackendFailure(f"{last} ({self.config.max_retries + 1} attempts)")

    def close(self) -> None:
        self._client.close()
        self._pool.shutdown(wait=False)
