"""The routed estimator with real parts: the MLLM first, the specialist for what it cannot answer."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from tracklens.pipeline.config import (
    MllmEstimatorConfig,
    OpenAIBackendConfig,
    RoutedEstimatorConfig,
    TransformersBackendConfig,
)
from tracklens.pipeline.estimators import build_estimator
from tracklens.pipeline.types import Crop

pytestmark = pytest.mark.integration


def _crops(astronaut, n: int) -> list[Crop]:
    face = np.ascontiguousarray(astronaut[40:230, 140:310])
    return [Crop(f"s:0:{i}", float(i), face, np.array([30, 30, 140, 160], np.float32), astronaut, 0.9, face_px=130.0) for i in range(n)]


def test_every_crop_the_mllm_cannot_answer_goes_to_the_specialist(astronaut, models):
    with socket.socket() as s:  # an endpoint that went away after the start
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAIBackendConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key_env=None, max_retries=0,
                                  check_on_start=False)  # fmt: skip
    routed = build_estimator(RoutedEstimatorConfig(primary=MllmEstimatorConfig(backend=backend, mode="constrained")), models)
    estimates = routed.estimate(_crops(astronaut, 3))
    assert [e.source for e in estimates] == ["specialist"] * 3
    assert all(e.valid and e.primary_failure.startswith("backend error: connection failed") for e in estimates)
    assert [e.track for e in estimates] == ["s:0:0", "s:0:1", "s:0:2"]
    assert routed.routed == {"specialist": 3}
    routed.close()


def test_answers_the_mllm_gives_stay_mllm_answers(astronaut, models, tiny_whole):
    backend = TransformersBackendConfig(model=str(tiny_whole), local_files_only=True, device="cpu")
    routed = build_estimator(RoutedEstimatorConfig(primary=MllmEstimatorConfig(backend=backend, mode="constrained")), models)
    crops = _crops(astronaut, 3)
    crops[1] = Crop("s:0:1", 1.0, None, None, None, 0.5)  # nothing to look at: neither can answer
    estimates = routed.estimate(crops)
    assert [e.source for e in estimates] == ["mllm", "specialist", "mllm"]
    assert estimates[0].valid and estimates[2].valid
    assert not estimates[1].valid and estimates[1].primary_failure == "no image in crop"
