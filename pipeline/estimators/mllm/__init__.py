"""The MLLM estimator: one prompt per person with the face and body crops, three answer modes.

Backends come from a registry keyed by the backend config's ``type`` and are imported on
first use (``transformers`` pulls in torch; ``openai`` only httpx).
"""

from __future__ import annotations

import importlib

import numpy as np

from ...config import MllmEstimatorConfig
from ...errors import ConfigError
from ...types import EXPRESSIONS, Crop, Estimate
from .base import BackendFailure, MllmBackend, MllmRequest, ScoredAnswer
from .prompts import load_prompt
from .schema import AGES, parse_answer

__all__ = ["BACKENDS", "MllmEstimator"]

#: backend ``type`` -> (module, class)
BACKENDS: dict[str, tuple[str, str]] = {
    "transformers": (".transformers_backend", "TransformersBackend"),
    "openai": (".openai_backend", "OpenAIBackend"),
}
_AGES = np.array(AGES, dtype=np.float64)


class MllmEstimator:
    """List of crops in, list of estimates out (same length, same order).

    Every estimate records ``source="mllm"``, the model id and the prompt version. A crop
    with neither face nor body, a refusal, an off-format answer or a failed request gives
    ``valid=False`` with the reason.
    """

    source = "mllm"

    def __init__(self, config: MllmEstimatorConfig, models=None, backend=None) -> None:
        """``backend``: one already built (benchmarks); by default built from the config."""
        self.config = config
        self.prompt = load_prompt(config.prompt)
        module, name = BACKENDS[config.backend.type]
        try:
            backend_cls = getattr(importlib.import_module(module, __name__), name)
        except ImportError as err:
            raise ConfigError(
                f"the {config.backend.type} MLLM backend needs {err.name or 'a missing package'}: "
                "install tracklens with the [mllm] extra (pip install 'tracklens[mllm]')"
            ) from None
        self.backend: MllmBackend = backend if backend is not None else backend_cls(config.backend)
        self.model_id = self.backend.model_id
        try:
            self.backend.start()
            self.backend.check_mode(config.mode)
        except BaseException:
            self.close()
            raise

    def estimate(self, crops: list[Crop]) -> list[Estimate]:
        out: list[Estimate | None] = [None] * len(crops)
        asked = []
        for i, crop in enumerate(crops):
            empty = [name for name, im in (("face", crop.face), ("body", crop.body)) if im is not None and 0 in im.shape[:2]]
            if crop.face is None and crop.body is None:
                out[i] = self._invalid(crop, "no image in crop")
            elif empty:
                out[i] = self._invalid(crop, f"empty {empty[0]} image in crop")
            else:
                asked.append(i)
        for start in range(0, len(asked), self.config.batch_size):
            chunk = asked[start : start + self.config.batch_size]
            batch = [crops[i] for i in chunk]
            requests = [self._request(c) for c in batch]
            if self.config.mode == "scored":
                answers = self.backend.score(requests)
                results = [self._from_scores(c, a) for c, a in zip(batch, answers)]
            else:
                texts = self.backend.generate(requests, constrained=self.config.mode == "constrained")
                results = [self._from_text(c, t) for c, t in zip(batch, texts)]
            if len(results) != len(chunk):
                raise RuntimeError(f"MLLM backend returned {len(results)} answers for {len(chunk)} requests")
            for i, est in zip(chunk, results):
                out[i] = est
        return out  # type: ignore[return-value]

    def check_health(self) -> None:
        """Raise once the backend can no longer answer (its device failed in a way retries
        cannot mend: the service then replaces the replica); an out-of-memory batch is split
        and retried instead."""
        self.backend.check_health()

    def close(self) -> None:
        """Release the backend (HTTP client and its threads)."""
        self.backend.close()

    def _request(self, crop: Crop) -> MllmRequest:
        images = [im for im in (crop.face, crop.body) if im is not None]
        return MllmRequest(self.prompt.messages(crop.face is not None, crop.body is not None), images)

    def _base(self, crop: Crop) -> dict:
        return {"track": crop.track, "time": crop.time, "source": "mllm", "model": self.model_id,
                "quality": crop.quality, "prompt": self.prompt.version, "face_px": crop.face_px}  # fmt: skip

    def _invalid(self, crop: Crop, reason: str, **answer) -> Estimate:
        return Estimate(**self._base(crop), valid=False, reason=reason, **answer)

    def _from_scores(self, crop: Crop, answer: ScoredAnswer | BackendFailure) -> Estimate:
        if isinstance(answer, BackendFailure):
            return self._invalid(crop, f"backend error: {answer.reason}", mode="scored")
        mean = float(answer.age @ _AGES)
        std = float(np.sqrt(max(answer.age @ (_AGES - mean) ** 2, 0.0)))
        expression = answer.expression / answer.expression.sum()
        return Estimate(
            **self._base(crop),
            age=mean,
            age_std=max(std, 1.0),
            p_female=answer.p_female,
            expression=tuple(float(p) for p in expression) if crop.face is not None else None,
            mode="scored",
        )

    def _from_text(self, crop: Crop, text: str | BackendFailure) -> Estimate:
        if isinstance(text, BackendFailure):
            return self._invalid(crop, f"backend error: {text.reason}", mode=self.config.mode)
        parsed = parse_answer(text)
        if not parsed.valid:
            return self._invalid(crop, parsed.reason, mode=self.config.mode, refusal=parsed.refusal, raw=text[:500])
        c = self.config.hard_answer_confidence
        rest = (1.0 - c) / (len(EXPRESSIONS) - 1)
        expression = tuple(c if name == parsed.expression else rest for name in EXPRESSIONS)
        return Estimate(
            **self._base(crop),
            age=float(parsed.age),
            age_std=None,  # a hard answer has no spread: the aggregator weighs it by the MLLM's typical error
            p_female=c if parsed.gender == "female" else 1.0 - c,
            expression=expression if crop.face is not None else None,
            mode=self.config.mode,
            raw=text[:500],
        )
